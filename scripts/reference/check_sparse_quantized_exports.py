#!/usr/bin/env python3
"""Does compressed-tensors load tensorpress' pruned *and* quantized exports
(sparse-24-bitmask / sparse-bitmask over int8 or FP8 codes) to our weights?

usage: check_sparse_quantized_exports.py CT_FOLDER DENSE_FOLDER
  CT_FOLDER:    tensorpress compress --scheme sparsegpt-2:4-w8a8 --format compressed-tensors --dtype f32
  DENSE_FOLDER: the same run with --format dequantized --dtype f32, or `-` when
                there is none (W8A8 declares activation quantization, which a
                dense export refuses): then only loading, the N:M pattern and
                the sparsity are checked
Needs compressed-tensors 0.12.2 (the last release with the sparse-bitmask
compressors), torch and transformers.

What it checks:
  * ModelCompressor.from_compression_config builds both a sparsity and a
    quantization compressor from the folder's quantization_config;
  * compressor level (exact): the sparsity compressor's decompress() gives
    each module's codes (int8 / FP8), and the quantization compressor's
    decompress_weight() on those codes and the file's weight_scale gives,
    for every targeted module, exactly the dense folder's weight
    (torch.equal in the scale dtype, f32 here);
  * model level, the way a user loads the folder without vLLM: a
    LlamaForCausalLM from the folder's config.json, decompressed in place by
    ModelCompressor.decompress; its weights are compared too (reported, not
    required exact: that path re-creates weight_scale as a parameter of the
    codes' floating dtype, bf16 for FP8 codes, and rounds there);
  * the decompressed weights keep the declared N:M pattern and global
    sparsity.
Prints a JSON summary; exits non-zero on any mismatch.
"""
import glob
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

import compressed_tensors
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationArgs


def main():
    ct_dir, dense_dir = sys.argv[1], sys.argv[2]
    qconfig = json.load(open(f"{ct_dir}/config.json"))["quantization_config"]
    mc = ModelCompressor.from_compression_config(qconfig)
    assert mc is not None, "no compressor"
    assert mc.sparsity_compressor is not None, "no sparsity compressor"
    assert mc.quantization_compressor, "no quantization compressor"

    dense = {}
    if dense_dir != "-":
        for f in sorted(glob.glob(f"{dense_dir}/*.safetensors")):
            dense.update(load_file(f))
    ct = {}
    for f in sorted(glob.glob(f"{ct_dir}/*.safetensors")):
        ct.update(load_file(f))
    sparsity = qconfig["sparsity_config"]
    targets = sparsity["targets"]
    structure = sparsity["sparsity_structure"]
    schemes = {}
    for group in qconfig["config_groups"].values():
        for t in group["targets"]:
            schemes[t] = QuantizationArgs(**group["weights"])
    (fmt, quant), = mc.quantization_compressor.items()

    # Compressor level: sparse layout -> codes -> dequantized weight.
    skip = quant.compression_param_names
    bad, zeros, total, seen = [], 0, 0, 0
    for name, codes in mc.sparsity_compressor.decompress(ct_dir, params_to_skip_load=skip):
        if name.endswith(".weight.weight"):
            name = name[: -len(".weight")]
        module = name.rsplit(".", 1)[0]
        if module not in targets:
            continue
        data = {"weight": codes, "weight_scale": ct[f"{module}.weight_scale"]}
        if f"{module}.weight_zero_point" in ct:
            data["weight_zero_point"] = ct[f"{module}.weight_zero_point"]
        got = quant.decompress_weight(data, quantization_args=schemes[module])
        seen += 1
        if dense:
            want = dense[f"{module}.weight"].to(got.dtype)
            if got.shape != want.shape or not torch.equal(got, want):
                bad.append(module)
        zeros += int((got == 0).sum())
        total += got.numel()
        if ":" in structure:
            n, m = map(int, structure.split(":"))
            groups = (got.reshape(got.shape[0], -1, m) != 0).sum(-1)
            if int(groups.max()) > n:
                bad.append(f"{module} ({structure})")
    checked = seen == len(targets)

    # Model level.
    config = AutoConfig.from_pretrained(ct_dir)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    mc.decompress(ct_dir, model)
    model_diff, model_dtypes = 0.0, set()
    for module in targets:
        got = model.get_submodule(module).weight.detach()
        model_dtypes.add(str(got.dtype))
        if not dense:
            continue
        want = dense[f"{module}.weight"].to(torch.float32)
        model_diff = max(model_diff, (got.to(torch.float32) - want).abs().max().item())
    summary = {
        "compressed_tensors": compressed_tensors.__version__,
        "sparsity_format": sparsity["format"],
        "quantization_formats": sorted(mc.quantization_compressor.keys()),
        "modules_declared": len(targets),
        "modules_decompressed": seen,
        "compared_with_dense": bool(dense),
        "compressor_level_bit_exact": checked and not bad,
        "mismatches": bad[:5],
        "model_level_weight_dtypes": sorted(model_dtypes),
        "model_level_max_abs_diff": model_diff,
        "global_sparsity": zeros / max(total, 1),
        "declared_global_sparsity": sparsity["global_sparsity"],
        "structure": structure,
    }
    print(json.dumps(summary, indent=1))
    ok = summary["compressor_level_bit_exact"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
