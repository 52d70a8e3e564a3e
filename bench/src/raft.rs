//! The `raft` scenario: three `strata_raft::RaftNode`s in this process, on
//! 127.0.0.1 (ephemeral ports), each group replicated on all three (RF=3).
//!
//! - Writes: 1 and 12 partitions, several writer tasks each calling
//!   `client_write` on its partition's leader in a loop (following
//!   `ForwardToLeader`), until a fixed volume is committed: committed bytes
//!   per second and the latency of each `client_write`. In the same run, the
//!   `log` scenario's single-node durable append figure for the same batch
//!   (`append_once`, 4 writers and 1, each with 8 appends in flight), as the
//!   baseline of the ratio. By default the writes keep as many batches in
//!   flight as the baseline does (32 writer tasks, one write each), so the
//!   ratio compares the two at the same load; `--writers 12` (one write in
//!   flight per partition) measures a cluster that is mostly waiting.
//! - Idle: a cluster holding many partitions and no traffic: process CPU
//!   time per node and memory.
//!
//! All three nodes share one tokio runtime and one disk, so every committed
//! byte is written and synced three times on the same disk, and the CPU of
//! three nodes is that of this one process.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use openraft::BasicNode;
use openraft::type_config::async_runtime::WatchReceiver;
use strata_log::{FlushPolicy, LogConfig};
use strata_raft::{BatchData, RaftNode, RaftNodeConfig, default_raft_config};

use crate::{AppendSpec, BATCH_TARGET_BYTES, Report, WorkDir, append_once, build_batch, median, parse_count, settle};

