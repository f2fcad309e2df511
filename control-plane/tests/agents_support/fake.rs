//! A fake node agent speaking `flame.agent.v1` against real control-plane processes.
//!
//! What it does, per docs/agent-protocol.md: registers its node through any member (following
//! NotLeader hints), opens `Sync` on the leader with a first heartbeat, heartbeats on the
//! interval the leader answered, and acts on every `Assignments` snapshot idempotently: BIND
//! "launches" an instance and reports the bind, RUN runs each task once (after an optional
//! delay) and reports its outcome, UNBIND and RELEASE report back. Outcomes are remembered until
//! a snapshot no longer lists the task for that executor, and re-reported once per new stream,
//! so a report lost with a killed leader is delivered to the next one without running the task
//! again. When the stream fails it registers again and reconnects with bounded exponential
//! backoff.
//!
//! What it records ([`Log`]): how often each task was run and each executor was bound, how many
//! streams it opened, how many NotLeader hints it followed, and the statuses its streams ended
//! with, so tests can check "exactly once" and "not relaunched".
//!
//! Caveat: instances are simulated; a [`Behaviour`] decides how binds and tasks end.

use anyhow::{Context, bail};
use flame_proto::agent::node_agent_client::NodeAgentClient;
use flame_proto::agent::{
    AgentMessage, Assignments, BindOutcome, ExecutorAction, Heartbeat, LeaderMessage, Pull,
    RegisterNodeRequest, Report, TaskOutcome, UnbindOutcome, agent_message, leader_message,
};
use flame_proto::error::{FlameError, LeaderHint};
use flame_proto::v1;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// How binds and tasks end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Binds succeed; tasks succeed with output `out-<input>`.
    Succeed,
    /// Binds fail with return code 12 and this message.
    FailBinds(String),
    /// Binds succeed; tasks fail with return code 1 and this message.
    FailTasks(String),
    /// Binds succeed; tasks never finish.
    Hold,
}

/// How the fake agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name.
    pub node: String,
    /// Agent id (the host).
    pub agent_id: String,
    /// Client API URLs of the members, tried in order.
    pub members: Vec<String>,
    /// How binds and tasks end.
    pub behaviour: Behaviour,
    /// How long each task "runs".
    pub task_delay: Duration,
}

/// What the fake agent did.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Times each task `(session, task)` was started.
    pub runs: BTreeMap<(String, u64), u32>,
    /// Times each executor launched an instance (bind attempts).
    pub binds: BTreeMap<String, u32>,
    /// `Sync` streams opened.
    pub streams: u32,
    /// NotLeader answers whose hint was followed.
    pub redirects: u32,
    /// Statuses that ended streams or refused calls: code and message.
    pub ended: Vec<(Code, String)>,
    /// Snapshots received.
    pub snapshots: u64,
}

/// Most connection attempts before the agent gives up.
const MAX_ATTEMPTS: u32 = 200;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(800);

