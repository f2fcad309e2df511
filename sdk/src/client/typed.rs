//! Typed task inputs and outputs through serde, JSON on the wire.
//!
//! What: [`TaskRequest::json`] encodes a typed input into a submission (with its exactly-once
//! request id), [`decode_output`] turns a finished task's output back into a type,
//! [`Session::invoke`] runs one typed task to completion and [`Session::invoke_all`] submits a
//! typed batch in one `CreateTasks` call and gathers the outputs in order. The service side
//! reads and writes the same JSON with [`crate::service::json_input`] and
//! [`crate::service::json_output`].
//!
//! Why JSON: it is what flamepy services and `flmctl view` can read as well, and serde makes
//! it one call on each side.
//!
//! Caveats: an absent output decodes as JSON `null`, so `O = ()` or `Option<T>` accept a
//! service that returns nothing, while other types fail with [`ClientError::Codec`]. A failed
//! task in a batch fails [`Session::invoke_all`] with that task's error (the other tasks still
//! run; their outputs are in the session).

use super::ClientError;
use super::session::{Session, TaskRequest, task_id};
use flame_proto::v1::Task;
use futures::future::try_join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

impl TaskRequest {
    /// A submission of `input` as JSON, with a fresh request id.
    pub fn json<I: Serialize + ?Sized>(input: &I) -> Result<TaskRequest, ClientError> {
        let mut request = TaskRequest::new(None);
        let bytes = serde_json::to_vec(input).map_err(|e| ClientError::Codec {
            task: format!("with request id {}", request.request_id),
            action: "encode the input",
            message: e.to_string(),
        })?;
        request.input = Some(bytes);
        Ok(request)
    }
}

/// The output of the finished task `task`, decoded from JSON (absent output is `null`).
pub fn decode_output<O: DeserializeOwned>(task: &Task) -> Result<O, ClientError> {
    let output = task.spec.as_ref().and_then(|s| s.output.as_deref());
    let decoded = match output {
        Some(bytes) => serde_json::from_slice(bytes),
        None => serde_json::from_slice(b"null"),
    };
    decoded.map_err(|e| ClientError::Codec {
        task: task_id(task).unwrap_or_else(|_| "without an id".into()),
        action: "decode the output",
        message: e.to_string(),
    })
}

impl Session {
    /// Runs one task with `input` as JSON to completion and decodes its JSON output; a failed
    /// task is [`ClientError::TaskFailed`], bad JSON either way [`ClientError::Codec`].
    pub async fn invoke<I, O>(&self, input: &I) -> Result<O, ClientError>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let task = self.submit(&TaskRequest::json(input)?).await?;
        let done = self.wait_task(&task_id(&task)?).await?;
        decode_output(&done)
    }

    /// Submits one task per input in one exactly-once batch, waits for all of them and returns
    /// the decoded outputs in input order; the first failure is returned.
    pub async fn invoke_all<I, O>(&self, inputs: &[I]) -> Result<Vec<O>, ClientError>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        let requests = inputs
            .iter()
            .map(TaskRequest::json)
            .collect::<Result<Vec<_>, _>>()?;
        let tasks = self.create_tasks(&requests).await?;
        let ids = tasks.iter().map(task_id).collect::<Result<Vec<_>, _>>()?;
        let waits = ids.iter().map(|id| async move {
            let done = self.wait_task(id).await?;
            decode_output::<O>(&done)
        });
        try_join_all(waits).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_proto::v1::{Metadata, TaskSpec};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        inside: u64,
        samples: u64,
    }

    fn finished(id: &str, output: Option<&[u8]>) -> Task {
        Task {
            metadata: Some(Metadata {
                id: id.into(),
                name: id.into(),
            }),
            spec: Some(TaskSpec {
                session_id: "s".into(),
                input: None,
                output: output.map(<[u8]>::to_vec),
            }),
            status: None,
        }
    }

    #[test]
    fn a_typed_input_round_trips_through_the_json_on_the_wire() {
        let sample = Sample {
            inside: 3,
            samples: 4,
        };
        let request = TaskRequest::json(&sample).unwrap();
        let bytes = request.input.clone().unwrap();
        assert_eq!(bytes, br#"{"inside":3,"samples":4}"#);
        let back: Sample = decode_output(&finished("1", Some(&bytes))).unwrap();
        assert_eq!(back, sample);
        assert_ne!(
            request.request_id,
            TaskRequest::json(&sample).unwrap().request_id
        );
    }

    #[test]
    fn an_undecodable_output_is_a_codec_error_naming_the_task() {
        let err = decode_output::<Sample>(&finished("7", Some(b"not json"))).unwrap_err();
        let ClientError::Codec { task, action, .. } = &err else {
            panic!("expected Codec, got {err:?}");
        };
        assert_eq!((task.as_str(), *action), ("7", "decode the output"));
        assert!(
            err.to_string()
                .starts_with("cannot decode the output of task 7: "),
            "{err}"
        );
    }

    #[test]
    fn an_absent_output_is_null_for_unit_and_option_and_an_error_otherwise() {
        let empty = finished("2", None);
        decode_output::<()>(&empty).unwrap();
        assert_eq!(decode_output::<Option<Sample>>(&empty).unwrap(), None);
        assert!(matches!(
            decode_output::<Sample>(&empty),
            Err(ClientError::Codec { .. })
        ));
    }

    #[test]
    fn an_unencodable_input_is_a_codec_error_naming_the_request() {
        let mut map = std::collections::BTreeMap::new();
        map.insert((1, 2), 3); // JSON object keys must be strings.
        let err = TaskRequest::json(&map).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot encode the input of task with request id "),
            "{err}"
        );
    }
}
