//! Tools on a node: an agent calls the tenant's installed tool plugins under
//! the grants of each install, and each call is in the tenant's history
//! under its caller.

mod support;

use serde_json::json;
use sovra_test_artifacts::{ECHO_TOOL, TOOL_CALLER};
use support::{install, invoke, start_node, tenant, tenant_with};

#[test]
fn an_installed_tool_is_called_under_its_own_install_and_other_tenants_cannot_reach_it() {
    let (_dir, _node, client) = start_node("");
    let acme = tenant_with(
        &client,
        "acme",
        &[
            (ECHO_TOOL, "echo-tool", json!({})),
            (TOOL_CALLER, "tool-caller", json!({"tools": ["echo-tool"]})),
        ],
    );
    let reply = invoke(
        &client,
        "acme",
        &acme,
        "tool-caller",
        r#"call echo-tool {"x":1}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["output"], r#"{"x":1}"#);
    let caller_id = reply.body["invocation_id"].as_str().unwrap().to_owned();
    let history = client.get("/v1/tenants/acme/invocations?limit=10", Some(&acme));
    let records = history.body["invocations"].as_array().unwrap();
    let tool = records
        .iter()
        .find(|r| r["agent"] == "echo-tool")
        .unwrap_or_else(|| panic!("{}", history.text));
    assert_eq!(tool["parent"], caller_id.as_str());

    // Not granted: refused by name; granting what the agent does not ask
    // for is refused at install.
    let denied = invoke(&client, "acme", &acme, "tool-caller", "call units {}");
    assert!(
        denied.body["output"]
            .as_str()
            .unwrap()
            .starts_with("error access-denied:"),
        "{}",
        denied.text
    );
    let over = install(
        &client,
        "acme",
        &acme,
        "tool-caller",
        json!({"tools": ["units"]}),
    );
    assert_eq!(over.status, 422, "{}", over.text);
    assert_eq!(over.code(), "not-requested");

    // Another tenant granting itself the same tool name does not reach
    // acme's install.
    let globex = tenant(&client, "globex");
    let installed = install(
        &client,
        "globex",
        &globex,
        "tool-caller",
        json!({"tools": ["echo-tool"]}),
    );
    assert_eq!(installed.status, 200, "{}", installed.text);
    let elsewhere = invoke(
        &client,
        "globex",
        &globex,
        "tool-caller",
        r#"call echo-tool {}"#,
    );
    assert!(
        elsewhere.body["output"]
            .as_str()
            .unwrap()
            .starts_with("error not-found:"),
        "{}",
        elsewhere.text
    );
}
