//! The checkers catch a real bug. Members built with fail points and started with
//! `FAILPOINTS=stale-reads=return` answer every read from their own applied state, skipping
//! the read index that makes reads linearizable (`MemberHandle::read`). With one follower cut
//! off from the other two, clients that read through it see tasks missing or in states older
//! than ones already read elsewhere, and the linearizability checker must say so.
//!
//! The run prints the summary table and the first violations, the evidence that a suite which
//! finds nothing in the other runs would have found this.

use super::support::{self, Network};
use chaos_tests::AgentOptions;
use chaos_tests::nemesis::FaultKind;
use chaos_tests::run::{RunConfig, run, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_fail_the_linearizability_check() -> anyhow::Result<()> {
    let network = Network {
        failpoints: true,
        env: vec![("FAILPOINTS", "stale-reads=return")],
        ..Network::default()
    };
    let mut running =
        support::start_on_network("stale-reads", &["node-a", "node-b"], network).await?;
    let options = AgentOptions::new(&running.binaries);
    let config = RunConfig::new(1, &[FaultKind::IsolateFollower]);
    let report = run(&mut running.cluster, &options, &config).await?;
    println!("{}", table(std::slice::from_ref(&report)));
    for violation in report.nonlinearizable.iter().take(3) {
        println!("{violation}");
    }
    anyhow::ensure!(
        !report.nonlinearizable.is_empty(),
        "the checker found no stale read although every read skipped the read index: {:?}",
        report.problems()
    );
    Ok(())
}
