//! The example `units` tool, called directly (as the host calls a tool).

use sovra_runtime::{AgentErrorKind, Grants, InvokeError};
use sovra_test_artifacts::UNITS;

use crate::support::runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converts_within_a_kind_and_refuses_across_kinds() {
    let test = runtime();
    let tool = test.caller(UNITS, "acme", Grants::none());
    let value = |output: String| -> f64 {
        let json: serde_json::Value = serde_json::from_str(&output).unwrap();
        json["value"].as_f64().unwrap()
    };
    let miles = value(
        tool.output(r#"{"value": 42, "from": "km", "to": "mi"}"#)
            .await,
    );
    assert!((miles - 26.0975).abs() < 1e-3, "{miles}");
    let fahrenheit = value(
        tool.output(r#"{"value": 100, "from": "c", "to": "f"}"#)
            .await,
    );
    assert!((fahrenheit - 212.0).abs() < 1e-9, "{fahrenheit}");
    let minutes = value(
        tool.output(r#"{"value": 2, "from": "h", "to": "min"}"#)
            .await,
    );
    assert!((minutes - 120.0).abs() < 1e-9, "{minutes}");
    match tool
        .failure(r#"{"value": 1, "from": "kg", "to": "km"}"#)
        .await
    {
        InvokeError::Agent(error) => {
            assert_eq!(error.kind, AgentErrorKind::InvalidInput);
            assert!(error.message.contains("cannot convert mass"), "{error}");
        }
        other => panic!("{other}"),
    }
}
