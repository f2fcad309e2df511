//! The Flame object cache: one per node, an Arrow Flight face for flamepy and any Flight
//! client, objects replicated across nodes and moved between them over QUIC.
//!
//! # Layout
//!
//! Client side (always built; what SDKs need):
//! - [`key`]: object keys, put targets and delete patterns, and the rules they obey.
//! - [`objref`]: flamepy's BSON `ObjectRef`.
//! - [`wire`]: the Flight conventions (descriptors, tickets, schemas) in both directions.
//! - [`client`]: [`client::CacheClient`], a Flight client of the cache.
//! - [`error`]: [`error::CacheError`], every failure by meaning.
//!
//! Peer certificates (feature `ca`, part of `server`): [`ca`], the cluster CA and signing.
//!
//! Server side (feature `server`, on by default):
//! - [`object`]: objects as hashed, versioned records; what a get sends.
//! - [`store`]: this node's objects: memory LRU over a disk directory, tombstones.
//!
//! See `docs/cache.md` for placement, replication and what happens when nodes join and leave.

pub mod client;
pub mod error;
pub mod key;
pub mod objref;
pub mod wire;

#[cfg(feature = "ca")]
pub mod ca;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod directory;
#[cfg(feature = "server")]
pub mod flight;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod object;
#[cfg(feature = "server")]
pub mod peer;
#[cfg(feature = "server")]
pub mod placement;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod stripes;

pub use client::{CacheClient, Fetched, ObjectInfo};
pub use error::{CacheError, CacheResult};
pub use key::{KeyPattern, ObjectKey, PutTarget};
pub use objref::ObjectRef;
