//! Timing and size knobs of the Raft group and its transport.
//!
//! [`TransportConfig`] is the serde form of the `raft` section's timings: openraft's heartbeat
//! and election timeouts plus the transport's own deadlines, keepalives and message-size limit.
//! Its defaults are tuned for fast failover on a LAN (heartbeat 40 ms, election timeout
//! 100–200 ms). [`TransportConfig::openraft_config`] turns it, with raftlog's [`LogPolicy`], into
//! a validated [`openraft::Config`]; [`TransportConfig::endpoint`] and
//! [`TransportConfig::server_builder`] apply the same settings to tonic's client and server.
//!
//! Failover time: an openraft 0.9 follower campaigns only after the leader lease
//! (`election_timeout_max_ms`) plus its election timeout (drawn once per process from
//! `[min, max)`) have passed since it last heard from the leader, checked on a tick every
//! 1.5 × `heartbeat_ms`. With the defaults that is about 300–460 ms (measured 320–420 ms on
//! loopback); 150–300 ms election timeouts with a 50 ms heartbeat measured 520–645 ms.
//!
//! Caveat: openraft bounds every append-entries call (heartbeats and log batches alike) by the
//! heartbeat interval, so a very short heartbeat with a slow disk on the followers turns large
//! batches into timeouts; raise `heartbeat_ms` or lower `max_payload_entries` together.

use crate::config::ConfigError;
use raftlog::LogPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tonic::transport::{Endpoint, Server};

/// Default largest gRPC message, in bytes, sent or accepted by the transport (64 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Room reserved in a message for everything but a snapshot chunk's data (the envelope and the
/// postcard-encoded snapshot header with its membership).
const CHUNK_ENVELOPE_BYTES: u64 = 16 << 10;

/// Raft timings and transport settings of a member; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Interval between leader heartbeats, in ms; openraft also uses it as the deadline of every
    /// append-entries call.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in ms; also the deadline of a vote.
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in ms.
    pub election_timeout_max_ms: u64,
    /// Time allowed to establish a TCP connection to a peer, in ms.
    pub connect_timeout_ms: u64,
    /// Upper bound on any unary call (append, vote, forward), in ms; openraft's own deadline for
    /// the call applies when it is shorter.
    pub rpc_timeout_ms: u64,
    /// Deadline of one snapshot chunk, in ms; the last chunk includes installing the snapshot on
    /// the receiver. Also written to openraft's `install_snapshot_timeout`.
    pub snapshot_chunk_timeout_ms: u64,
    /// Interval of HTTP/2 keepalive pings on peer connections, in ms.
    pub keepalive_interval_ms: u64,
    /// Time to wait for a keepalive ack before a peer connection is declared dead, in ms.
    pub keepalive_timeout_ms: u64,
    /// Wait before retrying a peer that was unreachable (connection refused or reset), in ms.
    pub unreachable_backoff_ms: u64,
    /// Largest gRPC message sent or accepted, in bytes (append batches, snapshot chunks).
    pub max_message_bytes: usize,
    /// Most log entries in one append-entries call.
    pub max_payload_entries: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            heartbeat_ms: 40,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            connect_timeout_ms: 500,
            rpc_timeout_ms: 2_000,
            snapshot_chunk_timeout_ms: 10_000,
            keepalive_interval_ms: 1_000,
            keepalive_timeout_ms: 2_000,
            unreachable_backoff_ms: 100,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_payload_entries: 300,
        }
    }
}

