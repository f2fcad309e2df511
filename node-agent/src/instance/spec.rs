//! What to launch for one binding, and the paths and environment derived from it (spec
//! section 7.2).
//!
//! What: [`LaunchSpec`] is everything the executor loop knows when it binds an executor to a
//! session; [`LaunchSpec::plan`] turns it into a [`LaunchPlan`]: the expanded program and
//! arguments, the full environment overlay, and every path the binding owns.
//!
//! Paths (all derived from agent configuration plus the executor id, which is checked to be a
//! plain file name first):
//! - socket: `<socket_dir>/<executor_id>.sock`, at most 107 bytes;
//! - scratch: `<work_dir>/<executor_id>`, the working directory when the application has none,
//!   and its `tmp` subdirectory for `TMPDIR`/`TEMP`/`TMP`; both removed at stop;
//! - logs: `<log_dir>/<executor_id>.out` and `.err`, appended across bindings and kept.
//!
//! Caveats: environment precedence is agent environment < application `environments` <
//! installer variables < `extra_env` < Flame variables; installer lists (`PYTHONPATH`, `PATH`,
//! `LD_LIBRARY_PATH`) are prepended to the application's or agent's value and installer
//! defaults yield to an existing value. Expansion looks up the Flame variables and `extra_env`
//! first, then (for command and arguments only) the installer variables, then the agent's
//! own environment; application values do not see each other.

use super::error::BindError;
use super::expand::expand_vars;
use super::vars::{DEFAULT_INSTALL_TIMEOUT, InstallVar, compose};
use flame_proto::model::{Application, Environment};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default bound on process start plus socket readiness.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wait between SIGTERM and SIGKILL at stop.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Default bound on `OnSessionLeave`.
pub const DEFAULT_LEAVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest socket path, in bytes (`sun_path` is 108 bytes including the final NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Longest accepted executor id, in bytes.
pub const MAX_EXECUTOR_ID_LEN: usize = 64;

/// The parts of an application that decide how its instance is started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppLaunch {
    /// Application name, for logs and messages.
    pub name: String,
    /// Command, unexpanded.
    pub command: Option<String>,
    /// Arguments, unexpanded.
    pub arguments: Vec<String>,
    /// Environment, values unexpanded.
    pub environments: Vec<Environment>,
    /// Working directory; created when missing and never removed by the agent.
    pub working_directory: Option<PathBuf>,
    /// Installer (`python`, `binary`), when the application is installed before launch.
    pub installer: Option<String>,
    /// Package url for the installer, unexpanded.
    pub url: Option<String>,
}

impl From<&Application> for AppLaunch {
    fn from(app: &Application) -> Self {
        AppLaunch {
            name: app.name.clone(),
            command: app.spec.command.clone(),
            arguments: app.spec.arguments.clone(),
            environments: app.spec.environments.clone(),
            working_directory: app
                .spec
                .working_directory
                .as_deref()
                .filter(|wd| !wd.is_empty())
                .map(PathBuf::from),
            installer: app.spec.installer.clone(),
            url: app.spec.url.clone(),
        }
    }
}

