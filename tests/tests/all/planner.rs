//! The example `planner` agent: chooses a tool for the question, fills its
//! input, calls it through the host, and answers with the step it took.

use std::collections::BTreeSet;
use std::time::Duration;

use sovra_runtime::{Grants, Limits};
use sovra_test_artifacts::{CALCULATOR, PLANNER, UNITS};

use crate::support::{grants, runtime_with_models, tools};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_the_tool_its_question_needs() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let installed = tools(
        &test.runtime,
        &[(CALCULATOR, Grants::none()), (UNITS, Grants::none())],
    );
    let planner = test
        .caller(
            PLANNER,
            "acme",
            Grants {
                tools: BTreeSet::from(["calculator".to_owned(), "units".to_owned()]),
                ..grants(false, false, &["smollm2", "minilm"])
            },
        )
        .with_limits(Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        })
        .with_tools(installed);
    // Quantities and units come from the question; the tool computes.
    let converted = planner.output("Convert 42 km to mi").await;
    assert!(
        converted.contains(
            r#"[units {"from":"km","to":"mi","value":42.0} -> {"unit":"mi","value":26.09"#
        ),
        "{converted}"
    );
    // The model writes the expression; the calculator evaluates it.
    let computed = planner.output("What is 15 times 23?").await;
    assert!(
        computed.contains("[calculator {\"expression\":") && computed.contains(r#"-> {"result":"#),
        "{computed}"
    );
}
