"""Does compressed-tensors decode tensorpress' non-pack-quantized exports to
the weights our QuantizedTensors dequantize to?

Input: the folders written by
    cargo run -p tensorpress-io --example export_ct_formats -- OUT
(four linear layers each; NAME.expected.safetensors next to each folder holds
the f32 weights QuantizedTensor::dequantize gives).

Per folder and config group:
  * compressed-tensors' own format inference (`infer_module_format` for a
    Linear under the group's scheme) names the format the group declares;
  * the registered compressor of that format (`BaseCompressor.
    get_value_from_registry(format).decompress`) decodes each module; its
    output (in the dtype compressed-tensors picks: the scale dtype for the
    naive family, bf16 for the packed FP4/FP6 layouts) must equal the expected
    f32 weight cast to that dtype, bit for bit (torch.equal);
  * packed FP4/FP6 layouts are also decoded in f32 (the same unpacking and
    `dequantize` calls with float32 codes and scales) and compared with the
    expected f32 weights: MX bit for bit; NVFP4, where compressed-tensors
    computes e2m1 * (block / global) and we e2m1 * (block * (1 / global)),
    within 2 f32 ulps (the count that differ and the largest distance are
    printed; the bf16 output of decompress() is still bit for bit).

Figures (compressed-tensors 0.20.0, torch 2.15.0, CPU): 47 of 47 checks pass
over 12 folders; format inference agrees with every group's format; every
decompress() output equals ours bit for bit (f32 for f32 scales, bf16 for
bf16 scales and the packed FP4/FP6 layouts); MXFP4/MXFP6 f32 decoding 0
elements differ; NVFP4 f32 decoding 3937 of 22528 elements differ by at most
2 ulps (373 of 2048 in the mixed folder).

Usage:
    cargo run -p tensorpress-io --example export_ct_formats -- /tmp/tp-ct-formats
    /tmp/refenv/bin/python scripts/reference/check_ct_formats.py /tmp/tp-ct-formats
Exits 1 when a check fails.
"""

import glob
import json
import os
import sys

import torch
from safetensors.torch import load_file

FAILED = []


def report(folder, check, ok, detail=""):
    if not ok:
        FAILED.append((folder, check))
    print(f"{'ok  ' if ok else 'FAIL'} {folder:24s} {check:34s} {detail}")


def ulps(a, b):
    """Largest distance in f32 ulps between two f32 tensors of one sign."""
    ai = a.contiguous().view(torch.int32).long()
    bi = b.contiguous().view(torch.int32).long()
    return int((ai - bi).abs().max()) if a.numel() else 0


def f32_decode(fmt, local, scheme):
    """The packed FP4/FP6 layouts decoded in f32 with compressed-tensors' own
    unpacking and dequantize (its decompress() fixes bf16)."""
    from compressed_tensors.compressors.mx_utils import decompress_mx_scale
    from compressed_tensors.compressors.mxfp6.helpers import unpack_fp6_from_uint8
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    packed = local["weight_packed"]
    m, n = packed.shape
    if fmt == "mxfp6-pack-quantized":
        codes = unpack_fp6_from_uint8(packed, m, n * 4 // 3, dtype=torch.float32)
    else:
        codes = unpack_fp4_from_uint8(packed, m, n * 2, dtype=torch.float32)
    if fmt == "nvfp4-pack-quantized":
        scale = local["weight_scale"].to(torch.float32)
    else:
        scale = decompress_mx_scale(local["weight_scale"]).to(torch.float32)
    return dequantize(
        x_q=codes,
        scale=scale,
        args=scheme.weights,
        global_scale=local.get("weight_global_scale"),
        dtype=torch.float32,
    )


def check(folder):
    import compressed_tensors  # noqa: F401
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format
    from compressed_tensors.quantization import QuantizationConfig

    name = os.path.basename(folder)
    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)["quantization_config"]
    qc = QuantizationConfig.model_validate(raw)
    sd = load_file(os.path.join(folder, "model.safetensors"))
    exp = load_file(folder + ".expected.safetensors")
    formats = set()
    for gname, scheme in qc.config_groups.items():
        fmt = raw["config_groups"][gname]["format"]
        formats.add(fmt)
        inferred = infer_module_format(torch.nn.Linear, scheme).value
        report(name, f"{gname} format inferred", inferred == fmt, f"{fmt} (compressed-tensors: {inferred})")
        compressor = BaseCompressor.get_value_from_registry(fmt)
        bad, dtypes, f32_bad, worst, n = [], set(), 0, 0, 0
        for module in scheme.targets:
            local = {k[len(module) + 1 :]: v for k, v in sd.items() if k.startswith(module + ".")}
            out = compressor.decompress(local, scheme)["weight"]
            want = exp[module + ".weight"]
            dtypes.add(str(out.dtype).removeprefix("torch."))
            n += 1
            if not torch.equal(out, want.to(out.dtype)):
                bad.append(f"{module}: {int((out != want.to(out.dtype)).sum())} differ")
            if "weight_packed" in local and fmt != "pack-quantized":
                got = f32_decode(fmt, local, scheme)
                f32_bad += int((got != want).sum())
                worst = max(worst, ulps(got, want))
        report(
            name,
            f"{gname} decompress",
            not bad,
            f"{n} modules, {compressor.__name__}, output {'/'.join(sorted(dtypes))} " + "; ".join(bad[:3]),
        )
        if fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp6-pack-quantized"):
            exact = fmt != "nvfp4-pack-quantized"
            report(
                name,
                f"{gname} f32 decode",
                f32_bad == 0 if exact else worst <= 2,
                f"{f32_bad} elements differ, max {worst} ulp",
            )
    top = raw["format"]
    want_top = next(iter(formats)) if len(formats) == 1 else "mixed-precision"
    report(name, "top-level format", top == want_top and qc.format == top, top)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/tp-ct-formats"
    import compressed_tensors

    print(f"compressed-tensors {compressed_tensors.__version__}, torch {torch.__version__}")
    folders = sorted(p for p in glob.glob(os.path.join(out, "*")) if os.path.isdir(p))
    if not folders:
        sys.exit(f"no folders under {out}: run the export_ct_formats example first")
    for folder in folders:
        check(folder)
    print(f"{len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
