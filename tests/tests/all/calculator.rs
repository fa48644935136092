//! The example `calculator` tool, called directly (as the host calls a tool).

use sovra_runtime::{AgentErrorKind, Grants, InvokeError};
use sovra_test_artifacts::CALCULATOR;

use crate::support::runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluates_arithmetic_and_refuses_what_is_not() {
    let test = runtime();
    let tool = test.caller(CALCULATOR, "acme", Grants::none());
    for (expression, result) in [
        ("2 + 3 * 4", "14.0"),
        ("2 * (3 + 4) ^ 2", "98.0"),
        ("2 ^ 3 ^ 2", "512.0"),
        ("-(1.5 - 4) / 2", "1.25"),
    ] {
        let input = format!(r#"{{"expression": "{expression}"}}"#);
        assert_eq!(
            tool.output(&input).await,
            format!(r#"{{"result":{result}}}"#),
            "{expression}"
        );
    }
    for bad in ["1 / 0", "2 +", "(1", "2 $ 3", "9 ^ 9 ^ 9"] {
        let input = format!(r#"{{"expression": "{bad}"}}"#);
        match tool.failure(&input).await {
            InvokeError::Agent(error) => {
                assert_eq!(error.kind, AgentErrorKind::InvalidInput, "{bad}: {error}")
            }
            other => panic!("{bad}: {other}"),
        }
    }
}
