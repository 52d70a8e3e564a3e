//! The cluster under test: real `strata server` processes, one per network
//! namespace, started with `ip netns exec`, their output appended to
//! `<out>/nN.log`, their data in `<out>/data/nN`. With the full-disk
//! nemesis each node's data lives on a small ext4 file system of its own
//! instead (`<out>/disks/nN.img`, a sparse image on a loop device, mounted
//! on `<out>/disks/nN`, data in `<out>/disks/nN/data`), which the nemesis
//! fills with a file (`<out>/disks/nN/filler`, `fallocate`) and frees; the
//! images are unmounted when the cluster is dropped.
//!
//! Each node listens on its own address (see [`crate::netns`]) on ports
//! 9092 (clients), 9093 (peers) and 9094 (HTTP). With the clock nemesis
//! every server runs under libfaketime, reading its wall-clock offset from
//! `<out>/clock/nN` (monotonic time is left alone), so the offset can be
//! changed while it runs.
//!
//! **Invariant:** a node's process handle is `Some` exactly while the
//! process may be running; an exit nobody asked for (a crash) is reaped by
//! [`Cluster::reap`] and reported, never hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use strata_log::io::journaled::{Lost, lose_unsynced};

use crate::nemesis::Damage;
use crate::netns;
use crate::rng::Rng;

/// Client port of every node.
pub const CLIENT_PORT: u16 = 9092;
const PEER_PORT: u16 = 9093;
const HTTP_PORT: u16 = 9094;
/// Where Debian's `faketime` package puts the library.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Checks that libfaketime, set up exactly as for the servers, moves the
/// wall clock of a program here: `date` with a file saying +3600 s must
/// print an hour ahead. Without this a broken library would let the clock
/// nemesis count faults that changed nothing.
pub fn check_faketime(dir: &Path) -> anyhow::Result<()> {
    let file = dir.join("faketime-check");
    std::fs::write(&file, "+3600.000\n").with_context(|| format!("write {}", file.display()))?;
    let output = Command::new("env")
        .arg(format!("LD_PRELOAD={LIBFAKETIME}"))
        .arg(format!("FAKETIME_TIMESTAMP_FILE={}", file.display()))
        .args(["FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1", "date", "+%s"])
        .output()
        .context("run date under libfaketime")?;
    let _ = std::fs::remove_file(&file);
    let faked: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().context("parse the output of date")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let shift = faked as i64 - now as i64;
    if !(3590..=3610).contains(&shift) {
        bail!("libfaketime does not move the clock here: +3600 s asked, {shift} s seen");
    }
    Ok(())
}

/// What the full-disk nemesis leaves to be written after its `fallocate`.
const FILL_SLACK_BYTES: u64 = 8 << 20;
/// How long a graceful stop may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Nodes (ids 1..=n).
    pub n_nodes: u32,
    /// The `strata` binary.
    pub strata_bin: PathBuf,
    /// The run's output directory.
    pub out_dir: PathBuf,
    /// Extra `--set KEY=VALUE` settings for every server.
    pub settings: Vec<String>,
    /// Run the servers under libfaketime.
    pub faketime: bool,
    /// Give each node a file system of its own of this many bytes (the
    /// full-disk nemesis), instead of a directory of the run's.
    pub disk_bytes: Option<u64>,
}

/// A process exit nobody asked for.
#[derive(Debug, Clone, Serialize)]
pub struct Exit {
    /// The node.
    pub node: u32,
    /// Seconds since the run started.
    pub at_s: f64,
    /// How it ended.
    pub status: String,
}

struct Node {
    /// The slot: namespace, address, data and log files.
    id: u32,
    /// The broker id running in the slot: the slot's number until the
    /// membership nemesis replaces the broker with a new one.
    broker: u32,
    child: Option<Child>,
    /// Held so the server sees EOF (and stops) if the harness dies.
    stdin: Option<ChildStdin>,
    paused: bool,
}

/// The cluster's processes.
pub struct Cluster {
    config: ClusterConfig,
    nodes: Vec<Node>,
    started: Instant,
    exits: Vec<Exit>,
    /// The next broker id the membership nemesis hands out (ids are never
    /// reused).
    next_broker: u32,
    /// Nodes whose own file system is mounted now.
    mounted: BTreeSet<u32>,
}

