//! [`FlameError`]: the domain error of every Flame component, by meaning, and its mapping to and
//! from `tonic::Status`.
//!
//! Why: the control plane, node agent and SDKs must agree on one error vocabulary, and the gRPC
//! codes must be those of the compatibility specification (section 4.3): not found → NOT_FOUND,
//! exists → ALREADY_EXISTS, invalid argument or invalid state → INVALID_ARGUMENT, everything else
//! → INTERNAL. Flame adds codes for conditions upstream does not have (leadership, overload,
//! cancellation, deadlines).
//!
//! Mapping rules:
//! - The status message is exactly the error's human text (`Display`), with no prefix, because
//!   clients and tests search it for substrings such as `not found` or `spec mismatch`.
//! - Every status built here carries the ASCII metadata key [`ERROR_KIND_KEY`] naming the
//!   variant, so the reverse mapping reconstructs the exact variant (for example
//!   [`FlameError::InvalidState`], which shares INVALID_ARGUMENT with
//!   [`FlameError::InvalidArgument`]). Statuses without it (from tonic itself or a foreign server)
//!   are mapped by code alone.
//! - [`FlameError::NotLeader`] travels as UNAVAILABLE with [`LEADER_ID_KEY`] and
//!   [`LEADER_ADDR_KEY`] when the leader is known, so SDKs can follow the hint.
//! - [`FlameError::TooLarge`] travels as RESOURCE_EXHAUSTED, the code gRPC itself uses for an
//!   oversized message, so "too large" looks the same whether our check or the transport limit
//!   fired, and is distinct from malformed input. Its size, limit and subject travel in
//!   [`SIZE_KEY`], [`LIMIT_KEY`] and [`WHAT_KEY`].
//!
//! Caveat: metadata values must be visible ASCII. A leader address or a `what` that is not is
//! left out of the metadata; the reverse mapping then yields `NotLeader { leader: None }` or a
//! `TooLarge` whose `what` is the status message.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Metadata key naming the [`FlameError`] variant (`not-found`, `invalid-state`, ...).
pub const ERROR_KIND_KEY: &str = "flame-error";
/// Metadata key carrying the current leader's Raft node id on a NotLeader status.
pub const LEADER_ID_KEY: &str = "flame-leader-id";
/// Metadata key carrying the current leader's client-API address on a NotLeader status.
pub const LEADER_ADDR_KEY: &str = "flame-leader-addr";
/// Metadata key carrying the offending size in bytes on a TooLarge status.
pub const SIZE_KEY: &str = "flame-size";
/// Metadata key carrying the limit in bytes on a TooLarge status.
pub const LIMIT_KEY: &str = "flame-limit";
/// Metadata key carrying what was too large (for example `task input`) on a TooLarge status.
pub const WHAT_KEY: &str = "flame-what";

/// Shorthand for results whose error is a [`FlameError`].
pub type FlameResult<T> = Result<T, FlameError>;

/// Where the current Raft leader can be reached, as far as the answering member knows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderHint {
    /// The leader's Raft node id.
    pub id: u64,
    /// The leader's client-API (Frontend) address, for example `http://10.0.0.3:8080`.
    pub addr: String,
}

/// A Flame failure, classified by what the caller can do about it ([`FlameError::is_retryable`],
/// [`FlameError::is_server_fault`]).
///
/// Serialisable, because replicated answers carry it: the variants are encoded by position
/// (postcard), so only ever append new ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum FlameError {
    /// The named object does not exist. gRPC NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// An object with this identity already exists. gRPC ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed or refers to nonsense. gRPC INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well formed but the object's state forbids it (closed session, spec
    /// mismatch). gRPC INVALID_ARGUMENT, as the specification requires (section 4.3).
    #[error("{0}")]
    InvalidState(String),
    /// This member is not the Raft leader; retry against the hinted leader. gRPC UNAVAILABLE.
    #[error("{}", not_leader_text(.leader.as_ref()))]
    NotLeader {
        /// The current leader, when this member knows it.
        leader: Option<LeaderHint>,
    },
    /// The service cannot answer now (no quorum, shutting down, connection lost); retrying later
    /// may succeed. gRPC UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    /// A payload exceeds a configured limit. gRPC RESOURCE_EXHAUSTED.
    #[error("{what} is too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large, for example `task input` or `common_data`.
        what: String,
        /// The offending size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A bug or an unexpected failure; also upstream's code for "Cannot close session with
    /// running tasks". gRPC INTERNAL.
    #[error("{0}")]
    Internal(String),
    /// The operation was cancelled, usually by the caller. gRPC CANCELLED.
    #[error("{0}")]
    Cancelled(String),
    /// The operation did not finish before its deadline. gRPC DEADLINE_EXCEEDED.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A resource the server needs is used up, for example a full disk. gRPC RESOURCE_EXHAUSTED.
    /// Retrying after the operator frees space may succeed.
    #[error("{0}")]
    Exhausted(String),
}

