//! The server side of the peer protocol: accepts QUIC connections from other caches and
//! answers their requests through a [`PeerService`].
//!
//! What: one task per connection, one task per stream. A request frame is read, the raw bytes
//! it announces are read (refused beyond [`PeerService::max_payload`] before anything is
//! allocated), the service answers, and the answer is written and the stream finished.
//!
//! Why a trait: the server knows the wire, the service (the cache node) knows what to do; the
//! node also uses the peer *client*, and the trait keeps the two modules from importing each
//! other.
//!
//! Caveats: the TLS layer has already refused peers without a certificate from the cluster
//! CA; a malformed request gets an `Error` answer and closes only its own stream.

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey};
use crate::object::{ObjectData, ObjectMeta, RecordMeta, SharedObject, ValueKind};
use crate::peer::proto::{
    OfferAnswer, OfferItem, PeerError, Request, Response, StoreAck, read_bytes, read_frame,
    write_bytes, write_frame,
};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use tracing::{debug, warn};

/// What a cache does for its peers.
pub trait PeerService: Send + Sync + 'static {
    /// Largest value, delta or object accepted, in bytes.
    fn max_payload(&self) -> u64;
    /// The meta of a held object.
    fn head(&self, key: &ObjectKey) -> Option<ObjectMeta>;
    /// A held object with its bytes.
    fn object(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = CacheResult<Option<SharedObject>>> + Send;
    /// A put forwarded to this node as the key's primary.
    fn put(
        &self,
        key: ObjectKey,
        kind: ValueKind,
        named: bool,
        value: Bytes,
    ) -> impl Future<Output = CacheResult<ObjectMeta>> + Send;
    /// A patch forwarded to this node as the key's primary.
    fn patch(
        &self,
        key: ObjectKey,
        delta: Bytes,
    ) -> impl Future<Output = CacheResult<ObjectMeta>> + Send;
    /// A replicated whole object.
    fn store(&self, data: ObjectData) -> impl Future<Output = CacheResult<StoreAck>> + Send;
    /// A replicated patch.
    fn store_patch(
        &self,
        key: ObjectKey,
        base: RecordMeta,
        patch: RecordMeta,
        bytes: Bytes,
    ) -> impl Future<Output = CacheResult<StoreAck>> + Send;
    /// A broadcast delete.
    fn delete(
        &self,
        pattern: KeyPattern,
        at_ms: i64,
    ) -> impl Future<Output = CacheResult<u64>> + Send;
    /// The held objects under `prefix`.
    fn list(&self, prefix: &str) -> Vec<ObjectMeta>;
    /// Answers a repair offer.
    fn offer(&self, items: &[OfferItem]) -> Vec<OfferAnswer>;
}

/// Accepts peer connections on `endpoint` until it is closed.
pub async fn serve<S: PeerService>(endpoint: quinn::Endpoint, service: Arc<S>) {
    while let Some(incoming) = endpoint.accept().await {
        let service = service.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_connection(connection, service).await,
                Err(e) => warn!(%remote, error = %e, "refused a cache peer connection"),
            }
        });
    }
}

async fn serve_connection<S: PeerService>(connection: quinn::Connection, service: Arc<S>) {
    let remote = connection.remote_address();
    debug!(%remote, "cache peer connected");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let service = service.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_stream(send, recv, &*service).await {
                        debug!(%remote, error = %e, "a cache peer stream ended early");
                    }
                });
            }
            Err(e) => {
                debug!(%remote, error = %e, "cache peer connection closed");
                return;
            }
        }
    }
}

async fn serve_stream<S: PeerService>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: &S,
) -> CacheResult<()> {
    let request: Request = match read_frame(&mut recv).await {
        Ok(r) => r,
        Err(e) => {
            write_frame(&mut send, &Response::Error(PeerError::from(&e))).await?;
            return send.finish().map_err(crate::peer::proto::stream_error);
        }
    };
    let (response, payload) = match answer(request, &mut recv, service).await {
        Ok(answer) => answer,
        Err(e) => (Response::Error(PeerError::from(&e)), None),
    };
    write_frame(&mut send, &response).await?;
    if let Some(bytes) = payload {
        write_bytes(&mut send, bytes).await?;
    }
    send.finish().map_err(crate::peer::proto::stream_error)
}

