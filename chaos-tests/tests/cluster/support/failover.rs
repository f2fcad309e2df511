//! Steps shared by the tests that take the leader away under a flamepy client talking to a
//! follower: SIGKILL, SIGSTOP or partition the current leader while sparing the client's
//! member ([`Disruption`]), parse the client script's per-call lines, and relate calls to the
//! disruptions.
//!
//! The client's member is never killed: when it leads at the moment a kill is due, leadership
//! is first handed to the third member through the admin API (`TransferLeader`), so the member
//! killed is always the leader and the client's member is always a follower when it dies.
//!
//! Caveat: the kill times are taken from the wall clock (`SystemTime`) so they can be compared
//! with the `time.time()` stamps the Python scripts print; both run on this machine.

use super::{Running, STARTUP};
use anyhow::{Context, bail, ensure};
use chaos_tests::flamepy::ScriptRun;
use flame_proto::cluster::TransferLeaderRequest;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A client script running in the background (see `chaos_tests::flamepy::run_client_script`).
pub type Client = tokio::task::JoinHandle<anyhow::Result<ScriptRun>>;

/// How long a disrupted member stays down (killed, stopped or cut off): past the election
/// timeout, so the other two elect a leader.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// How the leader is taken away from the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// SIGKILL, restarted [`DOWN_FOR`] later on the same data.
    Kill,
    /// SIGSTOP for [`DOWN_FOR`] (past the election timeout), then SIGCONT: it must step down.
    Pause,
    /// Cut off from both followers for [`DOWN_FOR`] (clients still reach it), then healed.
    Isolate,
}

impl Disruption {
    /// What was done, for the figures.
    pub fn verb(self) -> &'static str {
        match self {
            Disruption::Kill => "SIGKILLed",
            Disruption::Pause => "SIGSTOPped",
            Disruption::Isolate => "partitioned away",
        }
    }
}

/// One disruption of the leader.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The member disrupted (the leader at that moment).
    pub member: u64,
    /// How.
    pub how: Disruption,
    /// When it began, in Unix seconds.
    pub at: f64,
    /// The leader elected among the other two.
    pub new_leader: u64,
    /// From the disruption until the other two agreed on a new leader.
    pub elected_after: Duration,
    /// Whether leadership had first to be moved off the client's member.
    pub transferred: bool,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// SIGKILLs the current leader, which is made not to be `spare` first (see the module docs);
/// waits for the other two to elect a leader, restarts the killed member [`DOWN_FOR`] after
/// the kill, and waits until all three agree on a leader again and the restarted member has
/// applied what the leader had committed then.
pub async fn kill_leader_sparing(run: &mut Running, spare: u64) -> anyhow::Result<Kill> {
    disrupt_leader_sparing(run, spare, Disruption::Kill).await
}

/// [`kill_leader_sparing`] for any [`Disruption`]: the leader (never `spare`) is disrupted, the
/// other two elect a leader, and [`DOWN_FOR`] after it began the disruption ends (restart,
/// SIGCONT or heal) and the member must catch up. Isolation needs a partitionable cluster.
pub async fn disrupt_leader_sparing(
    run: &mut Running,
    spare: u64,
    how: Disruption,
) -> anyhow::Result<Kill> {
    let all = [1, 2, 3];
    let (leader, transferred) = lead_elsewhere(run, spare).await?;
    ensure!(
        leader != spare,
        "about to disrupt the client's member {spare}"
    );
    let others: Vec<u64> = all.into_iter().filter(|id| *id != leader).collect();
    let at = unix_now();
    let began = Instant::now();
    match how {
        Disruption::Kill => run.cluster.kill(leader)?,
        Disruption::Pause => run.cluster.pause(leader)?,
        Disruption::Isolate => network(run)?.isolate(leader, &others)?,
    }
    let new_leader = match run.cluster.wait_for_leader(&others, STARTUP).await {
        Ok(id) => id,
        Err(e) => bail!("{e}\n{}", member_logs(run, &others)),
    };
    let elected_after = began.elapsed();
    tokio::time::sleep_until((began + DOWN_FOR).into()).await;
    match how {
        Disruption::Kill => run.cluster.spawn(leader)?,
        Disruption::Pause => run.cluster.resume(leader)?,
        Disruption::Isolate => network(run)?.heal()?,
    }
    let rejoined = async {
        let now = run.cluster.wait_for_leader(&all, STARTUP).await?;
        let committed = run
            .cluster
            .status(now)
            .await
            .context("the leader's status")?
            .committed;
        run.cluster.wait_applied(leader, committed, STARTUP).await?;
        anyhow::Ok(())
    };
    if let Err(e) = rejoined.await {
        bail!(
            "member {leader} did not rejoin after it was {}: {e}\n{}",
            how.verb(),
            member_logs(run, &all)
        );
    }
    Ok(Kill {
        member: leader,
        how,
        at,
        new_leader,
        elected_after,
        transferred,
    })
}

