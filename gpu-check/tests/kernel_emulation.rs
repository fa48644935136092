//! The CUDA backend on an emulated GPU (`emulated/mod.rs`: the kernels of
//! `kernels/llama.cu` compiled for the CPU against an emulation of the CUDA
//! execution model, with device memory, the f16 product and graph capture).
//! Where no GPU is lent this runs, in CI, everything of the GPU path but the
//! calls into CUDA itself:
//! - every kernel against its host reference (the checks the GPU check runs
//!   on a device);
//! - the backend's own code (each launch's arguments, the workspace, passes
//!   larger than it, padding, graphs, the device arg-max) on the tiny models
//!   of every weight type, against the CPU's exact logits;
//! - the GPU check itself (`sovra_gpu_check::checks`) at small shapes,
//!   so that the first run on a real GPU meets code that has run end to end.
//!
//! Skipped with a message when no C++20 compiler is found (`CXX` or g++);
//! `SOVRA_REQUIRE_EMULATION=1` makes that a failure.

mod emulated;
mod support;

use std::path::Path;
use std::sync::Arc;

use emulated::{EmulatedGpu, Switch};
use sovra_gpu::cpu::Activations;
use sovra_gpu::cuda::{CudaLoadError, Gpu, GpuBackend, Half, Karg};
use sovra_gpu::engine::{Backend, CpuBackend, MAX_STEP_TOKENS, RowOutput, Wanted, load_checked};
use sovra_gpu::model::LlamaModel;
use sovra_gpu_check::checks as gpu_check;
use sovra_gpu_check::kernels::check_kernels_on;
use support::{TINY_MODELS, decode_together, tiny_model};

fn tiny(name: &str) -> LlamaModel {
    LlamaModel::load(&tiny_model(name)).unwrap()
}

/// `name` on the emulated GPU, loaded as a node loads a model (products on
/// f16 unless the model's activations need bf16's range; checked against
/// the CPU), and, for reference, on the CPU in exact f32.
fn backends(name: &str) -> Option<(GpuBackend<EmulatedGpu>, CpuBackend)> {
    emulated::build(Half::F16)?;
    let open =
        |half| EmulatedGpu::start(half).ok_or_else(|| CudaLoadError::Cuda("no compiler".into()));
    let backend = load_checked(open, &tiny(name), 4 << 20, name).unwrap();
    let cpu = CpuBackend::new(
        Arc::new(tiny(name).with_activations(Activations::Exact)),
        4 << 20,
    );
    Some((backend, cpu))
}

