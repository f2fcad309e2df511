//! [`Res`]: resource amounts (cpu, memory, gpu) with the arithmetic the scheduler needs: sums
//! of executors on a node or of a session, the capacity check and the dominant share.
//!
//! Why a separate type: the wire's [`ResourceRequirement`] has a signed gpu count and no
//! arithmetic; here every dimension is an unsigned count and sums saturate instead of
//! overflowing, so no input can make the scheduler panic.
//!
//! Caveat: shares are `f64`; they are only compared with each other and are never negative, so
//! their bit patterns order like their values (used by the ranking in the grant module).

use flame_proto::model::ResourceRequirement;

/// An amount of cpu cores, memory bytes and gpu devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Res {
    /// Whole cpu cores.
    pub cpu: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Gpu devices; a negative wire value counts as 0.
    pub gpu: u64,
}

impl Res {
    /// The amount a resource requirement (executor size or node allocatable) stands for.
    pub fn of(r: &ResourceRequirement) -> Res {
        Res {
            cpu: r.cpu,
            memory: r.memory,
            gpu: u64::try_from(r.gpu).unwrap_or(0),
        }
    }

    /// `self + other`, saturating in every dimension.
    pub fn plus(self, other: Res) -> Res {
        Res {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
            gpu: self.gpu.saturating_add(other.gpu),
        }
    }

    /// `self - other`, saturating at zero in every dimension.
    pub fn minus(self, other: Res) -> Res {
        Res {
            cpu: self.cpu.saturating_sub(other.cpu),
            memory: self.memory.saturating_sub(other.memory),
            gpu: self.gpu.saturating_sub(other.gpu),
        }
    }

    /// True when every dimension of `self` is at most the same dimension of `limit`.
    pub fn within(self, limit: Res) -> bool {
        self.cpu <= limit.cpu && self.memory <= limit.memory && self.gpu <= limit.gpu
    }

    /// The largest fraction `self / total` over the dimensions where `total` is not zero; 0 when
    /// every dimension of `total` is zero. Never negative, never NaN.
    pub fn dominant_share(self, total: Res) -> f64 {
        [
            (self.cpu, total.cpu),
            (self.memory, total.memory),
            (self.gpu, total.gpu),
        ]
        .into_iter()
        .filter(|(_, t)| *t > 0)
        .map(|(a, t)| a as f64 / t as f64)
        .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: u64, memory: u64, gpu: u64) -> Res {
        Res { cpu, memory, gpu }
    }

    #[test]
    fn negative_gpu_counts_as_none_and_sums_saturate() {
        let r = ResourceRequirement {
            cpu: 2,
            memory: 4,
            gpu: -3,
        };
        assert_eq!(Res::of(&r), res(2, 4, 0));
        let big = res(u64::MAX, 1, 1).plus(res(1, 1, 1));
        assert_eq!(big, res(u64::MAX, 2, 2));
    }

    #[test]
    fn within_checks_every_dimension() {
        let limit = res(4, 8, 1);
        assert!(res(4, 8, 1).within(limit));
        assert!(!res(5, 1, 0).within(limit));
        assert!(!res(1, 9, 0).within(limit));
        assert!(!res(1, 1, 2).within(limit));
    }

    #[test]
    fn dominant_share_is_the_largest_fraction_and_skips_empty_dimensions() {
        let total = res(10, 100, 0);
        assert_eq!(res(5, 10, 0).dominant_share(total), 0.5);
        assert_eq!(res(1, 80, 3).dominant_share(total), 0.8);
        assert_eq!(res(1, 1, 1).dominant_share(Res::default()), 0.0);
    }
}
