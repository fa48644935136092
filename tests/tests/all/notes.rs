use sovra_runtime::{AgentErrorKind, InvokeError};
use sovra_test_artifacts::NOTES;

use crate::support::{grants, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_finds_and_lists_with_parameters() {
    let test = runtime();
    let notes = test.caller(NOTES, "acme", grants(false, true, &[]));
    assert_eq!(notes.output("add buy milk").await, "added note #1");
    assert_eq!(notes.output("add call mom").await, "added note #2");
    // Input is bound as a parameter, never spliced into SQL.
    assert_eq!(
        notes.output("add x'); DROP TABLE notes; --").await,
        "added note #3"
    );
    assert_eq!(notes.output("find milk").await, "#1 buy milk");
    assert_eq!(
        notes.output("find DROP").await,
        "#3 x'); DROP TABLE notes; --"
    );
    assert_eq!(notes.output("list").await.lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_are_the_agents_own_typed_error() {
    let test = runtime();
    let notes = test.caller(NOTES, "acme", grants(false, true, &[]));
    match notes.failure("frobnicate").await {
        InvokeError::Agent(agent) => {
            assert_eq!(agent.kind, AgentErrorKind::InvalidInput);
            assert!(agent.message.contains("usage"));
        }
        other => panic!("expected an agent error, got {other:?}"),
    }
}
