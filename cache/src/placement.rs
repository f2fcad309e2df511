//! Placement: which caches hold an object, by rendezvous (highest-random-weight) hashing.
//!
//! What: a [`Directory`] is this cache's view of the cluster's caches (from the control plane:
//! every node that reported a cache, with whether it is Ready). For a key, every cache gets a
//! score, `BLAKE3(node name, key)`; the Ready caches in descending score order are the key's
//! ranking, and its first `replicas` are the key's holders. The first reachable one is the
//! primary, which orders the object's versions.
//!
//! Why rendezvous hashing: every cache computes the same holders from the same directory with
//! no coordination and no Raft commit per object. When a cache joins, it takes over only the
//! keys where it now ranks among the first `replicas` (about `replicas / n` of them); when one
//! leaves, only its keys move, each to the next cache in that key's ranking. The relative order
//! of the other caches never changes, so a reader that walks a key's ranking past caches that
//! lack it finds the old holders right behind the new ones (see `docs/cache.md`).
//!
//! Caveat: views can differ for a moment after a change (each cache polls the control plane);
//! reads then walk further down the ranking, and repair moves copies to the new holders.

use crate::key::ObjectKey;

/// One cache of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node it serves (its identity in placement).
    pub node: String,
    /// Its Flight URL.
    pub flight_endpoint: String,
    /// Its QUIC peer address, `host:port`.
    pub peer_addr: String,
    /// Whether its node is Ready; only Ready caches are placement targets.
    pub ready: bool,
}

/// This cache's view of the cluster's caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    me: Member,
    members: Vec<Member>,
}

/// A key's score on `node`.
fn score(node: &str, key: &ObjectKey) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(node.as_bytes());
    hasher.update(&[0]);
    hasher.update(key.to_string().as_bytes());
    let digest = hasher.finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

impl Directory {
    /// A directory of `others` plus this cache. This cache is Ready unless the listing says
    /// otherwise, and its own addresses win over the listing's.
    pub fn new(mut me: Member, others: Vec<Member>) -> Directory {
        if let Some(listed) = others.iter().find(|m| m.node == me.node) {
            me.ready = listed.ready;
        }
        let mut members: Vec<Member> = others.into_iter().filter(|m| m.node != me.node).collect();
        members.push(me.clone());
        members.sort_by(|a, b| a.node.cmp(&b.node));
        Directory { me, members }
    }

    /// A directory of this cache alone (a standalone cache).
    pub fn alone(me: Member) -> Directory {
        Directory::new(me, Vec::new())
    }

    /// This cache.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// Whether `member` is this cache.
    pub fn is_me(&self, member: &Member) -> bool {
        member.node == self.me.node
    }

    /// Every cache, sorted by node name.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every cache but this one.
    pub fn others(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !self.is_me(m))
    }

    /// How many caches are Ready.
    pub fn ready_count(&self) -> usize {
        self.members.iter().filter(|m| m.ready).count()
    }

    /// Every cache in `key`'s order: Ready ones by descending score, then the others by
    /// descending score (they may still hold copies from before).
    pub fn ranked(&self, key: &ObjectKey) -> Vec<&Member> {
        let mut scored: Vec<(bool, u64, &Member)> = self
            .members
            .iter()
            .map(|m| (m.ready, score(&m.node, key), m))
            .collect();
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.cmp(&a.1))
                .then(a.2.node.cmp(&b.2.node))
        });
        scored.into_iter().map(|(_, _, m)| m).collect()
    }

    /// The key's holders: the first `replicas` Ready caches of its ranking (fewer when fewer
    /// are Ready).
    pub fn holders(&self, key: &ObjectKey, replicas: usize) -> Vec<&Member> {
        self.ranked(key)
            .into_iter()
            .filter(|m| m.ready)
            .take(replicas)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, ready: bool) -> Member {
        Member {
            node: node.into(),
            flight_endpoint: format!("grpc://{node}:9090"),
            peer_addr: format!("{node}:9091"),
            ready,
        }
    }

    fn directory(nodes: &[&str]) -> Directory {
        Directory::new(
            member(nodes[0], true),
            nodes.iter().map(|n| member(n, true)).collect(),
        )
    }

    fn keys(n: usize) -> Vec<ObjectKey> {
        (0..n)
            .map(|i| ObjectKey::from_parts("app", "ssn", &format!("o{i}")).unwrap())
            .collect()
    }

    #[test]
    fn every_cache_computes_the_same_holders() {
        let a = Directory::new(
            member("a", true),
            vec![member("b", true), member("c", true)],
        );
        let c = Directory::new(
            member("c", true),
            vec![member("a", true), member("b", true)],
        );
        for key in keys(50) {
            let names = |d: &Directory| {
                d.holders(&key, 2)
                    .iter()
                    .map(|m| m.node.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&a), names(&c));
        }
    }

    #[test]
    fn a_new_cache_takes_over_only_keys_where_it_ranks_first_without_reordering_the_rest() {
        let before = directory(&["a", "b", "c"]);
        let after = directory(&["a", "b", "c", "d"]);
        let mut moved = 0;
        for key in keys(2000) {
            let old: Vec<_> = before.ranked(&key).iter().map(|m| m.node.clone()).collect();
            let new: Vec<_> = after
                .ranked(&key)
                .iter()
                .map(|m| m.node.clone())
                .filter(|n| n != "d")
                .collect();
            assert_eq!(old, new, "the relative order of the old caches is kept");
            if after.holders(&key, 2).iter().any(|m| m.node == "d") {
                moved += 1;
            }
        }
        // About replicas/n = 2/4 of the keys get d as one of their two holders.
        assert!((800..1200).contains(&moved), "{moved}");
    }

    #[test]
    fn not_ready_caches_rank_last_and_hold_nothing() {
        let d = Directory::new(
            member("a", true),
            vec![member("b", false), member("c", true)],
        );
        for key in keys(50) {
            let ranked = d.ranked(&key);
            assert_eq!(ranked.last().unwrap().node, "b");
            assert!(d.holders(&key, 3).iter().all(|m| m.node != "b"));
        }
        assert_eq!(d.ready_count(), 2);
    }

    #[test]
    fn the_listing_says_whether_this_cache_is_ready() {
        let d = Directory::new(member("a", true), vec![member("a", false)]);
        assert!(!d.me().ready);
        assert_eq!(d.members().len(), 1);
        assert!(Directory::alone(member("x", true)).me().ready);
    }
}
