#!/usr/bin/env python3
"""Checks that files tensorpress writes load in the reference Python readers.

Run the Rust example first, then this script on the same folder:

  cargo run -p tensorpress-io --example interop_samples -- /tmp/interop
  PYTHONPATH=$TENSORPRESS_CACHE/gguf-py /tmp/refenv/bin/python scripts/golden/gguf_interop.py /tmp/interop

It reads sample.gguf with gguf.GGUFReader (every metadata value, every tensor:
shape, type, and bytes equal to gguf.quants.quantize of the same input), and
sample.safetensors plus the sharded folder with the `safetensors` package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf import quants
from safetensors import safe_open


def f32(hexstr: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexstr), dtype="<f4")


def check_gguf(d: Path, manifest: dict) -> None:
    r = GGUFReader(d / "sample.gguf")
    assert r.alignment == manifest["alignment"], r.alignment
    f = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
    expect = {
        "general.architecture": "llama",
        "t.u8": 200, "t.i8": -100, "t.u16": 60000, "t.i16": -30000,
        "t.u32": 4_000_000_000, "t.i32": -2_000_000_000, "t.f32": 0.15625, "t.bool": True,
        "t.string": "héllo ✓", "t.u64": 2**64 - 1, "t.i64": -(2**63), "t.f64": -2.5e300,
        "t.arr_str": ["a", "", "ü"], "t.arr_i32": [1, -2, 3], "t.arr_f32": [0.5, -1.25],
        "t.arr_bool": [True, False],
    }
    for key, want in expect.items():
        got = f[key].contents()
        assert got == want, (key, got, want)
    types = {
        "t.u8": GGUFValueType.UINT8, "t.i16": GGUFValueType.INT16, "t.u64": GGUFValueType.UINT64,
        "t.f64": GGUFValueType.FLOAT64, "t.bool": GGUFValueType.BOOL, "t.string": GGUFValueType.STRING,
    }
    for key, t in types.items():
        assert f[key].types[0] == t, (key, f[key].types)
    nested = f["t.arr_nested"]
    assert nested.types[:2] == [GGUFValueType.ARRAY, GGUFValueType.ARRAY], nested.types
    assert [int(nested.parts[i][0]) for i in nested.data] == [1, 2, 3]
    assert f["general.alignment"].contents() == 64

    by_name = {t.name: t for t in r.tensors}
    for t in manifest["tensors"]:
        rt = by_name[t["name"]]
        qtype = GGMLQuantizationType[t["type"]]
        assert rt.tensor_type == qtype, (t["name"], rt.tensor_type)
        assert list(reversed(rt.shape.tolist())) == t["shape"], rt.shape
        assert rt.data_offset % 64 == 0
        x = f32(t["values"]).reshape(t["shape"])
        if qtype == GGMLQuantizationType.F32:
            want = x.view(np.uint8)
        else:
            want = np.ascontiguousarray(quants.quantize(x, qtype)).view(np.uint8)
        got = np.ascontiguousarray(rt.data).view(np.uint8)
        assert got.tobytes() == want.tobytes(), f"{t['name']}: bytes differ from gguf.quants.quantize"
    print(f"gguf: {len(f)} metadata keys and {len(r.tensors)} tensors OK")


def check_safetensors(d: Path, manifest: dict) -> None:
    x = f32(manifest["values"]).reshape(manifest["shape"])
    want = {
        "f32": x, "f16": x.astype(np.float16), "f64": x.astype(np.float64),
        "i8": (x * 50).astype(np.int8), "i64": (x * 1e6).astype(np.int64),
        "u8": (np.abs(x) * 100).astype(np.uint8), "bool": x > 0, "scalar": np.array(7, dtype=np.int32),
    }
    with safe_open(d / "sample.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
        for k, v in want.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k
        bf = f.get_slice("bf16")
        assert bf.get_dtype() == "BF16" and bf.get_shape() == [2, 3, 4]
    index = json.loads((d / "sharded" / "model.safetensors.index.json").read_text())
    seen = {}
    for name, shard in index["weight_map"].items():
        with safe_open(d / "sharded" / shard, "np") as f:
            if name != "bf16":
                seen[name] = f.get_tensor(name)
    for k, v in want.items():
        assert np.array_equal(seen[k], v), k
    n_shards = len(set(index["weight_map"].values()))
    print(f"safetensors: single file and {n_shards} shards OK")


def main() -> int:
    d = Path(sys.argv[1])
    manifest = json.loads((d / "manifest.json").read_text())
    check_gguf(d, manifest["gguf"])
    check_safetensors(d, manifest["safetensors"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
