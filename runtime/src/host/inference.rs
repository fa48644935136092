//! `sovra:agent/inference`: models by name, on the tenant's allowlist only.
//!
//! The order of checks is fixed: the tenant's grant first (a model not on
//! the allowlist is `access-denied` whether or not it exists, so agents cannot
//! probe the node's models), then the operator's registry (`not-found` when no
//! such model is registered here), then the request itself.

use std::sync::Arc;

use sovra_gpu::{self as gpu, ModelService, RequestContext};
use wasmtime::component::Resource;

use crate::bindings::GuestError;
use crate::bindings::sovra::agent::inference::{
    Completion, Constraint, FinishReason, GenerateRequest, GenerationEvent, Host, HostGeneration,
    Message, ModelInfo, ModelKind, NamedTensor, Prompt, Role, Sampling, TensorSpec, TensorType,
    Usage,
};
use crate::budget::BudgetedGeneration;
use crate::host::HostError;
use crate::invocation::LiveEvent;
use crate::limits::{MAX_EMBED_TEXTS, MAX_TENSOR_RANK};
use crate::sandbox::Sandbox;

/// A streamed generation owned by a guest through a resource handle.
#[derive(Debug)]
pub struct GenerationStream {
    model: String,
    generation: BudgetedGeneration,
    finished: Option<(FinishReason, Usage)>,
}

impl Sandbox {
    pub(crate) fn request_context(&self) -> RequestContext {
        RequestContext {
            tenant: self.identity.tenant.as_str().to_owned(),
            deadline: Some(self.inference.deadline),
        }
    }

    /// Counts an embedding of `tokens` tokens with `model` in the
    /// invocation's usage (as prompt tokens: nothing is generated).
    pub(crate) fn count_embedding(&mut self, model: String, tokens: u32) {
        let usage = gpu::Usage {
            prompt_tokens: tokens,
            generated_tokens: 0,
        };
        if let Some(budget) = &self.inference.budget {
            // Counted whatever the quota says: the work is done.
            let _ = budget.charge(&model, u64::from(tokens));
        }
        self.meters
            .push((model, Arc::new(gpu::UsageMeter::counted(usage))));
    }

    /// Refuses work on `model` once the tenant is over a token quota on it.
    fn check_budget(&mut self, model: &str) -> Result<(), HostError> {
        let Some(budget) = &self.inference.budget else {
            return Ok(());
        };
        budget.check(model).map_err(|why| {
            let denial = format!("quota-exceeded: {why}");
            self.denials.push(denial.clone());
            GuestError::LimitExceeded(denial).into()
        })
    }

    /// Records in the invocation's denials that `generation` was stopped
    /// for the tenant's quota, if it was.
    fn note_quota_stop(&mut self, generation: &BudgetedGeneration) {
        if let Some(why) = generation.quota_exceeded() {
            self.denials.push(format!("quota-exceeded: {why}"));
        }
    }

    /// The model `name`, if the tenant allowed it and the node has it.
    pub(crate) fn allowed_model(&self, name: &str) -> Result<Arc<dyn ModelService>, HostError> {
        if !self.inference.grants.allows_model(name) {
            return Err(HostError::ModelNotAllowed(name.to_owned()));
        }
        let tenant = self.identity.tenant.as_str();
        Ok(self.inference.registry.lookup(tenant, name)?)
    }

    fn start(&mut self, request: GenerateRequest) -> Result<BudgetedGeneration, HostError> {
        let service = self.allowed_model(&request.model)?;
        self.check_budget(&request.model)?;
        let request = to_engine_request(request);
        request.sampling.validate()?;
        let context = self.request_context();
        let model = request.model.clone();
        let generation = service.start_generation(&context, request)?;
        // Counted from here whatever happens to the generation.
        self.meters.push((model.clone(), generation.meter()));
        Ok(BudgetedGeneration::new(
            generation,
            self.inference.budget.clone(),
            model,
        ))
    }
}

