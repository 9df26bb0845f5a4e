#!/usr/bin/env bash
# Measures GGUF files with llama.cpp's own llama-perplexity: the files that
# `cargo run --release --example gguf_frontier -- OUT_DIR [RECIPE ...]` wrote, on the
# State of the Union addresses 2017-2021 (n_ctx 512), the same setting as the llama.cpp
# anchors of docs/gguf-frontier.md. It does not build llama.cpp: point LLAMA_BIN at the
# build/bin folder of an already-built llama.cpp (see scripts/reference/README.md), and
# run scripts/reference/smollm2_llamacpp.sh texts first for $REFS/eval.txt.
#
# Usage: LLAMA_BIN=/path/to/llama.cpp/build/bin scripts/reference/gguf_frontier.sh FILE.gguf...
# Prints, per file: bits per weight (file bytes x 8 / 134,515,008) and llama-perplexity's
# final estimate; each full log goes next to the file as FILE.ppl.log. Threads: -t
# ${THREADS:-2}; everything runs under `nice`, one file at a time.
set -euo pipefail

BIN="${LLAMA_BIN:?set LLAMA_BIN to the build/bin folder of llama.cpp}"
REFS="${REFS:-/tmp/refs}"
THREADS="${THREADS:-2}"
EVAL="$REFS/eval.txt"
[ -f "$EVAL" ] || { echo "error: $EVAL missing; run scripts/reference/smollm2_llamacpp.sh texts" >&2; exit 1; }
[ "$#" -gt 0 ] || { echo "usage: $0 FILE.gguf..." >&2; exit 2; }

for f in "$@"; do
  log="${f%.gguf}.ppl.log"
  nice "$BIN/llama-perplexity" -m "$f" -f "$EVAL" -c 512 -t "$THREADS" >"$log" 2>&1
  bytes=$(stat -c %s "$f")
  bpw=$(awk -v b="$bytes" 'BEGIN { printf "%.3f", b * 8 / 134515008 }')
  est=$(grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' "$log" || echo "no estimate (see $log)")
  printf '%s\t%s bpw\t%s\n' "$(basename "$f")" "$bpw" "$est"
done
