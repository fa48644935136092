//! all-MiniLM-L6-v2 sentence embeddings against the reference (Hugging Face
//! `tokenizers` + a numpy BERT, `scripts/reference/minilm_embeddings.py`).

mod support;

use sovra_gpu::engine::EmbeddingEngine;
use sovra_gpu::{ModelService, RequestContext};
use support::model_file;

/// Cosine similarity every embedding must reach against the reference.
const MIN_COSINE: f32 = 1.0 - 1e-4;

#[test]
fn embeddings_match_the_reference() {
    let Some(dir) = model_file("all-MiniLM-L6-v2") else {
        return;
    };
    let engine = EmbeddingEngine::load("minilm", &dir).unwrap();
    assert_eq!(engine.descriptor().embedding_length, 384);
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("reference/minilm_embeddings.json")).unwrap();
    let cases = cases.as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    let context = RequestContext {
        tenant: "t".into(),
        deadline: None,
    };
    let embedded = engine.embed(&context, texts.clone()).unwrap();
    let vectors = &embedded.vectors;
    // The call is accounted as the tokens the texts came to.
    let reference_tokens: usize = cases
        .iter()
        .map(|c| c["ids"].as_array().unwrap().len())
        .sum();
    assert_eq!(embedded.tokens as usize, reference_tokens);
    for ((case, text), vector) in cases.iter().zip(&texts).zip(vectors) {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(engine.tokenize(text), ids, "token ids of {text:?}");
        let reference: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let cosine: f32 = vector.iter().zip(&reference).map(|(a, b)| a * b).sum();
        assert!(cosine >= MIN_COSINE, "{text:?}: cosine {cosine}");
    }
    // Similar sentences are closer than unrelated ones.
    let similarity = |a: usize, b: usize| -> f32 {
        vectors[a].iter().zip(&vectors[b]).map(|(x, y)| x * y).sum()
    };
    assert!(similarity(1, 2) > similarity(1, 3) + 0.2);
}

#[test]
fn texts_embedded_together_equal_each_embedded_alone() {
    let Some(dir) = model_file("all-MiniLM-L6-v2") else {
        return;
    };
    let engine = EmbeddingEngine::load("minilm", &dir).unwrap();
    let context = RequestContext {
        tenant: "t".into(),
        deadline: None,
    };
    let long = "tenant data stays on the node ".repeat(40);
    let mut texts: Vec<String> = [
        "Refunds are processed within five business days.",
        "short",
        long.as_str(),
        "Each invocation runs in a fresh WebAssembly sandbox.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Enough texts to pass MAX_BATCH_TOKENS, so they go in several passes.
    let passes = sovra_gpu::engine::MAX_BATCH_TOKENS / 200 + 1;
    texts.extend(std::iter::repeat_n(long.clone(), passes));
    let together = engine.embed(&context, texts.clone()).unwrap().vectors;
    assert_eq!(together.len(), texts.len());
    for (text, vector) in texts.iter().zip(&together).take(5) {
        let alone = engine.embed(&context, vec![text.clone()]).unwrap().vectors;
        assert_eq!(&alone[0], vector, "{text:.40}");
    }
    assert_eq!(together[2], together[texts.len() - 1]);
}
