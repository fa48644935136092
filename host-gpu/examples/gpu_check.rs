//! The GPU check, for a machine with an NVIDIA GPU and no Rust toolchain
//! (`scripts/gpu-check` runs this binary, built beforehand with
//! `cargo build --release -p sovra-gpu --example gpu_check`).
//!
//! 1. Probes CUDA, compiles the kernels for the device, and checks each
//!    kernel (and the cuBLAS product) against a host reference, so that a
//!    fault is pinned to its kernel.
//! 2. The tiny models of every weight type (`host-gpu/tests/reference/tiny`):
//!    GPU logits against the CPU's exact ones.
//! 3. A model of SmolLM2-135M's shapes with random Q4_1 weights (the real
//!    file is too large to carry): GPU against CPU logits (f16 relative
//!    error) and greedy continuations.
//! 4. Llama-3.2-1B shapes with random f16 weights made on the device: a
//!    step larger than the workspace (run in passes) against its sequences
//!    alone, and batch-64 decode replayed from CUDA graphs against eager;
//!    then prefill and decode tokens/s at batch 1, 8 and 64 (greedy rows,
//!    arg-max on the device, graphs on and off), and batch-1 decode against
//!    the bandwidth roofline (weight bytes per token over the copy bandwidth
//!    measured here).
//!
//! Exit code 0 when every check passes, 1 when one fails, 2 without a GPU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use sovra_gpu::cpu::Activations;
use sovra_gpu::cuda::{self, CudaBackend};
use sovra_gpu::engine::{Backend, CpuBackend, RowOutput, Wanted, relative_error};
use sovra_gpu::gguf::{GgmlType, GgufWriter, MetadataValue};
use sovra_gpu::model::{LlamaConfig, LlamaModel, RopeStyle};
use sovra_gpu::sampling::{SplitMix64, argmax};

/// Largest GPU-vs-CPU logit difference allowed, relative to the largest
/// logit (f16 weights and activations against exact f32).
const TOLERANCE: f32 = 1e-2;

/// Greedy tokens compared between the backends on the SmolLM2 shapes.
const GREEDY_TOKENS: usize = 16;

/// One greedy step for every sequence (`greedy` rows: the device may send
/// back only the arg-max).
fn greedy_step<B: Backend>(
    backend: &B,
    tokens: &[u32],
    owners: &[usize],
    caches: &mut [&mut B::Cache],
    rows: &[usize],
) -> Vec<u32> {
    let wanted: Vec<Wanted> = rows
        .iter()
        .map(|&row| Wanted { row, greedy: true })
        .collect();
    backend
        .step(tokens, owners, caches, &wanted)
        .expect("step")
        .into_iter()
        .map(|output| match output {
            RowOutput::ArgMax(token) => token,
            RowOutput::Logits(logits) => argmax(&logits),
        })
        .collect()
}

fn prompt_logits<B: Backend>(backend: &B, prompt: &[u32]) -> Vec<f32> {
    let mut cache = backend.new_cache();
    let owners = vec![0; prompt.len()];
    backend
        .forward(prompt, &owners, &mut [&mut cache], &[prompt.len() - 1])
        .expect("forward")
}

fn greedy<B: Backend>(backend: &B, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = backend.new_cache();
    let owners = vec![0; prompt.len()];
    let mut next = greedy_step(
        backend,
        prompt,
        &owners,
        &mut [&mut cache],
        &[prompt.len() - 1],
    );
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next[0]);
        next = greedy_step(backend, &next, &[0], &mut [&mut cache], &[0]);
    }
    out
}

