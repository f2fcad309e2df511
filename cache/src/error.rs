//! [`CacheError`]: every failure of the object cache, by meaning.
//!
//! Why: the Flight face, the peer protocol, the store and the client all fail in the same few
//! ways (a bad key, a missing object, a full disk, no reachable holder), and each way needs one
//! gRPC code. `CacheError` converts into the workspace's [`FlameError`], and `flame-proto` alone
//! maps that to `tonic::Status`, so the cache never builds a status by hand.
//!
//! Caveat: [`CacheError::Io`] is for local I/O the caller cannot fix (it maps to INTERNAL); a
//! full disk is recognised first and becomes [`CacheError::StorageFull`].

use flame_proto::error::FlameError;

/// Shorthand for results whose error is a [`CacheError`].
pub type CacheResult<T> = Result<T, CacheError>;

/// A failure of the object cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A key, prefix or pattern breaks the key rules (spec Annex A).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as received.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A request is malformed: an unknown descriptor, ticket or schema.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object does not exist on any reachable holder.
    #[error("object {0} not found")]
    NotFound(String),
    /// A put exceeds the configured object size limit.
    #[error("{what} is too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large, for example `object a/s/o`.
        what: String,
        /// Its size in bytes (at least; a stream is cut off at the limit).
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The disk (or the configured disk quota) has no room for the object.
    #[error("{0}")]
    StorageFull(String),
    /// No holder of the object could be reached, or too few replicas could be written.
    #[error("{0}")]
    Unavailable(String),
    /// The object's namespace was deleted (its session closed or its application
    /// unregistered) after the object was written, so a replica refuses it.
    #[error("{0}")]
    Deleted(String),
    /// Stored or received bytes do not match their hash or format.
    #[error("{0}")]
    Corrupt(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What the cache was doing, naming the file.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configuration is unusable; the message names the flag or key.
    #[error("{0}")]
    Config(String),
    /// A cache server answered a client call with an error.
    #[error("{0}")]
    Server(FlameError),
    /// A client could not reach a cache server.
    #[error("cannot reach the cache at {endpoint}: {reason}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// A bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
}

impl CacheError {
    /// An [`CacheError::Io`] for `context`, or [`CacheError::StorageFull`] when the error says
    /// the disk is full (ENOSPC or EDQUOT).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        match source.raw_os_error() {
            Some(code) if code == ENOSPC || code == EDQUOT => {
                CacheError::StorageFull(format!("{context}: the cache's disk is full ({source})"))
            }
            _ => CacheError::Io { context, source },
        }
    }

    /// Whether the error means the object is simply absent.
    pub fn is_not_found(&self) -> bool {
        match self {
            CacheError::NotFound(_) => true,
            CacheError::Server(e) => matches!(e, FlameError::NotFound(_)),
            _ => false,
        }
    }
}

/// Linux's "no space left on device".
const ENOSPC: i32 = 28;
/// Linux's "disk quota exceeded".
const EDQUOT: i32 = 122;

impl From<CacheError> for FlameError {
    fn from(err: CacheError) -> Self {
        let text = err.to_string();
        match err {
            CacheError::InvalidKey { .. } | CacheError::InvalidArgument(_) => {
                FlameError::InvalidArgument(text)
            }
            CacheError::Config(_) => FlameError::InvalidArgument(text),
            CacheError::NotFound(_) => FlameError::NotFound(text),
            CacheError::TooLarge { what, size, limit } => {
                FlameError::TooLarge { what, size, limit }
            }
            CacheError::StorageFull(_) => FlameError::Exhausted(text),
            CacheError::Unavailable(_) | CacheError::Connect { .. } => {
                FlameError::Unavailable(text)
            }
            CacheError::Deleted(_) => FlameError::InvalidState(text),
            CacheError::Server(e) => e,
            CacheError::Corrupt(_) | CacheError::Io { .. } | CacheError::Internal(_) => {
                FlameError::Internal(text)
            }
        }
    }
}

impl From<CacheError> for tonic::Status {
    fn from(err: CacheError) -> Self {
        FlameError::from(err).into()
    }
}

impl From<tonic::Status> for CacheError {
    fn from(status: tonic::Status) -> Self {
        CacheError::Server(FlameError::from(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_storage_full_and_travels_as_resource_exhausted() {
        let err = CacheError::io("writing a/s/o", std::io::Error::from_raw_os_error(ENOSPC));
        assert!(matches!(err, CacheError::StorageFull(_)), "{err:?}");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("disk is full"), "{status:?}");
    }

    #[test]
    fn other_io_errors_stay_io_and_travel_as_internal() {
        let err = CacheError::io("reading x", std::io::Error::from_raw_os_error(5));
        assert!(matches!(err, CacheError::Io { .. }));
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Internal);
    }

    #[test]
    fn a_server_not_found_is_not_found() {
        let err = CacheError::from(tonic::Status::not_found("object a/b/c not found"));
        assert!(err.is_not_found());
    }
}
