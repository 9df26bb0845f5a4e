#!/usr/bin/env python3
"""Golden vectors for tensorpress's GGML codecs, made with the `gguf` package.

The `gguf` package (PyPI, llama.cpp's gguf-py) carries numpy reference
quantizers and dequantizers that are bit-exact with ggml-quants.c. This script
runs them on

  (a) small deterministic inputs, for every type tensorpress encodes
      (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): the encoded bytes and the
      decoded f32 values;
  (b) a few real blocks of SmolLM2-135M-Instruct (a Q4_1 attention weight and
      the Q8_0 token embedding): the raw block bytes and the decoded values;

and writes them to crates/quant-core/tests/data/gguf_codecs.json. It also
dequantizes EVERY tensor of the SmolLM2 GGUF and writes per-tensor checksums of
the f32 bit patterns (sum and position-weighted sum, both mod 2^64) to
crates/io/tests/data/gguf_smollm2_checksums.json.

All floats are stored as hex strings of their little-endian bytes so the
comparison on the Rust side is bit for bit.

Run (see COMMON.md / scripts/fetch-testdata.sh):
  PYTHONPATH=$TENSORPRESS_CACHE/gguf-py /tmp/refenv/bin/python scripts/golden/gguf_codecs.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TENSORPRESS_CACHE", Path.home() / ".cache" / "tensorpress"))
GGUF_PATH = CACHE / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"

QUANT_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
FLOAT_TYPES = [T.F32, T.F16, T.BF16]
U64 = (1 << 64) - 1


def hexf(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def block_inputs() -> np.ndarray:
    """Twelve 32-element blocks covering the codecs' corner cases."""
    rng = np.random.default_rng(20240611)
    blocks = [
        rng.standard_normal(32),                      # plain
        rng.standard_normal(32) * 0.02,               # weight-like
        np.zeros(32),                                 # zero scale
        np.full(32, 0.75),                            # max == min
        np.full(32, -3.0),                            # negative constant
        np.concatenate([[-2.0, 2.0], rng.uniform(-2, 2, 30)]),  # tied magnitudes
        np.arange(-16, 16) * 0.25,                    # exact grid, rounding ties
        rng.standard_normal(32) * 1e3,                # large
        rng.standard_normal(32) * 1e-6,               # small: f16 scale is subnormal
        np.concatenate([[5.0], rng.standard_normal(31) * 0.01]),  # one outlier
        np.arange(32) - 3.0,                          # ramp
        -np.abs(rng.standard_normal(32)),             # all negative
    ]
    return np.concatenate(blocks).astype(np.float32)


def float_inputs() -> np.ndarray:
    """Values exercising f16/bf16 rounding, overflow, subnormals and specials."""
    bits = [
        0x3F808000,  # bf16 tie, rounds down to even
        0x3F818000,  # bf16 tie, rounds up to even
        0x3F808001,  # just above a bf16 tie
        0x3FFFFFFF,  # bf16 rounding carries into the exponent
        0x7F7FFFFF,  # f32 max: overflows both
        0x00000001,  # smallest f32 subnormal
        0x7FC00000,  # quiet NaN
        0xFF800000,  # -inf
        0x7F800000,  # +inf
        0x80000000,  # -0
    ]
    vals = [
        0.0, 1.0, -1.0, 0.1, -0.3333333, 65504.0, 65519.0, 65520.0, 1e5,
        6.1e-5, 5.96e-8, 2.98e-8, 3.0e-8, 1e-8, 1.0009765625, 1.00048828125,
        1.00146484375, 3.14159265, -2.71828, 1e38,
    ]
    out = np.concatenate([np.array(bits, dtype=np.uint32).view(np.float32),
                          np.array(vals, dtype=np.float32)])
    return out.astype(np.float32)


def codec_case(qtype: T, name: str, x: np.ndarray) -> dict:
    q = quants.quantize(x.reshape(1, -1), qtype)
    qbytes = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
    deq = quants.dequantize(qbytes.reshape(1, -1), qtype).reshape(-1)
    assert deq.dtype == np.float32 and deq.size == x.size
    return {"type": qtype.name, "input": name, "quantized": qbytes.tobytes().hex(), "dequantized": hexf(deq)}


def real_blocks(reader: gguf.GGUFReader, tensor: str, blocks: list[int]) -> dict:
    t = next(t for t in reader.tensors if t.name == tensor)
    block_size, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
    raw = np.asarray(t.data).view(np.uint8).reshape(-1)
    out = []
    for b in blocks:
        chunk = raw[b * type_size:(b + 1) * type_size]
        deq = quants.dequantize(chunk.reshape(1, -1), t.tensor_type).reshape(-1)
        assert deq.size == block_size
        out.append({"block": b, "bytes": chunk.tobytes().hex(), "dequantized": hexf(deq)})
    return {"tensor": tensor, "type": t.tensor_type.name, "blocks": out}


def checksums(deq: np.ndarray) -> tuple[int, int]:
    bits = np.ascontiguousarray(deq, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    idx = np.arange(1, bits.size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        s = int(bits.sum(dtype=np.uint64)) & U64
        w = int((bits * idx).sum(dtype=np.uint64)) & U64
    return s, w


def main() -> int:
    if not GGUF_PATH.exists():
        print(f"missing {GGUF_PATH}: run scripts/fetch-testdata.sh", file=sys.stderr)
        return 1
    blocks = block_inputs()
    floats = float_inputs()
    cases = [codec_case(t, "blocks", blocks) for t in QUANT_TYPES + FLOAT_TYPES]
    cases += [codec_case(t, "floats", floats) for t in FLOAT_TYPES]

    reader = gguf.GGUFReader(GGUF_PATH)
    # Pick blocks at the start, the middle and the end of each tensor.
    attn_q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    n_q = attn_q.n_elements // 32
    n_e = embd.n_elements // 32
    real = [
        real_blocks(reader, "blk.0.attn_q.weight", [0, 1, n_q // 2, n_q - 1]),
        real_blocks(reader, "token_embd.weight", [0, 1, n_e // 2 + 7, n_e - 1]),
    ]
    codecs = {
        "generator": "scripts/golden/gguf_codecs.py",
        "gguf_version": getattr(gguf, "__version__", "0.19.0"),
        "numpy_version": np.__version__,
        "inputs": {"blocks": hexf(blocks), "floats": hexf(floats)},
        "cases": cases,
        "real": real,
    }
    out1 = ROOT / "crates/quant-core/tests/data/gguf_codecs.json"
    out1.write_text(json.dumps(codecs, indent=1) + "\n")

    tensors = []
    for t in reader.tensors:
        deq = quants.dequantize(np.asarray(t.data), t.tensor_type)
        s, w = checksums(deq)
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in reversed(t.shape.tolist())],
            "n_bytes": int(t.n_bytes),
            "sum": s,
            "wsum": w,
        })
    sums = {
        "generator": "scripts/golden/gguf_codecs.py",
        "file": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "checksum": "sum and (i+1)-weighted sum of the dequantized f32 bit patterns, mod 2^64",
        "tensor_count": len(reader.tensors),
        "tensors": tensors,
    }
    out2 = ROOT / "crates/io/tests/data/gguf_smollm2_checksums.json"
    # One tensor per line keeps the file small and its diffs readable.
    head = json.dumps({k: v for k, v in sums.items() if k != "tensors"}, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(t, separators=(",", ":")) for t in tensors)
    out2.write_text(f"{head},\n \"tensors\": [\n  {rows}\n ]\n}}\n")
    print(f"wrote {out1} ({out1.stat().st_size} bytes) and {out2} ({out2.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
