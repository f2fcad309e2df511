//! Where a package comes from: its url's scheme, and fetching `grpc://` packages from the
//! object cache (spec section 7.6 step 1, Annex A).
//!
//! What: [`Source::parse`] sorts a package url into a local path (`file://`) or an object of
//! the cache (`grpc://host:port/<app>/<session>/<id>`), refusing every other scheme with a
//! message naming it. [`fetch`] asks the cache for an object with a `do_get` whose ticket is
//! `<key>:<version>`: version 0 for a full download, or the version of the release already
//! installed, which the cache answers with an empty stream when the object has not changed.
//!
//! Why the conditional get: an object at a key can be put again (its version goes up), so
//! every binding must learn whether the installed release is still current. The cache offers
//! no cheap per-object metadata call (`get_flight_info` carries no version, `list_flights`
//! asks every cache of the cluster), but a `do_get` with the caller's version costs one round
//! trip and no payload when nothing changed, exactly flamepy's own cache check.
//!
//! TLS: `grpcs://` (and `grpc+tls://`) fetch over TLS, trusting the agent's `ca_file`
//! (`FLAME_CA_FILE`), or the system's roots without it.
//!
//! Caveats: `http(s)://` are refused (not implemented). A package must be a plain object (a base
//! without patches): a patched archive cannot be applied, so it is refused naming the key. The
//! object is held in memory while it is written to disk (objects are at most the cache's
//! `max_object_size`, 1 GiB by default). Each fetch opens a new connection to the cache.

use super::error::BindError;
use super::install::fail;
use bytes::Bytes;
use flame_cache::client::ClientTls;
use flame_cache::{CacheClient, CacheError, Fetched, ObjectKey};
use std::path::PathBuf;

/// Where a package url points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file or directory (`file://<absolute path>`).
    File(PathBuf),
    /// An object of the cache (`grpc://host:port/<key>` or `grpcs://host:port/<key>`).
    Cache {
        /// The cache's endpoint, `grpc://host:port` or `grpcs://host:port`.
        endpoint: String,
        /// The object's key, validated.
        key: ObjectKey,
    },
}

impl Source {
    /// Sorts `url` by scheme; any url this agent cannot install from is an install failure
    /// naming the url and why.
    pub fn parse(url: &str) -> Result<Source, BindError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(fail(format!(
                "url {url:?} has no scheme (use file://<absolute path> or grpc://host:port/<key>)"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = PathBuf::from(rest);
                if !path.is_absolute() {
                    return Err(fail(format!("url {url:?} does not name an absolute path")));
                }
                Ok(Source::File(path))
            }
            "grpc" => cache_source(url, "grpc", rest),
            "grpcs" | "grpc+tls" => cache_source(url, "grpcs", rest),
            s @ ("http" | "https") => Err(fail(format!(
                "url {url:?}: scheme {s}:// is not supported by this agent yet \
                 (use file:// or grpc://)"
            ))),
            s => Err(fail(format!(
                "url {url:?}: unknown scheme {s}:// (use file:// or grpc://)"
            ))),
        }
    }
}

/// The cache endpoint and key of `<scheme>://<rest>`.
fn cache_source(url: &str, scheme: &str, rest: &str) -> Result<Source, BindError> {
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(fail(format!(
            "url {url:?} names no cache (expected grpc://host:port/<key>)"
        )));
    }
    let key = ObjectKey::parse(key).map_err(|e| fail(format!("url {url:?}: {e}")))?;
    Ok(Source::Cache {
        endpoint: format!("{scheme}://{authority}"),
        key,
    })
}

/// What the cache said about a package object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    /// The object is still at the version the caller has.
    Unchanged,
    /// The object's bytes at `version`.
    Object {
        /// The object's version.
        version: u64,
        /// Its whole value (a base without patches).
        data: Bytes,
    },
}

