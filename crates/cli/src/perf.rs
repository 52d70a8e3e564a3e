//! `strata perf produce|consume`: Kafka's perf tools, with the same
//! options and output shape, so numbers can be set side by side.

use std::io::IsTerminal;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use strata_client::{
    Acks, Compression, Consumer, ConsumerConfig, DeliveredBatch, OffsetReset, Producer, ProducerConfig, Record, Seek,
};
use tokio::time::Instant;

use crate::Connection;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Sends records as fast as allowed and reports throughput and latency.
    Produce(ProduceArgs),
    /// Reads records and reports throughput.
    Consume(ConsumeArgs),
    /// End-to-end latency: from a record's send to a consumer seeing it.
    E2e(E2eArgs),
}

#[derive(Args)]
pub struct E2eArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to use (must exist; new records only are read).
    #[arg(long)]
    topic: String,
    /// Records to send.
    #[arg(long)]
    num_records: u64,
    /// Bytes of each record's value (at least 8: it carries the send time).
    #[arg(long)]
    record_size: usize,
    /// Records per second (a fixed rate is needed for latency to mean much).
    #[arg(long)]
    throughput: u64,
    /// Producer settings, as for `perf produce`.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    producer_props: Vec<String>,
    /// Also print the summary as one JSON object, last.
    #[arg(long)]
    json: bool,
}

fn micros_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

async fn e2e(args: E2eArgs) -> Result<()> {
    if args.record_size < 8 || args.throughput == 0 {
        bail!("--record-size must be at least 8 and --throughput above 0");
    }
    let client = args.connection.client()?;
    let mut consumer = Consumer::new(&client);
    let partitions = consumer.partitions_of(&args.topic).await?;
    consumer.assign(partitions.clone());
    for tp in &partitions {
        consumer.seek(tp, Seek::End).await?;
    }
    let n = args.num_records;
    let seen = Arc::new(AtomicU64::new(0));
    let live = {
        let seen = seen.clone();
        LiveLine::start(move |elapsed| {
            progress_text(seen.load(Ordering::Relaxed), n, "records seen by the consumer", elapsed)
        })
    };
    let reader = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while histogram.len() < n {
            if Instant::now() > deadline {
                bail!("only {} of {n} records seen", histogram.len());
            }
            for record in consumer.poll().await? {
                let Some(value) = record.value.as_ref().filter(|v| v.len() >= 8) else { continue };
                let sent = u64::from_be_bytes(value[..8].try_into().unwrap_or_default());
                let _ = histogram.record(micros_now().saturating_sub(sent).max(1));
            }
            seen.store(histogram.len(), Ordering::Relaxed);
        }
        anyhow::Ok(histogram)
    });
    // Outcomes come per batch, through a delivery handler: no future held
    // per record until the end. The end-to-end latency is the consumer's to
    // measure; the producer reports what failed and, for the same records,
    // the latency of their acknowledgement (each record is tagged with the
    // microseconds it carries), so the two can be compared within one run.
    let failed: &'static AtomicU64 = Box::leak(Box::default());
    let first_error: &'static Mutex<Option<String>> = Box::leak(Box::default());
    let acks: &'static Mutex<Histogram<u64>> =
        Box::leak(Box::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?)));
    let (base, base_us) = (std::time::Instant::now(), micros_now());
    let handler = move |batch: &DeliveredBatch<'_>| match batch.outcome {
        Ok(_) => {
            let acknowledged = base_us + batch.acknowledged_at.saturating_duration_since(base).as_micros() as u64;
            let mut h = acks.lock().unwrap_or_else(|p| p.into_inner());
            for record in batch.records() {
                let _ = h.record(acknowledged.saturating_sub(record.tag).max(1));
            }
        }
        Err(e) => {
            failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
        }
    };
    let producer = Producer::with_delivery_handler(&client, producer_config(&args.producer_props)?, handler);
    {
        let (producer, size) = (producer.clone(), args.record_size);
        let topic: Arc<str> = args.topic.as_str().into();
        paced(n, args.throughput, move |_due| {
            let mut value = vec![b'x'; size];
            let sent = micros_now();
            value[..8].copy_from_slice(&sent.to_be_bytes());
            producer.send_tagged(Record::new(topic.clone(), value), sent)
        })
        .await?;
    }
    producer.close().await;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        let error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        bail!("{failed} records were not written (first error: {error})");
    }
    let h = reader.await.context("reader")??;
    drop(live);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    outln!(
        "{} records, end-to-end latency: {:.2} ms avg, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th, {:.2} ms max.",
        h.len(),
        h.mean() / 1000.0,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    let a = acks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ack_ms = |q: f64| a.value_at_quantile(q) as f64 / 1000.0;
    outln!(
        "The same records' produce-ack latency (from their send, not a due time): {:.2} ms avg, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th, {:.2} ms max.",
        a.mean() / 1000.0,
        ack_ms(0.5),
        ack_ms(0.99),
        ack_ms(0.999),
        a.max() as f64 / 1000.0
    );
    if args.json {
        let summary = serde_json::json!({
            "records": h.len(),
            "acked": a.len(),
            "e2e_latency_ms": {"avg": h.mean() / 1000.0, "p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0},
            "ack_latency_ms": {"avg": a.mean() / 1000.0, "p50": ack_ms(0.5), "p99": ack_ms(0.99), "p999": ack_ms(0.999), "max": a.max() as f64 / 1000.0},
            "percentiles_ms": spectrum(&h),
        });
        outln!("{summary}");
    }
    Ok(())
}

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to write to (must exist).
    #[arg(long)]
    topic: String,
    /// Records to send.
    #[arg(long)]
    num_records: u64,
    /// Bytes of each record's value.
    #[arg(long)]
    record_size: usize,
    /// Records per second to aim at; -1 for as fast as possible.
    #[arg(long, allow_hyphen_values = true)]
    throughput: i64,
    /// Producer settings, Kafka's names: acks=all|1|0, linger.ms=5,
    /// batch.size=16384, compression.type=none|lz4, enable.idempotence=true,
    /// max.in.flight.requests.per.connection=5, buffer.memory=33554432,
    /// max.block.ms=60000, delivery.timeout.ms=120000,
    /// request.timeout.ms=30000.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    producer_props: Vec<String>,
    /// Also print the summary as one JSON object, last.
    #[arg(long)]
    json: bool,
}

