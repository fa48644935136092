// Each test binary uses only part of this module.
#![allow(dead_code)]

//! Shared by the GPU tests: the tiny models and a greedy batch decoder that
//! runs on any backend.

use std::path::PathBuf;

/// The path of tiny model `name` (`host-gpu/tests/reference/tiny`), in this
/// checkout or, on a GPU machine that has only the built tests, under
/// `SOVRA_REPO`.
pub fn tiny_model(name: &str) -> PathBuf {
    let repo = std::env::var_os("SOVRA_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    repo.join(format!("host-gpu/tests/reference/tiny/{name}.gguf"))
}

/// The tiny generated models of `host-gpu/tests/reference/tiny`, one per weight type
/// and qwen2 (`scripts/reference/tiny_models.py`).
pub const TINY_MODELS: [&str; 10] = [
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
];

/// Greedy continuations of `prompts` decoded together for `steps` tokens
/// through `backend`; `device_argmax` asks for greedy rows (ids back)
/// instead of logits.
pub fn decode_together<B: sovra_gpu::engine::Backend>(
    backend: &B,
    prompts: &[&[u32]],
    steps: usize,
    device_argmax: bool,
) -> Vec<Vec<u32>> {
    use sovra_gpu::engine::{RowOutput, Wanted};
    let mut caches: Vec<_> = prompts.iter().map(|_| backend.new_cache()).collect();
    let mut tokens = Vec::new();
    let mut owners = Vec::new();
    let mut wanted = Vec::new();
    for (s, prompt) in prompts.iter().enumerate() {
        tokens.extend_from_slice(prompt);
        owners.extend(std::iter::repeat_n(s, prompt.len()));
        wanted.push(Wanted {
            row: tokens.len() - 1,
            greedy: device_argmax,
        });
    }
    let mut out: Vec<Vec<u32>> = prompts.iter().map(|_| Vec::new()).collect();
    for _ in 0..steps {
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let outputs = backend.step(&tokens, &owners, &mut refs, &wanted).unwrap();
        assert_eq!(outputs.len(), prompts.len());
        for (s, output) in outputs.into_iter().enumerate() {
            out[s].push(match output {
                RowOutput::ArgMax(t) => {
                    assert!(device_argmax, "an arg-max for a row that asked for logits");
                    t
                }
                RowOutput::Logits(l) => sovra_gpu::sampling::argmax(&l),
            });
        }
        tokens = out.iter().map(|o| *o.last().unwrap()).collect();
        owners = (0..prompts.len()).collect();
        wanted = (0..prompts.len())
            .map(|row| Wanted {
                row,
                greedy: device_argmax,
            })
            .collect();
    }
    out
}
