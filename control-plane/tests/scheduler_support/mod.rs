//! Helpers shared by the scheduler tests: a [`World`] holding a state machine, a clock, warm
//! timers and an id generator; builders for nodes, applications, sessions and executors in a
//! chosen state; running a plan through `StateMachine::apply` with every command checked; and
//! simulated node agents that complete binds, unbinds, releases and tasks.
//!
//! Caveat: the builders panic on unexpected outcomes; they are for tests only.

#![allow(dead_code)]

use bytes::Bytes;
use flame_control_plane::scheduler::{PlanStats, SchedulerConfig, WarmTimers, plan_with_stats};
use flame_control_plane::state::{
    Assignment, BindResult, Command, NewTask, Outcome, Response, StateConfig, StateMachine,
    TaskResult,
};
use flame_proto::model::{
    ApplicationSpec, ExecutorState, Node, NodeState, ResourceRequirement, SessionSpec, Shim,
    TaskState,
};

/// One GiB.
pub const GIB: u64 = 1 << 30;

/// `cpu` cores, `mem_gib` GiB and `gpu` devices.
pub fn res(cpu: u64, mem_gib: u64, gpu: i32) -> ResourceRequirement {
    ResourceRequirement {
        cpu,
        memory: mem_gib * GIB,
        gpu,
    }
}

/// Why a response is not a full success, if it is not.
pub fn refusal(r: &Response) -> Option<String> {
    if let Some(e) = r.outcome.error() {
        return Some(format!("{e:?}"));
    }
    match &r.outcome {
        Outcome::TaskUpdates(items) => items
            .iter()
            .find_map(|i| i.as_ref().err())
            .map(|e| format!("{e:?}")),
        _ => None,
    }
}

/// Session settings beyond the application.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Scheduling priority.
    pub priority: u32,
    /// `min_instances`.
    pub min: u32,
    /// `max_instances`.
    pub max: Option<u32>,
    /// Executor size.
    pub resreq: ResourceRequirement,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            priority: 0,
            min: 0,
            max: None,
            resreq: res(1, 1, 0),
        }
    }
}

/// A state machine, the leader's clock and timers, and the scheduler's settings.
pub struct World {
    /// The replicated state machine.
    pub m: StateMachine,
    /// The leader's clock, in Unix milliseconds.
    pub now: i64,
    /// The leader-local warm timers.
    pub timers: WarmTimers,
    /// The scheduler's settings.
    pub config: SchedulerConfig,
    /// The next generated executor id's number.
    pub next_id: u64,
    /// What the last plan decided, counted.
    pub last_stats: PlanStats,
    /// Whether the simulated agents' CompleteTasks refill executors (as the leader's report
    /// worker does) or leave that to the next plan.
    pub refill: bool,
}

impl World {
    /// A world with the built-in applications and `config`; the state machine uses the same
    /// bind retry limit.
    pub fn new(config: SchedulerConfig) -> Self {
        let state_config = StateConfig {
            bind_retry_limit: config.bind_retry_limit,
            ..StateConfig::default()
        };
        let mut m = StateMachine::new(state_config);
        m.apply(1, Command::EnsureBuiltins);
        World {
            m,
            now: 1_000,
            timers: WarmTimers::new(),
            config,
            next_id: 1,
            last_stats: PlanStats::default(),
            refill: true,
        }
    }

    /// A world with the default scheduler settings.
    pub fn default_config() -> Self {
        World::new(SchedulerConfig::default())
    }

    /// Applies `command` and panics unless it fully succeeded.
    pub fn ok(&mut self, command: Command) -> Response {
        let r = self.m.apply(self.now, command.clone());
        if let Some(why) = refusal(&r) {
            panic!("{command:?} was refused: {why}");
        }
        r
    }

    /// Registers a Ready node with `allocatable` (and the same capacity).
    pub fn node(&mut self, name: &str, allocatable: ResourceRequirement) {
        let node = Node {
            name: name.into(),
            hostname: name.into(),
            state: NodeState::Ready,
            capacity: allocatable,
            allocatable,
            arch: "x86_64".into(),
            os: "linux".into(),
            addresses: Vec::new(),
            last_heartbeat_ms: 0,
            cache: None,
        };
        let agent_id = format!("agent-{name}");
        self.ok(Command::RegisterNode { node, agent_id });
    }

