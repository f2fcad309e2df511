//! [`Peers`]: the client side of the peer protocol, with a connection per peer and a short
//! memory of which peers are down.
//!
//! What: one QUIC connection per peer address, opened on first use and reopened after it
//! breaks; one stream per request. Each call has a deadline. A peer whose connection fails is
//! marked down for a few seconds so writes pick another holder at once instead of waiting on
//! it again; reads still try it last.
//!
//! Large records are fetched as byte ranges over several streams at once (`fetch_chunk_bytes`
//! each, rounded up to a power of two, `fetch_streams` in flight), straight into one buffer.
//! Each range is hashed as its BLAKE3 subtree when it lands ([`treehash`]), and the merged
//! root must equal the record's hash; a mismatch fails the fetch so the caller tries another
//! holder.
//!
//! Caveat: a peer that answers but answers wrongly (bad hash) is not marked down; the caller
//! skips it for that request only.

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey};
use crate::object::{ObjectData, ObjectMeta, RecordMeta, ValueKind, hash};
use crate::peer::proto::{
    self, OfferAnswer, OfferItem, Request, Response, StoreAck, read_frame, read_into, write_bytes,
    write_frame,
};
use crate::peer::tls::server_name;
use crate::peer::treehash;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tuning of peer calls.
#[derive(Debug, Clone)]
pub struct PeerTuning {
    /// Deadline of a connection attempt.
    pub connect_timeout: Duration,
    /// Deadline of a small request (head, delete, list, offer).
    pub request_timeout: Duration,
    /// Minimum transfer rate assumed when computing the deadline of a large transfer, bytes/s.
    pub min_transfer_rate: u64,
    /// Size of one fetched range.
    pub fetch_chunk_bytes: u64,
    /// Ranges in flight per record.
    pub fetch_streams: usize,
    /// How long a peer whose connection failed is skipped by writes.
    pub down_for: Duration,
}

impl Default for PeerTuning {
    fn default() -> Self {
        PeerTuning {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            min_transfer_rate: 16 << 20,
            fetch_chunk_bytes: 8 << 20,
            fetch_streams: 8,
            down_for: Duration::from_secs(5),
        }
    }
}

