//! One write per invocation to one of the tenant's stores; the input is
//! `command:argument`. Host errors are returned unchanged, so a test sees
//! exactly what a writer racing the others was told.
//!
//! - `incr:KEY` adds 1 to the integer at KEY,
//! - `set:KEY=VALUE` stores VALUE at KEY,
//! - `insert:TEXT` adds a row to the `entries` table,
//! - `upsert:ID` stores a small vector as ID in the `mix` collection,
//! - `count:` answers `rows,vectors` (the table's rows, the collection's size).

use sovra_sdk::sql::{self, Value};
use sovra_sdk::{Agent, Error, Request, Response, kv, vector};

struct StorageMix;

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
            vector::upsert_vector("mix", argument, &[1.0, 0.5, 0.25], argument, &[])?;
            Ok("ok".into())
        }
        "count" => {
            let rows = sql::query("SELECT count(*) FROM entries", &[])?;
            let rows = rows.rows[0][0].as_integer().unwrap_or_default();
            let vectors = vector::query_vector("mix", &[1.0, 0.5, 0.25], 1000)?.len();
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
