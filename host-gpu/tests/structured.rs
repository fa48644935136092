//! Structured output on the real SmolLM2 model: answers held to a JSON
//! Schema, a regular expression or a grammar parse and validate where the
//! same prompts answered freely do not; constrained and free sequences share
//! steps; tool calls from the model; constraints refused up front.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use sovra_gpu::engine::TextEngine;
use sovra_gpu::structured::tool_calls::{self, Answer, ToolChoice, ToolSpec};
use sovra_gpu::{
    ChatMessage, Constraint, FinishReason, GenerateRequest, GenerationEvent, InferenceError,
    ModelService, Prompt, Role, Sampling,
};
use support::{context, smollm2_engine};

fn chat(
    messages: Vec<ChatMessage>,
    constraint: Option<Constraint>,
    max_tokens: u32,
) -> GenerateRequest {
    GenerateRequest {
        model: "smollm2".into(),
        prompt: Prompt::Chat(messages),
        sampling: Sampling {
            max_tokens,
            constraint,
            ..Sampling::default()
        },
    }
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: Role::User,
        content: text.into(),
    }]
}

/// Runs a generation to its end: (text, reason), or its error.
async fn run(
    engine: &TextEngine,
    request: GenerateRequest,
) -> Result<(String, FinishReason), InferenceError> {
    let mut generation = engine.start_generation(&context(), request)?;
    let mut text = String::new();
    loop {
        match generation
            .next()
            .await
            .expect("the engine finishes every generation")
        {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Finished { reason, .. } => return Ok((text, reason)),
            GenerationEvent::Failed(error) => return Err(error),
        }
    }
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "age": { "type": "integer", "minimum": 0 }
        },
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

const PERSON_PROMPT: &str = "Tell me about Ann, who is 31 years old.";

/// Whether `text` is JSON valid against `schema`.
fn validates(schema: &Value, text: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    jsonschema::validator_for(schema).unwrap().is_valid(&value)
}

#[tokio::test]
async fn a_json_schema_answer_validates_where_the_free_answer_does_not() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let schema = person_schema();
    let (free, _) = run(&engine, chat(user(PERSON_PROMPT), None, 48))
        .await
        .unwrap();
    assert!(
        !validates(&schema, &free),
        "the free answer already validates: {free}"
    );
    let constraint = Constraint::JsonSchema(schema.to_string());
    let (held, reason) = run(&engine, chat(user(PERSON_PROMPT), Some(constraint), 48))
        .await
        .unwrap();
    assert!(
        validates(&schema, &held),
        "the constrained answer does not validate: {held}"
    );
    assert_eq!(
        reason,
        FinishReason::Stop,
        "a complete answer ends the generation: {held}"
    );
}

#[tokio::test]
async fn constrained_and_free_sequences_share_steps() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let schema = person_schema();
    let constraint = Constraint::JsonSchema(schema.to_string());
    let free_prompt = "Write a haiku about the sea.";
    let free_alone = run(&engine, chat(user(free_prompt), None, 24))
        .await
        .unwrap();
    let held_alone = run(
        &engine,
        chat(user(PERSON_PROMPT), Some(constraint.clone()), 48),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = [
        chat(user(free_prompt), None, 24),
        chat(user(PERSON_PROMPT), Some(constraint.clone()), 48),
        chat(user(free_prompt), None, 24),
        chat(user(PERSON_PROMPT), Some(constraint), 48),
    ]
    .into_iter()
    .map(|request| {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move { run(&engine, request).await.unwrap() })
    })
    .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results[0], free_alone);
    assert_eq!(results[2], free_alone);
    assert_eq!(results[1], held_alone);
    assert_eq!(results[3], held_alone);
    assert!(validates(&schema, &held_alone.0), "{}", held_alone.0);
}

