//! Control-plane configuration: a YAML file, `FLAME_*` environment variables and flags.
//!
//! The file honours upstream's `flame-cluster.yaml` keys where they apply (`cluster.name`,
//! `cluster.endpoint`, `cluster.resreq`, `cluster.policies`, `cluster.schedule_interval`,
//! `cluster.limits`, `cluster.recovery`, `cluster.tls`, and the `cache` section) and adds
//! `cluster.dispatch`, `cluster.reclaim_grace_ms`, `cluster.rotation_wait_ms` and a `raft`
//! section for the replicated control plane. Precedence, lowest first: built-in defaults, `FLAME_*` variables, the file, flags.
//!
//! Every problem is one [`ConfigError`] that names the key (or the variable, or the flag) at
//! fault.
//!
//! Caveats: `cluster.storage` is accepted for compatibility and ignored (storage is always
//! redb under `raft.data_dir`); `cluster.tls` is parsed but TLS is not served yet.

use crate::state::queue::DispatchPolicy;
use flame_proto::model::ResourceRequirement;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// A configuration problem, naming what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or a key has the wrong type or name.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message, which names the key and the line.
        message: String,
    },
    /// A value is well-typed but unacceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The key, for example `raft.members`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// An environment variable could not be used.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration of a control-plane member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Upstream's `cluster` section.
    pub cluster: ClusterSection,
    /// The replicated control plane's own section.
    pub raft: RaftSection,
    /// Upstream's `cache` section; read by the cache and agents, kept here so one file serves all.
    pub cache: CacheSection,
}

/// Largest `cluster.reclaim_grace_ms` accepted.
pub const MAX_RECLAIM_GRACE_MS: u64 = 60_000;

/// Largest `cluster.rotation_wait_ms` accepted (one hour).
pub const MAX_ROTATION_WAIT_MS: u64 = 3_600_000;

/// Upstream's `cluster` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Cluster name; also the Raft cluster id unless `raft.cluster_id` is set.
    pub name: String,
    /// Frontend URL that clients and instances use (`FLAME_ENDPOINT` of instances).
    pub endpoint: String,
    /// Default session resource request, like `cpu=1,mem=2g`.
    pub resreq: Option<String>,
    /// Scheduler policies: `priority` and `drf`.
    pub policies: Vec<String>,
    /// Scheduler period in milliseconds.
    pub schedule_interval: u64,
    /// How long, in milliseconds, a bound executor must have been idle before the scheduler
    /// takes it for a session that waits for capacity, instead of keeping it warm for the
    /// application's `delay_release` (a Flame addition; at most 60000).
    pub reclaim_grace_ms: u64,
    /// Fair-share rotation (a Flame addition): how long, in milliseconds, a session with
    /// pending work must have waited for an executor before a session holding more than it
    /// gives one up at a task boundary; also the least time an executor serves its session
    /// before it may be rotated. 0 turns rotation off; at most 3600000.
    pub rotation_wait_ms: u64,
    /// Upstream's storage URL; accepted and ignored.
    pub storage: Option<String>,
    /// Limits.
    pub limits: LimitsSection,
    /// Recovery settings.
    pub recovery: RecoverySection,
    /// Executor task queues (a Flame addition).
    pub dispatch: DispatchSection,
    /// Server TLS files (parsed; not served yet).
    pub tls: Option<TlsSection>,
    /// Upstream's profiling port; accepted and ignored.
    pub pprof: Option<Value>,
    /// Upstream's executor settings; accepted and ignored by the control plane.
    pub executors: Option<Value>,
}

/// `cluster.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Closed sessions kept before the oldest are purged (default 10,000; `null`: unlimited).
    pub max_sessions: Option<usize>,
    /// Closed sessions older than this many seconds are purged (default a day; `null`: never).
    pub max_closed_session_age_secs: Option<u64>,
    /// Open sessions at most; another CreateSession is refused RESOURCE_EXHAUSTED.
    pub max_open_sessions: u32,
    /// Tasks one session holds at most; a CreateTask past it is refused RESOURCE_EXHAUSTED.
    pub max_tasks_per_session: u64,
    /// Executors per node.
    pub max_executors: u32,
    /// Largest task input, task output or common data, in bytes.
    pub max_payload_bytes: usize,
    /// Most WatchTask streams open at once on one member; more are refused with
    /// RESOURCE_EXHAUSTED (review D4).
    pub max_watches: usize,
}

