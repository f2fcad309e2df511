//! The README's main job: `flmctl local up` starts a three-member cluster in the foreground,
//! serves flame.v1, runs flmping tasks on its node agent, stops cleanly on SIGINT keeping its data, and resumes on the next start;
//! a port in use or a data directory of another cluster gives one clear error.

use crate::support::{BIN, free_base};
use flame_proto::v1::frontend_client::FrontendClient;
use flame_proto::v1::{
    CreateSessionRequest, CreateTaskRequest, GetSessionRequest, SessionSpec, Task, TaskSpec,
    TaskState, WatchTaskRequest,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `flmctl local up`; its log goes to `<dir>.log` so a full pipe never blocks it.
fn start(dir: &Path, base: u16, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
    Command::new(BIN)
        .args(["local", "up", "--data-dir"])
        .arg(dir)
        .args([
            "--api-port",
            &base.to_string(),
            "--raft-port",
            &(base + 100).to_string(),
            "--cache-port",
            &(base + 200).to_string(),
        ])
        // Python provisioning has a test of its own (local_up_python.rs).
        .arg("--no-python")
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("flmctl starts")
}

/// Reads stdout until the "is up" line; returns everything read.
fn wait_up(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("Press Ctrl-C") {
            return seen;
        }
    }
    panic!("the cluster did not come up:\n{seen}");
}

fn interrupt(mut child: Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal");
    let status = child.wait().expect("exits");
    assert!(status.success(), "clean exit on SIGINT: {status}");
}

/// Waits for a start that must fail and returns its log.
fn failure_of(mut child: Child, dir: &Path) -> String {
    let status = child.wait().expect("exits");
    assert!(!status.success(), "the command should fail");
    std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
}