/// The shortest sleep of the pacing thread: at most 5,000 wake-ups a
/// second. Each wake-up costs the machine a context switch or two (some
/// 20 µs of CPU on a 2-vCPU virtual machine); waking for every record took
/// a fifth of a CPU at 50k records/s, CPU the brokers sharing the machine
/// then lacked (docs/benchmarks.md, session 17). A record waits for the
/// thread's next wake-up, half a quantum on average, and that wait counts
/// in its latency: 500 µs here until session 30, when 200 µs took
/// 0.15-0.25 ms off the p50 at 50k records/s and did not raise the p99.
const PACE_QUANTUM: Duration = Duration::from_micros(200);

/// Calls `send(due)` for `n` records at `rate` a second and collects what
/// each returns. A thread of its own keeps the pace: tokio's timers round
/// up to the next millisecond, which would add up to a millisecond to every
/// latency counted from a record's due time, where the thread's sleep is
/// the kernel's fine timer (tens of microseconds late). Each send runs on
/// the runtime; records already due go out without sleeping, and the
/// thread sleeps at least [`PACE_QUANTUM`], sending what fell due meanwhile
/// on waking. Never early: a record's latency still counts from its due
/// time, so the wait in this thread is part of the figures.
async fn paced<F, Fut, T, E>(n: u64, rate: u64, mut send: F) -> Result<Vec<T>>
where
    F: FnMut(Instant) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
    T: Send + 'static,
    anyhow::Error: From<E>,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        for i in 0..n {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep((due - now).max(PACE_QUANTUM));
            }
            out.push(runtime.block_on(send(Instant::from_std(due)))?);
        }
        Ok(out)
    })
    .await
    .context("the pacing thread")?
}

