//! A private network for one cluster: each member in its own network namespace, so the nemesis
//! can cut, delay and drop the traffic between members while the test still reaches them.
//!
//! Layout (`ip netns`, veth pairs and a bridge, all created by the test and removed on drop):
//!
//! ```text
//!   host (the test, node agents)          hub namespace              member namespaces
//!   flcNNNNN 10.213.S.1/24  ──veth──  h0 ─┐
//!                                         br0 ─ h1 ──veth── eth0 10.213.S.11/24  (member 1)
//!                                             ─ h2 ──veth── eth0 10.213.S.12/24  (member 2)
//!                                             ─ h3 ──veth── eth0 10.213.S.13/24  (member 3)
//! ```
//!
//! Why a hub namespace: on a Docker host the root namespace's `FORWARD` policy is `DROP` and
//! `br_netfilter` sends bridged frames through it, so a bridge in the root namespace would drop
//! member-to-member traffic. The hub's own (empty) ruleset forwards everything, and the host
//! reaches every member over the bridge without routing.
//!
//! Faults: [`Netns::isolate`] installs an nftables table in a member's namespace that drops all
//! packets to and from the named peers (both directions, so established connections stall as
//! they would behind a failed switch, and the host's clients still reach the member);
//! [`Netns::degrade`] makes a member's link slow (a `tc tbf` token bucket, whose queue delays
//! packets) and lossy (nftables drops a random share); [`Netns::heal`] removes both everywhere.
//!
//! Caveats: needs root (`CAP_NET_ADMIN`) and `ip`, `nft` and `tc` (Debian's iproute2 and
//! nftables). `tc netem` is not used: kernels built without `CONFIG_NET_SCH_NETEM`, as this
//! machine's is, refuse it.
//! Names carry the test process id, so parallel test binaries do not collide, and
//! [`Netns::create`] first removes namespaces left by test processes that no longer run.

use crate::HarnessError;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The private network of one cluster.
pub struct Netns {
    /// Prefix of every name this network created.
    tag: String,
    /// The third octet of `10.213.S.0/24`.
    subnet: u8,
    /// Member id to namespace name.
    members: BTreeMap<u64, String>,
}

/// The name prefix of every namespace the harness creates.
const PREFIX: &str = "flc-";

impl Netns {
    /// Creates the hub, the host's interface and one namespace per member in `ids`.
    pub fn create(ids: &[u64]) -> Result<Netns, HarnessError> {
        remove_stale();
        // Namespace teardown is asynchronous in the kernel: a network made just after another was
        // dropped must not reuse its names or subnet.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = free_subnet(pid.wrapping_add(made))?;
        let mut net = Netns {
            tag: format!("{PREFIX}{pid}-{made}"),
            subnet,
            members: BTreeMap::new(),
        };
        let hub = net.hub();
        let host_if = format!("flc{}x{}", pid % 1_000_000, made % 1_000);
        ip(&["netns", "add", &hub])?;
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "h0", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&["-n", &hub, "link", "set", "h0", "master", "br0", "up"])?;
        let host_cidr = format!("{}/24", net.host_ip());
        ip(&["addr", "add", &host_cidr, "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        for id in ids {
            net.add_member(*id)?;
        }
        Ok(net)
    }