/// Nodes of the cluster (every group has all of them: RF=3).
const NODES: u64 = 3;
/// Writer threads of the single-node baseline, and appends each keeps in
/// flight: the `log` scenario's defaults.
const BASELINE_WRITERS: usize = crate::LOG_WRITERS;
const BASELINE_WINDOW: usize = crate::LOG_WINDOW;
/// How long one `client_write` (with its redirects) may take before the run fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cluster may take to elect a leader in every group.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(180);
/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/*/stat` (fixed at
/// 100 by the kernel's ABI on x86-64 and arm64, whatever `CONFIG_HZ` is).
const USER_HZ: f64 = 100.0;

pub(crate) const USAGE: &str = "\
options of `raft`:
  --dir DIR            work under DIR (a fresh subdirectory, removed at the end);
                       default: a fresh directory under /tmp
  --runs N             runs per figure, the median is reported (default 3)
  --writers N          writer tasks per write figure, one write in flight each
                       (default 32: the baseline's 4 logs x 8 appends in flight)
  --mib N              MiB committed per write figure (default 512)
  --partitions LIST    partition counts of the write figures (default 1,12)
  --no-write           no write figures (idle cluster only)
  --no-baseline        no single-node append baseline
  --idle-groups N      partitions of the idle cluster (default 1000; 0 skips it)
  --idle-seconds N     how long the idle cluster is measured (default 20)
  --preallocate-bytes N
                       the logs' preallocation headroom (LogConfig's
                       preallocate_bytes; default its default, 0 disables)
  --direct-io          the Raft nodes' logs and the baseline's write with
                       O_DIRECT, as the server's do (log.direct_io); default:
                       through the page cache
  --heartbeat-ms N     Raft heartbeat interval, elections after 10-20 of them
                       (default: strata-raft's default_raft_config, 100 ms)
  --quick              small volumes, to check the harness itself
";

/// Options of the `raft` scenario.
pub(crate) struct RaftOpts {
    dir: Option<PathBuf>,
    runs: usize,
    writers: usize,
    total_bytes: u64,
    partitions: Vec<usize>,
    write: bool,
    baseline: bool,
    idle_groups: usize,
    idle_seconds: u64,
    /// Raft timing of every node.
    raft: openraft::Config,
    /// Every node's log settings.
    log: LogConfig,
    quick: bool,
}

impl RaftOpts {
    /// Parses the options; `None` when help was asked for.
    pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<RaftOpts>> {
        let mut opts = RaftOpts {
            dir: None,
            runs: 3,
            writers: BASELINE_WRITERS * BASELINE_WINDOW,
            total_bytes: 512 << 20,
            partitions: vec![1, 12],
            write: true,
            baseline: true,
            idle_groups: 1000,
            idle_seconds: 20,
            raft: default_raft_config(),
            log: LogConfig::default(),
            quick: false,
        };
        let mut mib = None;
        let mut idle_groups = None;
        let mut idle_seconds = None;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--dir" => opts.dir = Some(PathBuf::from(value("--dir")?)),
                "--runs" => opts.runs = parse_count("--runs", &value("--runs")?)?,
                "--writers" => opts.writers = parse_count("--writers", &value("--writers")?)?,
                "--mib" => mib = Some(parse_count("--mib", &value("--mib")?)?),
                "--partitions" => {
                    opts.partitions = value("--partitions")?
                        .split(',')
                        .map(|p| parse_count("--partitions", p.trim()))
                        .collect::<Result<_>>()?
                }
                "--no-write" => opts.write = false,
                "--no-baseline" => opts.baseline = false,
                "--idle-groups" => {
                    let text = value("--idle-groups")?;
                    idle_groups = Some(text.parse().with_context(|| format!("--idle-groups {text:?}"))?)
                }
                "--idle-seconds" => {
                    idle_seconds = Some(parse_count("--idle-seconds", &value("--idle-seconds")?)? as u64)
                }
                "--heartbeat-ms" => {
                    let ms = parse_count("--heartbeat-ms", &value("--heartbeat-ms")?)? as u64;
                    opts.raft = openraft::Config {
                        heartbeat_interval: ms,
                        election_timeout_min: 10 * ms,
                        election_timeout_max: 20 * ms,
                        ..default_raft_config()
                    };
                }
                "--preallocate-bytes" => {
                    let text = value("--preallocate-bytes")?;
                    opts.log.preallocate_bytes =
                        text.parse().with_context(|| format!("--preallocate-bytes {text:?}"))?;
                    opts.log.validate()?;
                }
                "--direct-io" => opts.log.direct_io = true,
                "--quick" => opts.quick = true,
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown option {other:?} (see --help)"),
            }
        }
        if opts.quick {
            opts.total_bytes = 16 << 20;
            opts.idle_groups = 30;
            opts.idle_seconds = 3;
        }
        if let Some(mib) = mib {
            opts.total_bytes = (mib as u64) << 20;
        }
        opts.idle_groups = idle_groups.unwrap_or(opts.idle_groups);
        opts.idle_seconds = idle_seconds.unwrap_or(opts.idle_seconds);
        Ok(Some(opts))
    }
}

// ---------------------------------------------------------------------------
// The cluster

/// Three nodes in this process, and the groups they all run.
struct Cluster {
    nodes: Vec<Arc<RaftNode>>,
    groups: Vec<u64>,
}

impl Cluster {
    /// Starts three nodes with their data under `dir`, opens `groups`
    /// groups (ids 0..groups) on each and initializes group `g` with all
    /// three members from node `g % 3 + 1` (so that it is likely to lead
    /// it: only an initialized node starts an election). Returns once every
    /// group has a leader, with the time each step took.
    async fn start(
        dir: &Path,
        groups: usize,
        raft: &openraft::Config,
        log: &LogConfig,
    ) -> Result<(Cluster, StartTimes)> {
        let started = Instant::now();
        let mut nodes = Vec::new();
        for id in 1..=NODES {
            let listen: SocketAddr = "127.0.0.1:0".parse().context("parse the listen address")?;
            let config = RaftNodeConfig {
                node_id: id,
                listen,
                data_dir: dir.join(format!("node-{id}")),
                raft: raft.clone(),
                log: log.clone(),
                tls: None,
            };
            nodes.push(Arc::new(RaftNode::start(config).await.with_context(|| format!("start node {id}"))?));
        }
        let group_ids: Vec<u64> = (0..groups as u64).collect();
        for node in &nodes {
            for &g in &group_ids {
                node.open_group(g).await.with_context(|| format!("open group {g} on node {}", node.id()))?;
            }
        }
        let opened = started.elapsed();
        let cluster = Cluster { nodes, groups: group_ids };
        let members: BTreeMap<u64, BasicNode> =
            cluster.nodes.iter().map(|n| (n.id(), BasicNode::new(n.addr().to_string()))).collect();
        let mut inits = tokio::task::JoinSet::new();
        for &g in &cluster.groups {
            let raft = cluster.raft(cluster.initializer(g), g)?;
            let members = members.clone();
            inits.spawn(async move { raft.initialize(members).await.map_err(|e| anyhow::anyhow!("group {g}: {e}")) });
        }
        while let Some(result) = inits.join_next().await {
            result.context("an initialize task failed")?.context("initialize")?;
        }
        let initialized = started.elapsed();
        cluster.wait_for_leaders(ELECTION_TIMEOUT).await?;
        Ok((cluster, StartTimes { opened, initialized, elected: started.elapsed() }))
    }

    /// The node that initializes group `g`.
    fn initializer(&self, g: u64) -> u64 {
        g % NODES + 1
    }

    fn node(&self, id: u64) -> Result<&Arc<RaftNode>> {
        self.nodes.iter().find(|n| n.id() == id).with_context(|| format!("no node {id}"))
    }

    fn raft(&self, node: u64, group: u64) -> Result<strata_raft::GroupRaft> {
        Ok(self.node(node)?.group(group).with_context(|| format!("group {group} is not open on node {node}"))?.raft)
    }

    /// The leader of each group, when every node agrees on it and it
    /// considers itself the leader; `None` for a group without one.
    fn leaders(&self) -> Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(self.groups.len());
        for &g in &self.groups {
            let mut views = Vec::new();
            for node in &self.nodes {
                let raft = self.raft(node.id(), g)?;
                let metrics = raft.metrics();
                let m = metrics.borrow_watched();
                views.push((node.id(), m.current_leader, m.state.is_leader()));
            }
            let leader = views.iter().find(|(_, _, is_leader)| *is_leader).map(|(id, _, _)| *id);
            out.push(leader.filter(|id| views.iter().all(|(_, seen, _)| *seen == Some(*id))));
        }
        Ok(out)
    }

    /// The term of each group, as its leader (or node 1) sees it.
    fn terms(&self) -> Result<Vec<u64>> {
        let leaders = self.leaders()?;
        self.groups
            .iter()
            .zip(leaders)
            .map(|(&g, leader)| Ok(self.raft(leader.unwrap_or(1), g)?.metrics().borrow_watched().current_term))
            .collect()
    }

    async fn wait_for_leaders(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = self.leaders()?.iter().filter(|l| l.is_none()).count();
            if missing == 0 {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{missing} groups still have no leader after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `batch` to `group`, starting at node `*leader` and following
    /// `ForwardToLeader` answers (a new leader refuses writes until it has
    /// committed an entry of its term: then it names no leader, and the
    /// write is retried after a moment). Counts the redirects.
    async fn write(&self, group: u64, leader: &mut u64, batch: &BatchData, redirects: &mut u64) -> Result<()> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let raft = self.raft(*leader, group)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(left, raft.client_write(batch.clone()))
                .await
                .with_context(|| format!("group {group}: a write was not acknowledged within {WRITE_TIMEOUT:?}"))?;
            match result {
                Ok(_) => return Ok(()),
                Err(err) => {
                    let Some(forward) = err.forward_to_leader() else {
                        bail!("group {group}: write on node {leader} failed: {err}");
                    };
                    *redirects += 1;
                    match forward.leader_id {
                        Some(id) if id != *leader => *leader = id,
                        _ => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        }
    }

    async fn shutdown(&self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

/// Time from the start of `Cluster::start` to each step.
struct StartTimes {
    opened: Duration,
    initialized: Duration,
    elected: Duration,
}

/// Leader placement: how many groups each node leads, and how many are led
/// by another node than the one that initialized them, as named figures.
fn leader_figures(prefix: &str, cluster: &Cluster, leaders: &[Option<u64>]) -> Vec<(String, f64)> {
    let mut per_node: BTreeMap<u64, usize> = cluster.nodes.iter().map(|n| (n.id(), 0)).collect();
    let mut moved = 0usize;
    for (&g, leader) in cluster.groups.iter().zip(leaders) {
        if let Some(id) = leader {
            *per_node.entry(*id).or_default() += 1;
            if *id != cluster.initializer(g) {
                moved += 1;
            }
        }
    }
    let placement: Vec<String> = per_node.iter().map(|(id, n)| format!("node {id}: {n}")).collect();
    eprintln!("  leaders: {} ({moved} not on the node that initialized the group)", placement.join(", "));
    let mut out: Vec<(String, f64)> =
        per_node.iter().map(|(id, n)| (format!("{prefix}_leaders_node{id}"), *n as f64)).collect();
    out.push((format!("{prefix}_leaders_not_initializer"), moved as f64));
    out
}

// ---------------------------------------------------------------------------
// Writes

/// What one write run measured.
struct WriteRun {
    /// Committed bytes per second.
    bytes_per_sec: f64,
    /// Latency of every `client_write`, sorted, in seconds.
    latencies: Vec<f64>,
    redirects: u64,
    /// Where the leaders were (see `leader_figures`).
    leaders: Vec<(String, f64)>,
    /// Process CPU time over the run, in cores (1.0 = one core busy).
    cpu_cores: f64,
    seconds: f64,
}

/// One writer: takes tickets until none are left, writing `batch` to its
/// group once per ticket; returns each write's latency and when it ended.
async fn writer(
    cluster: Arc<Cluster>,
    group: u64,
    mut leader: u64,
    batch: BatchData,
    tickets: Arc<AtomicU64>,
) -> Result<(Vec<f64>, u64, Instant)> {
    let mut latencies = Vec::new();
    let mut redirects = 0;
    while tickets.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1)).is_ok() {
        let start = Instant::now();
        cluster.write(group, &mut leader, &batch, &mut redirects).await?;
        latencies.push(start.elapsed().as_secs_f64());
    }
    Ok((latencies, redirects, Instant::now()))
}

async fn write_once(
    dir: &Path,
    partitions: usize,
    opts: &RaftOpts,
    batch: &BatchData,
    label: &str,
) -> Result<WriteRun> {
    let (cluster, times) = Cluster::start(dir, partitions, &opts.raft, &opts.log).await?;
    let cluster = Arc::new(cluster);
    eprintln!(
        "  {label}: cluster up in {:.2} s (groups opened {:.2} s, initialized {:.2} s)",
        times.elected.as_secs_f64(),
        times.opened.as_secs_f64(),
        times.initialized.as_secs_f64()
    );
    // One untimed write per group: connections made, leaders ready to take
    // writes.
    let mut leaders = Vec::new();
    let mut warmup_redirects = 0;
    for (&g, leader) in cluster.groups.iter().zip(cluster.leaders()?) {
        let mut leader = leader.context("a group lost its leader")?;
        cluster.write(g, &mut leader, batch, &mut warmup_redirects).await?;
        leaders.push(leader);
    }
    let placement = cluster.leaders()?;
    let leader_counts = leader_figures(label, &cluster, &placement);

    let writes = opts.total_bytes.div_ceil(batch.bytes().len() as u64);
    let tickets = Arc::new(AtomicU64::new(writes));
    let cpu_before = process_cpu_seconds()?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..opts.writers {
        let g = cluster.groups[w % cluster.groups.len()];
        let leader = leaders[w % leaders.len()];
        tasks.spawn(writer(cluster.clone(), g, leader, batch.clone(), tickets.clone()));
    }
    let mut latencies = Vec::new();
    let mut redirects = 0;
    let mut end = start;
    while let Some(result) = tasks.join_next().await {
        let (lat, r, ended) = result.context("a writer task failed")??;
        latencies.extend(lat);
        redirects += r;
        end = end.max(ended);
    }
    let seconds = (end - start).as_secs_f64();
    let cpu_cores = (process_cpu_seconds()? - cpu_before) / seconds;
    ensure!(latencies.len() as u64 == writes, "{} writes acknowledged of {writes}", latencies.len());
    let after = cluster.leaders()?;
    if after != placement {
        eprintln!("  {label}: leaders changed during the run");
    }
    cluster.shutdown().await;
    latencies.sort_by(f64::total_cmp);
    Ok(WriteRun {
        bytes_per_sec: (writes * batch.bytes().len() as u64) as f64 / seconds,
        latencies,
        redirects,
        leaders: leader_counts,
        cpu_cores,
        seconds,
    })
}

/// The value below which a fraction `q` of the sorted `values` lie.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn write_figures(work: &Path, opts: &RaftOpts, report: &mut Report) -> Result<()> {
    // The `log` scenario's 100-byte-record batch (same seed, same bytes).
    let batch = build_batch(100, BATCH_TARGET_BYTES, 0x5eed_0001);
    let (data, header) = BatchData::validate(batch.clone()).context("a built batch does not validate")?;
    report.params.insert("batch_bytes".into(), batch.len() as f64);
    report.params.insert("records_per_batch".into(), f64::from(header.record_count));
    report.params.insert("writers".into(), opts.writers as f64);
    report.params.insert("bytes_per_write_figure".into(), opts.total_bytes as f64);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start tokio")?;
    let mut runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..opts.runs {
        for &partitions in &opts.partitions {
            let label = format!("raft_p{partitions}");
            let dir = work.join(format!("{label}-{run}"));
            let result = runtime
                .block_on(write_once(&dir, partitions, opts, &data, &label))
                .with_context(|| format!("{label} run {run}"))?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            settle();
            let l = &result.latencies;
            let figures = [
                ("commit_mbps", result.bytes_per_sec / 1e6),
                ("latency_p50_ms", quantile(l, 0.50) * 1e3),
                ("latency_p99_ms", quantile(l, 0.99) * 1e3),
                ("latency_p999_ms", quantile(l, 0.999) * 1e3),
                ("latency_max_ms", quantile(l, 1.0) * 1e3),
                ("cpu_cores", result.cpu_cores),
                ("redirects", result.redirects as f64),
                ("seconds", result.seconds),
            ];
            eprintln!(
                "  {label:<10} run {}/{}: {:8.1} MB/s committed, latency p50 {:.1} ms, p99 {:.1} ms, \
                 p999 {:.1} ms, max {:.1} ms; {:.2} cores busy; {} redirects",
                run + 1,
                opts.runs,
                figures[0].1,
                figures[1].1,
                figures[2].1,
                figures[3].1,
                figures[4].1,
                result.cpu_cores,
                result.redirects
            );
            for (name, value) in figures {
                runs.entry(format!("{label}_{name}")).or_default().push(value);
            }
            for (name, value) in result.leaders {
                runs.entry(name).or_default().push(value);
            }
        }
        if opts.baseline {
            // The `log` scenario's figure for the same batch: durable appends
            // on one node, 4 logs (and 1) sharing one flusher, 8 in flight.
            let log_bytes: u64 = if opts.quick { 16 << 20 } else { 1 << 30 };
            report.params.insert("baseline_bytes".into(), log_bytes as f64);
            for writers in [BASELINE_WRITERS, 1] {
                let spec = AppendSpec {
                    label: format!("append_always_w{writers}_100b_mbps"),
                    policy: FlushPolicy::Always,
                    writers,
                    window: BASELINE_WINDOW,
                    batch: &batch,
                    total_bytes: log_bytes,
                    direct_io: opts.log.direct_io,
                };
                let dir = work.join(format!("append-{run}"));
                let bytes_per_sec = append_once(&dir, &spec).with_context(|| format!("{} run {run}", spec.label))?;
                std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
                settle();
                eprintln!("  {:<34} run {}/{}: {:8.1} MB/s", spec.label, run + 1, opts.runs, bytes_per_sec / 1e6);
                runs.entry(spec.label).or_default().push(bytes_per_sec / 1e6);
            }
        }
    }
    for (name, values) in runs {
        let m = report.add_runs(&name, values);
        eprintln!("{name:<36} median {m:10.2}");
    }
    let base = report.results.get("append_always_w4_100b_mbps").copied();
    for &partitions in &opts.partitions {
        let key = format!("raft_p{partitions}_commit_mbps");
        if let (Some(raft), Some(base)) = (report.results.get(&key).copied(), base) {
            report.add(&format!("{key}/append_always_w4_100b_mbps"), raft / base);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Idle

/// This process's CPU time (user + system, all threads, living or exited),
/// in seconds, from `/proc/self/stat`.
fn process_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    stat_cpu_seconds(&stat)
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Result<f64> {
    // The command name, in parentheses, may hold spaces: fields are counted
    // after its closing parenthesis (state is field 3; utime 14, stime 15).
    let (_, rest) = stat.rsplit_once(')').context("no ')' in a stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    ensure!(fields.len() > 12, "short stat line {stat:?}");
    let ticks = |i: usize| -> Result<f64> {
        fields[i].parse::<f64>().with_context(|| format!("bad field {} in stat line {stat:?}", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

/// CPU seconds of this process's living threads, summed by thread name.
fn thread_cpu_seconds() -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").context("list /proc/self/task")? {
        let path = entry.context("list /proc/self/task")?.path();
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name)
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        *out.entry(name).or_insert(0.0) += stat_cpu_seconds(&stat)?;
    }
    Ok(out)
}

/// Fields of `/proc/self/status` in KiB (or counts), by name.
fn status_fields(names: &[&str]) -> Result<BTreeMap<String, f64>> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let mut out = BTreeMap::new();
    for name in names {
        let line = status
            .lines()
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))
            .with_context(|| format!("no {name} in /proc/self/status"))?;
        let value = line[name.len() + 1..].trim().trim_end_matches("kB").trim();
        out.insert(name.to_string(), value.parse().with_context(|| format!("bad status line {line:?}"))?);
    }
    Ok(out)
}

/// TCP segments received and sent by this network namespace (`InSegs`,
/// `OutSegs` of `/proc/net/snmp`): on an otherwise quiet machine, the
/// cluster's messages over loopback.
fn tcp_segments() -> Result<(f64, f64)> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").context("read /proc/net/snmp")?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else { bail!("no Tcp lines in /proc/net/snmp") };
    let table: HashMap<&str, &str> = names.split_whitespace().zip(values.split_whitespace()).collect();
    let field = |name: &str| -> Result<f64> {
        table.get(name).with_context(|| format!("no Tcp {name}"))?.parse().with_context(|| format!("bad Tcp {name}"))
    };
    Ok((field("InSegs")?, field("OutSegs")?))
}

fn count_dir(path: &str) -> f64 {
    std::fs::read_dir(path).map_or(f64::NAN, |d| d.count() as f64)
}

async fn idle_once(dir: &Path, opts: &RaftOpts, report: &mut Report, run: usize) -> Result<()> {
    const MIB: f64 = 1024.0;
    let groups = opts.idle_groups;
    let mem_names = ["VmRSS", "RssAnon", "RssFile", "Threads"];
    let before = status_fields(&mem_names)?;
    let (cluster, times) = Cluster::start(dir, groups, &opts.raft, &opts.log).await?;
    eprintln!(
        "  idle: {groups} groups on {NODES} nodes up in {:.1} s (opened {:.1} s, initialized {:.1} s)",
        times.elected.as_secs_f64(),
        times.opened.as_secs_f64(),
        times.initialized.as_secs_f64()
    );
    let leaders = cluster.leaders()?;
    for (name, value) in leader_figures("idle", &cluster, &leaders) {
        report.runs.entry(name).or_default().push(value);
    }
    // Let the elections settle (a new leader's first heartbeats, blank
    // entries committed) before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Then wait for the groups to go quiet (idle and fully replicated for
    // twice the election timeout; see strata-raft's quiesce.rs), at most
    // two minutes: the figure is that of a cluster at rest.
    let replicas = groups * NODES as usize;
    let n_quiet = |cluster: &Cluster| cluster.nodes.iter().map(|n| n.quiescence().n_quiet()).sum::<usize>();
    let quiet_started = Instant::now();
    while n_quiet(&cluster) < replicas && quiet_started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet_wait = quiet_started.elapsed();
    let quiet_before = n_quiet(&cluster);
    eprintln!("  idle: {quiet_before} of {replicas} replicas quiet after {:.1} s more", quiet_wait.as_secs_f64());
    let terms_before = cluster.terms()?;
    let threads_before = thread_cpu_seconds()?;
    let (in_before, out_before) = tcp_segments()?;
    let cpu_before = process_cpu_seconds()?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.idle_seconds)).await;
    let cpu = process_cpu_seconds()? - cpu_before;
    let seconds = start.elapsed().as_secs_f64();
    let (in_after, out_after) = tcp_segments()?;
    let threads_after = thread_cpu_seconds()?;
    let terms_after = cluster.terms()?;
    let after = status_fields(&mem_names)?;
    let fds = count_dir("/proc/self/fd");
    let leaders_after = cluster.leaders()?;
    let elections = terms_before.iter().zip(&terms_after).filter(|(a, b)| a != b).count();
    let leaderless = leaders_after.iter().filter(|l| l.is_none()).count();

    let per_node_pct = cpu / seconds / NODES as f64 * 100.0;
    let replicas = (groups as u64 * NODES) as f64;
    let rss_growth_kib = after["VmRSS"] - before["VmRSS"];
    let heartbeat_ms = opts.raft.heartbeat_interval as f64;
    let figures = [
        ("idle_cpu_pct_of_core_per_node", per_node_pct),
        ("idle_cpu_cores_process", cpu / seconds),
        ("idle_rss_mib", after["VmRSS"] / MIB),
        ("idle_rss_anon_mib", after["RssAnon"] / MIB),
        ("idle_rss_file_mib", after["RssFile"] / MIB),
        ("idle_rss_growth_mib", rss_growth_kib / MIB),
        ("idle_rss_per_node_mib", rss_growth_kib / MIB / NODES as f64),
        ("idle_rss_per_replica_kib", rss_growth_kib / replicas),
        ("idle_threads", after["Threads"]),
        ("idle_open_fds", fds),
        ("idle_tcp_in_segments_per_sec", (in_after - in_before) / seconds),
        ("idle_tcp_out_segments_per_sec", (out_after - out_before) / seconds),
        ("idle_groups_with_new_term", elections as f64),
        ("idle_quiet_wait_seconds", quiet_wait.as_secs_f64()),
        ("idle_replicas_quiet_before", quiet_before as f64),
        ("idle_replicas_quiet_after", n_quiet(&cluster) as f64),
        ("idle_groups_without_leader_after", leaderless as f64),
        ("idle_open_seconds", times.opened.as_secs_f64()),
        ("idle_initialize_seconds", (times.initialized - times.opened).as_secs_f64()),
        ("idle_election_seconds", (times.elected - times.initialized).as_secs_f64()),
        // What the configuration implies: each leader sends one heartbeat
        // (an empty AppendEntries) to each follower per interval.
        ("idle_expected_heartbeats_per_sec", groups as f64 * (NODES - 1) as f64 * 1000.0 / heartbeat_ms),
        // Each group's Raft on each node also wakes on a tick, every
        // heartbeat_interval * 13 / 64 (openraft 0.10's `Config::tick_interval`).
        (
            "idle_expected_ticks_per_sec_per_node",
            groups as f64 * 1000.0 / (heartbeat_ms * 13.0 / 64.0).floor().max(1.0),
        ),
    ];
    eprintln!(
        "  idle run {}: {:.1}% of a core per node ({:.2} cores for the process), RSS {:.1} MiB \
         (+{:.1} MiB, {:.1} KiB per group replica), {:.0} TCP segments/s out, {} groups changed term",
        run + 1,
        per_node_pct,
        cpu / seconds,
        after["VmRSS"] / MIB,
        rss_growth_kib / MIB,
        rss_growth_kib / replicas,
        (out_after - out_before) / seconds,
        elections
    );
    let mut by_thread: Vec<(String, f64)> = threads_after
        .iter()
        .map(|(name, t)| (name.clone(), (t - threads_before.get(name).copied().unwrap_or(0.0)) / seconds * 100.0))
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = by_thread.iter().take(6).map(|(n, p)| format!("{n} {p:.1}%")).collect();
    eprintln!("  idle CPU by thread (% of a core): {}", shown.join(", "));
    for (name, pct) in &by_thread {
        let key: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        report.runs.entry(format!("idle_thread_cpu_pct_{key}")).or_default().push(*pct);
    }
    for (name, value) in figures {
        report.runs.entry(name.to_string()).or_default().push(value);
    }
    cluster.shutdown().await;
    Ok(())
}

fn idle_figures(work: &Path, opts: &RaftOpts, report: &mut Report) -> Result<()> {
    report.params.insert("idle_groups".into(), opts.idle_groups as f64);
    report.params.insert("idle_seconds".into(), opts.idle_seconds as f64);
    let base = status_fields(&["VmRSS"])?;
    report.add("idle_process_rss_before_mib", base["VmRSS"] / 1024.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start tokio")?;
    for run in 0..opts.runs {
        let dir = work.join(format!("idle-{run}"));
        runtime.block_on(idle_once(&dir, opts, report, run)).with_context(|| format!("idle run {run}"))?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    let names: Vec<String> = report.runs.keys().filter(|k| k.starts_with("idle_")).cloned().collect();
    for name in names {
        let m = median(&report.runs[&name]);
        report.add(&name, m);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The `raft` scenario

pub(crate) fn raft_scenario(opts: &RaftOpts) -> Result<Report> {
    let work = WorkDir::create(opts.dir.as_deref())?;
    eprintln!("strata-bench raft: working in {}", work.path.display());
    let mut report = Report { scenario: "raft", ..Report::default() };
    report.params.insert("runs".into(), opts.runs as f64);
    report.params.insert("nodes".into(), NODES as f64);
    report.params.insert("quick".into(), if opts.quick { 1.0 } else { 0.0 });
    report.params.insert("heartbeat_interval_ms".into(), opts.raft.heartbeat_interval as f64);
    report.params.insert("preallocate_bytes".into(), opts.log.preallocate_bytes as f64);
    report.params.insert("direct_io".into(), if opts.log.direct_io { 1.0 } else { 0.0 });
    report.params.insert("election_timeout_min_ms".into(), opts.raft.election_timeout_min as f64);
    report.params.insert("cpus".into(), std::thread::available_parallelism().map_or(f64::NAN, |n| n.get() as f64));
    let start = Instant::now();
    if opts.write {
        write_figures(&work.path, opts, &mut report)?;
    }
    if opts.idle_groups > 0 {
        idle_figures(&work.path, opts, &mut report)?;
    }
    report.add("bench_seconds", start.elapsed().as_secs_f64());
    report.add("bench_peak_rss_mib", status_fields(&["VmHWM"])?["VmHWM"] / 1024.0);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_values() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 500.0);
        assert_eq!(quantile(&values, 0.99), 990.0);
        assert_eq!(quantile(&values, 0.999), 999.0);
        assert_eq!(quantile(&values, 1.0), 1000.0);
        assert_eq!(quantile(&[7.0], 0.999), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn cpu_time_of_a_stat_line_whose_name_has_spaces() {
        let line = "42 (a b) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(stat_cpu_seconds(line).ok(), Some(3.0));
    }

    #[test]
    fn options_parse() {
        let args = ["--partitions", "1,12", "--mib", "64", "--idle-groups", "0"].map(String::from);
        let opts = RaftOpts::parse(args.into_iter()).ok().flatten();
        let opts = opts.as_ref();
        assert_eq!(opts.map(|o| o.partitions.clone()), Some(vec![1, 12]));
        assert_eq!(opts.map(|o| o.total_bytes), Some(64 << 20));
        assert_eq!(opts.map(|o| o.idle_groups), Some(0));
    }
}
