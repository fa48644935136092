use sovra_runtime::{AgentErrorKind, Grants, InvokeError, World};
use sovra_test_artifacts::ECHO_TOOL;

use crate::support::runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_called_through_the_tool_world() {
    let test = runtime();
    let tool = test.caller(ECHO_TOOL, "acme", Grants::none());
    assert_eq!(tool.agent().info().world, World::Tool);
    assert_eq!(tool.agent().manifest().world, World::Tool);
    assert_eq!(tool.output(r#"{"a":1}"#).await, r#"{"a":1}"#);
    match tool.failure(" ").await {
        InvokeError::Agent(error) => assert_eq!(error.kind, AgentErrorKind::InvalidInput),
        other => panic!("expected an agent error, got {other:?}"),
    }
}
