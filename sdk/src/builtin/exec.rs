//! `flmexec`: run a shell or Python script from the task input (spec section 7.7).
//!
//! What: the input is JSON `{"language": "python"|"shell", "runtime"?: string, "code": string,
//! "input"?: [byte values]}`. The script runs with `input` on its stdin; on exit status 0 the
//! task output is JSON `{"data": [byte values of stdout]}`. A non-zero exit (or death by a
//! signal) is a task failure whose message quotes the tail of the script's stderr.
//!
//! How each language runs:
//! - `shell`: `bash -c <code>`. `runtime` is ignored.
//! - `python`: `uv run [--python <python>] python -c <code>` when `uv` is on `PATH` or at
//!   `$FLAME_HOME/bin/uv`; otherwise `python<ver>` when the Python is a version such as
//!   `3.11`, else `python3`. The Python is `runtime` when given, else the newest one
//!   `FLAME_HOME` holds flamepy for (`lib/python<ver>`, as for `flmrun`), and that flamepy's
//!   site-packages go first on the script's `PYTHONPATH`: so a script can `import flamepy` and
//!   start a Runner or open sessions on the cluster (spec checklist item 36).
//!
//! Caveats: the script inherits the instance's environment and working directory, so nested
//! clients find the cluster through `FLAME_ENDPOINT`. There is no timeout here (the agent owns
//! task timeouts); the child is killed if the invocation is dropped. Stdout is held in memory.

use super::tail_text;
use crate::service::{FlameService, ServiceError, TaskContext};
use bytes::Bytes;
use flame_proto::model::flame_home;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How much of a failing script's stderr its failure message quotes, in bytes.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// A parsed `flmexec` task input.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecRequest {
    /// `python` or `shell` (case-insensitive).
    pub language: String,
    /// Interpreter version hint for Python, such as `3.11`.
    #[serde(default)]
    pub runtime: Option<String>,
    /// The script's source.
    pub code: String,
    /// Bytes written to the script's stdin.
    #[serde(default)]
    pub input: Option<Vec<u8>>,
}

impl ExecRequest {
    /// Parses task input; absent input is an error because `language` and `code` are required.
    pub fn parse(input: Option<&[u8]>) -> Result<ExecRequest, ServiceError> {
        let input = input.ok_or_else(|| {
            ServiceError::InvalidInput("flmexec needs JSON input with language and code".into())
        })?;
        serde_json::from_slice(input).map_err(|e| {
            ServiceError::InvalidInput(format!(
                "flmexec expects JSON {{\"language\": \"python\"|\"shell\", \"code\": ..., \
                 \"input\"?: [bytes]}}: {e}"
            ))
        })
    }
}

/// A script language `flmexec` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `bash -c`.
    Shell,
    /// Python through `uv` or `python3`.
    Python,
}

impl Language {
    /// Parses a `language` field.
    pub fn parse(name: &str) -> Result<Language, ServiceError> {
        match name.to_ascii_lowercase().as_str() {
            "shell" => Ok(Language::Shell),
            "python" => Ok(Language::Python),
            other => Err(ServiceError::InvalidInput(format!(
                "unsupported language {other:?}; flmexec runs \"python\" or \"shell\""
            ))),
        }
    }
}

/// The `flmexec` service.
#[derive(Debug, Clone, Default)]
pub struct ExecService {
    /// `uv`, when found at construction.
    uv: Option<PathBuf>,
    /// `FLAME_HOME`, whose `lib/python<ver>/site-packages` (flamepy) Python scripts import.
    flame_home: Option<PathBuf>,
}

impl ExecService {
    /// A service that uses `uv` from `PATH` or `$FLAME_HOME/bin` for Python, if there is one.
    pub fn new() -> Self {
        let flame_home = std::env::var_os("FLAME_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let flame_home_uv = flame_home.as_ref().map(|h| h.join("bin/uv"));
        let uv = find_on_path("uv").or(flame_home_uv.filter(|p| p.is_file()));
        tracing::info!(uv = ?uv, flame_home = ?flame_home, "flmexec ready");
        ExecService { uv, flame_home }
    }

    /// A service that runs Python through `uv` at `uv`, or through `python3` when `None`,
    /// with flamepy from `flame_home` when it has some.
    pub fn with_uv(uv: Option<PathBuf>, flame_home: Option<PathBuf>) -> Self {
        ExecService { uv, flame_home }
    }

    /// The Python a script asks for (`runtime`), else the one `FLAME_HOME` has flamepy for,
    /// and that flamepy's site-packages when `FLAME_HOME` has them.
    fn python_for_script(&self, runtime: Option<&str>) -> (Option<String>, Option<PathBuf>) {
        let runtime = runtime.map(str::trim).filter(|r| !r.is_empty());
        let Some(home) = &self.flame_home else {
            return (runtime.map(str::to_owned), None);
        };
        let version = match runtime {
            Some(r) => flame_home::version_parts(r).map(|_| r.to_owned()),
            None => flame_home::newest_python(home),
        };
        let site = version
            .as_deref()
            .map(|v| flame_home::site_packages(home, v))
            .filter(|p| p.is_dir());
        (runtime.map(str::to_owned).or(version), site)
    }

    /// The command that runs `request`'s script.
    pub fn command(&self, language: Language, request: &ExecRequest) -> Command {
        match language {
            Language::Shell => {
                let mut cmd = Command::new("bash");
                cmd.arg("-c").arg(&request.code);
                cmd
            }
            Language::Python => {
                let (python, site) = self.python_for_script(request.runtime.as_deref());
                let mut cmd = match &self.uv {
                    Some(uv) => {
                        let mut cmd = Command::new(uv);
                        cmd.arg("run");
                        if let Some(python) = &python {
                            // uv takes any request (`3.11`, `pypy`, a path); a version is
                            // named as an executable so uv finds it on PATH, not a download.
                            cmd.arg("--python")
                                .arg(versioned(python).unwrap_or(python.clone()));
                        }
                        cmd.arg("python");
                        cmd
                    }
                    None => Command::new(
                        python
                            .as_deref()
                            .and_then(versioned)
                            .unwrap_or_else(|| "python3".to_owned()),
                    ),
                };
                cmd.arg("-c").arg(&request.code);
                if let Some(site) = site {
                    cmd.env("PYTHONPATH", prepend_path(&site));
                }
                cmd
            }
        }
    }

    /// Runs `request` and returns the script's stdout.
    pub async fn execute(&self, request: &ExecRequest) -> Result<Vec<u8>, ServiceError> {
        let language = Language::parse(&request.language)?;
        let mut cmd = self.command(language, request);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let program = format!("{:?}", cmd.as_std().get_program());
        let mut child = cmd
            .spawn()
            .map_err(|e| ServiceError::failed(format!("cannot start {program}: {e}")))?;
        let stdin = child.stdin.take();
        let input = request.input.clone().unwrap_or_default();
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A script that does not read its stdin closes the pipe early; that is fine.
                let _ignored = stdin.write_all(&input).await;
            }
        });
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| ServiceError::failed(format!("waiting for {program}: {e}")))?;
        let _ = feeder.await;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = tail_text(&output.stderr, STDERR_TAIL_BYTES);
        Err(ServiceError::failed(format!(
            "{} script failed ({}): {}",
            request.language.to_ascii_lowercase(),
            output.status,
            if stderr.is_empty() {
                "no stderr output"
            } else {
                &stderr
            }
        )))
    }
}

