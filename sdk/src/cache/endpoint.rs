//! Where the object cache is: the endpoint precedence every Flame client shares.
//!
//! What: [`resolve_cache_endpoint`] returns the first of **an explicit endpoint (a flag) >
//! `FLAME_CACHE_ENDPOINT` > `cache.endpoint` of the current context of the config file (the
//! named one, else `~/.flame/flame.yaml` when it exists) > `grpc://127.0.0.1:9090`**, the same
//! order flamepy 0.6.0 uses (spec section 8.1). [`normalise_cache_endpoint`] turns a bare
//! `host:port` into `grpc://host:port` and refuses what the cache client cannot dial.
//!
//! Why: flamepy, `flmctl cache` and Rust clients must reach the same cache from the same
//! settings, exactly as they reach the same control plane.
//!
//! Caveats: a context without a `cache` section falls back to the default (the cache is
//! optional), but a config file that is named and missing, unparsable, or whose
//! `current-context` is unset or unknown is a [`ClientError::Config`], as for the cluster. A
//! source is read only when every higher one is absent.
//!
//! TLS: `grpcs://` and `grpc+tls://` endpoints are verified against
//! [`resolve_cache_ca`]: `cache.tls.ca_file` of the current context, else `FLAME_CA_FILE`
//! (which, as in flamepy, fills the CA only where the file leaves it unset), else the
//! system's roots.

use crate::client::ClientError;
use crate::client::context::{default_config_path, load};
use std::path::{Path, PathBuf};

/// The environment variable naming the object cache (spec section 7.2).
pub const CACHE_ENDPOINT_ENV: &str = "FLAME_CACHE_ENDPOINT";

/// The cache endpoint used when no other source names one.
pub const DEFAULT_CACHE_ENDPOINT: &str = "grpc://127.0.0.1:9090";

/// The cache endpoint a client should use: `explicit` if given, else `FLAME_CACHE_ENDPOINT`,
/// else `cache.endpoint` of the current context of the file at `config` (which must exist) or
/// of `~/.flame/flame.yaml` (if it exists), else [`DEFAULT_CACHE_ENDPOINT`]. See the module
/// docs.
pub fn resolve_cache_endpoint(
    explicit: Option<&str>,
    config: Option<&Path>,
) -> Result<String, ClientError> {
    let env = std::env::var(CACHE_ENDPOINT_ENV).ok();
    resolve_from(explicit, env.as_deref(), config, default_config_path())
}

/// [`resolve_cache_endpoint`] with the environment and the default path passed in.
pub(crate) fn resolve_from(
    explicit: Option<&str>,
    env: Option<&str>,
    config: Option<&Path>,
    default_path: Option<PathBuf>,
) -> Result<String, ClientError> {
    let given = |text: Option<&str>| text.filter(|t| !t.trim().is_empty()).map(str::to_owned);
    if let Some(text) = given(explicit).or_else(|| given(env)) {
        return normalise_cache_endpoint(&text);
    }
    let file = match config {
        Some(path) => Some(path.to_path_buf()),
        None => default_path.filter(|p| p.is_file()),
    };
    let Some(path) = file else {
        return normalise_cache_endpoint(DEFAULT_CACHE_ENDPOINT);
    };
    let in_file = |e: ClientError| match e {
        ClientError::Config(why) => ClientError::Config(format!("{}: {why}", path.display())),
        ClientError::InvalidEndpoint(why) => {
            ClientError::Config(format!("{}: cache.endpoint {why}", path.display()))
        }
        other => other,
    };
    match load(&path)?.current_cache_endpoint().map_err(in_file)? {
        Some(endpoint) => normalise_cache_endpoint(&endpoint).map_err(in_file),
        None => normalise_cache_endpoint(DEFAULT_CACHE_ENDPOINT),
    }
}

/// The CA file that verifies a TLS cache: `cache.tls.ca_file` of the current context of the
/// file at `config` (or of `~/.flame/flame.yaml` when it exists), else `FLAME_CA_FILE`, else
/// `None` (the system's roots). A relative path in the file is relative to the file.
pub fn resolve_cache_ca(config: Option<&Path>) -> Result<Option<PathBuf>, ClientError> {
    let env = std::env::var_os(flame_cache::client::CA_FILE_ENV).map(PathBuf::from);
    resolve_ca_from(env, config, default_config_path())
}

/// [`resolve_cache_ca`] with the environment and the default path passed in.
pub(crate) fn resolve_ca_from(
    env: Option<PathBuf>,
    config: Option<&Path>,
    default_path: Option<PathBuf>,
) -> Result<Option<PathBuf>, ClientError> {
    let file = match config {
        Some(path) => Some(path.to_path_buf()),
        None => default_path.filter(|p| p.is_file()),
    };
    if let Some(path) = file
        && let Some(ca) = load(&path)?.current_cache_ca_file()?
    {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Ok(Some(dir.join(ca)));
    }
    Ok(env.filter(|p| !p.as_os_str().is_empty()))
}

