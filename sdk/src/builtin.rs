//! The built-in services behind the `flmping` and `flmexec` applications (spec sections 5.2
//! and 7.7).
//!
//! What: [`ping::PingService`] (sleep and allocate on request, report where and how long) and
//! [`exec::ExecService`] (run a shell or Python script from the task input). The
//! `flmping-service` and `flmexec-service` binaries only set up logging and call
//! [`crate::service::run`] with these.
//!
//! Why in the library: the services are tested directly, and other binaries (benchmarks,
//! tests) can embed them.
//!
//! Caveat: both are compatible replacements written from the spec's payload description, not
//! ports of upstream's binaries.

pub mod exec;
pub mod ping;

/// The last `max` bytes of `bytes` as trimmed, lossily decoded text, prefixed with `...` when
/// something was cut. Used to quote a script's stderr in a failure message.
pub fn tail_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let text = text.trim();
    if start > 0 {
        format!("...{text}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::tail_text;

    #[test]
    fn tail_text_keeps_the_end_and_marks_the_cut() {
        assert_eq!(tail_text(b"  short \n", 100), "short");
        assert_eq!(tail_text(b"0123456789", 4), "...6789");
        assert_eq!(tail_text(b"", 4), "");
    }
}
