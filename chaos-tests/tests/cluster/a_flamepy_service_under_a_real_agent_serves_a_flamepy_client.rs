//! Claim: an unmodified flamepy 0.6.0 service runs under a real `flame-node-agent` process and
//! serves an unmodified flamepy 0.6.0 client talking to a follower of three real members.
//!
//! How: three members and one agent (`node-a`) start as OS processes. The client script
//! (`python/flamepy_echo_client.py`, run with `HOME` pointed at an empty directory) registers
//! an application whose command is the venv's python running `python/flamepy_echo_service.py`
//! (a `flamepy.FlameService` subclass served by `flamepy.run`), with the leave-marker path in the
//! application's environment and a working directory under the agent's work directory (so a
//! failed run's instance is still reaped with the agent). It creates a session with common data
//! and `max_instances = 1`, checks that each task echoes common data + input and ends Succeed,
//! that the task whose service raises `ValueError` ends Failed with the exception's text both
//! in flamepy's `run()` error and in the code-3 event WatchTask streams, that the instance then
//! serves one more task, and closes the session. The test requires the script's exit status 0
//! and its final marker line, then waits (bounded) for the marker `on_session_leave` writes:
//! `<session> 7`, proving that the one instance that entered the session ran all seven tasks
//! and left it.
//!
//! Setup: the venv comes from `scripts/flamepy-venv.sh` (see `support::flamepy`).

use crate::support::*;
use anyhow::{Context, bail, ensure};
use chaos_tests::flamepy::{ScriptRun, flamepy_python, python_script, run_client_script};
use std::time::Duration;

const APP: &str = "py-echo";
const SESSION: &str = "py-echo-session";
/// Tasks the service runs: five echoes, the raising one and one after it.
const INVOKED: usize = 7;
/// How long the client script may run (it launches a Python instance on first use).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);
/// How long the leave marker may take after the session closed.
const LEAVE_DEADLINE: Duration = Duration::from_secs(30);
/// The line the client script prints when every step passed.
const PASSED: &str = "flamepy echo scenario passed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flamepy_service_under_a_real_agent_serves_a_flamepy_client() -> anyhow::Result<()> {
    let python = flamepy_python()?;
    let run = start("chaos-flamepy", &[], &["node-a"]).await?;
    let follower = run.followers[0];
    let endpoint = run.cluster.member(follower)?.url();
    let scratch = tempfile::tempdir()?;
    let marker = scratch.path().join("left");
    let workdir = run.cluster.agent("node-a")?.work_dir.join("py-echo-app");
    let env = [
        ("ECHO_PYTHON", path_text(&python)?),
        (
            "ECHO_SERVICE",
            path_text(&python_script("flamepy_echo_service.py"))?,
        ),
        ("ECHO_LEAVE_MARKER", path_text(&marker)?),
        ("ECHO_WORKDIR", path_text(&workdir)?),
        ("ECHO_APP", APP.to_owned()),
        ("ECHO_SESSION", SESSION.to_owned()),
    ];
    let client = python_script("flamepy_echo_client.py");
    let script = run_client_script(&python, &client, &endpoint, &env, SCRIPT_DEADLINE).await;
    let script = match script {
        Ok(script) if script.passed(PASSED) => script,
        Ok(script) => bail!(
            "the flamepy client against follower {follower} ({endpoint}) failed: {}\n{}",
            script.describe(),
            diagnostics(&run, follower)
        ),
        Err(e) => bail!("{e}\n{}", diagnostics(&run, follower)),
    };
    let left = poll(
        "the service's on_session_leave marker",
        LEAVE_DEADLINE,
        || {
            let marker = &marker;
            async move { Ok(std::fs::read_to_string(marker).ok()) }
        },
    )
    .await
    .with_context(|| diagnostics(&run, follower))?;
    ensure!(
        left == format!("{SESSION} {INVOKED}"),
        "on_session_leave wrote {left:?}; expected the session id and {INVOKED} tasks\n{}",
        diagnostics(&run, follower)
    );
    print_steps(&script);
    Ok(())
}

fn path_text(path: &std::path::Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The client's step lines, shown with `--nocapture`.
fn print_steps(script: &ScriptRun) {
    for line in script.stdout.lines() {
        println!("  {line}");
    }
}

/// The follower's and the agent's log tails and every instance log, for failure messages.
fn diagnostics(run: &Running, follower: u64) -> String {
    let mut text = format!(
        "--- member {follower} log:\n{}",
        run.cluster.log_tail(follower, 30)
    );
    for agent in run.cluster.agents() {
        text.push_str(&format!(
            "\n--- agent {} log:\n{}",
            agent.name,
            agent.log_tail(30)
        ));
        let logs = agent.work_dir.join("logs");
        let Ok(entries) = std::fs::read_dir(&logs) else {
            continue;
        };
        for entry in entries.flatten() {
            let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
            text.push_str(&format!(
                "\n--- instance log {}:\n{body}",
                entry.path().display()
            ));
        }
    }
    text
}
