//! `sovra plugin`: what publishers do before submitting a plugin:
//! make a key, sign a component with its manifest, check a signature.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sovra_runtime::ComponentInfo;
use sovra_runtime::signature::{PluginSignature, PublisherId, PublisherKey};

use crate::exit::{Code, Failure, WithCode};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Make a publisher key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, default_value = "publisher")]
        out: PathBuf,
    },
    /// Sign a component and its manifest; writes COMPONENT.sig (JSON).
    Sign {
        component: PathBuf,
        /// The publisher's secret key (from `sovra plugin keygen`).
        #[arg(long)]
        key: PathBuf,
        /// A manifest file shipped beside the component (default: the embedded one).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Where to write the signature (default: COMPONENT.sig).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a signature against a publisher's public key.
    Verify {
        component: PathBuf,
        /// The publisher's public key file (NAME.pub) or hex.
        #[arg(long)]
        publisher: String,
        /// The signature (default: COMPONENT.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// A manifest file shipped beside the component (default: the embedded one).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn with_extension(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(extension);
    PathBuf::from(name)
}

/// The component's bytes and the manifest bytes that go with it.
fn component_and_manifest(
    component: &Path,
    manifest: Option<&Path>,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let bytes = read(component)?;
    let manifest = match manifest {
        Some(path) => read(path)?,
        None => ComponentInfo::read(&bytes)
            .with_context(|| format!("cannot read {}", component.display()))?
            .manifest_source
            .with_context(|| {
                format!(
                    "{} embeds no manifest; pass --manifest",
                    component.display()
                )
            })?,
    };
    Ok((bytes, manifest))
}

pub fn plugin(command: PluginCommand) -> Result<ExitCode, Failure> {
    match command {
        PluginCommand::Keygen { out } => {
            let key = PublisherKey::generate().code(Code::Host)?;
            key.save(&with_extension(&out, ".key")).code(Code::Usage)?;
            let public = with_extension(&out, ".pub");
            std::fs::write(&public, format!("{}\n", key.public().to_hex()))
                .with_context(|| format!("cannot write {}", public.display()))
                .code(Code::Usage)?;
            println!("publisher {}", key.public().to_hex());
        }
        PluginCommand::Sign {
            component,
            key,
            manifest,
            out,
        } => {
            let key = PublisherKey::load(&key).code(Code::Usage)?;
            let (bytes, manifest) =
                component_and_manifest(&component, manifest.as_deref()).code(Code::Usage)?;
            let signature = key.sign(&bytes, &manifest);
            let out = out.unwrap_or_else(|| with_extension(&component, ".sig"));
            let json = serde_json::to_string_pretty(&signature).code(Code::Host)?;
            std::fs::write(&out, json + "\n")
                .with_context(|| format!("cannot write {}", out.display()))
                .code(Code::Usage)?;
            println!(
                "signed sha256:{} as {}",
                signature.component, signature.publisher
            );
        }
        PluginCommand::Verify {
            component,
            publisher,
            signature,
            manifest,
        } => {
            let publisher = match std::fs::read_to_string(&publisher) {
                Ok(text) => PublisherId::from_hex(&text),
                Err(_) => PublisherId::from_hex(&publisher),
            }
            .code(Code::Usage)?;
            let path = signature.unwrap_or_else(|| with_extension(&component, ".sig"));
            let signature: PluginSignature =
                serde_json::from_slice(&read(&path).code(Code::Usage)?)
                    .with_context(|| format!("{} is not a sovra signature", path.display()))
                    .code(Code::Usage)?;
            let (bytes, manifest) =
                component_and_manifest(&component, manifest.as_deref()).code(Code::Usage)?;
            publisher
                .verify(&signature, &bytes, &manifest)
                .code(Code::Denied)?;
            println!(
                "verified: sha256:{} signed by {}",
                signature.component, signature.publisher
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
