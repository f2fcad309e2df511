//! Claims: flamepy 0.6.0's `Runner`, unmodified, works end to end against `flmctl local up`
//! through a follower (the scenarios and their checks are `chaos_tests::runner`'s, which the
//! multi-process harness runs too):
//! - a function over a list of inputs, a numpy dependency installed by uv from PyPI, and a
//!   stateful object; on close its application, release directory and cache objects are gone;
//! - a Runner nested in a task, and an `flmexec` Python script, start Runners of their own on
//!   the same cluster (through the agent's member relay, `FLAME_ENDPOINT` in the instance);
//! - a dependency that cannot be resolved, or a Python that is not installed, fails the
//!   bindings with the installer's message (a code-1001 session event) and leaves no release.
//!
//! How: local up prepares Python for flmrun (uv and flamepy under `FLAME_HOME`); each client
//! script talks to member 2 and the node's cache.

use crate::support::{Up, free_base};
use chaos_tests::flamepy::flamepy_python;
use chaos_tests::runner::{self, Target};

/// Starts local up with Python under a new directory; returns it with the scenarios' target.
fn local() -> anyhow::Result<(tempfile::TempDir, Up, Target)> {
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let (up, _) = Up::start_with(dir.path(), base, true);
    let target = Target {
        python: flamepy_python()?,
        endpoint: format!("http://127.0.0.1:{}", base + 1),
        cache: format!("grpc://127.0.0.1:{}", base + 200),
        releases: dir.path().join("data/agent/releases"),
        scratch: dir.path().to_owned(),
    };
    Ok((dir, up, target))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_runs_functions_with_a_numpy_dependency_and_a_stateful_object_then_cleans_up()
-> anyhow::Result<()> {
    let (_dir, _up, target) = local()?;
    runner::basic(&target).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_nested_in_a_task_and_an_flmexec_script_start_runners_on_the_same_cluster()
-> anyhow::Result<()> {
    let (_dir, _up, target) = local()?;
    runner::nested(&target).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_packages_fail_their_bindings_naming_the_cause_and_leave_no_release()
-> anyhow::Result<()> {
    let (_dir, _up, target) = local()?;
    runner::broken(&target).await
}
