"""`rag-py`: answers questions from the tenant's own documents (the Python
twin of `rag`).

- `ingest TEXT`: splits TEXT into passages (blank-line separated) and stores
  each in vector memory, embedded with `minilm`; metadata `source` names it.
- anything else is a question: the closest passages are retrieved and given
  to `smollm2` as context; the answer ends with the passages it cites.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import inference, log, types, vector

COLLECTION = "documents"
EMBEDDER = "minilm"
GENERATOR = "smollm2"
# Passages retrieved per question.
TOP_K = 2


def ingest(text: str, source: str) -> handler.Response:
    passages = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not passages:
        raise Err(types.Error_InvalidInput("nothing to ingest"))
    for i, passage in enumerate(passages):
        vector.upsert_text(COLLECTION, f"{source}#{i}", passage, [types.Pair("source", source)], EMBEDDER)
    return handler.Response(output=f"ingested {len(passages)} passages from {source}", metadata=[])


def answer(question: str) -> handler.Response:
    hits = vector.query_text(COLLECTION, question, EMBEDDER, TOP_K)
    if not hits:
        return handler.Response(output="I have no documents to answer from yet.", metadata=[])
    context = "".join(f"- {hit.text}\n" for hit in hits)
    completion = inference.generate(inference.GenerateRequest(
        GENERATOR,
        inference.Prompt_Chat([
            inference.Message(inference.Role.SYSTEM, "Answer the question using only the context. Be brief."),
            inference.Message(inference.Role.USER, f"Context:\n{context}\nQuestion: {question}"),
        ]),
        inference.Sampling(
            max_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
            repeat_penalty=1.2, seed=None, stop=[], constraint=None,
        ),
    ))
    cited = [hit.id for hit in hits]
    log.log(log.Level.INFO, "retrieved", [types.Pair("passages", ",".join(cited))])
    return handler.Response(
        output=f"{completion.text.strip()}\n[sources: {', '.join(cited)}]",
        metadata=[types.Pair("sources", ",".join(cited))],
    )


class Handler(exports.Handler):
    def handle(self, request: handler.Request) -> handler.Response:
        text = request.input.strip()
        if text.startswith("ingest "):
            source = next((p.value for p in request.metadata if p.key == "source"), "doc")
            return ingest(text[len("ingest "):], source)
        if not text:
            raise Err(types.Error_InvalidInput("ask a question or `ingest TEXT`"))
        return answer(text)
