//! An unmodified flamepy 0.6.0 service under the host shim: `flamepy.FlameService` +
//! `flamepy.run`, launched by `Instance::launch` with the venv's python. It sees common data on
//! enter, echoes tasks, a raised exception fails the task with the exception's text, leave runs,
//! and stop cleans up. An exception in `on_session_enter` is bind code 12.
//!
//! The venv comes from `scripts/flamepy-venv.sh` (idempotent; installs flamepy==0.6.0 from PyPI
//! on first use), whose last stdout line is the interpreter path.

use crate::common;

use anyhow::{Context, bail};
use common::{Fixture, app, session, task};
use flame_node_agent::instance::{Instance, group_alive};
use flame_proto::model::Environment;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The Python service under test.
const SERVICE: &str = r#"
import os
import flamepy


class Echo(flamepy.FlameService):
    def on_session_enter(self, context):
        common = context.common_data()
        if common == b"refuse":
            raise RuntimeError("python service refuses this session")
        self.common = common or b""
        self.session_id = context.session_id

    def on_task_invoke(self, context):
        if context.input == b"raise":
            raise ValueError(f"task {context.task_id} exploded in python")
        if context.input == b"none":
            return None
        return self.common + (context.input or b"")

    def on_session_leave(self):
        with open(os.environ["LEAVE_MARKER"], "w") as marker:
            marker.write(getattr(self, "session_id", "never entered"))


if __name__ == "__main__":
    flamepy.run(Echo())
"#;

/// The venv's python, made once per test binary.
fn flamepy_python() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flamepy-venv.sh");
            let output = std::process::Command::new("bash")
                .arg(&script)
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            match stdout.lines().last() {
                Some(python) if output.status.success() => Ok(PathBuf::from(python.trim())),
                _ => Err(format!(
                    "flamepy-venv.sh failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )),
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A fixture with the service script written, and the launch spec that runs it.
fn python_service(executor_id: &str) -> anyhow::Result<(Fixture, PythonLaunch)> {
    let fx = Fixture::new()?;
    let python = flamepy_python()?;
    let script = fx.root.path().join("echo_service.py");
    std::fs::write(&script, SERVICE)?;
    let marker = fx.root.path().join("left");
    let mut application = app(
        python.to_str().context("python path")?,
        &["-u", script.to_str().context("script path")?],
    );
    application.environments = vec![Environment {
        name: "LEAVE_MARKER".to_owned(),
        value: marker.display().to_string(),
    }];
    let spec = fx.spec(application, executor_id);
    Ok((fx, PythonLaunch { spec, marker }))
}

/// A launch spec plus the file the service writes on leave.
struct PythonLaunch {
    spec: flame_node_agent::instance::LaunchSpec,
    marker: PathBuf,
}

#[tokio::test]
async fn flamepy_service_enters_echoes_fails_with_exception_text_and_leaves() -> anyhow::Result<()>
{
    let (_fx, PythonLaunch { spec, marker }) = python_service("exec-flamepy")?;
    let mut instance = Instance::launch(spec).await?;
    let (pgid, paths) = (instance.process_group(), instance.paths().clone());
    instance.enter(session(Some(b"common|"))).await?;
    for id in 1..=3u64 {
        let input = format!("task-{id}");
        let outcome = instance.invoke(task(id, Some(input.as_bytes()))).await;
        assert!(outcome.succeeded(), "{:?}", outcome.message);
        assert_eq!(
            outcome.output.as_deref(),
            Some(format!("common|{input}").as_bytes())
        );
    }
    let raised = instance.invoke(task(4, Some(b"raise"))).await;
    assert_eq!(raised.return_code, -1);
    assert_eq!(raised.message.as_deref(), Some("task 4 exploded in python"));
    let none = instance.invoke(task(5, Some(b"none"))).await;
    assert!(none.succeeded() && none.output.is_none(), "{none:?}");
    let after = instance.invoke(task(6, Some(b"still alive"))).await;
    assert!(
        after.succeeded(),
        "a raising task must not end the instance"
    );

    instance.leave().await?;
    if std::fs::read_to_string(&marker)? != "sess-1" {
        bail!("on_session_leave did not run with the entered session");
    }
    let stopped = instance.stop().await;
    assert!(!stopped.forced, "flamepy exits on SIGTERM: {stopped:?}");
    assert!(!group_alive(pgid));
    assert!(!paths.socket.exists() && !paths.scratch_dir.exists());
    Ok(())
}

#[tokio::test]
async fn flamepy_exception_in_on_session_enter_is_bind_code_12() -> anyhow::Result<()> {
    let (_fx, PythonLaunch { spec, marker }) = python_service("exec-flamepy-refuse")?;
    let mut instance = Instance::launch(spec).await?;
    let err = instance
        .enter(session(Some(b"refuse")))
        .await
        .err()
        .context("enter succeeded")?;
    assert_eq!(err.code.value(), 12);
    assert_eq!(
        err.message,
        "on_session_enter failed: python service refuses this session"
    );
    let retry = instance
        .enter(session(None))
        .await
        .err()
        .context("second enter")?;
    assert!(
        retry.message.contains("after OnSessionEnter failed"),
        "{}",
        retry.message
    );
    // Spec section 7.3: leave is still called on a started instance, then it is stopped.
    instance.leave().await?;
    assert_eq!(std::fs::read_to_string(&marker)?, "never entered");
    instance.stop().await;
    Ok(())
}
