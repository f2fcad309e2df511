//! Claim: `flmctl local up`, by default, gives its instances Python for `flmrun` and the
//! Runner: `$FLAME_HOME/bin/uv` runs, flamepy 0.6.0 is under
//! `$FLAME_HOME/lib/python<ver>/site-packages`, and `flmrun`'s own command line (`uv run
//! --python python<ver> python -m ...` with that `PYTHONPATH`) imports flamepy 0.6.0.
//!
//! How: local up starts with the machine-wide Python cache (built on the first run, which
//! downloads uv and flamepy from PyPI; later runs reuse it), so the wait for the banner allows
//! for that download.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, free_base};

/// The first run on a machine downloads uv, flamepy and their dependencies.
const FIRST_RUN: Duration = Duration::from_secs(600);

#[test]
fn local_up_prepares_uv_and_flamepy_for_flmrun() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let base = free_base();
    let log = std::fs::File::create(dir.path().join("up.log"))?;
    let mut child = Command::new(BIN)
        .args(["local", "up", "--data-dir"])
        .arg(&data)
        .args(["--api-port", &base.to_string()])
        .args(["--raft-port", &(base + 100).to_string()])
        .args(["--cache-port", &(base + 200).to_string()])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let guard = support::Up(child);
    // Lines arrive on a channel so the wait is bounded even if local up printed nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + FIRST_RUN;
    let mut python_line = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("Python for flmrun and the Runner:") {
            python_line = Some(line.clone());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let python_line = python_line.expect("the banner names the Python it prepared");
    anyhow::ensure!(
        python_line.contains("with flamepy 0.6.0 and uv"),
        "Python was not prepared: {python_line}"
    );
    let version = python_line
        .split_once("Runner: python")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("python<ver> in the banner")
        .to_owned();
    let home = std::path::absolute(data.join("home"))?;
    let site = home.join(format!("lib/python{version}/site-packages"));
    anyhow::ensure!(
        site.join("flamepy/__init__.py").exists(),
        "{}",
        site.display()
    );
    let uv = home.join("bin/uv");
    let out = Command::new(&uv)
        .args([
            "run",
            "--no-project",
            "--python",
            &format!("python{version}"),
        ])
        .args([
            "python",
            "-c",
            "import importlib.metadata as m, flamepy; print(m.version('flamepy'))",
        ])
        .env("PYTHONPATH", &site)
        .env("UV_CACHE_DIR", dir.path().join("uv-cache"))
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && printed.trim() == "0.6.0",
        "flmrun's command line did not import flamepy 0.6.0: {printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(guard);
    Ok(())
}
