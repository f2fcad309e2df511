//! Claim: flamepy 0.6.0's `Runner`, unmodified, works end to end through a follower of a
//! cluster of separate processes (three members, one node agent): the scenarios of
//! `chaos_tests::runner`, which the `flmctl local up` tests run too:
//! - a function over a list, a numpy dependency installed by uv from PyPI, a stateful object,
//!   then the application, its release and its cache objects gone;
//! - a Runner nested in a task and an `flmexec` script starting a Runner;
//! - a broken package (an unresolvable dependency, a Python that is not installed) failing its
//!   bindings with the installer's message and leaving no release.
//!
//! How: one cluster for the three scenarios, run one after the other (each uses its own
//! application names); the agent's `FLAME_HOME` gets the test venv's `uv` and flamepy.

use crate::support::*;
use chaos_tests::runner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamepy_runner_projects_work_through_a_follower_of_a_multi_process_cluster()
-> anyhow::Result<()> {
    let run = start_python("chaos-runner-projects", &["node-a"]).await?;
    let scratch = tempfile::tempdir()?;
    let target = runner_target(&run, "node-a", scratch.path())?;
    // Every scenario runs, and every failure is reported together.
    let failures: Vec<String> = [
        ("basic", runner::basic(&target).await),
        ("nested", runner::nested(&target).await),
        ("broken", runner::broken(&target).await),
    ]
    .into_iter()
    .filter_map(|(name, outcome)| outcome.err().map(|e| format!("scenario {name}: {e:#}")))
    .collect();
    anyhow::ensure!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        agent_logs(&run)
    );
    Ok(())
}
