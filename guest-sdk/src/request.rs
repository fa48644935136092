//! Conveniences on the handler's request and response types.

use crate::{Pair, Request, Response};

impl Request {
    /// The value of the first metadata entry named `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|pair| pair.key == key)
            .map(|pair| pair.value.as_str())
    }
}

impl Response {
    /// A response carrying `output` and no metadata.
    pub fn text(output: impl Into<String>) -> Self {
        Response {
            output: output.into(),
            metadata: Vec::new(),
        }
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push(Pair {
            key: key.into(),
            value: value.into(),
        });
        self
    }
}