/// One cache endpoint as a URL the cache client dials: `host:port` becomes
/// `grpc://host:port`, a trailing `/` is dropped; `grpc://`, `http://` and the TLS schemes
/// `grpcs://` and `grpc+tls://` are accepted, anything else is
/// [`ClientError::InvalidEndpoint`].
pub fn normalise_cache_endpoint(text: &str) -> Result<String, ClientError> {
    let text = text.trim();
    let (scheme, rest) = text.split_once("://").unwrap_or(("grpc", text));
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(char::is_whitespace) || authority.contains('/') {
        return Err(ClientError::InvalidEndpoint(format!(
            "{text:?} is not a cache endpoint; expected grpc://HOST:PORT"
        )));
    }
    let url = format!("{scheme}://{authority}");
    flame_cache::client::grpc_url(&url).map_err(|e| match e {
        flame_cache::CacheError::Connect { reason, .. } => {
            ClientError::InvalidEndpoint(format!("{text:?}: {reason}"))
        }
        other => ClientError::InvalidEndpoint(format!("{text:?}: {other}")),
    })?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
current-context: prod
contexts:
  - name: dev
    cluster:
      endpoint: http://dev:8080
  - name: prod
    cluster:
      endpoint: http://10.0.0.1:8080
    cache:
      endpoint: grpc://10.0.0.1:9090
";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn explicit_beats_env_beats_config_beats_the_default() {
        let f = file(CONFIG);
        let path = Some(f.path());
        let got = resolve_from(Some("grpc://x:1"), Some("y:2"), path, None).unwrap();
        assert_eq!(got, "grpc://x:1");
        assert_eq!(
            resolve_from(None, Some("y:2"), path, None).unwrap(),
            "grpc://y:2"
        );
        assert_eq!(
            resolve_from(Some(" "), Some(""), path, None).unwrap(),
            "grpc://10.0.0.1:9090"
        );
        assert_eq!(
            resolve_from(None, None, None, None).unwrap(),
            DEFAULT_CACHE_ENDPOINT
        );
    }

    #[test]
    fn a_context_without_a_cache_section_uses_the_default() {
        let f = file(&CONFIG.replace("current-context: prod", "current-context: dev"));
        assert_eq!(
            resolve_from(None, None, Some(f.path()), None).unwrap(),
            DEFAULT_CACHE_ENDPOINT
        );
    }

    #[test]
    fn the_default_file_is_read_only_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("flame.yaml");
        let got = resolve_from(None, None, None, Some(default.clone())).unwrap();
        assert_eq!(got, DEFAULT_CACHE_ENDPOINT);
        std::fs::write(&default, CONFIG).unwrap();
        let got = resolve_from(None, None, None, Some(default)).unwrap();
        assert_eq!(got, "grpc://10.0.0.1:9090");
    }

    #[test]
    fn broken_config_files_are_config_errors_naming_the_file() {
        let bad = file("current-context: [unclosed\n");
        let err = resolve_from(None, None, Some(bad.path()), None).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{err:?}");
        let unknown = file("current-context: b\ncontexts:\n  - name: a\n");
        let err = resolve_from(None, None, Some(unknown.path()), None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"b\" is not in contexts"), "{text}");
        assert!(
            text.contains(&unknown.path().display().to_string()),
            "{text}"
        );
        let foreign = file(&CONFIG.replace("grpc://10.0.0.1", "ftp://10.0.0.1"));
        let err = resolve_from(None, None, Some(foreign.path()), None).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("ftp://"), "{err}");
        // A higher source wins without reading the broken file.
        assert_eq!(
            resolve_from(None, Some("h:1"), Some(bad.path()), None).unwrap(),
            "grpc://h:1"
        );
    }

    #[test]
    fn endpoints_are_normalised_and_foreign_ones_refused() {
        assert_eq!(normalise_cache_endpoint("h:9").unwrap(), "grpc://h:9");
        assert_eq!(
            normalise_cache_endpoint(" grpc://h:9/ ").unwrap(),
            "grpc://h:9"
        );
        assert_eq!(
            normalise_cache_endpoint("http://h:9").unwrap(),
            "http://h:9"
        );
        for bad in ["", "grpc://", "ftp://h:1", "grpc://h:1/x", "a b:1"] {
            let err = normalise_cache_endpoint(bad).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidEndpoint(_)),
                "{bad}: {err:?}"
            );
        }
        for tls in ["grpcs://h:1", "grpc+tls://h:1/"] {
            let want = tls.trim_end_matches('/');
            assert_eq!(normalise_cache_endpoint(tls).unwrap(), want);
        }
    }

    #[test]
    fn the_cache_ca_comes_from_the_file_before_flame_ca_file() {
        let env = Some(PathBuf::from("/env/ca.pem"));
        let plain = file(CONFIG);
        let got = resolve_ca_from(env.clone(), Some(plain.path()), None).unwrap();
        assert_eq!(got, env, "no cache.tls in the file: FLAME_CA_FILE fills it");
        let with_ca = file(&CONFIG.replace(
            "      endpoint: grpc://10.0.0.1:9090\n",
            "      endpoint: grpcs://10.0.0.1:9090\n      tls:\n        ca_file: certs/ca.pem\n",
        ));
        let got = resolve_ca_from(env, Some(with_ca.path()), None).unwrap();
        let dir = with_ca.path().parent().unwrap();
        assert_eq!(got, Some(dir.join("certs/ca.pem")));
        assert_eq!(resolve_ca_from(None, None, None).unwrap(), None);
    }
}
