//! The peer protocol between caches: messages and framing on QUIC streams.
//!
//! What: every request is one bidirectional QUIC stream. The opener writes a frame (a
//! little-endian `u32` length and a postcard [`Request`]) followed by the raw bytes the request
//! announces; the other side answers with a frame holding a [`Response`] followed by the raw
//! bytes it announces, then finishes the stream.
//!
//! | Request | Raw bytes after it | Response | Raw bytes after it |
//! |---|---|---|---|
//! | `Head` | — | `Head(Option<meta>)` | — |
//! | `Read` a byte range of one record | — | `Data { len }` | the range |
//! | `Put` (forwarded to the primary) | the value | `Stored(meta)` | — |
//! | `Patch` (forwarded to the primary) | the delta | `Stored(meta)` | — |
//! | `Store` a whole object (replication, repair) | each record, in order | `Installed(ack)` | — |
//! | `StorePatch` (replication) | the patch | `Installed(ack)` | — |
//! | `Delete` | — | `Deleted(count)` | — |
//! | `List` | — | `List(metas)` | — |
//! | `Offer` keys and versions (repair) | — | `Offer(answers)` | — |
//!
//! Any request may instead be answered with `Error(PeerError)`, which carries the meaning of a
//! [`CacheError`] across.
//!
//! Why raw bytes outside the frame: values are large; they are written from and read into
//! `Bytes` without a serialisation pass, and a reader can place a range of a record straight
//! where it belongs.
//!
//! Caveat: frames are limited to [`MAX_FRAME`]; a `List` answer larger than that is refused,
//! so listings of more than roughly 200,000 objects on one node need a narrower prefix.

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey};
use crate::object::{ObjectMeta, RecordMeta, ValueKind};
use serde::{Deserialize, Serialize};

/// The ALPN protocol name of the peer protocol.
pub const ALPN: &[u8] = b"flame-cache/1";
/// Largest frame accepted, in bytes.
pub const MAX_FRAME: u32 = 64 << 20;

/// A request from one cache to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// The meta of an object, if the peer holds it.
    Head {
        /// The object.
        key: ObjectKey,
    },
    /// A byte range of one record of the object at `version`.
    Read {
        /// The object.
        key: ObjectKey,
        /// The version the reader saw in `Head`; a peer now at another version refuses.
        version: u64,
        /// The record: 0 is the base, `i` is patch `i - 1`.
        record: u32,
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
    /// A put forwarded to the key's primary; `len` bytes of value follow.
    Put {
        /// The object.
        key: ObjectKey,
        /// Blob or table.
        kind: ValueKind,
        /// The value's size.
        len: u64,
        /// Whether the client named the key (so an older version may exist elsewhere), as
        /// opposed to a fresh server-chosen id.
        named: bool,
    },
    /// A patch forwarded to the key's primary; `len` bytes of delta follow.
    Patch {
        /// The object.
        key: ObjectKey,
        /// The delta's size.
        len: u64,
    },
    /// Store this whole object (replication or repair); each record's bytes follow in order.
    Store {
        /// The object's meta; the record sizes say how many bytes follow.
        meta: ObjectMeta,
    },
    /// Append this patch to the copy at `base`; the patch's bytes follow.
    StorePatch {
        /// The object.
        key: ObjectKey,
        /// The base the patch follows.
        base: RecordMeta,
        /// The patch.
        patch: RecordMeta,
    },
    /// Delete what `pattern` covers, stored at or before `at_ms`, and remember it.
    Delete {
        /// What to delete.
        pattern: KeyPattern,
        /// The delete's time.
        at_ms: i64,
    },
    /// The metas of the peer's objects under `prefix`.
    List {
        /// Key prefix; empty for all.
        prefix: String,
    },
    /// Repair: "I hold these; do you?"
    Offer {
        /// The objects offered.
        items: Vec<OfferItem>,
    },
}

/// One object offered during repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferItem {
    /// The object.
    pub key: ObjectKey,
    /// The offerer's version.
    pub version: u64,
    /// When its base was stored.
    pub stored_at_ms: i64,
}

/// A peer's answer to one [`OfferItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferAnswer {
    /// The peer has this version or a newer one.
    Have,
    /// The peer lacks it or has an older version: send it.
    Want,
    /// A tombstone covers it: the offerer should delete its copy.
    Deleted,
}

/// How a `Store` or `StorePatch` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreAck {
    /// Stored.
    Stored,
    /// The peer already had this version or a newer one.
    Unchanged,
    /// (For a patch) the peer's copy is not the patch's base: send the whole object.
    NeedObject,
}

/// An answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The meta, if held.
    Head(Option<ObjectMeta>),
    /// `len` bytes of the requested range follow.
    Data {
        /// The number of bytes that follow.
        len: u64,
    },
    /// The primary stored the put or patch; the object's meta now.
    Stored(ObjectMeta),
    /// The outcome of a `Store` or `StorePatch`.
    Installed(StoreAck),
    /// How many objects were deleted.
    Deleted(u64),
    /// The listing.
    List(Vec<ObjectMeta>),
    /// One answer per offered item, in order.
    Offer(Vec<OfferAnswer>),
    /// The request failed.
    Error(PeerError),
}

