//! `strata-bench`: Strata's benchmark harness.
//!
//! Each scenario measures one part of the system on the real disk and prints
//! its progress to stderr and, as the last line on stdout, one JSON object
//! with every figure. `bench/run <scenario>` builds this binary, measures the
//! machine's own limits for the same patterns with `fio` and prints the
//! ratios; see `docs/benchmarks.md`.
//!
//! Scenarios:
//! - `log`: the storage engine (`strata-log`) alone: durable append
//!   throughput with group commit, append throughput under an interval flush
//!   policy, sequential reads through the memory maps, reopen time and memory.
//! - `raft`: three Raft nodes in one process (`strata-raft`): committed
//!   throughput and latency with RF=3 against the log's single-node appends,
//!   and the CPU and memory of an idle cluster holding many partitions.
//!
//! Arguments are parsed by hand (`strata-bench log --help` lists them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use strata_batch::{BatchBuilder, Compression};
use strata_log::io::Dir;
use strata_log::io::fs::FsDir;
use strata_log::{FlushPolicy, Flusher, Log, LogConfig, Term};

mod nats;
mod raft;

/// The quantiles of a latency spectrum in JSON output (`percentiles_ms`),
/// the points of bench/run's latency plots; the same as `strata perf`'s.
pub(crate) const PLOT_QUANTILES: [f64; 11] = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];

const USAGE: &str = "\
usage: strata-bench <scenario> [options]

scenarios:
  log    the storage engine alone: durable appends (group commit), interval
         flush appends, mmap reads, reopen time and memory
  raft   three Raft nodes in this process: committed throughput and latency
         (RF=3) against single-node appends; CPU and memory of an idle
         cluster holding many partitions

options of `log`:
  --dir DIR          work under DIR (a fresh subdirectory, removed at the end);
                     default: a fresh directory under /tmp
  --runs N           runs per figure, the median is reported (default 5)
  --writers N        writer threads, each with its own log (default 4)
  --window N         unacknowledged appends per writer (default 8)
  --interval-ms N    flush interval of the interval policy (default 100)
  --quick            small volumes, to check the harness itself (figures are
                     not meaningful)
  --only PATTERN     only the append figures whose name contains PATTERN
                     (e.g. append_always_w4); skips reads, reopen and memory
  --no-append        no append figures: reads, reopen and memory only
";

