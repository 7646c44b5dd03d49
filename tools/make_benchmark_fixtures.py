#!/usr/bin/env python3
"""Small benchmark files in the layouts the benchmarks are published in, for
tests/benchmarks.rs (actial::data::benchmarks). Each image is a flat colour so a
reader that mixes rows or images up is caught.

tests/fixtures/benchmarks/
  3dsrbench/3dsrbench_v1_vlmevalkit_circular.tsv
      index, qid, question, A-D, answer, category, image (full base64 on every
      row), image_source, image_url; circular copies `<q>-k`, a `-flip` variant,
      a row with a broken image
  blink/<Subtask>/val-00000-of-00001.parquet, test-00000-of-00001.parquet
      BLINK-Benchmark/BLINK: idx, question, sub_task, image_1..4 {bytes, path}
      or null, choices, answer "(A)" ("hidden" in test), prompt, explanation
  cvbench/parquet/test_2d.parquet, test_3d.parquet
      nyu-visionx/CV-Bench: idx, type, task, image {bytes, path}, question,
      choices, answer "(C)", prompt, filename, source
  cvbench/jsonl/test_2d.jsonl, test_3d.jsonl, img/{2D,3D}/<task>/<name>.png
  cvbench/vlmevalkit/CV-Bench-2D.tsv, CV-Bench-3D.tsv
      VLMEvalKit: index, image, question, A-D, answer letter, category (task),
      split, source, prompt
  mmsi/MMSI_bench.tsv
      RunsenXu/MMSI-Bench TSV: index, image (a JSON list of base64 images),
      question (the options in its text), answer, category, thought
  mmsi/MMSIBench_circular.tsv, MMSIBench_wo_circular.tsv
      VLMEvalKit: index, g_index (circular), image (copies name the original
      row's index, whose cell is a list), question, A-D, answer, category
  mmsi/test.parquet
      RunsenXu/MMSI-Bench parquet: id, images list<binary>, question_type,
      question, answer, thought (a row whose answer is not an option)
  sat/test.parquet
      array/SAT: image_bytes list<binary>, question, answers, correct_answer,
      question_type
  viewpoint/test.json, images/
      LLaMA-Factory ShareGPT (messages, images), no question type

Needs pyarrow and Pillow.
"""
import base64
import csv
import io
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "benchmarks")


def png(colour, size=(56, 42)):
    b = io.BytesIO()
    Image.new("RGB", size, colour).save(b, format="PNG")
    return b.getvalue()


def b64(colour):
    return base64.b64encode(png(colour)).decode()


RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 180, 30), (30, 30, 200), (128, 128, 128)
IMG_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
BROKEN = "bm90IGFuIGltYWdlIGF0IGFsbCwganVzdCB0ZXh0IHRoYXQgaXMgbG9uZyBlbm91Z2ggdG8gbm90IGJlIGFuIGluZGV4"


