//! The object cache from Rust: put, get, update, patch and delete objects the way flamepy's
//! `flamepy.cache` does (spec Annex A).
//!
//! What: [`ObjectCache`] is a handle on one cache's Arrow Flight face, built from an endpoint
//! ([`ObjectCache::connect`]) or from the client settings ([`ObjectCache::from_config`]:
//! explicit > `FLAME_CACHE_ENDPOINT` > `cache.endpoint` of `~/.flame/flame.yaml` >
//! `grpc://127.0.0.1:9090`, see [`endpoint`]). Its calls:
//!
//! | call | does |
//! |---|---|
//! | [`put_object`](ObjectCache::put_object) | puts a value under `<app>/<ssn>` (the cache picks a UUID id) or at a whole key; returns its [`ObjectRef`] |
//! | [`get_object`](ObjectCache::get_object) | the current [`Object`]: base value plus every patch in order |
//! | [`refresh_object`](ObjectCache::refresh_object) | an incremental get: sends the held version, receives nothing, the missing patches, or a new base |
//! | [`update_object`](ObjectCache::update_object) | replaces the object at a key: version + 1, patches cleared |
//! | [`patch_object`](ObjectCache::patch_object) | appends a delta: version + 1 (the object must exist) |
//! | [`delete_objects`](ObjectCache::delete_objects) | deletes a key, `<app>/<ssn>` or `<app>/*` |
//! | [`list_objects`](ObjectCache::list_objects) | every object under a key prefix |
//!
//! Typed calls encode values as JSON with serde, like the SDK's typed tasks; the `*_bytes`
//! twins take and return raw bytes. Calls that address an existing object take anything that
//! names a key ([`AsObjectKey`]): an [`ObjectRef`], a `&str` or a `String`.
//!
//! Why a handle: one Flight channel serves every call, and any cache of a Flame cluster serves
//! any object (docs/cache.md), so there is nothing to look up per object. Patches stay apart
//! from the base in [`Object`] because only the application knows how a delta applies.
//!
//! Caveats:
//! - flamepy pickles its objects (cloudpickle or its `FLM\x00`.. fast paths), so an object put
//!   by flamepy does not decode as JSON ([`ClientError::ObjectCodec`]); read it with
//!   [`ObjectCache::get_bytes`]. Likewise flamepy cannot unpickle JSON put from Rust.
//! - Calls go to this handle's cache, not to `ObjectRef::endpoint`. In Flame every cache serves
//!   every key; against upstream's unreplicated caches, connect to `ref.endpoint` first.
//! - `update_object` on a key that does not exist creates it (it is a put at that key).
//! - There is no client-side object cache: hold an [`Object`] and call
//!   [`ObjectCache::refresh_object`] to revalidate it cheaply.
//! - Native Arrow tables are not [`Object`]s; use `flame_cache::CacheClient` for those.
//! - Errors: a malformed key or pattern is [`ClientError::Invalid`] (checked before any call);
//!   the cache's answers are [`ClientError::Flame`] with `NotFound`, `InvalidArgument`,
//!   `Unavailable` (also when the cache cannot be reached), `TooLarge`, `Exhausted` (disk
//!   full) or `Internal`.

pub mod endpoint;
pub mod object;

pub use endpoint::{
    CACHE_ENDPOINT_ENV, DEFAULT_CACHE_ENDPOINT, normalise_cache_endpoint, resolve_cache_ca,
    resolve_cache_endpoint,
};
pub use flame_cache::{ObjectInfo, ObjectRef};
pub use object::{Object, Refresh};

use crate::client::{ClientError, FlameError};
use bytes::Bytes;
use flame_cache::client::ClientTls;
use flame_cache::{CacheClient, CacheError, KeyPattern, ObjectKey, PutTarget};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Anything that names one object's key: an [`ObjectRef`], a `str` or a `String`.
pub trait AsObjectKey {
    /// The key, `<app>/<session>/<object_id>`.
    fn object_key(&self) -> &str;
}

impl AsObjectKey for ObjectRef {
    fn object_key(&self) -> &str {
        &self.key
    }
}

impl AsObjectKey for str {
    fn object_key(&self) -> &str {
        self
    }
}

impl AsObjectKey for String {
    fn object_key(&self) -> &str {
        self
    }
}

impl<K: AsObjectKey + ?Sized> AsObjectKey for &K {
    fn object_key(&self) -> &str {
        (**self).object_key()
    }
}

