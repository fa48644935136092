//! Opening sealed (SQLCipher) databases, and the two operations that rewrite
//! one whole: encrypting a plain database in place (the upgrade from a node
//! that wrote plain files) and changing a database's key. Both write a
//! complete encrypted copy beside the database, fsync it and rename it over
//! the original, so a crash at any point leaves a database that opens: the
//! old one with its old key, or the new one with its new key.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::key_file::{self, DatabaseKey};
use super::openssl::keep_openssl_until_exit;
use super::{NodeKey, SealingError, parent_dir, sync_dir, with_dir_locked};

/// The first 16 bytes of every plain SQLite database. SQLCipher stores a
/// random salt there instead, so an encrypted file never starts with them.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The page authentication every sealed database is written with: HMAC-SHA256,
/// not SQLCipher's default HMAC-SHA512, because both processor families the
/// node runs on (AMD EPYC, Intel Xeon) compute SHA-256 in hardware (SHA-NI)
/// and not SHA-512; every page read and written is authenticated. Fixed for
/// the life of a database: one written under another setting does not open.
const HMAC_ALGORITHM: &str = "HMAC_SHA256";

/// Suffix of the encrypted copy written while a plain database is encrypted.
const ENCRYPTING_SUFFIX: &str = ".encrypting";
/// Suffix of the copy written while a database's key changes.
const REKEYING_SUFFIX: &str = ".rekeying";

/// A database file whose key has been unsealed: what is needed to open
/// connections to it.
#[derive(Debug)]
pub struct SealedDatabase {
    path: PathBuf,
    key: DatabaseKey,
}

/// What is at a database's path.
enum FileState {
    /// Nothing, or an empty file (SQLite treats both as a new database).
    New,
    Plain,
    Encrypted,
}

impl SealedDatabase {
    /// Makes the database at `path` ready to open under `node_key`: finishes
    /// or undoes what a crash interrupted, encrypts a plain database in
    /// place, and creates (and seals) a key for a new one. `label` names the
    /// database in its key file's seals (`tenant/acme`, `audit`, `node`).
    /// No connection to `path` may be open while this runs.
    pub fn prepare(path: &Path, node_key: &NodeKey, label: &str) -> Result<Self, SealingError> {
        keep_openssl_until_exit();
        with_dir_locked(&parent_dir(path), || {
            Self::prepare_locked(path, node_key, label)
        })
    }

    /// [`SealedDatabase::prepare`], the database's directory locked.
    fn prepare_locked(path: &Path, node_key: &NodeKey, label: &str) -> Result<Self, SealingError> {
        let key_path = key_file::path_for(path);
        for suffix in [ENCRYPTING_SUFFIX, REKEYING_SUFFIX] {
            remove_if_present(&sibling(path, suffix))?;
        }
        let has_key_file = key_path.exists();
        let key = match (file_state(path)?, has_key_file) {
            (FileState::New, false) => {
                let key = DatabaseKey::generate();
                key_file::write(&key_path, node_key, label, &[&key])?;
                key
            }
            (FileState::New, true) => current_key(&key_path, node_key, label)?,
            (FileState::Plain, _) => {
                let key = if has_key_file {
                    current_key(&key_path, node_key, label)?
                } else {
                    let key = DatabaseKey::generate();
                    key_file::write(&key_path, node_key, label, &[&key])?;
                    key
                };
                encrypt_in_place(path, &key)?;
                tracing::info!(path = %path.display(), "encrypted a plain database in place");
                key
            }
            (FileState::Encrypted, false) => {
                return Err(SealingError::KeyFileMissing {
                    path: path.to_owned(),
                    key_file: key_path,
                });
            }
            (FileState::Encrypted, true) => {
                let keys = key_file::read(&key_path, node_key, label)?;
                let count = keys.len();
                let mut opening = None;
                for key in keys {
                    if count == 1 || opens(path, &key)? {
                        opening = Some(key);
                        break;
                    }
                }
                let key = opening.ok_or_else(|| SealingError::NoKeyOpens {
                    path: path.to_owned(),
                    key_file: key_path.clone(),
                })?;
                if count > 1 {
                    // A key change was interrupted: keep the key that opens.
                    key_file::write(&key_path, node_key, label, &[&key])?;
                }
                key
            }
        };
        Ok(SealedDatabase {
            path: path.to_owned(),
            key,
        })
    }

