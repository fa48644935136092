//! The SQLite authorizer for guest SQL.
//!
//! Allowed: reading and writing the tenant's own tables, creating, altering
//! and dropping its own tables, indexes, views and triggers, and read-only
//! schema pragmas. Refused: ATTACH/DETACH, every other PRAGMA, transaction
//! control (each call is one statement on a shared connection), temporary
//! objects, virtual tables, the built-in virtual tables that expose the
//! database's pages or the host's schema (`dbstat`, `sqlite_dbpage`,
//! `pragma_*` table functions), extension loading, and anything touching host
//! tables (names starting with `_sovra`). Every action code SQLite may ask
//! about has its decision asserted by a test; a code this file does not
//! know is refused.
//!
//! SQLite does not tell the authorizer the new name of an `ALTER TABLE ...
//! RENAME TO`, so the authorizer only notes that an ALTER was prepared, and
//! the statement then runs in a transaction that is rolled back if a new
//! reserved name appeared ([`GuestAuthorizer::altered`]).

use std::sync::atomic::{AtomicBool, Ordering};
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
pub(super) const HOST_TABLE_PREFIX: &str = "_sovra";

/// Built-in table-valued functions and eponymous virtual tables a guest may
/// not read, by name or prefix: they show the database's pages (host tables
/// included) or the host's schema. Stops: reading around the table checks.
const DENIED_VIRTUAL_TABLES: &[&str] = &["dbstat", "sqlite_dbpage", "sqlite_stmt"];
const DENIED_VIRTUAL_TABLE_PREFIX: &str = "pragma_";

/// Keeps the reason of the authorizer's most recent refusal, so that the guest
/// gets "ATTACH is not allowed" rather than SQLite's bare "not authorized".
#[derive(Debug, Clone, Default)]
pub(super) struct GuestAuthorizer {
    last_denial: Arc<Mutex<Option<String>>>,
    /// An ALTER TABLE was authorized since the last reset.
    altered: Arc<AtomicBool>,
    /// The host runs its own statement on the guest connection: allow all.
    host: Arc<AtomicBool>,
}

