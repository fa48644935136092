#!/usr/bin/env python3
"""Tiny llama-family GGUF models in every weight type sovra loads, and their
exact logits.

Each model has one layer and random weights of real structure: llama with
F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K and Q6_K projections, and qwen2 (q/k/v
biases, GPT-NeoX RoPE) with Q8_0. Weights are quantized with llama.cpp's
`gguf` package where it can (random valid blocks for Q4_K/Q6_K, which it only
decodes); logits come from a float64 numpy forward over the decoded weights.
Writes host-gpu/tests/reference/tiny/*.gguf and tiny/logits.json.

    pip install gguf==0.19.0 numpy
    python3 scripts/reference/tiny_models.py
"""
import json
import pathlib

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "host-gpu/tests/reference/tiny"
TOKENS = [3, 17, 42, 5, 29, 8]


def encode(rng, weights, qtype):
    """(bytes or array to store, decoded float64 weights)."""
    if qtype == T.F32:
        return weights, weights.astype(np.float64)
    if qtype in (T.Q4_K, T.Q6_K):
        block_len, block_bytes = GGML_QUANT_SIZES[qtype]
        rows, cols = weights.shape
        raw = rng.integers(0, 256, size=(rows * cols // block_len, block_bytes), dtype=np.uint8)
        scales = rng.uniform(0.002, 0.01, size=raw.shape[0]).astype(np.float16).view(np.uint8).reshape(-1, 2)
        offsets = [0] if qtype == T.Q6_K else [0, 2]
        for offset in offsets:
            at = block_bytes - 2 if qtype == T.Q6_K else offset
            raw[:, at:at + 2] = scales
        data = raw.reshape(rows, cols // block_len * block_bytes)
    else:
        data = quantize(weights, qtype)
    return data, np.asarray(dequantize(data, qtype), dtype=np.float64).reshape(weights.shape)


def build(name, arch, qtype, dim, ff, heads, kv_heads, vocab, seed, out=OUT, metadata=None):
    """Writes out/name.gguf; `metadata(writer)` adds keys (a tokenizer).
    Returns the exact logits of TOKENS."""
    rng = np.random.default_rng(seed)
    head_dim = dim // heads
    writer = GGUFWriter(str(out / f"{name}.gguf"), arch)
    if metadata:
        metadata(writer)
    writer.add_block_count(1)
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_context_length(64)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    decoded = {}

    def tensor(tname, shape, qt, scale=0.08):
        w = (rng.standard_normal(shape) * scale).astype(np.float32)
        data, exact = encode(rng, w, qt)
        writer.add_tensor(tname, data, raw_dtype=qt if qt != T.F32 else None)
        decoded[tname] = exact

    def norm(tname, n):
        w = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
        writer.add_tensor(tname, w)
        decoded[tname] = w.astype(np.float64)

    tensor("token_embd.weight", (vocab, dim), T.F32, 1.0)
    norm("blk.0.attn_norm.weight", dim)
    tensor("blk.0.attn_q.weight", (dim, dim), qtype)
    tensor("blk.0.attn_k.weight", (kv_heads * head_dim, dim), qtype)
    tensor("blk.0.attn_v.weight", (kv_heads * head_dim, dim), qtype)
    if arch == "qwen2":
        for part, n in (("q", dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim)):
            b = (0.05 * rng.standard_normal(n)).astype(np.float32)
            writer.add_tensor(f"blk.0.attn_{part}.bias", b)
            decoded[f"blk.0.attn_{part}.bias"] = b.astype(np.float64)
    tensor("blk.0.attn_output.weight", (dim, dim), qtype)
    norm("blk.0.ffn_norm.weight", dim)
    tensor("blk.0.ffn_gate.weight", (ff, dim), qtype)
    tensor("blk.0.ffn_up.weight", (ff, dim), qtype)
    tensor("blk.0.ffn_down.weight", (dim, ff), qtype)
    norm("output_norm.weight", dim)
    tensor("output.weight", (vocab, dim), T.Q8_0 if dim % 32 == 0 else T.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return forward(decoded, arch, dim, heads, kv_heads)


def forward(w, arch, dim, heads, kv_heads):
    ids, n = TOKENS, len(TOKENS)
    head_dim = dim // heads
    freqs = 10000.0 ** (-np.arange(0, head_dim, 2) / head_dim)
    rms = lambda x, g: x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g

    def rope(v):
        out = v.copy()
        ang = np.arange(n)[:, None] * freqs[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if arch == "qwen2":
            a, b = v[..., : head_dim // 2], v[..., head_dim // 2:]
            out[..., : head_dim // 2], out[..., head_dim // 2:] = a * cos - b * sin, a * sin + b * cos
        else:
            a, b = v[..., 0::2], v[..., 1::2]
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    x = w["token_embd.weight"][ids]
    h = rms(x, w["blk.0.attn_norm.weight"])
    proj = lambda part: h @ w[f"blk.0.attn_{part}.weight"].T + w.get(f"blk.0.attn_{part}.bias", 0.0)
    q = rope(proj("q").reshape(n, heads, head_dim))
    k = rope(proj("k").reshape(n, kv_heads, head_dim))
    v = proj("v").reshape(n, kv_heads, head_dim)
    out = np.zeros((n, heads, head_dim))
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for head in range(heads):
        kv = head // (heads // kv_heads)
        s = q[:, head] @ k[:, kv].T / np.sqrt(head_dim) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        out[:, head] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
    x = x + out.reshape(n, dim) @ w["blk.0.attn_output.weight"].T
    h = rms(x, w["blk.0.ffn_norm.weight"])
    g, u = h @ w["blk.0.ffn_gate.weight"].T, h @ w["blk.0.ffn_up.weight"].T
    x = x + (g / (1 + np.exp(-g)) * u) @ w["blk.0.ffn_down.weight"].T
    return (rms(x, w["output_norm.weight"]) @ w["output.weight"].T).tolist()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    models = {}
    small = dict(dim=64, ff=128, heads=4, kv_heads=2, vocab=48)
    k_sized = dict(dim=256, ff=256, heads=4, kv_heads=2, vocab=48)
    for i, (qtype, shape) in enumerate([
        (T.F32, small), (T.F16, small), (T.BF16, small), (T.Q4_0, small),
        (T.Q4_1, small), (T.Q8_0, small), (T.Q4_K, k_sized), (T.Q6_K, k_sized),
    ]):
        name = f"llama-{qtype.name.lower()}"
        models[name] = build(name, "llama", qtype, seed=i, **shape)
    models["qwen2-q8_0"] = build("qwen2-q8_0", "qwen2", T.Q8_0, seed=99, **small)
    (OUT / "logits.json").write_text(json.dumps({"tokens": TOKENS, "logits": models}) + "\n")
    print(f"wrote {len(models)} models to {OUT}")


if __name__ == "__main__":
    main()
