//! Agents calling tools: each tool runs in a sandbox of its own under its
//! own install's grants, only when granted and installed, only with input
//! its schema accepts, and is audited under its caller.

use std::collections::BTreeSet;

use sovra_runtime::Grants;
use sovra_test_artifacts::{ECHO_TOOL, HELLO, NESTED_TOOL, TOOL_CALLER};

use crate::support::{Caller, TestRuntime, runtime, tools};

/// Tools granted to the caller by name (it has no other capability).
fn granted(names: &[&str]) -> Grants {
    Grants {
        tools: names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>(),
        ..Grants::none()
    }
}

/// `tool-caller` as `acme`, granted echo-tool, nested-tool and calculator;
/// the tenant has installed echo-tool (no grants) and nested-tool (kv, and
/// itself as a tool).
fn caller(test: &TestRuntime) -> Caller {
    let nested = Grants {
        kv: true,
        ..granted(&["nested-tool"])
    };
    let installed = tools(
        &test.runtime,
        &[(ECHO_TOOL, Grants::none()), (NESTED_TOOL, nested)],
    );
    test.caller(
        TOOL_CALLER,
        "acme",
        granted(&["echo-tool", "nested-tool", "calculator"]),
    )
    .with_tools(installed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_runs_under_its_own_grants_and_is_audited_under_its_caller() {
    let test = runtime();
    let caller = caller(&test);
    assert_eq!(
        caller.output(r#"call echo-tool {"a":1}"#).await,
        r#"{"a":1}"#
    );
    // The caller has no kv; the tool's own install does.
    let report = caller.report(r#"call nested-tool {"mode":"count"}"#).await;
    assert_eq!(report.result.unwrap().output, r#"{"calls":1}"#);
    // The tool's host calls are charged to the caller: its own call_tool
    // and the tool's kv increment.
    assert_eq!(report.host_calls, 2);
    test.runtime.audit().flush();
    let records = test.runtime.audit().recent("acme", 10).unwrap();
    let tool_record = records
        .iter()
        .find(|r| r.agent == "nested-tool")
        .expect("the tool's own invocation is audited");
    assert_eq!(
        tool_record.parent.as_deref(),
        Some(report.invocation_id.as_str())
    );
    assert_eq!(tool_record.outcome, "ok");
    let caller_record = records
        .iter()
        .find(|r| r.invocation_id == report.invocation_id)
        .unwrap();
    assert_eq!(caller_record.parent, None);
    // Nothing leaked the other way: the kv count is the tool's, in acme's
    // store, and the caller's grant did not change.
    assert_eq!(
        caller.output(r#"call nested-tool {"mode":"count"}"#).await,
        r#"{"calls":2}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_not_granted_not_installed_or_given_bad_input_are_refused_by_kind() {
    let test = runtime();
    let caller = caller(&test);
    // Granted but not installed.
    let missing = caller
        .output(r#"call calculator {"expression":"1+1"}"#)
        .await;
    assert!(missing.starts_with("error not-found:"), "{missing}");
    // Installed but not granted: refused first, and recorded as a denial.
    let report = caller.report("call units {}").await;
    let denied = report.result.unwrap().output;
    assert!(denied.starts_with("error access-denied:"), "{denied}");
    test.runtime.audit().flush();
    let records = test.runtime.audit().recent("acme", 10).unwrap();
    let record = records
        .iter()
        .find(|r| r.invocation_id == report.invocation_id)
        .unwrap();
    assert_eq!(record.denials, vec!["tool: units".to_owned()]);
    // Input checked against the tool's schema before the tool runs.
    let wrong = caller.output(r#"call nested-tool {"mode":"fly"}"#).await;
    assert!(
        wrong.starts_with("error invalid-input:") && wrong.contains("/mode"),
        "{wrong}"
    );
    let not_json = caller.output("call nested-tool mode=count").await;
    assert!(not_json.contains("not JSON"), "{not_json}");
    // An agent is not a tool.
    let with_agent = tools(
        &test.runtime,
        &[(HELLO, Grants::none()), (ECHO_TOOL, Grants::none())],
    );
    let hello_caller = test
        .caller(TOOL_CALLER, "acme", granted(&["hello", "echo-tool"]))
        .with_tools(with_agent);
    let not_a_tool = hello_caller.output("call hello {}").await;
    assert!(
        not_a_tool.starts_with("error not-found:") && not_a_tool.contains("not a tool"),
        "{not_a_tool}"
    );
    // Listed: what is granted and installed, as the tools describe themselves.
    assert_eq!(caller.output("list").await, "echo-tool,nested-tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_grants_never_reach_its_tools() {
    let test = runtime();
    // The caller holds kv; the tool's install does not.
    let installed = tools(&test.runtime, &[(NESTED_TOOL, granted(&["nested-tool"]))]);
    let caller = test
        .caller(
            TOOL_CALLER,
            "acme",
            Grants {
                kv: true,
                ..granted(&["nested-tool"])
            },
        )
        .with_tools(installed);
    let refused = caller.output(r#"call nested-tool {"mode":"count"}"#).await;
    assert!(
        refused.starts_with("error access-denied:") && refused.contains("`kv`"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_makes_a_bounded_number_of_tool_calls() {
    let test = runtime();
    let caller = caller(&test);
    let fanned = caller.output("fan-out echo-tool 40 {}").await;
    let limit = sovra_runtime::limits::MAX_TOOL_CALLS;
    assert!(
        fanned.starts_with(&format!("{limit} error limit-exceeded:")),
        "{fanned}"
    );
}
