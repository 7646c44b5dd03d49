#!/usr/bin/env python3
"""Rollout throughput of the tiny preset: actial's grouped rollouts vs
transformers' `generate` (sampling, temperature 1, num_return_sequences = G),
same checkpoint, prompts, G and number of new tokens (no early stop), same thread
count, in one run.

  /work/venv/bin/python tools/bench_rollout.py [--prompts 4] [--group 8] [--new-tokens 64]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--example", "bench_rollout", "--", d, str(a.prompts), str(a.group), str(a.new_tokens)],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
        ours = json.loads(out.stdout.strip().splitlines()[-1])
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
        p = load_file(os.path.join(d, "prompts.safetensors"))
        ids = p["input_ids"].long()
        kw = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=p["pixel_values"],
            image_grid_thw=p["image_grid_thw"].long(),
            mm_token_type_ids=(ids == model.config.image_token_id).long(),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            num_return_sequences=a.group,
            max_new_tokens=a.new_tokens,
            min_new_tokens=a.new_tokens,
            eos_token_id=None,
            pad_token_id=0,
        )
        with torch.no_grad():
            model.generate(**{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                g = model.generate(**kw)
                times.append(time.perf_counter() - t0)
        theirs = statistics.median(times)
        n_new = (g.shape[1] - ids.shape[1]) * g.shape[0]
    print(f"tiny preset, {a.prompts} prompts x G={a.group}, {a.new_tokens} new tokens each, prompt {ids.shape[1]} tokens (2 images), median of 3")
    print(f"  actial                 {ours['median_s']:7.2f} s  {ours['tokens_per_s']:8.0f} tokens/s")
    print(f"  transformers generate  {theirs:7.2f} s  {n_new / theirs:8.0f} tokens/s")
    print(f"  ratio: {theirs / ours['median_s']:.2f}x")


if __name__ == "__main__":
    main()
