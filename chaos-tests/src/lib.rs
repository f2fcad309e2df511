//! A harness for multi-process tests of a Flame control plane, and the chaos tests built on it.
//!
//! [`Cluster`] starts control-plane members as separate OS processes on 127.0.0.1, each with its
//! own data directory, and gives tests what they need to hurt them: SIGKILL a member, restart it
//! on the same ports and data, find the leader, and open clients to any member. It also starts
//! real `flame-node-agent` processes against every member ([`Cluster::start_agent`]), each with
//! its own node name, agent id, work directory and a `FLAME_HOME` whose `bin/` holds
//! `flmping-service`, and SIGKILLs them ([`Cluster::kill_agent`]). [`build_binaries`] builds
//! and locates the member, agent and SDK service binaries. [`prometheus`] reads the members'
//! `/metrics` text ([`Cluster::metrics`]) into phase deltas, sums and histogram estimates.
//!
//! Why processes: a member killed with SIGKILL loses everything that was not durable, exactly as
//! in production; threads in one process cannot show that.
//!
//! Clients: the harness reads each member's status through the SDK's client core
//! ([`Cluster::client`], `flame_sdk::client::Connection::member_status`: its channels, attempt
//! limits and error kinds), one member at a time on purpose. [`Cluster::wait_for_leader`] is an
//! oracle: it must see every member's own view to check that they agree, which the SDK's
//! leader discovery (one answer, followed) would hide. Raw per-member proto clients
//! ([`Cluster::frontend`], [`Cluster::channel`]) remain for tests that must talk to one chosen
//! member, as flamepy does.
//!
//! Caveats:
//! - Ports are chosen by binding port 0 and releasing it before the member binds it again; on a
//!   busy machine another process could take the port in between (the member then fails to start
//!   with a clear error, and the test fails rather than hangs).
//! - Every wait has a deadline; nothing here sleeps for a fixed time and then asserts.

use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{MemberStatus, Role};
use flame_proto::v1::frontend_client::FrontendClient;
use flame_sdk::client::{ConnectOptions, Connection};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod agent;
mod binaries;
pub mod checker;
pub mod flamepy;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod prometheus;
pub mod run;
pub mod runner;
mod wait;
pub mod workload;

pub use agent::{Agent, AgentOptions};
pub use binaries::{Binaries, build_binaries, build_example, build_failpoint_member};
pub use wait::{ping_session_spec, poll};

/// What can go wrong while driving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A process could not be started or stopped.
    #[error("member {id}: {message}")]
    Process {
        /// The member.
        id: u64,
        /// What happened.
        message: String,
    },
    /// A condition did not hold before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A node agent could not be started or stopped.
    #[error("agent {name}: {message}")]
    Agent {
        /// The agent's node name.
        name: String,
        /// What happened.
        message: String,
    },
    /// The nested `cargo build` of the binaries failed.
    #[error("build: {0}")]
    Build(String),
    /// Local I/O failed (ports, directories).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The SDK's client core refused its configuration (the members' URLs).
    #[error("client: {0}")]
    Client(#[from] flame_sdk::client::ClientError),
}

/// One member process and where it listens.
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Client API address.
    pub api_addr: SocketAddr,
    /// Raft peer address.
    pub raft_addr: SocketAddr,
    /// Prometheus `/metrics` address.
    pub metrics_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The client API URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.api_addr)
    }
}

/// A control-plane group running as separate processes.
pub struct Cluster {
    binary: PathBuf,
    name: String,
    extra_flags: Vec<String>,
    /// Environment variables every member process gets (such as `FAILPOINTS`).
    env: Vec<(String, String)>,
    members: Vec<Member>,
    agents: Vec<agent::Agent>,
    client: Connection,
    /// The members' private network, when the cluster can be partitioned (dropped after the
    /// processes: fields drop after `Drop::drop`).
    net: Option<net::Netns>,
    _root: tempfile::TempDir,
}

/// The client core's limits for status reads: short, so a stopped or partitioned member costs
/// a poll at most this long.
fn status_options() -> ConnectOptions {
    ConnectOptions {
        deadline: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..ConnectOptions::default()
    }
}

