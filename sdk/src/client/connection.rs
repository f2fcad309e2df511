//! [`Connection`]: a handle on a Flame cluster that finds the leader and rides through failover.
//!
//! What: writes go to the leader, found through `flame.cluster.v1.Cluster/Status` on any member
//! (the leader's own answer, or a follower's `leader_api_addr`); reads go to any member, the one
//! that last answered first. A call that fails with NotLeader follows the hint in the status
//! metadata; UNAVAILABLE or a broken connection forgets the leader (or moves a read to the next
//! member) and retries after a bounded exponential backoff with jitter. When nothing succeeds
//! before [`ConnectOptions::deadline`], the caller gets one [`ClientError::NoMember`] naming
//! every endpoint tried and the last failure.
//!
//! Why retrying is safe: every write the SDK sends is idempotent on retry. Task submissions
//! carry client request ids (the state machine returns the original task), a retried session
//! creation becomes a get-or-create with the same spec (see `session.rs`), and closing a
//! closed session is harmless.
//!
//! Caveat: a retry is triggered by transport-level failures too, so a non-idempotent call added
//! later must not go through `Connection::call` unprotected.

use super::ClientError;
use super::endpoints::{normalise, parse_endpoints};
use flame_proto::backoff::Backoff;
use flame_proto::error::FlameError;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Timeouts and retry policy of a [`Connection`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long one operation may keep retrying before it fails with [`ClientError::NoMember`].
    pub deadline: Duration,
    /// The limit of one attempt (one RPC to one member).
    pub attempt_timeout: Duration,
    /// The limit on establishing a TCP/HTTP2 connection to a member.
    pub connect_timeout: Duration,
    /// The first retry pause; it doubles per failure.
    pub backoff_base: Duration,
    /// The longest retry pause.
    pub backoff_cap: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(2),
        }
    }
}

/// Where a call must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The Raft leader (writes).
    Leader,
    /// Any member (reads and watches).
    Any,
}

/// A cheap-to-clone handle on a Flame cluster; see the module docs.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    options: ConnectOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Channels by URL (lazy: they connect on first use and reconnect by themselves).
    channels: BTreeMap<String, Channel>,
    /// The leader's URL, when known.
    leader: Option<String>,
    /// The member reads go to first.
    preferred: usize,
    /// Every URL a call was sent to (endpoints and leader hints), for the final error.
    tried: Vec<String>,
}