fn network(run: &Running) -> anyhow::Result<&chaos_tests::net::Netns> {
    run.cluster
        .network()
        .context("partitions need a cluster from support::start_partitionable")
}

/// Attempts at moving leadership off the client's member before giving up.
const TRANSFER_ATTEMPTS: usize = 5;

/// The current leader, made to be another member than `spare` with `TransferLeader` if needed
/// (to the most up-to-date other member: a member whose log is behind cannot win); returns it
/// and whether a transfer was needed. Bounded by [`TRANSFER_ATTEMPTS`].
async fn lead_elsewhere(run: &Running, spare: u64) -> anyhow::Result<(u64, bool)> {
    let mut failures = Vec::new();
    for attempt in 0..=TRANSFER_ATTEMPTS {
        let leader = run.cluster.wait_for_leader(&[1, 2, 3], STARTUP).await?;
        if leader != spare {
            return Ok((leader, attempt > 0));
        }
        if attempt == TRANSFER_ATTEMPTS {
            break;
        }
        let mut others = Vec::new();
        for id in [1, 2, 3].into_iter().filter(|id| *id != spare) {
            let last = run.cluster.status(id).await.map(|s| s.last_log_index);
            others.push((last.unwrap_or(0), id));
        }
        let to = others.iter().max().map(|(_, id)| *id).context("a member")?;
        let moved = run
            .cluster
            .admin(spare)?
            .transfer_leader(TransferLeaderRequest { to })
            .await;
        if let Err(e) = moved {
            failures.push(format!("to member {to}: {}", e.message()));
        }
    }
    bail!(
        "leadership did not move off the client's member {spare} in {TRANSFER_ATTEMPTS} \
         transfers:\n{}",
        failures.join("\n")
    )
}

