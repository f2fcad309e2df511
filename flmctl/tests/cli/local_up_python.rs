//! Claim: `flmctl local up`, by default, gives its instances Python for `flmrun` and the
//! Runner: `$FLAME_HOME/bin/uv` runs, flamepy 0.6.0 is under
//! `$FLAME_HOME/lib/python<ver>/site-packages`, and `flmrun`'s own command line (`uv run
//! --python python<ver> python -m ...` with that `PYTHONPATH`) imports flamepy 0.6.0.
//!
//! How: local up starts with the machine-wide Python cache (built on the first run, which
//! downloads uv and flamepy from PyPI; later runs reuse it).

use crate::support::{Up, free_base};
use std::process::Command;

#[test]
fn local_up_prepares_uv_and_flamepy_for_flmrun() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (up, printed) = Up::start_with(dir.path(), free_base(), true);
    let python_line = printed
        .iter()
        .find(|l| l.contains("Python for flmrun and the Runner:"))
        .expect("the banner names the Python it prepared");
    anyhow::ensure!(
        python_line.contains("with flamepy 0.6.0 and uv"),
        "Python was not prepared: {python_line}"
    );
    let version = python_line
        .split_once("Runner: python")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("python<ver> in the banner")
        .to_owned();
    let home = std::path::absolute(dir.path().join("data/home"))?;
    let site = home.join(format!("lib/python{version}/site-packages"));
    anyhow::ensure!(
        site.join("flamepy/__init__.py").exists(),
        "{}",
        site.display()
    );
    let out = Command::new(home.join("bin/uv"))
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
    drop(up);
    Ok(())
}
