//! Validated identifiers that may become parts of file paths or log fields.
//!
//! A tenant id names a directory under the data directory, so it is checked
//! before it is ever joined to a path: no separators, no dots, no empty or
//! overlong names.

use std::fmt;

/// Longest tenant id.
pub const MAX_TENANT_ID_BYTES: usize = 63;

/// A tenant's identity, always taken from the invocation context (the
/// operator, the CLI or an authenticated API key), never from a guest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

/// Why a string is not a valid tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id `{given}`: {reason}")]
pub struct InvalidName {
    pub given: String,
    pub reason: &'static str,
}

impl TenantId {
    /// Accepts `[a-z0-9][a-z0-9_-]*`, at most [`MAX_TENANT_ID_BYTES`] bytes.
    pub fn new(id: &str) -> Result<Self, InvalidName> {
        let invalid = |reason| InvalidName {
            given: id.chars().take(80).collect(),
            reason,
        };
        if id.is_empty() {
            return Err(invalid("it is empty"));
        }
        if id.len() > MAX_TENANT_ID_BYTES {
            return Err(invalid("it is longer than 63 bytes"));
        }
        let mut chars = id.chars();
        if !chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(invalid("it must start with a lowercase letter or digit"));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
            return Err(invalid(
                "only lowercase letters, digits, '-' and '_' are allowed",
            ));
        }
        Ok(TenantId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_ids_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "a\\b",
            ".hidden",
            "A",
            "a b",
            "a.b",
            "-a",
            &"x".repeat(64),
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["acme", "t1", "team_a-2", &"x".repeat(63)] {
            assert!(TenantId::new(good).is_ok(), "{good:?} refused");
        }
    }
}
