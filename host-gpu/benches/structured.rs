//! Constrained decode against free decode on SmolLM2-135M-Instruct Q4_1,
//! through the whole text engine (scheduler, masks beside the forward
//! pass, fast-forwarded tokens): the same prompts, greedy, 64 tokens, each
//! round running every prompt free and then held to a JSON Schema; one
//! sequence at a time, then four together. Prints one JSON object per
//! measurement and a summary of medians and ratios.
//!
//! `cargo bench -p sovra-gpu --bench structured -- [rounds]`

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use sovra_gpu::engine::TextEngine;
use sovra_gpu::{
    ChatMessage, Constraint, GenerateRequest, GenerationEvent, ModelService, Prompt,
    RequestContext, Role, Sampling,
};

const MAX_TOKENS: u32 = 64;
const BATCH: usize = 4;

const PROMPTS: [&str; 3] = [
    "List ten people with their names and ages, as JSON.",
    "Give me a JSON list of ten employees: name and age of each.",
    "Describe the members of a football team as JSON: name and age.",
];

/// An array of people, long enough that no answer ends before
/// `MAX_TOKENS`.
fn schema() -> String {
    json!({
        "type": "array",
        "minItems": 20,
        "items": {
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "age": { "type": "integer" }
            },
            "required": ["name", "age"],
            "additionalProperties": false
        }
    })
    .to_string()
}

fn request(prompt: &str, constraint: Option<Constraint>) -> GenerateRequest {
    GenerateRequest {
        model: "smollm2".into(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: Role::User,
            content: prompt.into(),
        }]),
        sampling: Sampling {
            max_tokens: MAX_TOKENS,
            constraint,
            ..Sampling::default()
        },
    }
}

/// Tokens generated after the first, and the seconds from the first to the
/// last: the decode rate, prefill left out.
async fn decode(engine: &TextEngine, request: GenerateRequest) -> (u32, f64) {
    let context = RequestContext {
        tenant: "bench".into(),
        deadline: None,
    };
    let mut generation = engine.start_generation(&context, request).unwrap();
    let mut first = None;
    loop {
        match generation.next().await.expect("the engine finishes") {
            GenerationEvent::Text(_) => {
                first.get_or_insert_with(Instant::now);
            }
            GenerationEvent::Finished { usage, .. } => {
                let first = first.expect("some text");
                return (
                    usage.generated_tokens.saturating_sub(1),
                    first.elapsed().as_secs_f64(),
                );
            }
            GenerationEvent::Failed(error) => panic!("{error}"),
        }
    }
}

/// Decode tokens per second of `requests` run together (summed over them).
async fn run(engine: &std::sync::Arc<TextEngine>, requests: Vec<GenerateRequest>) -> f64 {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let engine = std::sync::Arc::clone(engine);
            tokio::spawn(async move { decode(&engine, r).await })
        })
        .collect();
    let mut tokens = 0;
    let mut longest: f64 = 0.0;
    for task in tasks {
        let (t, seconds) = task.await.unwrap();
        tokens += t;
        longest = longest.max(seconds);
    }
    f64::from(tokens) / longest
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let engine = std::sync::Arc::new(TextEngine::load("smollm2", &path).unwrap());
    let held = || Some(Constraint::JsonSchema(schema()));
    // Warm-up: the token trie, the compiled schema, the first lexer states.
    run(&engine, vec![request(PROMPTS[0], held())]).await;

    let (mut free_one, mut held_one, mut free_batch, mut held_batch) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for prompt in PROMPTS {
            let free = run(&engine, vec![request(prompt, None)]).await;
            let constrained = run(&engine, vec![request(prompt, held())]).await;
            println!(
                "{{\"round\":{round},\"sequences\":1,\"free_tps\":{free:.2},\"constrained_tps\":{constrained:.2}}}"
            );
            free_one.push(free);
            held_one.push(constrained);
        }
        let free = run(
            &engine,
            (0..BATCH).map(|i| request(PROMPTS[i % 3], None)).collect(),
        )
        .await;
        let constrained = run(
            &engine,
            (0..BATCH)
                .map(|i| request(PROMPTS[i % 3], held()))
                .collect(),
        )
        .await;
        println!(
            "{{\"round\":{round},\"sequences\":{BATCH},\"free_tps\":{free:.2},\"constrained_tps\":{constrained:.2}}}"
        );
        free_batch.push(free);
        held_batch.push(constrained);
    }
    for (label, free, held) in [
        ("1 sequence", free_one, held_one),
        ("4 sequences", free_batch, held_batch),
    ] {
        let (free, held) = (median(free), median(held));
        println!(
            "{label}: free {free:.1} tok/s, constrained {held:.1} tok/s, ratio {:.3}",
            held / free
        );
    }
}
