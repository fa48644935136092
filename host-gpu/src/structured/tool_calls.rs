//! Tool calls from the model: a chat that offers tools gets its answer
//! constrained to either text or one call of an offered tool, written as
//! `{"name": ..., "arguments": {...}}` with arguments that validate against
//! the tool's schema, and the answer is read back into text or a call.
//!
//! The model is told about the tools in a system message of its own
//! ([`instructions`]), since chat templates differ in whether and how they
//! describe tools.

use serde_json::{Value, json};

use crate::{Constraint, InferenceError};

/// Tools one chat may offer.
/// Stops: a request making the host build a grammar of thousands of
/// alternatives (the grammar's bytes are bounded as any constraint's are).
pub const MAX_TOOLS: usize = 64;

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
}

/// Whether, and which, tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Text only; the tools are not offered.
    None,
    /// Text or a call, as the model chooses.
    Auto,
    /// A call of one of the tools.
    Required,
    /// A call of this tool.
    Function(String),
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Text(String),
    ToolCall { name: String, arguments: Value },
}

/// The constraint for `choice` among `tools`, or none when the answer is
/// free text. An unknown tool name, a duplicate, or too many tools is
/// `InvalidInput`.
pub fn constraint(
    tools: &[ToolSpec],
    choice: &ToolChoice,
) -> Result<Option<Constraint>, InferenceError> {
    check(tools)?;
    let calls: Vec<Value> = match choice {
        ToolChoice::None => return Ok(None),
        ToolChoice::Auto | ToolChoice::Required if tools.is_empty() => return Ok(None),
        ToolChoice::Auto | ToolChoice::Required => tools.iter().map(call_schema).collect(),
        ToolChoice::Function(name) => {
            let tool = tools.iter().find(|t| &t.name == name).ok_or_else(|| {
                InferenceError::InvalidInput(format!(
                    "tool_choice names `{name}`, which is not among the tools"
                ))
            })?;
            vec![call_schema(tool)]
        }
    };
    let call = if calls.len() == 1 {
        calls.into_iter().next().unwrap_or_default()
    } else {
        json!({ "anyOf": calls })
    };
    Ok(Some(match choice {
        ToolChoice::Auto => Constraint::Grammar(format!(
            "start: call | TEXT\ncall: %json {call}\nTEXT: /[^{{][\\s\\S]*/\n"
        )),
        _ => Constraint::JsonSchema(call.to_string()),
    }))
}

/// The system message that tells the model about `tools` and how to call
/// one (none when the choice is `None` or there are no tools).
pub fn instructions(tools: &[ToolSpec], choice: &ToolChoice) -> Option<String> {
    if tools.is_empty() || *choice == ToolChoice::None {
        return None;
    }
    let mut text = String::from(
        "You can call tools. To call one, answer with only a JSON object: \
         {\"name\": <tool name>, \"arguments\": <its arguments>}.\nTools:\n",
    );
    for tool in tools {
        text.push_str(&format!(
            "- {}: {} Arguments: {}\n",
            tool.name, tool.description, tool.parameters
        ));
    }
    Some(text)
}

/// Reads the model's answer: a call of one of `tools` when it is one,
/// text otherwise.
pub fn read_answer(text: &str, tools: &[ToolSpec]) -> Answer {
    let call = serde_json::from_str::<Value>(text.trim())
        .ok()
        .and_then(|value| {
            let name = value.get("name")?.as_str()?;
            let arguments = value.get("arguments")?;
            tools
                .iter()
                .any(|t| t.name == name)
                .then(|| Answer::ToolCall {
                    name: name.to_owned(),
                    arguments: arguments.clone(),
                })
        });
    call.unwrap_or_else(|| Answer::Text(text.to_owned()))
}

fn check(tools: &[ToolSpec]) -> Result<(), InferenceError> {
    let invalid = |what: String| Err(InferenceError::InvalidInput(what));
    if tools.len() > MAX_TOOLS {
        return invalid(format!("{} tools; the limit is {MAX_TOOLS}", tools.len()));
    }
    for (i, tool) in tools.iter().enumerate() {
        if tool.name.is_empty() {
            return invalid(format!("tool {i} has no name"));
        }
        if tools[..i].iter().any(|t| t.name == tool.name) {
            return invalid(format!("tool `{}` is listed twice", tool.name));
        }
        if !tool.parameters.is_object() {
            return invalid(format!(
                "the parameters of tool `{}` are not a JSON Schema object",
                tool.name
            ));
        }
    }
    Ok(())
}

/// The schema of one call of `tool`.
fn call_schema(tool: &ToolSpec) -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "const": tool.name },
            "arguments": tool.parameters,
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolSpec {
        ToolSpec {
            name: "get_weather".into(),
            description: "The weather in a city.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"],
            }),
        }
    }

    #[test]
    fn a_call_is_read_only_for_an_offered_tool() {
        let tools = [weather()];
        let call = read_answer(
            r#" {"name": "get_weather", "arguments": {"city": "Oslo"}}"#,
            &tools,
        );
        assert_eq!(
            call,
            Answer::ToolCall {
                name: "get_weather".into(),
                arguments: json!({"city": "Oslo"})
            }
        );
        let other = r#"{"name": "rm_rf", "arguments": {}}"#;
        assert_eq!(read_answer(other, &tools), Answer::Text(other.into()));
        assert_eq!(
            read_answer("It is sunny.", &tools),
            Answer::Text("It is sunny.".into())
        );
    }

    #[test]
    fn choices_give_their_constraints() {
        let tools = [weather()];
        assert_eq!(constraint(&tools, &ToolChoice::None).unwrap(), None);
        assert_eq!(constraint(&[], &ToolChoice::Auto).unwrap(), None);
        let Some(Constraint::JsonSchema(schema)) =
            constraint(&tools, &ToolChoice::Required).unwrap()
        else {
            panic!("a required call is a JSON Schema");
        };
        let schema: Value = serde_json::from_str(&schema).unwrap();
        assert_eq!(schema["properties"]["name"]["const"], "get_weather");
        assert!(matches!(
            constraint(&tools, &ToolChoice::Auto).unwrap(),
            Some(Constraint::Grammar(g)) if g.contains("%json")
        ));
        let unknown = constraint(&tools, &ToolChoice::Function("nope".into())).unwrap_err();
        assert!(unknown.to_string().contains("nope"), "{unknown}");
        let twice = constraint(&[weather(), weather()], &ToolChoice::Auto).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
    }
}