def path(*parts):
    p = os.path.join(OUT, *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def write_tsv(p, header, rows):
    # pandas' to_csv(sep="\t") quoting, as VLMEvalKit writes its TSVs.
    with open(path(p), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def threedsr():
    questions = [
        # qid base, question, options, correct option, category, colour
        ("q1", "Is the lamp higher than the chair?", ["yes", "no"], "yes", "height_higher", RED),
        ("q1-flip", "Is the lamp higher than the chair?", ["yes", "no"], "yes", "height_higher", GREEN),
        ("q2", "Which direction is the car facing?", ["left", "right", "towards the camera"], "towards the camera",
         "orientation_on_the_left", BLUE),
        ("q3", "Is the cup above the table?", ["yes", "no"], "yes", "location_above", None),
        ("q4", "Which is closer to the sofa?", ["the cup", "the plate"], "the plate", "multi_object_closer_to", GREY),
    ]
    rows, index = [], 0
    for qid, q, opts, correct, cat, colour in questions:
        for k in range(len(opts)):  # circular copies: options rotated by k
            rot = opts[k:] + opts[:k]
            image = b64(colour) if colour else BROKEN
            rows.append([str(index), f"{qid}-{k}", q] + rot + [""] * (4 - len(rot))
                        + ["ABCD"[rot.index(correct)], cat, image, "MS-COCO", f"http://images.example/{qid}.jpg"])
            index += 1
            if colour is None:
                break
    write_tsv("3dsrbench/3dsrbench_v1_vlmevalkit_circular.tsv",
              ["index", "qid", "question", "A", "B", "C", "D", "answer", "category", "image", "image_source",
               "image_url"], rows)


def blink():
    subtasks = {
        "Multi-view_Reasoning": [([RED, BLUE], ["left", "right"], "(B)"), ([GREEN, GREY], ["left", "right"], "(A)")],
        "Relative_Depth": [([GREEN], ["A is closer", "B is closer"], "(A)")],
        "Spatial_Relation": [([BLUE], ["yes", "no"], "(B)")],
        "Counting": [([GREY], ["1", "2", "3", "4"], "(D)")],
    }
    for task, items in subtasks.items():
        for split in ["val", "test"]:
            rows = [(f"{split}_{task}_{i + 1}", c, ch, a if split == "val" else "hidden")
                    for i, (c, ch, a) in enumerate(items[:1] if split == "test" else items)]
            table = {"idx": [r[0] for r in rows], "question": [f"Question of {r[0]}" for r in rows],
                     "sub_task": [task for _ in rows]}
            for k in range(4):
                table[f"image_{k + 1}"] = pa.array(
                    [{"bytes": png(r[1][k]), "path": None} if k < len(r[1]) else None for r in rows], type=IMG_T)
            table["choices"] = [r[2] for r in rows]
            table["answer"] = [r[3] for r in rows]
            table["prompt"] = ["" for _ in rows]
            table["explanation"] = ["" for _ in rows]
            pq.write_table(pa.table(table), path("blink", task, f"{split}-00000-of-00001.parquet"))


CV_ROWS = [
    # idx, type, task, colour, question, choices, answer, source, name
    (0, "2D", "Count", RED, "How many chairs are in the image?", ["0", "1", "2", "3"], "(C)", "ADE20K", "ade20k_1"),
    (1, "2D", "Relation", GREEN, "Is the cup left of the plate?", ["left", "right"], "(A)", "COCO", "coco_4"),
    (2, "2D", "Count", BLUE, "How many cars are in the image?", ["1", "2", "3"], "(B)", "COCO", "coco_9"),
    (3, "3D", "Depth", GREY, "Which is closer to the camera, the lamp or the bed?", ["lamp", "bed"], "(B)", "Omni3D",
     "omni3d_2"),
    (4, "3D", "Distance", RED, "Which object is closer to the sofa?", ["table", "tv"], "(A)", "Omni3D", "omni3d_5"),
]


def cvbench():
    for ty in ["2D", "3D"]:
        rows = [r for r in CV_ROWS if r[1] == ty]
        name = lambda r: f"img/{ty}/{r[2].lower()}/{r[8]}.png"
        table = {
            "idx": [r[0] for r in rows], "type": [r[1] for r in rows], "task": [r[2] for r in rows],
            "image": pa.array([{"bytes": png(r[3]), "path": None} for r in rows], type=IMG_T),
            "question": [r[4] for r in rows], "choices": [r[5] for r in rows], "answer": [r[6] for r in rows],
            "prompt": [r[4] + " Select from the following choices." for r in rows],
            "filename": [name(r) for r in rows], "source": [r[7] for r in rows],
        }
        pq.write_table(pa.table(table), path("cvbench", "parquet", f"test_{ty.lower()}.parquet"))
        with open(path("cvbench", "jsonl", f"test_{ty.lower()}.jsonl"), "w") as f:
            for r in rows:
                with open(path("cvbench", "jsonl", name(r)), "wb") as img:
                    img.write(png(r[3]))
                f.write(json.dumps({"idx": r[0], "type": r[1], "task": r[2], "filename": name(r), "question": r[4],
                                    "choices": r[5], "answer": r[6], "source": r[7]}) + "\n")
        # VLMEvalKit: the 2D file's `split` says "test" (its type comes from the
        # task), the 3D file's says "3D".
        tsv = []
        for i, r in enumerate(rows):
            opts = r[5] + [""] * (4 - len(r[5]))
            tsv.append([str(i), b64(r[3]), r[4]] + opts + [r[6].strip("()"), r[2], "test" if ty == "2D" else ty,
                                                            r[7], r[4] + " Select from the following choices."])
        write_tsv(f"cvbench/vlmevalkit/CV-Bench-{ty}.tsv",
                  ["index", "image", "question", "A", "B", "C", "D", "answer", "category", "split", "source", "prompt"],
                  tsv)


MMSI = [
    # index, colours, category, short category, question, options, answer
    (0, [RED, BLUE], "Positional Relationship (Cam.-Cam.)", "Cam-Cam", "Where is camera 2 relative to camera 1?",
     ["left", "right", "front", "behind"], "C"),
    (1, [GREEN, GREY, RED], "Attribute (Meas.)", "Meas", "Which is bigger?", ["the box", "the ball"], "A"),
]


def mmsi():
    rows = []
    for idx, cols, cat, _, q, opts, ans in MMSI:
        text = q + "\nOptions: " + ", ".join(f"{'ABCD'[i]}: {o}" for i, o in enumerate(opts))
        rows.append([str(idx), json.dumps([b64(c) for c in cols]), text, ans, cat, "thought"])
    rows.append(["2", json.dumps([b64(BLUE)]), "How far?\nOptions: A: 1m, B: 2m", "E", "Attribute (Meas.)", ""])
    write_tsv("mmsi/MMSI_bench.tsv", ["index", "image", "question", "answer", "category", "thought"], rows)

    header = ["index", "g_index", "image", "question", "A", "B", "C", "D", "answer", "category"]
    plain, circ = [], []
    for idx, cols, _, short, q, opts, ans in MMSI:
        correct = opts["ABCD".index(ans)]
        pad = lambda o: o + [""] * (4 - len(o))
        plain.append([str(idx), json.dumps([b64(c) for c in cols]), q] + pad(opts) + [ans, short])
        for k in range(len(opts)):
            rot = opts[k:] + opts[:k]
            image = json.dumps([b64(c) for c in cols]) if k == 0 else str(idx)
            circ.append((k, [str(idx + k * 1_000_000), str(idx), image, q] + pad(rot)
                         + ["ABCD"[rot.index(correct)], short]))
    # VLMEvalKit concatenates the copies after the originals.
    circ.sort(key=lambda kr: kr[0])
    write_tsv("mmsi/MMSIBench_circular.tsv", header, [r for _, r in circ])
    write_tsv("mmsi/MMSIBench_wo_circular.tsv", [h for h in header if h != "g_index"], plain)

    table = {
        "id": [0, 1, 2],
        "images": pa.array([[png(c) for c in r[1]] for r in MMSI] + [[png(BLUE)]], type=pa.list_(pa.binary())),
        "question_type": [r[2] for r in MMSI] + ["Attribute (Meas.)"],
        "question": [r[4] + "\nOptions: " + ", ".join(f"{'ABCD'[i]}: {o}" for i, o in enumerate(r[5])) for r in MMSI]
        + ["How far?\nOptions: A: 1m, B: 2m"],
        "answer": [r[6] for r in MMSI] + ["E"],
        "thought": ["", "", ""],
    }
    pq.write_table(pa.table(table), path("mmsi", "test.parquet"))


def sat():
    rows = [
        ([RED, BLUE], "Did the camera move left or right?", ["left", "right"], "right", "ego_movement"),
        ([GREEN], "Which is closest to the camera?", ["the box", "the ball", "the cup"], "the cup", "perspective"),
    ]
    table = {
        "image_bytes": pa.array([[png(c) for c in r[0]] for r in rows], type=pa.list_(pa.binary())),
        "question": [r[1] for r in rows],
        "answers": [r[2] for r in rows],
        "correct_answer": [r[3] for r in rows],
        "question_type": [r[4] for r in rows],
    }
    pq.write_table(pa.table(table), path("sat", "test.parquet"))


def viewpoint():
    lead = "The object captured in these two photos did not move. "
    qs = [
        ("From the camera's perspective, did the position of the camera that captured the second photo move relative "
         "to the first photo's camera position?", ["Move to the left", "Move to the right", "No movement"], "B"),
        ("From the object's perspective, did the position of the camera that captured the second photo move relative "
         "to the first photo's camera position?", ["Move to the right", "No movement", "Move to the left"], "C"),
        ("From the camera's perspective, did the orientation of the camera that captured the second photo rotate "
         "relative to the first photo's camera orientation?", ["No rotation", "Rotate to the left",
                                                               "Rotate to the right"], "B"),
    ]
    rows = []
    for i, (q, opts, ans) in enumerate(qs):
        imgs = []
        for j, c in enumerate([RED, BLUE]):
            name = f"images/vp_{i}_{j}.png"
            with open(path("viewpoint", name), "wb") as f:
                f.write(png(c))
            imgs.append(name)
        text = "<image><image>" + lead + q + "".join(f" {'ABC'[k]}: {o}" for k, o in enumerate(opts))
        text += " Select the correct option, please output only the option letter!"
        rows.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": ans}],
                     "images": imgs})
    with open(path("viewpoint", "test.json"), "w") as f:
        json.dump(rows, f, indent=1)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    threedsr()
    blink()
    cvbench()
    mmsi()
    sat()
    viewpoint()
    for root, _, files in sorted(os.walk(OUT)):
        for f in sorted(files):
            print(os.path.relpath(os.path.join(root, f), OUT))


if __name__ == "__main__":
    main()
