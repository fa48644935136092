"""Drives a sovra node's OpenAI-compatible API with the official `openai`
client, as an outside user would, and fails loudly on the first surprise.

    python openai_check.py BASE_URL TENANT_KEY

The node must serve `smollm2` and `minilm` to the key's tenant, and a model
`private` that this tenant may not use (cli/tests/openai.rs sets this up).
Prints one line per check.
"""

import json
import sys

import openai

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def valid_person(value) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"name", "age"}
        and isinstance(value["name"], str)
        and isinstance(value["age"], int)
    )


def main(base_url: str, key: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)

    ids = sorted(model.id for model in client.models.list())
    assert ids == ["minilm", "smollm2"], ids
    print("models:", ids)

    question = [
        {"role": "system", "content": "You are concise."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    chat = client.chat.completions.create(
        model="smollm2",
        messages=question,
        max_tokens=16,
        temperature=0,
    )
    answer = chat.choices[0].message.content
    assert chat.object == "chat.completion", chat
    assert "Paris" in answer, answer
    assert chat.usage.completion_tokens >= 1, chat.usage
    assert chat.choices[0].finish_reason in ("stop", "length"), chat
    print("chat:", repr(answer), chat.usage.prompt_tokens, chat.usage.completion_tokens)

    pieces = []
    usage = None
    finish = None
    for chunk in client.chat.completions.create(
        model="smollm2",
        messages=question,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    assert len(pieces) > 1, pieces
    # Greedy: the stream is the same answer, piece by piece.
    assert streamed == answer, (streamed, answer)
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens >= 1, usage
    print("stream:", len(pieces), "chunks", repr(streamed))

    text = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert text.object == "text_completion", text
    assert text.choices[0].text.strip(), text
    print("completion:", repr(text.choices[0].text))

    stopped = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Count from 1 to 10."}],
        max_tokens=40,
        temperature=0,
        stop=["5"],
    )
    assert "6" not in stopped.choices[0].message.content, stopped
    print("stop:", repr(stopped.choices[0].message.content))

    # The client asks for base64 by default and decodes it; float too.
    vectors = client.embeddings.create(model="minilm", input=["refunds", "the office hours"])
    assert [item.index for item in vectors.data] == [0, 1], vectors
    assert len(vectors.data[0].embedding) == 384, len(vectors.data[0].embedding)
    assert vectors.usage.prompt_tokens >= 4, vectors.usage
    floats = client.embeddings.create(model="minilm", input="refunds", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, vectors.data[0].embedding)) < 1e-6
    print("embeddings:", len(vectors.data), "x", len(vectors.data[0].embedding))

    about_ann = [{"role": "user", "content": "Tell me about Ann, who is 31 years old."}]
    free = client.chat.completions.create(
        model="smollm2", messages=about_ann, max_tokens=48, temperature=0
    )
    try:
        assert not valid_person(json.loads(free.choices[0].message.content))
    except json.JSONDecodeError:
        pass
    held = client.chat.completions.create(
        model="smollm2",
        messages=about_ann,
        max_tokens=48,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    person = json.loads(held.choices[0].message.content)
    assert valid_person(person), person
    assert held.choices[0].finish_reason == "stop", held
    print("json_schema:", person)

    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.chat.completions.create(
        model="smollm2",
        messages=weather,
        max_tokens=48,
        temperature=0,
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.type == "function" and call.function.name == "get_weather", call
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str), arguments
    print("tool call:", call.function.name, arguments)

    streamed_calls = []
    stream_finish = None
    for chunk in client.chat.completions.create(
        model="smollm2",
        messages=weather,
        max_tokens=48,
        temperature=0,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    ):
        for part in chunk.choices:
            streamed_calls.extend(part.delta.tool_calls or [])
            stream_finish = part.finish_reason or stream_finish
    assert stream_finish == "tool_calls", stream_finish
    assert json.loads(streamed_calls[0].function.arguments) == arguments, streamed_calls
    print("streamed tool call:", streamed_calls[0].function.arguments)

    # The call's result goes back as a `tool` message; the answer is text.
    answered = client.chat.completions.create(
        model="smollm2",
        messages=weather
        + [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 21}'},
        ],
        max_tokens=32,
        temperature=0,
        tools=[WEATHER],
        tool_choice="none",
    )
    assert answered.choices[0].message.content, answered
    assert not answered.choices[0].message.tool_calls, answered
    print("after the tool:", repr(answered.choices[0].message.content))

    try:
        client.chat.completions.create(
            model="smollm2",
            messages=weather,
            max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "fish"}}},
        )
        raise AssertionError("a schema that cannot be compiled was served")
    except openai.BadRequestError as error:
        assert error.body["code"] == "invalid-input", error.body
        print("bad schema:", error.status_code, error.body["message"])

    try:
        client.chat.completions.create(
            model="private", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        raise AssertionError("a model not on the allowlist answered")
    except (openai.PermissionDeniedError, openai.NotFoundError) as error:
        assert error.body["code"] in ("model-not-allowed", "model-not-found"), error.body
        print("not allowed:", error.status_code, error.body["code"])

    try:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "hi"}], n=2
        )
        raise AssertionError("n=2 was served")
    except openai.BadRequestError as error:
        assert error.body["code"] == "unsupported", error.body
        print("unsupported:", error.status_code, error.body["message"])

    wrong = openai.OpenAI(base_url=base_url, api_key="sk-not-a-key", max_retries=0)
    try:
        wrong.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as error:
        assert error.status_code == 401, error
        assert error.body["type"] == "authentication_error", error.body
        print("wrong key:", error.status_code, error.body["type"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
