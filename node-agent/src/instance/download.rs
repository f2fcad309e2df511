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
//! `http://` and `https://` packages ([`fetch_http`]) stream to a file, at most
//! [`MAX_HTTP_PACKAGE_BYTES`] and within the install timeout; `https://` trusts the agent's
//! `ca_file` when it has one, else the system's roots, over rustls on ring.
//!
//! Caveats: a cache package must be a plain object (a base without patches): a patched archive
//! cannot be applied, so it is refused naming the key. The object is held in memory while it
//! is written to disk (objects are at most the cache's `max_object_size`, 1 GiB by default).
//! Each fetch opens a new connection. An `http(s)://` url is downloaded once per release (its
//! release is keyed by the url), so publish a new version at a new url.

use super::error::BindError;
use super::vars::fail;
use bytes::Bytes;
use flame_cache::client::ClientTls;
use flame_cache::{CacheClient, CacheError, Fetched, ObjectKey};
use flame_proto::error::source_chain;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Where a package url points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file or directory (`file://<absolute path>`).
    File(PathBuf),
    /// A file on a web server (`http://` or `https://`).
    Http(String),
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
                "url {url:?} has no scheme (use file://<absolute path>, http(s)://... or \
                 grpc://host:port/<key>)"
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
            "http" | "https" => {
                // URL parsers forgive `http:///x` (taking `x` as the host); a package url
                // must name its server.
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                if authority.is_empty() || reqwest::Url::parse(url).is_err() {
                    return Err(fail(format!("url {url:?} is not a valid http(s) url")));
                }
                Ok(Source::Http(url.to_owned()))
            }
            s => Err(fail(format!(
                "url {url:?}: unknown scheme {s}:// (use file://, http(s):// or grpc://)"
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

/// Largest `http(s)://` package downloaded, in bytes (1 GiB, the cache's default object limit).
pub const MAX_HTTP_PACKAGE_BYTES: u64 = 1 << 30;

/// Downloads `url` into the file `dest`, at most `limit` bytes and within `timeout` (connect,
/// response and body together), trusting `ca_file` for `https://` when given, else the
/// system's roots. Returns the size. Failures are install failures naming the url and cause;
/// a partial file is removed.
pub async fn fetch_http(
    url: &str,
    dest: &Path,
    limit: u64,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<u64, BindError> {
    let failed = |why: String| fail(format!("package {url}: {why}"));
    let client = http_client(ca_file, timeout).map_err(failed)?;
    let written = match tokio::time::timeout(timeout, download(&client, url, dest, limit)).await {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(failed(format!(
            "the download did not finish within {}s",
            timeout.as_secs()
        ))),
    };
    if written.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    written
}

/// The body of [`fetch_http`]: status check, size limit, streaming to `dest`.
async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    limit: u64,
) -> Result<u64, String> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("the request failed: {}", source_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    let too_large = |size: u64| format!("it is larger than the limit of {limit} bytes ({size})");
    if let Some(length) = response.content_length().filter(|l| *l > limit) {
        return Err(too_large(length));
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut size = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the download broke off: {}", source_chain(&e)))?
    {
        size = size.saturating_add(chunk.len() as u64);
        if size > limit {
            return Err(too_large(size));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok(size)
}

/// An HTTP client on rustls with ring, trusting `ca_file` or else the system's roots.
fn http_client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // An unusable system certificate only narrows what is trusted.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {}", source_chain(&e)))
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

    /// Serves `/fixed` (100 bytes with a length), `/streamed` (100 bytes in chunks, no
    /// length) and 404 elsewhere on a loopback port; returns its base url.
    async fn web_server() -> String {
        use axum::body::Body;
        let body = || Bytes::from(vec![7u8; 100]);
        let app = axum::Router::new()
            .route("/fixed", axum::routing::get(move || async move { body() }))
            .route(
                "/streamed",
                axum::routing::get(|| async {
                    let chunks =
                        (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 10])));
                    Body::from_stream(tokio_stream::iter(chunks))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_http_download_streams_to_disk_within_its_size_limit() {
        let base = web_server().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = Duration::from_secs(10);
        for path in ["fixed", "streamed"] {
            let dest = dir.path().join(path);
            let url = format!("{base}/{path}");
            let size = fetch_http(&url, &dest, 100, limit, None).await;
            assert_eq!(size.ok(), Some(100), "{url}");
            assert_eq!(std::fs::read(&dest).ok(), Some(vec![7u8; 100]));
            let too_big = fetch_http(&url, &dest, 99, limit, None).await.unwrap_err();
            assert!(
                too_big
                    .message
                    .contains("larger than the limit of 99 bytes")
                    && too_big.message.contains(&url),
                "{}",
                too_big.message
            );
            assert!(!dest.exists(), "a refused download leaves no file");
        }
        let missing = format!("{base}/missing.tar.gz");
        let err = fetch_http(&missing, &dir.path().join("m"), 100, limit, None)
            .await
            .unwrap_err();
        assert_eq!(err.code.value(), 10);
        assert!(
            err.message.contains("404") && err.message.contains(&missing),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn an_unreachable_http_server_is_an_install_failure_naming_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/p.tgz", listener.local_addr().expect("addr"));
        drop(listener);
        let dir = tempfile::tempdir().expect("tempdir");
        let err = fetch_http(
            &url,
            &dir.path().join("p"),
            100,
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains(&url) && err.message.contains("request failed"),
            "{}",
            err.message
        );
    }

    #[test]
    fn http_and_https_urls_are_sources() {
        for url in [
            "http://example.com/p.tgz",
            "https://example.com:8443/a/p.zip?x=1",
        ] {
            assert_eq!(Source::parse(url).ok(), Some(Source::Http(url.to_owned())));
        }
    }

    #[test]
    fn other_urls_are_refused_naming_the_url_and_why() {
        for (url, says) in [
            ("http:///p.tgz", "is not a valid http(s) url"),
            ("https://", "is not a valid http(s) url"),
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
