//! `sovra audit verify`: check the hash chains of the runtime's audit log
//! (one per tenant), print each chain's head, and name every record that
//! was altered, removed or reordered.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sovra_runtime::AUDIT_DB_FILE;
use sovra_runtime::audit::{ChainReport, verify};

use crate::exit::{Code, Failure, WithCode};
use crate::node_key::{NodeKeyArgs, runtime_dir};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log's hash chains and print each chain's head.
    Verify {
        /// The data directory of `sovra run` or of a node.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this tenant's chain.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        node_key: NodeKeyArgs,
    },
}

pub fn audit(command: AuditCommand) -> Result<ExitCode, Failure> {
    let AuditCommand::Verify {
        data_dir,
        tenant,
        node_key,
    } = command;
    let node_key = node_key.load(&data_dir)?;
    let path = runtime_dir(&data_dir).join(AUDIT_DB_FILE);
    let reports = verify(&path, &node_key, tenant.as_deref()).code(Code::Usage)?;
    if reports.is_empty() {
        println!(
            "no records{}",
            tenant
                .map(|t| format!(" of tenant {t}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for report in &reports {
        print(report);
    }
    let broken = reports.iter().filter(|r| !r.intact()).count();
    if broken == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    Err(anyhow::anyhow!(
        "{broken} of {} audit chains were tampered with",
        reports.len()
    ))
    .code(Code::Denied)
}

fn print(report: &ChainReport) {
    let status = if report.intact() { "intact" } else { "BROKEN" };
    let unchained = if report.unchained > 0 {
        format!(" (+{} from before chaining)", report.unchained)
    } else {
        String::new()
    };
    println!(
        "{status}  {}  {} records{unchained}  head {}",
        report.tenant, report.records, report.head
    );
    for problem in &report.problems {
        println!("    {problem}");
    }
}
