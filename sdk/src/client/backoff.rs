//! Bounded exponential backoff with jitter between client retries.
//!
//! What: [`Backoff::next_delay`] doubles the base per failure up to the cap and picks a random
//! point in the upper half ("equal jitter"), so clients that lost the same leader do not retry
//! in lockstep while every pause stays at least half the nominal one.
//!
//! Why a private copy: the node agent's `agent::backoff` is the same policy, but it lives in a
//! binary crate the SDK cannot depend on; the policy is a dozen lines.
//!
//! Caveat: jitter comes from std's randomly keyed hasher, not a quality RNG; it only has to
//! spread retries apart.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff state.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and doubling up to `cap`.
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The pause before the next attempt, counting one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        let nominal = self.base.saturating_mul(factor).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(random_u64() % spread.max(1))
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_in_the_upper_half() {
        let cap = Duration::from_secs(2);
        let mut b = Backoff::new(Duration::from_millis(50), cap);
        let mut nominal = Duration::from_millis(50);
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            assert!(d <= cap);
            nominal = (nominal * 2).min(cap);
        }
    }

    #[test]
    fn reset_starts_over_at_the_base() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(50));
    }
}
