//! Structured logs, routed into the host's tracing. The host adds tenant,
//! agent and invocation fields; the guest cannot forge them.

use crate::Pair;
use crate::bindings::sovra::agent::log as wit;

pub use wit::Level;

/// Logs `message` with key/value `fields`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<Pair> = fields
        .iter()
        .map(|(key, value)| Pair {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    wit::log(level, message, &fields);
}

pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}