/// The SDK error for a cache failure; see the module docs for the mapping.
pub fn cache_error(err: CacheError) -> ClientError {
    match err {
        CacheError::InvalidKey { .. } => ClientError::Invalid(err.to_string()),
        CacheError::Config(why) => ClientError::Config(why),
        CacheError::Connect { .. } => ClientError::Flame(FlameError::Unavailable(err.to_string())),
        other => ClientError::Flame(FlameError::from(other)),
    }
}

fn checked_key(target: &(impl AsObjectKey + ?Sized)) -> Result<String, ClientError> {
    let key = target.object_key();
    ObjectKey::parse(key).map_err(cache_error)?;
    Ok(key.to_owned())
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Bytes, ClientError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ClientError::ObjectCodec {
            key: key.to_owned(),
            action: "encode the value",
            message: e.to_string(),
        })
}

/// A handle on one object cache; cheap to clone (the clones share one channel).
#[derive(Debug, Clone)]
pub struct ObjectCache {
    client: CacheClient,
}

impl ObjectCache {
    /// Connects to the cache at `endpoint` (`grpc://host:port`, `host:port`, or `grpcs://`
    /// trusting `FLAME_CA_FILE` or the system's roots), within 10 s. A malformed endpoint is
    /// [`ClientError::InvalidEndpoint`]; an unreachable or untrusted cache is
    /// [`FlameError::Unavailable`].
    pub async fn connect(endpoint: &str) -> Result<ObjectCache, ClientError> {
        ObjectCache::connect_with(endpoint, &ClientTls::from_env()).await
    }

    /// [`ObjectCache::connect`] trusting `tls` for a TLS endpoint.
    pub async fn connect_with(endpoint: &str, tls: &ClientTls) -> Result<ObjectCache, ClientError> {
        let endpoint = normalise_cache_endpoint(endpoint)?;
        let client = CacheClient::connect_with(&endpoint, tls)
            .await
            .map_err(cache_error)?;
        Ok(ObjectCache { client })
    }

    /// Connects to the cache [`resolve_cache_endpoint`] finds from `explicit`,
    /// `FLAME_CACHE_ENDPOINT` and `config` (default `~/.flame/flame.yaml`).
    pub async fn from_config(
        explicit: Option<&str>,
        config: Option<&Path>,
    ) -> Result<ObjectCache, ClientError> {
        let tls = ClientTls {
            ca_file: resolve_cache_ca(config)?,
        };
        ObjectCache::connect_with(&resolve_cache_endpoint(explicit, config)?, &tls).await
    }

    /// The endpoint this handle talks to.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The underlying Flight client, for native tables and other raw calls.
    pub fn client(&self) -> &CacheClient {
        &self.client
    }

    /// Puts `value` as JSON at `target`: `<app>/<session>` for a new object whose id the cache
    /// generates, or a whole key (created, or replaced as by [`ObjectCache::update_object`]).
    pub async fn put_object<T: Serialize + ?Sized>(
        &self,
        target: &str,
        value: &T,
    ) -> Result<ObjectRef, ClientError> {
        PutTarget::parse(target).map_err(cache_error)?;
        self.put_bytes(target, encode(target, value)?).await
    }

    /// [`ObjectCache::put_object`] with raw bytes.
    pub async fn put_bytes(
        &self,
        target: &str,
        data: impl Into<Bytes>,
    ) -> Result<ObjectRef, ClientError> {
        self.client
            .put(target, data.into())
            .await
            .map_err(cache_error)
    }

    /// Replaces the object at `target`'s key with `value` (JSON): the version goes up by one
    /// and its patches are dropped. Returns the new reference.
    pub async fn update_object<T: Serialize + ?Sized>(
        &self,
        target: &(impl AsObjectKey + ?Sized),
        value: &T,
    ) -> Result<ObjectRef, ClientError> {
        let key = checked_key(target)?;
        self.put_bytes(&key, encode(&key, value)?).await
    }

    /// [`ObjectCache::update_object`] with raw bytes.
    pub async fn update_bytes(
        &self,
        target: &(impl AsObjectKey + ?Sized),
        data: impl Into<Bytes>,
    ) -> Result<ObjectRef, ClientError> {
        let key = checked_key(target)?;
        self.put_bytes(&key, data).await
    }

    /// Appends `delta` (JSON) to the object at `target`'s key: the version goes up by one. The
    /// object must exist ([`FlameError::NotFound`] otherwise).
    pub async fn patch_object<P: Serialize + ?Sized>(
        &self,
        target: &(impl AsObjectKey + ?Sized),
        delta: &P,
    ) -> Result<ObjectRef, ClientError> {
        let key = checked_key(target)?;
        let bytes = encode(&key, delta)?;
        self.patch_bytes(&key, bytes).await
    }

