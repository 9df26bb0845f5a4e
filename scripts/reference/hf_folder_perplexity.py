#!/usr/bin/env python3
"""Perplexity of a Hugging Face Llama folder with transformers, computed the way
llama-perplexity does (and `tensorpress eval`): tokenize the whole text (one
trailing newline dropped), windows of n_ctx tokens, score the second half.

Checks that a folder written by `tensorpress convert` loads in transformers and
computes the same function as the GGUF it came from.

With `--adapter DIR`, a PEFT LoRA folder (`write_peft_adapter`, e.g. the
EoRA adapters of `cargo run --release --example lowrank_table` with
PEFT_OUT) is loaded onto the model with `peft.PeftModel.from_pretrained`
first: the check that the adapter runs in PEFT as in tensorpress.

usage: hf_folder_perplexity.py FOLDER TEXT_FILE [--ctx 512] [--chunks N] [--adapter DIR]
(venv with torch + transformers [+ peft]; HF_HUB_OFFLINE=1 is set here)
"""
import argparse
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=None)
    ap.add_argument("--adapter", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(a.folder)
    model = AutoModelForCausalLM.from_pretrained(a.folder, torch_dtype=torch.float32)
    peft_version = None
    if a.adapter:
        import peft

        model = peft.PeftModel.from_pretrained(model, a.adapter)
        peft_version = peft.__version__
    model.eval()
    text = open(a.text, "rb").read().decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n_ctx = a.ctx
    chunks = len(ids) // n_ctx
    if a.chunks is not None:
        chunks = min(chunks, a.chunks)
    first = n_ctx // 2
    nll, count, running = 0.0, 0, []
    with torch.no_grad():
        for c in range(chunks):
            window = torch.tensor([ids[c * n_ctx:(c + 1) * n_ctx]])
            logits = model(window).logits[0].double()
            logp = torch.log_softmax(logits[first:n_ctx - 1], dim=-1)
            targets = window[0, first + 1:n_ctx]
            nll -= logp.gather(1, targets.unsqueeze(1)).sum().item()
            count += n_ctx - 1 - first
            running.append(math.exp(nll / count))
    print(json.dumps({
        "folder": a.folder, "adapter": a.adapter, "peft": peft_version, "tokens": len(ids), "chunks": chunks, "n_ctx": n_ctx,
        "perplexity": math.exp(nll / count), "running": running,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }, indent=1))


if __name__ == "__main__":
    main()
