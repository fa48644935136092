//! A database's key file, `<database>.key`: its random database keys, each
//! sealed (ChaCha20-Poly1305) by the node key, one per line, the key the
//! database is under first. A second line exists only while the database's
//! key is being changed (see [`super::rekey`]).
//!
//! ```text
//! sovra-sealed-key v1 <node key fingerprint> <nonce, 24 hex> <sealed key, 96 hex>
//! ```
//!
//! The database's label (`tenant/acme`, `audit`, `node`) is bound into each
//! seal as associated data: a key file copied beside another database does
//! not open it, and a tampered file fails to unseal rather than yield a key.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::{Zeroize, Zeroizing};

use super::node_key::KEY_BYTES;
use super::{NodeKey, SealingError, write_atomically};

/// First word of every line of a key file, and its version.
const MAGIC: &str = "sovra-sealed-key v1";

/// Keys one file may hold: the current one and the one being replaced.
/// Stops: a damaged or planted file making every open try many keys.
const MAX_KEYS: usize = 2;

/// Largest key file read. Stops: reading a planted huge file into memory.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Bytes of a ChaCha20-Poly1305 nonce.
const NONCE_BYTES: usize = 12;

/// One database's key. Zeroed when dropped; never printed.
#[derive(Clone)]
pub struct DatabaseKey {
    bytes: [u8; KEY_BYTES],
}

impl Drop for DatabaseKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseKey(..)")
    }
}

impl DatabaseKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        DatabaseKey { bytes }
    }

    /// The SQLCipher statement that keys a connection with this raw key
    /// (no passphrase derivation: the key is already random).
    pub(crate) fn key_statement(&self, schema: Option<&str>) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(self.bytes));
        Zeroizing::new(match schema {
            None => format!("PRAGMA key = \"x'{}'\";", hex.as_str()),
            Some(schema) => format!("PRAGMA {schema}.key = \"x'{}'\";", hex.as_str()),
        })
    }

    /// A key for another use than the database's pages (`purpose` names
    /// it), independent of the database key and of every other purpose's.
    pub(crate) fn derive(&self, purpose: &str) -> Zeroizing<[u8; KEY_BYTES]> {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"sovra derived key v1\0");
        hash.update(purpose.as_bytes());
        hash.update([0]);
        hash.update(self.bytes);
        Zeroizing::new(hash.finalize().into())
    }

    /// The `KEY` clause value for `ATTACH ... KEY`.
    pub(crate) fn attach_literal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("\"x'{}'\"", hex::encode(self.bytes)))
    }
}

/// Where the key file of the database at `database` is.
pub fn path_for(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

fn associated_data(label: &str) -> Vec<u8> {
    let mut aad = b"sovra sealed database key v1\0".to_vec();
    aad.extend_from_slice(label.as_bytes());
    aad
}

/// Seals `keys` (current first) under `node_key` and writes them to `path`
/// atomically.
pub(crate) fn write(
    path: &Path,
    node_key: &NodeKey,
    label: &str,
    keys: &[&DatabaseKey],
) -> Result<(), SealingError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(node_key.bytes()));
    let aad = associated_data(label);
    let fingerprint = node_key.fingerprint();
    let mut text = String::new();
    for key in keys {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the operating system's random source failed");
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &key.bytes,
                    aad: &aad,
                },
            )
            .expect("sealing 32 bytes cannot fail");
        text.push_str(&format!(
            "{MAGIC} {fingerprint} {} {}\n",
            hex::encode(nonce),
            hex::encode(sealed)
        ));
    }
    write_atomically(path, text.as_bytes())
}

/// A 32-byte secret other than a database key (the node's signing key),
/// sealed into the key file `path` under `label` like a database key, and
/// created there on first use.
pub fn load_or_create_secret(
    path: &Path,
    node_key: &NodeKey,
    label: &str,
) -> Result<Zeroizing<[u8; KEY_BYTES]>, SealingError> {
    if path.exists() {
        let keys = read(path, node_key, label)?;
        return Ok(Zeroizing::new(keys[0].bytes));
    }
    let secret = DatabaseKey::generate();
    write(path, node_key, label, &[&secret])?;
    Ok(Zeroizing::new(secret.bytes))
}

/// Destroys the key file at `path` (crypto-erase): overwrites it with random
/// bytes, flushes that to the disk, then removes it. Once this returns, no
/// copy of the database it keyed can be read with any key the node holds.
/// Returns whether there was a key file.
pub fn destroy(path: &Path) -> Result<bool, SealingError> {
    use std::io::Write;
    let io = SealingError::io(path);
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    let mut noise = vec![0u8; usize::try_from(size.min(MAX_KEY_FILE_BYTES)).unwrap_or(0)];
    getrandom::fill(&mut noise).expect("the operating system's random source failed");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(&io)?;
    file.write_all(&noise).map_err(&io)?;
    file.sync_all().map_err(&io)?;
    drop(file);
    std::fs::remove_file(path).map_err(&io)?;
    super::sync_dir(&super::parent_dir(path))?;
    Ok(true)
}