/// The peer client. See the module docs.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    tuning: PeerTuning,
    connections: Mutex<HashMap<String, quinn::Connection>>,
    down: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peers {
    /// A client on `endpoint` (which must have a default client configuration).
    pub fn new(endpoint: quinn::Endpoint, tuning: PeerTuning) -> Peers {
        Peers {
            endpoint,
            tuning,
            connections: Mutex::default(),
            down: Mutex::default(),
        }
    }

    /// Closes the endpoint: every connection, both directions.
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"cache shutting down");
    }

    /// The tuning in use.
    pub fn tuning(&self) -> &PeerTuning {
        &self.tuning
    }

    /// Whether `addr` failed recently.
    pub fn is_down(&self, addr: &str) -> bool {
        lock(&self.down)
            .get(addr)
            .is_some_and(|until| Instant::now() < *until)
    }

    fn mark_down(&self, addr: &str) {
        lock(&self.connections).remove(addr);
        lock(&self.down).insert(addr.to_owned(), Instant::now() + self.tuning.down_for);
    }

    async fn connection(&self, addr: &str) -> CacheResult<quinn::Connection> {
        if let Some(c) = lock(&self.connections)
            .get(addr)
            .filter(|c| c.close_reason().is_none())
        {
            return Ok(c.clone());
        }
        let unreachable = |why: String| {
            CacheError::Unavailable(format!("cache peer {addr} is unreachable: {why}"))
        };
        let socket: SocketAddr = match addr.parse() {
            Ok(socket) => socket,
            Err(_) => tokio::net::lookup_host(addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .next()
                .ok_or_else(|| unreachable("the name resolves to no address".into()))?,
        };
        let connecting = self
            .endpoint
            .connect(socket, server_name())
            .map_err(|e| unreachable(e.to_string()))?;
        let connection = tokio::time::timeout(self.tuning.connect_timeout, connecting)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no handshake within {:?}",
                    self.tuning.connect_timeout
                ))
            })?
            .map_err(|e| unreachable(e.to_string()))?;
        lock(&self.connections).insert(addr.to_owned(), connection.clone());
        Ok(connection)
    }

    /// Runs one request on a fresh stream of `addr`'s connection within `deadline`, marking the
    /// peer down when the connection (not the peer's answer) fails.
    async fn call<T, F, Fut>(&self, addr: &str, deadline: Duration, body: F) -> CacheResult<T>
    where
        F: FnOnce(quinn::SendStream, quinn::RecvStream) -> Fut,
        Fut: Future<Output = CacheResult<T>>,
    {
        let result = tokio::time::timeout(deadline, async {
            let connection = self.connection(addr).await?;
            let (send, recv) = connection.open_bi().await.map_err(proto::stream_error)?;
            body(send, recv).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(CacheError::Unavailable(format!(
                "cache peer {addr} did not answer within {deadline:?}"
            )))
        });
        if let Err(CacheError::Unavailable(_)) = &result {
            self.mark_down(addr);
        }
        result
    }

    fn transfer_deadline(&self, bytes: u64) -> Duration {
        self.tuning.request_timeout
            + Duration::from_secs_f64(bytes as f64 / self.tuning.min_transfer_rate as f64)
    }

    /// Sends `request` and `payload`, then reads the answer frame.
    async fn exchange(
        addr: &str,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        request: &Request,
        payload: Vec<Bytes>,
    ) -> CacheResult<(Response, quinn::RecvStream)> {
        write_frame(&mut send, request).await?;
        for bytes in payload {
            write_bytes(&mut send, bytes).await?;
        }
        send.finish().map_err(proto::stream_error)?;
        match read_frame::<Response>(&mut recv).await? {
            Response::Error(e) => Err(CacheError::from(e)),
            response => Ok((response, recv)),
        }
        .map_err(|e| match e {
            CacheError::Unavailable(why) => {
                CacheError::Unavailable(format!("cache peer {addr}: {why}"))
            }
            other => other,
        })
    }

    async fn simple(
        &self,
        addr: &str,
        request: Request,
        payload: Vec<Bytes>,
        size: u64,
    ) -> CacheResult<Response> {
        let deadline = self.transfer_deadline(size);
        self.call(addr, deadline, |send, recv| async move {
            Ok(Self::exchange(addr, send, recv, &request, payload).await?.0)
        })
        .await
    }

    /// The peer's meta of `key`, if it holds it.
    pub async fn head(&self, addr: &str, key: &ObjectKey) -> CacheResult<Option<ObjectMeta>> {
        match self
            .simple(addr, Request::Head { key: key.clone() }, Vec::new(), 0)
            .await?
        {
            Response::Head(meta) => Ok(meta),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Fetches records `indices` (0 = base, `i` = patch `i - 1`) of the object `meta`
    /// describes, each checked against its hash.
    pub async fn fetch(
        &self,
        addr: &str,
        meta: &ObjectMeta,
        indices: &[usize],
    ) -> CacheResult<Vec<Bytes>> {
        let records: Vec<(usize, RecordMeta)> = meta
            .records()
            .enumerate()
            .map(|(i, (_, r))| (i, r.clone()))
            .collect();
        let mut out = Vec::with_capacity(indices.len());
        for &index in indices {
            let record = records.get(index).map(|r| r.1.clone()).ok_or_else(|| {
                CacheError::Internal(format!("{} has no record {index}", meta.key))
            })?;
            out.push(self.fetch_record(addr, meta, index, &record).await?);
        }
        Ok(out)
    }

    async fn fetch_record(
        &self,
        addr: &str,
        meta: &ObjectMeta,
        index: usize,
        record: &RecordMeta,
    ) -> CacheResult<Bytes> {
        let len = usize::try_from(record.len)
            .map_err(|_| CacheError::Internal("a record does not fit in memory".into()))?;
        let mut buffer = vec![0_u8; len];
        let leaf = treehash::leaf_len(self.tuning.fetch_chunk_bytes);
        let chunk = usize::try_from(leaf).unwrap_or(usize::MAX);
        let ranges: Vec<(u64, &mut [u8])> = buffer
            .chunks_mut(chunk)
            .enumerate()
            .map(|(i, s)| ((i * chunk) as u64, s))
            .collect();
        let whole = ranges.len() <= 1;
        // Collected first: a lazily mapped stream of borrowing futures is not provably `Send`.
        let reads: Vec<_> = ranges
            .into_iter()
            .map(|(offset, out)| async move {
                self.read_range(addr, meta, index, offset, &mut *out)
                    .await?;
                // Hashed as it lands, while other ranges are still in flight.
                Ok::<_, CacheError>((offset, (!whole).then(|| treehash::range_value(offset, out))))
            })
            .collect();
        let mut values: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(self.tuning.fetch_streams.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        values.sort_unstable_by_key(|(offset, _)| *offset);
        let values: Vec<_> = values.into_iter().filter_map(|(_, value)| value).collect();
        let received = match whole {
            true => hash(&buffer),
            false => treehash::root(record.len, leaf, &values).ok_or_else(|| {
                CacheError::Internal(format!("the ranges of {} do not cover it", meta.key))
            })?,
        };
        if received != record.hash {
            return Err(CacheError::Corrupt(format!(
                "cache peer {addr} sent record v{} of {} that does not match its hash",
                record.version, meta.key
            )));
        }
        Ok(Bytes::from(buffer))
    }

    async fn read_range(
        &self,
        addr: &str,
        meta: &ObjectMeta,
        index: usize,
        offset: u64,
        out: &mut [u8],
    ) -> CacheResult<()> {
        let request = Request::Read {
            key: meta.key.clone(),
            version: meta.version(),
            record: index as u32,
            offset,
            len: out.len() as u64,
        };
        let deadline = self.transfer_deadline(out.len() as u64);
        self.call(addr, deadline, |send, recv| async move {
            match Self::exchange(addr, send, recv, &request, Vec::new()).await? {
                (Response::Data { len }, mut recv) if len == out.len() as u64 => {
                    read_into(&mut recv, out).await
                }
                (other, _) => Err(unexpected(addr, &other)),
            }
        })
        .await
    }

    /// Forwards a put to the primary `addr`; returns the stored object's meta.
    pub async fn forward_put(
        &self,
        addr: &str,
        key: &ObjectKey,
        kind: ValueKind,
        named: bool,
        value: Bytes,
    ) -> CacheResult<ObjectMeta> {
        let request = Request::Put {
            key: key.clone(),
            kind,
            len: value.len() as u64,
            named,
        };
        let size = value.len() as u64;
        match self.simple(addr, request, vec![value], size).await? {
            Response::Stored(meta) => Ok(meta),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Forwards a patch to the primary `addr`; returns the object's meta after it.
    pub async fn forward_patch(
        &self,
        addr: &str,
        key: &ObjectKey,
        delta: Bytes,
    ) -> CacheResult<ObjectMeta> {
        let request = Request::Patch {
            key: key.clone(),
            len: delta.len() as u64,
        };
        let size = delta.len() as u64;
        match self.simple(addr, request, vec![delta], size).await? {
            Response::Stored(meta) => Ok(meta),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Replicates a whole object to `addr`.
    pub async fn store(&self, addr: &str, data: &ObjectData) -> CacheResult<StoreAck> {
        let payload: Vec<Bytes> = std::iter::once(data.base.clone())
            .chain(data.patches.iter().cloned())
            .collect();
        let request = Request::Store {
            meta: data.meta.clone(),
        };
        match self.simple(addr, request, payload, data.size()).await? {
            Response::Installed(ack) => Ok(ack),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Replicates the last patch of `data` to `addr`, or the whole object when the peer's copy
    /// is not the patch's base.
    pub async fn store_patch(&self, addr: &str, data: &ObjectData) -> CacheResult<StoreAck> {
        let (Some(patch), Some(bytes)) = (data.meta.patches.last(), data.patches.last()) else {
            return self.store(addr, data).await;
        };
        let request = Request::StorePatch {
            key: data.meta.key.clone(),
            base: data.meta.base.clone(),
            patch: patch.clone(),
        };
        match self
            .simple(addr, request, vec![bytes.clone()], patch.len)
            .await?
        {
            Response::Installed(StoreAck::NeedObject) => self.store(addr, data).await,
            Response::Installed(ack) => Ok(ack),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Asks `addr` to delete what `pattern` covers as of `at_ms`.
    pub async fn delete(&self, addr: &str, pattern: &KeyPattern, at_ms: i64) -> CacheResult<u64> {
        let request = Request::Delete {
            pattern: pattern.clone(),
            at_ms,
        };
        match self.simple(addr, request, Vec::new(), 0).await? {
            Response::Deleted(n) => Ok(n),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// `addr`'s objects under `prefix`.
    pub async fn list(&self, addr: &str, prefix: &str) -> CacheResult<Vec<ObjectMeta>> {
        let request = Request::List {
            prefix: prefix.to_owned(),
        };
        match self.simple(addr, request, Vec::new(), 0).await? {
            Response::List(metas) => Ok(metas),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Offers `items` to `addr` (repair); one answer per item.
    pub async fn offer(&self, addr: &str, items: Vec<OfferItem>) -> CacheResult<Vec<OfferAnswer>> {
        let count = items.len();
        match self
            .simple(addr, Request::Offer { items }, Vec::new(), 0)
            .await?
        {
            Response::Offer(answers) if answers.len() == count => Ok(answers),
            other => Err(unexpected(addr, &other)),
        }
    }
}

fn unexpected(addr: &str, response: &Response) -> CacheError {
    let name = match response {
        Response::Error(_) => "an error",
        _ => "an answer of another kind",
    };
    CacheError::Internal(format!(
        "cache peer {addr} sent {name} than the request expects"
    ))
}
