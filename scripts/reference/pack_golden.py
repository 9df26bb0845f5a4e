"""Golden packed words for tensorpress' packing layouts, made by the reference code.

- compressed-tensors: its own ``pack_to_int32`` (installed package; dense
  packing since 0.20), along both dims, for 1..8 bits.
- GPTQ: AutoGPTQ's packing loop (``QuantLinear.pack`` in ``qlinear_cuda_old.py``,
  2/3/4/8 bits), re-typed here from its formula because AutoGPTQ does not
  install without CUDA; the 3-bit branch places codes 10 and 21 across word
  boundaries exactly as AutoGPTQ does.
- AWQ: AutoAWQ's ``WQLinear_GEMM.from_linear`` order map [0,2,4,6,1,3,5,7].

Writes crates/quant-core/tests/data/pack_golden.json:
    /tmp/refenv/bin/python scripts/reference/pack_golden.py
"""

import json
import os

import numpy as np
import torch
import compressed_tensors
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

OUT = os.path.join(
    os.path.dirname(__file__), "..", "..", "crates", "quant-core", "tests", "data", "pack_golden.json"
)


def codes(rows, cols, bits, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**bits, size=(rows, cols), dtype=np.int64)


def autogptq_pack_along_k(intweight_kn, bits):
    """AutoGPTQ: intweight is [K, N]; returns qweight [K // 32 * bits, N]."""
    intweight = intweight_kn.astype(np.uint32)
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = 0
    row = 0
    while row < qweight.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                qweight[row] |= intweight[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # 3 bits
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return qweight.astype(np.int32)


def awq_pack(intweight_kn):
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    k, n = intweight_kn.shape
    q = np.zeros((k, n // 8), dtype=np.uint32)
    for col in range(n // 8):
        for i in range(8):
            q[:, col] |= intweight_kn[:, col * 8 + order_map[i]].astype(np.uint32) << (4 * i)
    return q.astype(np.int32)


def main():
    cases = []
    seed = 0
    for bits in range(1, 9):
        for rows, cols in [(3, 37), (5, 64), (2, 1)]:
            seed += 1
            c = codes(rows, cols, bits, seed)
            signed = torch.tensor(c - 2 ** (bits - 1), dtype=torch.int8)
            along_in = pack_to_int32(signed, bits, packed_dim=1)
            along_out = pack_to_int32(signed, bits, packed_dim=0)
            cases.append({
                "layout": "compressed-tensors",
                "bits": bits,
                "codes": c.tolist(),
                "packed_dim1": along_in.tolist(),
                "packed_dim0": along_out.tolist(),
            })
    for bits in (2, 3, 4, 8):
        seed += 1
        n, k = 32, 64
        c = codes(n, k, bits, seed)  # [N, K]
        cases.append({
            "layout": "gptq",
            "bits": bits,
            "codes": c.tolist(),
            "qweight": autogptq_pack_along_k(c.T.copy(), bits).tolist(),
            # qzeros packs [groups, N] along N with the same loop: pass zeros^T.
            "qzeros_of_codes_as_zeros_v2": autogptq_pack_along_k(c.copy(), bits).T.tolist(),
        })
    seed += 1
    c = codes(16, 5, 4, seed)
    cases.append({"layout": "awq", "bits": 4, "codes": c.tolist(), "qweight": awq_pack(c.T.copy()).tolist()})
    meta = {
        "compressed_tensors": compressed_tensors.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    with open(OUT, "w") as f:
        json.dump({"made_by": "scripts/reference/pack_golden.py", "versions": meta, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
