//! `counter`: counts how often it has seen each input, per tenant, in kv.
//! An empty input lists every counter.

use sovra_sdk::{Agent, Error, Request, Response, kv, log};

const PREFIX: &str = "count/";

struct Counter;

impl Agent for Counter {
    fn handle(request: Request) -> Result<Response, Error> {
        let key = request.input.trim();
        if key.is_empty() {
            let mut lines = Vec::new();
            for key in kv::list(PREFIX)? {
                let count = kv::get_string(&key)?.unwrap_or_default();
                lines.push(format!("{}: {count}", &key[PREFIX.len()..]));
            }
            return Ok(Response::text(lines.join("\n")));
        }
        let count = kv::increment(&format!("{PREFIX}{key}"), 1)?;
        log::log(log::Level::Info, "counted", &[("key", key), ("count", &count.to_string())]);
        Ok(Response::text(format!("{key}: {count}")).with_metadata("count", count.to_string()))
    }
}

sovra_sdk::export_agent!(Counter);
