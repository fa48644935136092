//! What operators load: GGUF and safetensors files, tokenizers, chat
//! templates.

use std::sync::OnceLock;

use sovra_gpu::chat_template::ChatTemplate;
use sovra_gpu::gguf::GgufFile;
use sovra_gpu::safetensors::SafetensorsFile;
use sovra_gpu::tokenizer::{Tokenizer, WordPieceTokenizer};
use sovra_gpu::{ChatMessage, Role};

use crate::files::{as_file, repository};

/// GGUF files (header, metadata, tensor infos and offsets), every tensor's
/// bytes, and the tokenizer built from their vocabulary, fed a fixed text.
pub fn gguf(data: &[u8]) {
    let (_dir, path) = as_file("model.gguf", data);
    let Ok(file) = GgufFile::open(&path) else {
        return;
    };
    for info in file.tensors() {
        let _ = file.tensor_data(info).len();
    }
    if let Ok(tokenizer) = sovra_gpu::tokenizer::from_gguf(&file) {
        let ids = tokenizer.encode("Hello, wörld! <|im_start|> 123\n\tend");
        let _ = tokenizer.decode(&ids);
    }
}

/// safetensors files: the JSON header, its offsets and shapes.
pub fn safetensors(data: &[u8]) {
    let (_dir, path) = as_file("model.safetensors", data);
    if let Ok(file) = SafetensorsFile::open(&path) {
        for name in ["embeddings.word_embeddings.weight", "a", "x"] {
            if let Ok(entry) = file.entry(name) {
                let shape = entry.shape.clone();
                let _ = file.f32(name, &shape);
            }
        }
    }
}

/// The real tokenizers (SmolLM2's byte-level BPE from its GGUF, MiniLM's
/// WordPiece), loaded once when the models are fetched.
fn real_tokenizers() -> &'static (Option<Tokenizer>, Option<WordPieceTokenizer>) {
    static TOKENIZERS: OnceLock<(Option<Tokenizer>, Option<WordPieceTokenizer>)> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let models = repository().join("models");
        let bpe = GgufFile::open(&models.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
            .ok()
            .and_then(|file| sovra_gpu::tokenizer::from_gguf(&file).ok());
        let wordpiece =
            WordPieceTokenizer::from_file(&models.join("all-MiniLM-L6-v2/tokenizer.json")).ok();
        (bpe, wordpiece)
    })
}

/// The real tokenizers fed fuzzed text, and fuzzed token ids decoded.
pub fn tokenizer_text(data: &[u8]) {
    let (bpe, wordpiece) = real_tokenizers();
    let text = String::from_utf8_lossy(data);
    if let Some(bpe) = bpe {
        let ids = bpe.encode(&text);
        let _ = bpe.decode(&ids);
        let fuzzed: Vec<u32> = data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let _ = bpe.decode(&fuzzed);
    }
    if let Some(wordpiece) = wordpiece {
        let _ = wordpiece.encode(&text, 256);
    }
}

/// WordPiece tokenizers built from fuzzed `tokenizer.json` files.
pub fn wordpiece_vocab(data: &[u8]) {
    let (_dir, path) = as_file("tokenizer.json", data);
    if let Ok(tokenizer) = WordPieceTokenizer::from_file(&path) {
        let _ = tokenizer.encode("Hello, wörld! unaffable [CLS] 123", 64);
    }
}

/// Chat templates (Jinja, from model files) rendered with a fixed
/// conversation, bounded in work and output.
pub fn chat_template(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let _ = template.render(&[
        ChatMessage {
            role: Role::System,
            content: "Be brief.".into(),
        },
        ChatMessage {
            role: Role::User,
            content: "What is the capital of France?".into(),
        },
    ]);
}
