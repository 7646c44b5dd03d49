#!/usr/bin/env python3
"""Preprocessing fixtures: small PNG/JPEG images and what transformers' PIL image
processor for Qwen2-VL / Qwen2.5-VL (Qwen2VLImageProcessorPil) makes of them.

Writes tests/fixtures/images/{a.png, b.jpg, expected.safetensors}. Run with the
venv from tools/make_parity_fixtures.py:
  /work/venv/bin/python tools/make_image_fixtures.py
"""
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")


def pattern(h, w, seed):
    """Smooth gradients plus a few hard edges: resampling differences show up but
    stay small, as on photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 7.0 + y / 11.0)], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    a = Image.fromarray(pattern(90, 130, 1))
    a.save(os.path.join(OUT, "a.png"))
    b = Image.fromarray(pattern(47, 61, 2))
    b.save(os.path.join(OUT, "b.jpg"), quality=95)
    b = Image.open(os.path.join(OUT, "b.jpg"))  # what the decoder sees
    proc = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=12845056)
    out = proc([a, b], return_tensors="np")
    tensors = {
        "pixel_values": out["pixel_values"].astype(np.float32),
        "image_grid_thw": out["image_grid_thw"].astype(np.int64),
        # smart_resize on a few sizes, with the default and the paper's 960x540 budget.
        "smart_resize_in": np.array([[480, 640], [1080, 1920], [90, 130], [28, 28], [3000, 4000], [56, 1000], [47, 61]], dtype=np.int64),
    }
    tensors["smart_resize_default"] = np.array([smart_resize(h, w, 28, 3136, 12845056) for h, w in tensors["smart_resize_in"]], dtype=np.int64)
    tensors["smart_resize_960x540"] = np.array([smart_resize(h, w, 28, 3136, 960 * 540) for h, w in tensors["smart_resize_in"]], dtype=np.int64)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    print(out["image_grid_thw"], out["pixel_values"].shape)


if __name__ == "__main__":
    main()
