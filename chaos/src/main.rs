//! `strata-chaos`: a Jepsen-style test of Strata. It starts a cluster of
//! real `strata server` processes in network namespaces, runs a queue
//! workload against it while a nemesis injects faults (kill, pause,
//! partition, clock, disk, membership), heals everything, reads every partition back,
//! and checks the history for lost, duplicated or reordered records.
//!
//! `strata-chaos run ...` writes `chaos/out/<time>-<seed>/` (history,
//! results.json, node logs, plots) and exits non-zero on any anomaly, on a
//! requested nemesis that never fired, or on an incomplete final read.
//! With `--control` the brokers acknowledge before the quorum has a batch
//! (a deliberate bug) and the run passes only if the checker catches lost
//! writes. `strata-chaos check <history.jsonl>` re-checks a history;
//! `strata-chaos plan ...` prints the fault schedule a run would follow.
//!
//! See docs/chaos.md for the method and the runs made.

mod checker;
mod history;
mod nemesis;
mod netns;
mod node;
mod png;
mod report;
mod rng;
mod tls;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::history::{F, History, NEMESIS_PROCESS, Op, OpType};
use crate::nemesis::{Kind, Nemesis};
use crate::node::{Cluster, ClusterConfig};
use crate::rng::Rng;
use crate::workload::{Mode, Shared};

#[derive(Parser)]
#[command(name = "strata-chaos", about = "Jepsen-style chaos tests of Strata")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster under faults and check the history (needs root).
    Run(RunArgs),
    /// Print the fault schedule a run would follow (no root needed).
    Plan(RunArgs),
    /// Check a history.jsonl written by a run.
    Check {
        /// The history file.
        history: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    Assign,
    Subscribe,
    Both,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Nodes in the cluster (3 to 9).
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    /// Seconds of workload and faults (the final read comes after).
    #[arg(long, default_value_t = 300)]
    time_limit: u64,
    /// Faults: a comma-separated list of kill, pause, partition, clock,
    /// disk, membership (4 nodes or more), full, or all.
    #[arg(long, default_value = "kill,pause,partition")]
    nemesis: String,
    /// Seed of the fault schedule and the workload's choices (default: the
    /// clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds; gaps and fault durations are drawn in 0–2× this.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Keys (partitions of the chaos topic).
    #[arg(long, default_value_t = 8)]
    keys: u32,
    /// Client workers bound to each node.
    #[arg(long, default_value_t = 2)]
    workers_per_node: u32,
    /// How consumers read: assign, subscribe, or both (half the workers
    /// each).
    #[arg(long, value_enum, default_value_t = WorkloadArg::Both)]
    workload: WorkloadArg,
    /// Segment size of the servers' logs: small, so segments roll, get
    /// sealed and are read back through their CRC checks during the run,
    /// and disk damage can hit sealed segments too.
    #[arg(long, default_value = "128KiB")]
    segment_bytes: String,
    /// The strata binary (default: `strata` beside this program).
    #[arg(long)]
    strata_bin: Option<PathBuf>,
    /// Where run directories go.
    #[arg(long, default_value = "chaos/out")]
    out: PathBuf,
    /// Control run: brokers acknowledge acks=all before the quorum has the
    /// batch (testing.ack_before_quorum, UNSAFE); passes only if the
    /// checker reports lost writes.
    #[arg(long)]
    control: bool,
    /// Keep the nodes' data directories even after a valid run.
    #[arg(long)]
    keep_data: bool,
    /// Mutual TLS on the client and peer ports and authorization on, the
    /// workload's client the super user (certificates by
    /// deploy/tls/make-certs.sh; needs openssl).
    #[arg(long)]
    tls: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .context("start the tokio runtime")
            .and_then(|rt| rt.block_on(run(args))),
        Command::Plan(args) => print_plan(&args),
        Command::Check { history } => check_file(&history),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("strata-chaos: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn print_plan(args: &RunArgs) -> anyhow::Result<bool> {
    let kinds = Kind::parse_list_for(&args.nemesis, args.nodes)?;
    let seed = args.seed.context("plan needs --seed")?;
    if !(3..=9).contains(&args.nodes) {
        bail!("--nodes must be 3 to 9");
    }
    let steps = nemesis::plan(seed, &kinds, args.nodes, args.time_limit * 1000, args.interval * 1000);
    println!("{}", serde_json::to_string_pretty(&steps).context("serialize the plan")?);
    Ok(true)
}

fn check_file(path: &Path) -> anyhow::Result<bool> {
    let ops = history::read_jsonl(path)?;
    let verdict = checker::check(&ops);
    println!("{}", serde_json::to_string_pretty(&verdict).context("serialize verdict")?);
    Ok(verdict.valid)
}

/// `YYYYmmddTHHMMSSZ` for a Unix time (civil-from-days, proleptic
/// Gregorian calendar).
fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn strata_bin(args: &RunArgs) -> anyhow::Result<PathBuf> {
    let path = match &args.strata_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("locate this program")?.with_file_name("strata"),
    };
    if !path.is_file() {
        bail!(
            "no strata binary at {}: build it (cargo build --release -p strata-cli) or pass --strata-bin",
            path.display()
        );
    }
    Ok(path.canonicalize().unwrap_or(path))
}

