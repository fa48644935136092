//! The GPU check's checks and figures, written once for any [`Gpu`]:
//! the `gpu_check` binary runs them on CUDA device 0 at full size ([`Plan::full`]), and
//! `tests/kernel_emulation.rs` runs them on the emulated GPU at small shapes
//! ([`Plan::dry_run`]), so the first run on a real GPU meets code that has
//! already run end to end.
//!
//! 1. Each kernel (and the half product) against its host reference, for
//!    both halves, so that a fault is pinned to its kernel.
//! 2. The tiny models of every weight type (`host-gpu/tests/reference/tiny`),
//!    loaded as a node loads them: GPU logits against the CPU's exact ones.
//! 3. A model of random Q4_1 weights (SmolLM2-135M's shapes at full size;
//!    the real file is too large to carry): GPU against CPU logits, on
//!    each half, and greedy continuations.
//! 4. Random weights made on the device (Llama-3.2-1B's shapes at full
//!    size): a step larger than the workspace (run in passes) against its
//!    sequences alone, and decode replayed from graphs against eager; then
//!    prefill and decode tokens/s at batch 1, 8 and 64 (greedy rows, the
//!    arg-max on the device, graphs on and off, f16 and bf16), and batch-1
//!    decode against the bandwidth roofline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sovra_gpu::cpu::Activations;
use sovra_gpu::cuda::{CudaLoadError, Gpu, GpuBackend, Half};

use crate::kernels::check_kernels_on;
use sovra_gpu::engine::{Backend, CpuBackend, RowOutput, Wanted, load_checked, relative_error};
use sovra_gpu::gguf::{GgmlType, GgufWriter, MetadataValue};
use sovra_gpu::model::{LlamaConfig, LlamaModel, RopeStyle};
use sovra_gpu::sampling::{SplitMix64, argmax};

/// Largest GPU-vs-CPU logit difference allowed, relative to the largest
/// logit (16-bit weights and activations against exact f32).
pub const TOLERANCE: f32 = 1e-2;

/// Largest difference allowed between two ways of running the same step
/// on the same device (passes against one step, graphs against eager).
const SAME_DEVICE_TOLERANCE: f32 = 1e-3;

/// Greedy tokens compared between the backends on the compared model.
const GREEDY_TOKENS: usize = 16;

/// Sequences decoded together in the throughput table.
const BATCHES: [usize; 3] = [1, 8, 64];

/// Prompts in the step run in passes, and each one's tokens: 1,024 tokens,
/// two passes of the workspace.
const PASS_PROMPTS: (usize, usize) = (8, 128);

/// The layout of a model of random Q4_1 weights.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub layers: usize,
    pub embedding: usize,
    pub feed_forward: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
}

/// What to check and measure, and at which sizes.
#[derive(Debug)]
pub struct Plan {
    /// The model compared with the CPU, and its name in the report.
    pub compared: (&'static str, Shape),
    /// The model measured, and its name in the report.
    pub measured: (&'static str, LlamaConfig),
    /// The measured model's KV pool.
    pub kv_cache_bytes: usize,
    /// Tokens of each prompt, and decode steps, of each throughput figure.
    pub prompt: usize,
    pub steps: usize,
    /// Sequences decoded by graphs against eager (not a graph size, so
    /// that padding runs), and for how many steps.
    pub graph_batch: usize,
    pub graph_steps: usize,
}

impl Plan {
    /// The shapes the issue names: SmolLM2-135M compared, Llama-3.2-1B
    /// measured.
    pub fn full() -> Plan {
        Plan {
            compared: (
                "SmolLM2-135M",
                Shape {
                    layers: 30,
                    embedding: 576,
                    feed_forward: 1536,
                    heads: 9,
                    kv_heads: 3,
                    vocab: 49_152,
                },
            ),
            measured: (
                "Llama-3.2-1B",
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
                },
            ),
            kv_cache_bytes: 8 << 30,
            prompt: 128,
            steps: 64,
            graph_batch: 61,
            graph_steps: 12,
        }
    }

    /// The same checks at shapes a CPU emulating a GPU gets through in
    /// seconds (the layouts keep grouped-query heads and padding).
    #[allow(dead_code)] // The emulated run's, in tests/kernel_emulation.rs.
    pub fn dry_run() -> Plan {
        Plan {
            compared: (
                "small",
                Shape {
                    layers: 2,
                    embedding: 96,
                    feed_forward: 160,
                    heads: 3,
                    kv_heads: 1,
                    vocab: 512,
                },
            ),
            measured: (
                "small",
                LlamaConfig {
                    architecture: "llama".into(),
                    layers: 2,
                    embedding: 128,
                    feed_forward: 256,
                    heads: 4,
                    kv_heads: 2,
                    head_dim: 32,
                    context_length: 1024,
                    rope_base: 10_000.0,
                    rope_style: RopeStyle::Interleaved,
                    rms_eps: 1e-5,
                    vocab: 1000,
                },
            ),
            kv_cache_bytes: 64 << 20,
            prompt: 8,
            steps: 2,
            graph_batch: 5,
            graph_steps: 3,
        }
    }
}

/// A device to check: how to open it on each half, and its copy bandwidth
/// (bytes read and written per second) where it can measure one.
pub struct Device<'a, G: Gpu> {
    pub open: &'a dyn Fn(Half) -> Result<G, CudaLoadError>,
    pub copy_bandwidth: &'a dyn Fn(&G) -> Option<f64>,
}

