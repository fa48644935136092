//! One write per invocation to one of the tenant's stores; the input is
//! `command:argument`. Host errors are returned unchanged, so a test sees
//! exactly what a writer racing the others was told.
//!
//! - `incr:KEY` adds 1 to the integer at KEY,
//! - `set:KEY=VALUE` stores VALUE at KEY,
//! - `insert:TEXT` adds a row to the `entries` table,
//! - `upsert:ID` stores a small vector as ID in one of the `mix` collections,
//! - `count:` answers `rows,vectors` (the table's rows, the collection's size).

use sovra_sdk::sql::{self, Value};
use sovra_sdk::{Agent, Error, Request, Response, kv, vector};

struct StorageMix;

/// Vectors are spread over this many collections, so that each stays
/// within what one query returns.
const COLLECTIONS: usize = 8;

fn collection(id: &str) -> String {
    let shard = id.bytes().map(usize::from).sum::<usize>() % COLLECTIONS;
    format!("mix{shard}")
}

fn run(command: &str, argument: &str) -> Result<String, Error> {
    match command {
        "incr" => Ok(kv::increment(argument, 1)?.to_string()),
        "set" => {
            let (key, value) = argument.split_once('=').unwrap_or((argument, ""));
            kv::set(key, value)?;
            Ok("ok".into())
        }
        "insert" => {
            sql::execute(
                "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
                &[],
            )?;
            sql::execute("INSERT INTO entries (body) VALUES (?1)", &[Value::from(argument)])?;
            Ok("ok".into())
        }
        "upsert" => {
            vector::upsert_vector(&collection(argument), argument, &[1.0, 0.5, 0.25], argument, &[])?;
            Ok("ok".into())
        }
        "count" => {
            let rows = sql::query("SELECT count(*) FROM entries", &[])?;
            let rows = rows.rows[0][0].as_integer().unwrap_or_default();
            let mut vectors = 0;
            for shard in 0..COLLECTIONS {
                vectors += vector::query_vector(&format!("mix{shard}"), &[1.0, 0.5, 0.25], 100)?.len();
            }
            Ok(format!("{rows},{vectors}"))
        }
        _ => Err(Error::InvalidInput(format!("unknown command `{command}`"))),
    }
}

impl Agent for StorageMix {
    fn handle(request: Request) -> Result<Response, Error> {
        let (command, argument) = request.input.split_once(':').unwrap_or((&request.input, ""));
        run(command, argument).map(Response::text)
    }
}

sovra_sdk::export_agent!(StorageMix);
