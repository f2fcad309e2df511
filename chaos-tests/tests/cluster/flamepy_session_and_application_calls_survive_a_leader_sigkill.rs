//! Claim: a flamepy 0.6.0 client that registers and unregisters applications and creates,
//! opens and closes sessions through a follower gets, from every call made while the Raft
//! leader is SIGKILLed (twice) and restarted, either success or an error saying the call was
//! not applied; never an error of unknown outcome ("may or may not have been applied") and
//! never a wrong answer.
//!
//! How: three members start as OS processes (no agent: no task runs). The client script
//! (`python/flamepy_failover_calls.py`) talks to one follower only, which is never killed, and
//! loops, one call at a time: `register_application` (unique name), `create_session` of it,
//! `open_session`, `close_session`, `unregister_application`. It never retries; a failed call
//! ends its iteration (the next calls depend on it). The test follows the script's calls in
//! the trace file it appends its lines to (closed sessions are purged, so the cluster cannot
//! count them). After 25 calls it SIGKILLs the current leader (leadership is first moved off
//! the client's follower with `TransferLeader` if needed), waits for a new leader, restarts the
//! killed member 2 s after the kill, and waits for all three to agree on a leader and the
//! restarted one to catch up; 25 calls after that member's return it does it again; 25 calls
//! after the second return it creates the stop file the script polls.
//!
//! Checks: the script exited 0 and stopped because of the stop file (so both kills fell inside
//! its run); every call either succeeded or failed with a message containing "not applied"
//! (and not "may or may not"); at least one call was made. Printed with `--nocapture`: the
//! counts per call kind, each kill with the longest call in flight then, and the longest call.
//!
//! Caveat: a call in flight at the instant of a kill is likely but not guaranteed (the script
//! spends a little time between calls); the figures show how many were. The client's member
//! may win the election after a kill; leadership is then moved off it before the next kill,
//! and that transfer is itself a leader change the client rides through (the figures say when).

