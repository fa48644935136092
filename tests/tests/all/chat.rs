//! The `chat` agent talking to the real SmolLM2 through the sandbox.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use sovra_runtime::{AgentErrorKind, Invocation, InvokeError, Limits, Runtime};
use sovra_test_artifacts::CHAT;

use crate::support::{config, failure, grants, invocation, output};

/// A runtime serving the repository's models.toml, or `None` when the model
/// files have not been fetched (then `SOVRA_REQUIRE_MODELS` makes it fail).
pub fn runtime_with_models(dir: &Path) -> Option<Runtime> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf").exists() {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_MODELS").is_none(),
            "SOVRA_REQUIRE_MODELS is set but the models are missing; run scripts/fetch-models"
        );
        eprintln!("skipping: models not fetched (run scripts/fetch-models)");
        return None;
    }
    let registry = sovra_gpu::config::load_registry(&root.join("models.toml")).unwrap();
    let mut config = config(dir);
    config.models = Arc::new(registry);
    Some(Runtime::new(config).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_with_a_real_model_and_keeps_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let Some(runtime) = runtime_with_models(dir.path()) else {
        return;
    };
    let chat = runtime.load_file(CHAT.as_ref(), None).unwrap();
    // Generation on a shared 2-core machine takes seconds; allow for it.
    let ask = |tenant: &str, text: &str| Invocation {
        limits: Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        ..invocation(tenant, grants(true, false, &["smollm2"]), text)
    };

    let first = output(
        &runtime,
        &chat,
        ask("acme", "What is the capital of France?"),
    )
    .await;
    assert!(!first.is_empty());
    let second = output(
        &runtime,
        &chat,
        ask("acme", "Thanks! And what about Germany?"),
    )
    .await;
    assert!(!second.is_empty());

    // The history lives in the tenant's kv store: another tenant starts fresh
    // and sees the same first answer (greedy decoding is deterministic).
    let other = output(
        &runtime,
        &chat,
        ask("globex", "What is the capital of France?"),
    )
    .await;
    assert_eq!(other, first);

    let models = runtime.audit().recent("acme", 10).unwrap();
    assert!(models.iter().all(|r| r.outcome == "ok"), "{models:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_off_the_allowlist_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let Some(runtime) = runtime_with_models(dir.path()) else {
        return;
    };
    let chat = runtime.load_file(CHAT.as_ref(), None).unwrap();
    let error = failure(
        &runtime,
        &chat,
        invocation("acme", grants(true, false, &["other-model"]), "hi"),
    )
    .await;
    match error {
        InvokeError::Agent(error) => assert_eq!(error.kind, AgentErrorKind::AccessDenied),
        other => panic!("expected access-denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_cancels_the_generation_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let Some(runtime) = runtime_with_models(dir.path()) else {
        return;
    };
    let chat = runtime.load_file(CHAT.as_ref(), None).unwrap();
    let hurried = Invocation {
        limits: Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..invocation(
            "acme",
            grants(true, false, &["smollm2"]),
            "Write a long essay about rivers.",
        )
    };
    let started = std::time::Instant::now();
    let error = failure(&runtime, &chat, hurried).await;
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The engine dropped that sequence and serves the next request at once.
    let patient = Invocation {
        limits: Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        ..invocation("acme", grants(true, false, &["smollm2"]), "Hi!")
    };
    assert!(!output(&runtime, &chat, patient).await.is_empty());
}

/// Tokens are counted whatever way a generation ends: a stream the agent
/// drops after its first piece still costs its prompt and what the engine
/// generated, and the count reaches the report and the audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_counted_exactly_even_when_a_stream_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let Some(runtime) = runtime_with_models(dir.path()) else {
        return;
    };
    let probe = runtime
        .load_file(sovra_test_artifacts::PROBE.as_ref(), None)
        .unwrap();
    let run = |input: &str| Invocation {
        limits: Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        ..invocation("acme", grants(true, true, &["smollm2"]), input)
    };
    let dropped = runtime.invoke(&probe, run("first-token:smollm2")).await;
    assert!(dropped.result.is_ok(), "{:?}", dropped.result);
    assert_eq!(dropped.usage.len(), 1, "{:?}", dropped.usage);
    let used = &dropped.usage[0];
    assert_eq!(used.model, "smollm2");
    assert!(used.prompt_tokens > 0, "{used:?}");
    assert!(
        (1..32).contains(&used.generated_tokens),
        "the engine stopped soon after the drop: {used:?}"
    );
    assert_eq!(dropped.generated_tokens, used.generated_tokens);

    let finished = runtime.invoke(&probe, run("generate:smollm2")).await;
    assert!(finished.result.is_ok(), "{:?}", finished.result);
    let used_again = &finished.usage[0];
    assert_eq!(
        used_again.prompt_tokens, used.prompt_tokens,
        "the same prompt"
    );
    assert!(
        (1..=8).contains(&used_again.generated_tokens),
        "{used_again:?}"
    );

    let records = runtime.audit().recent("acme", 10).unwrap();
    assert_eq!(records[0].usage, finished.usage);
    assert_eq!(records[1].usage, dropped.usage);
    let days = runtime.audit().usage("acme", 0).unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(
        days[0].generated_tokens,
        used.generated_tokens + used_again.generated_tokens
    );
    assert_eq!(days[0].invocations, 2);
}
