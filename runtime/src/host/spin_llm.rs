//! Fermyon Spin's LLM interface (`fermyon:spin/llm@2.0.0`, and the
//! unversioned one Spin 1 had) for guests written for Spin, over sovra's
//! engine and the tenant's allowlist.
//!
//! `infer` is a generation on a raw text prompt (as Spin feeds it), with
//! Spin's defaults when the guest gives no parameters; `generate-embeddings`
//! is `embed`. Both go through `sovra:agent/inference` itself, so grants,
//! quotas, deadlines, usage and the audit are the same. Spin's errors are
//! coarser than sovra's: a model off the allowlist or not on the node is
//! `model-not-supported` (as Spin answers for models it does not serve),
//! invalid arguments are `invalid-input`, anything else `runtime-error`;
//! the denial is audited as for any other call. Spin's
//! `repeat-penalty-last-n-token-count` has no equivalent here and is ignored.

use crate::bindings::GuestError;
use crate::bindings::sovra::agent::inference::{
    GenerateRequest, Host as SovraInference, Prompt, Sampling,
};
use crate::host::HostError;
use crate::sandbox::Sandbox;

/// Spin's default inferencing parameters (its SDK's and its host's).
const SPIN_DEFAULT_MAX_TOKENS: u32 = 100;
const SPIN_DEFAULT_REPEAT_PENALTY: f32 = 1.1;
const SPIN_DEFAULT_TEMPERATURE: f32 = 0.8;
const SPIN_DEFAULT_TOP_K: u32 = 40;
const SPIN_DEFAULT_TOP_P: f32 = 0.9;

/// The parameters Spin's `infer` takes, whichever version.
struct SpinParams {
    max_tokens: u32,
    repeat_penalty: f32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
}

impl Default for SpinParams {
    fn default() -> Self {
        SpinParams {
            max_tokens: SPIN_DEFAULT_MAX_TOKENS,
            repeat_penalty: SPIN_DEFAULT_REPEAT_PENALTY,
            temperature: SPIN_DEFAULT_TEMPERATURE,
            top_k: SPIN_DEFAULT_TOP_K,
            top_p: SPIN_DEFAULT_TOP_P,
        }
    }
}

/// Spin's error variants, whichever version.
enum SpinFailure {
    ModelNotSupported,
    RuntimeError(String),
    InvalidInput(String),
}

/// A finished `infer`.
struct Inferred {
    text: String,
    prompt_tokens: u32,
    generated_tokens: u32,
}

impl Sandbox {
    /// What the guest sees of `error` through Spin's interface (traps stay
    /// traps; denials are audited by the conversion).
    fn spin_failure(&mut self, error: HostError) -> wasmtime::Result<SpinFailure> {
        Ok(match crate::host::error::convert(self, error)? {
            GuestError::AccessDenied(_) | GuestError::NotFound(_) => SpinFailure::ModelNotSupported,
            GuestError::InvalidInput(message) => SpinFailure::InvalidInput(message),
            other => {
                let error = crate::outcome::agent_error(other);
                SpinFailure::RuntimeError(format!("{}: {}", error.kind.as_str(), error.message))
            }
        })
    }

    async fn spin_infer(
        &mut self,
        model: String,
        prompt: String,
        params: Option<SpinParams>,
    ) -> wasmtime::Result<Result<Inferred, SpinFailure>> {
        let params = params.unwrap_or_default();
        let request = GenerateRequest {
            model,
            prompt: Prompt::Text(prompt),
            sampling: Sampling {
                max_tokens: params.max_tokens,
                temperature: params.temperature,
                top_k: params.top_k,
                top_p: params.top_p,
                repeat_penalty: params.repeat_penalty,
                seed: None,
                stop: Vec::new(),
                constraint: None,
            },
        };
        match SovraInference::generate(self, request).await {
            Ok(completion) => Ok(Ok(Inferred {
                text: completion.text,
                prompt_tokens: completion.usage.prompt_tokens,
                generated_tokens: completion.usage.generated_tokens,
            })),
            Err(error) => Ok(Err(self.spin_failure(error)?)),
        }
    }

    async fn spin_embed(
        &mut self,
        model: String,
        texts: Vec<String>,
    ) -> wasmtime::Result<Result<(Vec<Vec<f32>>, u32), SpinFailure>> {
        match SovraInference::embed(self, model, texts).await {
            Ok(vectors) => {
                let tokens = self
                    .meters
                    .last()
                    .map_or(0, |(_, meter)| meter.usage().prompt_tokens);
                Ok(Ok((vectors, tokens)))
            }
            Err(error) => Ok(Err(self.spin_failure(error)?)),
        }
    }
}

/// Implements one version of Spin's `llm` interface over the shared core.
macro_rules! spin_llm_host {
    ($llm:path) => {
        const _: () = {
            use $llm as llm;

            impl llm::Host for Sandbox {
                async fn infer(
                    &mut self,
                    model: String,
                    prompt: String,
                    params: Option<llm::InferencingParams>,
                ) -> wasmtime::Result<Result<llm::InferencingResult, llm::Error>> {
                    let params = params.map(|p| SpinParams {
                        max_tokens: p.max_tokens,
                        repeat_penalty: p.repeat_penalty,
                        temperature: p.temperature,
                        top_k: p.top_k,
                        top_p: p.top_p,
                    });
                    Ok(self
                        .spin_infer(model, prompt, params)
                        .await?
                        .map(|inferred| llm::InferencingResult {
                            text: inferred.text,
                            usage: llm::InferencingUsage {
                                prompt_token_count: inferred.prompt_tokens,
                                generated_token_count: inferred.generated_tokens,
                            },
                        })
                        .map_err(to_error))
                }

                async fn generate_embeddings(
                    &mut self,
                    model: String,
                    text: Vec<String>,
                ) -> wasmtime::Result<Result<llm::EmbeddingsResult, llm::Error>> {
                    Ok(self
                        .spin_embed(model, text)
                        .await?
                        .map(|(embeddings, tokens)| llm::EmbeddingsResult {
                            embeddings,
                            usage: llm::EmbeddingsUsage {
                                prompt_token_count: tokens,
                            },
                        })
                        .map_err(to_error))
                }
            }

            fn to_error(failure: SpinFailure) -> llm::Error {
                match failure {
                    SpinFailure::ModelNotSupported => llm::Error::ModelNotSupported,
                    SpinFailure::RuntimeError(message) => llm::Error::RuntimeError(message),
                    SpinFailure::InvalidInput(message) => llm::Error::InvalidInput(message),
                }
            }
        };
    };
}

spin_llm_host!(crate::bindings::spin::fermyon::spin::llm);
spin_llm_host!(crate::bindings::spin::fermyon::spin2_0_0::llm);
