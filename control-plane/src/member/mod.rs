//! A control-plane member's core: what the services share and what runs beside them.
//!
//! - [`handle`]: the [`handle::MemberHandle`] every service holds: writes through the
//!   group-commit [`proposer`], forwarding to the leader, linearizable reads;
//! - [`limits`]: the request limits the services apply;
//! - [`bootstrap`] (forming the group), [`leader`] (the leader's duties), [`scheduling`] (its
//!   scheduling loop), [`admin`] (`flame.cluster.v1.Cluster`) and [`cache_ca`].
//!
//! Wiring (storage, Raft, listeners, services, shutdown) is in `crate::server`; nothing here
//! depends on the client-facing services.

pub mod admin;
pub mod bootstrap;
pub mod cache_ca;
pub mod handle;
pub mod leader;
pub mod limits;
pub mod proposer;
pub mod scheduling;

use crate::raft::PeerAddress;
use crate::state::Member;

impl PeerAddress for Member {
    fn raft_addr(&self) -> &str {
        &self.raft_addr
    }
}
