//! Release directories: one installed package per (application, installer, url, Python
//! version), reused by every binding that asks for the same (spec section 7.6).
//!
//! What: [`obtain`] returns the complete release for a [`Request`], building it when missing:
//! the package (a `file://` path, or a `grpc://` object of the cache fetched by
//! [`super::download`] and written to `<tmp>/.package`) is unpacked into `<tmp>/src`
//! ([`super::archive`]); a python package must hold `pyproject.toml`, `setup.py` or
//! `setup.cfg` and gets `uv pip install --target <tmp>/deps .`; then a marker file is written
//! and `<tmp>` is renamed to `<work_dir>/releases/<name>-<hash>`.
//!
//! Cache packages: an object at a key can be put again, so its release is keyed by the
//! object's version and content too: `<name>-<hash>-v<version>-<content hash>`. A pointer file
//! `<name>-<hash>.current` (`<version>` and the release's directory name, replaced by rename)
//! names the release installed last for the url; each binding sends that version in its
//! `do_get`, and the cache answers "not modified" without sending the package when it is still
//! current. A changed object is downloaded, hashed and installed as a new release (or an
//! existing one with the same version and content is reused), and the pointer moves to it.
//!
//! Why the rename: a crash or a cancelled bind never leaves a directory under the final name,
//! so a release that exists (with its marker) is complete; two bindings installing the same
//! package race harmlessly, the loser discards its copy and uses the winner's.
//!
//! `http(s)://` packages are streamed into `<tmp>/.package` ([`download::fetch_http`]) and
//! unpacked the same way; their release is keyed by the url alone, like `file://`.
//!
//! Caveats: the hash is FNV-1a (stable across builds), not a cryptographic digest: keys come
//! from the replicated application spec, not from an adversary, and the content hash only tells versions of one object apart. An object
//! deleted and put again at exactly the version installed last is taken as unchanged (the
//! cache's versions restart after a delete); releases of older versions are not removed. An
//! unreachable cache fails the binding even when a release of the url is installed. Temporary
//! directories (`.tmp-*`) are removed on failure and on cancellation, but those of an agent
//! that crashed mid-install are left for an operator to remove; `uv` runs in the temporary
//! directory, so anything it records with an absolute `--target` path names that directory. `uv` runs
//! in its own process group, bounded by the request's timeout and killed when the bind is
//! cancelled.

use super::archive;
use super::download::{self, Fresh, Source};
use super::error::BindError;
use super::vars::{Installer, fail};
use bytes::Bytes;
use flame_cache::ObjectKey;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The file whose presence marks a release complete.
pub const MARKER: &str = ".flame-installed";
/// Suffix of the file naming the release a cache url installed last.
pub(crate) const CURRENT_SUFFIX: &str = ".current";
/// Where a downloaded package is written inside a temporary release directory.
const DOWNLOADED: &str = ".package";
/// How much of `uv`'s output a failure quotes, in bytes.
const UV_OUTPUT_TAIL: usize = 2048;
/// Names temporary directories apart within one agent process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// What to install.
#[derive(Debug, Clone)]
pub struct Request {
    /// Application name (part of the key, and of the directory name for humans).
    pub app: String,
    /// The installer.
    pub installer: Installer,
    /// The package url, expanded.
    pub url: String,
    /// The Python version (part of the key; passed to `uv`).
    pub python_version: String,
    /// The agent's work directory; releases go under `<work_dir>/releases`.
    pub work_dir: PathBuf,
    /// `FLAME_HOME`, where `bin/uv` is looked for first.
    pub flame_home: Option<PathBuf>,
    /// The CA verifying a `grpcs://` cache; `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on the `uv` run.
    pub timeout: Duration,
}

/// A complete release directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `<work_dir>/releases/<name>-<hash>`.
    pub root: PathBuf,
}

impl Release {
    /// The unpacked package.
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }

    /// Python dependencies (`uv pip install --target`).
    pub fn deps(&self) -> PathBuf {
        self.root.join("deps")
    }

    /// Whether the release is complete (it has its marker).
    fn is_complete(&self) -> bool {
        self.root.join(MARKER).is_file()
    }
}

/// A package to unpack: a local path, or downloaded bytes.
enum Package {
    /// A file or directory named by a `file://` url.
    Path(PathBuf),
    /// An object's bytes, written to [`DOWNLOADED`] before unpacking.
    Bytes(Bytes),
    /// An `http(s)://` download, already in this file (inside the temporary release).
    Downloaded(PathBuf),
}

