//! The node's HTTP trigger: a Spin HTTP component, packed with its manifest
//! by `sovra plugin pack`, signed, submitted, approved and installed like any
//! plugin, answers requests at its install's `/http` route with its own
//! status, headers and body, reaching the models through Spin's LLM
//! interface under the install's grants.

mod support;

use serde_json::json;
use sovra_test_artifacts::{HELLO, SPIN_HTTP_LLM};
use support::{install, publish, publisher, sovra, start_node, succeeds, tenant};

fn models_file() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf").exists() {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_MODELS").is_none(),
            "SOVRA_REQUIRE_MODELS is set but the models are missing"
        );
        eprintln!("skipped: models not fetched (scripts/fetch-models)");
        return None;
    }
    Some(root.join("models.toml").canonicalize().unwrap())
}

/// A raw HTTP request to the node: status, one header, body.
fn request(
    url: &str,
    method: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut response = agent
        .run(builder.body(body.to_owned()).unwrap())
        .expect("the node answers");
    let generated = response
        .headers()
        .get("x-generated-tokens")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status().as_u16();
    (
        status,
        generated,
        response.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn a_spin_component_answers_at_its_installs_http_route() {
    let Some(models) = models_file() else { return };
    let (dir, _node, client) = start_node(&format!("models = {:?}", models.to_str().unwrap()));
    let acme = tenant(&client, "acme");

    // The publisher packs the Spin component with its manifest, as any
    // component built by another toolchain.
    let packed = dir.path().join("spin-http-llm.wasm");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/guests/spin-http-llm/agent.toml");
    succeeds(&sovra(&[
        "plugin",
        "pack",
        SPIN_HTTP_LLM,
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        packed.to_str().unwrap(),
    ]));
    let key = publisher(&client, "spin-fans");
    publish(&client, &key, packed.to_str().unwrap());
    publish(&client, &key, HELLO);
    let grants = json!({"models": ["smollm2", "minilm"], "timeout_ms": 30000});
    let installed = install(&client, "acme", &acme, "spin-http-llm", grants);
    assert_eq!(installed.status, 200, "{}", installed.text);
    let installed = install(&client, "acme", &acme, "hello", json!({}));
    assert_eq!(installed.status, 200, "{}", installed.text);

    let root = format!("{}/v1/tenants/acme/installs/spin-http-llm/http", client.url);
    let (status, generated, body) = request(
        &format!("{root}/infer"),
        "POST",
        Some(&acme),
        &[],
        "The capital of France is",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Paris"), "{body}");
    assert!(generated.is_some_and(|n| n.parse::<u32>().unwrap() > 0));

    // The handler's own status comes back as it is.
    let (status, _, body) = request(&format!("{root}/nowhere?x=1"), "GET", Some(&acme), &[], "");
    assert_eq!((status, body.as_str()), (404, "no such route"));

    // Spin's error for a model outside the install's grants: the handler's 500.
    let (status, _, body) = request(
        &format!("{root}/embed"),
        "POST",
        Some(&acme),
        &[("x-model", "cartpole-policy")],
        "text",
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("ModelNotSupported"), "{body}");

    // Without the tenant's key: refused before the handler runs.
    let (status, _, _) = request(&format!("{root}/infer"), "POST", None, &[], "hi");
    assert_eq!(status, 401);

    // A plugin that is not an HTTP handler has no HTTP trigger.
    let hello = format!("{}/v1/tenants/acme/installs/hello/http", client.url);
    let (status, _, body) = request(&hello, "GET", Some(&acme), &[], "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not-http"), "{body}");

    // Each request is an invocation in the tenant's history.
    let history = client.get("/v1/tenants/acme/invocations?limit=10", Some(&acme));
    let agents = history.column("invocations", "agent");
    assert_eq!(
        agents.iter().filter(|a| **a == "spin-http-llm").count(),
        3,
        "{agents:?}"
    );
}
