//! [`Event`]: the append-only history of a task or session, with the codes and exact message
//! texts of spec section 4.5.
//!
//! Why the texts matter: clients and tests search event messages (for example for
//! `failed to bind session`), so the upstream texts are reproduced exactly, including the literal
//! angle brackets. Caveat: codes 4 (cancelled), 0 with a requeue text, and the retry-limit code-3
//! text are Flame additions the specification allows; upstream records no such events.

use serde::{Deserialize, Serialize};

/// One entry in a task's or session's event history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// For task events the numeric task state reached; 1001 and 1002 for session events.
    pub code: i32,
    /// Human text; for code 3 the service's own error text.
    pub message: Option<String>,
    /// When the event was recorded, in Unix milliseconds.
    pub creation_time_ms: i64,
}

impl Event {
    /// Task event: created (or requeued) and Pending.
    pub const TASK_PENDING: i32 = 0;
    /// Task event: handed to an executor, Running.
    pub const TASK_RUNNING: i32 = 1;
    /// Task event: the instance returned success.
    pub const TASK_SUCCEED: i32 = 2;
    /// Task event: the task failed; the message is the error text.
    pub const TASK_FAILED: i32 = 3;
    /// Task event: cancelled because its session closed (Flame addition).
    pub const TASK_CANCELLED: i32 = 4;
    /// Session event: an agent failed to bind an executor to the session (SESSION_BIND_FAILED).
    pub const SESSION_BIND_FAILED: i32 = 1001;
    /// Session event: bind failures reached the retry limit (SESSION_RETRY_LIMIT_REACHED).
    pub const SESSION_RETRY_LIMIT_REACHED: i32 = 1002;

    /// Upstream text of the code-0 event recorded by CreateTask.
    pub const TEXT_TASK_CREATED: &'static str = "Task was created with state <Pending>";
    /// Upstream text of the code-1 event recorded when a task starts running.
    pub const TEXT_TASK_RUNNING: &'static str = "Task state was updated to <Running>";
    /// Upstream text of the code-2 event recorded when a task succeeds.
    pub const TEXT_TASK_SUCCEED: &'static str = "Task was completed with state <Succeed>";
    /// Upstream text of a code-3 event when the instance gave no message.
    pub const TEXT_TASK_FAILED: &'static str = "Task failed with state <Failed>";
    /// Flame's text of the code-4 event recorded when CloseSession cancels a Pending task.
    pub const TEXT_TASK_CANCELLED: &'static str = "Task was cancelled with state <Cancelled>";

    fn new(code: i32, message: String, creation_time_ms: i64) -> Self {
        Event {
            code,
            message: Some(message),
            creation_time_ms,
        }
    }

    /// Code 0, `Task was created with state <Pending>`.
    pub fn task_created(now_ms: i64) -> Self {
        Self::new(Self::TASK_PENDING, Self::TEXT_TASK_CREATED.into(), now_ms)
    }

    /// Code 0 for a Running task sent back to Pending, for example `Task was requeued with state
    /// <Pending>: executor e1 was lost` (Flame addition).
    pub fn task_requeued(reason: &str, now_ms: i64) -> Self {
        let text = format!("Task was requeued with state <Pending>: {reason}");
        Self::new(Self::TASK_PENDING, text, now_ms)
    }

    /// Code 1, `Task state was updated to <Running>`.
    pub fn task_running(now_ms: i64) -> Self {
        Self::new(Self::TASK_RUNNING, Self::TEXT_TASK_RUNNING.into(), now_ms)
    }

    /// Code 2, `Task was completed with state <Succeed>`.
    pub fn task_succeeded(now_ms: i64) -> Self {
        Self::new(Self::TASK_SUCCEED, Self::TEXT_TASK_SUCCEED.into(), now_ms)
    }

