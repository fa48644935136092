//! Allocates (and touches) a megabyte at a time until something stops it.

use sovra_sdk::{Agent, Error, Request, Response};

struct MemoryBomb;

impl Agent for MemoryBomb {
    fn handle(_: Request) -> Result<Response, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

sovra_sdk::export_agent!(MemoryBomb);
