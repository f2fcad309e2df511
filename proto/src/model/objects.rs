//! Applications, executors and nodes (spec sections 3.4, 3.5, 5.1 and 5.5), and what the
//! object cache needs of them: a node's [`CacheEndpoint`] and the [`ObjectDrop`] log.
//!
//! Caveats: `max_instances` and `delay_release_secs` are stored resolved, because every
//! response must carry them; every other optional field of [`ApplicationSpec`] stays an
//! `Option`, so "absent" round-trips (a test asserts that an application registered without
//! `url` reads back without it). `${...}` references in commands and arguments are stored
//! unexpanded; the node agent expands them at launch.

use super::{
    ApplicationState, ExecutorId, ExecutorState, NodeName, NodeState, ResourceRequirement,
    SessionId, Shim,
};
use crate::error::FlameError;
use serde::{Deserialize, Serialize};

/// `max_instances` stored when RegisterApplication omits it.
pub const DEFAULT_MAX_INSTANCES: u32 = 1_000_000;

/// `delay_release` stored when RegisterApplication omits it, in seconds.
pub const DEFAULT_DELAY_RELEASE_SECS: i64 = 60;

/// Longest `delay_release` a member accepts in a new or updated application: 365 days. Longer
/// (or negative) values are refused with `InvalidArgument`; a waiting session reclaims an idle
/// executor whatever its `delay_release`, so this bounds only how long an unwanted executor
/// may stay warm.
pub const MAX_DELAY_RELEASE_SECS: i64 = 365 * 24 * 3600;

/// One environment variable set when an instance is launched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Environment {
    /// Variable name.
    pub name: String,
    /// Value, stored unexpanded.
    pub value: String,
}

/// JSON Schema documents describing an application's payloads, each serialised as a string.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplicationSchema {
    /// Schema of task input.
    pub input: Option<String>,
    /// Schema of task output.
    pub output: Option<String>,
    /// Schema of session common data.
    pub common_data: Option<String>,
}

/// How to run an application, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationSpec {
    /// How instances run.
    pub shim: Shim,
    /// Free text.
    pub description: Option<String>,
    /// Free-form labels, in the order sent.
    pub labels: Vec<String>,
    /// Container or module image, if any.
    pub image: Option<String>,
    /// Command that starts an instance, stored unexpanded.
    pub command: Option<String>,
    /// Arguments of `command`, in order, stored unexpanded.
    pub arguments: Vec<String>,
    /// Environment of the instance, in the order sent.
    pub environments: Vec<Environment>,
    /// Absolute working directory of the instance; validated on registration.
    pub working_directory: Option<String>,
    /// Most executors one session of this application may hold.
    pub max_instances: u32,
    /// How long an idle executor waits for more work before unbinding, in seconds.
    pub delay_release_secs: i64,
    /// Payload schemas, when the client sent any.
    pub schema: Option<ApplicationSchema>,
    /// Package URL the node agent installs from.
    pub url: Option<String>,
    /// Installer for the package (for example `python`).
    pub installer: Option<String>,
}

impl Default for ApplicationSpec {
    /// A Host application with nothing set and the stored defaults
    /// ([`DEFAULT_MAX_INSTANCES`], [`DEFAULT_DELAY_RELEASE_SECS`]).
    fn default() -> Self {
        ApplicationSpec {
            shim: Shim::Host,
            description: None,
            labels: Vec::new(),
            image: None,
            command: None,
            arguments: Vec::new(),
            environments: Vec::new(),
            working_directory: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            delay_release_secs: DEFAULT_DELAY_RELEASE_SECS,
            schema: None,
            url: None,
            installer: None,
        }
    }
}

impl ApplicationSpec {
    /// The request checks of RegisterApplication and UpdateApplication (spec section 5.1):
    /// a non-empty `working_directory` must be absolute, and each present schema string must be
    /// a JSON Schema document. Errors are `InvalidArgument` with the specification's texts
    /// (`working_directory must be an absolute path, got: <wd>`, `invalid input schema: ...`,
    /// `invalid output schema: ...`, `invalid common data schema: ...`).
    ///
    /// Caveat: a schema is checked for being JSON whose top level is an object or a boolean,
    /// the two forms a JSON Schema can take; it is not validated against the JSON Schema
    /// meta-schema, so a misspelt keyword passes. An empty string is not JSON and is refused.
    pub fn validate(&self) -> Result<(), FlameError> {
        if let Some(wd) = &self.working_directory
            && !wd.is_empty()
            && !wd.starts_with('/')
        {
            return Err(FlameError::InvalidArgument(format!(
                "working_directory must be an absolute path, got: {wd}"
            )));
        }
        if let Some(schema) = &self.schema {
            check_schema("input", schema.input.as_deref())?;
            check_schema("output", schema.output.as_deref())?;
            check_schema("common data", schema.common_data.as_deref())?;
        }
        Ok(())
    }
}

