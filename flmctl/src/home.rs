//! `FLAME_HOME` of a local cluster: what its instances find under `<data dir>/home`.
//!
//! What [`prepare`] makes:
//! - `bin/flmping-service` and `bin/flmexec-service`: links to this binary, which serves those
//!   built-in applications when run under their names;
//! - unless told not to, Python for `flmrun` and the Runner (spec sections 5.2 and 7.6):
//!   `bin/uv` and `lib/python<ver>/site-packages` holding flamepy 0.6.0, linked from a virtual
//!   environment that `python3 -m venv` and pip build once per machine and Python version
//!   ([`python_env_dir`]), so every local cluster (and every test) shares one download.
//!
//! Why a venv: flamepy's wheels (grpcio, pyarrow) are built for one Python, so the packages
//! must come from the interpreter the instances run (`uv run --python python<ver>` finds it on
//! `PATH`); a venv's pip installs exactly those, and `uv` comes as a pip package too.
//!
//! Caveats:
//! - Provisioning needs `python3` with `venv` and pip (Debian: `python3-venv`) and access to
//!   PyPI (or a configured index). A failure is reported with what to install, and the cluster
//!   still starts: flmping and shell tasks need no Python.
//! - Concurrent first runs are serialised with a lock file; an interrupted install is redone,
//!   since readiness is checked by importing flamepy, not by the directory existing.

use anyhow::{Context, bail};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The flamepy release the instances get (the one this project is compatible with).
pub const FLAMEPY_VERSION: &str = "0.6.0";

/// Built-in services served by this binary under their names.
pub const BUILTINS: [&str; 2] = ["flmping-service", "flmexec-service"];

/// What `FLAME_HOME` offers Python instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonHome {
    /// `major.minor` of the interpreter, as `FLAME_PYTHON_VERSION` names it.
    pub version: String,
    /// The virtual environment `bin/uv` and `lib/python<ver>` link into.
    pub env: PathBuf,
}

/// Makes `<data dir>/home` (see the module docs) and returns its absolute path, with the
/// Python it offers or why it offers none (`python3` names the interpreter, `None` skips it).
pub fn prepare(
    data_dir: &Path,
    python3: Option<&OsString>,
) -> anyhow::Result<(PathBuf, Result<PythonHome, anyhow::Error>)> {
    let home = std::path::absolute(data_dir.join("home"))?;
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let me = std::env::current_exe()?;
    for name in BUILTINS {
        relink(&me, &bin.join(name))?;
    }
    let python = match python3 {
        Some(python3) => provision(&home, python3),
        None => Err(anyhow::anyhow!("skipped (--no-python)")),
    };
    Ok((home, python))
}

/// Points `home` at a ready virtual environment for `python3`, building it first if needed.
fn provision(home: &Path, python3: &OsString) -> anyhow::Result<PythonHome> {
    let version = python_version(python3)?;
    let env = python_env_dir(&version)?;
    ensure_env(python3, &env)?;
    relink(&env.join("bin/uv"), &home.join("bin/uv"))?;
    let lib = home.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    relink(
        &env.join(format!("lib/python{version}")),
        &lib.join(format!("python{version}")),
    )?;
    Ok(PythonHome { version, env })
}

/// `major.minor` of `python3`; an error saying how to get one when it does not run.
fn python_version(python3: &OsString) -> anyhow::Result<String> {
    let out = Command::new(python3)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .stderr(Stdio::piped())
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install python3, or name another interpreter with \
                 FLAME_PYTHON3)",
                python3.to_string_lossy()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} -c 'import sys' failed: {}",
            python3.to_string_lossy(),
            tail(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Where the shared environment for Python `version` lives: `$FLAME_PYTHON_CACHE`, else
/// `$XDG_CACHE_HOME/flame`, else `~/.cache/flame`; then `python<ver>-flamepy-<flamepy>`.
pub fn python_env_dir(version: &str) -> anyhow::Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = var("FLAME_PYTHON_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("flame")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/flame")))
        .context("cannot tell where to keep Python for instances: set FLAME_PYTHON_CACHE")?;
    Ok(base.join(format!("python{version}-flamepy-{FLAMEPY_VERSION}")))
}

/// Makes `env` a venv of `python3` that imports flamepy [`FLAMEPY_VERSION`] and has `uv`,
/// unless it already is; one process at a time per environment.
fn ensure_env(python3: &OsString, env: &Path) -> anyhow::Result<()> {
    let parent = env.parent().unwrap_or(env);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = env.file_name().unwrap_or_default().to_string_lossy();
    let lock_path = parent.join(format!("{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if ready(env) {
        return Ok(());
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "Preparing Python for flmrun and the Runner in {} (once per machine): uv and \
         flamepy=={FLAMEPY_VERSION} from PyPI…",
        env.display()
    );
    run(
        Command::new(python3).arg("-m").arg("venv").arg(env),
        "python3 -m venv (Debian: apt install python3-venv)",
    )?;
    let pip = env.join("bin/python");
    run(
        Command::new(&pip).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            &format!("flamepy=={FLAMEPY_VERSION}"),
            "uv",
        ]),
        "pip install flamepy and uv (is PyPI reachable?)",
    )?;
    if !ready(env) {
        bail!(
            "{} was built but still cannot import flamepy {FLAMEPY_VERSION} or run uv",
            env.display()
        );
    }
    Ok(())
}

/// Whether `env` imports flamepy [`FLAMEPY_VERSION`] and runs `uv`.
fn ready(env: &Path) -> bool {
    let check = format!(
        "import importlib.metadata as m, flamepy; \
         assert m.version('flamepy') == '{FLAMEPY_VERSION}'"
    );
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    quiet(Command::new(env.join("bin/python")).args(["-c", &check]))
        && quiet(Command::new(env.join("bin/uv")).arg("--version"))
}

/// Runs `command` with its output shown (the user sees pip's progress); an error naming
/// `what` when it fails.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("{what}: cannot start"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Replaces whatever is at `link` with a symbolic link to `target`.
fn relink(target: &Path, link: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

/// The last line of a process's output, for error messages.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.trim().lines().last().unwrap_or("").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_is_an_error_saying_what_to_install() {
        let err = python_version(&OsString::from("/nonexistent/python3")).unwrap_err();
        assert!(err.to_string().contains("install python3"), "{err:#}");
    }

    #[test]
    fn the_shared_environment_is_named_by_python_and_flamepy_versions() {
        let dir = python_env_dir("3.11").expect("a cache directory");
        assert!(
            dir.ends_with("python3.11-flamepy-0.6.0"),
            "{}",
            dir.display()
        );
    }
}
