//! The body of a chat or text completion request, as OpenAI documents it,
//! turned into the engine's request: messages (tool results and earlier
//! tool calls included), sampling, `response_format` as a JSON Schema
//! constraint, and `tools` / `tool_choice` as a constraint to text or one
//! valid call. What sovra does not serve is refused by name.

use serde::Deserialize;
use serde_json::{Value, json};
use sovra_gpu::structured::tool_calls::{self, ToolChoice, ToolSpec};
use sovra_gpu::{ChatMessage, Constraint, GenerateRequest, Prompt, Role, Sampling};

use super::super::ApiError;

/// Tokens generated when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 256;

/// One string or several, as OpenAI's `stop` and `input` take them.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    role: String,
    /// Null in an assistant message that only calls tools.
    #[serde(default)]
    content: Option<String>,
    /// Accepted and not used (a participant's name).
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    /// The calls an earlier assistant answer made.
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    /// Which call a `tool` message answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// A call in an assistant message, as the API returned it (its `id` and
/// `type` are not needed to write it back).
#[derive(Deserialize)]
struct ToolCall {
    function: CalledFunction,
}

#[derive(Deserialize)]
struct CalledFunction {
    name: String,
    /// The arguments as JSON text.
    arguments: String,
}

/// A tool the request offers the model.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tool {
    #[serde(rename = "type")]
    kind: String,
    function: FunctionSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    /// Arguments are always held to the schema; accepted either way.
    #[serde(default)]
    #[allow(dead_code)]
    strict: Option<bool>,
}

/// `"none"`, `"auto"`, `"required"`, or one function by name.
#[derive(Deserialize)]
#[serde(untagged)]
enum ToolChoiceField {
    Mode(String),
    Function {
        #[serde(rename = "type")]
        #[allow(dead_code)]
        kind: String,
        function: NamedFunction,
    },
}

#[derive(Deserialize)]
struct NamedFunction {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchemaFormat {
    #[allow(dead_code)]
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    /// The answer is always held to the schema; accepted either way.
    #[serde(default)]
    #[allow(dead_code)]
    strict: Option<bool>,
}

/// The fields chat and text completions take.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompletionRequest {
    model: String,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<OneOrMany>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is served.
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<ToolChoiceField>,
    /// At most one call is made per answer, whatever this says.
    #[serde(default)]
    #[allow(dead_code)]
    parallel_tool_calls: Option<bool>,
    /// Accepted (an end-user id for the caller's own records) and not used.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Which endpoint a completion came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Chat,
    Text,
}

/// The engine's request, and the tools the model was offered (whose calls
/// its answer may hold).
pub(super) struct Prepared {
    pub request: GenerateRequest,
    pub tools: Vec<ToolSpec>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid-input", message)
}

fn unsupported(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("unsupported", message)
}

