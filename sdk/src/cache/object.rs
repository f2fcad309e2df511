//! [`Object`]: a cached object as a client holds it (base value, patches in order, version),
//! and how a get's answer builds or advances one.
//!
//! What: a full get makes an [`Object`]; a later get that sends the held version answers "not
//! modified", only the patches the client lacks, or (after an update, which clears the
//! patches) a new base; `apply` turns that answer into a [`Refresh`] and updates the held
//! object in place. Values are decoded by a caller-given function, so the same code serves raw
//! bytes ([`Object<Bytes>`]) and serde types (JSON).
//!
//! Why keep patches apart instead of merging them: the cache stores deltas opaquely; only the
//! application knows how a delta applies to its base (append to a list, add to a counter...),
//! so [`Object::fold`] leaves that step to the caller.
//!
//! Caveat: a native Arrow table (put by `put_table` or flamepy's table fast path) is not an
//! [`Object`]; gets of one fail with [`ClientError::Invalid`].

use crate::client::ClientError;
use bytes::Bytes;
use flame_cache::Fetched;

/// One cached object: its key, version, base value and the patches appended since the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T, D = T> {
    /// The object's key, `<app>/<session>/<object_id>`.
    pub key: String,
    /// The version this copy reflects (the base's version plus one per patch).
    pub version: u64,
    /// The value last put or updated.
    pub base: T,
    /// The patches appended after the base, oldest first.
    pub patches: Vec<D>,
}

impl<T, D> Object<T, D> {
    /// The current value, computed by applying every patch to the base in order with `apply`.
    pub fn fold<V>(&self, init: impl FnOnce(&T) -> V, apply: impl FnMut(V, &D) -> V) -> V {
        self.patches.iter().fold(init(&self.base), apply)
    }
}

/// What an incremental get changed in a held [`Object`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The held version is current; nothing was sent.
    Unchanged,
    /// This many patches were appended to the held copy.
    Patched(usize),
    /// The object was replaced (updated since), so base and patches were sent again.
    Replaced,
}

/// Decodes a base or a patch; errors should name the key and the part.
pub(crate) type Decoder<'a, V> = &'a dyn Fn(&str, Bytes) -> Result<V, ClientError>;

fn table_error(key: &str) -> ClientError {
    ClientError::Invalid(format!(
        "{key} is a native Arrow table, not a blob; read it with flame_cache::CacheClient"
    ))
}

/// The object a full get (client version 0) answered.
pub(crate) fn build<T, D>(
    key: &str,
    fetched: Fetched,
    base: Decoder<'_, T>,
    patch: Decoder<'_, D>,
) -> Result<Object<T, D>, ClientError> {
    match fetched {
        Fetched::Blob {
            version,
            base: Some(bytes),
            patches,
        } => Ok(Object {
            key: key.to_owned(),
            version,
            base: base(key, bytes)?,
            patches: patches
                .into_iter()
                .map(|(_, p)| patch(key, p))
                .collect::<Result<_, _>>()?,
        }),
        Fetched::Blob { base: None, .. } | Fetched::NotModified => Err(ClientError::Protocol(
            format!("the cache answered a full get of {key} without its base"),
        )),
        Fetched::Table { .. } => Err(table_error(key)),
    }
}

/// Applies the answer to an incremental get (sent with `held.version`) to `held`.
pub(crate) fn apply<T, D>(
    held: &mut Object<T, D>,
    fetched: Fetched,
    base: Decoder<'_, T>,
    patch: Decoder<'_, D>,
) -> Result<Refresh, ClientError> {
    match fetched {
        Fetched::NotModified => Ok(Refresh::Unchanged),
        Fetched::Blob {
            version,
            base: None,
            patches,
        } => {
            let added = patches
                .into_iter()
                .filter(|(v, _)| *v > held.version)
                .map(|(_, p)| patch(&held.key, p))
                .collect::<Result<Vec<_>, _>>()?;
            let count = added.len();
            held.patches.extend(added);
            held.version = version;
            Ok(Refresh::Patched(count))
        }
        fetched @ Fetched::Blob { base: Some(_), .. } => {
            *held = build(&held.key.clone(), fetched, base, patch)?;
            Ok(Refresh::Replaced)
        }
        Fetched::Table { .. } => Err(table_error(&held.key)),
    }
}

/// A [`Decoder`] of JSON values; `action` names the part (`decode the base`, ...).
pub(crate) fn json<V: serde::de::DeserializeOwned>(
    action: &'static str,
) -> impl Fn(&str, Bytes) -> Result<V, ClientError> {
    move |key, bytes| {
        serde_json::from_slice(&bytes).map_err(|e| ClientError::ObjectCodec {
            key: key.to_owned(),
            action,
            message: e.to_string(),
        })
    }
}

/// The identity [`Decoder`] for raw bytes.
pub(crate) fn raw(_key: &str, bytes: Bytes) -> Result<Bytes, ClientError> {
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(version: u64, base: Option<&str>, patches: &[(u64, &str)]) -> Fetched {
        Fetched::Blob {
            version,
            base: base.map(|b| Bytes::from(b.to_owned())),
            patches: patches
                .iter()
                .map(|(v, p)| (*v, Bytes::from((*p).to_owned())))
                .collect(),
        }
    }

    #[test]
    fn a_full_answer_builds_base_and_patches_in_order() {
        let object = build(
            "a/s/o",
            blob(3, Some("b"), &[(2, "p2"), (3, "p3")]),
            &raw,
            &raw,
        )
        .expect("object");
        assert_eq!(object.version, 3);
        assert_eq!(object.base, "b");
        assert_eq!(object.patches, vec!["p2", "p3"]);
        let joined = object.fold(
            |b| b.to_vec(),
            |mut v, p| {
                v.extend_from_slice(p);
                v
            },
        );
        assert_eq!(joined, b"bp2p3");
    }

    #[test]
    fn incremental_answers_append_replace_or_leave_the_held_copy() {
        let mut held = build("a/s/o", blob(1, Some("b"), &[]), &raw, &raw).unwrap();
        let refresh = apply(&mut held, Fetched::NotModified, &raw, &raw).unwrap();
        assert_eq!((refresh, held.version), (Refresh::Unchanged, 1));
        let refresh = apply(&mut held, blob(3, None, &[(2, "x"), (3, "y")]), &raw, &raw).unwrap();
        assert_eq!((refresh, held.version), (Refresh::Patched(2), 3));
        assert_eq!(held.patches, vec!["x", "y"]);
        let refresh = apply(&mut held, blob(4, Some("new"), &[]), &raw, &raw).unwrap();
        assert_eq!((refresh, held.version), (Refresh::Replaced, 4));
        assert_eq!((held.base.as_ref(), held.patches.len()), (&b"new"[..], 0));
    }

    #[test]
    fn bad_json_names_the_key_and_the_part() {
        let decode = json::<u32>("decode a patch");
        let err = decode("a/s/o", Bytes::from_static(b"nope")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot decode a patch of object a/s/o: "),
            "{err}"
        );
    }

    #[test]
    fn a_full_answer_without_a_base_is_a_protocol_error() {
        let err = build::<Bytes, Bytes>("a/s/o", Fetched::NotModified, &raw, &raw).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }
}
