//! Property tests of the scheduler: random clusters (nodes with capacities and states, sessions
//! with sizes, priorities, instance limits and tasks, executors in every state) are scheduled
//! round after round, each plan applied through `StateMachine::apply` and followed by simulated
//! node agents.
//!
//! Properties checked on every round:
//! - every command of the plan is accepted by the state machine (no `InvalidState`, no
//!   `NotFound`, no refused assignment);
//! - per-node capacity (cpu, memory, gpu) and the per-node executor limit are never exceeded;
//! - executors are created only on Ready nodes, never for Wasm;
//! - no task and no executor appears twice in the plan's assignments;
//! - binds go only to Open, unpaused sessions, with exactly equal resreq and matching shim;
//! - the plan is deterministic: the same state, time, timers and ids give the same commands.
//!
//! Liveness: without `min_instances` reservations, iterating plan and apply (agents report
//! binds as successful and tasks as succeeded) completes every task of every schedulable Host
//! session that fits some Ready node within a bounded number of rounds, while Wasm sessions
//! stay Pending; and no such session goes more than a few rounds without an executor while an
//! executor is kept warm, idle, for a session with nothing to run (reclaim on demand).

use crate::scheduler_support;

use flame_control_plane::scheduler::{Policy, SchedulerConfig, plan};
use flame_control_plane::state::queue::DispatchPolicy;
use flame_control_plane::state::{Command, State};
use flame_proto::model::{
    ExecutorState, NodeState, ResourceRequirement, SessionState, Shim, TaskState,
};
use proptest::prelude::*;
use scheduler_support::{Opts, World, refusal, res};
use std::collections::{BTreeMap, BTreeSet};

/// Executor and session sizes: small, so nodes fill up.
fn sizes() -> [ResourceRequirement; 3] {
    [res(1, 1, 0), res(2, 1, 0), res(1, 2, 1)]
}

/// Applications: two Host ones with generated limits, a Wasm one and a built-in.
const APPS: [&str; 4] = ["h0", "h1", "wasm", "flmping"];

/// A node: its allocatable resources and the state it ends up in.
#[derive(Debug, Clone)]
struct NodeGen {
    cpu: u64,
    mem_gib: u64,
    gpu: i32,
    /// 0 Ready, 1 Unknown (draining), 2 NotReady.
    state: u8,
}

/// A session: application (index into [`APPS`]), size (index into [`sizes`]), limits, tasks,
/// whether it is closed and whether the agents fail its binds.
#[derive(Debug, Clone)]
struct SessionGen {
    app: usize,
    size: usize,
    priority: u32,
    min: u32,
    max: Option<u32>,
    tasks: usize,
    close: bool,
    fail_binds: bool,
}

/// The state an existing executor is walked to before scheduling starts.
#[derive(Debug, Clone, Copy)]
enum Target {
    Void,
    Idle,
    Binding,
    Bound,
    Running,
    Unbinding,
    Releasing,
}

/// An existing executor: node, size (when not bound), session (when bound) and state; it is
/// only created when its node has room.
#[derive(Debug, Clone)]
struct ExecGen {
    node: usize,
    size: usize,
    session: usize,
    target: Target,
}

/// A random cluster and scheduler configuration.
#[derive(Debug, Clone)]
struct Scenario {
    nodes: Vec<NodeGen>,
    sessions: Vec<SessionGen>,
    executors: Vec<ExecGen>,
    policies: Vec<Policy>,
    max_per_node: u32,
    bind_limit: u32,
    /// `(delay_release secs, max_instances)` of h0 and h1.
    apps: [(i64, u32); 2],
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        0u64..7,
        0u64..9,
        0i32..3,
        prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(cpu, mem_gib, gpu, state)| NodeGen {
            cpu,
            mem_gib,
            gpu,
            state,
        })
}

fn session_gen(with_min: bool, with_failures: bool) -> impl Strategy<Value = SessionGen> {
    let min = if with_min { 0u32..3 } else { 0u32..1 };
    let failing = if with_failures {
        proptest::bool::weighted(0.2).boxed()
    } else {
        Just(false).boxed()
    };
    let limits = (
        0usize..4,
        0usize..3,
        0u32..3,
        min,
        proptest::option::of(1u32..5),
    );
    let work = (0usize..9, proptest::bool::weighted(0.15), failing);
    (limits, work).prop_map(
        |((app, size, priority, min, max), (tasks, close, fail_binds))| SessionGen {
            app,
            size,
            priority,
            min,
            max,
            tasks,
            close,
            fail_binds,
        },
    )
}