/// `cluster.recovery`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySection {
    /// `cluster.recovery.session`.
    pub session: SessionRecovery,
    /// `cluster.recovery.task`.
    pub task: TaskRecovery,
}

/// `cluster.recovery.session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionRecovery {
    /// Bind failures allowed before a session is paused.
    pub retry_limits: u32,
}

/// `cluster.recovery.task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskRecovery {
    /// Requeues allowed before a task fails.
    pub retry_limits: u32,
}

/// `cluster.dispatch`: how many tasks an executor may hold queued (see
/// `state::queue`). Tasks slower than `window_ms` always go one per executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSection {
    /// Work, in milliseconds at the session's mean task duration, an executor may hold.
    pub window_ms: u64,
    /// Most tasks an executor may hold (1 is upstream's one task per executor).
    pub max_depth: u32,
    /// Most task input bytes an executor may hold queued.
    pub max_queued_bytes: u64,
}

impl Default for DispatchSection {
    fn default() -> Self {
        let policy = DispatchPolicy::default();
        DispatchSection {
            window_ms: policy.window_us / 1000,
            max_depth: policy.max_depth,
            max_queued_bytes: policy.max_queued_bytes,
        }
    }
}

impl DispatchSection {
    /// The policy the leader puts in the commands that assign tasks.
    pub fn policy(&self) -> DispatchPolicy {
        DispatchPolicy {
            window_us: self.window_ms.saturating_mul(1000),
            max_depth: self.max_depth,
            max_queued_bytes: self.max_queued_bytes,
        }
    }
}

/// `cluster.tls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Server certificate.
    pub cert_file: Option<PathBuf>,
    /// Server key.
    pub key_file: Option<PathBuf>,
    /// CA that clients and agents trust.
    pub ca_file: Option<PathBuf>,
}

/// Upstream's `cache` section, kept loosely typed: the control plane only passes it on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheSection {
    /// Cache URL.
    pub endpoint: Option<String>,
    /// Everything else under `cache`.
    #[serde(flatten)]
    pub rest: Mapping,
}

/// The `raft` section: this member and its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// This member's id (non-zero, unique in the group).
    pub id: u64,
    /// Cluster id written into every data file; defaults to `cluster.name`.
    pub cluster_id: Option<String>,
    /// Client API (Frontend, Cluster, Tasks) listen address.
    pub api_addr: String,
    /// Raft peer listen address.
    pub raft_addr: String,
    /// The members that form the group at first start.
    pub members: Vec<MemberConfig>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout, milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout, milliseconds.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept below a snapshot.
    pub keep_after_snapshot: u64,
    /// Prometheus `/metrics` listen address; none when absent.
    pub metrics_addr: Option<String>,
    /// A node whose agent is silent this long (milliseconds) is marked NotReady by the leader
    /// (upstream: 15 s stream timeout plus 30 s drain).
    pub node_timeout_ms: u64,
    /// Heartbeat interval node agents are told to use (`RegisterNode`'s answer), milliseconds;
    /// the leader records at most one heartbeat per node per interval.
    pub agent_heartbeat_ms: u64,
    /// Largest message between members, bytes; also bounds one log entry (review R1), so it
    /// must hold a full CreateTasks batch: 4 × `cluster.limits.max_payload_bytes` + 1 MiB.
    pub max_message_bytes: usize,
}

/// One member of the initial group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Member id.
    pub id: u64,
    /// Its Raft peer address.
    pub raft_addr: String,
    /// Its client API address.
    pub api_addr: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            name: "flame".into(),
            endpoint: "http://127.0.0.1:8080".into(),
            resreq: None,
            policies: vec!["priority".into(), "drf".into()],
            schedule_interval: 100,
            reclaim_grace_ms: 50,
            rotation_wait_ms: 1_000,
            storage: None,
            limits: LimitsSection::default(),
            recovery: RecoverySection::default(),
            dispatch: DispatchSection::default(),
            tls: None,
            pprof: None,
            executors: None,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            // Every member holds every retained session in memory (review R3): keep closed
            // ones a day, and at most 10,000 of them, unless told otherwise.
            max_sessions: Some(10_000),
            max_closed_session_age_secs: Some(86_400),
            max_open_sessions: crate::state::DEFAULT_MAX_OPEN_SESSIONS,
            max_tasks_per_session: crate::state::DEFAULT_MAX_TASKS_PER_SESSION,
            max_executors: 128,
            max_payload_bytes: 4 << 20,
            max_watches: crate::member::limits::DEFAULT_MAX_WATCHES,
        }
    }
}

