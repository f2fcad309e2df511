//! Persistence and publication of the state machine: the `raftlog::App` of the control plane.
//!
//! What: [`FlameApp`] applies each command to the in-memory [`StateMachine`], then writes every
//! object the command touched (its [`super::Dirty`] set) into the redb write transaction raftlog
//! passed in, so the data commits atomically with the applied log id. [`App::restore`] rebuilds
//! the [`State`] from the tables at open and after a snapshot install. After each durable batch
//! [`App::committed`] publishes an immutable [`StateView`] that [`StateReader`]s read without
//! ever locking the apply path.
//!
//! Tables (raw bytes to raw bytes, values postcard-encoded):
//!
//! | Table | Key | Value |
//! |---|---|---|
//! | `applications` | name | `Application` |
//! | `sessions` | id | session row: `Session` (counters as of the write) and bind failures |
//! | `tasks` | task key | task status: state, times, output, events, requeues |
//! | `task_inputs` | task key | input and request id, written once at creation |
//! | `executors` | id | `Executor`, the task it runs, creation time |
//! | `executor_yields` | id | empty: the executor is yielding its session (a rotation) |
//! | `nodes` | name | `Node` and its agent id |
//! | `object_drops` | seq (u64, big-endian) | `ObjectDrop` |
//! | `cluster_meta` | `cluster_ca` | `ClusterCa` (certificate and private key, PEM) |
//! | `requests` | request id | `RequestRecord` (time and slim answer of a client write) |
//!
//! A task key is the session id's byte length (u32, big-endian), its bytes, then the task id
//! (u64, big-endian), so one session's tasks are contiguous and in id order.
//!
//! Why split rows: a session's common data and a task's input can be megabytes; counters are
//! recomputed from tasks on restore instead of rewriting the session row on every task change,
//! and inputs are written once instead of on every state change.
//!
//! Publication cost per batch: cloning the [`State`] is eight reference-count increments
//! (persistent maps; see the model module), plus one `Arc` allocation for the view. The first
//! change to a shared object afterwards copies only that object's path.
//!
//! Caveats:
//! - `StateView::applied_index` is the log index of the last command applied by this process
//!   (0 after a restore); blank and membership entries do not advance it. Linearizable reads
//!   should wait for openraft's applied index, then read [`StateReader::current`]: raftlog calls
//!   `committed` before it reports a batch applied.
//! - Readers may skip views (a `watch` channel keeps only the newest). `StateView::effects` are
//!   the effects of the newest batch only; a reader whose last seen `revision` is not exactly one
//!   less must rescan the state instead of relying on them.

use super::cache::ClusterCa;
use super::command::{Effect, Response, TaskRef};
use super::model::{ExecutorEntry, NodeEntry, SessionEntry, State, TaskEntry};
use super::tx::Dirty;
use super::{FlameTypeConfig, Proposal, StateConfig, StateMachine};
use bytes::Bytes;
use flame_proto::model::{
    Application, Event, Executor, Node, ObjectDrop, Session, Task, TaskState,
};
use openraft::LogId;
use raftlog::{App, Error};
use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

const APPLICATIONS: Table = TableDefinition::new("applications");
const SESSIONS: Table = TableDefinition::new("sessions");
const TASKS: Table = TableDefinition::new("tasks");
const TASK_INPUTS: Table = TableDefinition::new("task_inputs");
const SESSION_STATS: Table = TableDefinition::new("session_stats");
const EXECUTORS: Table = TableDefinition::new("executors");
const EXECUTOR_YIELDS: Table = TableDefinition::new("executor_yields");
const NODES: Table = TableDefinition::new("nodes");
const OBJECT_DROPS: Table = TableDefinition::new("object_drops");
const CLUSTER_META: Table = TableDefinition::new("cluster_meta");
const REQUESTS: Table = TableDefinition::new("requests");

/// The key of the cluster CA in `cluster_meta`.
const KEY_CLUSTER_CA: &[u8] = b"cluster_ca";

/// The redb tables holding the control plane's replicated state.
pub const TABLES: &[&str] = &[
    "applications",
    "sessions",
    "session_stats",
    "tasks",
    "task_inputs",
    "executors",
    "executor_yields",
    "nodes",
    "object_drops",
    "cluster_meta",
    "requests",
];

#[derive(Serialize)]
struct SessionRowRef<'a> {
    session: &'a Session,
    bind_failures: u32,
}

#[derive(Deserialize)]
struct SessionRow {
    session: Session,
    bind_failures: u32,
}

