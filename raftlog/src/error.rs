//! Errors of the raftlog crate, by meaning.
//!
//! Every failure that a caller can act on has its own variant: a data directory that belongs to
//! another cluster, a file written by a newer binary, a corrupt file, an I/O failure. openraft
//! wants its own `StorageError`; [`Error::into_storage`] and friends convert at the trait
//! boundary so the rest of the crate speaks only this enum.
//!
//! Caveat: an [`Error`] raised inside `apply` makes openraft stop the member. That is deliberate:
//! an I/O failure while applying is not deterministic, and a member that skipped an entry would
//! diverge from the others.

use openraft::{AnyError, StorageError, StorageIOError};
use std::path::PathBuf;

/// Everything that can go wrong in raftlog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database was created for another cluster.
    #[error(
        "{path} belongs to cluster {found:?}, not {expected:?}: give this member its own data \
         directory or use the cluster id it was created with"
    )]
    ClusterMismatch {
        /// The database file.
        path: PathBuf,
        /// The cluster id this process was started with.
        expected: String,
        /// The cluster id stored in the file.
        found: String,
    },
    /// The database was written by a newer format than this binary understands.
    #[error(
        "{path} has storage format version {found}, but this binary supports up to {supported}: \
         run a newer binary"
    )]
    FormatTooNew {
        /// The database or snapshot file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this binary reads.
        supported: u32,
    },
    /// The database was written by an older format, which this binary does not migrate.
    #[error(
        "{path} has storage format version {found}, but this binary reads versions \
         {supported} and newer and does not migrate older data: run the binary that wrote it, \
         or start this member from an empty data directory"
    )]
    FormatTooOld {
        /// The database or snapshot file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The oldest version this binary reads.
        supported: u32,
    },
    /// A file is truncated, garbled or otherwise not what it claims to be.
    #[error("{path} is corrupt: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An operating-system I/O failure.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The storage engine (redb) failed.
    #[error("storage engine: {0}")]
    Db(String),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// A snapshot does not match the metadata it was installed with.
    #[error("snapshot mismatch: {0}")]
    SnapshotMismatch(String),
    /// The application state machine failed (non-deterministically: I/O, not a business error).
    #[error("state machine: {0}")]
    App(String),
    /// The background log writer is gone, after an earlier failure or at shutdown.
    #[error("the log writer has stopped: {0}")]
    WriterStopped(String),
}

/// Shorthand for raftlog results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    fn any(&self) -> AnyError {
        AnyError::error(self.to_string())
    }

    /// As an openraft error about writing the log.
    pub fn write_logs(&self) -> StorageError<u64> {
        StorageIOError::write_logs(self.any()).into()
    }

    /// As an openraft error about reading the log.
    pub fn read_logs(&self) -> StorageError<u64> {
        StorageIOError::read_logs(self.any()).into()
    }

    /// As an openraft error about the vote.
    pub fn write_vote(&self) -> StorageError<u64> {
        StorageIOError::write_vote(self.any()).into()
    }

    /// As an openraft error about reading the vote.
    pub fn read_vote(&self) -> StorageError<u64> {
        StorageIOError::read_vote(self.any()).into()
    }

    /// As an openraft error about the state machine.
    pub fn write_sm(&self) -> StorageError<u64> {
        StorageIOError::write_state_machine(self.any()).into()
    }

    /// As an openraft error about reading the state machine.
    pub fn read_sm(&self) -> StorageError<u64> {
        StorageIOError::read_state_machine(self.any()).into()
    }

    /// As an openraft error about snapshots.
    pub fn snapshot(&self) -> StorageError<u64> {
        StorageIOError::write_snapshot(None, self.any()).into()
    }
}

macro_rules! db_error {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.to_string())
            }
        })*
    };
}

db_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Codec(e.to_string())
    }
}