/// Reads `len` raw bytes after checking them against the service's limit.
async fn payload<S: PeerService>(
    recv: &mut quinn::RecvStream,
    service: &S,
    len: u64,
    what: &str,
) -> CacheResult<Bytes> {
    let limit = service.max_payload();
    if len > limit {
        return Err(CacheError::TooLarge {
            what: what.to_owned(),
            size: usize::try_from(len).unwrap_or(usize::MAX),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        });
    }
    read_bytes(recv, len).await
}

async fn answer<S: PeerService>(
    request: Request,
    recv: &mut quinn::RecvStream,
    service: &S,
) -> CacheResult<(Response, Option<Bytes>)> {
    let response = match request {
        Request::Head { key } => Response::Head(service.head(&key)),
        Request::Read {
            key,
            version,
            record,
            offset,
            len,
        } => {
            let bytes = read_range(service, &key, version, record, offset, len).await?;
            return Ok((
                Response::Data {
                    len: bytes.len() as u64,
                },
                Some(bytes),
            ));
        }
        Request::Put {
            key,
            kind,
            len,
            named,
        } => {
            let value = payload(recv, service, len, &format!("object {key}")).await?;
            Response::Stored(service.put(key, kind, named, value).await?)
        }
        Request::Patch { key, len } => {
            let delta = payload(recv, service, len, &format!("patch of {key}")).await?;
            Response::Stored(service.patch(key, delta).await?)
        }
        Request::Store { meta } => Response::Installed(
            service
                .store(receive_object(recv, service, meta).await?)
                .await?,
        ),
        Request::StorePatch { key, base, patch } => {
            let bytes = payload(recv, service, patch.len, &format!("patch of {key}")).await?;
            Response::Installed(service.store_patch(key, base, patch, bytes).await?)
        }
        Request::Delete { pattern, at_ms } => {
            Response::Deleted(service.delete(pattern, at_ms).await?)
        }
        Request::List { prefix } => Response::List(service.list(&prefix)),
        Request::Offer { items } => Response::Offer(service.offer(&items)),
    };
    Ok((response, None))
}

/// Reads the records of a replicated object and checks them against its meta.
async fn receive_object<S: PeerService>(
    recv: &mut quinn::RecvStream,
    service: &S,
    meta: ObjectMeta,
) -> CacheResult<ObjectData> {
    if meta.size() > service.max_payload() {
        return Err(CacheError::TooLarge {
            what: format!("object {}", meta.key),
            size: usize::try_from(meta.size()).unwrap_or(usize::MAX),
            limit: usize::try_from(service.max_payload()).unwrap_or(usize::MAX),
        });
    }
    let base = read_bytes(recv, meta.base.len).await?;
    let mut patches = Vec::with_capacity(meta.patches.len());
    for patch in &meta.patches {
        patches.push(read_bytes(recv, patch.len).await?);
    }
    let data = ObjectData {
        meta,
        base,
        patches,
    };
    data.verify().map_err(CacheError::Corrupt)?;
    Ok(data)
}

async fn read_range<S: PeerService>(
    service: &S,
    key: &ObjectKey,
    version: u64,
    record: u32,
    offset: u64,
    len: u64,
) -> CacheResult<Bytes> {
    let object = service
        .object(key)
        .await?
        .ok_or_else(|| CacheError::NotFound(key.to_string()))?;
    if object.meta.version() != version {
        return Err(CacheError::Unavailable(format!(
            "object {key} changed from version {version} to {} during the read",
            object.meta.version()
        )));
    }
    let bytes = object.record(record as usize).ok_or_else(|| {
        CacheError::InvalidArgument(format!("object {key} has no record {record}"))
    })?;
    let end = offset
        .checked_add(len)
        .filter(|end| *end <= bytes.len() as u64)
        .ok_or_else(|| {
            CacheError::InvalidArgument(format!(
                "bytes {offset}+{len} are outside record {record} of {key}"
            ))
        })?;
    Ok(bytes.slice(offset as usize..end as usize))
}