#[derive(Serialize)]
struct TaskRowRef<'a> {
    state: TaskState,
    creation_time_ms: i64,
    completion_time_ms: Option<i64>,
    output: &'a Option<Bytes>,
    events: &'a [Event],
    requeues: u32,
}

#[derive(Deserialize)]
struct TaskRow {
    state: TaskState,
    creation_time_ms: i64,
    completion_time_ms: Option<i64>,
    output: Option<Bytes>,
    events: Vec<Event>,
    requeues: u32,
}

#[derive(Serialize, Deserialize)]
struct TaskInputRow {
    input: Option<Bytes>,
    request_id: Option<String>,
}

#[derive(Serialize)]
struct ExecutorRowRef<'a> {
    executor: &'a Executor,
    tasks: &'a [TaskRef],
    creation_time_ms: i64,
}

#[derive(Deserialize)]
struct ExecutorRow {
    executor: Executor,
    tasks: Vec<TaskRef>,
    creation_time_ms: i64,
}

#[derive(Serialize)]
struct NodeRowRef<'a> {
    node: &'a Node,
    agent_id: &'a str,
}

#[derive(Deserialize)]
struct NodeRow {
    node: Node,
    agent_id: String,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    Ok(postcard::to_stdvec(value)?)
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    Ok(postcard::from_bytes(bytes)?)
}

fn corrupt(detail: impl std::fmt::Display) -> Error {
    Error::App(format!("corrupt control-plane state: {detail}"))
}

/// The key of task `task_id` of session `session_id` in `tasks` and `task_inputs`.
pub(crate) fn task_key(session_id: &str, task_id: u64) -> Vec<u8> {
    let len = u32::try_from(session_id.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(12 + session_id.len());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(session_id.as_bytes());
    key.extend_from_slice(&task_id.to_be_bytes());
    key
}

/// Splits a task key into session id and task id.
fn parse_task_key(key: &[u8]) -> Option<(String, u64)> {
    let (len, rest) = key.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() != len.checked_add(8)? {
        return None;
    }
    let (session, id) = rest.split_at(len);
    let id = u64::from_be_bytes(id.try_into().ok()?);
    Some((String::from_utf8(session.to_vec()).ok()?, id))
}

/// Writes `value` under `key`, or deletes `key` when `value` is `None`.
fn put(
    table: &mut redb::Table<&[u8], &[u8]>,
    key: &[u8],
    value: Option<Vec<u8>>,
) -> Result<(), Error> {
    match value {
        Some(v) => drop(table.insert(key, v.as_slice())?),
        None => drop(table.remove(key)?),
    }
    Ok(())
}

/// Writes (or deletes) the rows of `keys` in `def`, encoding each with `row`.
fn sync_rows<'k>(
    txn: &WriteTransaction,
    def: Table,
    keys: impl IntoIterator<Item = &'k String>,
    row: impl Fn(&str) -> Result<Option<Vec<u8>>, Error>,
) -> Result<(), Error> {
    let mut keys = keys.into_iter().peekable();
    if keys.peek().is_none() {
        return Ok(());
    }
    let mut table = txn.open_table(def)?;
    for key in keys {
        put(&mut table, key.as_bytes(), row(key)?)?;
    }
    Ok(())
}

fn task_rows(
    txn: &WriteTransaction,
    state: &State,
    def: Table,
    keys: &BTreeMap<String, BTreeSet<u64>>,
    row: impl Fn(&TaskEntry) -> Result<Vec<u8>, Error>,
) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(def)?;
    for (session_id, ids) in keys {
        let session = state.session_entry(session_id);
        for id in ids {
            let value = session.and_then(|s| s.task(*id)).map(&row).transpose()?;
            put(&mut table, &task_key(session_id, *id), value)?;
        }
    }
    Ok(())
}

/// Deletes every task row of the sessions removed by the command.
fn delete_removed_tasks(txn: &WriteTransaction, removed: &[(String, u64)]) -> Result<(), Error> {
    if removed.is_empty() {
        return Ok(());
    }
    // One range per session: its keys are contiguous (`[len][session][id]`), so redb walks
    // them once instead of looking each one up (review D7).
    for def in [TASKS, TASK_INPUTS] {
        let mut table = txn.open_table(def)?;
        for (session_id, count) in removed.iter().filter(|(_, count)| *count > 0) {
            let (first, last) = (task_key(session_id, 1), task_key(session_id, *count));
            table.retain_in(first.as_slice()..=last.as_slice(), |_, _| false)?;
        }
    }
    Ok(())
}

