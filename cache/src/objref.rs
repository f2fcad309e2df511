//! [`ObjectRef`]: flamepy's reference to a cached object, as a BSON document (spec Annex A).
//!
//! What: `{endpoint: string, key: string, version: int64}`. A put answers with one in
//! `PutResult.app_metadata`; flamepy stores it as session `common_data` and as Runner task
//! inputs and outputs, and reads the object from `endpoint`.
//!
//! Why BSON: it is what flamepy 0.6.0 writes and reads; the `bson` crate does the encoding.
//!
//! Caveat: Python's BSON encoder writes small integers as int32, so decoding accepts an int32
//! or int64 `version`; encoding always writes int64 as the spec says.

use crate::error::{CacheError, CacheResult};
use bson::{Bson, Document, doc};

/// A reference to one version of a cached object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The Flight URL of a cache that serves the object, such as `grpc://10.0.0.5:9090`.
    pub endpoint: String,
    /// The object's key, `<app>/<session>/<object_id>`.
    pub key: String,
    /// The object's version; 0 means "always download in full".
    pub version: u64,
}

impl ObjectRef {
    /// The BSON document bytes.
    pub fn to_bson(&self) -> Vec<u8> {
        let document = doc! {
            "endpoint": &self.endpoint,
            "key": &self.key,
            "version": i64::try_from(self.version).unwrap_or(i64::MAX),
        };
        // Writing a document of strings and an integer to memory cannot fail.
        document.to_vec().unwrap_or_default()
    }

    /// Decodes BSON document bytes, naming the missing or mistyped field on failure.
    pub fn from_bson(bytes: &[u8]) -> CacheResult<ObjectRef> {
        let bad = |why: String| CacheError::InvalidArgument(format!("not a BSON ObjectRef: {why}"));
        let document = Document::from_reader(bytes).map_err(|e| bad(e.to_string()))?;
        let text = |field: &str| {
            document
                .get_str(field)
                .map(str::to_owned)
                .map_err(|_| bad(format!("field `{field}` is missing or not a string")))
        };
        let version = match document.get("version") {
            Some(Bson::Int64(v)) => u64::try_from(*v).ok(),
            Some(Bson::Int32(v)) => u64::try_from(*v).ok(),
            _ => None,
        }
        .ok_or_else(|| bad("field `version` is missing or not a non-negative integer".into()))?;
        Ok(ObjectRef {
            endpoint: text("endpoint")?,
            key: text("key")?,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_ref_round_trips_through_bson() {
        let r = ObjectRef {
            endpoint: "grpc://127.0.0.1:9090".into(),
            key: "app/ssn/abc".into(),
            version: 7,
        };
        assert_eq!(ObjectRef::from_bson(&r.to_bson()).unwrap(), r);
    }

    #[test]
    fn the_version_is_written_as_int64_and_read_from_int32_too() {
        let r = ObjectRef {
            endpoint: "e".into(),
            key: "a/b/c".into(),
            version: 1,
        };
        let document = Document::from_reader(&r.to_bson()[..]).unwrap();
        assert_eq!(document.get("version"), Some(&Bson::Int64(1)));
        let small = doc! { "endpoint": "e", "key": "a/b/c", "version": 3_i32 };
        assert_eq!(
            ObjectRef::from_bson(&small.to_vec().unwrap())
                .unwrap()
                .version,
            3
        );
    }

    #[test]
    fn garbage_and_missing_fields_are_named() {
        assert!(ObjectRef::from_bson(b"not bson").is_err());
        let missing = doc! { "endpoint": "e", "version": 1_i64 };
        let err = ObjectRef::from_bson(&missing.to_vec().unwrap()).unwrap_err();
        assert!(err.to_string().contains("`key`"), "{err}");
        let negative = doc! { "endpoint": "e", "key": "a/b/c", "version": -1_i64 };
        assert!(ObjectRef::from_bson(&negative.to_vec().unwrap()).is_err());
    }
}