#[tokio::test]
async fn a_regex_or_a_grammar_holds_the_answer_to_its_shape() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let question = "Is the sea salty? Explain.";
    let (free, _) = run(&engine, chat(user(question), None, 24)).await.unwrap();
    assert!(free != "yes" && free != "no", "{free}");
    let regex = Constraint::Regex("(yes|no)".into());
    let (answer, reason) = run(&engine, chat(user(question), Some(regex), 24))
        .await
        .unwrap();
    assert!(answer == "yes" || answer == "no", "{answer:?}");
    assert_eq!(reason, FinishReason::Stop);

    // The grammar forces most of the sentence; the model picks the number.
    let grammar = Constraint::Grammar(
        "start: \"The answer is \" NUMBER \".\"\nNUMBER: /[0-9]{1,3}/\n".into(),
    );
    let (sentence, reason) = run(&engine, chat(user("What is 2 + 3?"), Some(grammar), 24))
        .await
        .unwrap();
    let number = sentence
        .strip_prefix("The answer is ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("{sentence:?} is not of the grammar"));
    assert!(number.parse::<u32>().is_ok(), "{sentence:?}");
    assert_eq!(reason, FinishReason::Stop);
}

#[tokio::test]
async fn the_model_calls_an_offered_tool_with_valid_arguments() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let parameters = json!({
        "type": "object",
        "properties": { "city": { "type": "string" } },
        "required": ["city"],
        "additionalProperties": false
    });
    let tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "The current weather in a city.".into(),
        parameters: parameters.clone(),
    }];
    let question = user("What is the weather in Paris?");
    let (free, _) = run(&engine, chat(question.clone(), None, 32))
        .await
        .unwrap();
    assert!(
        matches!(tool_calls::read_answer(&free, &tools), Answer::Text(_)),
        "{free}"
    );

    let mut messages = vec![ChatMessage {
        role: Role::System,
        content: tool_calls::instructions(&tools, &ToolChoice::Required).unwrap(),
    }];
    messages.extend(question);
    let constraint = tool_calls::constraint(&tools, &ToolChoice::Required).unwrap();
    let (text, _) = run(&engine, chat(messages, constraint, 48)).await.unwrap();
    let Answer::ToolCall { name, arguments } = tool_calls::read_answer(&text, &tools) else {
        panic!("not a tool call: {text}");
    };
    assert_eq!(name, "get_weather");
    assert!(
        jsonschema::validator_for(&parameters)
            .unwrap()
            .is_valid(&arguments),
        "{arguments}"
    );
}

#[tokio::test]
async fn bad_constraints_are_refused_before_generating() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let refused = |constraint: Constraint| {
        let request = chat(user("Hi"), Some(constraint.clone()), 8);
        match engine.start_generation(&context(), request) {
            Err(InferenceError::InvalidInput(why)) => why,
            Err(other) => panic!("{constraint:?} refused as {other:?}"),
            Ok(_) => panic!("{constraint:?} accepted"),
        }
    };
    let not_json = refused(Constraint::JsonSchema("{\"type\": ".into()));
    assert!(
        not_json.contains("JSON Schema") && not_json.contains("not JSON"),
        "{not_json}"
    );
    let bad_type = refused(Constraint::JsonSchema(json!({"type": "fish"}).to_string()));
    assert!(bad_type.contains("JSON Schema"), "{bad_type}");
    let bad_regex = refused(Constraint::Regex("(unclosed".into()));
    assert!(bad_regex.contains("regular expression"), "{bad_regex}");
    let bad_grammar = refused(Constraint::Grammar("start: missing_rule\n".into()));
    assert!(bad_grammar.contains("grammar"), "{bad_grammar}");
    // A refusal is cached too, and given again the same way.
    assert_eq!(refused(Constraint::Regex("(unclosed".into())), bad_regex);
    let too_big = refused(Constraint::Grammar(format!(
        "start: \"{}\"\n",
        "a".repeat(70_000)
    )));
    assert!(too_big.contains("bytes"), "{too_big}");
}

#[tokio::test]
async fn a_grammar_built_to_explode_fails_its_own_sequence_only() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let free_prompt = "Write a haiku about the sea.";
    let free_alone = run(&engine, chat(user(free_prompt), None, 16))
        .await
        .unwrap();
    // A million forced bytes, each an Earley item: past llguidance's step
    // limits, or past the watchdog's time for one step.
    let bomb = Constraint::Grammar("start: a{1000}\na: b{1000}\nb: \"x\"\n".into());
    let bombed = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move { run(&engine, chat(user("Hi"), Some(bomb), 16)).await })
    };
    let free = run(&engine, chat(user(free_prompt), None, 16))
        .await
        .unwrap();
    assert_eq!(free, free_alone);
    match bombed.await.unwrap() {
        Err(InferenceError::InvalidInput(why)) => assert!(why.contains("grammar"), "{why}"),
        other => panic!("the exploding grammar gave {other:?}"),
    }
}
