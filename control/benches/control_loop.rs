//! The control loop at 1 kHz for 10 s against the cart-pole: the
//! policy-network controller through the sandbox (its Wasm guest calls
//! `run-tensor` every tick) against the same loop driven natively (the same
//! model through the same engine, no sandbox), in the same run; then the
//! sandboxed loop again while another tenant floods the node with
//! invocations that spin until their deadline. Reports tick start jitter,
//! tick duration and deadline misses.
//!
//! `scripts/fetch-models && cargo bench -p sovra-control --bench control_loop`
//! (`SOVRA_BENCH_SECONDS` shortens the episodes.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sovra_control::{
    EpisodePlan, EpisodeSpec, EpisodeSummary, NativeDriver, Pacing, StopHandle, WorldOptions,
};
use sovra_gpu::{NamedTensor, RequestContext, TensorType};
use sovra_runtime::{
    ControllerSetup, Grants, Invocation, Limits, Runtime, RuntimeConfig, TenantId,
};

const RATE_HZ: u32 = 1_000;
/// Concurrent spinning invocations of the flooding tenant.
const FLOOD: usize = 8;

fn plan(seconds: f64) -> EpisodePlan {
    let mut spec = EpisodeSpec::new(RATE_HZ, Duration::from_secs_f64(seconds));
    spec.pacing = Pacing::RealTime;
    EpisodePlan {
        world: "cartpole".into(),
        world_options: WorldOptions {
            sensor_noise: 0.002,
            seed: 7,
        },
        spec,
    }
}

fn row(name: &str, summary: &EpisodeSummary) {
    println!(
        "| {name:<28} | {:>6} | {:>5} | {:>6} | {:>6} | {:>7} | {:>5} | {:>6} | {:>6} | {:>4} | {} |",
        summary.ticks,
        summary.jitter.p50_us,
        summary.jitter.p99_us,
        summary.jitter.max_us,
        summary.tick_duration.p50_us,
        summary.tick_duration.p99_us,
        summary.tick_duration.max_us,
        summary.missed_ticks,
        summary.late_ticks,
        summary.stop.kind(),
    );
}

fn main() {
    let seconds: f64 = std::env::var("SOVRA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = root.join("models/cartpole-policy.onnx");
    assert!(policy.exists(), "run scripts/fetch-models first");
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models.toml");
    std::fs::write(
        &models,
        format!(
            "[[model]]\nname = \"cartpole-policy\"\npath = {policy:?}\nkind = \"tensor\"\ntenants = \"all\"\n"
        ),
    )
    .unwrap();
    let registry = Arc::new(sovra_gpu::config::load_registry(&models).unwrap());
    let mut config = RuntimeConfig::new(dir.path());
    config.models = Arc::clone(&registry);
    let runtime = Runtime::new(config).unwrap();
    let controller = runtime
        .load_file(Path::new(sovra_test_artifacts::CARTPOLE_POLICY), None)
        .unwrap();
    let spin = runtime
        .load_file(Path::new(sovra_test_artifacts::SPIN), None)
        .unwrap();
    let grants = Grants {
        models: ["cartpole-policy".to_owned()].into(),
        ..Grants::none()
    };
    let sandboxed = || {
        let setup = ControllerSetup::new(TenantId::new("robotics").unwrap(), grants.clone());
        sovra_control::run_sandboxed(
            &runtime,
            Arc::clone(&controller),
            setup,
            &sovra_control::new_episode_id(),
            &plan(seconds),
            &StopHandle::default(),
            &mut |_| {},
        )
        .unwrap()
        .summary
    };
    let native = || {
        let service = registry.lookup("robotics", "cartpole-policy").unwrap();
        let context = RequestContext {
            tenant: "robotics".into(),
            deadline: None,
        };
        let mut driver = NativeDriver::new(|values: &[f32]| {
            let input = NamedTensor {
                name: "observation".into(),
                shape: vec![1, 4],
                element_type: TensorType::F32,
                data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            let output = service.run_tensor(&context, vec![input]).unwrap();
            output[0]
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        });
        let plan = plan(seconds);
        let mut world = sovra_control::simulated(&plan.world, &plan.world_options).unwrap();
        sovra_control::episode::run(
            world.as_mut(),
            &mut driver,
            &plan.spec,
            &StopHandle::default(),
            &mut |_| {},
        )
        .unwrap()
        .0
    };

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!("control loop: cart-pole, policy net every tick, {RATE_HZ} Hz for {seconds} s; {cpu}");
    println!(
        "| {:<28} | {:>6} | {:>5} | {:>6} | {:>6} | {:>7} | {:>5} | {:>6} | {:>6} | {:>4} | end |",
        "loop", "ticks", "jit50", "jit99", "jitmax", "tick50", "tick99", "tickmx", "missed", "late"
    );
    println!("|{}|", "-".repeat(110));
    // Warm-up: compiled code, the model's first runs, the pool's first slot.
    let mut warm = plan(0.2);
    warm.spec.rate_hz = 100;
    let setup = ControllerSetup::new(TenantId::new("robotics").unwrap(), grants.clone());
    sovra_control::run_sandboxed(
        &runtime,
        Arc::clone(&controller),
        setup,
        &sovra_control::new_episode_id(),
        &warm,
        &StopHandle::default(),
        &mut |_| {},
    )
    .unwrap();

    row("native (no sandbox)", &native());
    row("sandboxed", &sandboxed());

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flooding = Arc::new(AtomicBool::new(true));
    let flood_calls = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let runtime = runtime.clone();
        let spin = Arc::clone(&spin);
        let flooding = Arc::clone(&flooding);
        let calls = Arc::clone(&flood_calls);
        flood.push(tokio.spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                let mut invocation = Invocation::new(TenantId::new("flood").unwrap(), "");
                invocation.limits = Limits {
                    timeout: Duration::from_millis(200),
                    ..Limits::default()
                };
                let report = runtime.invoke(&spin, invocation).await;
                assert!(report.result.is_err());
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let flooded = sandboxed();
    flooding.store(false, Ordering::Relaxed);
    for task in flood {
        tokio.block_on(task).unwrap();
    }
    row(&format!("sandboxed, {FLOOD} spinning guests"), &flooded);
    println!(
        "flood: {} spinning invocations (200 ms each) ran meanwhile",
        flood_calls.load(Ordering::Relaxed)
    );
}
