//! Bind failures of spec sections 7.2 and 9.3 ("Bad input" of the node-agent issue): a
//! command that does not exist, exits at once, or never opens its socket is a code-11
//! `shim creation failed` with a clear message, quickly where it can be, and leaves nothing
//! running or lying around.

use crate::common;

use anyhow::Context;
use common::{Fixture, app, eventually};
use flame_node_agent::instance::{BindError, Instance, LaunchSpec, group_alive};
use std::time::{Duration, Instant};

/// Launches `spec`, expecting a bind failure; returns it and how long it took.
async fn launch_failure(spec: LaunchSpec) -> anyhow::Result<(BindError, Duration)> {
    let started = Instant::now();
    let err = Instance::launch(spec)
        .await
        .err()
        .context("launch succeeded")?;
    Ok((err, started.elapsed()))
}

/// Whether the binding's scratch directory and socket are gone.
fn nothing_left(fx: &Fixture, executor_id: &str) -> bool {
    !fx.work.join(executor_id).exists() && !fx.sockets.join(format!("{executor_id}.sock")).exists()
}

#[tokio::test]
async fn missing_command_is_code_11_shim_creation_failed() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let spec = fx.spec(
        app("${FLAME_HOME}/bin/no-such-service", &[]),
        "exec-missing",
    );
    let (err, _) = launch_failure(spec).await?;
    assert_eq!(err.code.value(), 11);
    assert!(
        err.message.starts_with("shim creation failed: "),
        "{}",
        err.message
    );
    assert!(err.message.contains("not found"), "{}", err.message);
    let expanded = fx.home.join("bin/no-such-service");
    assert!(
        err.message.contains(&*expanded.to_string_lossy()),
        "{}",
        err.message
    );
    assert!(nothing_left(&fx, "exec-missing"));
    Ok(())
}

#[tokio::test]
async fn application_without_command_is_code_11() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let mut application = app("", &[]);
    application.command = None;
    let (err, _) = launch_failure(fx.spec(application, "exec-nocmd")).await?;
    assert_eq!(err.code.value(), 11);
    assert!(err.message.contains("has no command"), "{}", err.message);
    Ok(())
}

#[tokio::test]
async fn command_that_exits_at_once_fails_fast_with_its_stderr() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let script = "echo 'cannot load model weights' >&2; exit 3";
    let mut spec = fx.spec(app("/bin/sh", &["-c", script]), "exec-exits");
    spec.startup_timeout = Duration::from_secs(60);
    let (err, took) = launch_failure(spec).await?;
    assert_eq!(err.code.value(), 11);
    assert!(
        took < Duration::from_secs(10),
        "waited {took:?} for a dead process"
    );
    assert!(
        err.message
            .starts_with("shim creation failed: instance exited"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("cannot load model weights"),
        "{}",
        err.message
    );
    assert!(nothing_left(&fx, "exec-exits"));

    let (err, took) = launch_failure(fx.spec(app("/bin/false", &[]), "exec-false")).await?;
    assert_eq!(err.code.value(), 11);
    assert!(
        took < Duration::from_secs(10),
        "waited {took:?} for /bin/false"
    );
    assert!(
        err.message.contains("(no stderr output)"),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn command_that_never_opens_its_socket_fails_after_the_deadline_and_is_killed()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let pid_file = fx.root.path().join("pid");
    let script = "echo $$ > \"$0\"; echo 'still warming up' >&2; exec sleep 30";
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let mut spec = fx.spec(app("/bin/sh", &["-c", script, &pid_arg]), "exec-silent");
    spec.startup_timeout = Duration::from_secs(1);
    let (err, took) = launch_failure(spec).await?;
    assert_eq!(err.code.value(), 11);
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        err.message.contains("did not open its socket"),
        "{}",
        err.message
    );
    assert!(err.message.contains("within 1.0s"), "{}", err.message);
    assert!(err.message.contains("still warming up"), "{}", err.message);
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    assert!(
        eventually(Duration::from_secs(5), || !group_alive(pid)).await,
        "the silent instance was left running"
    );
    assert!(nothing_left(&fx, "exec-silent"));
    Ok(())
}

#[tokio::test]
async fn executor_ids_that_would_escape_the_work_dir_are_refused() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let (err, _) = launch_failure(fx.spec(app("/bin/true", &[]), "../escape")).await?;
    assert_eq!(err.code.value(), 11);
    assert!(
        err.message.contains("invalid executor id"),
        "{}",
        err.message
    );
    Ok(())
}