/// Checks that `text`, when present, is JSON whose top level is an object or a boolean.
fn check_schema(label: &str, text: Option<&str>) -> Result<(), FlameError> {
    let Some(text) = text else {
        return Ok(());
    };
    let invalid =
        |why: String| FlameError::InvalidArgument(format!("invalid {label} schema: {why}"));
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) => Err(invalid(format!("not JSON: {e}"))),
        Ok(serde_json::Value::Object(_) | serde_json::Value::Bool(_)) => Ok(()),
        Ok(_) => Err(invalid(
            "a JSON Schema must be an object or a boolean".to_owned(),
        )),
    }
}

/// A registered application. Its name is its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Unique name (validated by `validate_application_name`).
    pub name: String,
    /// How to run it.
    pub spec: ApplicationSpec,
    /// Always Enabled in practice.
    pub state: ApplicationState,
    /// When it was registered, in Unix milliseconds.
    pub creation_time_ms: i64,
}

/// What an executor is: where it lives and how big it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorSpec {
    /// Name of the node that hosts it.
    pub node: NodeName,
    /// Resources it holds, equal to its session's request when created.
    pub resreq: ResourceRequirement,
    /// Shim it runs.
    pub shim: Shim,
}

/// A resource slot the scheduler created on a node; bound to at most one session at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    /// UUIDv4 generated by the control plane.
    pub id: ExecutorId,
    /// Placement and size.
    pub spec: ExecutorSpec,
    /// Lifecycle state.
    pub state: ExecutorState,
    /// The session it is bound to, if any.
    pub session_id: Option<SessionId>,
}

/// One network address of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddress {
    /// Address kind, for example `InternalIP` or `Hostname` (the wire field is `type`).
    pub kind: String,
    /// The address itself.
    pub address: String,
}

/// A machine running a node agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name: the host's nodename.
    pub name: NodeName,
    /// The host name as the agent reported it. The wire's `spec.hostname` always carries
    /// `name` (spec section 4.4), so this field is informational.
    pub hostname: String,
    /// Readiness for new executors.
    pub state: NodeState,
    /// Total resources of the node.
    pub capacity: ResourceRequirement,
    /// Resources executors may use.
    pub allocatable: ResourceRequirement,
    /// CPU architecture, for example `x86_64`.
    pub arch: String,
    /// Operating system, for example `linux`.
    pub os: String,
    /// Known addresses, in the order reported.
    pub addresses: Vec<NodeAddress>,
    /// Last heartbeat, in Unix milliseconds; 0 if none yet.
    pub last_heartbeat_ms: i64,
    /// The node's object cache, as its agent last registered it; `None` when it runs none.
    pub cache: Option<CacheEndpoint>,
}

/// The TLS server name every cache peer certificate carries (a DNS SAN), so peers verify each
/// other by this one name whatever address they dialled.
pub const CACHE_PEER_SERVER_NAME: &str = "flame-cache";

/// Longest accepted cache address (`flight_endpoint` or `peer_addr`), in bytes.
pub const MAX_CACHE_ADDR_LEN: usize = 512;

/// Where a node's object cache listens, as the cache advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheEndpoint {
    /// Arrow Flight URL clients and instances use, such as `grpc://10.0.0.5:9090`.
    pub flight_endpoint: String,
    /// `host:port` of the cache's QUIC peer endpoint (UDP), such as `10.0.0.5:9091`.
    pub peer_addr: String,
}

impl CacheEndpoint {
    /// Checks both addresses: `flight_endpoint` must be a `grpc://` or `grpcs://` URL with a
    /// host and a non-zero port (and no path beyond `/`), `peer_addr` a `host:port` with a
    /// non-zero port (an IPv6 host in brackets). Each is at most [`MAX_CACHE_ADDR_LEN`] bytes.
    /// The error is `InvalidArgument` naming the field.
    pub fn validate(&self) -> Result<(), FlameError> {
        let invalid = |field: &str, value: &str, why: &str| {
            FlameError::InvalidArgument(format!("cache.{field} {value:?} is invalid: {why}"))
        };
        check_flight_endpoint(&self.flight_endpoint)
            .map_err(|why| invalid("flight_endpoint", &self.flight_endpoint, &why))?;
        check_peer_addr(&self.peer_addr).map_err(|why| invalid("peer_addr", &self.peer_addr, &why))
    }
}

