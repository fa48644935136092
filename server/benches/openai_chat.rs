//! Chat completions over HTTP against a direct engine call: tokens per
//! second for a 128-token answer from SmolLM2, `POST /v1/chat/completions`
//! on a node in this process (the node's own accept loop, a tenant's key,
//! admission, the audit record made durable) against the same request made
//! directly to the engine, in the same run, rounds interleaved; medians.
//!
//! `scripts/fetch-models && cargo bench -p sovra-server --bench openai_chat`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sovra_gpu::{
    ChatMessage, GenerateRequest, GenerationEvent, Prompt, RequestContext, Role, Sampling,
};
use sovra_server::config::OperatorTokenSource;
use sovra_server::{AppState, NodeConfig};

const ROUNDS: usize = 5;
const ANSWER_TOKENS: u32 = 128;
const QUESTION: &str = "Describe the water cycle in detail.";
const TOKEN: &str = "operator-token-for-the-benchmark-0123456789";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = Arc::new(
        sovra_gpu::config::load_registry(&root.join("models.toml"))
            .expect("run scripts/fetch-models"),
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("operator.token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"));
    config.operator_token = OperatorTokenSource::File(token);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let state =
        Arc::new(AppState::open(config, Arc::clone(&registry), PathBuf::from("sovra")).unwrap());
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio.spawn(sovra_server::serve(
        Arc::clone(&state),
        listener,
        std::future::pending(),
    ));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let post = |path: &str, key: &str, body: Value| -> Value {
        agent
            .post(format!("{url}{path}"))
            .header("authorization", format!("Bearer {key}"))
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    post("/v1/tenants", TOKEN, json!({"id": "bench"}));
    let key = post("/v1/tenants/bench/keys", TOKEN, json!({}))["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let over_http = || -> (u64, Duration) {
        let started = Instant::now();
        let answer = post(
            "/v1/chat/completions",
            &key,
            json!({
                "model": "smollm2",
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": ANSWER_TOKENS,
                "temperature": 0,
            }),
        );
        let elapsed = started.elapsed();
        (
            answer["usage"]["completion_tokens"].as_u64().unwrap(),
            elapsed,
        )
    };
    let engine = registry.lookup("bench", "smollm2").unwrap();
    let direct = || -> (u64, Duration) {
        let request = GenerateRequest {
            model: "smollm2".into(),
            prompt: Prompt::Chat(vec![ChatMessage {
                role: Role::User,
                content: QUESTION.into(),
            }]),
            sampling: Sampling {
                max_tokens: ANSWER_TOKENS,
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
                    return (u64::from(usage.generated_tokens), started.elapsed());
                }
            }
        })
    };

    over_http();
    direct();
    let (mut http, mut engine_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (tokens, time) = direct();
        let d = tokens as f64 / time.as_secs_f64();
        let (http_tokens, http_time) = over_http();
        let h = http_tokens as f64 / http_time.as_secs_f64();
        assert_eq!(tokens, http_tokens, "the same greedy answer both ways");
        eprintln!("round {round}: {tokens} tokens; direct {d:.1} tok/s, over HTTP {h:.1} tok/s");
        engine_rates.push(d);
        http.push(h);
        ratios.push(h / d);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| measure (median of {ROUNDS} rounds) | over HTTP | direct engine call | HTTP / direct |"
    );
    println!("|---|---|---|---|");
    println!(
        "| tokens/s, request to last token, {ANSWER_TOKENS}-token answer | {:.1} | {:.1} | {:.3} |",
        median(http),
        median(engine_rates),
        median(ratios)
    );
}