fn target() -> impl Strategy<Value = Target> {
    proptest::sample::select(vec![
        Target::Void,
        Target::Idle,
        Target::Binding,
        Target::Bound,
        Target::Running,
        Target::Unbinding,
        Target::Releasing,
    ])
}

fn exec_gen() -> impl Strategy<Value = ExecGen> {
    (0usize..4, 0usize..3, 0usize..5, target()).prop_map(|(node, size, session, target)| ExecGen {
        node,
        size,
        session,
        target,
    })
}

fn policies() -> impl Strategy<Value = Vec<Policy>> {
    proptest::sample::select(vec![
        vec![Policy::Priority, Policy::Drf],
        vec![Policy::Drf, Policy::Priority],
        vec![Policy::Priority],
        vec![Policy::Drf],
        vec![],
    ])
}

fn scenario(with_min: bool, with_failures: bool) -> impl Strategy<Value = Scenario> {
    let cluster = (
        proptest::collection::vec(node_gen(), 1..4),
        proptest::collection::vec(session_gen(with_min, with_failures), 0..5),
        proptest::collection::vec(exec_gen(), 0..8),
    );
    let settings = (
        policies(),
        1u32..6,
        1u32..4,
        // delay_release up to two minutes: longer than any liveness budget below, so only
        // reclaiming idle executors for waiting sessions keeps the budgets.
        [(0i64..120, 1u32..7), (0i64..120, 1u32..7)],
    );
    (cluster, settings).prop_map(
        |((nodes, sessions, executors), (policies, max_per_node, bind_limit, apps))| Scenario {
            nodes,
            sessions,
            executors,
            policies,
            max_per_node,
            bind_limit,
            apps,
        },
    )
}

/// Builds the scenario's cluster through `StateMachine::apply`.
fn build(sc: &Scenario) -> World {
    let mut w = World::new(SchedulerConfig {
        policies: sc.policies.clone(),
        bind_retry_limit: sc.bind_limit,
        max_executors_per_node: sc.max_per_node,
        dispatch: DispatchPolicy::default(),
        ..SchedulerConfig::default()
    });
    for (i, (delay, max)) in sc.apps.iter().enumerate() {
        w.app(APPS[i], Shim::Host, *max, *delay);
    }
    w.app("wasm", Shim::Wasm, 100, 1);
    for (i, n) in sc.nodes.iter().enumerate() {
        w.node(&format!("n{i}"), res(n.cpu, n.mem_gib, n.gpu));
    }
    for (i, s) in sc.sessions.iter().enumerate() {
        let opts = Opts {
            priority: s.priority,
            min: s.min,
            max: s.max,
            resreq: sizes()[s.size],
        };
        w.session(&format!("s{i}"), APPS[s.app], opts);
        w.tasks(&format!("s{i}"), s.tasks);
        w.now += 1;
    }
    for (i, e) in sc.executors.iter().enumerate() {
        build_executor(&mut w, sc, &format!("e{i}"), e);
    }
    for (i, s) in sc.sessions.iter().enumerate() {
        if s.close {
            // Refused while a task runs; then the session simply stays Open.
            w.m.apply(
                w.now,
                Command::CloseSession {
                    id: format!("s{i}"),
                },
            );
        }
    }
    for (i, n) in sc.nodes.iter().enumerate() {
        match n.state {
            1 => w.disconnect(&format!("n{i}")),
            2 => w.expire(&format!("n{i}")),
            _ => {}
        }
    }
    w
}

/// Creates one executor and walks it to its target state, if its node has room for it.
fn build_executor(w: &mut World, sc: &Scenario, id: &str, e: &ExecGen) {
    let node = format!("n{}", e.node % sc.nodes.len());
    let session = (!sc.sessions.is_empty()).then(|| e.session % sc.sessions.len());
    let bound = !matches!(e.target, Target::Void | Target::Idle | Target::Releasing);
    // Nodes run Host executors only, so no executor is ever bound to a Wasm session.
    let size = match session {
        Some(s) if bound && APPS[sc.sessions[s].app] != "wasm" => sizes()[sc.sessions[s].size],
        _ if bound => return,
        _ => sizes()[e.size],
    };
    if !has_room(w.m.state(), &node, size, sc.max_per_node) {
        return;
    }
    let mut steps = vec![Command::CreateExecutor {
        id: id.into(),
        node,
        resreq: size,
        shim: Shim::Host,
    }];
    let session_id = format!("s{}", session.unwrap_or(0));
    steps.extend(walk(id, &session_id, e.target));
    for step in steps {
        if let Command::AssignTasks { .. } = step {
            let pending = w.m.state().session_entry(&session_id);
            let Some(task_id) = pending.and_then(|s| s.pending_ids().next()) else {
                return;
            };
            w.assign(id, &session_id, task_id);
            continue;
        }
        w.ok(step);
    }
}

