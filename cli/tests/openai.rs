//! The node's OpenAI-compatible API driven by the official `openai` Python
//! client (scripts/clients/openai_check.py), as an outside user would: list
//! models, chat, stream, text completion, stop sequences, JSON-schema output
//! (valid where the free answer is not), a tool call (whole and streamed) and
//! the answer after its result, embeddings, a schema that cannot compile, a
//! model not on the allowlist, an unsupported option and a wrong key. Then
//! the calls are in the tenant's audit chain with their tokens.
//!
//! Needs the models (scripts/fetch-models) and the client
//! (scripts/fetch-clients); skipped with a message without them, and
//! `SOVRA_REQUIRE_CLIENTS=1` makes the client's absence a failure.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{start_node, tenant};

/// The python of scripts/fetch-clients, if it has been run.
fn client_python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/clients/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("SOVRA_REQUIRE_CLIENTS").is_none(),
        "SOVRA_REQUIRE_CLIENTS is set but {} is missing; run scripts/fetch-clients",
        python.display()
    );
    eprintln!("skipping: the openai client is not installed (run scripts/fetch-clients)");
    None
}

#[test]
fn the_official_openai_client_works_against_a_node() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let models = root.join("models");
    if !models.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists() {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_MODELS").is_none(),
            "SOVRA_REQUIRE_MODELS is set but the models are missing"
        );
        eprintln!("skipping: models not fetched");
        return;
    }
    let Some(python) = client_python() else {
        return;
    };
    // smollm2 and minilm for everyone; `private` for globex only.
    let dir = tempfile::tempdir().unwrap();
    let models_toml = dir.path().join("models.toml");
    let smollm2 = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::write(
        &models_toml,
        format!(
            "[[model]]\nname = \"smollm2\"\npath = {smollm2:?}\nkind = \"text-generation\"\ntenants = \"all\"\n\n\
             [[model]]\nname = \"minilm\"\npath = {:?}\nkind = \"embedding\"\ntenants = \"all\"\n\n\
             [[model]]\nname = \"private\"\npath = {smollm2:?}\nkind = \"text-generation\"\ntenants = [\"globex\"]\n",
            models.join("all-MiniLM-L6-v2"),
        ),
    )
    .unwrap();
    let (_dir, _node, client) = start_node(&format!("models = {models_toml:?}"));
    let acme = tenant(&client, "acme");
    let out = Command::new(python)
        .arg(root.join("scripts/clients/openai_check.py"))
        .arg(format!("{}/v1", client.url))
        .arg(&acme)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("wrong key: 401"), "{stdout}");
    assert!(stdout.contains("tool call: get_weather"), "{stdout}");

    // Every completion is in acme's history, and its tokens in its usage.
    let history = client.get("/v1/tenants/acme/invocations?limit=50", Some(&acme));
    let agents = history.column("invocations", "agent");
    assert!(agents.contains(&"openai:chat.completions"), "{agents:?}");
    assert!(agents.contains(&"openai:completions"), "{agents:?}");
    assert!(agents.contains(&"openai:embeddings"), "{agents:?}");
    let usage = client.get("/v1/tenants/acme/usage", Some(&acme));
    let total = |model: &str, field: &str| -> u64 {
        usage.body["usage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|day| day["model"] == model)
            .map(|day| day[field].as_u64().unwrap())
            .sum()
    };
    assert!(total("smollm2", "generated_tokens") > 0, "{}", usage.text);
    assert!(total("minilm", "prompt_tokens") > 0, "{}", usage.text);
}