/// Reads and unseals the keys in `path` (current first).
pub(crate) fn read(
    path: &Path,
    node_key: &NodeKey,
    label: &str,
) -> Result<Vec<DatabaseKey>, SealingError> {
    let damaged = |why: &str| SealingError::KeyFileDamaged {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let size = std::fs::metadata(path)
        .map_err(SealingError::io(path))?
        .len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(damaged("larger than any key file"));
    }
    let text = std::fs::read_to_string(path).map_err(SealingError::io(path))?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(node_key.bytes()));
    let aad = associated_data(label);
    let ours = node_key.fingerprint();
    let mut keys = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let [word, version, sealed_by, nonce, sealed] = fields[..] else {
            return Err(damaged("a line is not a sealed key"));
        };
        if format!("{word} {version}") != MAGIC {
            return Err(damaged(&format!("not a {MAGIC} line")));
        }
        if sealed_by != ours {
            return Err(SealingError::WrongNodeKey {
                path: path.to_owned(),
                sealed_by: sealed_by.to_owned(),
                ours,
            });
        }
        let nonce = hex::decode(nonce)
            .ok()
            .filter(|n| n.len() == NONCE_BYTES)
            .ok_or_else(|| damaged("bad nonce"))?;
        let sealed = hex::decode(sealed).map_err(|_| damaged("sealed key is not hex"))?;
        let opened = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| {
                    damaged(&format!(
                        "a key does not unseal (tampered, or the key file of another \
                         database than {label})"
                    ))
                })?,
        );
        let mut bytes = [0u8; KEY_BYTES];
        if opened.len() != KEY_BYTES {
            return Err(damaged("a sealed key has the wrong length"));
        }
        bytes.copy_from_slice(&opened);
        keys.push(DatabaseKey { bytes });
        if keys.len() > MAX_KEYS {
            return Err(damaged("more keys than a key file holds"));
        }
    }
    if keys.is_empty() {
        return Err(damaged("it holds no key"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_open_for_their_node_key_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db.key");
        let node = NodeKey::generate();
        let (a, b) = (DatabaseKey::generate(), DatabaseKey::generate());
        write(&path, &node, "tenant/acme", &[&a, &b]).unwrap();
        let keys = read(&path, &node, "tenant/acme").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].bytes, a.bytes);
        assert_eq!(keys[1].bytes, b.bytes);

        let other_node = NodeKey::generate();
        assert!(matches!(
            read(&path, &other_node, "tenant/acme"),
            Err(SealingError::WrongNodeKey { .. })
        ));
        assert!(matches!(
            read(&path, &node, "tenant/globex"),
            Err(SealingError::KeyFileDamaged { .. })
        ));
    }

    #[test]
    fn hostile_key_files_are_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db.key");
        let node = NodeKey::generate();
        write(&path, &node, "t", &[&DatabaseKey::generate()]).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let fields: Vec<&str> = good.split_whitespace().collect();
        let line = |f: &[&str]| f.join(" ");
        let mut hostile = vec![
            String::new(),
            "\n\n".into(),
            "x".repeat(5000),
            good.repeat(3),
            line(&fields[..4]),
            line(&[fields[0], fields[1], fields[2], "zz", fields[4]]),
            line(&[fields[0], fields[1], fields[2], fields[3], "ab"]),
            line(&[fields[0], fields[1], fields[2], fields[3], ""]),
            line(&[fields[0], "v2", fields[2], fields[3], fields[4]]),
            line(&[fields[0], fields[1], fields[2], &fields[3][..8], fields[4]]),
            String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x80]).into_owned(),
        ];
        hostile.push(good.replace(fields[4], &fields[4][..fields[4].len() - 2]));
        for text in hostile {
            std::fs::write(&path, &text).unwrap();
            assert!(
                read(&path, &node, "t").is_err(),
                "{text:?} was read as a key file"
            );
        }
    }

    #[test]
    fn a_destroyed_key_file_is_gone_and_destroying_nothing_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db.key");
        write(
            &path,
            &NodeKey::generate(),
            "t",
            &[&DatabaseKey::generate()],
        )
        .unwrap();
        assert!(destroy(&path).unwrap());
        assert!(!path.exists());
        assert!(!destroy(&path).unwrap());
    }

    #[test]
    fn a_tampered_key_file_is_refused_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db.key");
        let node = NodeKey::generate();
        write(&path, &node, "audit", &[&DatabaseKey::generate()]).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        let last = text.trim_end().len() - 1;
        let flipped = if &text[last..=last] == "0" { "1" } else { "0" };
        text.replace_range(last..=last, flipped);
        std::fs::write(&path, text).unwrap();
        let error = read(&path, &node, "audit").unwrap_err().to_string();
        assert!(error.contains("t.db.key is damaged"), "{error}");
        std::fs::write(&path, "").unwrap();
        assert!(read(&path, &node, "audit").is_err());
    }
}
