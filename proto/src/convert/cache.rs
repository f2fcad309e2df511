//! Conversions for the object cache: a node's cache endpoint (RegisterNode's `cache`, the cache
//! directory's members) and the object-drop log, between [`crate::model`] and
//! [`crate::cluster`].
//!
//! Why here: this crate is the only place protobuf converts to and from domain types.
//!
//! Caveat: a wire endpoint is validated whichever side receives it
//! ([`model::CacheEndpoint::validate`]), so a cache never dials an address the control plane
//! would have refused.

use crate::cluster;
use crate::error::FlameError;
use crate::model;
use crate::v1;

impl From<&model::CacheEndpoint> for cluster::CacheEndpoint {
    fn from(e: &model::CacheEndpoint) -> Self {
        cluster::CacheEndpoint {
            flight_endpoint: e.flight_endpoint.clone(),
            peer_addr: e.peer_addr.clone(),
        }
    }
}

impl TryFrom<cluster::CacheEndpoint> for model::CacheEndpoint {
    type Error = FlameError;

    /// A validated endpoint; `InvalidArgument` names the field at fault.
    fn try_from(e: cluster::CacheEndpoint) -> Result<Self, FlameError> {
        let endpoint = model::CacheEndpoint {
            flight_endpoint: e.flight_endpoint,
            peer_addr: e.peer_addr,
        };
        endpoint.validate()?;
        Ok(endpoint)
    }
}

impl From<&model::ObjectDrop> for cluster::ObjectDrop {
    fn from(d: &model::ObjectDrop) -> Self {
        cluster::ObjectDrop {
            seq: d.seq,
            prefix: d.prefix.clone(),
            at_ms: d.at_ms,
        }
    }
}

impl From<cluster::ObjectDrop> for model::ObjectDrop {
    fn from(d: cluster::ObjectDrop) -> Self {
        model::ObjectDrop {
            seq: d.seq,
            prefix: d.prefix,
            at_ms: d.at_ms,
        }
    }
}

impl model::Node {
    /// The node as a cache-directory member: its name, cache endpoint and state; `None` when
    /// the node runs no cache.
    pub fn cache_member(&self) -> Option<cluster::CacheMember> {
        let endpoint = self.cache.as_ref()?;
        Some(cluster::CacheMember {
            node: self.name.clone().into(),
            endpoint: Some(cluster::CacheEndpoint::from(endpoint)),
            state: v1::NodeState::from(self.state).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> model::CacheEndpoint {
        model::CacheEndpoint {
            flight_endpoint: "grpc://10.0.0.5:9090".into(),
            peer_addr: "10.0.0.5:9091".into(),
        }
    }

    #[test]
    fn endpoints_and_drops_round_trip_through_the_wire() {
        let wire = cluster::CacheEndpoint::from(&endpoint());
        assert_eq!(model::CacheEndpoint::try_from(wire), Ok(endpoint()));
        let drop = model::ObjectDrop {
            seq: 7,
            prefix: "app/s-1".into(),
            at_ms: 1_700_000_000_123,
        };
        let wire = cluster::ObjectDrop::from(&drop);
        assert_eq!(model::ObjectDrop::from(wire), drop);
    }

    #[test]
    fn a_wire_endpoint_with_a_bad_address_is_refused_naming_the_field() {
        let wire = cluster::CacheEndpoint {
            flight_endpoint: "grpc://10.0.0.5:9090".into(),
            peer_addr: "10.0.0.5".into(),
        };
        let err = model::CacheEndpoint::try_from(wire).unwrap_err();
        assert!(
            matches!(&err, FlameError::InvalidArgument(m) if m.contains("cache.peer_addr")),
            "{err:?}"
        );
    }

    #[test]
    fn only_nodes_with_a_cache_are_directory_members() {
        let mut node = model::Node {
            name: "n-1".into(),
            hostname: "n-1".into(),
            state: model::NodeState::NotReady,
            capacity: model::ResourceRequirement::default(),
            allocatable: model::ResourceRequirement::default(),
            arch: String::new(),
            os: String::new(),
            addresses: Vec::new(),
            last_heartbeat_ms: 0,
            cache: None,
        };
        assert_eq!(node.cache_member(), None);
        node.cache = Some(endpoint());
        let member = node.cache_member().expect("a member");
        assert_eq!(member.node, "n-1");
        assert_eq!(member.state(), v1::NodeState::NotReady);
        assert_eq!(
            member.endpoint,
            Some(cluster::CacheEndpoint::from(&endpoint()))
        );
    }
}
