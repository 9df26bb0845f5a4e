#!/usr/bin/env bash
# Runs the CUDA kernels of tensorpress-cuda (crates/cuda/src/kernels.cu) on
# the CPU, through the host shim in crates/cuda/emu/, and checks them against
# plain references: a check of the kernels' indexing and layouts that needs
# no GPU and no CUDA toolkit, only a C++20 compiler (about 15 s).
#
#   scripts/cuda_emulate.sh            # exit 0 when every kernel matches
#
# The kernel source is made host C++ by two edits: the PTX f16 conversion
# becomes a software one and the `extern __shared__` declaration goes (the
# shim provides the block's shared memory).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perl -0pe 's/__device__ __forceinline__ float h2f\(u16 h\) \{.*?\n\}/static inline float h2f(u16 h) { return half_to_float(h); }/s; s/extern __shared__ float4 x_shared\[\];//' \
    "$root/crates/cuda/src/kernels.cu" > "$work/kernels_cpu.inc"
grep -q 'half_to_float' "$work/kernels_cpu.inc" || { echo "cuda_emulate: h2f not found in kernels.cu" >&2; exit 1; }
cp "$root/crates/cuda/emu/shim.h" "$root/crates/cuda/emu/check.cpp" "$work/"
"${CXX:-c++}" -std=c++20 -O1 -ffp-contract=off -pthread -w -o "$work/check" "$work/check.cpp"
"$work/check"
