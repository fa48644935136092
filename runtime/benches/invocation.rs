//! Invocation benchmark: instantiate + call of the `hello` agent through
//! sovra (fresh sandbox, grants, limits, epoch deadline, audit) against bare
//! wasmtime on the same component in the same run: the same engine
//! configuration (`sovra_runtime::engine_config`, pooling allocator), a fresh
//! store with a default WASI context, a typed call, and nothing else.
//!
//! `cargo bench -p sovra-runtime --bench invocation`
//!
//! Prints p50/p99 latency of sequential calls and invocations per second
//! with two concurrent callers on a two-worker runtime, rounds interleaved
//! so machine noise hits both sides alike; medians across rounds.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sovra_runtime::{Invocation, Runtime, RuntimeConfig, TenantId};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const ROUNDS: usize = 5;
const CALLS_PER_ROUND: usize = 3_000;
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(1500);
const CONCURRENT_CALLERS: usize = 2;

mod bare {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "agent",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

struct BareState {
    table: ResourceTable,
    wasi: WasiCtx,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bare::sovra::agent::types::Host for BareState {}

/// Bare wasmtime: the same component, pooling allocator, WASI p2, nothing else.
#[derive(Clone)]
struct Bare {
    engine: Engine,
    pre: bare::AgentPre<BareState>,
}

impl Bare {
    fn new(path: &Path) -> Self {
        let engine = Engine::new(&sovra_runtime::engine_config()).unwrap();
        let component = Component::from_file(&engine, path).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        bare::sovra::agent::types::add_to_linker::<_, HasSelf<BareState>>(&mut linker, |s| s)
            .unwrap();
        let pre = bare::AgentPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Bare { engine, pre }
    }

    async fn call(&self) {
        let state = BareState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(u64::MAX);
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        let request = bare::exports::sovra::agent::handler::Request {
            input: "bench".into(),
            metadata: Vec::new(),
        };
        let response = instance
            .sovra_agent_handler()
            .call_handle(&mut store, &request)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.output, "Hello, bench!");
    }
}

#[derive(Clone)]
struct Sovra {
    runtime: Runtime,
    agent: Arc<sovra_runtime::Agent>,
    tenant: TenantId,
}

impl Sovra {
    async fn call(&self) {
        let report = self
            .runtime
            .invoke(&self.agent, Invocation::new(self.tenant.clone(), "bench"))
            .await;
        assert_eq!(report.result.unwrap().output, "Hello, bench!");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Sequential latency samples of one round.
fn latency_round<F, Fut>(rt: &tokio::runtime::Runtime, call: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let mut samples = Vec::with_capacity(CALLS_PER_ROUND);
        for _ in 0..CALLS_PER_ROUND {
            let started = Instant::now();
            call().await;
            samples.push(started.elapsed());
        }
        samples.sort();
        samples
    })
}

/// Invocations per second with concurrent callers over a fixed window.
fn throughput_round<F, Fut>(rt: &tokio::runtime::Runtime, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        // Each caller watches the clock itself: callers that never wait would
        // starve the runtime's timer.
        let end = started + THROUGHPUT_WINDOW;
        let tasks: Vec<_> = (0..CONCURRENT_CALLERS)
            .map(|_| {
                let (call, done) = (call.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < end {
                        call().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    })
}

fn main() {
    let hello = Path::new(sovra_test_artifacts::HELLO);
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
    let sovra = Sovra {
        agent: runtime.load_file(hello, None).unwrap(),
        runtime,
        tenant: TenantId::new("bench").unwrap(),
    };
    let bare = Bare::new(hello);

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Warm up both paths (page in the pools, fill caches).
    latency_round(&single, || sovra.call());
    latency_round(&single, || bare.call());

    // `SOVRA_BENCH_PROFILE=sovra|bare`: only sequential calls of one side,
    // for running under a profiler.
    if let Ok(side) = std::env::var("SOVRA_BENCH_PROFILE") {
        for _ in 0..20 {
            match side.as_str() {
                "sovra" => latency_round(&single, || sovra.call()),
                _ => latency_round(&single, || bare.call()),
            };
        }
        return;
    }

    let (mut sovra_p50, mut sovra_p99, mut bare_p50, mut bare_p99) =
        (vec![], vec![], vec![], vec![]);
    let (mut sovra_rate, mut bare_rate) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let s = latency_round(&single, || sovra.call());
        let b = latency_round(&single, || bare.call());
        sovra_p50.push(percentile(&s, 0.50).as_secs_f64() * 1e6);
        sovra_p99.push(percentile(&s, 0.99).as_secs_f64() * 1e6);
        bare_p50.push(percentile(&b, 0.50).as_secs_f64() * 1e6);
        bare_p99.push(percentile(&b, 0.99).as_secs_f64() * 1e6);
        let sovra_call = sovra.clone();
        sovra_rate.push(throughput_round(&multi, move || {
            let sovra = sovra_call.clone();
            async move { sovra.call().await }
        }));
        let bare_call = bare.clone();
        bare_rate.push(throughput_round(&multi, move || {
            let bare = bare_call.clone();
            async move { bare.call().await }
        }));
        eprintln!(
            "round {round}: sovra p50 {:.1}us {:.0}/s | bare p50 {:.1}us {:.0}/s",
            sovra_p50[round], sovra_rate[round], bare_p50[round], bare_rate[round]
        );
    }
    let (sp50, sp99, bp50, bp99) = (
        median(&mut sovra_p50),
        median(&mut sovra_p99),
        median(&mut bare_p50),
        median(&mut bare_p99),
    );
    let (srate, brate) = (median(&mut sovra_rate), median(&mut bare_rate));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| measure (median of {ROUNDS} rounds) | sovra | bare wasmtime | sovra / bare |");
    println!("|---|---|---|---|");
    println!(
        "| p50 latency, sequential | {sp50:.1} µs | {bp50:.1} µs | {:.2}x |",
        sp50 / bp50
    );
    println!(
        "| p99 latency, sequential | {sp99:.1} µs | {bp99:.1} µs | {:.2}x |",
        sp99 / bp99
    );
    println!(
        "| invocations/s, {CONCURRENT_CALLERS} callers on {cores} cores | {srate:.0} | {brate:.0} | {:.2}x |",
        srate / brate
    );
    println!(
        "| invocations/s per core | {:.0} | {:.0} | |",
        srate / cores as f64,
        brate / cores as f64
    );
}
