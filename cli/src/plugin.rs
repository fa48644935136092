//! `sovra plugin`: what publishers do: build against the world their
//! manifest calls for and pack the manifest in (agents in any language),
//! make a key, sign a component with its manifest, check a signature,
//! submit to a node; and what operators do with a node's publisher log:
//! read it and verify its hash chain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sovra_runtime::ComponentInfo;
use sovra_server::signature::{PluginSignature, PublisherId, PublisherKey};

use crate::exit::{Code, Failure, WithCode};
use crate::node_key::NodeKeyArgs;

/// Longest a submission may take, the node's compile included.
const SUBMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Write the WIT world an agent.toml calls for (only the interfaces it
    /// requests), to build a Python or JavaScript agent against; prints the
    /// world's name.
    Wit {
        /// The agent's manifest (agent.toml).
        manifest: PathBuf,
        /// The directory to write (world.wit and deps/).
        #[arg(long)]
        out: PathBuf,
    },
    /// Embed an agent.toml into a component built by any toolchain
    /// (componentize-py, componentize-js), after checking that they match.
    Pack {
        component: PathBuf,
        /// The agent's manifest (agent.toml).
        #[arg(long)]
        manifest: PathBuf,
        /// Where to write the packed component.
        #[arg(long)]
        out: PathBuf,
    },
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
    /// Submit a signed component to a node for review.
    Submit {
        component: PathBuf,
        /// The node's base URL, such as http://127.0.0.1:8700.
        #[arg(long, env = "SOVRA_NODE")]
        node: String,
        /// The signature (default: COMPONENT.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Print a node's publisher log; with --verify, check its hash chain.
    Log {
        /// The node's data directory (holding node.db).
        #[arg(long)]
        data_dir: PathBuf,
        /// Exit non-zero unless every entry links to the one before.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        node_key: NodeKeyArgs,
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
        PluginCommand::Wit { manifest, out } => crate::pack::write_world(&manifest, &out)?,
        PluginCommand::Pack {
            component,
            manifest,
            out,
        } => crate::pack::pack(&component, &manifest, &out)?,
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
        PluginCommand::Submit {
            component,
            node,
            signature,
        } => submit(&component, &node, signature)?,
        PluginCommand::Log {
            data_dir,
            verify,
            node_key,
        } => return log(&data_dir, &node_key, verify),
    }
    Ok(ExitCode::SUCCESS)
}

fn submit(component: &Path, node: &str, signature: Option<PathBuf>) -> Result<(), Failure> {
    let bytes = read(component).code(Code::Usage)?;
    let path = signature.unwrap_or_else(|| with_extension(component, ".sig"));
    let signature: PluginSignature = serde_json::from_slice(&read(&path).code(Code::Usage)?)
        .with_context(|| format!("{} is not a sovra signature", path.display()))
        .code(Code::Usage)?;
    let header = serde_json::to_string(&signature).code(Code::Host)?;
    let url = format!("{}/v1/plugins", node.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(SUBMIT_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&url)
        .header("content-type", "application/wasm")
        .header("sovra-signature", &header)
        .send(&bytes[..])
        .with_context(|| format!("cannot reach {url}"))
        .code(Code::Host)?;
    let status = response.status();
    let body: serde_json::Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} answered {status} without JSON"))
        .code(Code::Host)?;
    if status.is_success() {
        let plugin = &body["plugin"];
        println!(
            "submitted {}@{} (sha256:{}): {}, waiting for the operator's review",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["version"].as_str().unwrap_or("?"),
            plugin["digest"].as_str().unwrap_or("?"),
            plugin["state"].as_str().unwrap_or("?"),
        );
        Ok(())
    } else {
        let code = if status.is_client_error() {
            Code::Denied
        } else {
            Code::Host
        };
        Err(anyhow::anyhow!(
            "the node refused the plugin ({status}, {}): {}",
            body["error"]["code"].as_str().unwrap_or("?"),
            body["error"]["message"].as_str().unwrap_or("?")
        ))
        .code(code)
    }
}

fn log(data_dir: &Path, node_key: &NodeKeyArgs, verify: bool) -> Result<ExitCode, Failure> {
    let path = data_dir.join(sovra_server::db::NODE_DB_FILE);
    if !path.exists() {
        return Err(anyhow::anyhow!("{} does not exist", path.display())).code(Code::Usage);
    }
    let node_key = node_key.load(data_dir)?;
    let db = sovra_server::db::NodeDb::open(&path, &node_key).code(Code::Host)?;
    let entries = db.log_entries().code(Code::Host)?;
    for e in &entries {
        println!(
            "{:>5}  {}  {:<21} {:<28} {}",
            e.seq, e.at_ms, e.action, e.subject, e.detail
        );
    }
    if !verify {
        return Ok(ExitCode::SUCCESS);
    }
    match sovra_server::ledger::verify(&entries) {
        Ok(head) => {
            println!("verified: {} entries, head {head}", entries.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => Err(anyhow::anyhow!(
            "the publisher log was tampered with: {broken}"
        ))
        .code(Code::Denied),
    }
}