/// Size the pre-built batches aim for (fio's `bs=100k`).
const BATCH_TARGET_BYTES: usize = 100 * 1024;
/// Byte budget of one `read_offsets` call.
const READ_BUDGET_BYTES: usize = 1024 * 1024;
/// Opens timed for each reopen figure.
const OPENS: usize = 5;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("strata-bench: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("log") => {
            let Some(opts) = LogOpts::parse(args)? else {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            };
            let report = log_scenario(&opts)?;
            println!("{}", report.to_json());
            Ok(ExitCode::SUCCESS)
        }
        Some("nats-publish") => {
            nats::nats_publish(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some("raft") => {
            let Some(opts) = raft::RaftOpts::parse(args)? else {
                print!("{USAGE}\n{}", raft::USAGE);
                return Ok(ExitCode::SUCCESS);
            };
            let report = raft::raft_scenario(&opts)?;
            println!("{}", report.to_json());
            Ok(ExitCode::SUCCESS)
        }
        // Internal: run by the `log` scenario in a child process, so that the
        // child's peak RSS is that of opening (and reading) one log only.
        Some("probe-open") => {
            probe_open(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}\n{}", raft::USAGE);
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprint!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

// ---------------------------------------------------------------------------
// Options and sizes

struct LogOpts {
    dir: Option<PathBuf>,
    runs: usize,
    writers: usize,
    window: usize,
    interval: Duration,
    quick: bool,
    /// Only the append figures whose name contains this (and no reads).
    only: Option<String>,
    /// No append figures (reads, reopen and memory only).
    no_append: bool,
}

/// Writer threads of the `log` scenario's append figures, by default (also
/// the `raft` scenario's baseline).
pub(crate) const LOG_WRITERS: usize = 4;
/// Appends in flight per writer, by default (likewise).
pub(crate) const LOG_WINDOW: usize = 8;

impl LogOpts {
    /// Parses the options; `None` when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<LogOpts>> {
        let mut opts = LogOpts {
            dir: None,
            runs: 5,
            writers: LOG_WRITERS,
            window: LOG_WINDOW,
            interval: Duration::from_millis(100),
            quick: false,
            only: None,
            no_append: false,
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--dir" => opts.dir = Some(PathBuf::from(value("--dir")?)),
                "--runs" => opts.runs = parse_count("--runs", &value("--runs")?)?,
                "--writers" => opts.writers = parse_count("--writers", &value("--writers")?)?,
                "--window" => opts.window = parse_count("--window", &value("--window")?)?,
                "--interval-ms" => {
                    opts.interval =
                        Duration::from_millis(parse_count("--interval-ms", &value("--interval-ms")?)? as u64)
                }
                "--quick" => opts.quick = true,
                "--only" => opts.only = Some(value("--only")?),
                "--no-append" => opts.no_append = true,
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown option {other:?} (see --help)"),
            }
        }
        Ok(Some(opts))
    }
}

fn parse_count(name: &str, text: &str) -> Result<usize> {
    let n: usize = text.parse().with_context(|| format!("{name} {text:?} is not a number"))?;
    ensure!(n > 0, "{name} must be at least 1");
    Ok(n)
}

/// Volumes of the `log` scenario.
struct Sizes {
    /// Bytes appended per run with `FlushPolicy::Always` (all writers).
    always_bytes: u64,
    /// Bytes appended per run with `FlushPolicy::Interval` (all writers).
    interval_bytes: u64,
    /// Segment size of the read/reopen log.
    segment_bytes: u64,
    /// Sealed segments of the read/reopen log (its size is this many
    /// segments, plus a few batches in the active one).
    sealed_segments: usize,
    /// Sealed segments of the smaller log used to compare memory.
    small_sealed_segments: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        const MIB: u64 = 1024 * 1024;
        if quick {
            Sizes {
                always_bytes: 16 * MIB,
                interval_bytes: 32 * MIB,
                segment_bytes: 16 * MIB,
                sealed_segments: 8,
                small_sealed_segments: 2,
            }
        } else {
            Sizes {
                always_bytes: 1024 * MIB,
                interval_bytes: 1024 * MIB,
                segment_bytes: 128 * MIB,
                sealed_segments: 8,
                small_sealed_segments: 2,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Report

/// Figures of one scenario, written out as one JSON line.
#[derive(Default)]
struct Report {
    scenario: &'static str,
    /// Medians (and single figures), by name.
    results: BTreeMap<String, f64>,
    /// Every run behind a median, to judge stability.
    runs: BTreeMap<String, Vec<f64>>,
    /// The parameters the figures were taken with.
    params: BTreeMap<String, f64>,
}

impl Report {
    /// Records the runs of a figure and their median; returns the median.
    fn add_runs(&mut self, name: &str, values: Vec<f64>) -> f64 {
        let m = median(&values);
        self.results.insert(name.to_string(), m);
        self.runs.insert(name.to_string(), values);
        m
    }

    fn add(&mut self, name: &str, value: f64) {
        self.results.insert(name.to_string(), value);
    }

    fn to_json(&self) -> String {
        let object = |map: &BTreeMap<String, f64>| {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("\"{k}\":{}", json_number(*v))).collect();
            format!("{{{}}}", fields.join(","))
        };
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|(k, vs)| {
                let items: Vec<String> = vs.iter().map(|v| json_number(*v)).collect();
                format!("\"{k}\":[{}]", items.join(","))
            })
            .collect();
        format!(
            "{{\"scenario\":\"{}\",\"results\":{},\"runs\":{{{}}},\"params\":{}}}",
            self.scenario,
            object(&self.results),
            runs.join(","),
            object(&self.params)
        )
    }
}

/// A number as JSON has it (no NaN or infinity there: those become null).
fn json_number(v: f64) -> String {
    if !v.is_finite() {
        "null".to_string()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------
// Work directory

/// A directory removed (with everything in it) when dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// A fresh directory inside `parent`, or under /tmp.
    fn create(parent: Option<&Path>) -> Result<WorkDir> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("strata-bench-{}-{nanos}", std::process::id());
        let path = parent.unwrap_or(Path::new("/tmp")).join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("strata-bench: could not remove {}: {err}", self.path.display());
        }
    }
}

fn open_log(path: &Path, config: LogConfig, flusher: Option<&Flusher>) -> Result<Log> {
    let dir: Arc<dyn Dir> = Arc::new(FsDir::open(path).with_context(|| format!("open dir {}", path.display()))?);
    Log::open(dir, config, flusher).with_context(|| format!("open log in {}", path.display()))
}

// ---------------------------------------------------------------------------
// Batches

/// One uncompressed batch of records whose values are `value_bytes` long,
/// as many as fit in `target_bytes` (at least one). Values are pseudo-random
/// so that nothing on the way can shrink them.
fn build_batch(value_bytes: usize, target_bytes: usize, seed: u64) -> Bytes {
    // Per-record framing beyond the value: length, attributes, timestamp
    // and offset deltas, key and value lengths, header count (varints).
    const RECORD_OVERHEAD_MAX: usize = 24;
    let mut builder = BatchBuilder::new();
    let mut value = vec![0u8; value_bytes];
    let mut state = seed | 1;
    let base_timestamp = 1_700_000_000_000i64;
    while builder.n_records() == 0 || builder.size_bytes() + value_bytes + RECORD_OVERHEAD_MAX <= target_bytes {
        for byte in &mut value {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        builder.push(base_timestamp + builder.n_records() as i64, None, Some(&value), &[]);
    }
    builder.build(Compression::None)
}

// ---------------------------------------------------------------------------
// Appends

/// What one append run does.
struct AppendSpec<'a> {
    label: String,
    policy: FlushPolicy,
    writers: usize,
    window: usize,
    batch: &'a Bytes,
    total_bytes: u64,
    /// The logs' `direct_io` (the server's default is on; `log` measures
    /// through the page cache, as it always has).
    direct_io: bool,
}

/// One run: `writers` threads, each with its own log in its own directory
/// under `dir`, all sharing one flusher; each appends the batch over and over
/// and asks for durability after every append, with at most `window` appends
/// not yet reported durable. Returns the durable bytes per second (for an
/// interval policy, "durable" is what the policy reports: at once).
fn append_once(dir: &Path, spec: &AppendSpec<'_>) -> Result<f64> {
    let batch_len = spec.batch.len() as u64;
    let per_writer = (spec.total_bytes / spec.writers as u64).div_ceil(batch_len);
    let config = LogConfig { flush_policy: spec.policy, direct_io: spec.direct_io, ..LogConfig::default() };
    let flusher = Flusher::spawn("bench").context("spawn flusher")?;
    let logs = (0..spec.writers)
        .map(|i| open_log(&dir.join(format!("p{i}")), config.clone(), Some(&flusher)))
        .collect::<Result<Vec<Log>>>()?;
    // Each writer notes when it starts (after the barrier) and ends; the run
    // lasts from the first start to the last end. (Timing from the main
    // thread would miss the work done before it is scheduled again after the
    // barrier, with more threads than CPUs.)
    let barrier = Barrier::new(spec.writers);
    let spans = std::thread::scope(|scope| -> Result<Vec<(Instant, Instant)>> {
        let handles: Vec<_> = logs
            .iter()
            .map(|log| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<(Instant, Instant)> {
                    barrier.wait();
                    let start = Instant::now();
                    append_durably(log, spec.batch, per_writer, spec.window)?;
                    Ok((start, Instant::now()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("a writer thread panicked"))?).collect()
    })?;
    let start = spans.iter().map(|s| s.0).min().context("no writers")?;
    let end = spans.iter().map(|s| s.1).max().context("no writers")?;
    let elapsed = end - start;
    // The logs hold senders to the flusher thread; they go first, so that
    // dropping the flusher (which joins its thread) returns.
    drop(logs);
    drop(flusher);
    let bytes = per_writer * spec.writers as u64 * batch_len;
    Ok(bytes as f64 / elapsed.as_secs_f64())
}

/// Appends `batch` `n` times to `log`, each followed by a flush request, with
/// at most `window` requests outstanding; returns once all are acknowledged.
fn append_durably(log: &Log, batch: &Bytes, n: u64, window: usize) -> Result<()> {
    let (tx, rx) = mpsc::channel::<strata_log::Result<()>>();
    let wait_one = || -> Result<()> {
        let result = rx.recv().context("the flusher dropped a callback")?;
        result.context("flush failed")
    };
    let mut in_flight = 0usize;
    for _ in 0..n {
        while in_flight >= window {
            wait_one()?;
            in_flight -= 1;
        }
        log.append(batch, Term(1)).context("append")?;
        let tx = tx.clone();
        log.flush(Box::new(move |result| {
            // The receiver only goes away when the writer failed already.
            let _ = tx.send(result);
        }));
        in_flight += 1;
    }
    while in_flight > 0 {
        wait_one()?;
        in_flight -= 1;
    }
    Ok(())
}

/// Flushes the whole page cache to disk (`sync`), so that one run's
/// writeback does not slow the next run down.
fn settle() {
    match Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("strata-bench: sync exited with {status}"),
        Err(err) => eprintln!("strata-bench: could not run sync: {err}"),
    }
}

fn append_figures(work: &Path, opts: &LogOpts, sizes: &Sizes, report: &mut Report) -> Result<()> {
    let batches = [
        ("100b", build_batch(100, BATCH_TARGET_BYTES, 0x5eed_0001)),
        ("1k", build_batch(1000, BATCH_TARGET_BYTES, 0x5eed_0002)),
    ];
    for (name, batch) in &batches {
        report.params.insert(format!("batch_bytes_{name}"), batch.len() as f64);
        let header = strata_batch::validate(batch).context("a built batch does not validate")?;
        report.params.insert(format!("records_per_batch_{name}"), f64::from(header.record_count));
    }
    let mut specs = Vec::new();
    for (policy_name, policy, total_bytes) in [
        ("always", FlushPolicy::Always, sizes.always_bytes),
        ("interval", FlushPolicy::Interval(opts.interval), sizes.interval_bytes),
    ] {
        let mut writer_counts = vec![opts.writers];
        if opts.writers != 1 {
            writer_counts.push(1);
        }
        for &writers in &writer_counts {
            for (record_name, batch) in &batches {
                specs.push(AppendSpec {
                    label: format!("append_{policy_name}_w{writers}_{record_name}_mbps"),
                    policy,
                    writers,
                    window: opts.window,
                    batch,
                    total_bytes,
                    direct_io: false,
                });
            }
        }
    }
    if let Some(only) = &opts.only {
        specs.retain(|spec| spec.label.contains(only.as_str()));
    }
    // Runs are interleaved (every figure once, then again) so that a slow
    // phase of the disk spreads over all figures rather than skewing one.
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    for run in 0..opts.runs {
        for (spec, values) in specs.iter().zip(&mut values) {
            let dir = work.join(format!("append-{run}"));
            let bytes_per_sec = append_once(&dir, spec).with_context(|| format!("{} run {run}", spec.label))?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            settle();
            eprintln!("  {:<34} run {}/{}: {:8.1} MB/s", spec.label, run + 1, opts.runs, bytes_per_sec / 1e6);
            values.push(bytes_per_sec / 1e6);
        }
    }
    for (spec, values) in specs.iter().zip(values) {
        let m = report.add_runs(&spec.label, values);
        eprintln!("{:<36} median {m:8.1} MB/s", spec.label);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reads, reopen, memory

/// Appends `batch` to the log in `dir` until it has `sealed` sealed segments
/// and a first batch in the next one, then syncs. Returns the log size.
fn grow_log(dir: &Path, config: &LogConfig, batch: &Bytes, sealed: usize) -> Result<u64> {
    let log = open_log(dir, config.clone(), None)?;
    while log.state().n_segments <= sealed || log.segment_infos().last().is_some_and(|s| s.size_bytes == 0) {
        log.append(batch, Term(1)).context("append")?;
    }
    log.sync().context("sync")?;
    Ok(log.state().size_bytes)
}

/// Opens the log in `dir` `n` times (each log dropped before the next open);
/// returns each open's time in milliseconds.
fn time_opens(dir: &Path, config: &LogConfig, n: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let log = open_log(dir, config.clone(), None)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        drop(log);
    }
    Ok(times)
}

/// Reads the whole log by offset, `READ_BUDGET_BYTES` per call, and touches
/// every byte; returns (bytes read, checksum).
fn read_all(log: &Log) -> Result<(u64, u64)> {
    let state = log.state();
    let end = state.next_offset;
    let mut from = state.log_start_offset;
    let (mut bytes, mut sum) = (0u64, 0u64);
    while from < end {
        let read = log.read_offsets(from, READ_BUDGET_BYTES, end).with_context(|| format!("read at offset {from}"))?;
        ensure!(read.next_offset > from, "read at offset {from} made no progress");
        for chunk in &read.chunks {
            sum = sum.wrapping_add(checksum(chunk));
            bytes += chunk.len() as u64;
        }
        from = read.next_offset;
    }
    Ok((bytes, std::hint::black_box(sum)))
}

/// A cheap checksum that reads every byte: the wrapping sum of the 8-byte
/// words, then of the tail bytes.
fn checksum(bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let mut sum = words
        .fold(0u64, |acc, w| acc.wrapping_add(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])));
    for &b in tail {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

/// Process memory from /proc/self/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    /// Peak resident set (VmHWM).
    hwm_kib: u64,
    /// Resident anonymous memory (heap, stacks).
    anon_kib: u64,
    /// Resident file-backed memory (mapped files: code, segment maps).
    file_kib: u64,
}

fn memory() -> Result<Memory> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in status"))?;
        let kib = line[name.len()..].trim().trim_end_matches("kB").trim();
        kib.parse().with_context(|| format!("bad {name} line {line:?}"))
    };
    Ok(Memory { hwm_kib: field("VmHWM:")?, anon_kib: field("RssAnon:")?, file_kib: field("RssFile:")? })
}

