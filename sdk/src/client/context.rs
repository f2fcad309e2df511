//! The client configuration file `~/.flame/flame.yaml` and where a client's endpoints come from.
//!
//! What: [`FlameConfig`] is the file of spec sections 8.1 and 12.2 (`current-context`,
//! `contexts[].name`, `contexts[].cluster.endpoint`, plus the cache, package and runner
//! sections kept for other tools); [`load`] reads one, [`FlameConfig::current_endpoint`] picks
//! the current context's cluster endpoint and [`FlameConfig::current_cache_endpoint`] its
//! `cache.endpoint`. [`resolve_endpoints`] applies the precedence every Flame client uses:
//! **explicit endpoints > `FLAME_ENDPOINT` > the current context of the config file >
//! `http://127.0.0.1:8080`**; `crate::cache::resolve_cache_endpoint` does the same for the
//! object cache.
//!
//! Why: flamepy, flmctl and Rust clients must reach the same cluster from the same settings.
//!
//! Caveats: a source is consulted only when every higher one is absent, so a broken config file
//! is not an error while `FLAME_ENDPOINT` is set. The default file `~/.flame/flame.yaml` is
//! optional (as in flamepy), but a file named explicitly must exist. A missing
//! `current-context`, an unknown context name, or a context without `cluster.endpoint` is a
//! [`ClientError::Config`]. TLS settings (`tls.ca_file`) are parsed but not applied here.

use super::ClientError;
use super::connection::Connection;
use super::endpoints::{ENDPOINT_ENV, parse_endpoints};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The endpoint used when no other source names one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// `~/.flame/flame.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlameConfig {
    /// The name of the context in use.
    #[serde(default)]
    pub current_context: Option<String>,
    /// Every known context.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One named cluster configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The context's name.
    pub name: String,
    /// The control plane.
    #[serde(default)]
    pub cluster: Option<Endpoint>,
    /// The object cache.
    #[serde(default)]
    pub cache: Option<Cache>,
    /// The Runner's package store.
    #[serde(default)]
    pub package: Option<Package>,
    /// Runner settings.
    #[serde(default)]
    pub runner: Option<Runner>,
}

/// A service endpoint with optional TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The service URL (comma-separated URLs are accepted for the cluster).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// TLS settings of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    /// The CA certificate file.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// The object cache section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The cache URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// A local shared directory.
    #[serde(default)]
    pub storage: Option<String>,
}

/// The package section (Runner packages).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// `file://`, `http(s)://` or `grpc(s)://` store.
    #[serde(default)]
    pub storage: Option<String>,
    /// Patterns left out of packages.
    #[serde(default)]
    pub excludes: Vec<String>,
}

/// The runner section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    /// The application template (default `flmrun`).
    #[serde(default)]
    pub template: Option<String>,
}

impl FlameConfig {
    /// The context named by `current-context`; a missing name or an unknown one is a
    /// [`ClientError::Config`].
    pub fn current(&self) -> Result<&Context, ClientError> {
        let name = self
            .current_context
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ClientError::Config("current-context is not set".into()))?;
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                ClientError::Config(format!("current-context {name:?} is not in contexts"))
            })
    }

    /// The current context's cluster endpoints (normalised).
    pub fn current_endpoint(&self) -> Result<Vec<String>, ClientError> {
        let context = self.current()?;
        let name = &context.name;
        let endpoint = context
            .cluster
            .as_ref()
            .and_then(|c| c.endpoint.as_deref())
            .ok_or_else(|| {
                ClientError::Config(format!("context {name:?} has no cluster.endpoint"))
            })?;
        parse_endpoints(endpoint).map_err(|e| ClientError::Config(format!("context {name:?}: {e}")))
    }

    /// The current context's `cache.endpoint`, as written; `None` when the context has no
    /// cache section or it names no endpoint (the cache is optional).
    pub fn current_cache_endpoint(&self) -> Result<Option<String>, ClientError> {
        let context = self.current()?;
        Ok(context
            .cache
            .as_ref()
            .and_then(|c| c.endpoint.clone())
            .filter(|e| !e.trim().is_empty()))
    }

    /// The current context's `cache.tls.ca_file`, when set.
    pub fn current_cache_ca_file(&self) -> Result<Option<String>, ClientError> {
        let context = self.current()?;
        Ok(context
            .cache
            .as_ref()
            .and_then(|c| c.tls.as_ref())
            .and_then(|t| t.ca_file.clone())
            .filter(|f| !f.trim().is_empty()))
    }
}

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<FlameConfig, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
}

/// `~/.flame/flame.yaml`, when `HOME` is set.
pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".flame/flame.yaml"))
}

/// The endpoints a client should use: `explicit` (comma-separated) if given, else
/// `FLAME_ENDPOINT`, else the current context of the file at `config` (which must exist) or of
/// `~/.flame/flame.yaml` (if it exists), else [`DEFAULT_ENDPOINT`]. See the module docs.
pub fn resolve_endpoints(
    explicit: Option<&str>,
    config: Option<&Path>,
) -> Result<Vec<String>, ClientError> {
    let env = std::env::var(ENDPOINT_ENV).ok();
    resolve_from(explicit, env.as_deref(), config, default_config_path())
}

