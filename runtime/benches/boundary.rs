//! Boundary cost of inference: tokens per second when the `chat` agent asks
//! for a generation from inside its sandbox, against the same request made
//! directly to the engine, in the same run (rounds interleaved).
//!
//! `scripts/fetch-models && cargo bench -p sovra-runtime --bench boundary`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sovra_gpu::{
    ChatMessage, GenerateRequest, GenerationEvent, ModelService, Prompt, RequestContext, Role,
    Sampling,
};
use sovra_runtime::{Grants, Invocation, Limits, Runtime, RuntimeConfig, TenantId};

const ROUNDS: usize = 5;
const QUESTION: &str = "Describe the water cycle.";
/// What agents/chat/src/lib.rs sends: its system prompt and sampling.
const SYSTEM_PROMPT: &str = "You are a concise, factual assistant.";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = Arc::new(
        sovra_gpu::config::load_registry(&root.join("models.toml"))
            .expect("run scripts/fetch-models"),
    );
    let engine = registry.lookup("bench", "smollm2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        models: Arc::clone(&registry),
        ..RuntimeConfig::new(dir.path())
    })
    .unwrap();
    let chat = runtime
        .load_file(Path::new(sovra_test_artifacts::CHAT), None)
        .unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();

    let direct = |engine: &Arc<dyn ModelService>| -> (u32, Duration) {
        let request = GenerateRequest {
            model: "smollm2".into(),
            prompt: Prompt::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: SYSTEM_PROMPT.into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: QUESTION.into(),
                },
            ]),
            sampling: Sampling {
                max_tokens: 64,
                repeat_penalty: 1.2,
                ..Sampling::default()
            },
        };
        let context = RequestContext {
            tenant: "bench".into(),
            deadline: None,
        };
        tokio.block_on(async {
            let started = Instant::now();
            let mut generation = engine.start_generation(&context, request).unwrap();
            loop {
                if let Some(GenerationEvent::Finished { usage, .. }) = generation.next().await {
                    return (usage.generated_tokens, started.elapsed());
                }
            }
        })
    };
    let through_agent = || -> (u32, Duration) {
        let mut invocation = Invocation::new(TenantId::new("bench").unwrap(), QUESTION);
        invocation.grants = Grants {
            kv: true,
            models: ["smollm2".to_owned()].into(),
            ..Grants::none()
        };
        invocation.limits = Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        };
        invocation.metadata.push(("reset".into(), "true".into()));
        let started = Instant::now();
        let report = tokio.block_on(runtime.invoke(&chat, invocation));
        let elapsed = started.elapsed();
        report.result.expect("chat answers");
        let generated = report
            .logs
            .iter()
            .find(|l| l.message == "answered")
            .and_then(|l| l.fields.iter().find(|(k, _)| k == "generated_tokens"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap();
        (generated, elapsed)
    };

    direct(&engine);
    through_agent();
    let (mut d, mut a) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (tokens, time) = direct(&engine);
        d.push(tokens as f64 / time.as_secs_f64());
        let (tokens, time) = through_agent();
        a.push(tokens as f64 / time.as_secs_f64());
        eprintln!(
            "round {round}: direct {:.1} tok/s, through the agent {:.1} tok/s",
            d[round], a[round]
        );
    }
    d.sort_by(f64::total_cmp);
    a.sort_by(f64::total_cmp);
    let (d, a) = (d[ROUNDS / 2], a[ROUNDS / 2]);
    println!(
        "| measure (median of {ROUNDS} rounds) | through the agent | direct engine call | agent / direct |"
    );
    println!("|---|---|---|---|");
    println!(
        "| tokens/s, prompt to last token | {a:.1} | {d:.1} | {:.3} |",
        a / d
    );
}
