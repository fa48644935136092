use std::path::Path;

use sovra_runtime::LoadError;
use sovra_test_artifacts::HTTP_FETCH;

use crate::support::runtime;

#[test]
fn a_component_that_imports_wasi_http_is_refused_at_load() {
    let test = runtime();
    let error = test
        .runtime
        .load_file(Path::new(HTTP_FETCH), None)
        .unwrap_err();
    match &error {
        LoadError::UnsupportedImport(import) => {
            assert!(
                import.interface.starts_with("wasi:http/"),
                "{}",
                import.interface
            );
        }
        other => panic!("expected UnsupportedImport, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("wasi:http") && message.contains("no network access"),
        "{message}"
    );
}
