//! Optional task timeouts: the application label `flame.task-timeout=<duration>` and the
//! agent-wide default, and which of the two applies.
//!
//! What: [`parse`] reads a duration text (`500ms`, `30s`, `2m`, `1h 30m`; `0` or `none` mean
//! "no timeout"); [`from_labels`] finds the label among an application's labels;
//! [`LabelTimeout::resolve`] applies the precedence: a label, even `none`, wins over the
//! agent's `task_timeout`; without a label the agent's default applies. [`message`] is the
//! failure message of a task that ran out of time.
//!
//! Why a label: upstream's `flame.v1` has no task timeout (spec §6, "There is no task
//! timeout"), and flamepy 0.6.0 can only set application fields such as labels, so the
//! setting rides on `ApplicationSpec.labels` without changing the wire format.
//!
//! Caveats:
//! - A malformed label value is a bind failure (code 19) whose message names the label and the
//!   value, so the user sees it in the session's code-1001 event instead of a timeout that
//!   silently does not apply.
//! - When the label appears more than once, the last one wins (labels keep the order sent).

use std::time::Duration;

/// The application label that sets the task timeout, as in `flame.task-timeout=30s`.
pub const LABEL: &str = "flame.task-timeout";

/// What an application's labels say about the task timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelTimeout {
    /// No `flame.task-timeout` label: the agent's default applies.
    #[default]
    Absent,
    /// `flame.task-timeout=none` (or `0`): no timeout, whatever the agent's default.
    Off,
    /// A task that runs longer than this fails.
    After(Duration),
}

impl LabelTimeout {
    /// The timeout that applies, given the agent's default: the label wins when present.
    pub fn resolve(self, agent_default: Option<Duration>) -> Option<Duration> {
        match self {
            LabelTimeout::Absent => agent_default,
            LabelTimeout::Off => None,
            LabelTimeout::After(limit) => Some(limit),
        }
    }
}

/// Parses a timeout text: a `humantime` duration such as `500ms`, `30s` or `2m`; `0` and
/// `none` mean no timeout (`Ok(None)`).
pub fn parse(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") || text == "0" {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "{text:?} is not a duration such as 500ms, 30s or 2m ({e})"
        )),
    }
}

/// The task timeout `labels` set; an error naming the label and the value when malformed.
pub fn from_labels(labels: &[String]) -> Result<LabelTimeout, String> {
    let Some(value) = crate::labels::find(labels, LABEL) else {
        return Ok(LabelTimeout::Absent);
    };
    match parse(value) {
        Ok(Some(limit)) => Ok(LabelTimeout::After(limit)),
        Ok(None) => Ok(LabelTimeout::Off),
        Err(why) => Err(format!("invalid label {LABEL}={value}: {why}")),
    }
}

/// The failure message of a task that did not finish within `limit`.
pub fn message(limit: Duration) -> String {
    format!(
        "task exceeded its timeout of {}",
        humantime::format_duration(limit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse(" 30s "), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse("2m"), Ok(Some(Duration::from_secs(120))));
        assert_eq!(parse("1h 30m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse("none"), Ok(None));
        assert_eq!(parse("0"), Ok(None));
        assert_eq!(parse("0s"), Ok(None));
    }

    #[test]
    fn a_malformed_duration_is_an_error_quoting_the_text() {
        for bad in ["", "abc", "30", "-5s", "5 parsecs"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_label_is_found_among_other_labels() {
        let found = from_labels(&labels(&["team=ml", "flame.task-timeout=300ms", "x"]));
        assert_eq!(found, Ok(LabelTimeout::After(Duration::from_millis(300))));
        assert_eq!(from_labels(&labels(&["team=ml"])), Ok(LabelTimeout::Absent));
        assert_eq!(from_labels(&[]), Ok(LabelTimeout::Absent));
        let off = from_labels(&labels(&["flame.task-timeout=none"]));
        assert_eq!(off, Ok(LabelTimeout::Off));
        // Only the exact key counts.
        let other = from_labels(&labels(&["flame.task-timeout-x=abc"]));
        assert_eq!(other, Ok(LabelTimeout::Absent));
    }

    #[test]
    fn the_last_timeout_label_wins() {
        let found = from_labels(&labels(&["flame.task-timeout=1s", "flame.task-timeout=2s"]));
        assert_eq!(found, Ok(LabelTimeout::After(Duration::from_secs(2))));
    }

    #[test]
    fn a_malformed_label_names_the_label_and_the_value() {
        let err = from_labels(&labels(&["flame.task-timeout=soon"])).unwrap_err();
        assert!(
            err.starts_with("invalid label flame.task-timeout=soon: "),
            "{err}"
        );
        let bare = from_labels(&labels(&["flame.task-timeout"])).unwrap_err();
        assert!(
            bare.starts_with("invalid label flame.task-timeout=: "),
            "{bare}"
        );
    }

    #[test]
    fn the_label_wins_over_the_agent_default() {
        let default = Some(Duration::from_secs(60));
        let label = LabelTimeout::After(Duration::from_secs(5));
        assert_eq!(label.resolve(default), Some(Duration::from_secs(5)));
        assert_eq!(label.resolve(None), Some(Duration::from_secs(5)));
        assert_eq!(LabelTimeout::Off.resolve(default), None);
        assert_eq!(LabelTimeout::Absent.resolve(default), default);
        assert_eq!(LabelTimeout::Absent.resolve(None), None);
    }

    #[test]
    fn the_timeout_message_names_the_duration() {
        assert_eq!(
            message(Duration::from_millis(300)),
            "task exceeded its timeout of 300ms"
        );
        assert_eq!(
            message(Duration::from_secs(120)),
            "task exceeded its timeout of 2m"
        );
    }
}
