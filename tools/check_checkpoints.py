#!/usr/bin/env python3
"""Do actial's checkpoints load in other tools? Trains the tiny preset for a few
steps with LoRA and with full fine-tuning, then loads the results with
transformers (full) and transformers + PEFT (adapter), runs the same prompt with
two images through both engines and compares the logits.

  /work/venv/bin/pip install peft   # once, next to torch + transformers
  /work/venv/bin/python tools/check_checkpoints.py

Prints the largest logit difference per checkpoint and exits non-zero above 1e-3
relative.
"""
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def cargo(bin_name, *args):
    r = subprocess.run(["cargo", "run", "--quiet", "--release", "--bin", bin_name, "--", *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{bin_name} {' '.join(args)} failed:\n{r.stderr}")
    return r.stderr


def torch_logits(model, dump):
    d = load_file(dump)
    ids = d["input_ids"].long()
    image_token = model.config.image_token_id
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=d["pixel_values"],
            image_grid_thw=d["image_grid_thw"].long(),
            mm_token_type_ids=(ids == image_token).long(),
        )
    return out.logits[0], d["logits"]


def compare(name, ours_vs_theirs):
    theirs, ours = ours_vs_theirs
    err = ((theirs - ours).abs().max() / ours.abs().max()).item()
    print(f"{name}: max |logit difference| / max |logit| = {err:.2e}")
    return err


def main():
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data")
        cargo("actial-data", "synth", "--out", data, "--pairs", "6")
        common = ["--recipe", "sft", "--data", f"{data}/viewpoint.jsonl", "--set", "run.global_batch=4", "--set", "run.micro_batch=2", "--set", "run.steps=3"]
        lora_run, full_run = os.path.join(d, "lora"), os.path.join(d, "full")
        cargo("actial-train", *common, "--out", lora_run, "--set", "lora.enabled=true", "--set", "lora.rank=8", "--set", "lora.vision=true",
              "--set", 'lora.targets=["q_proj","v_proj","o_proj","up_proj","qkv"]')
        cargo("actial-train", *common, "--out", full_run)
        prompt = ["--image", f"{data}/images/000000_a.png", "--image", f"{data}/images/000000_b.png",
                  "--prompt", "Did the camera move left or right?", "--max-new-tokens", "1"]
        cargo("actial-generate", "--model", f"{lora_run}/base", "--adapter", f"{lora_run}/checkpoint-000003", *prompt, "--dump-logits", f"{d}/lora.st")
        cargo("actial-generate", "--model", f"{full_run}/checkpoint-000003", *prompt, "--dump-logits", f"{d}/full.st")

        full = Qwen2_5_VLForConditionalGeneration.from_pretrained(f"{full_run}/checkpoint-000003", dtype=torch.float32).eval()
        e_full = compare("full fine-tune (transformers)", torch_logits(full, f"{d}/full.st"))
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(f"{lora_run}/base", dtype=torch.float32).eval()
        peft = PeftModel.from_pretrained(base, f"{lora_run}/checkpoint-000003").eval()
        e_lora = compare("LoRA adapter (transformers + PEFT)", torch_logits(peft, f"{d}/lora.st"))
        merged = peft.merge_and_unload()
        e_merge = compare("PEFT merge_and_unload vs actial adapter", torch_logits(merged, f"{d}/lora.st"))
    worst = max(e_full, e_lora, e_merge)
    print("OK" if worst < 1e-3 else "MISMATCH")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