    /// Adds a namespace for member `id`, bridged to the others.
    pub fn add_member(&mut self, id: u64) -> Result<(), HarnessError> {
        let hub = self.hub();
        let ns = format!("{}-m{id}", self.tag);
        let port = format!("h{id}");
        ip(&["netns", "add", &ns])?;
        ip(&[
            "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        let cidr = format!("{}/24", self.member_ip(id));
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        self.members.insert(id, ns);
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// The host's address on the bridge: where the test's clients and the agents come from.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// Member `id`'s address.
    pub fn member_ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 10 + (id % 200) as u8)
    }

    fn namespace(&self, id: u64) -> Result<&str, HarnessError> {
        self.members
            .get(&id)
            .map(String::as_str)
            .ok_or_else(|| HarnessError::Process {
                id,
                message: "no network namespace for this member".into(),
            })
    }

    /// `program` run inside member `id`'s namespace (`ip netns exec`, which execs it, so the
    /// child's pid is the program's own and signals reach it directly).
    pub fn command(&self, id: u64, program: &std::path::Path) -> Result<Command, HarnessError> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespace(id)?])
            .arg(program);
        Ok(command)
    }

    /// Drops every packet between member `id` and each member of `from`, both ways.
    pub fn isolate(&self, id: u64, from: &[u64]) -> Result<(), HarnessError> {
        if from.is_empty() {
            return Ok(());
        }
        let peers: Vec<String> = from
            .iter()
            .map(|p| self.member_ip(*p).to_string())
            .collect();
        let set = peers.join(", ");
        let script = format!(
            "table inet chaos {{\n\
             chain in {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
             chain out {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        self.clear_filter(id)?;
        run_with_input(
            Command::new("ip").args(["netns", "exec", self.namespace(id)?, "nft", "-f", "-"]),
            &script,
        )
    }

    /// Makes member `id`'s link slow and lossy: its outgoing traffic is shaped to `rate_kbit`
    /// by a token bucket (`tc tbf`, up to 300 ms of queueing delay before it drops), and
    /// `loss_percent` of its packets, in and out, are dropped at random (nftables `numgen`).
    /// This stands in for `tc netem`, which the test kernel may lack (`CONFIG_NET_SCH_NETEM`).
    pub fn degrade(&self, id: u64, rate_kbit: u32, loss_percent: u32) -> Result<(), HarnessError> {
        let ns = self.namespace(id)?;
        let rate = format!("{rate_kbit}kbit");
        ip_netns(
            ns,
            &[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst",
                "32kb", "latency", "300ms",
            ],
        )?;
        let script = format!(
            "table inet chaos {{\n\
             chain in {{ type filter hook input priority 0; numgen random mod 100 < {loss_percent} drop; }}\n\
             chain out {{ type filter hook output priority 0; numgen random mod 100 < {loss_percent} drop; }}\n\
             }}\n"
        );
        self.clear_filter(id)?;
        run_with_input(
            Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
            &script,
        )
    }

    /// Removes every partition and degraded link of every member.
    pub fn heal(&self) -> Result<(), HarnessError> {
        for id in self.members.keys() {
            self.clear_filter(*id)?;
            // Fails when no qdisc was set, which is the healed state already.
            let _ = ip_netns(
                self.namespace(*id)?,
                &["tc", "qdisc", "del", "dev", "eth0", "root"],
            );
        }
        Ok(())
    }

    fn clear_filter(&self, id: u64) -> Result<(), HarnessError> {
        let ns = self.namespace(id)?;
        // `destroy` is a no-op when the table is absent (nftables ≥ 1.0.8); fall back to
        // `delete`, whose failure then only means "nothing to clear".
        if ip_netns(ns, &["nft", "destroy", "table", "inet", "chaos"]).is_err() {
            let _ = ip_netns(ns, &["nft", "delete", "table", "inet", "chaos"]);
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys its interfaces, and with them their veth peers.
        for ns in self.members.values() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}

/// Runs `ip args`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), HarnessError> {
    run(Command::new("ip").args(args))
}

/// Runs `program args…` inside namespace `ns`.
fn ip_netns(ns: &str, args: &[&str]) -> Result<(), HarnessError> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn run(command: &mut Command) -> Result<(), HarnessError> {
    let out = command.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(net_error(command, &out.stderr))
}

fn run_with_input(command: &mut Command, input: &str) -> Result<(), HarnessError> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(net_error(command, &out.stderr))
}

fn net_error(command: &Command, stderr: &[u8]) -> HarnessError {
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    HarnessError::Io(std::io::Error::other(format!(
        "`{} {}` failed (the partition tests need root, iproute2 and nftables): {}",
        command.get_program().to_string_lossy(),
        args.join(" "),
        String::from_utf8_lossy(stderr).trim()
    )))
}

/// A `/24` in `10.213.0.0/16` that no route on this host covers yet, picked from the pid so
/// parallel test processes start apart.
fn free_subnet(pid: u32) -> Result<u8, HarnessError> {
    let routes = Command::new("ip").args(["-4", "route", "show"]).output()?;
    let routes = String::from_utf8_lossy(&routes.stdout);
    (0..250u32)
        .map(|step| ((pid + step) % 250) as u8)
        .find(|s| !routes.contains(&format!("10.213.{s}.")))
        .ok_or_else(|| HarnessError::Io(std::io::Error::other("no free 10.213.x.0/24 subnet")))
}

/// Removes namespaces this harness made in test processes that are gone (a test that was
/// killed never ran its drops).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