/// A [`CacheError`] in transit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerError {
    /// [`CacheError::InvalidKey`] or [`CacheError::InvalidArgument`].
    InvalidArgument(String),
    /// [`CacheError::NotFound`].
    NotFound(String),
    /// [`CacheError::TooLarge`].
    TooLarge {
        /// What.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// [`CacheError::StorageFull`].
    StorageFull(String),
    /// [`CacheError::Deleted`].
    Deleted(String),
    /// [`CacheError::Unavailable`].
    Unavailable(String),
    /// Anything else.
    Internal(String),
}

impl From<&CacheError> for PeerError {
    fn from(err: &CacheError) -> Self {
        let text = err.to_string();
        match err {
            CacheError::InvalidKey { .. } | CacheError::InvalidArgument(_) => {
                PeerError::InvalidArgument(text)
            }
            CacheError::NotFound(key) => PeerError::NotFound(key.clone()),
            CacheError::TooLarge { what, size, limit } => PeerError::TooLarge {
                what: what.clone(),
                size: *size as u64,
                limit: *limit as u64,
            },
            CacheError::StorageFull(_) => PeerError::StorageFull(text),
            CacheError::Deleted(_) => PeerError::Deleted(text),
            CacheError::Unavailable(_) | CacheError::Connect { .. } => PeerError::Unavailable(text),
            _ => PeerError::Internal(text),
        }
    }
}

impl From<PeerError> for CacheError {
    fn from(err: PeerError) -> Self {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match err {
            PeerError::InvalidArgument(m) => CacheError::InvalidArgument(m),
            PeerError::NotFound(key) => CacheError::NotFound(key),
            PeerError::TooLarge {
                what,
                size: s,
                limit,
            } => CacheError::TooLarge {
                what,
                size: size(s),
                limit: size(limit),
            },
            PeerError::StorageFull(m) => CacheError::StorageFull(m),
            PeerError::Deleted(m) => CacheError::Deleted(m),
            PeerError::Unavailable(m) => CacheError::Unavailable(m),
            PeerError::Internal(m) => CacheError::Internal(m),
        }
    }
}

/// Encodes a frame: length, then the postcard message.
pub fn encode<T: Serialize>(message: &T) -> CacheResult<Vec<u8>> {
    let body = postcard::to_allocvec(message)
        .map_err(|e| CacheError::Internal(format!("encoding a peer message: {e}")))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| {
            CacheError::InvalidArgument(format!(
                "a peer message of {} bytes exceeds the frame limit of {MAX_FRAME} bytes",
                body.len()
            ))
        })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a frame's body.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> CacheResult<T> {
    postcard::from_bytes(body)
        .map_err(|e| CacheError::InvalidArgument(format!("a malformed peer message: {e}")))
}

/// A broken stream or connection: the peer is unreachable for this request.
pub fn stream_error(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("peer stream failed: {e}"))
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> CacheResult<()> {
    send.write_all(&encode(message)?)
        .await
        .map_err(stream_error)
}

/// Reads one frame.
pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> CacheResult<T> {
    let mut len = [0_u8; 4];
    recv.read_exact(&mut len).await.map_err(stream_error)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(CacheError::InvalidArgument(format!(
            "a peer frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes"
        )));
    }
    let mut body = vec![0_u8; len as usize];
    recv.read_exact(&mut body).await.map_err(stream_error)?;
    decode(&body)
}

/// Reads exactly `len` raw bytes into `out`.
pub async fn read_into(recv: &mut quinn::RecvStream, out: &mut [u8]) -> CacheResult<()> {
    recv.read_exact(out).await.map_err(stream_error)
}

/// Reads exactly `len` raw bytes.
pub async fn read_bytes(recv: &mut quinn::RecvStream, len: u64) -> CacheResult<bytes::Bytes> {
    let len = usize::try_from(len)
        .map_err(|_| CacheError::InvalidArgument("a peer payload does not fit in memory".into()))?;
    let mut out = vec![0_u8; len];
    read_into(recv, &mut out).await?;
    Ok(bytes::Bytes::from(out))
}

/// Writes raw bytes without copying them.
pub async fn write_bytes(send: &mut quinn::SendStream, bytes: bytes::Bytes) -> CacheResult<()> {
    send.write_chunk(bytes).await.map_err(stream_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_meaning_across_the_wire() {
        let errors = [
            CacheError::NotFound("a/b/c".into()),
            CacheError::StorageFull("disk full".into()),
            CacheError::Deleted("gone".into()),
            CacheError::TooLarge {
                what: "object a/b/c".into(),
                size: 10,
                limit: 5,
            },
        ];
        for err in errors {
            let back = CacheError::from(PeerError::from(&err));
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&err),
                "{err:?} -> {back:?}"
            );
        }
    }

    #[test]
    fn a_frame_round_trips_and_garbage_is_refused() {
        let request = Request::Head {
            key: ObjectKey::parse("a/b/c").unwrap(),
        };
        let frame = encode(&request).unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert!(matches!(
            decode::<Request>(&frame[4..]).unwrap(),
            Request::Head { .. }
        ));
        assert!(decode::<Request>(&[0xff, 0xff, 0xff]).is_err());
    }
}