impl GuestAuthorizer {
    /// Installs the authorizer on `conn`.
    pub(super) fn install(conn: &Connection) -> Self {
        let authorizer = GuestAuthorizer::default();
        let record = Arc::clone(&authorizer.last_denial);
        let altered = Arc::clone(&authorizer.altered);
        let host = Arc::clone(&authorizer.host);
        conn.authorizer(Some(move |context: AuthContext<'_>| {
            if host.load(Ordering::Acquire) {
                return Authorization::Allow;
            }
            if matches!(context.action, AuthAction::AlterTable { .. }) {
                altered.store(true, Ordering::Release);
            }
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

    /// Forgets any earlier refusal and ALTER (call before each statement).
    pub(super) fn reset(&self) {
        *self.last_denial.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.altered.store(false, Ordering::Release);
    }

    /// Whether the statement prepared since the last reset alters a table.
    pub(super) fn altered(&self) -> bool {
        self.altered.load(Ordering::Acquire)
    }

    /// Runs the host's own statements on the guest connection.
    pub(super) fn as_host<T>(&self, work: impl FnOnce() -> T) -> T {
        self.host.store(true, Ordering::Release);
        let result = work();
        self.host.store(false, Ordering::Release);
        result
    }

    /// Records a refusal the host made itself, for [`Self::take_denial`].
    pub(super) fn refuse(&self, reason: String) {
        *self.last_denial.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
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
        AuthAction::Read { table_name, .. } => {
            let name = table_name.to_ascii_lowercase();
            if DENIED_VIRTUAL_TABLES.contains(&name.as_str())
                || name.starts_with(DENIED_VIRTUAL_TABLE_PREFIX)
            {
                return Err(format!("`{table_name}` is not available"));
            }
            protect(table_name, "table")
        }
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::CreateTable { table_name }
        | AuthAction::DropTable { table_name } => protect(table_name, "table"),
        // A whole-database ANALYZE asks for every table; the statistics it
        // keeps of the host's tables are counts of the tenant's own data.
        AuthAction::Analyze { .. } => Ok(()),
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

#[cfg(test)]
mod tests {
    use rusqlite::ffi;
    use rusqlite::hooks::TransactionOperation;

    use super::*;

    /// The SQLite action code of an action (the inverse of rusqlite's
    /// mapping), so the test can show it covers every code.
    fn code(action: &AuthAction<'_>) -> i32 {
        match action {
            AuthAction::CreateIndex { .. } => ffi::SQLITE_CREATE_INDEX,
            AuthAction::CreateTable { .. } => ffi::SQLITE_CREATE_TABLE,
            AuthAction::CreateTempIndex { .. } => ffi::SQLITE_CREATE_TEMP_INDEX,
            AuthAction::CreateTempTable { .. } => ffi::SQLITE_CREATE_TEMP_TABLE,
            AuthAction::CreateTempTrigger { .. } => ffi::SQLITE_CREATE_TEMP_TRIGGER,
            AuthAction::CreateTempView { .. } => ffi::SQLITE_CREATE_TEMP_VIEW,
            AuthAction::CreateTrigger { .. } => ffi::SQLITE_CREATE_TRIGGER,
            AuthAction::CreateView { .. } => ffi::SQLITE_CREATE_VIEW,
            AuthAction::Delete { .. } => ffi::SQLITE_DELETE,
            AuthAction::DropIndex { .. } => ffi::SQLITE_DROP_INDEX,
            AuthAction::DropTable { .. } => ffi::SQLITE_DROP_TABLE,
            AuthAction::DropTempIndex { .. } => ffi::SQLITE_DROP_TEMP_INDEX,
            AuthAction::DropTempTable { .. } => ffi::SQLITE_DROP_TEMP_TABLE,
            AuthAction::DropTempTrigger { .. } => ffi::SQLITE_DROP_TEMP_TRIGGER,
            AuthAction::DropTempView { .. } => ffi::SQLITE_DROP_TEMP_VIEW,
            AuthAction::DropTrigger { .. } => ffi::SQLITE_DROP_TRIGGER,
            AuthAction::DropView { .. } => ffi::SQLITE_DROP_VIEW,
            AuthAction::Insert { .. } => ffi::SQLITE_INSERT,
            AuthAction::Pragma { .. } => ffi::SQLITE_PRAGMA,
            AuthAction::Read { .. } => ffi::SQLITE_READ,
            AuthAction::Select => ffi::SQLITE_SELECT,
            AuthAction::Transaction { .. } => ffi::SQLITE_TRANSACTION,
            AuthAction::Update { .. } => ffi::SQLITE_UPDATE,
            AuthAction::Attach { .. } => ffi::SQLITE_ATTACH,
            AuthAction::Detach { .. } => ffi::SQLITE_DETACH,
            AuthAction::AlterTable { .. } => ffi::SQLITE_ALTER_TABLE,
            AuthAction::Reindex { .. } => ffi::SQLITE_REINDEX,
            AuthAction::Analyze { .. } => ffi::SQLITE_ANALYZE,
            AuthAction::CreateVtable { .. } => ffi::SQLITE_CREATE_VTABLE,
            AuthAction::DropVtable { .. } => ffi::SQLITE_DROP_VTABLE,
            AuthAction::Function { .. } => ffi::SQLITE_FUNCTION,
            AuthAction::Savepoint { .. } => ffi::SQLITE_SAVEPOINT,
            AuthAction::Recursive => ffi::SQLITE_RECURSIVE,
            AuthAction::Unknown { code, .. } => *code,
            _ => -1,
        }
    }

    fn decided(action: AuthAction<'_>, database: Option<&str>) -> Result<(), String> {
        decide(&AuthContext {
            action,
            database_name: database,
            accessor: None,
        })
    }

    #[test]
    fn every_action_code_has_the_decision_this_file_intends() {
        use AuthAction as A;
        let (mine, host) = ("notes", "_sovra_kv");
        let allowed = true;
        #[rustfmt::skip]
        let table: Vec<(AuthAction<'_>, bool)> = vec![
            (A::CreateIndex { index_name: "i", table_name: mine }, allowed),
            (A::CreateIndex { index_name: "_sovra_i", table_name: mine }, !allowed),
            (A::CreateIndex { index_name: "i", table_name: host }, !allowed),
            (A::CreateTable { table_name: mine }, allowed),
            (A::CreateTable { table_name: "_SOVRA_x" }, !allowed),
            (A::CreateTempIndex { index_name: "i", table_name: mine }, !allowed),
            (A::CreateTempTable { table_name: mine }, !allowed),
            (A::CreateTempTrigger { trigger_name: "t", table_name: mine }, !allowed),
            (A::CreateTempView { view_name: "v" }, !allowed),
            (A::CreateTrigger { trigger_name: "t", table_name: mine }, allowed),
            (A::CreateTrigger { trigger_name: "t", table_name: host }, !allowed),
            (A::CreateView { view_name: "v" }, allowed),
            (A::CreateView { view_name: "_sovra_v" }, !allowed),
            (A::Delete { table_name: mine }, allowed),
            (A::Delete { table_name: host }, !allowed),
            (A::DropIndex { index_name: "i", table_name: mine }, allowed),
            (A::DropIndex { index_name: "i", table_name: host }, !allowed),
            (A::DropTable { table_name: mine }, allowed),
            (A::DropTable { table_name: host }, !allowed),
            (A::DropTempIndex { index_name: "i", table_name: mine }, !allowed),
            (A::DropTempTable { table_name: mine }, !allowed),
            (A::DropTempTrigger { trigger_name: "t", table_name: mine }, !allowed),
            (A::DropTempView { view_name: "v" }, !allowed),
            (A::DropTrigger { trigger_name: "t", table_name: mine }, allowed),
            (A::DropView { view_name: "v" }, allowed),
            (A::Insert { table_name: mine }, allowed),
            (A::Insert { table_name: host }, !allowed),
            (A::Pragma { pragma_name: "table_info", pragma_value: Some(mine) }, allowed),
            (A::Pragma { pragma_name: "table_info", pragma_value: Some(host) }, !allowed),
            (A::Pragma { pragma_name: "journal_mode", pragma_value: None }, !allowed),
            (A::Pragma { pragma_name: "writable_schema", pragma_value: Some("1") }, !allowed),
            (A::Read { table_name: mine, column_name: "a" }, allowed),
            (A::Read { table_name: host, column_name: "value" }, !allowed),
            (A::Read { table_name: "dbstat", column_name: "name" }, !allowed),
            (A::Read { table_name: "sqlite_dbpage", column_name: "data" }, !allowed),
            (A::Read { table_name: "pragma_table_info", column_name: "name" }, !allowed),
            (A::Select, allowed),
            (A::Transaction { operation: TransactionOperation::Begin }, !allowed),
            (A::Update { table_name: mine, column_name: "a" }, allowed),
            (A::Update { table_name: host, column_name: "value" }, !allowed),
            (A::Attach { filename: "/etc/passwd" }, !allowed),
            (A::Detach { database_name: "main" }, !allowed),
            (A::AlterTable { database_name: "main", table_name: mine }, allowed),
            (A::AlterTable { database_name: "main", table_name: host }, !allowed),
            (A::Reindex { index_name: "i" }, allowed),
            (A::Reindex { index_name: "_sovra_i" }, !allowed),
            (A::Analyze { table_name: mine }, allowed),
            (A::Analyze { table_name: host }, allowed),
            (A::CreateVtable { table_name: "v", module_name: "fts5" }, !allowed),
            (A::DropVtable { table_name: "v", module_name: "fts5" }, !allowed),
            (A::Function { function_name: "upper" }, allowed),
            (A::Function { function_name: "load_extension" }, !allowed),
            (A::Savepoint { operation: TransactionOperation::Begin, savepoint_name: "s" }, !allowed),
            (A::Recursive, allowed),
            (A::Unknown { code: 34, arg1: None, arg2: None }, !allowed),
            (A::Unknown { code: 99, arg1: Some(mine), arg2: None }, !allowed),
        ];
        for (action, allow) in &table {
            let shown = format!("{action:?}");
            assert_eq!(decided(*action, Some("main")).is_ok(), *allow, "{shown}");
        }
        // Every code SQLite defines (1 to 33) is in the table.
        for code_number in 1..=ffi::SQLITE_RECURSIVE {
            assert!(
                table.iter().any(|(action, _)| code(action) == code_number),
                "action code {code_number} has no asserted decision"
            );
        }
        // Another database than the tenant's own is refused whatever the action.
        assert!(decided(AuthAction::Select, Some("other")).is_err());
        assert!(
            decided(
                AuthAction::Read {
                    table_name: mine,
                    column_name: "a"
                },
                Some("aux")
            )
            .is_err()
        );
    }
}
