//! Every fuzz target over its seeds and over every input that once made it
//! fail: they keep building with the project, and a fixed bug stays fixed.

use std::path::Path;

use sovra_fuzz_targets::TARGETS;

#[test]
fn every_target_passes_its_seeds_and_past_failures() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut ran = 0;
    for (name, target) in TARGETS {
        let seeds = fuzz.join("seeds").join(name);
        assert!(
            seeds.is_dir(),
            "target `{name}` has no seeds at {}",
            seeds.display()
        );
        for folder in [seeds, fuzz.join("regressions").join(name)] {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                eprintln!("{name}: {}", path.display());
                target(&data);
                ran += 1;
            }
        }
    }
    assert!(ran >= TARGETS.len(), "{ran} inputs");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let binary = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(binary.is_file(), "{} is missing", binary.display());
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}");
    }
}

/// The small GGUF seeds parse all the way to a working tokenizer, so the
/// fuzzer's mutations start deep in the reader and the tokenizer builders.
#[test]
fn the_gguf_seeds_build_tokenizers() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/gguf");
    for name in ["tiny-bpe.gguf", "tiny-spm.gguf"] {
        let file = sovra_gpu::gguf::GgufFile::open(&seeds.join(name)).unwrap();
        let tokenizer = sovra_gpu::tokenizer::from_gguf(&file).unwrap();
        let ids = tokenizer.encode("hello world");
        assert!(!ids.is_empty(), "{name}");
        let text = tokenizer.decode(&ids);
        assert!(text.trim().ends_with("hello world"), "{name}: {text:?}");
    }
}
