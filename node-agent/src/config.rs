//! Node-agent configuration: flags over a YAML file over `FLAME_*` environment variables over
//! what the agent detects on its host.
//!
//! What: [`AgentConfig::load`] merges the three sources key by key (the first that sets a key
//! wins: flags, then the file, then the environment), fills the rest with detected or built-in
//! defaults, makes every path absolute and checks the result. The file is a flat mapping:
//!
//! ```yaml
//! endpoints: ["10.0.0.1:8080", "10.0.0.2:8080"]   # any control-plane members
//! node_name: worker-1                               # default: the host name
//! capacity: { cpu: 8, memory: 16g, gpu: 0 }        # default: detected
//! cpu_overcommit: 1                                 # cpu=1 instances per core (1 to 64)
//! work_dir: /var/lib/flame/agent                    # default: <tmp>/flame-agent-<node>
//! socket_dir: /run/flame                            # default: <work_dir>/sockets
//! flame_home: /usr/local/flame                      # default: <agent binary dir>/..
//! flame_endpoint: http://cp.example:8080            # default: the agent's member relay
//! cache_endpoint: grpc://cache.example:9090
//! ca_file: /etc/flame/ca.pem                       # FLAME_CA_FILE: trust for grpcs:// caches
//! instance_startup_timeout_ms: 60000
//! report_flush_ms: 0                              # 0: flush once queued events are handled
//! max_task_output_bytes: 4m
//! task_timeout: 10m                               # default: none (no task timeout)
//! ```
//!
//! Why one error type naming the key: an operator fixing a typo needs the key, the flag and
//! the variable that set it, in one line; [`ConfigError`] always names them.
//!
//! Caveats:
//! - `FLAME_ENDPOINT`, `FLAME_CACHE_ENDPOINT` and `FLAME_HOME` in the agent's environment set
//!   the values handed to instances, the same variables the instances receive.
//! - Socket paths must stay under about 100 bytes (`sun_path`): a socket directory longer than
//!   [`MAX_SOCKET_DIR_BYTES`] is refused, and when the default `<work_dir>/sockets` would be too
//!   long a short directory under the system temporary directory is used instead.
//! - `task_timeout` (`--task-timeout`, `FLAME_TASK_TIMEOUT`) is a duration text such as `30s`
//!   or `2m` (`none` or `0`: no timeout). It is only the default: an application's
//!   `flame.task-timeout` label wins over it (see [`crate::task_timeout`]).
//! - The node's object cache ([`AgentConfig::cache`], sent in every RegisterNode) is the one the
//!   agent runs itself ([`crate::cache`], which sets the field), or, with the flags
//!   `--cache-flight-endpoint` and `--cache-peer-addr` given together, a cache running beside
//!   the agent. With a cache and no `cache_endpoint`, instances get its Flight URL as
//!   `FLAME_CACHE_ENDPOINT`.

mod detect;
#[cfg(test)]
mod tests;

pub use detect::{cpu_count, gpu_count, hostname, mem_total, total_memory};