/// Fetches the object at `key` from the cache at `endpoint` (trusting `tls` when it is a
/// `grpcs://` endpoint) for the package `url`, unless it is still at version `have`. Failures
/// are install failures naming the url and the cause.
pub async fn fetch(
    url: &str,
    endpoint: &str,
    tls: &ClientTls,
    key: &ObjectKey,
    have: Option<u64>,
) -> Result<Fresh, BindError> {
    let key_text = key.to_string();
    let failed = |e: CacheError| fail(format!("package {url}: {}", describe(&e, &key_text)));
    let client = CacheClient::connect_with(endpoint, tls)
        .await
        .map_err(failed)?;
    let fetched = client
        .get(&key_text, have.unwrap_or(0))
        .await
        .map_err(failed)?;
    let why = match fetched {
        Fetched::NotModified if have.is_some() => return Ok(Fresh::Unchanged),
        Fetched::Blob {
            version,
            base: Some(data),
            patches,
        } if patches.is_empty() => return Ok(Fresh::Object { version, data }),
        Fetched::NotModified => "the cache sent nothing for a full download".to_owned(),
        Fetched::Blob { version, .. } => format!(
            "the object at key {key_text} has patches (version {version}); \
             a package archive cannot be patched, put it again whole"
        ),
        Fetched::Table { .. } => {
            format!("the object at key {key_text} is an Arrow table, not a package archive")
        }
    };
    Err(fail(format!("package {url}: {why}")))
}

/// The cause of a failed cache call, in the installer's words.
fn describe(err: &CacheError, key: &str) -> String {
    if err.is_not_found() {
        return format!("no object at key {key}");
    }
    match err {
        CacheError::Connect { .. } => err.to_string(),
        CacheError::InvalidKey { .. } => format!("bad key: {err}"),
        _ => format!("the cache failed to serve key {key}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(url: &str) -> String {
        match Source::parse(url) {
            Ok(s) => panic!("{url} was accepted as {s:?}"),
            Err(e) => {
                assert_eq!(e.code.value(), 10, "{url}");
                e.message
            }
        }
    }

    #[test]
    fn file_grpc_and_grpcs_urls_are_sources() {
        assert_eq!(
            Source::parse("file:///opt/p.tgz").ok(),
            Some(Source::File(PathBuf::from("/opt/p.tgz")))
        );
        let key = ObjectKey::parse("app/pkg/p.tar.gz").ok();
        let parsed = Source::parse("grpc://10.0.0.1:9090/app/pkg/p.tar.gz").ok();
        assert_eq!(
            parsed,
            key.map(|key| Source::Cache {
                endpoint: "grpc://10.0.0.1:9090".into(),
                key,
            })
        );
        for url in ["grpcs://c:443/app/pkg/p", "grpc+tls://c:443/app/pkg/p"] {
            assert_eq!(
                Source::parse(url).ok(),
                ObjectKey::parse("app/pkg/p").ok().map(|key| Source::Cache {
                    endpoint: "grpcs://c:443".into(),
                    key,
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn other_urls_are_refused_naming_the_url_and_why() {
        for (url, says) in [
            (
                "https://example.com/p.tgz",
                "scheme https:// is not supported",
            ),
            (
                "http://example.com/p.tgz",
                "scheme http:// is not supported",
            ),
            ("grpcs://cache:9090/a/pkg", "invalid object key"),
            ("ftp://x/p.tgz", "unknown scheme ftp://"),
            ("/opt/p.tgz", "has no scheme"),
            ("file://relative/p.tgz", "absolute path"),
            ("grpc:///a/pkg/p", "names no cache"),
            ("grpc://cache:9090", "invalid object key"),
            ("grpc://cache:9090/a/pkg", "invalid object key"),
            ("grpc://cache:9090/a/../p", "invalid object key"),
        ] {
            let message = refusal(url);
            assert!(
                message.contains(says) && message.contains(url),
                "{url}: {message}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_cache_is_an_install_failure_naming_it()
    -> Result<(), Box<dyn std::error::Error>> {
        // A port nothing listens on: bind one, note it, close it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let endpoint = format!("grpc://{addr}");
        let url = format!("{endpoint}/app/pkg/p.tgz");
        let key = ObjectKey::parse("app/pkg/p.tgz")?;
        let err = fetch(&url, &endpoint, &ClientTls::default(), &key, None)
            .await
            .err();
        assert!(
            err.as_ref().is_some_and(|e| e.code.value() == 10
                && e.message.contains(&url)
                && e.message.contains("cannot reach the cache")),
            "{err:?}"
        );
        Ok(())
    }
}