/// FNV-1a's offset basis.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// Feeds `bytes` to the 64-bit FNV-1a state `h`.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// 64-bit FNV-1a over length-prefixed fields, as 16 hex digits.
pub fn key_hash(fields: &[&str]) -> String {
    let h = fields.iter().fold(FNV_BASIS, |h, field| {
        let h = fnv1a(h, &(field.len() as u64).to_le_bytes());
        fnv1a(h, field.as_bytes())
    });
    format!("{h:016x}")
}

/// 64-bit FNV-1a of a package's bytes, as 16 hex digits.
pub fn content_hash(data: &[u8]) -> String {
    format!("{:016x}", fnv1a(FNV_BASIS, data))
}

/// The release directory's name: a readable prefix of the application name and the hash.
fn release_name(req: &Request) -> String {
    let prefix: String = req
        .app
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(32)
        .collect();
    let hash = key_hash(&[
        &req.app,
        req.installer.name(),
        &req.url,
        &req.python_version,
    ]);
    format!("{prefix}-{hash}")
}

/// Returns the complete release for `req`, installing it first when needed.
pub async fn obtain(req: Request) -> Result<Release, BindError> {
    match Source::parse(&req.url)? {
        Source::File(path) => {
            let release = Release {
                root: releases_dir(&req).join(release_name(&req)),
            };
            if !release.is_complete() {
                install(&req, &release, Package::Path(path)).await?;
            }
            Ok(release)
        }
        Source::Http(url) => {
            let release = Release {
                root: releases_dir(&req).join(release_name(&req)),
            };
            if !release.is_complete() {
                install(&req, &release, Package::Downloaded(PathBuf::from(url))).await?;
            }
            Ok(release)
        }
        Source::Cache { endpoint, key } => obtain_cached(&req, &endpoint, &key).await,
    }
}

/// `<work_dir>/releases`.
fn releases_dir(req: &Request) -> PathBuf {
    releases_under(&req.work_dir)
}

/// The releases directory of the agent working in `work_dir`.
pub fn releases_under(work_dir: &Path) -> PathBuf {
    work_dir.join("releases")
}

/// The release of a cache url: the one installed last when the object is unchanged, else
/// the release of the object's current version and content, installed when missing.
async fn obtain_cached(
    req: &Request,
    endpoint: &str,
    key: &ObjectKey,
) -> Result<Release, BindError> {
    let releases = releases_dir(req);
    let base = release_name(req);
    let current = read_current(&releases, &base);
    let have = current.as_ref().map(|(version, _)| *version);
    let tls = flame_cache::client::ClientTls {
        ca_file: req.ca_file.clone(),
    };
    let (version, data) = match download::fetch(&req.url, endpoint, &tls, key, have).await? {
        Fresh::Object { version, data } => (version, data),
        Fresh::Unchanged => {
            return current.map(|(_, release)| release).ok_or_else(|| {
                fail(format!(
                    "package {}: the cache answered not modified",
                    req.url
                ))
            });
        }
    };
    let hashed = data.clone();
    let digest = tokio::task::spawn_blocking(move || content_hash(&hashed))
        .await
        .map_err(|e| fail(format!("hashing the package stopped: {e}")))?;
    let name = format!("{base}-v{version}-{digest}");
    let release = Release {
        root: releases.join(&name),
    };
    if !release.is_complete() {
        install(req, &release, Package::Bytes(data)).await?;
    }
    write_current(&releases, &base, version, &name);
    Ok(release)
}

/// The version and release a cache url installed last, when that release is complete.
fn read_current(releases: &Path, base: &str) -> Option<(u64, Release)> {
    let text = std::fs::read_to_string(releases.join(format!("{base}{CURRENT_SUFFIX}"))).ok()?;
    let mut lines = text.lines();
    let version = lines.next()?.parse().ok()?;
    let name = lines.next()?;
    if !name.starts_with(base) || name.contains('/') {
        return None;
    }
    let release = Release {
        root: releases.join(name),
    };
    release.is_complete().then_some((version, release))
}

