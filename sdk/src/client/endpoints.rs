//! Endpoint lists: parsing `FLAME_ENDPOINT`-style text into normalised URLs.
//!
//! What: [`parse_endpoints`] splits a comma-separated list, trims it, drops empty entries and
//! adds `http://` to bare `host:port` entries, so `127.0.0.1:8080,http://b:8080` works;
//! [`endpoints_from_env`] reads `FLAME_ENDPOINT`. Leader hints from the server
//! (`flame-leader-addr`, `leader_api_addr`) go through [`normalise`] too.
//!
//! The rules themselves are `flame_proto::endpoint`'s, shared with the node agent.

use super::ClientError;

/// The environment variable holding the default endpoints.
pub const ENDPOINT_ENV: &str = "FLAME_ENDPOINT";

/// Parses a comma-separated list of endpoints into normalised URLs
/// ([`flame_proto::endpoint::parse_list`]); at least one is required.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, ClientError> {
    flame_proto::endpoint::parse_list(text).map_err(ClientError::InvalidEndpoint)
}

/// The endpoints in `FLAME_ENDPOINT`.
pub fn endpoints_from_env() -> Result<Vec<String>, ClientError> {
    let text = std::env::var(ENDPOINT_ENV)
        .map_err(|_| ClientError::InvalidEndpoint(format!("{ENDPOINT_ENV} is not set")))?;
    parse_endpoints(&text)
}

/// One endpoint as a URL ([`flame_proto::endpoint::normalize`]): `host:port` becomes
/// `http://host:port`; a trailing `/` is dropped.
pub fn normalise(entry: &str) -> Result<String, ClientError> {
    flame_proto::endpoint::normalize(entry).map_err(ClientError::InvalidEndpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_is_trimmed_normalised_and_deduplicated() {
        let got = parse_endpoints(" 127.0.0.1:8080, http://b:8081/ ,,127.0.0.1:8080").unwrap();
        assert_eq!(got, vec!["http://127.0.0.1:8080", "http://b:8081"]);
    }

    #[test]
    fn a_single_endpoint_is_a_list_of_one() {
        assert_eq!(
            parse_endpoints("https://flame:443").unwrap(),
            vec!["https://flame:443"]
        );
    }

    #[test]
    fn empty_lists_and_foreign_schemes_are_rejected() {
        assert!(matches!(
            parse_endpoints(" , "),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert!(matches!(
            parse_endpoints("ftp://x:21"),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert!(matches!(
            parse_endpoints("http://"),
            Err(ClientError::InvalidEndpoint(_))
        ));
    }
}