/// A running fake agent; dropping it (or [`FakeAgent::stop`]) ends its stream abruptly.
pub struct FakeAgent {
    log: Arc<Mutex<Log>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl FakeAgent {
    /// Starts the agent.
    pub fn spawn(config: AgentConfig) -> FakeAgent {
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn(run(config, log.clone()));
        FakeAgent { log, task }
    }

    /// A copy of what the agent did so far.
    pub fn log(&self) -> Log {
        lock(&self.log).clone()
    }

    /// Whether the agent gave up (it only does after [`MAX_ATTEMPTS`] failed connections).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Kills the agent: its connection drops without a goodbye, as when the process dies.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The wire node of the fake agent: cpu 4, memory 8 GiB.
pub fn wire_node(name: &str) -> v1::Node {
    let capacity = v1::ResourceRequirement {
        cpu: 4,
        memory: 8 << 30,
        gpu: 0,
    };
    v1::Node {
        metadata: Some(v1::Metadata {
            id: name.into(),
            name: name.into(),
        }),
        spec: Some(v1::NodeSpec {
            hostname: name.into(),
        }),
        status: Some(v1::NodeStatus {
            state: 0,
            capacity: Some(capacity),
            allocatable: Some(capacity),
            info: Some(v1::NodeInfo {
                arch: "x86_64".into(),
                os: "linux".into(),
            }),
            addresses: vec![v1::NodeAddress {
                r#type: "InternalIP".into(),
                address: "127.0.0.1".into(),
            }],
            last_heartbeat_time: 0,
        }),
    }
}

/// A URL for a member address that may lack a scheme.
pub fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// A NodeAgent client for `url` (lazily connected, short connect timeout).
pub fn client(url: &str) -> anyhow::Result<NodeAgentClient<Channel>> {
    let channel = Channel::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    Ok(NodeAgentClient::new(channel))
}

/// The leader hint of a NotLeader status, if it carries one.
pub fn hint_of(status: &tonic::Status) -> Option<LeaderHint> {
    match FlameError::from(status.clone()) {
        FlameError::NotLeader { leader } => leader,
        _ => None,
    }
}

/// What the agent holds across streams.
#[derive(Default)]
struct Held {
    /// Session each executor's instance is bound to.
    bound: HashMap<String, String>,
    /// Tasks started and not finished: `(executor, session, task)`.
    running: HashSet<(String, String, u64)>,
    /// Outcomes reported and still listed by the latest snapshot.
    outcomes: HashMap<(String, String, u64), TaskOutcome>,
}

/// Per-stream bookkeeping: what was already (re-)reported on this stream.
#[derive(Default)]
struct StreamMemo {
    binds: HashSet<(String, String)>,
    unbinds: HashSet<(String, String)>,
    released: HashSet<String>,
    resent: HashSet<(String, String, u64)>,
}

async fn run(config: AgentConfig, log: Arc<Mutex<Log>>) -> anyhow::Result<()> {
    let mut held = Held::default();
    let (done_tx, mut done_rx) = mpsc::channel::<TaskOutcome>(1024);
    let mut target = 0usize;
    let mut backoff = BACKOFF_MIN;
    for _ in 0..MAX_ATTEMPTS {
        let leader = match register(&config, &log, &mut target).await {
            Ok(found) => found,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let ctx = StreamCtx {
            config: &config,
            log: &log,
            done_tx: &done_tx,
        };
        if ctx.serve(&leader, &mut held, &mut done_rx).await.is_ok() {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    bail!("gave up after {MAX_ATTEMPTS} connection attempts")
}

/// Registers through `members[target]`, following NotLeader hints; returns the leader's URL and
/// the heartbeat interval.
async fn register(
    config: &AgentConfig,
    log: &Mutex<Log>,
    target: &mut usize,
) -> anyhow::Result<(String, Duration)> {
    let mut url_now = config.members[*target % config.members.len()].clone();
    for _ in 0..4 {
        let request = RegisterNodeRequest {
            node: Some(wire_node(&config.node)),
            executors: Vec::new(),
            agent_id: config.agent_id.clone(),
            cache: None,
        };
        match client(&url_now)?.register_node(request).await {
            Ok(r) => {
                let ms = r.into_inner().heartbeat_interval_ms.clamp(10, 60_000);
                return Ok((url_now, Duration::from_millis(ms)));
            }
            Err(status) => {
                if let Some(hint) = hint_of(&status) {
                    lock(log).redirects += 1;
                    url_now = url(&hint.addr);
                    continue;
                }
                lock(log)
                    .ended
                    .push((status.code(), status.message().to_owned()));
                *target += 1;
                bail!("registration failed: {status:?}");
            }
        }
    }
    *target += 1;
    bail!("too many redirects")
}

struct StreamCtx<'a> {
    config: &'a AgentConfig,
    log: &'a Mutex<Log>,
    done_tx: &'a mpsc::Sender<TaskOutcome>,
}

impl StreamCtx<'_> {
    fn heartbeat(&self) -> AgentMessage {
        AgentMessage {
            message: Some(agent_message::Message::Heartbeat(Heartbeat {
                node_name: self.config.node.clone(),
                status: None,
            })),
        }
    }

    /// Holds one Sync stream until it fails; returns `Ok` if it was opened at all.
    async fn serve(
        &self,
        (leader, interval): &(String, Duration),
        held: &mut Held,
        done_rx: &mut mpsc::Receiver<TaskOutcome>,
    ) -> anyhow::Result<()> {
        let (out, rx) = mpsc::channel(64);
        out.send(self.heartbeat()).await?;
        let mut inbound = client(leader)?
            .sync(ReceiverStream::new(rx))
            .await
            .map_err(|s| self.record(s))?
            .into_inner();
        lock(self.log).streams += 1;
        let mut memo = StreamMemo::default();
        let mut tick = tokio::time::interval(*interval);
        // Bounded by the stream: it ends when the leader ends it or the connection fails.
        loop {
            tokio::select! {
                message = next_message(&mut inbound) => {
                    let message = message.map_err(|s| self.record(s))?;
                    if let Some(report) = self.on_message(message, held, &mut memo) {
                        out.send(report).await?;
                    }
                }
                _ = tick.tick() => out.send(self.heartbeat()).await?,
                Some(first) = done_rx.recv() => {
                    let mut tasks = vec![first];
                    while let Ok(more) = done_rx.try_recv() {
                        tasks.push(more);
                    }
                    let report = self.finished(tasks, held, &mut memo);
                    out.send(report).await?;
                }
            }
        }
    }

    fn record(&self, status: tonic::Status) -> anyhow::Error {
        lock(self.log)
            .ended
            .push((status.code(), status.message().to_owned()));
        anyhow::anyhow!("stream ended: {status:?}")
    }

    /// Task outcomes that just finished: remembered, and reported.
    fn finished(
        &self,
        tasks: Vec<TaskOutcome>,
        held: &mut Held,
        memo: &mut StreamMemo,
    ) -> AgentMessage {
        for t in &tasks {
            let key = (t.executor_id.clone(), t.session_id.clone(), t.task_id);
            held.running.remove(&key);
            held.outcomes.insert(key.clone(), t.clone());
            memo.resent.insert(key);
        }
        report(Report {
            tasks,
            ..Report::default()
        })
    }

    fn on_message(
        &self,
        message: LeaderMessage,
        held: &mut Held,
        memo: &mut StreamMemo,
    ) -> Option<AgentMessage> {
        let Some(leader_message::Message::Assignments(assignments)) = message.message else {
            return None;
        };
        lock(self.log).snapshots += 1;
        let revision = assignments.revision;
        let mut out = self.act(assignments, held, memo);
        let empty = out.tasks.is_empty()
            && out.binds.is_empty()
            && out.unbinds.is_empty()
            && out.released.is_empty();
        if empty {
            let pull = Pull {
                acked_revision: revision,
            };
            return Some(AgentMessage {
                message: Some(agent_message::Message::Pull(pull)),
            });
        }
        out.tasks.sort_by_key(|t| t.task_id);
        Some(report(out))
    }

    /// Acts on one snapshot; returns what to report now.
    fn act(&self, assignments: Assignments, held: &mut Held, memo: &mut StreamMemo) -> Report {
        let mut out = Report::default();
        let mut listed = HashSet::new();
        let mut present = HashSet::new();
        for e in assignments.executors {
            present.insert(e.executor_id.clone());
            let session = e.binding.as_ref().map(|b| b.session_id.clone());
            let action = ExecutorAction::try_from(e.action).unwrap_or(ExecutorAction::Idle);
            match (action, session) {
                (ExecutorAction::Bind, Some(s)) => {
                    self.bind(&e.executor_id, s, held, memo, &mut out)
                }
                (ExecutorAction::Run, Some(s)) => {
                    held.bound.entry(e.executor_id.clone()).or_insert(s);
                    for t in e.tasks {
                        let key = (e.executor_id.clone(), t.session_id.clone(), t.task_id);
                        listed.insert(key.clone());
                        self.run_task(key, t.input, held, memo, &mut out);
                    }
                }
                (ExecutorAction::Unbind, Some(s)) => {
                    held.bound.remove(&e.executor_id);
                    if memo.unbinds.insert((e.executor_id.clone(), s.clone())) {
                        out.unbinds.push(UnbindOutcome {
                            executor_id: e.executor_id.clone(),
                            session_id: s,
                        });
                    }
                }
                (ExecutorAction::Release, _) => {
                    held.bound.remove(&e.executor_id);
                    if memo.released.insert(e.executor_id.clone()) {
                        out.released.push(e.executor_id.clone());
                    }
                }
                _ => {
                    held.bound.remove(&e.executor_id);
                }
            }
        }
        held.outcomes.retain(|k, _| listed.contains(k));
        held.bound.retain(|id, _| present.contains(id));
        out
    }

    fn bind(
        &self,
        executor: &str,
        session: String,
        held: &mut Held,
        memo: &mut StreamMemo,
        out: &mut Report,
    ) {
        if !memo.binds.insert((executor.to_owned(), session.clone())) {
            return;
        }
        let already = held.bound.get(executor) == Some(&session);
        if !already {
            *lock(self.log).binds.entry(executor.to_owned()).or_default() += 1;
        }
        let (code, message) = match &self.config.behaviour {
            Behaviour::FailBinds(message) => (12, Some(message.clone())),
            _ => {
                held.bound.insert(executor.to_owned(), session.clone());
                (0, None)
            }
        };
        out.binds.push(BindOutcome {
            executor_id: executor.to_owned(),
            session_id: session,
            return_code: code,
            message,
        });
    }

    fn run_task(
        &self,
        key: (String, String, u64),
        input: Option<Vec<u8>>,
        held: &mut Held,
        memo: &mut StreamMemo,
        out: &mut Report,
    ) {
        if let Some(done) = held.outcomes.get(&key) {
            if memo.resent.insert(key) {
                out.tasks.push(done.clone());
            }
            return;
        }
        if !held.running.insert(key.clone()) {
            return;
        }
        *lock(self.log)
            .runs
            .entry((key.1.clone(), key.2))
            .or_default() += 1;
        let (return_code, output, message) = match &self.config.behaviour {
            Behaviour::Hold => return,
            Behaviour::FailTasks(message) => (1, None, Some(message.clone())),
            _ => {
                let mut output = b"out-".to_vec();
                output.extend(input.unwrap_or_default());
                (0, Some(output), None)
            }
        };
        let outcome = TaskOutcome {
            executor_id: key.0,
            session_id: key.1,
            task_id: key.2,
            return_code,
            output,
            message,
            duration_us: u64::try_from(self.config.task_delay.as_micros()).unwrap_or(u64::MAX),
        };
        let done = self.done_tx.clone();
        let delay = self.config.task_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = done.send(outcome).await;
        });
    }
}

fn report(report: Report) -> AgentMessage {
    AgentMessage {
        message: Some(agent_message::Message::Report(report)),
    }
}

async fn next_message(
    inbound: &mut Streaming<LeaderMessage>,
) -> Result<LeaderMessage, tonic::Status> {
    match inbound.message().await? {
        Some(message) => Ok(message),
        None => Err(tonic::Status::unavailable("the leader closed the stream")),
    }
}

/// Waits until `check` holds on the agent's log, within `deadline`.
pub async fn wait_log(
    agent: &FakeAgent,
    what: &str,
    deadline: Duration,
    check: impl Fn(&Log) -> bool,
) -> anyhow::Result<Log> {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while started.elapsed() < deadline {
        tick.tick().await;
        let log = agent.log();
        if check(&log) {
            return Ok(log);
        }
    }
    let log = agent.log();
    Err(anyhow::anyhow!("timed out waiting for {what}"))
        .with_context(|| format!("agent log: {log:?}"))
}