    /// [`ObjectCache::patch_object`] with raw bytes.
    pub async fn patch_bytes(
        &self,
        target: &(impl AsObjectKey + ?Sized),
        delta: impl Into<Bytes>,
    ) -> Result<ObjectRef, ClientError> {
        let key = checked_key(target)?;
        self.client
            .patch(&key, delta.into())
            .await
            .map_err(cache_error)
    }

    /// The object at `target`'s key: its base decoded as `T` and its patches as `D` (JSON), in
    /// order, with its current version.
    pub async fn get_object<T, D>(
        &self,
        target: &(impl AsObjectKey + ?Sized),
    ) -> Result<Object<T, D>, ClientError>
    where
        T: DeserializeOwned,
        D: DeserializeOwned,
    {
        let key = checked_key(target)?;
        let fetched = self.client.get(&key, 0).await.map_err(cache_error)?;
        object::build(
            &key,
            fetched,
            &object::json::<T>("decode the base"),
            &object::json::<D>("decode a patch"),
        )
    }

    /// Brings `held` up to date with one get that sends its version: nothing travels when it
    /// is current, only the missing patches when patches were appended, and the whole object
    /// when it was updated since.
    pub async fn refresh_object<T, D>(
        &self,
        held: &mut Object<T, D>,
    ) -> Result<Refresh, ClientError>
    where
        T: DeserializeOwned,
        D: DeserializeOwned,
    {
        let key = checked_key(&held.key)?;
        let fetched = self
            .client
            .get(&key, held.version)
            .await
            .map_err(cache_error)?;
        object::apply(
            held,
            fetched,
            &object::json::<T>("decode the base"),
            &object::json::<D>("decode a patch"),
        )
    }

    /// [`ObjectCache::get_object`] with raw bytes.
    pub async fn get_bytes(
        &self,
        target: &(impl AsObjectKey + ?Sized),
    ) -> Result<Object<Bytes>, ClientError> {
        let key = checked_key(target)?;
        let fetched = self.client.get(&key, 0).await.map_err(cache_error)?;
        object::build(&key, fetched, &object::raw, &object::raw)
    }

    /// [`ObjectCache::refresh_object`] with raw bytes.
    pub async fn refresh_bytes(&self, held: &mut Object<Bytes>) -> Result<Refresh, ClientError> {
        let key = checked_key(&held.key)?;
        let fetched = self
            .client
            .get(&key, held.version)
            .await
            .map_err(cache_error)?;
        object::apply(held, fetched, &object::raw, &object::raw)
    }

    /// Deletes every object `pattern` names: a key, `<app>/<session>` or `<app>/*`. Deleting
    /// what does not exist succeeds.
    pub async fn delete_objects(&self, pattern: &str) -> Result<(), ClientError> {
        KeyPattern::parse(pattern).map_err(cache_error)?;
        self.client.delete(pattern).await.map_err(cache_error)
    }

    /// Every object of the cluster whose key starts with `prefix` (empty for all), by key.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ClientError> {
        self.client.list(prefix).await.map_err(cache_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_errors_map_to_client_errors_by_meaning() {
        let key = ObjectKey::parse("a/../c").unwrap_err();
        assert!(matches!(cache_error(key), ClientError::Invalid(_)));
        let missing = cache_error(CacheError::from(tonic::Status::not_found("gone")));
        assert!(missing.is_not_found(), "{missing:?}");
        let down = cache_error(CacheError::Connect {
            endpoint: "grpc://h:1".into(),
            reason: "refused".into(),
        });
        assert!(
            matches!(&down, ClientError::Flame(FlameError::Unavailable(m)) if m.contains("grpc://h:1")),
            "{down:?}"
        );
        let full = cache_error(CacheError::StorageFull("disk full".into()));
        assert!(matches!(full, ClientError::Flame(FlameError::Exhausted(_))));
    }

    #[test]
    fn keys_are_named_by_refs_strings_and_references_to_them() {
        let r = ObjectRef {
            endpoint: "e".into(),
            key: "a/s/o".into(),
            version: 1,
        };
        assert_eq!(checked_key(&r).unwrap(), "a/s/o");
        assert_eq!(checked_key("a/s/o").unwrap(), "a/s/o");
        assert_eq!(checked_key(&String::from("a/s/o")).unwrap(), "a/s/o");
        let err = checked_key("a/s").unwrap_err();
        assert!(
            err.to_string().contains("<app>/<session>/<object_id>"),
            "{err}"
        );
    }
}