/// Everything needed to start one instance for one binding.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// What to run.
    pub application: AppLaunch,
    /// The executor being bound; names the socket, scratch directory and log files.
    pub executor_id: String,
    /// The session being bound.
    pub session_id: String,
    /// `FLAME_ENDPOINT`: the cluster's Frontend URL.
    pub flame_endpoint: String,
    /// `FLAME_CACHE_ENDPOINT`, when a cache exists.
    pub cache_endpoint: Option<String>,
    /// `FLAME_CA_FILE`, when TLS is on.
    pub ca_file: Option<PathBuf>,
    /// `FLAME_HOME` as configured for the agent; exported and used for expansion. When `None`,
    /// the agent's own `FLAME_HOME` (if any) is inherited and used.
    pub flame_home: Option<PathBuf>,
    /// `FLAME_LOG` and `RUST_LOG` for the instance.
    pub log_level: String,
    /// More variables set for the instance (for example an installer's), overriding the
    /// application's and overridden by the Flame variables.
    pub extra_env: Vec<(String, String)>,
    /// The agent's work directory; scratch directories are created under it.
    pub work_dir: PathBuf,
    /// Where sockets are created.
    pub socket_dir: PathBuf,
    /// Where `<executor_id>.out` and `.err` go; `<work_dir>/logs` when `None`.
    pub log_dir: Option<PathBuf>,
    /// Bound on process start plus socket readiness.
    pub startup_timeout: Duration,
    /// Wait between SIGTERM and SIGKILL at stop.
    pub stop_grace: Duration,
    /// Bound on `OnSessionLeave`.
    pub leave_timeout: Duration,
    /// Bound on one installation's `uv` run.
    pub install_timeout: Duration,
    /// Installer variables, filled by [`super::Instance::launch`] from the installation;
    /// combined with the application's environment and the agent's by [`LaunchSpec::plan`].
    pub installed: Vec<InstallVar>,
}

impl LaunchSpec {
    /// A spec with the defaults: no cache, no TLS, `FLAME_HOME` inherited, log level from the
    /// agent's `RUST_LOG` (else `info`), and the default timeouts.
    pub fn new(
        application: AppLaunch,
        executor_id: impl Into<String>,
        session_id: impl Into<String>,
        flame_endpoint: impl Into<String>,
        work_dir: impl Into<PathBuf>,
        socket_dir: impl Into<PathBuf>,
    ) -> Self {
        LaunchSpec {
            application,
            executor_id: executor_id.into(),
            session_id: session_id.into(),
            flame_endpoint: flame_endpoint.into(),
            cache_endpoint: None,
            ca_file: None,
            flame_home: None,
            log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            extra_env: Vec::new(),
            work_dir: work_dir.into(),
            socket_dir: socket_dir.into(),
            log_dir: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            stop_grace: DEFAULT_STOP_GRACE,
            leave_timeout: DEFAULT_LEAVE_TIMEOUT,
            install_timeout: DEFAULT_INSTALL_TIMEOUT,
            installed: Vec::new(),
        }
    }
}

/// The files and directories one binding uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePaths {
    /// The Unix socket (`FLAME_INSTANCE_ENDPOINT`).
    pub socket: PathBuf,
    /// The per-executor scratch directory, removed at stop.
    pub scratch_dir: PathBuf,
    /// The per-instance temporary directory inside `scratch_dir`.
    pub tmp_dir: PathBuf,
    /// The process's working directory: the application's, or `scratch_dir`.
    pub working_dir: PathBuf,
    /// Where stdout is appended.
    pub stdout_log: PathBuf,
    /// Where stderr is appended.
    pub stderr_log: PathBuf,
}

/// A [`LaunchSpec`] resolved into exactly what gets started.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// The expanded command.
    pub program: String,
    /// The expanded arguments.
    pub args: Vec<String>,
    /// Variables set on top of the agent's environment, in the order they are applied.
    pub env: Vec<(String, String)>,
    /// The binding's paths.
    pub paths: InstancePaths,
}

/// Checks that an executor id is a plain, short file name: `[A-Za-z0-9._-]`, not starting
/// with `.`, at most [`MAX_EXECUTOR_ID_LEN`] bytes.
pub fn check_executor_id(id: &str) -> Result<(), BindError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty()
        || id.len() > MAX_EXECUTOR_ID_LEN
        || id.starts_with('.')
        || !id.chars().all(plain)
    {
        return Err(BindError::shim(format!(
            "invalid executor id {id:?}: it names files, so it must be 1-{MAX_EXECUTOR_ID_LEN} \
             characters from [A-Za-z0-9._-] not starting with '.'"
        )));
    }
    Ok(())
}