fn not_leader_text(leader: Option<&LeaderHint>) -> String {
    match leader {
        Some(hint) => format!(
            "not the leader; the leader is node {} at {}",
            hint.id, hint.addr
        ),
        None => "not the leader; the leader is unknown".to_owned(),
    }
}

impl FlameError {
    /// Whether the same request, sent again unchanged (to another member or after a pause),
    /// may succeed without anyone acting: no leader here or now (`NotLeader`, `Unavailable`),
    /// or a member's own deadline on a write it held through a leader change and did not apply
    /// (`DeadlineExceeded`). Everything else needs a different request or an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            FlameError::NotLeader { .. }
            | FlameError::Unavailable(_)
            | FlameError::DeadlineExceeded(_) => true,
            FlameError::NotFound(_)
            | FlameError::AlreadyExists(_)
            | FlameError::InvalidArgument(_)
            | FlameError::InvalidState(_)
            | FlameError::TooLarge { .. }
            | FlameError::Internal(_)
            | FlameError::Cancelled(_)
            | FlameError::Exhausted(_) => false,
        }
    }

    /// Whether the failure is the server's trouble rather than the caller's request: a bug
    /// (`Internal`), no quorum or a shutdown (`Unavailable`), a full disk (`Exhausted`), or a
    /// write that could not commit in time (`DeadlineExceeded`). Servers log these at `warn`
    /// and the rest (including the routine `NotLeader` redirect) at `debug`.
    pub fn is_server_fault(&self) -> bool {
        match self {
            FlameError::Internal(_)
            | FlameError::Unavailable(_)
            | FlameError::Exhausted(_)
            | FlameError::DeadlineExceeded(_) => true,
            FlameError::NotFound(_)
            | FlameError::AlreadyExists(_)
            | FlameError::InvalidArgument(_)
            | FlameError::InvalidState(_)
            | FlameError::NotLeader { .. }
            | FlameError::TooLarge { .. }
            | FlameError::Cancelled(_) => false,
        }
    }

    /// The gRPC code this error travels as.
    pub fn code(&self) -> Code {
        match self {
            FlameError::NotFound(_) => Code::NotFound,
            FlameError::AlreadyExists(_) => Code::AlreadyExists,
            FlameError::InvalidArgument(_) | FlameError::InvalidState(_) => Code::InvalidArgument,
            FlameError::NotLeader { .. } | FlameError::Unavailable(_) => Code::Unavailable,
            FlameError::TooLarge { .. } | FlameError::Exhausted(_) => Code::ResourceExhausted,
            FlameError::Internal(_) => Code::Internal,
            FlameError::Cancelled(_) => Code::Cancelled,
            FlameError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        }
    }

    /// The value of [`ERROR_KIND_KEY`] for this variant.
    pub fn kind(&self) -> &'static str {
        match self {
            FlameError::NotFound(_) => "not-found",
            FlameError::AlreadyExists(_) => "already-exists",
            FlameError::InvalidArgument(_) => "invalid-argument",
            FlameError::InvalidState(_) => "invalid-state",
            FlameError::NotLeader { .. } => "not-leader",
            FlameError::Unavailable(_) => "unavailable",
            FlameError::TooLarge { .. } => "too-large",
            FlameError::Exhausted(_) => "exhausted",
            FlameError::Internal(_) => "internal",
            FlameError::Cancelled(_) => "cancelled",
            FlameError::DeadlineExceeded(_) => "deadline-exceeded",
        }
    }
}

/// Inserts `value` under `key` when it is valid ASCII metadata; otherwise leaves it out.
fn insert_ascii(md: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        md.insert(key, v);
    }
}

