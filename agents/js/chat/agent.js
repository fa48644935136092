// `chat-js`: multi-turn chat with a model the tenant allowed (the JavaScript
// twin of `chat`).
//
// The input is the user's message. Metadata `conversation` names the
// conversation (default `default`), `model` the model (default `smollm2`),
// and `reset=true` starts over. Earlier turns are kept in kv as JSON, so a
// conversation continues across invocations; the answer is streamed from the
// engine piece by piece.

import { startGeneration } from 'sovra:agent/inference@0.1.0';
import { get, set } from 'sovra:agent/kv@0.1.0';
import { log } from 'sovra:agent/log@0.1.0';

const SYSTEM_PROMPT = 'You are a concise, factual assistant.';
// Earlier messages sent with each new one.
const MAX_HISTORY_MESSAGES = 8;
const ROLES = new Set(['user', 'assistant']);

const metadata = (request, key, fallback) =>
  request.metadata.find((pair) => pair.key === key)?.value ?? fallback;

function loadHistory(key) {
  const stored = get(key);
  if (stored === undefined) return [];
  let turns;
  try {
    turns = JSON.parse(new TextDecoder().decode(stored));
  } catch {
    return []; // kept by another agent, in another format
  }
  return Array.isArray(turns) ? turns.filter((turn) => ROLES.has(turn?.role)) : [];
}

export const handler = {
  handle(request) {
    const message = request.input.trim();
    if (!message) throw { tag: 'invalid-input', val: 'say something' };
    const key = `chat/${metadata(request, 'conversation', 'default')}`;
    const model = metadata(request, 'model', 'smollm2');
    const history = metadata(request, 'reset') === 'true' ? [] : loadHistory(key);
    history.push({ role: 'user', content: message });

    const messages = [{ role: 'system', content: SYSTEM_PROMPT }, ...history.slice(-MAX_HISTORY_MESSAGES)];
    const generation = startGeneration({
      model,
      prompt: { tag: 'chat', val: messages },
      sampling: {
        maxTokens: 64, temperature: 0, topK: 0, topP: 1, repeatPenalty: 1.2,
        seed: undefined, stop: [], constraint: undefined,
      },
    });
    let answer = '';
    let usage;
    for (;;) {
      const event = generation.next();
      if (event.tag === 'finished') {
        usage = event.val[1];
        break;
      }
      answer += event.val;
    }
    log('info', 'answered', [
      { key: 'prompt_tokens', value: String(usage.promptTokens) },
      { key: 'generated_tokens', value: String(usage.generatedTokens) },
    ]);
    answer = answer.trim();
    history.push({ role: 'assistant', content: answer });
    set(key, new TextEncoder().encode(JSON.stringify(history.slice(-MAX_HISTORY_MESSAGES))));
    return { output: answer, metadata: [] };
  },
};
