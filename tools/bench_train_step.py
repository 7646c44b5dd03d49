#!/usr/bin/env python3
"""One training step (forward + backward, all parameters trainable, no optimizer) of
the tiny preset: actial vs PyTorch eager (transformers, float32, CPU), same
checkpoint, same batch, same thread count, in one run.

  /work/venv/bin/python tools/bench_train_step.py [--steps 10] [--attn sdpa|eager] [--lora]

--lora: rank-16 LoRA on the language model's q/k/v/o/gate/up/down projections
(PyTorch side: PEFT with the same targets); otherwise all parameters train.

Builds and runs `cargo run --release --example bench_train_step`, which writes the
tiny model and batch to a temp dir and times actial; then loads both into
transformers and times PyTorch. Prints both medians and the ratio.
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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--lora", action="store_true")
    args = ap.parse_args()
    threads = os.cpu_count()
    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--example", "bench_train_step", "--", d, str(args.steps), "lora" if args.lora else "full"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
        ours = json.loads(out.stdout.strip().splitlines()[-1])

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32, attn_implementation=args.attn)
        if args.lora:
            from peft import LoraConfig, get_peft_model

            targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
        model.train()
        b = load_file(os.path.join(d, "batch.safetensors"))
        ids = b["input_ids"].long()
        cfg = model.config
        image_token = cfg.image_token_id
        kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            labels=b["labels"].long(),
            pixel_values=b["pixel_values"],
            image_grid_thw=b["image_grid_thw"].long(),
            mm_token_type_ids=(ids == image_token).long(),
        )
        times, loss = [], None
        for i in range(args.steps + 2):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss = model(**kwargs).loss
            loss.backward()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        torch_median = statistics.median(times)

    tokens = ours["tokens"]
    mode = "LoRA r16 on the LM (PEFT on the PyTorch side)" if args.lora else "all parameters"
    print(f"tiny preset, batch of 16 x {tokens // 16} tokens (2 images each), {threads} threads, fwd+bwd, {mode}, median of {args.steps}")
    print(f"  actial         {ours['median_s'] * 1e3:8.1f} ms/step  {ours['tokens_per_s']:8.0f} tokens/s  loss {ours['loss']:.6f}")
    print(f"  pytorch{'+peft' if args.lora else '     '} {args.attn:6s} {torch_median * 1e3:8.1f} ms/step  {tokens / torch_median:8.0f} tokens/s  loss {loss.item():.6f}")
    print(f"  ratio (pytorch time / actial time): {torch_median / ours['median_s']:.2f}x")


if __name__ == "__main__":
    main()
