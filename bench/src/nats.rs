//! `strata-bench nats-publish`: the NATS JetStream peer's load generator for
//! the `produce-*` scenarios. It speaks NATS's text protocol directly over one
//! TCP connection (CONNECT, SUB, PUB with a reply inbox, MSG), so that no
//! client library with its own runtime and TLS stack enters the build for
//! one benchmark. It creates the stream (file storage, R replicas) through
//! the JetStream API and publishes N messages with asynchronous publish
//! acknowledgements, at most `window` in flight, as `strata perf produce`
//! keeps batches in flight. A message counts when its JetStream ack (stream
//! and sequence) arrives. Latency is send to ack.
//!
//! Server PINGs are not answered: a run lasts well under the server's
//! ping interval (2 minutes) times its allowed misses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

pub(crate) const USAGE: &str = "\
usage: strata-bench nats-publish --addr HOST:PORT --stream NAME --replicas R
                                 --records N --record-size B [--window W]
";

/// The longest wait for the next ack before a run is given up.
const ACK_STALL_MAX: Duration = Duration::from_secs(20);

struct Opts {
    addr: String,
    stream: String,
    replicas: u32,
    records: usize,
    record_size: usize,
    window: usize,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Opts>> {
    let mut opts =
        Opts { addr: String::new(), stream: String::new(), replicas: 1, records: 0, record_size: 100, window: 1024 };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => opts.addr = value()?,
            "--stream" => opts.stream = value()?,
            "--replicas" => opts.replicas = value()?.parse().context("--replicas")?,
            "--records" => opts.records = value()?.parse().context("--records")?,
            "--record-size" => opts.record_size = value()?.parse().context("--record-size")?,
            "--window" => opts.window = value()?.parse().context("--window")?,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown option {other}"),
        }
    }
    ensure!(!opts.addr.is_empty() && !opts.stream.is_empty(), "--addr and --stream are required");
    ensure!(opts.records > 0 && opts.window > 0, "--records and --window must be positive");
    Ok(Some(opts))
}

