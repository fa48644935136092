//! Requests and results of inference calls, independent of any engine.

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// Raw text, or chat messages rendered with the model's chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// How tokens are chosen. A temperature of 0 means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub max_tokens: u32,
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 1.0 disables the penalty.
    pub repeat_penalty: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// What the generated text must be, if anything (see [`crate::structured`]).
    pub constraint: Option<Constraint>,
}

/// A shape the generated text is held to, token by token: only tokens
/// that keep it a prefix of a valid answer may be drawn, and the generation
/// ends once the answer is complete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// One JSON value valid against this JSON Schema (a JSON document).
    JsonSchema(String),
    /// Text the regular expression matches in full.
    Regex(String),
    /// A sentence of this Lark-like grammar (llguidance's dialect, which may
    /// embed JSON Schemas with `%json { ... }`).
    Grammar(String),
}

impl Constraint {
    /// What kind of constraint it is, as errors name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) => "JSON Schema",
            Constraint::Regex(_) => "regular expression",
            Constraint::Grammar(_) => "grammar",
        }
    }

    /// The schema, expression or grammar text.
    pub fn source(&self) -> &str {
        match self {
            Constraint::JsonSchema(s) | Constraint::Regex(s) | Constraint::Grammar(s) => s,
        }
    }
}

impl Default for Sampling {
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

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: Prompt,
    pub sampling: Sampling,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token or stop sequence.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// Cancelled by the requester or its deadline.
    Cancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// Element type of tensor data (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Bf16,
    I32,
    I64,
    U8,
}

impl TensorType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TensorType::F32 | TensorType::I32 => 4,
            TensorType::F16 | TensorType::Bf16 => 2,
            TensorType::I64 => 8,
            TensorType::U8 => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<u32>,
    pub element_type: TensorType,
    pub data: Vec<u8>,
}

impl NamedTensor {
    /// Elements its shape holds (saturating).
    pub fn elements(&self) -> usize {
        self.shape
            .iter()
            .fold(1usize, |n, &d| n.saturating_mul(d as usize))
    }
}

/// Longest generation one request may ask for.
/// Stops: a single request holding a sequence slot and its cache indefinitely.
pub const MAX_GENERATION_TOKENS: u32 = 8_192;

/// Stop sequences per request, and bytes per stop sequence.
pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_STOP_SEQUENCE_BYTES: usize = 256;

/// Bytes of a constraint's schema, expression or grammar.
/// Stops: a request making the host compile (and cache) a huge grammar.
pub const MAX_CONSTRAINT_BYTES: usize = 64 * 1024;

impl Sampling {
    /// Checks that every value is in range, naming the first that is not.
    pub fn validate(&self) -> Result<(), crate::InferenceError> {
        let invalid = |what: String| Err(crate::InferenceError::InvalidInput(what));
        if self.max_tokens == 0 || self.max_tokens > MAX_GENERATION_TOKENS {
            return invalid(format!(
                "max-tokens {} is outside 1..={MAX_GENERATION_TOKENS}",
                self.max_tokens
            ));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return invalid(format!(
                "temperature {} must be finite and >= 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid(format!("top-p {} is outside (0, 1]", self.top_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return invalid(format!(
                "repeat-penalty {} must be finite and > 0",
                self.repeat_penalty
            ));
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return invalid(format!(
                "{} stop sequences; the limit is {MAX_STOP_SEQUENCES}",
                self.stop.len()
            ));
        }
        if let Some(stop) = self
            .stop
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_STOP_SEQUENCE_BYTES)
        {
            return invalid(format!(
                "stop sequence {stop:?} must be 1..={MAX_STOP_SEQUENCE_BYTES} bytes"
            ));
        }
        if let Some(constraint) = &self.constraint {
            let bytes = constraint.source().len();
            if bytes == 0 || bytes > MAX_CONSTRAINT_BYTES {
                return invalid(format!(
                    "the {} is {bytes} bytes; it must be 1..={MAX_CONSTRAINT_BYTES}",
                    constraint.kind()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_validation_names_the_bad_value() {
        assert!(Sampling::default().validate().is_ok());
        let cases = [
            (
                Sampling {
                    max_tokens: 0,
                    ..Sampling::default()
                },
                "max-tokens",
            ),
            (
                Sampling {
                    temperature: f32::NAN,
                    ..Sampling::default()
                },
                "temperature",
            ),
            (
                Sampling {
                    top_p: 0.0,
                    ..Sampling::default()
                },
                "top-p",
            ),
            (
                Sampling {
                    repeat_penalty: -1.0,
                    ..Sampling::default()
                },
                "repeat-penalty",
            ),
            (
                Sampling {
                    stop: vec![String::new()],
                    ..Sampling::default()
                },
                "stop",
            ),
            (
                Sampling {
                    constraint: Some(Constraint::Regex("a".repeat(MAX_CONSTRAINT_BYTES + 1))),
                    ..Sampling::default()
                },
                "regular expression",
            ),
        ];
        for (sampling, needle) in cases {
            let err = sampling.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
