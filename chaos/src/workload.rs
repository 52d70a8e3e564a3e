//! Jepsen's queue workload on Strata: integer keys are the partitions of
//! one topic; every value sent is unique (one counter for the whole run);
//! workers send with acks=all through the idempotent producer and poll,
//! either by `assign` (random keys, random start) or by `subscribe` (one
//! consumer group, explicit commits). Consumers are re-created at random.
//! Every operation is recorded as an invoke and its completion.
//!
//! Completion types are chosen conservatively: a send is `fail` only when
//! the client refused it before anything reached a broker; every other
//! error, and every timeout, is `info`, and the worker then takes a new
//! process id and a new producer, as Jepsen does after an indefinite
//! result.
//!
//! **Invariant:** a worker has one operation in flight at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use strata_client::{
    Admin, Client, Consumer, ConsumerConfig, Error, ErrorCode, NewTopic, OffsetReset, Producer, ProducerConfig,
    RebalanceEvent, Record, Seek, TopicPartition,
};
use tokio::time::{Instant, timeout};

use crate::history::{F, FINAL_PROCESS, GroupView, History, Op, OpType};
use crate::node::Cluster;
use crate::rng::Rng;

/// The topic the workload writes.
pub const TOPIC: &str = "chaos";
/// The consumer group of subscribing workers.
pub const GROUP: &str = "chaos-group";
/// The process id of the group describer.
const DESCRIBER_PROCESS: i64 = 1_000_000;
/// How long one send, poll or commit may take before it is `info`.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// How consumers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `assign` only.
    Assign,
    /// `subscribe` only.
    Subscribe,
    /// Half the workers each way.
    Both,
}

/// What every worker shares.
pub struct Shared {
    /// The history.
    pub history: History,
    /// Keys (partitions).
    pub n_keys: u32,
    /// The next value to send.
    next_value: AtomicU64,
    /// The next process id.
    next_process: AtomicI64,
    /// When workers stop starting operations.
    pub deadline: Instant,
}

impl Shared {
    /// State shared by the workers of one run.
    pub fn new(history: History, n_keys: u32, deadline: Instant) -> Shared {
        Shared { history, n_keys, next_value: AtomicU64::new(1), next_process: AtomicI64::new(0), deadline }
    }

    fn new_process(&self) -> i64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }
}

