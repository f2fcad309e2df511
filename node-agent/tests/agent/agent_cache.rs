//! The node's object cache in the agent's registrations, against a fake leader.
//!
//! Claim: a cache set on `AgentConfig::cache` (as a program embedding the cache does) is sent in
//! the first RegisterNode and again when the agent re-registers after its stream drops, since
//! the leader replaces the node description, cache included, with every registration.

use crate::common;

use common::Fixture;
use common::leader::{FakeMember, Role, RunningAgent, agent_config};
use flame_proto::cluster::CacheEndpoint as WireCacheEndpoint;
use flame_proto::model::CacheEndpoint;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_registration_carries_the_configured_cache() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let mut config = agent_config(&fx, &[&leader.url])?;
    config.cache = Some(CacheEndpoint {
        flight_endpoint: "grpc://127.0.0.1:19090".into(),
        peer_addr: "127.0.0.1:19091".into(),
    });
    let expected = Some(WireCacheEndpoint {
        flight_endpoint: "grpc://127.0.0.1:19090".into(),
        peer_addr: "127.0.0.1:19091".into(),
    });
    let agent = RunningAgent::start(config);
    let first = leader.wait_connected(LIMIT).await?;
    assert_eq!(first.cache, expected);
    leader.end_stream(None);
    let again = leader.wait_connected(LIMIT).await?;
    assert_eq!(again.cache, expected, "a re-registration keeps the cache");
    agent.stop().await
}

#[tokio::test]
async fn an_agent_without_a_cache_registers_none() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    assert_eq!(leader.wait_connected(LIMIT).await?.cache, None);
    agent.stop().await
}