use flame_proto::model::{CacheEndpoint, ResourceRequirement, parse_memory};
use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default bound on an instance's start plus socket readiness.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default delay between the first queued outcome and the report that carries it: none, so a
/// report goes out as soon as the agent has handled every event already queued (outcomes that
/// finish together still share one report, and no timer adds latency to a lone task).
pub const DEFAULT_REPORT_FLUSH: Duration = Duration::ZERO;
/// Default largest task output the agent reports as a success (spec "Bad input").
pub const DEFAULT_MAX_TASK_OUTPUT_BYTES: usize = 4 << 20;
/// Longest accepted socket directory: a 36-character executor id plus `/` and `.sock` must
/// keep the socket path within 100 bytes.
pub const MAX_SOCKET_DIR_BYTES: usize = 100 - (1 + 36 + 5);

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
    /// The file is not valid YAML, or a key is unknown or has the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value is well-typed but unacceptable.
    #[error("config key {key}: {message}")]
    Invalid {
        /// The key with the flag and variable that set it, such as
        /// `` `socket_dir` (--socket-dir, FLAME_SOCKET_DIR) ``.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// An environment variable could not be parsed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// The resolved configuration of one node agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Control-plane client-API URLs (`http://host:port`); any member will do.
    pub endpoints: Vec<String>,
    /// The node's name, unique in the cluster.
    pub node_name: String,
    /// Identifies this host to the leader, which refuses a second host claiming a live node.
    pub agent_id: String,
    /// What the node offers (cpu cores, memory bytes, gpu count).
    pub capacity: ResourceRequirement,
    /// How many times its cores the node offers to executors (`cpu_overcommit`, 1 to 64;
    /// default 1, the strict rule). Cheap instances that mostly wait (agents, tool calls)
    /// fit several to a core; the node's allocatable cpu is `capacity.cpu` times this.
    pub cpu_overcommit: u32,
    /// Scratch directories and (by default) instance logs live here.
    pub work_dir: PathBuf,
    /// Where instance sockets are created.
    pub socket_dir: PathBuf,
    /// Where instance stdout and stderr go; `<work_dir>/logs` when `None`.
    pub log_dir: Option<PathBuf>,
    /// `FLAME_HOME` given to instances and used to expand their commands.
    pub flame_home: PathBuf,
    /// `FLAME_ENDPOINT` given to instances: the cluster's Frontend URL. `None` (the default):
    /// the agent's member relay ([`crate::relay`]), which reaches any live member of
    /// `endpoints`, so nested clients survive the loss of one member.
    pub flame_endpoint: Option<String>,
    /// `FLAME_CACHE_ENDPOINT` given to instances, when a cache exists.
    pub cache_endpoint: Option<String>,
    /// The CA that verifies TLS endpoints (`grpcs://` package downloads), given to instances as
    /// `FLAME_CA_FILE`; `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The node's object cache, sent to the leader in every RegisterNode; `None` when the node
    /// runs none (a registration without it clears a cache registered before).
    pub cache: Option<CacheEndpoint>,
    /// Bound on an instance's start plus socket readiness.
    pub startup_timeout: Duration,
    /// Wait between SIGTERM and SIGKILL when an instance is stopped.
    pub stop_grace: Duration,
    /// Bound on `OnSessionLeave`.
    pub leave_timeout: Duration,
    /// Delay between the first queued outcome and the report carrying it (0: flush as soon
    /// as the agent has nothing else to do).
    pub report_flush_interval: Duration,
    /// Largest task output reported as a success; larger output fails the task.
    pub max_task_output_bytes: usize,
    /// Default bound on one task's `OnTaskInvoke` for applications without a
    /// `flame.task-timeout` label; `None`: no timeout.
    pub task_timeout: Option<Duration>,
}

/// One source's settings; every key optional so sources can be layered.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    endpoints: Option<Vec<String>>,
    node_name: Option<String>,
    agent_id: Option<String>,
    #[serde(default)]
    capacity: CapacityLayer,
    cpu_overcommit: Option<u32>,
    work_dir: Option<PathBuf>,
    socket_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    flame_home: Option<PathBuf>,
    flame_endpoint: Option<String>,
    cache_endpoint: Option<String>,
    ca_file: Option<PathBuf>,
    instance_startup_timeout_ms: Option<u64>,
    instance_stop_grace_ms: Option<u64>,
    instance_leave_timeout_ms: Option<u64>,
    report_flush_ms: Option<u64>,
    max_task_output_bytes: Option<Size>,
    task_timeout: Option<String>,
}

/// Largest `cpu_overcommit` accepted (the control plane refuses more).
pub use flame_proto::model::MAX_CPU_OVERCOMMIT;

/// The `capacity` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacityLayer {
    cpu: Option<u64>,
    memory: Option<Size>,
    gpu: Option<i32>,
}

