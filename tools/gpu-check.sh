#!/usr/bin/env bash
# The GPU check: build here, run on a lent GPU machine in one call, one report.
#
# The GPU machine has the NVIDIA driver (CUDA 13.0) but no Rust, so everything
# runs from binaries built on this machine:
#
#   tools/gpu-check.sh build        # here: release test/bench binaries -> gpu-bundle/
#   tools/gpu-check.sh rehearse     # here: the same run on the emulated driver (smoke-size benches)
#   tools/gpu-check.sh run          # there: run them all, print and save the report
#
# `rehearse` proves the bundle and this script work end to end before a lent
# GPU's few minutes are spent on them; its figures are the emulator's.
#
# With the device tool: build here, then
#   run(command="tools/gpu-check.sh run", carry=["gpu-bundle"], timeout_s=...)
# The report goes to stdout and to $OUT/gpu-report.txt (or gpu-bundle/ without $OUT):
# kernel build table, parity pass/fail per test (= per kernel family), the tiny
# model's training step and grouped rollouts (tokens/s, CUDA and CPU), the bench
# table (TFLOP/s or GB/s, % of H100 peak, speedup over each baseline).
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/gpu-bundle"

build() {
  set -e
  cd "$root"
  tools/install-cuda-toolchain.sh >/dev/null
  export ACTIAL_REQUIRE_CUDA_BUILD=1
  local staging
  staging="$(mktemp -d)"
  trap 'rm -rf "$staging"' RETURN
  rm -rf "$bundle" && mkdir -p "$bundle"
  # Test binaries' paths come from cargo's JSON messages (their names carry hashes).
  cargo test --release --no-run --message-format=json --test cuda_parity --test cuda_model --test cuda_build 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])' |
    while read -r name exe; do cp "$exe" "$staging/$name"; done
  cargo build --release --example gpu_report --example bench_train_step --example bench_rollout --example gpu_scale \
    --bin actial-train --bin actial-generate
  cp target/release/examples/{gpu_report,bench_train_step,bench_rollout,gpu_scale} "$staging/"
  cp target/release/{actial-train,actial-generate} "$staging/"
  # Line tables make the binaries ~65 MB each, and even stripped they are ~56 MiB
  # together: with the tracked tree that is over the 64 MiB the device tool
  # carries, so they travel compressed (about 3x) and run() unpacks them.
  strip "$staging"/*
  ls -la "$staging"
  tar -C "$staging" -czf "$bundle/bundle.tar.gz" .
  git rev-parse HEAD > "$bundle/COMMIT"
  local tracked carried
  tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
  carried=$(du -sb "$bundle" | cut -f1)
  echo "bundle: $((carried >> 20)) MiB compressed; with the tracked tree $(((tracked + carried) >> 20)) MiB of the 64 MiB that travel"
  if (((tracked + carried) > (60 << 20))); then
    echo "too close to the device tool's 64 MiB limit: trim the bundle" >&2
    return 1
  fi
}

run() {
  cd "$root"
  local out="${OUT:-$bundle}"
  local report="$out/gpu-report.txt"
  mkdir -p "$out"
  # The binaries, unpacked outside the tree (the report must not travel back with them).
  local bin
  bin="$(mktemp -d)"
  trap 'rm -rf "$bin"' RETURN
  if ! tar -C "$bin" -xzf "$bundle/bundle.tar.gz"; then
    echo "no usable $bundle/bundle.tar.gz: run tools/gpu-check.sh build first" | tee "$report"
    return 1
  fi
  # Common places for libcublasLt when it is not on the loader path.
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [[ -d "$d" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
  done
  # Or where a Python package put it (the CUDA 13 wheels: nvidia/cu13/lib).
  if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so'; then
    local found
    found="$(find /usr/local /opt -name 'libcublasLt.so.1*' 2>/dev/null | head -1)"
    [[ -n "$found" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$found")"
  fi
  # Run directories (models, batches, checkpoints) stay on the machine: $OUT
  # brings back at most 8 files.
  local runs
  runs="$(mktemp -d)"
  {
    echo "# actial GPU check, commit $(cat "$bundle/COMMIT" 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    echo "libcublasLt: $( (ldconfig -p 2>/dev/null | grep -o 'libcublasLt.so[.0-9]*' | head -1) || echo 'not in ldconfig'); LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    echo
    echo "## kernel build (ptxas)"
    "$bin/cuda_build" --nocapture --test-threads=1 2>&1 | grep -v '^running\|^$'
    echo
    echo "## parity (CUDA kernels vs CPU twins)"
    # A kernel that hangs on hardware must not eat the whole call: each test
    # binary gets TEST_TIMEOUT seconds, so the sections after it still run.
    local limit="${TEST_TIMEOUT:-150}" parity_rc model_rc
    timeout "$limit" "$bin/cuda_parity" --test-threads=1 --nocapture 2>&1 | tee "$out/parity.log" |
      grep -E '^test |SKIPPED|panicked|test result'
    parity_rc=${PIPESTATUS[0]}
    echo
    echo "## tensors and the tiny model on CUDA vs CPU"
    timeout "$limit" "$bin/cuda_model" --test-threads=1 --nocapture 2>&1 | tee -a "$out/parity.log" |
      grep -E '^test |SKIPPED|panicked|error|loss cpu|gradients, worst|test result'
    model_rc=${PIPESTATUS[0]}
    if ((parity_rc == 124 || model_rc == 124)); then
      echo "TIMED OUT: a test binary ran past $limit s (a kernel hanging on the GPU?); see parity.log"
    fi
    if grep -q SKIPPED "$out/parity.log"; then
      echo "PARITY NOT RUN: the tests skipped themselves (no usable CUDA device); nothing was checked"
    elif ((model_rc != 0)); then
      # Bisect in the same call: if the model passes on the SIMT attention, the
      # tensor-core kernels (mma / ldmatrix fragment layouts) are the suspects.
      echo
      echo "## cuda_model again with ACTIAL_ATTENTION_KERNEL=simt (does the failure follow the tensor-core attention?)"
      ACTIAL_ATTENTION_KERNEL=simt timeout "$limit" "$bin/cuda_model" --test-threads=1 2>&1 |
        tee "$out/model-simt.log" | grep -E '^test |panicked|test result'
    fi
    echo
    echo "## released widths, few layers: SFT and GRPO steps counted, next to the plan (examples/gpu_scale.rs)"
    # shellcheck disable=SC2086 # SCALE_ARGS is a list of words
    timeout "${SCALE_TIMEOUT:-150}" "$bin/gpu_scale" ${SCALE_ARGS:-3b 2 2 16 64 224} 2>&1 | tee "$out/scale.txt" ||
      echo "gpu_scale failed or timed out (exit $?)"
    echo
    echo "## the product on the GPU: README's GPU quick start"
    (
      set -x
      timeout 60 "$bin/actial-generate" --model assets/tiny-base --device cuda --prompt "Describe a cube." \
        --max-new-tokens 32
      timeout "${SFT_TIMEOUT:-120}" "$bin/actial-train" --recipe sft --device cuda --out "$runs/sft-cuda" \
        --set run.steps="${SFT_STEPS:-50}"
    ) 2>&1 | grep -v '^\[\|%|' | tail -30
    [[ -f "$runs/sft-cuda/metrics.jsonl" ]] && tail -1 "$runs/sft-cuda/metrics.jsonl" | cut -c1-600
    echo
    echo "## tiny model training step (forward + backward, batch of 16 two-image samples)"
    for mode in full lora; do
      for dev in cuda cpu; do
        ACTIAL_DEVICE=$dev timeout "${TRAIN_TIMEOUT:-120}" "$bin/bench_train_step" "$runs/step-$mode-$dev" \
          "${TRAIN_STEPS:-20}" $mode 2>&1 | tail -1 ||
          echo "bench_train_step $mode on $dev failed (exit $?)"
      done
    done
    echo
    echo "## tiny model rollouts (GRPO groups: prompts, group size, new tokens per sample)"
    for dev in cuda cpu; do
      # shellcheck disable=SC2086 # ROLLOUT_ARGS is a list of numbers
      ACTIAL_DEVICE=$dev timeout "${TRAIN_TIMEOUT:-120}" "$bin/bench_rollout" "$runs/rollout-$dev" \
        ${ROLLOUT_ARGS:-4 16 64} 2>&1 | tail -1 || echo "bench_rollout on $dev failed (exit $?)"
    done
    echo
    echo "## benches"
    if [[ "${SKIP_BENCHES:-0}" == 1 ]]; then
      echo "skipped (SKIP_BENCHES=1)"
    else
      timeout "${GPU_REPORT_TIMEOUT:-420}" "$bin/gpu_report" ${GPU_REPORT_ARGS:-} --out "$out/bench.txt" 2>&1 ||
        echo "gpu_report failed or timed out (exit $?)"
    fi
    if [[ -n "${FULL_RECIPE_TIMEOUT:-}" ]]; then
      echo
      echo "## the whole recipe on the GPU: actial-train --recipe full --device cuda (cut at $FULL_RECIPE_TIMEOUT s)"
      timeout "$FULL_RECIPE_TIMEOUT" "$bin/actial-train" --recipe full --device cuda --out "$runs/full-cuda" 2>&1 |
        grep -v '%|' | tail -40
      # The curves and the report come back (compare with a CPU run's).
      cp "$runs/full-cuda/report.md" "$out/full-report.md" 2>/dev/null
      cp "$runs/full-cuda/sft/metrics.jsonl" "$out/full-sft-metrics.jsonl" 2>/dev/null
      cp "$runs/full-cuda/grpo/metrics.jsonl" "$out/full-grpo-metrics.jsonl" 2>/dev/null
    fi
    rm -rf "$runs"
  } 2>&1 | tee "$report"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  # One timed training step (after two warm-ups) takes ~40 s on the emulator.
  rehearse) ACTIAL_EMULATED_DRIVER=1 GPU_REPORT_ARGS=--smoke TRAIN_STEPS=1 TRAIN_TIMEOUT=300 ROLLOUT_ARGS="1 2 4" \
    SCALE_ARGS="tiny 2 2 4 8 56" SCALE_TIMEOUT=300 SFT_STEPS=2 SFT_TIMEOUT=300 \
    OUT="${OUT:-$root/runs/gpu-rehearsal}" run ;;
  *) echo "usage: $0 build|rehearse|run" >&2; exit 2 ;;
esac
