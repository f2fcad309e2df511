//! The chaos workload: flamepy-style clients that never retry, recording every call in a
//! [`History`]. Client `n` below the number of members keeps to the `n`-th member, as a flamepy
//! client keeps to its one endpoint; the other clients pick a member at random for every call
//! (followers as often as the leader), so reads of one task come from different members.
//!
//! Why both: a roaming client soon sits in the 4 s timeout of a stopped or cut-off member, and
//! so would every client in time; the pinned ones on healthy members keep writing, so the
//! longest window without an acknowledged write measures the cluster, not the clients.
//!
//! A client opens sessions of `flmping`, creates tasks of random duration and payload size,
//! reads them back with `GetTask`, `ListTask`, `GetSession` and `WatchTask`, closes sessions,
//! and registers and unregisters applications of its own. Every choice comes from the client's
//! own RNG, seeded from the run's seed and the client's number, so a seed repeats the same
//! sequence of requests (the answers, and so the later choices, depend on the faults' timing).
//!
//! Each task's input is `flmping` JSON carrying a `tag` unique over the run, so a task is found
//! again, and a second task with the same tag (a duplicate creation) is seen, even when the
//! create's answer was lost.
//!
//! Caveats: a call that does not answer within [`CALL_TIMEOUT`] is recorded as
//! [`Outcome::Unknown`], as a flamepy user would see a deadline; the client then moves on.

use crate::history::{
    Call, Clock, Op, Outcome, Reply, SessionState, TaskState, task_state_from_v1,
};
use crate::ping_session_spec;
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// How long a client waits for one answer before it records the call as unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// The shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The run's seed.
    pub seed: u64,
    /// Most calls one client makes.
    pub max_calls: usize,
    /// Longest task duration, ms (each task sleeps a random time up to this).
    pub max_task_ms: u64,
    /// Largest padding in a task's input, bytes.
    pub max_pad: usize,
    /// Longest pause between two calls of one client, ms.
    pub max_think_ms: u64,
}

/// A session whose creation a client saw acknowledged.
struct MySession {
    /// The session id.
    id: String,
    /// Whether the client may still create tasks in it (no close was sent).
    open: bool,
    /// Its acknowledged tasks as `(tag, id)`.
    tasks: Vec<(String, String)>,
}

/// A client's own view of what it created.
#[derive(Default)]
struct Mine {
    /// Its sessions.
    sessions: Vec<MySession>,
    /// Applications it registered and has not unregistered.
    apps: Vec<String>,
    /// How many names it has made, for unique ids.
    made: u64,
}

/// One client: calls the members in `members` (id and channel, updated as membership
/// changes) until `stop` turns true or it made `config.max_calls` calls; returns its record.
pub async fn client(
    number: u64,
    members: watch::Receiver<Vec<(u64, Channel)>>,
    config: WorkloadConfig,
    clock: Clock,
    stop: watch::Receiver<bool>,
) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_mul(1_000_003).wrapping_add(number));
    let mut mine = Mine::default();
    let mut ops = Vec::new();
    while !*stop.borrow() && ops.len() < config.max_calls {
        // The voters of the moment (a replaced member leaves the list, its successor joins).
        let now: Vec<(u64, Channel)> = members.borrow().clone();
        if now.is_empty() {
            break;
        }
        // The first clients each keep to one member, as a flamepy client keeps to its
        // endpoint, so some client always talks to a healthy member; the others roam.
        let at = usize::try_from(number)
            .ok()
            .filter(|n| *n < now.len())
            .unwrap_or_else(|| rng.random_range(0..now.len()));
        let (member, channel) = &now[at];
        let mut frontend = FrontendClient::new(channel.clone());
        let call = choose(&mut rng, &mut mine, number, &config);
        let invoke = clock.now();
        let outcome = send(&mut frontend, &call, &config, &mut rng).await;
        let complete = clock.now();
        learn(&mut mine, &call, &outcome);
        ops.push(Op {
            client: number,
            member: *member,
            invoke,
            complete,
            call,
            outcome,
        });
        let think = rng.random_range(0..=config.max_think_ms);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    ops
}

