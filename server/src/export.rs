//! A tenant's export: everything the node holds of one tenant, in an archive
//! the tenant can read without sovra and check came from this node.
//!
//! The archive is a tar file compressed with zstd (`.tar.zst`) holding:
//!
//! - `tenant.db`: the tenant's database as plain SQLite (every table: kv,
//!   vectors, episodes, the agents' own);
//! - `kv.jsonl`, `vectors.jsonl`, `sql.jsonl`: the same contents as JSON
//!   Lines (bytes in base64), for those who do not read SQLite;
//! - `installs.json` (with grants), `usage.json` (tokens per model and day),
//!   `audit.jsonl` (the tenant's audit chain, each record with its hash);
//! - `manifest.json`: the format, the tenant, the node's Ed25519 public key,
//!   when, and every file above with its size and SHA-256;
//! - `manifest.sig`: the node's signature of `manifest.json`, in hex.
//!
//! [`verify`] checks an archive: the signature (and, when given, that the
//! key is the node's one the caller expects), every digest, no file missing
//! or added. It reads untrusted bytes and bounds what it unpacks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sovra_runtime::sealing::key_file::load_or_create_secret;
use sovra_runtime::sealing::{NodeKey, plain_image};

/// The archive format this node writes and reads.
pub const EXPORT_FORMAT: &str = "sovra-tenant-export v1";

/// File of the node's signing key (sealed by the node key) in the data dir.
pub const SIGNING_KEY_FILE: &str = "node-signing.key";

/// Most bytes [`verify`] unpacks from one archive. Stops: a small archive
/// that decompresses without end (a zstd bomb) exhausting memory.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// Most files [`verify`] accepts in one archive. Stops: archives of
/// millions of empty entries.
const MAX_ENTRIES: usize = 64;

/// zstd level: fast, and most of an export is already dense SQLite pages.
const ZSTD_LEVEL: i32 = 3;

/// The host-owned tables with a file of their own; every other table (the
/// agents' own, and the controller episodes) goes to `sql.jsonl`.
const KV_TABLE: &str = "_sovra_kv";
const VECTOR_TABLE: &str = "_sovra_vectors";

/// Why an export could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the export: {0}")]
    Write(String),
    #[error("not a valid export: {0}")]
    Invalid(String),
    #[error("the export was tampered with: {0}")]
    Tampered(String),
}

