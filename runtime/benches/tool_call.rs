//! Tool-call benchmark: the `calculator` tool called from inside an agent
//! through `sovra:agent/tools` (the grant check, the schema check, a sandbox
//! of its own for the tool, its audit record under its caller) against a
//! direct invocation of the same tool, in the same run, rounds interleaved;
//! medians across rounds. The cost of one call is read off an invocation of
//! `tool-caller` making 32 calls less one making none, divided by 32.
//!
//! `cargo bench -p sovra-runtime --bench tool_call`

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sovra_runtime::tools::{InstalledTool, StaticTools};
use sovra_runtime::{Grants, Invocation, Limits, Runtime, RuntimeConfig, TenantId};

const ROUNDS: usize = 5;
const CALLS_PER_ROUND: usize = 400;
/// Tool calls one agent invocation makes for the per-call figure.
const FAN_OUT: u32 = 32;
const INPUT: &str = r#"{"expression": "2 * (3 + 4) ^ 2"}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
    let load = |path: &str| runtime.load_file(Path::new(path), None).unwrap();
    let calculator = load(sovra_test_artifacts::CALCULATOR);
    let caller = load(sovra_test_artifacts::TOOL_CALLER);
    let mut tools = StaticTools::new();
    tools.add(InstalledTool {
        agent: Arc::clone(&calculator),
        grants: Grants::none(),
        limits: Limits::default(),
    });
    let tools = Arc::new(tools);
    let tenant = TenantId::new("bench").unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let direct = || Invocation::new(tenant.clone(), INPUT);
    let through_agent = |calls: u32| {
        let mut invocation = Invocation::new(
            tenant.clone(),
            format!("fan-out calculator {calls} {INPUT}"),
        );
        invocation.grants.tools = BTreeSet::from(["calculator".to_owned()]);
        invocation.tools = Some(tools.clone());
        invocation
    };
    let measure =
        |agent: &Arc<sovra_runtime::Agent>, make: &dyn Fn() -> Invocation, expect: &str| {
            let mut latencies = Vec::with_capacity(CALLS_PER_ROUND);
            for _ in 0..CALLS_PER_ROUND {
                let invocation = make();
                let started = Instant::now();
                let report = tokio.block_on(runtime.invoke(agent, invocation));
                latencies.push(started.elapsed());
                let output = report.result.expect("the call succeeds").output;
                assert!(output.starts_with(expect), "{output}");
            }
            latencies.sort();
            percentile(&latencies, 0.5).as_secs_f64() * 1e6
        };
    let result = r#"{"result":98.0}"#;
    let (none, one, many) = (
        || through_agent(0),
        || through_agent(1),
        || through_agent(FAN_OUT),
    );
    let fanned = format!("{FAN_OUT} ");
    // Warm up: compile caches, describe the tool once.
    measure(&calculator, &direct, result);
    measure(&caller, &many, &fanned);

    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let direct_us = measure(&calculator, &direct, result);
        let agent_us = measure(&caller, &none, "0 ");
        let one_us = measure(&caller, &one, "1 ");
        let many_us = measure(&caller, &many, &fanned);
        let per_call = (many_us - agent_us) / f64::from(FAN_OUT);
        println!(
            "round {round}: direct {direct_us:.1} µs | agent alone {agent_us:.1} µs, with 1 call {one_us:.1} µs, \
             with {FAN_OUT} calls {many_us:.1} µs: {per_call:.1} µs per tool call"
        );
        rows.push((direct_us, agent_us, one_us, per_call, per_call / direct_us));
    }
    let column =
        |pick: fn(&(f64, f64, f64, f64, f64)) -> f64| median(rows.iter().map(pick).collect());
    let (direct_us, agent_us, one_us, per_call) = (
        column(|r| r.0),
        column(|r| r.1),
        column(|r| r.2),
        column(|r| r.3),
    );
    println!(
        "medians of {ROUNDS} rounds (p50 of {CALLS_PER_ROUND} invocations each): direct invocation of the tool \
         {direct_us:.1} µs; one tool call from inside an agent {per_call:.1} µs (ratio, median of rounds: \
         {:.2}x); an agent invocation making one call {one_us:.1} µs (the agent alone {agent_us:.1} µs)",
        column(|r| r.4)
    );
    runtime.audit().flush();
}
