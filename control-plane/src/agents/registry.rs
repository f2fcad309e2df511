//! [`Streams`]: which `Sync` stream currently speaks for each node on this member.
//!
//! What: a stream *claims* its node after the first heartbeat. A newer claim for the same node
//! supersedes the older one, which is told through its [`Claim::superseded`] receiver and ends
//! without proposing `NodeDisconnected` (its agent is evidently still there). Dropping a claim
//! releases the node only if no newer claim took it.
//!
//! Why: an agent that reconnects over a half-open connection would otherwise have two streams
//! for one node, and the old one ending would mark the node Unknown while the new one is live.
//!
//! Caveat: claims are per member; a stream on a former leader ends on its own when leadership
//! moves, so two members never serve one node for long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

#[derive(Default)]
struct Inner {
    next_id: u64,
    nodes: HashMap<String, (u64, oneshot::Sender<()>)>,
}

/// The streams of this member by node; see the module docs.
#[derive(Default)]
pub struct Streams {
    inner: Mutex<Inner>,
}

/// One stream's claim on its node; dropping it releases the node unless superseded.
pub struct Claim {
    streams: Arc<Streams>,
    node: String,
    id: u64,
    /// Resolves when a newer stream claimed the node.
    pub superseded: oneshot::Receiver<()>,
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `node` for a new stream, superseding the stream that held it.
    pub fn claim(self: &Arc<Self>, node: &str) -> Claim {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_id = inner.next_id.wrapping_add(1);
        let id = inner.next_id;
        if let Some((_, previous)) = inner.nodes.insert(node.to_owned(), (id, tx)) {
            let _ = previous.send(());
        }
        Claim {
            streams: self.clone(),
            node: node.to_owned(),
            id,
            superseded: rx,
        }
    }

    /// The number of nodes with a stream on this member.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// True when no node has a stream on this member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Claim {
    /// True while no newer stream claimed the node.
    pub fn is_current(&self) -> bool {
        let inner = self.streams.lock();
        inner
            .nodes
            .get(&self.node)
            .is_some_and(|(id, _)| *id == self.id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut inner = self.streams.lock();
        if inner
            .nodes
            .get(&self.node)
            .is_some_and(|(id, _)| *id == self.id)
        {
            inner.nodes.remove(&self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_claim_supersedes_the_older_and_survives_its_drop() {
        let streams = Arc::new(Streams::default());
        let mut first = streams.claim("n1");
        assert!(first.is_current());
        let second = streams.claim("n1");
        assert!(!first.is_current());
        assert!(first.superseded.try_recv().is_ok());
        drop(first);
        assert!(second.is_current());
        assert_eq!(streams.len(), 1);
        drop(second);
        assert!(streams.is_empty());
    }
}