fn producer_config(props: &[String]) -> Result<ProducerConfig> {
    let mut config = ProducerConfig::default();
    for prop in props {
        let Some((key, value)) = prop.split_once('=') else { bail!("--producer-props {prop:?}: expected KEY=VALUE") };
        let bad = || anyhow::anyhow!("--producer-props {key}={value:?} is not a valid value");
        match key {
            "acks" => {
                config.acks = match value {
                    "all" | "-1" => Acks::All,
                    "1" | "leader" => Acks::Leader,
                    "0" | "none" => Acks::None,
                    _ => return Err(bad()),
                }
            }
            "linger.ms" => config.linger = Duration::from_millis(value.parse().map_err(|_| bad())?),
            "batch.size" => config.batch_size = value.parse().map_err(|_| bad())?,
            "buffer.memory" => config.buffer_memory = value.parse().map_err(|_| bad())?,
            "max.block.ms" => config.max_block = Duration::from_millis(value.parse().map_err(|_| bad())?),
            "delivery.timeout.ms" => config.delivery_timeout = Duration::from_millis(value.parse().map_err(|_| bad())?),
            "request.timeout.ms" => config.request_timeout = Duration::from_millis(value.parse().map_err(|_| bad())?),
            "compression.type" => {
                config.compression = match value {
                    "none" => Compression::None,
                    "lz4" => Compression::Lz4,
                    _ => bail!("compression.type={value}: Strata speaks none and lz4"),
                }
            }
            "enable.idempotence" => config.idempotence = value.parse().map_err(|_| bad())?,
            "max.in.flight.requests.per.connection" => config.max_in_flight = value.parse().map_err(|_| bad())?,
            "bootstrap.servers" => {}
            other => bail!("unknown producer property {other}"),
        }
    }
    Ok(config)
}

/// Shards of [`Stats`] a produce run keeps.
const STATS_SHARDS: usize = 16;

/// At an unlimited rate, how many records in a row that did not wait may
/// share one reading of the clock as their send time.
const SEND_CLOCK_REUSE: u64 = 16;

/// What a shard of `perf produce`'s statistics has seen since the last
/// progress line, and its failures. The closed windows are added up apart,
/// outside the shards' locks.
struct Stats {
    /// The progress window now open.
    window: Window,
    failed: u64,
}

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Carriage return and "erase the line": what a live line is redrawn after.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// How often a live line is redrawn.
const LIVE_LINE_EVERY: Duration = Duration::from_millis(250);

/// A status line redrawn in place on stderr a few times a second while a
/// perf command runs, when stderr is a terminal; nothing otherwise (a
/// pipe gets plain lines only). Dropping it erases it.
struct LiveLine {
    /// Set, under stderr's lock, when the line is taken down: the task
    /// then writes nothing more, even if it runs once after the abort.
    stopped: Arc<AtomicBool>,
    task: Option<AbortOnDrop>,
}

impl LiveLine {
    fn start(status: impl Fn(Duration) -> String + Send + 'static) -> LiveLine {
        let stopped = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return LiveLine { stopped, task: None };
        }
        let flag = stopped.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval_at(started + LIVE_LINE_EVERY, LIVE_LINE_EVERY);
            loop {
                tick.tick().await;
                let line = status(started.elapsed());
                let mut err = std::io::stderr().lock();
                if flag.load(Ordering::Acquire) {
                    return;
                }
                let _ = write!(err, "{CLEAR_LINE}{line}").and_then(|()| err.flush());
            }
        });
        LiveLine { stopped, task: Some(AbortOnDrop(task)) }
    }
}

impl Drop for LiveLine {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let mut err = std::io::stderr().lock();
            self.stopped.store(true, Ordering::Release);
            let _ = write!(err, "{CLEAR_LINE}").and_then(|()| err.flush());
            drop(task);
        }
    }
}

/// "`done` of `total` `what` (p%), r/s, s": a live line's text.
fn progress_text(done: u64, total: u64, what: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    // Rounded down: 100% only when all are done.
    let percent = (u128::from(done) * 100).checked_div(u128::from(total)).unwrap_or(100);
    format!("{done} of {total} {what} ({percent}%), {:.0} records/sec, {:.0} s", done as f64 / secs, secs)
}

/// Latencies in microseconds, and counts, over some window.
struct Window {
    histogram: Histogram<u64>,
    bytes: u64,
    started: Instant,
}