impl LaunchSpec {
    /// The paths of this binding, after checking the executor id and the socket path length.
    pub fn paths(&self) -> Result<InstancePaths, BindError> {
        check_executor_id(&self.executor_id)?;
        let id = &self.executor_id;
        let socket = self.socket_dir.join(format!("{id}.sock"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(BindError::shim(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH_BYTES} bytes; use a shorter \
                 socket directory",
                socket.display()
            )));
        }
        let scratch_dir = self.work_dir.join(id);
        let log_dir = self
            .log_dir
            .clone()
            .unwrap_or_else(|| self.work_dir.join("logs"));
        Ok(InstancePaths {
            tmp_dir: scratch_dir.join("tmp"),
            working_dir: self
                .application
                .working_directory
                .clone()
                .unwrap_or_else(|| scratch_dir.clone()),
            scratch_dir,
            stdout_log: log_dir.join(format!("{id}.out")),
            stderr_log: log_dir.join(format!("{id}.err")),
            socket,
        })
    }

    /// The Flame variables of spec section 7.2 for an instance using `paths`.
    fn flame_vars(&self, paths: &InstancePaths) -> Vec<(String, String)> {
        let text = |p: &Path| p.display().to_string();
        let mut vars = vec![
            ("FLAME_INSTANCE_ENDPOINT".to_owned(), text(&paths.socket)),
            ("FLAME_ENDPOINT".to_owned(), self.flame_endpoint.clone()),
        ];
        if let Some(cache) = &self.cache_endpoint {
            vars.push(("FLAME_CACHE_ENDPOINT".to_owned(), cache.clone()));
        }
        if let Some(ca) = &self.ca_file {
            vars.push(("FLAME_CA_FILE".to_owned(), text(ca)));
        }
        if let Some(home) = &self.flame_home {
            vars.push(("FLAME_HOME".to_owned(), text(home)));
        }
        vars.push(("FLAME_LOG".to_owned(), self.log_level.clone()));
        vars.push(("RUST_LOG".to_owned(), self.log_level.clone()));
        for name in ["TMPDIR", "TEMP", "TMP"] {
            vars.push((name.to_owned(), text(&paths.tmp_dir)));
        }
        vars
    }

    /// The installer variables combined with `app_env` (the application's expanded
    /// environment), falling back to the agent's own environment.
    fn installer_env(&self, app_env: &[(String, String)]) -> Vec<(String, String)> {
        compose(&self.installed, |name| {
            app_env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
        })
    }

    /// Resolves the spec: paths, expanded command and arguments, and the environment overlay.
    pub fn plan(&self) -> Result<LaunchPlan, BindError> {
        let paths = self.paths()?;
        let command = self
            .application
            .command
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                BindError::shim(format!(
                    "application {:?} has no command",
                    self.application.name
                ))
            })?;
        let flame_vars = self.flame_vars(&paths);
        let launch_env: HashMap<&str, &str> = self
            .extra_env
            .iter()
            .chain(&flame_vars)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let lookup = |name: &str| {
            launch_env
                .get(name)
                .map(|v| (*v).to_owned())
                .or_else(|| std::env::var(name).ok())
        };
        let mut env: Vec<(String, String)> = self
            .application
            .environments
            .iter()
            .map(|e| (e.name.clone(), expand_vars(&e.value, lookup)))
            .collect();
        let installer_env = self.installer_env(&env);
        env.extend(installer_env.iter().cloned());
        env.extend(self.extra_env.iter().cloned());
        env.extend(flame_vars.iter().cloned());
        // Command and arguments also see the installer variables (`python${FLAME_PYTHON_VERSION}`).
        let lookup = |name: &str| {
            launch_env
                .get(name)
                .map(|v| (*v).to_owned())
                .or_else(|| {
                    installer_env
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
                .or_else(|| std::env::var(name).ok())
        };
        Ok(LaunchPlan {
            program: expand_vars(command, lookup),
            args: self
                .application
                .arguments
                .iter()
                .map(|a| expand_vars(a, lookup))
                .collect(),
            env,
            paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> LaunchSpec {
        let app = AppLaunch {
            name: "app".into(),
            command: Some(command.into()),
            arguments: vec!["--home=${FLAME_HOME}".into(), "$FLAME_ENDPOINT".into()],
            environments: vec![
                Environment {
                    name: "FLAME_ENDPOINT".into(),
                    value: "overridden".into(),
                },
                Environment {
                    name: "APP_DIR".into(),
                    value: "${FLAME_HOME}/apps".into(),
                },
            ],
            working_directory: None,
            installer: None,
            url: None,
        };
        let mut s = LaunchSpec::new(app, "exec-1", "s1", "http://cp:8080", "/w", "/s");
        s.flame_home = Some("/opt/flame".into());
        s
    }

    fn last<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn command_arguments_and_app_environment_expand_from_the_launch_env() {
        let plan = spec("${FLAME_HOME}/bin/flmping-service").plan();
        let plan = plan.ok();
        let plan = plan.as_ref();
        assert_eq!(
            plan.map(|p| p.program.as_str()),
            Some("/opt/flame/bin/flmping-service")
        );
        assert_eq!(
            plan.map(|p| p.args.clone()),
            Some(vec![
                "--home=/opt/flame".to_owned(),
                "http://cp:8080".to_owned()
            ])
        );
        let env = plan.map(|p| p.env.clone()).unwrap_or_default();
        assert_eq!(last(&env, "APP_DIR"), Some("/opt/flame/apps"));
        assert_eq!(last(&env, "FLAME_ENDPOINT"), Some("http://cp:8080"));
        assert_eq!(
            last(&env, "FLAME_INSTANCE_ENDPOINT"),
            Some("/s/exec-1.sock")
        );
        assert_eq!(last(&env, "TMPDIR"), Some("/w/exec-1/tmp"));
    }

    #[test]
    fn installer_variables_are_visible_to_argument_expansion_and_prepend_to_app_values() {
        let mut s = spec("${FLAME_HOME}/bin/uv");
        s.application.arguments = vec!["--python".into(), "python${FLAME_PYTHON_VERSION}".into()];
        s.application.environments.push(Environment {
            name: "PYTHONPATH".into(),
            value: "/app/lib".into(),
        });
        // What the python installer hands a launch without a package (`install::python_vars`).
        s.installed = vec![
            InstallVar::prepend(
                "PYTHONPATH",
                &["/opt/flame/lib/python3.12/site-packages".into()],
            ),
            InstallVar::default_value("FLAME_PYTHON_VERSION", "3.12"),
        ];
        let plan = s.plan().ok();
        let plan = plan.as_ref();
        assert_eq!(
            plan.map(|p| p.args.clone()),
            Some(vec!["--python".to_owned(), "python3.12".to_owned()])
        );
        let env = plan.map(|p| p.env.clone()).unwrap_or_default();
        assert_eq!(
            last(&env, "PYTHONPATH"),
            Some("/opt/flame/lib/python3.12/site-packages:/app/lib")
        );
        assert_eq!(last(&env, "FLAME_PYTHON_VERSION"), Some("3.12"));
    }

    #[test]
    fn executor_ids_that_are_not_plain_file_names_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            let e = check_executor_id(bad).err();
            assert!(e.is_some_and(|e| e.code.value() == 11), "{bad:?}");
        }
        assert!(check_executor_id("2f1c9a7e-0d4b-4c55-9f0e-3c1b2a4d5e6f").is_ok());
    }

    #[test]
    fn overlong_socket_paths_and_missing_commands_are_shim_failures() {
        let mut s = spec("x");
        s.socket_dir = PathBuf::from(format!("/{}", "d".repeat(100)));
        assert!(
            s.plan()
                .err()
                .is_some_and(|e| e.message.contains("longer than"))
        );
        let mut s = spec("x");
        s.application.command = Some("  ".into());
        assert!(
            s.plan()
                .err()
                .is_some_and(|e| e.message.contains("has no command"))
        );
    }
}
