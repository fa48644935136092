"""`chat-py`: multi-turn chat with a model the tenant allowed (the Python
twin of `chat`).

The input is the user's message. Metadata `conversation` names the
conversation (default `default`), `model` the model (default `smollm2`), and
`reset=true` starts over. Earlier turns are kept in kv as JSON, so a
conversation continues across invocations; the answer is streamed from the
engine piece by piece.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import inference, kv, log, types

SYSTEM_PROMPT = "You are a concise, factual assistant."
# Earlier messages sent with each new one.
MAX_HISTORY_MESSAGES = 8
ROLES = {"user": inference.Role.USER, "assistant": inference.Role.ASSISTANT}


def metadata(request: handler.Request, key: str, default: str | None = None) -> str | None:
    return next((pair.value for pair in request.metadata if pair.key == key), default)


def load_history(key: str) -> list[dict]:
    stored = kv.get(key)
    try:
        turns = json.loads(stored) if stored is not None else []
    except ValueError:  # kept by another agent, in another format
        return []
    return [t for t in turns if isinstance(t, dict) and t.get("role") in ROLES]


class Handler(exports.Handler):
    def handle(self, request: handler.Request) -> handler.Response:
        message = request.input.strip()
        if not message:
            raise Err(types.Error_InvalidInput("say something"))
        key = "chat/" + metadata(request, "conversation", "default")
        model = metadata(request, "model", "smollm2")
        history = [] if metadata(request, "reset") == "true" else load_history(key)
        history.append({"role": "user", "content": message})

        messages = [inference.Message(inference.Role.SYSTEM, SYSTEM_PROMPT)]
        messages += [
            inference.Message(ROLES[turn["role"]], turn["content"])
            for turn in history[-MAX_HISTORY_MESSAGES:]
        ]
        sampling = inference.Sampling(
            max_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
            repeat_penalty=1.2, seed=None, stop=[], constraint=None,
        )
        request_ = inference.GenerateRequest(model, inference.Prompt_Chat(messages), sampling)
        pieces = []
        with inference.start_generation(request_) as generation:
            while True:
                event = generation.next()
                if isinstance(event, inference.GenerationEvent_Finished):
                    _, usage = event.value
                    break
                pieces.append(event.value)
        log.log(log.Level.INFO, "answered", [
            types.Pair("prompt_tokens", str(usage.prompt_tokens)),
            types.Pair("generated_tokens", str(usage.generated_tokens)),
        ])
        answer = "".join(pieces).strip()
        history.append({"role": "assistant", "content": answer})
        kv.set(key, json.dumps(history[-MAX_HISTORY_MESSAGES:]).encode())
        return handler.Response(output=answer, metadata=[])
