//! One binding from launch to stop with the real `flmping-service` and `flmexec-service`:
//! the call sequence, cleanup of the socket, scratch directories and process group, the
//! environment contract of spec section 7.2, variable expansion, and death mid-task.

use crate::common;

use anyhow::Context;
use common::{Fixture, app, eventually, exec_stdout, session, shell, task};
use flame_node_agent::instance::{Instance, InstanceError, group_alive, launch_count};
use flame_proto::model::Environment;
use std::collections::HashMap;
use std::time::Duration;

const FLMPING: &str = "${FLAME_HOME}/bin/flmping-service";
const FLMEXEC: &str = "${FLAME_HOME}/bin/flmexec-service";

fn env(name: &str, value: &str) -> Environment {
    Environment {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

#[tokio::test]
async fn full_lifecycle_removes_socket_and_scratch_dirs_and_ends_the_process_group()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let before = launch_count();
    let mut instance = Instance::launch(fx.spec(app(FLMPING, &[]), "exec-life")).await?;
    assert!(launch_count() > before, "the launch was not counted");
    let paths = instance.paths().clone();
    let pgid = instance.process_group();
    assert!(paths.socket.exists() && paths.tmp_dir.is_dir() && group_alive(pgid));
    assert!(paths.socket.starts_with(&fx.sockets) && paths.socket.is_absolute());

    instance.enter(session(Some(b"common"))).await?;
    for id in 1..=5 {
        let outcome = instance.invoke(task(id, Some(br#"{"duration": 1}"#))).await;
        assert!(outcome.succeeded(), "{:?}", outcome.message);
        let json: serde_json::Value =
            serde_json::from_slice(outcome.output.as_deref().context("no output")?)?;
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.ends_with("in <1> milliseconds with <0> memory"),
            "{message}"
        );
    }
    instance.leave().await?;
    let stopped = instance.stop().await;

    assert!(!stopped.forced, "flmping-service should exit on SIGTERM");
    assert!(stopped.status.is_some_and(|s| s.success()), "{stopped:?}");
    assert!(!paths.socket.exists(), "socket left behind");
    assert!(!paths.scratch_dir.exists(), "scratch directory left behind");
    assert!(!group_alive(pgid), "process group still alive");
    assert!(paths.stderr_log.is_file(), "logs are kept");
    Ok(())
}

#[tokio::test]
async fn calls_out_of_order_are_refused_without_reaching_the_instance() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let mut instance = Instance::launch(fx.spec(app(FLMPING, &[]), "exec-order")).await?;
    let early = instance.invoke(task(1, None)).await;
    assert!(!early.succeeded());
    assert!(
        early
            .message
            .unwrap_or_default()
            .contains("before OnSessionEnter")
    );
    instance.enter(session(None)).await?;
    let again = instance
        .enter(session(None))
        .await
        .err()
        .context("second enter")?;
    assert_eq!(again.code.value(), 12);
    instance.leave().await?;
    let twice = instance.leave().await.err();
    assert!(
        matches!(twice, Some(InstanceError::WrongPhase { .. })),
        "{twice:?}"
    );
    let late = instance.invoke(task(2, None)).await;
    assert!(
        late.message
            .unwrap_or_default()
            .contains("after OnSessionLeave")
    );
    instance.stop().await;
    Ok(())
}

/// Runs `code` in bash inside a flmexec instance and returns its stdout.
async fn run_shell(instance: &mut Instance, id: u64, code: &str) -> anyhow::Result<String> {
    let outcome = instance.invoke(task(id, Some(&shell(code)))).await;
    anyhow::ensure!(outcome.succeeded(), "task failed: {:?}", outcome.message);
    exec_stdout(outcome.output.as_deref())
}

#[tokio::test]
async fn instance_environment_follows_the_launch_contract() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let mut application = app(FLMEXEC, &[]);
    application.environments = vec![
        env("APP_SETTING", "on"),
        env("FLAME_ENDPOINT", "http://overridden-by-flame:1"),
    ];
    let mut spec = fx.spec(application, "exec-env");
    spec.cache_endpoint = Some("grpc://127.0.0.1:9090".to_owned());
    let mut instance = Instance::launch(spec).await?;
    instance.enter(session(None)).await?;
    let vars: HashMap<String, String> = run_shell(&mut instance, 1, "env -0")
        .await?
        .split('\0')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let var = |name: &str| vars.get(name).map(String::as_str);
    let paths = instance.paths().clone();
    let tmp = paths.tmp_dir.to_str();

    assert_eq!(var("FLAME_INSTANCE_ENDPOINT"), paths.socket.to_str());
    assert!(var("FLAME_INSTANCE_ENDPOINT").is_some_and(|p| p.starts_with('/')));
    assert_eq!(var("FLAME_ENDPOINT"), Some("http://127.0.0.1:8080"));
    assert_eq!(var("FLAME_CACHE_ENDPOINT"), Some("grpc://127.0.0.1:9090"));
    assert_eq!(var("FLAME_HOME"), fx.home.to_str());
    assert_eq!(
        (var("FLAME_LOG"), var("RUST_LOG")),
        (Some("info"), Some("info"))
    );
    assert_eq!((var("TMPDIR"), var("TEMP"), var("TMP")), (tmp, tmp, tmp));
    assert_eq!(var("APP_SETTING"), Some("on"));
    assert_eq!(
        var("HOME"),
        std::env::var("HOME").ok().as_deref(),
        "HOME is inherited"
    );
    let cwd = run_shell(&mut instance, 2, "pwd -P").await?;
    assert_eq!(
        cwd.trim_end(),
        paths.scratch_dir.canonicalize()?.to_str().unwrap_or("?")
    );
    instance.leave().await?;
    instance.stop().await;
    assert!(!paths.tmp_dir.exists());
    Ok(())
}

#[tokio::test]
async fn application_working_directory_is_used_and_kept() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let wd = fx.root.path().join("app-wd");
    let mut application = app(FLMEXEC, &[]);
    application.working_directory = Some(wd.clone());
    let mut instance = Instance::launch(fx.spec(application, "exec-wd")).await?;
    instance.enter(session(None)).await?;
    let cwd = run_shell(&mut instance, 1, "pwd -P").await?;
    assert_eq!(cwd.trim_end(), wd.canonicalize()?.to_str().unwrap_or("?"));
    instance.stop().await;
    assert!(
        wd.is_dir(),
        "the application's own directory must not be removed"
    );
    Ok(())
}