/// Ports the harness hands out come from below Linux's ephemeral range (32768 and up by
/// default), so an outgoing connection can never take a port between the moment the harness
/// checks it and the moment a member binds it; and a port is handed out once per process.
const PORT_RANGE: std::ops::Range<u16> = 12_000..32_000;

pub(crate) fn free_port() -> Result<SocketAddr, HarnessError> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Start at a per-process offset so parallel test binaries rarely probe the same ports.
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(handed_out.len() as u32 * 104_729)
        % span;
    for step in 0..span {
        let port = PORT_RANGE.start + ((seed + step * 37) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            handed_out.push(port);
            return Ok(listener.local_addr()?);
        }
    }
    Err(HarnessError::Io(std::io::Error::other(
        "no free port below the ephemeral range",
    )))
}

/// Member `id`'s addresses and data directory: free loopback ports, or fixed ports on its own
/// address in `net`.
fn new_member(id: u64, root: &Path, net: Option<&net::Netns>) -> Result<Member, HarnessError> {
    let (api_addr, raft_addr, metrics_addr) = match net {
        Some(net) => {
            let ip = std::net::IpAddr::V4(net.member_ip(id));
            (
                SocketAddr::new(ip, 7000),
                SocketAddr::new(ip, 7001),
                SocketAddr::new(ip, 7002),
            )
        }
        None => (free_port()?, free_port()?, free_port()?),
    };
    Ok(Member {
        id,
        api_addr,
        raft_addr,
        metrics_addr,
        data_dir: root.join(format!("member-{id}")),
        child: None,
    })
}

impl Cluster {
    /// Starts `size` members of cluster `name` from the control-plane `binary`.
    pub fn start(binary: &Path, name: &str, size: u64) -> Result<Cluster, HarnessError> {
        Cluster::start_with(binary, name, size, &[])
    }

    /// Starts `size` members like [`Cluster::start`], each also given `extra_flags` (such as
    /// `["--node-timeout-ms", "3000"]`), on every start and restart.
    pub fn start_with(
        binary: &Path,
        name: &str,
        size: u64,
        extra_flags: &[&str],
    ) -> Result<Cluster, HarnessError> {
        Cluster::start_on(binary, name, size, extra_flags, None, Vec::new())
    }

