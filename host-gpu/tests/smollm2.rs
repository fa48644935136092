//! The real SmolLM2-135M-Instruct file: its GGUF structure and its tokenizer
//! against the Hugging Face `tokenizers` reference.

mod support;

use sovra_gpu::gguf::{GgmlType, GgufFile};
use sovra_gpu::tokenizer;
use support::{SMOLLM2, model_file};

fn smollm2() -> Option<std::path::PathBuf> {
    model_file(SMOLLM2)
}

#[test]
fn reads_the_real_smollm2_file() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.require_u64("llama.block_count").unwrap(), 30);
    assert_eq!(file.require_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.require_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert!(
        file.require_str("tokenizer.chat_template")
            .unwrap()
            .contains("<|im_start|>")
    );
    let tokens = file
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(tokens.len(), 49152);
    // 30 blocks of 9 tensors, plus token embeddings and the output norm
    // (the output projection is tied to the embeddings).
    assert_eq!(file.tensors().len(), 30 * 9 + 2);
    let embeddings = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embeddings.dims, [576, 49152]);
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ty, GgmlType::Q4_1);
    assert_eq!(q.size, 576 * 576 / 32 * 20);
}

#[test]
fn tokenizer_matches_the_reference_ids() {
    let Some(path) = smollm2() else { return };
    let file = GgufFile::open(&path).unwrap();
    let tokenizer = tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!(tokenizer.eos(), tokenizer.token_id("<|im_end|>"));
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("reference/tokenizer_ids.json")).unwrap();
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tokenizer.encode(text);
        assert_eq!(ids, expected, "token ids of {text:?}");
        assert_eq!(tokenizer.decode(&ids), text, "round trip of {text:?}");
    }
}
