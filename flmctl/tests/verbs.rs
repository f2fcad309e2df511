//! flmctl's verbs end to end against one `flmctl local up` (three members and a node agent):
//! `create` → `list -s` → `view -s` → a flmping task → `view -s -t` → `close`; `view -n`;
//! bad input giving one line on stderr and a failure status; `completion`. Output is compared
//! with golden files under `tests/golden/` after masking volatile fields (session ids, ports,
//! times, host facts). Set `UPDATE_GOLDEN=1` to rewrite them.

mod support;

use flame_sdk::client::Connection;
use serde_json::Value;
use std::time::Duration;
use support::{Up, flmctl, free_base, golden, mask, mask_times, ok};

/// The endpoints the verbs are given: members 2 and 3 only, so writes must find the leader
/// (member 1 after `local up`) through a follower.
fn endpoint(base: u16) -> String {
    format!("http://127.0.0.1:{},127.0.0.1:{}", base + 1, base + 2)
}

/// The id in `Session <id> was created.`, checked to be `<app>-<6 alphanumerics>`.
fn created_id(line: &str, app: &str) -> String {
    let id = line
        .strip_prefix("Session ")
        .and_then(|rest| rest.strip_suffix(" was created.\n"))
        .unwrap_or_else(|| panic!("not a create line: {line:?}"));
    let suffix = id.strip_prefix(&format!("{app}-")).expect("app prefix");
    assert!(
        suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
    id.to_owned()
}

/// Runs one flmping task in session `id` through the SDK (bounded) and returns its output.
async fn run_one_task(endpoint: &str, id: &str) -> anyhow::Result<String> {
    let conn = Connection::new(&[endpoint])?;
    let session = conn.attach_session(id);
    let run = session.run(Some(br#"{"duration": 1}"#.to_vec()));
    let output = tokio::time::timeout(Duration::from_secs(60), run).await??;
    Ok(String::from_utf8(output.unwrap_or_default())?)
}

/// create → list → view -s → one task → view -t → close, through members 2 and 3.
async fn session_lifecycle(base: u16) -> anyhow::Result<()> {
    let endpoint = endpoint(base);
    let args = ["create", "-a", "flmping", "-p", "3", "-r", "cpu=1,mem=256m"];
    let created = ok(&endpoint, &args);
    let id = created_id(&created, "flmping");
    let hide = |text: &str| mask_times(&text.replace(&id, "<session>"));
    golden("create.txt", &hide(&created));
    let list = ok(&endpoint, &["list", "-s"]);
    golden(
        "verbs_list_sessions.txt",
        &mask(&list.replace(&id, "<session>"), base, &[(9, "<time>")]),
    );
    golden(
        "verbs_view_session.txt",
        &hide(&ok(&endpoint, &["view", "-s", &id])),
    );

    let output = run_one_task(&endpoint, &id).await?;
    assert!(output.contains("Completed on"), "{output}");
    golden(
        "view_task.txt",
        &hide(&ok(&endpoint, &["view", "-s", &id, "-t", "1"])),
    );
    let json: Value = serde_json::from_str(&ok(
        &endpoint,
        &["view", "-s", &id, "-t", "1", "-o", "json"],
    ))?;
    assert_eq!(
        (
            &json["id"],
            &json["session"],
            &json["application"],
            &json["state"]
        ),
        (
            &Value::from("1"),
            &Value::from(id.clone()),
            &Value::from("flmping"),
            &Value::from("Succeed")
        ),
        "{json}"
    );
    assert_eq!(json["output"], Value::from(output), "{json}");

    golden(
        "close.txt",
        &hide(&ok(&endpoint, &["close", "--session", &id])),
    );
    let yaml: Value = serde_yaml_ng::from_str(&ok(&endpoint, &["view", "-s", &id, "-o", "yaml"]))?;
    assert_eq!(yaml["state"], "Closed", "{yaml}");
    assert_eq!(yaml["succeed"], 1, "{yaml}");
    Ok(())
}

/// `view -n` as text (host facts masked) and as JSON.
fn node(base: u16) -> anyhow::Result<()> {
    let endpoint = endpoint(base);
    let nodes: Value = serde_json::from_str(&ok(&endpoint, &["list", "-n", "-o", "json"]))?;
    let name = nodes[0]["name"].as_str().expect("a node").to_owned();
    let text = ok(&endpoint, &["view", "-n", &name]);
    let masked: String = text
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((key, _)) if key.trim() != "Status" => format!("{key}: <{}>\n", key.trim()),
            _ => format!("{line}\n"),
        })
        .collect();
    golden("view_node.txt", &masked);
    let json: Value = serde_json::from_str(&ok(&endpoint, &["view", "-n", &name, "-o", "json"]))?;
    assert_eq!(json["name"], Value::from(name), "{json}");
    assert!(json["capacity"]["cpu"].as_u64() > Some(0), "{json}");
    assert!(json["info"]["os"].is_string(), "{json}");
    Ok(())
}

/// Bad input: one line on stderr naming the problem, nothing on stdout, a failure status.
fn bad_input(base: u16) {
    let endpoint = endpoint(base);
    let cases: [&[&str]; 6] = [
        &["create", "-a", "flmping", "-r", "cpu=1,disk=2"],
        &["create", "-a", "flmping", "-r", "mem=12x"],
        &["create", "-a", "nope"],
        &["close", "-s", "nope"],
        &["view", "-s", "nope", "-t", "1"],
        &["view", "-n", "nope"],
    ];
    let mut lines = String::new();
    for args in cases {
        let (success, stdout, stderr) = flmctl(&endpoint, args);
        assert!(!success && stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        lines.push_str(&format!("{}: {stderr}", args.join(" ")));
    }
    golden(
        "verbs_errors.txt",
        &mask(&lines, base, &[]).replace(" : ", ": "),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_task_and_node_verbs_against_a_local_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let up = Up::start(dir.path(), base);
    session_lifecycle(base).await?;
    node(base)?;
    bad_input(base);
    drop(up);
    Ok(())
}

#[test]
fn completion_for_bash_prints_a_script() {
    let out = ok("http://127.0.0.1:1", &["completion", "bash"]);
    assert!(out.contains("_flmctl()"), "{out}");
    assert!(out.contains("complete -F _flmctl"), "{out}");
    for verb in ["create", "close", "view", "list", "cluster", "completion"] {
        assert!(out.contains(verb), "{verb} missing");
    }
}
