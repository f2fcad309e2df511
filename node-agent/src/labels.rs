//! Application labels the agent honours: `flame.task-timeout` (see [`crate::task_timeout`]) and
//! `flame.warm-switch`.
//!
//! What: [`find`] looks a `key=value` label up among an application's labels;
//! [`warm_switch`] reads the opt-in that keeps an instance process across sessions.
//!
//! Why labels: flamepy 0.6.0 can set an application's labels but no new field, so per-application
//! agent settings ride on `ApplicationSpec.labels` without changing the wire format.
//!
//! Warm switches (`flame.warm-switch=true`): by default an instance serves one session and is
//! terminated at unbind (spec section 7.1), so no session's state leaks into another's. An
//! application that opts in keeps its process after `OnSessionLeave`; the next binding of the
//! executor to a session of the *same* application (same launch settings) calls
//! `OnSessionEnter` on it instead of starting a new process. The service must reset its own
//! per-session state in `OnSessionLeave`/`OnSessionEnter`: the process, its memory, its working
//! and temporary directories and its environment carry over.
//!
//! Caveats:
//! - A malformed value is a bind failure (code 19) whose message names the label and the value.
//! - When a label appears more than once, the last one wins (labels keep the order sent).
//! - A warm instance that fails `OnSessionLeave`, or whose `OnSessionEnter` fails, is stopped;
//!   the binding then starts a fresh process, so a warm switch never makes a bind fail that a
//!   cold start would pass.

/// The application label that opts in to warm switches, as in `flame.warm-switch=true`.
pub const WARM_SWITCH: &str = "flame.warm-switch";

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
}
