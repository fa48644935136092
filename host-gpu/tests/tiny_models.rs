//! Tiny generated models in every weight type, and qwen2, through the forward
//! pass (`scripts/reference/tiny_models.py` made the files and the exact
//! logits with llama.cpp's `gguf` package and a float64 numpy forward).

use std::path::Path;

use sovra_gpu::cpu::Activations;
use sovra_gpu::gguf::GgufFile;
use sovra_gpu::model::LlamaModel;

fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("reference/tiny/logits.json")).unwrap()
}

/// Logits of every position for `tokens`, one token at a time through the cache.
fn logits(model: &LlamaModel, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    tokens
        .iter()
        .map(|&t| model.forward(&[t], &[0], &mut [&mut cache], &[0]).unwrap())
        .collect()
}

#[test]
fn every_weight_type_and_qwen2_match_the_exact_reference() {
    let reference = reference();
    let tokens: Vec<u32> = reference["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let models = reference["logits"].as_object().unwrap();
    assert_eq!(models.len(), 9);
    for (name, expected) in models {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/reference/tiny/{name}.gguf"));
        let file = GgufFile::open(&path).unwrap();
        let exact = LlamaModel::from_gguf(&file)
            .unwrap()
            .with_activations(Activations::Exact);
        let fast = LlamaModel::from_gguf(&file).unwrap();
        let (exact, fast) = (logits(&exact, &tokens), logits(&fast, &tokens));
        for (position, want) in expected.as_array().unwrap().iter().enumerate() {
            let want: Vec<f32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (i, (&got, &w)) in exact[position].iter().zip(&want).enumerate() {
                assert!(
                    (got - w).abs() <= 1e-4 * scale,
                    "{name} position {position} logit {i}: {got} vs exact {w}"
                );
            }
            // The fast path quantizes activations to 8 bits: close, not equal.
            let worst = fast[position]
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 0.05 * scale,
                "{name} position {position}: fast path off by {worst} (scale {scale})"
            );
        }
    }
}

#[test]
fn a_whole_prompt_in_one_step_equals_one_token_at_a_time() {
    let tokens = [3u32, 17, 42, 5, 29, 8];
    for name in ["llama-q4_1", "qwen2-q8_0", "llama-q6_k"] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/reference/tiny/{name}.gguf"));
        let model = LlamaModel::load(&path).unwrap();
        let stepwise = logits(&model, &tokens);
        let mut cache = model.new_cache();
        let all: Vec<usize> = (0..tokens.len()).collect();
        let batched = model
            .forward(&tokens, &[0; 6], &mut [&mut cache], &all)
            .unwrap();
        let vocab = model.config().vocab;
        for (position, row) in stepwise.iter().enumerate() {
            let together = &batched[position * vocab..(position + 1) * vocab];
            for (a, b) in row.iter().zip(together) {
                assert!(
                    (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                    "{name} position {position}: {a} vs {b}"
                );
            }
        }
    }
}
