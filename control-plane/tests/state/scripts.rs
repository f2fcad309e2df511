//! Claim: the lifecycle tables in the module docs of `state::{session, task, executor, node}`
//! and the cross-entity table of `state::rules` are what the state machine does. Each script in
//! `tests/state/scripts/` walks the rows of one table as commands and records every outcome,
//! effect and the resulting state; a change to a table's behaviour changes the output and fails
//! the script with a diff. Regenerate after an intended change with
//! `UPDATE_GOLDENFILES=1 cargo test -p flame-control-plane --test state scripts` and review the
//! diff.
//!
//! Commands (every one accepts `at=<ms>`, the entry's time, which then stays current):
//! `builtins`, `app NAME`, `unregister-app NAME`, `session ID [app=APP]`, `open ID [app=APP]`,
//! `close ID`, `delete ID`, `purge ID...`, `tasks SESSION N [dispatch]`, `node NAME [agent=A]`,
//! `heartbeat NAME`, `disconnect NAME`, `expire NAME`, `executor ID [node=N]`,
//! `register ID`, `bind ID SESSION`, `bound ID SESSION`, `bind-failed ID SESSION`, `unbind ID`,
//! `yield ID`, `unbound ID`, `release ID`, `released ID`, `assign EXECUTOR SESSION/TASK...`,
//! `complete EXECUTOR SESSION/TASK [code=N] [refill]`, `requeue SESSION/TASK...`, `state`.

use crate::state_support::{node, small_limits};
use bytes::Bytes;
use flame_control_plane::state::{
    Assignment, BindResult, Command, DispatchPolicy, Effect, NewTask, Outcome, Response,
    StateMachine, TaskRef, TaskResult,
};
use flame_proto::model::{ApplicationSpec, ResourceRequirement, Shim};
use goldenscript::Command as Line;
use std::error::Error;
use std::fmt::Write as _;