/// The next call: mostly task creation and reads, now and then session and application
/// changes.
fn choose(rng: &mut StdRng, mine: &mut Mine, number: u64, config: &WorkloadConfig) -> Call {
    let open: Vec<usize> = (0..mine.sessions.len())
        .filter(|i| mine.sessions[*i].open)
        .collect();
    let roll: u32 = rng.random_range(0..100);
    if open.is_empty() || (roll < 4 && open.len() < 3) {
        mine.made += 1;
        let session = format!("s{}-c{number}-{}", config.seed, mine.made);
        return Call::CreateSession { session };
    }
    let pick_open = open[rng.random_range(0..open.len())];
    let pick_any = rng.random_range(0..mine.sessions.len());
    let MySession {
        id: session, tasks, ..
    } = &mine.sessions[pick_any];
    let task = (!tasks.is_empty()).then(|| tasks[rng.random_range(0..tasks.len())].clone());
    match (roll, task) {
        (4..=45, _) => {
            mine.made += 1;
            let tag = format!("t{}-c{number}-{}", config.seed, mine.made);
            let session = mine.sessions[pick_open].id.clone();
            Call::CreateTask { session, tag }
        }
        (46..=49, _) if mine.sessions[pick_open].tasks.len() >= 5 => Call::CloseSession {
            session: mine.sessions[pick_open].id.clone(),
        },
        (50..=53, _) => application_call(rng, mine, number, config),
        (54..=63, _) => Call::ListTask {
            session: session.clone(),
        },
        (64..=71, _) => Call::GetSession {
            session: session.clone(),
        },
        (72..=79, Some((tag, id))) => Call::WatchTask {
            session: session.clone(),
            tag,
            id,
        },
        (_, Some((tag, id))) => Call::GetTask {
            session: session.clone(),
            tag,
            id,
        },
        (_, None) => Call::GetSession {
            session: session.clone(),
        },
    }
}

fn application_call(
    rng: &mut StdRng,
    mine: &mut Mine,
    number: u64,
    config: &WorkloadConfig,
) -> Call {
    if mine.apps.is_empty() || (mine.apps.len() < 2 && rng.random_bool(0.5)) {
        mine.made += 1;
        let name = format!("app{}-c{number}-{}", config.seed, mine.made);
        return Call::RegisterApplication { name };
    }
    let at = rng.random_range(0..mine.apps.len());
    Call::UnregisterApplication {
        name: mine.apps.remove(at),
    }
}

/// Records what an acknowledged (or possibly applied) call changed in the client's own view.
fn learn(mine: &mut Mine, call: &Call, outcome: &Outcome) {
    let ok = matches!(outcome, Outcome::Ok(_));
    match (call, outcome) {
        (Call::CreateSession { session }, _) if ok => {
            mine.sessions.push(MySession {
                id: session.clone(),
                open: true,
                tasks: Vec::new(),
            });
        }
        (Call::CreateTask { session, tag }, Outcome::Ok(Reply::Created(id))) => {
            if let Some(s) = mine.sessions.iter_mut().find(|s| &s.id == session) {
                s.tasks.push((tag.clone(), id.clone()));
            }
        }
        // An unknown close may still happen: stop creating there either way.
        (Call::CloseSession { session }, Outcome::Ok(_) | Outcome::Unknown(_)) => {
            if let Some(s) = mine.sessions.iter_mut().find(|s| &s.id == session) {
                s.open = false;
            }
        }
        (Call::RegisterApplication { name }, _) if ok => mine.apps.push(name.clone()),
        _ => {}
    }
}

/// Sends `call` through `frontend` and classifies the answer.
async fn send(
    frontend: &mut FrontendClient<Channel>,
    call: &Call,
    config: &WorkloadConfig,
    rng: &mut StdRng,
) -> Outcome {
    match call {
        Call::CreateSession { session } => {
            let request = v1::CreateSessionRequest {
                session_id: session.clone(),
                session: Some(ping_session_spec(0, None)),
            };
            timed(frontend.create_session(request), |_| done()).await
        }
        Call::CloseSession { session } => {
            let request = v1::CloseSessionRequest {
                session_id: session.clone(),
            };
            timed(frontend.close_session(request), |_| done()).await
        }
        Call::GetSession { session } => {
            let request = v1::GetSessionRequest {
                session_id: session.clone(),
            };
            let read = |s: v1::Session| Outcome::Ok(Reply::Session(session_state(&s)));
            timed(frontend.get_session(request), read).await
        }
        Call::CreateTask { session, tag } => {
            let input = task_input(tag, config, rng);
            let request = v1::CreateTaskRequest {
                task: Some(v1::TaskSpec {
                    session_id: session.clone(),
                    input: Some(input),
                    output: None,
                }),
            };
            let created = |t: v1::Task| {
                Outcome::Ok(Reply::Created(t.metadata.map(|m| m.id).unwrap_or_default()))
            };
            timed(frontend.create_task(request), created).await
        }
        Call::GetTask { session, id, .. } => {
            let request = v1::GetTaskRequest {
                task_id: id.clone(),
                session_id: session.clone(),
            };
            timed(frontend.get_task(request), task_reply).await
        }
        Call::ListTask { session } => list(frontend, session).await,
        Call::WatchTask { session, id, .. } => watch_first(frontend, session, id).await,
        Call::RegisterApplication { name } => register(frontend, name).await,
        Call::UnregisterApplication { name } => {
            let request = v1::UnregisterApplicationRequest { name: name.clone() };
            timed(frontend.unregister_application(request), result_reply).await
        }
    }
}

