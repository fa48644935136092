//! The scheduler: one thread that owns every live sequence of a model and
//! steps them together (continuous batching). Sequences join between steps,
//! prefill in chunks alongside others' decoding, stream each new piece of
//! text to their requester, and leave when they finish, are cancelled, or
//! their requester goes away; their cache is freed with them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use super::admission::{self, Budget, Holdings, TenantShare};
use super::backend::{Backend, BackendError, RowOutput, SequenceCache, Wanted};
use super::text::TextStream;
use crate::model::blocks_for;
use crate::sampling::Sampler;
use crate::service::{CancelToken, GenerationEvent, UsageMeter};
use crate::tokenizer::{TokenId, Tokenizer};
use crate::{FinishReason, InferenceError, Usage};

/// Sequences stepped together at most.
pub const MAX_LIVE_SEQUENCES: usize = 64;

/// Prompt tokens one sequence feeds per step, so a long prompt does not
/// stall everyone else's decoding.
pub const PREFILL_CHUNK: usize = 128;

/// Tokens in one step, all sequences together.
pub const MAX_STEP_TOKENS: usize = 512;

/// Cache blocks each tenant's live sequences have reserved, as the
/// scheduler last saw them (for operators' metrics).
pub(super) type TenantUsage = Arc<Mutex<BTreeMap<String, usize>>>;

/// A request admitted by the service, waiting for the scheduler.
pub(super) struct Admission {
    /// Whose request it is (decided by the host); shares are per tenant.
    pub tenant: String,
    pub prompt: Vec<TokenId>,
    /// Cache positions the sequence may fill (prompt plus generation).
    pub kv_tokens: usize,
    pub sampler: Sampler,
    pub max_tokens: u32,
    pub stops: Vec<String>,
    pub events: UnboundedSender<GenerationEvent>,
    pub cancel: CancelToken,
    /// Where the tokens computed for the request are counted.
    pub meter: Arc<UsageMeter>,
}

struct Sequence<C> {
    tenant: String,
    kv_tokens: usize,
    tokens: Vec<TokenId>,
    prompt_len: usize,
    fed: usize,
    cache: C,
    sampler: Sampler,
    max_tokens: u32,
    text: TextStream,
    events: UnboundedSender<GenerationEvent>,
    cancel: CancelToken,
    meter: Arc<UsageMeter>,
}

impl<C: SequenceCache> Sequence<C> {
    /// Counts what has been computed: the prompt tokens fed so far and the
    /// tokens generated.
    fn meter(&self) {
        self.meter.record(Usage {
            prompt_tokens: self.fed.min(self.prompt_len) as u32,
            generated_tokens: self.generated(),
        });
    }

    fn generated(&self) -> u32 {
        (self.tokens.len() - self.prompt_len) as u32
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len as u32,
            generated_tokens: self.generated(),
        }
    }

    fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }

    /// Gives the cache back, then sends the final event (the requester may
    /// be gone; that is fine).
    fn finish(self, reason: FinishReason) {
        let usage = self.usage();
        let Sequence {
            cache,
            mut text,
            events,
            ..
        } = self;
        drop(cache);
        let rest = text.finish();
        if !rest.is_empty() && reason != FinishReason::Cancelled {
            let _ = events.send(GenerationEvent::Text(rest));
        }
        let _ = events.send(GenerationEvent::Finished { reason, usage });
    }
}