    /// The database at `path` as it is, for reading: its key file's current
    /// key, with nothing recovered, encrypted or written (a node may be
    /// using it).
    pub fn existing(path: &Path, node_key: &NodeKey, label: &str) -> Result<Self, SealingError> {
        keep_openssl_until_exit();
        let key_path = key_file::path_for(path);
        if !key_path.exists() {
            return Err(SealingError::KeyFileMissing {
                path: path.to_owned(),
                key_file: key_path,
            });
        }
        Ok(SealedDatabase {
            path: path.to_owned(),
            key: current_key(&key_path, node_key, label)?,
        })
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's key, for what is sealed alongside the database.
    pub(crate) fn key(&self) -> &DatabaseKey {
        &self.key
    }

    /// Opens a keyed connection with `flags`, checking that the key opens
    /// the file.
    pub fn open(&self, flags: OpenFlags) -> Result<Connection, SealingError> {
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(SealingError::sqlite(&self.path))?;
        conn.execute_batch(&self.key.key_statement(None))
            .and_then(|()| {
                conn.execute_batch(&format!("PRAGMA cipher_hmac_algorithm = {HMAC_ALGORITHM};"))
            })
            .map_err(SealingError::sqlite(&self.path))?;
        silence_cipher_log(&conn);
        match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())) {
            Ok(()) => Ok(conn),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
                Err(SealingError::NoKeyOpens {
                    path: self.path.clone(),
                    key_file: key_file::path_for(&self.path),
                })
            }
            Err(e) => Err(SealingError::sqlite(&self.path)(e)),
        }
    }

    /// Opens a keyed read-write connection, creating the file if needed.
    pub fn open_read_write(&self) -> Result<Connection, SealingError> {
        self.open(
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }
}

/// Turns SQLCipher's own logging off (for the whole process; once, after
/// the first key, which is when SQLCipher sets its default). It writes to
/// stderr whenever a key fails to decrypt a page, which a probe of an
/// interrupted key change does on purpose; every failure reaches the caller
/// as a typed error anyway.
fn silence_cipher_log(conn: &Connection) {
    static SILENCED: std::sync::Once = std::sync::Once::new();
    SILENCED.call_once(|| {
        if let Err(error) =
            conn.execute_batch("PRAGMA cipher_log_level = NONE; PRAGMA cipher_log_source = NONE;")
        {
            tracing::warn!(%error, "cannot turn SQLCipher's log off");
        }
    });
}

/// Puts the database at `path` under a new random key, crash-safely: the
/// new key is sealed into the key file (after the old one, which still opens
/// the database) before the re-encrypted copy replaces the database, and the
/// old key is dropped from the file only after. No connection to `path` may
/// be open while this runs.
pub fn rekey(path: &Path, node_key: &NodeKey, label: &str) -> Result<(), SealingError> {
    keep_openssl_until_exit();
    with_dir_locked(&parent_dir(path), || rekey_locked(path, node_key, label))
}

fn rekey_locked(path: &Path, node_key: &NodeKey, label: &str) -> Result<(), SealingError> {
    let current = SealedDatabase::prepare_locked(path, node_key, label)?;
    let key_path = key_file::path_for(path);
    let new = DatabaseKey::generate();
    key_file::write(&key_path, node_key, label, &[&new, &current.key])?;
    let conn = current.open_read_write()?;
    write_copy(conn, path, &sibling(path, REKEYING_SUFFIX), &new)?;
    key_file::write(&key_path, node_key, label, &[&new])
}

/// Everything `conn` (a keyed connection) holds, as the bytes of a plain
/// SQLite database: what a tenant's export carries, readable by any SQLite
/// without the node's keys. Built in memory: the plaintext never touches
/// the disk.
pub fn plain_image(conn: &Connection) -> Result<Vec<u8>, SealingError> {
    keep_openssl_until_exit();
    let sqlite = |e: rusqlite::Error| SealingError::Sqlite {
        path: PathBuf::from(":memory:"),
        message: e.to_string(),
    };
    conn.execute_batch("ATTACH DATABASE ':memory:' AS plain_copy KEY ''")
        .map_err(sqlite)?;
    let image = conn
        .query_row("SELECT sqlcipher_export('plain_copy')", [], |_| Ok(()))
        .and_then(|()| conn.serialize("plain_copy").map(|data| data.to_vec()));
    let detached = conn.execute_batch("DETACH DATABASE plain_copy");
    let image = image.map_err(sqlite)?;
    detached.map_err(sqlite)?;
    Ok(image)
}

