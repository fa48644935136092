//! One constrained sequence's guide: the tokens its grammar allows next,
//! applied to the logits before sampling, and the tokens it forces after
//! each one chosen.

use std::time::Duration;

use llguidance::toktrie::SimpleVob;
use llguidance::{CancellationHandle, Matcher};

use super::watchdog::Watchdog;
use crate::InferenceError;
use crate::tokenizer::TokenId;

/// Time one step of a guide may take: its mask, or taking a token and
/// finding the tokens forced after it (usually well under a millisecond).
/// Stops: a grammar built to make one step slow, stalling every sequence
/// of its model; its own sequence fails instead.
pub const MAX_GUIDE_STEP: Duration = Duration::from_millis(100);

/// A sequence's place in its constraint's grammar.
pub struct Guide {
    matcher: Matcher,
    /// Cancels the matcher's work when a step runs past [`MAX_GUIDE_STEP`].
    cancel: Option<CancellationHandle>,
    /// What kind of constraint it is, as errors name it.
    kind: &'static str,
    end_tokens: Vec<TokenId>,
    /// The tokens allowed next, once [`Guide::prepare`] has computed them
    /// for the coming step; a failure is kept for the scheduler to report.
    mask: Option<Result<SimpleVob, InferenceError>>,
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guide")
            .field("complete", &self.is_complete())
            .finish_non_exhaustive()
    }
}

impl Guide {
    /// A guide from `matcher`, a cancellable matcher at the start of a
    /// constraint of `kind`.
    pub(super) fn new(matcher: Matcher, kind: &'static str, end_tokens: Vec<TokenId>) -> Self {
        Guide {
            cancel: matcher.cancellation_handle(),
            matcher,
            kind,
            end_tokens,
            mask: None,
        }
    }

    /// Runs one step's `work` under the watchdog; names a step cut short
    /// for taking too long, or the matcher's own error.
    fn watched<T>(
        &mut self,
        work: impl FnOnce(&mut Matcher) -> anyhow::Result<T>,
    ) -> Result<T, InferenceError> {
        let watch = self
            .cancel
            .as_ref()
            .map(|cancel| Watchdog::get().watch(cancel, MAX_GUIDE_STEP));
        let result = work(&mut self.matcher);
        drop(watch);
        result.map_err(|e| {
            if self.matcher.is_cancelled() {
                InferenceError::InvalidInput(format!(
                    "the {} took longer than {} ms to compute one step's tokens",
                    self.kind,
                    MAX_GUIDE_STEP.as_millis()
                ))
            } else {
                InferenceError::InvalidInput(format!(
                    "the {} failed while generating: {}",
                    self.kind,
                    e.to_string().lines().next().unwrap_or_default()
                ))
            }
        })
    }

    /// Computes the tokens allowed next. Runs beside the forward pass that
    /// produces the logits they will restrict.
    pub fn prepare(&mut self) {
        let mask = self.watched(Matcher::compute_mask);
        self.mask = Some(mask);
    }

    /// Why the mask could not be computed, if it could not.
    pub fn failure(&self) -> Option<&InferenceError> {
        self.mask.as_ref().and_then(|m| m.as_ref().err())
    }

    /// Sets the logit of every token the grammar does not allow next to
    /// minus infinity (logits past the vocabulary too). Prepares the mask
    /// first if [`Guide::prepare`] has not; on a failure, allows only the
    /// end tokens (the scheduler fails the sequence after the step).
    pub fn restrict(&mut self, logits: &mut [f32]) {
        if self.mask.is_none() {
            self.prepare();
        }
        match &self.mask {
            Some(Ok(mask)) => {
                const BITS: usize = u32::BITS as usize;
                let words = mask.as_slice();
                let mut chunks = logits.chunks_mut(BITS);
                for (chunk, &word) in chunks.by_ref().zip(words) {
                    if word == u32::MAX {
                        continue;
                    }
                    for (bit, logit) in chunk.iter_mut().enumerate() {
                        if word >> bit & 1 == 0 {
                            *logit = f32::NEG_INFINITY;
                        }
                    }
                }
                for chunk in chunks {
                    chunk.fill(f32::NEG_INFINITY);
                }
            }
            _ => {
                for (id, logit) in logits.iter_mut().enumerate() {
                    if !self.end_tokens.contains(&(id as TokenId)) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }

    /// Takes the token chosen (one the mask allowed, not an end token) and
    /// returns the tokens the grammar forces after it, taken too.
    pub fn advance(&mut self, token: TokenId) -> Result<Vec<TokenId>, InferenceError> {
        self.mask = None;
        self.watched(|matcher| {
            matcher.consume_token(token)?;
            let forced = matcher.consume_ff_tokens();
            match matcher.get_error() {
                Some(error) => Err(anyhow::anyhow!(error)),
                None => Ok(forced),
            }
        })
    }

    /// Whether the answer is complete and nothing may follow it.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }
}