    /// Code 3 with the instance's message verbatim, or `Task failed with state <Failed>` when
    /// the instance sent none.
    pub fn task_failed(message: Option<String>, now_ms: i64) -> Self {
        let text = message.unwrap_or_else(|| Self::TEXT_TASK_FAILED.into());
        Self::new(Self::TASK_FAILED, text, now_ms)
    }

    /// Code 3 recorded when a task is failed after too many requeues, for example
    /// `task exceeded retry limit (3) after executor loss` (spec section 6).
    pub fn task_retry_limit_exceeded(limit: u32, now_ms: i64) -> Self {
        let text = format!("task exceeded retry limit ({limit}) after executor loss");
        Self::new(Self::TASK_FAILED, text, now_ms)
    }

    /// Code 4, `Task was cancelled with state <Cancelled>` (Flame addition).
    pub fn task_cancelled(now_ms: i64) -> Self {
        Self::new(
            Self::TASK_CANCELLED,
            Self::TEXT_TASK_CANCELLED.into(),
            now_ms,
        )
    }

    /// Code 1001: `Executor <EID> on node <NODE> failed to bind session with return_code <RC>:
    /// <detail>`, where the angle brackets around the executor id, node and code are literal.
    pub fn session_bind_failed(
        executor_id: &str,
        node: &str,
        return_code: i32,
        detail: &str,
        now_ms: i64,
    ) -> Self {
        let text = format!(
            "Executor <{executor_id}> on node <{node}> failed to bind session with \
             return_code <{return_code}>: {detail}"
        );
        Self::new(Self::SESSION_BIND_FAILED, text, now_ms)
    }

    /// Code 1002: `Session retry limit reached after <failures>/<limit> failed attempts; ...`.
    pub fn session_retry_limit_reached(failures: u32, limit: u32, now_ms: i64) -> Self {
        let text = format!(
            "Session retry limit reached after {failures}/{limit} failed attempts; new executor \
             assignment is paused for this session; existing executors are unchanged."
        );
        Self::new(Self::SESSION_RETRY_LIMIT_REACHED, text, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: &Event) -> &str {
        e.message.as_deref().unwrap_or("")
    }

    #[test]
    fn task_events_use_the_upstream_codes_and_texts() {
        let cases = [
            (
                Event::task_created(5),
                0,
                "Task was created with state <Pending>",
            ),
            (
                Event::task_running(5),
                1,
                "Task state was updated to <Running>",
            ),
            (
                Event::task_succeeded(5),
                2,
                "Task was completed with state <Succeed>",
            ),
            (
                Event::task_failed(None, 5),
                3,
                "Task failed with state <Failed>",
            ),
            (Event::task_failed(Some("boom: x".into()), 5), 3, "boom: x"),
        ];
        for (event, code, message) in cases {
            assert_eq!((event.code, text(&event)), (code, message));
            assert_eq!(event.creation_time_ms, 5);
        }
    }

    #[test]
    fn bind_failure_event_has_literal_brackets_and_detail() {
        let e = Event::session_bind_failed("e-1", "node1", 12, "on_session_enter failed: x", 9);
        assert_eq!(e.code, 1001);
        assert_eq!(
            text(&e),
            "Executor <e-1> on node <node1> failed to bind session with return_code <12>: \
             on_session_enter failed: x"
        );
    }

    #[test]
    fn retry_limit_event_matches_the_upstream_text() {
        let e = Event::session_retry_limit_reached(5, 5, 1);
        assert_eq!(e.code, 1002);
        assert_eq!(
            text(&e),
            "Session retry limit reached after 5/5 failed attempts; new executor assignment is \
             paused for this session; existing executors are unchanged."
        );
    }

    #[test]
    fn flame_additions_use_the_codes_the_spec_allows() {
        assert_eq!(Event::task_cancelled(0).code, 4);
        assert_eq!(Event::task_requeued("executor lost", 0).code, 0);
        let e = Event::task_retry_limit_exceeded(3, 0);
        assert_eq!(
            (e.code, text(&e)),
            (3, "task exceeded retry limit (3) after executor loss")
        );
    }
}
