//! Model load time, resident memory, and sentence-embedding throughput.
//!
//! `cargo bench -p sovra-gpu --bench models`

use std::path::Path;
use std::time::Instant;

use sovra_gpu::engine::{EmbeddingEngine, TextEngine};
use sovra_gpu::{ModelService, RequestContext};

/// Resident memory of this process, from /proc (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

const SENTENCES: [&str; 8] = [
    "A sandboxed agent answers questions about tenant data.",
    "Refunds are processed within five business days.",
    "The office is open from 9am to 5pm on weekdays.",
    "Sovereign clouds keep data on the node where it belongs.",
    "The cafeteria serves vegetarian lunch on Fridays.",
    "Each invocation runs in a fresh WebAssembly sandbox.",
    "Quarterly revenue grew by twelve percent.",
    "Models are loaded once and shared by every tenant.",
];

fn main() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let before = rss_mib();
    let started = Instant::now();
    let text = TextEngine::load("smollm2", &models.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("run scripts/fetch-models");
    let text_load = started.elapsed();
    let after_text = rss_mib();
    let started = Instant::now();
    let embedder = EmbeddingEngine::load("minilm", &models.join("all-MiniLM-L6-v2")).unwrap();
    let embed_load = started.elapsed();
    let after_embed = rss_mib();
    println!("| model | load time | resident memory added |");
    println!("|---|---|---|");
    println!(
        "| SmolLM2-135M-Instruct Q4_1 (98 MB file, memory-mapped) | {:.0} ms | {:.0} MiB |",
        text_load.as_secs_f64() * 1e3,
        after_text - before
    );
    println!(
        "| all-MiniLM-L6-v2 (91 MB safetensors, copied to f32) | {:.0} ms | {:.0} MiB |",
        embed_load.as_secs_f64() * 1e3,
        after_embed - after_text
    );
    drop(text);

    let context = RequestContext {
        tenant: "bench".into(),
        deadline: None,
    };
    let batch: Vec<String> = SENTENCES
        .iter()
        .cycle()
        .take(64)
        .map(|s| s.to_string())
        .collect();
    embedder.embed(&context, batch[..8].to_vec()).unwrap();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        embedder.embed(&context, batch.clone()).unwrap();
        rates.push(batch.len() as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!();
    println!(
        "| embedding throughput (median of 5 batches of 64 sentences, ~12 tokens each) | {:.0} sentences/s |",
        rates[2]
    );
    println!("|---|---|");
}
