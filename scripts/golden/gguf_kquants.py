#!/usr/bin/env python3
"""Golden vectors for tensorpress's k-quant and IQ4 codecs, from llama.cpp itself.

The `gguf` package (llama.cpp's gguf-py) decodes Q2_K…Q6_K, IQ4_NL and IQ4_XS in
numpy but has no encoders for them, so the encoders are checked against
llama.cpp's C code, run two ways:

  * `llama-quantize --pure` (with and without `--imatrix`) on SmolLM2-135M in
    F32: the `ffn_down` rows are 1536 = 6·256 wide, so they get the requested
    type. This is what a user's GGUF file contains.
  * `ggml_quantize_chunk` from llama.cpp's `libggml-base.so` through ctypes, on
    synthetic rows (Gaussian, heavy-tailed, constant, zero, tiny, huge, sparse,
    outliers, …) with and without an importance vector. This is the function
    llama-quantize calls for every chunk of rows.

Decoding is checked against the `gguf` package's numpy `dequantize` on random
blocks and on the blocks above (and the script asserts that numpy and ggml's C
decoders agree bit for bit on all of them).

It writes crates/quant-core/tests/data/gguf_kquants.json. With `--full DIR` it
also writes every `ffn_down` row of all 30 layers and a larger synthetic set,
with llama.cpp's encodings, for the ignored test `full_llama_cpp_crosscheck` in
crates/quant-core/tests/ggml_kquants.rs (run it with
`TENSORPRESS_KQUANTS_FULL=DIR cargo test --release -p tensorpress-quant-core
--test ggml_kquants -- --ignored`).

Needs an already-built llama.cpp (this script does not build it): LLAMA_BIN must
point at its build/bin folder (llama-quantize, llama-imatrix, libggml-base.so).
Also needs $REFS/f32.gguf (`scripts/reference/smollm2_llamacpp.sh f32`) and
$REFS/calib.txt (`... texts`), REFS defaulting to /tmp/refs. Intermediate GGUF
files go to $KQUANT_WORK (default /tmp/kq) and are reused when present.

Run:
  LLAMA_BIN=/path/to/llama.cpp/build/bin PYTHONPATH=$TENSORPRESS_CACHE/gguf-py \\
      /tmp/refenv/bin/python scripts/golden/gguf_kquants.py [--full DIR]

To keep the committed file small (about 120 KB), bytes are stored as hex only
where a failing test needs them to say what differs; elsewhere as FNV-1a 64
hashes, one per block, which still pin every bit:

  * inputs (rows, importance vectors, random blocks): hex of the little-endian
    bytes;
  * encodings: hex for the synthetic `gaussian` row, per-block hashes otherwise;
  * decodings: hex of the first block of each random set, per-block hashes of
    the decoded f32 bytes otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
REFS = Path(os.environ.get("REFS", "/tmp/refs"))
WORK = Path(os.environ.get("KQUANT_WORK", "/tmp/kq"))
F32_GGUF = REFS / "f32.gguf"
CALIB = REFS / "calib.txt"
OUT = ROOT / "crates/quant-core/tests/data/gguf_kquants.json"

TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]
# llama-quantize's name for a file type whose `--pure` default type is the key.
FTYPE = {
    T.Q2_K: "Q2_K", T.Q3_K: "Q3_K_M", T.Q4_K: "Q4_K_M", T.Q5_K: "Q5_K_M",
    T.Q6_K: "Q6_K", T.IQ4_NL: "IQ4_NL", T.IQ4_XS: "IQ4_XS",
}
# The f16 fields of each block (byte offsets), kept finite in random blocks.
F16_FIELDS = {
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
    T.Q6_K: [208], T.IQ4_NL: [0], T.IQ4_XS: [0],
}
# Real rows in the committed golden: (layer, row) of blk.N.ffn_down.weight. One
# layer, so that the golden holds one importance vector (the --full set has all).
REAL_ROWS = [(0, 0), (0, 575)]


def hexf(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def block_hashes(data: bytes, size: int) -> list[str]:
    return [fnv1a64(data[i:i + size]) for i in range(0, len(data), size)]


def fnv1a64(b: bytes) -> str:
    h = 0xCBF29CE484222325
    for byte in b:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def llama_bin() -> Path:
    b = os.environ.get("LLAMA_BIN")
    if not b:
        sys.exit("set LLAMA_BIN to the build/bin folder of an already-built llama.cpp")
    return Path(b)


class Ggml:
    """ggml_quantize_chunk and the C decoders from libggml-base.so."""

    def __init__(self, bin_dir: Path):
        self.lib = ctypes.CDLL(str(bin_dir / "libggml-base.so"))
        f = self.lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                      ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.lib.ggml_get_type_traits.restype = ctypes.c_void_p

    def quantize(self, qtype: T, x: np.ndarray, imatrix: np.ndarray | None) -> bytes:
        x = np.ascontiguousarray(x, dtype=np.float32)
        nrows, n_per_row = x.shape
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        out = np.zeros(nrows * n_per_row // block * size, dtype=np.uint8)
        imp = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            assert imatrix.shape == (n_per_row,)
            imp = imatrix.ctypes.data
        n = self.lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0,
                                         nrows, n_per_row, imp)
        assert n == out.size, (qtype.name, n, out.size)
        return out.tobytes()

    def dequantize(self, qtype: T, data: bytes) -> np.ndarray:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = len(data) // size * block
        # ggml spells them dequantize_row_q4_K, dequantize_row_iq4_nl.
        fn = getattr(self.lib, "dequantize_row_" + qtype.name.lower().replace("_k", "_K"))
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        src = np.frombuffer(data, dtype=np.uint8).copy()
        out = np.zeros(n, dtype=np.float32)
        fn(src.ctypes.data, out.ctypes.data, n)
        return out


def np_dequantize(qtype: T, data: bytes) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8).reshape(1, -1)
    return quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)


def checked_dequantize(ggml: Ggml, qtype: T, data: bytes) -> np.ndarray:
    """numpy's decoding, asserted equal bit for bit to ggml's C decoder."""
    a = np_dequantize(qtype, data)
    b = ggml.dequantize(qtype, data)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{qtype.name}: numpy != C"
    return a


def decode_entry(ggml: Ggml, qtype: T, data: bytes, first: bool) -> dict:
    """A hash of every decoded block and, if `first`, the first block decoded."""
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    deq = checked_dequantize(ggml, qtype, data)
    entry = {"fnv": block_hashes(np.ascontiguousarray(deq, dtype="<f4").tobytes(), block * 4)}
    if first:
        entry["first"] = hexf(deq[:block])
    return entry


def random_blocks(qtype: T, rng: np.random.Generator) -> bytes:
    """Six random blocks with finite f16 fields, a zero block and an extreme one."""
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(8, size), dtype=np.uint8)
    for b in range(6):
        for off in F16_FIELDS[qtype]:
            v = np.float16(rng.standard_normal() * 10.0 ** rng.uniform(-6, 1))
            blocks[b, off:off + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    blocks[6] = 0
    blocks[7] = 0xFF
    for i, off in enumerate(F16_FIELDS[qtype]):
        v = np.float16(65504.0 if i == 0 else -65504.0)
        blocks[7, off:off + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    return blocks.tobytes()


def synthetic_inputs() -> dict[str, np.ndarray]:
    """256-value rows covering the encoders' corner cases."""
    rng = np.random.default_rng(20250101)
    n = 256
    grid = (rng.integers(0, 16, n) * 0.0125 - 0.1).astype(np.float32)  # a Q4_1-like grid
    outlier = rng.standard_normal(n) * 1e-3
    outlier[17] = 3.0
    sparse = np.where(rng.random(n) < 0.9, 0.0, rng.standard_normal(n))
    half_zero = np.concatenate([np.zeros(128), rng.standard_normal(128) * 0.05])
    x = {
        "gaussian": rng.standard_normal(n),
        "weights": rng.standard_normal(n) * 0.02,
        "heavy_tail": rng.standard_t(2, n) * 0.01,
        "positive": rng.random(n),
        "negative": -rng.random(n) - 0.5,
        "zeros": np.zeros(n),
        "constant": np.full(n, 0.75),
        "outlier": outlier,
        "sparse": sparse,
        "tiny": rng.standard_normal(n) * 1e-6,
        "huge": rng.standard_normal(n) * 1e4,
        "grid": grid,
        "half_zero": half_zero,
    }
    return {k: v.astype(np.float32) for k, v in x.items()}


