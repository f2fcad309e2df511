//! The installer's vocabulary: which installers exist, the variables an installation hands
//! to the launch ([`InstallVar`], [`EnvMode`], [`compose`]), the code-10 error ([`fail`]) and
//! the defaults.
//!
//! Why a file of its own: [`super::install`] decides what to install, and needs
//! [`super::release`] and [`super::spec`]; those in turn need these words. Kept below all
//! three, it lets none of `install`, `release`, `spec`, `download` or `process` import a file
//! that imports it back.
//!
//! Caveat: nothing here touches the disk or the network; the directories named here are
//! created by whoever uses them.

use super::error::{BindCode, BindError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Python version used when neither the environment nor `$FLAME_HOME/lib` names one.
pub const DEFAULT_PYTHON_VERSION: &str = "3.12";
/// Default bound on one installation's `uv` run.
pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How an installer variable combines with a value the instance would already get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvMode {
    /// Put in front of the existing value, separated by `:`.
    Prepend,
    /// Set only when the variable is not set already.
    SetIfUnset,
}

/// One installer variable (spec section 7.2, "installer variables").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallVar {
    /// Variable name.
    pub name: String,
    /// The installer's value (a `:`-separated list for [`EnvMode::Prepend`]).
    pub value: String,
    /// How it combines with the existing value.
    pub mode: EnvMode,
}

impl InstallVar {
    /// A variable whose value goes in front of the existing one.
    pub fn prepend(name: &str, parts: &[PathBuf]) -> Self {
        let value = parts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        InstallVar {
            name: name.to_owned(),
            value,
            mode: EnvMode::Prepend,
        }
    }

    /// A variable set only when not already set.
    pub fn default_value(name: &str, value: impl Into<String>) -> Self {
        InstallVar {
            name: name.to_owned(),
            value: value.into(),
            mode: EnvMode::SetIfUnset,
        }
    }
}

/// The installers this agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// A Python package, or flamepy alone when there is no url.
    Python,
    /// A directory of executables and libraries.
    Binary,
}

impl Installer {
    /// Parses the application's `installer` field; `None` for none.
    pub fn parse(name: Option<&str>) -> Result<Option<Installer>, BindError> {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(n) if n.eq_ignore_ascii_case("python") => Ok(Some(Installer::Python)),
            Some(n) if n.eq_ignore_ascii_case("binary") => Ok(Some(Installer::Binary)),
            Some(n) => Err(fail(format!(
                "unknown installer {n:?} (this agent knows python and binary)"
            ))),
        }
    }

    /// The installer's name, as keyed and reported.
    pub fn name(self) -> &'static str {
        match self {
            Installer::Python => "python",
            Installer::Binary => "binary",
        }
    }
}

/// A code-10 bind error with `detail`.
pub fn fail(detail: impl AsRef<str>) -> BindError {
    BindError::new(BindCode::InstallFailed, detail)
}

/// uv's and pip's cache directories under the agent's `work_dir` (`cache/uv`, `cache/pip`),
/// where installs run by the agent and by python instances (`uv run`, nested installs) share
/// downloads across releases; set only when the environment does not set them already.
pub fn cache_vars(work_dir: &Path) -> Vec<InstallVar> {
    vec![
        InstallVar::default_value("UV_CACHE_DIR", uv_cache_dir(work_dir).display().to_string()),
        InstallVar::default_value(
            "PIP_CACHE_DIR",
            work_dir.join("cache").join("pip").display().to_string(),
        ),
    ]
}

/// uv's cache under the agent's `work_dir`.
pub fn uv_cache_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("cache").join("uv")
}

/// Applies installer variables on top of what the instance would otherwise get (`current`):
/// prepended lists go before a non-empty existing value; defaults are dropped when a value
/// exists. Returns the variables to set, in order.
pub fn compose(
    vars: &[InstallVar],
    current: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    vars.iter()
        .filter_map(|v| match v.mode {
            EnvMode::Prepend => Some(match current(&v.name).filter(|c| !c.is_empty()) {
                Some(existing) => (v.name.clone(), format!("{}:{existing}", v.value)),
                None => (v.name.clone(), v.value.clone()),
            }),
            EnvMode::SetIfUnset => current(&v.name)
                .is_none()
                .then(|| (v.name.clone(), v.value.clone())),
        })
        .collect()
}
