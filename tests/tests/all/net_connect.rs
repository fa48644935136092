use std::net::TcpListener;
use std::time::Duration;

use sovra_runtime::{AgentErrorKind, Grants, InvokeError};
use sovra_test_artifacts::NET_CONNECT;

use crate::support::runtime;

/// A guest may import `wasi:sockets` (language runtimes such as CPython do),
/// but no socket is ever made: connecting, even to a listener on the host's
/// own loopback, fails inside the guest with access denied, and nothing
/// reaches the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_imports_sockets_loads_but_reaches_no_network() {
    let test = runtime();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let caller = test.caller(NET_CONNECT, "mallory", Grants::none());
    match caller.failure(&address).await {
        InvokeError::Agent(error) => {
            assert_eq!(error.kind, AgentErrorKind::Unavailable, "{error:?}");
            let message = error.message.to_lowercase();
            assert!(
                message.contains("denied") || message.contains("not allowed"),
                "{message}"
            );
        }
        other => panic!("expected the guest's own error, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        listener.accept().is_err(),
        "the guest's connection reached the host's listener"
    );
}
