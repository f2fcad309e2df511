//! Errors of one binding: bind failures with the spec's result codes, and failures of calls
//! on an instance that is already bound.
//!
//! What: [`BindError`] carries a [`BindCode`] and a message that already starts with the code's
//! prefix (spec section 9.3), so the executor loop can put it in the session's code-1001 event
//! unchanged. [`InstanceError`] covers `OnSessionLeave` and calls in the wrong phase.
//! Code 10 (installation) comes from [`super::install`].

/// The bind result codes of spec section 9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindCode {
    /// 10: the application could not be installed.
    InstallFailed,
    /// 11: the process could not be started or never served its socket.
    ShimCreationFailed,
    /// 12: `OnSessionEnter` returned non-zero or failed in transport.
    SessionEnterFailed,
    /// 19: anything else.
    Unknown,
}

impl BindCode {
    /// The numeric code sent to the control plane.
    pub fn value(self) -> i32 {
        match self {
            BindCode::InstallFailed => 10,
            BindCode::ShimCreationFailed => 11,
            BindCode::SessionEnterFailed => 12,
            BindCode::Unknown => 19,
        }
    }

    /// The prefix the spec puts before the detail, including the trailing `": "`.
    pub fn prefix(self) -> &'static str {
        match self {
            BindCode::InstallFailed => "application installation failed: ",
            BindCode::ShimCreationFailed => "shim creation failed: ",
            BindCode::SessionEnterFailed => "on_session_enter failed: ",
            BindCode::Unknown => "",
        }
    }
}

/// A failed bind: the code and the full message (prefix included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (bind code {})", code.value())]
pub struct BindError {
    /// Which step failed.
    pub code: BindCode,
    /// The code's prefix followed by the detail, such as
    /// `shim creation failed: command "x" not found: ...`.
    pub message: String,
}

impl BindError {
    /// A bind error whose message is `code`'s prefix followed by `detail`.
    pub fn new(code: BindCode, detail: impl AsRef<str>) -> Self {
        BindError {
            code,
            message: format!("{}{}", code.prefix(), detail.as_ref()),
        }
    }

    /// Code 11: the shim (process or socket) could not be created.
    pub fn shim(detail: impl AsRef<str>) -> Self {
        Self::new(BindCode::ShimCreationFailed, detail)
    }
}

/// Why a call on a launched instance failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    /// The process is gone or its connection broke earlier; the text says why.
    #[error("instance is not running: {0}")]
    NotRunning(String),
    /// The call is not allowed in the instance's current phase.
    #[error("{call} is not allowed {phase}")]
    WrongPhase {
        /// The call that was refused.
        call: &'static str,
        /// Where the instance is in its lifecycle, such as `before OnSessionEnter`.
        phase: &'static str,
    },
    /// The service answered with a non-zero return code.
    #[error("{call} returned {return_code}: {message}")]
    Rejected {
        /// The call.
        call: &'static str,
        /// The non-zero return code.
        return_code: i32,
        /// The service's message, or a note that it gave none.
        message: String,
    },
    /// The call failed in transport or timed out; the instance is now considered dead.
    #[error("{call} failed: {detail}")]
    Transport {
        /// The call.
        call: &'static str,
        /// What happened.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_carry_the_spec_codes_and_prefixes() {
        let e = BindError::shim("boom");
        assert_eq!(e.code.value(), 11);
        assert_eq!(e.message, "shim creation failed: boom");
        let e = BindError::new(BindCode::SessionEnterFailed, "no");
        assert_eq!(
            (e.code.value(), e.message.as_str()),
            (12, "on_session_enter failed: no")
        );
        assert_eq!(BindCode::InstallFailed.value(), 10);
        assert_eq!(BindCode::Unknown.value(), 19);
    }
}
