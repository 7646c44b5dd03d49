#!/usr/bin/env bash
# Runs the emulated-driver test binaries (cuda_emulated, cuda_model,
# cuda_parity) N times in a row, cycling the emulator's thread and block order
# (forward, reverse, shuffle:<round>), with the default number of test threads,
# and stops at the first failure. A test that reads state other tests change
# (pool figures, counters, files) fails here sooner or later.
#
#   tools/repeat-emulated-tests.sh [N=20] [--release] [--asan]
#
# Builds once, then runs the test binaries directly; logs go to
# runs/repeat-emulated/<round>-<schedule>.log. The last line says how many
# rounds passed.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=20
profile_flag=()
asan=()
for a in "$@"; do
  case "$a" in
    --release) profile_flag=(--release) ;;
    --asan) asan=(env ACTIAL_EMULATOR_ASAN=1 ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0) ;;
    [0-9]*) rounds="$a" ;;
    *) echo "usage: $0 [N] [--release] [--asan]" >&2; exit 2 ;;
  esac
done

export ACTIAL_REQUIRE_CUDA_BUILD=1
logs=runs/repeat-emulated
mkdir -p "$logs"
# The executables cargo built for the three test targets (one build).
mapfile -t bins < <("${asan[@]}" cargo test "${profile_flag[@]}" --no-run --message-format=json \
  --test cuda_emulated --test cuda_model --test cuda_parity 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
if [[ ${#bins[@]} -ne 3 ]]; then
  echo "error: expected 3 test executables, found ${#bins[@]}" >&2
  exit 1
fi

start=$(date +%s)
for ((i = 1; i <= rounds; i++)); do
  case $((i % 3)) in
    1) schedule=forward ;;
    2) schedule=reverse ;;
    0) schedule="shuffle:$i" ;;
  esac
  log="$logs/$i-${schedule/:/-}.log"
  : >"$log"
  for b in "${bins[@]}"; do
    if ! "${asan[@]}" env ACTIAL_EMULATED_DRIVER=1 ACTIAL_EMULATOR_SCHEDULE="$schedule" "$b" >>"$log" 2>&1; then
      echo "round $i ($schedule): $(basename "$b") FAILED; see $log" >&2
      grep -E "FAILED|panicked" "$log" | head -20 >&2
      exit 1
    fi
  done
  passed=$(grep -c "^test result: ok" "$log" || true)
  echo "round $i/$rounds ($schedule): $passed/3 binaries ok, $(grep -oE '[0-9]+ passed' "$log" | awk '{s += $1} END {print s}') tests, $(($(date +%s) - start)) s so far"
done
echo "all $rounds rounds passed in $(($(date +%s) - start)) s"