/// Random Q4_1 blocks for `rows × cols` weights of about ±`scale`.
fn q4_1(random: &mut SplitMix64, rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * cols / 32 * 20);
    for _ in 0..rows * cols / 32 {
        let d = half::f16::from_f32(2.0 * scale / 15.0);
        let m = half::f16::from_f32(-scale);
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        for _ in 0..16 {
            out.push(random.next_u64() as u8);
        }
    }
    out
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A GGUF of SmolLM2-135M's shapes with random Q4_1 weights.
fn smollm2_shaped(path: &std::path::Path) -> std::io::Result<()> {
    let (layers, e, ff, heads, kv_heads, vocab) = (30usize, 576usize, 1536usize, 9, 3, 49152usize);
    let kv = kv_heads * (e / heads);
    let mut random = SplitMix64(7);
    let mut w = GgufWriter::new();
    let int = |v: usize| MetadataValue::U32(v as u32);
    w.metadata(
        "general.architecture",
        MetadataValue::String("llama".into()),
    )
    .metadata("llama.block_count", int(layers))
    .metadata("llama.embedding_length", int(e))
    .metadata("llama.feed_forward_length", int(ff))
    .metadata("llama.attention.head_count", int(heads))
    .metadata("llama.attention.head_count_kv", int(kv_heads))
    .metadata("llama.context_length", int(2048))
    .metadata("llama.rope.freq_base", MetadataValue::F32(100_000.0))
    .metadata(
        "llama.attention.layer_norm_rms_epsilon",
        MetadataValue::F32(1e-5),
    )
    .metadata("llama.vocab_size", int(vocab));
    let norm = |random: &mut SplitMix64| -> Vec<u8> {
        f32_bytes(
            &(0..e)
                .map(|_| 0.9 + 0.2 * random.next_f32())
                .collect::<Vec<_>>(),
        )
    };
    let q4 = GgmlType::Q4_1;
    let x = 1.0 / (e as f32).sqrt();
    w.tensor(
        "token_embd.weight",
        &[e as u64, vocab as u64],
        q4,
        q4_1(&mut random, vocab, e, 1.0),
    );
    for i in 0..layers {
        let name = |part: &str| format!("blk.{i}.{part}");
        let (en, kvn, ffn) = (e as u64, kv as u64, ff as u64);
        w.tensor(
            &name("attn_norm.weight"),
            &[en],
            GgmlType::F32,
            norm(&mut random),
        )
        .tensor(
            &name("attn_q.weight"),
            &[en, en],
            q4,
            q4_1(&mut random, e, e, x),
        )
        .tensor(
            &name("attn_k.weight"),
            &[en, kvn],
            q4,
            q4_1(&mut random, kv, e, x),
        )
        .tensor(
            &name("attn_v.weight"),
            &[en, kvn],
            q4,
            q4_1(&mut random, kv, e, x),
        )
        .tensor(
            &name("attn_output.weight"),
            &[en, en],
            q4,
            q4_1(&mut random, e, e, x),
        )
        .tensor(
            &name("ffn_norm.weight"),
            &[en],
            GgmlType::F32,
            norm(&mut random),
        )
        .tensor(
            &name("ffn_gate.weight"),
            &[en, ffn],
            q4,
            q4_1(&mut random, ff, e, x),
        )
        .tensor(
            &name("ffn_up.weight"),
            &[en, ffn],
            q4,
            q4_1(&mut random, ff, e, x),
        )
        .tensor(
            &name("ffn_down.weight"),
            &[ffn, en],
            q4,
            q4_1(&mut random, e, ff, 1.0 / (ff as f32).sqrt()),
        );
    }
    w.tensor(
        "output_norm.weight",
        &[e as u64],
        GgmlType::F32,
        norm(&mut random),
    );
    w.write(path)
}

fn llama_1b() -> LlamaConfig {
    LlamaConfig {
        architecture: "llama".into(),
        layers: 16,
        embedding: 2048,
        feed_forward: 8192,
        heads: 32,
        kv_heads: 8,
        head_dim: 64,
        context_length: 4096,
        rope_base: 500_000.0,
        rope_style: RopeStyle::Interleaved,
        rms_eps: 1e-5,
        vocab: 128_256,
    }
}

