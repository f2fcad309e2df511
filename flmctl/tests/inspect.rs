//! `flmctl cluster status`, `flmctl list` and `flmctl view` end to end against a real three-member cluster
//! (`flmctl local up` with its node agent), compared with golden files under `tests/golden/`
//! after masking volatile fields (ports, times, terms, log indexes, host facts).
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files.

use flame_proto::v1::frontend_client::FrontendClient;
use flame_proto::v1::{CreateSessionRequest, ResourceRequirement, SessionSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flmctl");

/// A base port such that base..base+3 (API), base+100..base+103 (Raft) and base+50 (a port
/// nobody listens on) are free now.
fn free_base() -> u16 {
    for _ in 0..50 {
        let base = rand::random_range(12_000u16..32_000);
        let ports = (0..3)
            .flat_map(|i| [base + i, base + 100 + i])
            .chain([base + 50]);
        let held: Vec<_> = ports
            .filter_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 7 {
            return base;
        }
    }
    panic!("no free port range found");
}

/// A running `flmctl local up`, interrupted (then killed, if need be) on drop.
struct Up(Child);

impl Up {
    fn start(dir: &Path, base: u16) -> Up {
        let log = std::fs::File::create(dir.join("up.log")).expect("log file");
        let mut child = Command::new(BIN)
            .args(["local", "up", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--api-port", &base.to_string()])
            .args(["--raft-port", &(base + 100).to_string()])
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("flmctl starts");
        let stdout = child.stdout.take().expect("piped");
        let up = Up(child);
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("Press Ctrl-C") => return up,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        panic!(
            "the cluster did not come up; see {}",
            dir.join("up.log").display()
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs flmctl with `args`; returns (success, stdout, stderr).
fn flmctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("FLAME_ENDPOINT")
        .output()
        .expect("flmctl runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Names the cluster's endpoints, then masks the listed columns of every data row; `<n>`
/// masks numbers only (a `-` stays), `<role>` only `leader` and `follower`. Whitespace between cells becomes one space.
fn mask(text: &str, base: u16, columns: &[(usize, &str)]) -> String {
    let mut text = text.replace(&format!("http://127.0.0.1:{}", base + 50), "<dead>");
    for i in 0..3 {
        let url = format!("http://127.0.0.1:{}", base + i);
        text = text.replace(&url, &format!("<api-{}>", i + 1));
    }
    let mut masked = String::new();
    for (n, line) in text.lines().enumerate() {
        let mut cells: Vec<&str> = line.split_whitespace().collect();
        for (column, with) in columns.iter().filter(|_| n > 0) {
            if let Some(cell) = cells.get_mut(*column) {
                let masks = match *with {
                    "<n>" => cell.parse::<u64>().is_ok(),
                    "<role>" => matches!(*cell, "leader" | "follower"),
                    _ => true,
                };
                if masks {
                    *cell = with;
                }
            }
        }
        masked.push_str(&cells.join(" "));
        masked.push('\n');
    }
    masked
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(actual, expected, "golden {name} differs");
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = flmctl(endpoint, args);
    assert!(success, "flmctl {args:?} failed: {stderr}");
    stdout
}

/// Roles are masked in the golden table (which member wins the election varies); the JSON form
/// must show one leader that every reachable member agrees on.
fn check_status_json(json: &str) {
    let rows: Vec<Value> = serde_json::from_str(json).expect("json");
    assert_eq!(rows.len(), 4, "{json}");
    let leaders: Vec<&Value> = rows.iter().filter(|r| r["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{json}");
    for row in rows.iter().filter(|r| r["role"] != "unreachable") {
        assert_eq!(row["leader"], leaders[0]["id"], "{json}");
        assert!(row["lag"].is_u64(), "{json}");
    }
    assert_eq!(rows[3]["role"], "unreachable", "{json}");
    assert!(rows[3]["error"].is_string(), "{json}");
}

/// Polls `cluster status -o json` (bounded) until every reachable member knows the leader.
fn settled(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let json = ok(endpoint, &["cluster", "status", "-o", "json"]);
        let rows: Vec<Value> = serde_json::from_str(&json).expect("json");
        let reachable = rows.iter().filter(|r| r["role"] != "unreachable");
        if reachable.clone().count() == 3 && reachable.clone().all(|r| r["leader"].is_u64()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster_status(base: u16) {
    let all = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", base + i))
        .chain([format!("127.0.0.1:{}", base + 50)])
        .collect::<Vec<_>>()
        .join(",");
    let volatile = [
        (2, "<role>"),
        (3, "<n>"),
        (4, "<n>"),
        (5, "<n>"),
        (6, "<n>"),
        (7, "<n>"),
    ];
    settled(&all);
    let table = ok(&all, &["cluster", "status"]);
    golden("cluster_status.txt", &mask(&table, base, &volatile));
    check_status_json(&ok(&all, &["cluster", "status", "-o", "json"]));
    // One member is enough: the others are found through its membership.
    let one = format!("http://127.0.0.1:{}", base + 1);
    let table = ok(&one, &["cluster", "status"]);
    golden("cluster_status_one.txt", &mask(&table, base, &volatile));
    let yaml: Value =
        serde_yaml_ng::from_str(&ok(&one, &["cluster", "status", "-o", "yaml"])).expect("yaml");
    assert_eq!(yaml.as_array().map(Vec::len), Some(3), "{yaml}");
}

async fn lists(base: u16) -> anyhow::Result<()> {
    let endpoint = format!("http://127.0.0.1:{},127.0.0.1:{}", base + 50, base + 2);
    let mut client = FrontendClient::connect(format!("http://127.0.0.1:{base}")).await?;
    for (id, priority) in [("12", 1), ("3", 0)] {
        let spec = SessionSpec {
            application: "flmping".into(),
            priority,
            resreq: Some(ResourceRequirement {
                cpu: 1,
                memory: 1 << 30,
                gpu: 0,
            }),
            ..Default::default()
        };
        let request = CreateSessionRequest {
            session_id: id.into(),
            session: Some(spec),
        };
        client.create_session(request).await?;
    }
    let apps = ok(&endpoint, &["list", "-a"]);
    golden(
        "list_applications.txt",
        &mask(&apps, base, &[(4, "<time>")]),
    );
    let sessions = ok(&endpoint, &["list", "--session"]);
    golden(
        "list_sessions.txt",
        &mask(&sessions, base, &[(9, "<time>")]),
    );
    let host = [
        (0, "<host>"),
        (1, "<host>"),
        (3, "<n>"),
        (4, "<mem>"),
        (5, "<arch>"),
        (6, "<os>"),
    ];
    let nodes = ok(&endpoint, &["list", "-n"]);
    golden("list_nodes.txt", &mask(&nodes, base, &host));
    let sessions: Value = serde_json::from_str(&ok(&endpoint, &["list", "-s", "-o", "json"]))?;
    assert_eq!(sessions[0]["id"], "3", "{sessions}");
    assert_eq!(
        sessions[1]["resources"], "cpu=1,mem=1Gi,gpu=0",
        "{sessions}"
    );
    let executors: Value = serde_json::from_str(&ok(&endpoint, &["list", "-e", "-o", "json"]))?;
    assert!(executors.is_array(), "{executors}");
    view(&endpoint, base)?;
    let header = ok(&endpoint, &["list", "-e"]);
    assert_eq!(
        header
            .lines()
            .next()
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>),
        Some(vec!["ID", "State", "Session", "Node"])
    );
    Ok(())
}

/// `view -s` and `view -a` as text (golden, the creation time masked) and as JSON.
fn view(endpoint: &str, base: u16) -> anyhow::Result<()> {
    let time = |text: &str| {
        let lines = text
            .lines()
            .map(|line| match line.split_once("Creation Time: ") {
                Some((head, _)) => format!("{head}Creation Time: <time>"),
                None => line.to_owned(),
            });
        lines.map(|l| l + "\n").collect::<String>()
    };
    let session = ok(endpoint, &["view", "-s", "12"]);
    golden("view_session.txt", &mask(&time(&session), base, &[]));
    let app = ok(endpoint, &["view", "--application", "flmping"]);
    golden("view_application.txt", &mask(&time(&app), base, &[]));
    let json: Value = serde_json::from_str(&ok(endpoint, &["view", "-s", "12", "-o", "json"]))?;
    assert_eq!(json["id"], "12", "{json}");
    assert_eq!(json["tasks"].as_array().map(Vec::len), Some(0), "{json}");
    let (success, _, stderr) = flmctl(endpoint, &["view", "-a", "nope"]);
    assert!(
        !success && stderr.contains("nope") && stderr.lines().count() == 1,
        "{stderr}"
    );
    Ok(())
}

/// No member: one line naming the endpoint, with the hint, and a failure exit status.
fn unreachable(base: u16) {
    let dead = format!("127.0.0.1:{}", base + 50);
    for args in [&["list", "-a"][..], &["cluster", "status"]] {
        let (success, stdout, stderr) = flmctl(&dead, args);
        assert!(!success && stdout.is_empty(), "{args:?}: {stdout}");
        let masked = mask(&stderr, base, &[]);
        assert_eq!(masked.lines().count(), 1, "{masked}");
        let expected = "Error: no Flame member answered at <dead>; is the cluster running? \
                        (flmctl local up) [last error: <dead>: ";
        assert!(masked.starts_with(expected), "{masked}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_and_lists_against_a_three_member_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let up = Up::start(dir.path(), base);
    cluster_status(base);
    lists(base).await?;
    unreachable(base);
    drop(up);
    Ok(())
}