impl Default for SessionRecovery {
    fn default() -> Self {
        SessionRecovery { retry_limits: 5 }
    }
}

impl Default for TaskRecovery {
    fn default() -> Self {
        TaskRecovery { retry_limits: 3 }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        // Timings default to the transport's, the one place they are tuned.
        let timing = crate::raft::TransportConfig::default();
        RaftSection {
            id: 1,
            cluster_id: None,
            api_addr: "0.0.0.0:8080".into(),
            raft_addr: "0.0.0.0:8090".into(),
            members: Vec::new(),
            data_dir: PathBuf::from("./data"),
            heartbeat_ms: timing.heartbeat_ms,
            election_timeout_min_ms: timing.election_timeout_min_ms,
            election_timeout_max_ms: timing.election_timeout_max_ms,
            snapshot_every: 50_000,
            keep_after_snapshot: 10_000,
            metrics_addr: None,
            node_timeout_ms: 45_000,
            agent_heartbeat_ms: 2_000,
            max_message_bytes: timing.max_message_bytes,
        }
    }
}

/// `FLAME_*` variables and the keys they set (below the file and flags).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("FLAME_CLUSTER_NAME", "cluster.name"),
    ("FLAME_CLUSTER_ENDPOINT", "cluster.endpoint"),
    ("FLAME_CLUSTER_RESREQ", "cluster.resreq"),
    ("FLAME_RAFT_ID", "raft.id"),
    ("FLAME_RAFT_CLUSTER_ID", "raft.cluster_id"),
    ("FLAME_RAFT_API_ADDR", "raft.api_addr"),
    ("FLAME_RAFT_ADDR", "raft.raft_addr"),
    ("FLAME_RAFT_MEMBERS", "raft.members"),
    ("FLAME_DATA_DIR", "raft.data_dir"),
    ("FLAME_METRICS_ADDR", "raft.metrics_addr"),
];

/// Command-line overrides; every field is optional and wins over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// This member's id.
    #[arg(long)]
    pub id: Option<u64>,
    /// Client API listen address.
    #[arg(long)]
    pub api_addr: Option<String>,
    /// Raft peer listen address.
    #[arg(long)]
    pub raft_addr: Option<String>,
    /// Initial members as `ID=RAFT_ADDR/API_ADDR`, comma separated.
    #[arg(long)]
    pub members: Option<String>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cluster name (and default cluster id).
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Prometheus listen address.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Milliseconds of agent silence after which the leader marks a node NotReady
    /// (`raft.node_timeout_ms`).
    #[arg(long)]
    pub node_timeout_ms: Option<u64>,
}

