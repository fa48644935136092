//! The scheduler: one thread that owns every live sequence of a model and
//! steps them together (continuous batching). Sequences join between steps,
//! prefill in chunks alongside others' decoding, stream each new piece of
//! text to their requester, and leave when they finish, are cancelled, or
//! their requester goes away; their cache is freed with them.
//!
//! Each round of the thread ([`run`]) is: take in new requests, admit those
//! that fit ([`admission`](super::admission)), let abandoned sequences go,
//! [`Scheduler::plan`] the step ([`plan`]), run it on the [`Backend`] (with
//! constrained sequences' token masks computed beside it), and
//! [`Scheduler::apply`] its outputs (sampling, streaming, finishing).

mod choose;
mod plan;
mod sequence;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::admission::{self, Budget, Holdings, TenantShare};
use super::backend::{Backend, BackendError, RowOutput};
use crate::model::blocks_for;
use crate::tokenizer::{TokenId, Tokenizer};
use crate::{FinishReason, InferenceError};
use choose::choose;
use plan::StepPlan;
pub(super) use sequence::Admission;
use sequence::Sequence;

pub use plan::{MAX_STEP_TOKENS, PREFILL_CHUNK};

/// Sequences stepped together at most.
pub const MAX_LIVE_SEQUENCES: usize = 64;

/// Cache blocks each tenant's live sequences have reserved, as the
/// scheduler last saw them (for operators' metrics).
pub(super) type TenantUsage = Arc<Mutex<BTreeMap<String, usize>>>;

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
    let mut scheduler = Scheduler::new(backend, tokenizer, end_tokens, tenant_share_percent, usage);
    let mut intake = Intake {
        commands,
        open: true,
    };
    while intake.receive(&mut scheduler) {
        scheduler.round();
    }
}

/// The scheduler's end of the engine's channel of admitted requests.
struct Intake {
    commands: Receiver<Admission>,
    /// Whether a sender may still send.
    open: bool,
}

impl Intake {
    /// Moves the requests sent so far into `scheduler`'s queue, waiting for
    /// one only when it has nothing to do. Returns false once no request can
    /// come and nothing is waiting or live.
    fn receive<B: Backend>(&mut self, scheduler: &mut Scheduler<B>) -> bool {
        if scheduler.is_idle() {
            scheduler.publish();
            match self.commands.recv() {
                Ok(admission) => scheduler.enqueue(admission),
                Err(_) => return false,
            }
        }
        while self.open {
            match self.commands.try_recv() {
                Ok(admission) => scheduler.enqueue(admission),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
        self.open || !scheduler.is_idle()
    }
}

/// The requests waiting to join, the live sequences, and the backend that
/// steps them.
pub(super) struct Scheduler<B: Backend> {
    backend: Arc<B>,
    tokenizer: Arc<Tokenizer>,
    /// Tokens that end a generation (not streamed).
    end_tokens: Vec<TokenId>,
    budget: Budget,
    usage: TenantUsage,
    /// Admitted by the service, oldest first, not yet live.
    waiting: VecDeque<Admission>,
    live: Vec<Sequence<B::Cache>>,
    /// Where the next step starts handing out prefill room, so that no
    /// sequence's prompt is always served last.
    prefill_turn: usize,
}

impl<B: Backend> Scheduler<B> {
    /// A scheduler with nothing waiting or live; one tenant's sequences may
    /// hold `tenant_share_percent` of `backend`'s cache pool and of the slots.
    fn new(
        backend: Arc<B>,
        tokenizer: Arc<Tokenizer>,
        end_tokens: Vec<TokenId>,
        tenant_share_percent: u8,
        usage: TenantUsage,
    ) -> Self {
        let capacity_blocks = backend.cache_capacity_blocks();
        let budget = Budget {
            capacity_blocks,
            max_sequences: MAX_LIVE_SEQUENCES,
            share: TenantShare::of(tenant_share_percent, capacity_blocks, MAX_LIVE_SEQUENCES),
        };
        Scheduler {
            backend,
            tokenizer,
            end_tokens,
            budget,
            usage,
            waiting: VecDeque::new(),
            live: Vec::new(),
            prefill_turn: 0,
        }
    }

    /// Nothing waiting and nothing live.
    fn is_idle(&self) -> bool {
        self.live.is_empty() && self.waiting.is_empty()
    }

    /// Queues a request behind those waiting.
    fn enqueue(&mut self, admission: Admission) {
        self.waiting.push_back(admission);
    }

    /// One round: admit, let the abandoned go, then plan, run and apply a
    /// step when a sequence is live.
    fn round(&mut self) {
        self.admit();
        self.cancel_abandoned();
        self.publish();
        let Some(plan) = self.plan() else {
            return;
        };
        tracing::trace!(
            tokens = plan.tokens.len(),
            decoding = plan.decoding.len(),
            prefilling = plan.prefilling.len(),
            "step"
        );
        let outputs = self.step(&plan);
        self.apply(plan, outputs);
    }

    /// Moves waiting requests into the live set while they may join.
    ///
    /// Back-pressure and shares: a request joins only when the cache blocks
    /// it may fill fit beside those the live sequences may fill, and within
    /// its tenant's share; until then it waits. Blocks are taken as
    /// positions fill, so this reservation is what guarantees a live
    /// sequence never finds the pool empty. Requests abandoned while
    /// waiting are dropped first.
    fn admit(&mut self) {
        self.waiting.retain(|a| !a.abandoned());
        let mut held = Holdings::default();
        for seq in &self.live {
            held.add(&seq.tenant, seq.kv_tokens);
        }
        while let Some(index) = admission::next(
            self.waiting
                .iter()
                .map(|a| (a.tenant.as_str(), a.kv_tokens)),
            &held,
            &self.budget,
        ) {
            let Some(a) = self.waiting.remove(index) else {
                break;
            };
            held.add(&a.tenant, a.kv_tokens);
            self.live.push(Sequence::start(a, self.backend.new_cache()));
        }
    }

    /// Cancelled sequences, and those whose requester went away, leave now:
    /// their cache is freed and they get `Finished { Cancelled }`.
    fn cancel_abandoned(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].abandoned() {
                self.live.swap_remove(i).finish(FinishReason::Cancelled);
            } else {
                i += 1;
            }
        }
    }

