//! What encryption at rest costs one storage transaction: the kv write an
//! increment makes (a read, two upserts, commit), on a sealed (SQLCipher)
//! database against a plain SQLite one in the same process, both in WAL
//! mode, rounds interleaved. `SYNC=OFF` leaves out the fsync of each commit
//! so that only the CPU cost shows; the default (`FULL`) is what a node does.
//!
//!     cargo bench -p sovra-runtime --bench sealed_storage
//!     SYNC=OFF cargo bench -p sovra-runtime --bench sealed_storage

use std::time::Instant;

use rusqlite::Connection;
use sovra_runtime::sealing::{NodeKey, SealedDatabase};

const TRANSACTIONS: usize = 3000;
const ROUNDS: usize = 5;

fn prepare(conn: &Connection, synchronous: &str) {
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", synchronous)
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
    )
    .unwrap();
}

/// Microseconds per transaction.
fn transactions(conn: &Connection) -> f64 {
    let start = Instant::now();
    for i in 0..TRANSACTIONS {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let count: i64 = conn
            .query_row(
                "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM kv WHERE key = 'n'), 0)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        conn.execute(
            "INSERT OR REPLACE INTO kv VALUES ('n', ?1)",
            [(count + 1).to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT OR REPLACE INTO kv VALUES (?1, 'x')",
            [format!("k{}", i % 500)],
        )
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / TRANSACTIONS as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let synchronous = std::env::var("SYNC").unwrap_or_else(|_| "FULL".into());
    let dir = tempfile::tempdir().unwrap();
    let plain = Connection::open(dir.path().join("plain.db")).unwrap();
    prepare(&plain, &synchronous);
    let key = NodeKey::generate();
    let sealed = SealedDatabase::prepare(&dir.path().join("sealed.db"), &key, "bench")
        .unwrap()
        .open_read_write()
        .unwrap();
    prepare(&sealed, &synchronous);
    let (mut plain_us, mut sealed_us) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain_us.push(transactions(&plain));
        sealed_us.push(transactions(&sealed));
    }
    let (p, s) = (median(plain_us), median(sealed_us));
    println!("synchronous={synchronous}, median of {ROUNDS} rounds of {TRANSACTIONS} transactions");
    println!("| plain µs/txn | sealed µs/txn | sealed / plain |");
    println!("|---|---|---|");
    println!("| {p:.1} | {s:.1} | {:.2}x |", s / p);
}
