#!/usr/bin/env bash
# Runs an already-built llama.cpp on SmolLM2-135M-Instruct and the State of the Union
# texts, and keeps every log under $REFS (default /tmp/refs). It does not build
# llama.cpp: point LLAMA_BIN at the folder holding llama-quantize, llama-perplexity,
# llama-tokenize and llama-bench (see scripts/reference/README.md for where ours came
# from). Afterwards scripts/reference/smollm2_goldens.py turns the logs into the golden
# JSON files under crates/models/tests/data/.
#
# Usage: LLAMA_BIN=/path/to/llama.cpp/build/bin scripts/reference/smollm2_llamacpp.sh [step...]
#   steps: texts f32 ppl tokenize bench (default: all, in that order)
# Threads: -t ${THREADS:-2}. Everything runs under `nice`.
set -euo pipefail

CACHE="${TENSORPRESS_CACHE:-$HOME/.cache/tensorpress}"
REFS="${REFS:-/tmp/refs}"
BIN="${LLAMA_BIN:?set LLAMA_BIN to the build/bin folder of llama.cpp}"
THREADS="${THREADS:-2}"
Q41="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
F32="$REFS/f32.gguf"

[ -f "$Q41" ] || { echo "error: $Q41 missing; run scripts/fetch-testdata.sh" >&2; exit 1; }
mkdir -p "$REFS"

texts() {
  # Evaluation: the 2017-2021 addresses; calibration: 1990-2009. File-name order,
  # concatenated byte for byte (each file already ends with one "\n").
  (cd "$CACHE/sotu" && cat 2017_*.txt 2018_*.txt 2019_*.txt 2020_*.txt 2021_*.txt) >"$REFS/eval.txt"
  local calib=()
  for y in $(seq 1990 2009); do calib+=("$CACHE"/sotu/"${y}"_*.txt); done
  cat "${calib[@]}" >"$REFS/calib.txt"
  # llama-perplexity's -f strips exactly one trailing "\n" before tokenizing; this copy is
  # the exact string it tokenizes, for llama-tokenize (which reads -f verbatim).
  head -c -1 "$REFS/eval.txt" >"$REFS/eval_noeol.txt"
  sha256sum "$REFS"/eval.txt "$REFS"/eval_noeol.txt "$REFS"/calib.txt | tee "$REFS/texts.sha256"
}

f32() {
  nice "$BIN/llama-quantize" --allow-requantize "$Q41" "$F32" F32 2>&1 | tee "$REFS/quantize_f32.log"
}

ppl() {
  local name model
  for name in f32 q4_1; do
    if [ "$name" = f32 ]; then model="$F32"; else model="$Q41"; fi
    echo "loadavg before: $(cat /proc/loadavg)" >"$REFS/ppl_$name.load"
    nice /usr/bin/time -v "$BIN/llama-perplexity" -m "$model" -f "$REFS/eval.txt" -c 512 \
      -t "$THREADS" -lv 4 >"$REFS/ppl_$name.log" 2>&1
    echo "loadavg after: $(cat /proc/loadavg)" >>"$REFS/ppl_$name.load"
    grep -E "Final estimate|tokenizes|chunks|prompt eval time|Maximum resident" "$REFS/ppl_$name.log"
  done
}

tokenize() {
  nice "$BIN/llama-tokenize" -m "$Q41" -f "$REFS/eval_noeol.txt" --ids --log-disable \
    --no-escape >"$REFS/eval_ids.txt"
  nice "$BIN/llama-tokenize" -m "$Q41" -f "$REFS/eval.txt" --ids --log-disable \
    --no-escape >"$REFS/eval_with_eol_ids.txt"
  wc -c "$REFS"/eval_ids.txt "$REFS"/eval_with_eol_ids.txt
}

bench() {
  local name model
  for name in f32 q4_1; do
    if [ "$name" = f32 ]; then model="$F32"; else model="$Q41"; fi
    echo "loadavg before: $(cat /proc/loadavg)" >"$REFS/bench_$name.load"
    nice "$BIN/llama-bench" -m "$model" -t "$THREADS" -p 512 -n 128 -o md \
      2>"$REFS/bench_$name.err" | tee "$REFS/bench_$name.md"
    echo "loadavg after: $(cat /proc/loadavg)" >>"$REFS/bench_$name.load"
  done
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(texts f32 ppl tokenize bench)
for s in "${steps[@]}"; do
  case "$s" in
    texts | f32 | ppl | tokenize | bench) echo "== $s" && "$s" ;;
    *) echo "error: unknown step $s" >&2 && exit 2 ;;
  esac
done
