//! Calls tools as its input says, and reports what came back:
//! - `list`: the granted tools' names, comma-separated;
//! - `call NAME INPUT`: the tool's output, or `error KIND: MESSAGE`;
//! - `fan-out NAME COUNT INPUT`: calls the tool COUNT times; the number that
//!   succeeded, then the first error.

use sovra_sdk::{Agent, Error, Request, Response, tools};

struct ToolCaller;

fn describe(error: &Error) -> String {
    let (kind, message) = match error {
        Error::AccessDenied(m) => ("access-denied", m),
        Error::NotFound(m) => ("not-found", m),
        Error::InvalidInput(m) => ("invalid-input", m),
        Error::QuotaExceeded(m) => ("quota-exceeded", m),
        Error::LimitExceeded(m) => ("limit-exceeded", m),
        Error::Unavailable(m) => ("unavailable", m),
        Error::Internal(m) => ("internal", m),
    };
    format!("error {kind}: {message}")
}

impl Agent for ToolCaller {
    fn handle(request: Request) -> Result<Response, Error> {
        let input = request.input.trim();
        let (command, rest) = input.split_once(' ').unwrap_or((input, ""));
        let output = match command {
            "list" => tools::list()
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(","),
            "call" => {
                let (name, input) = rest.split_once(' ').unwrap_or((rest, ""));
                match tools::call(name, input) {
                    Ok(output) => output,
                    Err(error) => describe(&error),
                }
            }
            "fan-out" => {
                let mut parts = rest.splitn(3, ' ');
                let name = parts.next().unwrap_or("");
                let count: u32 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let input = parts.next().unwrap_or("{}");
                let mut succeeded = 0;
                let mut first_error = String::new();
                for _ in 0..count {
                    match tools::call(name, input) {
                        Ok(_) => succeeded += 1,
                        Err(error) if first_error.is_empty() => first_error = describe(&error),
                        Err(_) => {}
                    }
                }
                format!("{succeeded} {first_error}")
            }
            _ => return Err(Error::InvalidInput(format!("unknown command `{command}`"))),
        };
        Ok(Response::text(output))
    }
}

sovra_sdk::export_agent!(ToolCaller);
