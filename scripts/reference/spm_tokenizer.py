#!/usr/bin/env python3
"""A SentencePiece (`tokenizer.ggml.model = llama`) test model and its
reference token ids from two independent implementations.

Trains a small SentencePiece BPE model (byte fallback, identity
normalisation, two user-defined chat markers) on the repository's own
documents, writes it as the vocabulary of a tiny llama GGUF
(host-gpu/tests/reference/tiny/llama-spm.gguf), and records for a varied text
set the ids llama.cpp gives (llama-cpp-python, vocab only, BOS added, special
tokens parsed) and, for texts without chat markers, the ids `sentencepiece`
itself gives, and llama.cpp's greedy continuation of a prompt on the
tiny model. Writes host-gpu/tests/reference/spm_tokenizer_ids.json.

    pip install gguf==0.19.0 numpy sentencepiece llama-cpp-python
    python3 scripts/reference/spm_tokenizer.py
"""
import io
import json
import pathlib
import sys

import llama_cpp
import sentencepiece as spm
from gguf.constants import GGMLQuantizationType as T

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tiny_models import OUT, ROOT, build  # noqa: E402
from tokenizer_ids import TEXTS as BPE_TEXTS  # noqa: E402

MARKERS = ["<|im_start|>", "<|im_end|>"]
TEXTS = [t for t in BPE_TEXTS if "<|" not in t] + [
    " leading space",
    "▁ already escaped ▁▁",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|>",
    "text then <|im_end|> and  more",
    "<s> and </s> are only text here",
    "zzzzqqqq xylophone",
    "Sovereign clouds run sandboxed agents next to their GPUs.",
]
VOCAB = 640
GREEDY_PROMPT = "The agent runs in a sandbox"
GREEDY_TOKENS = 12


def corpus():
    docs = ["README.md", "BENCHMARKS.md"] + [str(p.relative_to(ROOT)) for p in sorted((ROOT / "wit").glob("*.wit"))]
    lines = []
    for doc in docs:
        lines += [l for l in (ROOT / doc).read_text().splitlines() if l.strip()]
    return lines


def main():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        user_defined_symbols=MARKERS,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    scores = [sp.get_score(i) for i in range(sp.vocab_size())]

    def kind(i):
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        return 4 if pieces[i] in MARKERS else 1

    def tokenizer(writer):
        writer.add_tokenizer_model("llama")
        writer.add_token_list(pieces)
        writer.add_token_scores(scores)
        writer.add_token_types([kind(i) for i in range(len(pieces))])
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(True)

    OUT.mkdir(parents=True, exist_ok=True)
    build("llama-spm", "llama", T.Q8_0, dim=64, ff=128, heads=4, kv_heads=2,
          vocab=len(pieces), seed=7, metadata=tokenizer)
    llama = llama_cpp.Llama(str(OUT / "llama-spm.gguf"), vocab_only=True, verbose=False)
    cases = []
    for text in TEXTS:
        ids = llama.tokenize(text.encode(), add_bos=True, special=True)
        case = {"text": text, "llama_cpp": ids}
        if "<|" not in text:
            case["sentencepiece"] = [1] + sp.encode(text)
        cases.append(case)
    full = llama_cpp.Llama(str(OUT / "llama-spm.gguf"), n_ctx=64, verbose=False)
    prompt = full.tokenize(GREEDY_PROMPT.encode(), add_bos=True)
    greedy = []
    for token in full.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        greedy.append(token)
        if len(greedy) == GREEDY_TOKENS:
            break
    out = ROOT / "host-gpu/tests/reference/spm_tokenizer_ids.json"
    reference = {"texts": cases, "greedy": {"prompt": GREEDY_PROMPT, "prompt_ids": prompt, "llama_cpp": greedy}}
    out.write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n")
    agree = sum(c.get("sentencepiece") == c["llama_cpp"] for c in cases)
    print(f"wrote {out}: {len(cases)} texts, sentencepiece agrees with llama.cpp on {agree}")


if __name__ == "__main__":
    main()
