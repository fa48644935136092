#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, from an independent
implementation: Hugging Face `tokenizers` (the model's own tokenizer.json) and
a numpy BERT forward with mean pooling and L2 normalisation, as
sentence-transformers computes them. Writes
host-gpu/tests/reference/minilm_embeddings.json.

    pip install tokenizers numpy
    scripts/fetch-models && python3 scripts/reference/minilm_embeddings.py
"""
import json
import math
import pathlib
import struct

import numpy as np
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/all-MiniLM-L6-v2"
SENTENCES = [
    "A sandboxed agent answers questions about tenant data.",
    "The cat sits on the mat.",
    "A cat is sitting on a rug.",
    "Quarterly revenue grew by 12 percent.",
    "Ünïcödé, café and naïve résumé.",
    "日本語の文と中文句子",
    "Emoji 🚀 and symbols ∑ ≈ ∞!",
    "fn main() { println!(\"hello\"); }",
    "",
    "word " * 300,
]


def load_safetensors(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[8 + n + start:8 + n + end], dtype=np.float32).reshape(info["shape"])
    return tensors


def layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(t, ids, heads=12, layers=6):
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][: len(ids)] + t["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    n, h = x.shape
    d = h // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        lin = lambda name, v: v @ t[p + name + ".weight"].T + t[p + name + ".bias"]
        q, k, v = (lin(f"attention.self.{m}", x).reshape(n, heads, d).transpose(1, 0, 2) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        ctx = (scores @ v).transpose(1, 0, 2).reshape(n, h)
        x = layer_norm(x + lin("attention.output.dense", ctx), t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"])
        inner = gelu(lin("intermediate.dense", x))
        x = layer_norm(x + lin("output.dense", inner), t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
    pooled = x.mean(0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def main():
    tensors = load_safetensors(MODEL / "model.safetensors")
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    cases = []
    for sentence in SENTENCES:
        ids = tok.encode(sentence).ids
        vector = embed(tensors, np.array(ids))
        cases.append({"text": sentence, "ids": ids, "embedding": [float(v) for v in vector]})
    out = ROOT / "host-gpu/tests/reference/minilm_embeddings.json"
    out.write_text(json.dumps(cases, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
