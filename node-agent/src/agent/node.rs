//! The node as the agent describes it to the leader: the registration request and heartbeats.
//!
//! What: [`NodeInfo`] is built once from the configuration (name, host identity, capacity,
//! arch, os, addresses, the node's object cache) and stamps out `RegisterNodeRequest`s and
//! `Heartbeat`s. Every registration carries the cache, because the leader replaces the whole
//! node description with each one.
//!
//! Caveats: allocatable equals capacity (as upstream; cgroups are ignored), except that its cpu
//! is multiplied by the configured `cpu_overcommit`; the only address
//! reported is the host name, since the agent serves nothing itself.

use crate::config::AgentConfig;
use flame_proto::agent::{
    AgentMessage, Heartbeat, HeldExecutor, RegisterNodeRequest, agent_message,
};
use flame_proto::cluster::CacheEndpoint;
use flame_proto::v1;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the agent tells the leader about its node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node name.
    name: String,
    /// The host identity.
    agent_id: String,
    /// The status without the heartbeat time.
    status: v1::NodeStatus,
    /// The node's object cache, if it runs one.
    cache: Option<CacheEndpoint>,
}

impl NodeInfo {
    /// Describes the node `config` configures.
    pub fn new(config: &AgentConfig) -> Self {
        let resources = v1::ResourceRequirement::from(&config.capacity);
        let allocatable = v1::ResourceRequirement {
            cpu: resources
                .cpu
                .saturating_mul(u64::from(config.cpu_overcommit)),
            ..resources
        };
        let host = crate::config::hostname().unwrap_or_else(|| config.node_name.clone());
        NodeInfo {
            name: config.node_name.clone(),
            agent_id: config.agent_id.clone(),
            status: v1::NodeStatus {
                state: v1::NodeState::Ready as i32,
                capacity: Some(resources),
                allocatable: Some(allocatable),
                info: Some(v1::NodeInfo {
                    arch: std::env::consts::ARCH.to_owned(),
                    os: std::env::consts::OS.to_owned(),
                }),
                addresses: vec![v1::NodeAddress {
                    r#type: "Hostname".to_owned(),
                    address: host,
                }],
                last_heartbeat_time: 0,
            },
            cache: config.cache.as_ref().map(CacheEndpoint::from),
        }
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The status stamped with the current time.
    fn status_now(&self) -> v1::NodeStatus {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        v1::NodeStatus {
            last_heartbeat_time: now,
            ..self.status.clone()
        }
    }

    /// The registration request, listing the executors the agent holds.
    pub fn register_request(&self, held: Vec<HeldExecutor>) -> RegisterNodeRequest {
        RegisterNodeRequest {
            node: Some(v1::Node {
                metadata: Some(v1::Metadata {
                    id: self.name.clone(),
                    name: self.name.clone(),
                }),
                spec: Some(v1::NodeSpec {
                    hostname: self.name.clone(),
                }),
                status: Some(self.status_now()),
            }),
            executors: held,
            agent_id: self.agent_id.clone(),
            cache: self.cache.clone(),
        }
    }

    /// A heartbeat message.
    pub fn heartbeat(&self) -> AgentMessage {
        AgentMessage {
            message: Some(agent_message::Message::Heartbeat(Heartbeat {
                node_name: self.name.clone(),
                status: Some(self.status_now()),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(cache: Option<(&str, &str)>) -> AgentConfig {
        config_with(cache, None)
    }

    fn config_with(cache: Option<(&str, &str)>, cpu_overcommit: Option<u32>) -> AgentConfig {
        let overrides = Overrides {
            cpu_overcommit,
            endpoints: vec!["127.0.0.1:8080".into()],
            node_name: Some("n1".into()),
            cpu: Some(2),
            memory: Some("1g".into()),
            gpu: Some(0),
            flame_home: Some("/opt/flame".into()),
            cache_flight_endpoint: cache.map(|c| c.0.to_owned()),
            cache_peer_addr: cache.map(|c| c.1.to_owned()),
            ..Overrides::default()
        };
        AgentConfig::load(None, |_| None, &overrides).expect("a valid configuration")
    }

    #[test]
    fn registrations_carry_the_configured_cache() {
        let with = NodeInfo::new(&config(Some(("grpc://10.0.0.5:9090", "10.0.0.5:9091"))));
        let expected = CacheEndpoint {
            flight_endpoint: "grpc://10.0.0.5:9090".into(),
            peer_addr: "10.0.0.5:9091".into(),
        };
        for _ in 0..2 {
            assert_eq!(
                with.register_request(Vec::new()).cache,
                Some(expected.clone())
            );
        }
        let without = NodeInfo::new(&config(None));
        assert_eq!(without.register_request(Vec::new()).cache, None);
    }

    #[test]
    fn cpu_overcommit_multiplies_the_allocatable_cpu_only() {
        let node = NodeInfo::new(&config_with(None, Some(4)));
        let request = node.register_request(Vec::new());
        let status = request.node.and_then(|n| n.status).expect("a status");
        let (capacity, allocatable) = (status.capacity.unwrap(), status.allocatable.unwrap());
        assert_eq!((capacity.cpu, allocatable.cpu), (2, 8));
        assert_eq!(capacity.memory, allocatable.memory);
    }
}