/// The key a database's key file names first.
fn current_key(
    key_path: &Path,
    node_key: &NodeKey,
    label: &str,
) -> Result<DatabaseKey, SealingError> {
    let mut keys = key_file::read(key_path, node_key, label)?;
    Ok(keys.swap_remove(0))
}

fn file_state(path: &Path) -> Result<FileState, SealingError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::New),
        Err(e) => return Err(SealingError::io(path)(e)),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file
            .read(&mut header[read..])
            .map_err(SealingError::io(path))?
        {
            0 => break,
            n => read += n,
        }
    }
    Ok(match read {
        0 => FileState::New,
        16 if &header == PLAIN_HEADER => FileState::Plain,
        _ => FileState::Encrypted,
    })
}

/// Whether `key` opens the encrypted database at `path`.
fn opens(path: &Path, key: &DatabaseKey) -> Result<bool, SealingError> {
    let probe = SealedDatabase {
        path: path.to_owned(),
        key: key.clone(),
    };
    match probe.open(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(_) => Ok(true),
        Err(SealingError::NoKeyOpens { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn encrypt_in_place(path: &Path, key: &DatabaseKey) -> Result<(), SealingError> {
    let plain = Connection::open(path).map_err(SealingError::sqlite(path))?;
    write_copy(plain, path, &sibling(path, ENCRYPTING_SUFFIX), key)
}

/// Writes everything `conn` (open on `path`) holds into a new database at
/// `copy` under `key`, closes `conn` (so no connection to the old file
/// outlives it), and renames the copy over `path`.
fn write_copy(
    conn: Connection,
    path: &Path,
    copy: &Path,
    key: &DatabaseKey,
) -> Result<(), SealingError> {
    let sqlite = SealingError::sqlite(path);
    remove_if_present(copy)?;
    // Fold the write-ahead log into the file, so that nothing of the old
    // database outlives it beside the new one.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(&sqlite)?;
    let user_version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&sqlite)?;
    let copy_name = copy.to_str().ok_or_else(|| SealingError::Sqlite {
        path: path.to_owned(),
        message: "the database path is not UTF-8".into(),
    })?;
    conn.execute(
        &format!(
            "ATTACH DATABASE ?1 AS sealed_copy KEY {}",
            key.attach_literal().as_str()
        ),
        [copy_name],
    )
    .map_err(&sqlite)?;
    let exported = conn
        .execute_batch(&format!(
            "PRAGMA sealed_copy.cipher_hmac_algorithm = {HMAC_ALGORITHM};"
        ))
        .and_then(|()| conn.query_row("SELECT sqlcipher_export('sealed_copy')", [], |_| Ok(())))
        .and_then(|()| {
            conn.execute_batch(&format!(
                "PRAGMA sealed_copy.user_version = {user_version};"
            ))
        });
    let detached = conn.execute_batch("DETACH DATABASE sealed_copy");
    exported.and(detached).map_err(&sqlite)?;
    conn.close().map_err(|(_, e)| sqlite(e))?;
    std::fs::File::open(copy)
        .and_then(|f| f.sync_all())
        .map_err(SealingError::io(copy))?;
    std::fs::rename(copy, path).map_err(SealingError::io(path))?;
    sync_dir(&parent_dir(path))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<(), SealingError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SealingError::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "plaintext-marker-7f3a";

    fn contains(path: &Path, needle: &str) -> bool {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    fn write_row(conn: &Connection, value: &str) {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (v TEXT)")
            .unwrap();
        conn.execute("INSERT INTO t VALUES (?1)", [value]).unwrap();
    }

    fn rows(db: &SealedDatabase) -> Vec<String> {
        let conn = db.open(OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut statement = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_new_database_is_encrypted_under_a_sealed_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let node = NodeKey::generate();
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        let conn = db.open_read_write().unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        write_row(&conn, MARKER);
        assert!(!contains(&path, MARKER) && !contains(&sibling(&path, "-wal"), MARKER));
        drop(conn);
        assert!(
            !contains(&path, MARKER),
            "no plaintext after the checkpoint"
        );
        let again = SealedDatabase::prepare(&path, &node, "t").unwrap();
        assert_eq!(rows(&again), [MARKER]);
        let hmac: String = again
            .open_read_write()
            .unwrap()
            .query_row("PRAGMA cipher_hmac_algorithm", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hmac, HMAC_ALGORITHM);
    }

    #[test]
    fn openers_racing_on_a_new_database_agree_on_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let node = NodeKey::generate();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let (path, node) = (&path, &node);
                scope.spawn(move || {
                    let db = SealedDatabase::prepare(path, node, "t").unwrap();
                    let conn = db.open_read_write().unwrap();
                    conn.busy_timeout(std::time::Duration::from_secs(10))
                        .unwrap();
                    write_row(&conn, &format!("row {i}"));
                });
            }
        });
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        assert_eq!(rows(&db).len(), 8);
    }

    #[test]
    fn a_plain_database_is_encrypted_in_place_with_everything_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let plain = Connection::open(&path).unwrap();
            plain.pragma_update(None, "journal_mode", "WAL").unwrap();
            plain.pragma_update(None, "user_version", 7).unwrap();
            write_row(&plain, MARKER);
        }
        assert!(contains(&path, MARKER));
        let node = NodeKey::generate();
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        assert!(!contains(&path, MARKER));
        assert_eq!(rows(&db), [MARKER]);
        let version: i64 = db
            .open_read_write()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 7);
        assert!(
            Connection::open(&path)
                .unwrap()
                .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .is_err()
        );
    }

    #[test]
    fn an_encryption_interrupted_before_its_rename_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        write_row(&Connection::open(&path).unwrap(), MARKER);
        let node = NodeKey::generate();
        // The crash: the key was sealed and a partial copy written.
        key_file::write(
            &key_file::path_for(&path),
            &node,
            "t",
            &[&DatabaseKey::generate()],
        )
        .unwrap();
        std::fs::write(sibling(&path, ENCRYPTING_SUFFIX), b"half a copy").unwrap();
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        assert_eq!(rows(&db), [MARKER]);
        assert!(!sibling(&path, ENCRYPTING_SUFFIX).exists());
    }

    #[test]
    fn rekey_replaces_the_key_and_an_interrupted_one_keeps_the_key_that_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let key_path = key_file::path_for(&path);
        let node = NodeKey::generate();
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        write_row(&db.open_read_write().unwrap(), MARKER);
        let old = db.key.clone();

        rekey(&path, &node, "t").unwrap();
        let keys = key_file::read(&key_path, &node, "t").unwrap();
        assert_eq!(keys.len(), 1);
        assert!(
            !opens(&path, &old).unwrap(),
            "the old key no longer opens it"
        );
        assert!(opens(&path, &keys[0]).unwrap());
        let current = keys[0].clone();

        // Crash after sealing a new key, before the copy replaced the file.
        let unused = DatabaseKey::generate();
        key_file::write(&key_path, &node, "t", &[&unused, &current]).unwrap();
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        assert_eq!(rows(&db), [MARKER]);
        let keys = key_file::read(&key_path, &node, "t").unwrap();
        assert_eq!(keys.len(), 1);
        assert!(opens(&path, &keys[0]).unwrap());
    }

    #[test]
    fn a_wrong_node_key_or_a_lost_key_file_is_a_clear_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let node = NodeKey::generate();
        let db = SealedDatabase::prepare(&path, &node, "t").unwrap();
        write_row(&db.open_read_write().unwrap(), MARKER);
        let error = SealedDatabase::prepare(&path, &NodeKey::generate(), "t").unwrap_err();
        assert!(
            matches!(error, SealingError::WrongNodeKey { .. }),
            "{error}"
        );
        assert!(error.to_string().contains(&node.fingerprint()), "{error}");
        std::fs::remove_file(key_file::path_for(&path)).unwrap();
        let error = SealedDatabase::prepare(&path, &node, "t").unwrap_err();
        assert!(
            matches!(error, SealingError::KeyFileMissing { .. }),
            "{error}"
        );
    }
}