impl CompletionRequest {
    /// The engine request for this body, refusing what sovra does not serve.
    pub fn prepare(self, shape: Shape) -> Result<Prepared, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(unsupported("`n` other than 1 is not supported"));
        }
        if shape == Shape::Text && (self.tools.is_some() || self.response_format.is_some()) {
            return Err(invalid(
                "`tools` and `response_format` are chat completion fields",
            ));
        }
        let tools = self.offered_tools()?;
        let choice = self.tool_choice(&tools)?;
        let format = self.format_constraint()?;
        if format.is_some() && choice != ToolChoice::None {
            return Err(unsupported(
                "`response_format` together with `tools` is not supported; send one of them",
            ));
        }
        let constraint = match format {
            Some(format) => Some(format),
            None => tool_calls::constraint(&tools, &choice).map_err(|e| invalid(e.to_string()))?,
        };
        let prompt = match (shape, self.messages, self.prompt) {
            (Shape::Chat, Some(messages), None) => {
                let mut chat = Vec::with_capacity(messages.len() + 1);
                if let Some(instructions) = tool_calls::instructions(&tools, &choice) {
                    chat.push(ChatMessage {
                        role: Role::System,
                        content: instructions,
                    });
                }
                for message in messages {
                    chat.push(chat_message(message)?);
                }
                Prompt::Chat(chat)
            }
            (Shape::Text, None, Some(prompt)) => Prompt::Text(prompt),
            (Shape::Chat, _, _) => {
                return Err(invalid(
                    "a chat completion takes `messages` (and no `prompt`)",
                ));
            }
            (Shape::Text, _, _) => {
                return Err(invalid(
                    "a completion takes a `prompt` string (and no `messages`)",
                ));
            }
        };
        let defaults = Sampling::default();
        let request = GenerateRequest {
            model: self.model,
            prompt,
            sampling: Sampling {
                max_tokens: self
                    .max_completion_tokens
                    .or(self.max_tokens)
                    .unwrap_or(DEFAULT_MAX_TOKENS),
                // OpenAI's default temperature is 1.
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p.unwrap_or(defaults.top_p),
                seed: self.seed,
                stop: self.stop.map(OneOrMany::into_vec).unwrap_or_default(),
                constraint,
                ..defaults
            },
        };
        let tools = if choice == ToolChoice::None {
            Vec::new()
        } else {
            tools
        };
        Ok(Prepared { request, tools })
    }

    /// `tools`, as the engine describes them.
    fn offered_tools(&self) -> Result<Vec<ToolSpec>, ApiError> {
        let Some(tools) = &self.tools else {
            return Ok(Vec::new());
        };
        tools
            .iter()
            .map(|tool| {
                if tool.kind != "function" {
                    return Err(unsupported(format!(
                        "tools of type `{}` are not supported (function)",
                        tool.kind
                    )));
                }
                Ok(ToolSpec {
                    name: tool.function.name.clone(),
                    description: tool.function.description.clone().unwrap_or_default(),
                    parameters: tool
                        .function
                        .parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object"})),
                })
            })
            .collect()
    }

    /// `tool_choice`: `auto` when tools are offered and it is left out.
    fn tool_choice(&self, tools: &[ToolSpec]) -> Result<ToolChoice, ApiError> {
        match &self.tool_choice {
            None if tools.is_empty() => Ok(ToolChoice::None),
            None => Ok(ToolChoice::Auto),
            Some(ToolChoiceField::Mode(mode)) => match mode.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" if tools.is_empty() => {
                    Err(invalid("`tool_choice: required` needs `tools`"))
                }
                "required" => Ok(ToolChoice::Required),
                other => Err(invalid(format!(
                    "`tool_choice: {other}` is not one of none, auto, required"
                ))),
            },
            Some(ToolChoiceField::Function { function, .. }) => {
                Ok(ToolChoice::Function(function.name.clone()))
            }
        }
    }

    /// The constraint `response_format` asks for, if any.
    fn format_constraint(&self) -> Result<Option<Constraint>, ApiError> {
        let Some(format) = &self.response_format else {
            return Ok(None);
        };
        match format.kind.as_str() {
            "text" => Ok(None),
            "json_object" => Ok(Some(Constraint::JsonSchema(
                json!({"type": "object"}).to_string(),
            ))),
            "json_schema" => {
                let schema = format
                    .json_schema
                    .as_ref()
                    .and_then(|f| f.schema.as_ref())
                    .ok_or_else(|| {
                        invalid("`response_format: json_schema` needs `json_schema.schema`")
                    })?;
                Ok(Some(Constraint::JsonSchema(schema.to_string())))
            }
            other => Err(unsupported(format!(
                "`response_format: {other}` is not supported (text, json_object, json_schema)"
            ))),
        }
    }
}

/// One message of the conversation. An earlier assistant call is written
/// as the model writes calls (`{"name": ..., "arguments": ...}`); a tool's
/// result is a user turn that says which call it answers.
fn chat_message(message: Message) -> Result<ChatMessage, ApiError> {
    let content = message.content.unwrap_or_default();
    let (role, content) = match message.role.as_str() {
        "system" | "developer" => (Role::System, content),
        "user" => (Role::User, content),
        "assistant" => {
            let calls = message.tool_calls.unwrap_or_default();
            let mut text = content;
            for call in calls {
                let arguments: Value =
                    serde_json::from_str(&call.function.arguments).map_err(|e| {
                        invalid(format!(
                            "the arguments of an earlier call of `{}` are not JSON: {e}",
                            call.function.name
                        ))
                    })?;
                let written = json!({"name": call.function.name, "arguments": arguments});
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&written.to_string());
            }
            (Role::Assistant, text)
        }
        "tool" => {
            let call = message.tool_call_id.unwrap_or_default();
            (Role::User, format!("Result of tool call {call}: {content}"))
        }
        other => {
            return Err(invalid(format!("message role `{other}` is not supported")));
        }
    };
    Ok(ChatMessage { role, content })
}