impl Config {
    /// Loads the configuration: defaults, then `env` (a lookup of `FLAME_*` variables), then the
    /// file at `path` if given, then `overrides`; and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut tree = Value::Mapping(Mapping::new());
        for (var, key) in ENV_KEYS {
            if let Some(raw) = env(var) {
                let value = env_value(var, key, &raw)?;
                set_path(&mut tree, key, value);
            }
        }
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let file: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.into(),
                message: e.to_string(),
            })?;
            if !file.is_null() {
                merge(&mut tree, file);
            }
        }
        let origin = path.map_or_else(|| PathBuf::from("<environment>"), Path::to_path_buf);
        // Deserialising the merged tree loses serde_yaml's positions; track the key path instead.
        let mut config: Config =
            serde_path_to_error::deserialize(tree).map_err(|e| ConfigError::Parse {
                path: origin,
                message: format!("key `{}`: {}", e.path(), e.inner()),
            })?;
        config.apply(overrides)?;
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let raft = &mut self.raft;
        if let Some(id) = o.id {
            raft.id = id;
        }
        if let Some(a) = &o.api_addr {
            raft.api_addr = a.clone();
        }
        if let Some(a) = &o.raft_addr {
            raft.raft_addr = a.clone();
        }
        if let Some(m) = &o.members {
            raft.members = parse_members(m).map_err(|message| ConfigError::Invalid {
                key: "--members".into(),
                message,
            })?;
        }
        if let Some(d) = &o.data_dir {
            raft.data_dir = d.clone();
        }
        if let Some(n) = &o.cluster_name {
            self.cluster.name = n.clone();
        }
        if let Some(m) = &o.metrics_addr {
            raft.metrics_addr = Some(m.clone());
        }
        if let Some(t) = o.node_timeout_ms {
            raft.node_timeout_ms = t;
        }
        Ok(())
    }

    /// Checks values that are well-typed but wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        if self.cluster.name.trim().is_empty() {
            return invalid("cluster.name", "must not be empty".into());
        }
        if let Some(Err(e)) = self
            .cluster
            .resreq
            .as_deref()
            .map(ResourceRequirement::parse)
        {
            return invalid("cluster.resreq", e.to_string());
        }
        for p in &self.cluster.policies {
            if !matches!(p.as_str(), "priority" | "drf") {
                return invalid(
                    "cluster.policies",
                    format!("unknown policy {p:?}; known policies are priority and drf"),
                );
            }
        }
        if self.cluster.schedule_interval == 0 {
            return invalid("cluster.schedule_interval", "must be at least 1 ms".into());
        }
        if self.cluster.reclaim_grace_ms > MAX_RECLAIM_GRACE_MS {
            return invalid(
                "cluster.reclaim_grace_ms",
                format!(
                    "{} ms is not a grace; use at most {MAX_RECLAIM_GRACE_MS} ms (an \
                     application's delay_release keeps executors warm when nobody waits)",
                    self.cluster.reclaim_grace_ms
                ),
            );
        }
        if self.cluster.rotation_wait_ms > MAX_ROTATION_WAIT_MS {
            return invalid(
                "cluster.rotation_wait_ms",
                format!(
                    "{} ms is more than an hour; use at most {MAX_ROTATION_WAIT_MS} ms, or 0 to \
                     turn fair-share rotation off",
                    self.cluster.rotation_wait_ms
                ),
            );
        }
        if self.cluster.limits.max_payload_bytes < 4 << 20 {
            return invalid(
                "cluster.limits.max_payload_bytes",
                "must be at least 4 MiB (4194304), the size flamepy clients may send".into(),
            );
        }
        // An entry holding one full CreateTasks batch must fit a message between members, or it
        // would never replicate and every later write would stall behind it (review R1).
        let batch = crate::member::limits::decoding_limit(
            self.cluster
                .limits
                .max_payload_bytes
                .saturating_mul(crate::member::limits::BATCH_PAYLOAD_FACTOR),
        );
        let room = self
            .raft
            .max_message_bytes
            .saturating_sub(crate::member::proposer::ENTRY_ENVELOPE_BYTES);
        if batch > room {
            return invalid(
                "raft.max_message_bytes",
                format!(
                    "{} bytes cannot carry one full task batch: it must be at least {} (4 × \
                     cluster.limits.max_payload_bytes + 1 MiB, plus 16 KiB of envelope)",
                    self.raft.max_message_bytes,
                    batch + crate::member::proposer::ENTRY_ENVELOPE_BYTES
                ),
            );
        }
        if self.cluster.limits.max_open_sessions == 0 {
            return invalid(
                "cluster.limits.max_open_sessions",
                "must be at least 1".into(),
            );
        }
        if self.cluster.limits.max_tasks_per_session == 0 {
            return invalid(
                "cluster.limits.max_tasks_per_session",
                "must be at least 1".into(),
            );
        }
        if self.cluster.limits.max_watches == 0 {
            return invalid(
                "cluster.limits.max_watches",
                "must be at least 1 (flamepy watches every task it runs)".into(),
            );
        }
        if self.cluster.dispatch.max_depth == 0 {
            return invalid(
                "cluster.dispatch.max_depth",
                "must be at least 1 (1 runs one task per executor, as upstream)".into(),
            );
        }
        self.validate_raft()
    }

    fn validate_raft(&self) -> Result<(), ConfigError> {
        let r = &self.raft;
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        if r.id == 0 {
            return invalid("raft.id", "must be a non-zero member id".into());
        }
        if r.heartbeat_ms == 0 || r.heartbeat_ms >= r.election_timeout_min_ms {
            return invalid(
                "raft.heartbeat_ms",
                format!(
                    "must be above 0 and below raft.election_timeout_min_ms ({})",
                    r.election_timeout_min_ms
                ),
            );
        }
        if r.election_timeout_min_ms >= r.election_timeout_max_ms {
            return invalid(
                "raft.election_timeout_max_ms",
                "must be greater than raft.election_timeout_min_ms".into(),
            );
        }
        if r.agent_heartbeat_ms == 0 || r.agent_heartbeat_ms >= r.node_timeout_ms {
            return invalid(
                "raft.agent_heartbeat_ms",
                format!(
                    "must be above 0 and below raft.node_timeout_ms ({})",
                    r.node_timeout_ms
                ),
            );
        }
        if r.snapshot_every == 0 {
            return invalid("raft.snapshot_every", "must be at least 1 entry".into());
        }
        // Entries kept below a snapshot are the margin between what a snapshot covers and what
        // the log still holds; with none, any lapse in that ordering loses the gap for good.
        if r.keep_after_snapshot == 0 {
            return invalid(
                "raft.keep_after_snapshot",
                "must be at least 1 entry (the default keeps 10000)".into(),
            );
        }
        let mut ids: Vec<u64> = r.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return invalid("raft.members", "member ids must be unique".into());
        }
        if !r.members.is_empty() && !ids.contains(&r.id) {
            return invalid(
                "raft.members",
                format!("this member's id {} is not in the list", r.id),
            );
        }
        Ok(())
    }

    /// The Raft cluster id: `raft.cluster_id`, else `cluster.name`.
    pub fn cluster_id(&self) -> &str {
        self.raft
            .cluster_id
            .as_deref()
            .unwrap_or(&self.cluster.name)
    }

    /// The default session resource request (`cluster.resreq`, else 1 CPU and 1 GiB).
    pub fn default_resreq(&self) -> ResourceRequirement {
        self.cluster
            .resreq
            .as_deref()
            .and_then(|r| ResourceRequirement::parse(r).ok())
            .unwrap_or_default()
    }
}

