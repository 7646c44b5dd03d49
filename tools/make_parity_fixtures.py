#!/usr/bin/env python3
"""Parity fixtures for the Qwen2.5-VL model: tiny random checkpoints run through
transformers (the oracle) in float32 on the CPU.

For each case this writes tests/fixtures/parity/<case>/:
  config.json, model.safetensors   the checkpoint (hub names or transformers>=4.52 names)
  fixture.safetensors              inputs (input_ids, attention_mask, labels, pixel_values,
                                   image_grid_thw), outputs (logits, loss) and the
                                   gradient of the loss w.r.t. every parameter ("grad.<name>")

Run (needs torch + transformers; the Rust tests never do):
  python3 -m venv /work/venv && /work/venv/bin/pip install torch transformers safetensors
  /work/venv/bin/python tools/make_parity_fixtures.py
Deterministic: fixed seeds; re-running rewrites identical inputs and near-identical
outputs (float32 reductions may differ in the last bits across torch versions).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "parity")

# Token ids inside the tiny vocabulary.
VOCAB = 300
IMAGE, VIDEO, VSTART, VEND, EOS = 290, 291, 292, 293, 294


def config(text_hidden, heads, kv_heads, mrope, tied, vision_depth=3, fullatt=(1,)):
    # patch 6 and window 48 keep the window at 4x4 merged tokens (as 14 / 112 do)
    # while making pixel rows small (3*2*6*6 = 216 values).
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=text_hidden,
            intermediate_size=text_hidden * 3 // 2,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
            tie_word_embeddings=tied,
            max_position_embeddings=512,
            bos_token_id=EOS,
            eos_token_id=EOS,
            pad_token_id=0,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=40,
            num_heads=2,
            in_channels=3,
            patch_size=6,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=48,
            out_hidden_size=text_hidden,
            fullatt_block_indexes=list(fullatt),
        ),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VSTART,
        vision_end_token_id=VEND,
        eos_token_id=EOS,
        tie_word_embeddings=tied,
    )


def randomize(model, seed):
    """Replace the 0.02-std init with larger random values so every path matters:
    norms around 1, biases and weights large enough that logits are not flat."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or "norm1" in name or "norm2" in name or "ln_q" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def sample_tokens(g, n):
    return torch.randint(0, 280, (n,), generator=g).tolist()


def build_case(name, cfg, samples, grids, seed, hub_names):
    """samples: list of token lists (image placeholders already expanded)."""
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).float().eval()
    model.config._attn_implementation = "eager"
    randomize(model, seed)
    if cfg.text_config.tie_word_embeddings:
        model.tie_weights()
    g = torch.Generator().manual_seed(seed + 1)

    B, L = len(samples), max(len(s) for s in samples)
    input_ids = torch.full((B, L), 0, dtype=torch.long)  # pad id 0, right padding
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    for b, s in enumerate(samples):
        input_ids[b, : len(s)] = torch.tensor(s)
        attention_mask[b, : len(s)] = 1
        # Supervise the second half of each sample (like an assistant turn), never images.
        for i in range(len(s) // 2, len(s)):
            if s[i] not in (IMAGE, VSTART, VEND):
                labels[b, i] = s[i]
    mm_token_type_ids = (input_ids == IMAGE).long()

    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    tensors = {}
    if grids:
        grid_thw = torch.tensor(grids, dtype=torch.long)
        n_patches = int(sum(t * h * w for t, h, w in grids))
        patch_dim = 3 * 2 * 6 * 6
        pixel_values = torch.randn((n_patches, patch_dim), generator=g)
        kwargs.update(pixel_values=pixel_values, image_grid_thw=grid_thw, mm_token_type_ids=mm_token_type_ids)
        tensors.update(pixel_values=pixel_values, image_grid_thw=grid_thw)

    model.zero_grad()
    out = model(**kwargs)
    out.loss.backward()

    tensors.update(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        logits=out.logits.detach().contiguous(),
        loss=out.loss.detach().reshape(1),
    )
    for pname, p in model.named_parameters():
        if p.grad is not None:
            tensors["grad." + pname] = p.grad.detach().contiguous()

    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "fixture.safetensors"))

    # The checkpoint: transformers' own save (>= 4.52 names: model.visual., model.language_model.),
    # or renamed to the hub layout (visual., model.) that released checkpoints use.
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if cfg.text_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    if hub_names:
        renamed = {}
        for k, v in state.items():
            if k.startswith("model.visual."):
                k = "visual." + k[len("model.visual."):]
            elif k.startswith("model.language_model."):
                k = "model." + k[len("model.language_model."):]
            renamed[k] = v
        state = renamed
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1, default=str)
    size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d))
    print(f"{name}: loss {out.loss.item():.6f}, {len(tensors)} tensors, {size / 1e3:.0f} kB")


def main():
    g = torch.Generator().manual_seed(0)

    def img(grid):
        # <|vision_start|> + merged-token placeholders + <|vision_end|>
        t, h, w = grid
        return [VSTART] + [IMAGE] * (t * h * w // 4) + [VEND]

    # Case 1: untied head, GQA 4:2, a padded batch of 2: sample 0 holds two images with
    # non-square grids, one whose merged sides are multiples of the 4-token window
    # (16x8 patches -> 8x4) and one that is not (6x10 -> 3x5); sample 1 is text only.
    grids = [[1, 6, 10], [1, 16, 8]]
    s0 = sample_tokens(g, 5) + img(grids[0]) + sample_tokens(g, 4) + img(grids[1]) + sample_tokens(g, 12)
    s1 = sample_tokens(g, 23)
    build_case("untied_gqa_two_images", config(64, 4, 2, [2, 3, 3], tied=False), [s0, s1], grids, 11, hub_names=True)

    # Case 2: tied head, GQA 6:2, one image of 10x14 patches (5x7 merged), all blocks
    # windowed except block 2; transformers' own (>= 4.52) tensor names.
    grids = [[1, 10, 14]]
    s0 = sample_tokens(g, 3) + img(grids[0]) + sample_tokens(g, 9)
    build_case("tied_one_image", config(48, 6, 2, [1, 1, 2], tied=True, fullatt=(2,)), [s0], grids, 22, hub_names=False)

    # Case 3: text only, no vision input at all (ordinary 1D RoPE positions).
    s0 = sample_tokens(g, 17)
    build_case("text_only", config(32, 4, 1, [1, 1, 2], tied=True), [s0], [], 33, hub_names=True)


if __name__ == "__main__":
    sys.exit(main())
