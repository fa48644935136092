//! SQL on the tenant's own database (needs the `sql` grant).
//!
//! ```rust,ignore
//! use sovra_sdk::sql::{self, Value};
//! sql::execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)", &[])?;
//! sql::execute("INSERT INTO notes (body) VALUES (?1)", &["hello".into()])?;
//! let rows = sql::query("SELECT body FROM notes WHERE body LIKE ?1", &["h%".into()])?;
//! for row in &rows.rows { let body: &str = row[0].as_text().unwrap_or(""); }
//! ```

use crate::Error;
use crate::bindings::sovra::agent::sql as wit;

pub use wit::{RowSet, Value};

/// Runs a statement that returns no rows; returns the number of rows changed.
pub fn execute(statement: &str, params: &[Value]) -> Result<u64, Error> {
    wit::execute(statement, params)
}

/// Runs a statement and returns its rows.
pub fn query(statement: &str, params: &[Value]) -> Result<RowSet, Error> {
    wit::query(statement, params)
}

impl Value {
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Real(value) => Some(*value),
            Value::Integer(value) => Some(*value as f64),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(value) => Some(value),
            _ => None,
        }
    }

    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(value) => Some(value),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Real(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Blob(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}
