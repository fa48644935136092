//! Agents written in Python (componentize-py) and JavaScript
//! (componentize-js), built by `scripts/build-polyglot-agents` the way their
//! authors would: against the world their agent.toml calls for, packed with
//! `sovra plugin pack`. They load, carry their manifest, import only what it
//! requests, and behave as their Rust twins do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sovra_runtime::packaging::{PackError, embed_manifest};
use sovra_runtime::{
    AgentErrorKind, ComponentInfo, Grants, Invocation, InvokeError, Limits, World,
};
use sovra_test_artifacts::HELLO;

use crate::support::{
    HANDBOOK, assert_cites_the_refunds_passage, failure, grants, invocation, invoke, output,
    runtime, runtime_with_models,
};

/// The agents the script builds, in both languages.
const LANGUAGES: [&str; 2] = ["py", "js"];

/// The packed component `name`, or `None` (a skip) when the script has not
/// run; `SOVRA_REQUIRE_POLYGLOT` makes that a failure.
fn built(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/polyglot")
        .join(format!("{name}.wasm"));
    if !path.exists() {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_POLYGLOT").is_none(),
            "SOVRA_REQUIRE_POLYGLOT is set but {} is missing; run scripts/build-polyglot-agents",
            path.display()
        );
        eprintln!("skipping: {name} not built (run scripts/build-polyglot-agents)");
        return None;
    }
    Some(path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Invocations of model-backed agents: engines on two cores are slow, and
/// an interpreter needs more than the default memory.
fn patient(mut invocation: Invocation) -> Invocation {
    invocation.limits = Limits {
        timeout: Duration::from_secs(120),
        max_memory: 128 * 1024 * 1024,
    };
    invocation
}

#[test]
fn each_component_carries_its_manifest_and_imports_only_what_it_requests() {
    for language in LANGUAGES {
        for (agent, requested, unrequested) in [
            (
                "hello",
                &[][..],
                &["kv", "sql", "vector", "inference", "tools"][..],
            ),
            (
                "chat",
                &["kv", "inference"][..],
                &["sql", "vector", "tools"][..],
            ),
            (
                "rag",
                &["vector", "inference"][..],
                &["kv", "sql", "tools"][..],
            ),
        ] {
            let name = format!("{agent}-{language}");
            let Some(path) = built(&name) else { return };
            let info = ComponentInfo::read(&std::fs::read(&path).unwrap()).unwrap();
            let manifest = info.manifest.as_ref().expect("packed with its manifest");
            assert_eq!(manifest.name, name);
            assert_eq!(info.world, World::Agent);
            let imports_sovra = |interface: &str| {
                info.imports
                    .iter()
                    .any(|i| i.starts_with(&format!("sovra:agent/{interface}@")))
            };
            for interface in requested {
                assert!(
                    imports_sovra(interface),
                    "{name} lacks {interface}: {:?}",
                    info.imports
                );
            }
            for interface in unrequested {
                assert!(!imports_sovra(interface), "{name} imports {interface}");
            }
            assert!(
                !info.imports.iter().any(|i| i.starts_with("wasi:http/")),
                "{name}: {:?}",
                info.imports
            );
        }
    }
}

/// The same agent in three languages gives the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_answers_the_same_in_rust_python_and_javascript() {
    let test = runtime();
    let rust = test.load(HELLO);
    let expected = output(
        &test.runtime,
        &rust,
        invocation("acme", Grants::none(), " sovereign cloud "),
    )
    .await;
    assert_eq!(expected, "Hello, sovereign cloud!");
    for language in LANGUAGES {
        let Some(path) = built(&format!("hello-{language}")) else {
            return;
        };
        let agent = test.load(path_str(&path));
        for _ in 0..3 {
            let answer = output(
                &test.runtime,
                &agent,
                invocation("acme", Grants::none(), " sovereign cloud "),
            )
            .await;
            assert_eq!(answer, expected, "{language}");
        }
    }
}