/// Device-to-device copy bandwidth (bytes read + written per second).
fn copy_bandwidth(backend: &CudaBackend) -> f64 {
    let stream = backend.stream();
    let bytes = 1usize << 30;
    let src = stream.alloc_zeros::<u8>(bytes).expect("alloc");
    let mut dst = stream.alloc_zeros::<u8>(bytes).expect("alloc");
    stream.memcpy_dtod(&src, &mut dst).expect("copy");
    stream.synchronize().expect("sync");
    let rounds = 10;
    let started = Instant::now();
    for _ in 0..rounds {
        stream.memcpy_dtod(&src, &mut dst).expect("copy");
    }
    stream.synchronize().expect("sync");
    (2 * bytes * rounds) as f64 / started.elapsed().as_secs_f64()
}

/// `batch` sequences of `prompt` tokens each: their tokens, owners and last rows.
fn prompts(batch: usize, prompt: usize) -> (Vec<u32>, Vec<usize>, Vec<usize>) {
    let tokens = (0..batch * prompt)
        .map(|i| (i * 7919 % 50_000) as u32)
        .collect();
    let owners = (0..batch * prompt).map(|i| i / prompt).collect();
    let last = (0..batch).map(|s| s * prompt + prompt - 1).collect();
    (tokens, owners, last)
}

/// (prefill tok/s, aggregate decode tok/s) for `batch` sequences decoded
/// greedily, the arg-max found on the device.
fn throughput(backend: &CudaBackend, batch: usize, prompt: usize, steps: usize) -> (f64, f64) {
    let mut caches: Vec<_> = (0..batch).map(|_| backend.new_cache()).collect();
    let (tokens, owners, last) = self::prompts(batch, prompt);
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let started = Instant::now();
    let mut next = greedy_step(backend, &tokens, &owners, &mut refs, &last);
    let prefill = (batch * prompt) as f64 / started.elapsed().as_secs_f64();
    let step_owners: Vec<usize> = (0..batch).collect();
    let started = Instant::now();
    for _ in 0..steps {
        next = greedy_step(backend, &next, &step_owners, &mut refs, &step_owners);
    }
    let decode = (batch * steps) as f64 / started.elapsed().as_secs_f64();
    (prefill, decode)
}

/// The logits of every step of `batch` sequences decoded together greedily
/// for `steps` steps (row after row, `vocab` each).
fn decode_logits(backend: &CudaBackend, batch: usize, steps: usize) -> Vec<Vec<f32>> {
    let vocab = backend.config().vocab;
    let mut caches: Vec<_> = (0..batch).map(|_| backend.new_cache()).collect();
    let (tokens, owners, last) = prompts(batch, 16);
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let mut logits = backend
        .forward(&tokens, &owners, &mut refs, &last)
        .expect("prefill");
    let rows: Vec<usize> = (0..batch).collect();
    let mut out = Vec::new();
    for _ in 0..steps {
        let next: Vec<u32> = logits.chunks_exact(vocab).map(argmax).collect();
        out.push(logits);
        logits = backend
            .forward(&next, &rows, &mut refs, &rows)
            .expect("decode");
    }
    out.push(logits);
    out
}

