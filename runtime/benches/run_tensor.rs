//! Tensor-model benchmark: `run-tensor` on the digits classifier (ONNX,
//! tract) called from inside a sandboxed guest against the same call made
//! directly to the engine, in the same run, rounds interleaved; medians
//! across rounds. The cost of one call through the sandbox is read off an
//! invocation of `probe` making 64 calls less one making none, over 64.
//!
//! `scripts/fetch-models && cargo bench -p sovra-runtime --bench run_tensor`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sovra_gpu::engine::TensorEngine;
use sovra_gpu::{ModelService, NamedTensor, RequestContext, TensorType};
use sovra_runtime::{Grants, Invocation, Runtime, RuntimeConfig, TenantId};

const ROUNDS: usize = 5;
const INVOCATIONS: usize = 200;
const DIRECT_CALLS: usize = 4000;
/// Calls one invocation makes for the per-call figure.
const FAN_OUT: u32 = 64;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let digits = root.join("models/digits.onnx");
    assert!(digits.exists(), "run scripts/fetch-models first");
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models.toml");
    std::fs::write(
        &models,
        format!("[[model]]\nname = \"digits\"\npath = {digits:?}\nkind = \"tensor\"\ntenants = \"all\"\n"),
    )
    .unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    config.models = Arc::new(sovra_gpu::config::load_registry(&models).unwrap());
    let runtime = Runtime::new(config).unwrap();
    let probe = runtime
        .load_file(Path::new(sovra_test_artifacts::PROBE), None)
        .unwrap();
    let tenant = TenantId::new("bench").unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = TensorEngine::load("digits", &digits).unwrap();
    let image = NamedTensor {
        name: "pixels".into(),
        shape: vec![1, 64],
        element_type: TensorType::F32,
        data: (0..64)
            .flat_map(|i| ((i % 17) as f32).to_le_bytes())
            .collect(),
    };
    let context = RequestContext {
        tenant: "bench".into(),
        deadline: None,
    };

    let direct = || {
        let started = Instant::now();
        for _ in 0..DIRECT_CALLS {
            let out = engine.run_tensor(&context, vec![image.clone()]).unwrap();
            assert_eq!(out[0].data.len(), 40);
        }
        started.elapsed().as_secs_f64() * 1e6 / DIRECT_CALLS as f64
    };
    let through_sandbox = |calls: u32| {
        let mut latencies = Vec::with_capacity(INVOCATIONS);
        for _ in 0..INVOCATIONS {
            let mut invocation = Invocation::new(tenant.clone(), format!("classify-n:{calls}"));
            invocation.grants = Grants {
                kv: true,
                sql: true,
                models: ["digits".to_owned()].into(),
                ..Grants::none()
            };
            let started = Instant::now();
            let report = tokio.block_on(runtime.invoke(&probe, invocation));
            latencies.push(started.elapsed().as_secs_f64() * 1e6);
            let output = report.result.expect("the call succeeds").output;
            assert_eq!(output, format!("{calls} {}", 40 * calls));
        }
        median(latencies)
    };
    // Warm up.
    direct();
    through_sandbox(FAN_OUT);

    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let direct_us = direct();
        let none_us = through_sandbox(0);
        let many_us = through_sandbox(FAN_OUT);
        let sandboxed_us = (many_us - none_us) / f64::from(FAN_OUT);
        let ratio = direct_us / sandboxed_us;
        println!(
            "round {round}: direct {direct_us:.2} µs per call | through the sandbox {sandboxed_us:.2} µs per call \
             (invocation with 0 calls {none_us:.1} µs, with {FAN_OUT} {many_us:.1} µs): calls/s ratio {ratio:.3}"
        );
        rows.push((direct_us, sandboxed_us, ratio));
    }
    println!(
        "medians of {ROUNDS} rounds: direct {:.2} µs per call, through the sandbox {:.2} µs per call; \
         calls per second through the sandbox / direct: {:.3}",
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1).collect()),
        median(rows.iter().map(|r| r.2).collect()),
    );
}
