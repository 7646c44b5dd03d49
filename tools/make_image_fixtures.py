#!/usr/bin/env python3
"""Preprocessing fixtures: images in the shapes photos come in and what both of
transformers' Qwen2-VL / Qwen2.5-VL image processors make of them, 8-bit level
for 8-bit level.

Writes tests/fixtures/images/:
- inputs: a.png, b.jpg (small), photo.jpg (336x252, 4:2:0 chroma, needs no
  resize: decoding alone), odd.png (173x227), wide.png (800x30), grey.png (L),
  palette.png (P), exif6.jpg (EXIF orientation 6), small.png (30x29, below
  min_pixels);
- decoded/<name>.png: the RGB pixels PIL decodes (after exif_transpose, as
  transformers' load_image), for every JPEG;
- resized/<backend>/<name>_<max_pixels>.png: the resized 8-bit image each
  processor feeds to rescale / normalise (`torchvision`:
  Qwen2VLImageProcessor, transformers 5's default with torchvision;
  `pil`: Qwen2VLImageProcessorPil), read back from pixel_values of a run
  with do_rescale / do_normalize off;
- expected.safetensors: pixel_values of a.png + b.jpg through both processors
  (normalised: pixel_values_torchvision, pixel_values_pil), and smart_resize on
  a few sizes.

Run with the tools venv (torch, torchvision, transformers, pillow, safetensors):
  /work/venv/bin/python tools/make_image_fixtures.py
"""
import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.numpy import save_file
from transformers.image_utils import load_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
BACKENDS = {"torchvision": Qwen2VLImageProcessor, "pil": Qwen2VLImageProcessorPil}
# (input, max_pixels): the released budget, the paper's 960x540, and small ones
# that force a downscale.
CASES = [
    ("a.png", 12845056), ("b.jpg", 12845056), ("photo.jpg", 50 * 28 * 28),
    ("photo.jpg", 37 * 28 * 28), ("odd.png", 12845056), ("odd.png", 20 * 28 * 28),
    ("wide.png", 12845056), ("wide.png", 8 * 28 * 28), ("grey.png", 12845056), ("palette.png", 12845056),
    ("exif6.jpg", 12845056), ("small.png", 12845056),
]


def pattern(h, w, seed):
    """Smooth gradients plus a few hard edges: resampling differences show up but
    stay small, as on photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 7.0 + y / 11.0)], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def photo(h, w, seed):
    """A photo-like image: smooth shading, texture noise, coloured edges."""
    rng = np.random.default_rng(seed)
    base = pattern(h, w, seed).astype(np.float64)
    base += rng.normal(0, 5, base.shape)
    y, x = np.mgrid[0:h, 0:w]
    disc = (x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (min(h, w) * 0.2) ** 2
    base[disc] = [220, 40, 90]
    return np.clip(base, 0, 255).astype(np.uint8)


def write_inputs():
    Image.fromarray(pattern(90, 130, 1)).save(os.path.join(OUT, "a.png"))
    Image.fromarray(pattern(47, 61, 2)).save(os.path.join(OUT, "b.jpg"), quality=95)
    Image.fromarray(photo(252, 336, 3)).save(os.path.join(OUT, "photo.jpg"), quality=85, subsampling="4:2:0")
    Image.fromarray(photo(227, 173, 4)).save(os.path.join(OUT, "odd.png"))
    Image.fromarray(photo(30, 800, 5)).save(os.path.join(OUT, "wide.png"))
    Image.fromarray(photo(70, 100, 6)).convert("L").save(os.path.join(OUT, "grey.png"))
    Image.fromarray(photo(90, 90, 7)).convert("P", palette=Image.ADAPTIVE, colors=64).save(
        os.path.join(OUT, "palette.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(photo(60, 80, 8)).save(os.path.join(OUT, "exif6.jpg"), quality=90, exif=exif.tobytes())
    Image.fromarray(photo(29, 30, 9)).save(os.path.join(OUT, "small.png"))


def unpatchify(pixel_values, grid, merge=2, patch=14, temporal=2):
    """pixel_values [N, 3*T*P*P] of one image back to [H, W, 3]."""
    _, gh, gw = grid
    x = pixel_values.reshape(gh // merge, gw // merge, merge, merge, 3, temporal, patch, patch)
    x = x[:, :, :, :, :, 0]  # the still frame, repeated over T
    x = x.transpose(0, 2, 5, 1, 3, 6, 4)  # bh, mh, i, bw, mw, j, c
    return x.reshape(gh * patch, gw * patch, 3)


def main():
    os.makedirs(OUT, exist_ok=True)
    write_inputs()
    os.makedirs(os.path.join(OUT, "decoded"), exist_ok=True)
    for name in sorted(os.listdir(OUT)):
        if name.endswith(".jpg"):
            load_image(os.path.join(OUT, name)).save(os.path.join(OUT, "decoded", name[:-4] + ".png"))
    for backend, cls in BACKENDS.items():
        os.makedirs(os.path.join(OUT, "resized", backend), exist_ok=True)
        for name, max_pixels in CASES:
            img = load_image(os.path.join(OUT, name))
            proc = cls(min_pixels=56 * 56, max_pixels=max_pixels, do_rescale=False, do_normalize=False)
            out = proc([img], return_tensors="np")
            px = np.asarray(out["pixel_values"], dtype=np.float64)
            rgb = unpatchify(px, out["image_grid_thw"][0])
            assert np.all(rgb == np.round(rgb)) and rgb.min() >= 0 and rgb.max() <= 255
            Image.fromarray(rgb.astype(np.uint8)).save(
                os.path.join(OUT, "resized", backend, f"{name.split('.')[0]}_{max_pixels}.png"))
    a, b = load_image(os.path.join(OUT, "a.png")), load_image(os.path.join(OUT, "b.jpg"))
    tensors = {}
    for backend, cls in BACKENDS.items():
        out = cls(min_pixels=56 * 56, max_pixels=12845056)([a, b], return_tensors="np")
        tensors[f"pixel_values_{backend}"] = np.asarray(out["pixel_values"], dtype=np.float32)
        tensors["image_grid_thw"] = np.asarray(out["image_grid_thw"], dtype=np.int64)
    tensors["smart_resize_in"] = np.array(
        [[480, 640], [1080, 1920], [90, 130], [28, 28], [3000, 4000], [56, 1000], [47, 61]], dtype=np.int64)
    tensors["smart_resize_default"] = np.array(
        [smart_resize(h, w, 28, 3136, 12845056) for h, w in tensors["smart_resize_in"]], dtype=np.int64)
    tensors["smart_resize_960x540"] = np.array(
        [smart_resize(h, w, 28, 3136, 960 * 540) for h, w in tensors["smart_resize_in"]], dtype=np.int64)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    print("torch", torch.__version__, "cpu:", torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    main()
