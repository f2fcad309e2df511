//! flmctl's verbs end to end against one `flmctl local up` (three members and a node agent):
//! `create` → `list -s` → `view -s` → a flmping task → `view -s -t` → `close`; `register -f`
//! (two documents) → `view -a` → `update` → `unregister`; `view -n`; `--config` and its
//! precedence; `cache list|get|rm` through the `flame.yaml` that `local up` writes; `cluster
//! snapshot` and `cluster transfer-leader`; bad input giving one line on
//! stderr and a failure status; `completion`. Output is compared
//! with golden files under `tests/golden/` after masking volatile fields (session ids, ports,
//! times, host facts). Set `UPDATE_GOLDEN=1` to rewrite them.

use crate::support::{Up, flmctl, flmctl_env, free_base, golden, mask, mask_times, ok};
use flame_sdk::cache::ObjectCache;
use flame_sdk::client::Connection;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

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
    assert!(
        nodes[0]["cpu_allocatable"].as_u64() >= Some(8),
        "local up offers at least 8 cpu=1 slots: {nodes}"
    );
    let used = nodes[0]["cpu_used"].as_u64().expect("cpu used");
    let free = nodes[0]["cpu_free"].as_u64().expect("cpu free");
    assert_eq!(
        Some(used + free),
        nodes[0]["cpu_allocatable"].as_u64(),
        "{nodes}"
    );
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

/// Two applications in upstream's YAML shape, every spec field used by the first.
const APPS: &str = r#"
metadata:
  name: pi
spec:
  shim: Host
  description: estimates pi
  labels: [math, demo]
  command: /usr/bin/pi
  arguments: [--fast, "--digits=10"]
  environments:
    RUST_LOG: info
    THREADS: 4
  working_directory: /tmp
  max_instances: 4
  delay_release: 30
  schema:
    input: '{"type": "integer"}'
    output: {type: number}
  url: file:///opt/pi.tar.gz
  installer: python
---
metadata:
  name: echo
spec:
  command: /bin/cat
"#;

/// register -f (two documents) → view -a → update → unregister, and their refusals.
fn applications(dir: &Path, base: u16) -> anyhow::Result<()> {
    let endpoint = endpoint(base);
    let file = dir.join("apps.yaml");
    std::fs::write(&file, APPS)?;
    let file = file.to_str().expect("utf-8 path");
    golden("register.txt", &ok(&endpoint, &["register", "-f", file]));
    let view = ok(&endpoint, &["view", "-a", "pi"]);
    golden("verbs_view_application.txt", &mask_times(&view));

    let updated = dir.join("update.yaml");
    let one = APPS.split("---").next().expect("first document");
    std::fs::write(
        &updated,
        one.replace("max_instances: 4", "max_instances: 8"),
    )?;
    let updated = updated.to_str().expect("utf-8 path");
    golden(
        "update.txt",
        &ok(&endpoint, &["update", "--application", updated]),
    );
    let json: Value = serde_json::from_str(&ok(&endpoint, &["view", "-a", "pi", "-o", "json"]))?;
    assert_eq!(json["max_instances"], 8, "{json}");
    assert_eq!(json["environments"]["THREADS"], "4", "{json}");

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        APPS.replace("delay_release: 30", "delay_release: soon"),
    )?;
    let bad = bad.to_str().expect("utf-8 path");
    let mut errors = String::new();
    let cases: [&[&str]; 4] = [
        &["register", "-f", bad],
        &["register", "-f", file],
        &["unregister", "-a", "nope"],
        &["update", "-a", "/nonexistent/app.yaml"],
    ];
    for args in cases {
        let (success, stdout, stderr) = flmctl(&endpoint, args);
        assert!(!success && stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        errors.push_str(&stderr.replace(dir.to_str().expect("utf-8"), "<dir>"));
    }
    golden("application_errors.txt", &errors);

    let mut out = ok(&endpoint, &["unregister", "-a", "pi"]);
    out.push_str(&ok(&endpoint, &["unregister", "--application", "echo"]));
    golden("unregister.txt", &out);
    let apps: Value = serde_json::from_str(&ok(&endpoint, &["list", "-a", "-o", "json"]))?;
    let names: Vec<&str> = apps
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, vec!["flmexec", "flmping", "flmrun"], "{apps}");
    Ok(())
}

