//! The CUDA backend. Without a GPU: every kernel compiles with NVRTC for
//! sm_90 (NVRTC runs on the CPU; `scripts/fetch-nvrtc` provides it, and
//! `SOVRA_REQUIRE_NVRTC=1` makes its absence a failure), and device probing
//! never panics. With a GPU (`SOVRA_REQUIRE_GPU=1` makes its absence a
//! failure): the tiny models of every weight type give the CPU's exact
//! logits within f16 tolerance, a batched step equals its solo steps,
//! greedy rows' arg-max found on the device equals the host's over the same
//! logits, decode steps replayed from CUDA graphs (padded batches included)
//! equal eager ones, and the engine generates on the device.

mod support;

use sovra_gpu::cuda::{self, CudaBackend, DeviceChoice, Half, kernels};
use sovra_gpu::engine::{Backend, CpuBackend};
use sovra_gpu::model::LlamaModel;
use sovra_gpu_check::kernels::check_kernels;
use support::{TINY_MODELS, decode_together, tiny_model};

fn nvrtc_present() -> bool {
    // SAFETY: only opens the library by name.
    let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !present {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_NVRTC").is_none(),
            "SOVRA_REQUIRE_NVRTC is set but libnvrtc.so is not on LD_LIBRARY_PATH \
             (scripts/fetch-nvrtc prints its directory)"
        );
        eprintln!("skipping: NVRTC not found (scripts/fetch-nvrtc, then LD_LIBRARY_PATH)");
    }
    present
}

/// Device 0, or `None` (with a message) on a machine without a usable GPU.
fn gpu() -> Option<usize> {
    let probe = cuda::probe();
    if probe.usable(0) {
        return Some(0);
    }
    assert!(
        std::env::var_os("SOVRA_REQUIRE_GPU").is_none(),
        "SOVRA_REQUIRE_GPU is set but there is no usable GPU: {:?}",
        probe.problem
    );
    eprintln!("skipping: no usable GPU ({:?})", probe.problem);
    None
}

#[test]
fn every_kernel_compiles_for_hopper_without_warnings() {
    if !nvrtc_present() {
        return;
    }
    for half in [Half::F16, Half::Bf16] {
        let compiled = kernels::compile("sm_90", half).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !compiled.log.to_lowercase().contains("warning"),
            "NVRTC warned:\n{}",
            compiled.log
        );
        for kernel in kernels::KERNELS {
            assert!(
                compiled.ptx.contains(&format!(".entry {kernel}(")),
                "{kernel}"
            );
        }
        assert!(compiled.ptx.contains(".target sm_90"));
        assert!(
            compiled.cubin.starts_with(b"\x7fELF"),
            "NVRTC made machine code for sm_90"
        );
    }
    // A broken kernel is reported with NVRTC's message, not a panic.
    let error = kernels::compile("sm_1", Half::F16).unwrap_err();
    assert!(error.to_string().contains("sm_1"), "{error}");
    // Loads share one compilation per architecture and half; failures are
    // not kept.
    let first = kernels::compiled("sm_90", Half::F16).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &first,
        &kernels::compiled("sm_90", Half::F16).unwrap()
    ));
    assert!(!std::sync::Arc::ptr_eq(
        &first,
        &kernels::compiled("sm_90", Half::Bf16).unwrap()
    ));
    assert!(kernels::compiled("sm_1", Half::F16).is_err());
}

#[test]
fn asking_for_cuda_without_a_gpu_is_a_clear_error() {
    let probe = cuda::probe();
    if probe.usable(0) {
        return;
    }
    let error = DeviceChoice::Cuda(0).resolve(&probe).unwrap_err();
    assert!(
        error.to_string().starts_with("cannot use cuda:0: "),
        "{error}"
    );
    let (device, note) = DeviceChoice::Auto.resolve(&probe).unwrap();
    assert_eq!(device, cuda::Device::Cpu);
    assert!(note.is_some());
}

/// A tiny reference model; `SOVRA_REPO` names the repository when this test
/// binary runs away from where it was built (scripts/gpu-check).
fn tiny(name: &str) -> LlamaModel {
    LlamaModel::load(&tiny_model(name)).unwrap()
}

/// Logits of every position, one token per step, through `backend`.
fn stepwise<B: Backend>(backend: &B, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = backend.new_cache();
    tokens
        .iter()
        .map(|&t| {
            backend
                .forward(&[t], &[0], &mut [&mut cache], &[0])
                .unwrap()
        })
        .collect()
}