/// The commands that take a Void executor to `target` (an `AssignTasks` placeholder for
/// Running, filled in with the session's lowest Pending task).
fn walk(id: &str, session_id: &str, target: Target) -> Vec<Command> {
    let register = Command::RegisterExecutor { id: id.into() };
    let bind = Command::BindExecutor {
        id: id.into(),
        session_id: session_id.into(),
    };
    let completed = Command::BindCompleted {
        id: id.into(),
        session_id: session_id.into(),
        result: flame_control_plane::state::BindResult::Ok,
    };
    let run = Command::AssignTasks {
        assignments: Vec::new(),
    };
    let unbind = Command::UnbindExecutor { id: id.into() };
    match target {
        Target::Void => vec![],
        Target::Idle => vec![register],
        Target::Releasing => vec![register, Command::ReleaseExecutor { id: id.into() }],
        Target::Binding => vec![register, bind],
        Target::Bound => vec![register, bind, completed],
        Target::Running => vec![register, bind, completed, run],
        Target::Unbinding => vec![register, bind, completed, unbind],
    }
}

/// True when `node` can hold one more executor of `size` within capacity and the limit.
fn has_room(state: &State, node: &str, size: ResourceRequirement, max: u32) -> bool {
    let (used, count) = usage(state).remove(node).unwrap_or_default();
    let alloc = state.node(node).map(|n| n.allocatable).unwrap_or_default();
    let after = [
        used[0] + size.cpu,
        used[1] + size.memory,
        used[2] + size.gpu.max(0) as u64,
    ];
    count < u64::from(max) && within(after, alloc)
}

fn within(used: [u64; 3], alloc: ResourceRequirement) -> bool {
    used[0] <= alloc.cpu && used[1] <= alloc.memory && used[2] <= alloc.gpu.max(0) as u64
}

/// `(cpu, memory, gpu)` held and executor count, per node.
fn usage(state: &State) -> BTreeMap<String, ([u64; 3], u64)> {
    let mut out: BTreeMap<String, ([u64; 3], u64)> = BTreeMap::new();
    for e in state.executors() {
        let slot = out.entry(e.spec.node.clone().into()).or_default();
        let r = e.spec.resreq;
        slot.0[0] += r.cpu;
        slot.0[1] += r.memory;
        slot.0[2] += r.gpu.max(0) as u64;
        slot.1 += 1;
    }
    out
}

/// The plan for the world's current state with ids continuing from `w.next_id`; returns the
/// plan and the next id.
fn plan_at(w: &World) -> (Vec<Command>, u64) {
    let mut next = w.next_id;
    let mut ids = || {
        next += 1;
        format!("x{}", next - 1)
    };
    let commands = plan(w.m.state(), w.now, &w.timers, &w.config, &mut ids);
    (commands, next)
}