/// Writes every object `dirty` names, as it is in `state`, into `txn`.
pub(crate) fn write_dirty(
    txn: &WriteTransaction,
    state: &State,
    dirty: &Dirty,
) -> Result<(), Error> {
    sync_rows(txn, APPLICATIONS, &dirty.applications, |name| {
        state.application(name).map(encode).transpose()
    })?;
    sync_rows(txn, SESSIONS, &dirty.sessions, |id| {
        let row = |s: &SessionEntry| {
            encode(&SessionRowRef {
                session: &s.session,
                bind_failures: s.bind_failures,
            })
        };
        state.session_entry(id).map(row).transpose()
    })?;
    sync_rows(txn, SESSION_STATS, &dirty.session_stats, |id| {
        let row = |s: &SessionEntry| encode(&s.mean_task_us);
        state.session_entry(id).map(row).transpose()
    })?;
    delete_removed_tasks(txn, &dirty.removed_sessions)?;
    task_rows(txn, state, TASKS, &dirty.tasks, |t| {
        encode(&TaskRowRef {
            state: t.task.state,
            creation_time_ms: t.task.creation_time_ms,
            completion_time_ms: t.task.completion_time_ms,
            output: &t.task.output,
            events: &t.task.events,
            requeues: t.requeues,
        })
    })?;
    task_rows(txn, state, TASK_INPUTS, &dirty.task_inputs, |t| {
        encode(&TaskInputRow {
            input: t.task.input.clone(),
            request_id: t.request_id.clone(),
        })
    })?;
    sync_rows(txn, EXECUTORS, &dirty.executors, |id| {
        let row = |e: &ExecutorEntry| {
            encode(&ExecutorRowRef {
                executor: &e.executor,
                tasks: &e.tasks,
                creation_time_ms: e.creation_time_ms,
            })
        };
        state.executor_entry(id).map(row).transpose()
    })?;
    // A separate table, so the executor row (and the format) stays as it was.
    sync_rows(txn, EXECUTOR_YIELDS, &dirty.executors, |id| {
        let yielding = state.executor_entry(id).is_some_and(|e| e.yielding);
        Ok(yielding.then(Vec::new))
    })?;
    sync_rows(txn, NODES, &dirty.nodes, |name| {
        let row = |n: &NodeEntry| {
            encode(&NodeRowRef {
                node: &n.node,
                agent_id: &n.agent_id,
            })
        };
        state.node_entry(name).map(row).transpose()
    })?;
    write_cache_rows(txn, state, dirty)
}

/// Writes the object drops `dirty` names (deleting trimmed ones), the cluster CA and the
/// request records.
fn write_cache_rows(txn: &WriteTransaction, state: &State, dirty: &Dirty) -> Result<(), Error> {
    if !dirty.object_drops.is_empty() {
        let mut table = txn.open_table(OBJECT_DROPS)?;
        for seq in &dirty.object_drops {
            let value = state.object_drop(*seq).map(encode).transpose()?;
            put(&mut table, &seq.to_be_bytes(), value)?;
        }
    }
    if dirty.cluster_ca {
        let mut table = txn.open_table(CLUSTER_META)?;
        let value = state.cluster_ca().map(encode).transpose()?;
        put(&mut table, KEY_CLUSTER_CA, value)?;
    }
    sync_rows(txn, REQUESTS, &dirty.requests, |id| {
        state.requests.get(id).map(encode).transpose()
    })
}

/// Calls `f` with every row of `def`; a missing table has no rows.
fn for_each_row(
    txn: &ReadTransaction,
    def: Table,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let table = match txn.open_table(def) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for row in table.iter()? {
        let (key, value) = row?;
        f(key.value(), value.value())?;
    }
    Ok(())
}

/// Every task in the tables, grouped by session, in id order.
fn load_tasks(txn: &ReadTransaction) -> Result<BTreeMap<String, Vec<TaskEntry>>, Error> {
    let mut inputs: BTreeMap<Vec<u8>, TaskInputRow> = BTreeMap::new();
    for_each_row(txn, TASK_INPUTS, |key, value| {
        inputs.insert(key.to_vec(), decode(value)?);
        Ok(())
    })?;
    let mut tasks: BTreeMap<String, Vec<TaskEntry>> = BTreeMap::new();
    for_each_row(txn, TASKS, |key, value| {
        let (session_id, id) = parse_task_key(key).ok_or_else(|| corrupt("bad task key"))?;
        let row: TaskRow = decode(value)?;
        let input = inputs
            .remove(key)
            .ok_or_else(|| corrupt(format!("task {session_id}/{id} has no input row")))?;
        let task = Task {
            id: id.into(),
            session_id: session_id.clone().into(),
            input: input.input,
            output: row.output,
            state: row.state,
            creation_time_ms: row.creation_time_ms,
            completion_time_ms: row.completion_time_ms,
            events: row.events,
        };
        let entry = TaskEntry {
            task,
            request_id: input.request_id,
            requeues: row.requeues,
        };
        tasks.entry(session_id).or_default().push(entry);
        Ok(())
    })?;
    match inputs.keys().next() {
        Some(key) => Err(corrupt(format!("task input {key:?} has no task row"))),
        None => Ok(tasks),
    }
}

