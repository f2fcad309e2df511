//! Sweeping release directories that nothing will use again.
//!
//! What: [`sweep`] removes, from an agent's `<work_dir>/releases`,
//! - every complete release whose application (named in its [`OWNER`] file) the caller says
//!   not to keep (the agent keeps the applications the cluster still has, and those its own
//!   assignments name);
//! - pointer files (`<name>-<hash>.current`) whose release is gone;
//! - temporary directories (`.tmp-*`) left by an agent process that no longer runs (one that
//!   crashed mid-install).
//!
//! Why: flamepy's Runner registers an application per job, uploads its package and installs
//! it on every node that runs it; on `close()` it unregisters the application and deletes the
//! package from the cache (spec section 8.2). Without a sweep every job would leave an
//! installed copy of its dependencies on every node for good.
//!
//! Caveats:
//! - A release is first renamed to `.trash-*` and then removed, so a binding never sees half
//!   of one; a binding that looked a release up just before the rename fails to start and is
//!   retried, which installs the package again.
//! - Releases written before owners were recorded have no [`OWNER`] file and are never swept.
//! - Blocking file-system work: run it on a blocking thread.

use super::{CURRENT_SUFFIX, MARKER};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file in a release naming the application it was installed for.
pub const OWNER: &str = ".flame-app";
/// Names trash directories apart within one agent process.
static TRASH_SEQ: AtomicU64 = AtomicU64::new(0);

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Release directory names removed, with the application each belonged to.
    pub releases: Vec<(String, String)>,
    /// Pointer files and stale temporary directories removed.
    pub leftovers: Vec<String>,
}

/// The applications owning complete releases under `releases` (empty when there is none).
pub fn owners(releases: &Path) -> Vec<String> {
    let mut owners: Vec<String> = release_dirs(releases)
        .into_iter()
        .filter_map(|(_, owner)| owner)
        .collect();
    owners.sort();
    owners.dedup();
    owners
}

/// Sweeps `releases` (see the module docs), keeping the releases of applications for which
/// `keep` is true.
pub fn sweep(releases: &Path, keep: impl Fn(&str) -> bool) -> Swept {
    let mut swept = Swept::default();
    for (dir, owner) in release_dirs(releases) {
        let Some(owner) = owner.filter(|o| !keep(o)) else {
            continue;
        };
        let name = file_name(&dir);
        let trash = releases.join(format!(
            ".trash-{name}-{}-{}",
            std::process::id(),
            TRASH_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::rename(&dir, &trash).and_then(|()| std::fs::remove_dir_all(&trash)) {
            Ok(()) => swept.releases.push((name, owner)),
            Err(e) => tracing::warn!(release = %dir.display(), error = %e, "cannot remove release"),
        }
    }
    for path in leftovers(releases) {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => swept.leftovers.push(file_name(&path)),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover"),
        }
    }
    swept
}

/// Complete releases under `releases`, with their owner when recorded.
fn release_dirs(releases: &Path) -> Vec<(PathBuf, Option<String>)> {
    let Ok(entries) = std::fs::read_dir(releases) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| !file_name(p).starts_with('.') && p.join(MARKER).is_file())
        .map(|p| {
            let owner = std::fs::read_to_string(p.join(OWNER)).ok();
            (p, owner.filter(|o| !o.is_empty()))
        })
        .collect()
}

/// Pointer files naming a missing release, and temporary or trash directories of agent
/// processes that are gone.
fn leftovers(releases: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(releases) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = file_name(p);
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                return writer_is_gone(&name);
            }
            name.ends_with(CURRENT_SUFFIX) && dangling_pointer(releases, p)
        })
        .collect()
}

/// Whether a pointer file names a release that no longer exists (or names nothing).
fn dangling_pointer(releases: &Path, pointer: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pointer) else {
        return false;
    };
    match text.lines().nth(1) {
        Some(name) if !name.contains('/') => !releases.join(name).join(MARKER).is_file(),
        _ => true,
    }
}

/// Whether the process that wrote `.tmp-<name>-<pid>-<seq>` is gone (not this process and
/// not alive), so its directory will never be finished or removed by it.
fn writer_is_gone(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (Some(_seq), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

/// The last component of `path`, lossily.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(root: &Path, name: &str, owner: Option<&str>) -> std::io::Result<PathBuf> {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("src"))?;
        std::fs::write(dir.join(MARKER), "file:///pkg")?;
        if let Some(owner) = owner {
            std::fs::write(dir.join(OWNER), owner)?;
        }
        Ok(dir)
    }

    #[test]
    fn releases_of_dropped_applications_go_and_the_rest_stay() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        let gone = release(root, "job-1-00aa", Some("job-1"))?;
        let kept = release(root, "job-2-00bb", Some("job-2"))?;
        let legacy = release(root, "old-00cc", None)?;
        std::fs::write(root.join("job-1-00aa.current"), "3\njob-1-00aa-v3-ff\n")?;
        std::fs::write(root.join("job-2-00bb.current"), "1\njob-2-00bb\n")?;
        assert_eq!(owners(root), ["job-1", "job-2"]);

        let swept = sweep(root, |app| app == "job-2");
        assert_eq!(swept.releases, [("job-1-00aa".into(), "job-1".into())]);
        assert_eq!(swept.leftovers, ["job-1-00aa.current"]);
        assert!(!gone.exists() && kept.exists() && legacy.exists());
        assert!(root.join("job-2-00bb.current").exists());
        Ok(())
    }

    #[test]
    fn temporary_directories_of_gone_processes_go_and_ours_stay() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        // Linux pids stay below 2^22, so this one is not running.
        let stale = root.join(".tmp-job-00aa-4294967294-0");
        let ours = root.join(format!(".tmp-job-00aa-{}-7", std::process::id()));
        let odd = root.join(".tmp-unparsable");
        for dir in [&stale, &ours, &odd] {
            std::fs::create_dir_all(dir)?;
        }
        let swept = sweep(root, |_| true);
        assert_eq!(swept.leftovers, [".tmp-job-00aa-4294967294-0"]);
        assert!(!stale.exists() && ours.exists() && odd.exists());
        Ok(())
    }

    #[test]
    fn a_missing_directory_sweeps_nothing() {
        let swept = sweep(Path::new("/nonexistent/flame/releases"), |_| false);
        assert_eq!(swept, Swept::default());
    }
}
