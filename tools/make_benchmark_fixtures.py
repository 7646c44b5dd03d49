#!/usr/bin/env python3
"""Small benchmark files in the layouts the benchmarks are published in, for
tests/benchmarks.rs (actial::data::benchmarks):

- cvbench.parquet: nyu-visionx/CV-Bench (idx, type 2D/3D, task, image {bytes,
  path}, question, choices, answer "(B)", source, prompt);
- cvbench.jsonl: the same rows as test.jsonl with `filename` paths to images/;
- blink.parquet: BLINK-Benchmark/BLINK (idx, question, sub_task, image_1..image_4
  {bytes, path} or null, choices, answer "(A)", prompt, explanation), incl. a
  hidden-answer test row;
- mmsi.parquet: RunsenXu/MMSI-Bench (id, images list<binary>, question_type,
  question with the options in its text, answer letter, thought);
- 3dsrbench.tsv: a VLMEvalKit circular TSV (index, question, A..D, answer,
  category, image base64; copies of a question at index + 1e6 with the options
  rotated; one row naming another row's index instead of repeating the image),
  plus a row with undecodable base64.

Each image is a flat colour so a reader mixing rows up is caught. Needs pyarrow
and Pillow (the project's tools venv).
"""
import base64
import csv
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "benchmarks")


def png(colour, size=(56, 42)):
    b = io.BytesIO()
    Image.new("RGB", size, colour).save(b, format="PNG")
    return b.getvalue()


RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 180, 30), (30, 30, 200), (128, 128, 128)
IMG_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def cvbench():
    rows = [
        # idx, type, task, colour, question, choices, answer, source
        (0, "2D", "Count", RED, "How many chairs are in the image?", ["0", "1", "2", "3"], "(C)", "ADE20K"),
        (1, "2D", "Relation", GREEN, "Is the cup left of the plate?", ["left", "right"], "(A)", "COCO"),
        (2, "2D", "Count", BLUE, "How many cars are in the image?", ["1", "2", "3"], "(B)", "COCO"),
        (3, "3D", "Depth", GREY, "Which is closer to the camera, the lamp or the bed?", ["lamp", "bed"], "(B)", "Omni3D"),
        (4, "3D", "Distance", RED, "Which object is closer to the sofa?", ["table", "tv"], "(A)", "Omni3D"),
    ]
    table = {
        "idx": [r[0] for r in rows],
        "type": [r[1] for r in rows],
        "task": [r[2] for r in rows],
        "image": pa.array([{"bytes": png(r[3]), "path": None} for r in rows], type=IMG_T),
        "question": [r[4] for r in rows],
        "choices": [r[5] for r in rows],
        "answer": [r[6] for r in rows],
        "source": [r[7] for r in rows],
        "prompt": [r[4] + " Select from the following choices." for r in rows],
    }
    pq.write_table(pa.table(table), os.path.join(OUT, "cvbench.parquet"))
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    with open(os.path.join(OUT, "cvbench.jsonl"), "w") as f:
        for r in rows:
            name = f"images/cv_{r[0]}.png"
            with open(os.path.join(OUT, name), "wb") as img:
                img.write(png(r[3]))
            f.write(json.dumps({"idx": r[0], "type": r[1], "task": r[2], "filename": name, "question": r[4],
                                "choices": r[5], "answer": r[6], "source": r[7]}) + "\n")


def blink():
    rows = [
        ("val_Multi-view_Reasoning_1", "Multi-view_Reasoning", [RED, BLUE], ["left", "right"], "(B)"),
        ("val_Relative_Depth_1", "Relative_Depth", [GREEN], ["A is closer", "B is closer"], "(A)"),
        ("val_Spatial_Relation_1", "Spatial_Relation", [BLUE], ["yes", "no"], "(B)"),
        ("val_Counting_1", "Counting", [GREY], ["1", "2", "3", "4"], "(D)"),
        ("test_Relative_Depth_9", "Relative_Depth", [RED], ["A is closer", "B is closer"], "hidden"),
    ]
    table = {"idx": [r[0] for r in rows], "question": [f"Question of {r[0]}" for r in rows],
             "sub_task": [r[1] for r in rows]}
    for k in range(4):
        table[f"image_{k + 1}"] = pa.array(
            [{"bytes": png(r[2][k]), "path": None} if k < len(r[2]) else None for r in rows], type=IMG_T)
    table["choices"] = [r[3] for r in rows]
    table["answer"] = [r[4] for r in rows]
    table["prompt"] = ["" for _ in rows]
    table["explanation"] = ["" for _ in rows]
    pq.write_table(pa.table(table), os.path.join(OUT, "blink.parquet"))


def mmsi():
    rows = [
        (0, [RED, BLUE], "Camera-Camera", "Where is camera 2 relative to camera 1?\nOptions: A: left, B: right, C: front, D: behind", "C"),
        (1, [GREEN, GREY, RED], "Object-Object", "Which is bigger?\nOptions: A: the box, B: the ball", "A"),
        (2, [BLUE], "Measurement", "How far?\nOptions: A: 1m, B: 2m", "E"),
    ]
    table = {
        "id": [r[0] for r in rows],
        "images": pa.array([[png(c) for c in r[1]] for r in rows], type=pa.list_(pa.binary())),
        "question_type": [r[2] for r in rows],
        "question": [r[3] for r in rows],
        "answer": [r[4] for r in rows],
        "thought": ["" for _ in rows],
    }
    pq.write_table(pa.table(table), os.path.join(OUT, "mmsi.parquet"))


def threedsr():
    b64 = lambda c: base64.b64encode(png(c)).decode()
    header = ["index", "question", "A", "B", "C", "D", "answer", "category", "image"]
    base = [
        # index, question, options, answer letter, category, colour
        (1, "Is the lamp higher than the chair?", ["yes", "no"], "A", "height_higher", RED),
        (2, "Which direction is the car facing?", ["left", "right", "towards the camera"], "C", "orientation_on_the_left", BLUE),
    ]
    lines = []
    for idx, q, opts, ans, cat, colour in base:
        n = len(opts)
        for k in range(n):  # circular copies: options rotated by k
            rot = opts[k:] + opts[:k]
            correct = opts["ABCD".index(ans)]
            image = b64(colour) if k == 0 else str(idx)  # later copies name the first row's index
            row = [str(idx + k * 1_000_000), q] + rot + [""] * (4 - n) + ["ABCD"[rot.index(correct)], cat, image]
            lines.append(row)
    lines.append(["3", "A question with a broken image", "yes", "no", "", "", "A", "location_above", "bm90IGFuIGltYWdlIGF0IGFsbCwganVzdCB0ZXh0IHRoYXQgaXMgbG9uZyBlbm91Z2ggdG8gbm90IGJlIGFuIGluZGV4"])
    with open(os.path.join(OUT, "3dsrbench.tsv"), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        w.writerows(lines)


def main():
    os.makedirs(OUT, exist_ok=True)
    cvbench()
    blink()
    mmsi()
    threedsr()
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