/// Creates the topic, retrying until the cluster answers (or 90 s).
pub async fn create_topic(bootstrap: &str, n_keys: u32, replication: u32) -> anyhow::Result<()> {
    let client = crate::tls::client(bootstrap).context("client")?;
    let admin = Admin::new(&client);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match admin.create_topic(NewTopic::new(TOPIC, n_keys).replication_factor(replication)).await {
            Ok(()) => break,
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => break,
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow::anyhow!("the cluster did not come up within 90 s: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    // Every partition has a leader before the clock starts.
    loop {
        if let Ok(t) = admin.describe_topic(TOPIC).await {
            if t.partitions.len() == n_keys as usize && t.partitions.iter().all(|p| p.leader.is_some()) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the topic's partitions got no leaders within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits (up to `wait`) until every partition of the topic has a leader
/// that some node reports. Each node is asked separately: a node describes
/// only the replicas it holds open, so one node's answer can show a
/// partition without a leader that the others know. Returns the
/// partitions still without one.
pub async fn wait_for_leaders(n_nodes: u32, n_keys: u32, wait: Duration) -> Vec<u32> {
    let deadline = Instant::now() + wait;
    let admins: Vec<Admin> = (1..=n_nodes)
        .filter_map(|n| crate::tls::client(&Cluster::client_addr(n)).ok())
        .map(|c| Admin::new(&c))
        .collect();
    loop {
        let mut led = BTreeSet::new();
        for admin in &admins {
            if let Ok(Ok(t)) = timeout(Duration::from_secs(2), admin.describe_topic(TOPIC)).await {
                led.extend(t.partitions.iter().filter(|p| p.leader.is_some()).map(|p| p.partition));
            }
        }
        let missing: Vec<u32> = (0..n_keys).filter(|k| !led.contains(k)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The nodes leading a partition of the topic now, as any node reports
/// them (each node describes only the replicas it has open, and one just
/// restarted may not know the topic yet).
pub async fn current_leaders(cluster: &Arc<Mutex<Cluster>>) -> anyhow::Result<BTreeSet<u32>> {
    let n_nodes = cluster.lock().unwrap_or_else(|p| p.into_inner()).n_nodes();
    let mut leaders = BTreeSet::new();
    let mut last_error = None;
    for node in 1..=n_nodes {
        let admin = Admin::new(&crate::tls::client(&Cluster::client_addr(node)).context("client")?);
        match timeout(Duration::from_secs(2), admin.describe_topic(TOPIC)).await {
            Ok(Ok(topic)) => leaders.extend(topic.partitions.iter().filter_map(|p| p.leader).map(|l| l as u32)),
            Ok(Err(e)) => last_error = Some(e.to_string()),
            Err(_) => last_error = Some(format!("node {node} did not answer within 2 s")),
        }
    }
    if leaders.is_empty() {
        anyhow::bail!("no node reports a partition leader (last error: {})", last_error.unwrap_or_default());
    }
    Ok(leaders)
}

/// Whether the client refused a send before any broker saw it.
fn definitely_not_sent(e: &Error) -> bool {
    matches!(e, Error::Invalid(_))
}

fn producer(client: &Client) -> Producer {
    Producer::with_config(
        client,
        ProducerConfig {
            linger: Duration::from_millis(1),
            delivery_timeout: OP_TIMEOUT,
            request_timeout: Duration::from_secs(5),
            ..ProducerConfig::default()
        },
    )
}

/// A consumer of one worker, with what it needs to record rebalances.
struct Reader {
    consumer: Consumer,
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
    subscribed: bool,
}

/// One worker: sends and polls until the deadline.
pub async fn worker(shared: Arc<Shared>, node: u32, subscribe: bool, mut rng: Rng) {
    let client = match crate::tls::client(&Cluster::client_addr(node)) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("[worker] node {node}: {e}");
            return;
        }
    };
    let mut process = shared.new_process();
    let mut producer = producer(&client);
    let mut reader: Option<Reader> = None;
    while Instant::now() < shared.deadline {
        let roll = rng.below(1000);
        // Consumers are re-created at random: an assigning one about every
        // 30 operations, a group member about every 300, so the group
        // still settles between its members' comings and goings.
        let recreate = if subscribe { 3 } else { 30 };
        if roll < recreate {
            // Half leave cleanly; the others vanish as a crash would.
            if let Some(old) = reader.take() {
                if rng.chance(0.5) {
                    let _ = timeout(Duration::from_secs(5), old.consumer.close()).await;
                }
            }
            continue;
        }
        let ok = if roll < 550 {
            let ok = send(&shared, &producer, process, node, &mut rng).await;
            if !ok {
                // Indefinite: a new process with a new producer.
                process = shared.new_process();
                producer = self::producer(&client);
            }
            ok
        } else {
            if reader.is_none() {
                reader = open_reader(&shared, &client, process, node, subscribe, &mut rng).await;
                if reader.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let Some(r) = reader.as_mut() else { continue };
            let ok = poll(&shared, r, process, node).await;
            if !ok {
                reader = None;
            } else if r.subscribed && rng.chance(0.5) {
                commit(&shared, r, process, node).await;
            }
            ok
        };
        if !ok {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Some(r) = reader {
        let _ = timeout(Duration::from_secs(5), r.consumer.close()).await;
    }
    let _ = timeout(Duration::from_secs(5), producer.close()).await;
}

/// One send; false when the outcome is unknown.
async fn send(shared: &Shared, producer: &Producer, process: i64, node: u32, rng: &mut Rng) -> bool {
    let key = rng.below(u64::from(shared.n_keys)) as u32;
    let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
    let mut op = Op::new(process, OpType::Invoke, F::Send);
    op.key = Some(key);
    op.value = Some(value);
    op.node = Some(node);
    shared.history.record(op.clone());
    let record = Record::new(TOPIC, value.to_string()).partition(key);
    let result = timeout(OP_TIMEOUT, async { producer.send(record).await?.await }).await;
    let (op_type, offset, error) = match result {
        Ok(Ok(meta)) => (OpType::Ok, u64::try_from(meta.offset).ok(), None),
        Ok(Err(e)) if definitely_not_sent(&e) => (OpType::Fail, None, Some(e.to_string())),
        Ok(Err(e)) => (OpType::Info, None, Some(e.to_string())),
        Err(_) => (OpType::Info, None, Some("timeout".to_string())),
    };
    op.op_type = op_type;
    op.offset = offset;
    op.error = error;
    shared.history.record(op);
    op_type != OpType::Info
}

/// A new consumer: assigned random keys at random positions, or
/// subscribed to the group.
async fn open_reader(
    shared: &Shared,
    client: &Client,
    process: i64,
    node: u32,
    subscribe: bool,
    rng: &mut Rng,
) -> Option<Reader> {
    let mut config = ConsumerConfig {
        max_wait: Duration::from_millis(200),
        partition_max_bytes: 64 * 1024,
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let events: Arc<Mutex<Vec<RebalanceEvent>>> = Arc::default();
    if subscribe {
        config.group_id = Some(GROUP.to_string());
        config.enable_auto_commit = false;
        config.session_timeout = Duration::from_secs(6);
        let mut consumer = Consumer::with_config(client, config);
        let sink = events.clone();
        consumer.on_rebalance(move |event| sink.lock().unwrap_or_else(|p| p.into_inner()).push(event.clone()));
        let mut op = Op::new(process, OpType::Invoke, F::Subscribe);
        op.node = Some(node);
        shared.history.record(op.clone());
        let result = consumer.subscribe(vec![TOPIC.to_string()]);
        op.op_type = if result.is_ok() { OpType::Ok } else { OpType::Fail };
        op.error = result.err().map(|e| e.to_string());
        shared.history.record(op.clone());
        return (op.op_type == OpType::Ok).then_some(Reader { consumer, events, subscribed: true });
    }
    let mut keys: Vec<u32> = (0..shared.n_keys).collect();
    rng.shuffle(&mut keys);
    keys.truncate(rng.between(1, u64::from(shared.n_keys.min(4))) as usize);
    keys.sort_unstable();
    let mut op = Op::new(process, OpType::Invoke, F::Assign);
    op.keys = Some(keys.clone());
    op.node = Some(node);
    shared.history.record(op.clone());
    let mut consumer = Consumer::with_config(client, config);
    consumer.assign(keys.iter().map(|k| TopicPartition::new(TOPIC, *k)).collect());
    let mut offsets = BTreeMap::new();
    let mut error = None;
    for key in &keys {
        let tp = TopicPartition::new(TOPIC, *key);
        // From the start now and then; otherwise a little before the end,
        // so the history stays small while polls still overlap sends.
        let sought = async {
            if rng.chance(0.3) {
                consumer.seek(&tp, Seek::Beginning).await?;
            } else {
                consumer.seek(&tp, Seek::End).await?;
                let end = consumer.position(&tp).unwrap_or(0);
                consumer.seek(&tp, Seek::Offset(end.saturating_sub(rng.below(200)))).await?;
            }
            Ok::<u64, Error>(consumer.position(&tp).unwrap_or(0))
        };
        match timeout(OP_TIMEOUT, sought).await {
            Ok(Ok(at)) => {
                offsets.insert(*key, at);
            }
            Ok(Err(e)) => error = Some(e.to_string()),
            Err(_) => error = Some("timeout".to_string()),
        }
        if error.is_some() {
            break;
        }
    }
    op.offsets = Some(offsets);
    op.op_type = if error.is_some() { OpType::Fail } else { OpType::Ok };
    op.error = error;
    shared.history.record(op.clone());
    (op.op_type == OpType::Ok).then_some(Reader { consumer, events, subscribed: false })
}

/// One poll; false when it failed (the worker then drops the consumer).
async fn poll(shared: &Shared, reader: &mut Reader, process: i64, node: u32) -> bool {
    let mut op = Op::new(process, OpType::Invoke, F::Poll);
    op.node = Some(node);
    shared.history.record(op.clone());
    let result = timeout(OP_TIMEOUT, reader.consumer.poll()).await;
    // The rebalance callbacks ran inside the poll: they belong to it.
    let events: Vec<RebalanceEvent> = std::mem::take(&mut *reader.events.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut assigned, mut revoked) = (Vec::new(), Vec::new());
    for event in events {
        match event {
            RebalanceEvent::Assigned(tps) => assigned.extend(tps.iter().map(|tp| tp.partition)),
            RebalanceEvent::Revoked(tps) | RebalanceEvent::Lost(tps) => {
                revoked.extend(tps.iter().map(|tp| tp.partition))
            }
        }
    }
    if !assigned.is_empty() {
        op.keys = Some(assigned);
    }
    if !revoked.is_empty() {
        op.revoked = Some(revoked);
    }
    match result {
        Ok(Ok(records)) => {
            let mut reads: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
            let mut unparsable = None;
            for record in records {
                match record.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()) {
                    Some(value) => reads.entry(record.partition).or_default().push((record.offset, value)),
                    None => unparsable = Some(format!("{}/{}", record.partition, record.offset)),
                }
            }
            op.op_type = OpType::Ok;
            op.reads = Some(reads);
            // A record that is not one of ours (damaged bytes that passed
            // the checks) is noted where it was read.
            op.error = unparsable.map(|at| format!("unparsable record at {at}"));
            shared.history.record(op);
            true
        }
        Ok(Err(e)) => {
            op.op_type = OpType::Fail;
            op.error = Some(e.to_string());
            shared.history.record(op);
            false
        }
        Err(_) => {
            op.op_type = OpType::Info;
            op.error = Some("timeout".to_string());
            shared.history.record(op);
            false
        }
    }
}

/// Commits the positions of every owned key.
async fn commit(shared: &Shared, reader: &mut Reader, process: i64, node: u32) {
    let offsets: BTreeMap<u32, u64> = reader
        .consumer
        .assignment()
        .iter()
        .filter_map(|tp| reader.consumer.position(tp).map(|p| (tp.partition, p)))
        .collect();
    if offsets.is_empty() {
        return;
    }
    let mut op = Op::new(process, OpType::Invoke, F::Commit);
    op.offsets = Some(offsets.clone());
    op.node = Some(node);
    shared.history.record(op.clone());
    let list = offsets.iter().map(|(k, o)| (TopicPartition::new(TOPIC, *k), *o)).collect();
    let (op_type, error) = match timeout(OP_TIMEOUT, reader.consumer.commit_offsets(list)).await {
        Ok(Ok(())) => (OpType::Ok, None),
        // A fenced member's commit is refused, not applied.
        Ok(Err(e)) if matches!(e.code(), Some(ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId)) => {
            (OpType::Fail, Some(e.to_string()))
        }
        Ok(Err(e)) => (OpType::Info, Some(e.to_string())),
        Err(_) => (OpType::Info, Some("timeout".to_string())),
    };
    op.op_type = op_type;
    op.error = error;
    shared.history.record(op);
}

/// Describes the group about every second until the deadline.
pub async fn describer(shared: Arc<Shared>, bootstrap: String) {
    let Ok(client) = crate::tls::client(&bootstrap) else { return };
    let admin = Admin::new(&client);
    while Instant::now() < shared.deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut op = Op::new(DESCRIBER_PROCESS, OpType::Invoke, F::DescribeGroup);
        shared.history.record(op.clone());
        match timeout(Duration::from_secs(5), admin.describe_group(GROUP)).await {
            Ok(Ok(d)) => {
                let members = d
                    .members
                    .iter()
                    .map(|m| {
                        let keys = m.assignment.iter().filter(|tp| tp.topic == TOPIC).map(|tp| tp.partition);
                        (m.member_id.clone(), keys.collect())
                    })
                    .collect();
                let committed =
                    d.offsets.iter().filter(|(tp, _)| tp.topic == TOPIC).map(|(tp, o)| (tp.partition, *o)).collect();
                op.op_type = OpType::Ok;
                op.group = Some(GroupView { epoch: d.epoch, members, committed });
            }
            Ok(Err(e)) => {
                op.op_type = OpType::Fail;
                op.error = Some(e.to_string());
            }
            Err(_) => {
                op.op_type = OpType::Info;
                op.error = Some("timeout".to_string());
            }
        }
        shared.history.record(op);
    }
}

/// The highest offset any ok operation saw per key, plus one.
pub fn ends_seen(ops: &[Op]) -> BTreeMap<u32, u64> {
    let mut ends = BTreeMap::new();
    for op in ops.iter().filter(|o| o.op_type == OpType::Ok) {
        if let (F::Send, Some(key), Some(offset)) = (op.f, op.key, op.offset) {
            let end = ends.entry(key).or_insert(0);
            *end = (*end).max(offset + 1);
        }
        for (key, records) in op.reads.iter().flatten() {
            if let Some((offset, _)) = records.last() {
                let end = ends.entry(*key).or_insert(0);
                *end = (*end).max(offset + 1);
            }
        }
    }
    ends
}

/// How long the final read waits for progress before it starts over with
/// a new client.
const FINAL_STALL: Duration = Duration::from_secs(15);
/// How long the final read may take per key.
const FINAL_READ_MAX: Duration = Duration::from_secs(120);

/// What the final read found besides the records.
#[derive(Debug, Default)]
pub struct FinalRead {
    /// Keys it could not read to the end (the run fails).
    pub incomplete: Vec<String>,
    /// Times a consumer made no progress for [`FINAL_STALL`] while the
    /// partition had more to read, and was replaced by a new client with
    /// the bootstrap list rotated (a liveness problem, reported, not an
    /// anomaly).
    pub stalls: Vec<String>,
}

/// The final read: every key from the start, with fresh clients, up to the
/// highest offset seen or the end the leader reports, whichever is
/// further. A consumer that stalls is replaced (and the stall reported) so
/// that a client-side liveness problem does not stop the safety check.
pub async fn final_read(shared: &Shared, n_nodes: u32, ends: &BTreeMap<u32, u64>) -> FinalRead {
    let mut outcome = FinalRead::default();
    let addrs: Vec<String> = (1..=n_nodes).map(Cluster::client_addr).collect();
    for key in 0..shared.n_keys {
        let mut op = Op::new(FINAL_PROCESS, OpType::Invoke, F::FinalRead);
        op.key = Some(key);
        shared.history.record(op.clone());
        let tp = TopicPartition::new(TOPIC, key);
        let deadline = Instant::now() + FINAL_READ_MAX;
        let mut reads: Vec<(u64, u64)> = Vec::new();
        let mut position = 0u64;
        let mut target = ends.get(&key).copied().unwrap_or(0);
        let mut error = None;
        let mut done = false;
        let mut attempt = 0usize;
        while !done && Instant::now() < deadline {
            // Each attempt a new client, its bootstrap list rotated.
            let mut rotated = addrs.clone();
            rotated.rotate_left(attempt % addrs.len());
            attempt += 1;
            let bootstrap = rotated.join(",");
            let Ok(client) = crate::tls::client(&bootstrap) else { break };
            let mut consumer = Consumer::with_config(
                &client,
                ConsumerConfig {
                    max_wait: Duration::from_millis(200),
                    auto_offset_reset: OffsetReset::Error,
                    ..ConsumerConfig::default()
                },
            );
            consumer.assign(vec![tp.clone()]);
            let begun = async {
                consumer.seek(&tp, Seek::End).await?;
                let end = consumer.position(&tp).unwrap_or(0);
                consumer.seek(&tp, Seek::Offset(position)).await?;
                Ok::<u64, Error>(end)
            };
            match timeout(Duration::from_secs(20), begun).await {
                Ok(Ok(end)) => target = target.max(end),
                Ok(Err(e)) => {
                    error = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(_) => {
                    error = Some("seek timed out".to_string());
                    continue;
                }
            }
            let mut progress_at = Instant::now();
            loop {
                if position >= target {
                    error = None;
                    done = true;
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
                if progress_at.elapsed() >= FINAL_STALL {
                    let stall = format!(
                        "key {key}: no progress for {}s at offset {position} of {target} (bootstrap {bootstrap}); \
                         starting over with a new client",
                        FINAL_STALL.as_secs()
                    );
                    eprintln!("[chaos] final read: {stall}");
                    outcome.stalls.push(stall);
                    break;
                }
                match timeout(Duration::from_secs(10), consumer.poll()).await {
                    Ok(Ok(records)) => {
                        for record in records {
                            let value = record.value.as_deref().and_then(|v| std::str::from_utf8(v).ok());
                            match value.and_then(|v| v.parse::<u64>().ok()) {
                                Some(value) => reads.push((record.offset, value)),
                                None => error = Some(format!("unparsable record at offset {}", record.offset)),
                            }
                        }
                        let now_at = consumer.position(&tp).unwrap_or(position);
                        if now_at > position {
                            position = now_at;
                            progress_at = Instant::now();
                        } else {
                            // An empty answer can come back at once (no
                            // leader known): do not spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Ok(Err(e)) => {
                        error = Some(e.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => error = Some("poll timed out".to_string()),
                }
            }
        }
        if position < target || !done {
            let why = error.clone().unwrap_or_else(|| "deadline".to_string());
            outcome.incomplete.push(format!("key {key}: read to {position} of {target}: {why}"));
            error = Some(format!("incomplete: read to {position} of {target}: {why}"));
        }
        op.op_type = OpType::Ok;
        op.offset = Some(target);
        op.reads = Some(BTreeMap::from([(key, reads)]));
        op.error = error;
        shared.history.record(op);
    }
    outcome
}
