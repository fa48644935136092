#!/usr/bin/env python3
"""Exact reference logits for SmolLM2: a numpy (f64) llama forward pass on
the GGUF's weights decoded by llama.cpp's `gguf` package, with no activation
quantization. sovra's forward pass with exact activations must match it to
f32 rounding; llama.cpp and sovra's fast path each sit about 1-3% below it.
Uses the prompts and token ids of smollm2_llama_cpp.json; writes
host-gpu/tests/reference/smollm2_exact.json.

    pip install gguf==0.19.0 numpy
    scripts/fetch-models && python3 scripts/reference/llama_exact_reference.py
"""
import json
import pathlib

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main():
    reader = GGUFReader(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    weights = {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64) for t in reader.tensors}
    field = lambda key: reader.fields[key].parts[reader.fields[key].data[0]][0]
    layers, heads, kv_heads = int(field("llama.block_count")), int(field("llama.attention.head_count")), int(field("llama.attention.head_count_kv"))
    eps, base = float(field("llama.attention.layer_norm_rms_epsilon")), float(field("llama.rope.freq_base"))
    emb = weights["token_embd.weight"]
    dim = emb.shape[1]
    head_dim = dim // heads
    freqs = base ** (-np.arange(0, head_dim, 2) / head_dim)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(v, n):
        out = v.copy()
        angles = np.arange(n)[:, None] * freqs[None, :]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        a, b = v[..., 0::2], v[..., 1::2]
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def forward(ids):
        n = len(ids)
        x = emb[ids]
        for i in range(layers):
            w = lambda name: weights[f"blk.{i}.{name}"]
            h = rms(x, w("attn_norm.weight"))
            q = rope((h @ w("attn_q.weight").T).reshape(n, heads, head_dim), n)
            k = rope((h @ w("attn_k.weight").T).reshape(n, kv_heads, head_dim), n)
            v = (h @ w("attn_v.weight").T).reshape(n, kv_heads, head_dim)
            out = np.zeros((n, heads, head_dim))
            mask = np.triu(np.full((n, n), -np.inf), 1)
            for head in range(heads):
                kv = head // (heads // kv_heads)
                scores = q[:, head] @ k[:, kv].T / np.sqrt(head_dim) + mask
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                out[:, head] = (scores / scores.sum(-1, keepdims=True)) @ v[:, kv]
            x = x + out.reshape(n, dim) @ w("attn_output.weight").T
            h = rms(x, w("ffn_norm.weight"))
            gate, up = h @ w("ffn_gate.weight").T, h @ w("ffn_up.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w("ffn_down.weight").T
        return emb @ rms(x[-1], weights["output_norm.weight"])

    cases = json.loads((ROOT / "host-gpu/tests/reference/smollm2_llama_cpp.json").read_text())
    out = []
    for case in cases:
        logits = forward(case["ids"])
        top = np.argsort(-logits)[:10]
        out.append({"prompt": case["prompt"], "top_ids": [int(t) for t in top], "top_logits": [float(logits[t]) for t in top]})
    path = ROOT / "host-gpu/tests/reference/smollm2_exact.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
