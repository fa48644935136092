//! The SQLite authorizer for guest SQL.
//!
//! Allowed: reading and writing the tenant's own tables, creating and
//! dropping its own tables, indexes, views and triggers, and read-only schema
//! pragmas. Refused: ATTACH/DETACH, every other PRAGMA, transaction control
//! (each call is one statement on a shared connection), temporary objects,
//! virtual tables, extension loading, and anything touching host tables
//! (names starting with `_sovra`).

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// Pragmas a guest may run, and only without a value (they read the schema).
const READ_ONLY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

/// Functions a guest may not call.
const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer", "readfile", "writefile"];

/// Table-name prefix reserved for the host.
const HOST_TABLE_PREFIX: &str = "_sovra";

/// Keeps the reason of the authorizer's most recent refusal, so that the guest
/// gets "ATTACH is not allowed" rather than SQLite's bare "not authorized".
#[derive(Debug, Clone, Default)]
pub(super) struct GuestAuthorizer {
    last_denial: Arc<Mutex<Option<String>>>,
}

impl GuestAuthorizer {
    /// Installs the authorizer on `conn`.
    pub(super) fn install(conn: &Connection) -> Self {
        let authorizer = GuestAuthorizer::default();
        let record = Arc::clone(&authorizer.last_denial);
        conn.authorizer(Some(move |context: AuthContext<'_>| {
            match decide(&context) {
                Ok(()) => Authorization::Allow,
                Err(reason) => {
                    *record.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                    Authorization::Deny
                }
            }
        }));
        authorizer
    }

    /// Forgets any earlier refusal (call before each statement).
    pub(super) fn reset(&self) {
        *self.last_denial.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The reason of the refusal since the last reset, if any.
    pub(super) fn take_denial(&self) -> Option<String> {
        self.last_denial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Host-owned objects. SQLite guards its own `sqlite_*` tables itself (and
/// must be allowed to maintain them while it runs the guest's DDL).
fn is_protected(name: &str) -> bool {
    name.to_ascii_lowercase().starts_with(HOST_TABLE_PREFIX)
}

fn protect(table: &str, what: &str) -> Result<(), String> {
    if is_protected(table) {
        Err(format!("{what} `{table}` is reserved for the host"))
    } else {
        Ok(())
    }
}

/// Decides one action; `Err` carries the reason shown to the guest.
fn decide(context: &AuthContext<'_>) -> Result<(), String> {
    if let Some(database) = context.database_name
        && database != "main"
        && database != "temp"
    {
        return Err(format!("database `{database}` is not available"));
    }
    match context.action {
        AuthAction::Select | AuthAction::Recursive => Ok(()),
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::CreateTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::Analyze { table_name } => protect(table_name, "table"),
        AuthAction::AlterTable { table_name, .. } => protect(table_name, "table"),
        AuthAction::CreateIndex {
            index_name,
            table_name,
        }
        | AuthAction::DropIndex {
            index_name,
            table_name,
        } => {
            protect(table_name, "table")?;
            protect(index_name, "index")
        }
        AuthAction::CreateTrigger {
            trigger_name,
            table_name,
        }
        | AuthAction::DropTrigger {
            trigger_name,
            table_name,
        } => {
            protect(table_name, "table")?;
            protect(trigger_name, "trigger")
        }
        AuthAction::CreateView { view_name } | AuthAction::DropView { view_name } => {
            protect(view_name, "view")
        }
        AuthAction::Reindex { index_name } => protect(index_name, "index"),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            if READ_ONLY_PRAGMAS.contains(&name.as_str()) {
                match pragma_value {
                    Some(table) if is_protected(table) => {
                        Err(format!("table `{table}` is reserved for the host"))
                    }
                    _ => Ok(()),
                }
            } else {
                Err(format!("PRAGMA {pragma_name} is not allowed"))
            }
        }
        AuthAction::Function { function_name } => {
            let name = function_name.to_ascii_lowercase();
            if DENIED_FUNCTIONS.contains(&name.as_str()) {
                Err(format!("function {function_name}() is not allowed"))
            } else {
                Ok(())
            }
        }
        AuthAction::Attach { .. } => Err("ATTACH is not allowed".into()),
        AuthAction::Detach { .. } => Err("DETACH is not allowed".into()),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            Err("transaction control is not allowed; each call runs as its own transaction".into())
        }
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. } => Err("temporary objects are not allowed".into()),
        AuthAction::CreateVtable { .. } | AuthAction::DropVtable { .. } => {
            Err("virtual tables are not allowed".into())
        }
        _ => Err("this kind of statement is not allowed".into()),
    }
}
