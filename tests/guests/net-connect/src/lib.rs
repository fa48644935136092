//! Tries to open a TCP connection; importing wasi:sockets at all is refused.

use sovra_sdk::{Agent, Error, Request, Response};

struct NetConnect;

impl Agent for NetConnect {
    fn handle(request: Request) -> Result<Response, Error> {
        match std::net::TcpStream::connect(request.input.as_str()) {
            Ok(_) => Ok(Response::text("connected")),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }
}

sovra_sdk::export_agent!(NetConnect);
