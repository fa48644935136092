//! CPU generation benchmark on SmolLM2-135M-Instruct Q4_1: prefill and
//! decode tokens per second of one sequence (greedy, and sampled at
//! temperature 0.7 and top-p 0.9 with the sampler's own time), and aggregate decode with
//! several sequences stepped together; the machine's memory read bandwidth
//! and the weight bytes a decoded token reads; and, given long prompts as
//! token ids, prefill of each and decode at its depth. Prints one JSON object
//! per line so that `scripts/bench-cpu` can set it beside llama.cpp measured
//! in the same run.
//!
//! `cargo bench -p sovra-gpu --bench generate -- [rounds]`
//!
//! `SOVRA_BENCH_LONG_PROMPTS=FILE`: one prompt a line, token ids separated
//! by commas (scripts/bench-cpu writes llama.cpp's ids of its long prompts).

use std::path::Path;
use std::time::Instant;

use sovra_gpu::Sampling;
use sovra_gpu::gguf::GgufFile;
use sovra_gpu::model::LlamaModel;
use sovra_gpu::sampling::Sampler;
use sovra_gpu::tokenizer;

/// The prompt both engines prefill (also used by scripts/bench-cpu).
pub const PROMPT: &str = include_str!("prompt.txt");
const DECODE_TOKENS: usize = 64;
const BATCH_STEPS: usize = 32;
/// Tokens decoded after a long prompt.
const LONG_DECODE_TOKENS: usize = 128;
/// Bytes read to measure memory bandwidth: well past any cache.
const BANDWIDTH_BYTES: usize = 512 << 20;

/// Memory read bandwidth in bytes per second, every thread of the pool
/// summing its share of a buffer far larger than the caches; best of five.
fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let buffer: Vec<u64> = (0..BANDWIDTH_BYTES / 8).map(|i| i as u64).collect();
    (0..5)
        .map(|_| {
            let started = Instant::now();
            let total: u64 = buffer
                .par_chunks(1 << 16)
                .map(|chunk| {
                    let mut lanes = [0u64; 8];
                    for eight in chunk.chunks_exact(8) {
                        for (l, v) in lanes.iter_mut().zip(eight) {
                            *l = l.wrapping_add(*v);
                        }
                    }
                    lanes.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                })
                .reduce(|| 0, u64::wrapping_add);
            std::hint::black_box(total);
            BANDWIDTH_BYTES as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Long prompts to prefill, as token ids, from `SOVRA_BENCH_LONG_PROMPTS`.
fn long_prompts() -> Vec<Vec<u32>> {
    let Ok(path) = std::env::var("SOVRA_BENCH_LONG_PROMPTS") else {
        return Vec::new();
    };
    let text =
        std::fs::read_to_string(&path).expect("SOVRA_BENCH_LONG_PROMPTS names a readable file");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.split(',')
                .map(|id| id.trim().parse().expect("token ids are integers"))
                .collect()
        })
        .collect()
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// Seconds to prefill `prompt` in one step, then to decode `tokens` greedy
/// tokens after it.
fn prefill_then_decode(model: &LlamaModel, prompt: &[u32], tokens: usize) -> (f64, f64) {
    let n = prompt.len();
    let mut cache = model.new_cache();
    let started = Instant::now();
    let logits = model
        .forward(prompt, &vec![0; n], &mut [&mut cache], &[n - 1])
        .unwrap();
    let prefill = started.elapsed().as_secs_f64();
    let mut next = argmax(&logits);
    let started = Instant::now();
    for _ in 0..tokens {
        let logits = model
            .forward(&[next], &[0], &mut [&mut cache], &[0])
            .unwrap();
        next = argmax(&logits);
    }
    (prefill, started.elapsed().as_secs_f64())
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let file = GgufFile::open(&path).expect("run scripts/fetch-models first");
    let tokenizer = tokenizer::from_gguf(&file).unwrap();
    let model = LlamaModel::from_gguf(&file).unwrap();
    let vocab = model.config().vocab;
    let prompt = tokenizer.encode(PROMPT);
    let n = prompt.len();
    let long = long_prompts();
    println!(
        "{{\"engine\":\"sovra\",\"read_bandwidth\":{:.0},\"weight_bytes_per_token\":{},\"kernels\":\"{}\"}}",
        read_bandwidth(),
        model.weight_bytes(),
        model.kernel_name()
    );

    for _ in 0..rounds {
        // One sequence: prefill the prompt in one step, then greedy decode.
        let (prefill, decode) = prefill_then_decode(&model, &prompt, DECODE_TOKENS);
        println!(
            "{{\"engine\":\"sovra\",\"prompt_tokens\":{n},\"prefill_tps\":{:.2},\"decode_tps\":{:.2}}}",
            n as f64 / prefill,
            DECODE_TOKENS as f64 / decode
        );

        // The same decode sampled as a chat agent asks (temperature 0.7,
        // top-p 0.9), the sampler's time included; and the sampler alone on
        // these logits.
        let mut sampler = Sampler::new(
            Sampling {
                temperature: 0.7,
                top_p: 0.9,
                seed: Some(1),
                ..Sampling::default()
            },
            1,
        );
        let mut cache = model.new_cache();
        let mut logits = model
            .forward(&prompt, &vec![0; n], &mut [&mut cache], &[n - 1])
            .unwrap();
        let mut history = prompt.clone();
        let mut sampling = 0.0;
        let started = Instant::now();
        for _ in 0..DECODE_TOKENS {
            let at = Instant::now();
            let next = sampler.sample(&mut logits, &history);
            sampling += at.elapsed().as_secs_f64();
            history.push(next);
            logits = model
                .forward(&[next], &[0], &mut [&mut cache], &[0])
                .unwrap();
        }
        let sampled = started.elapsed().as_secs_f64();
        println!(
            "{{\"engine\":\"sovra\",\"sampled_decode_tps\":{:.2},\"sampler_us_per_token\":{:.1}}}",
            DECODE_TOKENS as f64 / sampled,
            sampling / DECODE_TOKENS as f64 * 1e6
        );

        // Several sequences stepped together after a short prefill each.
        for sequences in [1usize, 4, 16] {
            let mut caches: Vec<_> = (0..sequences).map(|_| model.new_cache()).collect();
            let short = &prompt[..16];
            let mut last = Vec::new();
            for cache in caches.iter_mut() {
                let logits = model.forward(short, &[0; 16], &mut [cache], &[15]).unwrap();
                last.push(argmax(&logits));
            }
            let owners: Vec<usize> = (0..sequences).collect();
            let started = Instant::now();
            for _ in 0..BATCH_STEPS {
                let mut refs: Vec<_> = caches.iter_mut().collect();
                let logits = model.forward(&last, &owners, &mut refs, &owners).unwrap();
                for (s, token) in last.iter_mut().enumerate() {
                    *token = argmax(&logits[s * vocab..(s + 1) * vocab]);
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{{\"engine\":\"sovra\",\"sequences\":{sequences},\"aggregate_decode_tps\":{:.2}}}",
                (sequences * BATCH_STEPS) as f64 / elapsed
            );
        }

        // Long prompts: prefill, then greedy decode at that depth.
        for ids in &long {
            let (prefill, decode) = prefill_then_decode(&model, ids, LONG_DECODE_TOKENS);
            println!(
                "{{\"engine\":\"sovra\",\"long_prompt_tokens\":{},\"long_prefill_tps\":{:.2},\"long_decode_tps\":{:.2}}}",
                ids.len(),
                ids.len() as f64 / prefill,
                LONG_DECODE_TOKENS as f64 / decode
            );
        }
    }
}
