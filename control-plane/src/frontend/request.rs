//! Request checks every Frontend and Tasks RPC runs on the member that receives it, before
//! anything is proposed, and the unpacking of replicated [`Outcome`]s into results.
//!
//! What: session-id, payload-size, request-id and spec checks with the specification's codes
//! and texts (section 4.1 for identifiers, 5.1 and 5.3 for specs), and one extractor per
//! outcome kind.
//!
//! Why on the receiving member: a malformed request should cost nothing cluster-wide (no
//! forward, no log entry), and the client sees the same error from every member. The state
//! machine checks again on apply, so a command built elsewhere cannot store nonsense.
//!
//! Caveat: sizes are checked after tonic decoded the message, so a message far beyond the
//! decoding limit of the server is refused by tonic itself (OUT_OF_RANGE) before these checks
//! run; see [`crate::member::limits::decoding_limit`].

use crate::member::limits::Limits;
use crate::state::{Outcome, Response};
use flame_proto::error::FlameError;
use flame_proto::model::{
    self, MAX_APPLICATION_NAME_LEN, validate_application_name, validate_session_id,
};
use flame_proto::v1;
use tonic::metadata::MetadataMap;

/// gRPC metadata key of a client's idempotency key for CreateTask.
pub const REQUEST_ID_KEY: &str = "flame-request-id";