/// Runs until every sender of `commands` is gone and no sequence is live.
/// One tenant's sequences hold at most `tenant_share_percent` of the cache
/// pool and of the sequence slots (see [`admission`]).
pub(super) fn run<B: Backend>(
    backend: Arc<B>,
    tokenizer: Arc<Tokenizer>,
    end_tokens: Vec<TokenId>,
    tenant_share_percent: u8,
    usage: TenantUsage,
    commands: Receiver<Admission>,
) {
    let publish = |live: &[Sequence<B::Cache>]| {
        let mut by_tenant = BTreeMap::new();
        for seq in live {
            *by_tenant.entry(seq.tenant.clone()).or_insert(0) += blocks_for(seq.kv_tokens);
        }
        *usage.lock().unwrap_or_else(|p| p.into_inner()) = by_tenant;
    };
    let mut waiting: VecDeque<Admission> = VecDeque::new();
    let mut live: Vec<Sequence<B::Cache>> = Vec::new();
    let context = backend.config().context_length;
    let capacity_blocks = backend.cache_capacity_blocks();
    let budget = Budget {
        capacity_blocks,
        max_sequences: MAX_LIVE_SEQUENCES,
        share: TenantShare::of(tenant_share_percent, capacity_blocks, MAX_LIVE_SEQUENCES),
    };
    // Where the next step starts handing out prefill room, so that no
    // sequence's prompt is always served last.
    let mut prefill_turn = 0usize;
    let mut open = true;
    loop {
        // Intake: block only when there is nothing to do.
        if live.is_empty() && waiting.is_empty() {
            publish(&live);
            match commands.recv() {
                Ok(admission) => waiting.push_back(admission),
                Err(_) => return,
            }
        }
        while open {
            match commands.try_recv() {
                Ok(admission) => waiting.push_back(admission),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && live.is_empty() && waiting.is_empty() {
            return;
        }
        waiting.retain(|a| !(a.cancel.is_cancelled() || a.events.is_closed()));
        // Back-pressure and shares: a request joins only when the cache
        // blocks it may fill fit beside those the live sequences may fill,
        // and within its tenant's share; until then it waits. Blocks are
        // taken as positions fill, so this reservation is what guarantees a
        // live sequence never finds the pool empty.
        let mut held = Holdings::default();
        for seq in &live {
            held.add(&seq.tenant, seq.kv_tokens);
        }
        while let Some(index) = admission::next(
            waiting.iter().map(|a| (a.tenant.as_str(), a.kv_tokens)),
            &held,
            &budget,
        ) {
            let Some(a) = waiting.remove(index) else {
                break;
            };
            held.add(&a.tenant, a.kv_tokens);
            live.push(Sequence {
                tenant: a.tenant,
                kv_tokens: a.kv_tokens,
                prompt_len: a.prompt.len(),
                tokens: a.prompt,
                fed: 0,
                cache: backend.new_cache(),
                sampler: a.sampler,
                max_tokens: a.max_tokens,
                text: TextStream::new(a.stops),
                events: a.events,
                cancel: a.cancel,
                meter: a.meter,
            });
        }
        // Cancelled or abandoned sequences leave now, freeing their cache.
        let mut i = 0;
        while i < live.len() {
            if live[i].abandoned() {
                live.swap_remove(i).finish(FinishReason::Cancelled);
            } else {
                i += 1;
            }
        }
        publish(&live);
        if live.is_empty() {
            continue;
        }

        // One step: every decoding sequence's next token first (at most
        // MAX_LIVE_SEQUENCES, so always all of them), then prompt chunks in
        // the room left, taking turns, so that long prompts never stall
        // anyone's decoding.
        let mut tokens = Vec::new();
        let mut owners = Vec::new();
        let mut wanted = Vec::new();
        let mut sampled_seqs = Vec::new();
        let pending = |seq: &Sequence<B::Cache>| seq.tokens.len() - seq.fed;
        let decoding = (0..live.len()).filter(|&s| pending(&live[s]) == 1);
        let prefilling: Vec<usize> = (0..live.len()).filter(|&s| pending(&live[s]) > 1).collect();
        prefill_turn = prefill_turn.wrapping_add(1);
        let turn = prefill_turn % prefilling.len().max(1);
        let prefill_order = prefilling[turn..].iter().chain(&prefilling[..turn]);
        for s in decoding.chain(prefill_order.copied()) {
            let seq = &live[s];
            let room = MAX_STEP_TOKENS - tokens.len();
            if room == 0 {
                break;
            }
            let take = pending(seq).min(PREFILL_CHUNK).min(room);
            tokens.extend_from_slice(&seq.tokens[seq.fed..seq.fed + take]);
            owners.extend(std::iter::repeat_n(s, take));
            if seq.fed + take == seq.tokens.len() {
                wanted.push(Wanted {
                    row: tokens.len() - 1,
                    greedy: seq.sampler.is_greedy(),
                });
                sampled_seqs.push(s);
            }
        }
        let mut caches: Vec<&mut B::Cache> = live.iter_mut().map(|s| &mut s.cache).collect();
        let outputs = match backend.step(&tokens, &owners, &mut caches, &wanted) {
            Ok(outputs) => outputs,
            Err(error) => {
                // A full pool is unreachable while reservations hold; a
                // device error fails this step's sequences, not the engine.
                let error = match error {
                    BackendError::CacheFull(full) => InferenceError::Unavailable(full.to_string()),
                    BackendError::Device(e) => {
                        tracing::error!(device = %backend.device(), error = %e, "step failed");
                        InferenceError::Internal(format!("{}: {e}", backend.device()))
                    }
                };
                for seq in live.drain(..) {
                    let _ = seq.events.send(GenerationEvent::Failed(error.clone()));
                }
                continue;
            }
        };
        for seq in live.iter_mut() {
            seq.fed = seq.cache.filled();
            seq.meter();
        }

        let choices = choose(&mut live, outputs, &sampled_seqs);
        let mut finished = Vec::new();
        let mut bytes = Vec::new();
        for (&s, &next) in sampled_seqs.iter().zip(&choices) {
            let seq = &mut live[s];
            if end_tokens.contains(&next) {
                finished.push((s, FinishReason::Stop));
                continue;
            }
            seq.tokens.push(next);
            seq.meter();
            bytes.clear();
            tokenizer.decode_token(next, &mut bytes);
            let piece = seq.text.push(&bytes);
            if !piece.text.is_empty() {
                let _ = seq.events.send(GenerationEvent::Text(piece.text));
            }
            if piece.stopped {
                finished.push((s, FinishReason::Stop));
            } else if seq.generated() >= seq.max_tokens || seq.tokens.len() >= context {
                finished.push((s, FinishReason::Length));
            }
        }
        // Remove from the back so indices stay valid.
        finished.sort_by_key(|&(s, _)| std::cmp::Reverse(s));
        for (s, reason) in finished {
            live.swap_remove(s).finish(reason);
        }
    }
}

/// Each sampled sequence's next token, in the order of `sampled`
/// (`outputs[i]` is `sampled[i]`'s row). Rows that came back as logits are
/// drawn in parallel when there are several: each sampler's draw is its
/// own, and at a GPU's batch sizes drawing them one after another would
/// take longer than the step.
fn choose<C: Send>(
    live: &mut [Sequence<C>],
    outputs: Vec<RowOutput>,
    sampled: &[usize],
) -> Vec<u32> {
    use rayon::prelude::*;
    let draws = outputs
        .iter()
        .filter(|o| matches!(o, RowOutput::Logits(_)))
        .count();
    if draws <= 1 {
        return outputs
            .into_iter()
            .zip(sampled)
            .map(|(output, &s)| next_token(&mut live[s], output))
            .collect();
    }
    let mut rows: Vec<Option<RowOutput>> = (0..live.len()).map(|_| None).collect();
    for (output, &s) in outputs.into_iter().zip(sampled) {
        rows[s] = Some(output);
    }
    let drawn: Vec<Option<u32>> = live
        .par_iter_mut()
        .zip(rows)
        .map(|(seq, row)| row.map(|row| next_token(seq, row)))
        .collect();
    sampled
        .iter()
        .map(|&s| drawn[s].expect("every sampled sequence has a row"))
        .collect()
}

/// `seq`'s next token from its row: the device's arg-max, or its sampler's
/// draw from the logits.
fn next_token<C>(seq: &mut Sequence<C>, row: RowOutput) -> u32 {
    match row {
        RowOutput::ArgMax(token) => token,
        RowOutput::Logits(mut logits) => seq.sampler.sample(&mut logits, &seq.tokens),
    }
}
