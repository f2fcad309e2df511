//! Claims:
//! - a flamepy 0.6.0 `Runner` job of 500 calls, run through a follower while the Raft leader
//!   is SIGKILLed (and restarted), completes with every result correct;
//! - a nested client inside an instance (a Runner function that opens an `flmping` session)
//!   still reaches the cluster while a member is down: instances get the agent's member relay
//!   as `FLAME_ENDPOINT`, not one member's address.
//!
//! How: three members and one node agent start as OS processes; the agent's `FLAME_HOME` gets
//! the test venv's `uv` and flamepy. The client script (written here, with its project) runs
//! from the project directory against one follower, which is never killed. It starts a
//! Runner, submits 500 calls of `triple(i)` at once and reads every result. Meanwhile the test
//! polls the Runner session's counters through that follower; once 50 calls succeeded it
//! SIGKILLs the leader, waits for a new one and restarts the killed member. When the script
//! has all results it writes a `job-done` file and waits; the test then SIGKILLs member 1 (the
//! relay's first choice), or member 2 when member 1 is the client's follower, waits for the
//! other two to agree on a leader, and writes `go-nested`; the script then calls
//! `nested_ping`, whose instance opens an `flmping` session through `FLAME_ENDPOINT`.
//!
//! Checks: the script exited 0 with 500 results, none wrong, and the nested call's flmping
//! output; the Runner's application is unregistered afterwards, and the agent swept its
//! release.
//!
//! Caveat: the job must not finish before the first kill; the test fails (rather than
//! passing vacuously) if it does. `FLAME_CHAOS_RUNNER_CALLS` overrides the 500.

use crate::support::failover::kill_leader_sparing;
use crate::support::*;
use anyhow::{Context, bail, ensure};
use chaos_tests::flamepy::{flamepy_python, run_client_script};
use flame_proto::v1;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the script may run in all (first install included).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
/// How long the test waits for the job to reach the kill's threshold or to finish.
const PROGRESS: Duration = Duration::from_secs(180);

const PYPROJECT: &str = r#"[project]
name = "runner-chaos"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = []

[tool.setuptools]
py-modules = ["jobfns"]
"#;

const MODULE: &str = r#"
def triple(x):
    return 3 * x


def nested_ping():
    # Runs in an instance: FLAME_ENDPOINT is the agent's member relay.
    import flamepy

    ssn = flamepy.create_session("flmping")
    try:
        out = ssn.invoke(b"{}")
    finally:
        ssn.close()
    return out.decode() if isinstance(out, (bytes, bytearray)) else str(out)
"#;

const CLIENT: &str = r#"
import os, sys, time
os.chdir(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())
import flamepy
from flamepy.runner import Runner
from jobfns import nested_ping, triple

calls = int(os.environ["RUNNER_CALLS"])
name = os.environ["RUNNER_NAME"]
signals = os.environ["RUNNER_SIGNALS"]
with Runner(name) as runner:
    svc = runner.service(triple)
    futures = [svc(i) for i in range(calls)]
    results = [f.get() for f in futures]
    wrong = [i for i, r in enumerate(results) if r != 3 * i]
    print("RESULTS", len(results), "WRONG", len(wrong), wrong[:10])
    open(os.path.join(signals, "job-done"), "w").close()
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(signals, "go-nested")):
        if time.time() > deadline:
            sys.exit("no go-nested signal within 120 s")
        time.sleep(0.1)
    print("NESTED", runner.service(nested_ping)().get())
