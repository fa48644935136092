//! Tries to open a TCP connection: wasi:sockets is linked, but every socket
//! is refused before the host makes one.

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
