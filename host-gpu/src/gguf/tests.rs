use std::path::{Path, PathBuf};

use super::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn sample() -> GgufWriter {
    let mut writer = GgufWriter::new();
    writer
        .metadata(
            "general.architecture",
            MetadataValue::String("llama".into()),
        )
        .metadata("llama.context_length", MetadataValue::U32(128))
        .metadata(
            "tokenizer.ggml.tokens",
            MetadataValue::Array(vec![
                MetadataValue::String("a".into()),
                MetadataValue::String("b".into()),
            ]),
        )
        .tensor("f32", &[4, 2], GgmlType::F32, (0..32).collect())
        .tensor("q8", &[32], GgmlType::Q8_0, vec![7; 34])
        .tensor("q4k", &[256, 2], GgmlType::Q4K, vec![1; 288]);
    writer
}

#[test]
fn written_files_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.gguf", &sample().to_bytes());
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.require_u64("llama.context_length").unwrap(), 128);
    assert_eq!(
        file.get("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let q4k = file.tensor("q4k").unwrap();
    assert_eq!(
        (q4k.ty, q4k.elements(), q4k.size),
        (GgmlType::Q4K, 512, 288)
    );
    assert_eq!(q4k.offset % DEFAULT_ALIGNMENT, 0);
    assert_eq!(
        file.tensor_data(file.tensor("f32").unwrap()),
        (0..32).collect::<Vec<u8>>()
    );
    assert!(matches!(
        file.tensor("missing"),
        Err(GgufError::MissingTensor { .. })
    ));
    assert!(matches!(
        file.require_u64("general.architecture"),
        Err(GgufError::Metadata { .. })
    ));
}

#[test]
fn every_truncation_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample().to_bytes();
    for len in 0..bytes.len() {
        let path = write(dir.path(), "cut.gguf", &bytes[..len]);
        let error = GgufFile::open(&path).expect_err("a truncated file must not open");
        assert!(error.to_string().contains("cut.gguf"), "{error}");
    }
}

#[test]
fn malformed_headers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample().to_bytes();

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let error = GgufFile::open(&write(dir.path(), "a.gguf", &bad_magic)).unwrap_err();
    assert!(matches!(error, GgufError::BadMagic { .. }), "{error}");

    let mut bad_version = good.clone();
    bad_version[4..8].copy_from_slice(&9u32.to_le_bytes());
    let error = GgufFile::open(&write(dir.path(), "b.gguf", &bad_version)).unwrap_err();
    assert!(error.to_string().contains("version 9"), "{error}");

    let mut absurd_count = good.clone();
    absurd_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let error = GgufFile::open(&write(dir.path(), "c.gguf", &absurd_count)).unwrap_err();
    assert!(error.to_string().contains("tensor count"), "{error}");
}

#[test]
fn bad_tensors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut unknown_type = GgufWriter::new();
    unknown_type.tensor("t", &[32], GgmlType::Q8_0, vec![0; 34]);
    let mut bytes = unknown_type.to_bytes();
    // The type code follows name, dimension count and one dimension.
    let type_at = 24 + 8 + 1 + 4 + 8;
    bytes[type_at..type_at + 4].copy_from_slice(&6u32.to_le_bytes());
    let error = GgufFile::open(&write(dir.path(), "t.gguf", &bytes)).unwrap_err();
    assert!(
        matches!(error, GgufError::UnsupportedTensorType { code: 6, .. }),
        "{error}"
    );

    let mut partial_block = GgufWriter::new();
    partial_block.tensor("t", &[33], GgmlType::Q8_0, vec![0; 34]);
    let error =
        GgufFile::open(&write(dir.path(), "p.gguf", &partial_block.to_bytes())).unwrap_err();
    assert!(error.to_string().contains("whole number"), "{error}");

    let mut short_data = GgufWriter::new();
    short_data.tensor("t", &[64], GgmlType::F32, vec![0; 16]);
    let error = GgufFile::open(&write(dir.path(), "s.gguf", &short_data.to_bytes())).unwrap_err();
    assert!(matches!(error, GgufError::Truncated { .. }), "{error}");

    let mut empty = GgufWriter::new();
    empty.tensor("t", &[0, 4], GgmlType::F32, Vec::new());
    let error = GgufFile::open(&write(dir.path(), "e.gguf", &empty.to_bytes())).unwrap_err();
    assert!(error.to_string().contains("shape"), "{error}");
}