/// `python<ver>` when `runtime` is a version such as `3.11`.
fn versioned(runtime: &str) -> Option<String> {
    flame_home::version_parts(runtime).map(|_| format!("python{runtime}"))
}

/// `PYTHONPATH` with `dir` first, ahead of what the instance inherited.
fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let inherited = std::env::var_os("PYTHONPATH").unwrap_or_default();
    let parts = std::iter::once(dir.to_path_buf())
        .chain(std::env::split_paths(&inherited).filter(|p| !p.as_os_str().is_empty()));
    std::env::join_paths(parts).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl FlameService for ExecService {
    async fn on_task_invoke(&mut self, ctx: TaskContext) -> Result<Option<Bytes>, ServiceError> {
        let request = ExecRequest::parse(ctx.input.as_deref())?;
        tracing::debug!(task_id = %ctx.task_id, language = %request.language, "running script");
        let stdout = self.execute(&request).await?;
        let body = serde_json::json!({ "data": stdout });
        Ok(Some(Bytes::from(body.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_optional_runtime_and_input() {
        let r = ExecRequest::parse(Some(
            br#"{"language":"shell","code":"cat","input":[104,105]}"#,
        ));
        let r = r.ok();
        assert_eq!(
            r.as_ref().and_then(|r| r.input.clone()),
            Some(b"hi".to_vec())
        );
        assert_eq!(r.and_then(|r| r.runtime), None);
    }

    #[test]
    fn missing_code_or_input_is_invalid_input() {
        assert!(ExecRequest::parse(None).is_err());
        assert!(ExecRequest::parse(Some(br#"{"language":"shell"}"#)).is_err());
    }

    #[test]
    fn only_python_and_shell_are_languages() {
        assert_eq!(Language::parse("Python").ok(), Some(Language::Python));
        assert_eq!(Language::parse("shell").ok(), Some(Language::Shell));
        let err = Language::parse("ruby").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unsupported language")));
    }

    #[test]
    fn python_without_uv_picks_a_versioned_interpreter_only_for_versions() {
        let service = ExecService::with_uv(None, None);
        let program = |runtime: Option<&str>| {
            let request = ExecRequest {
                language: "python".into(),
                runtime: runtime.map(str::to_owned),
                code: "pass".into(),
                input: None,
            };
            let cmd = service.command(Language::Python, &request);
            cmd.as_std().get_program().to_string_lossy().into_owned()
        };
        assert_eq!(program(Some("3.11")), "python3.11");
        assert_eq!(program(Some("; rm -rf /")), "python3");
        assert_eq!(program(None), "python3");
    }

    #[test]
    fn python_scripts_get_flame_homes_flamepy_and_its_interpreter() -> std::io::Result<()> {
        let home = tempfile::tempdir()?;
        let site = home.path().join("lib/python3.11/site-packages");
        std::fs::create_dir_all(&site)?;
        let uv = home.path().join("bin/uv");
        let service = ExecService::with_uv(Some(uv.clone()), Some(home.path().to_owned()));
        let request = ExecRequest {
            language: "python".into(),
            runtime: None,
            code: "import flamepy".into(),
            input: None,
        };
        let cmd = service.command(Language::Python, &request);
        let args: Vec<_> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect();
        assert_eq!(cmd.as_std().get_program(), uv.as_os_str());
        assert_eq!(
            args,
            [
                "run",
                "--python",
                "python3.11",
                "python",
                "-c",
                "import flamepy"
            ]
        );
        let pythonpath = cmd
            .as_std()
            .get_envs()
            .find(|(k, _)| *k == "PYTHONPATH")
            .and_then(|(_, v)| v.map(|v| v.to_owned()));
        let first = pythonpath
            .as_ref()
            .and_then(|p| std::env::split_paths(p).next());
        assert_eq!(first, Some(site));
        Ok(())
    }
}