/// A byte size written as a number or with a binary suffix (`512`, `64m`, `16g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        /// Accepts an unsigned integer or a size text.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte count such as 4194304, 64m or 16g")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                parse_memory(v.trim()).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Layer {
    /// Keeps every key this layer sets and takes the rest from `lower`.
    fn or(self, lower: Layer) -> Layer {
        Layer {
            endpoints: self.endpoints.or(lower.endpoints),
            node_name: self.node_name.or(lower.node_name),
            agent_id: self.agent_id.or(lower.agent_id),
            capacity: CapacityLayer {
                cpu: self.capacity.cpu.or(lower.capacity.cpu),
                memory: self.capacity.memory.or(lower.capacity.memory),
                gpu: self.capacity.gpu.or(lower.capacity.gpu),
            },
            cpu_overcommit: self.cpu_overcommit.or(lower.cpu_overcommit),
            work_dir: self.work_dir.or(lower.work_dir),
            socket_dir: self.socket_dir.or(lower.socket_dir),
            log_dir: self.log_dir.or(lower.log_dir),
            flame_home: self.flame_home.or(lower.flame_home),
            flame_endpoint: self.flame_endpoint.or(lower.flame_endpoint),
            cache_endpoint: self.cache_endpoint.or(lower.cache_endpoint),
            ca_file: self.ca_file.or(lower.ca_file),
            instance_startup_timeout_ms: self
                .instance_startup_timeout_ms
                .or(lower.instance_startup_timeout_ms),
            instance_stop_grace_ms: self.instance_stop_grace_ms.or(lower.instance_stop_grace_ms),
            instance_leave_timeout_ms: self
                .instance_leave_timeout_ms
                .or(lower.instance_leave_timeout_ms),
            report_flush_ms: self.report_flush_ms.or(lower.report_flush_ms),
            max_task_output_bytes: self.max_task_output_bytes.or(lower.max_task_output_bytes),
            task_timeout: self.task_timeout.or(lower.task_timeout),
        }
    }
}

/// Every key with the flag and the environment variable that set it.
const KEYS: &[(&str, &str, &str)] = &[
    ("endpoints", "--endpoint", "FLAME_AGENT_ENDPOINTS"),
    ("node_name", "--node-name", "FLAME_NODE_NAME"),
    ("agent_id", "--agent-id", "FLAME_AGENT_ID"),
    ("capacity.cpu", "--cpu", "FLAME_NODE_CPU"),
    ("capacity.memory", "--memory", "FLAME_NODE_MEMORY"),
    ("capacity.gpu", "--gpu", "FLAME_NODE_GPU"),
    (
        "cpu_overcommit",
        "--cpu-overcommit",
        "FLAME_NODE_CPU_OVERCOMMIT",
    ),
    ("work_dir", "--work-dir", "FLAME_WORK_DIR"),
    ("socket_dir", "--socket-dir", "FLAME_SOCKET_DIR"),
    ("log_dir", "--log-dir", "FLAME_LOG_DIR"),
    ("flame_home", "--flame-home", "FLAME_HOME"),
    ("flame_endpoint", "--flame-endpoint", "FLAME_ENDPOINT"),
    ("cache_endpoint", "--cache-endpoint", "FLAME_CACHE_ENDPOINT"),
    ("ca_file", "--ca-file", "FLAME_CA_FILE"),
    (
        "instance_startup_timeout_ms",
        "--instance-startup-timeout-ms",
        "FLAME_INSTANCE_STARTUP_TIMEOUT_MS",
    ),
    (
        "instance_stop_grace_ms",
        "--instance-stop-grace-ms",
        "FLAME_INSTANCE_STOP_GRACE_MS",
    ),
    (
        "instance_leave_timeout_ms",
        "--instance-leave-timeout-ms",
        "FLAME_INSTANCE_LEAVE_TIMEOUT_MS",
    ),
    (
        "report_flush_ms",
        "--report-flush-ms",
        "FLAME_REPORT_FLUSH_MS",
    ),
    (
        "max_task_output_bytes",
        "--max-task-output-bytes",
        "FLAME_MAX_TASK_OUTPUT_BYTES",
    ),
    ("task_timeout", "--task-timeout", "FLAME_TASK_TIMEOUT"),
];

