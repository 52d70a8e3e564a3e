//! The nemesis: which faults happen when, decided from the seed before the
//! run starts ([`plan`], pure and unit-tested), then carried out against
//! the cluster ([`Nemesis::run`]), each fault counted.
//!
//! Faults run one at a time: each starts after a gap and stops after a
//! duration, both drawn in 0–2× the interval, so the next fault always
//! begins on a healed cluster and every fault's effect is attributable.
//! The first cycle goes through every requested kind (in a seeded order),
//! so a short run still exercises each; a run in which a requested kind
//! never fired fails.
//!
//! **Invariant:** disk damage is done, while it is down, to one node only,
//! the same for the whole run (drawn from the seed): damaged replicas are
//! not repaired, so damage adds up, and one node is a minority of every
//! replica set (the smallest have 3 replicas). The cluster as a whole must
//! then not lose any acknowledged record because of it.
//!
//! The disk fault's third form, losing the node's unsynced writes (as a
//! power loss would), is not damage: a correct node survives it on any
//! number of nodes. It goes to the same node all the same, so that the
//! disk nemesis keeps one shape. The first disk fault of every run is this
//! one (so a short run exercises it); later ones are it a third of the
//! time, drawn from a stream of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::history::{F, History, NEMESIS_PROCESS, Op, OpType};
use crate::node::Cluster;
use crate::rng::Rng;

/// Each node's own file system under the full-disk nemesis: room for a
/// 300-second run's data many times over (the images are sparse: they
/// take on the machine's disk only what is written).
pub const FULL_DISK_BYTES: u64 = 2 << 30;
/// The servers' `limits.min_free_disk_bytes` under the full-disk nemesis
/// (a filled disk leaves less than this available).
pub const FULL_DISK_FLOOR: u64 = 64 << 20;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// SIGKILL, then restart on the same data.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Dropped packets between peers.
    Partition,
    /// Wall-clock jumps and strobes (libfaketime).
    Clock,
    /// Damaged segment files, or unsynced writes lost, on a node that is
    /// down.
    Disk,
    /// A broker removed from the cluster, then a new one added in its place.
    Membership,
    /// Nodes' disks filled up (each node's data directory is a small file
    /// system of its own), then freed, the nodes running all along.
    Full,
}

impl Kind {
    /// Every kind the harness can inject (`--nemesis all`).
    pub const ALL: [Kind; 7] =
        [Kind::Kill, Kind::Pause, Kind::Partition, Kind::Clock, Kind::Disk, Kind::Membership, Kind::Full];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Clock => "clock",
            Kind::Disk => "disk",
            Kind::Membership => "membership",
            Kind::Full => "full",
        }
    }

    /// Parses the list for a cluster of `n` nodes: the membership nemesis
    /// needs 4 (3 brokers must remain), so `all` leaves it out below that
    /// and naming it is an error.
    pub fn parse_list_for(list: &str, n: u32) -> anyhow::Result<Vec<Kind>> {
        let mut kinds = Kind::parse_list(list)?;
        if n < 4 && kinds.contains(&Kind::Membership) {
            let named = list.split(',').any(|k| k.trim() == "membership");
            anyhow::ensure!(!named, "the membership nemesis needs at least 4 nodes (3 brokers must remain)");
            kinds.retain(|k| *k != Kind::Membership);
        }
        Ok(kinds)
    }

    /// Parses `kill,pause,...` or `all`.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Kind>> {
        let mut kinds = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                kinds.extend(Kind::ALL);
                continue;
            }
            match Kind::ALL.iter().find(|k| k.name() == name) {
                Some(kind) => {
                    kinds.insert(*kind);
                }
                None => anyhow::bail!(
                    "unknown nemesis {name:?}; known: kill, pause, partition, clock, disk, membership, full, all"
                ),
            }
        }
        Ok(kinds.into_iter().collect())
    }
}

/// The shapes of a network partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One node cut from all others.
    One,
    /// A minority half and a majority half.
    Halves,
    /// Each node sees its ring neighbours only: every node is in a
    /// majority, and no two agree on which.
    MajoritiesRing,
    /// Two halves joined by one node that sees both.
    Bridge,
    /// The nodes leading partitions now (a minority of them), each cut off.
    Leaders,
}

