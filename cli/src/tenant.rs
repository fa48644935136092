//! `sovra tenant`: offline maintenance of a data directory's tenants, while
//! no node or `sovra run` has the directory open. `rekey` puts each named
//! tenant's database under a new random key (crash-safe: see
//! `sovra_runtime::sealing::rekey`); `erase` crypto-erases a tenant, as
//! `DELETE /v1/tenants/{tenant}` does on a running node. `export` writes a
//! tenant's signed export (it may run beside a node) and `verify-export`
//! checks one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use sovra_runtime::audit::{AuditLog, AuditRecord};
use sovra_runtime::sealing::{SealedDatabase, rekey};
use sovra_runtime::storage::{DataDirLock, TENANT_DB_FILE, TENANTS_DIR, erase_files, tenant_label};
use sovra_runtime::{AUDIT_DB_FILE, TenantId};
use sovra_server::db::{NODE_DB_FILE, NodeDb};
use sovra_server::export;

use crate::exit::{Code, Failure, WithCode};
use crate::node_key::{NodeKeyArgs, runtime_dir};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Put tenants' databases under new keys (stop the node first).
    Rekey {
        /// The data directory of a node or of `sovra run`.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        node_key: NodeKeyArgs,
        /// The tenants whose keys change.
        #[arg(required = true)]
        tenants: Vec<String>,
    },
    /// Write a tenant's signed export (.tar.zst), as
    /// `GET /v1/tenants/{tenant}/export` gives it.
    Export {
        /// The data directory of a node or of `sovra run`.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        node_key: NodeKeyArgs,
        /// Where to write the archive.
        #[arg(long)]
        out: PathBuf,
        /// The tenant to export.
        tenant: String,
    },
    /// Check an export: the node's signature and every file's digest.
    VerifyExport {
        /// The archive.
        archive: PathBuf,
        /// The node's public key (hex) the export must be signed by.
        #[arg(long, value_name = "HEX")]
        node_public_key: Option<String>,
    },
    /// Crypto-erase a tenant: its database key first, then its files, and on
    /// a node its API keys and installs (stop the node first).
    Erase {
        /// The data directory of a node or of `sovra run`.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        node_key: NodeKeyArgs,
        /// The tenant to erase.
        tenant: String,
    },
}

pub fn tenant(command: TenantCommand) -> Result<ExitCode, Failure> {
    match command {
        TenantCommand::Rekey {
            data_dir,
            node_key,
            tenants,
        } => rekey_tenants(&data_dir, &node_key, &tenants),
        TenantCommand::Erase {
            data_dir,
            node_key,
            tenant,
        } => erase(&data_dir, &node_key, &tenant),
        TenantCommand::Export {
            data_dir,
            node_key,
            out,
            tenant,
        } => export(&data_dir, &node_key, &out, &tenant),
        TenantCommand::VerifyExport {
            archive,
            node_public_key,
        } => verify_export(&archive, node_public_key.as_deref()),
    }
}

/// `tenant`'s database under `runtime_dir`, which must exist.
fn tenant_db(runtime_dir: &Path, tenant: &TenantId) -> Result<PathBuf, Failure> {
    let path = runtime_dir
        .join(TENANTS_DIR)
        .join(tenant.as_str())
        .join(TENANT_DB_FILE);
    if !path.exists() {
        return Err(anyhow::anyhow!(
            "tenant {tenant} has no database in {}",
            runtime_dir.display()
        ))
        .code(Code::Usage);
    }
    Ok(path)
}

fn rekey_tenants(
    data_dir: &Path,
    node_key: &NodeKeyArgs,
    tenants: &[String],
) -> Result<ExitCode, Failure> {
    let node_key = node_key.load(data_dir)?;
    let runtime_dir = runtime_dir(data_dir);
    let _lock = DataDirLock::exclusive(&runtime_dir).code(Code::Usage)?;
    for tenant in tenants {
        let tenant = TenantId::new(tenant).code(Code::Usage)?;
        let path = tenant_db(&runtime_dir, &tenant)?;
        rekey(&path, &node_key, &tenant_label(&tenant)).code(Code::Host)?;
        println!("rekeyed {tenant}");
    }
    Ok(ExitCode::SUCCESS)
}