/// `probe-open DIR SEGMENT_BYTES [--read]`: opens the log in DIR (and reads
/// it all, with `--read`) in this fresh process and prints one line of
/// `key=value` figures about time and memory.
fn probe_open(mut args: impl Iterator<Item = String>) -> Result<()> {
    let dir = PathBuf::from(args.next().context("probe-open needs a directory")?);
    let segment_bytes: u64 = args.next().context("probe-open needs a segment size")?.parse()?;
    let read = args.next().as_deref() == Some("--read");
    let config = LogConfig { segment_bytes, ..LogConfig::default() };
    let before = memory()?;
    let start = Instant::now();
    let log = open_log(&dir, config, None)?;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let opened = memory()?;
    let mut line = format!(
        "open_ms={open_ms:.3} base_hwm_kib={} base_anon_kib={} open_hwm_kib={} open_anon_kib={} open_file_kib={}",
        before.hwm_kib, before.anon_kib, opened.hwm_kib, opened.anon_kib, opened.file_kib
    );
    if read {
        let (bytes, _) = read_all(&log)?;
        let after = memory()?;
        line += &format!(
            " read_bytes={bytes} read_hwm_kib={} read_anon_kib={} read_file_kib={}",
            after.hwm_kib, after.anon_kib, after.file_kib
        );
    }
    println!("{line}");
    Ok(())
}