/// How a clock fault moves time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockMode {
    /// Jump by `offset_ms` and stay there.
    Bump {
        /// Signed jump.
        offset_ms: i64,
    },
    /// Flip between now and now + `delta_ms` every `period_ms`.
    Strobe {
        /// Size of the flips.
        delta_ms: i64,
        /// Time between flips.
        period_ms: u64,
    },
}

/// What a disk fault does to the node's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Damage {
    /// Cut this many bytes off the end of a segment.
    Truncate {
        /// Bytes removed (fewer if the file is smaller).
        bytes: u64,
    },
    /// Flip this many random bits of a segment.
    BitFlip {
        /// Bits flipped.
        bits: u32,
    },
    /// Rewrite every partition directory to what was fsynced when the node
    /// was killed (`strata_log::io::journaled::lose_unsynced`; the servers
    /// run with the UNSAFE `testing.journal_unsynced`).
    LoseUnsynced,
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fault {
    /// Kill these nodes.
    Kill {
        /// Node ids.
        nodes: Vec<u32>,
    },
    /// Pause these nodes.
    Pause {
        /// Node ids.
        nodes: Vec<u32>,
    },
    /// Cut the network.
    Partition {
        /// The shape.
        shape: Shape,
        /// Node → nodes it must not hear from (empty for `Leaders`: decided
        /// when the fault starts).
        grudge: BTreeMap<u32, BTreeSet<u32>>,
    },
    /// Move these nodes' clocks.
    Clock {
        /// Node ids.
        nodes: Vec<u32>,
        /// How.
        mode: ClockMode,
    },
    /// Damage a segment of one node, or make it lose its unsynced
    /// writes, while it is down.
    Disk {
        /// Node id.
        node: u32,
        /// How.
        damage: Damage,
        /// Chooses the file and positions.
        pick: u64,
    },
    /// Remove the broker of one node from the cluster (its replicas move to
    /// the others), stop it and wipe its data; at the stop, a new broker
    /// (a new id) starts there empty, joins, and takes over a share of the
    /// workload's partitions.
    Membership {
        /// Node (slot) id.
        node: u32,
    },
    /// Fill these nodes' disks, leaving `leave_bytes` available, while they
    /// run; free the space at the stop.
    Full {
        /// Node ids.
        nodes: Vec<u32>,
        /// Bytes left available: none, or less than the servers'
        /// `limits.min_free_disk_bytes` (so leaders refuse produce while
        /// followers may still write a little).
        leave_bytes: u64,
    },
}

impl Fault {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Fault::Kill { .. } => Kind::Kill,
            Fault::Pause { .. } => Kind::Pause,
            Fault::Partition { .. } => Kind::Partition,
            Fault::Clock { .. } => Kind::Clock,
            Fault::Disk { .. } => Kind::Disk,
            Fault::Membership { .. } => Kind::Membership,
            Fault::Full { .. } => Kind::Full,
        }
    }
}

/// A fault with its start and stop, in ms from the start of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// When it starts.
    pub start_ms: u64,
    /// When it stops (healed).
    pub stop_ms: u64,
    /// What.
    pub fault: Fault,
}

/// Node ids `1..=n`.
fn all_nodes(n: u32) -> Vec<u32> {
    (1..=n).collect()
}

/// `count` distinct random nodes.
fn some_nodes(rng: &mut Rng, n: u32, count: u32) -> Vec<u32> {
    let mut nodes = all_nodes(n);
    rng.shuffle(&mut nodes);
    nodes.truncate(count as usize);
    nodes.sort_unstable();
    nodes
}

/// The grudge that cuts `a` and `b` from each other entirely.
fn split(a: &[u32], b: &[u32]) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut grudge: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for x in a {
        grudge.entry(*x).or_default().extend(b.iter().copied());
    }
    for y in b {
        grudge.entry(*y).or_default().extend(a.iter().copied());
    }
    grudge
}

