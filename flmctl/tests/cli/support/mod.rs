//! Shared helpers of flmctl's end-to-end tests: free ports, a running `flmctl local up`,
//! running flmctl itself, masking volatile output and comparing with golden files.
//!
//! Each test binary includes this module with `mod support;` and uses what it needs.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flmctl");

/// A base port such that base..base+3 (API), base+100..base+103 (Raft), base+50 (a port
/// nobody listens on) and base+200..base+202 (the cache's Flight and peer ports) are free now.
pub fn free_base() -> u16 {
    for _ in 0..50 {
        let base = rand::random_range(12_000u16..32_000);
        let ports = (0..3).flat_map(|i| [base + i, base + 100 + i]).chain([
            base + 50,
            base + 200,
            base + 201,
        ]);
        let held: Vec<_> = ports
            .filter_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 9 {
            return base;
        }
    }
    panic!("no free port range found");
}

/// A running `flmctl local up`, interrupted (then killed, if need be) on drop.
pub struct Up(pub Child);

impl Up {
    /// Starts `flmctl local up` without Python provisioning (tests that need it say so).
    pub fn start(dir: &Path, base: u16) -> Up {
        Up::start_with(dir, base, false).0
    }

    /// Starts `flmctl local up` under `dir`, preparing Python for flmrun when `python` (the
    /// first run on a machine downloads it, so the wait is long); returns it with the lines it
    /// printed up to `Press Ctrl-C`.
    pub fn start_with(dir: &Path, base: u16, python: bool) -> (Up, Vec<String>) {
        let log = std::fs::File::create(dir.join("up.log")).expect("log file");
        let mut command = Command::new(BIN);
        command
            .args(["local", "up", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--api-port", &base.to_string()])
            .args(["--raft-port", &(base + 100).to_string()])
            .args(["--cache-port", &(base + 200).to_string()]);
        if !python {
            command.arg("--no-python");
        }
        let mut child = command
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("flmctl starts");
        let stdout = child.stdout.take().expect("piped");
        let up = Up(child);
        let limit = Duration::from_secs(if python { 600 } else { 30 });
        // Lines arrive on a channel so the wait is bounded even if nothing is printed.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + limit;
        let mut printed = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = line.starts_with("Press Ctrl-C");
            printed.push(line);
            if done {
                return (up, printed);
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
pub fn flmctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--endpoint", endpoint];
    all.extend_from_slice(args);
    flmctl_env(&all, &[])
}

/// Runs flmctl with `args` (no `--endpoint` added), without `FLAME_ENDPOINT` or
/// `FLAME_CACHE_ENDPOINT` unless `env` sets them, and with the variables in `env`; returns
/// (success, stdout, stderr).
pub fn flmctl_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("FLAME_ENDPOINT")
        .env_remove("FLAME_CACHE_ENDPOINT")
        .envs(env.iter().copied())
        .output()
        .expect("flmctl runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Names the cluster's endpoints, then masks the listed columns of every data row; `<n>`
/// masks numbers only (a `-` stays), `<role>` only `leader` and `follower`. Whitespace between cells becomes one space.
pub fn mask(text: &str, base: u16, columns: &[(usize, &str)]) -> String {
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

pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(actual, expected, "golden {name} differs");
}

pub fn ok(endpoint: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = flmctl(endpoint, args);
    assert!(success, "flmctl {args:?} failed: {stderr}");
    stdout
}

/// Masks the times of a `view` text: `Creation Time: <time>` and event lines
/// `  HH:MM:SS.mmm: ...` as `  <time>: ...`.
pub fn mask_times(text: &str) -> String {
    let event_time = |s: &str| {
        let b = s.as_bytes();
        b.len() >= 13
            && b[2] == b':'
            && b[5] == b':'
            && b[8] == b'.'
            && b[12] == b':'
            && [0, 1, 3, 4, 6, 7, 9, 10, 11]
                .iter()
                .all(|i| b[*i].is_ascii_digit())
    };
    let mut masked = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let pad = &line[..line.len() - trimmed.len()];
        match line.split_once("Creation Time: ") {
            Some((head, _)) => masked.push_str(&format!("{head}Creation Time: <time>")),
            None if event_time(trimmed) => {
                masked.push_str(&format!("{pad}<time>{}", &trimmed[12..]))
            }
            None => masked.push_str(line),
        }
        masked.push('\n');
    }
    masked
}

/// Polls `cluster status -o json` through `endpoint` until `done` holds for its rows; fails
/// naming `what` and the last rows after `limit`.
pub fn status_until(
    endpoint: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let json = ok(endpoint, &["cluster", "status", "-o", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: {json}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
