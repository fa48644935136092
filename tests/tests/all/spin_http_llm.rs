//! A Spin HTTP component built with Spin's published Rust SDK runs
//! unmodified: each invocation is an HTTP request to its handler, and
//! Spin's LLM interface reaches the tenant's allowed models through sovra's
//! engine, with usage and denials accounted as for any agent.

use std::path::Path;
use std::sync::Arc;

use sovra_runtime::http_trigger::{HEADER_PREFIX, PATH, STATUS};
use sovra_runtime::{Agent, AgentManifest, Grants, Invocation, InvokeError, World};
use sovra_test_artifacts::SPIN_HTTP_LLM;

use crate::support::{failure, grants, invocation, invoke, runtime_with_models};

fn load(runtime: &sovra_runtime::Runtime) -> Arc<Agent> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/spin-http-llm/agent.toml");
    let manifest = AgentManifest::parse(&std::fs::read(manifest).unwrap()).unwrap();
    let agent = runtime
        .load_file(Path::new(SPIN_HTTP_LLM), Some(manifest))
        .expect("a Spin HTTP component loads");
    assert_eq!(agent.manifest().world, World::Http);
    agent
}

fn request(models: &[&str], path: &str, body: &str, headers: &[(&str, &str)]) -> Invocation {
    let mut invocation = invocation("acme", grants(false, false, models), body);
    invocation.metadata.push((PATH.into(), path.into()));
    for (name, value) in headers {
        invocation
            .metadata
            .push((format!("{HEADER_PREFIX}{name}"), (*value).into()));
    }
    invocation
}

fn meta<'a>(metadata: &'a [(String, String)], key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_infer_and_embeddings_reach_the_tenants_models() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let spin = load(&test.runtime);
    let both = ["smollm2", "minilm"];

    let inferred = invoke(
        &test.runtime,
        &spin,
        request(&both, "/infer", "The capital of France is", &[]),
    )
    .await;
    let response = inferred.result.as_ref().unwrap();
    assert_eq!(meta(&response.metadata, STATUS), Some("200"));
    assert!(response.output.contains("Paris"), "{}", response.output);
    // The usage Spin reports is sovra's own accounting of the generation.
    let usage = &inferred.usage[0];
    assert_eq!(usage.model, "smollm2");
    let reported = meta(
        &response.metadata,
        &format!("{HEADER_PREFIX}x-generated-tokens"),
    );
    assert_eq!(reported, Some(usage.generated_tokens.to_string().as_str()));

    let embedded = invoke(
        &test.runtime,
        &spin,
        request(
            &both,
            "/embed",
            "one line\nanother line",
            &[("x-model", "minilm")],
        ),
    )
    .await;
    let response = embedded.result.as_ref().unwrap();
    let (lengths, tokens) = response.output.split_once(" tokens=").unwrap();
    assert_eq!(lengths, "384,384");
    assert_eq!(tokens, embedded.usage[0].prompt_tokens.to_string());
    assert!(embedded.usage[0].prompt_tokens > 0);

    let missing = invoke(&test.runtime, &spin, request(&both, "/nowhere", "x", &[])).await;
    assert_eq!(meta(&missing.result.unwrap().metadata, STATUS), Some("404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_off_the_allowlist_is_spins_model_not_supported_and_audited() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let spin = load(&test.runtime);
    // minilm allowed, smollm2 not: the handler gets ModelNotSupported and
    // answers 500 (spin-sdk's answer to a handler error).
    let denied = invoke(
        &test.runtime,
        &spin,
        request(&["minilm"], "/infer", "The capital of France is", &[]),
    )
    .await;
    let response = denied.result.unwrap();
    assert_eq!(meta(&response.metadata, STATUS), Some("500"));
    assert!(
        response.output.contains("ModelNotSupported"),
        "{}",
        response.output
    );
    assert!(denied.usage.is_empty());
    let audit = test.runtime.audit().recent("acme", 1).unwrap();
    assert_eq!(audit[0].denials, ["model: smollm2"]);

    // No inference grant at all: refused before the handler runs.
    let refused = failure(
        &test.runtime,
        &spin,
        Invocation {
            grants: Grants::none(),
            ..request(&[], "/infer", "hi", &[])
        },
    )
    .await;
    assert!(
        matches!(refused, InvokeError::NotGranted { .. }),
        "{refused:?}"
    );

    // A body larger than the host reads: a typed limit, the node unharmed.
    let flood = failure(
        &test.runtime,
        &spin,
        request(&["smollm2"], "/flood", "", &[]),
    )
    .await;
    match flood {
        InvokeError::Agent(error) => {
            assert_eq!(
                error.kind,
                sovra_runtime::AgentErrorKind::LimitExceeded,
                "{error:?}"
            );
        }
        other => panic!("expected the body limit, got {other:?}"),
    }

    // A request the metadata cannot make is the caller's error.
    let bad = failure(
        &test.runtime,
        &spin,
        request(&["smollm2"], "no-slash", "x", &[]),
    )
    .await;
    assert!(matches!(bad, InvokeError::InvalidInvocation(_)), "{bad:?}");
}
