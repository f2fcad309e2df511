//! Control-plane endpoints as clients name them, and where a member says the leader is: the
//! part of leader discovery every client shares (the SDK, the node agent, flmctl).
//!
//! What: [`normalize`] turns `host:port` into `http://host:port` and checks the result is an
//! http(s) URL with a host; [`parse_list`] does that for a comma-separated list
//! (`FLAME_ENDPOINT`), trimmed and deduplicated; [`leader_from_status`] asks one member's
//! `Cluster.Status` where the leader's client API is.
//!
//! Why one place: leader hints (`flame-leader-addr`, `leader_api_addr`) and configured lists
//! must normalize the same way everywhere, or a client fails to recognise the leader it was
//! pointed at as one of its own endpoints.
//!
//! Caveat: only the scheme and the host are checked; tonic rejects anything else when it
//! builds the channel.

use crate::cluster::cluster_client::ClusterClient;
use crate::cluster::{Role, StatusRequest};
use std::time::Duration;
use tonic::Status;
use tonic::transport::Channel;

/// One endpoint as a URL: `host:port` becomes `http://host:port`; a trailing `/` is dropped.
/// Anything but an http(s) URL with a host is refused with a message naming the text.
pub fn normalize(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
    let rest = rest.trim_end_matches('/');
    if scheme != "http" && scheme != "https" {
        return Err(format!("{text:?} is not an http(s) endpoint"));
    }
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{text:?} names no host"));
    }
    let url = format!("{scheme}://{rest}");
    match url.parse::<tonic::transport::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(url),
        Ok(_) => Err(format!("{text:?} names no host")),
        Err(e) => Err(format!("{text:?} is not an address: {e}")),
    }
}

/// A comma-separated list of endpoints as normalized URLs, trimmed, without empty entries or
/// repeats; at least one is required.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let url = normalize(entry)?;
        if !out.contains(&url) {
            out.push(url);
        }
    }
    if out.is_empty() {
        return Err(format!("no endpoint in {text:?}"));
    }
    Ok(out)
}

/// Where the member at `url` (reached over `channel`) says the leader's client API is: `url`
/// itself when it leads, its leader hint otherwise, `None` when it knows no leader (or its hint
/// is unusable). An error is the member's own status, or DEADLINE_EXCEEDED after `limit`.
pub async fn leader_from_status(
    url: &str,
    channel: Channel,
    limit: Duration,
) -> Result<Option<String>, Status> {
    let mut client = ClusterClient::new(channel);
    let status = tokio::time::timeout(limit, client.status(StatusRequest {}))
        .await
        .map_err(|_| Status::deadline_exceeded(format!("no status within {limit:?}")))??
        .into_inner();
    if status.role == Role::Leader as i32 {
        return Ok(Some(url.to_owned()));
    }
    Ok(status.leader_api_addr.and_then(|a| normalize(&a).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_is_trimmed_normalized_and_deduplicated() {
        let got = parse_list(" 127.0.0.1:8080, http://b:8081/ ,,127.0.0.1:8080").unwrap();
        assert_eq!(got, vec!["http://127.0.0.1:8080", "http://b:8081"]);
        assert_eq!(
            parse_list("https://flame:443").unwrap(),
            ["https://flame:443"]
        );
    }

    #[test]
    fn empty_lists_foreign_schemes_and_hostless_text_are_refused_by_name() {
        for bad in [" , ", "ftp://x:21", "http://", "http://a b:1", ":8080/"] {
            let err = parse_list(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(normalize("ftp://x:21").unwrap_err().contains("ftp://x:21"));
    }
}
