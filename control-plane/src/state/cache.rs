//! What the object cache needs from replicated state: the object-drop log and the cluster CA.
//!
//! What:
//! - The object-drop log: when a session moves Open → Closed, `<application>/<session id>` is
//!   appended; when an application is unregistered, `<application>/*`. Every cache polls the log
//!   (`flame.cluster.v1.Cluster/CacheDirectory`) and deletes the objects under each prefix.
//!   Sequence numbers are assigned here, from 1 and without gaps; the time is the command's
//!   `now_ms`. At most [`MAX_OBJECT_DROPS`] entries are kept, the oldest trimmed in the same
//!   apply, so state and snapshots stay bounded.
//! - The cluster CA ([`ClusterCa`]) that signs cache peer certificates: the leader generates
//!   one when the applied state has none and proposes [`super::Command::SetClusterCa`]; the
//!   first one applied wins and later ones are successful no-ops, so racing leaders agree.
//!
//! Why in the state machine: every member must answer the directory and sign certificates from
//! its own applied state, including followers, and a drop must outlive the leader that decided
//! it.
//!
//! Caveats:
//! - A cache whose `drops_after + 1` is below the oldest retained seq missed drops and must
//!   resynchronise some other way (for example by dropping everything it holds).
//! - Session ids are not restricted, so a session literally named `*` produces the prefix
//!   `<application>/*`, the same as unregistering its application.
//! - The CA's private key is part of replicated state: it is in every member's `sm.redb`, in
//!   every snapshot and in the Raft log entry that set it. Until the cluster authenticates its
//!   API, anyone who can reach a member can also obtain a peer certificate.

use super::model::State;
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::ObjectDrop;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Most object drops kept; older ones are trimmed when a new one is appended.
pub const MAX_OBJECT_DROPS: usize = 65_536;

/// The cluster CA: a self-signed certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCa {
    /// The CA certificate (the trust anchor every cache peer is given).
    pub cert_pem: String,
    /// The CA's private key (PKCS#8); it signs cache peer certificates.
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Part of the object-drop log, as [`State::object_drops`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectDropPage {
    /// Drops after the requested seq, ascending, at most the requested count.
    pub drops: Vec<ObjectDrop>,
    /// The oldest retained seq; 0 when the log is empty.
    pub first_seq: u64,
    /// The newest seq assigned; 0 when none was.
    pub last_seq: u64,
}

/// The drop prefix of session `session_id` of application `application`.
pub fn session_prefix(application: &str, session_id: &str) -> String {
    format!("{application}/{session_id}")
}

/// The drop prefix of every object of application `application`.
pub fn application_prefix(application: &str) -> String {
    format!("{application}/*")
}

impl State {
    /// The drops with seq greater than `after`, ascending, at most `max` of them, with the
    /// first and last seq of the log.
    pub fn object_drops(&self, after: u64, max: usize) -> ObjectDropPage {
        let (first_seq, last_seq) = self.object_drop_range();
        let start = after
            .saturating_add(1)
            .max(first_seq)
            .saturating_sub(first_seq);
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let drops = if start < self.object_drops.len() {
            let count = max.min(self.object_drops.len() - start);
            self.object_drops
                .skip(start)
                .take(count)
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        ObjectDropPage {
            drops,
            first_seq,
            last_seq,
        }
    }

    /// The oldest retained and the newest drop seq; `(0, 0)` before the first drop.
    pub fn object_drop_range(&self) -> (u64, u64) {
        match (self.object_drops.front(), self.object_drops.back()) {
            (Some(first), Some(last)) => (first.seq, last.seq),
            _ => (0, 0),
        }
    }

    /// The retained drop with sequence number `seq`.
    pub fn object_drop(&self, seq: u64) -> Option<&ObjectDrop> {
        let first = self.object_drops.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.object_drops.get(index).filter(|d| d.seq == seq)
    }

    /// The cluster CA, once one was applied.
    pub fn cluster_ca(&self) -> Option<&ClusterCa> {
        self.cluster_ca.as_deref()
    }
}

/// Appends a drop of `prefix` at the entry's time with the next seq, trimming the oldest beyond
/// [`MAX_OBJECT_DROPS`].
pub(crate) fn record_drop(tx: &mut Tx<'_>, prefix: String) {
    let at_ms = tx.now_ms;
    let (_, last) = tx.state.object_drop_range();
    let seq = last + 1;
    tx.state
        .object_drops
        .push_back(ObjectDrop { seq, prefix, at_ms });
    tx.log.object_drop_changed(seq);
    while tx.state.object_drops.len() > MAX_OBJECT_DROPS {
        if let Some(trimmed) = tx.state.object_drops.pop_front() {
            tx.log.object_drop_changed(trimmed.seq);
        }
    }
}

/// SetClusterCa: stores `ca` unless a CA exists; true when stored now. Both parts must look
/// like PEM (apply cannot undo a stored CA, so an empty one is refused).
pub(crate) fn set_cluster_ca(tx: &mut Tx<'_>, ca: ClusterCa) -> Result<bool, FlameError> {
    let pem = |text: &str, label: &str| text.contains("-----BEGIN ") && text.contains(label);
    if !pem(&ca.cert_pem, "CERTIFICATE-----") || !pem(&ca.key_pem, "PRIVATE KEY-----") {
        return Err(FlameError::InvalidArgument(
            "the cluster CA needs a PEM certificate and a PEM private key".into(),
        ));
    }
    if tx.state.cluster_ca.is_some() {
        return Ok(false);
    }
    tx.state.cluster_ca = Some(Arc::new(ca));
    tx.log.cluster_ca_changed();
    Ok(true)
}
