//! The `chat` agent talking to the real SmolLM2 through the sandbox.

use std::time::Duration;

use sovra_runtime::{AgentErrorKind, InvokeError};
use sovra_test_artifacts::CHAT;

use crate::support::{agent_error, grants, runtime_with_models};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_with_a_real_model_and_keeps_the_conversation() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    // Generation on a shared 2-core machine takes seconds; allow for it.
    let acme = test
        .caller(CHAT, "acme", grants(true, false, &["smollm2"]))
        .with_timeout(Duration::from_secs(120));

    let first = acme.output("What is the capital of France?").await;
    assert!(!first.is_empty());
    let second = acme.output("Thanks! And what about Germany?").await;
    assert!(!second.is_empty());

    // The history lives in the tenant's kv store: another tenant starts fresh
    // and sees the same first answer (greedy decoding is deterministic).
    let globex = acme.as_tenant("globex");
    let other = globex.output("What is the capital of France?").await;
    assert_eq!(other, first);

    let models = test.runtime.audit().recent("acme", 10).unwrap();
    assert!(models.iter().all(|r| r.outcome == "ok"), "{models:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_off_the_allowlist_is_denied() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let chat = test.caller(CHAT, "acme", grants(true, false, &["other-model"]));
    match chat.failure("hi").await {
        InvokeError::Agent(error) => assert_eq!(error.kind, AgentErrorKind::AccessDenied),
        other => panic!("expected access-denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_cancels_the_generation_in_flight() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let chat = test.caller(CHAT, "acme", grants(true, false, &["smollm2"]));
    let hurried = chat.with_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let error = hurried.failure("Write a long essay about rivers.").await;
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The engine dropped that sequence and serves the next request at once.
    let patient = chat.with_timeout(Duration::from_secs(120));
    assert!(!patient.output("Hi!").await.is_empty());
}

/// Tokens are counted whatever way a generation ends: a stream the agent
/// drops after its first piece still costs its prompt and what the engine
/// generated, and the count reaches the report and the audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_counted_exactly_even_when_a_stream_is_dropped() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let probe = test
        .caller(
            sovra_test_artifacts::PROBE,
            "acme",
            grants(true, true, &["smollm2"]),
        )
        .with_timeout(Duration::from_secs(120));
    let dropped = probe.report("first-token:smollm2").await;
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

    let finished = probe.report("generate:smollm2").await;
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

    let records = test.runtime.audit().recent("acme", 10).unwrap();
    assert_eq!(records[0].usage, finished.usage);
    assert_eq!(records[1].usage, dropped.usage);
    let days = test.runtime.audit().usage("acme", 0).unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(
        days[0].generated_tokens,
        used.generated_tokens + used_again.generated_tokens
    );
    assert_eq!(days[0].invocations, 2);
}

/// A guest's generation held to a JSON Schema answers JSON that validates;
/// a schema that cannot be compiled is the guest's `invalid-input`, and the
/// same agent serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_gets_json_that_validates_or_a_typed_refusal() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let probe = test
        .caller(
            sovra_test_artifacts::PROBE,
            "acme",
            grants(true, true, &["smollm2"]),
        )
        .with_timeout(Duration::from_secs(120));
    let schema = serde_json::json!({
        "type": "object",
        "properties": { "name": { "type": "string" }, "age": { "type": "integer" } },
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let answer = probe.output(&format!("json-schema:{schema}")).await;
    let value: serde_json::Value = serde_json::from_str(&answer).expect(&answer);
    assert!(
        jsonschema::validator_for(&schema).unwrap().is_valid(&value),
        "{answer}"
    );

    let (kind, message) = agent_error(probe.failure("json-schema:{\"type\": \"fish\"}").await);
    assert_eq!(kind, AgentErrorKind::InvalidInput, "{message}");
    assert!(message.contains("JSON Schema"), "{message}");
    assert_eq!(probe.output(&format!("json-schema:{schema}")).await, answer);
}
