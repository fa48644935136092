//! `sovra tenant`: offline maintenance of a data directory's tenants, while
//! no node or `sovra run` has the directory open. `rekey` puts each named
//! tenant's database under a new random key (crash-safe: see
//! `sovra_runtime::sealing::rekey`); `erase` crypto-erases a tenant, as
//! `DELETE /v1/tenants/{tenant}` does on a running node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use sovra_runtime::audit::{AuditLog, AuditRecord};
use sovra_runtime::sealing::rekey;
use sovra_runtime::storage::{DataDirLock, TENANT_DB_FILE, TENANTS_DIR, erase_files, tenant_label};
use sovra_runtime::{AUDIT_DB_FILE, TenantId};
use sovra_server::db::{NODE_DB_FILE, NodeDb};

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
    }
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
    audit.record(AuditRecord {
        invocation_id: format!("erase-{started}-{tenant}"),
        tenant: tenant.to_string(),
        agent: "operator".into(),
        agent_digest: String::new(),
        started_at_ms: started,
        duration_us: 0,
        outcome: "tenant-erased".into(),
        error: None,
        denials: Vec::new(),
        usage: Vec::new(),
        parent: None,
    });
    audit.flush();
    println!("erased {tenant}");
    Ok(ExitCode::SUCCESS)
}