    /// Starts `size` members like [`Cluster::start_with`], each in its own network namespace
    /// of a private network ([`net::Netns`]), so [`Cluster::network`] can partition them; each
    /// member process also gets `env`.
    pub fn start_partitionable(
        binary: &Path,
        name: &str,
        size: u64,
        extra_flags: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Cluster, HarnessError> {
        let ids: Vec<u64> = (1..=size).collect();
        let net = net::Netns::create(&ids)?;
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Cluster::start_on(binary, name, size, extra_flags, Some(net), env)
    }

    fn start_on(
        binary: &Path,
        name: &str,
        size: u64,
        extra_flags: &[&str],
        net: Option<net::Netns>,
        env: Vec<(String, String)>,
    ) -> Result<Cluster, HarnessError> {
        let root = tempfile::tempdir()?;
        let mut members = Vec::new();
        for id in 1..=size {
            members.push(new_member(id, root.path(), net.as_ref())?);
        }
        let urls: Vec<String> = members.iter().map(Member::url).collect();
        let client = Connection::with_options(&urls, status_options())?;
        let mut cluster = Cluster {
            binary: binary.into(),
            name: name.into(),
            extra_flags: extra_flags.iter().map(|f| (*f).to_owned()).collect(),
            env,
            members,
            agents: Vec::new(),
            client,
            net,
            _root: root,
        };
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts a new member process with the next id, not part of the group yet (it does not
    /// initialize anything: only the lowest id in its member list would); add it through the
    /// admin API. Returns its id.
    pub fn add_member(&mut self) -> Result<u64, HarnessError> {
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let root = self._root.path().to_path_buf();
        if let Some(net) = self.net.as_mut() {
            net.add_member(id)?;
        }
        let member = new_member(id, &root, self.net.as_ref())?;
        self.members.push(member);
        self.spawn(id)?;
        Ok(id)
    }

    fn members_flag(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}/{}", m.id, m.raft_addr, m.api_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) member `id` on its ports and data directory.
    pub fn spawn(&mut self, id: u64) -> Result<(), HarnessError> {
        self.spawn_limited(id, None)
    }

    /// Restarts member `id` (it must be stopped) with no file of it allowed to grow past
    /// `bytes`, its data files included: a full disk for that member alone. `SIGXFSZ` is
    /// ignored in the process, so a write past the limit fails with `EFBIG` as one past a full
    /// disk fails with `ENOSPC`, instead of killing the process.
    pub fn spawn_with_file_limit(&mut self, id: u64, bytes: u64) -> Result<(), HarnessError> {
        self.spawn_limited(id, Some(bytes))
    }

    /// Waits up to `deadline` for member `id`'s process to end by itself; its exit status.
    pub async fn wait_exit(
        &mut self,
        id: u64,
        deadline: Duration,
    ) -> Result<std::process::ExitStatus, HarnessError> {
        let what = format!("member {id} to exit");
        poll(&what, deadline, || std::future::ready(self.try_exit(id))).await
    }

    /// Member `id`'s exit status if its process has ended by itself (it is then no longer
    /// running), `None` while it runs.
    pub fn try_exit(&mut self, id: u64) -> Result<Option<std::process::ExitStatus>, HarnessError> {
        let m = self.member_mut(id)?;
        let status = match m.child.as_mut() {
            Some(child) => child.try_wait()?,
            None => None,
        };
        if status.is_some() {
            m.child = None;
        }
        Ok(status)
    }

    fn spawn_limited(&mut self, id: u64, file_limit: Option<u64>) -> Result<(), HarnessError> {
        let members = self.members_flag();
        let binary = self.binary.clone();
        let name = self.name.clone();
        let extra = self.extra_flags.clone();
        let env = self.env.clone();
        let mut command = match (&self.net, file_limit) {
            (Some(net), Some(bytes)) => {
                file_limited(net.command(id, Path::new("prlimit"))?, &binary, bytes)
            }
            (None, Some(bytes)) => file_limited(Command::new("prlimit"), &binary, bytes),
            (Some(net), None) => net.command(id, &binary)?,
            (None, None) => Command::new(binary),
        };
        let m = self.member_mut(id)?;
        let log = std::fs::File::create(m.data_dir.with_extension("log"))?;
        let child = command
            .arg("--cluster-name")
            .arg(name)
            .arg("--id")
            .arg(id.to_string())
            .arg("--api-addr")
            .arg(m.api_addr.to_string())
            .arg("--raft-addr")
            .arg(m.raft_addr.to_string())
            .arg("--members")
            .arg(members)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--metrics-addr")
            .arg(m.metrics_addr.to_string())
            .args(&extra)
            .envs(env)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError::Process {
                id,
                message: format!("cannot start {}: {e}", self.binary.display()),
            })?;
        self.member_mut(id)?.child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `id` and waits for it to die.
    pub fn kill(&mut self, id: u64) -> Result<(), HarnessError> {
        let m = self.member_mut(id)?;
        if let Some(mut child) = m.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Member `id`'s process id while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.member(id).ok()?.child.as_ref().map(Child::id)
    }

    /// Stops member `id` with SIGSTOP: it keeps its sockets and memory but runs nothing, as a
    /// process stalled by the scheduler, swap or a debugger would.
    pub fn pause(&mut self, id: u64) -> Result<(), HarnessError> {
        self.signal(id, nix::sys::signal::Signal::SIGSTOP)
    }

    /// Resumes member `id` after [`Cluster::pause`] (SIGCONT).
    pub fn resume(&mut self, id: u64) -> Result<(), HarnessError> {
        self.signal(id, nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&mut self, id: u64, signal: nix::sys::signal::Signal) -> Result<(), HarnessError> {
        let m = self.member_mut(id)?;
        let Some(child) = m.child.as_ref() else {
            return Err(HarnessError::Process {
                id,
                message: format!("cannot send {signal}: not running"),
            });
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).map_err(|e| HarnessError::Process {
            id,
            message: format!("cannot send {signal}: {e}"),
        })
    }

    /// The members' private network, for clusters made by [`Cluster::start_partitionable`].
    pub fn network(&self) -> Option<&net::Netns> {
        self.net.as_ref()
    }

    /// The member with this id.
    pub fn member(&self, id: u64) -> Result<&Member, HarnessError> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| HarnessError::Process {
                id,
                message: "no such member".into(),
            })
    }

    fn member_mut(&mut self, id: u64) -> Result<&mut Member, HarnessError> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| HarnessError::Process {
                id,
                message: "no such member".into(),
            })
    }

