//! `sovra:agent/inference`: models by name, on the tenant's allowlist only.
//!
//! The order of checks is fixed: the tenant's grant first (a model not on
//! the allowlist is `access-denied` whether or not it exists, so agents cannot
//! probe the node's models), then the operator's registry (`not-found` when no
//! such model is registered here), then the request itself.

use std::sync::Arc;

use sovra_gpu::{self as gpu, InferenceError, ModelService, RequestContext};
use wasmtime::component::Resource;

use crate::bindings::GuestError;
use crate::bindings::sovra::agent::inference::{
    Completion, FinishReason, GenerateRequest, GenerationEvent, Host, HostGeneration, Message,
    ModelInfo, ModelKind, NamedTensor, Prompt, Role, Sampling, TensorType, Usage,
};
use crate::invocation::LiveEvent;
use crate::limits::{MAX_EMBED_TEXTS, MAX_TENSOR_RANK};
use crate::sandbox::Sandbox;

type Reply<T> = wasmtime::Result<Result<T, GuestError>>;

/// A streamed generation owned by a guest through a resource handle.
#[derive(Debug)]
pub struct GenerationStream {
    model: String,
    generation: gpu::Generation,
    finished: Option<(FinishReason, Usage)>,
}

impl Sandbox {
    pub(crate) fn request_context(&self) -> RequestContext {
        RequestContext {
            tenant: self.identity.tenant.as_str().to_owned(),
            deadline: Some(self.inference.deadline),
        }
    }

    /// The model `name`, if the tenant allowed it and the node has it.
    pub(crate) fn allowed_model(
        &mut self,
        name: &str,
    ) -> Result<Arc<dyn ModelService>, GuestError> {
        if !self.inference.grants.allows_model(name) {
            self.denials.push(format!("model: {name}"));
            return Err(GuestError::AccessDenied(format!(
                "model `{name}` is not on this tenant's allowlist"
            )));
        }
        let tenant = self.identity.tenant.as_str().to_owned();
        let lookup = self.inference.registry.lookup(&tenant, name);
        lookup.map_err(|e| self.inference_error(e))
    }

    pub(crate) fn inference_error(&mut self, error: InferenceError) -> GuestError {
        let message = error.to_string();
        match error {
            InferenceError::NotFound { .. } => GuestError::NotFound(message),
            InferenceError::AccessDenied { model } => {
                self.denials.push(format!("model: {model}"));
                GuestError::AccessDenied(message)
            }
            InferenceError::Unsupported { .. } | InferenceError::InvalidInput(_) => {
                GuestError::InvalidInput(message)
            }
            InferenceError::LimitExceeded(_) => GuestError::LimitExceeded(message),
            InferenceError::Unavailable(_) => {
                self.host_unavailable = true;
                GuestError::Unavailable(message)
            }
            InferenceError::Internal(_) => {
                tracing::error!(error = %message, "inference engine failure");
                GuestError::Internal(message)
            }
        }
    }