/// Rebuilds the whole [`State`] from the tables.
pub(crate) fn load(txn: &ReadTransaction) -> Result<State, Error> {
    let mut state = State::default();
    for_each_row(txn, APPLICATIONS, |_, value| {
        let app: Application = decode(value)?;
        state.applications.insert(app.name.clone(), Arc::new(app));
        Ok(())
    })?;
    let mut tasks = load_tasks(txn)?;
    for_each_row(txn, SESSIONS, |_, value| {
        let row: SessionRow = decode(value)?;
        let id = row.session.id.clone();
        let session_tasks = tasks.remove(id.as_str()).unwrap_or_default();
        let entry = SessionEntry::from_parts(row.session, row.bind_failures, session_tasks)
            .map_err(corrupt)?;
        state.sessions.insert(id.into(), Arc::new(entry));
        Ok(())
    })?;
    if let Some(orphan) = tasks.keys().next() {
        return Err(corrupt(format!("tasks of unknown session {orphan}")));
    }
    for_each_row(txn, SESSION_STATS, |key, value| {
        let id = std::str::from_utf8(key).map_err(|_| corrupt("bad session stats key"))?;
        let entry = state
            .session_mut(id)
            .ok_or_else(|| corrupt(format!("statistics of unknown session {id}")))?;
        entry.mean_task_us = decode(value)?;
        Ok(())
    })?;
    for_each_row(txn, EXECUTORS, |_, value| {
        let row: ExecutorRow = decode(value)?;
        let entry = ExecutorEntry {
            executor: row.executor,
            tasks: row.tasks,
            creation_time_ms: row.creation_time_ms,
            yielding: false,
        };
        state
            .executors
            .insert(entry.executor.id.clone().into(), Arc::new(entry));
        Ok(())
    })?;
    for_each_row(txn, EXECUTOR_YIELDS, |key, _| {
        let id = std::str::from_utf8(key).map_err(|_| corrupt("bad executor yield key"))?;
        let entry = state
            .executors
            .get_mut(id)
            .ok_or_else(|| corrupt(format!("yield mark of unknown executor {id}")))?;
        Arc::make_mut(entry).yielding = true;
        Ok(())
    })?;
    for_each_row(txn, NODES, |_, value| {
        let row: NodeRow = decode(value)?;
        let entry = NodeEntry {
            node: row.node,
            agent_id: row.agent_id,
        };
        state
            .nodes
            .insert(entry.node.name.clone().into(), Arc::new(entry));
        Ok(())
    })?;
    load_cache_rows(txn, &mut state)?;
    Ok(state)
}

/// Loads the object drops (checking that their seqs are consecutive), the cluster CA and the
/// request records.
fn load_cache_rows(txn: &ReadTransaction, state: &mut State) -> Result<(), Error> {
    for_each_row(txn, OBJECT_DROPS, |key, value| {
        let drop: ObjectDrop = decode(value)?;
        let (_, last) = state.object_drop_range();
        let consecutive = state.object_drops.is_empty() || drop.seq == last + 1;
        if key != drop.seq.to_be_bytes() || !consecutive {
            return Err(corrupt(format!(
                "object drop {} follows {last} under key {key:?}",
                drop.seq
            )));
        }
        state.object_drops.push_back(drop);
        Ok(())
    })?;
    for_each_row(txn, CLUSTER_META, |key, value| {
        if key == KEY_CLUSTER_CA {
            state.cluster_ca = Some(Arc::new(decode::<ClusterCa>(value)?));
        }
        Ok(())
    })?;
    for_each_row(txn, REQUESTS, |key, value| {
        let id = std::str::from_utf8(key).map_err(|_| corrupt("bad request id key"))?;
        state.requests.insert(id, decode(value)?);
        Ok(())
    })
}

/// An immutable view of the applied state, published after each durable batch.
#[derive(Debug, Clone)]
pub struct StateView {
    /// The state after the batch.
    pub state: State,
    /// Log index of the last command applied by this process (0 after a restore).
    pub applied_index: u64,
    /// Increases by one with every published view.
    pub revision: u64,
    /// The effects of the batch that produced this view, in order.
    pub effects: Arc<[Effect]>,
}