fn main() -> ExitCode {
    let repo = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let probe = cuda::probe();
    println!("## CUDA probe\n\n{probe:#?}\n");
    if !probe.usable(0) {
        println!("no usable GPU: {:?}", probe.problem);
        return ExitCode::from(2);
    }
    let device = 0;
    let mut failed = false;

    println!("## Each kernel against its host reference\n");
    println!("| kernel | half | error | tolerance | |\n|---|---|---|---|---|");
    match cuda::check_kernels(device) {
        Ok(checks) => {
            for check in checks {
                failed |= !check.passed();
                println!(
                    "| {} | {} | {:.2e} | {:.0e} | {} |",
                    check.kernel,
                    check.half.name(),
                    check.error,
                    check.tolerance,
                    match (&check.failure, check.passed()) {
                        (Some(reason), _) => format!("FAILED: {reason}"),
                        (None, true) => "ok".to_owned(),
                        (None, false) => "WRONG".to_owned(),
                    }
                );
            }
        }
        Err(e) => {
            println!("cannot set up the device: {e}");
            failed = true;
        }
    }
    println!();

    println!("## Tiny models: GPU (f16) against CPU (exact f32) logits\n");
    println!("| model | worst relative error | within {TOLERANCE} |\n|---|---|---|");
    let tokens = [3u32, 17, 42, 5, 29, 8];
    for name in [
        "llama-f32",
        "llama-f16",
        "llama-bf16",
        "llama-q4_0",
        "llama-q4_1",
        "llama-q8_0",
        "llama-q4_k",
        "llama-q6_k",
        "qwen2-q8_0",
        "llama-spm",
    ] {
        let path = repo.join(format!("host-gpu/tests/reference/tiny/{name}.gguf"));
        let model = match LlamaModel::load(&path) {
            Ok(model) => model,
            Err(e) => {
                println!("| {name} | cannot load: {e} | no |");
                failed = true;
                continue;
            }
        };
        // As a node loads it: f16 products unless the model needs bf16's
        // range, checked against the CPU.
        let loaded = sovra_gpu::engine::load_checked(
            |half| cuda::CudaGpu::open(device, half),
            &model,
            64 << 20,
            name,
        );
        let gpu = match loaded {
            Ok(gpu) => gpu,
            Err(e) => {
                println!("| {name} | GPU load failed: {e} | no |");
                failed = true;
                continue;
            }
        };
        let cpu = CpuBackend::new(
            Arc::new(model.with_activations(Activations::Exact)),
            64 << 20,
        );
        let mut worst = 0.0f32;
        let (mut a, mut b) = (cpu.new_cache(), gpu.new_cache());
        for &t in &tokens {
            let want = cpu.forward(&[t], &[0], &mut [&mut a], &[0]).expect("cpu");
            let got = gpu.forward(&[t], &[0], &mut [&mut b], &[0]).expect("gpu");
            worst = worst.max(relative_error(&want, &got));
        }
        let ok = worst <= TOLERANCE;
        failed |= !ok;
        println!(
            "| {name} ({} products) | {worst:.2e} | {} |",
            gpu.half().name(),
            if ok { "yes" } else { "NO" }
        );
    }

    println!("\n## SmolLM2-135M shapes, random Q4_1 weights: GPU against CPU\n");
    let path = std::env::temp_dir().join("sovra-smollm2-shaped.gguf");
    smollm2_shaped(&path).expect("write the SmolLM2-shaped model");
    let model = LlamaModel::load(&path).expect("load it");
    let started = Instant::now();
    let gpu = CudaBackend::new(&model, device, 1 << 30).expect("upload");
    println!(
        "upload and decode to f16: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let cpu = CpuBackend::new(
        Arc::new(model.with_activations(Activations::Exact)),
        1 << 30,
    );
    let prompt: Vec<u32> = (0..32).map(|i| (i * 1543 % 49_152) as u32).collect();
    let error = relative_error(&prompt_logits(&cpu, &prompt), &prompt_logits(&gpu, &prompt));
    let ok = error <= TOLERANCE;
    failed |= !ok;
    println!(
        "logits after a 32-token prompt: relative error {error:.2e} (limit {TOLERANCE}): {}",
        if ok { "ok" } else { "FAILED" }
    );
    let (want, got) = (
        greedy(&cpu, &prompt, GREEDY_TOKENS),
        greedy(&gpu, &prompt, GREEDY_TOKENS),
    );
    let same = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
    println!(
        "greedy continuation: {same} of {GREEDY_TOKENS} tokens identical\n  cpu {want:?}\n  gpu {got:?}"
    );
    failed |= same < GREEDY_TOKENS;

    println!("\n## Llama-3.2-1B shapes, random f16 weights on the device\n");
    let big = CudaBackend::random(llama_1b(), device, 8 << 30, 42).expect("random 1B");
    println!(
        "decode graphs: {}",
        if big.graphs() {
            "on"
        } else {
            "off (SOVRA_CUDA_GRAPHS=0)"
        }
    );

    // 8 prompts of 128 tokens in one step (1,024 tokens: two passes of the
    // workspace) against each prompt alone.
    let (tokens, owners, last) = prompts(8, 128);
    let mut caches: Vec<_> = (0..8).map(|_| big.new_cache()).collect();
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let together = big
        .forward(&tokens, &owners, &mut refs, &last)
        .expect("forward");
    let vocab = big.config().vocab;
    let mut worst = 0.0f32;
    for s in 0..8 {
        let mut cache = big.new_cache();
        let alone = big
            .forward(
                &tokens[s * 128..(s + 1) * 128],
                &[0; 128],
                &mut [&mut cache],
                &[127],
            )
            .expect("forward");
        worst = worst.max(relative_error(
            &alone,
            &together[s * vocab..(s + 1) * vocab],
        ));
    }
    let ok = worst <= 1e-3;
    failed |= !ok;
    println!(
        "a 1,024-token step in passes against its 8 prompts alone: relative error {worst:.2e} (limit 1e-3): {}",
        if ok { "ok" } else { "FAILED" }
    );
    drop(refs);
    drop(caches);

    // Batch 61 (padded to a graph of 64) replayed against eager; compared
    // while the two choose the same tokens (a near-tie may part them).
    let replayed = decode_logits(&big, 61, 12);
    big.set_graphs(false);
    let eager = decode_logits(&big, 61, 12);
    big.set_graphs(true);
    let mut worst = 0.0f32;
    let mut compared = 0;
    for (a, b) in replayed.iter().zip(&eager) {
        worst = worst.max(relative_error(b, a));
        compared += 1;
        let choices = |l: &Vec<f32>| l.chunks_exact(vocab).map(argmax).collect::<Vec<_>>();
        if choices(a) != choices(b) {
            break;
        }
    }
    let ok = worst <= 1e-3;
    failed |= !ok;
    println!(
        "batch-61 decode, graphs (padded to 64) against eager: relative error {worst:.2e} over {compared} of {} steps (limit 1e-3): {}",
        eager.len(),
        if ok { "ok" } else { "FAILED" }
    );

    let bandwidth = copy_bandwidth(&big);
    let weight_bytes = big.weight_bytes() as f64;
    let roofline = bandwidth / weight_bytes;
    println!(
        "\ncopy bandwidth {:.0} GB/s; weights {:.2} GB per step; batch-1 decode roofline {roofline:.0} tok/s\n",
        bandwidth / 1e9,
        weight_bytes / 1e9
    );
    println!(
        "| batch | prefill tok/s (128-token prompts) | decode tok/s (aggregate) | decode vs batch 1 | batch-1 roofline share | decode tok/s without graphs |"
    );
    println!("|---|---|---|---|---|---|");
    let mut single = 0.0;
    for batch in [1usize, 8, 64] {
        let _ = throughput(&big, batch, 16, 4); // warm-up, and the graph captured
        let (prefill, decode) = throughput(&big, batch, 128, 64);
        big.set_graphs(false);
        let _ = throughput(&big, batch, 16, 4);
        let (_, eager) = throughput(&big, batch, 128, 64);
        big.set_graphs(true);
        if batch == 1 {
            single = decode;
        }
        println!(
            "| {batch} | {prefill:.0} | {decode:.0} | {:.1}x | {} | {eager:.0} |",
            decode / single,
            if batch == 1 {
                format!("{:.0}%", 100.0 * decode / roofline)
            } else {
                String::new()
            }
        );
    }
    println!(
        "\naims: batch-1 decode at 60% or more of the roofline; batch 64 at 20x batch 1 or more"
    );
    if failed {
        println!("\nSOME CHECKS FAILED");
        ExitCode::from(1)
    } else {
        println!("\nall checks passed");
        ExitCode::SUCCESS
    }
}
