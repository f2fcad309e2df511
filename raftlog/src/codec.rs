//! The one encoding of everything raftlog stores: postcard.
//!
//! postcard is compact and has a stable, documented wire format. It is not self-describing, so
//! a change to a stored type is a format change and bumps [`crate::FORMAT_VERSION`].

use crate::error::Result;
use serde::{Serialize, de::DeserializeOwned};

/// Encodes a value for storage.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a stored value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}
