#!/usr/bin/env python3
"""Does compressed-tensors load tensorpress' pruned *and* quantized exports
(sparse-24-bitmask / sparse-bitmask over int8 or FP8 codes) to our weights?

usage: check_sparse_quantized_exports.py CT_FOLDER DENSE_FOLDER
  CT_FOLDER:    tensorpress compress --scheme sparsegpt-2:4-w8a8 --format compressed-tensors --dtype f32
  DENSE_FOLDER: the same run with --format dequantized --dtype f32
Needs compressed-tensors 0.12.2 (the last release with the sparse-bitmask
compressors), torch and transformers.

What it checks, the way a user loads such a folder without vLLM:
  * ModelCompressor.from_compression_config builds both a sparsity and a
    quantization compressor from the folder's quantization_config;
  * a LlamaForCausalLM built from the folder's config.json, decompressed in
    place by ModelCompressor.decompress (sparse layout -> int8/FP8 codes ->
    dequantized weights), holds, for every targeted module, exactly the
    weight of the dense folder (torch.equal, f32);
  * the decompressed weights keep the declared N:M pattern and global
    sparsity.
Prints a JSON summary; exits non-zero on any mismatch.
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

import compressed_tensors
from compressed_tensors.compressors import ModelCompressor


def main():
    ct_dir, dense_dir = sys.argv[1], sys.argv[2]
    qconfig = json.load(open(f"{ct_dir}/config.json"))["quantization_config"]
    mc = ModelCompressor.from_compression_config(qconfig)
    assert mc is not None, "no compressor"
    assert mc.sparsity_compressor is not None, "no sparsity compressor"
    assert mc.quantization_compressor, "no quantization compressor"

    config = AutoConfig.from_pretrained(ct_dir)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    mc.decompress(ct_dir, model)

    dense = {}
    import glob

    for f in sorted(glob.glob(f"{dense_dir}/*.safetensors")):
        dense.update(load_file(f))
    sparsity = qconfig["sparsity_config"]
    targets = sparsity["targets"]
    structure = sparsity["sparsity_structure"]
    bad, zeros, total = [], 0, 0
    for module in targets:
        got = model.get_submodule(module).weight.detach().to(torch.float32)
        want = dense[f"{module}.weight"].to(torch.float32)
        if got.shape != want.shape or not torch.equal(got, want):
            diff = (got - want).abs().max().item() if got.shape == want.shape else None
            bad.append({"module": module, "max_abs_diff": diff})
        zeros += int((got == 0).sum())
        total += got.numel()
        if ":" in structure:
            n, m = map(int, structure.split(":"))
            groups = (got.reshape(got.shape[0], -1, m) != 0).sum(-1)
            if int(groups.max()) > n:
                bad.append({"module": module, "structure": structure})
    summary = {
        "compressed_tensors": compressed_tensors.__version__,
        "sparsity_format": sparsity["format"],
        "quantization_formats": sorted(mc.quantization_compressor.keys()),
        "modules_checked": len(targets),
        "bit_exact": not bad,
        "mismatches": bad[:5],
        "global_sparsity": zeros / max(total, 1),
        "declared_global_sparsity": sparsity["global_sparsity"],
        "structure": structure,
    }
    print(json.dumps(summary, indent=1))
    ok = summary["bit_exact"] and summary["modules_checked"] > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