impl Connection {
    /// A connection to the members in `endpoints` (URLs or `host:port`), with default options.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Connection, ClientError> {
        Connection::with_options(endpoints, ConnectOptions::default())
    }

    /// A connection to the members in `FLAME_ENDPOINT` (comma-separated), default options.
    pub fn from_env() -> Result<Connection, ClientError> {
        let endpoints = super::endpoints::endpoints_from_env()?;
        Connection::with_options(&endpoints, ConnectOptions::default())
    }

    /// A connection to the members in `endpoints` with `options`. Nothing is contacted yet.
    pub fn with_options<S: AsRef<str>>(
        endpoints: &[S],
        options: ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let joined: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        let endpoints = parse_endpoints(&joined.join(","))?;
        Ok(Connection {
            inner: Arc::new(Inner {
                endpoints,
                options,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The members this connection was given, normalised.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The options in force.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// The leader's URL: the cached one, else discovered through `Cluster/Status`, retried
    /// until the deadline.
    pub async fn leader(&self) -> Result<String, ClientError> {
        self.call(Target::Leader, |_, _| async { Ok(()) }).await?;
        self.lock()
            .leader
            .clone()
            .ok_or_else(|| ClientError::Protocol("leader forgotten during discovery".into()))
    }

    /// Drops the cached leader so the next write rediscovers it (after a leadership transfer).
    pub(crate) fn forget_leader(&self) {
        self.lock().leader = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The (lazy) channel to `url`, recording it as tried.
    pub(crate) fn channel(&self, url: &str) -> Result<Channel, ClientError> {
        let mut state = self.lock();
        if !state.tried.iter().any(|t| t == url) {
            state.tried.push(url.to_owned());
        }
        if let Some(channel) = state.channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| ClientError::InvalidEndpoint(format!("{url}: {e}")))?
            .connect_timeout(self.inner.options.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        state.channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The member a read goes to now.
    pub(crate) fn read_member(&self) -> String {
        let state = self.lock();
        self.inner.endpoints[state.preferred % self.inner.endpoints.len()].clone()
    }

    /// Moves reads to the next member after `failed` failed.
    pub(crate) fn rotate(&self, failed: &str) {
        let mut state = self.lock();
        let current = self.inner.endpoints[state.preferred % self.inner.endpoints.len()].clone();
        if current == failed {
            state.preferred = state.preferred.wrapping_add(1);
        }
    }

    /// A fresh backoff with this connection's policy.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(
            self.inner.options.backoff_base,
            self.inner.options.backoff_cap,
        )
    }

    /// The error for "nothing answered before the deadline", naming every URL tried.
    pub(crate) fn no_member(&self, last: String) -> ClientError {
        let state = self.lock();
        let mut tried = self.inner.endpoints.clone();
        for url in &state.tried {
            if !tried.contains(url) {
                tried.push(url.clone());
            }
        }
        ClientError::NoMember {
            tried,
            deadline: self.inner.options.deadline,
            last,
        }
    }

    /// Runs `op` against `target` until it succeeds, fails for a reason retrying cannot fix, or
    /// the deadline passes. `op` gets the channel and the attempt number (0 first).
    pub(crate) async fn call<T, F, Fut>(&self, target: Target, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, u32) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.inner.options.deadline;
        let mut backoff = self.backoff();
        let mut last: Option<String> = None;
        for attempt in 0u32.. {
            match self.attempt(target, attempt, deadline, &mut op).await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => last = Some(why),
                // "No answer within 3ms" from an attempt the deadline squeezed would hide the
                // real cause (a refused connection, no quorum) in the final error.
                Err(Failure::Expired(why)) => last = last.or(Some(why)),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
        }
        Err(self.no_member(last.unwrap_or_else(|| String::from("no attempt finished"))))
    }

    /// One attempt of `Connection::call`: pick the member, run `op` under the attempt limit,
    /// classify the outcome and update the leader or read preference.
    async fn attempt<T, F, Fut>(
        &self,
        target: Target,
        attempt: u32,
        deadline: Instant,
        op: &mut F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Channel, u32) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let url = match target {
            Target::Leader => self.discover(deadline).await?,
            Target::Any => self.read_member(),
        };
        let channel = self.channel(&url).map_err(Failure::Fatal)?;
        let limit = self
            .inner
            .options
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let status = match tokio::time::timeout(limit, op(channel, attempt)).await {
            Ok(Ok(value)) => {
                self.settle(target, &url);
                return Ok(value);
            }
            Ok(Err(status)) => status,
            Err(_) if limit < self.inner.options.attempt_timeout => {
                return Err(Failure::Expired(format!(
                    "{url}: no answer within the {limit:?} left before the deadline"
                )));
            }
            Err(_) => Status::unavailable(format!("no answer within {limit:?}")),
        };
        Err(self.classify(target, &url, status))
    }

    /// Records that `url` answered.
    fn settle(&self, target: Target, url: &str) {
        if target == Target::Any
            && let Some(i) = self.inner.endpoints.iter().position(|e| e == url)
        {
            self.lock().preferred = i;
        }
    }

    /// Turns a failed attempt into a retry (updating leader and preference) or a fatal error.
    fn classify(&self, target: Target, url: &str, status: Status) -> Failure {
        let why = format!("{url}: {}", status.message());
        if !retriable(&status) {
            return Failure::Fatal(FlameError::from(status).into());
        }
        let hint = match FlameError::from(status) {
            FlameError::NotLeader { leader: Some(h) } => normalise(&h.addr).ok(),
            _ => None,
        };
        let mut state = self.lock();
        if state.leader.as_deref() == Some(url) || hint.is_some() {
            state.leader = hint;
        }
        drop(state);
        if target == Target::Any {
            self.rotate(url);
        }
        Failure::Retry(why)
    }

    /// The leader's URL, asking each member's `Cluster/Status` in turn when none is cached. An
    /// endpoint without that service (UNIMPLEMENTED: a single-server Flame) is the leader.
    async fn discover(&self, deadline: Instant) -> Result<String, Failure> {
        if let Some(url) = self.lock().leader.clone() {
            return Ok(url);
        }
        let mut why = String::from("no member knows a leader");
        for url in &self.inner.endpoints {
            let channel = self.channel(url).map_err(Failure::Fatal)?;
            let limit = self
                .inner
                .options
                .attempt_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            if limit.is_zero() {
                // Out of time: the failure seen so far is the real cause, not "no status
                // within 0ns".
                break;
            }
            let leader = match flame_proto::endpoint::leader_from_status(url, channel, limit).await
            {
                Ok(leader) => leader,
                Err(s) if s.code() == Code::Unimplemented => {
                    // A single-server Flame (upstream's) has no Cluster service: the endpoint
                    // that answers is the only server, so it takes the writes.
                    self.lock().leader = Some(url.clone());
                    return Ok(url.clone());
                }
                Err(s) => {
                    why = format!("{url}: {}", s.message());
                    continue;
                }
            };
            if let Some(leader) = leader {
                self.lock().leader = Some(leader.clone());
                return Ok(leader);
            }
        }
        Err(Failure::Retry(why))
    }
}

/// Why an attempt failed.
enum Failure {
    /// Worth another attempt (after a pause), with a one-line reason.
    Retry(String),
    /// Retrying cannot help.
    Fatal(ClientError),
    /// The attempt ran out of the time the deadline left it; an earlier failure, if any, is
    /// the better reason to report.
    Expired(String),
}

/// Whether a status means "another attempt, maybe elsewhere, may succeed".
///
/// A member's answer (it carries the Flame error kind) is classified by its kind alone,
/// through [`FlameError::is_retryable`]: not-leader, unavailable, or a write the member held
/// through a leader change without applying it. Its text never matters, so a server error
/// whose message mentions "transport" is not retried.
///
/// Any other status was made by tonic or hyper on this side of a connection that broke under
/// the call, and carries no kind: UNAVAILABLE, CANCELLED ("operation was canceled" when hyper
/// drops an in-flight request), UNKNOWN/INTERNAL naming the transport, or RESOURCE_EXHAUSTED
/// naming h2 (a connection closed by an HTTP/2 flood guard, `GOAWAY ENHANCE_YOUR_CALM`, which
/// fails every call on it at once; a new connection works). tonic gives these no structured
/// cause, so they are recognised by code and text.
pub(crate) fn retriable(status: &Status) -> bool {
    if flame_proto::error::is_flame_answer(status) {
        return FlameError::from(status.clone()).is_retryable();
    }
    match status.code() {
        Code::Unavailable | Code::Cancelled => true,
        Code::Unknown | Code::Internal | Code::ResourceExhausted => {
            let text = status.message().to_ascii_lowercase();
            let words = [
                "transport",
                "connection",
                "h2 protocol",
                "broken pipe",
                "canceled",
            ];
            words.iter().any(|w| text.contains(w))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback address where nothing listens (bound, then released).
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        addr.to_string()
    }

    fn short() -> ConnectOptions {
        ConnectOptions {
            deadline: Duration::from_millis(600),
            attempt_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn nothing_answering_is_one_error_naming_every_endpoint_after_the_deadline() {
        let (a, b) = (closed_port(), closed_port());
        let conn = Connection::with_options(&[a.as_str(), b.as_str()], short()).unwrap();
        let started = Instant::now();
        let err = conn.leader().await.unwrap_err();
        let took = started.elapsed();
        let ClientError::NoMember {
            tried, deadline, ..
        } = &err
        else {
            panic!("expected NoMember, got {err:?}");
        };
        assert_eq!(*deadline, Duration::from_millis(600));
        assert!(tried.contains(&format!("http://{a}")), "{tried:?}");
        assert!(tried.contains(&format!("http://{b}")), "{tried:?}");
        let text = err.to_string();
        assert!(text.contains(&a) && text.contains(&b), "{text}");
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn an_attempt_cut_short_by_the_deadline_does_not_hide_the_real_failure() {
        // Accepts TCP (the kernel's backlog) but never speaks HTTP/2: every attempt times out.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let options = ConnectOptions {
            deadline: Duration::from_millis(700),
            attempt_timeout: Duration::from_millis(300),
            ..short()
        };
        let conn = Connection::with_options(&[addr.as_str()], options).unwrap();
        let err = conn.get_session("s").await.unwrap_err();
        let ClientError::NoMember { last, .. } = &err else {
            panic!("expected NoMember, got {err:?}");
        };
        assert!(last.contains("no answer within 300ms"), "{last}");
    }

    #[tokio::test]
    async fn reads_fail_the_same_way_and_rotate_over_the_members() {
        let (a, b) = (closed_port(), closed_port());
        let conn = Connection::with_options(&[a.as_str(), b.as_str()], short()).unwrap();
        let err = conn.get_session("s").await.unwrap_err();
        assert!(matches!(err, ClientError::NoMember { .. }), "{err:?}");
        assert_eq!(conn.lock().tried.len(), 2, "both members were tried");
    }

    #[test]
    fn only_unavailable_held_writes_and_broken_connections_are_retried() {
        assert!(retriable(&Status::unavailable("no quorum")));
        assert!(retriable(&Status::from(FlameError::DeadlineExceeded(
            "the write was held for a leader change and not applied".into()
        ))));
        // tonic's own deadline (the client's grpc-timeout) says nothing about the write.
        assert!(!retriable(&Status::deadline_exceeded("Timeout expired")));
        assert!(retriable(&Status::unknown("transport error")));
        assert!(retriable(&Status::cancelled("operation was canceled")));
        assert!(retriable(&Status::resource_exhausted(
            "h2 protocol error: http2 error"
        )));
        assert!(!retriable(&Status::from(FlameError::TooLarge {
            what: "task input".into(),
            size: 2,
            limit: 1,
        })));
        assert!(!retriable(&Status::from(FlameError::Cancelled(
            "client went away".into()
        ))));
        assert!(!retriable(&Status::not_found("session s1 not found")));
        assert!(!retriable(&Status::from(FlameError::Internal(
            "connection to the cache failed".into()
        ))));
        assert!(!retriable(&Status::invalid_argument("bad id")));
    }

    /// A member's answer is classified by its Flame error kind, never by its text.
    #[test]
    fn a_server_error_mentioning_the_transport_is_classified_by_its_kind() {
        let internal = FlameError::Internal("transport error talking to the disk".into());
        assert!(!retriable(&Status::from(internal)));
        let exhausted = FlameError::Exhausted("connection table full".into());
        assert!(!retriable(&Status::from(exhausted)));
        let not_leader = FlameError::NotLeader { leader: None };
        assert!(retriable(&Status::from(not_leader)));
        // The same text from tonic itself (no kind) is a broken connection.
        assert!(retriable(&Status::internal("transport error")));
    }
}
