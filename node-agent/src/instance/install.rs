//! Application installation before launch (spec section 7.6, bind code 10).
//!
//! What: [`install`] looks at the application's `installer` and `url` and returns the
//! installer variables ([`InstallVar`]) the launch overlays on the instance's environment:
//! - no `installer`: nothing (the `url` is ignored, as for `flmping`);
//! - `python` without `url`: `PYTHONPATH` gets flamepy's `$FLAME_HOME/lib/python<ver>/site-packages`
//!   and `FLAME_PYTHON_VERSION=<ver>`, which makes `flmrun`'s `python${FLAME_PYTHON_VERSION}`
//!   argument resolvable;
//! - `python` or `binary` with a `file://` url, an `http(s)://` url, or a
//!   `grpc://host:port/<key>` url of an object of the cache ([`super::download`]): the package
//!   (`.tar.gz`, `.tgz`, `.zip`, or a directory for `file://`) becomes a release under
//!   `<work_dir>/releases` ([`super::release`]); python packages get their dependencies from
//!   `uv pip install --target <release>/deps .`.
//!
//! `<ver>` is the launch environment's `FLAME_PYTHON_VERSION` (the application's, else the
//! agent's; it would win as an "already set" variable anyway), else the newest `python<ver>`
//! directory under `$FLAME_HOME/lib`, else 3.12.
//!
//! Why here: the spec makes installation part of binding; doing it in [`super::Instance::launch`]
//! gives every bind (and relaunch) the same path and turns every failure into a code-10
//! [`BindError`] that the executor loop retries with its bind backoff (the spec's recommended
//! improvement over caching a failure until restart).
//!
//! Python instances also get `UV_CACHE_DIR` and `PIP_CACHE_DIR` under the agent's work
//! directory ([`cache_vars`]), unless already set, and the agent's own `uv pip install` uses the
//! same uv cache, so a dependency is downloaded once per node.
//!
//! `http(s)://` packages are downloaded too ([`super::download::fetch_http`]).
//!
//! Caveats: `LD_LIBRARY_PATH` is not set for python packages (wheels carry their libraries
//! via RPATH). `uv` is looked up as `$FLAME_HOME/bin/uv`, then on `PATH`.

use super::error::BindError;
use super::expand::expand_vars;
use super::release::{self, Release};
use super::spec::LaunchSpec;
use super::vars::{DEFAULT_PYTHON_VERSION, InstallVar, Installer, cache_vars, fail};
use flame_proto::model::flame_home;
use std::path::{Path, PathBuf};

/// What the launch environment already holds, for version choice and "already set" checks:
/// the application's `environments` (expanded against `FLAME_HOME` and the agent's
/// environment), else the agent's own environment.
pub fn current_value(spec: &LaunchSpec, name: &str) -> Option<String> {
    let home = flame_home(spec);
    let lookup = |n: &str| match (&home, n) {
        (Some(h), "FLAME_HOME") => Some(h.display().to_string()),
        _ => std::env::var(n).ok(),
    };
    spec.application
        .environments
        .iter()
        .rev()
        .find(|e| e.name == name)
        .map(|e| expand_vars(&e.value, lookup))
        .or_else(|| std::env::var(name).ok())
}

/// `FLAME_HOME`: the spec's, else the agent's environment.
pub fn flame_home(spec: &LaunchSpec) -> Option<PathBuf> {
    spec.flame_home
        .clone()
        .or_else(|| std::env::var_os("FLAME_HOME").map(PathBuf::from))
        .filter(|h| !h.as_os_str().is_empty())
}