impl<G: Gpu> std::fmt::Debug for Device<'_, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").finish_non_exhaustive()
    }
}

/// Runs every check and measure of `plan` on `device`, writing the report
/// (markdown) to `out` as it goes; true when every check passed.
pub fn run<G: Gpu>(device: &Device<G>, repo: &Path, plan: &Plan, out: &mut dyn Write) -> bool {
    let mut report = Report { out, failed: false };
    kernels(device, &mut report);
    tiny_models(device, repo, &mut report);
    compared(device, plan, &mut report);
    measured(device, plan, &mut report);
    !report.failed
}

/// The report being written, and whether a check has failed.
struct Report<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Report<'_> {
    fn say(&mut self, text: impl std::fmt::Display) {
        // Lines go out as they come: a run cut short still shows how far
        // it got.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Records a check's outcome, and returns its word for the report.
    fn check(&mut self, ok: bool) -> &'static str {
        self.failed |= !ok;
        if ok { "ok" } else { "FAILED" }
    }

    /// A failure that stops a section.
    fn fail(&mut self, text: impl std::fmt::Display) {
        self.failed = true;
        self.say(format!("FAILED: {text}"));
    }
}

fn kernels<G: Gpu>(device: &Device<G>, report: &mut Report) {
    report.say("## Each kernel against its host reference\n");
    report.say("| kernel | half | error | tolerance | |\n|---|---|---|---|---|");
    for half in [Half::F16, Half::Bf16] {
        let gpu = match (device.open)(half) {
            Ok(gpu) => gpu,
            Err(e) => {
                return report.fail(format!("cannot open the device on {}: {e}", half.name()));
            }
        };
        for check in check_kernels_on(&gpu) {
            let verdict = match (&check.failure, check.passed()) {
                (Some(reason), _) => format!("FAILED: {reason}"),
                (None, true) => "ok".to_owned(),
                (None, false) => "WRONG".to_owned(),
            };
            report.failed |= !check.passed();
            report.say(format!(
                "| {} | {} | {:.2e} | {:.0e} | {verdict} |",
                check.kernel,
                check.half.name(),
                check.error,
                check.tolerance,
            ));
        }
    }
}

/// The tiny test models, each as the file it is.
fn tiny_model_files(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join("host-gpu/tests/reference/tiny"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|e| e == "gguf"));
    files.sort();
    Ok(files)
}

