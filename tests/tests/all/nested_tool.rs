//! Tools calling tools: nesting is bounded, and a tool gets only what is
//! left of its caller's time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sovra_runtime::limits::MAX_TOOL_DEPTH;
use sovra_runtime::tools::{InstalledTool, StaticTools};
use sovra_runtime::{Grants, Limits};
use sovra_test_artifacts::{NESTED_TOOL, TOOL_CALLER};

use crate::support::{Caller, TestRuntime, runtime};

/// `tool-caller` granted nested-tool, whose own install grants it kv and
/// itself (so it may recurse).
fn caller_of_nested(test: &TestRuntime) -> Caller {
    let mut installed = StaticTools::new();
    installed.add(InstalledTool {
        agent: test.load(NESTED_TOOL),
        grants: Grants {
            kv: true,
            tools: BTreeSet::from(["nested-tool".to_owned()]),
            ..Grants::none()
        },
        limits: Limits::default(),
    });
    test.caller(
        TOOL_CALLER,
        "acme",
        Grants {
            tools: BTreeSet::from(["nested-tool".to_owned()]),
            ..Grants::none()
        },
    )
    .with_tools(installed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_calling_itself_stops_at_the_depth_limit() {
    let test = runtime();
    let caller = caller_of_nested(&test);
    let report = caller
        .report(r#"call nested-tool {"mode":"recurse"}"#)
        .await;
    let output = report.result.unwrap().output;
    assert!(
        output.starts_with("error limit-exceeded:")
            && output.contains(&format!("at most {MAX_TOOL_DEPTH} deep")),
        "{output}"
    );
    // One audited invocation per level, each under the one that called it.
    test.runtime.audit().flush();
    let records = test.runtime.audit().recent("acme", 20).unwrap();
    let mut parent = report.invocation_id.clone();
    for _ in 0..MAX_TOOL_DEPTH {
        let child = records
            .iter()
            .find(|r| r.parent.as_deref() == Some(parent.as_str()))
            .unwrap_or_else(|| panic!("no tool invocation under {parent}: {records:#?}"));
        assert_eq!(child.agent, "nested-tool");
        parent = child.invocation_id.clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_tool_gets_only_its_callers_remaining_time() {
    let test = runtime();
    let caller = caller_of_nested(&test).with_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let report = caller.report(r#"call nested-tool {"mode":"spin"}"#).await;
    let took = started.elapsed();
    // The tool's own limit is the default 5 s; it was cut to what the
    // caller had left, so the caller could still answer in time.
    let output = report.result.unwrap().output;
    assert!(
        output.starts_with("error limit-exceeded:") && output.contains("ran out of time"),
        "{output}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
}