/// The state machine under a script, with the time of the next entry.
struct Scripted {
    machine: StateMachine,
    now_ms: i64,
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            machine: StateMachine::new(small_limits()),
            now_ms: 1_000,
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The positional arguments of `line`, and its keyed ones with the time (`at`) taken out.
fn split(line: &Line) -> (Vec<&str>, Vec<(&str, &str)>) {
    let positional = line
        .args
        .iter()
        .filter(|a| a.key.is_none())
        .map(|a| a.value.as_str())
        .collect();
    let keyed = line
        .args
        .iter()
        .filter_map(|a| a.key.as_deref().map(|k| (k, a.value.as_str())))
        .filter(|(k, _)| *k != "at")
        .collect();
    (positional, keyed)
}

fn key<'a>(keyed: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    keyed.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn arg<'a>(positional: &[&'a str], i: usize, line: &Line) -> Result<&'a str> {
    positional
        .get(i)
        .copied()
        .ok_or_else(|| format!("{} needs argument {}", line.name, i + 1).into())
}

/// `s1/2` as a task reference.
fn task_ref(text: &str) -> Result<TaskRef> {
    let (session_id, id) = text.split_once('/').ok_or("a task is SESSION/ID")?;
    Ok(TaskRef {
        session_id: session_id.to_owned(),
        task_id: id.parse()?,
    })
}

/// The command a script line names.
fn command(line: &Line) -> Result<Command> {
    let (pos, keyed) = split(line);
    let id = |i| arg(&pos, i, line).map(str::to_owned);
    let spec = |app: &str| flame_proto::model::SessionSpec {
        application: app.into(),
        common_data: None,
        min_instances: 0,
        max_instances: None,
        priority: 0,
        resreq: ResourceRequirement::default(),
    };
    let app = key(&keyed, "app").unwrap_or("flmrun");
    Ok(match line.name.as_str() {
        "builtins" => Command::EnsureBuiltins,
        "app" => Command::RegisterApplication {
            name: id(0)?,
            spec: ApplicationSpec::default(),
        },
        "unregister-app" => Command::UnregisterApplication { name: id(0)? },
        "session" => Command::CreateSession {
            id: id(0)?,
            spec: spec(app),
        },
        "open" => Command::OpenSession {
            id: id(0)?,
            spec: key(&keyed, "app").map(spec),
        },
        "close" => Command::CloseSession { id: id(0)? },
        "delete" => Command::DeleteSession { id: id(0)? },
        "purge" => Command::PurgeSessions {
            ids: pos.iter().map(|s| s.to_string()).collect(),
        },
        "tasks" => Command::CreateTasks {
            session_id: id(0)?,
            tasks: (0..arg(&pos, 1, line)?.parse::<usize>()?)
                .map(|i| NewTask {
                    input: Some(Bytes::from(format!("in{i}"))),
                    request_id: None,
                })
                .collect(),
            dispatch: pos.contains(&"dispatch").then(DispatchPolicy::default),
        },
        "node" => Command::RegisterNode {
            node: node(&id(0)?),
            agent_id: key(&keyed, "agent").unwrap_or("a1").to_owned(),
        },
        "heartbeat" => Command::Heartbeat { node: id(0)? },
        "disconnect" => Command::NodeDisconnected { node: id(0)? },
        "expire" => Command::MarkNodeNotReady { node: id(0)? },
        _ => return executor_command(line, &pos, &keyed),
    })
}

/// The executor and task commands a script line names.
fn executor_command(line: &Line, pos: &[&str], keyed: &[(&str, &str)]) -> Result<Command> {
    let id = |i| arg(pos, i, line).map(str::to_owned);
    // Task references are the positional arguments with a `/`; the rest are flags.
    let tasks = |from: usize| -> Result<Vec<TaskRef>> {
        pos.iter()
            .skip(from)
            .filter(|t| t.contains('/'))
            .map(|t| task_ref(t))
            .collect()
    };
    Ok(match line.name.as_str() {
        "executor" => Command::CreateExecutor {
            id: id(0)?,
            node: key(keyed, "node").unwrap_or("n1").to_owned(),
            resreq: ResourceRequirement::default(),
            shim: Shim::Host,
        },
        "register" => Command::RegisterExecutor { id: id(0)? },
        "bind" => Command::BindExecutor {
            id: id(0)?,
            session_id: id(1)?,
        },
        "bound" | "bind-failed" => Command::BindCompleted {
            id: id(0)?,
            session_id: id(1)?,
            result: match line.name.as_str() {
                "bound" => BindResult::Ok,
                _ => BindResult::Failed {
                    code: 12,
                    message: "on_session_enter failed: boom".into(),
                },
            },
        },
        "unbind" => Command::UnbindExecutor { id: id(0)? },
        "yield" => Command::YieldExecutor { id: id(0)? },
        "unbound" => Command::UnbindCompleted { id: id(0)? },
        "release" => Command::ReleaseExecutor { id: id(0)? },
        "released" => Command::ExecutorReleased { id: id(0)? },
        "assign" => Command::AssignTasks {
            assignments: tasks(1)?
                .into_iter()
                .map(|t| Assignment {
                    executor_id: pos[0].to_owned(),
                    session_id: t.session_id,
                    task_id: t.task_id,
                })
                .collect(),
        },
        "complete" => {
            let code: i32 = key(keyed, "code").unwrap_or("0").parse()?;
            let results = tasks(1)?
                .into_iter()
                .map(|t| TaskResult {
                    executor_id: pos[0].to_owned(),
                    session_id: t.session_id,
                    task_id: t.task_id,
                    return_code: code,
                    output: Some(Bytes::from_static(b"out")),
                    message: Some("ValueError: boom".into()),
                    duration_us: 1_000,
                })
                .collect();
            let refill = pos.contains(&"refill").then(DispatchPolicy::default);
            Command::CompleteTasks { results, refill }
        }
        "requeue" => Command::RequeueTasks {
            tasks: tasks(0)?,
            reason: "executor lost".into(),
        },
        other => return Err(format!("unknown command {other}").into()),
    })
}

/// One line per outcome item, then the effects.
fn render(response: &Response) -> String {
    let mut out = String::new();
    let line = |r: std::result::Result<String, &flame_proto::error::FlameError>| match r {
        Ok(text) if text.is_empty() => "ok\n".to_owned(),
        Ok(text) => format!("ok {text}\n"),
        Err(e) => format!("error {}: {e}\n", e.kind()),
    };
    match &response.outcome {
        Outcome::Application(r) => out += &line(r.as_ref().map(|a| a.name.clone())),
        Outcome::Done(r) => out += &line(r.as_ref().map(|()| String::new())),
        Outcome::Session(r) => {
            out += &line(r.as_ref().map(|s| format!("{} {:?}", s.id, s.state)));
        }
        Outcome::Tasks(r) => out += &line(r.as_ref().map(|t| format!("{} tasks", t.len()))),
        Outcome::Node(r) => out += &line(r.as_ref().map(|n| format!("{} {:?}", n.name, n.state))),
        Outcome::Executor(r) => {
            out += &line(r.as_ref().map(|e| format!("{} {:?}", e.id, e.state)));
        }
        Outcome::TaskUpdates(items) => {
            for r in items {
                out += &line(
                    r.as_ref()
                        .map(|t| format!("{}/{} {:?}", t.session_id, t.id, t.state)),
                );
            }
        }
        other => {
            let _ = writeln!(out, "{other:?}");
        }
    }
    for effect in &response.effects {
        let _ = writeln!(out, "  effect {}", effect_text(effect));
    }
    out
}

fn effect_text(effect: &Effect) -> String {
    match effect {
        Effect::ApplicationChanged { name } => format!("application {name} changed"),
        Effect::ApplicationRemoved { name } => format!("application {name} removed"),
        Effect::SessionChanged { session_id } => format!("session {session_id} changed"),
        Effect::SessionClosed { session_id } => format!("session {session_id} closed"),
        Effect::SessionRemoved { session_id } => format!("session {session_id} removed"),
        Effect::TaskChanged {
            session_id,
            task_id,
        } => format!("task {session_id}/{task_id} changed"),
        Effect::ExecutorChanged { executor_id, .. } => format!("executor {executor_id} changed"),
        Effect::ExecutorRemoved { executor_id, .. } => format!("executor {executor_id} removed"),
        Effect::NodeChanged { node } => format!("node {node} changed"),
        Effect::Restored => "restored".into(),
    }
}

/// The state, compactly: sessions with their tasks, executors with what they hold, nodes and
/// object drops.
fn render_state(machine: &StateMachine) -> String {
    let state = machine.state();
    let mut out = String::new();
    for entry in state.session_entries() {
        let s = &entry.session;
        let _ = write!(out, "session {} {:?}", s.id, s.state);
        if entry.bind_failures > 0 {
            let _ = write!(out, " bind_failures={}", entry.bind_failures);
        }
        let events: Vec<i32> = s.events.iter().map(|e| e.code).collect();
        if !events.is_empty() {
            let _ = write!(out, " events={events:?}");
        }
        out.push('\n');
        for t in entry.tasks() {
            let events: Vec<i32> = t.task.events.iter().map(|e| e.code).collect();
            let _ = writeln!(
                out,
                "  task {} {:?} requeues={} events={events:?}",
                t.task.id, t.task.state, t.requeues
            );
        }
    }
    for e in state.executor_entries() {
        let x = &e.executor;
        let held: Vec<String> = e
            .tasks
            .iter()
            .map(|t| format!("{}/{}", t.session_id, t.task_id))
            .collect();
        let session = x.session_id.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "executor {} {:?} session={session} holds={held:?}{}",
            x.id,
            x.state,
            if e.yielding { " yielding" } else { "" }
        );
    }
    for n in state.nodes() {
        let _ = writeln!(out, "node {} {:?}", n.name, n.state);
    }
    for d in state.object_drops(0, usize::MAX).drops {
        let _ = writeln!(out, "drop {} {}", d.seq, d.prefix);
    }
    out
}

impl goldenscript::Runner for Scripted {
    fn run(&mut self, line: &Line) -> Result<String> {
        if let Some(at) = line.args.iter().find(|a| a.key.as_deref() == Some("at")) {
            self.now_ms = at.value.parse()?;
        }
        if line.name == "state" {
            return Ok(render_state(&self.machine));
        }
        let command = command(line)?;
        Ok(render(&self.machine.apply(self.now_ms, command)))
    }
}

#[test]
fn the_lifecycle_tables_hold_as_scripted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state/scripts");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("the scripts directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.is_file())
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no scripts in {}", dir.display());
    for script in scripts {
        goldenscript::run(&mut Scripted::new(), &script)
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    }
}