    fn start(&mut self, request: GenerateRequest) -> Result<gpu::Generation, GuestError> {
        let service = self.allowed_model(&request.model)?;
        let request = to_engine_request(request);
        request
            .sampling
            .validate()
            .map_err(|e| self.inference_error(e))?;
        let context = self.request_context();
        let model = request.model.clone();
        let generation = service
            .start_generation(&context, request)
            .map_err(|e| self.inference_error(e))?;
        // Counted from here whatever happens to the generation.
        self.meters.push((model, generation.meter()));
        Ok(generation)
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
            })
            .collect())
    }

    async fn generate(&mut self, request: GenerateRequest) -> Reply<Completion> {
        self.charge_host_call()?;
        let model = request.model.clone();
        let mut generation = match self.start(request) {
            Ok(generation) => generation,
            Err(error) => return Ok(Err(error)),
        };
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
                    return Ok(Ok(Completion {
                        text,
                        finish_reason: to_guest_reason(reason),
                        usage: to_guest_usage(usage),
                    }));
                }
                Some(gpu::GenerationEvent::Failed(error)) => {
                    return Ok(Err(self.inference_error(error)));
                }
                None => return Ok(Err(engine_gone())),
            }
        }
    }

    async fn start_generation(
        &mut self,
        request: GenerateRequest,
    ) -> Reply<Resource<GenerationStream>> {
        self.charge_host_call()?;
        let model = request.model.clone();
        let generation = match self.start(request) {
            Ok(generation) => generation,
            Err(error) => return Ok(Err(error)),
        };
        let stream = GenerationStream {
            model,
            generation,
            finished: None,
        };
        match self.table.push(stream) {
            Ok(handle) => Ok(Ok(handle)),
            Err(_) => Ok(Err(GuestError::LimitExceeded(
                "too many open resources in this invocation".into(),
            ))),
        }
    }

    async fn embed(&mut self, model: String, texts: Vec<String>) -> Reply<Vec<Vec<f32>>> {
        self.charge_host_call()?;
        if texts.len() > MAX_EMBED_TEXTS {
            return Ok(Err(GuestError::LimitExceeded(format!(
                "{} texts in one call; the limit is {MAX_EMBED_TEXTS}",
                texts.len()
            ))));
        }
        let service = match self.allowed_model(&model) {
            Ok(service) => service,
            Err(error) => return Ok(Err(error)),
        };
        let context = self.request_context();
        let result = self
            .blocking(move || service.embed(&context, texts))
            .await?;
        Ok(result.map_err(|e| self.inference_error(e)))
    }

    async fn run_tensor(
        &mut self,
        model: String,
        inputs: Vec<NamedTensor>,
    ) -> Reply<Vec<NamedTensor>> {
        self.charge_host_call()?;
        let service = match self.allowed_model(&model) {
            Ok(service) => service,
            Err(error) => return Ok(Err(error)),
        };
        let inputs = match inputs
            .into_iter()
            .map(to_engine_tensor)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(inputs) => inputs,
            Err(error) => return Ok(Err(GuestError::InvalidInput(error))),
        };
        let context = self.request_context();
        let result = self
            .blocking(move || service.run_tensor(&context, inputs))
            .await?;
        Ok(result
            .map(|outputs| outputs.into_iter().map(to_guest_tensor).collect())
            .map_err(|e| self.inference_error(e)))
    }
}

impl HostGeneration for Sandbox {
    async fn next(&mut self, handle: Resource<GenerationStream>) -> Reply<GenerationEvent> {
        self.charge_host_call()?;
        let turns = Arc::clone(&self.turns);
        let stream = self.table.get_mut(&handle)?;
        if let Some(finished) = stream.finished {
            return Ok(Ok(GenerationEvent::Finished(finished)));
        }
        let event = turns.away(stream.generation.next()).await;
        match event {
            Some(gpu::GenerationEvent::Text(text)) => {
                let model = stream.model.clone();
                self.emit(|| LiveEvent::Token {
                    model,
                    text: text.clone(),
                });
                Ok(Ok(GenerationEvent::Text(text)))
            }
            Some(gpu::GenerationEvent::Finished { reason, usage }) => {
                let finished = (to_guest_reason(reason), to_guest_usage(usage));
                stream.finished = Some(finished);
                Ok(Ok(GenerationEvent::Finished(finished)))
            }
            Some(gpu::GenerationEvent::Failed(error)) => {
                stream.finished = Some((
                    FinishReason::Cancelled,
                    to_guest_usage(gpu::Usage::default()),
                ));
                Ok(Err(self.inference_error(error)))
            }
            None => {
                stream.finished = Some((
                    FinishReason::Cancelled,
                    to_guest_usage(gpu::Usage::default()),
                ));
                Ok(Err(engine_gone()))
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

fn engine_gone() -> GuestError {
    GuestError::Unavailable("the inference engine stopped this generation".into())
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
    Ok(gpu::NamedTensor {
        name: tensor.name,
        shape: tensor.shape,
        element_type,
        data: tensor.data,
    })
}

fn to_guest_tensor(tensor: gpu::NamedTensor) -> NamedTensor {
    NamedTensor {
        name: tensor.name,
        shape: tensor.shape,
        element_type: match tensor.element_type {
            gpu::TensorType::F32 => TensorType::Float32,
            gpu::TensorType::F16 => TensorType::Float16,
            gpu::TensorType::Bf16 => TensorType::Bfloat16,
            gpu::TensorType::I32 => TensorType::Int32,
            gpu::TensorType::I64 => TensorType::Int64,
            gpu::TensorType::U8 => TensorType::Uint8,
        },
        data: tensor.data,
    }
}
