//! `sovra plugin wit` and `sovra plugin pack`: how an agent written in any
//! language (Python with componentize-py, JavaScript with componentize-js)
//! gets the WIT world its `agent.toml` calls for, and then its manifest
//! embedded into the component its toolchain built.

use std::path::Path;

use anyhow::Context;
use sovra_runtime::AgentManifest;
use sovra_runtime::packaging::{embed_manifest, world_files};

use crate::exit::{Code, Failure, WithCode};

/// Writes the WIT directory for the manifest at `manifest` into `out`, and
/// prints the world to name to the bindings generator.
pub fn write_world(manifest: &Path, out: &Path) -> Result<(), Failure> {
    let bytes = std::fs::read(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))
        .code(Code::Usage)?;
    let manifest = AgentManifest::parse(&bytes)
        .with_context(|| format!("{} is not a valid manifest", manifest.display()))
        .code(Code::Usage)?;
    let world = world_files(&manifest)
        .context(
            "a command or HTTP handler is built against wasi:cli or wasi:http by its own \
             toolchain; pack it with `sovra plugin pack`",
        )
        .code(Code::Usage)?;
    for (relative, text) in &world.files {
        let path = out.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))
                .code(Code::Usage)?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))
            .code(Code::Usage)?;
    }
    println!("{}", world.world);
    Ok(())
}

/// Embeds the manifest at `manifest` into the component at `component`,
/// writing the result to `out` (replaced whole: never half-written).
pub fn pack(component: &Path, manifest: &Path, out: &Path) -> Result<(), Failure> {
    let read = |path: &Path| {
        std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .code(Code::Usage)
    };
    let packed = embed_manifest(&read(component)?, &read(manifest)?)
        .with_context(|| format!("cannot pack {}", component.display()))
        .code(Code::Usage)?;
    let name = out
        .file_name()
        .with_context(|| format!("{} names no file", out.display()))
        .code(Code::Usage)?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(".packing");
    let temporary = out.with_file_name(temporary_name);
    std::fs::write(&temporary, &packed)
        .and_then(|()| std::fs::rename(&temporary, out))
        .with_context(|| format!("cannot write {}", out.display()))
        .code(Code::Usage)?;
    println!("packed {} ({} bytes)", out.display(), packed.len());
    Ok(())
}