    /// All members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The log file of member `id` (stdout and stderr), for failure messages.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Ok(m) = self.member(id) else {
            return String::new();
        };
        // Lossy: a member killed mid-write may leave a torn UTF-8 sequence, which must not
        // hide the rest of its log.
        let bytes = std::fs::read(m.data_dir.with_extension("log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A channel to member `id`'s client API (connected lazily).
    pub fn channel(&self, id: u64) -> Result<Channel, HarnessError> {
        let m = self.member(id)?;
        let endpoint = Channel::from_shared(m.url()).map_err(|e| HarnessError::Process {
            id,
            message: e.to_string(),
        })?;
        Ok(endpoint
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy())
    }

    /// A Frontend client for member `id`.
    pub fn frontend(&self, id: u64) -> Result<FrontendClient<Channel>, HarnessError> {
        Ok(FrontendClient::new(self.channel(id)?))
    }

    /// A Cluster (admin) client for member `id`.
    pub fn admin(&self, id: u64) -> Result<ClusterClient<Channel>, HarnessError> {
        Ok(ClusterClient::new(self.channel(id)?))
    }

    /// Member `id`'s Prometheus metrics text, fetched with a plain HTTP/1.0 GET.
    pub async fn metrics(&self, id: u64) -> Result<String, HarnessError> {
        scrape(self.member(id)?.metrics_addr).await
    }

    /// The SDK's client core, connected to the members started with the cluster (members
    /// added later are reached by URL through [`Connection::member_status`]).
    pub fn client(&self) -> &Connection {
        &self.client
    }

    /// Member `id`'s own status, if it answers within the status attempt limit.
    pub async fn status(&self, id: u64) -> Option<MemberStatus> {
        let url = self.member(id).ok()?.url();
        self.client.member_status(&url).await.ok()
    }

    /// Waits until every running member in `among` agrees on one leader that is itself running
    /// and reports the leader role; returns its id.
    pub async fn wait_for_leader(
        &self,
        among: &[u64],
        deadline: Duration,
    ) -> Result<u64, HarnessError> {
        let started = Instant::now();
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while started.elapsed() < deadline {
            poll.tick().await;
            let mut leaders = Vec::new();
            for id in among {
                match self.status(*id).await {
                    Some(s) => leaders.push((s.leader_id, s.id, s.role())),
                    None => leaders.push((None, *id, Role::Unknown)),
                }
            }
            let first = leaders.first().and_then(|l| l.0);
            if let Some(leader) = first
                && leaders.iter().all(|l| l.0 == Some(leader))
                && leaders.iter().any(|l| l.1 == leader && l.2 == Role::Leader)
            {
                return Ok(leader);
            }
        }
        Err(HarnessError::Timeout {
            what: format!("members {among:?} to agree on a leader"),
            after: deadline,
        })
    }

    /// Waits until member `id` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        deadline: Duration,
    ) -> Result<(), HarnessError> {
        let started = Instant::now();
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while started.elapsed() < deadline {
            poll.tick().await;
            if self.status(id).await.is_some_and(|s| s.applied >= index) {
                return Ok(());
            }
        }
        Err(HarnessError::Timeout {
            what: format!("member {id} to apply index {index}"),
            after: deadline,
        })
    }
}

/// A command that runs `binary` unable to grow any file past `bytes` (`RLIMIT_FSIZE`, set by
/// util-linux's `prlimit`), with `SIGXFSZ` ignored (coreutils' `env --ignore-signal`) so such a
/// write fails with `EFBIG` rather than killing the process. Both are Debian essentials.
/// `command` is `prlimit` itself, possibly run inside a namespace.
fn file_limited(mut command: Command, binary: &Path, bytes: u64) -> Command {
    command
        .arg(format!("--fsize={bytes}:{bytes}"))
        .args(["--", "env", "--ignore-signal=XFSZ"])
        .arg(binary);
    command
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first, so they stop their instances before the members go away.
        self.agents.clear();
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `GET /metrics` from `addr`: the raw response, head included (see [`prometheus::Scrape`]).
pub(crate) async fn scrape(addr: SocketAddr) -> Result<String, HarnessError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}