    /// Node `name`'s agent disconnected: the node is Unknown (draining).
    pub fn disconnect(&mut self, name: &str) {
        self.ok(Command::NodeDisconnected { node: name.into() });
    }

    /// Node `name` expired: NotReady, its executors deleted.
    pub fn expire(&mut self, name: &str) {
        self.ok(Command::MarkNodeNotReady { node: name.into() });
    }

    /// Registers application `name` with `shim`, `max_instances` and `delay_release` seconds.
    pub fn app(&mut self, name: &str, shim: Shim, max_instances: u32, delay_secs: i64) {
        let spec = ApplicationSpec {
            shim,
            max_instances,
            delay_release_secs: delay_secs,
            ..ApplicationSpec::default()
        };
        self.ok(Command::RegisterApplication {
            name: name.into(),
            spec,
        });
    }

    /// Creates an Open session `id` of `app` with `opts`, created at the current time.
    pub fn session(&mut self, id: &str, app: &str, opts: Opts) {
        let spec = SessionSpec {
            application: app.into(),
            common_data: None,
            min_instances: opts.min,
            max_instances: opts.max,
            priority: opts.priority,
            resreq: opts.resreq,
        };
        self.ok(Command::CreateSession {
            id: id.into(),
            spec,
        });
    }

    /// Adds `n` tasks to session `id`.
    pub fn tasks(&mut self, id: &str, n: usize) {
        let tasks = (0..n)
            .map(|i| NewTask {
                input: Some(Bytes::from(i.to_string())),
                request_id: None,
            })
            .collect();
        self.ok(Command::CreateTasks {
            session_id: id.into(),
            tasks,
            dispatch: None,
        });
    }

    /// Closes session `id`.
    pub fn close(&mut self, id: &str) {
        self.ok(Command::CloseSession { id: id.into() });
    }

    /// Creates executor `id` of size `resreq` on `node` and registers it (Idle).
    pub fn idle(&mut self, id: &str, node: &str, resreq: ResourceRequirement, shim: Shim) {
        self.ok(Command::CreateExecutor {
            id: id.into(),
            node: node.into(),
            resreq,
            shim,
        });
        self.ok(Command::RegisterExecutor { id: id.into() });
    }

    /// Creates executor `id` on `node`, sized like `session`'s resreq, and binds it (Bound).
    pub fn bound(&mut self, id: &str, node: &str, session: &str) {
        let spec = self
            .m
            .state()
            .session(session)
            .expect("session")
            .spec
            .clone();
        let shim = self
            .m
            .state()
            .application(&spec.application)
            .expect("app")
            .spec
            .shim;
        self.idle(id, node, spec.resreq, shim);
        self.ok(Command::BindExecutor {
            id: id.into(),
            session_id: session.into(),
        });
        self.ok(Command::BindCompleted {
            id: id.into(),
            session_id: session.into(),
            result: BindResult::Ok,
        });
    }

    /// Assigns task `task` of `session` to executor `executor`.
    pub fn assign(&mut self, executor: &str, session: &str, task: u64) {
        self.ok(Command::AssignTasks {
            assignments: vec![Assignment {
                executor_id: executor.into(),
                session_id: session.into(),
                task_id: task,
            }],
        });
    }

    /// Observes the state into the warm timers, plans at the current time (ids `x1`, `x2`, ...
    /// continuing from earlier plans) and notes the plan in the timers, as the leader does.
    pub fn plan(&mut self) -> Vec<Command> {
        self.timers.observe(self.m.state(), self.now);
        let mut next = self.next_id;
        let mut ids = || {
            next += 1;
            format!("x{}", next - 1)
        };
        let (commands, stats) = plan_with_stats(
            self.m.state(),
            self.now,
            &self.timers,
            &self.config,
            &mut ids,
        );
        self.last_stats = stats;
        self.next_id = next;
        self.timers.note_plan(&commands);
        commands
    }

    /// Applies every command, panicking on the first that is not fully accepted.
    pub fn apply_all(&mut self, commands: &[Command]) {
        for command in commands {
            self.ok(command.clone());
        }
    }

    /// Plans and applies the plan; returns it.
    pub fn step(&mut self) -> Vec<Command> {
        let commands = self.plan();
        self.apply_all(&commands);
        commands
    }

