//! The domain model that the control plane replicates through Raft, and the identifier rules of
//! the compatibility specification (section 4.1).
//!
//! What: plain Rust types for applications, sessions, tasks, events, executors and nodes, with
//! the defaults and validation rules of the specification. Conversions to and from the wire
//! types in [`crate::v1`] live in `convert.rs`; nothing else in the workspace may define them.
//!
//! Why separate from the protobuf types: the replicated state needs exact, non-optional values
//! (resolved defaults, Unix-millisecond times, `u64` task ids), serde for Raft log entries and
//! snapshots, and `Eq` for tests, none of which prost types offer.
//!
//! Caveats:
//! - Every type is postcard-safe: plain derives only, no `skip_serializing_if`, no untagged or
//!   flattened enums, no self-describing values. postcard is not self-describing, so a field
//!   added, removed or reordered, or an enum variant inserted anywhere but at the end, changes
//!   the encoding; bump the log and snapshot format version when you do that.
//! - Times are Unix milliseconds (`i64`), except where a field name says otherwise.
//! - Opaque payloads are [`bytes::Bytes`], so cloning a task or session never copies its data.

mod event;
pub mod flame_home;
mod ids;
pub mod labels;
mod objects;
mod resources;
mod session;
mod state;

pub use event::Event;
pub use ids::{ExecutorId, NodeName, SessionId, TaskId};
pub use objects::{
    Application, ApplicationSchema, ApplicationSpec, CACHE_PEER_SERVER_NAME, CacheEndpoint,
    DEFAULT_DELAY_RELEASE_SECS, DEFAULT_MAX_INSTANCES, Environment, Executor, ExecutorSpec,
    MAX_CACHE_ADDR_LEN, MAX_DELAY_RELEASE_SECS, Node, NodeAddress, ObjectDrop,
};
pub use resources::{ResourceRequirement, parse_memory};
pub use session::{Session, SessionSpec, Task, TaskCounters};
pub use state::{ApplicationState, ExecutorState, NodeState, SessionState, Shim, TaskState};

use crate::error::FlameError;

/// Longest accepted application name, in characters (spec section 4.1).
pub const MAX_APPLICATION_NAME_LEN: usize = 253;

/// The most a node's allocatable cpu may exceed its capacity, as a multiple: an agent's
/// `cpu_overcommit` for cheap instances (issue 13). Memory and gpu are never overcommitted.
pub const MAX_CPU_OVERCOMMIT: u32 = 64;

/// Longest accepted session id, in characters.
///
/// Upstream does not validate session ids. 128 is the bound flamepy's Runner applies to
/// user-chosen ids, and generated ids (`<application>-<6 chars>`) stay far below it once the
/// application name is reasonable, so no upstream client is refused.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// Checks an application name against spec section 4.1: 1–253 characters from
/// `[A-Za-z0-9._-]`, no `..`, `/` or `\`, not starting with `.` or `-`.
///
/// The error is `InvalidArgument` with a message naming the rule that failed; RegisterApplication
/// reports it in-band as `Result{-1, message}`.
pub fn validate_application_name(name: &str) -> Result<(), FlameError> {
    let invalid = |why: &str| {
        Err(FlameError::InvalidArgument(format!(
            "invalid application name '{name}': {why}"
        )))
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.chars().count() > MAX_APPLICATION_NAME_LEN {
        return invalid("it is longer than 253 characters");
    }
    if name.contains("..") || name.contains('/') || name.contains('\\') {
        return invalid("it must not contain '..', '/' or '\\'");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return invalid("it must not start with '.' or '-'");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return invalid(&format!(
            "character {bad:?} is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')"
        ));
    }
    Ok(())
}

/// Checks a client-chosen session id: non-empty and at most [`MAX_SESSION_ID_LEN`] characters.
///
/// Any other character content is accepted, as upstream accepts it. The error is
/// `InvalidArgument` (the specification's recommended improvement for empty ids).
pub fn validate_session_id(id: &str) -> Result<(), FlameError> {
    if id.is_empty() {
        return Err(FlameError::InvalidArgument(
            "session_id must not be empty".to_owned(),
        ));
    }
    let len = id.chars().count();
    if len > MAX_SESSION_ID_LEN {
        return Err(FlameError::InvalidArgument(format!(
            "session_id is {len} characters long; the limit is {MAX_SESSION_ID_LEN}"
        )));
    }
    Ok(())
}

/// Parses a wire task id (a decimal string) into the per-session task number.
///
/// As upstream does, the text is parsed as a signed 64-bit integer; a parse failure is
/// `InvalidArgument` with the exact message `invalid task id` (spec section 4.1, checklist item
/// 28). A number that parses but is not positive can never name a task, because ids start at 1;
/// upstream would look it up and fail, so this returns `NotFound("task <id> not found")`, the
/// same answer a lookup of an unused positive id gives.
pub fn parse_task_id(text: &str) -> Result<u64, FlameError> {
    let number: i64 = text
        .parse()
        .map_err(|_| FlameError::InvalidArgument("invalid task id".to_owned()))?;
    u64::try_from(number)
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| FlameError::NotFound(format!("task {text} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_follow_section_4_1() {
        let long_ok = "a".repeat(253);
        for good in ["flmrun", "my-app_1.2", "A", "x.y", "a-", &long_ok] {
            assert_eq!(validate_application_name(good), Ok(()), "{good}");
        }
        let too_long = "a".repeat(254);
        for bad in [
            "", ".hidden", "-dash", "a..b", "a/b", "a\\b", "sp ace", "é", &too_long,
        ] {
            let err = validate_application_name(bad);
            assert!(
                matches!(err, Err(FlameError::InvalidArgument(_))),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn session_ids_must_be_non_empty_and_at_most_128_characters() {
        assert!(validate_session_id("flmrun-a1B2c3").is_ok());
        assert!(validate_session_id(&"s".repeat(128)).is_ok());
        assert!(matches!(
            validate_session_id(""),
            Err(FlameError::InvalidArgument(_))
        ));
        assert!(matches!(
            validate_session_id(&"s".repeat(129)),
            Err(FlameError::InvalidArgument(_))
        ));
    }

    #[test]
    fn task_ids_parse_as_positive_decimal_integers() {
        assert_eq!(parse_task_id("1"), Ok(1));
        assert_eq!(parse_task_id("+42"), Ok(42));
        assert_eq!(parse_task_id("9223372036854775807"), Ok(i64::MAX as u64));
    }

    #[test]
    fn unparsable_task_id_is_invalid_argument_with_exact_text() {
        for bad in ["", "abc", "1.0", " 1", "9223372036854775808", "0x10"] {
            assert_eq!(
                parse_task_id(bad),
                Err(FlameError::InvalidArgument("invalid task id".into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn non_positive_task_id_is_not_found() {
        assert_eq!(
            parse_task_id("0"),
            Err(FlameError::NotFound("task 0 not found".into()))
        );
        assert!(matches!(parse_task_id("-5"), Err(FlameError::NotFound(_))));
    }
}
