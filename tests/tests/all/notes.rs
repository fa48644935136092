use sovra_runtime::{AgentErrorKind, InvokeError};
use sovra_test_artifacts::NOTES;

use crate::support::{failure, grants, invocation, output, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_finds_and_lists_with_parameters() {
    let test = runtime();
    let notes = test.load(NOTES);
    let sql = || grants(false, true, &[]);
    let run = |input: &'static str| output(&test.runtime, &notes, invocation("acme", sql(), input));
    assert_eq!(run("add buy milk").await, "added note #1");
    assert_eq!(run("add call mom").await, "added note #2");
    // Input is bound as a parameter, never spliced into SQL.
    assert_eq!(run("add x'); DROP TABLE notes; --").await, "added note #3");
    assert_eq!(run("find milk").await, "#1 buy milk");
    assert_eq!(run("find DROP").await, "#3 x'); DROP TABLE notes; --");
    assert_eq!(run("list").await.lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_are_the_agents_own_typed_error() {
    let test = runtime();
    let notes = test.load(NOTES);
    let error = failure(
        &test.runtime,
        &notes,
        invocation("acme", grants(false, true, &[]), "frobnicate"),
    )
    .await;
    match error {
        InvokeError::Agent(agent) => {
            assert_eq!(agent.kind, AgentErrorKind::InvalidInput);
            assert!(agent.message.contains("usage"));
        }
        other => panic!("expected an agent error, got {other:?}"),
    }
}