#[tokio::test]
async fn flame_home_expands_in_command_arguments_and_environment() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    // sh execs its $0, which only names flmexec-service once we expanded the argument.
    let mut application = app("/bin/sh", &["-c", "exec \"$0\"", FLMEXEC]);
    application.environments = vec![
        env("MODELS", "${FLAME_HOME}/models"),
        env("SOCKET_COPY", "$FLAME_INSTANCE_ENDPOINT"),
        env("UNSET_STAYS", "${FLAME_TEST_SURELY_UNSET_VAR}/x"),
    ];
    let mut instance = Instance::launch(fx.spec(application, "exec-expand")).await?;
    instance.enter(session(None)).await?;
    let out = run_shell(
        &mut instance,
        1,
        r#"printf '%s\n' "$MODELS" "$SOCKET_COPY" "$UNSET_STAYS""#,
    )
    .await?;
    let lines: Vec<&str> = out.lines().collect();
    let models = fx.home.join("models");
    assert_eq!(lines.first().copied(), models.to_str());
    assert_eq!(lines.get(1).copied(), instance.socket_path().to_str());
    assert_eq!(
        lines.get(2).copied(),
        Some("${FLAME_TEST_SURELY_UNSET_VAR}/x")
    );
    instance.stop().await;
    Ok(())
}

#[tokio::test]
async fn process_death_mid_task_fails_the_task_and_marks_the_instance_dead() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let mut instance = Instance::launch(fx.spec(app(FLMEXEC, &[]), "exec-death")).await?;
    let pgid = instance.process_group();
    instance.enter(session(None)).await?;
    // The script's parent is the instance: kill it mid-invocation, then linger in the group.
    let outcome = instance
        .invoke(task(
            1,
            Some(&shell("echo dying >&2; kill -9 $PPID; sleep 30")),
        ))
        .await;
    assert!(!outcome.succeeded());
    let message = outcome.message.unwrap_or_default();
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains("OnTaskInvoke"), "{message}");
    assert!(instance.dead_reason().is_some());
    let next = instance.invoke(task(2, None)).await;
    assert!(next.message.unwrap_or_default().contains("not running"));
    let leave = instance.leave().await.err();
    assert!(
        matches!(leave, Some(InstanceError::NotRunning(_))),
        "{leave:?}"
    );
    let paths = instance.paths().clone();
    instance.stop().await;
    assert!(!group_alive(pgid), "the orphaned script was not stopped");
    assert!(!paths.socket.exists() && !paths.scratch_dir.exists());
    Ok(())
}

#[tokio::test]
async fn stop_escalates_to_sigkill_when_the_group_ignores_sigterm() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let stubborn = "trap '' TERM; \"$0\" & while :; do sleep 1; done";
    let mut spec = fx.spec(app("/bin/sh", &["-c", stubborn, FLMPING]), "exec-stubborn");
    spec.stop_grace = Duration::from_millis(300);
    let instance = Instance::launch(spec).await?;
    let pgid = instance.process_group();
    let stopped = instance.stop().await;
    assert!(stopped.forced, "{stopped:?}");
    assert!(
        eventually(Duration::from_secs(5), || !group_alive(pgid)).await,
        "group survived SIGKILL"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_an_instance_without_stop_kills_it_and_cleans_up() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let instance = Instance::launch(fx.spec(app(FLMPING, &[]), "exec-drop")).await?;
    let (pgid, paths) = (instance.process_group(), instance.paths().clone());
    drop(instance);
    assert!(!paths.socket.exists() && !paths.scratch_dir.exists());
    assert!(
        eventually(Duration::from_secs(5), || !group_alive(pgid)).await,
        "dropped instance still running"
    );
    Ok(())
}
