//! Calls the host's log function in a tight loop.

use sovra_sdk::{Agent, Error, Request, Response, log};

struct HostCallFlood;

impl Agent for HostCallFlood {
    fn handle(_: Request) -> Result<Response, Error> {
        let mut n: u64 = 0;
        loop {
            n += 1;
            if n % 1000 == 0 {
                log::info("still flooding");
            } else {
                log::log(log::Level::Trace, "flood", &[]);
            }
        }
    }
}

sovra_sdk::export_agent!(HostCallFlood);
