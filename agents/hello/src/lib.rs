//! `hello`: greets whoever its input names.

use sovra_sdk::{Agent, Error, Request, Response};

struct Hello;

impl Agent for Hello {
    fn handle(request: Request) -> Result<Response, Error> {
        let name = request.input.trim();
        let name = if name.is_empty() { "world" } else { name };
        Ok(Response::text(format!("Hello, {name}!")))
    }
}

sovra_sdk::export_agent!(Hello);
