//! Prints to stdout without end (input `stderr` prints there instead).

use std::io::Write;

use sovra_sdk::{Agent, Error, Request, Response};

struct HugeOutput;

impl Agent for HugeOutput {
    fn handle(request: Request) -> Result<Response, Error> {
        let line = "all work and no play makes jack a dull boy ".repeat(20);
        loop {
            if request.input == "stderr" {
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                println!("{line}");
            }
        }
    }
}

sovra_sdk::export_agent!(HugeOutput);
