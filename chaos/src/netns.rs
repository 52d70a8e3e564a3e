//! The private network of a run: one network namespace per node
//! (`strata-nN`), each joined by a veth pair to a bridge (`strata-br0`) in
//! the harness's namespace, in 10.77.0.0/24. The bridge is 10.77.0.1 and
//! node N is 10.77.0.(10+N). Clients run in the harness's namespace and
//! reach every node through the bridge.
//!
//! Partitions are `iptables` rules in a node's namespace dropping packets
//! *from* the peers it must not hear; grudges are symmetric, so both
//! directions are cut. The bridge address is never dropped: clients keep
//! reaching their node.
//!
//! **Invariant:** everything made here carries the `strata-` prefix and is
//! removed by [`remove`], which is also run before a run starts, so a
//! crashed harness leaves nothing that breaks the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, bail};

/// The bridge in the harness's namespace.
pub const BRIDGE: &str = "strata-br0";
/// The first three octets of the private /24.
const SUBNET: &str = "10.77.0";

/// The namespace of node `node`.
pub fn ns_name(node: u32) -> String {
    format!("strata-n{node}")
}

/// The address of node `node`.
pub fn node_ip(node: u32) -> String {
    format!("{SUBNET}.{}", 10 + node)
}

/// Runs a command and fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output =
        Command::new(program).args(args).output().with_context(|| format!("run {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Checks that this process can make namespaces and rules: root, `ip`
/// and `iptables`.
pub fn check_prerequisites() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        bail!("strata-chaos needs root (network namespaces, iptables); run it with sudo");
    }
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        let found = Command::new(tool).arg("-V").output().map(|o| o.status.success()).unwrap_or(false)
            || Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        if !found {
            bail!("`{tool}` is missing: install the Debian package {package}");
        }
    }
    Ok(())
}

/// Removes every namespace and link of a previous or current run.
pub fn remove() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("strata-n") {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    // Deleting a namespace deletes its veth end and so the pair; the
    // bridge goes explicitly.
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
}

/// Creates the bridge and `n` namespaces with their veth pairs.
pub fn create(n: u32) -> anyhow::Result<()> {
    remove();
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", &format!("{SUBNET}.1/24"), "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    for node in 1..=n {
        let ns = ns_name(node);
        let host_end = format!("strata-v{node}");
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        run("ip", &["link", "set", &host_end, "master", BRIDGE])?;
        run("ip", &["link", "set", &host_end, "up"])?;
        run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", node_ip(node)), "dev", "eth0"])?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
    }
    // The rules work at all (nf_tables or legacy, in a namespace).
    run("ip", &["netns", "exec", &ns_name(1), "iptables", "-L", "INPUT", "-n"])
        .context("iptables does not work in a network namespace here")?;
    Ok(())
}

/// Cuts the network: node → the nodes it must not hear from.
pub fn partition(grudge: &BTreeMap<u32, BTreeSet<u32>>) -> anyhow::Result<()> {
    for (node, cut) in grudge {
        let ns = ns_name(*node);
        for other in cut {
            run("ip", &["netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &node_ip(*other), "-j", "DROP"])?;
        }
    }
    Ok(())
}

/// Removes every partition rule of nodes `1..=n`.
pub fn heal(n: u32) -> anyhow::Result<()> {
    for node in 1..=n {
        run("ip", &["netns", "exec", &ns_name(node), "iptables", "-F", "INPUT"])?;
    }
    Ok(())
}
