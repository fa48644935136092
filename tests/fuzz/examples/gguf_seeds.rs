//! Writes the small GGUF seeds of the `gguf` fuzz target: a byte-level BPE
//! (`gpt2`) and a SentencePiece (`llama`) tokenizer with a tensor each, so
//! mutations start from files that parse all the way to a tokenizer.
//!
//! `cargo run -p sovra-fuzz-targets --example gguf_seeds` (writes
//! fuzz/seeds/gguf/tiny-{bpe,spm}.gguf)

use std::path::Path;

use sovra_gpu::gguf::{GgmlType, GgufWriter, MetadataValue};

/// GPT-2's map of bytes to printable characters, as byte-level BPE vocabularies
/// spell them.
fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut extra = 0;
    (0..=255u32)
        .map(|b| {
            if printable.contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

fn strings(values: &[String]) -> MetadataValue {
    MetadataValue::Array(values.iter().cloned().map(MetadataValue::String).collect())
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let weights = vec![0u8; 4 * 4 * 4];

    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let merges = ["h e", "l l", "he ll", "Ġ w"];
    for merge in merges {
        tokens.push(merge.replace(' ', ""));
    }
    tokens.extend(["<|im_start|>".to_owned(), "<|im_end|>".to_owned()]);
    let mut types = vec![MetadataValue::U32(1); tokens.len()];
    let end = types.len();
    types[end - 2] = MetadataValue::U32(3);
    types[end - 1] = MetadataValue::U32(3);
    let mut bpe = GgufWriter::new();
    bpe.metadata(
        "general.architecture",
        MetadataValue::String("llama".into()),
    )
    .metadata("tokenizer.ggml.model", MetadataValue::String("gpt2".into()))
    .metadata("tokenizer.ggml.pre", MetadataValue::String("smollm".into()))
    .metadata("tokenizer.ggml.tokens", strings(&tokens))
    .metadata("tokenizer.ggml.token_type", MetadataValue::Array(types))
    .metadata("tokenizer.ggml.merges", strings(&merges.map(str::to_owned)))
    .metadata(
        "tokenizer.ggml.bos_token_id",
        MetadataValue::U32(end as u32 - 2),
    )
    .metadata(
        "tokenizer.ggml.eos_token_id",
        MetadataValue::U32(end as u32 - 1),
    )
    .tensor("token_embd.weight", &[4, 4], GgmlType::F32, weights.clone());
    bpe.write(&dir.join("tiny-bpe.gguf")).unwrap();

    let mut pieces: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    pieces.extend(["▁".into(), "▁he".into(), "llo".into(), "▁world".into()]);
    let mut types = vec![
        MetadataValue::U32(2),
        MetadataValue::U32(3),
        MetadataValue::U32(3),
    ];
    types.extend((0..256).map(|_| MetadataValue::U32(6)));
    types.extend((0..4).map(|_| MetadataValue::U32(1)));
    let scores = (0..pieces.len())
        .map(|i| MetadataValue::F32(-(i as f32)))
        .collect();
    let mut spm = GgufWriter::new();
    spm.metadata(
        "general.architecture",
        MetadataValue::String("llama".into()),
    )
    .metadata(
        "tokenizer.ggml.model",
        MetadataValue::String("llama".into()),
    )
    .metadata("tokenizer.ggml.tokens", strings(&pieces))
    .metadata("tokenizer.ggml.token_type", MetadataValue::Array(types))
    .metadata("tokenizer.ggml.scores", MetadataValue::Array(scores))
    .metadata("tokenizer.ggml.unknown_token_id", MetadataValue::U32(0))
    .metadata("tokenizer.ggml.bos_token_id", MetadataValue::U32(1))
    .metadata("tokenizer.ggml.eos_token_id", MetadataValue::U32(2))
    .tensor("token_embd.weight", &[4, 4], GgmlType::F32, weights);
    spm.write(&dir.join("tiny-spm.gguf")).unwrap();
    println!("wrote {}", dir.display());
}