/// `--config` names the cluster through its current context; `FLAME_ENDPOINT` beats it and
/// `--endpoint` beats both; a missing named file is one clear line.
fn config(dir: &Path, base: u16) -> anyhow::Result<()> {
    let path = dir.join("flame.yaml");
    let good = format!("http://127.0.0.1:{}", base + 1);
    let dead = format!("http://127.0.0.1:{}", base + 50);
    let text = format!(
        "current-context: local\ncontexts:\n  - name: other\n    cluster: {{endpoint: {dead}}}\n  \
         - name: local\n    cluster: {{endpoint: {good}}}\n"
    );
    std::fs::write(&path, text)?;
    let path = path.to_str().expect("utf-8 path");
    let home = [("HOME", dir.to_str().expect("utf-8 path"))];
    let (success, stdout, stderr) = flmctl_env(&["--config", path, "list", "-a"], &home);
    assert!(success && stdout.contains("flmping"), "{stderr}");
    let env = [home[0], ("FLAME_ENDPOINT", dead.as_str())];
    let (success, _, stderr) = flmctl_env(&["--config", path, "list", "-a"], &env);
    assert!(!success && stderr.contains(&dead), "{stderr}");
    let args = ["--config", path, "--endpoint", &good, "list", "-a"];
    let (success, _, stderr) = flmctl_env(&args, &env);
    assert!(success, "{stderr}");
    let missing = dir.join("none.yaml");
    let args = ["--config", missing.to_str().expect("utf-8"), "list", "-a"];
    let (success, _, stderr) = flmctl_env(&args, &home);
    assert!(!success && stderr.lines().count() == 1, "{stderr}");
    assert!(
        stderr.starts_with("Error: invalid config: cannot read "),
        "{stderr}"
    );
    Ok(())
}

/// `cluster snapshot` reports an index; `cluster transfer-leader` returns once the target
/// leads, which `cluster status` then shows (bounded by the command's own deadline).
fn snapshot_and_transfer(base: u16) -> anyhow::Result<()> {
    let endpoint = endpoint(base);
    let out = ok(&endpoint, &["cluster", "snapshot"]);
    let index = out
        .strip_prefix("Snapshot taken at log index ")
        .and_then(|rest| rest.strip_suffix(".\n"))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(index > Some(0), "{out}");
    let status: Value = serde_json::from_str(&ok(&endpoint, &["cluster", "status", "-o", "json"]))?;
    let leader = status[0]["leader"].as_u64().expect("a leader");
    let to = if leader == 3 { 2 } else { 3 };
    let out = ok(
        &endpoint,
        &["cluster", "transfer-leader", "--to", &to.to_string()],
    );
    assert_eq!(out, format!("Member {to} is the leader now.\n"));
    let status: Value = serde_json::from_str(&ok(&endpoint, &["cluster", "status", "-o", "json"]))?;
    for row in status.as_array().expect("rows") {
        assert_eq!(row["leader"], to, "{status}");
    }
    let (success, _, stderr) = flmctl(&endpoint, &["cluster", "transfer-leader", "--to", "9"]);
    assert!(!success && stderr.lines().count() == 1, "{stderr}");
    Ok(())
}

/// `cache list|get|rm` against the cache `local up` runs, found through the `flame.yaml` it
/// writes; the objects are put and patched with the SDK.
async fn cache(dir: &Path, base: u16) -> anyhow::Result<()> {
    let config = dir.join("data/flame.yaml");
    let config = config.to_str().expect("utf-8 path");
    let endpoint = format!("grpc://127.0.0.1:{}", base + 200);
    let objects = ObjectCache::connect(&endpoint).await?;
    let r = objects.put_object("verbs/ssn-1", &vec![1, 2]).await?;
    objects.patch_object(&r, &3).await?;
    let home = dir.join("home-cache");
    std::fs::create_dir_all(&home)?;
    let home = home.to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config, "cache"];
        all.extend_from_slice(args);
        let (success, stdout, stderr) = flmctl_env(&all, &[("HOME", home)]);
        assert!(success, "flmctl {all:?} failed: {stderr}");
        (stdout, stderr)
    };
    let listed: Value = serde_json::from_str(&run(&["list", "verbs/", "-o", "json"]).0)?;
    assert_eq!(listed[0]["key"], Value::from(r.key.clone()), "{listed}");
    assert_eq!(listed[0]["version"], 2, "{listed}");
    let (bytes, note) = run(&["get", &r.key]);
    assert_eq!(bytes, "[1,2]3");
    assert!(note.contains("its base and 1 patch"), "{note}");
    assert_eq!(
        run(&["rm", "verbs/*"]).0,
        "Objects of application verbs/* were deleted.\n"
    );
    assert_eq!(run(&["list", "verbs/", "-o", "json"]).0.trim(), "[]");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_against_a_local_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let up = Up::start(dir.path(), base);
    session_lifecycle(base).await?;
    applications(dir.path(), base)?;
    node(base)?;
    config(dir.path(), base)?;
    bad_input(base);
    cache(dir.path(), base).await?;
    snapshot_and_transfer(base)?;
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

#[test]
fn no_subcommand_prints_help_naming_every_verb() {
    let (_, stdout, stderr) = flmctl_env(&[], &[]);
    let help = stdout + &stderr;
    for verb in [
        "create",
        "close",
        "register",
        "update",
        "unregister",
        "completion",
        "cache",
    ] {
        assert!(help.contains(verb), "{verb} missing: {help}");
    }
    assert!(help.contains("--config"), "{help}");
}
