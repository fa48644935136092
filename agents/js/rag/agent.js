// `rag-js`: answers questions from the tenant's own documents (the
// JavaScript twin of `rag`).
//
// - `ingest TEXT`: splits TEXT into passages (blank-line separated) and
//   stores each in vector memory, embedded with `minilm`; metadata `source`
//   names it.
// - anything else is a question: the closest passages are retrieved and
//   given to `smollm2` as context; the answer ends with the passages it cites.

import { generate } from 'sovra:agent/inference@0.1.0';
import { log } from 'sovra:agent/log@0.1.0';
import { queryText, upsertText } from 'sovra:agent/vector@0.1.0';

const COLLECTION = 'documents';
const EMBEDDER = 'minilm';
const GENERATOR = 'smollm2';
// Passages retrieved per question.
const TOP_K = 2;

function ingest(text, source) {
  const passages = text.split('\n\n').map((p) => p.trim()).filter((p) => p);
  if (passages.length === 0) throw { tag: 'invalid-input', val: 'nothing to ingest' };
  passages.forEach((passage, i) => {
    upsertText(COLLECTION, `${source}#${i}`, passage, [{ key: 'source', value: source }], EMBEDDER);
  });
  return { output: `ingested ${passages.length} passages from ${source}`, metadata: [] };
}

function answer(question) {
  const hits = queryText(COLLECTION, question, EMBEDDER, TOP_K);
  if (hits.length === 0) return { output: 'I have no documents to answer from yet.', metadata: [] };
  const context = hits.map((hit) => `- ${hit.text}\n`).join('');
  const completion = generate({
    model: GENERATOR,
    prompt: {
      tag: 'chat',
      val: [
        { role: 'system', content: 'Answer the question using only the context. Be brief.' },
        { role: 'user', content: `Context:\n${context}\nQuestion: ${question}` },
      ],
    },
    sampling: {
      maxTokens: 64, temperature: 0, topK: 0, topP: 1, repeatPenalty: 1.2,
      seed: undefined, stop: [], constraint: undefined,
    },
  });
  const cited = hits.map((hit) => hit.id);
  log('info', 'retrieved', [{ key: 'passages', value: cited.join(',') }]);
  return {
    output: `${completion.text.trim()}\n[sources: ${cited.join(', ')}]`,
    metadata: [{ key: 'sources', value: cited.join(',') }],
  };
}

export const handler = {
  handle(request) {
    const text = request.input.trim();
    if (text.startsWith('ingest ')) {
      const source = request.metadata.find((pair) => pair.key === 'source')?.value ?? 'doc';
      return ingest(text.slice('ingest '.length), source);
    }
    if (!text) throw { tag: 'invalid-input', val: 'ask a question or `ingest TEXT`' };
    return answer(text);
  },
};
