//! Recurses until the stack runs out.

use sovra_sdk::{Agent, Error, Request, Response};

struct DeepRecursion;

/// Not a tail call (the result is used after the call returns), and no
/// address-taken locals, so each level costs a frame of the wasm stack itself.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let below = descend(depth + 1);
    below.rotate_left(7) ^ depth
}

impl Agent for DeepRecursion {
    fn handle(request: Request) -> Result<Response, Error> {
        let start = request.input.len() as u64;
        Ok(Response::text(descend(start).to_string()))
    }
}

sovra_sdk::export_agent!(DeepRecursion);
