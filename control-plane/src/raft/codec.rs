//! Payload encoding and error mapping shared by the client and server halves of the transport.
//!
//! openraft's request, response and error types travel postcard-encoded inside the
//! `flame.raft.v1` envelope. This module owns that encoding, the [`TransportError`] raised when a
//! payload cannot be encoded or decoded, and the translation of a failed gRPC call into
//! openraft's [`RPCError`] (unreachable, timeout, network or remote).
//!
//! Caveat: postcard is not self-describing; both ends must run the same openraft version and
//! type configuration. The `flame.raft.v1` package version is the place to bump when they change.

use openraft::error::{NetworkError, PayloadTooLarge, RPCError, Timeout, Unreachable};
use openraft::{Node, RPCTypes};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use thiserror::Error;
use tonic::{Code, Status};

/// Errors of the transport itself (as opposed to openraft's verdicts).
#[derive(Debug, Error)]
pub enum TransportError {
    /// A value could not be postcard-encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },
    /// Bytes from a peer could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },
    /// An encoded request exceeds the configured message-size limit.
    #[error("{what} of {size} bytes exceeds the {limit}-byte message limit")]
    TooLarge {
        /// What was encoded.
        what: &'static str,
        /// Its encoded size.
        size: usize,
        /// `max_message_bytes`.
        limit: usize,
    },
    /// A request came from a member of another cluster.
    #[error(
        "cluster id mismatch: member {from} sent a request for cluster {got:?}, \
         this member belongs to cluster {expected:?}"
    )]
    ClusterMismatch {
        /// The sender's member id.
        from: u64,
        /// The cluster id the request carried.
        got: String,
        /// This member's cluster id.
        expected: String,
    },
    /// A peer's address is not a valid URI.
    #[error("invalid address {addr:?} for member {target}: {source}")]
    BadAddress {
        /// The member.
        target: u64,
        /// The address as configured.
        addr: String,
        /// tonic's parse error.
        source: tonic::transport::Error,
    },
    /// A reply carried neither a result nor an error.
    #[error("empty reply from member {target} to {action}")]
    EmptyReply {
        /// The member that replied.
        target: u64,
        /// The call.
        action: RPCTypes,
    },
}

impl From<TransportError> for Status {
    fn from(e: TransportError) -> Status {
        let code = match &e {
            TransportError::Encode { .. } => Code::Internal,
            TransportError::TooLarge { .. } => Code::OutOfRange,
            TransportError::Decode { .. } | TransportError::BadAddress { .. } => {
                Code::InvalidArgument
            }
            TransportError::ClusterMismatch { .. } => Code::FailedPrecondition,
            TransportError::EmptyReply { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// postcard-encodes `value`, naming it in the error.
pub(crate) fn encode<T: Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, TransportError> {
    postcard::to_allocvec(value).map_err(|source| TransportError::Encode { what, source })
}

/// Decodes postcard `bytes`, naming the expected type in the error.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, TransportError> {
    postcard::from_bytes(bytes).map_err(|source| TransportError::Decode { what, source })
}

/// Checks a request's cluster id against this member's.
pub(crate) fn check_cluster(expected: &str, got: &str, from: u64) -> Result<(), TransportError> {
    if expected == got {
        return Ok(());
    }
    Err(TransportError::ClusterMismatch {
        from,
        got: got.to_owned(),
        expected: expected.to_owned(),
    })
}

/// Who a failed call was between, for building openraft errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSite {
    /// The call.
    pub action: RPCTypes,
    /// The local member.
    pub id: u64,
    /// The peer.
    pub target: u64,
    /// The deadline the call had.
    pub deadline: Duration,
    /// Log entries the call carries (append-entries only), for openraft's batch-size hint.
    pub entries: u64,
}

impl CallSite {
    /// openraft's timeout error for this call.
    pub fn timeout<N: Node, E: std::error::Error>(&self) -> RPCError<u64, N, E> {
        RPCError::Timeout(Timeout {
            action: self.action,
            id: self.id,
            target: self.target,
            timeout: self.deadline,
        })
    }

    /// Classifies a failed gRPC call: unavailable peers are unreachable (openraft backs off),
    /// expired deadlines are timeouts, an append batch over a message-size limit asks openraft
    /// for half as many entries, everything else is a network error.
    pub fn status<N: Node, E: std::error::Error>(&self, status: &Status) -> RPCError<u64, N, E> {
        match status.code() {
            Code::Unavailable => RPCError::Unreachable(Unreachable::new(status)),
            Code::DeadlineExceeded | Code::Cancelled => self.timeout(),
            Code::OutOfRange if self.entries > 1 && status.message().contains("too large") => {
                self.too_large(self.entries / 2, status)
            }
            _ => RPCError::Network(NetworkError::new(status)),
        }
    }

    /// openraft's request to resend at most `entries_hint` entries per call.
    pub fn too_large<N: Node, E: std::error::Error>(
        &self,
        entries_hint: u64,
        cause: &(impl std::error::Error + 'static),
    ) -> RPCError<u64, N, E> {
        let hint = entries_hint.clamp(1, self.entries.saturating_sub(1).max(1));
        RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint).with_source_error(cause))
    }

    /// A transport error on this call, as an openraft network error.
    pub fn network<N: Node, E: std::error::Error>(
        &self,
        e: &TransportError,
    ) -> RPCError<u64, N, E> {
        match e {
            TransportError::BadAddress { .. } => RPCError::Unreachable(Unreachable::new(e)),
            _ => RPCError::Network(NetworkError::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
    use openraft::{SnapshotSegmentId, StorageError, StorageIOError};

    #[test]
    fn remote_errors_round_trip() {
        let fatal: RaftError<u64> = RaftError::Fatal(Fatal::StorageError(StorageError::IO {
            source: StorageIOError::write_vote(&std::io::Error::other("disk gone")),
        }));
        let bytes = encode("error", &fatal).expect("encode");
        let back: RaftError<u64> = decode("error", &bytes).expect("decode");
        assert_eq!(back, fatal);

        let seg = |offset| SnapshotSegmentId {
            id: "s1".into(),
            offset,
        };
        let mismatch: RaftError<u64, InstallSnapshotError> =
            RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: seg(0),
                got: seg(4096),
            }));
        let bytes = encode("error", &mismatch).expect("encode");
        let back: RaftError<u64, InstallSnapshotError> = decode("error", &bytes).expect("decode");
        assert_eq!(back, mismatch);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = decode::<RaftError<u64>>("RaftError", &[0xff; 7]).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot decode RaftError"),
            "{err}"
        );
        assert_eq!(Status::from(err).code(), Code::InvalidArgument);
    }

    #[test]
    fn mismatch_names_both_ids() {
        let err = check_cluster("ours", "theirs", 7).unwrap_err();
        let status = Status::from(err);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("\"ours\""));
        assert!(status.message().contains("\"theirs\""));
    }
}
