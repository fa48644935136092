#!/usr/bin/env python3
"""Reference dequantization vectors from an independent implementation.

Uses the `gguf` Python package (llama.cpp's own, numpy-based) to dequantize
deterministic pseudo-random blocks of every tensor type sovra loads, and writes
them to host-gpu/tests/reference/quant_vectors.json, which the Rust tests
compare against. Re-run after changing the block set:

    pip install gguf==0.19.0 numpy
    python3 scripts/reference/quant_vectors.py
"""
import json
import pathlib

import numpy as np
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

TYPES = {
    "F16": T.F16,
    "BF16": T.BF16,
    "Q4_0": T.Q4_0,
    "Q4_1": T.Q4_1,
    "Q8_0": T.Q8_0,
    "Q4_K": T.Q4_K,
    "Q6_K": T.Q6_K,
}
BLOCKS = 3


def random_blocks(name, rng):
    block_len, block_bytes = GGML_QUANT_SIZES[TYPES[name]]
    blocks_count = BLOCKS if block_len > 1 else 64
    raw = rng.integers(0, 256, size=blocks_count * block_bytes, dtype=np.uint8)
    blocks = raw.reshape(blocks_count, block_bytes)
    # Keep every f16 scale finite and modest, as real files have them.
    def scale(offset):
        values = rng.uniform(-0.05, 0.05, size=blocks_count).astype(np.float16)
        blocks[:, offset:offset + 2] = values.view(np.uint8).reshape(blocks_count, 2)
    if name == "F16":
        blocks[:] = rng.uniform(-4, 4, size=blocks_count).astype(np.float16).view(np.uint8).reshape(blocks_count, block_bytes)
    elif name == "BF16":
        values = rng.uniform(-4, 4, size=blocks_count).astype(np.float32)
        blocks[:] = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(blocks_count, block_bytes)
    elif name in ("Q4_0", "Q8_0"):
        scale(0)
    elif name in ("Q4_1", "Q4_K"):
        scale(0)
        scale(2)
    elif name == "Q6_K":
        scale(block_bytes - 2)
    return blocks.reshape(-1)


def main():
    rng = np.random.default_rng(20261129)
    vectors = {}
    for name, qtype in TYPES.items():
        data = random_blocks(name, rng)
        values = quants.dequantize(data, qtype).astype(np.float32).reshape(-1)
        vectors[name] = {
            "bytes": data.tobytes().hex(),
            "values": [float(v) for v in values],
        }
    out = pathlib.Path(__file__).resolve().parents[2] / "host-gpu/tests/reference/quant_vectors.json"
    out.write_text(json.dumps(vectors, indent=0) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