/// Checks the plan against the state it was made from; `Err` says what is wrong.
fn check_plan(state: &State, config: &SchedulerConfig, commands: &[Command]) -> Result<(), String> {
    let mut tasks = BTreeSet::new();
    let mut busy = BTreeSet::new();
    let mut created: BTreeMap<&str, (ResourceRequirement, Shim)> = BTreeMap::new();
    let mut bound = BTreeSet::new();
    for c in commands {
        match c {
            Command::AssignTasks { assignments, .. } => {
                for a in assignments {
                    if !tasks.insert((&a.session_id, a.task_id)) || !busy.insert(&a.executor_id) {
                        return Err(format!("assigned twice: {a:?}"));
                    }
                }
            }
            Command::CreateExecutor {
                id,
                node,
                resreq,
                shim,
                ..
            } => {
                let ready = state.node(node).map(|n| n.state) == Some(NodeState::Ready);
                if !ready || *shim != Shim::Host {
                    return Err(format!("bad create: {c:?}"));
                }
                created.insert(id, (*resreq, *shim));
            }
            Command::BindExecutor { id, session_id } => {
                if !bound.insert(id) {
                    return Err(format!("bound twice: {id}"));
                }
                check_bind(state, config, &created, id, session_id)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A bind goes to an Open, unpaused session whose resreq and shim equal the executor's.
fn check_bind(
    state: &State,
    config: &SchedulerConfig,
    created: &BTreeMap<&str, (ResourceRequirement, Shim)>,
    id: &str,
    session_id: &str,
) -> Result<(), String> {
    let entry = state
        .session_entry(session_id)
        .ok_or_else(|| format!("bind to unknown {session_id}"))?;
    let session = &entry.session;
    if session.state != SessionState::Open || !entry.is_schedulable(config.bind_retry_limit) {
        return Err(format!("bind {id} to closed or paused {session_id}"));
    }
    let fit = match state.executor(id) {
        Some(e) => (e.spec.resreq, e.spec.shim),
        None => *created
            .get(id)
            .ok_or_else(|| format!("bind of unknown {id}"))?,
    };
    let shim = state
        .application(&session.spec.application)
        .map(|a| a.spec.shim);
    if fit != (session.spec.resreq, shim.unwrap_or(Shim::Host)) {
        return Err(format!(
            "bind {id} {fit:?} to {session_id} {:?}",
            session.spec
        ));
    }
    Ok(())
}

/// Capacity and the executor limit hold on every node.
fn check_capacity(state: &State, max: u32) -> Result<(), String> {
    for (node, (used, count)) in usage(state) {
        let alloc = state.node(&node).map(|n| n.allocatable).unwrap_or_default();
        if !within(used, alloc) || count > u64::from(max) {
            return Err(format!(
                "node {node} over capacity: {used:?} x{count} > {alloc:?}"
            ));
        }
    }
    Ok(())
}

/// One round: observe, plan (twice, to check determinism), check, apply, agents report.
fn round(w: &mut World, failing: &BTreeSet<String>) -> Result<Vec<Command>, String> {
    w.timers.observe(w.m.state(), w.now);
    let (commands, next) = plan_at(w);
    if plan_at(w) != (commands.clone(), next) {
        return Err("the plan is not deterministic".into());
    }
    w.next_id = next;
    w.timers.note_plan(&commands);
    check_plan(w.m.state(), &w.config, &commands)?;
    for command in &commands {
        let r = w.m.apply(w.now, command.clone());
        if let Some(why) = refusal(&r) {
            return Err(format!("{command:?} refused: {why}"));
        }
    }
    check_capacity(w.m.state(), w.config.max_executors_per_node)?;
    w.agents(&|s| failing.contains(s));
    w.now += 1_000;
    Ok(commands)
}

fn failing_sessions(sc: &Scenario) -> BTreeSet<String> {
    sc.sessions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.fail_binds)
        .map(|(i, _)| format!("s{i}"))
        .collect()
}

/// Sessions whose tasks must all complete: Open, Host, unpaused, fitting some Ready node.
fn completable(w: &World) -> Vec<String> {
    let state = w.m.state();
    let fits = |r: ResourceRequirement| {
        state.nodes().any(|n| {
            n.state == NodeState::Ready
                && within([r.cpu, r.memory, r.gpu.max(0) as u64], n.allocatable)
        })
    };
    state
        .session_entries()
        .filter(|s| s.session.state == SessionState::Open)
        .filter(|s| s.is_schedulable(w.config.bind_retry_limit))
        .filter(|s| s.session.spec.application != "wasm")
        .filter(|s| fits(s.session.spec.resreq))
        .map(|s| s.session.id.to_string())
        .collect()
}

/// Most rounds (seconds) a session may go without an executor, its tasks Pending, while some
/// executor stays bound, idle, to a session that has nothing left to run: reclaim takes one
/// executor per waiting instance per round once idle for the grace, and a taken executor may
/// first be released to make room.
///
/// A session of another size than the idle executors waits longest: each freed executor goes
/// first to waiting sessions of its own size, then is released to make room (a saved case needs
/// 13 rounds).
const MAX_STARVED_ROUNDS: usize = 16;

/// The same bound with fair-share rotation on: rotations among sessions of one size keep them
/// needing instances longer, so an executor a reclaim frees more often goes to one of them
/// before it is released to make room for a session of another size (rotation only moves
/// executors of the waiting session's exact size).
const MAX_STARVED_ROUNDS_ROTATING: usize = 60;

/// Sessions of `targets` with Pending tasks and no executor, while an executor is Bound with
/// no task to a session without Pending tasks (kept warm).
fn starved_beside_idle(w: &World, targets: &[String]) -> Vec<String> {
    let state = w.m.state();
    let warm_idle = state.executor_entries().any(|e| {
        e.executor.state == ExecutorState::Bound
            && e.tasks.is_empty()
            && e.executor
                .session_id
                .as_deref()
                .and_then(|s| state.session(s))
                .is_some_and(|s| s.counters.pending == 0 && s.spec.min_instances == 0)
    });
    if !warm_idle {
        return Vec::new();
    }
    targets
        .iter()
        .filter(|s| w.count(s, TaskState::Pending) > 0)
        .filter(|s| {
            state
                .executors()
                .all(|e| e.session_id.as_deref() != Some(s.as_str()))
        })
        .cloned()
        .collect()
}

fn unfinished(w: &World, session: &str) -> usize {
    w.count(session, TaskState::Pending) + w.count(session, TaskState::Running)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_accepted_within_capacity_and_deterministic(sc in scenario(true, true)) {
        let mut w = build(&sc);
        prop_assert_eq!(check_capacity(w.m.state(), sc.max_per_node), Ok(()));
        let failing = failing_sessions(&sc);
        for _ in 0..25 {
            let outcome = round(&mut w, &failing);
            prop_assert!(outcome.is_ok(), "{:?}", outcome);
        }
    }

    #[test]
    fn iterating_plans_completes_every_task_that_capacity_allows(
        sc in scenario(false, false),
        rotating in proptest::bool::ANY,
    ) {
        let mut w = build(&sc);
        if !rotating {
            w.config.rotation_wait_ms = 0;
        }
        let max_starved = if rotating { MAX_STARVED_ROUNDS_ROTATING } else { MAX_STARVED_ROUNDS };
        for i in 0..sc.nodes.len() {
            if w.m.state().node(&format!("n{i}")).map(|n| n.state) == Some(NodeState::Unknown) {
                w.expire(&format!("n{i}")); // the drain timer fires
            }
        }
        let targets = completable(&w);
        let none = BTreeSet::new();
        // Every round advances a second; a session that waits takes an idle executor after the
        // reclaim grace, not after its application's delay_release (up to 120 s).
        let budget = 100 + 10 * sc.sessions.len();
        let mut rounds = 0;
        let mut waited: BTreeMap<String, usize> = BTreeMap::new();
        while targets.iter().any(|s| unfinished(&w, s) > 0) && rounds < budget {
            for s in starved_beside_idle(&w, &targets) {
                let n = waited.entry(s.clone()).or_default();
                *n += 1;
                prop_assert!(
                    *n <= max_starved,
                    "session {} waited {} rounds while an idle executor was kept warm (rotating: {})", s, n, rotating
                );
            }
            let outcome = round(&mut w, &none);
            prop_assert!(outcome.is_ok(), "{:?}", outcome);
            rounds += 1;
        }
        for s in &targets {
            prop_assert_eq!(unfinished(&w, s), 0, "session {} stuck after {} rounds", s, rounds);
        }
        for s in w.m.state().sessions().filter(|s| s.spec.application == "wasm") {
            prop_assert_eq!(s.counters.running + s.counters.succeed, 0);
        }
    }
}

/// The random scenarios reach every decision (and capacity-bound and paused situations), so the
/// properties above are not vacuous.
#[test]
fn random_scenarios_exercise_every_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = scenario(true, true);
    let mut seen = BTreeSet::new();
    for _ in 0..150 {
        let sc = strategy.new_tree(&mut runner).expect("tree").current();
        let mut w = build(&sc);
        let failing = failing_sessions(&sc);
        for _ in 0..25 {
            let commands = round(&mut w, &failing).expect("round");
            for c in &commands {
                let debug = format!("{c:?}");
                seen.insert(debug.split(' ').next().unwrap_or_default().to_owned());
            }
            let state = w.m.state();
            if state
                .session_entries()
                .any(|s| !s.is_schedulable(sc.bind_limit))
            {
                seen.insert("paused".into());
            }
            if state
                .executors()
                .any(|e| e.state == ExecutorState::Releasing)
            {
                seen.insert("releasing".into());
            }
            let ready = state.nodes().filter(|n| n.state == NodeState::Ready);
            let mut full = ready.filter(|n| !has_room(state, &n.name, sizes()[0], sc.max_per_node));
            if full.any(|n| usage(state).contains_key(n.name.as_str())) {
                seen.insert("node full".into());
            }
        }
    }
    for expected in [
        "AssignTasks",
        "BindExecutor",
        "CreateExecutor",
        "UnbindExecutor",
        "ReleaseExecutor",
        "paused",
        "releasing",
        "node full",
    ] {
        assert!(seen.contains(expected), "never saw {expected}: {seen:?}");
    }
}