impl Host for Sandbox {
    async fn list_models(&mut self) -> wasmtime::Result<Vec<ModelInfo>> {
        self.charge_host_call()?;
        let tenant = self.identity.tenant.as_str();
        Ok(self
            .inference
            .registry
            .models_for_tenant(tenant)
            .into_iter()
            .filter(|model| self.inference.grants.allows_model(&model.name))
            .map(|model| ModelInfo {
                name: model.name,
                kind: match model.kind {
                    gpu::ModelKind::TextGeneration => ModelKind::TextGeneration,
                    gpu::ModelKind::Embedding => ModelKind::Embedding,
                    gpu::ModelKind::Tensor => ModelKind::Tensor,
                },
                context_length: model.context_length,
                embedding_length: model.embedding_length,
                inputs: model.inputs.into_iter().map(to_guest_spec).collect(),
                outputs: model.outputs.into_iter().map(to_guest_spec).collect(),
            })
            .collect())
    }

    async fn generate(&mut self, request: GenerateRequest) -> Result<Completion, HostError> {
        self.charge_host_call()?;
        let model = request.model.clone();
        let mut generation = self.start(request)?;
        let mut text = String::new();
        let turns = Arc::clone(&self.turns);
        loop {
            match turns.away(generation.next()).await {
                Some(gpu::GenerationEvent::Text(piece)) => {
                    self.emit(|| LiveEvent::Token {
                        model: model.clone(),
                        text: piece.clone(),
                    });
                    text.push_str(&piece);
                }
                Some(gpu::GenerationEvent::Finished { reason, usage }) => {
                    self.note_quota_stop(&generation);
                    return Ok(Completion {
                        text,
                        finish_reason: to_guest_reason(reason),
                        usage: to_guest_usage(usage),
                    });
                }
                Some(gpu::GenerationEvent::Failed(error)) => return Err(error.into()),
                None => return Err(engine_gone()),
            }
        }
    }

    async fn start_generation(
        &mut self,
        request: GenerateRequest,
    ) -> Result<Resource<GenerationStream>, HostError> {
        self.charge_host_call()?;
        let model = request.model.clone();
        let generation = self.start(request)?;
        let stream = GenerationStream {
            model,
            generation,
            finished: None,
        };
        self.table.push(stream).map_err(|_| {
            GuestError::LimitExceeded("too many open resources in this invocation".into()).into()
        })
    }

