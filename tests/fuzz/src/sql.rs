//! Guest SQL through the authorizer, against a real (encrypted) tenant
//! database: no statement may touch the host's own tables (`_sovra_*`) or
//! escape the limits, whatever it says.

use std::sync::OnceLock;

use sovra_runtime::sealing::NodeKey;
use sovra_runtime::storage::TenantDb;

const CANARY_KEY: &str = "canary";
const CANARY: &[u8] = b"intact";
const QUOTA_BYTES: u64 = 16 * 1024 * 1024;

struct Tenant {
    _dir: tempfile::TempDir,
    db: TenantDb,
    host_tables: Vec<String>,
}

/// The host's own tables, as the host sees them.
fn host_tables(db: &TenantDb) -> Vec<String> {
    let connection = db.connect().expect("the host connects");
    let mut statement = connection
        .prepare(
            "SELECT name FROM sqlite_master WHERE name LIKE '\\_sovra\\_%' ESCAPE '\\' ORDER BY name",
        )
        .expect("the host reads its schema");
    statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .expect("the host reads its schema")
}

fn tenant() -> &'static Tenant {
    static TENANT: OnceLock<Tenant> = OnceLock::new();
    TENANT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = TenantDb::open(
            &dir.path().join("tenant.db"),
            QUOTA_BYTES,
            &NodeKey::generate(),
            "tenant/fuzz",
        )
        .expect("a tenant database");
        db.kv_set(CANARY_KEY, CANARY).expect("the canary is set");
        let host_tables = host_tables(&db);
        Tenant {
            _dir: dir,
            db,
            host_tables,
        }
    })
}

/// One guest statement, as a query and as an execution; then the host's
/// kv canary and its tables must be as they were.
pub fn guest_sql(data: &[u8]) {
    let Ok(statement) = std::str::from_utf8(data) else {
        return;
    };
    let tenant = tenant();
    let _ = tenant.db.sql_query(statement, &[]);
    let _ = tenant.db.sql_execute(statement, &[]);
    assert_eq!(
        tenant.db.kv_get(CANARY_KEY).ok().flatten().as_deref(),
        Some(CANARY),
        "guest SQL reached the host's kv table: {statement:?}"
    );
    assert_eq!(
        host_tables(&tenant.db),
        tenant.host_tables,
        "guest SQL changed the host's tables: {statement:?}"
    );
}