/// The error for a bad value of `key`, naming its flag and variable.
fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    let key = match KEYS.iter().find(|(k, _, _)| *k == key) {
        Some((k, flag, var)) => format!("`{k}` ({flag}, {var})"),
        None => format!("`{key}`"),
    };
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Command-line overrides; every one is optional and wins over the file and the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Control-plane client-API address (any member); repeat or comma-separate for several.
    #[arg(long = "endpoint", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Host identity sent at registration (default: /etc/machine-id, else the host name).
    #[arg(long)]
    pub agent_id: Option<String>,
    /// CPU cores offered (default: detected).
    #[arg(long)]
    pub cpu: Option<u64>,
    /// Memory offered, such as 16g (default: detected).
    #[arg(long)]
    pub memory: Option<String>,
    /// GPUs offered (default: the devices in CUDA_VISIBLE_DEVICES).
    #[arg(long)]
    pub gpu: Option<i32>,
    /// cpu=1 instances per core the node offers, 1 to 64 (default 1).
    #[arg(long)]
    pub cpu_overcommit: Option<u32>,
    /// Work directory for scratch directories and logs.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Directory for instance sockets (default: sockets/ in the work directory).
    #[arg(long)]
    pub socket_dir: Option<PathBuf>,
    /// Directory for instance logs (default: logs/ in the work directory).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// FLAME_HOME for instances (default: the agent binary's directory's parent).
    #[arg(long)]
    pub flame_home: Option<PathBuf>,
    /// FLAME_ENDPOINT for instances (default: the first endpoint).
    #[arg(long)]
    pub flame_endpoint: Option<String>,
    /// FLAME_CACHE_ENDPOINT for instances (default: --cache-flight-endpoint, if given).
    #[arg(long)]
    pub cache_endpoint: Option<String>,
    /// CA file verifying grpcs:// caches, given to instances as FLAME_CA_FILE (default: the
    /// system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Flight URL of an object cache running beside the agent, such as grpc://10.0.0.5:9090,
    /// registered as the node's cache; needs --cache-peer-addr.
    #[arg(long)]
    pub cache_flight_endpoint: Option<String>,
    /// host:port of that cache's QUIC peer endpoint; needs --cache-flight-endpoint.
    #[arg(long)]
    pub cache_peer_addr: Option<String>,
    /// Bound on instance start plus socket readiness, in milliseconds.
    #[arg(long)]
    pub instance_startup_timeout_ms: Option<u64>,
    /// Wait between SIGTERM and SIGKILL at instance stop, in milliseconds.
    #[arg(long)]
    pub instance_stop_grace_ms: Option<u64>,
    /// Bound on OnSessionLeave, in milliseconds.
    #[arg(long)]
    pub instance_leave_timeout_ms: Option<u64>,
    /// Delay before queued outcomes are reported, in milliseconds.
    #[arg(long)]
    pub report_flush_ms: Option<u64>,
    /// Largest task output reported as a success, such as 4m.
    #[arg(long)]
    pub max_task_output_bytes: Option<String>,
    /// Default task timeout, such as 30s or 2m, for applications without a
    /// flame.task-timeout label (default: none).
    #[arg(long)]
    pub task_timeout: Option<String>,
}

impl Overrides {
    /// The sidecar cache the two cache flags describe: both or neither must be given, and the
    /// addresses must pass [`CacheEndpoint::validate`].
    fn cache(&self) -> Result<Option<CacheEndpoint>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "`cache` (--cache-flight-endpoint, --cache-peer-addr)".into(),
            message,
        };
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let cache = match (
            given(&self.cache_flight_endpoint),
            given(&self.cache_peer_addr),
        ) {
            (None, None) => return Ok(None),
            (Some(flight), Some(peer)) => CacheEndpoint {
                flight_endpoint: flight.to_owned(),
                peer_addr: peer.to_owned(),
            },
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "--cache-flight-endpoint and --cache-peer-addr must be given together \
                     (a cache beside the agent needs both addresses)"
                        .into(),
                ));
            }
        };
        cache.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(Some(cache))
    }

    /// The flags as a layer; sizes are parsed here so their errors name the flag.
    fn layer(&self) -> Result<Layer, ConfigError> {
        let size = |key: &str, text: &Option<String>| -> Result<Option<Size>, ConfigError> {
            text.as_deref()
                .map(|t| {
                    parse_memory(t.trim())
                        .map(Size)
                        .map_err(|e| invalid(key, e.to_string()))
                })
                .transpose()
        };
        Ok(Layer {
            endpoints: (!self.endpoints.is_empty()).then(|| self.endpoints.clone()),
            node_name: self.node_name.clone(),
            agent_id: self.agent_id.clone(),
            capacity: CapacityLayer {
                cpu: self.cpu,
                memory: size("capacity.memory", &self.memory)?,
                gpu: self.gpu,
            },
            cpu_overcommit: self.cpu_overcommit,
            work_dir: self.work_dir.clone(),
            socket_dir: self.socket_dir.clone(),
            log_dir: self.log_dir.clone(),
            flame_home: self.flame_home.clone(),
            flame_endpoint: self.flame_endpoint.clone(),
            cache_endpoint: self.cache_endpoint.clone(),
            ca_file: self.ca_file.clone(),
            instance_startup_timeout_ms: self.instance_startup_timeout_ms,
            instance_stop_grace_ms: self.instance_stop_grace_ms,
            instance_leave_timeout_ms: self.instance_leave_timeout_ms,
            report_flush_ms: self.report_flush_ms,
            max_task_output_bytes: size("max_task_output_bytes", &self.max_task_output_bytes)?,
            task_timeout: self.task_timeout.clone(),
        })
    }
}