/// The last lines of the logs of `members`, for failure messages.
pub fn member_logs(run: &Running, members: &[u64]) -> String {
    members
        .iter()
        .map(|id| format!("--- member {id} log:\n{}", run.cluster.log_tail(*id, 25)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines a script has appended to its trace file (`FAILOVER_TRACE`) so far.
pub fn trace_lines(trace: &Path) -> Vec<String> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `error`, completed with what the script printed: its whole output if it has ended, else
/// (it is stopped then) the last lines of its trace file.
pub async fn give_up(error: anyhow::Error, client: Client, trace: &Path) -> anyhow::Error {
    let output = if client.is_finished() {
        match client.await {
            Ok(Ok(script)) => format!("the client script: {}", script.describe()),
            Ok(Err(e)) => format!("the client script: {e}"),
            Err(e) => format!("the client task: {e}"),
        }
    } else {
        client.abort();
        let lines = trace_lines(trace);
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "the client script, stopped, had printed {} lines; the last:\n{tail}",
            lines.len()
        )
    };
    anyhow::anyhow!("{error:#}\n{output}")
}

/// One client call as a script reported it: `LATENCY <key> <label> <start> <duration>`, plus
/// `ERROR <key> <label> <text>` when it raised.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call's number (or iteration) in the script.
    pub key: String,
    /// What the call was about: a session id or an operation name.
    pub label: String,
    /// When it started, in Unix seconds.
    pub start: f64,
    /// How long it took, in seconds.
    pub duration: f64,
    /// `<exception type>: <message>` if it raised.
    pub error: Option<String>,
}

impl Call {
    /// Whether the call was in flight at Unix time `t`.
    pub fn spans(&self, t: f64) -> bool {
        self.start <= t && t <= self.start + self.duration
    }
}

/// The calls reported on `stdout`, in the order their `LATENCY` lines appear.
pub fn parse_calls(stdout: &str) -> anyhow::Result<Vec<Call>> {
    let mut calls = Vec::new();
    let mut errors = std::collections::HashMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("LATENCY ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            ensure!(f.len() == 4, "malformed line {line:?}");
            calls.push(Call {
                key: f[0].to_owned(),
                label: f[1].to_owned(),
                start: f[2].parse().with_context(|| format!("start in {line:?}"))?,
                duration: f[3]
                    .parse()
                    .with_context(|| format!("duration in {line:?}"))?,
                error: None,
            });
        } else if let Some(rest) = line.strip_prefix("ERROR ") {
            let mut f = rest.splitn(3, ' ');
            let (Some(key), Some(label), Some(text)) = (f.next(), f.next(), f.next()) else {
                bail!("malformed line {line:?}");
            };
            errors.insert((key.to_owned(), label.to_owned()), text.to_owned());
        }
    }
    for call in &mut calls {
        call.error = errors.remove(&(call.key.clone(), call.label.clone()));
    }
    ensure!(
        errors.is_empty(),
        "ERROR lines without a LATENCY line: {errors:?}"
    );
    Ok(calls)
}

/// The longest call in flight at each kill (`None` when no call was in flight then).
pub fn longest_at_kills<'a>(calls: &'a [Call], kills: &[Kill]) -> Vec<Option<&'a Call>> {
    kills
        .iter()
        .map(|k| {
            calls
                .iter()
                .filter(|c| c.spans(k.at))
                .max_by(|a, b| a.duration.total_cmp(&b.duration))
        })
        .collect()
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `values`, `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Prints each kill and the longest call in flight at it, then the p50 and max of those
/// longest calls (shown with `--nocapture`).
pub fn print_kills(calls: &[Call], kills: &[Kill], since: f64) {
    let longest = longest_at_kills(calls, kills);
    let mut maxima = Vec::new();
    for (n, (kill, call)) in kills.iter().zip(&longest).enumerate() {
        let in_flight = calls.iter().filter(|c| c.spans(kill.at)).count();
        let moved = if kill.transferred {
            " (leadership first moved off the client's member)"
        } else {
            ""
        };
        let worst = match call {
            Some(c) => {
                maxima.push(c.duration);
                format!(
                    "longest call in flight {:.3}s ({} {}, started {:.3}s before the kill{})",
                    c.duration,
                    c.label,
                    c.key,
                    kill.at - c.start,
                    c.error.as_ref().map(|_| ", failed").unwrap_or(""),
                )
            }
            None => "no call in flight".to_owned(),
        };
        println!(
            "disruption {}: leader {} {} at +{:.3}s{moved}; member {} leads after {:?}; \
             {in_flight} calls in flight; {worst}",
            n + 1,
            kill.member,
            kill.how.verb(),
            kill.at - since,
            kill.new_leader,
            kill.elected_after,
        );
    }
    match (percentile(&maxima, 50.0), percentile(&maxima, 100.0)) {
        (Some(p50), Some(max)) => println!(
            "longest call in flight per kill: p50 {p50:.3}s, max {max:.3}s over {} kills",
            maxima.len()
        ),
        _ => println!("no call was in flight at any kill"),
    }
}
