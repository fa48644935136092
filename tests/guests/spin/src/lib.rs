//! Spins forever without calling the host.

use sovra_sdk::{Agent, Error, Request, Response};

struct Spin;

impl Agent for Spin {
    fn handle(_: Request) -> Result<Response, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

sovra_sdk::export_agent!(Spin);
