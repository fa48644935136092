//! The load-time agreement check: before a device backend serves anyone, a
//! short prompt and a few decode steps run on it and on the CPU, and their
//! logits must agree.
//!
//! A device can be wrong without failing: a driver that miscompiles a
//! kernel, a library of the wrong version, a bug in a path no test machine
//! ran. Such a backend would answer every tenant with fluent nonsense. The
//! check costs a few CPU tokens at load; with `device = auto` a failure
//! falls back to the CPU, with `cuda` it refuses to load.

use super::backend::{Backend, RowOutput, Wanted};
use crate::cpu::Activations;
use crate::model::LlamaModel;

/// Prompt tokens the check runs.
const PROMPT_TOKENS: usize = 8;

/// Decode steps after the prompt: enough for a CUDA backend to run a decode
/// step eagerly, capture its graph, and replay it.
const DECODE_STEPS: usize = 3;

/// Largest logit difference allowed, relative to the largest logit. The
/// CPU side computes with exact f32 activations; bf16 on the device stays
/// within about 0.03 of it on SmolLM2 (weights and activations rounded to
/// bf16, emulated); a broken kernel is off by the whole scale.
pub const AGREEMENT_TOLERANCE: f32 = 0.1;

/// Where and by how much a device first disagreed with the CPU.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{device} disagrees with the CPU at {step}: {what}")]
pub struct Disagreement {
    pub device: String,
    /// `prompt` or `decode step N`.
    pub step: String,
    /// 0 for the prompt, N for decode step N.
    pub step_index: usize,
    /// Relative error of the logits (infinite when the step failed).
    pub error: f32,
    /// What went wrong, in words.
    pub what: String,
}

/// Largest |a - b| over the largest |a|; infinite when `got` has a value
/// that is not finite or a different length (how logits are compared
/// across devices).
pub fn relative_error(want: &[f32], got: &[f32]) -> f32 {
    if got.iter().any(|v| !v.is_finite()) || want.len() != got.len() {
        return f32::INFINITY;
    }
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    want.iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

/// Runs the check of `device` against `model` on the CPU.
pub fn agrees_with_cpu<B: Backend>(device: &B, model: &LlamaModel) -> Result<(), Disagreement> {
    let vocab = model.config().vocab;
    let prompt: Vec<u32> = (0..PROMPT_TOKENS)
        .map(|i| ((i * 7919 + 1) % vocab) as u32)
        .collect();
    let mut cpu_cache = model.new_cache();
    let mut device_cache = device.new_cache();
    let disagree = |step_index: usize, error: f32, what: String| Disagreement {
        device: device.device(),
        step: if step_index == 0 {
            "prompt".to_owned()
        } else {
            format!("decode step {step_index}")
        },
        step_index,
        error,
        what,
    };
    let mut tokens = prompt;
    for step in 0..=DECODE_STEPS {
        let owners = vec![0; tokens.len()];
        let last = tokens.len() - 1;
        let want = model
            .forward_with(
                Activations::Exact,
                &tokens,
                &owners,
                &mut [&mut cpu_cache],
                &[last],
            )
            .map_err(|e| disagree(step, f32::INFINITY, format!("the CPU side failed: {e}")))?;
        let wanted = [Wanted {
            row: last,
            greedy: false,
        }];
        let got = match device.step(&tokens, &owners, &mut [&mut device_cache], &wanted) {
            Ok(mut rows) => match rows.pop() {
                Some(RowOutput::Logits(logits)) => logits,
                _ => {
                    return Err(disagree(step, f32::INFINITY, "no logits came back".into()));
                }
            },
            Err(e) => {
                return Err(disagree(
                    step,
                    f32::INFINITY,
                    format!("the step failed: {e}"),
                ));
            }
        };
        let error = relative_error(&want, &got);
        if error > AGREEMENT_TOLERANCE {
            return Err(disagree(
                step,
                error,
                format!("logits off by {error:.3} of their scale (allowed {AGREEMENT_TOLERANCE})"),
            ));
        }
        // The CPU's choice goes on, so both sides see the same tokens.
        tokens = vec![crate::sampling::argmax(&want)];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::engine::{BackendError, CpuBackend};
    use crate::model::{KvCache, LlamaConfig};

    fn tiny() -> Arc<LlamaModel> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/tiny/llama-q8_0.gguf");
        Arc::new(LlamaModel::load(&path).unwrap())
    }

    /// The CPU backend with its logits bent after `good_steps` steps, as a
    /// device with a broken path would give them.
    struct Bent {
        inner: CpuBackend,
        good_steps: usize,
        steps: std::sync::atomic::AtomicUsize,
    }

    impl Backend for Bent {
        type Cache = KvCache;
        fn device(&self) -> String {
            "bent:0".into()
        }
        fn config(&self) -> &LlamaConfig {
            self.inner.config()
        }
        fn new_cache(&self) -> KvCache {
            self.inner.new_cache()
        }
        fn cache_capacity_blocks(&self) -> usize {
            self.inner.cache_capacity_blocks()
        }
        fn cache_block_bytes(&self) -> usize {
            self.inner.cache_block_bytes()
        }
        fn cache_blocks_in_use(&self) -> usize {
            self.inner.cache_blocks_in_use()
        }
        fn step(
            &self,
            tokens: &[u32],
            owners: &[usize],
            caches: &mut [&mut KvCache],
            wanted: &[Wanted],
        ) -> Result<Vec<RowOutput>, BackendError> {
            let mut rows = self.inner.step(tokens, owners, caches, wanted)?;
            let step = self
                .steps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if step >= self.good_steps {
                for row in &mut rows {
                    if let RowOutput::Logits(logits) = row {
                        logits.reverse();
                    }
                }
            }
            Ok(rows)
        }
    }

    #[test]
    fn the_cpu_agrees_with_itself() {
        let model = tiny();
        let backend = CpuBackend::new(Arc::clone(&model), 1 << 20);
        agrees_with_cpu(&backend, &model).unwrap();
    }

    #[test]
    fn a_device_wrong_from_its_second_decode_step_is_caught_there() {
        let model = tiny();
        let bent = Bent {
            inner: CpuBackend::new(Arc::clone(&model), 1 << 20),
            good_steps: 2,
            steps: Default::default(),
        };
        let error = agrees_with_cpu(&bent, &model).unwrap_err();
        assert_eq!(
            (error.step.as_str(), error.step_index),
            ("decode step 2", 2)
        );
        assert!(error.error > AGREEMENT_TOLERANCE);
        assert!(
            error
                .to_string()
                .starts_with("bent:0 disagrees with the CPU at decode step 2"),
            "{error}"
        );
    }
}