/// The grudge of a partition of `n` nodes of this shape.
pub fn grudge_of(rng: &mut Rng, n: u32, shape: Shape) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut nodes = all_nodes(n);
    rng.shuffle(&mut nodes);
    let minority = (n - 1) / 2;
    match shape {
        Shape::One => split(&nodes[..1], &nodes[1..]),
        Shape::Halves => split(&nodes[..minority.max(1) as usize], &nodes[minority.max(1) as usize..]),
        Shape::Bridge => {
            // nodes[0] is the bridge; the rest split in two.
            let rest = &nodes[1..];
            let half = rest.len() / 2;
            split(&rest[..half], &rest[half..])
        }
        Shape::MajoritiesRing => {
            // Each node hears from its two ring neighbours and itself: a
            // majority of 5 (or fewer nodes), a different one for each.
            let mut grudge = BTreeMap::new();
            for (i, node) in nodes.iter().enumerate() {
                let len = nodes.len();
                let near = [nodes[(i + 1) % len], nodes[(i + len - 1) % len], *node];
                let far: BTreeSet<u32> = nodes.iter().copied().filter(|x| !near.contains(x)).collect();
                grudge.insert(*node, far);
            }
            grudge
        }
        Shape::Leaders => BTreeMap::new(),
    }
}

/// One random fault of `kind` for a cluster of `n` nodes; disk damage only
/// ever goes to `disk_nodes`.
fn fault_of(rng: &mut Rng, kind: Kind, n: u32, disk_nodes: &[u32]) -> Fault {
    let minority = ((n - 1) / 2).max(1);
    let majority = n / 2 + 1;
    match kind {
        Kind::Kill => {
            let count = match rng.below(10) {
                0..=3 => 1,
                4..=6 => minority,
                7..=8 => majority,
                _ => n,
            };
            Fault::Kill { nodes: some_nodes(rng, n, count) }
        }
        Kind::Pause => {
            let count = match rng.below(10) {
                0..=5 => 1,
                6..=8 => minority,
                _ => majority,
            };
            Fault::Pause { nodes: some_nodes(rng, n, count) }
        }
        Kind::Partition => {
            let mut shapes = vec![Shape::One, Shape::Halves, Shape::Bridge, Shape::Leaders];
            // On fewer than 4 nodes a ring is everybody with everybody.
            if n >= 4 {
                shapes.push(Shape::MajoritiesRing);
            }
            let shape = *rng.pick(&shapes);
            Fault::Partition { shape, grudge: grudge_of(rng, n, shape) }
        }
        Kind::Clock => {
            let count = rng.between(1, u64::from(n)) as u32;
            let nodes = some_nodes(rng, n, count);
            // Jumps of 128 ms to 262 s, either way, as Jepsen's.
            let magnitude = 1i64 << rng.between(7, 18);
            let signed = if rng.chance(0.5) { magnitude } else { -magnitude };
            let mode = if rng.chance(0.5) {
                ClockMode::Bump { offset_ms: signed }
            } else {
                ClockMode::Strobe { delta_ms: signed, period_ms: rng.between(10, 500) }
            };
            Fault::Clock { nodes, mode }
        }
        Kind::Disk => {
            let node = *rng.pick(disk_nodes);
            let damage = if rng.chance(0.5) {
                Damage::Truncate { bytes: rng.between(1, 4096) }
            } else {
                Damage::BitFlip { bits: rng.between(1, 3) as u32 }
            };
            Fault::Disk { node, damage, pick: rng.next_u64() }
        }
        Kind::Membership => Fault::Membership { node: *rng.pick(&all_nodes(n)) },
        Kind::Full => {
            let count = if rng.below(10) < 7 { 1 } else { minority };
            let nodes = some_nodes(rng, n, count);
            // Nothing left, or a few MiB: below the servers' free-space
            // floor (`FULL_DISK_FLOOR`), so leaders refuse produce at once
            // and followers run out after a little more.
            let leave_bytes = if rng.chance(0.5) { 0 } else { rng.between(1, (FULL_DISK_FLOOR >> 20) * 3 / 4) << 20 };
            Fault::Full { nodes, leave_bytes }
        }
    }
}

