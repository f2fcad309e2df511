//! [`CacheClient`]: an Arrow Flight client of the cache that speaks the conventions in
//! [`crate::wire`], for the Rust SDK, the node agent's package installer, `flmctl cache` and
//! the benchmarks.
//!
//! What: put, put a native table, patch, get (incremental, with the caller's version), get a
//! table, delete by key or pattern, list, and the public endpoint of an object, each one Flight
//! call to one cache. Any cache of the cluster serves any object, so the client never looks for
//! a holder.
//!
//! Why a client of our own over `arrow_flight::FlightClient`: every caller needs the same
//! descriptor, ticket and schema conventions and the same lifted message-size limits.
//!
//! TLS: `grpcs://` and `grpc+tls://` endpoints verify the cache against a CA file
//! ([`ClientTls`], `FLAME_CA_FILE` by default) or the system's roots; there are no client
//! certificates (spec section 5).
//!
//! Caveats: payload bytes
//! are opaque here; flamepy pickles its objects, so an object put by flamepy reads back as
//! pickle bytes and the other way round.

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey, PutTarget};
use crate::objref::ObjectRef;
use crate::wire::{self, PutRequest, RecordKind, Ticket};
use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Criteria, FlightClient, FlightDescriptor};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// What a get returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The caller's version is current: nothing was sent.
    NotModified,
    /// Bytes: the base when the caller's version was too old for patches alone, and the
    /// patches after the base (or after the caller's version).
    Blob {
        /// The object's version now.
        version: u64,
        /// The base value, when sent.
        base: Option<Bytes>,
        /// `(version, bytes)` of each patch sent, in order.
        patches: Vec<(u64, Bytes)>,
    },
    /// A native Arrow table.
    Table {
        /// The object's version.
        version: u64,
        /// Its schema, with `flame.cache.version`.
        schema: SchemaRef,
        /// Its batches.
        batches: Vec<RecordBatch>,
    },
}

/// One object as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// The current version.
    pub version: u64,
    /// Size in bytes: base plus patches.
    pub size: u64,
    /// The cache endpoint the listing named.
    pub endpoint: String,
}

/// A connection to one cache.
#[derive(Debug, Clone)]
pub struct CacheClient {
    endpoint: String,
    channel: Channel,
}

/// The environment variable naming the CA that TLS clients trust (spec section 7.2).
pub const CA_FILE_ENV: &str = "FLAME_CA_FILE";

/// How a client trusts a TLS cache (`grpcs://` or `grpc+tls://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the server's certificate must chain to; `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl ClientTls {
    /// Trust the CA in `FLAME_CA_FILE` when it is set, else the system's roots.
    pub fn from_env() -> ClientTls {
        ClientTls {
            ca_file: std::env::var_os(CA_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The tonic client TLS settings for `host`.
    fn tonic_config(&self, endpoint: &str, host: &str) -> CacheResult<ClientTlsConfig> {
        let config = ClientTlsConfig::new().domain_name(host);
        let Some(path) = &self.ca_file else {
            return Ok(config.with_native_roots());
        };
        let pem = std::fs::read(path).map_err(|e| CacheError::Connect {
            endpoint: endpoint.to_owned(),
            reason: format!("cannot read the CA file {}: {e}", path.display()),
        })?;
        Ok(config.ca_certificate(Certificate::from_pem(pem)))
    }
}

/// The gRPC URL for a cache endpoint and whether it uses TLS: `grpc://` (and `http://`) is
/// plaintext HTTP/2, `grpcs://`, `grpc+tls://` (flamepy's and upstream's spelling) and
/// `https://` are TLS.
pub fn grpc_url(endpoint: &str) -> CacheResult<(String, bool)> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| CacheError::Connect {
            endpoint: endpoint.to_owned(),
            reason: "expected a grpc://host:port or grpcs://host:port URL".to_owned(),
        })?;
    match scheme {
        "grpc" | "grpc+tcp" | "http" => Ok((format!("http://{rest}"), false)),
        "grpcs" | "grpc+tls" | "https" => Ok((format!("https://{rest}"), true)),
        other => Err(CacheError::Connect {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "the scheme {other}:// is not a cache endpoint; use grpc:// or grpcs:// (TLS)"
            ),
        }),
    }
}