/// Installs `spec`'s application when it has an installer; returns the installer variables.
pub async fn install(spec: &LaunchSpec) -> Result<Vec<InstallVar>, BindError> {
    let Some(installer) = Installer::parse(spec.application.installer.as_deref())? else {
        return Ok(Vec::new());
    };
    let home = flame_home(spec);
    let version = python_version(
        current_value(spec, "FLAME_PYTHON_VERSION").as_deref(),
        home.as_deref(),
    )?;
    let url = spec
        .application
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let Some(url) = url else {
        if installer == Installer::Binary {
            return Err(fail("installer binary needs a url to install from"));
        }
        let mut vars = python_vars(&version, home.as_deref(), None);
        vars.extend(cache_vars(&spec.work_dir));
        return Ok(vars);
    };
    let url = expand_vars(url, |n| match (&home, n) {
        (Some(h), "FLAME_HOME") => Some(h.display().to_string()),
        _ => std::env::var(n).ok(),
    });
    let request = release::Request {
        app: spec.application.name.clone(),
        installer,
        url,
        python_version: version.clone(),
        work_dir: spec.work_dir.clone(),
        flame_home: home.clone(),
        ca_file: spec.ca_file.clone(),
        timeout: spec.install_timeout,
    };
    let release = release::obtain(request).await?;
    tracing::info!(
        application = %spec.application.name, release = %release.root.display(),
        "application installed"
    );
    Ok(match installer {
        Installer::Python => {
            let mut vars = python_vars(&version, home.as_deref(), Some(&release));
            vars.extend(cache_vars(&spec.work_dir));
            vars
        }
        Installer::Binary => binary_vars(&release),
    })
}

/// The Python version to use: `current` (validated), else the newest `python<ver>` under
/// `<home>/lib`, else [`DEFAULT_PYTHON_VERSION`].
pub fn python_version(current: Option<&str>, home: Option<&Path>) -> Result<String, BindError> {
    if let Some(v) = current.map(str::trim).filter(|v| !v.is_empty()) {
        return match flame_home::version_parts(v) {
            Some(_) => Ok(v.to_owned()),
            None => Err(fail(format!(
                "FLAME_PYTHON_VERSION {v:?} is not a version such as 3.12"
            ))),
        };
    }
    Ok(home
        .and_then(flame_home::newest_python)
        .unwrap_or_else(|| DEFAULT_PYTHON_VERSION.to_owned()))
}

/// The variables of the python installer, with or without an installed `release`.
pub fn python_vars(
    version: &str,
    home: Option<&Path>,
    release: Option<&Release>,
) -> Vec<InstallVar> {
    let mut pythonpath = Vec::new();
    let mut vars = Vec::new();
    if let Some(r) = release {
        pythonpath.push(r.deps());
        pythonpath.push(r.src());
        vars.push(InstallVar::prepend("PATH", &[r.deps().join("bin")]));
        vars.push(InstallVar::default_value(
            "FLAME_APP_DIR",
            r.src().display().to_string(),
        ));
    }
    match home {
        Some(h) => pythonpath.push(flame_home::site_packages(h, version)),
        None => {
            tracing::warn!("FLAME_HOME is not set; flamepy's site-packages is not on PYTHONPATH")
        }
    }
    if !pythonpath.is_empty() {
        vars.insert(0, InstallVar::prepend("PYTHONPATH", &pythonpath));
    }
    vars.push(InstallVar::default_value("FLAME_PYTHON_VERSION", version));
    vars
}