impl TransportConfig {
    /// Checks the settings, naming the first bad key.
    pub fn validate(&self, policy: &LogPolicy) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat_ms", self.heartbeat_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("snapshot_chunk_timeout_ms", self.snapshot_chunk_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_payload_entries", self.max_payload_entries),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid {
                key: format!("raft.{key}"),
                message: "must be greater than zero".into(),
            });
        }
        let order = |key: &str, value: u64, other: &str, other_value: u64| {
            if value > other_value {
                return Ok(());
            }
            Err(ConfigError::Invalid {
                key: format!("raft.{key}"),
                message: format!(
                    "raft.{key} ({value}) must be greater than raft.{other} ({other_value})"
                ),
            })
        };
        order(
            "election_timeout_min_ms",
            self.election_timeout_min_ms,
            "heartbeat_ms",
            self.heartbeat_ms,
        )?;
        order(
            "election_timeout_max_ms",
            self.election_timeout_max_ms,
            "election_timeout_min_ms",
            self.election_timeout_min_ms,
        )?;
        order(
            "max_message_bytes",
            self.max_message_bytes as u64,
            "snapshot_chunk_bytes plus 16 KiB of envelope",
            policy
                .snapshot_chunk_bytes
                .saturating_add(CHUNK_ENVELOPE_BYTES),
        )
    }

    /// Builds the validated openraft configuration for a member of `cluster_id`, with raftlog's
    /// snapshot and purge `policy` applied.
    pub fn openraft_config(
        &self,
        cluster_id: &str,
        policy: &LogPolicy,
    ) -> Result<openraft::Config, ConfigError> {
        self.validate(policy)?;
        let mut config = openraft::Config {
            cluster_name: cluster_id.to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.snapshot_chunk_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            ..Default::default()
        };
        policy.apply_to(&mut config);
        config.validate().map_err(|e| ConfigError::Invalid {
            key: "raft".into(),
            message: format!("openraft refuses the resulting configuration: {e}"),
        })
    }

    /// The client endpoint for a peer at `uri`, with connect timeout, keepalive and Nagle off.
    pub fn endpoint(&self, uri: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(uri.to_owned())?
            .connect_timeout(self.connect_timeout())
            .http2_keep_alive_interval(ms(self.keepalive_interval_ms))
            .keep_alive_timeout(ms(self.keepalive_timeout_ms))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true))
    }

    /// A tonic server builder with the matching keepalive settings, for the peer listener.
    pub fn server_builder(&self) -> Server {
        Server::builder()
            .http2_keepalive_interval(Some(ms(self.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(ms(self.keepalive_timeout_ms)))
            .tcp_nodelay(true)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        ms(self.connect_timeout_ms)
    }

    /// [`Self::rpc_timeout_ms`] as a duration.
    pub fn rpc_timeout(&self) -> Duration {
        ms(self.rpc_timeout_ms)
    }

    /// [`Self::snapshot_chunk_timeout_ms`] as a duration.
    pub fn snapshot_chunk_timeout(&self) -> Duration {
        ms(self.snapshot_chunk_timeout_ms)
    }

    /// [`Self::unreachable_backoff_ms`] as a duration.
    pub fn unreachable_backoff(&self) -> Duration {
        ms(self.unreachable_backoff_ms)
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_a_valid_openraft_config() {
        let config = TransportConfig::default()
            .openraft_config("c1", &LogPolicy::default())
            .expect("defaults are valid");
        assert_eq!(config.heartbeat_interval, 40);
        assert_eq!(
            (config.election_timeout_min, config.election_timeout_max),
            (100, 200)
        );
        assert_eq!(config.cluster_name, "c1");
        assert_eq!(config.snapshot_max_chunk_size, 1 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = TransportConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 40,
            ..Default::default()
        };
        let err = bad.validate(&LogPolicy::default()).unwrap_err().to_string();
        assert!(err.contains("raft.election_timeout_min_ms (40)"), "{err}");
        assert!(err.contains("raft.heartbeat_ms (50)"), "{err}");
        let zero = TransportConfig {
            rpc_timeout_ms: 0,
            ..Default::default()
        };
        let err = zero
            .validate(&LogPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.rpc_timeout_ms"), "{err}");
    }

    #[test]
    fn missing_keys_take_defaults_and_unknown_keys_are_named() {
        let parsed: TransportConfig =
            serde_yaml_ng::from_str("heartbeat_ms: 40\nrpc_timeout_ms: 500\n").expect("parse");
        assert_eq!(
            parsed,
            TransportConfig {
                heartbeat_ms: 40,
                rpc_timeout_ms: 500,
                ..Default::default()
            }
        );
        let err = serde_yaml_ng::from_str::<TransportConfig>("heartbeat: 40\n").unwrap_err();
        assert!(err.to_string().contains("heartbeat"), "{err}");
    }

    #[test]
    fn chunks_must_fit_in_a_message() {
        let small = TransportConfig {
            max_message_bytes: 1 << 20,
            ..Default::default()
        };
        let err = small
            .validate(&LogPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.max_message_bytes"), "{err}");
    }
}