#[test]
fn the_gpu_gives_the_cpu_logits_on_every_weight_type() {
    let Some(device) = gpu() else { return };
    let tokens = [3u32, 17, 42, 5, 29, 8];
    for name in TINY_MODELS {
        let model = tiny(name);
        // As a node loads it: f16 products unless the model needs bf16's
        // range (the Q4_K and Q6_K test models do), checked against the CPU.
        let gpu = sovra_gpu::engine::load_checked(
            |half| cuda::CudaGpu::open(device, half),
            &model,
            64 << 20,
            name,
        )
        .unwrap();
        let cpu = CpuBackend::new(
            std::sync::Arc::new(tiny(name).with_activations(sovra_gpu::cpu::Activations::Exact)),
            64 << 20,
        );
        let (want, got) = (stepwise(&cpu, &tokens), stepwise(&gpu, &tokens));
        for (position, (w, g)) in want.iter().zip(&got).enumerate() {
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 2e-2 * scale,
                "{name} position {position}: off by {worst} (scale {scale})"
            );
        }
        // Two sequences in one step equal each alone.
        let mut a = gpu.new_cache();
        let mut b = gpu.new_cache();
        let both = gpu
            .forward(
                &[3, 17, 42, 5],
                &[0, 0, 1, 1],
                &mut [&mut a, &mut b],
                &[1, 3],
            )
            .unwrap();
        let vocab = model.config().vocab;
        let alone_a = &stepwise(&gpu, &[3, 17])[1];
        let alone_b = &stepwise(&gpu, &[42, 5])[1];
        for (x, y) in both[..vocab]
            .iter()
            .zip(alone_a)
            .chain(both[vocab..].iter().zip(alone_b))
        {
            assert!(
                (x - y).abs() <= 1e-3 * x.abs().max(1.0),
                "{name}: batched {x} vs solo {y}"
            );
        }
    }
}

#[test]
fn device_argmax_and_decode_graphs_give_the_host_choices() {
    let Some(device) = gpu() else { return };
    let model = tiny("llama-q8_0");
    let gpu = CudaBackend::new(&model, device, 64 << 20).unwrap();
    let prompts: [&[u32]; 3] = [&[3, 17, 42], &[5, 29], &[8, 1, 2, 3, 4]];
    // Eager, logits to the host, the host's arg-max: the reference.
    gpu.set_graphs(false);
    let reference = decode_together(&gpu, &prompts, 10, false);
    // Graphs (three rows padded to four; captured at the second step and
    // replayed after), arg-max on the device.
    gpu.set_graphs(true);
    assert!(gpu.graphs());
    let replayed = decode_together(&gpu, &prompts, 10, true);
    assert_eq!(replayed, reference);
    // Each alone (a graph of one row) decodes what it decoded in the batch.
    for (s, prompt) in prompts.iter().enumerate() {
        let alone = decode_together(&gpu, &[prompt], 10, true);
        assert_eq!(alone[0], reference[s], "sequence {s} alone");
    }
    // Every cache went back to the pool.
    assert_eq!(gpu.cache_blocks_in_use(), 0);
}

#[tokio::test]
async fn the_engine_generates_on_the_gpu() {
    use sovra_gpu::engine::{EngineLimits, TextEngine};
    use sovra_gpu::{GenerateRequest, GenerationEvent, ModelService, Prompt, RequestContext};
    let Some(device) = gpu() else { return };
    let path = tiny_model("llama-spm");
    let engine = TextEngine::load_with_limits(
        "tiny",
        &path,
        EngineLimits::default(),
        DeviceChoice::Cuda(device),
    )
    .unwrap();
    let context = RequestContext {
        tenant: "t".into(),
        deadline: None,
    };
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: Prompt::Text("the quick brown fox".into()),
        sampling: sovra_gpu::Sampling {
            max_tokens: 12,
            ..Default::default()
        },
    };
    let mut generation = engine.start_generation(&context, request).unwrap();
    loop {
        match generation.next().await.expect("a final event") {
            GenerationEvent::Text(_) => {}
            GenerationEvent::Finished { usage, .. } => {
                assert!(usage.generated_tokens >= 1);
                break;
            }
            GenerationEvent::Failed(error) => panic!("{error}"),
        }
    }
    assert_eq!(engine.kv_cache_usage().0, 0);
}

#[test]
fn every_kernel_matches_its_host_reference() {
    let Some(device) = gpu() else { return };
    let checks = check_kernels(device).unwrap();
    let wrong: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
