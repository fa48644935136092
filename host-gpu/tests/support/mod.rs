// Each test binary uses only part of this module.
#![allow(dead_code)]

//! Shared by the integration tests that use the real models from
//! `scripts/fetch-models`.

use std::path::PathBuf;

/// The path of a file under `models/`, or `None` (with a message) when it has
/// not been fetched. With `SOVRA_REQUIRE_MODELS` set, a missing file fails.
pub fn model_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("SOVRA_REQUIRE_MODELS").is_none(),
        "SOVRA_REQUIRE_MODELS is set but {} is missing; run scripts/fetch-models",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (run scripts/fetch-models)",
        path.display()
    );
    None
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SmolLM2 as a text engine, or `None` (with a message) when not fetched.
pub fn smollm2_engine() -> Option<std::sync::Arc<sovra_gpu::engine::TextEngine>> {
    let path = model_file(SMOLLM2)?;
    Some(std::sync::Arc::new(
        sovra_gpu::engine::TextEngine::load("smollm2", &path).unwrap(),
    ))
}

/// A request of tenant `t` with no deadline.
pub fn context() -> sovra_gpu::RequestContext {
    sovra_gpu::RequestContext {
        tenant: "t".into(),
        deadline: None,
    }
}
