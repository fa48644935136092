//! `planner`: answers a question with the tools its tenant granted it (a
//! ReAct-style step: choose, act, observe, answer).
//!
//! 1. Choose: the tool whose description is closest in meaning to the
//!    question (`minilm` embeddings over `tools::list`), if any is close.
//! 2. Fill its input from its JSON Schema: numbers and enum options the
//!    question names are taken from it in order; the rest (an expression, a
//!    query, a value the question leaves out) is written by `smollm2`, held
//!    to the property's own schema, so what it writes always parses.
//! 3. Act: `tools::call`; the host checks the input against the schema and
//!    runs the tool in a sandbox of its own, under its own grants.
//! 4. Answer: `smollm2` answers from the tool's result.
//!
//! The reply is the answer and the step taken (`[tool input -> result]`), so
//! a reader can check it; a small model's answer may be worse than its
//! tool's result.

use serde_json::{Map, Value, json};
use sovra_sdk::{Agent, Error, Request, Response, ToolInfo, inference, log, tools};

const MODEL: &str = "smollm2";
const EMBEDDER: &str = "minilm";
/// How close (cosine) a tool's description must be to the question for the
/// tool to be chosen.
const MIN_SIMILARITY: f32 = 0.15;
/// Tokens the model may write for one part of the plan.
const PART_TOKENS: u32 = 24;
/// Tokens of an answer given without a tool.
const ANSWER_TOKENS: u32 = 64;

struct Planner;

/// The model's short answer to one part of the plan (greedy, so a question
/// gets the same plan each time).
fn ask(system: &str, user: &str, max_tokens: u32) -> Result<String, Error> {
    let completion = inference::chat(MODEL)
        .system(system)
        .user(user)
        .max_tokens(max_tokens)
        .temperature(0.0)
        .generate()?;
    Ok(completion.text.trim().to_owned())
}

/// The value of one property of a tool's input, written by the model after
/// `text` and held to the property's JSON Schema `spec` (greedy).
fn write_value(text: &str, spec: &Value) -> Result<Value, Error> {
    let completion = inference::complete(MODEL, text)
        .max_tokens(PART_TOKENS)
        .temperature(0.0)
        .json_schema(spec.to_string())
        .generate()?;
    serde_json::from_str(completion.text.trim()).map_err(|e| {
        Error::Internal(format!(
            "the model's value `{}` does not parse: {e}",
            completion.text
        ))
    })
}

/// The first line the model writes after `text` (greedy).
fn continue_line(text: &str) -> Result<String, Error> {
    let completion = inference::complete(MODEL, text)
        .max_tokens(PART_TOKENS)
        .temperature(0.0)
        .generate()?;
    let line = completion.text.lines().map(str::trim).find(|l| !l.is_empty());
    Ok(line.unwrap_or("").to_owned())
}

/// The tool whose description is closest in meaning to `question`
/// (embedded with `minilm`), if any is close enough: tool retrieval, which
/// a small model does more reliably than naming a tool itself.
fn choose<'a>(question: &str, tools: &'a [ToolInfo]) -> Result<Option<&'a ToolInfo>, Error> {
    if tools.is_empty() {
        return Ok(None);
    }
    let mut texts = vec![question.to_owned()];
    texts.extend(tools.iter().map(|t| format!("{}: {}", t.name, t.description)));
    let vectors = inference::embed(EMBEDDER, &texts)?;
    let (asked, described) = vectors.split_first().expect("one vector per text");
    let closest = described
        .iter()
        .map(|v| cosine(asked, v))
        .zip(tools)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    log::log(log::Level::Debug, "choice", &[("similarity", &format!("{:?}", closest.map(|c| c.0)))]);
    Ok(closest.filter(|(similarity, _)| *similarity >= MIN_SIMILARITY).map(|(_, t)| t))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::EPSILON)
}

/// The tool's input for `question`: each required property of its schema.
/// Numbers and enum options the question names are taken from it, in the
/// order it names them (`42 km in mi`: value 42, from km, to mi); free text
/// (an expression, a query) is written by the model.
fn fill(question: &str, tool: &ToolInfo) -> Result<Value, Error> {
    let schema: Value = serde_json::from_str(&tool.input_schema)
        .map_err(|e| Error::Internal(format!("tool `{}` has a bad schema: {e}", tool.name)))?;
    let words: Vec<String> = question
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let mut used = vec![false; words.len()];
    let mut take = |matches: &dyn Fn(&str) -> bool| {
        let at = (0..words.len()).find(|&i| !used[i] && matches(&words[i]))?;
        used[at] = true;
        Some(words[at].clone())
    };
    let mut input = Map::new();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for property in required {
        let spec = &schema["properties"][property];
        let taken = if let Some(options) = spec["enum"].as_array() {
            let options: Vec<String> = options
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect();
            take(&|w| options.iter().any(|o| o == w)).map(Value::String)
        } else if matches!(spec["type"].as_str(), Some("number" | "integer")) {
            take(&|w| w.parse::<f64>().is_ok())
                .and_then(|w| w.parse::<f64>().ok())
                .map(|n| json!(n))
        } else {
            None
        };
        let value = match taken {
            Some(value) => value,
            None => write_value(
                &format!(
                    "Tool: {} ({})\nQuestion: {question}\nInput {property}:",
                    tool.name, tool.description
                ),
                spec,
            )?,
        };
        input.insert(property.to_owned(), value);
    }
    Ok(Value::Object(input))
}

impl Agent for Planner {
    fn handle(request: Request) -> Result<Response, Error> {
        let question = request.input.trim();
        if question.is_empty() {
            return Err(Error::InvalidInput("ask a question".into()));
        }
        let tools = tools::list();
        let Some(tool) = choose(question, &tools)? else {
            let answer = ask("Answer briefly.", question, ANSWER_TOKENS)?;
            return Ok(Response::text(answer).with_metadata("tool", "none"));
        };
        let input = fill(question, tool)?.to_string();
        log::log(log::Level::Info, "tool call", &[("tool", &tool.name), ("input", &input)]);
        let observation = match tools::call(&tool.name, &input) {
            Ok(output) => output,
            Err(error) => {
                return Ok(Response::text(format!(
                    "I could not use {}: {error:?}\n[{} {input}]",
                    tool.name, tool.name
                ))
                .with_metadata("tool", tool.name.clone()));
            }
        };
        let answer = continue_line(&format!(
            "Question: {question}\nResult of the {} tool: {observation}\nShort answer:",
            tool.name
        ))?;
        Ok(
            Response::text(format!("{answer}\n[{} {input} -> {observation}]", tool.name))
                .with_metadata("tool", tool.name.clone()),
        )
    }
}

sovra_sdk::export_agent!(Planner);