/// The node's Ed25519 key that signs exports, kept sealed by the node key.
pub fn signing_key(data_dir: &Path, node_key: &NodeKey) -> Result<SigningKey, ExportError> {
    let secret = load_or_create_secret(&data_dir.join(SIGNING_KEY_FILE), node_key, "node-signing")
        .map_err(|e| ExportError::Write(e.to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// What goes into one tenant's export besides its database.
#[derive(Debug)]
pub struct TenantRecords {
    pub tenant: String,
    pub installs: Value,
    pub usage: Value,
    pub audit: Vec<Value>,
}

impl TenantRecords {
    /// `tenant`'s usage and audit chain from `audit`, with its `installs`.
    pub fn gather(
        tenant: &str,
        installs: &[crate::db::InstallRow],
        audit: &sovra_runtime::audit::AuditLog,
    ) -> Result<Self, ExportError> {
        let failed = |e: sovra_runtime::audit::AuditError| ExportError::Write(e.to_string());
        Ok(TenantRecords {
            tenant: tenant.to_owned(),
            installs: json!(installs),
            usage: json!(audit.usage(tenant, 0).map_err(failed)?),
            audit: audit.chain_of(tenant).map_err(failed)?,
        })
    }
}

/// One file of the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tenant: String,
    pub node_public_key: String,
    pub created_ms: i64,
    pub files: Vec<ManifestFile>,
}

/// Writes the export of the tenant whose database `db` is open on (keyed)
/// to `out`. Nothing of it is written anywhere else.
pub fn write(
    db: &Connection,
    records: &TenantRecords,
    signer: &SigningKey,
    out: impl Write,
) -> Result<(), ExportError> {
    let failed = |e: &dyn std::fmt::Display| ExportError::Write(e.to_string());
    let database = plain_image(db).map_err(|e| failed(&e))?;
    // The JSON Lines come from the image, so that both show the same state.
    let mut image = Connection::open_in_memory().map_err(|e| failed(&e))?;
    image
        .deserialize_read_exact("main", &database[..], database.len(), true)
        .map_err(|e| failed(&e))?;
    let (kv, vectors, sql) = table_lines(&image).map_err(|e| failed(&e))?;
    drop(image);
    let json_lines = |rows: &[Value]| {
        let mut text = Vec::new();
        for row in rows {
            serde_json::to_writer(&mut text, row).expect("JSON values serialize");
            text.push(b'\n');
        }
        text
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("tenant.db", database),
        ("kv.jsonl", kv),
        ("vectors.jsonl", vectors),
        ("sql.jsonl", sql),
        (
            "installs.json",
            serde_json::to_vec_pretty(&records.installs).expect("JSON"),
        ),
        (
            "usage.json",
            serde_json::to_vec_pretty(&records.usage).expect("JSON"),
        ),
        ("audit.jsonl", json_lines(&records.audit)),
    ];
    let manifest = Manifest {
        format: EXPORT_FORMAT.into(),
        tenant: records.tenant.clone(),
        node_public_key: hex::encode(signer.verifying_key().as_bytes()),
        created_ms: crate::db::now_ms(),
        files: files
            .iter()
            .map(|(name, bytes)| ManifestFile {
                name: (*name).into(),
                bytes: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("JSON");
    let signature = hex::encode(signer.sign(&manifest_bytes).to_bytes());

    let encoder = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(|e| failed(&e))?;
    let mut archive = tar::Builder::new(encoder);
    let mut append = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(u64::try_from(manifest.created_ms / 1000).unwrap_or(0));
        header.set_cksum();
        archive.append_data(&mut header, name, bytes)
    };
    append("manifest.json", &manifest_bytes).map_err(|e| failed(&e))?;
    append("manifest.sig", signature.as_bytes()).map_err(|e| failed(&e))?;
    for (name, bytes) in &files {
        append(name, bytes).map_err(|e| failed(&e))?;
    }
    let encoder = archive.into_inner().map_err(|e| failed(&e))?;
    encoder
        .finish()
        .map_err(|e| failed(&e))?
        .flush()
        .map_err(|e| failed(&e))
}

/// `kv.jsonl`, `vectors.jsonl` and `sql.jsonl` from a plain tenant database.
fn table_lines(conn: &Connection) -> rusqlite::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let (mut kv, mut vectors, mut sql) = (Vec::new(), Vec::new(), Vec::new());
    for table in tables {
        let mut stmt =
            conn.prepare(&format!("SELECT * FROM \"{}\"", table.replace('"', "\"\"")))?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mut fields = serde_json::Map::new();
            for (i, column) in columns.iter().enumerate() {
                fields.insert(column.clone(), cell(row.get_ref(i)?));
            }
            let (out, line) = match table.as_str() {
                KV_TABLE => (&mut kv, Value::Object(fields)),
                VECTOR_TABLE => (&mut vectors, Value::Object(fields)),
                _ => (&mut sql, json!({"table": table, "row": fields})),
            };
            serde_json::to_writer(&mut *out, &line).expect("JSON values serialize");
            out.push(b'\n');
        }
    }
    Ok((kv, vectors, sql))
}

/// A SQLite value as JSON; a blob as `{"base64": "..."}`.
fn cell(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(r) => json!(r),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => {
            json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
        }
    }
}

/// What a verified export holds.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
}

