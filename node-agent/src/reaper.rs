//! Reaping orphaned grandchildren: the agent is a child subreaper.
//!
//! What: [`become_subreaper`] marks the agent process as a child subreaper, so processes that
//! instances leave behind (a script's background job, a daemon) are re-parented to the agent
//! instead of PID 1; [`reap_orphans`] collects those that have exited; [`run`] does so on every
//! SIGCHLD and every few seconds.
//!
//! Why: in containers PID 1 is often not an init and never reaps, and the shim's process-group
//! checks ignore zombies but the process table does not; an agent running thousands of
//! bindings must not leak zombies.
//!
//! Caveat (the important one): tokio owns the instance processes the agent spawned itself and
//! reaps them by pid; reaping one of those here would make tokio's `wait` fail. So only zombie
//! children that tokio cannot own are reaped: those that are not process-group leaders (every
//! instance leads its own group) or that lead their own session (the agent never starts
//! sessions). An orphan that made itself a group leader without a new session (job control,
//! `set -m`) is indistinguishable from an instance and is left alone. Found by scanning
//! `/proc`, so Linux only.

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::future::Future;
use std::time::Duration;

/// How often orphans are looked for when no SIGCHLD arrives.
const SCAN_EVERY: Duration = Duration::from_secs(5);

/// Makes this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> Result<(), nix::Error> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reaps every exited orphan child; returns how many were reaped.
pub fn reap_orphans() -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if is_orphan_zombie(&stat, pid, me)
            && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok()
        {
            tracing::debug!(pid, "reaped an orphaned process");
            reaped += 1;
        }
    }
    reaped
}

/// Whether a `/proc/<pid>/stat` line describes a zombie child of `parent` that tokio does not
/// own: not a process-group leader, or a session leader.
fn is_orphan_zombie(stat: &str, pid: i32, parent: u32) -> bool {
    let Some(fields) = stat.rfind(')').and_then(|at| stat.get(at + 1..)) else {
        return false;
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
    let (Some(ppid), Some(pgrp), Some(session)) = (number(1), number(2), number(3)) else {
        return false;
    };
    fields.first() == Some(&"Z")
        && ppid == i64::from(parent)
        && (pgrp != i64::from(pid) || session == i64::from(pid))
}

/// Reaps orphans on every SIGCHLD and every few seconds until `stop` resolves.
pub async fn run(stop: impl Future<Output = ()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGCHLD; reaping orphans periodically");
            None
        }
    };
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
            Some(()) = async {
                match sigchld.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        reap_orphans();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_zombie_children_tokio_cannot_own_qualify() {
        // pid 50, state, ppid 7, pgrp, session
        let orphan = "50 (sleep) Z 7 40 1 0";
        assert!(is_orphan_zombie(orphan, 50, 7));
        let instance_leader = "50 (flmping) Z 7 50 1 0";
        assert!(!is_orphan_zombie(instance_leader, 50, 7));
        let daemon = "50 (d (x)) Z 7 50 50 0";
        assert!(is_orphan_zombie(daemon, 50, 7));
        assert!(!is_orphan_zombie("50 (sleep) S 7 40 1 0", 50, 7));
        assert!(!is_orphan_zombie("50 (sleep) Z 8 40 1 0", 50, 7));
        assert!(!is_orphan_zombie("garbage", 50, 7));
    }

    #[test]
    fn orphaned_grandchildren_are_reaped() -> Result<(), Box<dyn std::error::Error>> {
        become_subreaper()?;
        // The shell forks a short-lived grandchild and exits at once; the grandchild is
        // re-parented to us and exits as a zombie.
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", "(sleep 0.05) & echo $!"])
            .output()?;
        let pid: i32 = String::from_utf8(status.stdout)?.trim().parse()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            reap_orphans();
            assert!(
                std::time::Instant::now() < deadline,
                "orphan {pid} never reaped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}
