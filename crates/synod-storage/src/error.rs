//! What can go wrong with storage, said precisely enough for an operator to act on.

use thiserror::Error;

/// A storage failure.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The operating system refused an operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The error from the system.
        source: std::io::Error,
    },
    /// Stored bytes fail their checks. The node must not start on them: acknowledged data
    /// could be missing.
    #[error("corrupt data in {file} at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// Where the bad bytes start.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment in the middle of the log is gone.
    #[error("log segment {missing} is missing from {dir} (segments {before} and {after} exist)")]
    MissingSegment {
        /// The directory.
        dir: String,
        /// The sequence number expected.
        missing: u64,
        /// The segment before the gap.
        before: u64,
        /// The segment after the gap.
        after: u64,
    },
    /// The data directory was written by another replication protocol than the one asked
    /// for. Its log means nothing to this one.
    #[error(
        "{dir} holds data written by {found}, not {wanted}: start it with --protocol {found}, \
         or give {wanted} a directory of its own"
    )]
    WrongProtocol {
        /// The data directory.
        dir: String,
        /// The protocol the directory names.
        found: String,
        /// The protocol asked for.
        wanted: String,
    },
    /// A caller broke the store's contract (for instance, appended with a gap).
    #[error("invalid use of the store: {0}")]
    Misuse(String),
}

impl StorageError {
    /// Wraps an IO error with what was being done to which path.
    pub fn io(op: &'static str, path: impl Into<String>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Results of storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;