/// Checks a Flight URL; see [`CacheEndpoint::validate`].
fn check_flight_endpoint(url: &str) -> Result<(), String> {
    if url.len() > MAX_CACHE_ADDR_LEN {
        return Err(format!("it is longer than {MAX_CACHE_ADDR_LEN} bytes"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected grpc://host:port or grpcs://host:port".into());
    };
    if !matches!(scheme, "grpc" | "grpcs" | "grpc+tls") {
        return Err(format!(
            "the scheme must be grpc, or grpcs or grpc+tls for TLS, not {scheme:?}"
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err("expected only host:port after the scheme".into());
    }
    check_peer_addr(authority)
}

/// Checks a `host:port`; see [`CacheEndpoint::validate`].
fn check_peer_addr(addr: &str) -> Result<(), String> {
    if addr.len() > MAX_CACHE_ADDR_LEN {
        return Err(format!("it is longer than {MAX_CACHE_ADDR_LEN} bytes"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("the port {port:?} is not a number from 1 to 65535")),
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{host} is not an IPv6 address"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if host.is_empty() || !host.chars().all(allowed) {
        return Err(format!(
            "the host {host:?} is not a host name or IP address (an IPv6 address needs [brackets])"
        ));
    }
    Ok(())
}

/// One entry of the replicated object-drop log: every cache deletes the objects under
/// `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectDrop {
    /// Position in the log: increases by one with every drop, from 1.
    pub seq: u64,
    /// `<application>/<session id>` for a closed session, `<application>/*` for an
    /// unregistered application.
    pub prefix: String,
    /// When the drop was decided (the leader's clock), in Unix milliseconds.
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(flight: &str, peer: &str) -> CacheEndpoint {
        CacheEndpoint {
            flight_endpoint: flight.into(),
            peer_addr: peer.into(),
        }
    }

    #[test]
    fn cache_endpoints_need_a_grpc_url_and_a_host_port() {
        for (flight, peer) in [
            ("grpc://10.0.0.5:9090", "10.0.0.5:9091"),
            ("grpcs://cache-1.example:443/", "cache-1.example:9091"),
            ("grpc+tls://cache-1.example:443", "cache-1.example:9091"),
            ("grpc://[::1]:9090", "[fe80::1]:9091"),
        ] {
            assert_eq!(cache(flight, peer).validate(), Ok(()), "{flight} {peer}");
        }
        let bad_flight = [
            "10.0.0.5:9090",
            "http://10.0.0.5:9090",
            "grpc://10.0.0.5",
            "grpc://10.0.0.5:0",
            "grpc://:9090",
            "grpc://h:9090/path",
            "grpc://::1:9090",
        ];
        for flight in bad_flight {
            let err = cache(flight, "h:1").validate();
            assert!(
                matches!(&err, Err(FlameError::InvalidArgument(m))
                    if m.contains("cache.flight_endpoint")),
                "{flight}: {err:?}"
            );
        }
        for peer in [
            "h",
            "h:",
            "h:70000",
            ":9091",
            "a b:1",
            "[zz]:1",
            "grpc://h:1",
        ] {
            let err = cache("grpc://h:1", peer).validate();
            assert!(
                matches!(&err, Err(FlameError::InvalidArgument(m))
                    if m.contains("cache.peer_addr")),
                "{peer}: {err:?}"
            );
        }
    }

    #[test]
    fn default_application_spec_carries_the_stored_defaults() {
        let s = ApplicationSpec::default();
        assert_eq!((s.max_instances, s.delay_release_secs), (1_000_000, 60));
        assert_eq!(s.shim, Shim::Host);
        assert!(s.url.is_none() && s.schema.is_none());
        assert_eq!(s.validate(), Ok(()));
    }

    fn with_wd(wd: &str) -> ApplicationSpec {
        ApplicationSpec {
            working_directory: Some(wd.into()),
            ..ApplicationSpec::default()
        }
    }

    #[test]
    fn relative_working_directory_is_refused_with_the_spec_text() {
        assert_eq!(
            with_wd("tmp/work").validate(),
            Err(FlameError::InvalidArgument(
                "working_directory must be an absolute path, got: tmp/work".into()
            ))
        );
        assert_eq!(with_wd("/tmp/work").validate(), Ok(()));
        assert_eq!(with_wd("").validate(), Ok(()));
    }

    fn with_schema(input: Option<&str>, output: Option<&str>, cd: Option<&str>) -> ApplicationSpec {
        ApplicationSpec {
            schema: Some(ApplicationSchema {
                input: input.map(Into::into),
                output: output.map(Into::into),
                common_data: cd.map(Into::into),
            }),
            ..ApplicationSpec::default()
        }
    }

    fn message(r: Result<(), FlameError>) -> String {
        match r {
            Err(FlameError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn schemas_must_be_json_objects_or_booleans() {
        let ok = with_schema(Some(r#"{"type": "string"}"#), Some("true"), None);
        assert_eq!(ok.validate(), Ok(()));
        let m = message(with_schema(Some("{not json"), None, None).validate());
        assert!(m.starts_with("invalid input schema: "), "{m}");
        let m = message(with_schema(None, Some("[1, 2]"), None).validate());
        assert!(m.starts_with("invalid output schema: "), "{m}");
        let m = message(with_schema(None, None, Some("")).validate());
        assert!(m.starts_with("invalid common data schema: "), "{m}");
    }
}