use crate::support::failover::{
    Call, Client, Kill, give_up, kill_leader_sparing, parse_calls, print_kills, trace_lines,
    unix_now,
};
use crate::support::*;
use anyhow::{Context, bail, ensure};
use chaos_tests::flamepy::{ScriptRun, flamepy_python, python_script, run_client_script};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const PREFIX: &str = "fo-calls";
const DONE: &str = "flamepy failover calls done";
/// Calls (5 per iteration) between one step (start, kill, kill, stop) and the next.
const CALLS_BETWEEN: usize = 25;
/// How long the script may run in all (its own loop stops after 90 s).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);
/// How long the test waits for the script's next calls.
const PROGRESS: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamepy_session_and_application_calls_survive_a_leader_sigkill() -> anyhow::Result<()> {
    let began = Instant::now();
    let since = unix_now();
    let python = flamepy_python()?;
    let mut run = start("chaos-flamepy-failover-calls", &[], &[]).await?;
    let follower = run.followers[0];
    let endpoint = run.cluster.member(follower)?.url();
    let scratch = tempfile::tempdir()?;
    let stop_file = scratch.path().join("stop");
    let trace = scratch.path().join("trace");
    let text = |p: &Path| p.to_str().map(str::to_owned).context("a UTF-8 path");
    let env = [
        ("FAILOVER_PREFIX", PREFIX.to_owned()),
        ("FAILOVER_STOP_FILE", text(&stop_file)?),
        ("FAILOVER_TRACE", text(&trace)?),
        ("FAILOVER_MAX_SECONDS", "90".to_owned()),
    ];
    let script = python_script("flamepy_failover_calls.py");
    let client = tokio::spawn(async move {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        run_client_script(&python, &script, &endpoint, &env, SCRIPT_DEADLINE).await
    });

    let killing: anyhow::Result<Vec<Kill>> = async {
        let mut kills = Vec::new();
        // Counted from the script's start, then from each restarted member's return.
        let mut seen = 0;
        for _ in 0..2 {
            calls_at_least(&trace, seen + CALLS_BETWEEN, &client).await?;
            kills.push(kill_leader_sparing(&mut run, follower).await?);
            seen = calls_at_least(&trace, 0, &client).await?;
        }
        calls_at_least(&trace, seen + CALLS_BETWEEN, &client).await?;
        std::fs::write(&stop_file, b"stop")?;
        Ok(kills)
    }
    .await;
    let kills = match killing {
        Ok(kills) => kills,
        Err(e) => return Err(give_up(e, client, &trace).await),
    };

    let script = match client.await? {
        Ok(script) if script.passed(DONE) => script,
        Ok(script) => bail!(
            "the flamepy client against follower {follower} failed: {}",
            script.describe()
        ),
        Err(e) => bail!("{e}"),
    };
    let calls = parse_calls(&script.stdout)?;
    print_figures(&script, &calls);
    print_kills(&calls, &kills, since);
    println!("total run time {:?}", began.elapsed());

    ensure!(
        script.stdout.lines().any(|l| l == "STOPPED stop-file"),
        "the script's loop ended before the test stopped it, so the kills may not have fallen \
         inside it:\n{}",
        script.describe()
    );
    ensure!(!calls.is_empty(), "the script made no call");
    let other: Vec<String> = calls
        .iter()
        .filter(|c| c.error.as_deref().is_some_and(|e| !not_applied(e)))
        .map(|c| {
            format!(
                "iteration {} {} (started +{:.3}s, took {:.3}s): {}",
                c.key,
                c.label,
                c.start - since,
                c.duration,
                c.error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    ensure!(
        other.is_empty(),
        "{} of {} calls failed with an error other than \"not applied\" through {} leader \
         SIGKILLs:\n- {}",
        other.len(),
        calls.len(),
        kills.len(),
        other.join("\n- ")
    );
    Ok(())
}

/// Whether an error says its call was not applied (and not that its fate is unknown).
fn not_applied(error: &str) -> bool {
    error.contains("not applied") && !error.contains("may or may not")
}

/// Waits until the script has reported at least `count` calls in its trace file; returns how
/// many it has. Fails at once if the script has ended.
async fn calls_at_least(trace: &Path, count: usize, client: &Client) -> anyhow::Result<usize> {
    poll(
        &format!("the client script to make {count} calls"),
        PROGRESS,
        || async move {
            let made = trace_lines(trace)
                .iter()
                .filter(|l| l.starts_with("LATENCY "))
                .count();
            if made >= count {
                return Ok(Some(made));
            }
            if client.is_finished() {
                bail!("the client script ended after {made} calls, before {count}");
            }
            Ok(None)
        },
    )
    .await
}

/// The script's summary lines, the counts per call kind and the longest call.
fn print_figures(script: &ScriptRun, calls: &[Call]) {
    for line in script.stdout.lines() {
        if !line.starts_with("LATENCY ") && !line.starts_with("ERROR ") {
            println!("  {line}");
        }
    }
    let mut kinds: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for c in calls {
        let counts = kinds.entry(c.label.as_str()).or_default();
        match c.error.as_deref() {
            None => counts.0 += 1,
            Some(e) if not_applied(e) => counts.1 += 1,
            Some(_) => counts.2 += 1,
        }
    }
    for (kind, (ok, not_applied, other)) in &kinds {
        println!("{kind}: {ok} ok, {not_applied} not applied, {other} other errors");
    }
    for c in calls.iter().filter(|c| c.error.is_some()) {
        println!(
            "  iteration {} {} took {:.3}s: {}",
            c.key,
            c.label,
            c.duration,
            c.error.as_deref().unwrap_or_default()
        );
    }
    if let Some(c) = calls
        .iter()
        .max_by(|a, b| a.duration.total_cmp(&b.duration))
    {
        println!(
            "longest call: iteration {} {} took {:.3}s{}",
            c.key,
            c.label,
            c.duration,
            if c.error.is_some() { " (failed)" } else { "" }
        );
    }
}

/// The judging itself: "not applied" is accepted, an unknown outcome or any other error is not.
#[test]
fn only_errors_that_say_not_applied_are_accepted() {
    assert!(not_applied(
        "FlameError: failed to register application: the write was held for a leader change \
         and not applied: no leader elected within 10s"
    ));
    assert!(!not_applied(
        "FlameError: failed to create session: the write forwarded to leader 1 got no answer, \
         so it may or may not have been applied: transport error"
    ));
    assert!(!not_applied(
        "FlameError: invalid application name 'x': it is empty"
    ));
}
