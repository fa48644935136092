//! Bad components, manifests, tenants and limits get clear, typed errors.

use std::path::Path;
use std::time::Duration;

use sovra_runtime::{AgentManifest, Grants, InvokeError, Limits, LoadError, TenantId};
use sovra_test_artifacts::{COUNTER, HELLO};

use crate::support::runtime;

#[test]
fn garbage_core_modules_and_truncated_components_are_refused() {
    let test = runtime();
    let load = |bytes: &[u8]| test.runtime.load(bytes, None).unwrap_err();
    assert!(matches!(load(b"hello world"), LoadError::NotWasm));
    assert!(matches!(load(b"\0asm\x01\0\0\0"), LoadError::CoreModule));
    let hello = std::fs::read(HELLO).unwrap();
    let truncated = load(&hello[..hello.len() / 2]);
    assert!(
        matches!(truncated, LoadError::Malformed(_)),
        "{truncated:?}"
    );
    let missing = test
        .runtime
        .load_file(Path::new("/nonexistent/agent.wasm"), None)
        .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/agent.wasm"),
        "{missing}"
    );
    let core = load(b"\0asm\x01\0\0\0");
    assert!(core.to_string().contains("wasm32-wasip2"), "{core}");
}

#[test]
fn a_manifest_must_request_what_the_component_imports() {
    let test = runtime();
    let bare = AgentManifest::parse(b"name = \"counter\"\nversion = \"0.1.0\"\nworld = \"agent\"")
        .unwrap();
    let error = test
        .runtime
        .load_file(Path::new(COUNTER), Some(bare))
        .unwrap_err();
    assert!(matches!(error, LoadError::ManifestMismatch(_)), "{error:?}");
    assert!(error.to_string().contains("sovra:agent/kv"), "{error}");
    let tool =
        AgentManifest::parse(b"name = \"hello\"\nversion = \"0.1.0\"\nworld = \"tool\"").unwrap();
    let error = test
        .runtime
        .load_file(Path::new(HELLO), Some(tool))
        .unwrap_err();
    assert!(error.to_string().contains("world"), "{error}");
}

#[test]
fn compiled_components_are_cached_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let config = sovra_runtime::RuntimeConfig::new(dir.path());
    let compiled = config.compiled_dir.clone().unwrap();
    let runtime = sovra_runtime::Runtime::new(config).unwrap();
    let hello = runtime.load_file(Path::new(HELLO), None).unwrap();
    let files: Vec<_> = std::fs::read_dir(&compiled)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .to_string_lossy()
            .starts_with(&hello.digest().to_hex())
    );
    // A second runtime loads from the cache (and works).
    drop(runtime);
    let runtime =
        sovra_runtime::Runtime::new(sovra_runtime::RuntimeConfig::new(dir.path())).unwrap();
    runtime.load_file(Path::new(HELLO), None).unwrap();
}

#[test]
fn a_component_precompiled_out_of_process_is_what_the_runtime_loads() {
    let dir = tempfile::tempdir().unwrap();
    let config = sovra_runtime::RuntimeConfig::new(dir.path());
    let compiled = config.compiled_dir.clone().unwrap();
    let bytes = std::fs::read(HELLO).unwrap();
    sovra_runtime::precompile_into(&compiled, &bytes).unwrap();
    let names = || -> Vec<_> {
        std::fs::read_dir(&compiled)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    let before = names();
    assert_eq!(before.len(), 1);
    // The pooling runtime accepts the on-demand worker's artifact: it finds
    // the same file and writes no second one.
    let modified = std::fs::metadata(compiled.join(&before[0]))
        .unwrap()
        .modified()
        .unwrap();
    let runtime = sovra_runtime::Runtime::new(config).unwrap();
    runtime.load(&bytes, None).unwrap();
    assert_eq!(names(), before);
    let after = std::fs::metadata(compiled.join(&before[0]))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(modified, after, "the runtime did not recompile");
    let error = sovra_runtime::precompile_into(&compiled, b"\0asm garbage").unwrap_err();
    assert!(matches!(error, LoadError::Compile(_)), "{error:?}");
}

#[test]
fn tenant_ids_are_validated() {
    for bad in ["../etc", "a/b", "", "UPPER"] {
        assert!(TenantId::new(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_outside_the_ceilings_are_refused() {
    let test = runtime();
    let hello = test.caller(HELLO, "acme", Grants::none());
    let huge = Limits {
        timeout: Duration::from_secs(3600),
        ..Limits::default()
    };
    let error = hello.with_limits(huge).failure("").await;
    assert!(
        matches!(error, InvokeError::InvalidInvocation(_)),
        "{error:?}"
    );
    let input = "x".repeat(sovra_runtime::limits::MAX_INPUT_BYTES + 1);
    let error = hello.failure(&input).await;
    assert!(error.to_string().contains("input"), "{error}");
}