/// Parses `ID=RAFT_ADDR/API_ADDR[,…]`.
pub fn parse_members(text: &str) -> Result<Vec<MemberConfig>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let item = item.trim();
            let (id, addrs) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not ID=RAFT_ADDR/API_ADDR"))?;
            let (raft_addr, api_addr) = addrs
                .split_once('/')
                .ok_or_else(|| format!("{item:?} is not ID=RAFT_ADDR/API_ADDR"))?;
            let id = id
                .trim()
                .parse()
                .map_err(|_| format!("{id:?} in {item:?} is not a member id"))?;
            Ok(MemberConfig {
                id,
                raft_addr: raft_addr.trim().into(),
                api_addr: api_addr.trim().into(),
            })
        })
        .collect()
}

fn env_value(var: &str, key: &str, raw: &str) -> Result<Value, ConfigError> {
    if key == "raft.members" {
        let members = parse_members(raw).map_err(|message| ConfigError::Env {
            var: var.into(),
            message,
        })?;
        return serde_yaml_ng::to_value(members).map_err(|e| ConfigError::Env {
            var: var.into(),
            message: e.to_string(),
        });
    }
    // Numbers become numbers, everything else stays a string.
    Ok(match raw.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(raw),
    })
}

fn set_path(tree: &mut Value, dotted: &str, value: Value) {
    let mut node = tree;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Mapping(map) = node else { return };
        let key = Value::from(*part);
        if i + 1 == parts.len() {
            map.insert(key, value);
            return;
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
}

/// Deep-merges `top` over `base`: mappings merge key by key, anything else replaces.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Mapping(b), Value::Mapping(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

#[cfg(test)]
mod tests;
