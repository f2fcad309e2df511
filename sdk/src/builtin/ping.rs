//! `flmping`: the no-op service used for smoke tests and benchmarks (spec section 7.7).
//!
//! What: each task may carry JSON `{"duration": <ms>, "memory": <bytes>}` (both optional). The
//! task holds `memory` bytes (written, so the pages are really used) while it sleeps `duration`
//! milliseconds, and returns JSON
//! `{"message": "Completed on <HOST> in <MS> milliseconds with <SIZE> memory"}`.
//!
//! Why this format: the spec says the angle brackets are literal, so the values appear between
//! `<` and `>` (for example `Completed on <node-1> in <0> milliseconds with <0> memory`). `<MS>`
//! and `<SIZE>` are the requested values, not measurements.
//!
//! Caveats:
//! - Absent or empty (whitespace-only) input means "no sleep, no allocation". Input that is
//!   not a JSON object with non-negative integer fields is a task failure naming the expected
//!   form; unknown fields are ignored.
//! - An allocation the process cannot reserve is a task failure, not an abort. On hosts with
//!   overcommit a huge request can still be OOM-killed while the pages are written;
//!   [`MAX_PING_MEMORY`] bounds what is attempted.

use crate::service::{FlameService, ServiceError, TaskContext};
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;

/// Largest `memory` request attempted: 64 GiB.
pub const MAX_PING_MEMORY: u64 = 64 * 1024 * 1024 * 1024;

/// A parsed `flmping` task input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PingRequest {
    /// How long the task sleeps, in milliseconds.
    #[serde(default)]
    pub duration: u64,
    /// How many bytes the task holds while it sleeps.
    #[serde(default)]
    pub memory: u64,
}

impl PingRequest {
    /// Parses task input: absent or whitespace-only input is the default request.
    pub fn parse(input: Option<&[u8]>) -> Result<PingRequest, ServiceError> {
        let Some(input) = input.filter(|i| !i.trim_ascii().is_empty()) else {
            return Ok(PingRequest::default());
        };
        let invalid = |why: String| {
            ServiceError::InvalidInput(format!(
                "flmping expects JSON {{\"duration\": <ms>, \"memory\": <bytes>}}: {why}"
            ))
        };
        // Parsed as a value first: serde would otherwise also accept `[duration, memory]`.
        match serde_json::from_slice(input).map_err(|e| invalid(e.to_string()))? {
            object @ serde_json::Value::Object(_) => {
                serde_json::from_value(object).map_err(|e| invalid(e.to_string()))
            }
            _ => Err(invalid("the input is not a JSON object".to_owned())),
        }
    }
}

/// The `message` text of a completed ping.
pub fn completion_message(host: &str, request: PingRequest) -> String {
    format!(
        "Completed on <{host}> in <{}> milliseconds with <{}> memory",
        request.duration, request.memory
    )
}

/// The `flmping` service.
#[derive(Debug, Clone)]
pub struct PingService {
    /// Host name reported in every message.
    host: String,
}

impl PingService {
    /// A service that reports this machine's host name (`localhost` if it cannot be read).
    pub fn new() -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        PingService { host }
    }

    /// A service that reports `host`.
    pub fn with_host(host: impl Into<String>) -> Self {
        PingService { host: host.into() }
    }
}

impl Default for PingService {
    fn default() -> Self {
        Self::new()
    }
}

/// Allocates and writes `bytes` bytes, or explains why not.
fn hold_memory(bytes: u64) -> Result<Vec<u8>, ServiceError> {
    let cannot = |why: String| ServiceError::InvalidInput(format!("memory {bytes}: {why}"));
    if bytes > MAX_PING_MEMORY {
        return Err(cannot(format!(
            "more than the {MAX_PING_MEMORY} bytes flmping allows"
        )));
    }
    let len = usize::try_from(bytes).map_err(|e| cannot(e.to_string()))?;
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(len)
        .map_err(|e| cannot(e.to_string()))?;
    buffer.resize(len, 0xA5);
    Ok(buffer)
}

impl FlameService for PingService {
    async fn on_task_invoke(&mut self, ctx: TaskContext) -> Result<Option<Bytes>, ServiceError> {
        let request = PingRequest::parse(ctx.input.as_deref())?;
        let held = hold_memory(request.memory)?;
        if request.duration > 0 {
            tokio::time::sleep(Duration::from_millis(request.duration)).await;
        }
        drop(held);
        let body = serde_json::json!({ "message": completion_message(&self.host, request) });
        Ok(Some(Bytes::from(body.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_or_blank_input_is_the_default_request() {
        assert_eq!(PingRequest::parse(None).ok(), Some(PingRequest::default()));
        assert_eq!(
            PingRequest::parse(Some(b" \n")).ok(),
            Some(PingRequest::default())
        );
    }

    #[test]
    fn fields_are_optional_and_unknown_fields_ignored() {
        let r = PingRequest::parse(Some(br#"{"memory": 4096, "extra": true}"#)).ok();
        assert_eq!(
            r,
            Some(PingRequest {
                duration: 0,
                memory: 4096
            })
        );
    }

    #[test]
    fn malformed_input_is_an_invalid_input_error_naming_the_form() {
        for bad in [&b"hello"[..], br#"{"duration": -1}"#, b"[1,2]"] {
            let err = PingRequest::parse(Some(bad)).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("\"duration\"")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn message_puts_each_value_between_literal_angle_brackets() {
        let request = PingRequest {
            duration: 5,
            memory: 10,
        };
        assert_eq!(
            completion_message("h1", request),
            "Completed on <h1> in <5> milliseconds with <10> memory"
        );
    }

    #[test]
    fn oversized_memory_is_refused_without_allocating() {
        assert!(hold_memory(MAX_PING_MEMORY + 1).is_err());
        assert_eq!(hold_memory(3).ok(), Some(vec![0xA5; 3]));
    }
}
