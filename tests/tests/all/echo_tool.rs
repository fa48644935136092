use sovra_runtime::{AgentErrorKind, Grants, InvokeError, World};
use sovra_test_artifacts::ECHO_TOOL;

use crate::support::{failure, invocation, output, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_called_through_the_tool_world() {
    let test = runtime();
    let tool = test.load(ECHO_TOOL);
    assert_eq!(tool.info().world, World::Tool);
    assert_eq!(tool.manifest().world, World::Tool);
    let echoed = output(
        &test.runtime,
        &tool,
        invocation("acme", Grants::none(), r#"{"a":1}"#),
    )
    .await;
    assert_eq!(echoed, r#"{"a":1}"#);
    match failure(
        &test.runtime,
        &tool,
        invocation("acme", Grants::none(), " "),
    )
    .await
    {
        InvokeError::Agent(error) => assert_eq!(error.kind, AgentErrorKind::InvalidInput),
        other => panic!("expected an agent error, got {other:?}"),
    }
}