/// [`resolve_endpoints`] with the environment and the default path passed in (for tests).
fn resolve_from(
    explicit: Option<&str>,
    env: Option<&str>,
    config: Option<&Path>,
    default_path: Option<PathBuf>,
) -> Result<Vec<String>, ClientError> {
    let given = |text: Option<&str>| text.filter(|t| !t.trim().is_empty()).map(str::to_owned);
    if let Some(text) = given(explicit).or_else(|| given(env)) {
        return parse_endpoints(&text);
    }
    let file = match config {
        Some(path) => Some(path.to_path_buf()),
        None => default_path.filter(|p| p.is_file()),
    };
    match file {
        Some(path) => load(&path)?.current_endpoint().map_err(|e| match e {
            ClientError::Config(why) => ClientError::Config(format!("{}: {why}", path.display())),
            other => other,
        }),
        None => parse_endpoints(DEFAULT_ENDPOINT),
    }
}

impl Connection {
    /// A connection to the endpoints [`resolve_endpoints`] finds without explicit ones:
    /// `FLAME_ENDPOINT`, else the current context of `config` (default `~/.flame/flame.yaml`),
    /// else [`DEFAULT_ENDPOINT`]; default options.
    pub fn from_config(config: Option<&Path>) -> Result<Connection, ClientError> {
        Connection::new(&resolve_endpoints(None, config)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = "\
current-context: prod
contexts:
  - name: dev
    cluster:
      endpoint: http://dev:8080
  - name: prod
    cluster:
      endpoint: \"10.0.0.1:8080,10.0.0.2:8080\"
      tls:
        ca_file: /etc/flame/ca.pem
    cache:
      endpoint: grpc://10.0.0.1:9090
    package:
      storage: file:///tmp/pkg
      excludes: [\"*.pyc\"]
    runner:
      template: flmrun
";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn the_current_contexts_cluster_endpoint_is_used_and_other_sections_parse() {
        let f = file(TWO_CONTEXTS);
        let config = load(f.path()).unwrap();
        assert_eq!(
            config.current_endpoint().unwrap(),
            vec!["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
        );
        let prod = &config.contexts[1];
        let ca = prod.cluster.as_ref().and_then(|c| c.tls.clone());
        assert_eq!(
            ca.and_then(|t| t.ca_file).as_deref(),
            Some("/etc/flame/ca.pem")
        );
        assert_eq!(prod.package.as_ref().unwrap().excludes, vec!["*.pyc"]);
    }

    #[test]
    fn a_missing_current_context_or_unknown_name_is_a_clear_config_error() {
        let none = file("contexts:\n  - name: a\n    cluster: {endpoint: http://a:1}\n");
        let err = resolve_from(None, None, Some(none.path()), None).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{err:?}");
        assert!(
            err.to_string().contains("current-context is not set"),
            "{err}"
        );
        let unknown = file("current-context: b\ncontexts:\n  - name: a\n");
        let err = resolve_from(None, None, Some(unknown.path()), None).unwrap_err();
        assert!(
            err.to_string().contains("\"b\" is not in contexts"),
            "{err}"
        );
        let bare = file("current-context: a\ncontexts:\n  - name: a\n");
        let err = resolve_from(None, None, Some(bare.path()), None).unwrap_err();
        assert!(err.to_string().contains("no cluster.endpoint"), "{err}");
    }

    #[test]
    fn malformed_yaml_and_a_missing_named_file_are_config_errors() {
        let bad = file("current-context: [unclosed\n");
        let err = resolve_from(None, None, Some(bad.path()), None).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{err:?}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let err = resolve_from(None, None, Some(&missing), None).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn explicit_beats_env_beats_config_beats_the_default() {
        let f = file(TWO_CONTEXTS);
        let path = Some(f.path());
        let got = resolve_from(Some("x:1"), Some("y:2"), path, None).unwrap();
        assert_eq!(got, vec!["http://x:1"]);
        let got = resolve_from(None, Some("y:2"), path, None).unwrap();
        assert_eq!(got, vec!["http://y:2"]);
        let got = resolve_from(Some("  "), Some(""), path, None).unwrap();
        assert_eq!(got[0], "http://10.0.0.1:8080");
        let got = resolve_from(None, None, None, None).unwrap();
        assert_eq!(got, vec![DEFAULT_ENDPOINT]);
    }

    #[test]
    fn the_default_file_is_used_when_present_and_skipped_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("flame.yaml");
        let got = resolve_from(None, None, None, Some(default.clone())).unwrap();
        assert_eq!(got, vec![DEFAULT_ENDPOINT]);
        std::fs::write(
            &default,
            TWO_CONTEXTS.replace("prod\ncontexts", "dev\ncontexts"),
        )
        .unwrap();
        let got = resolve_from(None, None, None, Some(default)).unwrap();
        assert_eq!(got, vec!["http://dev:8080"]);
    }

    #[test]
    fn a_broken_config_is_not_read_when_a_higher_source_names_endpoints() {
        let bad = file("current-context: [unclosed\n");
        let got = resolve_from(None, Some("y:2"), Some(bad.path()), None).unwrap();
        assert_eq!(got, vec!["http://y:2"]);
    }
}
