//! The built-in service binaries, driven over their Unix socket as a node agent would:
//! `flmping-service` answers with the spec's payload and honours `duration` and `memory`;
//! `flmexec-service` runs shell and Python scripts with input on stdin and returns their stdout,
//! and a failing script fails the task with its stderr text.

use crate::common;

use anyhow::Context;
use common::{ServiceProcess, connect, session, task};
use flame_proto::v1::{self, instance_client::InstanceClient};
use std::time::Instant;
use tonic::transport::Channel;

/// Starts `binary`, enters session `s1` and returns the process and a client.
async fn started(binary: &str) -> anyhow::Result<(ServiceProcess, InstanceClient<Channel>)> {
    let process = ServiceProcess::start(binary)?;
    let mut client = connect(&process.socket).await?;
    let entered = client
        .on_session_enter(session("s1", "app", None))
        .await?
        .into_inner();
    assert_eq!(entered.return_code, 0);
    Ok((process, client))
}

/// The `message` of a flmping output.
fn ping_message(result: &v1::TaskResult) -> anyhow::Result<String> {
    let output = result.output.as_deref().context("no output")?;
    let json: serde_json::Value = serde_json::from_slice(output)?;
    Ok(json["message"].as_str().context("no message")?.to_owned())
}

/// The `data` bytes of a flmexec output.
fn exec_data(result: &v1::TaskResult) -> anyhow::Result<Vec<u8>> {
    let output = result.output.as_deref().context("no output")?;
    let json: serde_json::Value = serde_json::from_slice(output)?;
    Ok(serde_json::from_value(json["data"].clone())?)
}

fn exec_input(language: &str, code: &str, input: &[u8]) -> Vec<u8> {
    serde_json::json!({ "language": language, "code": code, "input": input })
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn flmping_without_input_reports_host_and_zero_duration_and_memory() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmping-service")).await?;
    let host = nix::unistd::gethostname()?
        .into_string()
        .unwrap_or_default();
    for input in [None, Some(&b""[..])] {
        let result = client
            .on_task_invoke(task("s1", 1, input))
            .await?
            .into_inner();
        assert_eq!(result.return_code, 0, "{:?}", result.message);
        assert_eq!(
            ping_message(&result)?,
            format!("Completed on <{host}> in <0> milliseconds with <0> memory")
        );
    }
    Ok(())
}

#[tokio::test]
async fn flmping_sleeps_and_allocates_as_requested() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmping-service")).await?;
    let started = Instant::now();
    let input = br#"{"duration": 150, "memory": 1048576}"#;
    let result = client
        .on_task_invoke(task("s1", 2, Some(input)))
        .await?
        .into_inner();
    assert!(
        started.elapsed().as_millis() >= 150,
        "returned before the duration"
    );
    assert_eq!(result.return_code, 0, "{:?}", result.message);
    let message = ping_message(&result)?;
    assert!(
        message.ends_with(" in <150> milliseconds with <1048576> memory"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn flmping_malformed_input_fails_the_task_naming_the_expected_form() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmping-service")).await?;
    let result = client
        .on_task_invoke(task("s1", 3, Some(b"not json")))
        .await?
        .into_inner();
    assert_eq!(result.return_code, -1);
    let message = result.message.unwrap_or_default();
    assert!(message.contains("flmping expects JSON"), "{message}");
    let after = client
        .on_task_invoke(task("s1", 4, None))
        .await?
        .into_inner();
    assert_eq!(after.return_code, 0, "the instance keeps serving");
    Ok(())
}

#[tokio::test]
async fn flmexec_runs_a_shell_script_with_input_on_stdin() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmexec-service")).await?;
    let input = exec_input("shell", "tr a-z A-Z; printf ' from bash'", b"hello");
    let result = client
        .on_task_invoke(task("s1", 1, Some(&input)))
        .await?
        .into_inner();
    assert_eq!(result.return_code, 0, "{:?}", result.message);
    assert_eq!(exec_data(&result)?, b"HELLO from bash");
    Ok(())
}

#[tokio::test]
async fn flmexec_failing_script_fails_the_task_with_its_stderr() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmexec-service")).await?;
    let input = exec_input(
        "shell",
        "echo partial; echo 'disk on fire' >&2; exit 3",
        b"",
    );
    let result = client
        .on_task_invoke(task("s1", 1, Some(&input)))
        .await?
        .into_inner();
    assert_eq!(result.return_code, -1);
    assert_eq!(result.output, None);
    let message = result.message.unwrap_or_default();
    assert!(message.contains("disk on fire"), "{message}");
    assert!(message.contains("shell script failed"), "{message}");
    assert!(message.contains('3'), "exit status missing: {message}");
    Ok(())
}

#[tokio::test]
async fn flmexec_runs_python_with_input_on_stdin() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmexec-service")).await?;
    let code = "import sys; sys.stdout.write(sys.stdin.read()[::-1])";
    let input = exec_input("python", code, b"abc");
    let result = client
        .on_task_invoke(task("s1", 1, Some(&input)))
        .await?
        .into_inner();
    assert_eq!(result.return_code, 0, "{:?}", result.message);
    assert_eq!(exec_data(&result)?, b"cba");
    let raise = exec_input("python", "raise ValueError('bad value 42')", b"");
    let result = client
        .on_task_invoke(task("s1", 2, Some(&raise)))
        .await?
        .into_inner();
    assert_eq!(result.return_code, -1);
    let message = result.message.unwrap_or_default();
    assert!(message.contains("ValueError: bad value 42"), "{message}");
    Ok(())
}

#[tokio::test]
async fn flmexec_unsupported_language_or_bad_json_fails_the_task() -> anyhow::Result<()> {
    let (_process, mut client) = started(env!("CARGO_BIN_EXE_flmexec-service")).await?;
    let ruby = exec_input("ruby", "puts 1", b"");
    let result = client
        .on_task_invoke(task("s1", 1, Some(&ruby)))
        .await?
        .into_inner();
    assert_eq!(result.return_code, -1);
    assert!(
        result
            .message
            .unwrap_or_default()
            .contains("unsupported language")
    );
    let result = client
        .on_task_invoke(task("s1", 2, Some(b"{")))
        .await?
        .into_inner();
    assert_eq!(result.return_code, -1);
    assert!(
        result
            .message
            .unwrap_or_default()
            .contains("flmexec expects JSON")
    );
    Ok(())
}