/// A handle to the newest [`StateView`]; cheap to clone, never blocks the apply path.
#[derive(Debug, Clone)]
pub struct StateReader {
    rx: watch::Receiver<Arc<StateView>>,
}

impl StateReader {
    /// The newest view.
    pub fn current(&self) -> Arc<StateView> {
        self.rx.borrow().clone()
    }

    /// Waits for a view newer than the last one this reader returned; `None` once the state
    /// machine is gone.
    pub async fn changed(&mut self) -> Option<Arc<StateView>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

/// Observes how long applying each entry took (for metrics); never influences the state.
pub type ApplyObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// The control plane's `raftlog::App`; see the module docs.
pub struct FlameApp {
    machine: StateMachine,
    applied_index: u64,
    revision: u64,
    batch_effects: Vec<Effect>,
    applied_in_batch: bool,
    publisher: watch::Sender<Arc<StateView>>,
    observer: Option<ApplyObserver>,
}

impl std::fmt::Debug for FlameApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlameApp")
            .field("applied_index", &self.applied_index)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl Default for FlameApp {
    fn default() -> Self {
        FlameApp::new()
    }
}

impl FlameApp {
    /// An empty application state machine (restored by raftlog at open). It has no policy of
    /// its own: each entry is applied under its [`Proposal`]'s.
    pub fn new() -> Self {
        let machine = StateMachine::new(StateConfig::default());
        let view = StateView {
            state: machine.state().clone(),
            applied_index: 0,
            revision: 0,
            effects: Arc::from(Vec::new()),
        };
        FlameApp {
            machine,
            applied_index: 0,
            revision: 0,
            batch_effects: Vec::new(),
            applied_in_batch: false,
            publisher: watch::Sender::new(Arc::new(view)),
            observer: None,
        }
    }

    /// Reports the time each entry took to apply to `observer` (metrics). Timing is read only
    /// for reporting; it never reaches the replicated state.
    pub fn with_apply_observer(mut self, observer: ApplyObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A reader of the published views; take it before handing the app to raftlog.
    pub fn reader(&self) -> StateReader {
        StateReader {
            rx: self.publisher.subscribe(),
        }
    }

    /// The state as applied so far (including a batch not yet committed).
    pub fn state(&self) -> &State {
        self.machine.state()
    }

    fn publish(&mut self, effects: Vec<Effect>) {
        self.revision += 1;
        let view = StateView {
            state: self.machine.state().clone(),
            applied_index: self.applied_index,
            revision: self.revision,
            effects: Arc::from(effects),
        };
        self.publisher.send_replace(Arc::new(view));
    }
}

impl App<FlameTypeConfig> for FlameApp {
    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn apply(
        &mut self,
        txn: &WriteTransaction,
        log_id: &LogId<u64>,
        proposal: Proposal,
    ) -> Result<Vec<Response>, Error> {
        let started = std::time::Instant::now();
        let mut responses = Vec::with_capacity(proposal.commands.len());
        let (now_ms, policy) = (proposal.now_ms, proposal.policy);
        for command in proposal.commands {
            let response = self.machine.apply_under(&policy, now_ms, command);
            write_dirty(txn, self.machine.state(), self.machine.dirty())?;
            self.batch_effects.extend(response.effects.iter().cloned());
            responses.push(response);
        }
        self.applied_index = log_id.index;
        self.applied_in_batch = true;
        if let Some(observe) = &self.observer {
            observe(started.elapsed());
        }
        Ok(responses)
    }

    fn noop_response(&self) -> Vec<Response> {
        Vec::new()
    }

    fn committed(&mut self) {
        if std::mem::take(&mut self.applied_in_batch) {
            let effects = std::mem::take(&mut self.batch_effects);
            self.publish(effects);
        }
    }

    fn restore(&mut self, txn: &ReadTransaction) -> Result<(), Error> {
        let state = load(txn)?;
        self.machine.replace_state(state);
        self.applied_index = 0;
        self.batch_effects.clear();
        self.applied_in_batch = false;
        self.publish(vec![Effect::Restored]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_round_trip_and_group_by_session() {
        let key = task_key("s-1", 42);
        assert_eq!(parse_task_key(&key), Some(("s-1".to_owned(), 42)));
        assert!(task_key("a", 2) < task_key("a", 10));
        assert!(task_key("a", u64::MAX) < task_key("b", 1));
        assert_eq!(parse_task_key(&key[..key.len() - 1]), None);
        assert_eq!(parse_task_key(b""), None);
    }
}