fn erase(data_dir: &Path, node_key: &NodeKeyArgs, tenant: &str) -> Result<ExitCode, Failure> {
    let node_key = node_key.load(data_dir)?;
    let tenant = TenantId::new(tenant).code(Code::Usage)?;
    let runtime_dir = runtime_dir(data_dir);
    let _lock = DataDirLock::exclusive(&runtime_dir).code(Code::Usage)?;
    let tenant_dir = runtime_dir.join(TENANTS_DIR).join(tenant.as_str());
    let node_db = data_dir.join(NODE_DB_FILE);
    let node = if node_db.exists() {
        Some(NodeDb::open(&node_db, &node_key).code(Code::Host)?)
    } else {
        None
    };
    let known = match &node {
        Some(db) => db.tenant(tenant.as_str()).code(Code::Host)?.is_some(),
        None => false,
    };
    if !known && !tenant_dir.exists() {
        return Err(anyhow::anyhow!(
            "no tenant {tenant} in {}",
            data_dir.display()
        ))
        .code(Code::Usage);
    }
    if let Some(db) = &node {
        // Disabled before anything goes, as the node does.
        db.set_tenant_disabled(tenant.as_str(), true)
            .code(Code::Host)?;
    }
    erase_files(&tenant_dir).code(Code::Host)?;
    if let Some(db) = &node {
        db.erase_tenant(tenant.as_str()).code(Code::Host)?;
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let audit = AuditLog::open(&runtime_dir.join(AUDIT_DB_FILE), &node_key).code(Code::Host)?;
    audit.record(AuditRecord::erasure(tenant.as_str(), started, 0));
    audit.flush();
    println!("erased {tenant}");
    Ok(ExitCode::SUCCESS)
}

fn export(
    data_dir: &Path,
    node_key: &NodeKeyArgs,
    out: &Path,
    tenant: &str,
) -> Result<ExitCode, Failure> {
    let node_key = node_key.load(data_dir)?;
    let tenant = TenantId::new(tenant).code(Code::Usage)?;
    let runtime_dir = runtime_dir(data_dir);
    // Shared: a running node may keep serving; maintenance may not start.
    let _lock = DataDirLock::shared(&runtime_dir).code(Code::Usage)?;
    let path = tenant_db(&runtime_dir, &tenant)?;
    let db = SealedDatabase::existing(&path, &node_key, &tenant_label(&tenant))
        // Read-write: the export builds its plain copy in an attached
        // in-memory database; the tenant's own is only read.
        .and_then(|db| db.open_read_write())
        .code(Code::Host)?;
    let node_db = data_dir.join(NODE_DB_FILE);
    let installs = if node_db.exists() {
        let node = NodeDb::open(&node_db, &node_key).code(Code::Host)?;
        node.installs(tenant.as_str()).code(Code::Host)?
    } else {
        Vec::new()
    };
    let audit = AuditLog::open(&runtime_dir.join(AUDIT_DB_FILE), &node_key).code(Code::Host)?;
    let records =
        export::TenantRecords::gather(tenant.as_str(), &installs, &audit).code(Code::Host)?;
    let signer = export::signing_key(data_dir, &node_key).code(Code::Host)?;
    let mut archive = Vec::new();
    export::write(&db, &records, &signer, &mut archive).code(Code::Host)?;
    std::fs::write(out, &archive)
        .with_context(|| format!("cannot write {}", out.display()))
        .code(Code::Usage)?;
    println!(
        "exported {tenant} to {} ({} bytes), signed by node key {}",
        out.display(),
        archive.len(),
        hex::encode(signer.verifying_key().as_bytes())
    );
    Ok(ExitCode::SUCCESS)
}

fn verify_export(archive: &Path, node_public_key: Option<&str>) -> Result<ExitCode, Failure> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot read {}", archive.display()))
        .code(Code::Usage)?;
    match export::verify(std::io::BufReader::new(file), node_public_key) {
        Ok(verified) => {
            let manifest = verified.manifest;
            println!(
                "verified: tenant {}, {} files, signed by node key {}",
                manifest.tenant,
                manifest.files.len(),
                manifest.node_public_key
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ export::ExportError::Tampered(_)) => Err(error).code(Code::Denied),
        Err(error) => Err(error).code(Code::Usage),
    }
}