    /// What the node agents of Ready nodes report once: binds succeed (or fail for sessions
    /// `failing` names), unbinds and releases complete, Void executors without a session are
    /// registered, and the first task every executor holds succeeds (in one batch). Returns the commands.
    pub fn agents(&mut self, failing: &dyn Fn(&str) -> bool) -> Vec<Command> {
        let state = self.m.state();
        let mut commands = Vec::new();
        let mut results = Vec::new();
        for e in state.executor_entries() {
            let x = &e.executor;
            let ready = state.node(&x.spec.node).map(|n| n.state) == Some(NodeState::Ready);
            if !ready {
                continue;
            }
            let id = x.id.clone();
            if let Some(task) = e.tasks.first() {
                results.push(TaskResult {
                    executor_id: id.clone().into(),
                    session_id: task.session_id.clone(),
                    task_id: task.task_id,
                    return_code: 0,
                    output: Some(Bytes::from_static(b"ok")),
                    message: None,
                    duration_us: 1_000,
                });
            }
            match (x.state, x.session_id.clone()) {
                (ExecutorState::Binding, Some(session_id)) => {
                    let result = if failing(&session_id) {
                        BindResult::Failed {
                            code: 11,
                            message: "shim creation failed: boom".into(),
                        }
                    } else {
                        BindResult::Ok
                    };
                    commands.push(Command::BindCompleted {
                        id: id.into(),
                        session_id: session_id.into(),
                        result,
                    });
                }
                (ExecutorState::Void, None) => {
                    commands.push(Command::RegisterExecutor { id: id.into() })
                }
                (ExecutorState::Unbinding, _) => {
                    commands.push(Command::UnbindCompleted { id: id.into() })
                }
                (ExecutorState::Releasing, _) => {
                    commands.push(Command::ExecutorReleased { id: id.into() })
                }
                _ => {}
            }
        }
        if !results.is_empty() {
            let complete = Command::CompleteTasks {
                results,
                refill: self.refill.then_some(self.config.dispatch),
            };
            commands.insert(0, complete);
        }
        self.apply_all(&commands);
        commands
    }

    /// Tasks of `session` in `state`.
    pub fn count(&self, session: &str, state: TaskState) -> usize {
        self.m
            .state()
            .tasks(session)
            .map(|tasks| tasks.filter(|t| t.state == state).count())
            .unwrap_or(0)
    }

    /// Executors on `node` (any state).
    pub fn executors_on(&self, node: &str) -> usize {
        self.m
            .state()
            .executors()
            .filter(|e| e.spec.node == node)
            .count()
    }

    /// Executors holding `session` in `state`.
    pub fn executors_of(&self, session: &str, state: ExecutorState) -> usize {
        self.m
            .state()
            .executors()
            .filter(|e| e.session_id.as_deref() == Some(session) && e.state == state)
            .count()
    }
}

/// The assignments of the plan's `AssignTasks`, if any; panics on a second `AssignTasks`.
pub fn assignments(commands: &[Command]) -> Vec<(String, String, u64)> {
    let batches: Vec<&Vec<Assignment>> = commands
        .iter()
        .filter_map(|c| match c {
            Command::AssignTasks { assignments, .. } => Some(assignments),
            _ => None,
        })
        .collect();
    assert!(
        batches.len() <= 1,
        "more than one AssignTasks: {commands:?}"
    );
    batches
        .into_iter()
        .flatten()
        .map(|a| (a.executor_id.clone(), a.session_id.clone(), a.task_id))
        .collect()
}

/// `(executor, node)` of every `CreateExecutor` of the plan.
pub fn creates(commands: &[Command]) -> Vec<(String, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::CreateExecutor { id, node, .. } => Some((id.clone(), node.clone())),
            _ => None,
        })
        .collect()
}

/// `(executor, session)` of every `BindExecutor` of the plan.
pub fn binds(commands: &[Command]) -> Vec<(String, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::BindExecutor { id, session_id } => Some((id.clone(), session_id.clone())),
            _ => None,
        })
        .collect()
}

/// Sessions the plan binds executors to, with how many each.
pub fn binds_per_session(commands: &[Command]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (_, session) in binds(commands) {
        *counts.entry(session).or_insert(0) += 1;
    }
    counts
}

/// Executors the plan unbinds.
pub fn unbinds(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::UnbindExecutor { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Executors the plan releases.
pub fn releases(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::ReleaseExecutor { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Executors the plan asks to yield their session (fair-share rotations).
pub fn yields(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::YieldExecutor { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}