/// Longest accepted client request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// `Ok` when `size` is within the payload limit, else `TooLarge` naming `what` and the limit.
pub fn check_payload(what: &str, size: usize, limits: &Limits) -> Result<(), FlameError> {
    if size > limits.max_payload_bytes {
        return Err(FlameError::TooLarge {
            what: what.to_owned(),
            size,
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

/// The session id of a request: non-empty and at most 128 characters, else `InvalidArgument`.
pub fn session_id(id: &str) -> Result<&str, FlameError> {
    validate_session_id(id)?;
    Ok(id)
}

/// The per-session task number of a wire task id: `InvalidArgument("invalid task id")` when it
/// does not parse, `NotFound` when it is not positive (spec section 4.1).
pub fn task_id(text: &str) -> Result<u64, FlameError> {
    model::parse_task_id(text)
}

/// A client request id as sent: empty means none; otherwise at most [`MAX_REQUEST_ID_LEN`]
/// bytes.
pub fn request_id(id: String) -> Result<Option<String>, FlameError> {
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_REQUEST_ID_LEN {
        return Err(FlameError::InvalidArgument(format!(
            "request id is {} bytes long; the limit is {MAX_REQUEST_ID_LEN}",
            id.len()
        )));
    }
    Ok(Some(id))
}

/// The request id in the [`REQUEST_ID_KEY`] metadata of a request, if any; a value that is
/// not visible ASCII, or too long, is `InvalidArgument`.
pub fn request_id_from_metadata(md: &MetadataMap) -> Result<Option<String>, FlameError> {
    let Some(value) = md.get(REQUEST_ID_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        FlameError::InvalidArgument(format!(
            "metadata {REQUEST_ID_KEY} must be visible ASCII text"
        ))
    })?;
    request_id(text.to_owned())
}

/// The model spec of RegisterApplication and UpdateApplication: a missing spec, an unknown
/// shim, a bad schema, a relative working directory, a `delay_release` outside 0 to
/// [`model::MAX_DELAY_RELEASE_SECS`] or a malformed `flame.*` label
/// ([`model::labels::check`]) is `InvalidArgument` (reported as a status, not in-band).
///
/// The last two are checked here only, not again on apply, so log entries written before
/// members made these checks replay exactly as they were first applied (the scheduler clamps a
/// negative `delay_release` to 0, and agents refuse bad labels at bind).
pub fn application_spec(
    spec: Option<v1::ApplicationSpec>,
) -> Result<model::ApplicationSpec, FlameError> {
    let spec = spec.ok_or_else(|| missing("application"))?;
    let spec = model::ApplicationSpec::try_from(spec)?;
    if !(0..=model::MAX_DELAY_RELEASE_SECS).contains(&spec.delay_release_secs) {
        return Err(FlameError::InvalidArgument(format!(
            "delay_release must be between 0 and {} seconds (365 days), got {}",
            model::MAX_DELAY_RELEASE_SECS,
            spec.delay_release_secs
        )));
    }
    model::labels::check(&spec.labels)?;
    Ok(spec)
}

/// `text` as error messages show it: at most [`MAX_APPLICATION_NAME_LEN`] characters, so a
/// status never carries a megabyte-long name back in its headers.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_APPLICATION_NAME_LEN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// `NotFound("application <name> not found")`, with the name [`shown`].
pub fn application_not_found(name: &str) -> FlameError {
    FlameError::NotFound(format!("application {} not found", shown(name)))
}

/// The model spec of CreateSession and OpenSession: `common_data` within the payload limit and
/// `resreq` resolved against the cluster default (spec section 5.3). An application name that
/// breaks the naming rules names no application: NOT_FOUND, as for any unknown one.
pub fn session_spec(
    spec: v1::SessionSpec,
    limits: &Limits,
) -> Result<model::SessionSpec, FlameError> {
    if validate_application_name(&spec.application).is_err() {
        return Err(application_not_found(&spec.application));
    }
    if let Some(data) = &spec.common_data {
        check_payload("common_data", data.len(), limits)?;
    }
    model::SessionSpec::from_v1(spec, Some(&limits.default_resreq))
}

/// `InvalidArgument("missing <field>")` for an absent required sub-message.
pub fn missing(field: &str) -> FlameError {
    FlameError::InvalidArgument(format!("missing {field}"))
}

fn unexpected(expected: &str, outcome: &Outcome) -> FlameError {
    FlameError::Internal(format!(
        "the state machine answered with {outcome:?} where {expected} was expected"
    ))
}

/// The application of a RegisterApplication or UpdateApplication response.
pub fn application_outcome(response: Response) -> Result<model::Application, FlameError> {
    match response.outcome {
        Outcome::Application(result) => result,
        other => Err(unexpected("an application", &other)),
    }
}

/// The result of an UnregisterApplication response.
pub fn done_outcome(response: Response) -> Result<(), FlameError> {
    match response.outcome {
        Outcome::Done(result) => result,
        other => Err(unexpected("a done", &other)),
    }
}

/// The session of a CreateSession, OpenSession, CloseSession or DeleteSession response.
pub fn session_outcome(response: Response) -> Result<model::Session, FlameError> {
    match response.outcome {
        Outcome::Session(result) => result,
        other => Err(unexpected("a session", &other)),
    }
}

/// The tasks of a CreateTasks response, one per submission.
pub fn tasks_outcome(response: Response) -> Result<Vec<model::Task>, FlameError> {
    match response.outcome {
        Outcome::Tasks(result) => result,
        other => Err(unexpected("tasks", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn limits() -> Limits {
        Limits {
            max_payload_bytes: 8,
            default_resreq: model::ResourceRequirement {
                cpu: 2,
                memory: 512,
                gpu: 0,
            },
            dispatch: Default::default(),
            max_watches: 8,
        }
    }

    #[test]
    fn payload_over_the_limit_is_too_large_and_names_the_limit() {
        assert_eq!(check_payload("task input", 8, &limits()), Ok(()));
        let err = check_payload("task input", 9, &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task input is too large: 9 bytes exceeds the limit of 8 bytes"
        );
    }

    #[test]
    fn session_spec_resolves_the_cluster_default_and_checks_common_data() {
        let spec = v1::SessionSpec {
            application: "a".into(),
            common_data: Some(vec![0; 8]),
            ..v1::SessionSpec::default()
        };
        let resolved = session_spec(spec.clone(), &limits()).expect("within limit");
        assert_eq!(resolved.resreq, limits().default_resreq);
        let big = v1::SessionSpec {
            common_data: Some(vec![0; 9]),
            ..spec
        };
        assert!(matches!(
            session_spec(big, &limits()),
            Err(FlameError::TooLarge { what, .. }) if what == "common_data"
        ));
    }

    #[test]
    fn request_ids_come_from_ascii_metadata_and_are_bounded() {
        let mut md = MetadataMap::new();
        assert_eq!(request_id_from_metadata(&md), Ok(None));
        md.insert(REQUEST_ID_KEY, MetadataValue::from_static("r-1"));
        assert_eq!(request_id_from_metadata(&md), Ok(Some("r-1".into())));
        md.insert(REQUEST_ID_KEY, MetadataValue::from_static(""));
        assert_eq!(request_id_from_metadata(&md), Ok(None));
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(matches!(
            request_id(long),
            Err(FlameError::InvalidArgument(_))
        ));
    }

    #[test]
    fn missing_or_invalid_application_specs_are_invalid_argument() {
        assert_eq!(
            application_spec(None),
            Err(FlameError::InvalidArgument("missing application".into()))
        );
        let relative = v1::ApplicationSpec {
            working_directory: Some("rel".into()),
            ..v1::ApplicationSpec::default()
        };
        let err = application_spec(Some(relative)).unwrap_err();
        assert!(err.to_string().contains("must be an absolute path"));
        let bad_shim = v1::ApplicationSpec {
            shim: 7,
            ..v1::ApplicationSpec::default()
        };
        assert!(matches!(
            application_spec(Some(bad_shim)),
            Err(FlameError::InvalidArgument(_))
        ));
    }

    #[test]
    fn negative_or_absurd_delay_release_and_bad_flame_labels_are_invalid_argument() {
        let with = |delay: Option<i64>, labels: &[&str]| v1::ApplicationSpec {
            delay_release: delay,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            ..v1::ApplicationSpec::default()
        };
        let negative = application_spec(Some(with(Some(-1), &[]))).unwrap_err();
        assert_eq!(
            negative.to_string(),
            "delay_release must be between 0 and 31536000 seconds (365 days), got -1"
        );
        let absurd = application_spec(Some(with(Some(i64::MAX), &[]))).unwrap_err();
        assert!(matches!(absurd, FlameError::InvalidArgument(_)), "{absurd}");
        for ok in [0, 60, model::MAX_DELAY_RELEASE_SECS] {
            assert!(application_spec(Some(with(Some(ok), &[]))).is_ok(), "{ok}");
        }
        let label = application_spec(Some(with(None, &["flame.warm-switch=maybe"])));
        assert_eq!(
            label.unwrap_err().to_string(),
            "invalid label flame.warm-switch=maybe: expected true or false"
        );
        let timeout = application_spec(Some(with(None, &["flame.task-timeout=soon"])));
        assert!(matches!(timeout, Err(FlameError::InvalidArgument(_))));
        let fine = with(
            None,
            &["flame.warm-switch=true", "flame.task-timeout=2s", "x=y"],
        );
        assert!(application_spec(Some(fine)).is_ok());
    }

    #[test]
    fn long_names_are_shortened_in_errors_and_bad_application_names_are_not_found() {
        let long = "a".repeat(10_000);
        assert_eq!(shown(&long).len(), MAX_APPLICATION_NAME_LEN + 3);
        assert_eq!(shown("app"), "app");
        let spec = v1::SessionSpec {
            application: format!("{long}/x"),
            ..v1::SessionSpec::default()
        };
        let err = session_spec(spec, &limits()).unwrap_err();
        assert!(
            matches!(&err, FlameError::NotFound(m) if m.len() < 300),
            "{err:?}"
        );
    }

    #[test]
    fn task_ids_follow_section_4_1() {
        assert_eq!(task_id("3"), Ok(3));
        assert_eq!(
            task_id("x"),
            Err(FlameError::InvalidArgument("invalid task id".into()))
        );
        assert!(matches!(task_id("0"), Err(FlameError::NotFound(_))));
    }
}