    async fn embed(
        &mut self,
        model: String,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, HostError> {
        self.charge_host_call()?;
        if texts.len() > MAX_EMBED_TEXTS {
            return Err(GuestError::LimitExceeded(format!(
                "{} texts in one call; the limit is {MAX_EMBED_TEXTS}",
                texts.len()
            ))
            .into());
        }
        let service = self.allowed_model(&model)?;
        let context = self.request_context();
        let embedded = self
            .blocking(move || service.embed(&context, texts))
            .await??;
        self.count_embedding(model, embedded.tokens);
        Ok(embedded.vectors)
    }

    async fn run_tensor(
        &mut self,
        model: String,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, HostError> {
        self.charge_host_call()?;
        let service = self.allowed_model(&model)?;
        let inputs = inputs
            .into_iter()
            .map(to_engine_tensor)
            .collect::<Result<Vec<_>, _>>()
            .map_err(GuestError::InvalidInput)?;
        let outputs = self.run_tensor_model(service, inputs).await?;
        Ok(outputs.into_iter().map(to_guest_tensor).collect())
    }
}

/// A tensor model's run: finished on the caller's thread, or to be awaited
/// on a worker.
enum TensorRun<W> {
    Done(Result<Vec<gpu::NamedTensor>, gpu::InferenceError>),
    OnWorker(W),
}

impl Sandbox {
    /// Runs a tensor model on checked inputs under the invocation's deadline:
    /// the one path of `run-tensor` and of `wasi:nn`'s `compute`.
    pub(crate) fn run_tensor_model(
        &self,
        service: Arc<dyn ModelService>,
        inputs: Vec<gpu::NamedTensor>,
    ) -> impl Future<Output = Result<Vec<gpu::NamedTensor>, HostError>> + Send + 'static {
        let context = self.request_context();
        // A small model's run is quicker than handing it to a worker: it runs
        // here, now; a larger one runs on a worker when awaited.
        let run = if service.runs_quickly(&inputs) {
            TensorRun::Done(service.run_tensor(&context, inputs))
        } else {
            TensorRun::OnWorker(self.blocking(move || service.run_tensor(&context, inputs)))
        };
        async move {
            match run {
                TensorRun::Done(outputs) => Ok(outputs?),
                TensorRun::OnWorker(worker) => Ok(worker.await??),
            }
        }
    }
}

impl HostGeneration for Sandbox {
    async fn next(
        &mut self,
        handle: Resource<GenerationStream>,
    ) -> Result<GenerationEvent, HostError> {
        self.charge_host_call()?;
        let turns = Arc::clone(&self.turns);
        let stream = self.table.get_mut(&handle)?;
        if let Some(finished) = stream.finished {
            return Ok(GenerationEvent::Finished(finished));
        }
        let event = turns.away(stream.generation.next()).await;
        let failed = |stream: &mut GenerationStream| {
            stream.finished = Some((
                FinishReason::Cancelled,
                to_guest_usage(gpu::Usage::default()),
            ));
        };
        match event {
            Some(gpu::GenerationEvent::Text(text)) => {
                let model = stream.model.clone();
                self.emit(|| LiveEvent::Token {
                    model,
                    text: text.clone(),
                });
                Ok(GenerationEvent::Text(text))
            }
            Some(gpu::GenerationEvent::Finished { reason, usage }) => {
                let finished = (to_guest_reason(reason), to_guest_usage(usage));
                stream.finished = Some(finished);
                let why = stream.generation.quota_exceeded().map(str::to_owned);
                if let Some(why) = why {
                    self.denials.push(format!("quota-exceeded: {why}"));
                }
                Ok(GenerationEvent::Finished(finished))
            }
            Some(gpu::GenerationEvent::Failed(error)) => {
                failed(stream);
                Err(error.into())
            }
            None => {
                failed(stream);
                Err(engine_gone())
            }
        }
    }

    async fn cancel(&mut self, handle: Resource<GenerationStream>) -> wasmtime::Result<()> {
        self.charge_host_call()?;
        let stream = self.table.get_mut(&handle)?;
        stream.generation.cancel();
        if stream.finished.is_none() {
            stream.finished = Some((
                FinishReason::Cancelled,
                to_guest_usage(gpu::Usage::default()),
            ));
        }
        Ok(())
    }