/// The faults of a run: `kinds` over `n` nodes for `time_limit_ms`, each
/// gap and duration drawn in 0–2× `interval_ms` (durations at least 1 s).
/// Every fault stops by the time limit.
pub fn plan(seed: u64, kinds: &[Kind], n: u32, time_limit_ms: u64, interval_ms: u64) -> Vec<Step> {
    assert!(n >= 3, "a chaos cluster has at least 3 nodes");
    let mut rng = Rng::new(seed ^ 0x6E65_6D65_7369_7321);
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    let mut first_cycle: Vec<Kind> = kinds.to_vec();
    rng.shuffle(&mut first_cycle);
    first_cycle.reverse(); // popped from the back
    // A damaged replica is not repaired (see docs/chaos.md), so damage
    // accumulates: only one node, fixed for the run, ever gets any. One is
    // a minority of the smallest replica set (3, __consumer_offsets), so
    // every replica set keeps an undamaged majority.
    // Its own stream, so that the rest of every seed's schedule stays as
    // it was before this choice existed.
    let disk_nodes = some_nodes(&mut Rng::new(seed ^ 0x6469_736B_6E6F_6465), n, 1);
    // Which disk faults lose unsynced writes: the first, then a third of
    // the others, from a stream of their own again.
    let mut loss_rng = Rng::new(seed ^ 0x6C6F_7365_756E_7379);
    let mut n_disk = 0;
    let mut t = 0;
    loop {
        // The first cycle draws in 0–1× so that every kind fits a short run.
        let spread = if first_cycle.is_empty() { 2 * interval_ms } else { interval_ms };
        let gap = rng.below(spread + 1);
        let duration = rng.below(spread + 1).max(1000);
        let (start_ms, stop_ms) = (t + gap, t + gap + duration);
        if stop_ms > time_limit_ms {
            break;
        }
        let kind = first_cycle.pop().unwrap_or_else(|| *rng.pick(kinds));
        let mut fault = fault_of(&mut rng, kind, n, &disk_nodes);
        if let Fault::Disk { damage, .. } = &mut fault {
            if n_disk == 0 || loss_rng.below(3) == 0 {
                *damage = Damage::LoseUnsynced;
            }
            n_disk += 1;
        }
        steps.push(Step { start_ms, stop_ms, fault });
        t = stop_ms;
    }
    steps
}

/// A fault's active period, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    /// Its kind.
    pub kind: Kind,
    /// Start, ns since the run started.
    pub start_ns: u64,
    /// Stop, ns since the run started.
    pub stop_ns: u64,
    /// What exactly.
    pub description: String,
}

/// What the nemesis did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Faults injected per kind.
    pub injected: BTreeMap<String, u64>,
    /// Faults planned but not injected (and why).
    pub skipped: Vec<String>,
    /// Active periods.
    pub periods: Vec<Period>,
}

/// Longest an admin call of the membership nemesis may take.
const ADMIN_MAX: Duration = Duration::from_secs(30);
/// Longest a removed broker is given to hand over its replicas.
const DRAIN_MAX: Duration = Duration::from_secs(90);

/// Carries out a plan against a cluster.
pub struct Nemesis {
    cluster: Arc<Mutex<Cluster>>,
    history: History,
    outcome: Outcome,
}

impl Nemesis {
    /// A nemesis over `cluster`, recording into `history`.
    pub fn new(cluster: Arc<Mutex<Cluster>>, history: History) -> Nemesis {
        Nemesis { cluster, history, outcome: Outcome::default() }
    }