impl From<FlameError> for Status {
    fn from(err: FlameError) -> Self {
        let mut md = MetadataMap::new();
        md.insert(ERROR_KIND_KEY, MetadataValue::from_static(err.kind()));
        match &err {
            FlameError::NotLeader { leader: Some(hint) } => {
                md.insert(LEADER_ID_KEY, MetadataValue::from(hint.id));
                insert_ascii(&mut md, LEADER_ADDR_KEY, &hint.addr);
            }
            FlameError::TooLarge { what, size, limit } => {
                insert_ascii(&mut md, SIZE_KEY, &size.to_string());
                insert_ascii(&mut md, LIMIT_KEY, &limit.to_string());
                insert_ascii(&mut md, WHAT_KEY, what);
            }
            _ => {}
        }
        Status::with_metadata(err.code(), err.to_string(), md)
    }
}

/// Reads an ASCII metadata value as a string.
fn ascii<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok())
}

/// Reconstructs the leader hint from status metadata; both keys must be present and valid.
fn leader_hint(md: &MetadataMap) -> Option<LeaderHint> {
    let id = ascii(md, LEADER_ID_KEY)?.parse().ok()?;
    let addr = ascii(md, LEADER_ADDR_KEY)?.to_owned();
    Some(LeaderHint { id, addr })
}

/// Reconstructs a TooLarge error from status metadata, defaulting what metadata lacks.
fn too_large(status: &Status) -> FlameError {
    let md = status.metadata();
    let number = |key| ascii(md, key).and_then(|v| v.parse().ok()).unwrap_or(0);
    FlameError::TooLarge {
        what: ascii(md, WHAT_KEY).unwrap_or(status.message()).to_owned(),
        size: number(SIZE_KEY),
        limit: number(LIMIT_KEY),
    }
}

/// An error followed by its sources, `top: cause: root cause`. Transport errors (tonic's
/// "transport error", hyper's "tcp connect error") say little at the top; the reason, such as
/// a refused connection or an untrusted certificate, is further down.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a Flame server made `status` from a [`FlameError`] (it carries [`ERROR_KIND_KEY`]),
/// as opposed to tonic or hyper making it for a failed call (a broken connection, a cancelled
/// or timed-out request), where the server's answer, if any, is unknown.
pub fn is_flame_answer(status: &Status) -> bool {
    status.metadata().get(ERROR_KIND_KEY).is_some()
}

/// Maps a status carrying [`ERROR_KIND_KEY`]; `None` for an unknown or absent kind.
fn from_kind(status: &Status) -> Option<FlameError> {
    let msg = status.message().to_owned();
    let err = match ascii(status.metadata(), ERROR_KIND_KEY)? {
        "not-found" => FlameError::NotFound(msg),
        "already-exists" => FlameError::AlreadyExists(msg),
        "invalid-argument" => FlameError::InvalidArgument(msg),
        "invalid-state" => FlameError::InvalidState(msg),
        "not-leader" => FlameError::NotLeader {
            leader: leader_hint(status.metadata()),
        },
        "unavailable" => FlameError::Unavailable(msg),
        "too-large" => too_large(status),
        "exhausted" => FlameError::Exhausted(msg),
        "internal" => FlameError::Internal(msg),
        "cancelled" => FlameError::Cancelled(msg),
        "deadline-exceeded" => FlameError::DeadlineExceeded(msg),
        _ => return None,
    };
    Some(err)
}

/// Maps a status by its code alone (tonic's own statuses, foreign servers such as upstream).
///
/// INVALID_ARGUMENT, OUT_OF_RANGE (tonic's "message too large") and RESOURCE_EXHAUSTED without
/// Flame metadata become `InvalidArgument`: the request itself is at fault. FAILED_PRECONDITION
/// becomes `InvalidState`. UNAVAILABLE with a leader hint becomes `NotLeader`. Codes with no
/// Flame meaning become `Internal`, with the code's name prefixed so it is not lost.
fn from_code(status: &Status) -> FlameError {
    let msg = status.message().to_owned();
    match status.code() {
        Code::NotFound => FlameError::NotFound(msg),
        Code::AlreadyExists => FlameError::AlreadyExists(msg),
        Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => {
            FlameError::InvalidArgument(msg)
        }
        Code::FailedPrecondition => FlameError::InvalidState(msg),
        Code::Unavailable => match leader_hint(status.metadata()) {
            Some(hint) => FlameError::NotLeader { leader: Some(hint) },
            None => FlameError::Unavailable(msg),
        },
        Code::Cancelled => FlameError::Cancelled(msg),
        Code::DeadlineExceeded => FlameError::DeadlineExceeded(msg),
        Code::Internal | Code::Unknown => FlameError::Internal(msg),
        other => FlameError::Internal(format!("{other:?}: {msg}")),
    }
}

