//! [`ResourceRequirement`]: the resource request of a session and the size of an executor, plus
//! the `cpu=1,mem=1g,gpu=0` text form flamepy and flmctl use (spec section 8.2).
//!
//! Caveats: memory sizes are whole numbers of bytes with binary suffixes (`1k` = 1024); decimal
//! fractions such as `1.5g` are refused rather than rounded.

use crate::error::FlameError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One GiB, the default memory request.
const GIB: u64 = 1 << 30;

/// Binary unit letters in increasing order: `k` = 1024, `m` = 1024², ... `p` = 1024⁵.
const UNITS: [char; 5] = ['k', 'm', 'g', 't', 'p'];

/// Resources requested by a session, offered by a node or held by an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceRequirement {
    /// Whole CPU cores.
    pub cpu: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// GPU device count (the wire type is `int32`; parsed values are never negative).
    pub gpu: i32,
}

impl Default for ResourceRequirement {
    /// The last-resort default of spec section 5.3: cpu 1, memory 1 GiB, gpu 0.
    fn default() -> Self {
        ResourceRequirement {
            cpu: 1,
            memory: GIB,
            gpu: 0,
        }
    }
}

fn invalid(text: &str, why: impl fmt::Display) -> FlameError {
    FlameError::InvalidArgument(format!("invalid resource requirement '{text}': {why}"))
}

impl ResourceRequirement {
    /// Parses `cpu=<n>,mem=<size>,gpu=<n>` (keys in any order, case-insensitive, `memory` is a
    /// synonym of `mem`, spaces around entries allowed).
    ///
    /// Keys that are left out keep their [`Default`] value, so `gpu=1` means 1 CPU, 1 GiB and
    /// 1 GPU. An empty text, an empty entry, an unknown or repeated key, or a bad number is
    /// `InvalidArgument`.
    pub fn parse(text: &str) -> Result<Self, FlameError> {
        if text.trim().is_empty() {
            return Err(invalid(text, "it is empty"));
        }
        let mut out = ResourceRequirement::default();
        let mut seen: Vec<&str> = Vec::new();
        for entry in text.split(',') {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| invalid(text, format!("entry '{entry}' is not key=value")))?;
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            let canonical = match key.as_str() {
                "cpu" => {
                    out.cpu = value.parse().map_err(|_| {
                        invalid(text, format!("cpu '{value}' is not a whole number"))
                    })?;
                    "cpu"
                }
                "mem" | "memory" => {
                    out.memory = parse_memory(value)?;
                    "mem"
                }
                "gpu" => {
                    out.gpu = value
                        .parse()
                        .ok()
                        .filter(|g: &i32| *g >= 0)
                        .ok_or_else(|| {
                            invalid(text, format!("gpu '{value}' is not a non-negative count"))
                        })?;
                    "gpu"
                }
                other => return Err(invalid(text, format!("unknown key '{other}'"))),
            };
            if seen.contains(&canonical) {
                return Err(invalid(text, format!("'{canonical}' is given twice")));
            }
            seen.push(canonical);
        }
        Ok(out)
    }
}

/// Parses a memory size: a whole number of bytes, optionally followed by one of the binary units
/// `k`, `m`, `g`, `t`, `p` (case-insensitive), itself optionally followed by `b`, `i` or `ib`.
/// A bare `b` (bytes) is also accepted. Overflow and anything else is `InvalidArgument`.
pub fn parse_memory(text: &str) -> Result<u64, FlameError> {
    let bad =
        |why: &str| FlameError::InvalidArgument(format!("invalid memory size '{text}': {why}"));
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad(
            "expected a whole number of bytes, such as 512, 64m or 1g",
        ));
    }
    let number: u64 = digits.parse().map_err(|_| bad("the number is too large"))?;
    let suffix = suffix.to_ascii_lowercase();
    let mut chars = suffix.chars();
    let multiplier = match chars.next() {
        None => 1,
        Some('b') if chars.as_str().is_empty() => 1,
        Some(c) => {
            let power = UNITS
                .iter()
                .position(|u| *u == c)
                .ok_or_else(|| bad("unknown unit; use k, m, g, t or p"))?;
            if !matches!(chars.as_str(), "" | "b" | "i" | "ib") {
                return Err(bad("a unit may only be followed by b, i or ib"));
            }
            1u64 << (10 * (power + 1))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| bad("the size does not fit in 64 bits"))
}

