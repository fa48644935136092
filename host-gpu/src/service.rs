//! The interface every inference engine implements, and the handle through
//! which a streamed generation reaches its requester.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::{FinishReason, GenerateRequest, InferenceError, ModelDescriptor, NamedTensor, Usage};

/// Who is asking, decided by the host (never by the guest).
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The tenant on whose behalf the call runs: engines hold each tenant
    /// to its share of a model's KV cache and batch slots, and meter usage
    /// per tenant.
    pub tenant: String,
    /// When the requester stops waiting; work past it is wasted.
    pub deadline: Option<Instant>,
}

/// Where a model runs and how much of its cache is held, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// Bytes of KV cache held by live sequences and the model's budget, for
    /// models that keep one.
    pub kv_cache: Option<(u64, u64)>,
    /// Bytes of KV cache each tenant's live sequences have reserved (what
    /// counts against its share), by tenant; tenants with none are absent.
    pub kv_reserved_by_tenant: Vec<(String, u64)>,
}

/// One step of a streamed generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationEvent {
    /// Newly generated text.
    Text(String),
    /// The generation is over.
    Finished { reason: FinishReason, usage: Usage },
    /// The generation failed; nothing follows.
    Failed(InferenceError),
}

/// Shared flag by which a requester tells the engine to stop a sequence.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A generation in progress. Dropping it cancels the sequence.
#[derive(Debug)]
pub struct Generation {
    events: UnboundedReceiver<GenerationEvent>,
    cancel: CancelToken,
    meter: Arc<UsageMeter>,
}

/// What an embedding call computed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    /// One vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
    /// The tokens the texts came to (what the call is accounted as).
    pub tokens: u32,
}

/// The tokens one generation has cost so far, kept by the engine as it
/// goes: prompt tokens the model has processed and tokens it has generated.
/// Read whenever the generation ends, finished or not (cancelled, dropped,
/// cut by a deadline), it is exactly what was computed.
#[derive(Debug, Default)]
pub struct UsageMeter {
    prompt_tokens: AtomicU32,
    generated_tokens: AtomicU32,
}

impl UsageMeter {
    /// A meter that reads `usage` (work done in one go, like an embedding).
    pub fn counted(usage: Usage) -> Self {
        let meter = UsageMeter::default();
        meter.record(usage);
        meter
    }

    pub fn record(&self, usage: Usage) {
        self.prompt_tokens
            .store(usage.prompt_tokens, Ordering::Relaxed);
        self.generated_tokens
            .store(usage.generated_tokens, Ordering::Relaxed);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
        }
    }
}

impl Generation {
    /// Pairs an event stream with the token that stops its producer and the
    /// meter the producer keeps.
    pub fn new(
        events: UnboundedReceiver<GenerationEvent>,
        cancel: CancelToken,
        meter: Arc<UsageMeter>,
    ) -> Self {
        Generation {
            events,
            cancel,
            meter,
        }
    }

    /// What the generation has cost so far.
    pub fn meter(&self) -> Arc<UsageMeter> {
        Arc::clone(&self.meter)
    }

    /// The next event; `None` once the producer has gone away without a
    /// final event (treated by callers as an engine failure).
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        self.events.recv().await
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A loaded model that serves requests from every tenant allowed to use it.
///
/// Methods other than [`ModelService::descriptor`] may block for the length
/// of a model call; the runtime calls them off its async workers.
pub trait ModelService: Send + Sync + std::fmt::Debug + 'static {
    fn descriptor(&self) -> &ModelDescriptor;

    /// Where the model runs and what it holds now (the CPU, no cache, unless
    /// the service says otherwise).
    fn status(&self) -> ModelStatus {
        ModelStatus {
            device: "cpu".into(),
            kv_cache: None,
            kv_reserved_by_tenant: Vec::new(),
        }
    }

    /// Starts a streamed generation.
    fn start_generation(
        &self,
        context: &RequestContext,
        request: GenerateRequest,
    ) -> Result<Generation, InferenceError> {
        let _ = (context, request);
        Err(self.unsupported("text generation"))
    }

    /// One vector per text, in order, and the tokens embedded.
    fn embed(
        &self,
        context: &RequestContext,
        texts: Vec<String>,
    ) -> Result<Embeddings, InferenceError> {
        let _ = (context, texts);
        Err(self.unsupported("embeddings"))
    }

    fn run_tensor(
        &self,
        context: &RequestContext,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, InferenceError> {
        let _ = (context, inputs);
        Err(self.unsupported("tensor inputs"))
    }

    /// Whether [`ModelService::run_tensor`] on `inputs` is quick enough
    /// (tens of microseconds) to run on the caller's own thread rather than
    /// be handed to a worker, which would cost more than the call.
    fn runs_quickly(&self, inputs: &[NamedTensor]) -> bool {
        let _ = inputs;
        false
    }

    /// The error for an operation this model does not support.
    fn unsupported(&self, operation: &'static str) -> InferenceError {
        InferenceError::Unsupported {
            model: self.descriptor().name.clone(),
            operation,
        }
    }
}