print("AFTER", flamepy.get_application(name) is None)
print("RUNNER JOB OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_job_survives_a_leader_sigkill_and_nested_clients_a_lost_member()
-> anyhow::Result<()> {
    let began = Instant::now();
    let calls = std::env::var("FLAME_CHAOS_RUNNER_CALLS")
        .ok()
        .map(|v| v.parse::<usize>())
        .transpose()
        .context("FLAME_CHAOS_RUNNER_CALLS must be a number")?
        .unwrap_or(500);
    let python = flamepy_python()?;
    let mut run = start_python("chaos-runner", &["node-a"]).await?;
    let follower = run.followers[0];
    let endpoint = run.cluster.member(follower)?.url();
    let agent = run.cluster.agent("node-a")?;
    let cache = agent.cache_endpoint().context("the agent runs a cache")?;
    let releases = agent.work_dir.join("releases");

    let project = tempfile::tempdir()?;
    std::fs::write(project.path().join("pyproject.toml"), PYPROJECT)?;
    std::fs::write(project.path().join("jobfns.py"), MODULE)?;
    let script = project.path().join("client.py");
    std::fs::write(&script, CLIENT)?;
    let signals = tempfile::tempdir()?;
    let name = format!("runner-chaos-{}", std::process::id());
    let env = [
        ("FLAME_CACHE_ENDPOINT", cache),
        ("RUNNER_CALLS", calls.to_string()),
        ("RUNNER_NAME", name.clone()),
        ("RUNNER_SIGNALS", signals.path().display().to_string()),
    ];
    let client = tokio::spawn(async move {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        run_client_script(&python, &script, &endpoint, &env, SCRIPT_DEADLINE).await
    });

    let faults: anyhow::Result<(u64, u64)> = async {
        let done = runner_succeeded(&run, follower, &name, calls / 10).await?;
        ensure!(
            done < calls,
            "all {calls} calls finished before the kill: raise FLAME_CHAOS_RUNNER_CALLS"
        );
        let kill = kill_leader_sparing(&mut run, follower).await?;
        println!(
            "killed leader {} at {done} of {calls} calls; member {} led after {:?}",
            kill.member, kill.new_leader, kill.elected_after
        );
        wait_for_file(&signals.path().join("job-done")).await?;
        let lost = if follower == 1 { 2 } else { 1 };
        run.cluster.kill(lost)?;
        let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|m| *m != lost).collect();
        run.cluster.wait_for_leader(&rest, STARTUP).await?;
        std::fs::write(signals.path().join("go-nested"), b"")?;
        Ok((kill.member, lost))
    }
    .await;
    let (killed, lost) = match faults {
        Ok(faults) => faults,
        Err(e) => {
            client.abort();
            bail!("{e}\n{}", agent_logs(&run));
        }
    };

    let script = client.await??;
    ensure!(
        script.passed("RUNNER JOB OK"),
        "the Runner job failed: {}\n{}",
        script.describe(),
        agent_logs(&run)
    );
    let expect = format!("RESULTS {calls} WRONG 0 []");
    ensure!(
        script.stdout.lines().any(|l| l.trim() == expect),
        "missing {expect:?}: {}",
        script.describe()
    );
    ensure!(
        script
            .stdout
            .lines()
            .any(|l| l.starts_with("NESTED") && l.contains("Completed on")),
        "the nested flmping call did not answer: {}",
        script.describe()
    );
    ensure!(
        script.stdout.lines().any(|l| l.trim() == "AFTER True"),
        "{}",
        script.describe()
    );
    poll("the agent to sweep the Runner's release", PROGRESS, || {
        let left = owned_releases(&releases, &name);
        async move { Ok(left.is_empty().then_some(())) }
    })
    .await?;
    println!(
        "{calls} Runner calls through leader {killed}'s SIGKILL, nested call with member {lost} \
         down; whole run {:?}",
        began.elapsed()
    );
    Ok(())
}

/// Waits until at least `count` tasks of the Runner session of application `app` succeeded,
/// read through `via`; returns how many had.
async fn runner_succeeded(
    run: &Running,
    via: u64,
    app: &str,
    count: usize,
) -> anyhow::Result<usize> {
    poll(
        &format!("{count} calls of {app} to succeed"),
        PROGRESS,
        || async move {
            let sessions = run
                .cluster
                .frontend(via)?
                .list_session(v1::ListSessionRequest {})
                .await?
                .into_inner()
                .sessions;
            let succeeded: i32 = sessions
                .iter()
                .filter(|s| s.spec.as_ref().is_some_and(|spec| spec.application == app))
                .filter_map(|s| s.status.as_ref().map(|st| st.succeed))
                .sum();
            let succeeded = usize::try_from(succeeded).unwrap_or(0);
            Ok((succeeded >= count).then_some(succeeded))
        },
    )
    .await
}

/// Waits for `path` to exist.
async fn wait_for_file(path: &Path) -> anyhow::Result<()> {
    poll(
        &format!("{} to appear", path.display()),
        PROGRESS,
        || async move { Ok(path.exists().then_some(())) },
    )
    .await
}

/// Release directories under `releases` installed for `app`.
fn owned_releases(releases: &Path, app: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(releases) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join(".flame-app")).is_ok_and(|owner| owner == app)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}
