//! The store's error type: every SQLite failure says which operation on which file failed and
//! keeps the SQLite error as its source.

use std::path::PathBuf;

/// A failure of the SQLite store.
///
/// The underlying error is kept as [`std::error::Error::source`] rather than repeated in the
/// message; print the whole chain (`{:#}` with anyhow) to see it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the directory {path} for the SQLite store")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the SQLite store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused WAL mode (some network filesystems do). Without it readers would block
    /// the writer, so the store refuses to run rather than degrade silently.
    #[error("the SQLite store {path} cannot use WAL mode (journal mode is {mode:?})")]
    NotWal { path: PathBuf, mode: String },
    #[error("cannot migrate the SQLite store {path} to schema version {version}")]
    Migrate {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer citygate, or was never initialised by a writer.
    #[error(
        "the SQLite store {path} has schema version {found}; this build reads version {supported}"
    )]
    SchemaVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A statement failed, or a row read back could not be decoded (a corrupt row).
    #[error("SQLite store {path}: {op} failed")]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("SQLite store {path}: cannot encode {what} as JSON")]
    Json {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The commit itself is wrong (a NaN reading, a non-finite alert value): retrying it cannot
    /// succeed, so the caller should dead-letter or drop it instead. Nothing was written.
    #[error("SQLite store: invalid commit: {0}")]
    InvalidInput(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (a busy or full disk, an I/O
    /// error). An invalid commit or an incompatible schema never will.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            StoreError::InvalidInput(_)
                | StoreError::SchemaVersion { .. }
                | StoreError::NotWal { .. }
                | StoreError::Json { .. }
        )
    }
}
