//! flamepy 0.6.0 in whole-cluster tests: the venv's python and bounded runs of client scripts.
//!
//! The venv comes from `scripts/flamepy-venv.sh` (idempotent; set `FLAME_VENV` to reuse one),
//! which installs flamepy==0.6.0 from PyPI on first use and prints the interpreter on its last
//! stdout line; it runs once per test binary. Client scripts run with `HOME` pointed at an empty
//! directory, so a developer's `~/.flame/flame.yaml` cannot redirect them, and `FLAME_ENDPOINT`
//! set to the member under test.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The venv's python, made by `scripts/flamepy-venv.sh` once per test binary.
pub fn flamepy_python() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(make_venv)
        .clone()
        .map_err(anyhow::Error::msg)
}

fn make_venv() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flamepy-venv.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (
        out.status.success(),
        stdout.lines().rev().find(|l| !l.trim().is_empty()),
    ) {
        (true, Some(path)) => Ok(PathBuf::from(path.trim())),
        _ => Err(format!(
            "{} failed ({}): it needs python3 and access to PyPI, or FLAME_VENV pointing at a \
             venv with flamepy 0.6.0\nstderr:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The venv as `FLAME_HOME`'s Python for node agents: its `bin/uv` and its `lib/python<ver>`
/// directory (flamepy's site-packages), with `<ver>`.
pub fn flamepy_home_parts() -> anyhow::Result<(PathBuf, PathBuf, String)> {
    let python = flamepy_python()?;
    let venv = python
        .parent()
        .and_then(Path::parent)
        .context("the venv's python is not in <venv>/bin")?;
    let lib = std::fs::read_dir(venv.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        })
        .context("the venv has no lib/python<ver>")?;
    let version = lib
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("python").to_owned())
        .unwrap_or_default();
    Ok((venv.join("bin/uv"), lib, version))
}

/// A script under `chaos-tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// What a finished client script left behind.
pub struct ScriptRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed to stdout.
    pub stdout: String,
    /// Everything it printed to stderr.
    pub stderr: String,
}

impl ScriptRun {
    /// Whether it exited 0 and printed `marker` on stdout.
    pub fn passed(&self, marker: &str) -> bool {
        self.status.success() && self.stdout.lines().any(|l| l.trim() == marker)
    }

    /// Status, stdout and stderr, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "exit status {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `script` with `python` against `endpoint` (`FLAME_ENDPOINT`) with `HOME` set to an
/// empty temporary directory and the variables in `env`. If it has not finished within
/// `deadline` it is killed and the error carries what it printed so far.
pub async fn run_client_script(
    python: &Path,
    script: &Path,
    endpoint: &str,
    env: &[(&str, String)],
    deadline: Duration,
) -> anyhow::Result<ScriptRun> {
    let home = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(python)
        .arg("-u")
        .arg(script)
        .env("FLAME_ENDPOINT", endpoint)
        .env("HOME", home.path())
        .env_remove("FLAME_CA_FILE")
        .env_remove("FLAME_CACHE_ENDPOINT")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", python.display()))?;
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let status = tokio::time::timeout(deadline, child.wait()).await;
    if status.is_err() {
        // Killing closes the pipes, so the readers finish.
        child.kill().await?;
    }
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    match status {
        Ok(status) => Ok(ScriptRun {
            status: status?,
            stdout,
            stderr,
        }),
        Err(_) => bail!(
            "{} did not finish within {deadline:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
            script.display()
        ),
    }
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
