//! `chat`: multi-turn chat with a model the tenant allowed.
//!
//! The input is the user's message. Metadata `conversation` names the
//! conversation (default `default`), `model` the model (default `smollm2`),
//! and `reset=true` starts over. Earlier turns are kept in kv, so a
//! conversation continues across invocations; the answer is streamed from the
//! engine piece by piece.

use sovra_sdk::inference::{self, Role};
use sovra_sdk::{Agent, Error, Request, Response, kv, log};

/// How the assistant is asked to behave.
const SYSTEM_PROMPT: &str = "You are a concise, factual assistant.";

/// Earlier messages sent with each new one.
const MAX_HISTORY_MESSAGES: usize = 8;

/// Separates messages, and role from content, in the stored history.
const RECORD: char = '\u{1e}';
const FIELD: char = '\u{1f}';

struct Chat;

fn load_history(key: &str) -> Result<Vec<(Role, String)>, Error> {
    let text = kv::get_string(key)?.unwrap_or_default();
    Ok(text
        .split(RECORD)
        .filter_map(|record| {
            let (role, content) = record.split_once(FIELD)?;
            let role = match role {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => return None,
            };
            Some((role, content.to_owned()))
        })
        .collect())
}

fn store_history(key: &str, history: &[(Role, String)]) -> Result<(), Error> {
    let start = history.len().saturating_sub(MAX_HISTORY_MESSAGES);
    let text: Vec<String> = history[start..]
        .iter()
        .map(|(role, content)| {
            let role = if matches!(role, Role::User) { "user" } else { "assistant" };
            format!("{role}{FIELD}{content}")
        })
        .collect();
    kv::set(key, text.join(&RECORD.to_string()))
}

impl Agent for Chat {
    fn handle(request: Request) -> Result<Response, Error> {
        let message: String = request.input.trim().chars().filter(|c| *c != RECORD && *c != FIELD).collect();
        if message.is_empty() {
            return Err(Error::InvalidInput("say something".into()));
        }
        let conversation = request.metadata("conversation").unwrap_or("default");
        let model = request.metadata("model").unwrap_or("smollm2");
        let key = format!("chat/{conversation}");
        let mut history = if request.metadata("reset") == Some("true") { Vec::new() } else { load_history(&key)? };
        history.push((Role::User, message));

        let mut prompt = inference::chat(model).system(SYSTEM_PROMPT);
        for (role, content) in &history[history.len().saturating_sub(MAX_HISTORY_MESSAGES)..] {
            prompt = prompt.message(*role, content.clone());
        }
        let mut stream = prompt.max_tokens(64).temperature(0.0).repeat_penalty(1.2).stream()?;
        let mut answer = String::new();
        for piece in &mut stream {
            answer.push_str(&piece?);
        }
        let (_, usage) = stream.finished().unwrap_or((inference::FinishReason::Stop, inference::Usage { prompt_tokens: 0, generated_tokens: 0 }));
        log::log(
            log::Level::Info,
            "answered",
            &[("prompt_tokens", &usage.prompt_tokens.to_string()), ("generated_tokens", &usage.generated_tokens.to_string())],
        );
        let answer = answer.trim().to_owned();
        history.push((Role::Assistant, answer.clone()));
        store_history(&key, &history)?;
        Ok(Response::text(answer))
    }
}

sovra_sdk::export_agent!(Chat);