    /// Publishes the cache blocks each tenant's live sequences reserve.
    fn publish(&self) {
        let mut by_tenant = BTreeMap::new();
        for seq in &self.live {
            *by_tenant.entry(seq.tenant.clone()).or_insert(0) += blocks_for(seq.kv_tokens);
        }
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = by_tenant;
    }

    /// The next step for the live sequences (none when nothing is live);
    /// moves the prefill turn on. Runs nothing on the backend.
    fn plan(&mut self) -> Option<StepPlan> {
        if self.live.is_empty() {
            return None;
        }
        self.prefill_turn = self.prefill_turn.wrapping_add(1);
        Some(StepPlan::for_sequences(&self.live, self.prefill_turn))
    }

    /// Runs `plan` on the backend, each token into its sequence's cache.
    /// Constrained sequences that will sample have their token masks
    /// computed meanwhile, beside the forward pass.
    fn step(&mut self, plan: &StepPlan) -> Result<Vec<RowOutput>, BackendError> {
        let mut sampled = vec![false; self.live.len()];
        for &s in &plan.sampled {
            sampled[s] = true;
        }
        let mut caches = Vec::with_capacity(self.live.len());
        let mut guides = Vec::new();
        for (seq, sampled) in self.live.iter_mut().zip(sampled) {
            caches.push(&mut seq.cache);
            if let Some(guide) = seq.guide.as_mut().filter(|_| sampled) {
                guides.push(guide);
            }
        }
        let backend = &self.backend;
        let mut forward = || backend.step(&plan.tokens, &plan.owners, &mut caches, &plan.wanted);
        if guides.is_empty() {
            return forward();
        }
        let (outputs, ()) = rayon::join(forward, || {
            guides.into_par_iter().for_each(|guide| guide.prepare());
        });
        outputs
    }

    /// Takes a step's `outputs`: each sampled sequence gets its next token,
    /// streams its text, and leaves if it has finished. A failed step fails
    /// every live sequence (their caches are in an unknown state), not the
    /// engine.
    fn apply(&mut self, plan: StepPlan, outputs: Result<Vec<RowOutput>, BackendError>) {
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                let error = self.step_error(error);
                for seq in self.live.drain(..) {
                    seq.fail(error.clone());
                }
                return;
            }
        };
        for seq in self.live.iter_mut() {
            seq.stepped();
        }
        let choices = choose(&mut self.live, outputs, &plan.sampled);
        let context = self.backend.config().context_length;
        let mut ended = Vec::new();
        for (&s, &next) in plan.sampled.iter().zip(&choices) {
            let seq = &mut self.live[s];
            let outcome = match seq.guide.as_ref().and_then(|g| g.failure()) {
                Some(failure) => Err(failure.clone()),
                None if self.end_tokens.contains(&next) => Ok(Some(FinishReason::Stop)),
                None => seq.accept(next, &self.tokenizer, context),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(reason)) => ended.push((s, Ok(reason))),
                Err(error) => ended.push((s, Err(error))),
            }
        }
        // Remove from the back so indices stay valid.
        ended.sort_by_key(|&(s, _)| std::cmp::Reverse(s));
        for (s, outcome) in ended {
            let seq = self.live.swap_remove(s);
            match outcome {
                Ok(reason) => seq.finish(reason),
                Err(error) => seq.fail(error),
            }
        }
    }

    /// What the requesters of a failed step are told. A full pool is
    /// unreachable while reservations hold; a device error is logged.
    fn step_error(&self, error: BackendError) -> InferenceError {
        match error {
            BackendError::CacheFull(full) => InferenceError::Unavailable(full.to_string()),
            BackendError::Device(e) => {
                let device = self.backend.device();
                tracing::error!(device = %device, error = %e, "step failed");
                InferenceError::Internal(format!("{device}: {e}"))
            }
        }
    }
}
