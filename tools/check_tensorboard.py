#!/usr/bin/env python3
"""Reads a run's TensorBoard event files back with the `tensorboard` package
and checks them against its metrics.jsonl: every numeric metric of every step
is a scalar `<stage>/<name>` (nested objects as `a/b`) with the same value (to
f32), and a resumed run's points past its resume step are gone.

    /work/venv/bin/pip install tensorboard
    /work/venv/bin/python tools/check_tensorboard.py runs/embedded   # or a stage dir
"""
import json
import math
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def flatten(prefix, v, out):
    if isinstance(v, bool):
        out[prefix] = float(v)
    elif isinstance(v, (int, float)):
        if math.isfinite(v):
            out[prefix] = float(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            flatten(f"{prefix}/{k}", x, out)


def check_stage(stage_dir):
    lines = [json.loads(l) for l in open(os.path.join(stage_dir, "metrics.jsonl")) if l.strip()]
    acc = EventAccumulator(os.path.join(stage_dir, "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags, f"{stage_dir}/tb: no scalars"
    stage = sorted(tags)[0].split("/")[0]
    checked = 0
    for line in lines:
        want = {}
        for k, v in line.items():
            if k != "step":
                flatten(f"{stage}/{k}", v, want)
        for tag, value in want.items():
            assert tag in tags, f"{stage_dir}: no scalar {tag}"
            points = [e for e in acc.Scalars(tag) if e.step == line["step"]]
            assert len(points) == 1, f"{tag} step {line['step']}: {len(points)} points"
            got = points[0].value
            assert abs(got - value) <= 1e-6 * max(1.0, abs(value)) or math.isclose(got, value, rel_tol=1e-6), \
                f"{tag} step {line['step']}: {got} vs {value}"
            checked += 1
    steps = {e.step for t in tags for e in acc.Scalars(t)}
    assert steps == {l["step"] for l in lines}, f"steps in TensorBoard {sorted(steps)} vs metrics.jsonl"
    print(f"{stage_dir}: {len(lines)} steps, {len(tags)} tags, {checked} values equal to metrics.jsonl")


def main():
    root = sys.argv[1]
    stages = [root] if os.path.isdir(os.path.join(root, "tb")) else [
        os.path.join(root, s) for s in ("sft", "grpo", "pretrain") if os.path.isdir(os.path.join(root, s, "tb"))]
    assert stages, f"no tb/ in {root} or its sft/, grpo/, pretrain/"
    for d in stages:
        check_stage(d)


if __name__ == "__main__":
    main()
