//! Inference on models the tenant allowed, by name.
//!
//! ```rust,ignore
//! use sovra_sdk::inference::{self, GenerateOptions};
//! let answer = inference::chat("smollm2")
//!     .system("You are terse.")
//!     .user("What is Wasm?")
//!     .max_tokens(64)
//!     .generate()?;
//! // An answer that parses: held to a JSON Schema token by token.
//! let person = inference::chat("smollm2")
//!     .user("Tell me about Ann, 31.")
//!     .json_schema(r#"{"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}"#)
//!     .generate()?;
//! ```

use crate::Error;
use crate::bindings::sovra::agent::inference as wit;

pub use wit::{
    Completion, Constraint, FinishReason, Generation, GenerationEvent, Message, ModelInfo,
    ModelKind, NamedTensor, Prompt, Role, Sampling, TensorSpec, TensorType, Usage,
};

/// Models this agent may use.
pub fn list_models() -> Vec<ModelInfo> {
    wit::list_models()
}

/// One vector per text, in order.
pub fn embed(model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    wit::embed(model, texts)
}

/// Runs a tensor model.
pub fn run_tensor(model: &str, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, Error> {
    wit::run_tensor(model, inputs)
}

impl NamedTensor {
    /// A `float32` tensor of `shape` holding `values` (row-major).
    pub fn from_f32(name: impl Into<String>, shape: &[u32], values: &[f32]) -> Self {
        NamedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            element_type: TensorType::Float32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Its values, if it is a `float32` tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, Error> {
        if self.element_type != TensorType::Float32 || !self.data.len().is_multiple_of(4) {
            return Err(Error::InvalidInput(format!(
                "tensor `{}` is not float32",
                self.name
            )));
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

impl Default for Sampling {
    /// Greedy decoding of up to 256 tokens, no penalties, no stop strings.
    fn default() -> Self {
        Sampling {
            max_tokens: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            constraint: None,
        }
    }
}

/// Builds a generation request with sensible defaults ([`Sampling::default`]).
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    model: String,
    prompt: Prompt,
    sampling: Sampling,
}

/// A request for a raw-text completion.
pub fn complete(model: &str, text: &str) -> RequestBuilder {
    RequestBuilder {
        model: model.to_owned(),
        prompt: Prompt::Text(text.to_owned()),
        sampling: Sampling::default(),
    }
}

/// A chat request; add messages with [`RequestBuilder::system`],
/// [`RequestBuilder::user`] and [`RequestBuilder::assistant`].
pub fn chat(model: &str) -> RequestBuilder {
    RequestBuilder {
        model: model.to_owned(),
        prompt: Prompt::Chat(Vec::new()),
        sampling: Sampling::default(),
    }
}

impl RequestBuilder {
    pub fn message(mut self, role: Role, content: impl Into<String>) -> Self {
        let message = Message {
            role,
            content: content.into(),
        };
        match &mut self.prompt {
            Prompt::Chat(messages) => messages.push(message),
            Prompt::Text(_) => self.prompt = Prompt::Chat(vec![message]),
        }
        self
    }

    pub fn system(self, content: impl Into<String>) -> Self {
        self.message(Role::System, content)
    }

    pub fn user(self, content: impl Into<String>) -> Self {
        self.message(Role::User, content)
    }

    pub fn assistant(self, content: impl Into<String>) -> Self {
        self.message(Role::Assistant, content)
    }

    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.sampling.max_tokens = max_tokens;
        self
    }

    pub fn temperature(mut self, temperature: f32) -> Self {
        self.sampling.temperature = temperature;
        self
    }

    pub fn top_k(mut self, top_k: u32) -> Self {
        self.sampling.top_k = top_k;
        self
    }

    pub fn top_p(mut self, top_p: f32) -> Self {
        self.sampling.top_p = top_p;
        self
    }

    pub fn repeat_penalty(mut self, penalty: f32) -> Self {
        self.sampling.repeat_penalty = penalty;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.sampling.seed = Some(seed);
        self
    }

    pub fn stop(mut self, stop: impl Into<String>) -> Self {
        self.sampling.stop.push(stop.into());
        self
    }

    /// Holds the answer to one JSON value valid against `schema` (a JSON
    /// Schema document): the text parses, whatever the model would say.
    pub fn json_schema(self, schema: impl Into<String>) -> Self {
        self.constraint(Constraint::JsonSchema(schema.into()))
    }

    /// Holds the answer to text `regex` matches in full.
    pub fn regex(self, regex: impl Into<String>) -> Self {
        self.constraint(Constraint::Regex(regex.into()))
    }

    /// Holds the answer to a sentence of `grammar` (Lark-like, as
    /// llguidance reads it).
    pub fn grammar(self, grammar: impl Into<String>) -> Self {
        self.constraint(Constraint::Grammar(grammar.into()))
    }

    pub fn constraint(mut self, constraint: Constraint) -> Self {
        self.sampling.constraint = Some(constraint);
        self
    }

    fn into_request(self) -> wit::GenerateRequest {
        wit::GenerateRequest {
            model: self.model,
            prompt: self.prompt,
            sampling: self.sampling,
        }
    }

    /// Generates the whole completion.
    pub fn generate(self) -> Result<Completion, Error> {
        wit::generate(&self.into_request())
    }

    /// Starts a streamed generation; read it with [`Generation::next`] or
    /// iterate over it with [`TextStream`].
    pub fn stream(self) -> Result<TextStream, Error> {
        Ok(TextStream {
            generation: wit::start_generation(&self.into_request())?,
            finished: None,
        })
    }
}

/// Iterates over the pieces of a streamed generation.
#[derive(Debug)]
pub struct TextStream {
    generation: Generation,
    finished: Option<(FinishReason, Usage)>,
}

impl TextStream {
    /// Why and after how many tokens the stream ended (once it has).
    pub fn finished(&self) -> Option<(FinishReason, Usage)> {
        self.finished
    }

    pub fn cancel(&self) {
        self.generation.cancel();
    }
}

impl Iterator for TextStream {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished.is_some() {
            return None;
        }
        match self.generation.next() {
            Ok(GenerationEvent::Text(text)) => Some(Ok(text)),
            Ok(GenerationEvent::Finished((reason, usage))) => {
                self.finished = Some((reason, usage));
                None
            }
            Err(error) => {
                self.finished = Some((
                    FinishReason::Cancelled,
                    Usage {
                        prompt_tokens: 0,
                        generated_tokens: 0,
                    },
                ));
                Some(Err(error))
            }
        }
    }
}