impl Window {
    fn new() -> Result<Window> {
        Ok(Window { histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)?, bytes: 0, started: Instant::now() })
    }

    fn record_micros(&mut self, micros: u64, bytes: u64) {
        let _ = self.histogram.record(micros.max(1));
        self.bytes += bytes;
    }

    /// Adds what `other` counted.
    fn add(&mut self, other: &Window) {
        let _ = self.histogram.add(&other.histogram);
        self.bytes += other.bytes;
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let n = self.histogram.len();
        format!(
            "{n} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency",
            n as f64 / secs,
            self.bytes as f64 / secs / (1024.0 * 1024.0),
            self.histogram.mean() / 1000.0,
            self.histogram.max() as f64 / 1000.0
        )
    }
}

pub async fn run(command: PerfCommand) -> Result<()> {
    match command {
        PerfCommand::Produce(args) => produce(args).await,
        PerfCommand::Consume(args) => consume(args).await,
        PerfCommand::E2e(args) => e2e(args).await,
    }
}

async fn produce(args: ProduceArgs) -> Result<()> {
    let client = args.connection.client()?;
    client.partitions(&args.topic).await.with_context(|| format!("topic {}", args.topic))?;
    // One value for every record, leaked once: a static `Bytes` is cloned
    // and dropped without touching a reference count, which the sending
    // thread and the partition tasks would otherwise pass back and forth.
    let value: &'static [u8] =
        Box::leak((0..args.record_size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into_boxed_slice());
    let value = Bytes::from_static(value);
    let size = args.record_size as u64;
    let terminal = std::io::stderr().is_terminal();
    // The statistics are sharded by partition, so the partition tasks on
    // different threads do not contend for one lock, and leaked, so no
    // reference count is passed between threads (the command ends with
    // them).
    let stats: &'static [Mutex<Stats>] = Box::leak(
        (0..STATS_SHARDS)
            .map(|_| Ok(Mutex::new(Stats { window: Window::new()?, failed: 0 })))
            .collect::<Result<Vec<_>>>()?
            .into_boxed_slice(),
    );
    // Each record is sent tagged with the nanoseconds from `base` to when
    // it was due, and the producer hands each answered batch, with its
    // records' tags, to this handler on the partition's task: one lock
    // and no allocation per batch, where a callback per record costs a
    // box and a call each. With a target rate, a record's latency counts
    // from when it was due, not when it was sent, so a stall is not hidden
    // by the sends it delayed (coordinated omission). It ends when the
    // producer learned of the acknowledgement (read once per batch).
    let base = std::time::Instant::now();
    let base_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let tag_of = move |due: Instant| due.into_std().saturating_duration_since(base).as_nanos() as u64;
    // What the live line shows (a terminal only): one add per batch.
    let acked: &'static AtomicU64 = Box::leak(Box::default());
    let first_error: &'static Mutex<Option<String>> = Box::leak(Box::default());
    let handler = move |batch: &DeliveredBatch<'_>| {
        let mut s = stats[batch.partition as usize % STATS_SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        match batch.outcome {
            Ok(_) => {
                acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let acknowledged = batch.acknowledged_at.saturating_duration_since(base).as_nanos() as u64;
                for record in batch.records() {
                    // Into the window only: the window is added to the
                    // total when it closes, one histogram per record.
                    s.window.record_micros(acknowledged.saturating_sub(record.tag) / 1000, size);
                }
            }
            Err(e) => {
                s.failed += batch.len() as u64;
                // A line for the first failed batch (of many records
                // each); the summary repeats its error.
                let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    eprintln!("error: {e}");
                    *first = Some(e.to_string());
                }
            }
        }
    };
    let producer = Producer::with_delivery_handler(&client, producer_config(&args.producer_props)?, handler);
    // The windows closed so far. A shard's lock is held only to swap its
    // window for a fresh one (made before): the handler waiting for it
    // runs on the producer's partition task.
    let closed: &'static Mutex<Window> = Box::leak(Box::new(Mutex::new(Window::new()?)));
    let num_records = args.num_records;
    let live = LiveLine::start(move |elapsed| {
        progress_text(acked.load(Ordering::Relaxed), num_records, "records acknowledged", elapsed)
    });
    let progress = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Ok(mut window) = Window::new() else { continue };
            for (i, shard) in stats.iter().enumerate() {
                let Ok(fresh) = Window::new() else { continue };
                let old = std::mem::replace(&mut shard.lock().unwrap_or_else(|p| p.into_inner()).window, fresh);
                closed.lock().unwrap_or_else(|p| p.into_inner()).add(&old);
                if i == 0 {
                    window.started = old.started;
                }
                window.add(&old);
            }
            let line = window.line();
            if terminal {
                // For good, in place of the live line (redrawn after it).
                let _ = writeln!(std::io::stderr().lock(), "{CLEAR_LINE}{line}.");
            } else {
                // The summary's write says whether the reader is gone.
                let _ = writeln!(std::io::stdout(), "{line}.");
            }
        }
    }));
    let started = Instant::now();
    // One name for every record: no copy of it per record. Each record's
    // timestamp is its send time (with a rate, its due time) from the
    // clock read here, in milliseconds, rather than a second clock read
    // per record in the producer.
    let topic: Arc<str> = args.topic.as_str().into();
    let record = move |now: Instant| Record {
        timestamp: Some(base_ms + now.into_std().saturating_duration_since(base).as_millis() as i64),
        ..Record::new(topic.clone(), value.clone())
    };
    if args.throughput > 0 {
        let producer = producer.clone();
        let send = move |due: Instant| producer.send_tagged(record(due), tag_of(due));
        paced(args.num_records, args.throughput as u64, send).await?;
    } else {
        // A send that did not wait took microseconds, so one clock read
        // serves as the send time of up to `SEND_CLOCK_REUSE` records in a
        // row; a send that waited for room reads it afresh for the next.
        let mut now = Instant::now();
        for i in 0..args.num_records {
            if i % SEND_CLOCK_REUSE == 0 {
                now = Instant::now();
            }
            let send = producer.send_tagged(record(now), tag_of(now));
            let mut send = std::pin::pin!(send);
            match futures::poll!(send.as_mut()) {
                std::task::Poll::Ready(sent) => sent?,
                std::task::Poll::Pending => {
                    send.await?;
                    now = Instant::now();
                }
            }
        }
    }
    // Every callback has run once the flush returns.
    producer.flush().await;
    drop(progress);
    drop(live);
    let (mut total, mut failed) = (Window::new()?, 0);
    total.add(&closed.lock().unwrap_or_else(|p| p.into_inner()));
    for shard in stats {
        let s = shard.lock().unwrap_or_else(|p| p.into_inner());
        total.add(&s.window);
        failed += s.failed;
    }
    producer.close().await;
    let elapsed = started.elapsed().as_secs_f64();
    let sent = producer.metrics();
    let h = &total.histogram;
    let n = h.len();
    let ms = |v: u64| v as f64 / 1000.0;
    // Printed before the failure is reported, and a reader gone (a closed
    // pipe) does not hide it.
    let printed = (|| -> Result<()> {
        outln!(
            "{n} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, \
             {:.0} ms 50th, {:.0} ms 95th, {:.0} ms 99th, {:.0} ms 99.9th.",
            n as f64 / elapsed,
            total.bytes as f64 / elapsed / (1024.0 * 1024.0),
            h.mean() / 1000.0,
            ms(h.max()),
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.95)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
        );
        if failed > 0 {
            eprintln!("{failed} records failed");
        }
        if args.json {
            let summary = serde_json::json!({
                "records": n,
                "failed": failed,
                "seconds": elapsed,
                "batches": sent.batches_sent,
                "requests": sent.produce_requests,
                "retries": sent.retries,
                "epoch_restarts": sent.epoch_restarts,
                "records_per_sec": n as f64 / elapsed,
                "mb_per_sec": total.bytes as f64 / elapsed / (1024.0 * 1024.0),
                "latency_ms": {
                    "avg": h.mean() / 1000.0,
                    "max": ms(h.max()),
                    "p50": ms(h.value_at_quantile(0.50)),
                    "p95": ms(h.value_at_quantile(0.95)),
                    "p99": ms(h.value_at_quantile(0.99)),
                    "p999": ms(h.value_at_quantile(0.999)),
                },
                "percentiles_ms": spectrum(h),
            });
            outln!("{summary}");
        }
        Ok(())
    })();
    if failed > 0 {
        let error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        bail!("{failed} records failed (first error: {error})");
    }
    printed
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connection: Connection,
    /// Topic to read (from the beginning).
    #[arg(long)]
    topic: String,
    /// Records to read.
    #[arg(long)]
    messages: u64,
    /// Read as a member of this group (otherwise every partition, assigned).
    #[arg(long)]
    group: Option<String>,
    /// Also print the summary as one JSON object, last.
    #[arg(long)]
    json: bool,
}