/// Runs everything; the network is removed whatever happens.
async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let kinds = Kind::parse_list_for(&args.nemesis, args.nodes)?;
    if !(3..=9).contains(&args.nodes) {
        bail!("--nodes must be 3 to 9 (a majority must survive a minority's faults)");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seed = args.seed.unwrap_or(now.as_nanos() as u64 % 1_000_000_007);
    let strata_bin = strata_bin(&args)?;
    netns::check_prerequisites()?;
    if kinds.contains(&Kind::Clock) && !Path::new(node::LIBFAKETIME).exists() {
        bail!("the clock nemesis needs libfaketime ({}): install the Debian package faketime", node::LIBFAKETIME);
    }
    let out_dir = args.out.join(format!("{}-{seed}", utc_stamp(now.as_secs())));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    if kinds.contains(&Kind::Clock) {
        node::check_faketime(&out_dir)?;
    }
    eprintln!("[chaos] seed {seed}; nemesis {:?}; output in {}", kinds, out_dir.display());

    netns::create(args.nodes).context("create the network namespaces")?;
    let result = run_in_network(&args, seed, &kinds, &strata_bin, &out_dir).await;
    netns::remove();
    node::unmount_disks(&out_dir);
    result
}

async fn run_in_network(
    args: &RunArgs,
    seed: u64,
    kinds: &[Kind],
    strata_bin: &Path,
    out_dir: &Path,
) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let mut settings = vec![
        // Quick failover keeps the run busy; still 10× the heartbeat.
        "raft.election_timeout_min=1s".to_string(),
        "raft.election_timeout_max=2s".to_string(),
        format!("log.segment_bytes={}", args.segment_bytes),
    ];
    if args.control {
        settings.push("testing.ack_before_quorum=true".to_string());
    }
    if kinds.contains(&Kind::Disk) {
        // The disk nemesis's lose-unsynced fault rewrites a killed node's
        // partition directories to what it had fsynced; the servers record
        // that only in this UNSAFE test mode.
        settings.push("testing.journal_unsynced=true".to_string());
    }
    if args.tls {
        settings.extend(tls::setup(out_dir, args.nodes).context("make the run's certificates")?);
    }
    if kinds.contains(&Kind::Full) {
        // A floor below the nodes' small disks, so that a filled disk
        // makes its node refuse produce as a leader (and its followers run
        // out of space a little later, or at once).
        settings.push(format!("limits.min_free_disk_bytes={}", nemesis::FULL_DISK_FLOOR));
    }
    let cluster = Arc::new(Mutex::new(Cluster::new(
        ClusterConfig {
            n_nodes: args.nodes,
            strata_bin: strata_bin.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            settings,
            faketime: kinds.contains(&Kind::Clock),
            disk_bytes: kinds.contains(&Kind::Full).then_some(nemesis::FULL_DISK_BYTES),
        },
        started,
    )));
    // Ctrl-C: stop the servers and remove the network, then leave.
    {
        let cluster = cluster.clone();
        let out = out_dir.to_path_buf();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("[chaos] interrupted: stopping the cluster and removing the network");
                cluster.lock().unwrap_or_else(|p| p.into_inner()).stop_all();
                netns::remove();
                node::unmount_disks(&out);
                std::process::exit(130);
            }
        });
    }
    cluster.lock().unwrap_or_else(|p| p.into_inner()).start_all()?;
    let bootstrap = cluster.lock().unwrap_or_else(|p| p.into_inner()).bootstrap();
    // Removing a broker needs one outside every replica set.
    let spare = u32::from(kinds.contains(&Kind::Membership));
    workload::create_topic(&bootstrap, args.keys, (args.nodes - spare).min(5)).await?;
    eprintln!("[chaos] cluster up after {:.1}s; running for {}s", started.elapsed().as_secs_f64(), args.time_limit);

    let history = History::create(&out_dir.join("history.jsonl"), started)?;
    let run_start = tokio::time::Instant::now();
    let deadline = run_start + Duration::from_secs(args.time_limit);
    let shared = Arc::new(Shared::new(history.clone(), args.keys, deadline));
    let mut rng = Rng::new(seed);
    let mode = match args.workload {
        WorkloadArg::Assign => Mode::Assign,
        WorkloadArg::Subscribe => Mode::Subscribe,
        WorkloadArg::Both => Mode::Both,
    };
    let mut workers = Vec::new();
    for node in 1..=args.nodes {
        for w in 0..args.workers_per_node {
            let subscribe = match mode {
                Mode::Assign => false,
                Mode::Subscribe => true,
                Mode::Both => w % 2 == 1,
            };
            workers.push(tokio::spawn(workload::worker(shared.clone(), node, subscribe, rng.fork())));
        }
    }
    if mode != Mode::Assign {
        workers.push(tokio::spawn(workload::describer(shared.clone(), bootstrap.clone())));
    }
    let monitor = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                cluster.lock().unwrap_or_else(|p| p.into_inner()).reap();
            }
        })
    };
    let steps = nemesis::plan(seed, kinds, args.nodes, args.time_limit * 1000, args.interval * 1000);
    std::fs::write(out_dir.join("plan.json"), serde_json::to_vec_pretty(&steps).context("plan")?)
        .context("write plan.json")?;
    let nemesis = tokio::spawn(Nemesis::new(cluster.clone(), history.clone()).run(steps, run_start, rng.fork()));
    for worker in workers {
        let _ = worker.await;
    }
    let outcome = nemesis.await.context("the nemesis task panicked")?;

    // Heal everything, let the cluster settle, and read it all back.
    eprintln!("[chaos] healing at {:.1}s", started.elapsed().as_secs_f64());
    let healed = cluster.lock().unwrap_or_else(|p| p.into_inner()).heal_all();
    let mut op = Op::new(NEMESIS_PROCESS, if healed.is_ok() { OpType::Ok } else { OpType::Info }, F::StopFault);
    op.fault = Some("heal all".to_string());
    op.error = healed.err().map(|e| format!("{e:#}"));
    history.record(op);
    let leaderless = workload::wait_for_leaders(args.nodes, args.keys, Duration::from_secs(90)).await;
    if !leaderless.is_empty() {
        eprintln!("[chaos] 90 s after healing, partitions {leaderless:?} still have no leader");
    }
    let ends = workload::ends_seen(&history.finish()?);
    let final_read = workload::final_read(&shared, args.nodes, &ends).await;
    let incomplete = final_read.incomplete;
    monitor.abort();
    let exits = {
        let mut cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
        cluster.reap();
        cluster.exits()
    };
    let ops = history.finish()?;
    eprintln!("[chaos] checking {} history entries", ops.len());
    let verdict = checker::check(&ops);
    let never_fired: Vec<&str> =
        kinds.iter().filter(|k| !outcome.injected.contains_key(k.name())).map(|k| k.name()).collect();
    let caught = verdict.count("lost-write") + verdict.count("unseen") > 0;
    let passed = if args.control {
        caught && never_fired.is_empty()
    } else {
        verdict.valid && never_fired.is_empty() && incomplete.is_empty()
    };
    let results = json!({
        "valid": verdict.valid,
        "passed": passed,
        "control": args.control,
        "tls": args.tls,
        "seed": seed,
        "nodes": args.nodes,
        "time_limit_s": args.time_limit,
        "interval_s": args.interval,
        "keys": args.keys,
        "segment_bytes": args.segment_bytes,
        "nemesis": kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "faults_injected": outcome.injected,
        "faults_never_fired": never_fired,
        "faults_skipped": outcome.skipped,
        "fault_periods": outcome.periods,
        "final_read_incomplete": incomplete,
        "final_read_stalls": final_read.stalls,
        "leaderless_after_heal": leaderless,
        "unexpected_node_exits": exits,
        "replica_reopens": replica_reopens(out_dir, args.nodes),
        "anomalies": verdict.anomalies,
        "stats": verdict.stats,
        "plot_legend": report::legend(),
    });
    std::fs::write(out_dir.join("results.json"), serde_json::to_vec_pretty(&results).context("results")?)
        .context("write results.json")?;
    if let Err(e) = report::write_plots(out_dir, &ops, &outcome.periods) {
        eprintln!("[chaos] plots: {e:#}");
    }
    {
        let mut cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
        cluster.stop_all();
        if passed && !args.control && !args.keep_data {
            cluster.remove_data();
        }
        // The nodes' own file systems, if any: their images stay for a
        // look (`mount -o loop <out>/disks/nN.img DIR`) unless removed above.
        cluster.unmount_disks();
    }
    print_summary(&results);
    eprintln!("[chaos] {} ({})", if passed { "PASSED" } else { "FAILED" }, out_dir.display());
    Ok(passed)
}

