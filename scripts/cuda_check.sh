#!/usr/bin/env bash
# The GPU check of tensorpress-cuda, in one prepared script: the crate's
# tests (CUDA kernels against the CPU kernels, up to 11008 x 4096) and the
# cuda_gemv bandwidth example with the acceptance target (int4 g128 GEMV at
# 11008 x 4096 >= 70% of the device's theoretical memory bandwidth).
#
# The binaries are built on a machine without CUDA (nothing CUDA is needed
# to build) and carried to the GPU machine, where nothing is compiled.
#
# 1. Here (no GPU needed), from the repository root:
#
#      export CARGO_TARGET_DIR=/work/targets/cuda   # or wherever
#      cargo test  -p tensorpress-cuda --release --no-run
#      cargo build -p tensorpress-cuda --release --example cuda_gemv
#      scripts/cuda_check.sh stage                   # -> target/cuda-check/
#
#    `stage` runs the two cargo commands (a no-op when up to date) and copies
#    the test binary (as `kernels`) and the example (as `cuda_gemv`),
#    stripped (about 1 MB each), into target/cuda-check/, an ignored folder.
#
# 2. On the GPU machine, from the repository root, carrying
#    `target/cuda-check` (e.g. the device tool's carry: ["target/cuda-check"]):
#
#      bash scripts/cuda_check.sh run target/cuda-check
#
#    It finds the driver and NVRTC ($TENSORPRESS_NVRTC when set, ldconfig,
#    /usr/local/cuda*, Python wheels' nvidia/*/lib, else a search of the
#    file system), puts a `libnvrtc.so` link to the NVRTC that
#    matches the driver's CUDA major version first on LD_LIBRARY_PATH (the
#    bindings look for libnvrtc.so / .so.12 / .so.11; a CUDA 13 NVRTC is
#    only named libnvrtc.so.13), then runs the tests (TENSORPRESS_CUDA_REQUIRED=1:
#    a missing GPU fails them instead of skipping) and the example, each
#    under a timeout; about 2 minutes in all, 8 at most.
#
# Exit status: 0 when the tests pass, results match the CPU and the
# acceptance target is met; otherwise the first failing step's status.
set -uo pipefail

mode="${1:-run}"
dir="${2:-target/cuda-check}"

stage() {
    set -e
    local target="${CARGO_TARGET_DIR:-target}"
    local test_bin
    test_bin=$(cargo test -p tensorpress-cuda --release --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*/kernels-[^"]*"' | tail -1 | sed 's/.*"executable":"\([^"]*\)"/\1/')
    cargo build -p tensorpress-cuda --release --example cuda_gemv
    [ -n "$test_bin" ] && [ -x "$test_bin" ] || { echo "stage: no test binary found" >&2; exit 1; }
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$test_bin" "$dir/kernels"
    cp "$target/release/examples/cuda_gemv" "$dir/cuda_gemv"
    strip "$dir/kernels" "$dir/cuda_gemv" 2>/dev/null || true
    ls -la "$dir"
    echo "carry: $dir"
}

# The CUDA major version the driver supports (e.g. 12), or empty.
driver_major() {
    nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' | head -1
}

# Every libnvrtc.so* on this machine (not the builtins), one per line:
# $TENSORPRESS_NVRTC first when set, then the usual places, then (only when
# those hold none) the whole file system.
nvrtc_candidates() {
    local found
    found=$({
        [ -n "${TENSORPRESS_NVRTC:-}" ] && echo "$TENSORPRESS_NVRTC"
        ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ {print $NF}'
        for root in /usr/local /usr/lib /usr/lib64 /opt; do
            timeout 60 find "$root" -maxdepth 6 -name 'libnvrtc.so*' 2>/dev/null
        done
        for py in python3 python; do
            command -v "$py" >/dev/null || continue
            "$py" - <<'EOF' 2>/dev/null
import glob, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
for r in roots:
    for p in glob.glob(r + "/nvidia/**/libnvrtc.so*", recursive=True):
        print(p)
EOF
        done
    } | grep -v builtins | awk '!seen[$0]++')
    if [ -z "$found" ]; then
        found=$(timeout 120 find / -xdev \( -path /proc -o -path /sys \) -prune -o \
            -name 'libnvrtc.so*' -print 2>/dev/null | grep -v builtins)
    fi
    echo "$found"
}

run() {
    [ -x "$dir/kernels" ] && [ -x "$dir/cuda_gemv" ] || {
        echo "run: $dir/kernels and $dir/cuda_gemv are missing: build and stage them first (see the header)" >&2
        exit 3
    }
    dir=$(cd "$dir" && pwd)
    echo "== machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv 2>&1 | head -5
    local major
    major=$(driver_major)
    echo "driver CUDA major version: ${major:-unknown}"

    echo "== NVRTC"
    local cands best=""
    cands=$(nvrtc_candidates)
    echo "${cands:-none found}"
    if [ -n "$major" ]; then
        best=$(echo "$cands" | grep -E "\.so\.${major}(\.|$)" | head -1)
    fi
    [ -z "$best" ] && best=$(echo "$cands" | grep -E '\.so\.12(\.|$)' | head -1)
    [ -z "$best" ] && best=$(echo "$cands" | head -1)
    if [ -n "$best" ]; then
        mkdir -p "$dir/lib"
        ln -sf "$(readlink -f "$best")" "$dir/lib/libnvrtc.so"
        export LD_LIBRARY_PATH="$dir/lib:$(dirname "$(readlink -f "$best")")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "using $best"
    else
        echo "no NVRTC found: the checks will fail with NotAvailable"
    fi
    if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
        local cuda
        cuda=$(timeout 60 find /usr/lib /usr/lib64 /usr/local /lib -maxdepth 4 -name 'libcuda.so*' 2>/dev/null | head -1)
        [ -n "$cuda" ] && export LD_LIBRARY_PATH="$(dirname "$cuda"):$LD_LIBRARY_PATH" && echo "libcuda: $cuda"
    fi

    local status=0
    echo "== tests (CUDA kernels against the CPU kernels)"
    TENSORPRESS_CUDA_REQUIRED=1 timeout 300 "$dir/kernels" --test-threads=1 --nocapture
    local t=$?
    [ $t -ne 0 ] && { echo "tests: FAILED (status $t)"; status=$t; }

    echo "== cuda_gemv (bandwidth; acceptance: int4 g128 11008x4096 >= 70%)"
    timeout 180 "$dir/cuda_gemv" --require 0.7
    local b=$?
    [ $b -ne 0 ] && { echo "cuda_gemv: FAILED (status $b)"; [ $status -eq 0 ] && status=$b; }

    echo "== result: $([ $status -eq 0 ] && echo PASS || echo "FAIL (status $status)")"
    exit $status
}

case "$mode" in
    stage) stage ;;
    run) run ;;
    *)
        echo "usage: $0 stage [DIR] | run [DIR]   (DIR defaults to target/cuda-check)" >&2
        exit 2
        ;;
esac