impl From<Status> for FlameError {
    fn from(status: Status) -> Self {
        from_kind(&status).unwrap_or_else(|| from_code(&status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant's classification, in one table: (error, retryable, server fault). A new
    /// variant fails to compile in the two methods until it is classified, and fails here
    /// until it is listed.
    #[test]
    fn every_variant_is_classified_as_retryable_and_server_fault_as_the_table_says() {
        let hint = LeaderHint {
            id: 2,
            addr: "http://b:8080".into(),
        };
        let table = [
            (FlameError::NotFound("x".into()), false, false),
            (FlameError::AlreadyExists("x".into()), false, false),
            (FlameError::InvalidArgument("x".into()), false, false),
            (FlameError::InvalidState("x".into()), false, false),
            (FlameError::NotLeader { leader: None }, true, false),
            (FlameError::NotLeader { leader: Some(hint) }, true, false),
            (FlameError::Unavailable("no quorum".into()), true, true),
            (
                FlameError::TooLarge {
                    what: "task input".into(),
                    size: 2,
                    limit: 1,
                },
                false,
                false,
            ),
            (FlameError::Internal("bug".into()), false, true),
            (FlameError::Cancelled("client left".into()), false, false),
            (FlameError::DeadlineExceeded("held".into()), true, true),
            (FlameError::Exhausted("disk full".into()), false, true),
        ];
        let kinds: std::collections::BTreeSet<&str> =
            table.iter().map(|(e, ..)| e.kind()).collect();
        let all: std::collections::BTreeSet<&str> =
            every_variant().iter().map(FlameError::kind).collect();
        assert_eq!(kinds, all, "the table lists every variant");
        for (error, retryable, fault) in table {
            assert_eq!(error.is_retryable(), retryable, "retryable: {error:?}");
            assert_eq!(error.is_server_fault(), fault, "server fault: {error:?}");
        }
    }

    /// Replicated answers store errors with postcard: every variant comes back exactly, and the
    /// variant indices (the stored format) stay put.
    #[test]
    fn every_variant_round_trips_through_postcard_at_its_stored_index() {
        for error in every_variant() {
            let bytes = postcard::to_stdvec(&error).expect("encode");
            assert_eq!(
                postcard::from_bytes::<FlameError>(&bytes).expect("decode"),
                error
            );
        }
        let index = |e: FlameError| postcard::to_stdvec(&e).expect("encode")[0];
        assert_eq!(index(FlameError::NotFound(String::new())), 0);
        assert_eq!(index(FlameError::NotLeader { leader: None }), 4);
        assert_eq!(index(FlameError::Exhausted(String::new())), 10);
    }

    fn every_variant() -> Vec<FlameError> {
        vec![
            FlameError::NotFound("session s1 not found".into()),
            FlameError::AlreadyExists("session s1 already exists".into()),
            FlameError::InvalidArgument("invalid task id".into()),
            FlameError::InvalidState("session s1 is not open".into()),
            FlameError::NotLeader {
                leader: Some(LeaderHint {
                    id: 3,
                    addr: "http://10.0.0.3:8080".into(),
                }),
            },
            FlameError::NotLeader { leader: None },
            FlameError::Unavailable("no quorum".into()),
            FlameError::TooLarge {
                what: "task input".into(),
                size: 5_000_000,
                limit: 4_194_304,
            },
            FlameError::Internal("Cannot close session with running tasks".into()),
            FlameError::Cancelled("client went away".into()),
            FlameError::DeadlineExceeded("bind timed out".into()),
            FlameError::Exhausted("no space left on the cache's disk".into()),
        ]
    }

    #[test]
    fn every_variant_survives_a_status_round_trip() {
        for err in every_variant() {
            let back = FlameError::from(Status::from(err.clone()));
            assert_eq!(back, err);
        }
    }

    #[test]
    fn status_codes_follow_the_specification() {
        let codes: Vec<Code> = every_variant()
            .into_iter()
            .map(|e| Status::from(e).code())
            .collect();
        use Code::*;
        let expected = [
            NotFound,
            AlreadyExists,
            InvalidArgument,
            InvalidArgument,
            Unavailable,
            Unavailable,
            Unavailable,
            ResourceExhausted,
            Internal,
            Cancelled,
            DeadlineExceeded,
            ResourceExhausted,
        ];
        assert_eq!(codes, expected);
    }

    #[test]
    fn status_message_is_the_callers_text_without_prefix() {
        let cases = [
            FlameError::NotFound("session s1 not found".into()),
            FlameError::InvalidState(
                "session s1 spec mismatch: max_instances differs (expected 1, got 2)".into(),
            ),
            FlameError::Internal("Cannot close session with running tasks".into()),
        ];
        for err in cases {
            let text = err.to_string();
            assert_eq!(Status::from(err).message(), text);
        }
    }

    #[test]
    fn not_leader_carries_the_hint_in_ascii_metadata() {
        let status = Status::from(FlameError::NotLeader {
            leader: Some(LeaderHint {
                id: 7,
                addr: "http://node7:8080".into(),
            }),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(ascii(status.metadata(), LEADER_ID_KEY), Some("7"));
        assert_eq!(
            ascii(status.metadata(), LEADER_ADDR_KEY),
            Some("http://node7:8080")
        );
        assert!(status.message().contains("node 7 at http://node7:8080"));
    }

    #[test]
    fn leader_hint_without_kind_marker_still_yields_not_leader() {
        let mut md = MetadataMap::new();
        md.insert(LEADER_ID_KEY, MetadataValue::from(2u64));
        md.insert(LEADER_ADDR_KEY, MetadataValue::from_static("http://b:8080"));
        let status = Status::with_metadata(Code::Unavailable, "go away", md);
        let expected = FlameError::NotLeader {
            leader: Some(LeaderHint {
                id: 2,
                addr: "http://b:8080".into(),
            }),
        };
        assert_eq!(FlameError::from(status), expected);
    }

    #[test]
    fn non_ascii_leader_address_degrades_to_unknown_leader() {
        let status = Status::from(FlameError::NotLeader {
            leader: Some(LeaderHint {
                id: 1,
                addr: "http://nœud:8080".into(),
            }),
        });
        assert_eq!(
            FlameError::from(status),
            FlameError::NotLeader { leader: None }
        );
    }

    #[test]
    fn too_large_message_names_size_and_limit() {
        let err = FlameError::TooLarge {
            what: "common_data".into(),
            size: 10,
            limit: 4,
        };
        assert_eq!(
            err.to_string(),
            "common_data is too large: 10 bytes exceeds the limit of 4 bytes"
        );
    }

    #[test]
    fn foreign_statuses_map_by_code() {
        let cases = [
            (Code::NotFound, FlameError::NotFound("x".into())),
            (Code::AlreadyExists, FlameError::AlreadyExists("x".into())),
            (
                Code::InvalidArgument,
                FlameError::InvalidArgument("x".into()),
            ),
            (Code::OutOfRange, FlameError::InvalidArgument("x".into())),
            (
                Code::ResourceExhausted,
                FlameError::InvalidArgument("x".into()),
            ),
            (
                Code::FailedPrecondition,
                FlameError::InvalidState("x".into()),
            ),
            (Code::Unavailable, FlameError::Unavailable("x".into())),
            (Code::Internal, FlameError::Internal("x".into())),
            (Code::Unknown, FlameError::Internal("x".into())),
            (Code::Cancelled, FlameError::Cancelled("x".into())),
            (
                Code::DeadlineExceeded,
                FlameError::DeadlineExceeded("x".into()),
            ),
            (
                Code::Unimplemented,
                FlameError::Internal("Unimplemented: x".into()),
            ),
        ];
        for (code, expected) in cases {
            assert_eq!(FlameError::from(Status::new(code, "x")), expected);
        }
    }

    #[test]
    fn unknown_kind_marker_falls_back_to_the_code() {
        let mut md = MetadataMap::new();
        md.insert(
            ERROR_KIND_KEY,
            MetadataValue::from_static("from-the-future"),
        );
        let status = Status::with_metadata(Code::NotFound, "gone", md);
        assert_eq!(
            FlameError::from(status),
            FlameError::NotFound("gone".into())
        );
    }
}
