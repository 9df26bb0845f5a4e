"""Checks a `tensorpress compress --kv-cache-fp8` folder with the Python stack.

compressed-tensors parses its `kv_cache_scheme` into the config group that
targets every `self_attn`, transformers loads the checkpoint and puts each
layer's `k_scale` / `v_scale` on its attention module, and those equal the
stored tensors. Usage (in an environment with torch, transformers and
compressed-tensors):

    python scripts/reference/check_kv_cache_scheme.py OUT_DIR
"""

import json
import sys

import torch
from compressed_tensors.quantization import QuantizationConfig
from safetensors import safe_open
from transformers import AutoModelForCausalLM


def main(folder: str) -> None:
    config = json.load(open(f"{folder}/config.json"))["quantization_config"]
    parsed = QuantizationConfig.model_validate(config)
    kv = parsed.kv_cache_scheme
    assert kv is not None and kv.num_bits == 8 and kv.type == "float", kv
    assert kv.strategy == "tensor" and not kv.dynamic, kv

    stored = {}
    with safe_open(f"{folder}/model.safetensors", "pt") as f:
        for name in f.keys():
            if name.endswith(("self_attn.k_scale", "self_attn.v_scale")):
                stored[name] = f.get_tensor(name)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    layers = model.model.layers
    assert len(stored) == 2 * len(layers), (len(stored), len(layers))
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        for what in ("k_scale", "v_scale"):
            loaded = getattr(attn, what)
            want = stored[f"model.layers.{i}.self_attn.{what}"].float()
            assert loaded.shape == (1,), (i, what, loaded.shape)
            assert torch.equal(loaded.detach().float().cpu(), want), (i, what, loaded, want)
    ids = torch.tensor([[1, 504, 3458, 282, 260, 2365]])
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    k0 = layers[0].self_attn.k_scale.item()
    v0 = layers[0].self_attn.v_scale.item()
    print(
        f"ok: {len(layers)} layers carry k_scale/v_scale as stored "
        f"(layer 0: k {k0:.5f}, v {v0:.5f}); kv_cache_scheme {kv.model_dump(exclude_none=True)}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
