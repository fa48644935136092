//! Credentials: tenant API keys (random, shown once, stored only as sha256
//! hashes) and the operator token check. Keys carry 256 random bits, so a
//! plain hash is enough to make a stolen database useless for calling the
//! node; comparisons go through fixed-time equality of hashes.

use std::collections::HashSet;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

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

/// The hashes of every live API key, in memory, so that a made-up key is
/// refused without a database lookup.
/// Stops: a flood of random bearer keys turning into SQLite queries under
/// the node database's lock.
#[derive(Debug, Default)]
pub struct LiveKeys {
    hashes: RwLock<HashSet<String>>,
}

impl LiveKeys {
    /// The set `load` reads (from the database).
    pub fn load<E>(load: impl FnOnce() -> Result<Vec<String>, E>) -> Result<Self, E> {
        Ok(LiveKeys {
            hashes: RwLock::new(load()?.into_iter().collect()),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, HashSet<String>> {
        self.hashes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashSet<String>> {
        self.hashes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a key with this hash may be live (the database decides).
    pub fn may_be_live(&self, hash: &str) -> bool {
        self.read().contains(hash)
    }

    /// A key stored in the database (call after the insert).
    pub fn add(&self, hash: String) {
        self.write().insert(hash);
    }

    /// Reads the set again after keys were revoked. The lock is held across
    /// `load`, so a key added meanwhile is either in what `load` reads or
    /// added after the new set is in place, never lost.
    pub fn reload<E>(&self, load: impl FnOnce() -> Result<Vec<String>, E>) -> Result<(), E> {
        let mut hashes = self.write();
        *hashes = load()?.into_iter().collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_follow_adds_and_reloads() {
        let live = LiveKeys::load(|| Ok::<_, ()>(vec!["a".into(), "b".into()])).unwrap();
        assert!(live.may_be_live("a") && !live.may_be_live("c"));
        live.add("c".into());
        assert!(live.may_be_live("c"));
        // "b" was revoked: the reload drops it and keeps the others.
        live.reload(|| Ok::<_, ()>(vec!["a".into(), "c".into()]))
            .unwrap();
        assert!(!live.may_be_live("b") && live.may_be_live("c"));
        // A failed reload leaves the set as it was.
        assert!(live.reload(|| Err::<Vec<String>, _>("db")).is_err());
        assert!(live.may_be_live("a"));
    }

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
