//! Application labels with a meaning to Flame: `flame.task-timeout=<duration>` and
//! `flame.warm-switch=<bool>`, read by node agents and checked by members at registration.
//!
//! What: [`find`] looks a `key=value` label up among an application's labels;
//! [`task_timeout`] and [`warm_switch`] read the two settings; [`check`] is what a member runs
//! on RegisterApplication and UpdateApplication, so a malformed value is refused up front with
//! `InvalidArgument` naming the label, instead of failing every bind later.
//!
//! Why labels: upstream's `flame.v1` has neither setting, and flamepy 0.6.0 can set an
//! application's labels but no new field, so the settings ride on `ApplicationSpec.labels`
//! without changing the wire format.
//!
//! - **Task timeout** (`flame.task-timeout=30s`): a `humantime` duration (`500ms`, `30s`,
//!   `2m`, `1h 30m`); `0` or `none` mean no timeout. A label, even `none`, wins over the agent's
//!   default ([`LabelTimeout::resolve`]).
//! - **Warm switches** (`flame.warm-switch=true`): by default an instance serves one session
//!   and is terminated at unbind (spec section 7.1), so no session's state leaks into another's.
//!   An application that opts in keeps its process after `OnSessionLeave`; the next binding of
//!   the executor to a session of the same application (same launch settings) calls
//!   `OnSessionEnter` on it instead of starting a process. The service must reset its own
//!   per-session state: the process, its memory, its working and temporary directories and its
//!   environment carry over.
//!
//! Caveats:
//! - When a label appears more than once, the last one wins (labels keep the order sent).
//! - Agents still check the labels of each binding (a bind failure with code 19 naming the
//!   label), since applications registered before a member checked them may carry bad values.

use crate::error::FlameError;
use std::time::Duration;

/// The label that sets the task timeout, as in `flame.task-timeout=30s`.
pub const TASK_TIMEOUT: &str = "flame.task-timeout";

/// The label that opts in to warm switches, as in `flame.warm-switch=true`.
pub const WARM_SWITCH: &str = "flame.warm-switch";

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

/// The value of the last `key=value` label with this key; a bare `key` gives `""`.
pub fn find<'a>(labels: &'a [String], key: &str) -> Option<&'a str> {
    labels.iter().rev().find_map(|label| {
        let label = label.trim();
        match label.split_once('=') {
            Some((k, value)) if k.trim() == key => Some(value.trim()),
            None if label == key => Some(""),
            _ => None,
        }
    })
}

/// Parses a timeout text: a `humantime` duration such as `500ms`, `30s` or `2m`; `0` and
/// `none` mean no timeout (`Ok(None)`).
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
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
pub fn task_timeout(labels: &[String]) -> Result<LabelTimeout, String> {
    let Some(value) = find(labels, TASK_TIMEOUT) else {
        return Ok(LabelTimeout::Absent);
    };
    match parse_timeout(value) {
        Ok(Some(limit)) => Ok(LabelTimeout::After(limit)),
        Ok(None) => Ok(LabelTimeout::Off),
        Err(why) => Err(format!("invalid label {TASK_TIMEOUT}={value}: {why}")),
    }
}

/// Whether `labels` opt in to warm switches: `true`/`yes`/`on`/`1` or
/// `false`/`no`/`off`/`0` (any case); absent means no. An error names the label and the value.
pub fn warm_switch(labels: &[String]) -> Result<bool, String> {
    let Some(value) = find(labels, WARM_SWITCH) else {
        return Ok(false);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "invalid label {WARM_SWITCH}={value}: expected true or false"
        )),
    }
}

