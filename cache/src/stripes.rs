//! [`Stripes`]: a fixed set of async locks, one chosen per key, to serialise writes to a key.
//!
//! Why: versions must advance one write at a time per object, and an object's files must not
//! be replaced while they are read or removed. A lock per key would need a map of locks that
//! grows and must be cleaned; a fixed array of 256 locks hashed by key gives the same
//! exclusion per key, and unrelated keys rarely share one.
//!
//! Caveat: two keys that share a stripe wait for each other; never hold a stripe while taking
//! another of the same [`Stripes`].

use std::hash::{BuildHasher, Hash, RandomState};
use tokio::sync::{Mutex, MutexGuard};

/// Number of locks.
const STRIPES: usize = 256;

/// A fixed set of locks, one per hash bucket of keys.
#[derive(Debug)]
pub struct Stripes {
    locks: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl Default for Stripes {
    fn default() -> Self {
        Stripes {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Stripes {
    /// Waits for the lock of `key`'s stripe.
    pub async fn lock<K: Hash>(&self, key: &K) -> MutexGuard<'_, ()> {
        let index = (self.hasher.hash_one(key) as usize) % self.locks.len();
        self.locks[index].lock().await
    }
}