/// Reads the layer the `FLAME_*` variables describe; `env` looks a variable up.
fn env_layer(env: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    let get = |var: &str| env(var).filter(|v| !v.trim().is_empty());
    let parse = |var: &str| -> Result<Option<u64>, ConfigError> {
        get(var)
            .map(|v| {
                v.trim().parse().map_err(|_| ConfigError::Env {
                    var: var.into(),
                    message: format!("expected a whole number, got {v:?}"),
                })
            })
            .transpose()
    };
    let size = |var: &str| -> Result<Option<Size>, ConfigError> {
        get(var)
            .map(|v| {
                parse_memory(v.trim())
                    .map(Size)
                    .map_err(|e| ConfigError::Env {
                        var: var.into(),
                        message: e.to_string(),
                    })
            })
            .transpose()
    };
    let gpu = parse("FLAME_NODE_GPU")?
        .map(|g| {
            i32::try_from(g).map_err(|_| ConfigError::Env {
                var: "FLAME_NODE_GPU".into(),
                message: format!("{g} is too large"),
            })
        })
        .transpose()?;
    Ok(Layer {
        endpoints: get("FLAME_AGENT_ENDPOINTS")
            .map(|v| v.split(',').map(|e| e.trim().to_owned()).collect()),
        node_name: get("FLAME_NODE_NAME"),
        agent_id: get("FLAME_AGENT_ID"),
        capacity: CapacityLayer {
            cpu: parse("FLAME_NODE_CPU")?,
            memory: size("FLAME_NODE_MEMORY")?,
            gpu,
        },
        cpu_overcommit: parse("FLAME_NODE_CPU_OVERCOMMIT")?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        work_dir: get("FLAME_WORK_DIR").map(PathBuf::from),
        socket_dir: get("FLAME_SOCKET_DIR").map(PathBuf::from),
        log_dir: get("FLAME_LOG_DIR").map(PathBuf::from),
        flame_home: get("FLAME_HOME").map(PathBuf::from),
        flame_endpoint: get("FLAME_ENDPOINT"),
        cache_endpoint: get("FLAME_CACHE_ENDPOINT"),
        ca_file: get("FLAME_CA_FILE").map(PathBuf::from),
        instance_startup_timeout_ms: parse("FLAME_INSTANCE_STARTUP_TIMEOUT_MS")?,
        instance_stop_grace_ms: parse("FLAME_INSTANCE_STOP_GRACE_MS")?,
        instance_leave_timeout_ms: parse("FLAME_INSTANCE_LEAVE_TIMEOUT_MS")?,
        report_flush_ms: parse("FLAME_REPORT_FLUSH_MS")?,
        max_task_output_bytes: size("FLAME_MAX_TASK_OUTPUT_BYTES")?,
        task_timeout: get("FLAME_TASK_TIMEOUT"),
    })
}

/// Reads the YAML file at `path` as a layer.
fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(Layer::default());
    }
    let parse_error = |message: String| ConfigError::Parse {
        path: path.into(),
        message,
    };
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        match key.as_str() {
            "." | "" => parse_error(inner),
            _ => {
                // serde_yaml already prefixes nested errors with the path; say it once.
                let detail = inner.strip_prefix(&format!("{key}: ")).unwrap_or(&inner);
                parse_error(format!("key `{key}`: {detail}"))
            }
        }
    })
}

