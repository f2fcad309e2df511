//! serde for [`FlameError`] inside replicated responses.
//!
//! What: [`WireError`] mirrors `FlameError`, which has no serde derives of its own, and the
//! `flame_result`/`flame_results` modules serialise `Result<T, FlameError>` through it for
//! `#[serde(with)]` fields of the command module's `Outcome`.
//!
//! Caveat: responses are stored in request records (postcard, positional): only ever append
//! variants to the mirror.

use flame_proto::error::FlameError;
use serde::{Deserialize, Serialize};

/// A serialisable mirror of [`FlameError`], which has no serde derives of its own.
#[derive(Serialize, Deserialize)]
pub(crate) enum WireError {
    NotFound(String),
    AlreadyExists(String),
    InvalidArgument(String),
    InvalidState(String),
    NotLeader(Option<(u64, String)>),
    Unavailable(String),
    TooLarge(String, u64, u64),
    Internal(String),
    Cancelled(String),
    DeadlineExceeded(String),
    Exhausted(String),
}

impl From<&FlameError> for WireError {
    fn from(e: &FlameError) -> Self {
        use FlameError as F;
        match e.clone() {
            F::NotFound(m) => WireError::NotFound(m),
            F::AlreadyExists(m) => WireError::AlreadyExists(m),
            F::InvalidArgument(m) => WireError::InvalidArgument(m),
            F::InvalidState(m) => WireError::InvalidState(m),
            F::NotLeader { leader } => WireError::NotLeader(leader.map(|h| (h.id, h.addr))),
            F::Unavailable(m) => WireError::Unavailable(m),
            F::TooLarge { what, size, limit } => {
                WireError::TooLarge(what, size as u64, limit as u64)
            }
            F::Internal(m) => WireError::Internal(m),
            F::Cancelled(m) => WireError::Cancelled(m),
            F::DeadlineExceeded(m) => WireError::DeadlineExceeded(m),
            F::Exhausted(m) => WireError::Exhausted(m),
        }
    }
}

impl From<WireError> for FlameError {
    fn from(e: WireError) -> Self {
        use flame_proto::error::LeaderHint;
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match e {
            WireError::NotFound(m) => FlameError::NotFound(m),
            WireError::AlreadyExists(m) => FlameError::AlreadyExists(m),
            WireError::InvalidArgument(m) => FlameError::InvalidArgument(m),
            WireError::InvalidState(m) => FlameError::InvalidState(m),
            WireError::NotLeader(hint) => FlameError::NotLeader {
                leader: hint.map(|(id, addr)| LeaderHint { id, addr }),
            },
            WireError::Unavailable(m) => FlameError::Unavailable(m),
            WireError::TooLarge(what, s, l) => FlameError::TooLarge {
                what,
                size: size(s),
                limit: size(l),
            },
            WireError::Internal(m) => FlameError::Internal(m),
            WireError::Cancelled(m) => FlameError::Cancelled(m),
            WireError::DeadlineExceeded(m) => FlameError::DeadlineExceeded(m),
            WireError::Exhausted(m) => FlameError::Exhausted(m),
        }
    }
}

/// serde for `Result<T, FlameError>` through [`WireError`].
pub(crate) mod flame_result {
    use super::WireError;
    use flame_proto::error::FlameError;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Result<T, FlameError>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map_err(WireError::from).serialize(s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<T, FlameError>, D::Error> {
        Ok(Result::<T, WireError>::deserialize(d)?.map_err(FlameError::from))
    }
}

/// serde for `Vec<Result<T, FlameError>>` through [`WireError`].
pub(crate) mod flame_results {
    use super::WireError;
    use flame_proto::error::FlameError;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        values: &[Result<T, FlameError>],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|v| v.as_ref().map_err(WireError::from)))
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Result<T, FlameError>>, D::Error> {
        let wire = Vec::<Result<T, WireError>>::deserialize(d)?;
        Ok(wire
            .into_iter()
            .map(|v| v.map_err(FlameError::from))
            .collect())
    }
}
