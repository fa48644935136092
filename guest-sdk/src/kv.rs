//! The tenant's key/value store (needs the `kv` grant).

use crate::Error;
use crate::bindings::sovra::agent::kv as wit;

/// The most keys [`list`] returns per page unless asked for fewer.
pub const DEFAULT_PAGE: u32 = 100;

pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key)
}

/// The value at `key` as UTF-8 text (invalid UTF-8 is replaced).
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    Ok(get(key)?.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    wit::set(key, value.as_ref())
}

/// Removes `key`; returns whether it existed.
pub fn delete(key: &str) -> Result<bool, Error> {
    wit::delete(key)
}

/// Atomically adds `delta` to the integer at `key` and returns the new value.
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    wit::increment(key, delta)
}

/// Every key starting with `prefix`, following cursors page by page.
pub fn list(prefix: &str) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = wit::list_keys(prefix, cursor.as_deref(), DEFAULT_PAGE)?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}
