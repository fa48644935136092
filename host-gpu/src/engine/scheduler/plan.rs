//! What one step feeds the backend: every decoding sequence's next token
//! first, then prompt chunks in the room left, taking turns, so that long
//! prompts never stall anyone's decoding and no prompt is always served
//! last. Planned apart from the forward pass, so the policy can be read and
//! tested without a device.

use super::super::backend::{SequenceCache, Wanted};
use super::MAX_LIVE_SEQUENCES;
use super::sequence::Sequence;
use crate::tokenizer::TokenId;

/// Prompt tokens one sequence feeds per step, so a long prompt does not
/// stall everyone else's decoding.
pub const PREFILL_CHUNK: usize = 128;

/// Tokens in one step, all sequences together (the CUDA backend sizes its
/// workspace for this many rows).
pub const MAX_STEP_TOKENS: usize = 512;

// Every decoding sequence gets its token in every step.
const _: () = assert!(MAX_LIVE_SEQUENCES <= MAX_STEP_TOKENS);

/// One step, as planned. Sequences are named by their index among the live
/// ones; tokens are laid out decoding tokens first, then the prompt chunks,
/// each in the order listed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct StepPlan {
    /// The tokens fed, each at the next position of its owner's cache.
    pub tokens: Vec<TokenId>,
    /// `owners[i]` is the sequence `tokens[i]` belongs to.
    pub owners: Vec<usize>,
    /// Rows whose next token is wanted: the last row of each sequence whose
    /// pending tokens are all fed in this step.
    pub wanted: Vec<Wanted>,
    /// `sampled[i]` is the sequence that `wanted[i]`'s output is for.
    pub sampled: Vec<usize>,
    /// Sequences fed their one pending (last sampled) token.
    pub decoding: Vec<usize>,
    /// Sequences fed a chunk of their prompt (at most [`PREFILL_CHUNK`]
    /// tokens), in the order they were given room.
    pub prefilling: Vec<usize>,
}

impl StepPlan {
    /// The next step for `live`. Prompt chunks are handed room starting from
    /// the `turn`-th (modulo their number) sequence still filling its prompt.
    pub fn for_sequences<C: SequenceCache>(live: &[Sequence<C>], turn: usize) -> StepPlan {
        let mut plan = StepPlan::default();
        let decoding = (0..live.len()).filter(|&s| live[s].pending() == 1);
        let filling: Vec<usize> = (0..live.len()).filter(|&s| live[s].pending() > 1).collect();
        let turn = turn % filling.len().max(1);
        let prefill_order = filling[turn..].iter().chain(&filling[..turn]);
        for s in decoding.chain(prefill_order.copied()) {
            let seq = &live[s];
            let room = MAX_STEP_TOKENS - plan.tokens.len();
            if room == 0 {
                break;
            }
            let pending = seq.pending();
            let take = pending.min(PREFILL_CHUNK).min(room);
            plan.tokens
                .extend_from_slice(&seq.tokens[seq.fed..seq.fed + take]);
            plan.owners.extend(std::iter::repeat_n(s, take));
            if pending == 1 {
                plan.decoding.push(s);
            } else {
                plan.prefilling.push(s);
            }
            if take == pending {
                plan.wanted.push(Wanted {
                    row: plan.tokens.len() - 1,
                    greedy: seq.is_greedy(),
                });
                plan.sampled.push(s);
            }
        }
        plan
    }
}