impl Cluster {
    /// A cluster with nothing started yet.
    pub fn new(config: ClusterConfig, started: Instant) -> Cluster {
        let nodes =
            (1..=config.n_nodes).map(|id| Node { id, broker: id, child: None, stdin: None, paused: false }).collect();
        let next_broker = config.n_nodes + 1;
        Cluster { config, nodes, started, exits: Vec::new(), next_broker, mounted: BTreeSet::new() }
    }

    /// How many nodes.
    pub fn n_nodes(&self) -> u32 {
        self.config.n_nodes
    }

    /// Whether slot `node`'s process is running (paused counts).
    pub fn is_up(&self, node: u32) -> bool {
        self.nodes.iter().any(|n| n.id == node && n.child.is_some())
    }

    /// The broker id running in slot `node`.
    pub fn broker_id(&self, node: u32) -> u32 {
        self.nodes.iter().find(|n| n.id == node).map_or(node, |n| n.broker)
    }

    /// The slot running broker `broker`, if any does.
    pub fn slot_of(&self, broker: u32) -> Option<u32> {
        self.nodes.iter().find(|n| n.broker == broker).map(|n| n.id)
    }

    /// Replaces the (stopped) broker of slot `node` with a new broker: a
    /// new id, an empty data directory, then started; returns the new id.
    /// The old broker must have been removed from the cluster first.
    pub fn replace(&mut self, node: u32) -> anyhow::Result<u32> {
        if self.node_mut(node)?.child.is_some() {
            bail!("node {node} must be down to be replaced");
        }
        let data_dir = self.data_dir(node);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).with_context(|| format!("wipe {}", data_dir.display()))?;
        }
        let broker = self.next_broker;
        self.next_broker += 1;
        self.node_mut(node)?.broker = broker;
        self.spawn(node)?;
        Ok(broker)
    }

    /// The client address of `node`.
    pub fn client_addr(node: u32) -> String {
        format!("{}:{CLIENT_PORT}", netns::node_ip(node))
    }

    /// Every node's client address, comma-separated.
    pub fn bootstrap(&self) -> String {
        (1..=self.config.n_nodes).map(Cluster::client_addr).collect::<Vec<_>>().join(",")
    }

    fn data_dir(&self, node: u32) -> PathBuf {
        match self.config.disk_bytes {
            Some(_) => self.disk_dir(node).join("data"),
            None => self.config.out_dir.join("data").join(format!("n{node}")),
        }
    }

    /// Where node `node`'s own file system is mounted (full-disk nemesis).
    fn disk_dir(&self, node: u32) -> PathBuf {
        self.config.out_dir.join("disks").join(format!("n{node}"))
    }

    /// Makes and mounts node `node`'s own file system, if the run gives
    /// nodes one and it is not mounted yet.
    fn mount_disk(&mut self, node: u32) -> anyhow::Result<()> {
        let Some(bytes) = self.config.disk_bytes else { return Ok(()) };
        if self.mounted.contains(&node) {
            return Ok(());
        }
        let mount = self.disk_dir(node);
        let image = mount.with_extension("img");
        std::fs::create_dir_all(&mount).with_context(|| format!("create {}", mount.display()))?;
        if !image.exists() {
            let file = std::fs::File::create(&image).with_context(|| format!("create {}", image.display()))?;
            file.set_len(bytes).with_context(|| format!("size {}", image.display()))?;
            // No blocks reserved for root (the servers run as root): the
            // space the nemesis leaves is all there is.
            let image = image.to_string_lossy();
            netns::run("mkfs.ext4", &["-q", "-F", "-m", "0", &image])?;
        }
        netns::run("mount", &["-o", "loop", &image.to_string_lossy(), &mount.to_string_lossy()])?;
        self.mounted.insert(node);
        Ok(())
    }

    /// Unmounts every node's own file system (their processes stopped).
    pub fn unmount_disks(&mut self) {
        self.mounted.clear();
        unmount_disks(&self.config.out_dir);
    }

    /// Fills node `node`'s own file system until `leave_bytes` are left
    /// available (full-disk nemesis); returns what it did.
    pub fn fill(&self, node: u32, leave_bytes: u64) -> anyhow::Result<String> {
        anyhow::ensure!(self.mounted.contains(&node), "node {node} has no file system of its own");
        let mount = self.disk_dir(node);
        let filler = mount.join("filler");
        let available = || {
            strata_log::io::space(&mount)
                .map(|s| s.available)
                .with_context(|| format!("free space of {}", mount.display()))
        };
        // Most of it at once (`fallocate` cannot take the very last blocks:
        // the file's own extent tree needs some), the rest by writing.
        let bulk = available()?.saturating_sub(leave_bytes + FILL_SLACK_BYTES);
        if bulk > 0 {
            netns::run("fallocate", &["-l", &bulk.to_string(), &filler.to_string_lossy()])?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .with_context(|| format!("open {}", filler.display()))?;
        let chunk = [0u8; 64 << 10];
        while available()? > leave_bytes {
            match file.write_all(&chunk).and_then(|()| file.sync_data()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e).with_context(|| format!("write {}", filler.display())),
            }
        }
        Ok(format!("filled node {node}'s disk: {} bytes available", available()?))
    }

    /// Frees what [`Cluster::fill`] took on node `node`.
    pub fn free(&self, node: u32) -> anyhow::Result<()> {
        let filler = self.disk_dir(node).join("filler");
        match std::fs::remove_file(&filler) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", filler.display()))
            }
            _ => Ok(()),
        }
    }

    fn clock_file(&self, node: u32) -> PathBuf {
        self.config.out_dir.join("clock").join(format!("n{node}"))
    }

    fn node_mut(&mut self, node: u32) -> anyhow::Result<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == node).with_context(|| format!("no node {node}"))
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.config.out_dir.join("clock")).context("create clock dir")?;
        for node in 1..=self.config.n_nodes {
            self.set_clock(node, 0)?;
            self.spawn(node)?;
        }
        Ok(())
    }

    fn spawn(&mut self, node: u32) -> anyhow::Result<()> {
        self.mount_disk(node)?;
        let data_dir = self.data_dir(node);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        let log_path = self.config.out_dir.join(format!("n{node}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let broker = self.broker_id(node);
        let _ = writeln!(
            log,
            "==== strata-chaos: starting node {node} (broker {broker}) at {:.3}s",
            self.started.elapsed().as_secs_f64()
        );
        let ip = netns::node_ip(node);
        let peers: Vec<String> =
            self.nodes.iter().map(|n| format!("{}={}:{PEER_PORT}", n.broker, netns::node_ip(n.id))).collect();
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &netns::ns_name(node), "env"]);
        if self.config.faketime {
            // Only the server gets the library (`env` applies it to the
            // program it runs), and only wall-clock time is shifted.
            command.arg(format!("LD_PRELOAD={LIBFAKETIME}"));
            command.arg(format!("FAKETIME_TIMESTAMP_FILE={}", self.clock_file(node).display()));
            command.arg("FAKETIME_NO_CACHE=1");
            command.arg("FAKETIME_DONT_FAKE_MONOTONIC=1");
        }
        command.arg(&self.config.strata_bin);
        command.args(["server", "--stop-on-stdin-eof", "--node-id", &broker.to_string(), "--peers", &peers.join(",")]);
        command.arg("--data-dir").arg(&data_dir);
        command.args(["--listen-client", &format!("{ip}:{CLIENT_PORT}")]);
        command.args(["--listen-peer", &format!("{ip}:{PEER_PORT}")]);
        command.args(["--listen-http", &format!("{ip}:{HTTP_PORT}")]);
        for setting in &self.config.settings {
            command.args(["--set", setting]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(log.try_clone().context("log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start node {node} ({})", self.config.strata_bin.display()))?;
        let stdin = child.stdin.take();
        let n = self.node_mut(node)?;
        n.child = Some(child);
        n.stdin = stdin;
        n.paused = false;
        Ok(())
    }

    /// Notes nodes that exited on their own; returns the new exits.
    pub fn reap(&mut self) -> Vec<Exit> {
        let at_s = self.started.elapsed().as_secs_f64();
        let mut new = Vec::new();
        for n in &mut self.nodes {
            let Some(child) = n.child.as_mut() else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    new.push(Exit { node: n.id, at_s, status: status.to_string() });
                    n.child = None;
                    n.stdin = None;
                }
                Ok(None) => {}
                Err(e) => new.push(Exit { node: n.id, at_s, status: format!("cannot wait: {e}") }),
            }
        }
        for exit in &new {
            eprintln!("[cluster] node {} exited by itself at {:.1}s: {}", exit.node, exit.at_s, exit.status);
        }
        self.exits.extend(new.iter().cloned());
        new
    }

    /// Every unexpected exit so far.
    pub fn exits(&self) -> Vec<Exit> {
        self.exits.clone()
    }

    /// SIGKILL (a paused node too: the signal is delivered anyway).
    pub fn kill(&mut self, node: u32) -> anyhow::Result<()> {
        self.reap();
        let n = self.node_mut(node)?;
        let Some(mut child) = n.child.take() else { bail!("node {node} is already down") };
        n.stdin = None;
        n.paused = false;
        child.kill().with_context(|| format!("SIGKILL node {node}"))?;
        child.wait().with_context(|| format!("reap node {node}"))?;
        Ok(())
    }

    /// Starts a node that is down; a running one is left alone.
    pub fn restart(&mut self, node: u32) -> anyhow::Result<()> {
        self.reap();
        if self.node_mut(node)?.child.is_some() {
            return Ok(());
        }
        self.spawn(node)
    }

    fn signal(&mut self, node: u32, signal: &str) -> anyhow::Result<()> {
        let n = self.node_mut(node)?;
        let Some(child) = n.child.as_ref() else { bail!("node {node} is down") };
        netns::run("kill", &[signal, &child.id().to_string()])
    }

    /// SIGSTOP.
    pub fn pause(&mut self, node: u32) -> anyhow::Result<()> {
        self.signal(node, "-STOP")?;
        self.node_mut(node)?.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, node: u32) -> anyhow::Result<()> {
        if self.node_mut(node)?.child.is_none() {
            return Ok(());
        }
        self.signal(node, "-CONT")?;
        self.node_mut(node)?.paused = false;
        Ok(())
    }

    /// Sets `node`'s wall clock to real time + `offset_ms`.
    pub fn set_clock(&self, node: u32, offset_ms: i64) -> anyhow::Result<()> {
        let path = self.clock_file(node);
        let sign = if offset_ms < 0 { "-" } else { "+" };
        let abs = offset_ms.unsigned_abs();
        // Written whole then renamed, so libfaketime never reads half a line.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{sign}{}.{:03}\n", abs / 1000, abs % 1000))
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
        Ok(())
    }

    /// Cuts the network (see [`netns::partition`]).
    pub fn partition(&self, grudge: &BTreeMap<u32, BTreeSet<u32>>) -> anyhow::Result<()> {
        netns::partition(grudge)
    }

    /// Removes every partition.
    pub fn heal_network(&self) -> anyhow::Result<()> {
        netns::heal(self.config.n_nodes)
    }

    /// How many partition replicas (group directories other than the
    /// controller's) slot `node` holds on disk.
    pub fn replicas_on_disk(&self, node: u32) -> usize {
        let Ok(entries) = std::fs::read_dir(self.data_dir(node)) else { return 0 };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("group-") && name != "group-0" && !name.contains('.')
            })
            .count()
    }

    /// Damages a segment of `node` (which must be down), or makes it lose
    /// its unsynced writes; returns what was done.
    pub fn damage(&mut self, node: u32, damage: Damage, pick: u64) -> anyhow::Result<String> {
        if self.node_mut(node)?.child.is_some() {
            bail!("node {node} must be down to damage its disk");
        }
        if damage == Damage::LoseUnsynced {
            return self.lose_unsynced(node);
        }
        let mut segments = Vec::new();
        find_segments(&self.data_dir(node), &mut segments)?;
        segments.retain(|(_, len)| *len > 0);
        // Prefer segments with some records in them (the workload's
        // partitions) over the nearly empty ones of idle groups.
        if segments.iter().any(|(_, len)| *len >= 4096) {
            segments.retain(|(_, len)| *len >= 4096);
        }
        segments.sort();
        if segments.is_empty() {
            bail!("node {node} has no non-empty segment to damage");
        }
        let mut rng = Rng::new(pick);
        let (path, len) = segments[rng.below(segments.len() as u64) as usize].clone();
        match damage {
            Damage::Truncate { bytes } => {
                let cut = bytes.min(len);
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("open {}", path.display()))?;
                file.set_len(len - cut).with_context(|| format!("truncate {}", path.display()))?;
                file.sync_all().with_context(|| format!("sync {}", path.display()))?;
                Ok(format!("truncated {} by {cut} of {len} bytes", path.display()))
            }
            Damage::LoseUnsynced => self.lose_unsynced(node),
            Damage::BitFlip { bits } => {
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("open {}", path.display()))?;
                let mut flipped = Vec::new();
                for _ in 0..bits {
                    let at = rng.below(len);
                    let bit = rng.below(8) as u8;
                    let mut byte = [0u8; 1];
                    file.seek(SeekFrom::Start(at))?;
                    file.read_exact(&mut byte).with_context(|| format!("read {} at {at}", path.display()))?;
                    byte[0] ^= 1 << bit;
                    file.seek(SeekFrom::Start(at))?;
                    file.write_all(&byte).with_context(|| format!("write {} at {at}", path.display()))?;
                    flipped.push(format!("{at}:{bit}"));
                }
                file.sync_all().with_context(|| format!("sync {}", path.display()))?;
                Ok(format!("flipped bits (byte:bit) {} of {} ({len} bytes)", flipped.join(","), path.display()))
            }
        }
    }

    /// Rewrites every partition directory of `node` (down) to what its
    /// server had fsynced, as a power loss would leave it. The servers keep
    /// what that takes only under the UNSAFE `testing.journal_unsynced`
    /// (see `strata_log::io::journaled`); a directory without it fails the
    /// fault. Quarantined directories (`group-G.damaged-N`) are never
    /// opened again and are left alone.
    fn lose_unsynced(&self, node: u32) -> anyhow::Result<String> {
        let data_dir = self.data_dir(node);
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(&data_dir).with_context(|| format!("list {}", data_dir.display()))? {
            let path = entry.with_context(|| format!("list {}", data_dir.display()))?.path();
            let is_group = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("group-"))
                .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()));
            if is_group && path.is_dir() {
                dirs.push(path);
            }
        }
        dirs.sort();
        if dirs.is_empty() {
            bail!("node {node} has no partition directory in {}", data_dir.display());
        }
        let mut total = Lost::default();
        let mut n_changed = 0;
        for dir in &dirs {
            let lost = lose_unsynced(dir).with_context(|| {
                format!(
                    "lose the unsynced writes of {} (is the server started with testing.journal_unsynced=true?)",
                    dir.display()
                )
            })?;
            n_changed += usize::from(!lost.is_empty());
            total += lost;
        }
        Ok(format!(
            "lost the unsynced writes of node {node}: {n_changed} of {} partition directories changed ({total})",
            dirs.len()
        ))
    }

    /// Undoes every fault: network, clocks, pauses, and restarts every node
    /// that is down.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.heal_network()?;
        for node in 1..=self.config.n_nodes {
            if self.mounted.contains(&node) {
                self.free(node)?;
            }
            self.set_clock(node, 0)?;
            self.resume(node)?;
            self.restart(node)?;
        }
        Ok(())
    }

    /// Stops every node: gracefully (stdin closed) within the grace, then
    /// SIGKILL.
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_ref() {
                let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).output();
            }
            n.stdin = None;
        }
        let deadline = Instant::now() + STOP_GRACE;
        for n in &mut self.nodes {
            let Some(mut child) = n.child.take() else { continue };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Removes the nodes' data (after a valid run), their own file
    /// systems' images included.
    pub fn remove_data(&mut self) {
        let _ = std::fs::remove_dir_all(self.config.out_dir.join("data"));
        if self.config.disk_bytes.is_some() {
            self.unmount_disks();
            let _ = std::fs::remove_dir_all(self.config.out_dir.join("disks"));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        self.unmount_disks();
    }
}

/// Every `*.log` segment file under `dir`, with its length.
fn find_segments(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let path = entry.path();
        let meta = entry.metadata().with_context(|| format!("stat {}", path.display()))?;
        if meta.is_dir() {
            find_segments(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push((path, meta.len()));
        }
    }
    Ok(())
}

/// Unmounts every file system mounted under `<out_dir>/disks` (the nodes'
/// own, for the full-disk nemesis), lazily where one is still in use: also
/// after a run that stopped on an error, whoever still holds the cluster.
pub fn unmount_disks(out_dir: &Path) {
    let Ok(disks) = std::fs::canonicalize(out_dir.join("disks")) else { return };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    for point in mounts.lines().filter_map(|line| line.split(' ').nth(1)) {
        if !Path::new(point).starts_with(&disks) {
            continue;
        }
        if let Err(e) = netns::run("umount", &[point]) {
            eprintln!("[chaos] {e:#}; detaching it lazily");
            let _ = netns::run("umount", &["-l", point]);
        }
    }
}