async fn consume(args: ConsumeArgs) -> Result<()> {
    let client = args.connection.client()?;
    let config = ConsumerConfig {
        group_id: args.group.clone(),
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: args.group.is_some(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::with_config(&client, config);
    let started = Instant::now();
    if args.group.is_some() {
        consumer.subscribe(vec![args.topic.clone()])?;
    } else {
        let partitions = consumer.partitions_of(&args.topic).await?;
        consumer.assign(partitions.clone());
        for tp in &partitions {
            consumer.seek(tp, Seek::Beginning).await?;
        }
    }
    let (mut n, mut bytes) = (0u64, 0u64);
    let read = Arc::new(AtomicU64::new(0));
    let live = {
        let (read, total) = (read.clone(), args.messages);
        LiveLine::start(move |elapsed| progress_text(read.load(Ordering::Relaxed), total, "records read", elapsed))
    };
    let mut first_record: Option<Instant> = None;
    while n < args.messages {
        let records = consumer.poll().await?;
        if !records.is_empty() && first_record.is_none() {
            first_record = Some(Instant::now());
        }
        for r in &records {
            bytes += r.value.as_ref().map_or(0, Bytes::len) as u64 + r.key.as_ref().map_or(0, Bytes::len) as u64;
        }
        n += records.len() as u64;
        read.store(n, Ordering::Relaxed);
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {n} of {} records arrived in 10 minutes", args.messages);
        }
    }
    drop(live);
    let total = started.elapsed().as_secs_f64();
    let rebalance = first_record.map_or(0.0, |t| (t - started).as_secs_f64());
    let fetch = (total - rebalance).max(1e-9);
    let mb = bytes as f64 / (1024.0 * 1024.0);
    outln!(
        "data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
    );
    outln!(
        "{mb:.4}, {:.4}, {n}, {:.4}, {:.0}, {:.0}, {:.4}, {:.4}",
        mb / total,
        n as f64 / total,
        rebalance * 1000.0,
        fetch * 1000.0,
        mb / fetch,
        n as f64 / fetch
    );
    if args.json {
        let summary = serde_json::json!({
            "records": n, "mb": mb, "seconds": total, "mb_per_sec": mb / total, "records_per_sec": n as f64 / total,
            "rebalance_ms": rebalance * 1000.0, "fetch_ms": fetch * 1000.0,
        });
        outln!("{summary}");
    }
    if args.group.is_some() {
        consumer.close().await?;
    }
    Ok(())
}

/// Quantiles of the latency spectrum in `--json` output (`percentiles_ms`:
/// [quantile, ms] pairs), the points `bench/run` plots.
const SPECTRUM_QUANTILES: [f64; 11] = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];

fn spectrum(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    SPECTRUM_QUANTILES.iter().map(|&q| serde_json::json!([q, h.value_at_quantile(q) as f64 / 1000.0])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_line_says_100_percent_only_when_every_record_is_done() {
        let second = Duration::from_secs(2);
        assert_eq!(
            progress_text(19_950, 20_000, "records read", second),
            "19950 of 20000 records read (99%), 9975 records/sec, 2 s"
        );
        assert!(progress_text(20_000, 20_000, "records read", second).contains("(100%)"));
        assert!(progress_text(0, 0, "records read", second).contains("(100%)"));
        assert!(progress_text(u64::MAX, u64::MAX, "records read", second).contains("(100%)"), "no overflow");
    }
}
