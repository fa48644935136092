#!/usr/bin/env python3
"""Reference logits and greedy continuations from llama.cpp itself.

Runs SmolLM2 through llama-cpp-python (llama.cpp built from source by pip) and
writes, for fixed prompts, llama.cpp's token ids, the logits of the last
prompt position (top 20) and a greedy continuation, to
host-gpu/tests/reference/smollm2_llama_cpp.json.

    pip install llama-cpp-python
    scripts/fetch-models && python3 scripts/reference/llama_cpp_reference.py
"""
import json
import pathlib

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "def fibonacci(n):\n",
]
GREEDY_TOKENS = 16


def main():
    llm = Llama(
        model_path=str(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        n_ctx=512,
        n_threads=2,
        logits_all=True,
        verbose=False,
        seed=0,
    )
    cases = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-logits)[:20]
        greedy = []
        for _ in range(GREEDY_TOKENS):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(token)
            if token == llm.token_eos():
                break
            llm.eval([token])
        cases.append({
            "prompt": prompt,
            "ids": ids,
            "top_ids": [int(i) for i in top],
            "top_logits": [float(logits[i]) for i in top],
            "greedy": greedy,
        })
    out = ROOT / "host-gpu/tests/reference/smollm2_llama_cpp.json"
    out.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
