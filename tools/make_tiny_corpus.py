#!/usr/bin/env python3
"""Writes assets/tiny/corpus.txt, the text the tiny tokenizer is trained on: the
Actial system prompt, the paper's three viewpoint questions with every option
order, and templated single-view / SAT-like questions and pseudo-CoTs. Plain
Python, deterministic (seed 0). After changing it, regenerate the tokenizer:
  python3 tools/make_tiny_corpus.py && cargo run --release --example make_tiny_tokenizer
"""
import itertools
import os
import random

random.seed(0)
lines = []
sysp = ("You are Actial, a helpful assistant with excellent reasoning ability. A user asks you a question, and you should "
        "try to solve it. You should first think about the reasoning process in the mind and then provides the user with the "
        "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>")
lines += [sysp, "You are a helpful assistant."]
qs = [
    "The object captured in these two photos did not move. From the camera's perspective, did the position of the camera that captured the second photo move relative to the first photo's camera position?",
    "The object captured in these two photos did not move. From the object's perspective, did the position of the camera that captured the second photo move relative to the first photo's camera position?",
    "The object captured in these two photos did not move. From the camera's perspective, did the orientation of the camera that captured the second photo rotate relative to the first photo's camera orientation?",
]
opts = [["Move to the left", "Move to the right", "No movement"], ["Rotate to the left", "Rotate to the right", "No rotation"]]
for q in qs:
    for o in opts:
        for perm in itertools.permutations(o):
            lines.append(q + " " + " ".join(f"{l}: {t}" for l, t in zip("ABC", perm)) + " Select the correct option, please output only the option letter!")
colours = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black", "grey", "brown", "pink", "cyan"]
parts = ["cube", "sphere", "cone", "cylinder", "block", "tower", "wheel", "arm", "roof", "base", "handle", "top", "side face", "front face"]
rels = ["left of", "right of", "nearer to the camera than", "farther from the camera than", "above", "below", "in front of", "behind"]
for _ in range(400):
    c1, c2 = random.sample(colours, 2)
    p1, p2 = random.sample(parts, 2)
    r = random.choice(rels)
    form = random.randrange(6)
    if form == 0:
        lines.append(f"Is the {c1} {p1} {r} the {c2} {p2}? A: yes B: no Answer with the option letter.")
    elif form == 1:
        lines.append(f"Which colour is the {p1} on the left? A: {c1} B: {c2} C: {random.choice(colours)}")
    elif form == 2:
        lines.append(f"How many {p1}s are in the image? A: {random.randint(0,4)} B: {random.randint(5,9)} C: {random.randint(10,12)}")
    elif form == 3:
        lines.append(f"Seen from the second camera, is the {c1} part {r} the {c2} part?")
    elif form == 4:
        lines.append(f"The scene shows a {c1} {p1} on a {c2} {p2}, lit from the {random.choice(['left', 'right', 'front', 'back'])}.")
    else:
        a = random.randint(20, 100)
        lines.append(f"<think>The first image shows the {c1} {p1} with its {c2} {p2} facing the camera. In the second image the {p2} has moved towards the {random.choice(['left', 'right'])} edge, so the camera orbited about {a} degrees around the object. Moving in 3D, the camera translated to the {random.choice(['left', 'right'])} and turned to the {random.choice(['left', 'right'])} to keep the object in view.</think><answer>{random.choice('ABC')}</answer>")
lines += [f"<answer>{x}</answer>" for x in "ABCD"] + ["A", "B", "C", "D", "yes", "no", "0 1 2 3 4 5 6 7 8 9 10 11 12 20 45 90 100 180 360 degrees"]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "tiny", "corpus.txt")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"{len(lines)} lines")
