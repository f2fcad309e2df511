//! The instance process: starting it in its own process group with its output in log files,
//! signalling the group, and reading the tail of its stderr.
//!
//! What: [`spawn`] starts a [`LaunchPlan`]; [`signal_group`] and [`group_alive`] act on the
//! process group; [`stderr_tail`] quotes what this launch wrote to its stderr log.
//!
//! Why process groups: an instance may start children (flmexec's scripts, `uv run python`), and
//! stopping the binding must stop all of them (spec section 7.1, item 8).
//!
//! Caveats:
//! - [`group_alive`] reads `/proc` on Linux and ignores zombies: where PID 1 does not reap
//!   orphans (some containers), an instance's exited grandchildren stay zombies forever and a
//!   plain `kill(-pgid, 0)` would report the group alive. Elsewhere it falls back to that probe.
//! - Signalling a group id that is 1 or less is refused, so a bad id can never hit the agent's
//!   own group or every process.

use super::error::BindError;
use super::spec::LaunchPlan;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// How much of stderr a bind failure quotes, in bytes.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// A started instance process.
#[derive(Debug)]
pub struct Spawned {
    /// The child (the group leader).
    pub child: Child,
    /// Its process group id, equal to its pid.
    pub pgid: i32,
    /// Length of the stderr log before this launch, where [`stderr_tail`] starts reading.
    pub stderr_offset: u64,
}

/// Opens `path` for appending, creating it and its directory.
fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts `plan` in a new process group, with stdin from `/dev/null` and stdout and stderr
/// appended to the plan's log files after a one-line header naming `header`.
pub fn spawn(plan: &LaunchPlan, header: &str) -> Result<Spawned, BindError> {
    let paths = &plan.paths;
    let log_error = |p: &Path, e: std::io::Error| {
        BindError::shim(format!("cannot open log file {}: {e}", p.display()))
    };
    let mut out = open_log(&paths.stdout_log).map_err(|e| log_error(&paths.stdout_log, e))?;
    let mut err = open_log(&paths.stderr_log).map_err(|e| log_error(&paths.stderr_log, e))?;
    // The header only helps a human reading the log; failing to write it is not fatal.
    let _ = writeln!(out, "=== {header}");
    let _ = writeln!(err, "=== {header}");
    let stderr_offset = err.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(&plan.program);
    cmd.args(&plan.args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&paths.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        let program = &plan.program;
        BindError::shim(match e.kind() {
            std::io::ErrorKind::NotFound => format!("command {program:?} not found: {e}"),
            std::io::ErrorKind::PermissionDenied => {
                format!("command {program:?} is not executable: {e}")
            }
            _ => format!("cannot start command {program:?}: {e}"),
        })
    })?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| {
            BindError::shim(format!("{:?} exited before its pid was read", plan.program))
        })?;
    Ok(Spawned {
        child,
        pgid,
        stderr_offset,
    })
}

/// Sends `signal` to every process in group `pgid`. A group that no longer exists is not an
/// error; a `pgid` of 1 or less is never signalled.
pub fn signal_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    if pgid <= 1 {
        return Err(Errno::EINVAL);
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether any process other than a zombie is still in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    match proc_group_alive(pgid) {
        Some(alive) => alive,
        None => killpg(Pid::from_raw(pgid), None).is_ok(),
    }
}

/// The `/proc` scan behind [`group_alive`]; `None` when `/proc` cannot be read.
fn proc_group_alive(pgid: i32) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let alive = entries.flatten().any(|entry| {
        let name = entry.file_name();
        let is_pid = name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| live_member_of(&stat, pgid))
                .unwrap_or(false)
    });
    Some(alive)
}

/// Parses a `/proc/<pid>/stat` line: whether the process is in group `pgid` and not a zombie.
/// The command name may contain spaces and parentheses, so fields are read after the last `)`.
fn live_member_of(stat: &str, pgid: i32) -> Option<bool> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = *fields.first()?;
    let group: i32 = fields.get(2)?.parse().ok()?;
    Some(group == pgid && state != "Z" && state != "X")
}

/// The last [`STDERR_TAIL_BYTES`] this launch wrote to `log` (from `offset`), trimmed;
/// `(no stderr output)` when there is none.
pub fn stderr_tail(log: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        let start = offset.max(len.saturating_sub(STDERR_TAIL_BYTES as u64));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(STDERR_TAIL_BYTES as u64)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if text.is_empty() {
                "(no stderr output)".to_owned()
            } else {
                text
            }
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_are_parsed_after_the_command_name() {
        let line = "42 (we (ird) name) S 1 4242 4242 0 -1";
        assert_eq!(live_member_of(line, 4242), Some(true));
        assert_eq!(live_member_of(line, 7), Some(false));
        let zombie = "43 (sleep) Z 1 4242 4242 0 -1";
        assert_eq!(live_member_of(zombie, 4242), Some(false));
        assert_eq!(live_member_of("garbage", 1), None);
    }

    #[test]
    fn low_group_ids_are_never_signalled() {
        assert_eq!(signal_group(0, Signal::SIGTERM), Err(Errno::EINVAL));
        assert_eq!(signal_group(1, Signal::SIGTERM), Err(Errno::EINVAL));
        assert!(!group_alive(1));
    }

    #[test]
    fn stderr_tail_reads_only_this_launch_and_only_the_end() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("x.err");
        std::fs::write(&log, "old launch\nnew")?;
        assert_eq!(stderr_tail(&log, 11), "new");
        assert_eq!(stderr_tail(&log, 14), "(no stderr output)");
        std::fs::write(&log, "y".repeat(5000))?;
        assert_eq!(stderr_tail(&log, 0).len(), STDERR_TAIL_BYTES);
        Ok(())
    }
}