/// Runs the command; prints one JSON object.
pub(crate) fn nats_publish(args: impl Iterator<Item = String>) -> Result<()> {
    let Some(opts) = parse(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(publish(opts))
}

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = BufWriter<tokio::net::tcp::OwnedWriteHalf>;

/// One line of the server's protocol, without its CRLF.
async fn read_line(reader: &mut Reader, line: &mut String) -> Result<()> {
    line.clear();
    let n = reader.read_line(line).await.context("read from nats-server")?;
    ensure!(n > 0, "nats-server closed the connection");
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(())
}

/// Reads the payload of a `MSG subject sid [reply] len` line.
async fn read_payload(reader: &mut Reader, header: &str) -> Result<Vec<u8>> {
    let len: usize = header.rsplit(' ').next().and_then(|n| n.parse().ok()).context("MSG without a length")?;
    let mut payload = vec![0u8; len + 2];
    reader.read_exact(&mut payload).await.context("read a MSG payload")?;
    payload.truncate(len);
    Ok(payload)
}

/// Sends a JetStream API request (`$JS.API.<api>`) and returns its answer,
/// which arrives on `_INBOX.bench.<tag>`.
async fn js_api(reader: &mut Reader, writer: &mut Writer, api: &str, body: &str, tag: &str) -> Result<String> {
    let request = format!("PUB $JS.API.{api} _INBOX.bench.{tag} {}\r\n{body}\r\n", body.len());
    writer.write_all(request.as_bytes()).await?;
    writer.flush().await?;
    let mut line = String::new();
    let answer_prefix = format!("MSG _INBOX.bench.{tag} ");
    loop {
        read_line(reader, &mut line).await?;
        if line.starts_with(&answer_prefix) {
            let payload = read_payload(reader, &line).await?;
            return Ok(String::from_utf8_lossy(&payload).into_owned());
        }
        ensure!(!line.starts_with("-ERR"), "nats-server: {line}");
    }
}

async fn publish(opts: Opts) -> Result<()> {
    let stream = TcpStream::connect(&opts.addr).await.with_context(|| format!("connect to {}", opts.addr))?;
    stream.set_nodelay(true)?;
    let (read_half, write_half) = stream.into_split();
    let mut reader = BufReader::with_capacity(1 << 16, read_half);
    let mut writer = BufWriter::with_capacity(1 << 16, write_half);
    let mut line = String::new();
    read_line(&mut reader, &mut line).await?;
    ensure!(line.starts_with("INFO"), "expected INFO from nats-server, got {line:?}");
    writer
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"strata-bench\",\"version\":\"0\",\"protocol\":1}\r\nPING\r\nSUB _INBOX.bench.* 1\r\n")
        .await?;
    writer.flush().await?;
    loop {
        read_line(&mut reader, &mut line).await?;
        if line == "PONG" {
            break;
        }
        ensure!(!line.starts_with("-ERR"), "nats-server refused the connection: {line}");
    }

    // The stream, through the JetStream API (an existing one is fine).
    let subject = format!("{}.data", opts.stream);
    let config = format!(
        "{{\"name\":\"{}\",\"subjects\":[\"{subject}\"],\"storage\":\"file\",\"num_replicas\":{}}}",
        opts.stream, opts.replicas
    );
    let created =
        js_api(&mut reader, &mut writer, &format!("STREAM.CREATE.{}", opts.stream), &config, "create").await?;
    ensure!(
        !created.contains("\"error\"") || created.contains("already in use"),
        "creating stream {}: {created}",
        opts.stream
    );

    let payload = vec![b'x'; opts.record_size];
    let window = Arc::new(Semaphore::new(opts.window));
    let sent_at: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let started = Instant::now();
    let records = opts.records;
    let reader_window = window.clone();
    let reader_sent = sent_at.clone();
    let acks = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(records);
        let mut errors = 0usize;
        let mut line = String::new();
        while latencies.len() + errors < records {
            // NATS sometimes never answers a publish (seen with a new R3
            // stream and sync_interval: always): fail the run, which the
            // harness repeats, rather than wait for ever.
            tokio::time::timeout(ACK_STALL_MAX, read_line(&mut reader, &mut line)).await.with_context(|| {
                format!("no answer from nats-server for {ACK_STALL_MAX:?} ({} of {records} acked)", latencies.len())
            })??;
            if let Some(rest) = line.strip_prefix("MSG _INBOX.bench.") {
                let id: usize = rest.split(' ').next().and_then(|n| n.parse().ok()).context("ack inbox id")?;
                let body = read_payload(&mut reader, &line).await?;
                let sent = reader_sent.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if body.windows(7).any(|w| w == b"\"error\"") {
                    errors += 1;
                } else if let Some(sent) = sent {
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                reader_window.add_permits(1);
            } else if let Some(rest) = line.strip_prefix("HMSG _INBOX.bench.") {
                // A status with headers and no ack, such as 503 "no
                // responders" while a new stream elects its leader: that
                // publish failed. (Before this was handled, its bytes were
                // read as protocol lines and the run waited for ever.)
                let id: usize = rest.split(' ').next().and_then(|n| n.parse().ok()).context("status inbox id")?;
                read_payload(&mut reader, &line).await?;
                if reader_sent.lock().unwrap_or_else(|p| p.into_inner()).remove(&id).is_some() {
                    errors += 1;
                    reader_window.add_permits(1);
                }
            } else if line.starts_with("-ERR") {
                bail!("nats-server: {line}");
            }
        }
        Ok::<_, anyhow::Error>((latencies, errors, reader))
    });
    for id in 0..records {
        let permit = match window.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                // The window is full: what is buffered must reach the server
                // before its acks can free a slot.
                writer.flush().await?;
                window.acquire().await.context("window closed")?
            }
        };
        permit.forget();
        sent_at.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
        let header = format!("PUB {subject} _INBOX.bench.{id} {}\r\n", payload.len());
        writer.write_all(header.as_bytes()).await?;
        writer.write_all(&payload).await?;
        writer.write_all(b"\r\n").await?;
    }
    writer.flush().await?;
    let (mut latencies, errors, mut reader) = tokio::time::timeout(Duration::from_secs(600), acks)
        .await
        .context("acks did not all arrive within 10 minutes")???;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let ok = latencies.len();
    // The latency spectrum for the plots: [quantile, ms] pairs.
    let spectrum: Vec<String> =
        crate::PLOT_QUANTILES.iter().map(|&q| format!("[{q},{:.3}]", at(q).copied().unwrap_or(0.0))).collect();
    println!(
        "{{\"records\":{records},\"acked\":{ok},\"errors\":{errors},\"record_bytes\":{},\"seconds\":{seconds:.3},\"records_per_s\":{:.1},\"mb_per_s\":{:.2},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"percentiles_ms\":[{}]}}",
        opts.record_size,
        ok as f64 / seconds,
        (ok * opts.record_size) as f64 / seconds / 1e6,
        at(0.5).copied().unwrap_or(0.0),
        at(0.99).copied().unwrap_or(0.0),
        at(0.999).copied().unwrap_or(0.0),
        latencies.last().copied().unwrap_or(0.0),
        spectrum.join(","),
    );
    // The stream is dropped once measured, so that a scenario's runs do not
    // pile up on the disk (three R3 runs of 3 M records of 1 KB are some
    // 27 GB). The figures above stand either way.
    let deleted = js_api(&mut reader, &mut writer, &format!("STREAM.DELETE.{}", opts.stream), "", "delete").await;
    match deleted {
        Ok(answer) if !answer.contains("\"error\"") => {}
        Ok(answer) => eprintln!("could not delete stream {}: {answer}", opts.stream),
        Err(err) => eprintln!("could not delete stream {}: {err:#}", opts.stream),
    }
    Ok(())
}
