//! Conversions between the domain model ([`crate::model`]) and the `flame.v1` wire messages
//! ([`crate::v1`]). This is the only place in the workspace that maps between them.
//!
//! Directions:
//! - model → v1 (`From<&model::X>`): responses. They follow spec section 4.4: `metadata.id ==
//!   metadata.name`, an application's `max_instances` and `delay_release` are always present and
//!   its other optionals only when set, a session always carries `batch_size` 1 and its resolved
//!   `resreq`, a task always carries `spec.session_id`, a node's `spec.hostname` is its name and
//!   its heartbeat is in Unix **seconds**.
//! - v1 → model, request side: `TryFrom<v1::ApplicationSpec>` applies the stored defaults and
//!   validates ([`model::ApplicationSpec::validate`]); [`model::SessionSpec::from_v1`] resolves
//!   the resource request against the cluster default (spec section 5.3).
//! - v1 → model, response side (`TryFrom<v1::Application>`, `Session`, `Task`, `Executor`,
//!   `Node`), for Rust clients: only structural checks (required sub-messages present, enum
//!   values known, task ids numeric); payloads a server sent are not re-validated.
//! - Node agents (`flame.agent.v1`): [`model::Node::from_registration`] is RegisterNode's
//!   request side (validated: hostname-like name, bounded fields, allocatable within capacity);
//!   the leader builds assignments from model executors, tasks, applications and sessions.
//! - The object cache (`flame.cluster.v1` and RegisterNode's `cache`): see the `cache` submodule.
//!
//! Caveats: Unix-millisecond heartbeats are truncated to whole seconds on the wire, so only
//! whole-second values round-trip. Counters above `i32::MAX` are clamped. A wire `Node` carries
//! no separate host name, so the model's `hostname` reads back as the node name; nor a cache
//! (that travels in RegisterNode and the cache directory), so a node read from `flame.v1` has
//! `cache: None`.
#![warn(missing_docs)]

use crate::agent;
use crate::error::FlameError;
use crate::model;
use crate::v1;
use bytes::Bytes;

/// Maps a model enum to and from its `flame.v1` twin, value by value.
macro_rules! enum_pair {
    ($model:ident, $wire:ident, $what:literal, { $($m:ident <=> $w:ident),* $(,)? }) => {
        impl From<model::$model> for v1::$wire {
            fn from(value: model::$model) -> Self {
                match value {
                    $(model::$model::$m => v1::$wire::$w,)*
                }
            }
        }

        impl From<v1::$wire> for model::$model {
            fn from(value: v1::$wire) -> Self {
                match value {
                    $(v1::$wire::$w => model::$model::$m,)*
                }
            }
        }

        impl TryFrom<i32> for model::$model {
            type Error = FlameError;

            /// Maps a raw wire value; an unknown value is `InvalidArgument`.
            fn try_from(value: i32) -> Result<Self, FlameError> {
                v1::$wire::try_from(value).map(Self::from).map_err(|_| {
                    FlameError::InvalidArgument(format!("unknown {} value {value}", $what))
                })
            }
        }
    };
}

enum_pair!(Shim, Shim, "shim", { Host <=> Host, Wasm <=> Wasm });
enum_pair!(SessionState, SessionState, "session state", { Open <=> Open, Closed <=> Closed });
enum_pair!(TaskState, TaskState, "task state", {
    Pending <=> Pending,
    Running <=> Running,
    Succeed <=> Succeed,
    Failed <=> Failed,
    Cancelled <=> Cancelled,
});
enum_pair!(ApplicationState, ApplicationState, "application state", {
    Enabled <=> Enabled,
    Disabled <=> Disabled,
});
enum_pair!(ExecutorState, ExecutorState, "executor state", {
    Unknown <=> ExecutorUnknown,
    Void <=> ExecutorVoid,
    Idle <=> ExecutorIdle,
    Binding <=> ExecutorBinding,
    Bound <=> ExecutorBound,
    Unbinding <=> ExecutorUnbinding,
    Releasing <=> ExecutorReleasing,
    Released <=> ExecutorReleased,
});
enum_pair!(NodeState, NodeState, "node state", {
    Unknown <=> Unknown,
    Ready <=> Ready,
    NotReady <=> NotReady,
});