/// Records `name` at `version` as the release `base`'s url installed last (write, then
/// rename). A failure only costs the next binding a download, so it is logged.
fn write_current(releases: &Path, base: &str, version: u64, name: &str) {
    let path = releases.join(format!("{base}{CURRENT_SUFFIX}"));
    let tmp = releases.join(format!(
        ".tmp-{base}{CURRENT_SUFFIX}-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&tmp, format!("{version}\n{name}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(file = %path.display(), error = %e, "cannot record the current release");
    }
}

/// Builds `release` from `package` in a temporary directory and renames it into place.
async fn install(req: &Request, release: &Release, package: Package) -> Result<(), BindError> {
    let name = release
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = releases_dir(req).join(format!(
        ".tmp-{name}-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // Removes the temporary directory however this ends: failure, or a cancelled bind.
    let _cleanup = TmpDir(tmp.clone());
    build(req, package, &tmp).await?;
    publish(&tmp, &release.root)
}

/// A temporary release directory, removed (when still there) on drop.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.0)
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove temporary release");
        }
    }
}

/// Builds a release in `tmp`: unpack, check, install dependencies, write the marker.
async fn build(req: &Request, package: Package, tmp: &Path) -> Result<(), BindError> {
    let src = tmp.join("src");
    let package = match package {
        Package::Downloaded(url) => {
            std::fs::create_dir_all(tmp)
                .map_err(|e| fail(format!("cannot create {}: {e}", tmp.display())))?;
            let file = tmp.join(DOWNLOADED);
            let url = url.to_string_lossy();
            let limit = download::MAX_HTTP_PACKAGE_BYTES;
            download::fetch_http(&url, &file, limit, req.timeout, req.ca_file.as_deref()).await?;
            Package::Downloaded(file)
        }
        other => other,
    };
    let (url, tmp_owned) = (req.url.clone(), tmp.to_owned());
    let unpacked = tokio::task::spawn_blocking(move || unpack(package, &url, &tmp_owned))
        .await
        .map_err(|e| fail(format!("unpacking stopped: {e}")))?;
    unpacked.map_err(fail)?;
    if req.installer == Installer::Python {
        let project = ["pyproject.toml", "setup.py", "setup.cfg"];
        if !project.iter().any(|f| src.join(f).is_file()) {
            return Err(fail(format!(
                "package {} has no pyproject.toml, setup.py or setup.cfg",
                req.url
            )));
        }
        let uv = find_uv(
            req.flame_home.as_deref(),
            std::env::var_os("PATH").as_deref(),
        )?;
        run_uv(&uv, req, &src, &tmp.join("deps")).await?;
    }
    // The owner first: a release with its marker always names its application for the sweep.
    for (file, text) in [
        (gc::OWNER, req.app.as_bytes()),
        (MARKER, req.url.as_bytes()),
    ] {
        std::fs::write(tmp.join(file), text)
            .map_err(|e| fail(format!("cannot write {}: {e}", tmp.join(file).display())))?;
    }
    Ok(())
}

/// Unpacks `package` (from `url`) into `<tmp>/src` and hoists a single top directory; a
/// downloaded package is written to `<tmp>/.package` first and removed after. Blocking.
fn unpack(package: Package, url: &str, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src)
        .map_err(|e| format!("cannot create release directory {}: {e}", src.display()))?;
    match package {
        Package::Path(path) => archive::unpack(&path, &src)?,
        Package::Bytes(data) => {
            let file = tmp.join(DOWNLOADED);
            std::fs::write(&file, &data)
                .map_err(|e| format!("cannot write package {url} to {}: {e}", file.display()))?;
            archive::unpack_named(&file, url, &src)?;
            std::fs::remove_file(&file)
                .map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
        }
        Package::Downloaded(file) => {
            archive::unpack_named(&file, url, &src)?;
            std::fs::remove_file(&file)
                .map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
        }
    }
    archive::hoist_single_dir(&src).map_err(|e| format!("cannot arrange {}: {e}", src.display()))
}

/// Renames the built `tmp` to `root`; if another install won the race, keeps its release.
fn publish(tmp: &Path, root: &Path) -> Result<(), BindError> {
    if root.exists() && !root.join(MARKER).is_file() {
        // Not made by this code (every release is renamed in complete); replace it.
        tracing::warn!(release = %root.display(), "removing an incomplete release");
        let _ = std::fs::remove_dir_all(root);
    }
    match std::fs::rename(tmp, root) {
        Ok(()) => Ok(()),
        Err(_) if root.join(MARKER).is_file() => Ok(()),
        Err(e) => Err(fail(format!(
            "cannot move release into {}: {e}",
            root.display()
        ))),
    }
}

