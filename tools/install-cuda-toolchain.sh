#!/usr/bin/env bash
# Installs the CUDA compiler (nvcc 13.0), the NVTX3 headers and libclang (for
# bindgen) from the Python package registry into tools/.cuda, a project-local
# directory. Idempotent: a second run with the same pins does nothing. Prints
# the nvcc path on the last line.
#
# Pins: ../shared/DESIGN.md. Keep 13.0: the GPU machines run driver 580 (CUDA 13.0),
# which cannot JIT PTX from a newer compiler.
#
#   tools/install-cuda-toolchain.sh           # install (or confirm) and print nvcc
#   ACTIAL_CUDA_DIR=/opt/x tools/...          # install somewhere else
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${ACTIAL_CUDA_DIR:-$root/tools/.cuda}"
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-nvtx==13.0.85
  libclang==18.1.1
)
stamp="$dest/.installed"
want="$(printf '%s\n' "${pins[@]}")"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dest/nvidia/cu13/bin/nvcc" ]]; then
  echo "CUDA toolchain already installed in $dest" >&2
else
  python="${PYTHON:-$(command -v python3 || command -v python || true)}"
  if [[ -z "$python" ]]; then
    echo "error: python3 with pip is needed to install nvcc from the package registry" >&2
    exit 1
  fi
  echo "installing ${pins[*]} into $dest" >&2
  # Install into a temporary directory first, so an interrupted install never
  # leaves a half-populated toolchain that a later build would pick up.
  tmp="$dest.partial"
  rm -rf "$tmp"
  "$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    --target "$tmp" "${pins[@]}"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  printf '%s\n' "${pins[@]}" > "$stamp"
  # build.rs watches this file: the next cargo build finds the new nvcc and
  # compiles the kernels, even after a CPU-only build.
  touch "$root/tools/cuda-toolchain.stamp"
fi

cu="$dest/nvidia/cu13"
nvcc="$cu/bin/nvcc"
if [[ ! -x "$nvcc" ]]; then
  echo "error: $nvcc missing after install" >&2
  exit 1
fi
"$nvcc" --version | tail -n 2 >&2
echo "$nvcc"