impl FromStr for ResourceRequirement {
    type Err = FlameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResourceRequirement::parse(s)
    }
}

impl fmt::Display for ResourceRequirement {
    /// Writes the canonical text form, using the largest binary unit that divides the memory
    /// exactly, for example `cpu=1,mem=1g,gpu=0`. The output parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu={},mem=", self.cpu)?;
        let mut value = self.memory;
        let mut unit = None;
        for u in UNITS {
            if value != 0 && value.is_multiple_of(1024) {
                value /= 1024;
                unit = Some(u);
            } else {
                break;
            }
        }
        match unit {
            Some(u) => write!(f, "{value}{u}")?,
            None => write!(f, "{value}")?,
        }
        write!(f, ",gpu={}", self.gpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_one_cpu_one_gib_no_gpu() {
        let d = ResourceRequirement::default();
        assert_eq!((d.cpu, d.memory, d.gpu), (1, 1_073_741_824, 0));
    }

    #[test]
    fn parses_the_flamepy_example() {
        let r = ResourceRequirement::parse("cpu=1,mem=1g,gpu=0").unwrap();
        assert_eq!(r, ResourceRequirement::default());
        let r: ResourceRequirement = " CPU = 4 , memory=512m, gpu=2 ".parse().unwrap();
        assert_eq!((r.cpu, r.memory, r.gpu), (4, 512 << 20, 2));
    }

    #[test]
    fn omitted_keys_keep_their_defaults() {
        let r = ResourceRequirement::parse("gpu=1").unwrap();
        assert_eq!((r.cpu, r.memory, r.gpu), (1, GIB, 1));
    }

    #[test]
    fn memory_accepts_binary_suffixes_with_b_i_or_ib() {
        let cases = [
            ("512", 512),
            ("512b", 512),
            ("1k", 1024),
            ("1kb", 1024),
            ("2Ki", 2048),
            ("3kib", 3072),
            ("1m", 1 << 20),
            ("1G", 1 << 30),
            ("1gib", 1 << 30),
            ("1t", 1 << 40),
            ("1pb", 1 << 50),
        ];
        for (text, want) in cases {
            assert_eq!(parse_memory(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_input_is_invalid_argument_not_a_panic() {
        for text in [
            "",
            " ",
            "cpu",
            "cpu=x",
            "cpu=-1",
            "gpu=-1",
            "gpu=1.5",
            "mem=1.5g",
            "mem=1x",
            "mem=1gx",
            "mem=g",
            "mem=99999999999p",
            "disk=1",
            "cpu=1,,gpu=0",
            "cpu=1,cpu=2",
            "mem=1g,memory=2g",
        ] {
            let got = ResourceRequirement::parse(text);
            assert!(
                matches!(got, Err(FlameError::InvalidArgument(_))),
                "{text:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        let cases = [
            (ResourceRequirement::default(), "cpu=1,mem=1g,gpu=0"),
            (
                ResourceRequirement {
                    cpu: 2,
                    memory: 1536 << 20,
                    gpu: 1,
                },
                "cpu=2,mem=1536m,gpu=1",
            ),
            (
                ResourceRequirement {
                    cpu: 0,
                    memory: 0,
                    gpu: 0,
                },
                "cpu=0,mem=0,gpu=0",
            ),
            (
                ResourceRequirement {
                    cpu: 1,
                    memory: 1000,
                    gpu: 0,
                },
                "cpu=1,mem=1000,gpu=0",
            ),
        ];
        for (value, text) in cases {
            assert_eq!(value.to_string(), text);
            assert_eq!(ResourceRequirement::parse(text), Ok(value));
        }
    }
}
