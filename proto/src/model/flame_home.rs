//! The layout of `FLAME_HOME` that Python instances rely on (spec sections 5.2 and 7.6):
//! `bin/uv`, and flamepy under `lib/python<ver>/site-packages`.
//!
//! What: [`newest_python`] finds the newest `python<ver>` directory under `<home>/lib` (the
//! version an instance runs when its application names none), [`site_packages`] names
//! flamepy's directory for a version, and [`version_parts`] tells a version such as `3.12`
//! from anything else.
//!
//! Why here: the node agent's `python` installer and the `flmexec` service (whose Python
//! scripts may start Runners) both resolve the same layout, and both depend on this crate.
//!
//! Caveat: directories are compared numerically (`3.10` is newer than `3.9`); names that are
//! not `python` plus one to three numbers are ignored.

use std::path::{Path, PathBuf};

/// The numeric parts of a version such as `3.12`: one to three dot-separated numbers of at
/// most four digits each; `None` for anything else.
pub fn version_parts(version: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = version
        .split('.')
        .map(|p| {
            (!p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect();
    parts.filter(|p| (1..=3).contains(&p.len()))
}

/// The newest `<ver>` among the `python<ver>` directories in `<home>/lib`.
pub fn newest_python(home: &Path) -> Option<String> {
    let entries = std::fs::read_dir(home.join("lib")).ok()?;
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ver = name.strip_prefix("python")?.to_owned();
            Some((version_parts(&ver)?, ver))
        })
        .max()
        .map(|(_, ver)| ver)
}

/// flamepy's site-packages for Python `version` under `home`.
pub fn site_packages(home: &Path, version: &str) -> PathBuf {
    home.join("lib")
        .join(format!("python{version}"))
        .join("site-packages")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_one_to_three_small_numbers() {
        assert_eq!(version_parts("3.12"), Some(vec![3, 12]));
        assert_eq!(version_parts("3"), Some(vec![3]));
        assert_eq!(version_parts("3.12.1"), Some(vec![3, 12, 1]));
        for bad in ["", "3.", "3.x", "1.2.3.4", "../3", "12345"] {
            assert_eq!(version_parts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_newest_python_directory_wins_numerically() -> std::io::Result<()> {
        let home = tempfile::tempdir()?;
        assert_eq!(newest_python(home.path()), None);
        for dir in ["python3.9", "python3.10", "pythonx", "other"] {
            std::fs::create_dir_all(home.path().join("lib").join(dir))?;
        }
        assert_eq!(newest_python(home.path()).as_deref(), Some("3.10"));
        assert_eq!(
            site_packages(home.path(), "3.10"),
            home.path().join("lib/python3.10/site-packages")
        );
        Ok(())
    }
}
