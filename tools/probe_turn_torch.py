#!/usr/bin/env python3
"""The turn probe in PyTorch: transformers' Qwen2.5-VL with the tiny preset's config
(assets/tiny-base/config.json, random init), trained on the same two-photo jsonl
actial trains on, to tell a data problem from an engine problem
(docs/TINY_BASE.md, "Open").

  cargo run --release --bin actial-data -- synth --out /tmp/turn --pairs 3000 --scene cube
  /work/venv/bin/python tools/probe_turn_torch.py /tmp/turn [--steps 600] [--lr 1e-3]

Given a synth directory, the rows are "Did the camera turn left or right?" (A: Left,
B: Right, answer from manifest.jsonl's camera_rotation); given a jsonl file, rows
with question, options, answer index and image paths (actial's MCQ jsonl, which
actial-train reads too).

Same chat layout as actial (default system prompt, <|vision_start|><|image_pad|>*n
<|vision_end|> per image, then the question with lettered options and the letter
instruction), labels on the answer letter and <|im_end|>, batch 16, AdamW, the last
5% of rows held out. Prints the training loss every 50 steps and held-out accuracy
(the letter with the larger logit) at the end.
"""
import argparse
import json
import os
import random

import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
INSTRUCTION = "Select the correct option, please output only the option letter!"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    if os.path.isdir(args.jsonl):
        base = args.jsonl
        rows = []
        for line in open(os.path.join(base, "manifest.jsonl")):
            m = json.loads(line)
            rows.append({"question": "Did the camera turn left or right?", "options": ["Left", "Right"],
                         "answer": 0 if m["answers"]["camera_rotation"] == "left" else 1,
                         "images": ["images/" + m["images"][0], "images/" + m["images"][1]]})
    else:
        base = os.path.dirname(os.path.abspath(args.jsonl))
        rows = [json.loads(line) for line in open(args.jsonl)]
    cfg = Qwen2_5_VLConfig.from_pretrained(os.path.join(ROOT, "assets/tiny-base"))
    model = Qwen2_5_VLForConditionalGeneration(cfg).float()
    tok = Tokenizer.from_file(os.path.join(ROOT, "assets/tiny/tokenizer.json"))
    proc = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=12845056)
    tid = lambda s: tok.token_to_id(s)
    im_start, im_end, vs, ve, pad = tid("<|im_start|>"), tid("<|im_end|>"), tid("<|vision_start|>"), tid("<|vision_end|>"), tid("<|image_pad|>")
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids

    items = []
    for r in rows:
        imgs = [Image.open(os.path.join(base, p)).convert("RGB") for p in r["images"]]
        px = proc(images=imgs, return_tensors="pt")
        grids = px["image_grid_thw"]
        letters = "ABCDEFGH"
        q = r["question"] + " " + " ".join(f"{letters[i]}: {o}" for i, o in enumerate(r["options"])) + " " + INSTRUCTION
        ids = [im_start] + enc("system\nYou are a helpful assistant.") + [im_end] + enc("\n") + [im_start] + enc("user\n")
        for g in grids:
            ids += [vs] + [pad] * int(g.prod() // 4) + [ve]
        ids += enc(q) + [im_end] + enc("\n") + [im_start] + enc("assistant\n")
        prompt_len = len(ids)
        answer = letters[r["answer"]]
        ids += enc(answer) + [im_end]
        labels = [-100] * prompt_len + ids[prompt_len:]
        items.append((torch.tensor(ids), torch.tensor(labels), px["pixel_values"], grids, enc(answer)[0]))
    n_held = max(1, len(items) // 20)
    train, held = items[:-n_held], items[-n_held:]
    letter_ids = [enc(l)[0] for l in "AB"]

    def batch(xs):
        t = max(len(x[0]) for x in xs)
        ids = torch.full((len(xs), t), 0, dtype=torch.long)
        lab = torch.full((len(xs), t), -100, dtype=torch.long)
        att = torch.zeros((len(xs), t), dtype=torch.long)
        for i, x in enumerate(xs):
            ids[i, : len(x[0])], lab[i, : len(x[1])], att[i, : len(x[0])] = x[0], x[1], 1
        return dict(input_ids=ids, labels=lab, attention_mask=att,
                    pixel_values=torch.cat([x[2] for x in xs]), image_grid_thw=torch.cat([x[3] for x in xs]))

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    model.train()
    losses = []
    for step in range(1, args.steps + 1):
        out = model(**batch(random.sample(train, args.batch)))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
        if step % 50 == 0:
            print(f"step {step}: loss {sum(losses[-50:]) / 50:.3f}", flush=True)
    model.eval()
    right = 0
    with torch.no_grad():
        for x in held:
            b = batch([x])
            pos = int((x[1] != -100).nonzero()[0]) - 1  # the position predicting the letter
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits[0, pos]
            pick = letter_ids[int(logits[letter_ids].argmax())]
            right += int(pick == x[4])
    print(f"held-out accuracy {right}/{len(held)} = {right / len(held):.3f}")


if __name__ == "__main__":
    main()
