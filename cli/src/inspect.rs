//! `sovra inspect`: what a component is, without running it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use sovra_runtime::capability::{ImportNeed, classify_import};
use sovra_runtime::limits::MAX_COMPONENT_BYTES;
use sovra_runtime::{ComponentInfo, LoadError};

use crate::exit::{Code, Failure, WithCode};

#[derive(Args)]
pub struct InspectArgs {
    /// The component (.wasm).
    component: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<ExitCode, Failure> {
    let path = &args.component;
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .code(Code::Usage)?
        .len();
    if size > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge {
            size,
            max: MAX_COMPONENT_BYTES,
        })
        .code(Code::Usage);
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .code(Code::Usage)?;
    let info = ComponentInfo::read(&bytes)
        .with_context(|| format!("cannot inspect {}", path.display()))
        .code(Code::Usage)?;
    let imports: Vec<(String, String)> = info
        .imports
        .iter()
        .map(|name| {
            let need = match classify_import(name) {
                Ok(ImportNeed::Always) => "always available".to_owned(),
                Ok(ImportNeed::Grant(capability)) => format!("needs grant `{capability}`"),
                Ok(ImportNeed::Controller) => "controllers only, in episodes".to_owned(),
                Err(_) => "NOT PROVIDED: the component cannot run on sovra".to_owned(),
            };
            (name.clone(), need)
        })
        .collect();
    let text = if args.json {
        format!("{:#}\n", to_json(&info, &imports))
    } else {
        render_text(&info, &imports)
    };
    // A closed pipe (`sovra inspect x.wasm | head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn render_text(info: &ComponentInfo, imports: &[(String, String)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "digest:  {}", info.digest);
    let _ = writeln!(out, "size:    {} bytes", info.size);
    let world = match info.world {
        sovra_runtime::World::Command => {
            "wasi:cli/command (input on stdin, output from stdout)".to_owned()
        }
        sovra_runtime::World::Http => {
            "wasi:http/proxy (each invocation an HTTP request to its handler)".to_owned()
        }
        world => format!("sovra:agent/{}", world.as_str()),
    };
    let _ = writeln!(out, "world:   {world}");
    match &info.manifest {
        Some(manifest) => {
            let _ = writeln!(out, "agent:   {} {}", manifest.name, manifest.version);
            if !manifest.description.is_empty() {
                let _ = writeln!(out, "about:   {}", manifest.description);
            }
            let caps = &manifest.capabilities;
            let mut requested = Vec::new();
            if caps.kv {
                requested.push("kv".to_owned());
            }
            if caps.sql {
                requested.push("sql".to_owned());
            }
            if caps.vector {
                requested.push("vector".to_owned());
            }
            for model in &caps.models {
                requested.push(format!("model {model}"));
            }
            let _ = writeln!(
                out,
                "requests: {}",
                if requested.is_empty() {
                    "nothing beyond logging".to_owned()
                } else {
                    requested.join(", ")
                }
            );
            if let Some(timeout) = manifest.limits.timeout {
                let _ = writeln!(out, "limit:   timeout {timeout:?}");
            }
            if let Some(memory) = manifest.limits.max_memory {
                let _ = writeln!(out, "limit:   max memory {memory} bytes");
            }
        }
        None => {
            let _ = writeln!(out, "agent:   (no embedded manifest)");
        }
    }
    let _ = writeln!(out, "imports:");
    for (name, need) in imports {
        let _ = writeln!(out, "  {name}  ({need})");
    }
    let _ = writeln!(out, "exports:");
    for name in &info.exports {
        let _ = writeln!(out, "  {name}");
    }
    out
}

fn to_json(info: &ComponentInfo, imports: &[(String, String)]) -> serde_json::Value {
    let manifest = info.manifest.as_ref().map(|m| {
        serde_json::json!({
            "name": m.name,
            "version": m.version.to_string(),
            "world": m.world.as_str(),
            "description": m.description,
            "capabilities": {
                "kv": m.capabilities.kv,
                "sql": m.capabilities.sql,
                "vector": m.capabilities.vector,
                "models": m.capabilities.models,
            },
            "limits": {
                "timeout_ms": m.limits.timeout.map(|t| t.as_millis() as u64),
                "max_memory": m.limits.max_memory,
            },
        })
    });
    serde_json::json!({
        "digest": info.digest.to_string(),
        "size": info.size,
        "world": info.world.as_str(),
        "manifest": manifest,
        "imports": imports.iter().map(|(name, need)| serde_json::json!({"name": name, "need": need})).collect::<Vec<_>>(),
        "exports": info.exports,
    })
}