    fn record(&self, f: F, fault: &str, error: Option<String>) {
        let mut op = Op::new(NEMESIS_PROCESS, if error.is_some() { OpType::Info } else { OpType::Ok }, f);
        op.fault = Some(fault.to_string());
        op.error = error;
        self.history.record(op);
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        // The cluster's state is plain process handles; a panic elsewhere
        // leaves it usable for healing.
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `steps` (timed from `started`) and returns what was done. The
    /// cluster is healed after each fault; the caller heals it all again
    /// at the end.
    pub async fn run(mut self, steps: Vec<Step>, started: tokio::time::Instant, mut rng: Rng) -> Outcome {
        for step in steps {
            tokio::time::sleep_until(started + Duration::from_millis(step.start_ms)).await;
            let kind = step.fault.kind();
            let description = serde_json::to_string(&step.fault).unwrap_or_else(|_| format!("{:?}", step.fault));
            let start_ns = self.history.now_ns();
            let strobe = match self.start(&step.fault, &mut rng).await {
                Ok((described, strobe)) => {
                    self.record(F::StartFault, &described, None);
                    *self.outcome.injected.entry(kind.name().to_string()).or_default() += 1;
                    eprintln!("[nemesis] {:>7.1}s start {described}", start_ns as f64 / 1e9);
                    strobe
                }
                Err(e) => {
                    // Part of it may have happened (one of two nodes
                    // killed): undo what can be undone, count nothing.
                    eprintln!("[nemesis] could not start {description}: {e:#}");
                    self.record(F::StartFault, &description, Some(format!("{e:#}")));
                    let undone = self.stop(&step.fault).await;
                    self.record(F::StopFault, &description, undone.err().map(|e| format!("{e:#}")));
                    self.outcome.skipped.push(format!("{description}: {e:#}"));
                    continue;
                }
            };
            tokio::time::sleep_until(started + Duration::from_millis(step.stop_ms)).await;
            if let Some(strobe) = strobe {
                strobe.abort();
            }
            let result = self.stop(&step.fault).await;
            let stop_ns = self.history.now_ns();
            eprintln!("[nemesis] {:>7.1}s stop  {}", stop_ns as f64 / 1e9, kind.name());
            self.record(F::StopFault, &description, result.err().map(|e| format!("{e:#}")));
            self.outcome.periods.push(Period { kind, start_ns, stop_ns, description });
        }
        self.outcome
    }

    /// Starts a fault; returns its description and, for a strobe, the task
    /// flipping the clocks.
    async fn start(
        &mut self,
        fault: &Fault,
        rng: &mut Rng,
    ) -> anyhow::Result<(String, Option<tokio::task::JoinHandle<()>>)> {
        let described = serde_json::to_string(fault).unwrap_or_else(|_| format!("{fault:?}"));
        match fault {
            Fault::Kill { nodes } => {
                let mut cluster = self.cluster();
                for node in nodes {
                    cluster.kill(*node)?;
                }
                Ok((described, None))
            }
            Fault::Pause { nodes } => {
                let mut cluster = self.cluster();
                for node in nodes {
                    cluster.pause(*node)?;
                }
                Ok((described, None))
            }
            Fault::Partition { shape: Shape::Leaders, .. } => {
                let leaders = crate::workload::current_leaders(&self.cluster).await?;
                let n = self.cluster().n_nodes();
                // Broker ids to slots (the membership nemesis gives slots new brokers).
                let mut leaders: Vec<u32> = {
                    let cluster = self.cluster();
                    leaders.into_iter().filter_map(|broker| cluster.slot_of(broker)).collect()
                };
                rng.shuffle(&mut leaders);
                leaders.truncate(((n - 1) / 2).max(1) as usize);
                let mut grudge: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
                for leader in &leaders {
                    for (a, cut) in split(&[*leader], &(1..=n).filter(|x| x != leader).collect::<Vec<_>>()) {
                        grudge.entry(a).or_default().extend(cut);
                    }
                }
                self.cluster().partition(&grudge)?;
                let described =
                    serde_json::to_string(&Fault::Partition { shape: Shape::Leaders, grudge }).unwrap_or(described);
                Ok((described, None))
            }
            Fault::Partition { grudge, .. } => {
                self.cluster().partition(grudge)?;
                Ok((described, None))
            }
            Fault::Clock { nodes, mode: ClockMode::Bump { offset_ms } } => {
                let cluster = self.cluster();
                for node in nodes {
                    cluster.set_clock(*node, *offset_ms)?;
                }
                Ok((described, None))
            }
            Fault::Clock { nodes, mode: ClockMode::Strobe { delta_ms, period_ms } } => {
                let (cluster, nodes, delta_ms, period) =
                    (self.cluster.clone(), nodes.clone(), *delta_ms, Duration::from_millis(*period_ms));
                let task = tokio::spawn(async move {
                    let mut high = true;
                    loop {
                        {
                            let cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
                            for node in &nodes {
                                if let Err(e) = cluster.set_clock(*node, if high { delta_ms } else { 0 }) {
                                    eprintln!("[nemesis] strobe node {node}: {e:#}");
                                }
                            }
                        }
                        high = !high;
                        tokio::time::sleep(period).await;
                    }
                });
                Ok((described, Some(task)))
            }
            Fault::Disk { node, damage, pick } => {
                let mut cluster = self.cluster();
                cluster.kill(*node)?;
                let what = cluster.damage(*node, *damage, *pick)?;
                Ok((format!("{described} {what}"), None))
            }
            Fault::Membership { node } => {
                let what = self.remove_broker(*node).await?;
                Ok((format!("{described} {what}"), None))
            }
            Fault::Full { nodes, leave_bytes } => {
                let cluster = self.cluster();
                let mut what = Vec::new();
                for node in nodes {
                    what.push(cluster.fill(*node, *leave_bytes)?);
                }
                Ok((format!("{described} {}", what.join("; ")), None))
            }
        }
    }

    /// Removes slot `node`'s broker through the others, waits until it
    /// handed over its replicas (at most `DRAIN_MAX`), then kills it.
    async fn remove_broker(&mut self, node: u32) -> anyhow::Result<String> {
        use anyhow::Context;
        let (broker, others) = {
            let cluster = self.cluster();
            let n = cluster.n_nodes();
            let others: Vec<String> = (1..=n).filter(|x| *x != node).map(Cluster::client_addr).collect();
            (cluster.broker_id(node), others.join(","))
        };
        let admin = strata_client::Admin::new(&crate::tls::client(&others).context("client")?);
        let moved = tokio::time::timeout(ADMIN_MAX, admin.remove_broker(u64::from(broker)))
            .await
            .context("remove broker: no answer")?
            .with_context(|| format!("remove broker {broker}"))?;
        let drained_by = tokio::time::Instant::now() + DRAIN_MAX;
        let drained = loop {
            if self.cluster().replicas_on_disk(node) == 0 {
                break true;
            }
            if tokio::time::Instant::now() >= drained_by {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !drained {
            // Stopping it now and wiping its data would take replicas away
            // that the cluster still counts on (an operator's mistake, not
            // a fault to test): it keeps running, removed, until it has
            // handed them over, and the slot gets no new broker this time.
            return Ok(format!(
                "removed broker {broker} ({moved} partitions moved; it still held replicas after {DRAIN_MAX:?}, so it keeps running)"
            ));
        }
        self.cluster().kill(node)?;
        Ok(format!("removed broker {broker} ({moved} partitions moved; it handed over every replica)"))
    }

    /// Starts a new broker in slot `node` (after `remove_broker`) and gives
    /// it a share of the workload's partitions: every partition whose
    /// balanced assignment would place a replica on that slot.
    async fn add_broker(&mut self, node: u32) -> anyhow::Result<()> {
        use anyhow::Context;
        let (broker, n) = {
            let mut cluster = self.cluster();
            if cluster.is_up(node) {
                // The removal failed, or the broker still hands over its
                // replicas: nothing to replace (yet).
                return Ok(());
            }
            (cluster.replace(node)?, cluster.n_nodes())
        };
        let admin = strata_client::Admin::new(&crate::tls::client(&Cluster::client_addr(node)).context("client")?);
        let joined_by = tokio::time::Instant::now() + ADMIN_MAX;
        loop {
            let cluster = tokio::time::timeout(Duration::from_secs(2), admin.describe_cluster()).await;
            if let Ok(Ok(cluster)) = cluster {
                if cluster.brokers.iter().any(|b| b.id == u64::from(broker) && !b.address.is_empty()) {
                    break;
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < joined_by,
                "broker {broker} did not join within {ADMIN_MAX:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let topic = tokio::time::timeout(ADMIN_MAX, admin.describe_topic(crate::workload::TOPIC))
            .await
            .context("describe topic: no answer")??;
        for partition in &topic.partitions {
            let share = (partition.partition + node) % n < partition.replicas.len() as u32;
            if !share || partition.replicas.contains(&u64::from(broker)) {
                continue;
            }
            // The last replica (never the preferred leader) makes room.
            let mut replicas = partition.replicas.clone();
            if let Some(last) = replicas.last_mut() {
                *last = u64::from(broker);
            }
            tokio::time::timeout(
                ADMIN_MAX,
                admin.reassign_partition(crate::workload::TOPIC, partition.partition, replicas),
            )
            .await
            .context("reassign: no answer")??;
        }
        Ok(())
    }

    /// Heals a fault.
    async fn stop(&mut self, fault: &Fault) -> anyhow::Result<()> {
        if let Fault::Membership { node } = fault {
            return self.add_broker(*node).await;
        }
        let mut cluster = self.cluster();
        match fault {
            Fault::Kill { nodes } => nodes.iter().try_for_each(|n| cluster.restart(*n)),
            Fault::Pause { nodes } => nodes.iter().try_for_each(|n| cluster.resume(*n)),
            Fault::Partition { .. } => cluster.heal_network(),
            Fault::Clock { nodes, .. } => nodes.iter().try_for_each(|n| cluster.set_clock(*n, 0)),
            Fault::Disk { node, .. } => cluster.restart(*node),
            Fault::Membership { .. } => Ok(()),
            Fault::Full { nodes, .. } => nodes.iter().try_for_each(|n| cluster.free(*n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_from_the_seed() {
        let kinds = Kind::ALL;
        assert_eq!(plan(7, &kinds, 5, 300_000, 10_000), plan(7, &kinds, 5, 300_000, 10_000));
        assert_ne!(plan(7, &kinds, 5, 300_000, 10_000), plan(8, &kinds, 5, 300_000, 10_000));
    }

    #[test]
    fn faults_are_sequential_inside_the_time_limit_and_spaced_by_at_most_twice_the_interval() {
        for seed in 0..50 {
            let steps = plan(seed, &Kind::ALL, 5, 300_000, 10_000);
            let mut t = 0;
            for step in &steps {
                assert!(step.start_ms >= t && step.start_ms - t <= 20_000, "seed {seed}: {step:?}");
                assert!(step.stop_ms > step.start_ms && step.stop_ms - step.start_ms <= 20_000, "seed {seed}");
                t = step.stop_ms;
            }
            assert!(t <= 300_000, "seed {seed}: the last fault ends at {t} ms");
        }
    }

    #[test]
    fn membership_needs_four_nodes_and_all_includes_it_from_four() {
        assert!(Kind::parse_list_for("membership", 3).is_err());
        assert!(!Kind::parse_list_for("all", 3).expect("all").contains(&Kind::Membership));
        assert!(Kind::parse_list_for("all", 4).expect("all").contains(&Kind::Membership));
        let steps = plan(3, &[Kind::Membership], 5, 120_000, 10_000);
        assert!(!steps.is_empty());
        for step in steps {
            assert!(matches!(step.fault, Fault::Membership { node } if (1..=5).contains(&node)), "{step:?}");
        }
    }

    #[test]
    fn a_one_minute_ci_run_fires_each_of_kill_pause_partition() {
        let kinds = [Kind::Kill, Kind::Pause, Kind::Partition];
        for seed in 0..200 {
            let steps = plan(seed, &kinds, 3, 60_000, 5_000);
            for kind in kinds {
                assert!(steps.iter().any(|s| s.fault.kind() == kind), "seed {seed}: no {kind:?} in {steps:?}");
            }
        }
    }

    #[test]
    fn disk_damage_stays_on_one_node_and_partitions_leave_a_majority_somewhere() {
        for seed in 0..200 {
            for n in [3, 5] {
                let steps = plan(seed, &Kind::ALL, n, 300_000, 5_000);
                let damaged: BTreeSet<u32> = steps
                    .iter()
                    .filter_map(|s| match s.fault {
                        Fault::Disk { node, .. } => Some(node),
                        _ => None,
                    })
                    .collect();
                assert!(damaged.len() <= 1, "seed {seed}: disks of {damaged:?} damaged");
                for step in steps {
                    match step.fault {
                        Fault::Disk { node, .. } => assert!((1..=n).contains(&node)),
                        Fault::Partition { shape, grudge } if shape != Shape::Leaders => {
                            // Some node hears from a majority (itself included).
                            let best =
                                (1..=n).map(|x| n - grudge.get(&x).map_or(0, |g| g.len() as u32)).max().unwrap_or(0);
                            assert!(best > n / 2, "seed {seed}: {shape:?} {grudge:?}");
                            // Grudges are symmetric.
                            for (a, cut) in &grudge {
                                for b in cut {
                                    assert!(grudge.get(b).is_some_and(|g| g.contains(a)), "{grudge:?}");
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn the_first_disk_fault_loses_unsynced_writes_and_later_ones_mix_all_three_forms() {
        let mut later = BTreeSet::new();
        let mut n_plans_with_disk = 0;
        for seed in 0..200 {
            let steps = plan(seed, &Kind::ALL, 5, 300_000, 5_000);
            let damages: Vec<Damage> = steps
                .iter()
                .filter_map(|s| match s.fault {
                    Fault::Disk { damage, .. } => Some(damage),
                    _ => None,
                })
                .collect();
            let Some((first, rest)) = damages.split_first() else { continue };
            n_plans_with_disk += 1;
            assert_eq!(*first, Damage::LoseUnsynced, "seed {seed}: {damages:?}");
            later.extend(rest.iter().map(|d| match d {
                Damage::Truncate { .. } => "truncate",
                Damage::BitFlip { .. } => "bit-flip",
                Damage::LoseUnsynced => "lose-unsynced",
            }));
        }
        assert!(n_plans_with_disk > 150, "only {n_plans_with_disk} of 200 plans have a disk fault");
        assert_eq!(later, BTreeSet::from(["bit-flip", "lose-unsynced", "truncate"]));
    }

    #[test]
    fn full_disks_are_a_minority_and_leave_less_than_the_servers_floor() {
        let mut leaves = BTreeSet::new();
        for seed in 0..200 {
            for n in [3, 5] {
                for step in plan(seed, &[Kind::Full, Kind::Kill], n, 300_000, 5_000) {
                    if let Fault::Full { nodes, leave_bytes } = step.fault {
                        assert!(!nodes.is_empty() && nodes.len() as u32 <= ((n - 1) / 2).max(1), "{nodes:?}");
                        assert!(nodes.iter().all(|x| (1..=n).contains(x)), "{nodes:?}");
                        assert!(leave_bytes < FULL_DISK_FLOOR, "{leave_bytes}");
                        leaves.insert(leave_bytes == 0);
                    }
                }
            }
        }
        // Both a disk with nothing left and one with a little.
        assert_eq!(leaves, BTreeSet::from([false, true]));
    }

    #[test]
    fn a_majorities_ring_of_five_gives_every_node_a_different_majority() {
        let grudge = grudge_of(&mut Rng::new(3), 5, Shape::MajoritiesRing);
        let views: BTreeSet<BTreeSet<u32>> =
            (1..=5).map(|x| (1..=5).filter(|y| !grudge[&x].contains(y)).collect::<BTreeSet<u32>>()).collect();
        assert_eq!(views.len(), 5);
        assert!(views.iter().all(|v| v.len() == 3));
    }

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(Kind::parse_list("all").expect("all"), Kind::ALL.to_vec());
        assert_eq!(Kind::parse_list("pause,kill").expect("two"), vec![Kind::Kill, Kind::Pause]);
        assert!(Kind::parse_list("kill,flood").is_err());
    }
}