/// Checks the export `archive`: its signature by the key its manifest names
/// (which must be `expected_key`, hex, when given), and every file against
/// the manifest.
pub fn verify(archive: impl Read, expected_key: Option<&str>) -> Result<Verified, ExportError> {
    let invalid = |why: String| ExportError::Invalid(why);
    let decoder = zstd::Decoder::new(archive).map_err(|e| invalid(e.to_string()))?;
    let mut tar = tar::Archive::new(decoder.take(MAX_UNPACKED_BYTES));
    let mut files = BTreeMap::new();
    for entry in tar.entries().map_err(|e| invalid(e.to_string()))? {
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        if files.len() == MAX_ENTRIES {
            return Err(invalid(format!("more than {MAX_ENTRIES} files")));
        }
        let name = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        if files.insert(name.clone(), bytes).is_some() {
            return Err(ExportError::Tampered(format!("{name} appears twice")));
        }
    }
    let manifest_bytes = files
        .remove("manifest.json")
        .ok_or_else(|| invalid("no manifest.json".into()))?;
    let signature = files
        .remove("manifest.sig")
        .ok_or_else(|| invalid("no manifest.sig".into()))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| invalid(format!("manifest.json: {e}")))?;
    if manifest.format != EXPORT_FORMAT {
        return Err(invalid(format!(
            "format {:?}, this node reads {EXPORT_FORMAT:?}",
            manifest.format
        )));
    }
    if let Some(expected) = expected_key
        && !expected
            .trim()
            .eq_ignore_ascii_case(&manifest.node_public_key)
    {
        return Err(ExportError::Tampered(format!(
            "signed by node key {}, not {}",
            manifest.node_public_key,
            expected.trim()
        )));
    }
    let key = hex_array::<32>(&manifest.node_public_key)
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        .ok_or_else(|| invalid("the manifest's node key is not an Ed25519 key".into()))?;
    let signature = std::str::from_utf8(&signature)
        .ok()
        .and_then(|text| hex_array::<64>(text.trim()))
        .ok_or_else(|| invalid("manifest.sig is not a signature".into()))?;
    key.verify_strict(&manifest_bytes, &Signature::from_bytes(&signature))
        .map_err(|_| ExportError::Tampered("the manifest's signature does not verify".into()))?;
    for file in &manifest.files {
        let bytes = files
            .remove(&file.name)
            .ok_or_else(|| ExportError::Tampered(format!("{} is missing", file.name)))?;
        if bytes.len() as u64 != file.bytes || hex::encode(Sha256::digest(&bytes)) != file.sha256 {
            return Err(ExportError::Tampered(format!(
                "{} is not what was signed",
                file.name
            )));
        }
    }
    if let Some(extra) = files.keys().next() {
        return Err(ExportError::Tampered(format!(
            "{extra} was added after signing"
        )));
    }
    Ok(Verified { manifest })
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(dir: &Path) -> (Vec<u8>, SigningKey) {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE _sovra_kv (key TEXT PRIMARY KEY, value BLOB);
             INSERT INTO _sovra_kv VALUES ('count/apples', x'3132');
             CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);
             INSERT INTO notes (text) VALUES ('kept');",
        )
        .unwrap();
        let signer = SigningKey::from_bytes(&[7; 32]);
        let records = TenantRecords {
            tenant: "acme".into(),
            installs: json!([]),
            usage: json!([]),
            audit: vec![json!({"invocation_id": "a", "hash": "h"})],
        };
        let mut archive = Vec::new();
        write(&conn, &records, &signer, &mut archive).unwrap();
        (archive, signer)
    }

    /// An archive's files: name and bytes, in order.
    type Files = Vec<(String, Vec<u8>)>;

    /// The archive's files, unpacked.
    fn unpack(archive: &[u8]) -> Files {
        let mut tar = tar::Archive::new(zstd::Decoder::new(archive).unwrap());
        tar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), bytes)
            })
            .collect()
    }

    /// Packs `files` the way an attacker would rebuild an archive.
    fn repack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut archive = tar::Builder::new(zstd::Encoder::new(Vec::new(), 1).unwrap());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        archive.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn an_export_verifies_and_holds_the_rows_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, signer) = export(dir.path());
        let public = hex::encode(signer.verifying_key().as_bytes());
        let verified = verify(&archive[..], Some(&public)).unwrap();
        assert_eq!(verified.manifest.tenant, "acme");
        let files = unpack(&archive);
        let db = dir.path().join("exported.db");
        std::fs::write(
            &db,
            &files.iter().find(|(n, _)| n == "tenant.db").unwrap().1,
        )
        .unwrap();
        let notes: String = Connection::open(&db)
            .unwrap()
            .query_row("SELECT text FROM notes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(notes, "kept", "tenant.db is plain SQLite");
        let text = |name: &str| {
            String::from_utf8(files.iter().find(|(n, _)| n == name).unwrap().1.clone()).unwrap()
        };
        assert!(
            text("kv.jsonl").contains(r#""key":"count/apples""#),
            "{}",
            text("kv.jsonl")
        );
        assert!(text("kv.jsonl").contains(r#""base64":"MTI=""#));
        assert!(text("sql.jsonl").contains(r#""table":"notes""#));
        assert!(text("sql.jsonl").contains(r#""text":"kept""#));
        let other = hex::encode(SigningKey::from_bytes(&[8; 32]).verifying_key().as_bytes());
        assert!(matches!(
            verify(&archive[..], Some(&other)),
            Err(ExportError::Tampered(_))
        ));
    }

    #[test]
    fn hostile_archives_are_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, _) = export(dir.path());
        let files = unpack(&archive);
        // A fixed xorshift: the same mutations on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        for round in 0..300 {
            let mutated = if round % 2 == 0 {
                // Bytes flipped in the compressed archive.
                let mut bytes = archive.clone();
                for _ in 0..1 + next(4) {
                    let at = next(bytes.len());
                    bytes[at] ^= 1 << next(8);
                }
                bytes
            } else {
                // A well-formed archive whose files were changed.
                let mut files = files.clone();
                let file = next(files.len());
                let content = &mut files[file].1;
                if content.is_empty() || next(3) == 0 {
                    content.extend_from_slice(b"{");
                } else {
                    let at = next(content.len());
                    content[at] = content[at].wrapping_add(1 + next(255) as u8);
                }
                repack(&files)
            };
            // Refused, or (a flip in tar padding, say) verified with every
            // signed file exactly as written.
            if verify(&mutated[..], None).is_ok() {
                assert_eq!(
                    unpack(&mutated),
                    files,
                    "round {round}: a changed archive verified"
                );
            }
        }
    }

    #[test]
    fn every_change_after_signing_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, _) = export(dir.path());
        let files = unpack(&archive);
        let changed = |edit: &dyn Fn(&mut Files)| {
            let mut files = files.clone();
            edit(&mut files);
            verify(&repack(&files)[..], None).unwrap_err()
        };
        let altered = changed(&|f| {
            f.iter_mut()
                .find(|(n, _)| n == "kv.jsonl")
                .unwrap()
                .1
                .push(b' ')
        });
        assert!(
            altered
                .to_string()
                .contains("kv.jsonl is not what was signed"),
            "{altered}"
        );
        let removed = changed(&|f| f.retain(|(n, _)| n != "audit.jsonl"));
        assert!(
            removed.to_string().contains("audit.jsonl is missing"),
            "{removed}"
        );
        let added = changed(&|f| f.push(("extra.txt".into(), b"x".to_vec())));
        assert!(added.to_string().contains("extra.txt was added"), "{added}");
        let manifest = changed(&|f| {
            let m = f.iter_mut().find(|(n, _)| n == "manifest.json").unwrap();
            m.1 = String::from_utf8(m.1.clone())
                .unwrap()
                .replace("acme", "evil")
                .into_bytes();
        });
        assert!(
            manifest.to_string().contains("signature does not verify"),
            "{manifest}"
        );
        assert!(matches!(
            verify(&b"not an archive"[..], None),
            Err(ExportError::Invalid(_))
        ));
    }
}
