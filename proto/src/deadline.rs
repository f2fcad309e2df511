//! The client's deadline of a gRPC call, from its `grpc-timeout` header.
//!
//! Why: a member holds a write across a leader change for as long as the client waits, so it
//! must know how long that is; tonic enforces the header but does not expose its value.
//!
//! The header is at most eight ASCII digits and one unit letter (`H`, `M`, `S`, `m`, `u`,
//! `n`), as the gRPC over HTTP/2 specification defines it. Caveat: a malformed header is
//! treated as absent (tonic refuses such calls before handlers run anyway).

use std::time::Duration;
use tonic::metadata::MetadataMap;

/// The header carrying the client's timeout.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The timeout the client sent in `metadata`, if it sent a well-formed one.
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse(metadata.get(GRPC_TIMEOUT)?.to_str().ok()?)
}

/// Parses a `grpc-timeout` value such as `10S` or `250m`.
pub fn parse(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_of_the_specification_parses() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn malformed_values_are_treated_as_absent() {
        for bad in [
            "",
            "S",
            "10",
            "10s",
            "-1S",
            "123456789S",
            "1.5S",
            "1 S",
            "é1S",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_header_is_read_from_metadata() {
        let mut metadata = MetadataMap::new();
        assert_eq!(grpc_timeout(&metadata), None);
        metadata.insert(GRPC_TIMEOUT, "1500m".parse().expect("ascii"));
        assert_eq!(grpc_timeout(&metadata), Some(Duration::from_millis(1500)));
    }
}
