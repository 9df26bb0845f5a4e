#!/usr/bin/env bash
# The checks beside the tests: formatting, clippy on every target with
# warnings as errors, and the docs with broken links as errors. Run before
# every push; CI runs the formatting check and the tests (clippy and rustdoc
# build every dependency a second time in check mode, minutes that CI's time
# budget on 2 cores does not have).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
# The MPI engine, where an MPI library is installed (Debian: libopenmpi-dev,
# libclang-dev).
if command -v mpicc >/dev/null; then
  cargo clippy -p tensorpress-codecs --features mpi --all-targets -- -D warnings
  RUSTDOCFLAGS="-D warnings" cargo doc -p tensorpress-codecs --features mpi --no-deps
fi
echo "lint: ok"
