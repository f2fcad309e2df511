//! flamepy 0.6.0, unmodified, against a **follower** of a fresh three-process cluster: the
//! Python scenario in `frontend_flamepy.py` registers, lists, gets and unregisters applications;
//! creates, opens (matching and mismatched spec), gets, lists and closes sessions; creates,
//! gets, lists and watches tasks (Pending: there are no executors yet); and checks the
//! not-found, not-open and spec-mismatch errors with the specification's texts.
//!
//! Setup: Python comes from `scripts/flamepy-venv.sh` (set `FLAME_VENV` to reuse a venv), which
//! installs flamepy 0.6.0 from PyPI on first use. The script runs with `HOME` pointed at an
//! empty directory, so a developer's `~/.flame/flame.yaml` cannot redirect it.

use crate::frontend_support;

use anyhow::{Context, bail};
use frontend_support::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long the Python scenario may run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// Runs `scripts/flamepy-venv.sh` and returns the python it prints on its last line.
fn flamepy_python() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flamepy-venv.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (
        out.status.success(),
        stdout.lines().rev().find(|l| !l.trim().is_empty()),
    ) {
        (true, Some(path)) => Ok(PathBuf::from(path.trim())),
        _ => bail!(
            "{} failed ({}): it needs python3 and access to PyPI, or FLAME_VENV pointing at a \
             venv with flamepy 0.6.0\nstderr:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamepy_0_6_0_works_against_a_follower() -> anyhow::Result<()> {
    let python = flamepy_python()?;
    let run = start("frontend-flamepy").await?;
    let follower = run.followers[0];
    let endpoint = run.cluster.member(follower)?.url();
    let home = tempfile::tempdir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/frontend_flamepy.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("FLAME_ENDPOINT", &endpoint)
        .env("HOME", home.path())
        .env_remove("FLAME_CA_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", python.display()))?;
    let out = match tokio::time::timeout(SCRIPT_DEADLINE, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!("the flamepy scenario did not finish within {SCRIPT_DEADLINE:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("flamepy scenario passed") {
        bail!(
            "the flamepy scenario against follower {follower} ({endpoint}) failed ({}):\n\
             --- stdout:\n{stdout}\n--- stderr:\n{}\n--- member log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            run.cluster.log_tail(follower, 40)
        );
    }
    eprintln!("{stdout}");
    Ok(())
}