/// Errors the agent raises reach the caller typed; a capability the tenant
/// did not grant is refused before the interpreter starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_denials_are_typed_in_every_language() {
    let test = runtime();
    for language in LANGUAGES {
        let Some(path) = built(&format!("chat-{language}")) else {
            return;
        };
        let chat = test.load(path_str(&path));
        let denied = failure(
            &test.runtime,
            &chat,
            invocation("acme", Grants::none(), "hi"),
        )
        .await;
        assert!(
            matches!(denied, InvokeError::NotGranted { .. }),
            "{language}: {denied:?}"
        );
        let empty = failure(
            &test.runtime,
            &chat,
            patient(invocation("acme", grants(true, false, &["smollm2"]), "   ")),
        )
        .await;
        match empty {
            InvokeError::Agent(error) => {
                assert_eq!(error.kind, AgentErrorKind::InvalidInput, "{language}");
                assert!(
                    error.message.contains("say something"),
                    "{language}: {error:?}"
                );
            }
            other => panic!("{language}: expected the agent's invalid-input, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_keeps_the_conversation_in_kv_in_python_and_javascript() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    for language in LANGUAGES {
        let Some(path) = built(&format!("chat-{language}")) else {
            return;
        };
        let chat = test.load(path_str(&path));
        let tenant = format!("chat-{language}");
        let ask = |input: &str| {
            patient(invocation(
                &tenant,
                grants(true, false, &["smollm2"]),
                input,
            ))
        };
        let first = invoke(&test.runtime, &chat, ask("What is the capital of France?")).await;
        let answer = first.result.as_ref().unwrap().output.clone();
        assert!(answer.contains("Paris"), "{language}: {answer}");
        let second = invoke(&test.runtime, &chat, ask("What is it famous for?")).await;
        assert!(!second.result.as_ref().unwrap().output.is_empty());
        // The second prompt carries the first turn: the history was kept.
        let prompt_tokens =
            |report: &sovra_runtime::InvocationReport| report.usage[0].prompt_tokens;
        assert!(
            prompt_tokens(&second) > prompt_tokens(&first) + 10,
            "{language}: {:?} then {:?}",
            first.usage,
            second.usage
        );
        assert!(
            second.logs.iter().any(|line| line.message == "answered"),
            "{language}: {:?}",
            second.logs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_answers_from_the_tenants_documents_in_python_and_javascript() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    for language in LANGUAGES {
        let Some(path) = built(&format!("rag-{language}")) else {
            return;
        };
        let rag = test.load(path_str(&path));
        let tenant = format!("rag-{language}");
        let ask = |tenant: &str, input: &str| {
            let mut invocation = patient(invocation(
                tenant,
                grants(false, false, &["minilm", "smollm2"]),
                input,
            ));
            invocation.grants.vector = true;
            invocation
                .metadata
                .push(("source".into(), "handbook".into()));
            invocation
        };
        let ingested = output(&test.runtime, &rag, ask(&tenant, HANDBOOK)).await;
        assert_eq!(ingested, "ingested 3 passages from handbook", "{language}");
        let answer = invoke(
            &test.runtime,
            &rag,
            ask(&tenant, "How long do refunds take?"),
        )
        .await;
        let response = answer.result.unwrap();
        assert_cites_the_refunds_passage(&response);
        // Another tenant has none of these documents.
        let other = output(
            &test.runtime,
            &rag,
            ask("globex", "How long do refunds take?"),
        )
        .await;
        assert_eq!(
            other, "I have no documents to answer from yet.",
            "{language}"
        );
    }
}

/// The component as its toolchain built it: the packed one without the
/// manifest section `sovra plugin pack` appended last.
fn unpacked(packed: &[u8]) -> Vec<u8> {
    use wasmparser::{Parser, Payload};
    let mut manifest_start = None;
    for payload in Parser::new(0).parse_all(packed) {
        if let Payload::CustomSection(section) = payload.unwrap()
            && section.name() == sovra_runtime::manifest::MANIFEST_SECTION
        {
            // The section's id byte and size come before its name.
            let header = 1 + leb128_len(section.range().len());
            manifest_start = Some(section.range().start - header);
        }
    }
    packed[..manifest_start.expect("a manifest section")].to_vec()
}

fn leb128_len(mut value: usize) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

#[test]
fn packing_checks_the_manifest_against_the_component() {
    let Some(path) = built("chat-py") else { return };
    let packed = std::fs::read(&path).unwrap();
    let info = ComponentInfo::read(&packed).unwrap();
    let manifest = info.manifest_source.clone().unwrap();

    // Packing twice is refused: one manifest per component.
    let twice = embed_manifest(&packed, &manifest).unwrap_err();
    assert!(matches!(twice, PackError::AlreadyPacked), "{twice}");

    // Unpacked and packed again, the component is the same.
    let raw = unpacked(&packed);
    assert!(ComponentInfo::read(&raw).unwrap().manifest.is_none());
    assert_eq!(embed_manifest(&raw, &manifest).unwrap(), packed);

    // A manifest that does not request what the component imports.
    let without_kv = String::from_utf8(manifest.clone())
        .unwrap()
        .replace("kv = true", "kv = false");
    let error = embed_manifest(&raw, without_kv.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sovra:agent/kv") && error.contains("`kv`"),
        "{error}"
    );

    // A manifest for another world.
    let as_tool = String::from_utf8(manifest)
        .unwrap()
        .replace("world = \"agent\"", "world = \"tool\"");
    let error = embed_manifest(&raw, as_tool.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(error.contains("world"), "{error}");
}
