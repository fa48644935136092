#!/usr/bin/env python3
"""Reference token ids from an independent implementation.

Builds a Hugging Face `tokenizers` BPE tokenizer from SmolLM2's GGUF
vocabulary and merges (read with llama.cpp's `gguf` package), with the
pre-tokenizer SmolLM2's tokenizer.json uses (single digits, then GPT-2 byte
level), and writes the ids of a varied text set to
host-gpu/tests/reference/tokenizer_ids.json.

    pip install gguf==0.19.0 tokenizers numpy
    scripts/fetch-models && python3 scripts/reference/tokenizer_ids.py
"""
import json
import pathlib

from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

ROOT = pathlib.Path(__file__).resolve().parents[2]

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, 1,234,567.89 people paid $42 for 3 items.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand\r\nwindows line ends",
    "multiple     spaces   between",
    "it's we're they've I'm you'll he'd",
    "Ünïcödé: café, naïve, Straße, Ærøskøbing",
    "日本語のテキストと中文文本",
    "Emoji: 🚀🔥👍🏽 and ❤️",
    "fn main() {\n    println!(\"{}\", x + 1);\n}\n",
    "def f(x):\n\treturn x**2  # square\n",
    "<|im_start|>user\nWhat is Wasm?<|im_end|>\n<|im_start|>assistant\n",
    "snake_case camelCase kebab-case SCREAMING_CASE",
    "https://example.com/path?query=1&b=2#frag",
    "Ω≈ç√∫˜µ≤≥÷ ¡™£¢∞§¶•ªº–≠",
    "   ",
    "a",
    "",
    "٣ Arabic-Indic digits ٤٥ and ½ fractions",
]


def main():
    reader = GGUFReader(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf")

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    types = reader.fields["tokenizer.ggml.token_type"]
    special = [tokens[n] for n, i in enumerate(types.data) if int(types.parts[i][0]) in (3, 4)]

    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])

    cases = [{"text": t, "ids": tok.encode(t).ids} for t in TEXTS]
    out = ROOT / "host-gpu/tests/reference/tokenizer_ids.json"
    out.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