impl AgentConfig {
    /// Loads the configuration: `overrides`, then the file at `path` (if any), then the
    /// `FLAME_*` variables `env` gives, then detected and built-in defaults; and checks it.
    /// `env` also supplies `CUDA_VISIBLE_DEVICES` for the GPU count.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<AgentConfig, ConfigError> {
        let mut layer = overrides.layer()?;
        if let Some(path) = path {
            layer = layer.or(file_layer(path)?);
        }
        let layer = layer.or(env_layer(&env)?);
        let mut config = resolve(layer, &env)?;
        if let Some(cache) = overrides.cache()? {
            config
                .cache_endpoint
                .get_or_insert_with(|| cache.flight_endpoint.clone());
            config.cache = Some(cache);
        }
        Ok(config)
    }
}

/// Turns the merged layer into a checked configuration.
fn resolve(layer: Layer, env: &dyn Fn(&str) -> Option<String>) -> Result<AgentConfig, ConfigError> {
    let endpoints = resolve_endpoints(layer.endpoints.as_deref().unwrap_or_default())?;
    let node_name = match &layer.node_name {
        Some(name) => name.trim().to_owned(),
        None => detect::hostname().unwrap_or_default(),
    };
    if node_name.is_empty() {
        return Err(invalid(
            "node_name",
            "must not be empty (the host name is unknown)",
        ));
    }
    let capacity = resolve_capacity(&layer.capacity, env)?;
    let cpu_overcommit = layer.cpu_overcommit.unwrap_or(1);
    if !(1..=MAX_CPU_OVERCOMMIT).contains(&cpu_overcommit) {
        return Err(invalid(
            "cpu_overcommit",
            "must be 1 to 64 (1 offers each core to one cpu=1 instance)",
        ));
    }
    let dirs = resolve_dirs(&layer, &node_name)?;
    let agent_id = layer
        .agent_id
        .or_else(detect::host_id)
        .unwrap_or_else(|| node_name.clone());
    let flame_endpoint = match layer.flame_endpoint.filter(|u| !u.trim().is_empty()) {
        Some(url) => Some(normalize_endpoint(&url).map_err(|m| invalid("flame_endpoint", m))?),
        None => None,
    };
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let startup_timeout = ms(layer.instance_startup_timeout_ms, DEFAULT_STARTUP_TIMEOUT);
    if startup_timeout.is_zero() {
        return Err(invalid("instance_startup_timeout_ms", "must be positive"));
    }
    let report_flush_interval = ms(layer.report_flush_ms, DEFAULT_REPORT_FLUSH);
    if report_flush_interval > Duration::from_secs(1) {
        return Err(invalid("report_flush_ms", "must be at most 1000"));
    }
    let max_task_output_bytes = match layer.max_task_output_bytes {
        None => DEFAULT_MAX_TASK_OUTPUT_BYTES,
        Some(Size(0)) => return Err(invalid("max_task_output_bytes", "must be positive")),
        Some(Size(n)) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let task_timeout = match &layer.task_timeout {
        Some(text) => crate::task_timeout::parse(text).map_err(|m| invalid("task_timeout", m))?,
        None => None,
    };
    Ok(AgentConfig {
        endpoints,
        node_name,
        agent_id,
        capacity,
        cpu_overcommit,
        work_dir: dirs.work,
        socket_dir: dirs.sockets,
        log_dir: dirs.logs,
        flame_home: dirs.home,
        flame_endpoint,
        cache_endpoint: layer.cache_endpoint.filter(|c| !c.trim().is_empty()),
        ca_file: layer.ca_file.filter(|p| !p.as_os_str().is_empty()),
        cache: None,
        startup_timeout,
        stop_grace: ms(
            layer.instance_stop_grace_ms,
            crate::instance::DEFAULT_STOP_GRACE,
        ),
        leave_timeout: ms(
            layer.instance_leave_timeout_ms,
            crate::instance::DEFAULT_LEAVE_TIMEOUT,
        ),
        report_flush_interval,
        max_task_output_bytes,
        task_timeout,
    })
}

/// Normalizes and checks the control-plane endpoints; at least one is required.
fn resolve_endpoints(raw: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut endpoints = Vec::new();
    for text in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let url = normalize_endpoint(text).map_err(|m| invalid("endpoints", m))?;
        if !endpoints.contains(&url) {
            endpoints.push(url);
        }
    }
    if endpoints.is_empty() {
        return Err(invalid(
            "endpoints",
            "at least one control-plane address is required, such as 127.0.0.1:8080",
        ));
    }
    Ok(endpoints)
}

