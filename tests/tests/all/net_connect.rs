use std::path::Path;

use sovra_runtime::LoadError;
use sovra_test_artifacts::NET_CONNECT;

use crate::support::runtime;

#[test]
fn a_component_that_imports_sockets_is_refused_at_load() {
    let test = runtime();
    let error = test
        .runtime
        .load_file(Path::new(NET_CONNECT), None)
        .unwrap_err();
    match &error {
        LoadError::UnsupportedImport(import) => {
            assert!(
                import.interface.starts_with("wasi:sockets/"),
                "{}",
                import.interface
            );
        }
        other => panic!("expected UnsupportedImport, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("wasi:sockets") && message.contains("no network access"),
        "{message}"
    );
}
