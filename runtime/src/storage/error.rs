//! Storage errors, sorted into what the guest did wrong, what limit it hit,
//! and what failed in the host.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ErrorCode;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("cannot open tenant database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("storage quota of {quota_bytes} bytes exhausted")]
    QuotaExceeded { quota_bytes: u64 },
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("not allowed: {0}")]
    Denied(String),
    /// Another writer held the database for longer than the busy timeout:
    /// transient, and not the guest's fault.
    #[error("tenant storage is busy: {0}")]
    Busy(String),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl StorageError {
    /// Classifies a SQLite error. `denial` is the authorizer's reason for the
    /// last refusal, if it refused something.
    pub(crate) fn from_sqlite(
        error: rusqlite::Error,
        quota_bytes: u64,
        denial: Option<String>,
    ) -> Self {
        use rusqlite::Error as E;
        // The authorizer is reset before every statement, so a refusal it
        // recorded is the cause of this failure, however SQLite reports it.
        if let Some(reason) = denial {
            return StorageError::Denied(reason);
        }
        match &error {
            E::SqliteFailure(failure, message) => match failure.code {
                ErrorCode::DiskFull => StorageError::QuotaExceeded { quota_bytes },
                ErrorCode::AuthorizationForStatementDenied => {
                    StorageError::Denied(message.clone().unwrap_or_else(|| error.to_string()))
                }
                ErrorCode::OperationInterrupted => StorageError::LimitExceeded(format!(
                    "statement ran longer than {:?}",
                    crate::limits::MAX_SQL_TIME
                )),
                ErrorCode::TooBig => StorageError::LimitExceeded(
                    "a string, blob or statement is larger than allowed".into(),
                ),
                ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch => {
                    StorageError::InvalidInput(error.to_string())
                }
                // SQLITE_ERROR: syntax errors, unknown tables and the like.
                ErrorCode::Unknown | ErrorCode::ApiMisuse | ErrorCode::ParameterOutOfRange => {
                    StorageError::InvalidInput(error.to_string())
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    StorageError::Busy(error.to_string())
                }
                _ => StorageError::Internal(error.to_string()),
            },
            E::MultipleStatement => {
                StorageError::InvalidInput("exactly one SQL statement per call".into())
            }
            E::ExecuteReturnedResults => StorageError::InvalidInput(
                "the statement returns rows; use query instead of execute".into(),
            ),
            E::InvalidParameterCount(given, expected) => StorageError::InvalidInput(format!(
                "the statement has {expected} parameters but {given} were given"
            )),
            E::SqlInputError { .. } => StorageError::InvalidInput(error.to_string()),
            _ => StorageError::Internal(error.to_string()),
        }
    }
}