/// The wire value of a model enum.
fn wire<W: From<M> + Into<i32>, M>(value: M) -> i32 {
    W::from(value).into()
}

/// Metadata with `id == name`, as every response carries it.
fn metadata(id: impl AsRef<str>) -> Option<v1::Metadata> {
    let id = id.as_ref();
    Some(v1::Metadata {
        id: id.to_owned(),
        name: id.to_owned(),
    })
}

/// The id of a response object: its metadata name (which equals its id).
fn object_id(metadata: Option<v1::Metadata>, what: &str) -> Result<String, FlameError> {
    metadata
        .map(|m| if m.name.is_empty() { m.id } else { m.name })
        .ok_or_else(|| missing(what, "metadata"))
}

fn missing(what: &str, field: &str) -> FlameError {
    FlameError::InvalidArgument(format!("{what} without {field}"))
}

fn to_vec(b: &Option<Bytes>) -> Option<Vec<u8>> {
    b.as_ref().map(|b| b.to_vec())
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn clamp_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl From<&model::ResourceRequirement> for v1::ResourceRequirement {
    fn from(r: &model::ResourceRequirement) -> Self {
        v1::ResourceRequirement {
            cpu: r.cpu,
            memory: r.memory,
            gpu: r.gpu,
        }
    }
}

impl From<v1::ResourceRequirement> for model::ResourceRequirement {
    fn from(r: v1::ResourceRequirement) -> Self {
        model::ResourceRequirement {
            cpu: r.cpu,
            memory: r.memory,
            gpu: r.gpu,
        }
    }
}

impl From<&model::Event> for v1::Event {
    fn from(e: &model::Event) -> Self {
        v1::Event {
            code: e.code,
            message: e.message.clone(),
            creation_time: e.creation_time_ms,
        }
    }
}

impl From<v1::Event> for model::Event {
    fn from(e: v1::Event) -> Self {
        model::Event {
            code: e.code,
            message: e.message,
            creation_time_ms: e.creation_time,
        }
    }
}

fn events_to_wire(events: &[model::Event]) -> Vec<v1::Event> {
    events.iter().map(v1::Event::from).collect()
}

fn events_from_wire(events: Vec<v1::Event>) -> Vec<model::Event> {
    events.into_iter().map(model::Event::from).collect()
}

// ---------------------------------------------------------------------------------------------
// Applications
// ---------------------------------------------------------------------------------------------

impl From<&model::ApplicationSpec> for v1::ApplicationSpec {
    fn from(s: &model::ApplicationSpec) -> Self {
        v1::ApplicationSpec {
            shim: wire::<v1::Shim, _>(s.shim),
            description: s.description.clone(),
            labels: s.labels.clone(),
            image: s.image.clone(),
            command: s.command.clone(),
            arguments: s.arguments.clone(),
            environments: s
                .environments
                .iter()
                .map(|e| v1::Environment {
                    name: e.name.clone(),
                    value: e.value.clone(),
                })
                .collect(),
            working_directory: s.working_directory.clone(),
            max_instances: Some(s.max_instances),
            delay_release: Some(s.delay_release_secs),
            schema: s.schema.as_ref().map(|x| v1::ApplicationSchema {
                input: x.input.clone(),
                output: x.output.clone(),
                common_data: x.common_data.clone(),
            }),
            url: s.url.clone(),
            installer: s.installer.clone(),
        }
    }
}

/// Maps a wire spec, applying the stored defaults, without the request checks.
fn application_spec_unchecked(
    s: v1::ApplicationSpec,
) -> Result<model::ApplicationSpec, FlameError> {
    Ok(model::ApplicationSpec {
        shim: model::Shim::try_from(s.shim)?,
        description: s.description,
        labels: s.labels,
        image: s.image,
        command: s.command,
        arguments: s.arguments,
        environments: s
            .environments
            .into_iter()
            .map(|e| model::Environment {
                name: e.name,
                value: e.value,
            })
            .collect(),
        working_directory: s.working_directory,
        max_instances: s.max_instances.unwrap_or(model::DEFAULT_MAX_INSTANCES),
        delay_release_secs: s.delay_release.unwrap_or(model::DEFAULT_DELAY_RELEASE_SECS),
        schema: s.schema.map(|x| model::ApplicationSchema {
            input: x.input,
            output: x.output,
            common_data: x.common_data,
        }),
        url: s.url,
        installer: s.installer,
    })
}

impl TryFrom<v1::ApplicationSpec> for model::ApplicationSpec {
    type Error = FlameError;

    /// The request side of RegisterApplication and UpdateApplication: applies the defaults
    /// (`max_instances` 1,000,000, `delay_release` 60 s) and runs
    /// [`model::ApplicationSpec::validate`].
    fn try_from(s: v1::ApplicationSpec) -> Result<Self, FlameError> {
        let spec = application_spec_unchecked(s)?;
        spec.validate()?;
        Ok(spec)
    }
}

impl From<&model::Application> for v1::Application {
    fn from(a: &model::Application) -> Self {
        v1::Application {
            metadata: metadata(&a.name),
            spec: Some(v1::ApplicationSpec::from(&a.spec)),
            status: Some(v1::ApplicationStatus {
                state: wire::<v1::ApplicationState, _>(a.state),
                creation_time: a.creation_time_ms,
            }),
        }
    }
}

impl TryFrom<v1::Application> for model::Application {
    type Error = FlameError;

    /// The response side: structural checks only; an absent status reads as Enabled at time 0.
    fn try_from(a: v1::Application) -> Result<Self, FlameError> {
        let spec = a.spec.ok_or_else(|| missing("application", "spec"))?;
        let status = a.status.unwrap_or_default();
        Ok(model::Application {
            name: object_id(a.metadata, "application")?,
            spec: application_spec_unchecked(spec)?,
            state: model::ApplicationState::try_from(status.state)?,
            creation_time_ms: status.creation_time,
        })
    }
}

impl From<&model::Application> for v1::ApplicationContext {
    /// What OnSessionEnter tells an instance about its application (spec section 3.7).
    fn from(a: &model::Application) -> Self {
        v1::ApplicationContext {
            name: a.name.clone(),
            shim: wire::<v1::Shim, _>(a.spec.shim),
            image: a.spec.image.clone(),
            command: a.spec.command.clone(),
            working_directory: a.spec.working_directory.clone(),
            url: a.spec.url.clone(),
            installer: a.spec.installer.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions and tasks
// ---------------------------------------------------------------------------------------------

impl model::SessionSpec {
    /// The request side of CreateSession and OpenSession.
    ///
    /// The resource request resolves as spec section 5.3 says: the explicit `resreq`, else
    /// `cluster_default`, else [`model::ResourceRequirement::default`]. `batch_size` is dropped
    /// (always 1); everything else is kept as sent. A negative `gpu` is `InvalidArgument`. The
    /// application name is not checked here: an unknown application is the caller's NOT_FOUND.
    pub fn from_v1(
        spec: v1::SessionSpec,
        cluster_default: Option<&model::ResourceRequirement>,
    ) -> Result<Self, FlameError> {
        let resreq = match spec.resreq {
            Some(r) => model::ResourceRequirement::from(r),
            None => cluster_default.copied().unwrap_or_default(),
        };
        if resreq.gpu < 0 {
            return Err(FlameError::InvalidArgument(format!(
                "resreq.gpu must not be negative, got {}",
                resreq.gpu
            )));
        }
        Ok(model::SessionSpec {
            application: spec.application,
            common_data: spec.common_data.map(Bytes::from),
            min_instances: spec.min_instances,
            max_instances: spec.max_instances,
            priority: spec.priority,
            resreq,
        })
    }
}

impl From<&model::SessionSpec> for v1::SessionSpec {
    fn from(s: &model::SessionSpec) -> Self {
        v1::SessionSpec {
            application: s.application.clone(),
            common_data: to_vec(&s.common_data),
            min_instances: s.min_instances,
            max_instances: s.max_instances,
            batch_size: 1,
            priority: s.priority,
            resreq: Some(v1::ResourceRequirement::from(&s.resreq)),
        }
    }
}

impl From<&model::Session> for v1::Session {
    fn from(s: &model::Session) -> Self {
        let c = &s.counters;
        v1::Session {
            metadata: metadata(&s.id),
            spec: Some(v1::SessionSpec::from(&s.spec)),
            status: Some(v1::SessionStatus {
                state: wire::<v1::SessionState, _>(s.state),
                creation_time: s.creation_time_ms,
                completion_time: s.completion_time_ms,
                pending: clamp_i32(c.pending),
                running: clamp_i32(c.running),
                succeed: clamp_i32(c.succeed),
                failed: clamp_i32(c.failed),
                cancelled: clamp_i32(c.cancelled),
                events: events_to_wire(&s.events),
            }),
        }
    }
}

impl TryFrom<v1::Session> for model::Session {
    type Error = FlameError;

    /// The response side: an absent `resreq` reads as the default; negative counters as 0.
    fn try_from(s: v1::Session) -> Result<Self, FlameError> {
        let spec = s.spec.ok_or_else(|| missing("session", "spec"))?;
        let status = s.status.ok_or_else(|| missing("session", "status"))?;
        Ok(model::Session {
            id: object_id(s.metadata, "session")?.into(),
            spec: model::SessionSpec::from_v1(spec, None)?,
            state: model::SessionState::try_from(status.state)?,
            creation_time_ms: status.creation_time,
            completion_time_ms: status.completion_time,
            counters: model::TaskCounters {
                pending: clamp_u32(status.pending),
                running: clamp_u32(status.running),
                succeed: clamp_u32(status.succeed),
                failed: clamp_u32(status.failed),
                cancelled: clamp_u32(status.cancelled),
            },
            events: events_from_wire(status.events),
        })
    }
}

impl From<&model::Task> for v1::Task {
    fn from(t: &model::Task) -> Self {
        v1::Task {
            metadata: metadata(t.id.to_string()),
            spec: Some(v1::TaskSpec {
                session_id: t.session_id.clone().into(),
                input: to_vec(&t.input),
                output: to_vec(&t.output),
            }),
            status: Some(v1::TaskStatus {
                state: wire::<v1::TaskState, _>(t.state),
                creation_time: t.creation_time_ms,
                completion_time: t.completion_time_ms,
                events: events_to_wire(&t.events),
            }),
        }
    }
}

impl TryFrom<v1::Task> for model::Task {
    type Error = FlameError;

    /// The response side: the id must be a positive decimal number.
    fn try_from(t: v1::Task) -> Result<Self, FlameError> {
        let id_text = object_id(t.metadata, "task")?;
        let id = crate::model::parse_task_id(&id_text)
            .map_err(|_| FlameError::InvalidArgument(format!("invalid task id '{id_text}'")))?;
        let spec = t.spec.ok_or_else(|| missing("task", "spec"))?;
        let status = t.status.ok_or_else(|| missing("task", "status"))?;
        Ok(model::Task {
            id: id.into(),
            session_id: spec.session_id.into(),
            input: spec.input.map(Bytes::from),
            output: spec.output.map(Bytes::from),
            state: model::TaskState::try_from(status.state)?,
            creation_time_ms: status.creation_time,
            completion_time_ms: status.completion_time,
            events: events_from_wire(status.events),
        })
    }
}

impl From<&model::Task> for v1::TaskContext {
    /// What OnTaskInvoke hands an instance: ids and input, with input presence preserved.
    fn from(t: &model::Task) -> Self {
        v1::TaskContext {
            task_id: t.id.to_string(),
            session_id: t.session_id.clone().into(),
            input: to_vec(&t.input),
        }
    }
}

impl From<(&model::Application, &model::Session)> for v1::SessionContext {
    /// What OnSessionEnter hands an instance: the session id, its application and its
    /// common data, with presence preserved.
    fn from((app, session): (&model::Application, &model::Session)) -> Self {
        v1::SessionContext {
            session_id: session.id.clone().into(),
            application: Some(v1::ApplicationContext::from(app)),
            common_data: to_vec(&session.spec.common_data),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Executors and nodes
// ---------------------------------------------------------------------------------------------

impl From<&model::Executor> for v1::Executor {
    fn from(e: &model::Executor) -> Self {
        v1::Executor {
            metadata: metadata(&e.id),
            spec: Some(v1::ExecutorSpec {
                node: e.spec.node.clone().into(),
                resreq: Some(v1::ResourceRequirement::from(&e.spec.resreq)),
                shim: wire::<v1::Shim, _>(e.spec.shim),
            }),
            status: Some(v1::ExecutorStatus {
                state: wire::<v1::ExecutorState, _>(e.state),
                session_id: e.session_id.clone().map(Into::into),
            }),
        }
    }
}

impl TryFrom<v1::Executor> for model::Executor {
    type Error = FlameError;

    /// The response side: an absent `resreq` reads as zero resources.
    fn try_from(e: v1::Executor) -> Result<Self, FlameError> {
        let spec = e.spec.ok_or_else(|| missing("executor", "spec"))?;
        let status = e.status.ok_or_else(|| missing("executor", "status"))?;
        Ok(model::Executor {
            id: object_id(e.metadata, "executor")?.into(),
            spec: model::ExecutorSpec {
                node: spec.node.into(),
                resreq: spec.resreq.unwrap_or_default().into(),
                shim: model::Shim::try_from(spec.shim)?,
            },
            state: model::ExecutorState::try_from(status.state)?,
            session_id: status.session_id.map(Into::into),
        })
    }
}

impl From<&model::Node> for v1::Node {
    fn from(n: &model::Node) -> Self {
        v1::Node {
            metadata: metadata(&n.name),
            spec: Some(v1::NodeSpec {
                hostname: n.name.clone().into(),
            }),
            status: Some(v1::NodeStatus {
                state: wire::<v1::NodeState, _>(n.state),
                capacity: Some(v1::ResourceRequirement::from(&n.capacity)),
                allocatable: Some(v1::ResourceRequirement::from(&n.allocatable)),
                info: Some(v1::NodeInfo {
                    arch: n.arch.clone(),
                    os: n.os.clone(),
                }),
                addresses: n
                    .addresses
                    .iter()
                    .map(|a| v1::NodeAddress {
                        r#type: a.kind.clone(),
                        address: a.address.clone(),
                    })
                    .collect(),
                last_heartbeat_time: n.last_heartbeat_ms.div_euclid(1000),
            }),
        }
    }
}

impl TryFrom<v1::Node> for model::Node {
    type Error = FlameError;

    /// The response side: absent resources read as zero, an absent info as empty strings.
    fn try_from(n: v1::Node) -> Result<Self, FlameError> {
        let name = object_id(n.metadata, "node")?;
        let hostname = n.spec.map(|s| s.hostname).unwrap_or_default();
        let status = n.status.ok_or_else(|| missing("node", "status"))?;
        let info = status.info.unwrap_or_default();
        Ok(model::Node {
            hostname: if hostname.is_empty() {
                name.clone()
            } else {
                hostname
            },
            name: name.into(),
            state: model::NodeState::try_from(status.state)?,
            capacity: status.capacity.unwrap_or_default().into(),
            allocatable: status.allocatable.unwrap_or_default().into(),
            arch: info.arch,
            os: info.os,
            addresses: status
                .addresses
                .into_iter()
                .map(|a| model::NodeAddress {
                    kind: a.r#type,
                    address: a.address,
                })
                .collect(),
            last_heartbeat_ms: status.last_heartbeat_time.saturating_mul(1000),
            cache: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Node agents (flame.agent.v1)
// ---------------------------------------------------------------------------------------------

/// Longest accepted node name (a DNS name's limit), in characters.
pub const MAX_NODE_NAME_LEN: usize = 253;
/// Longest accepted label of a node name (between dots), in characters.
const MAX_NODE_LABEL_LEN: usize = 63;
/// Longest accepted `arch`, `os` or address type of a registering node.
const MAX_NODE_FIELD_LEN: usize = 64;
/// Most addresses a registering node may report.
const MAX_NODE_ADDRESSES: usize = 32;

/// Checks a node name: hostname-like, 1–253 characters from `[A-Za-z0-9._-]`, dot-separated
/// labels of 1–63 characters that do not start or end with `-`.
///
/// Underscores are accepted because some hosts' nodenames carry them. The error is
/// `InvalidArgument` naming the rule that failed.
pub fn validate_node_name(name: &str) -> Result<(), FlameError> {
    let invalid = |why: &str| {
        Err(FlameError::InvalidArgument(format!(
            "invalid node name '{name}': {why}"
        )))
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NODE_NAME_LEN {
        return invalid("it is longer than 253 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return invalid(&format!(
            "character {bad:?} is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return invalid("it has an empty label (a leading, trailing or doubled '.')");
        }
        if label.len() > MAX_NODE_LABEL_LEN {
            return invalid("a label between dots is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label must not start or end with '-'");
        }
    }
    Ok(())
}

/// Refuses a text field of a registering node longer than `limit` characters.
fn check_len(what: &str, value: &str, limit: usize) -> Result<(), FlameError> {
    let len = value.chars().count();
    if len > limit {
        return Err(FlameError::InvalidArgument(format!(
            "node {what} is {len} characters long; the limit is {limit}"
        )));
    }
    Ok(())
}

/// Refuses a negative GPU count and an allocatable share above the capacity, except for cpu,
/// which an agent may overcommit up to [`model::MAX_CPU_OVERCOMMIT`] times.
fn check_resources(
    capacity: &model::ResourceRequirement,
    allocatable: &model::ResourceRequirement,
) -> Result<(), FlameError> {
    if capacity.gpu < 0 || allocatable.gpu < 0 {
        return Err(FlameError::InvalidArgument(
            "node gpu counts must not be negative".into(),
        ));
    }
    let cpu_limit = capacity
        .cpu
        .saturating_mul(u64::from(model::MAX_CPU_OVERCOMMIT));
    if allocatable.cpu > cpu_limit {
        return Err(FlameError::InvalidArgument(format!(
            "node allocatable cpu {} is more than {} times its capacity ({})",
            allocatable.cpu,
            model::MAX_CPU_OVERCOMMIT,
            capacity.cpu
        )));
    }
    if allocatable.memory > capacity.memory || allocatable.gpu > capacity.gpu {
        return Err(FlameError::InvalidArgument(format!(
            "node allocatable ({allocatable}) exceeds its capacity ({capacity})"
        )));
    }
    Ok(())
}

impl model::Node {
    /// The request side of `flame.agent.v1.RegisterNode`: the node as its agent describes it.
    ///
    /// The name is `metadata.name` (else `metadata.id`) and must pass [`validate_node_name`];
    /// `spec.hostname` defaults to the name. `status.capacity` is required; an absent
    /// `allocatable` means the whole capacity. The wire state and heartbeat time are ignored
    /// (the state machine decides them). Text fields and the address list are bounded. Every
    /// failure is `InvalidArgument`. The node's cache is not part of `flame.v1.Node`: it is
    /// `None` here, and the caller sets it from the request (`model::CacheEndpoint::try_from`).
    pub fn from_registration(node: v1::Node) -> Result<Self, FlameError> {
        let name = object_id(node.metadata, "node")?;
        validate_node_name(&name)?;
        let hostname = node.spec.map(|s| s.hostname).unwrap_or_default();
        check_len("hostname", &hostname, MAX_NODE_NAME_LEN)?;
        let status = node.status.ok_or_else(|| missing("node", "status"))?;
        let capacity: model::ResourceRequirement = status
            .capacity
            .ok_or_else(|| missing("node status", "capacity"))?
            .into();
        let allocatable = status.allocatable.map_or(capacity, Into::into);
        check_resources(&capacity, &allocatable)?;
        let info = status.info.unwrap_or_default();
        check_len("arch", &info.arch, MAX_NODE_FIELD_LEN)?;
        check_len("os", &info.os, MAX_NODE_FIELD_LEN)?;
        if status.addresses.len() > MAX_NODE_ADDRESSES {
            return Err(FlameError::InvalidArgument(format!(
                "node reports {} addresses; the limit is {MAX_NODE_ADDRESSES}",
                status.addresses.len()
            )));
        }
        let mut addresses = Vec::with_capacity(status.addresses.len());
        for a in status.addresses {
            check_len("address type", &a.r#type, MAX_NODE_FIELD_LEN)?;
            check_len("address", &a.address, MAX_NODE_NAME_LEN)?;
            addresses.push(model::NodeAddress {
                kind: a.r#type,
                address: a.address,
            });
        }
        Ok(model::Node {
            hostname: if hostname.is_empty() {
                name.clone()
            } else {
                hostname
            },
            name: name.into(),
            state: model::NodeState::Unknown,
            capacity,
            allocatable,
            arch: info.arch,
            os: info.os,
            addresses,
            last_heartbeat_ms: 0,
            cache: None,
        })
    }
}

impl From<model::ExecutorState> for agent::ExecutorAction {
    /// What an agent must do with an executor in this state (docs/agent-protocol.md):
    /// Void, Idle (and Unknown) hold the slot, Binding binds, Bound runs, Unbinding unbinds,
    /// Releasing (and Released) give the slot back.
    fn from(state: model::ExecutorState) -> Self {
        use model::ExecutorState as S;
        match state {
            S::Unknown | S::Void | S::Idle => agent::ExecutorAction::Idle,
            S::Binding => agent::ExecutorAction::Bind,
            S::Bound => agent::ExecutorAction::Run,
            S::Unbinding => agent::ExecutorAction::Unbind,
            S::Releasing | S::Released => agent::ExecutorAction::Release,
        }
    }
}

impl From<&model::Task> for agent::TaskAssignment {
    /// A task an executor must run: ids and input, with input presence preserved.
    fn from(t: &model::Task) -> Self {
        agent::TaskAssignment {
            task_id: t.id.into(),
            session_id: t.session_id.clone().into(),
            input: to_vec(&t.input),
        }
    }
}

impl From<(&model::Application, &model::Session)> for agent::Binding {
    /// The session an executor must bind: its application (as `flame.v1.Application`), id and
    /// common data, with presence preserved.
    fn from((app, session): (&model::Application, &model::Session)) -> Self {
        agent::Binding {
            application: Some(v1::Application::from(app)),
            session_id: session.id.clone().into(),
            common_data: to_vec(&session.spec.common_data),
        }
    }
}

impl From<&model::Executor> for agent::ExecutorAssignment {
    /// An executor's assignment without binding or tasks: id, size, shim and the action of its
    /// state. The caller adds the binding and the running task.
    fn from(e: &model::Executor) -> Self {
        agent::ExecutorAssignment {
            executor_id: e.id.clone().into(),
            resreq: Some(v1::ResourceRequirement::from(&e.spec.resreq)),
            shim: wire::<v1::Shim, _>(e.spec.shim),
            action: agent::ExecutorAction::from(e.state).into(),
            binding: None,
            tasks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod agent_tests {
    use super::*;

    fn wire_node(name: &str) -> v1::Node {
        v1::Node {
            metadata: Some(v1::Metadata {
                id: String::new(),
                name: name.into(),
            }),
            spec: Some(v1::NodeSpec {
                hostname: "host-1.example".into(),
            }),
            status: Some(v1::NodeStatus {
                state: 1,
                capacity: Some(v1::ResourceRequirement {
                    cpu: 4,
                    memory: 8 << 30,
                    gpu: 0,
                }),
                allocatable: None,
                info: Some(v1::NodeInfo {
                    arch: "x86_64".into(),
                    os: "linux".into(),
                }),
                addresses: vec![v1::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }],
                last_heartbeat_time: 99,
            }),
        }
    }

    #[test]
    fn a_registration_keeps_the_description_and_defaults_allocatable_to_capacity() {
        let node = model::Node::from_registration(wire_node("n-1")).expect("valid");
        assert_eq!(node.name, "n-1");
        assert_eq!(node.hostname, "host-1.example");
        assert_eq!(node.allocatable, node.capacity);
        assert_eq!(node.capacity.memory, 8 << 30);
        assert_eq!((node.arch.as_str(), node.os.as_str()), ("x86_64", "linux"));
        assert_eq!(node.addresses.len(), 1);
        assert_eq!(node.last_heartbeat_ms, 0);
        assert_eq!(node.state, model::NodeState::Unknown);
    }

    #[test]
    fn node_names_must_be_hostname_like() {
        for good in ["n1", "ip-10-0-0-1.ec2.internal", "a_b", &"a".repeat(63)] {
            assert_eq!(validate_node_name(good), Ok(()), "{good}");
        }
        let long_label = "a".repeat(64);
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "-a",
            "a-",
            "a b",
            "a/b",
            "é",
            &long_label,
        ] {
            assert!(
                matches!(validate_node_name(bad), Err(FlameError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn registrations_without_capacity_or_with_oversized_fields_are_refused() {
        let mut no_capacity = wire_node("n1");
        if let Some(s) = no_capacity.status.as_mut() {
            s.capacity = None;
        }
        assert!(model::Node::from_registration(no_capacity).is_err());
        let mut too_much = wire_node("n1");
        if let Some(s) = too_much.status.as_mut() {
            // More than MAX_CPU_OVERCOMMIT (64) times the 4 cores.
            s.allocatable = Some(v1::ResourceRequirement {
                cpu: 257,
                memory: 1,
                gpu: 0,
            });
        }
        assert!(model::Node::from_registration(too_much).is_err());
        let mut long_arch = wire_node("n1");
        if let Some(s) = long_arch.status.as_mut() {
            s.info = Some(v1::NodeInfo {
                arch: "x".repeat(65),
                os: String::new(),
            });
        }
        assert!(model::Node::from_registration(long_arch).is_err());
    }

    #[test]
    fn executor_states_map_to_the_protocol_actions() {
        use agent::ExecutorAction as A;
        use model::ExecutorState as S;
        let table = [
            (S::Void, A::Idle),
            (S::Idle, A::Idle),
            (S::Binding, A::Bind),
            (S::Bound, A::Run),
            (S::Unbinding, A::Unbind),
            (S::Releasing, A::Release),
        ];
        for (state, action) in table {
            assert_eq!(A::from(state), action, "{state:?}");
        }
    }
}

mod cache;
#[cfg(test)]
mod tests;