async fn register(frontend: &mut FrontendClient<Channel>, name: &str) -> Outcome {
    let request = v1::RegisterApplicationRequest {
        name: name.to_owned(),
        application: Some(v1::ApplicationSpec {
            description: Some("registered by the chaos workload; never run".into()),
            command: Some("/bin/true".into()),
            ..Default::default()
        }),
    };
    timed(frontend.register_application(request), result_reply).await
}

fn done() -> Outcome {
    Outcome::Ok(Reply::Done)
}

/// A `Result` message with a non-zero code is a refusal.
fn result_reply(r: v1::Result) -> Outcome {
    if r.return_code == 0 {
        done()
    } else {
        Outcome::Failed(r.message.unwrap_or_default())
    }
}

/// Awaits `call` within [`CALL_TIMEOUT`] and classifies its answer.
async fn timed<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    reply: impl FnOnce(T) -> Outcome,
) -> Outcome {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => reply(response.into_inner()),
        Ok(Err(status)) => classify(&status),
        Err(_) => Outcome::Unknown(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// `NOT_FOUND` is an answer; a refusal by meaning did not happen; anything else (unavailable,
/// deadline, internal) may have.
pub fn classify(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    match status.code() {
        Code::NotFound => Outcome::Ok(Reply::NotFound),
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::ResourceExhausted => Outcome::Failed(status.message().to_owned()),
        _ => Outcome::Unknown(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// A session's state as a client reads it.
pub fn session_state(s: &v1::Session) -> SessionState {
    let closed = s
        .status
        .as_ref()
        .is_some_and(|st| st.state == v1::SessionState::Closed as i32);
    if closed {
        SessionState::Closed
    } else {
        SessionState::Open
    }
}

fn task_reply(t: v1::Task) -> Outcome {
    match t.status.and_then(|s| task_state_from_v1(s.state)) {
        Some(state) => Outcome::Ok(Reply::Task(state)),
        None => Outcome::Unknown("a task without a known state".into()),
    }
}

/// The task's `(id, tag, state)`; the tag is read from its input.
pub fn task_row(t: &v1::Task) -> Option<(String, String, TaskState)> {
    let id = t.metadata.as_ref()?.id.clone();
    let state = task_state_from_v1(t.status.as_ref()?.state)?;
    let input = t.spec.as_ref()?.input.as_deref().unwrap_or_default();
    let tag = serde_json::from_slice::<serde_json::Value>(input)
        .ok()
        .and_then(|v| v.get("tag").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Some((id, tag, state))
}

fn task_input(tag: &str, config: &WorkloadConfig, rng: &mut StdRng) -> Vec<u8> {
    let duration = rng.random_range(0..=config.max_task_ms);
    let pad = "x".repeat(rng.random_range(0..=config.max_pad));
    serde_json::json!({ "duration": duration, "tag": tag, "pad": pad })
        .to_string()
        .into_bytes()
}

async fn list(frontend: &mut FrontendClient<Channel>, session: &str) -> Outcome {
    let request = v1::ListTaskRequest {
        session_id: session.to_owned(),
    };
    let read = async {
        let mut stream = frontend.list_task(request).await?.into_inner();
        let mut rows = Vec::new();
        while let Some(task) = stream.message().await? {
            rows.extend(task_row(&task));
        }
        Ok::<_, tonic::Status>(rows)
    };
    match tokio::time::timeout(CALL_TIMEOUT, read).await {
        Ok(Ok(rows)) => Outcome::Ok(Reply::Tasks(rows)),
        Ok(Err(status)) => classify(&status),
        Err(_) => Outcome::Unknown(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

async fn watch_first(frontend: &mut FrontendClient<Channel>, session: &str, id: &str) -> Outcome {
    let request = v1::WatchTaskRequest {
        task_id: id.to_owned(),
        session_id: session.to_owned(),
    };
    let first = async {
        let mut stream = frontend.watch_task(request).await?.into_inner();
        stream.message().await
    };
    match tokio::time::timeout(CALL_TIMEOUT, first).await {
        Ok(Ok(Some(task))) => task_reply(task),
        Ok(Ok(None)) => Outcome::Unknown("the watch ended without a state".into()),
        Ok(Err(status)) => classify(&status),
        Err(_) => Outcome::Unknown(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}