/// Checks every label Flame gives a meaning to; `InvalidArgument` naming the first bad one.
pub fn check(labels: &[String]) -> Result<(), FlameError> {
    task_timeout(labels).map_err(FlameError::InvalidArgument)?;
    warm_switch(labels).map_err(FlameError::InvalidArgument)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_last_label_with_the_exact_key_is_found() {
        let l = labels(&["a=1", "flame.x=2", "flame.x-y=3", "flame.x = 4 ", "bare"]);
        assert_eq!(find(&l, "flame.x"), Some("4"));
        assert_eq!(find(&l, "bare"), Some(""));
        assert_eq!(find(&l, "missing"), None);
    }

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_timeout("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse_timeout(" 30s "), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_timeout("2m"), Ok(Some(Duration::from_secs(120))));
        assert_eq!(parse_timeout("1h 30m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_timeout("none"), Ok(None));
        assert_eq!(parse_timeout("0"), Ok(None));
        assert_eq!(parse_timeout("0s"), Ok(None));
    }

    #[test]
    fn a_malformed_duration_is_an_error_quoting_the_text() {
        for bad in ["", "abc", "30", "-5s", "5 parsecs"] {
            let err = parse_timeout(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_timeout_label_is_found_among_other_labels_and_the_last_wins() {
        let found = task_timeout(&labels(&["team=ml", "flame.task-timeout=300ms", "x"]));
        assert_eq!(found, Ok(LabelTimeout::After(Duration::from_millis(300))));
        assert_eq!(
            task_timeout(&labels(&["team=ml"])),
            Ok(LabelTimeout::Absent)
        );
        let off = task_timeout(&labels(&["flame.task-timeout=none"]));
        assert_eq!(off, Ok(LabelTimeout::Off));
        let other = task_timeout(&labels(&["flame.task-timeout-x=abc"]));
        assert_eq!(other, Ok(LabelTimeout::Absent));
        let last = task_timeout(&labels(&["flame.task-timeout=1s", "flame.task-timeout=2s"]));
        assert_eq!(last, Ok(LabelTimeout::After(Duration::from_secs(2))));
    }

    #[test]
    fn a_malformed_timeout_label_names_the_label_and_the_value() {
        let err = task_timeout(&labels(&["flame.task-timeout=soon"])).unwrap_err();
        assert!(
            err.starts_with("invalid label flame.task-timeout=soon: "),
            "{err}"
        );
        let bare = task_timeout(&labels(&["flame.task-timeout"])).unwrap_err();
        assert!(
            bare.starts_with("invalid label flame.task-timeout=: "),
            "{bare}"
        );
    }

    #[test]
    fn the_timeout_label_wins_over_the_agent_default() {
        let default = Some(Duration::from_secs(60));
        let label = LabelTimeout::After(Duration::from_secs(5));
        assert_eq!(label.resolve(default), Some(Duration::from_secs(5)));
        assert_eq!(label.resolve(None), Some(Duration::from_secs(5)));
        assert_eq!(LabelTimeout::Off.resolve(default), None);
        assert_eq!(LabelTimeout::Absent.resolve(default), default);
        assert_eq!(LabelTimeout::Absent.resolve(None), None);
    }

    #[test]
    fn warm_switches_are_off_unless_the_label_turns_them_on() {
        assert_eq!(warm_switch(&[]), Ok(false));
        assert_eq!(warm_switch(&labels(&["team=ml"])), Ok(false));
        assert_eq!(warm_switch(&labels(&["flame.warm-switch=true"])), Ok(true));
        assert_eq!(warm_switch(&labels(&["flame.warm-switch=ON"])), Ok(true));
        assert_eq!(warm_switch(&labels(&["flame.warm-switch=no"])), Ok(false));
        let last = labels(&["flame.warm-switch=true", "flame.warm-switch=false"]);
        assert_eq!(warm_switch(&last), Ok(false));
    }

    #[test]
    fn a_malformed_warm_switch_label_names_the_label_and_the_value() {
        let err = warm_switch(&labels(&["flame.warm-switch=sometimes"])).unwrap_err();
        assert_eq!(
            err,
            "invalid label flame.warm-switch=sometimes: expected true or false"
        );
        let bare = warm_switch(&labels(&["flame.warm-switch"])).unwrap_err();
        assert!(
            bare.starts_with("invalid label flame.warm-switch=:"),
            "{bare}"
        );
    }

    #[test]
    fn check_refuses_the_first_malformed_flame_label_as_invalid_argument() {
        assert_eq!(check(&labels(&["anything=goes", "flame.other=x"])), Ok(()));
        let bad = check(&labels(&["flame.warm-switch=maybe"])).unwrap_err();
        assert!(
            matches!(bad, FlameError::InvalidArgument(ref m) if m.contains("flame.warm-switch=maybe"))
        );
        let bad = check(&labels(&["flame.task-timeout=soon"])).unwrap_err();
        assert!(
            matches!(bad, FlameError::InvalidArgument(ref m) if m.contains("flame.task-timeout=soon"))
        );
    }
}
