//! `notes`: keeps notes in the tenant's SQL database.
//!
//! - `add TEXT` stores a note,
//! - `find WORD` lists notes containing WORD,
//! - `list` lists every note.

use sovra_sdk::sql::{self, Value};
use sovra_sdk::{Agent, Error, Request, Response};

struct Notes;

fn ensure_table() -> Result<(), Error> {
    sql::execute(
        "CREATE TABLE IF NOT EXISTS notes (
             id INTEGER PRIMARY KEY,
             body TEXT NOT NULL,
             created_at INTEGER NOT NULL DEFAULT (unixepoch())
         )",
        &[],
    )?;
    Ok(())
}

fn render(rows: sql::RowSet) -> String {
    rows.rows
        .iter()
        .map(|row| {
            let id = row[0].as_integer().unwrap_or_default();
            let body = row[1].as_text().unwrap_or_default();
            format!("#{id} {body}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Agent for Notes {
    fn handle(request: Request) -> Result<Response, Error> {
        ensure_table()?;
        let input = request.input.trim();
        let (command, rest) = input.split_once(' ').unwrap_or((input, ""));
        match command {
            "add" if !rest.trim().is_empty() => {
                let rows = sql::query(
                    "INSERT INTO notes (body) VALUES (?1) RETURNING id",
                    &[Value::from(rest.trim())],
                )?;
                let id = rows.rows[0][0].as_integer().unwrap_or_default();
                Ok(Response::text(format!("added note #{id}")))
            }
            "find" if !rest.trim().is_empty() => {
                let pattern = format!("%{}%", rest.trim());
                let rows = sql::query(
                    "SELECT id, body FROM notes WHERE body LIKE ?1 ORDER BY id",
                    &[Value::from(pattern)],
                )?;
                Ok(Response::text(render(rows)))
            }
            "list" => Ok(Response::text(render(sql::query(
                "SELECT id, body FROM notes ORDER BY id",
                &[],
            )?))),
            _ => Err(Error::InvalidInput(
                "usage: `add TEXT`, `find WORD` or `list`".into(),
            )),
        }
    }
}

sovra_sdk::export_agent!(Notes);
