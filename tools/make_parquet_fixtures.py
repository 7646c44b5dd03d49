#!/usr/bin/env python3
"""Parquet fixtures in the layouts spatial RL data is published in:

- sat_array.parquet: array/SAT's columns (image_bytes: list<binary>, question,
  answers: list<string>, correct_answer, question_type);
- sat_verl.parquet: a verl RL layout (prompt: list<{role, content}> with <image>
  placeholders, images: list<{bytes, path}>, reward_model: {ground_truth, style},
  data_source).

Each holds a few good rows and deliberately bad ones (answer not among the
options, undecodable image bytes). Needs pyarrow and Pillow.
"""
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "parquet")


def png(colour):
    b = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(b, format="PNG")
    return b.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    red, blue = png((200, 30, 30)), png((30, 30, 200))
    rows = {
        "image_bytes": [[red], [red, blue], [blue], [b"not an image"]],
        "question": [
            "Is the red box to the left of the camera?",
            "Did the camera move left or right between the frames?",
            "How many boxes are there?",
            "What colour is this?",
        ],
        "answers": [["yes", "no"], ["left", "right"], ["1", "2", "3"], ["blue", "red"]],
        "correct_answer": ["yes", "right", "7", "blue"],
        "question_type": ["obj_left_right", "ego_movement", "count", "colour"],
    }
    pq.write_table(pa.table(rows), os.path.join(OUT, "sat_array.parquet"), compression="snappy")

    img_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    msg_t = pa.struct([("role", pa.string()), ("content", pa.string())])
    rm_t = pa.struct([("ground_truth", pa.string()), ("style", pa.string())])
    table = pa.table(
        {
            "data_source": ["sat", "sat"],
            "prompt": pa.array(
                [
                    [{"role": "user", "content": "<image><image>Which way did the camera turn? A: left B: right"}],
                    [{"role": "user", "content": "<image>Is the box red? A: yes B: no"}],
                ],
                type=pa.list_(msg_t),
            ),
            "images": pa.array([[{"bytes": red, "path": None}, {"bytes": blue, "path": None}], [{"bytes": red, "path": None}]], type=pa.list_(img_t)),
            "reward_model": pa.array([{"ground_truth": "B", "style": "rule"}, {"ground_truth": "A", "style": "rule"}], type=rm_t),
        }
    )
    pq.write_table(table, os.path.join(OUT, "sat_verl.parquet"), compression="snappy")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
