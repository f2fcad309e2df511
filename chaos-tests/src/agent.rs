//! Real `flame-node-agent` processes started against a [`Cluster`]'s members.
//!
//! Each agent gets its own directory under the cluster's root: `work/` (its work directory,
//! with instance logs in `work/logs/<executor>.out|.err`), `home/` (its `FLAME_HOME`:
//! `bin/flmping-service`, `bin/flmexec-service`, and `uv` and flamepy when
//! [`AgentOptions::python`] says) and `agent.log` (its own stdout and stderr; never a pipe).
//! An agent killed with [`Cluster::kill_agent`] can be started again under the same name: same
//! directories, node name and agent id, its log appended to, like a machine that reboots.
//!
//! Counting launches: every time the agent's host shim starts an instance it writes one
//! `=== <header>` line at the top of that executor's `.out` log before the process runs, and
//! the logs outlive both the instance and the agent. So the number of such lines is the
//! number of instance launches, and the number of `.out` files the number of distinct
//! executors launched; see [`Agent::launches`].
//!
//! Every agent runs its node's object cache (unless [`AgentOptions::cache`] is off) on loopback
//! ports the harness picks once per agent name (Flight, QUIC peer, metrics), so a restarted
//! agent's cache comes back on the same addresses with the same storage (`work/cache`); see
//! [`Agent::cache_endpoint`] and [`Agent::cache_metrics`].
//!
//! Caveat: instances run in their own process group, so a SIGKILLed agent leaves them
//! running. [`Cluster::kill_agent`] and drop therefore also SIGKILL every process whose
//! working directory lies under the agent's work directory (found through `/proc`, Linux
//! only), as a lost machine would lose them; an application whose `working_directory` lies
//! elsewhere is not reaped.

use crate::prometheus::Scrape;
use crate::{Binaries, Cluster, HarnessError, Member, free_port, scrape};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How to start one agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The `flame-node-agent` binary.
    pub binary: PathBuf,
    /// The `flmping-service` binary, linked into the agent's `FLAME_HOME/bin`.
    pub flmping_service: PathBuf,
    /// The `flmexec-service` binary, linked into the agent's `FLAME_HOME/bin`.
    pub flmexec_service: PathBuf,
    /// CPU cores offered (`--cpu`).
    pub cpu: u64,
    /// Memory offered (`--memory`, such as `8g`).
    pub memory: String,
    /// Further flags, appended as given.
    pub extra_flags: Vec<String>,
    /// Run the node's object cache in the agent (the agent's default); off adds `--no-cache`.
    pub cache: bool,
    /// Python for `flmrun` and the Runner: `uv` and a `lib/python<ver>` directory holding
    /// flamepy, linked into the agent's `FLAME_HOME` as `bin/uv` and `lib/python<ver>`
    /// (see [`crate::flamepy::flamepy_home_parts`]); `None`: no Python.
    pub python: Option<(PathBuf, PathBuf)>,
}

impl AgentOptions {
    /// Options with the built binaries, 4 cores and 8 GiB.
    pub fn new(binaries: &Binaries) -> AgentOptions {
        AgentOptions {
            binary: binaries.node_agent.clone(),
            flmping_service: binaries.flmping_service.clone(),
            flmexec_service: binaries.flmexec_service.clone(),
            cpu: 4,
            memory: "8g".to_owned(),
            extra_flags: Vec::new(),
            cache: true,
            python: None,
        }
    }
}

/// One node-agent process and its directories.
pub struct Agent {
    /// The node name (`--node-name`); also the agent's key in the cluster.
    pub name: String,
    /// The agent id (`--agent-id`).
    pub agent_id: String,
    /// The work directory (`--work-dir`).
    pub work_dir: PathBuf,
    /// `FLAME_HOME` (`--flame-home`).
    pub flame_home: PathBuf,
    /// The agent's own log (stdout and stderr).
    pub log: PathBuf,
    /// The Flight address of the node's cache (when the agent runs one).
    pub cache_flight: SocketAddr,
    /// The QUIC peer address (UDP) of the node's cache.
    pub cache_peer: SocketAddr,
    /// Where the node's cache serves Prometheus `/metrics`.
    pub cache_metrics: SocketAddr,
    /// Whether the agent was started with its cache.
    pub cache: bool,
    child: Option<Child>,
}

impl Agent {
    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `(launches, executors)`: instance launches so far (one `===` header line per launch
    /// in the executors' `.out` logs) and the number of distinct executors launched.
    pub fn launches(&self) -> Result<(usize, usize), HarnessError> {
        let dir = self.work_dir.join("logs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok((0, 0));
        };
        let (mut launches, mut executors) = (0, 0);
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "out") {
                executors += 1;
                let text = std::fs::read_to_string(&path)?;
                launches += text.lines().filter(|l| l.starts_with("=== ")).count();
            }
        }
        Ok((launches, executors))
    }

    /// The Flight URL of the node's cache, `grpc://127.0.0.1:<port>`, when it runs one.
    pub fn cache_endpoint(&self) -> Option<String> {
        self.cache.then(|| format!("grpc://{}", self.cache_flight))
    }

    /// A scrape of the node cache's metrics (`flame_cache_*`).
    pub async fn cache_metrics(&self) -> Result<Scrape, HarnessError> {
        Ok(Scrape::parse(&scrape(self.cache_metrics).await?))
    }

    /// The node cache's storage directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.work_dir.join("cache")
    }

    /// The last `lines` lines of the agent's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILLs the agent, waits for it, then SIGKILLs its orphaned instances.
    fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        kill_processes_under(&self.work_dir);
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Links `link` to `target` unless something is there already (a restarted agent).
fn link_once(target: &Path, link: &Path) -> std::io::Result<()> {
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(target, link)?;
    }
    Ok(())
}