fn tiny_models<G: Gpu>(device: &Device<G>, repo: &Path, report: &mut Report) {
    report.say(format!(
        "\n## Tiny models, loaded as a node loads them: GPU against CPU (exact f32) logits\n\n\
         | model | products | worst relative error | within {TOLERANCE} |\n|---|---|---|---|"
    ));
    let files = match tiny_model_files(repo) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => return report.fail("no tiny models in host-gpu/tests/reference/tiny"),
        Err(e) => return report.fail(format!("cannot list the tiny models: {e}")),
    };
    let tokens = [3u32, 17, 42, 5, 29, 8];
    for path in files {
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        let model = match LlamaModel::load(&path) {
            Ok(model) => model,
            Err(e) => {
                report.fail(format!("{name}: cannot load: {e}"));
                continue;
            }
        };
        // f16 products unless the model needs bf16's range, checked
        // against the CPU.
        let gpu = match load_checked(device.open, &model, 64 << 20, &name) {
            Ok(gpu) => gpu,
            Err(e) => {
                report.fail(format!("{name}: GPU load failed: {e}"));
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
        let verdict = report.check(worst <= TOLERANCE);
        report.say(format!(
            "| {name} | {} | {worst:.2e} | {verdict} |",
            gpu.half().name()
        ));
    }
}

fn compared<G: Gpu>(device: &Device<G>, plan: &Plan, report: &mut Report) {
    let (name, shape) = &plan.compared;
    report.say(format!(
        "\n## {name} shapes, random Q4_1 weights: GPU against CPU (exact f32)\n"
    ));
    // Written to a fresh temporary file, and loaded twice: once for the
    // GPU, once for the CPU in exact f32.
    let models = tempfile::NamedTempFile::new().and_then(|file| {
        random_q4_1_model(shape, file.path())?;
        let load = || LlamaModel::load(file.path()).map_err(std::io::Error::other);
        Ok((load()?, load()?))
    });
    let (model, exact) = match models {
        Ok(models) => models,
        Err(e) => return report.fail(format!("cannot make the model: {e}")),
    };
    let cpu = CpuBackend::new(
        Arc::new(exact.with_activations(Activations::Exact)),
        1 << 30,
    );
    let prompt: Vec<u32> = (0..32).map(|i| (i * 1543 % shape.vocab) as u32).collect();
    let want = prompt_logits(&cpu, &prompt);
    let continuation = greedy(&cpu, &prompt, GREEDY_TOKENS);
    // f16 is what a node chooses for this model; bf16 is what it falls back
    // to when activations pass f16's range.
    for half in [Half::F16, Half::Bf16] {
        let started = Instant::now();
        let gpu = match (device.open)(half).and_then(|g| GpuBackend::on(g, &model, 1 << 30)) {
            Ok(gpu) => gpu,
            Err(e) => {
                report.fail(format!("cannot load it on {}: {e}", half.name()));
                continue;
            }
        };
        let upload = started.elapsed().as_secs_f64() * 1e3;
        // Every position of the prompt: its logits, and the token each
        // would choose (a random model's own continuation soon repeats one
        // token; the positions choose many).
        let got = prompt_logits(&gpu, &prompt);
        let rows = want
            .chunks_exact(shape.vocab)
            .zip(got.chunks_exact(shape.vocab));
        let error = rows
            .clone()
            .map(|(a, b)| relative_error(a, b))
            .fold(0.0, f32::max);
        // A differing choice is only ever a near-tie the error explains
        // (the GPU's pick beats the CPU's on the GPU, so their CPU logits
        // differ by at most twice the error): reported, not judged.
        let parted = rows.filter(|(a, b)| argmax(a) != argmax(b)).count();
        let verdict = report.check(error <= TOLERANCE);
        report.say(format!(
            "{}: upload and decode {upload:.0} ms; logits at every position of a {}-token prompt: relative error {error:.2e} (limit {TOLERANCE}), a different choice at {parted}: {verdict}",
            half.name(),
            prompt.len(),
        ));
        let got = greedy(&gpu, &prompt, GREEDY_TOKENS);
        let same = continuation
            .iter()
            .zip(&got)
            .take_while(|(a, b)| a == b)
            .count();
        let verdict = report.check(same == GREEDY_TOKENS);
        report.say(format!(
            "{}: greedy continuation: {same} of {GREEDY_TOKENS} tokens identical: {verdict}\n  cpu {continuation:?}\n  gpu {got:?}",
            half.name()
        ));
    }
}

fn measured<G: Gpu>(device: &Device<G>, plan: &Plan, report: &mut Report) {
    let (name, config) = &plan.measured;
    report.say(format!(
        "\n## {name} shapes, random weights made on the device\n"
    ));
    let mut roofline = None;
    let mut header = false;
    for half in [Half::F16, Half::Bf16] {
        let backend = (device.open)(half)
            .and_then(|gpu| GpuBackend::random_on(gpu, config.clone(), plan.kv_cache_bytes, 42));
        let backend = match backend {
            Ok(backend) => backend,
            Err(e) => {
                report.fail(format!("cannot make it on {}: {e}", half.name()));
                continue;
            }
        };
        if half == Half::F16 {
            same_device_checks(&backend, plan, report);
            let weight_bytes = backend.weight_bytes() as f64;
            match (device.copy_bandwidth)(backend.gpu()) {
                Some(bandwidth) => {
                    roofline = Some(bandwidth / weight_bytes);
                    report.say(format!(
                        "\ncopy bandwidth {:.0} GB/s; weights {:.2} GB per step; batch-1 decode roofline {:.0} tok/s",
                        bandwidth / 1e9,
                        weight_bytes / 1e9,
                        bandwidth / weight_bytes,
                    ));
                }
                None => report.say(format!(
                    "\nweights {:.2} GB per step; no copy bandwidth measured on this device",
                    weight_bytes / 1e9
                )),
            }
        }
        // Rows as they are measured: a run cut short keeps what it had.
        if !header {
            header = true;
            report.say(
                "\n| half | batch | prefill tok/s | decode tok/s (aggregate) | decode vs batch 1 | batch-1 roofline share | decode tok/s without graphs |\n\
                 |---|---|---|---|---|---|---|",
            );
        }
        let mut single = f64::NAN;
        for batch in BATCHES {
            let figures = figures(&backend, plan, batch);
            if batch == 1 {
                single = figures.decode;
            }
            let share = match (batch, roofline) {
                (1, Some(roofline)) => format!("{:.0}%", 100.0 * figures.decode / roofline),
                _ => String::new(),
            };
            report.say(format!(
                "| {} | {batch} | {:.0} | {:.0} | {:.1}x | {share} | {:.0} |",
                half.name(),
                figures.prefill,
                figures.decode,
                figures.decode / single,
                figures.eager_decode,
            ));
        }
    }
    report.say(format!(
        "\n{}-token prompts, {} decode steps. Aims: batch-1 decode at 60% or more of the roofline; batch 64 at 20x batch 1 or more.",
        plan.prompt, plan.steps
    ));
}

/// A step run in passes against its sequences alone, and decode replayed
/// from graphs against eager.
fn same_device_checks<G: Gpu>(backend: &GpuBackend<G>, plan: &Plan, report: &mut Report) {
    let vocab = backend.config().vocab;
    let (count, length) = PASS_PROMPTS;
    let (tokens, owners, last) = prompts(count, length, vocab);
    let mut caches: Vec<_> = (0..count).map(|_| backend.new_cache()).collect();
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let together = backend
        .forward(&tokens, &owners, &mut refs, &last)
        .expect("forward");
    let mut worst = 0.0f32;
    for s in 0..count {
        let mut cache = backend.new_cache();
        let alone = backend
            .forward(
                &tokens[s * length..(s + 1) * length],
                &vec![0; length],
                &mut [&mut cache],
                &[length - 1],
            )
            .expect("forward");
        worst = worst.max(relative_error(
            &alone,
            &together[s * vocab..(s + 1) * vocab],
        ));
    }
    let verdict = report.check(worst <= SAME_DEVICE_TOLERANCE);
    report.say(format!(
        "a {}-token step in passes against its {count} prompts alone: relative error {worst:.2e} (limit {SAME_DEVICE_TOLERANCE}): {verdict}",
        tokens.len()
    ));

    // Compared while the two choose the same tokens (a near-tie may part
    // them).
    let batch = plan.graph_batch;
    if !backend.graphs() {
        report.say("decode graphs are off (SOVRA_CUDA_GRAPHS=0): graphs against eager not run");
        return;
    }
    let replayed = decode_logits(backend, batch, plan.graph_steps);
    if !backend.graphs() {
        // The backend turns graphs off when a capture fails.
        return report.fail("capturing a decode graph failed; graphs are off");
    }
    backend.set_graphs(false);
    let eager = decode_logits(backend, batch, plan.graph_steps);
    backend.set_graphs(true);
    let mut worst = 0.0f32;
    let mut compared = 0;
    let choices = |l: &Vec<f32>| l.chunks_exact(vocab).map(argmax).collect::<Vec<_>>();
    for (a, b) in replayed.iter().zip(&eager) {
        worst = worst.max(relative_error(b, a));
        compared += 1;
        if choices(a) != choices(b) {
            break;
        }
    }
    let verdict = report.check(worst <= SAME_DEVICE_TOLERANCE);
    report.say(format!(
        "batch-{batch} decode, graphs (padded) against eager: relative error {worst:.2e} over {compared} of {} steps (limit {SAME_DEVICE_TOLERANCE}): {verdict}",
        eager.len(),
    ));
}

/// Throughput of one batch size.
#[derive(Clone, Copy)]
struct Figures {
    prefill: f64,
    decode: f64,
    eager_decode: f64,
}

fn figures<G: Gpu>(backend: &GpuBackend<G>, plan: &Plan, batch: usize) -> Figures {
    // Warm-up, and the graph captured (when graphs are on).
    let graphs = backend.graphs();
    let _ = throughput(backend, batch, plan.prompt.min(16), plan.steps.min(4));
    let (prefill, decode) = throughput(backend, batch, plan.prompt, plan.steps);
    backend.set_graphs(false);
    let _ = throughput(backend, batch, plan.prompt.min(16), plan.steps.min(4));
    let (_, eager_decode) = throughput(backend, batch, plan.prompt, plan.steps);
    backend.set_graphs(graphs);
    Figures {
        prefill,
        decode,
        eager_decode,
    }
}

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

/// The logits of every position of `prompt`, row after row.
fn prompt_logits<B: Backend>(backend: &B, prompt: &[u32]) -> Vec<f32> {
    let mut cache = backend.new_cache();
    let owners = vec![0; prompt.len()];
    let rows: Vec<usize> = (0..prompt.len()).collect();
    backend
        .forward(prompt, &owners, &mut [&mut cache], &rows)
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

/// `batch` sequences of `prompt` tokens each below `vocab`: their tokens,
/// owners and last rows.
fn prompts(batch: usize, prompt: usize, vocab: usize) -> (Vec<u32>, Vec<usize>, Vec<usize>) {
    let tokens = (0..batch * prompt)
        .map(|i| (i * 7919 % vocab) as u32)
        .collect();
    let owners = (0..batch * prompt).map(|i| i / prompt).collect();
    let last = (0..batch).map(|s| s * prompt + prompt - 1).collect();
    (tokens, owners, last)
}

/// (prefill tok/s, aggregate decode tok/s) for `batch` sequences decoded
/// greedily, the arg-max found on the device.
fn throughput<G: Gpu>(
    backend: &GpuBackend<G>,
    batch: usize,
    prompt: usize,
    steps: usize,
) -> (f64, f64) {
    let mut caches: Vec<_> = (0..batch).map(|_| backend.new_cache()).collect();
    let (tokens, owners, last) = prompts(batch, prompt, backend.config().vocab);
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
fn decode_logits<G: Gpu>(backend: &GpuBackend<G>, batch: usize, steps: usize) -> Vec<Vec<f32>> {
    let vocab = backend.config().vocab;
    let mut caches: Vec<_> = (0..batch).map(|_| backend.new_cache()).collect();
    let (tokens, owners, last) = prompts(batch, 16, vocab);
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

/// A GGUF at `path` of `shape` with random Q4_1 weights.
fn random_q4_1_model(shape: &Shape, path: &Path) -> std::io::Result<()> {
    let Shape {
        layers,
        embedding: e,
        feed_forward: ff,
        heads,
        kv_heads,
        vocab,
    } = *shape;
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
    let (en, ffn) = (e as u64, ff as u64);
    w.tensor(
        "token_embd.weight",
        &[en, vocab as u64],
        q4,
        q4_1(&mut random, vocab, e, 1.0),
    );
    for i in 0..layers {
        let name = |part: &str| format!("blk.{i}.{part}");
        w.tensor(
            &name("attn_norm.weight"),
            &[en],
            GgmlType::F32,
            norm(&mut random),
        );
        for (part, rows) in [
            ("attn_q", e),
            ("attn_k", kv),
            ("attn_v", kv),
            ("attn_output", e),
        ] {
            let weights = q4_1(&mut random, rows, e, x);
            w.tensor(
                &name(&format!("{part}.weight")),
                &[en, rows as u64],
                q4,
                weights,
            );
        }
        w.tensor(
            &name("ffn_norm.weight"),
            &[en],
            GgmlType::F32,
            norm(&mut random),
        );
        for part in ["ffn_gate", "ffn_up"] {
            let weights = q4_1(&mut random, ff, e, x);
            w.tensor(&name(&format!("{part}.weight")), &[en, ffn], q4, weights);
        }
        w.tensor(
            &name("ffn_down.weight"),
            &[ffn, en],
            q4,
            q4_1(&mut random, e, ff, 1.0 / (ff as f32).sqrt()),
        );
    }
    w.tensor(
        "output_norm.weight",
        &[en],
        GgmlType::F32,
        norm(&mut random),
    );
    w.write(path)
}