def synthetic_importance() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    lognormal = np.exp(rng.standard_normal(256) * 1.5)
    sparse = np.where(rng.random(256) < 0.3, 0.0, rng.random(256) * 4)
    sparse[:32] = 0.0  # a whole sub-block without importance
    return {"lognormal": lognormal.astype(np.float32), "sparse": sparse.astype(np.float32)}


def run(cmd: list[str], log: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    with open(log, "w") as f:
        subprocess.run(["nice", *cmd], check=True, stdout=f, stderr=subprocess.STDOUT)


def make_files(bin_dir: Path) -> None:
    """imatrix and llama-quantize outputs under WORK, unless already there."""
    WORK.mkdir(parents=True, exist_ok=True)
    imatrix = WORK / "imatrix.gguf"
    if not imatrix.exists():
        run([str(bin_dir / "llama-imatrix"), "-m", str(F32_GGUF), "-f", str(CALIB), "-c", "512",
             "--chunks", "8", "-t", "2", "-o", str(imatrix)], WORK / "imatrix.log")
    for qtype in TYPES:
        for with_imatrix in (False, True):
            out = WORK / quantized_name(qtype, with_imatrix)
            if out.exists():
                continue
            cmd = [str(bin_dir / "llama-quantize"), "--pure"]
            if with_imatrix:
                cmd += ["--imatrix", str(imatrix)]
            cmd += [str(F32_GGUF), str(out), FTYPE[qtype], "2"]
            run(cmd, out.with_suffix(".log"))


def quantized_name(qtype: T, with_imatrix: bool) -> str:
    return f"{qtype.name}{'.imatrix' if with_imatrix else ''}.gguf"


def tensor(reader: gguf.GGUFReader, name: str):
    return next(t for t in reader.tensors if t.name == name)


def load_imatrix() -> dict[int, np.ndarray]:
    """Per layer, the importance llama-quantize passes for ffn_down: in_sum2 / count in f32."""
    r = gguf.GGUFReader(WORK / "imatrix.gguf")
    out = {}
    for layer in range(30):
        name = f"blk.{layer}.ffn_down.weight"
        sums = np.asarray(tensor(r, name + ".in_sum2").data, dtype=np.float32).reshape(-1)
        counts = np.asarray(tensor(r, name + ".counts").data, dtype=np.float32).reshape(-1)
        assert counts.size == 1 and counts[0] > 0, (name, counts)
        out[layer] = (sums / counts[0]).astype(np.float32)
    return out


def ffn_down(reader: gguf.GGUFReader, layer: int) -> np.ndarray:
    """The raw data of blk.N.ffn_down.weight: f32 rows, or encoded rows as uint8."""
    t = tensor(reader, f"blk.{layer}.ffn_down.weight")
    return np.asarray(t.data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", type=Path, help="also write the full cross-check set here")
    args = ap.parse_args()
    for p in (F32_GGUF, CALIB):
        if not p.exists():
            print(f"missing {p}: run scripts/reference/smollm2_llamacpp.sh texts f32", file=sys.stderr)
            return 1
    bin_dir = llama_bin()
    ggml = Ggml(bin_dir)
    make_files(bin_dir)

    # (1) Decoding random blocks.
    rng = np.random.default_rng(1234)
    decode = []
    for t in TYPES:
        data = random_blocks(t, rng)
        decode.append({"type": t.name, "bytes": data.hex(), **decode_entry(ggml, t, data, True)})

    # (2) ggml_quantize_chunk on synthetic rows.
    inputs = synthetic_inputs()
    importance = synthetic_importance()
    cases = []
    for t in TYPES:
        for name, x in inputs.items():
            imps = [None, "lognormal"] + (["sparse"] if name in ("gaussian", "heavy_tail") else [])
            for imp in imps:
                data = ggml.quantize(t, x.reshape(1, -1), None if imp is None else importance[imp])
                checked_dequantize(ggml, t, data)
                case = {"type": t.name, "input": name, "importance": imp}
                if name == "gaussian":
                    case["bytes"] = data.hex()
                else:
                    case["enc_fnv"] = block_hashes(data, gguf.GGML_QUANT_SIZES[t][1])
                cases.append(case)

    # (3) llama-quantize on the real ffn_down rows.
    f32 = gguf.GGUFReader(F32_GGUF)
    imatrix = load_imatrix()
    rows = []
    for layer, row in REAL_ROWS:
        x = ffn_down(f32, layer)[row].astype(np.float32)
        assert x.shape == (1536,)
        name = f"blk.{layer}.ffn_down.weight"
        rows.append({"tensor": name, "row": row, "values": hexf(x), "importance": name})
    importance_of = {f"blk.{layer}.ffn_down.weight": hexf(imatrix[layer]) for layer, _ in REAL_ROWS}
    real = []
    for t in TYPES:
        for with_imatrix in (False, True):
            q = gguf.GGUFReader(WORK / quantized_name(t, with_imatrix))
            for i, (layer, row) in enumerate(REAL_ROWS):
                assert tensor(q, f"blk.{layer}.ffn_down.weight").tensor_type == t
                data = ffn_down(q, layer)[row].tobytes()
                # The same row through ggml_quantize_chunk gives the same bytes.
                x = ffn_down(f32, layer)[row].astype(np.float32).reshape(1, -1)
                again = ggml.quantize(t, x, imatrix[layer] if with_imatrix else None)
                assert again == data, f"{t.name} imatrix={with_imatrix}: llama-quantize != ggml_quantize_chunk"
                real.append({"type": t.name, "imatrix": with_imatrix, "row": i,
                             "enc_fnv": block_hashes(data, gguf.GGML_QUANT_SIZES[t][1]),
                             **decode_entry(ggml, t, data, False)})

    golden = {
        "generator": "scripts/golden/gguf_kquants.py",
        "gguf_version": getattr(gguf, "__version__", "0.19.0"),
        "numpy_version": np.__version__,
        "llama_cpp": str(bin_dir),
        "decode": decode,
        "synthetic": {
            "inputs": {k: hexf(v) for k, v in inputs.items()},
            "importance": {k: hexf(v) for k, v in importance.items()},
            "cases": cases,
        },
        "real": {"importance": importance_of, "rows": rows, "cases": real},
    }
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

    if args.full:
        write_full(args.full, ggml, f32, imatrix)
    return 0


def write_full(d: Path, ggml: Ggml, f32: gguf.GGUFReader, imatrix: dict[int, np.ndarray]) -> None:
    """Every ffn_down row and a larger synthetic set, with llama.cpp's encodings."""
    d.mkdir(parents=True, exist_ok=True)
    files = []
    x = np.concatenate([ffn_down(f32, layer).astype(np.float32) for layer in range(30)])
    x.tofile(d / "real.f32")
    imp = np.concatenate([imatrix[layer] for layer in range(30)])
    imp.tofile(d / "real.imatrix.f32")
    for t in TYPES:
        for with_imatrix in (False, True):
            q = gguf.GGUFReader(WORK / quantized_name(t, with_imatrix))
            name = f"real.{t.name}{'.imatrix' if with_imatrix else ''}.bin"
            np.concatenate([ffn_down(q, layer).reshape(-1) for layer in range(30)]).tofile(d / name)
            files.append({"type": t.name, "input": "real.f32", "rows_per_importance": 576,
                          "importance": "real.imatrix.f32" if with_imatrix else None, "bytes": name})
    # Synthetic: rows of 1024 from a mix of distributions and magnitudes.
    rng = np.random.default_rng(99)
    n_rows, n = 2048, 1024
    mags = 10.0 ** rng.uniform(-5, 3, size=(n_rows, 1))
    kinds = rng.integers(0, 4, size=(n_rows, 1))
    g = rng.standard_normal((n_rows, n))
    y = np.where(kinds == 0, g, np.where(kinds == 1, rng.standard_t(3, (n_rows, n)),
                 np.where(kinds == 2, rng.random((n_rows, n)) - 0.2, np.where(rng.random((n_rows, n)) < 0.7, 0, g))))
    y = (y * mags).astype(np.float32)
    y.tofile(d / "synthetic.f32")
    w = np.exp(rng.standard_normal(n) * 2).astype(np.float32)
    w[rng.random(n) < 0.1] = 0
    w.tofile(d / "synthetic.importance.f32")
    for t in TYPES:
        for use in (False, True):
            name = f"synthetic.{t.name}{'.imatrix' if use else ''}.bin"
            (d / name).write_bytes(ggml.quantize(t, y, w if use else None))
            files.append({"type": t.name, "input": "synthetic.f32", "rows_per_importance": n_rows,
                          "importance": "synthetic.importance.f32" if use else None, "bytes": name})
    manifest = {"real.f32": [30 * 576, 1536], "synthetic.f32": [n_rows, n], "files": files}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote the full cross-check set to {d}")


if __name__ == "__main__":
    sys.exit(main())