/// SIGKILLs every process whose working directory is under `dir` (best effort, Linux).
fn kill_processes_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Cluster {
    /// Starts a node agent for node `name` (agent id `<name>-id`) against every member's
    /// client API, with its own work directory and `FLAME_HOME`.
    ///
    /// An agent of that name that is no longer running (killed with [`Cluster::kill_agent`])
    /// is started again on the same directories, node name and agent id, like a machine that
    /// reboots; its log is appended to. Starting an agent that is still running is an error.
    pub fn start_agent(&mut self, name: &str, options: &AgentOptions) -> Result<(), HarnessError> {
        let error = |message: String| HarnessError::Agent {
            name: name.to_owned(),
            message,
        };
        let existing = self.agents.iter().position(|a| a.name == name);
        if let Some(index) = existing
            && self.agents[index].is_running()
        {
            return Err(error("already running".into()));
        }
        let dir = self._root.path().join(format!("agent-{name}"));
        let work_dir = dir.join("work");
        let flame_home = dir.join("home");
        std::fs::create_dir_all(&work_dir)?;
        std::fs::create_dir_all(flame_home.join("bin"))?;
        link_once(
            &options.flmping_service,
            &flame_home.join("bin/flmping-service"),
        )?;
        link_once(
            &options.flmexec_service,
            &flame_home.join("bin/flmexec-service"),
        )?;
        if let Some((uv, lib)) = &options.python {
            link_once(uv, &flame_home.join("bin/uv"))?;
            std::fs::create_dir_all(flame_home.join("lib"))?;
            if let Some(name) = lib.file_name() {
                link_once(lib, &flame_home.join("lib").join(name))?;
            }
        }
        let log = dir.join("agent.log");
        let agent_id = format!("{name}-id");
        let index = match existing {
            Some(index) => index,
            None => {
                self.agents.push(Agent {
                    name: name.to_owned(),
                    agent_id,
                    work_dir,
                    flame_home,
                    log,
                    cache_flight: free_port()?,
                    cache_peer: free_port()?,
                    cache_metrics: free_port()?,
                    cache: options.cache,
                    child: None,
                });
                self.agents.len() - 1
            }
        };
        self.agents[index].cache = options.cache;
        let child = self
            .spawn_agent(&self.agents[index], options)
            .map_err(|e| error(format!("cannot start {}: {e}", options.binary.display())))?;
        self.agents[index].child = Some(child);
        Ok(())
    }

    /// Spawns one `flame-node-agent` process, its output appended to `log`.
    fn spawn_agent(&self, agent: &Agent, options: &AgentOptions) -> std::io::Result<Child> {
        let endpoints = self
            .members
            .iter()
            .map(Member::url)
            .collect::<Vec<_>>()
            .join(",");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&agent.log)?;
        let mut command = Command::new(&options.binary);
        if options.cache {
            command
                .arg("--cache-listen")
                .arg(agent.cache_flight.to_string())
                .arg("--cache-peer-listen")
                .arg(agent.cache_peer.to_string())
                .arg("--cache-metrics-addr")
                .arg(agent.cache_metrics.to_string());
        } else {
            command.arg("--no-cache");
        }
        command
            .arg("--endpoint")
            .arg(endpoints)
            .args(["--node-name", &agent.name, "--agent-id", &agent.agent_id])
            .args([
                "--cpu",
                &options.cpu.to_string(),
                "--memory",
                &options.memory,
            ])
            .arg("--work-dir")
            .arg(&agent.work_dir)
            .arg("--flame-home")
            .arg(&agent.flame_home)
            .args(&options.extra_flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
    }

    /// SIGKILLs agent `name` and the instances it started (a lost machine); its directories
    /// and logs stay for inspection.
    pub fn kill_agent(&mut self, name: &str) -> Result<(), HarnessError> {
        self.agent_mut(name)?.kill()
    }

    /// The agent for node `name`.
    pub fn agent(&self, name: &str) -> Result<&Agent, HarnessError> {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| HarnessError::Agent {
                name: name.to_owned(),
                message: "no such agent".into(),
            })
    }

    fn agent_mut(&mut self, name: &str) -> Result<&mut Agent, HarnessError> {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| HarnessError::Agent {
                name: name.to_owned(),
                message: "no such agent".into(),
            })
    }

    /// All agents started so far.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }
}