/// The variables of the binary installer for `release`.
pub fn binary_vars(release: &Release) -> Vec<InstallVar> {
    let src = release.src();
    vec![
        InstallVar::default_value("FLAME_APP_DIR", src.display().to_string()),
        InstallVar::prepend("PATH", &[src.join("bin"), src.clone()]),
        InstallVar::prepend("LD_LIBRARY_PATH", &[src.join("lib"), src.join("libs")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::vars::compose;

    fn home_with(versions: &[&str]) -> std::io::Result<tempfile::TempDir> {
        let home = tempfile::tempdir()?;
        for v in versions {
            std::fs::create_dir_all(home.path().join("lib").join(v))?;
        }
        Ok(home)
    }

    #[test]
    fn version_comes_from_the_environment_first() -> std::io::Result<()> {
        let home = home_with(&["python3.13"])?;
        assert_eq!(
            python_version(Some("3.11"), Some(home.path())).ok(),
            Some("3.11".into())
        );
        Ok(())
    }

    #[test]
    fn version_falls_back_to_the_newest_python_dir_numerically() -> std::io::Result<()> {
        let home = home_with(&["python3.9", "python3.12", "python3.10", "pythonX", "other"])?;
        assert_eq!(
            python_version(None, Some(home.path())).ok(),
            Some("3.12".into())
        );
        let home = home_with(&["python3.9", "python3.13"])?;
        assert_eq!(
            python_version(Some(" "), Some(home.path())).ok(),
            Some("3.13".into())
        );
        Ok(())
    }

    #[test]
    fn version_defaults_to_3_12_without_installed_pythons() -> std::io::Result<()> {
        let home = home_with(&[])?;
        assert_eq!(
            python_version(None, Some(home.path())).ok(),
            Some("3.12".into())
        );
        assert_eq!(python_version(None, None).ok(), Some("3.12".into()));
        Ok(())
    }

    #[test]
    fn versions_that_are_not_numbers_are_install_failures() {
        for bad in ["3.12/../../x", "three", "3..1", "1.2.3.4"] {
            let e = python_version(Some(bad), None).err();
            assert!(e.is_some_and(|e| e.code.value() == 10), "{bad}");
        }
    }

    #[test]
    fn unknown_installers_are_install_failures_and_case_is_ignored() {
        assert_eq!(
            Installer::parse(Some("Python")).ok(),
            Some(Some(Installer::Python))
        );
        assert_eq!(Installer::parse(Some("")).ok(), Some(None));
        let e = Installer::parse(Some("conda")).err();
        assert!(e.is_some_and(|e| e.message
            == "application installation failed: unknown installer \"conda\" (this agent knows python and binary)"));
    }

    #[test]
    fn python_without_url_exports_flamepy_site_packages_and_the_version() {
        let vars = python_vars("3.12", Some(Path::new("/opt/flame")), None);
        let env = compose(&vars, |_| None);
        assert_eq!(
            env,
            vec![
                (
                    "PYTHONPATH".into(),
                    "/opt/flame/lib/python3.12/site-packages".into()
                ),
                ("FLAME_PYTHON_VERSION".into(), "3.12".into()),
            ]
        );
    }

    #[test]
    fn uv_and_pip_caches_go_under_the_work_directory_unless_already_set() {
        let vars = cache_vars(Path::new("/var/flame"));
        let env = compose(&vars, |_| None);
        assert_eq!(
            env,
            vec![
                ("UV_CACHE_DIR".into(), "/var/flame/cache/uv".into()),
                ("PIP_CACHE_DIR".into(), "/var/flame/cache/pip".into()),
            ]
        );
        let env = compose(&vars, |n| (n == "UV_CACHE_DIR").then(|| "/mine".into()));
        assert_eq!(
            env,
            vec![("PIP_CACHE_DIR".into(), "/var/flame/cache/pip".into())]
        );
    }

    #[test]
    fn prepended_variables_keep_existing_values_and_defaults_yield_to_them() {
        let vars = python_vars("3.12", Some(Path::new("/h")), None);
        let env = compose(&vars, |n| match n {
            "PYTHONPATH" => Some("/app".into()),
            "FLAME_PYTHON_VERSION" => Some("3.11".into()),
            _ => None,
        });
        assert_eq!(
            env,
            vec![(
                "PYTHONPATH".into(),
                "/h/lib/python3.12/site-packages:/app".into()
            )]
        );
        let empty = compose(&vars, |n| (n == "PYTHONPATH").then(String::new));
        assert_eq!(empty[0].1, "/h/lib/python3.12/site-packages");
    }

    #[test]
    fn binary_release_puts_src_bin_and_src_on_path_and_libs_on_the_loader_path() {
        let release = Release {
            root: PathBuf::from("/r/app-1"),
        };
        let env = compose(&binary_vars(&release), |n| {
            (n == "PATH").then(|| "/usr/bin".into())
        });
        assert_eq!(
            env,
            vec![
                ("FLAME_APP_DIR".into(), "/r/app-1/src".into()),
                (
                    "PATH".into(),
                    "/r/app-1/src/bin:/r/app-1/src:/usr/bin".into()
                ),
                (
                    "LD_LIBRARY_PATH".into(),
                    "/r/app-1/src/lib:/r/app-1/src/libs".into()
                ),
            ]
        );
    }

    #[test]
    fn python_release_puts_deps_then_src_then_flamepy_on_pythonpath() {
        let release = Release {
            root: PathBuf::from("/r/p"),
        };
        let env = compose(
            &python_vars("3.12", Some(Path::new("/h")), Some(&release)),
            |_| None,
        );
        assert_eq!(
            env[0],
            (
                "PYTHONPATH".into(),
                "/r/p/deps:/r/p/src:/h/lib/python3.12/site-packages".into()
            )
        );
        assert!(env.contains(&("PATH".into(), "/r/p/deps/bin".into())));
    }
}