/// How often each node reopened a replica whose Raft had stopped on a
/// storage error (a full disk), from its log: what shows that the
/// full-disk fault bit, beyond being injected.
fn replica_reopens(out_dir: &Path, n_nodes: u32) -> BTreeMap<String, usize> {
    (1..=n_nodes)
        .map(|node| {
            let log = std::fs::read_to_string(out_dir.join(format!("n{node}.log"))).unwrap_or_default();
            (format!("n{node}"), log.matches("reopening a replica whose Raft stopped").count())
        })
        .collect()
}

fn print_summary(results: &serde_json::Value) {
    let pick = |k: &str| results.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let anomalies: serde_json::Map<String, serde_json::Value> = pick("anomalies")
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.get("count").cloned().unwrap_or_default())).collect())
        .unwrap_or_default();
    let summary = json!({
        "valid": pick("valid"),
        "passed": pick("passed"),
        "seed": pick("seed"),
        "faults_injected": pick("faults_injected"),
        "faults_never_fired": pick("faults_never_fired"),
        "final_read_incomplete": pick("final_read_incomplete"),
        "final_read_stalls": pick("final_read_stalls"),
        "unexpected_node_exits": pick("unexpected_node_exits"),
        "replica_reopens": pick("replica_reopens"),
        "anomalies": anomalies,
        "stats": pick("stats"),
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_follow_the_calendar() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_796_371_199), "20261204T075959Z");
    }
}
