#!/usr/bin/env python3
"""An independent KIVI reference: perplexity of a Hugging Face Llama folder with
the KV cache fake-quantized as KIVI does (Liu et al., ICML 2024), computed with
PyTorch alone, to check `tensorpress eval --kv-cache kivi-B-gG-rR --kv-chunk C`.

KIVI as tensorpress runs it in decode-style evaluation: the window is fed C
tokens at a time; keys (after RoPE) go to a full-precision residual that is
quantized all at once when it holds R tokens, per channel over groups of G
tokens; values keep the last R tokens in full precision and older ones are
quantized per token over groups of G channels; both asymmetric min-max with
2^B levels. A query of the chunk ending at token e therefore sees keys
j < floor(e / R)·R and values j < e − R quantized, the rest exact. Since a
group's codes never change once written, the whole window is one pass: the
attention scores use the quantized key where the query sees it quantized, and
the probabilities are split between quantized and exact values the same way.

Perplexity as llama-perplexity: windows of n_ctx tokens, the second half scored.

usage: kivi_fake_quant.py FOLDER TEXT_FILE [--ctx 2048] [--chunks 4] [--bits 2]
       [--group 32] [--residual 128] [--step 64] [--bits 0 = no quantization]
(venv with torch + transformers)
"""
import argparse
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def fake_quant(x, dim, bits):
    """Asymmetric min-max quantization over `dim` (round half to even)."""
    lo = x.amin(dim=dim, keepdim=True)
    hi = x.amax(dim=dim, keepdim=True)
    levels = 2**bits - 1
    scale = (hi - lo) / levels
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((x - lo) / safe), 0, levels)
    return torch.where(scale > 0, q * scale + lo, x)


def kivi_keys(k, bits, group):
    """[heads, T, d] keys quantized per channel over groups of `group` tokens
    (a trailing partial group is left exact: it is never quantized)."""
    h, t, d = k.shape
    full = t // group * group
    out = k.clone()
    g = k[:, :full].reshape(h, full // group, group, d)
    out[:, :full] = fake_quant(g, 2, bits).reshape(h, full, d)
    return out


def kivi_values(v, bits, group):
    """[heads, T, d] values quantized per token over groups of `group` channels."""
    h, t, d = v.shape
    g = v.reshape(h, t, d // group, group)
    return fake_quant(g, 3, bits).reshape(h, t, d)


def attention(layer, x, cos, sin, cfg, a):
    att = layer.self_attn
    t = x.shape[1]
    hd = cfg.hidden_size // cfg.num_attention_heads
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    q = att.q_proj(x).view(1, t, nh, hd).transpose(1, 2)
    k = att.k_proj(x).view(1, t, nkv, hd).transpose(1, 2)
    v = att.v_proj(x).view(1, t, nkv, hd).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    q, k, v = q[0], k[0], v[0]
    pos = torch.arange(t)
    causal = pos[None, :] <= pos[:, None]
    if a.bits:
        # The end of the chunk each query belongs to.
        end = torch.clamp((pos // a.step + 1) * a.step, max=t)
        kq_mask = pos[None, :] < (end // a.residual * a.residual)[:, None]
        vq_mask = pos[None, :] < (end - a.residual)[:, None]
        kq = kivi_keys(k, a.bits, a.group)
        vq = kivi_values(v, a.bits, a.group)
    rep = nh // nkv
    outs = []
    for head in range(nh):
        kh = head // rep
        s = q[head] @ k[kh].T
        if a.bits:
            s = torch.where(kq_mask, q[head] @ kq[kh].T, s)
        s = s / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        p = torch.softmax(s.double(), dim=-1).float()
        if a.bits:
            o = (p * vq_mask) @ vq[kh] + (p * ~vq_mask) @ v[kh]
        else:
            o = p @ v[kh]
        outs.append(o)
    o = torch.stack(outs, 0).transpose(0, 1).reshape(1, t, nh * hd)
    return att.o_proj(o)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--residual", type=int, default=128)
    ap.add_argument("--step", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(a.folder)
    model = AutoModelForCausalLM.from_pretrained(a.folder, torch_dtype=torch.float32)
    model.eval()
    cfg = model.config
    text = open(a.text, "rb").read().decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n_ctx = a.ctx
    chunks = min(len(ids) // n_ctx, a.chunks)
    first = n_ctx // 2
    nll, count, running = 0.0, 0, []
    inner = model.model
    with torch.no_grad():
        for c in range(chunks):
            window = torch.tensor([ids[c * n_ctx:(c + 1) * n_ctx]])
            x = inner.embed_tokens(window)
            position_ids = torch.arange(n_ctx)[None, :]
            cos, sin = inner.rotary_emb(x, position_ids)
            for layer in inner.layers:
                x = x + attention(layer, layer.input_layernorm(x), cos, sin, cfg, a)
                x = x + layer.mlp(layer.post_attention_layernorm(x))
            logits = model.lm_head(inner.norm(x))[0].double()
            logp = torch.log_softmax(logits[first:n_ctx - 1], dim=-1)
            targets = window[0, first + 1:n_ctx]
            nll -= logp.gather(1, targets.unsqueeze(1)).sum().item()
            count += n_ctx - 1 - first
            running.append(math.exp(nll / count))
    print(json.dumps({
        "folder": a.folder, "tokens": len(ids), "chunks": chunks, "n_ctx": n_ctx,
        "bits": a.bits, "group": a.group, "residual": a.residual, "step": a.step,
        "perplexity": math.exp(nll / count), "running": running,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }, indent=1))


if __name__ == "__main__":
    main()
