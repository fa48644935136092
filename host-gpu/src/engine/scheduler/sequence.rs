//! One request on its way through the scheduler: the [`Admission`] the
//! service sends, and the live [`Sequence`] it becomes once admitted, which
//! takes each sampled token, streams its text and finishes.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::super::backend::SequenceCache;
use super::super::text::TextStream;
use crate::sampling::Sampler;
use crate::service::{CancelToken, GenerationEvent, UsageMeter};
use crate::structured::Guide;
use crate::tokenizer::{TokenId, Tokenizer};
use crate::{FinishReason, InferenceError, Usage};

/// A request admitted by the service, waiting for the scheduler.
pub(in crate::engine) struct Admission {
    /// Whose request it is (decided by the host); shares are per tenant.
    pub tenant: String,
    pub prompt: Vec<TokenId>,
    /// Cache positions the sequence may fill (prompt plus generation).
    pub kv_tokens: usize,
    pub sampler: Sampler,
    /// The constraint's guide, when the output is constrained.
    pub guide: Option<Guide>,
    pub max_tokens: u32,
    pub stops: Vec<String>,
    pub events: UnboundedSender<GenerationEvent>,
    pub cancel: CancelToken,
    /// Where the tokens computed for the request are counted.
    pub meter: Arc<UsageMeter>,
}

impl Admission {
    /// Whether its requester cancelled it or went away while it waited.
    pub(super) fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }
}

/// A live sequence: its tokens so far (prompt, then generated), how many of
/// them its cache holds, and where its text goes.
pub(super) struct Sequence<C> {
    pub tenant: String,
    /// Cache positions it may fill; its share of the budget is reserved by this.
    pub kv_tokens: usize,
    pub tokens: Vec<TokenId>,
    pub prompt_len: usize,
    /// Tokens its cache holds (the next one fed is `tokens[fed]`).
    pub fed: usize,
    pub cache: C,
    pub sampler: Sampler,
    pub guide: Option<Guide>,
    pub max_tokens: u32,
    text: TextStream,
    events: UnboundedSender<GenerationEvent>,
    cancel: CancelToken,
    meter: Arc<UsageMeter>,
}

impl<C: SequenceCache> Sequence<C> {
    /// `admission`'s sequence, with an empty `cache`.
    pub fn start(admission: Admission, cache: C) -> Self {
        let Admission {
            tenant,
            prompt,
            kv_tokens,
            sampler,
            guide,
            max_tokens,
            stops,
            events,
            cancel,
            meter,
        } = admission;
        Sequence {
            tenant,
            kv_tokens,
            prompt_len: prompt.len(),
            tokens: prompt,
            fed: 0,
            cache,
            sampler,
            guide,
            max_tokens,
            text: TextStream::new(stops),
            events,
            cancel,
            meter,
        }
    }

    /// Tokens not yet fed to its cache: one while it decodes, more while
    /// its prompt is filled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.fed
    }

    /// Catches up with a step: its cache now holds what the step fed.
    pub fn stepped(&mut self) {
        self.fed = self.cache.filled();
        self.meter();
    }

    /// Whether its next token is the plain arg-max of the logits, which a
    /// device can pick without sending them back (not when constrained).
    pub fn is_greedy(&self) -> bool {
        self.guide.is_none() && self.sampler.is_greedy()
    }

    /// Takes `next`, a generated token that is not an end token, and the
    /// tokens its constraint forces after it; streams what text is safe to
    /// send. Returns why the sequence ends, if it does: a stop sequence, an
    /// answer its constraint holds complete, `max_tokens`, or the
    /// `context` length reached.
    pub fn accept(
        &mut self,
        next: TokenId,
        tokenizer: &Tokenizer,
        context: usize,
    ) -> Result<Option<FinishReason>, InferenceError> {
        let forced = match &mut self.guide {
            Some(guide) => guide.advance(next)?,
            None => Vec::new(),
        };
        let mut bytes = Vec::new();
        for token in std::iter::once(next).chain(forced) {
            bytes.clear();
            tokenizer.decode_token(token, &mut bytes);
            if let Some(reason) = self.push(token, &bytes, context) {
                return Ok(Some(reason));
            }
        }
        let complete = self.guide.as_ref().is_some_and(Guide::is_complete);
        Ok(complete.then_some(FinishReason::Stop))
    }

    /// Appends `next`, a generated token whose text is `bytes`, and streams
    /// what text is safe to send. Returns why the sequence ends, if it does:
    /// a stop sequence, `max_tokens`, or the `context` length reached.
    fn push(&mut self, next: TokenId, bytes: &[u8], context: usize) -> Option<FinishReason> {
        self.tokens.push(next);
        self.meter();
        let piece = self.text.push(bytes);
        if !piece.text.is_empty() {
            let _ = self.events.send(GenerationEvent::Text(piece.text));
        }
        if piece.stopped {
            Some(FinishReason::Stop)
        } else if self.generated() >= self.max_tokens || self.tokens.len() >= context {
            Some(FinishReason::Length)
        } else {
            None
        }
    }

    /// Whether its requester cancelled it or went away.
    pub fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }

    /// Gives the cache back, then sends the final event (the requester may
    /// be gone; that is fine).
    pub fn finish(self, reason: FinishReason) {
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

    /// Gives the cache back and tells the requester the generation failed.
    pub fn fail(self, error: InferenceError) {
        let Sequence { cache, events, .. } = self;
        drop(cache);
        let _ = events.send(GenerationEvent::Failed(error));
    }

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
}
