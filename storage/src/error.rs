//! `StorageError`: every way the storage crate can fail. Used on the shard thread (appends,
//! open) and on the blocking thread that runs a `SyncJob`. I/O errors carry the operation and
//! path; a failed sync poisons the log and every later call answers `Poisoned`.

use std::path::PathBuf;

/// Errors from the shard log. I/O errors are handled by the caller; a sync error is fatal.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call failed.
    #[error("storage I/O failed: {op} {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"fallocate"`, `"msync"` ...).
        op: &'static str,
        /// The file or directory involved (may be empty when unknown).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The encoded record does not fit in one segment.
    #[error("record of {len_bytes} bytes does not fit in a segment of {segment_size_bytes} bytes")]
    RecordTooLarge {
        /// Encoded size of the record, header and padding included.
        len_bytes: u64,
        /// Configured segment size.
        segment_size_bytes: u64,
    },
    /// An earlier sync failed; the log refuses all further work (never retry and ack).
    #[error("shard log is poisoned by an earlier failed sync")]
    Poisoned,
    /// The record's metadata could not be serialized.
    #[error("record metadata could not be encoded: {0}")]
    Encode(String),
    /// The log holds segments of a newer epoch: another process took the lease over from this
    /// one, which must stop writing.
    #[error("log was taken over: it holds epoch {newer}, this writer has epoch {epoch}")]
    Fenced {
        /// This writer's epoch.
        epoch: u64,
        /// The newer epoch found.
        newer: u64,
    },
    /// The lease fence refused: another process holds a newer epoch (or this one's lease ran
    /// out). Nothing synced since the last acknowledgement may be acknowledged.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// `LogConfig` is out of range.
    #[error("invalid log config: {0}")]
    Config(String),
}

impl StorageError {
    /// Wraps an `io::Error` with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io { op, path: path.into(), source }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(source: std::io::Error) -> Self {
        StorageError::Io { op: "io", path: PathBuf::new(), source }
    }
}