/// Runs `probe-open` in a child process and parses its figures.
fn run_probe(dir: &Path, segment_bytes: u64, read: bool) -> Result<BTreeMap<String, f64>> {
    let exe = std::env::current_exe().context("find this executable")?;
    let mut command = Command::new(exe);
    command.arg("probe-open").arg(dir).arg(segment_bytes.to_string());
    if read {
        command.arg("--read");
    }
    let output = command.output().context("run probe-open")?;
    ensure!(
        output.status.success(),
        "probe-open failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).context("probe-open output is not UTF-8")?;
    let mut out = BTreeMap::new();
    for pair in text.split_whitespace() {
        let (k, v) = pair.split_once('=').with_context(|| format!("bad probe-open output {text:?}"))?;
        out.insert(k.to_string(), v.parse::<f64>().with_context(|| format!("bad probe-open value {pair:?}"))?);
    }
    Ok(out)
}

fn probe_field(probe: &BTreeMap<String, f64>, name: &str) -> Result<f64> {
    probe.get(name).copied().with_context(|| format!("probe-open gave no {name}"))
}

fn read_and_reopen_figures(work: &Path, opts: &LogOpts, sizes: &Sizes, report: &mut Report) -> Result<()> {
    const MIB: f64 = 1024.0 * 1024.0;
    let dir = work.join("read-log");
    let config = LogConfig { segment_bytes: sizes.segment_bytes, ..LogConfig::default() };
    let batch = build_batch(1000, BATCH_TARGET_BYTES, 0x5eed_0003);
    report.params.insert("read_log_segment_bytes".into(), sizes.segment_bytes as f64);
    report.params.insert("read_budget_bytes".into(), READ_BUDGET_BYTES as f64);
    report.params.insert("opens_per_figure".into(), OPENS as f64);

    // A smaller log first, to compare the memory of opening it with the
    // memory of opening the full one.
    let small_bytes = grow_log(&dir, &config, &batch, sizes.small_sealed_segments)?;
    let small = run_probe(&dir, sizes.segment_bytes, false)?;
    report.params.insert("small_log_bytes".into(), small_bytes as f64);
    eprintln!("small log: {:.0} MiB, opened in {:.1} ms", small_bytes as f64 / MIB, probe_field(&small, "open_ms")?);

    let log_bytes = grow_log(&dir, &config, &batch, sizes.sealed_segments)?;
    report.params.insert("read_log_bytes".into(), log_bytes as f64);
    eprintln!("read log: {:.0} MiB in {} sealed segments", log_bytes as f64 / MIB, sizes.sealed_segments);

    // d. Reopen with intact indexes.
    let opens = time_opens(&dir, &config, OPENS)?;
    let m = report.add_runs("open_ms", opens);
    eprintln!("open_ms (intact indexes, small active segment)  median {m:8.1} ms");

    // e. Memory of a process that only opens the log, small and full, and of
    // one that opens it and reads it all through the maps.
    let full = run_probe(&dir, sizes.segment_bytes, false)?;
    let full_read = run_probe(&dir, sizes.segment_bytes, true)?;
    for (prefix, probe) in [("small_log", &small), ("log", &full)] {
        report.add(&format!("{prefix}_open_peak_rss_mib"), probe_field(probe, "open_hwm_kib")? / 1024.0);
        report.add(&format!("{prefix}_open_rss_anon_mib"), probe_field(probe, "open_anon_kib")? / 1024.0);
        report.add(
            &format!("{prefix}_open_anon_growth_mib"),
            (probe_field(probe, "open_anon_kib")? - probe_field(probe, "base_anon_kib")?) / 1024.0,
        );
    }
    report.add("probe_base_rss_mib", probe_field(&full, "base_hwm_kib")? / 1024.0);
    report.add("log_read_peak_rss_mib", probe_field(&full_read, "read_hwm_kib")? / 1024.0);
    report.add("log_read_rss_anon_mib", probe_field(&full_read, "read_anon_kib")? / 1024.0);
    report.add("log_read_rss_file_mib", probe_field(&full_read, "read_file_kib")? / 1024.0);
    eprintln!(
        "memory: open small log peak {:.1} MiB, open full log peak {:.1} MiB, open+read full log peak {:.1} MiB \
         (anon {:.1} MiB, file {:.1} MiB)",
        report.results["small_log_open_peak_rss_mib"],
        report.results["log_open_peak_rss_mib"],
        report.results["log_read_peak_rss_mib"],
        report.results["log_read_rss_anon_mib"],
        report.results["log_read_rss_file_mib"],
    );

    // c. Sequential reads through the maps, from the page cache. The first
    // pass maps the segments, faults the pages in and checks each batch's CRC
    // once; the passes after it are the figure.
    let log = open_log(&dir, config.clone(), None)?;
    let mut first_pass = None;
    let mut passes = Vec::new();
    let mut reference = None;
    for pass in 0..=opts.runs {
        let start = Instant::now();
        let (bytes, sum) = read_all(&log)?;
        let gbps = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
        ensure!(bytes >= log_bytes - log_bytes / 100, "read {bytes} bytes of a {log_bytes}-byte log");
        if *reference.get_or_insert(sum) != sum {
            bail!("pass {pass} read different bytes than the first");
        }
        eprintln!("  read pass {}: {bytes} bytes, {gbps:6.2} GB/s", pass + 1);
        if pass == 0 { first_pass = Some(gbps) } else { passes.push(gbps) }
    }
    report.add("read_mmap_first_pass_gbps", first_pass.unwrap_or(f64::NAN));
    let m = report.add_runs("read_mmap_gbps", passes);
    eprintln!("read_mmap_gbps (page cache, after the first pass)  median {m:6.2} GB/s");
    drop(log);

    // Reopen again with the active segment nearly full: the active segment
    // is always scanned (and CRC-checked) on open, so this is the slow case.
    {
        let log = open_log(&dir, config.clone(), None)?;
        let full_at = sizes.segment_bytes - 2 * batch.len() as u64;
        while log.segment_infos().last().is_some_and(|s| s.size_bytes < full_at) {
            log.append(&batch, Term(1)).context("append")?;
        }
        log.sync().context("sync")?;
        report.params.insert("full_active_log_bytes".into(), log.state().size_bytes as f64);
    }
    let opens = time_opens(&dir, &config, OPENS)?;
    let m = report.add_runs("open_full_active_ms", opens);
    eprintln!("open_full_active_ms (intact indexes, active segment nearly full)  median {m:8.1} ms");

    // Reopen after losing every index file: all segments are scanned and the
    // indexes rebuilt (and synced).
    let mut rebuilds = Vec::new();
    for _ in 0..opts.runs {
        for entry in std::fs::read_dir(&dir).context("list the log directory")? {
            let path = entry.context("list the log directory")?.path();
            if path.extension().is_some_and(|e| e == "index") {
                std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            }
        }
        rebuilds.extend(time_opens(&dir, &config, 1)?);
    }
    let m = report.add_runs("open_rebuild_indexes_ms", rebuilds);
    eprintln!("open_rebuild_indexes_ms (no index files)  median {m:8.1} ms");
    Ok(())
}

/// The one thing a log keeps in anonymous memory in proportion to its data:
/// the index of the active segment (32 bytes per entry, until it is sealed).
/// Fills an active segment with one-record batches, the worst case, and
/// measures a process opening it.
fn tiny_batches_memory(work: &Path, sizes: &Sizes, report: &mut Report) -> Result<()> {
    const GROUP: usize = 1024;
    let dir = work.join("tiny-batches");
    let config = LogConfig { segment_bytes: sizes.segment_bytes, ..LogConfig::default() };
    let batch = build_batch(100, 1, 0x5eed_0004);
    let group: Vec<(&[u8], Term)> = vec![(&batch[..], Term(1)); GROUP];
    let full_at = sizes.segment_bytes - 2 * (GROUP * batch.len()) as u64;
    let entries = {
        let log = open_log(&dir, config, None)?;
        while log.state().size_bytes < full_at {
            log.append_many(&group).context("append")?;
        }
        log.sync().context("sync")?;
        let state = log.state();
        ensure!(state.n_segments == 1, "the tiny-batch log rolled a segment");
        state.last_log_id.map_or(0, |id| id.index.0 + 1)
    };
    let probe = run_probe(&dir, sizes.segment_bytes, false)?;
    report.params.insert("tiny_batch_bytes".into(), batch.len() as f64);
    report.add("tiny_active_entries", entries as f64);
    report.add("tiny_active_open_ms", probe_field(&probe, "open_ms")?);
    report.add("tiny_active_open_peak_rss_mib", probe_field(&probe, "open_hwm_kib")? / 1024.0);
    report.add(
        "tiny_active_open_anon_growth_mib",
        (probe_field(&probe, "open_anon_kib")? - probe_field(&probe, "base_anon_kib")?) / 1024.0,
    );
    eprintln!(
        "tiny batches: an active segment of {entries} one-record batches opens in {:.1} ms, \
         peak RSS {:.1} MiB, anonymous memory +{:.1} MiB",
        report.results["tiny_active_open_ms"],
        report.results["tiny_active_open_peak_rss_mib"],
        report.results["tiny_active_open_anon_growth_mib"],
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The `log` scenario

fn log_scenario(opts: &LogOpts) -> Result<Report> {
    let sizes = Sizes::new(opts.quick);
    let work = WorkDir::create(opts.dir.as_deref())?;
    eprintln!("strata-bench log: working in {}", work.path.display());
    let mut report = Report { scenario: "log", ..Report::default() };
    report.params.insert("runs".into(), opts.runs as f64);
    report.params.insert("writers".into(), opts.writers as f64);
    report.params.insert("window".into(), opts.window as f64);
    report.params.insert("interval_ms".into(), opts.interval.as_millis() as f64);
    report.params.insert("always_bytes_per_run".into(), sizes.always_bytes as f64);
    report.params.insert("interval_bytes_per_run".into(), sizes.interval_bytes as f64);
    report.params.insert("quick".into(), if opts.quick { 1.0 } else { 0.0 });
    report.params.insert("append_segment_bytes".into(), LogConfig::default().segment_bytes as f64);
    let start = Instant::now();
    if !opts.no_append {
        append_figures(&work.path, opts, &sizes, &mut report)?;
    }
    if opts.only.is_none() {
        read_and_reopen_figures(&work.path, opts, &sizes, &mut report)?;
        tiny_batches_memory(&work.path, &sizes, &mut report)?;
    }
    let mem = memory()?;
    report.add("bench_peak_rss_mib", mem.hwm_kib as f64 / 1024.0);
    report.add("bench_seconds", start.elapsed().as_secs_f64());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn batches_are_valid_and_near_the_target_size() {
        for value_bytes in [100, 1000] {
            let batch = build_batch(value_bytes, BATCH_TARGET_BYTES, 7);
            assert!(strata_batch::validate(&batch).is_ok());
            assert!(batch.len() <= BATCH_TARGET_BYTES);
            assert!(batch.len() + 2 * (value_bytes + 24) > BATCH_TARGET_BYTES, "{} bytes", batch.len());
        }
    }

    #[test]
    fn a_tiny_batch_holds_one_record() {
        let batch = build_batch(100, 1, 7);
        assert_eq!(strata_batch::validate(&batch).map(|h| h.record_count).ok(), Some(1));
    }

    #[test]
    fn checksum_reads_tail_bytes() {
        assert_eq!(checksum(&[1, 0, 0, 0, 0, 0, 0, 0, 5]), 6);
    }

    #[test]
    fn json_numbers() {
        assert_eq!(json_number(3.0), "3");
        assert_eq!(json_number(0.5), "0.5000");
        assert_eq!(json_number(f64::NAN), "null");
    }

    #[test]
    fn report_is_one_json_object() {
        let mut report = Report { scenario: "log", ..Report::default() };
        report.add_runs("a", vec![1.0, 2.0, 3.0]);
        report.params.insert("p".into(), 1.0);
        assert_eq!(report.to_json(), r#"{"scenario":"log","results":{"a":2},"runs":{"a":[1,2,3]},"params":{"p":1}}"#);
    }
}
