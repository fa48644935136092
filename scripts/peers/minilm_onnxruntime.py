#!/usr/bin/env python3
"""The embedding peer: all-MiniLM-L6-v2 in ONNX Runtime, on the same weights
and sentences as sovra's `cargo bench -p sovra-gpu --bench models`.

Builds the BERT graph from models/all-MiniLM-L6-v2/model.safetensors with the
`onnx` package (no PyTorch needed), checks that its embeddings match the
repository's reference (host-gpu/tests/reference/minilm_embeddings.json), then
times batches of 64 sentences (tokenized with Hugging Face `tokenizers`, padded,
attention-masked) on `--threads` intra-op threads and prints the median of
`--rounds`, in sentences per second.

    pip install onnxruntime onnx tokenizers numpy
    python3 scripts/peers/minilm_onnxruntime.py --threads 2 --rounds 5
"""
import argparse
import json
import math
import pathlib
import statistics
import struct
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/all-MiniLM-L6-v2"
# The sentences of host-gpu/benches/models.rs, cycled to 64.
SENTENCES = [
    "A sandboxed agent answers questions about tenant data.",
    "Refunds are processed within five business days.",
    "The office is open from 9am to 5pm on weekdays.",
    "Sovereign clouds keep data on the node where it belongs.",
    "The cafeteria serves vegetarian lunch on Fridays.",
    "Each invocation runs in a fresh WebAssembly sandbox.",
    "Quarterly revenue grew by twelve percent.",
    "Models are loaded once and shared by every tenant.",
]


def load_safetensors(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + start:8 + n + end], dtype=np.float32).reshape(info["shape"])
    return out


def build(t, heads=12, layers=6, eps=1e-12):
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(array, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def op(kind, inputs, **attrs):
        out = name(kind)
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    h = t["embeddings.word_embeddings.weight"].shape[1]
    d = h // heads

    def linear(x, prefix):
        w = const(np.ascontiguousarray(t[prefix + ".weight"].T))
        return op("Add", [op("MatMul", [x, w]), const(t[prefix + ".bias"])])

    def norm(x, prefix):
        return op("LayerNormalization", [x, const(t[prefix + ".weight"]), const(t[prefix + ".bias"])], axis=-1, epsilon=eps)

    words = op("Gather", [const(t["embeddings.word_embeddings.weight"]), "input_ids"])
    positions = op("Gather", [const(t["embeddings.position_embeddings.weight"]), "position_ids"])
    x = op("Add", [op("Add", [words, positions]), const(t["embeddings.token_type_embeddings.weight"][0])])
    x = norm(x, "embeddings.LayerNorm")
    # Padding positions get -1e9 before the softmax.
    mask4 = op("Unsqueeze", ["attention_mask", const(np.array([1, 2], dtype=np.int64))])
    bias = op("Mul", [op("Sub", [const(np.float32(1.0)), mask4]), const(np.float32(-1e9))])
    split_heads = const(np.array([0, 0, heads, d], dtype=np.int64))
    merge_heads = const(np.array([0, 0, h], dtype=np.int64))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = op("Transpose", [op("Reshape", [linear(x, p + "attention.self.query"), split_heads])], perm=[0, 2, 1, 3])
        k = op("Transpose", [op("Reshape", [linear(x, p + "attention.self.key"), split_heads])], perm=[0, 2, 3, 1])
        v = op("Transpose", [op("Reshape", [linear(x, p + "attention.self.value"), split_heads])], perm=[0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), const(np.float32(1.0 / math.sqrt(d)))]), bias])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), merge_heads])
        x = norm(op("Add", [x, linear(context, p + "attention.output.dense")]), p + "attention.output.LayerNorm")
        inner = linear(x, p + "intermediate.dense")
        erf = op("Erf", [op("Mul", [inner, const(np.float32(1.0 / math.sqrt(2.0)))])])
        inner = op("Mul", [op("Mul", [inner, const(np.float32(0.5))]), op("Add", [erf, const(np.float32(1.0))])])
        x = norm(op("Add", [x, linear(inner, p + "output.dense")]), p + "output.LayerNorm")
    mask3 = op("Unsqueeze", ["attention_mask", const(np.array([2], dtype=np.int64))])
    summed = op("ReduceSum", [op("Mul", [x, mask3]), const(np.array([1], dtype=np.int64))], keepdims=0)
    count = op("ReduceSum", [mask3, const(np.array([1], dtype=np.int64))], keepdims=0)
    pooled = op("Div", [summed, count])
    nodes.append(helper.make_node("LpNormalization", [pooled], ["embedding"], axis=-1, p=2))
    graph = helper.make_graph(
        nodes,
        "minilm",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", h])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = build(load_safetensors(MODEL / "model.safetensors"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding()

    def embed(texts):
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        positions = np.arange(ids.shape[1], dtype=np.int64)
        return session.run(None, {"input_ids": ids, "position_ids": positions, "attention_mask": mask})[0]

    # The peer must compute what sovra computes: the reference embeddings.
    reference = json.loads((ROOT / "host-gpu/tests/reference/minilm_embeddings.json").read_text())
    for case in reference:
        if not case["text"] or len(case["ids"]) > 200:
            continue
        got = embed([case["text"]])[0]
        cosine = float(np.dot(got, np.array(case["embedding"], dtype=np.float32)))
        assert cosine > 1 - 1e-4, f"{case['text']!r}: cosine {cosine}"

    batch = [SENTENCES[i % len(SENTENCES)] for i in range(64)]
    embed(batch[:8])
    rates = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        embed(batch)
        rates.append(len(batch) / (time.perf_counter() - started))
    print(f"onnxruntime {ort.__version__}, {args.threads} threads: {statistics.median(rates):.0f} sentences/s "
          f"(median of {args.rounds} batches of 64)")


if __name__ == "__main__":
    main()
