//! Vector memory in the tenant's own database (needs the `vector` grant,
//! and a model on the allowlist to embed texts).
//!
//! ```rust,ignore
//! use sovra_sdk::vector;
//! vector::upsert_text("docs", "faq-1", "Refunds take 5 days.", &[("source", "faq.md")], "minilm")?;
//! for hit in vector::query_text("docs", "how long do refunds take?", "minilm", 3)? {
//!     println!("{} {:.2} {}", hit.id, hit.score, hit.text);
//! }
//! ```

use crate::bindings::sovra::agent::vector as wit;
use crate::{Error, Pair};

pub use wit::Hit;

fn pairs(metadata: &[(&str, &str)]) -> Vec<Pair> {
    metadata
        .iter()
        .map(|(key, value)| Pair {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

/// Embeds `text` with `model` and stores it as `id` in `collection`.
pub fn upsert_text(
    collection: &str,
    id: &str,
    text: &str,
    metadata: &[(&str, &str)],
    model: &str,
) -> Result<(), Error> {
    wit::upsert_text(collection, id, text, &pairs(metadata), model)
}

/// Stores a vector computed by the agent.
pub fn upsert_vector(
    collection: &str,
    id: &str,
    vector: &[f32],
    text: &str,
    metadata: &[(&str, &str)],
) -> Result<(), Error> {
    wit::upsert_vector(collection, id, vector, text, &pairs(metadata))
}

/// The `k` entries most similar to `text` (embedded with `model`).
pub fn query_text(collection: &str, text: &str, model: &str, k: u32) -> Result<Vec<Hit>, Error> {
    wit::query_text(collection, text, model, k)
}

/// The `k` entries most similar to `vector`.
pub fn query_vector(collection: &str, vector: &[f32], k: u32) -> Result<Vec<Hit>, Error> {
    wit::query_vector(collection, vector, k)
}

/// Removes an entry; returns whether it existed.
pub fn delete(collection: &str, id: &str) -> Result<bool, Error> {
    wit::delete(collection, id)
}