/// Turns `host:port` into `http://host:port` and checks that the result is an http(s) URL
/// (`flame_proto::endpoint::normalize`, the rule every client shares).
pub fn normalize_endpoint(text: &str) -> Result<String, String> {
    flame_proto::endpoint::normalize(text)
}

/// The capacity: configured values, else detected ones.
fn resolve_capacity(
    layer: &CapacityLayer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResourceRequirement, ConfigError> {
    let cpu = layer.cpu.unwrap_or_else(detect::cpu_count);
    if cpu == 0 {
        return Err(invalid("capacity.cpu", "must be at least 1"));
    }
    let memory = match layer.memory {
        Some(Size(m)) => m,
        None => detect::total_memory().ok_or_else(|| {
            invalid(
                "capacity.memory",
                "cannot be detected (no /proc/meminfo); set it",
            )
        })?,
    };
    let gpu = match layer.gpu {
        Some(g) if g < 0 => return Err(invalid("capacity.gpu", "must not be negative")),
        Some(g) => g,
        None => detect::gpu_count(env("CUDA_VISIBLE_DEVICES").as_deref()),
    };
    Ok(ResourceRequirement { cpu, memory, gpu })
}

/// The resolved directories.
struct Dirs {
    /// The work directory.
    work: PathBuf,
    /// The socket directory.
    sockets: PathBuf,
    /// The log directory, when configured.
    logs: Option<PathBuf>,
    /// `FLAME_HOME`.
    home: PathBuf,
}

/// Resolves the directories to absolute paths, with their defaults.
fn resolve_dirs(layer: &Layer, node_name: &str) -> Result<Dirs, ConfigError> {
    let absolute = |key: &str, path: &Path| {
        std::path::absolute(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))
    };
    let work = match &layer.work_dir {
        Some(dir) => absolute("work_dir", dir)?,
        None => std::env::temp_dir().join(format!("flame-agent-{}", file_safe(node_name))),
    };
    let sockets = match &layer.socket_dir {
        Some(dir) => absolute("socket_dir", dir)?,
        None => default_socket_dir(&work),
    };
    let len = sockets.as_os_str().len();
    if len > MAX_SOCKET_DIR_BYTES {
        return Err(invalid(
            "socket_dir",
            format!(
                "{} is {len} bytes; socket paths under it would exceed the ~100-byte limit of \
                 Unix sockets, so use a directory of at most {MAX_SOCKET_DIR_BYTES} bytes",
                sockets.display()
            ),
        ));
    }
    let logs = match &layer.log_dir {
        Some(dir) => Some(absolute("log_dir", dir)?),
        None => None,
    };
    let home = match &layer.flame_home {
        Some(dir) => absolute("flame_home", dir)?,
        None => detect::flame_home_from_exe()
            .ok_or_else(|| invalid("flame_home", "cannot be derived from the agent's path"))?,
    };
    Ok(Dirs {
        work,
        sockets,
        logs,
        home,
    })
}

/// `<work>/sockets`, or a short per-work-directory path under the temporary directory when
/// that would be too long for socket paths.
fn default_socket_dir(work: &Path) -> PathBuf {
    let preferred = work.join("sockets");
    if preferred.as_os_str().len() <= MAX_SOCKET_DIR_BYTES {
        return preferred;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    work.hash(&mut hasher);
    let name = format!("flame-{:016x}", hasher.finish());
    let under_tmp = std::env::temp_dir().join(&name);
    if under_tmp.as_os_str().len() <= MAX_SOCKET_DIR_BYTES {
        under_tmp
    } else {
        Path::new("/tmp").join(name)
    }
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