fn flight_error(err: FlightError) -> CacheError {
    match err {
        FlightError::Tonic(status) => CacheError::from(*status),
        other => CacheError::InvalidArgument(format!("Flight: {other}")),
    }
}

impl CacheClient {
    /// Connects to the cache at `endpoint` within 10 s; a TLS endpoint trusts
    /// [`ClientTls::from_env`].
    pub async fn connect(endpoint: &str) -> CacheResult<CacheClient> {
        Self::connect_with(endpoint, &ClientTls::from_env()).await
    }

    /// Connects to the cache at `endpoint` (`grpc://host:port`, or `grpcs://host:port` trusting
    /// `tls`), within 10 s.
    pub async fn connect_with(endpoint: &str, tls: &ClientTls) -> CacheResult<CacheClient> {
        let (url, secure) = grpc_url(endpoint)?;
        let connect_error = |reason: String| CacheError::Connect {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let mut target = Endpoint::from_shared(url).map_err(|e| connect_error(e.to_string()))?;
        if secure {
            let host = target.uri().host().unwrap_or_default().to_owned();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            target = target
                .tls_config(tls.tonic_config(endpoint, &host)?)
                .map_err(|e| connect_error(e.to_string()))?;
        }
        let channel = target
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| connect_error(flame_proto::error::source_chain(&e)))?;
        Ok(CacheClient {
            endpoint: endpoint.to_owned(),
            channel,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn flight(&self) -> FlightClient {
        let inner = FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        FlightClient::new_from_inner(inner)
    }

    async fn send(
        &self,
        request: PutRequest,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> CacheResult<ObjectRef> {
        let input = futures::stream::iter(batches.into_iter().map(Ok));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_flight_descriptor(Some(request.descriptor()))
            .with_max_flight_data_size(usize::MAX)
            .build(input);
        let mut results = self.flight().do_put(stream).await.map_err(flight_error)?;
        let result = results
            .next()
            .await
            .ok_or_else(|| CacheError::InvalidArgument("the cache sent no put result".into()))?
            .map_err(flight_error)?;
        ObjectRef::from_bson(&result.app_metadata)
    }

    /// Puts `data` at `target`: `<app>/<session>` for a new object with a server-chosen id, or
    /// a whole key to put or overwrite. Returns the object's reference.
    pub async fn put(&self, target: &str, data: Bytes) -> CacheResult<ObjectRef> {
        let request = PutRequest::Put(PutTarget::parse(target)?);
        self.send(request, wire::put_batches(&data)?, wire::put_schema())
            .await
    }

    /// Puts a native Arrow table (its schema metadata must carry
    /// `flame.cache.format = arrow-table-v1`, which this call adds).
    pub async fn put_table(
        &self,
        target: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> CacheResult<ObjectRef> {
        let request = PutRequest::Put(PutTarget::parse(target)?);
        let mut metadata = schema.metadata().clone();
        metadata.insert(wire::FORMAT_METADATA_KEY, wire::TABLE_FORMAT);
        let schema = std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(
            schema.fields().clone(),
            metadata,
        ));
        let batches = batches
            .into_iter()
            .map(|b| b.with_schema(schema.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                CacheError::InvalidArgument(format!(
                    "the table's batches do not match its schema: {e}"
                ))
            })?;
        self.send(request, batches, schema).await
    }

    /// Appends `delta` as a patch of the object at `key`.
    pub async fn patch(&self, key: &str, delta: Bytes) -> CacheResult<ObjectRef> {
        let request = PutRequest::Patch(ObjectKey::parse(key)?);
        self.send(request, wire::put_batches(&delta)?, wire::put_schema())
            .await
    }

    /// Gets the object at `key`, telling the cache the caller has `version` (0 = nothing).
    pub async fn get(&self, key: &str, version: u64) -> CacheResult<Fetched> {
        let ticket = Ticket {
            key: ObjectKey::parse(key)?,
            version,
        };
        let mut stream = self
            .flight()
            .do_get(arrow_flight::Ticket::new(ticket.encode()))
            .await
            .map_err(flight_error)?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.try_next().await.map_err(flight_error)? {
            batches.push(batch);
        }
        let schema = stream.schema().cloned();
        fetched(schema, batches)
    }

    /// The object's whole value: the base followed by every patch, concatenated, and its
    /// version. Fails for a native table.
    pub async fn get_bytes(&self, key: &str) -> CacheResult<(u64, Bytes)> {
        match self.get(key, 0).await? {
            Fetched::Blob {
                version,
                base,
                patches,
            } => {
                let mut parts: Vec<Bytes> = base.into_iter().collect();
                parts.extend(patches.into_iter().map(|p| p.1));
                Ok((version, wire::concat(parts)))
            }
            Fetched::Table { .. } => Err(CacheError::InvalidArgument(format!(
                "{key} is a native Arrow table"
            ))),
            Fetched::NotModified => Err(CacheError::Internal(format!(
                "the cache answered a full get of {key} with not-modified"
            ))),
        }
    }

    /// Deletes the object `pattern` names: a key, `<app>/<session>` or `<app>/*`.
    pub async fn delete(&self, pattern: &str) -> CacheResult<()> {
        KeyPattern::parse(pattern)?;
        let action = Action::new(wire::DELETE_ACTION, Bytes::from(pattern.to_owned()));
        let mut results = self
            .flight()
            .do_action(action)
            .await
            .map_err(flight_error)?;
        while results.try_next().await.map_err(flight_error)?.is_some() {}
        Ok(())
    }

    /// Every object of the cluster whose key starts with `prefix` (empty for all), sorted by
    /// key.
    pub async fn list(&self, prefix: &str) -> CacheResult<Vec<ObjectInfo>> {
        let criteria = Criteria {
            expression: Bytes::from(prefix.to_owned()),
        };
        let mut stream = self
            .flight()
            .inner_mut()
            .list_flights(criteria)
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(info) = stream.message().await? {
            let reference = ObjectRef::from_bson(&info.app_metadata)?;
            out.push(ObjectInfo {
                key: reference.key,
                version: reference.version,
                size: u64::try_from(info.total_bytes).unwrap_or(0),
                endpoint: reference.endpoint,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The endpoint the cache advertises for `key` (`get_flight_info`'s location).
    pub async fn public_endpoint(&self, key: &str) -> CacheResult<String> {
        let descriptor = FlightDescriptor::new_path(vec![ObjectKey::parse(key)?.to_string()]);
        let info = self
            .flight()
            .get_flight_info(descriptor)
            .await
            .map_err(flight_error)?;
        info.endpoint
            .first()
            .and_then(|e| e.location.first())
            .map(|l| l.uri.clone())
            .ok_or_else(|| {
                CacheError::InvalidArgument(format!("the cache sent no location for {key}"))
            })
    }
}

/// Interprets a get response.
fn fetched(schema: Option<SchemaRef>, batches: Vec<RecordBatch>) -> CacheResult<Fetched> {
    if let Some(schema) = schema.as_ref().filter(|s| wire::is_table_schema(s)) {
        let version = schema
            .metadata()
            .get(wire::VERSION_METADATA_KEY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return Ok(Fetched::Table {
            version,
            schema: schema.clone(),
            batches,
        });
    }
    let records = wire::decode_response(&batches)?;
    if records.is_empty() {
        return Ok(Fetched::NotModified);
    }
    let version = records.iter().map(|r| r.version).max().unwrap_or(0);
    let mut base_parts = Vec::new();
    let mut patches = Vec::new();
    for record in records {
        match record.kind {
            RecordKind::Base => base_parts.push(record.data),
            RecordKind::Patch => patches.push((record.version, record.data)),
        }
    }
    let base = (!base_parts.is_empty()).then(|| wire::concat(base_parts));
    Ok(Fetched::Blob {
        version,
        base,
        patches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_endpoints_map_to_plain_or_tls_urls_and_other_schemes_are_refused() {
        let url = |e: &str| grpc_url(e).unwrap();
        assert_eq!(
            url("grpc://10.0.0.1:9090"),
            ("http://10.0.0.1:9090".into(), false)
        );
        assert_eq!(url("http://h:1"), ("http://h:1".into(), false));
        assert_eq!(url("grpcs://h:1"), ("https://h:1".into(), true));
        assert_eq!(url("grpc+tls://h:1"), ("https://h:1".into(), true));
        let err = grpc_url("ftp://h").unwrap_err();
        assert!(err.to_string().contains("ftp://"), "{err}");
        assert!(grpc_url("h:1").is_err());
    }

    #[test]
    fn an_empty_response_is_not_modified() {
        assert_eq!(
            fetched(Some(wire::get_schema()), Vec::new()).unwrap(),
            Fetched::NotModified
        );
    }
}