    async fn drop(&mut self, handle: Resource<GenerationStream>) -> wasmtime::Result<()> {
        // Dropping the engine handle cancels the sequence and frees its cache.
        self.table.delete(handle)?;
        Ok(())
    }
}

fn engine_gone() -> HostError {
    GuestError::Unavailable("the inference engine stopped this generation".into()).into()
}

fn to_engine_request(request: GenerateRequest) -> gpu::GenerateRequest {
    let prompt = match request.prompt {
        Prompt::Text(text) => gpu::Prompt::Text(text),
        Prompt::Chat(messages) => gpu::Prompt::Chat(
            messages
                .into_iter()
                .map(|Message { role, content }| gpu::ChatMessage {
                    role: match role {
                        Role::System => gpu::Role::System,
                        Role::User => gpu::Role::User,
                        Role::Assistant => gpu::Role::Assistant,
                    },
                    content,
                })
                .collect(),
        ),
    };
    let Sampling {
        max_tokens,
        temperature,
        top_k,
        top_p,
        repeat_penalty,
        seed,
        stop,
        constraint,
    } = request.sampling;
    gpu::GenerateRequest {
        model: request.model,
        prompt,
        sampling: gpu::Sampling {
            max_tokens,
            temperature,
            top_k,
            top_p,
            repeat_penalty,
            seed,
            stop,
            constraint: constraint.map(|constraint| match constraint {
                Constraint::JsonSchema(schema) => gpu::Constraint::JsonSchema(schema),
                Constraint::Regex(regex) => gpu::Constraint::Regex(regex),
                Constraint::Grammar(grammar) => gpu::Constraint::Grammar(grammar),
            }),
        },
    }
}

fn to_guest_reason(reason: gpu::FinishReason) -> FinishReason {
    match reason {
        gpu::FinishReason::Stop => FinishReason::Stop,
        gpu::FinishReason::Length => FinishReason::Length,
        gpu::FinishReason::Cancelled => FinishReason::Cancelled,
    }
}

fn to_guest_usage(usage: gpu::Usage) -> Usage {
    Usage {
        prompt_tokens: usage.prompt_tokens,
        generated_tokens: usage.generated_tokens,
    }
}

fn to_engine_tensor(tensor: NamedTensor) -> Result<gpu::NamedTensor, String> {
    let element_type = match tensor.element_type {
        TensorType::Float32 => gpu::TensorType::F32,
        TensorType::Float16 => gpu::TensorType::F16,
        TensorType::Bfloat16 => gpu::TensorType::Bf16,
        TensorType::Int32 => gpu::TensorType::I32,
        TensorType::Int64 => gpu::TensorType::I64,
        TensorType::Uint8 => gpu::TensorType::U8,
    };
    checked_tensor(gpu::NamedTensor {
        name: tensor.name,
        shape: tensor.shape,
        element_type,
        data: tensor.data,
    })
}

/// `tensor`, if its rank is within [`MAX_TENSOR_RANK`] and its data is
/// exactly what its shape and element type need.
pub(crate) fn checked_tensor(tensor: gpu::NamedTensor) -> Result<gpu::NamedTensor, String> {
    let element_type = tensor.element_type;
    if tensor.shape.len() > MAX_TENSOR_RANK {
        return Err(format!(
            "tensor `{}` has {} dimensions; the limit is {MAX_TENSOR_RANK}",
            tensor.name,
            tensor.shape.len()
        ));
    }
    let expected = tensor
        .shape
        .iter()
        .try_fold(element_type.size() as u64, |acc, &dim| {
            acc.checked_mul(u64::from(dim))
        });
    if expected != Some(tensor.data.len() as u64) {
        return Err(format!(
            "tensor `{}` has {} bytes of data but its shape {:?} needs {}",
            tensor.name,
            tensor.data.len(),
            tensor.shape,
            expected.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string())
        ));
    }
    Ok(tensor)
}

fn to_guest_tensor(tensor: gpu::NamedTensor) -> NamedTensor {
    NamedTensor {
        name: tensor.name,
        shape: tensor.shape,
        element_type: to_guest_type(tensor.element_type),
        data: tensor.data,
    }
}

fn to_guest_type(element_type: gpu::TensorType) -> TensorType {
    match element_type {
        gpu::TensorType::F32 => TensorType::Float32,
        gpu::TensorType::F16 => TensorType::Float16,
        gpu::TensorType::Bf16 => TensorType::Bfloat16,
        gpu::TensorType::I32 => TensorType::Int32,
        gpu::TensorType::I64 => TensorType::Int64,
        gpu::TensorType::U8 => TensorType::Uint8,
    }
}

/// A tensor model's input or output as guests see it (0 for a dimension
/// of any size).
fn to_guest_spec(spec: gpu::TensorSpec) -> TensorSpec {
    TensorSpec {
        name: spec.name,
        element_type: to_guest_type(spec.element_type),
        shape: spec.shape.into_iter().map(|d| d.unwrap_or(0)).collect(),
    }
}
