//! Token quotas at each step of a generation. A [`TokenBudget`] is what a
//! tenant may still spend on each model, shared by all its calls at once
//! (the node keeps it; the runtime only charges it). A [`BudgetedGeneration`]
//! charges every token the engine counts as it goes and, once the tenant is
//! over its quota on that model, stops the generation: the caller sees it
//! finish for `length`, the tokens computed are counted all the same, and
//! [`BudgetedGeneration::quota_exceeded`] says why.

use std::sync::Arc;

use sovra_gpu::{FinishReason, Generation, GenerationEvent, UsageMeter};

/// What a tenant may still spend on models.
pub trait TokenBudget: Send + Sync + std::fmt::Debug {
    /// Whether work on `model` may start now: `Err(why)` once the tenant is
    /// over a quota on it.
    fn check(&self, model: &str) -> Result<(), String>;
    /// Counts `tokens` more used on `model` (always); `Err(why)` once the
    /// tenant is over a quota on it.
    fn charge(&self, model: &str, tokens: u64) -> Result<(), String>;
}

/// A generation that charges a [`TokenBudget`] as it goes.
#[derive(Debug)]
pub struct BudgetedGeneration {
    inner: Generation,
    budget: Option<Arc<dyn TokenBudget>>,
    model: String,
    /// Tokens (prompt and generated) charged so far.
    charged: u64,
    /// Why the generation was stopped for its quota, once it was.
    exceeded: Option<String>,
    /// The stop's `Finished` is the next event.
    stop_pending: bool,
}

impl BudgetedGeneration {
    /// Wraps `inner`, a generation on `model`; with no budget it passes
    /// everything through.
    pub fn new(inner: Generation, budget: Option<Arc<dyn TokenBudget>>, model: String) -> Self {
        BudgetedGeneration {
            inner,
            budget,
            model,
            charged: 0,
            exceeded: None,
            stop_pending: false,
        }
    }

    /// The next event, as [`Generation::next`]; after the event that took the
    /// tenant over its quota, a `Finished` for `length`.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        if std::mem::take(&mut self.stop_pending) {
            return Some(GenerationEvent::Finished {
                reason: FinishReason::Length,
                usage: self.inner.meter().usage(),
            });
        }
        let event = self.inner.next().await;
        let over = self.charge();
        if let (Err(why), Some(GenerationEvent::Text(_))) = (over, &event)
            && self.exceeded.is_none()
        {
            self.inner.cancel();
            self.exceeded = Some(why);
            self.stop_pending = true;
        }
        event
    }

    /// Charges what the engine counted since the last charge.
    fn charge(&mut self) -> Result<(), String> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let usage = self.inner.meter().usage();
        let total = u64::from(usage.prompt_tokens) + u64::from(usage.generated_tokens);
        let delta = total.saturating_sub(self.charged);
        self.charged = total;
        if delta == 0 {
            return Ok(());
        }
        budget.charge(&self.model, delta)
    }

    /// Why the generation was stopped for the tenant's quota, if it was.
    pub fn quota_exceeded(&self) -> Option<&str> {
        self.exceeded.as_deref()
    }

    pub fn meter(&self) -> Arc<UsageMeter> {
        self.inner.meter()
    }

    pub fn cancel(&self) {
        self.inner.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sovra_gpu::{CancelToken, Usage};

    use super::*;

    /// Allows `limit` tokens in all.
    #[derive(Debug)]
    struct Allowance {
        limit: u64,
        used: Mutex<u64>,
    }

    impl TokenBudget for Allowance {
        fn check(&self, _model: &str) -> Result<(), String> {
            Ok(())
        }

        fn charge(&self, _model: &str, tokens: u64) -> Result<(), String> {
            let mut used = self.used.lock().unwrap();
            *used += tokens;
            if *used >= self.limit {
                Err(format!("{used} of {}", self.limit))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn the_step_that_crosses_the_quota_is_the_last_and_everything_is_charged() {
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancelToken::default();
        let meter = Arc::new(UsageMeter::default());
        let generation = Generation::new(events, cancel.clone(), Arc::clone(&meter));
        let allowance = Arc::new(Allowance {
            limit: 12,
            used: Mutex::new(0),
        });
        let budget: Arc<dyn TokenBudget> = allowance.clone();
        let mut budgeted = BudgetedGeneration::new(generation, Some(budget), "m".into());
        // A prompt of 10 tokens, then one generated token per piece, each
        // counted by the engine before its piece is sent.
        let mut pieces = Vec::new();
        let mut generated = 0;
        let finished = loop {
            if generated < 5 {
                generated += 1;
                meter.record(Usage {
                    prompt_tokens: 10,
                    generated_tokens: generated,
                });
                sender
                    .send(GenerationEvent::Text(format!("t{generated}")))
                    .unwrap();
            }
            match budgeted.next().await.unwrap() {
                GenerationEvent::Text(piece) => pieces.push(piece),
                GenerationEvent::Finished { reason, .. } => break reason,
                GenerationEvent::Failed(error) => panic!("{error}"),
            }
        };
        assert_eq!(finished, FinishReason::Length);
        assert_eq!(pieces, ["t1", "t2"], "the piece that crossed is the last");
        assert!(cancel.is_cancelled(), "the engine was told to stop");
        assert!(budgeted.quota_exceeded().unwrap().contains("12 of 12"));
        assert_eq!(*allowance.used.lock().unwrap(), 12);
    }

    #[tokio::test]
    async fn without_a_budget_everything_passes_through() {
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let generation = Generation::new(events, CancelToken::default(), Arc::default());
        let mut budgeted = BudgetedGeneration::new(generation, None, "m".into());
        sender.send(GenerationEvent::Text("a".into())).unwrap();
        drop(sender);
        assert_eq!(
            budgeted.next().await,
            Some(GenerationEvent::Text("a".into()))
        );
        assert_eq!(budgeted.next().await, None);
        assert!(budgeted.quota_exceeded().is_none());
    }
}
