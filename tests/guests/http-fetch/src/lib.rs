//! Tries an outgoing HTTP request through `wasi:http`: importing it at all
//! is refused at load (agents have no network; models come through
//! `sovra:agent/inference`).

use sovra_sdk::{Agent, Error, Request, Response};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

struct HttpFetch;

impl Agent for HttpFetch {
    fn handle(request: Request) -> Result<Response, Error> {
        let outgoing = OutgoingRequest::new(Fields::new());
        let _ = outgoing.set_scheme(Some(&Scheme::Http));
        let _ = outgoing.set_authority(Some(&request.input));
        match outgoing_handler::handle(outgoing, None) {
            Ok(_) => Ok(Response::text("request sent")),
            Err(e) => Err(Error::Unavailable(format!("{e:?}"))),
        }
    }
}

sovra_sdk::export_agent!(HttpFetch);
