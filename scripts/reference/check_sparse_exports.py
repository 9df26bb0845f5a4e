#!/usr/bin/env python3
"""Does compressed-tensors read tensorpress' sparse-bitmask exports as tensorpress means them?

usage: PYTHONPATH=$CT_OLD check_sparse_exports.py SPARSE_FOLDER DENSE_FOLDER
  SPARSE_FOLDER: `tensorpress compress --scheme sparsegpt-2:4 --format compressed-tensors`
  DENSE_FOLDER:  the same run with `--format dequantized` (the pruned weights, dense)
CT_OLD: a `pip install --no-deps --target` of compressed-tensors 0.12.2, the last
release with the sparse-bitmask compressor (0.20 keeps only its config class).

Checks: ModelCompressor.from_compression_config reads the folder's
quantization_config as a sparse-bitmask model; the sparsity compressor's
decompress() yields every targeted module's weight, equal bit for bit to the
dense folder's tensor; the declared global sparsity and N:M structure hold.
Prints a JSON summary; exits non-zero on any mismatch.
"""
import json
import sys

import torch
from safetensors.torch import load_file

import compressed_tensors
from compressed_tensors.compressors import ModelCompressor


def main():
    sparse_dir, dense_dir = sys.argv[1], sys.argv[2]
    config = json.load(open(f"{sparse_dir}/config.json"))["quantization_config"]
    mc = ModelCompressor.from_compression_config(config)
    assert mc is not None and mc.sparsity_compressor is not None, "no sparsity compressor"
    assert mc.quantization_config is None, "unexpected quantization config"
    dense = load_file(f"{dense_dir}/model.safetensors")
    targets = set(config["sparsity_config"]["targets"])
    seen, zeros, total, bad = 0, 0, 0, []
    structure = config["sparsity_config"]["sparsity_structure"]
    for name, weight in mc.sparsity_compressor.decompress(sparse_dir):
        # 0.12.2's standalone decompress() names a weight `X.weight.weight`
        # (the module path it nests under is `X.weight`).
        if name.endswith(".weight.weight"):
            name = name[: -len(".weight")]
        module = name.rsplit(".", 1)[0]
        if module not in targets:
            continue
        want = dense[name]
        if weight.dtype != want.dtype or not torch.equal(weight, want):
            bad.append(name)
        zeros += int((weight == 0).sum())
        total += weight.numel()
        if ":" in structure:
            n, m = map(int, structure.split(":"))
            groups = (weight.reshape(weight.shape[0], -1, m) != 0).sum(-1)
            if int(groups.max()) > n:
                bad.append(f"{name} ({structure})")
        seen += 1
    summary = {
        "compressed_tensors": compressed_tensors.__version__,
        "format": config["sparsity_config"]["format"],
        "modules_decompressed": seen,
        "modules_declared": len(targets),
        "bit_exact": seen == len(targets) and not bad,
        "mismatches": bad[:5],
        "global_sparsity": zeros / max(total, 1),
        "declared_global_sparsity": config["sparsity_config"]["global_sparsity"],
        "structure": structure,
    }
    print(json.dumps(summary, indent=1))
    ok = summary["bit_exact"] and abs(summary["global_sparsity"] - summary["declared_global_sparsity"]) < 1e-9
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