/// `uv`: `<home>/bin/uv` when it exists, else the first `uv` on `path`.
pub fn find_uv(home: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, BindError> {
    let from_home = home.map(|h| h.join("bin").join("uv"));
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("uv"));
    from_home
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            fail("uv was not found in $FLAME_HOME/bin nor on PATH; it is needed to install python packages")
        })
}

/// Runs `uv pip install --target <deps> --python <ver> .` in `src`, bounded by the timeout.
async fn run_uv(uv: &Path, req: &Request, src: &Path, deps: &Path) -> Result<(), BindError> {
    let mut cmd = tokio::process::Command::new(uv);
    cmd.args(["pip", "install", "--target"])
        .arg(deps)
        .args(["--python", &req.python_version, "."])
        .current_dir(src)
        .env(
            "UV_CACHE_DIR",
            std::env::var_os("UV_CACHE_DIR")
                .unwrap_or_else(|| super::vars::uv_cache_dir(&req.work_dir).into_os_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", uv.display())))?;
    let guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let output = tokio::time::timeout(req.timeout, child.wait_with_output()).await;
    let output = match output {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(fail(format!("uv could not be waited for: {e}"))),
        Err(_) => {
            return Err(fail(format!(
                "uv pip install did not finish within {}s",
                req.timeout.as_secs()
            )));
        }
    };
    drop(guard);
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if text.len() > UV_OUTPUT_TAIL {
        let cut = text.ceil_char_boundary(text.len() - UV_OUTPUT_TAIL);
        text = text.split_off(cut);
    }
    Err(fail(format!(
        "uv pip install failed ({}): {text}",
        output.status
    )))
}

/// Kills a `uv` process group when dropped (timeout or cancelled bind); a finished run has
/// no group left, so the signal is then harmless.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = super::process::signal_group(pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_field_and_are_stable() {
        let a = key_hash(&["app", "python", "file:///p.tgz", "3.12"]);
        assert_eq!(a, key_hash(&["app", "python", "file:///p.tgz", "3.12"]));
        assert_ne!(a, key_hash(&["app", "python", "file:///p.tgz", "3.13"]));
        assert_ne!(a, key_hash(&["app", "binary", "file:///p.tgz", "3.12"]));
        assert_ne!(key_hash(&["ab", "c"]), key_hash(&["a", "bc"]));
        assert_eq!(key_hash(&[]), "cbf29ce484222325");
    }

    #[test]
    fn content_hashes_tell_bytes_apart() {
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
        assert_ne!(content_hash(b"abc"), content_hash(b"abd"));
    }

    #[test]
    fn uv_is_found_in_flame_home_first_then_on_path_else_a_clear_failure() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let home = tmp.path().join("home");
        let other = tmp.path().join("other");
        std::fs::create_dir_all(home.join("bin"))?;
        std::fs::create_dir_all(&other)?;
        std::fs::write(other.join("uv"), b"")?;
        let path = std::env::join_paths([&other]).map_err(std::io::Error::other)?;
        assert_eq!(
            find_uv(Some(&home), Some(&path)).ok(),
            Some(other.join("uv"))
        );
        std::fs::write(home.join("bin/uv"), b"")?;
        assert_eq!(
            find_uv(Some(&home), Some(&path)).ok(),
            Some(home.join("bin/uv"))
        );
        let e = find_uv(None, None).err();
        assert!(e.is_some_and(|e| e.message.contains("uv was not found")));
        Ok(())
    }

    #[tokio::test]
    async fn python_packages_without_a_project_file_are_refused_and_leave_no_release()
    -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let pkg = tmp.path().join("pkg");
        std::fs::create_dir_all(&pkg)?;
        std::fs::write(pkg.join("main.py"), b"print(1)")?;
        let req = Request {
            app: "py".into(),
            installer: Installer::Python,
            url: format!("file://{}", pkg.display()),
            python_version: "3.12".into(),
            work_dir: tmp.path().join("work"),
            flame_home: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
        };
        let e = obtain(req).await.err();
        assert!(e.is_some_and(|e| e.message.contains("has no pyproject.toml")));
        let left = std::fs::read_dir(tmp.path().join("work/releases"))?.count();
        assert_eq!(left, 0, "a failed install left a directory behind");
        Ok(())
    }
}

#[cfg(test)]
mod cache_tests;
pub mod gc;