/// Largest |a - b| over the largest |a| (at least 1).
fn off_by(want: &[f32], got: &[f32]) -> f32 {
    assert_eq!(want.len(), got.len());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    want.iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn every_kernel_matches_its_host_reference_on_the_emulated_gpu() {
    let mut checks = Vec::new();
    for half in [Half::F16, Half::Bf16] {
        let Some(gpu) = EmulatedGpu::start(half) else {
            return;
        };
        checks.extend(check_kernels_on(&gpu));
    }
    for check in &checks {
        eprintln!(
            "{:<52} {:<4} error {:.2e} (tolerance {:.0e}) {}",
            check.kernel,
            check.half.name(),
            check.error,
            check.tolerance,
            check.failure.as_deref().unwrap_or("")
        );
    }
    let wrong: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_portable_fiber_switch_gives_the_same_kernel_results() {
    let Some(native) = EmulatedGpu::start_with(Half::F16, Switch::Native) else {
        return;
    };
    let Some(portable) = EmulatedGpu::start_with(Half::F16, Switch::Portable) else {
        return;
    };
    let (native, portable) = (check_kernels_on(&native), check_kernels_on(&portable));
    assert_eq!(native.len(), portable.len());
    for (a, b) in native.iter().zip(&portable) {
        assert!(b.passed(), "{b:#?}");
        // The same threads in the same order: the same bits.
        assert_eq!(a.error.to_bits(), b.error.to_bits(), "{}", a.kernel);
    }
}

#[test]
fn a_launch_with_the_wrong_arguments_is_refused_not_run() {
    let Some(gpu) = EmulatedGpu::start(Half::F16) else {
        return;
    };
    let error = gpu
        .launch("rms_norm", (1, 1), 32, &[Karg::I32(4)])
        .unwrap_err();
    assert!(error.contains("takes (pppis)"), "{error}");
    let error = gpu
        .launch(
            "embed",
            (1, 1),
            32,
            &[
                Karg::Address(7 << 40),
                Karg::Address(0),
                Karg::Address(0),
                Karg::I32(1),
            ],
        )
        .unwrap_err();
    assert!(error.contains("outside every allocation"), "{error}");
}

#[test]
fn the_backend_gives_the_cpu_logits_on_every_weight_type() {
    let tokens = [3u32, 17, 42, 5, 29, 8];
    for name in TINY_MODELS {
        let Some((gpu, cpu)) = backends(name) else {
            return;
        };
        let (mut a, mut b) = (gpu.new_cache(), cpu.new_cache());
        for (position, &t) in tokens.iter().enumerate() {
            let got = gpu.forward(&[t], &[0], &mut [&mut a], &[0]).unwrap();
            let want = cpu.forward(&[t], &[0], &mut [&mut b], &[0]).unwrap();
            let error = off_by(&want, &got);
            assert!(error <= 2e-2, "{name} position {position}: off by {error}");
        }
        // The whole prompt in one step gives the last position's logits.
        let mut c = gpu.new_cache();
        let together = gpu.forward(&tokens, &[0; 6], &mut [&mut c], &[5]).unwrap();
        let mut d = cpu.new_cache();
        let want = cpu.forward(&tokens, &[0; 6], &mut [&mut d], &[5]).unwrap();
        assert!(
            off_by(&want, &together) <= 2e-2,
            "{name}: prompt in one step"
        );
    }
}

/// Every logit of every step of `prompts` decoded together greedily.
fn decode_logits<B: Backend>(backend: &B, prompts: &[&[u32]], steps: usize) -> Vec<Vec<f32>> {
    let mut caches: Vec<_> = prompts.iter().map(|_| backend.new_cache()).collect();
    let mut tokens = Vec::new();
    let mut owners = Vec::new();
    let mut wanted = Vec::new();
    for (s, prompt) in prompts.iter().enumerate() {
        tokens.extend_from_slice(prompt);
        owners.extend(std::iter::repeat_n(s, prompt.len()));
        wanted.push(tokens.len() - 1);
    }
    let vocab = backend.config().vocab;
    let mut out = Vec::new();
    for _ in 0..steps {
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let logits = backend
            .forward(&tokens, &owners, &mut refs, &wanted)
            .unwrap();
        tokens = logits
            .chunks_exact(vocab)
            .map(sovra_gpu::sampling::argmax)
            .collect();
        owners = (0..prompts.len()).collect();
        wanted = (0..prompts.len()).collect();
        out.push(logits);
    }
    out
}

#[test]
fn decode_graphs_padding_and_the_device_arg_max_give_the_eager_choices() {
    let Some((gpu, cpu)) = backends("llama-q8_0") else {
        return;
    };
    let prompts: [&[u32]; 3] = [&[3, 17, 42], &[5, 29], &[8, 1, 2, 3, 4]];
    gpu.set_graphs(false);
    let eager = decode_together(&gpu, &prompts, 8, false);
    let eager_logits = decode_logits(&gpu, &prompts, 8);
    // Three rows padded to a graph of four: run once, captured, replayed;
    // the padding row must leave the others' logits exactly as they were.
    gpu.set_graphs(true);
    assert_eq!(decode_logits(&gpu, &prompts, 8), eager_logits);
    let replayed = decode_together(&gpu, &prompts, 8, true);
    assert_eq!(replayed, eager);
    for (s, prompt) in prompts.iter().enumerate() {
        let alone = decode_together(&gpu, &[prompt], 8, true);
        assert_eq!(alone[0], eager[s], "sequence {s} alone");
    }
    // The CPU's exact model chooses the same tokens.
    assert_eq!(decode_together(&cpu, &prompts, 8, false), eager);
    assert_eq!(gpu.cache_blocks_in_use(), 0);
    assert!(gpu.graphs(), "no capture failed");
}

#[test]
fn a_step_larger_than_a_pass_runs_in_passes() {
    let Some((gpu, _)) = backends("llama-q4_1") else {
        return;
    };
    // Passes of 16 tokens (the workspace holds MAX_STEP_TOKENS; a smaller
    // pass runs the same code on a model this small): five prompts of 20
    // tokens, 100 tokens, seven passes, prompts split across them.
    gpu.limit_pass_rows(16);
    let prompts: Vec<Vec<u32>> = (0..5u32)
        .map(|s| (0..20).map(|i| (s * 7 + i * 13) % 48).collect())
        .collect();
    let mut caches: Vec<_> = prompts.iter().map(|_| gpu.new_cache()).collect();
    let tokens: Vec<u32> = prompts.concat();
    let owners: Vec<usize> = (0..tokens.len()).map(|i| i / 20).collect();
    let last: Vec<usize> = (0..prompts.len()).map(|s| s * 20 + 19).collect();
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let together = gpu.forward(&tokens, &owners, &mut refs, &last).unwrap();
    gpu.limit_pass_rows(MAX_STEP_TOKENS);
    let vocab = gpu.config().vocab;
    for (s, prompt) in prompts.iter().enumerate() {
        let mut cache = gpu.new_cache();
        let alone = gpu
            .forward(prompt, &[0; 20], &mut [&mut cache], &[19])
            .unwrap();
        let error = off_by(&alone, &together[s * vocab..(s + 1) * vocab]);
        assert!(error <= 1e-5, "prompt {s}: off by {error}");
    }
}

#[test]
fn the_load_time_check_passes_on_the_emulated_gpu_graphs_included() {
    for name in ["llama-q4_k", "qwen2-q8_0"] {
        let Some((gpu, _)) = backends(name) else {
            return;
        };
        sovra_gpu::engine::agrees_with_cpu(&gpu, &tiny(name)).unwrap();
        assert!(gpu.graphs());
        assert_eq!(gpu.cache_blocks_in_use(), 0);
    }
}

#[test]
fn greedy_and_sampled_rows_mixed_in_one_step_each_get_theirs() {
    let Some((gpu, _)) = backends("llama-q6_k") else {
        return;
    };
    let tokens = [3u32, 17, 42, 5, 29, 8, 1];
    let owners = [0, 0, 1, 1, 1, 2, 3];
    let rows = [1, 4, 5, 6];
    let run = |greedy: [bool; 4]| {
        let mut caches: Vec<_> = (0..4).map(|_| gpu.new_cache()).collect();
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let wanted: Vec<Wanted> = rows
            .iter()
            .zip(greedy)
            .map(|(&row, greedy)| Wanted { row, greedy })
            .collect();
        gpu.step(&tokens, &owners, &mut refs, &wanted).unwrap()
    };
    let all_logits = run([false; 4]);
    let mixed = run([true, false, false, true]);
    for (k, (mixed, logits)) in mixed.iter().zip(&all_logits).enumerate() {
        let RowOutput::Logits(logits) = logits else {
            panic!("row {k}: logits asked")
        };
        match mixed {
            RowOutput::ArgMax(t) => assert_eq!(*t, sovra_gpu::sampling::argmax(logits), "row {k}"),
            RowOutput::Logits(l) => assert_eq!(l, logits, "row {k}"),
        }
    }
    assert!(matches!(mixed[0], RowOutput::ArgMax(_)) && matches!(mixed[3], RowOutput::ArgMax(_)));
    assert!(matches!(mixed[1], RowOutput::Logits(_)) && matches!(mixed[2], RowOutput::Logits(_)));
}

/// SmolLM2-135M (the real file) on the emulated GPU against the CPU's exact
/// logits: what the first GPU run will see, minus cuBLAS's summation order.
/// Slow (a naive product on one core): `cargo test --release -p sovra-gpu-check
/// --test kernel_emulation -- --ignored --nocapture`.
#[test]
#[ignore = "minutes on the emulated GPU; run by hand"]
fn smollm2_on_the_emulated_gpu() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Some(gpu) = EmulatedGpu::start(Half::F16) else {
        return;
    };
    let model = LlamaModel::load(&path).unwrap();
    let backend = GpuBackend::on(gpu, &model, 64 << 20).unwrap();
    let cpu = CpuBackend::new(
        Arc::new(
            LlamaModel::load(&path)
                .unwrap()
                .with_activations(Activations::Exact),
        ),
        64 << 20,
    );
    let prompt: Vec<u32> = (0..32).map(|i| (i * 1543 % 49_152) as u32).collect();
    let (mut a, mut b) = (backend.new_cache(), cpu.new_cache());
    let mut got = backend
        .forward(&prompt, &[0; 32], &mut [&mut a], &[31])
        .unwrap();
    let mut want = cpu
        .forward(&prompt, &[0; 32], &mut [&mut b], &[31])
        .unwrap();
    let mut worst = 0.0f32;
    for step in 0..6 {
        let error = sovra_gpu::engine::relative_error(&want, &got);
        eprintln!("step {step}: relative error {error:.4}");
        worst = worst.max(error);
        let next = sovra_gpu::sampling::argmax(&want);
        assert_eq!(
            sovra_gpu::sampling::argmax(&got),
            next,
            "greedy choice at step {step}"
        );
        got = backend.forward(&[next], &[0], &mut [&mut a], &[0]).unwrap();
        want = cpu.forward(&[next], &[0], &mut [&mut b], &[0]).unwrap();
    }
    eprintln!("SmolLM2 on the emulated GPU against the exact CPU: worst relative error {worst:.4}");
}

#[test]
fn a_model_whose_activations_pass_f16s_range_runs_on_bf16() {
    // The Q6_K and Q4_K test models have weights of ±40 (random scale
    // bytes): their feed-forward products overflow f16 to infinity.
    let Some((sane, _)) = backends("llama-q8_0") else {
        return;
    };
    assert_eq!(sane.half(), Half::F16);
    let Some((wide, _)) = backends("llama-q6_k") else {
        return;
    };
    assert_eq!(wide.half(), Half::Bf16);
}

#[test]
fn the_gpu_check_runs_end_to_end_on_the_emulated_gpu() {
    if emulated::build(Half::F16).is_none() {
        return;
    }
    let open =
        |half| EmulatedGpu::start(half).ok_or_else(|| CudaLoadError::Cuda("no compiler".into()));
    let device = gpu_check::Device {
        open: &open,
        copy_bandwidth: &|_| None,
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    let passed = gpu_check::run(&device, &repo, &gpu_check::Plan::dry_run(), &mut report);
    let report = String::from_utf8(report).unwrap();
    eprintln!("{report}");
    assert!(passed, "a check failed on the emulated GPU:\n{report}");
    assert!(!report.contains("FAILED") && !report.contains("WRONG"));
    // Every tiny model has its row, and each half its throughput rows.
    for model in TINY_MODELS {
        assert!(
            report.contains(&format!("| {model} |")),
            "no row for {model}"
        );
    }
    for half in ["f16", "bf16"] {
        for batch in [1, 8, 64] {
            assert!(
                report.contains(&format!("| {half} | {batch} |")),
                "no {half} batch-{batch} row"
            );
        }
    }
}
