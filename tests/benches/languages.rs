//! The same agent (`hello`) written in Rust, Python (componentize-py) and
//! JavaScript (componentize-js), measured in one run: component size, the
//! first load (compilation by cranelift), a load from the compiled cache
//! (what a node does after a restart), and the latency of one invocation
//! (fresh sandbox, instantiation, call) in sequence.
//!
//! `scripts/build-polyglot-agents && cargo bench -p sovra-tests --bench languages`
//!
//! Rounds are interleaved across the three languages so machine noise hits
//! each alike; medians across rounds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sovra_runtime::{Grants, Invocation, Limits, Runtime, RuntimeConfig, TenantId};

const ROUNDS: usize = 3;
const CALLS_PER_ROUND: usize = 200;

struct Subject {
    language: &'static str,
    path: PathBuf,
}

fn subjects() -> Vec<Subject> {
    let polyglot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/polyglot");
    let mut subjects = vec![Subject {
        language: "Rust",
        path: PathBuf::from(sovra_test_artifacts::HELLO),
    }];
    for (language, name) in [("Python", "hello-py"), ("JavaScript", "hello-js")] {
        let path = polyglot.join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: run scripts/build-polyglot-agents",
            path.display()
        );
        subjects.push(Subject { language, path });
    }
    subjects
}

fn runtime(data: &Path, compiled: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        compiled_dir: Some(compiled.to_owned()),
        ..RuntimeConfig::new(data)
    })
    .expect("runtime")
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Default)]
struct Measured {
    compile: Vec<Duration>,
    cached_load: Vec<Duration>,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
}

fn main() {
    let subjects = subjects();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut measured: Vec<Measured> = subjects.iter().map(|_| Measured::default()).collect();
    for round in 0..ROUNDS {
        for (subject, measured) in subjects.iter().zip(&mut measured) {
            let dir = tempfile::tempdir().unwrap();
            let compiled = dir.path().join("compiled");
            let first = runtime(&dir.path().join("a"), &compiled);
            let started = Instant::now();
            drop(first.load_file(&subject.path, None).expect("loads"));
            measured.compile.push(started.elapsed());
            drop(first);

            let node = runtime(&dir.path().join("b"), &compiled);
            let started = Instant::now();
            let agent = node.load_file(&subject.path, None).expect("loads");
            measured.cached_load.push(started.elapsed());

            let mut latencies = Vec::with_capacity(CALLS_PER_ROUND);
            tokio.block_on(async {
                for _ in 0..CALLS_PER_ROUND {
                    let invocation = Invocation {
                        grants: Grants::none(),
                        limits: Limits {
                            max_memory: 128 * 1024 * 1024,
                            ..Limits::default()
                        },
                        ..Invocation::new(TenantId::new("bench").unwrap(), "sovereign cloud")
                    };
                    let started = Instant::now();
                    let report = node.invoke(&agent, invocation).await;
                    latencies.push(started.elapsed());
                    assert_eq!(
                        report.result.expect("answers").output,
                        "Hello, sovereign cloud!"
                    );
                }
            });
            latencies.sort();
            measured.p50.push(percentile(&latencies, 0.50));
            measured.p99.push(percentile(&latencies, 0.99));
            eprintln!("round {round}: {} done", subject.language);
        }
    }
    println!(
        "{:<11} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "language", "size", "compile", "cached load", "call p50", "call p99"
    );
    let rust_p50 = median(measured[0].p50.clone());
    for (subject, measured) in subjects.iter().zip(measured) {
        let size = std::fs::metadata(&subject.path).unwrap().len();
        let p50 = median(measured.p50);
        println!(
            "{:<11} {:>8.1}MB {:>10.0}ms {:>10.1}ms {:>8.2}ms {:>8.2}ms  ({:.0}x Rust's p50)",
            subject.language,
            size as f64 / 1e6,
            median(measured.compile).as_secs_f64() * 1e3,
            median(measured.cached_load).as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e3,
            median(measured.p99).as_secs_f64() * 1e3,
            p50.as_secs_f64() / rust_p50.as_secs_f64(),
        );
    }
}
