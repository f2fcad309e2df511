//! Builds and locates the binaries a whole-cluster test runs: `flame-control-plane`,
//! `flame-node-agent` and the SDK's `flmping-service`, and SDK examples ([`build_example`]).
//!
//! Why a nested build: `CARGO_BIN_EXE_*` only names binaries of the crate under test, and
//! this crate has none. [`build_binaries`] runs `cargo build -p flame-control-plane
//! -p flame-node-agent -p flame-sdk --bins` once per test process, into the target directory
//! and profile of the running test executable (both read from its own path, so
//! `CARGO_TARGET_DIR` and `--release` are respected), and returns `target/<profile>/<name>`.
//!
//! Caveat: builds for a `--target` triple are not supported by this lookup.

use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the built binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The control-plane member.
    pub control_plane: PathBuf,
    /// The node agent.
    pub node_agent: PathBuf,
    /// The built-in `flmping` service, to be placed in `<FLAME_HOME>/bin`.
    pub flmping_service: PathBuf,
    /// The built-in `flmexec` service, to be placed in `<FLAME_HOME>/bin`.
    pub flmexec_service: PathBuf,
}

/// Builds the binaries (once per process) and returns their paths.
pub fn build_binaries() -> Result<Binaries, HarnessError> {
    static BUILT: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::Build)
}

fn build() -> Result<Binaries, HarnessError> {
    let profile_dir = cargo_build(&[
        "-p",
        "flame-control-plane",
        "-p",
        "flame-node-agent",
        "-p",
        "flame-sdk",
        "--bins",
    ])?;
    Ok(Binaries {
        control_plane: found(profile_dir.join("flame-control-plane"))?,
        node_agent: found(profile_dir.join("flame-node-agent"))?,
        flmping_service: found(profile_dir.join("flmping-service"))?,
        flmexec_service: found(profile_dir.join("flmexec-service"))?,
    })
}

/// Builds the SDK example `name` (`cargo build -p flame-sdk --example <name>`, a no-op when
/// it is fresh) into the running test's target directory and profile, and returns
/// `target/<profile>/examples/<name>`.
///
/// Why a build and not a lookup: `cargo test --workspace` builds the SDK's examples, but
/// `cargo test -p chaos-tests` does not, and `CARGO_BIN_EXE_*` cannot name another crate's
/// example; building through the same nested cargo as [`build_binaries`] works for both.
pub fn build_example(name: &str) -> Result<PathBuf, HarnessError> {
    let profile_dir = cargo_build(&["-p", "flame-sdk", "--example", name])?;
    found(profile_dir.join("examples").join(name))
}

/// `path` if the build produced it.
fn found(path: PathBuf) -> Result<PathBuf, HarnessError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Build(format!(
            "{} missing after the build",
            path.display()
        )))
    }
}

/// The member binary built with the `failpoints` feature (`FAILPOINTS` in its environment
/// then arms them), as `flame-control-plane-failpoints` beside the plain one; built once per
/// process.
///
/// Why a copy: both builds write `target/<profile>/flame-control-plane`; the feature build is
/// copied away, and the plain build runs again (a no-op but for putting its binary back), so
/// every other test keeps the binary without fail points.
pub fn build_failpoint_member() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_failpoints().map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::Build)
}

fn build_failpoints() -> Result<PathBuf, HarnessError> {
    build_binaries()?;
    let member = ["-p", "flame-control-plane", "--bin", "flame-control-plane"];
    let with_features = [&member[..], &["--features", "failpoints"]].concat();
    let profile_dir = cargo_build(&with_features)?;
    let copy = profile_dir.join("flame-control-plane-failpoints");
    std::fs::copy(profile_dir.join("flame-control-plane"), &copy)?;
    cargo_build(&member)?;
    found(copy)
}

/// Runs `cargo build --quiet <args>` in the workspace, into the target directory and profile
/// of the running test executable; returns `target/<profile>`.
fn cargo_build(args: &[&str]) -> Result<PathBuf, HarnessError> {
    let fail = |m: String| HarnessError::Build(m);
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| fail("the test executable is outside a target directory".into()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| fail("no target directory".into()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail("unreadable profile directory".into()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
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
    let status = cmd
        .status()
        .map_err(|e| fail(format!("cannot run cargo build: {e}")))?;
    if !status.success() {
        return Err(fail(format!(
            "cargo build {} failed: {status}",
            args.join(" ")
        )));
    }
    Ok(profile_dir.to_path_buf())
}
