//! Bounded exponential backoff with jitter: the one retry pause of every Flame client (the SDK's
//! calls, the node agent's reconnects and bind retries).
//!
//! What: [`Backoff::next_delay`] returns the next pause: the base doubling per failure up to the
//! cap, then "equal jitter" (a uniformly random point in the upper half), so agents that lost
//! the same leader do not retry in lockstep while every pause stays at least half the nominal
//! one. [`Backoff::reset`] starts over after a success.
//!
//! Why no `rand`: jitter needs no quality randomness; std's randomly keyed `RandomState` hasher
//! gives a fresh 64-bit value per call without another dependency. Why here: `flame-proto` is
//! the crate every client already depends on.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first pause.
    base: Duration,
    /// The longest pause.
    cap: Duration,
    /// Failures since the last reset.
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The pause before the next attempt, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(random_u64() % spread.max(1))
    }

    /// The pause without jitter for the current failure count.
    fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A random 64-bit value from std's randomly keyed hasher.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut nominal = Duration::from_millis(100);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            nominal = (nominal * 2).min(Duration::from_secs(5));
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
