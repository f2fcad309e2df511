//! Helpers shared by the node agent's instance tests: the SDK's service binaries (built on
//! demand), a `FLAME_HOME` laid out as the spec expects, and launch specs in temporary
//! directories.
//!
//! Why build from here: `CARGO_BIN_EXE_*` only names binaries of the crate under test, and the
//! instance tests need `flmping-service` and `flmexec-service` from `flame-sdk`. The test runs
//! `cargo build -p flame-sdk --bins` once per test binary into the same target directory and
//! profile as itself (both read from the test executable's own path, so `CARGO_TARGET_DIR`
//! and `--release` are respected), then links the binaries into `<FLAME_HOME>/bin`.
//!
//! Caveat: builds for a `--target` triple are not supported by this lookup.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod leader;

use anyhow::{Context, bail};
use flame_node_agent::instance::{AppLaunch, LaunchSpec};
use flame_proto::v1;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The directory holding the built `flmping-service` and `flmexec-service`.
pub fn sdk_bin_dir() -> anyhow::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| build_sdk_bins().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Runs `cargo build -p flame-sdk --bins` for this test's target directory and profile.
fn build_sdk_bins() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable outside a target directory")?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("unreadable profile directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "flame-sdk",
            "--bins",
            "--target-dir",
        ])
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().context("running cargo build -p flame-sdk")?;
    if !status.success() {
        bail!("cargo build -p flame-sdk --bins failed: {status}");
    }
    for bin in ["flmping-service", "flmexec-service"] {
        let path = profile_dir.join(bin);
        if !path.is_file() {
            bail!("{} missing after the build", path.display());
        }
    }
    Ok(profile_dir.to_owned())
}

/// A temporary tree for one test: `home/bin` with the SDK's services, plus work and socket
/// directories.
pub struct Fixture {
    /// Root of everything; removed on drop.
    pub root: tempfile::TempDir,
    /// `FLAME_HOME`, with `bin/flmping-service` and `bin/flmexec-service`.
    pub home: PathBuf,
    /// The agent work directory.
    pub work: PathBuf,
    /// The socket directory.
    pub sockets: PathBuf,
}

impl Fixture {
    /// Builds the tree, linking the SDK's service binaries into `home/bin`.
    pub fn new() -> anyhow::Result<Fixture> {
        let bins = sdk_bin_dir()?;
        let root = tempfile::tempdir()?;
        let home = root.path().join("home");
        std::fs::create_dir_all(home.join("bin"))?;
        for bin in ["flmping-service", "flmexec-service"] {
            std::os::unix::fs::symlink(bins.join(bin), home.join("bin").join(bin))?;
        }
        Ok(Fixture {
            work: root.path().join("work"),
            sockets: root.path().join("s"),
            home,
            root,
        })
    }

    /// A launch spec for `app` as executor `executor_id` of session `sess-1`, with this
    /// fixture's directories and `FLAME_HOME`.
    pub fn spec(&self, app: AppLaunch, executor_id: &str) -> LaunchSpec {
        let mut spec = LaunchSpec::new(
            app,
            executor_id,
            "sess-1",
            "http://127.0.0.1:8080",
            &self.work,
            &self.sockets,
        );
        spec.flame_home = Some(self.home.clone());
        spec.log_level = "info".to_owned();
        spec
    }
}

/// An application running `command` with `arguments`.
pub fn app(command: &str, arguments: &[&str]) -> AppLaunch {
    AppLaunch {
        name: "test-app".to_owned(),
        command: Some(command.to_owned()),
        arguments: arguments.iter().map(|a| (*a).to_owned()).collect(),
        ..AppLaunch::default()
    }
}

/// The session context the tests enter.
pub fn session(common_data: Option<&[u8]>) -> v1::SessionContext {
    v1::SessionContext {
        session_id: "sess-1".to_owned(),
        application: Some(v1::ApplicationContext {
            name: "test-app".to_owned(),
            ..Default::default()
        }),
        common_data: common_data.map(<[u8]>::to_vec),
    }
}

/// Task `task_id` of `sess-1` with `input`.
pub fn task(task_id: u64, input: Option<&[u8]>) -> v1::TaskContext {
    v1::TaskContext {
        task_id: task_id.to_string(),
        session_id: "sess-1".to_owned(),
        input: input.map(<[u8]>::to_vec),
    }
}

/// A flmexec task input running `code` in bash.
pub fn shell(code: &str) -> Vec<u8> {
    serde_json::json!({ "language": "shell", "code": code })
        .to_string()
        .into_bytes()
}

/// The stdout bytes in a flmexec output.
pub fn exec_stdout(output: Option<&[u8]>) -> anyhow::Result<String> {
    let json: serde_json::Value = serde_json::from_slice(output.context("no output")?)?;
    let bytes: Vec<u8> = serde_json::from_value(json["data"].clone())?;
    Ok(String::from_utf8(bytes)?)
}

/// Waits until `condition` holds, checking every 10 ms, for at most `limit`.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