/// Follows WatchTask until the task is terminal (bounded by a deadline).
async fn watch_until_done(
    client: &mut FrontendClient<tonic::transport::Channel>,
    id: &str,
) -> anyhow::Result<Task> {
    let request = WatchTaskRequest {
        task_id: id.into(),
        session_id: "kept".into(),
    };
    let mut stream = client.watch_task(request).await?.into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await??;
        let Some(task) = next else {
            anyhow::bail!("the watch of task {id} ended without a terminal state");
        };
        let state = task.status.as_ref().map_or(0, |s| s.state);
        if state >= TaskState::Succeed as i32 {
            return Ok(task);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_serves_stops_on_sigint_and_resumes_with_its_data() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let mut child = start(dir.path(), base, &[]);
    let banner = wait_up(&mut child);
    assert!(banner.contains("leader: member"), "{banner}");
    let every_member = format!(
        "FLAME_ENDPOINT=http://127.0.0.1:{base},http://127.0.0.1:{},http://127.0.0.1:{}",
        base + 1,
        base + 2
    );
    assert!(banner.contains(&every_member), "{banner}");
    let endpoint = format!("http://127.0.0.1:{}", base + 1);
    let mut client = FrontendClient::connect(endpoint.clone()).await?;
    let spec = SessionSpec {
        application: "flmping".into(),
        ..Default::default()
    };
    client
        .create_session(CreateSessionRequest {
            session_id: "kept".into(),
            session: Some(spec),
        })
        .await?;
    // The local agent runs flmping tasks to completion.
    for _ in 0..3 {
        let task = client
            .create_task(CreateTaskRequest {
                task: Some(TaskSpec {
                    session_id: "kept".into(),
                    input: Some(br#"{"duration": 1}"#.to_vec()),
                    output: None,
                }),
            })
            .await?
            .into_inner();
        let id = task.metadata.map(|m| m.id).unwrap_or_default();
        let done = watch_until_done(&mut client, &id).await?;
        assert_eq!(
            done.status.map(|s| s.state),
            Some(TaskState::Succeed as i32),
            "task {id}"
        );
        let output = String::from_utf8(done.spec.and_then(|s| s.output).unwrap_or_default())?;
        assert!(output.contains("Completed on"), "flmping output: {output}");
    }
    drop(client);
    interrupt(child);

    let mut child = start(dir.path(), base, &[]);
    wait_up(&mut child);
    let mut client = FrontendClient::connect(endpoint).await?;
    let session = client
        .get_session(GetSessionRequest {
            session_id: "kept".into(),
        })
        .await?
        .into_inner();
    assert_eq!(session.metadata.map(|m| m.id).as_deref(), Some("kept"));
    drop(client);

    // While it runs, a second cluster on the same ports fails with one clear error.
    let other = tempfile::tempdir()?;
    let err = failure_of(start(other.path(), base, &[]), other.path());
    assert!(
        err.contains("cannot listen on 127.0.0.1:") && err.contains("in use"),
        "{err}"
    );
    // Free member ports but the running cluster's cache port: the error names the way out.
    let third = tempfile::tempdir()?;
    let cache_port = (base + 200).to_string();
    let other_base = free_base();
    let log = std::fs::File::create(third.path().with_extension("log"))?;
    let clash = Command::new(BIN)
        .args(["local", "up", "--data-dir"])
        .arg(third.path())
        .args(["--api-port", &other_base.to_string()])
        .args(["--raft-port", &(other_base + 100).to_string()])
        .args(["--cache-port", &cache_port, "--no-python"])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let err = failure_of(clash, third.path());
    assert!(
        err.contains(&format!("cannot start on ports {cache_port}")) && err.contains("--no-cache"),
        "{err}"
    );
    interrupt(child);

    // The data belongs to cluster "flame-local": another name is refused, naming both.
    let err = failure_of(
        start(dir.path(), base, &["--cluster-name", "other"]),
        dir.path(),
    );
    assert!(
        err.contains("\"flame-local\"") && err.contains("\"other\""),
        "{err}"
    );
    Ok(())
}

/// Claim: flamepy 0.6.0, unmodified, finds the local cluster's cache through the client
/// configuration `local up` writes (`cache.endpoint` of `~/.flame/flame.yaml`) and, through a
/// follower, does put/get/update/patch/delete with incremental gets, a 256 MiB round trip and
/// a service session whose context a real instance reads and updates (the script is
/// `chaos-tests/python/flamepy_cache_client.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamepy_uses_the_local_cache_through_the_written_client_configuration()
-> anyhow::Result<()> {
    use chaos_tests::flamepy::{flamepy_python, python_script, run_client_script};
    let python = flamepy_python()?;
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let mut child = start(dir.path(), base, &[]);
    let banner = wait_up(&mut child);
    let cache = format!("grpc://127.0.0.1:{}", base + 200);
    assert!(
        banner.contains(&format!("object cache: {cache}")),
        "{banner}"
    );
    let home = tempfile::tempdir()?;
    let home = home.path();
    std::fs::create_dir_all(home.join(".flame"))?;
    let written = std::fs::read_to_string(dir.path().join("flame.yaml"))?;
    assert!(written.contains(&cache), "{written}");
    std::fs::write(home.join(".flame/flame.yaml"), &written)?;
    let text = |p: &Path| p.to_string_lossy().into_owned();
    let env = [
        ("HOME", text(home)),
        ("CACHE_OTHER_ENDPOINT", cache.clone()),
        ("CACHE_PYTHON", text(&python)),
        (
            "CACHE_SERVICE",
            text(&python_script("flamepy_context_service.py")),
        ),
        ("CACHE_WORKDIR", text(&dir.path().join("py-context-app"))),
        ("CACHE_APP", "localpy".to_owned()),
        ("CACHE_BIG_MIB", "256".to_owned()),
    ];
    let follower = format!("http://127.0.0.1:{}", base + 1);
    let script = python_script("flamepy_cache_client.py");
    let deadline = Duration::from_secs(300);
    let run = run_client_script(&python, &script, &follower, &env, deadline).await?;
    let log = std::fs::read_to_string(dir.path().with_extension("log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(
        run.passed("flamepy cache scenario passed"),
        "{}\n--- local up log (last lines, newest first):\n{}",
        run.describe(),
        tail.join("\n")
    );
    interrupt(child);
    Ok(())
}
