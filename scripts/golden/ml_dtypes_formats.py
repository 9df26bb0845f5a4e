#!/usr/bin/env python3
"""Golden vectors for tensorpress's small-float formats, made with `ml_dtypes`
and the `gguf` package.

`ml_dtypes` (PyPI; the numpy float types of JAX/TensorFlow) implements the OCP
formats float8_e4m3fn, float8_e5m2, float6_e2m3fn, float6_e3m2fn,
float4_e2m1fn and float8_e8m0fnu. This script records

  (a) for every format, the float32 value of every code;
  (b) a few thousand float32 inputs (every representable value of every format
      and its float32 neighbours, every midpoint between adjacent values and
      its neighbours, subnormals, overflow, +-inf, NaNs with several payloads,
      +-0, random values over a wide range) and their code in every format,
      as `np.float32(x).astype(fmt)` gives it;
  (c) GGML's MXFP4 (the `gguf` package's numpy reference): quantize_blocks on
      deterministic inputs (random, weight-like, tie-rich, zero, powers of two)
      and dequantize_blocks on those results and on random bytes;
  (d) GGML's NVFP4: dequantize_blocks on random bytes (the package has no
      NVFP4 quantizer).

Every float is stored as the hex string of its little-endian float32 bytes,
codes and blocks as hex bytes, so the Rust side (crates/quant-core/tests/
ml_dtypes_golden.rs) compares bit for bit.

Run:
  PYTHONPATH=$TENSORPRESS_CACHE/gguf-py /tmp/refenv/bin/python scripts/golden/ml_dtypes_formats.py
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np

import gguf
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "quant-core" / "tests" / "data" / "ml_dtypes_formats.json"

FORMATS = [
    ("float8_e4m3fn", 8),
    ("float8_e5m2", 8),
    ("float6_e2m3fn", 6),
    ("float6_e3m2fn", 6),
    ("float4_e2m1fn", 4),
]


def hexf(a) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def hexb(a) -> str:
    return np.ascontiguousarray(a, dtype=np.uint8).tobytes().hex()


def f32_from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def decoded(name: str, bits: int) -> np.ndarray:
    codes = np.arange(1 << bits, dtype=np.uint8)
    return codes.view(getattr(ml_dtypes, name)).astype(np.float32)


def inputs() -> np.ndarray:
    rng = np.random.default_rng(20250104)
    xs: list[np.ndarray] = []
    for name, bits in FORMATS:
        v = decoded(name, bits)
        v = v[np.isfinite(v)]
        pos = np.unique(np.abs(v))
        xs.append(v)
        xs.append(np.nextafter(v, np.float32(np.inf)))
        xs.append(np.nextafter(v, np.float32(-np.inf)))
        # Midpoints between adjacent magnitudes (the ties) and their neighbours,
        # plus the midpoint above the largest value (where overflow starts).
        top = pos[-1] + (pos[-1] - pos[-2])
        ext = np.append(pos, np.float32(top))
        mid = ((ext[:-1].astype(np.float64) + ext[1:]) / 2).astype(np.float32)
        for m in (mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(0))):
            xs.append(m)
            xs.append(-m)
        xs.append(np.float32([pos[-1] * 1.5, pos[-1] * 4, pos[1] / 4, pos[1] / 3]))
    special_bits = [
        0x00000000, 0x80000000,  # +-0
        0x7F800000, 0xFF800000,  # +-inf
        0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000,  # NaNs
        0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x80800000,  # f32 subnormals, min normal
        0x7F7FFFFF, 0xFF7FFFFF,  # +-f32 max
    ]
    xs.append(f32_from_bits(special_bits))
    xs.append(rng.standard_normal(600).astype(np.float32))
    xs.append((rng.standard_normal(300) * 0.02).astype(np.float32))
    mags = np.exp2(rng.uniform(-30, 30, 600)) * rng.choice([-1, 1], 600)
    xs.append(mags.astype(np.float32))
    x = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in xs])
    # Deduplicate by bit pattern, keep a stable order.
    _, idx = np.unique(x.view(np.uint32), return_index=True)
    return x[np.sort(idx)]


def mxfp4_inputs() -> np.ndarray:
    rng = np.random.default_rng(7)
    blocks = [
        rng.standard_normal(32),
        rng.standard_normal(32) * 0.02,
        np.zeros(32),
        # Tie-rich: multiples of a quarter step, scale exponent 0 (amax 6).
        np.concatenate([[6.0], rng.integers(-24, 25, 31) / 4]),
        # Multiples of 0.25 * 2^-5 with a power-of-two maximum.
        np.concatenate([[-4.0], rng.integers(-16, 17, 31) / 4]) / 32,
        np.full(32, 0.75),
        np.full(32, -1e-3),
        rng.standard_normal(32) * 100,
        np.linspace(-3.5, 3.5, 32),
        rng.standard_normal(32) * np.exp2(rng.integers(-8, 8, 32)),
    ]
    for _ in range(22):
        blocks.append(rng.standard_normal(32) * np.exp2(rng.uniform(-12, 6)))
    return np.concatenate(blocks).astype(np.float32)


def main() -> None:
    x = inputs()
    formats = []
    for name, bits in FORMATS:
        t = getattr(ml_dtypes, name)
        with np.errstate(invalid="ignore", over="ignore"):
            codes = x.astype(t).view(np.uint8)
        formats.append({
            "name": name,
            "bits": bits,
            "decoded": hexf(decoded(name, bits)),
            "codes": hexb(codes),
        })
    e8m0 = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float32)

    mx_in = mxfp4_inputs()
    mx_q = quants.quantize(mx_in.reshape(-1, 32), gguf.GGMLQuantizationType.MXFP4)
    rng = np.random.default_rng(11)
    n_rand = 16
    rand_blocks = rng.integers(0, 256, (n_rand, 17), dtype=np.uint8)
    rand_blocks[:, 0] = rng.integers(100, 150, n_rand)  # sensible exponents
    rand_blocks[0, 0] = 0  # 2^-127: subnormal scale
    rand_blocks[1, 0] = 1
    mx_bytes = np.concatenate([mx_q.reshape(-1), rand_blocks.reshape(-1)])
    mx_deq = quants.dequantize(mx_bytes, gguf.GGMLQuantizationType.MXFP4)

    n_nv = 24
    nv = rng.integers(0, 256, (n_nv, 36), dtype=np.uint8)
    nv[:, :4] = rng.integers(1, 0x7F, (n_nv, 4))  # valid nonzero E4M3 scales
    nv[0, :4] = [1, 2, 7, 8]  # subnormal scales
    nv[1, :4] = [0x7E, 0x7D, 0x38, 0x40]  # 448, 416, 1, 2
    nv_deq = quants.dequantize(nv.reshape(-1), gguf.GGMLQuantizationType.NVFP4)

    doc = {
        "generator": "scripts/golden/ml_dtypes_formats.py",
        "ml_dtypes_version": ml_dtypes.__version__,
        "numpy_version": np.__version__,
        "gguf_version": getattr(gguf, "__version__", "0.19.0"),  # pinned by scripts/fetch-testdata.sh
        "inputs": hexf(x),
        "formats": formats,
        "e8m0_decoded": hexf(e8m0),
        "mxfp4": {
            "inputs": hexf(mx_in),
            "quantized": hexb(mx_q.reshape(-1)),
            "dequant_blocks": hexb(mx_bytes),
            "dequantized": hexf(mx_deq),
        },
        "nvfp4": {
            "blocks": hexb(nv.reshape(-1)),
            "dequantized": hexf(nv_deq),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(x)} inputs, {len(mx_in) // 32} MXFP4 blocks, {n_nv} NVFP4 blocks -> {OUT}")


if __name__ == "__main__":
    main()
