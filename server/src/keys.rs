//! Credentials: tenant API keys (random, shown once, stored only as sha256
//! hashes) and the operator token check. Keys carry 256 random bits, so a
//! plain hash is enough to make a stolen database useless for calling the
//! node; comparisons go through fixed-time equality of hashes.

use sha2::{Digest as _, Sha256};

/// Every API key starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "sovra_sk_";

/// A freshly made key: its public id and the secret (returned once).
#[derive(Debug)]
pub struct NewKey {
    pub id: String,
    pub secret: String,
    pub hash: String,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot get randomness for a new key: {0}")]
pub struct KeyError(String);

fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| KeyError(e.to_string()))?;
    Ok(hex::encode(buffer))
}

/// Makes a new API key.
pub fn new_key() -> Result<NewKey, KeyError> {
    let secret = format!("{KEY_PREFIX}{}", random_hex(32)?);
    Ok(NewKey {
        id: random_hex(8)?,
        hash: hash_key(&secret),
        secret,
    })
}

/// The stored form of a key.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `given` is the operator token, in time independent of where
/// they differ.
pub fn is_operator_token(given: &str, token: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 64);
        assert_eq!(hash_key(&a.secret), a.hash);
        assert!(!a.hash.contains(&a.secret[KEY_PREFIX.len()..]));
        assert!(is_operator_token("token-1", "token-1"));
        assert!(!is_operator_token("token-1", "token-2"));
        assert!(!is_operator_token("", "token-2"));
    }
}
