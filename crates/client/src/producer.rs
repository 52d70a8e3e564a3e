//! [`Producer`]: batches records per partition and sends them with retries,
//! idempotently by default, so a retry never writes a record twice and
//! records keep their order with up to five batches in flight.
//!
//! Each partition the producer writes to has an accumulator and a task.
//! `send` adds a record to the accumulator's open batch, under a lock and
//! without waking anyone unless the record starts a batch or fills one (so a
//! fast sender pays no wakeup per record). The task takes a batch once it
//! reaches `batch_size` bytes or its `linger` is over, seals it (giving it
//! the next sequence numbers), and keeps up to `max_in_flight` sealed
//! batches on the wire, in order. A sealed batch goes out in the next
//! produce request to its leader, which carries the batches of every
//! partition that broker leads ([`crate::dispatch`]; at most
//! `max_in_flight` requests per broker, as Kafka's per connection). When a
//! batch fails with a retriable error, the task waits for the rest of the
//! window, backs off, refreshes the leader and resends from the first
//! unacknowledged batch. A batch the broker definitely did not write (a
//! sequence error, or a non-retriable error) restarts the partition's
//! sequence under a new epoch, so later batches are never refused for a
//! gap.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use strata_batch::{BatchBuilder, Compression as BatchCompression, Header};
use strata_proto::api as pb;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::dispatch::{Dispatchers, RequestSettings};
use crate::error::{Error, ErrorCode, Result};
use crate::linger::{Alarm, LingerClock};
use crate::metrics::{ProducerCounters, ProducerMetrics};

/// How many of a partition's records may wait in its accumulator before
/// `send` waits (back-pressure).
const PARTITION_QUEUE_RECORDS: usize = 16 * 1024;

/// How many sealed batches of a partition may wait for the wire. Beyond
/// it the partition stops taking batches from its accumulator, so `send`
/// waits:
/// without this bound a producer faster than the cluster buffered without
/// limit (seconds of latency, unbounded memory).
const PARTITION_SEALED_BATCHES_MAX: usize = 32;

/// When the broker acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// A Raft majority has it on disk (the default).
    #[default]
    All,
    /// The leader accepted it (offsets are not reported).
    Leader,
    /// Not acknowledged at all.
    None,
}

/// Compression of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Uncompressed (the default).
    #[default]
    None,
    /// LZ4 frames.
    Lz4,
}

/// Producer settings; the defaults are Kafka's.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When a write counts as done. Default: all.
    pub acks: Acks,
    /// How long a batch waits for more records. Default 5 ms.
    pub linger: Duration,
    /// A batch is sent once it reaches this many bytes. Default 16 KiB.
    pub batch_size: usize,
    /// Compression. Default none.
    pub compression: Compression,
    /// Idempotent writes: no duplicates on retry. Default on (needs
    /// acks = all).
    pub idempotence: bool,
    /// Batches of one partition on the wire at once. Default 5 (at most 5
    /// with idempotence).
    pub max_in_flight: usize,
    /// How long a record may take, retries included, before it fails.
    /// Default 120 s.
    pub delivery_timeout: Duration,
    /// First retry backoff, doubled per attempt up to `retry_backoff_max`,
    /// with jitter. Defaults 100 ms and 1 s.
    pub retry_backoff: Duration,
    /// Largest retry backoff.
    pub retry_backoff_max: Duration,
    /// How long one produce request may wait for its acks. Default 30 s.
    pub request_timeout: Duration,
    /// Bytes of records the producer may hold, queued or unanswered, before
    /// `send` waits (Kafka's `buffer.memory`). Default 32 MiB. A record
    /// larger than this is let in alone.
    pub buffer_memory: usize,
    /// How long `send` waits for a topic the cluster does not know yet
    /// before it fails with `UnknownTopic` (Kafka's `max.block.ms`), asking
    /// again with the retry backoff: a broker answers from its own copy of
    /// the metadata, which may trail a topic just created. Default 60 s.
    pub max_block: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            compression: Compression::None,
            idempotence: true,
            max_in_flight: 5,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Topic. Shared: a sender of many records to one topic can hand the
    /// same `Arc` to each, so no record copies the name.
    pub topic: Arc<str>,
    /// Partition; `None` = by key (murmur2, as Kafka), or sticky when keyless.
    pub partition: Option<u32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Timestamp in ms since the epoch; `None` = now.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with a value for `topic`.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Record {
        Record { topic: topic.into(), value: Some(value.into()), ..Record::default() }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: u32) -> Record {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push(Header { key: key.into(), value: Some(value.into()) });
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared by the records of a partition: no copy per record).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset; -1 when acks is not `All`.
    pub offset: i64,
    /// The record's timestamp.
    pub timestamp: i64,
    /// When the producer learned of the acknowledgement (read once per
    /// batch): a record's latency without a clock read per record.
    pub acknowledged_at: std::time::Instant,
}

/// Resolves once the record is acknowledged (or has failed).
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

struct PendingRecord {
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
    done: Done,
}

/// Where a record's outcome goes: the future `send` returned, the
/// callback given to `send_with_callback`, or (for `send_tagged`) the
/// producer's [`DeliveryHandler`], once per batch, with the record's tag.
enum Done {
    Future(oneshot::Sender<Result<RecordMetadata>>),
    Callback(Box<dyn FnOnce(Result<RecordMetadata>) + Send>),
    Tag(u64),
}

/// Receives the outcomes of the records sent with [`Producer::send_tagged`]:
/// one call per batch, on the partition's task, so it should be quick. A
/// panic in it is caught and logged. For a sender of very many records
/// this costs no allocation and no call per record, where a callback costs
/// both.
pub trait DeliveryHandler: Send + Sync + 'static {
    /// A batch holding tagged records was acknowledged or failed.
    fn delivered(&self, batch: &DeliveredBatch<'_>);
}

impl<F: Fn(&DeliveredBatch<'_>) + Send + Sync + 'static> DeliveryHandler for F {
    fn delivered(&self, batch: &DeliveredBatch<'_>) {
        self(batch)
    }
}

/// One batch's outcome, for a [`DeliveryHandler`].
pub struct DeliveredBatch<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
    /// The offset of the batch's first record (-1 when acks is not `All`),
    /// or why the batch failed.
    pub outcome: std::result::Result<i64, &'a Error>,
    /// When the producer learned of the outcome.
    pub acknowledged_at: std::time::Instant,
    records: &'a [PendingRecord],
}

/// A tagged record of a [`DeliveredBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaggedRecord {
    /// The tag given to `send_tagged`.
    pub tag: u64,
    /// Its offset; -1 when acks is not `All` or the batch failed.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
}

impl DeliveredBatch<'_> {
    /// The batch's tagged records, in order. (Records of the batch sent
    /// with `send` or `send_with_callback` are answered their own way.)
    pub fn records(&self) -> impl Iterator<Item = TaggedRecord> + '_ {
        let base = self.outcome.as_ref().ok().copied().filter(|b| *b >= 0);
        self.records.iter().enumerate().filter_map(move |(i, r)| match r.done {
            Done::Tag(tag) => {
                Some(TaggedRecord { tag, offset: base.map_or(-1, |b| b + i as i64), timestamp: r.timestamp })
            }
            _ => None,
        })
    }

    /// How many of the batch's records are tagged.
    pub fn len(&self) -> usize {
        self.records.iter().filter(|r| matches!(r.done, Done::Tag(_))).count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs user code on a partition task: a panic there must not stop the
/// task (and with it every later record of the partition), so it is
/// caught and logged, as Kafka does.
fn run_user_code(what: &str, code: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(code)) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(not a string)".into());
        tracing::error!(panic = %message, "a {what} panicked; the producer carries on");
    }
}

impl Done {
    fn finish(self, outcome: Result<RecordMetadata>) {
        match self {
            Done::Future(tx) => {
                let _ = tx.send(outcome);
            }
            Done::Callback(callback) => run_user_code("send callback", || callback(outcome)),
            // Answered with its batch, by the delivery handler.
            Done::Tag(_) => {}
        }
    }
}

impl PendingRecord {
    fn size(&self) -> usize {
        24 + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 4).sum::<usize>()
    }
}

/// The bytes of records a producer holds, from `send` until their batch is
/// answered (Kafka's `buffer.memory`), shared by its partitions.
struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Wakes the senders waiting for bytes to be given back.
    room: Notify,
}

impl Budget {
    /// Takes `size` bytes if they fit (or if nothing is held, so a record
    /// larger than the limit still goes, alone).
    fn try_take(&self, size: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used + size <= self.limit).then_some(used + size)
            })
            .is_ok()
    }

    fn give_back(&self, size: usize) {
        self.used.fetch_sub(size, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}

/// A partition's records waiting for their batch: `send` adds to it, the
/// partition's task takes whole batches from it.
#[derive(Default)]
struct Accumulator {
    state: Mutex<Gathering>,
    /// Wakes the task: a record started a batch (its linger starts), a
    /// batch filled, a flush, or the close. A permit is kept when the task
    /// is busy, so no wakeup is lost.
    wake: Notify,
    /// Wakes the senders waiting for room.
    room: Notify,
}

#[derive(Default)]
struct Gathering {
    open: Vec<PendingRecord>,
    open_bytes: usize,
    /// When the open batch's first record came.
    open_since: Option<Instant>,
    /// Batches closed for more records, oldest first, each with its ordinal
    /// among the partition's batches and when its first record came.
    full: VecDeque<(u64, Vec<PendingRecord>, Instant)>,
    n_batches: u64,
    /// Records in `open` and `full`.
    n_records: usize,
    /// Flushes, each with the ordinal of the last batch it waits for.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// No more records: the producer is closed or dropped.
    closed: bool,
}

impl Gathering {
    /// Closes the open batch for more records.
    fn close_open(&mut self) {
        if self.open.is_empty() {
            return;
        }
        self.n_batches += 1;
        // The next batch likely holds as many records: room for them up
        // front, rather than growing (and copying) the list as they come.
        let next = Vec::with_capacity(self.open.len());
        let since = self.open_since.take().unwrap_or_else(Instant::now);
        self.full.push_back((self.n_batches, std::mem::replace(&mut self.open, next), since));
        self.open_bytes = 0;
    }
}

impl Alarm for Accumulator {
    fn ring(&self) {
        self.wake.notify_one();
    }
}

impl Accumulator {
    fn lock(&self) -> std::sync::MutexGuard<'_, Gathering> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes no more records; the task sends what is there and stops.
    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    /// Adds a record, waiting while the accumulator is full or the
    /// producer's budget is spent.
    async fn add(
        &self,
        budget: &Budget,
        record: &mut Option<PendingRecord>,
        size: usize,
        batch_size: usize,
    ) -> Result<()> {
        loop {
            // Registered before the check, so a `notify_waiters` after the
            // task takes records, or after a batch gives its bytes back,
            // cannot fall between the two.
            let room = self.room.notified();
            let bytes = budget.room.notified();
            tokio::pin!(room, bytes);
            room.as_mut().enable();
            bytes.as_mut().enable();
            if self.try_add(budget, record, size, batch_size)? {
                return Ok(());
            }
            tokio::select! {
                _ = room => {}
                _ = bytes => {}
            }
        }
    }

    /// Adds the record unless the accumulator is full or the budget spent;
    /// whether it did.
    fn try_add(
        &self,
        budget: &Budget,
        record: &mut Option<PendingRecord>,
        size: usize,
        batch_size: usize,
    ) -> Result<bool> {
        let mut gathering = self.lock();
        if gathering.closed {
            return Err(Error::Closed);
        }
        if gathering.n_records >= PARTITION_QUEUE_RECORDS || !budget.try_take(size) {
            return Ok(false);
        }
        let Some(record) = record.take() else { return Ok(true) };
        gathering.n_records += 1;
        let first = gathering.open.is_empty();
        if first {
            gathering.open_since = Some(Instant::now());
        }
        gathering.open_bytes += size;
        gathering.open.push(record);
        let filled = gathering.open_bytes >= batch_size;
        if filled {
            gathering.close_open();
        }
        drop(gathering);
        if first || filled {
            self.wake.notify_one();
        }
        Ok(true)
    }
}

/// What [`Producer::enqueue`] did with a record.
enum Queued {
    /// It is in its partition's accumulator.
    Done,
    /// It waits for its topic's metadata or for room.
    Waiting(std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>),
}

impl Queued {
    async fn wait(self) -> Result<()> {
        match self {
            Queued::Done => Ok(()),
            Queued::Waiting(wait) => wait.await,
        }
    }
}

#[derive(Default)]
struct TopicState {
    /// Keyless records stick to one partition until about a batch's worth
    /// was sent there: the partition and the bytes sent to it.
    sticky: Option<(u32, usize)>,
    /// Each partition's accumulator, by partition number.
    accumulators: Vec<Option<Arc<Accumulator>>>,
    /// The topic's partition count and the client's metadata generation
    /// it was read at: while that is current, a send needs no second
    /// lookup in the client's cache.
    partitions: Option<(u32, u64)>,
    /// When fresh metadata last showed that a record's partition is beyond
    /// the topic's count: for [`UNKNOWN_PARTITION_RECHECK`] after it such
    /// records are refused without asking the cluster again, so a producer
    /// sending to a partition that does not exist makes one metadata
    /// request a second, not one a record.
    missing_checked: Option<Instant>,
}

/// See [`TopicState::missing_checked`].
const UNKNOWN_PARTITION_RECHECK: Duration = Duration::from_secs(1);

fn no_partition(topic: &str, n: u32, p: u32) -> Error {
    Error::api(ErrorCode::UnknownPartition, format!("topic {topic} has {n} partitions; there is no partition {p}"))
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    producer_id: tokio::sync::OnceCell<i64>,
    /// What the producer keeps per topic (looked up by `&str` on every
    /// send, so no allocation, and under one lock). A `BTreeMap`: a
    /// producer writes to a few topics, and comparing a name with one or
    /// two others costs less than hashing it with SipHash (about 150
    /// instructions a record).
    topics: Mutex<BTreeMap<String, TopicState>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    rng: Mutex<u64>,
    counters: Arc<ProducerCounters>,
    /// Puts sealed batches into produce requests, one queue per broker.
    dispatch: Arc<Dispatchers>,
    budget: Budget,
    linger_clock: LingerClock,
    /// Where the outcomes of tagged records go.
    delivery: Option<Arc<dyn DeliveryHandler>>,
}

/// A producer. Cheap to clone; clones share batches and connections.
///
/// ```no_run
/// # async fn example() -> Result<(), strata_client::Error> {
/// use strata_client::{Client, Producer, Record};
/// let producer = Producer::new(&Client::new("127.0.0.1:7070")?);
/// let sent = producer.send(Record::new("orders", "order #1").key("customer-7")).await?;
/// println!("written at offset {}", sent.await?.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    /// Dropped with the last clone (the partition tasks hold `shared`,
    /// not this): see [`Handles`].
    _handles: Arc<Handles>,
}

/// Ends the partition tasks once every clone of a producer is dropped
/// without `close`: it closes their accumulators, so each task sends what
/// it holds and stops. Otherwise the tasks, which keep `Shared` alive,
/// would wait for records forever.
struct Handles(Arc<Shared>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.close_accumulators();
    }
}

impl Shared {
    fn accumulators(&self) -> Vec<Arc<Accumulator>> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics.values().flat_map(|t| t.accumulators.iter().flatten().cloned()).collect()
    }

    /// Forgets every partition's accumulator and closes it.
    fn close_accumulators(&self) {
        let accumulators: Vec<Arc<Accumulator>> =
            std::mem::take(&mut *self.topics.lock().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .flat_map(|t| t.accumulators.into_iter().flatten())
                .collect();
        for accumulator in accumulators {
            accumulator.close();
        }
    }
}

impl Producer {
    /// A producer with the default settings.
    pub fn new(client: &Client) -> Producer {
        Producer::with_config(client, ProducerConfig::default())
    }

    /// A producer with `config`. Idempotence needs acks = all and at most
    /// 5 batches in flight; other settings turn it off.
    pub fn with_config(client: &Client, config: ProducerConfig) -> Producer {
        Producer::build(client, config, None)
    }

    /// A producer with `config` whose [`Producer::send_tagged`] records are
    /// answered to `handler`, one call per batch.
    pub fn with_delivery_handler(client: &Client, config: ProducerConfig, handler: impl DeliveryHandler) -> Producer {
        Producer::build(client, config, Some(Arc::new(handler)))
    }

    fn build(client: &Client, mut config: ProducerConfig, delivery: Option<Arc<dyn DeliveryHandler>>) -> Producer {
        if config.acks != Acks::All || config.max_in_flight > 5 {
            config.idempotence = false;
        }
        config.max_in_flight = config.max_in_flight.max(1);
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0x5EED, |d| d.as_nanos() as u64);
        let budget = Budget { limit: config.buffer_memory, used: AtomicUsize::new(0), room: Notify::new() };
        let counters = Arc::new(ProducerCounters::default());
        let acks = match config.acks {
            Acks::All => pb::Acks::All,
            Acks::Leader => pb::Acks::Leader,
            Acks::None => pb::Acks::NoneAcks,
        };
        let settings = RequestSettings { acks, timeout: config.request_timeout, max_in_flight: config.max_in_flight };
        let dispatch = Arc::new(Dispatchers::new(client.clone(), settings, counters.clone()));
        let shared = Arc::new(Shared {
            client: client.clone(),
            config,
            producer_id: tokio::sync::OnceCell::new(),
            topics: Mutex::default(),
            tasks: Mutex::default(),
            rng: Mutex::new(seed),
            counters,
            dispatch,
            budget,
            linger_clock: LingerClock::default(),
            delivery,
        });
        Producer { shared: shared.clone(), _handles: Arc::new(Handles(shared)) }
    }

    /// What this producer (and its clones) sent so far.
    pub fn metrics(&self) -> ProducerMetrics {
        self.shared.counters.snapshot()
    }

    /// Queues a record; the returned future resolves when it is
    /// acknowledged. The record is queued in this call when its topic is
    /// known and its partition has room; the future then finishes at its
    /// first poll. Otherwise the future waits for the topic's metadata or
    /// for room (back-pressure).
    pub fn send(&self, record: Record) -> impl Future<Output = Result<DeliveryFuture>> + Send + use<> {
        let (done, rx) = oneshot::channel();
        let queued = self.enqueue(record, Done::Future(done));
        async move {
            queued?.wait().await?;
            Ok(DeliveryFuture { rx })
        }
    }

    /// Queues a record like [`Producer::send`], but hands its outcome to
    /// `callback` (Kafka's `send(record, callback)`) instead of a future. The
    /// callback runs on the producer's partition task, so it should be
    /// quick; a panic in it is caught and logged, and the producer carries
    /// on. Cheaper than a future per record when many are in flight.
    /// An error here means the record was not queued, and the callback is
    /// not called.
    pub fn send_with_callback<F>(&self, record: Record, callback: F) -> impl Future<Output = Result<()>> + Send + use<F>
    where
        F: FnOnce(Result<RecordMetadata>) + Send + 'static,
    {
        let queued = self.enqueue(record, Done::Callback(Box::new(callback)));
        async move { queued?.wait().await }
    }

    /// Queues a record like [`Producer::send`]; its outcome goes, with
    /// `tag`, to the producer's [`DeliveryHandler`] together with the rest
    /// of its batch: no future, callback or allocation per record. Fails
    /// when the producer was made without a handler. An error here means
    /// the record was not queued, and it is not reported.
    pub fn send_tagged(&self, record: Record, tag: u64) -> impl Future<Output = Result<()>> + Send + use<> {
        let queued = match self.shared.delivery {
            Some(_) => self.enqueue(record, Done::Tag(tag)),
            None => Err(Error::Invalid("send_tagged needs a producer made with a delivery handler".into())),
        };
        async move { queued?.wait().await }
    }

    /// Queues the record now if it can; otherwise returns the wait (for
    /// the topic's metadata, or for room) as a boxed future. The common
    /// case needs no future at all: what `send` returns stays small, and
    /// nothing large is moved per record.
    fn enqueue(&self, record: Record, done: Done) -> Result<Queued> {
        // Read before the topic's entry, so a metadata change that lands
        // in between makes the next record look again.
        let generation = self.shared.client.metadata_generation();
        let mut topics = self.shared.topics.lock().unwrap_or_else(|p| p.into_inner());
        let state = match topics.get_mut(&*record.topic) {
            Some(state) => state,
            None => topics.entry(record.topic.to_string()).or_default(),
        };
        let n = match state.partitions {
            Some((n, known)) if known == generation => n,
            _ => match self.shared.client.cached_partition_count(&record.topic) {
                Some(n) => {
                    state.partitions = Some((n, generation));
                    n
                }
                None => {
                    drop(topics);
                    let producer = self.clone();
                    return Ok(Queued::Waiting(Box::pin(async move {
                        producer.wait_for_topic(&record.topic).await?;
                        producer.enqueue(record, done)?.wait().await
                    })));
                }
            },
        };
        if n == 0 {
            return Err(Error::Invalid(format!("topic {} has no partitions", record.topic)));
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < n => Some(p),
            (Some(p), _) => {
                if state.missing_checked.is_some_and(|at| at.elapsed() < UNKNOWN_PARTITION_RECHECK) {
                    return Err(no_partition(&record.topic, n, p));
                }
                // Perhaps a partition added since the metadata was fetched:
                // fetch it again once before refusing the record.
                drop(topics);
                let producer = self.clone();
                return Ok(Queued::Waiting(Box::pin(async move {
                    producer.shared.client.refresh_metadata(&[record.topic.to_string()]).await?;
                    let n = producer.shared.client.cached_partition_count(&record.topic).unwrap_or(0);
                    if p >= n {
                        let mut topics = producer.shared.topics.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(state) = topics.get_mut(&*record.topic) {
                            state.missing_checked = Some(Instant::now());
                        }
                        return Err(no_partition(&record.topic, n, p));
                    }
                    producer.enqueue(record, done)?.wait().await
                })));
            }
            (None, Some(key)) => Some(partition_for_key(key, n)),
            (None, None) => None,
        };
        let value_len = record.value.as_ref().map_or(0, Bytes::len);
        let accumulator = self.route(state, &record.topic, partition, n, value_len);
        drop(topics);
        let pending = PendingRecord {
            timestamp: record.timestamp.unwrap_or_else(now_ms),
            key: record.key,
            value: record.value,
            headers: record.headers,
            done,
        };
        let size = pending.size();
        let batch_size = self.shared.config.batch_size;
        let mut pending = Some(pending);
        if accumulator.try_add(&self.shared.budget, &mut pending, size, batch_size)? {
            return Ok(Queued::Done);
        }
        let shared = self.shared.clone();
        Ok(Queued::Waiting(Box::pin(
            async move { accumulator.add(&shared.budget, &mut pending, size, batch_size).await },
        )))
    }

    /// Waits until the cluster's metadata has `topic`, for at most
    /// `max_block`, asking again after each retriable failure.
    async fn wait_for_topic(&self, topic: &str) -> Result<()> {
        let config = &self.shared.config;
        let deadline = Instant::now() + config.max_block;
        let mut backoff = config.retry_backoff;
        loop {
            match self.shared.client.partition_count(topic).await {
                Ok(_) => return Ok(()),
                Err(err) if err.is_retriable() && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.retry_backoff_max);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The accumulator of `partition` of the topic whose entry is `state`
    /// (`None`: the sticky partition for a keyless record of `size`
    /// bytes), started if new.
    fn route(
        &self,
        state: &mut TopicState,
        topic: &Arc<str>,
        partition: Option<u32>,
        n: u32,
        size: usize,
    ) -> Arc<Accumulator> {
        let partition = partition.unwrap_or_else(|| {
            let batch_size = self.shared.config.batch_size;
            let sticky = match &mut state.sticky {
                Some((partition, sent)) if *sent >= batch_size && n > 1 => {
                    let mut next = self.random(n);
                    if next == *partition {
                        next = (next + 1) % n;
                    }
                    (*partition, *sent) = (next, 0);
                    state.sticky.as_mut().expect("just set")
                }
                Some(sticky) if sticky.0 < n => sticky,
                _ => state.sticky.insert((self.random(n), 0)),
            };
            sticky.1 += size.max(1);
            sticky.0
        });
        let index = partition as usize;
        if state.accumulators.len() <= index {
            state.accumulators.resize(index + 1, None);
        }
        if let Some(accumulator) = &state.accumulators[index] {
            return accumulator.clone();
        }
        let accumulator = Arc::new(Accumulator::default());
        let task = PartitionTask::new(self.shared.clone(), accumulator.clone(), topic.clone(), partition);
        let handle = tokio::spawn(task.run());
        self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
        state.accumulators[index] = Some(accumulator.clone());
        accumulator
    }

    fn random(&self, n: u32) -> u32 {
        (splitmix(&mut self.shared.rng.lock().unwrap_or_else(|p| p.into_inner())) % u64::from(n)) as u32
    }

    /// Sends every queued record now and waits until all are acknowledged
    /// or failed.
    pub async fn flush(&self) {
        let mut waits = Vec::new();
        for accumulator in self.shared.accumulators() {
            let (tx, rx) = oneshot::channel();
            {
                let mut gathering = accumulator.lock();
                if gathering.closed {
                    continue;
                }
                gathering.close_open();
                let upto = gathering.n_batches;
                gathering.flushes.push((upto, tx));
            }
            accumulator.wake.notify_one();
            waits.push(rx);
        }
        futures::future::join_all(waits).await;
    }

    /// Flushes, then stops the partition tasks. Clones of this producer can
    /// no longer send.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.close_accumulators();
        let tasks: Vec<JoinHandle<()>> =
            self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Kafka's partition for a key: murmur2 of the key bytes, made positive,
/// modulo the partition count — so keys land where Kafka would put them.
pub fn partition_for_key(key: &[u8], n_partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % n_partitions
}

/// MurmurHash2, 32-bit, with Kafka's seed.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The wait before retry number `retry` (counted from 1): `retry_backoff`
/// for the first, doubled for each after it up to `retry_backoff_max`, as
/// Kafka's producer waits; ±20% jitter (from `random`), so producers
/// retrying together spread out.
fn retry_backoff(config: &ProducerConfig, retry: u32, random: u64) -> Duration {
    let exp = config.retry_backoff.saturating_mul(1 << retry.saturating_sub(1).min(10));
    let capped = exp.min(config.retry_backoff_max);
    capped.mul_f64(0.8 + (random % 41) as f64 / 100.0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A sealed batch: its records (to answer them, and to rebuild the batch
/// under a new epoch) and its bytes as sent.
struct Sealed {
    records: Vec<PendingRecord>,
    bytes: Bytes,
    first_seq: i32,
    /// When its first record was added: its delivery timeout counts from
    /// there, as Kafka's does from `send`.
    created_at: Instant,
    /// Ordinal of this batch among the partition's sealed batches.
    ordinal: u64,
}

type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64>> + Send>>;

struct PartitionTask {
    shared: Arc<Shared>,
    accumulator: Arc<Accumulator>,
    topic: Arc<str>,
    partition: u32,
    /// Sealed, unacknowledged batches, oldest first; the first `n_sent` are
    /// on the wire.
    queue: VecDeque<Sealed>,
    n_sent: usize,
    in_flight: FuturesOrdered<InFlight>,
    epoch: i16,
    next_seq: i32,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    retry_at: Option<Instant>,
    attempts: u32,
    /// The linger end the clock was last asked to ring for.
    linger_alarm: Option<Instant>,
}

impl PartitionTask {
    fn new(shared: Arc<Shared>, accumulator: Arc<Accumulator>, topic: Arc<str>, partition: u32) -> PartitionTask {
        PartitionTask {
            shared,
            accumulator,
            topic,
            partition,
            queue: VecDeque::new(),
            n_sent: 0,
            in_flight: FuturesOrdered::new(),
            epoch: 0,
            next_seq: 0,
            flush_waiters: Vec::new(),
            retry_at: None,
            attempts: 0,
            linger_alarm: None,
        }
    }

    async fn run(mut self) {
        loop {
            self.send_window().await;
            let (linger_end, done) = self.take().await;
            if done && self.queue.is_empty() {
                return;
            }
            if self.n_sent < self.queue.len().min(self.shared.config.max_in_flight) && self.retry_at.is_none() {
                continue; // what `take` sealed can go on the wire now
            }
            let room = self.queue.len() < PARTITION_SEALED_BATCHES_MAX;
            if let Some(end) = linger_end.filter(|end| room && self.linger_alarm != Some(*end)) {
                // The clock rings on time; tokio's timer below, up to a
                // millisecond later, is the fallback.
                self.linger_alarm = Some(end);
                let alarm: std::sync::Weak<dyn Alarm> = Arc::downgrade(&self.accumulator) as _;
                self.shared.linger_clock.set(end.into_std(), alarm);
            }
            tokio::select! {
                _ = self.accumulator.wake.notified(), if room => {}
                _ = sleep_until(linger_end), if room && linger_end.is_some() => {}
                _ = sleep_until(self.retry_at), if self.retry_at.is_some() => self.retry_at = None,
                Some(result) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_answer(result).await,
            }
        }
    }

    /// Takes from the accumulator what is ready, as far as there is room
    /// for sealed batches: the full batches, and the open one once its
    /// linger is over (at once when it is zero: no timer, as tokio's round
    /// up to the next millisecond) and it can go on the wire at once, or
    /// the accumulator is closed. Seals them. Returns when the open batch's
    /// linger ends (`None` once it is over), and whether the accumulator
    /// is closed and empty.
    ///
    /// A batch whose linger is over while the in-flight window is full (or
    /// a retry waits) stays open and gathers records until a batch is
    /// answered, as Kafka's does: under load a short linger makes larger
    /// batches, not a queue of small ones.
    async fn take(&mut self) -> (Option<Instant>, bool) {
        let room = PARTITION_SEALED_BATCHES_MAX.saturating_sub(self.queue.len());
        let linger = self.shared.config.linger;
        let (batches, linger_end, done) = {
            let mut gathering = self.accumulator.lock();
            let linger_over = gathering.open_since.is_some_and(|since| since + linger <= Instant::now());
            let sendable =
                self.retry_at.is_none() && self.queue.len() + gathering.full.len() < self.shared.config.max_in_flight;
            if ((linger_over && sendable) || gathering.closed) && gathering.full.len() < room {
                gathering.close_open();
            }
            let n = gathering.full.len().min(room);
            let batches: Vec<(u64, Vec<PendingRecord>, Instant)> = gathering.full.drain(..n).collect();
            gathering.n_records -= batches.iter().map(|(_, records, _)| records.len()).sum::<usize>();
            // A flush waits for the batches closed before it; once all of
            // them are taken, the task answers it as they are acknowledged.
            let next_untaken = gathering.full.front().map_or(u64::MAX, |(ordinal, _, _)| *ordinal);
            let flushes = std::mem::take(&mut gathering.flushes);
            for (upto, tx) in flushes {
                if upto < next_untaken {
                    self.flush_waiters.push((upto, tx));
                } else {
                    gathering.flushes.push((upto, tx));
                }
            }
            let done = gathering.closed && gathering.open.is_empty() && gathering.full.is_empty();
            // Over and held back: an answer, not the timer, lets it go.
            let linger_end = gathering.open_since.map(|since| since + linger).filter(|_| !linger_over);
            (batches, linger_end, done)
        };
        if !batches.is_empty() {
            self.accumulator.room.notify_waiters();
        }
        for (ordinal, records, created_at) in batches {
            self.seal(ordinal, records, created_at).await;
        }
        self.answer_flushes();
        (linger_end, done)
    }

    fn build(&self, records: &[PendingRecord], producer_id: i64, first_seq: i32) -> Bytes {
        let mut builder = BatchBuilder::new();
        if producer_id >= 0 {
            builder = builder.producer(producer_id, self.epoch, first_seq);
        }
        builder.reserve(records.iter().map(PendingRecord::size).sum());
        for r in records {
            builder.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.headers);
        }
        let compression = match self.shared.config.compression {
            Compression::None => BatchCompression::None,
            Compression::Lz4 => BatchCompression::Lz4,
        };
        builder.finish(compression)
    }

    /// Seals a batch taken from the accumulator.
    async fn seal(&mut self, ordinal: u64, records: Vec<PendingRecord>, created_at: Instant) {
        let producer_id = match producer_id(self.shared.clone()).await {
            Ok(id) => id,
            Err(error) => {
                self.fail(records, &error);
                return;
            }
        };
        let first_seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(records.len() as i32) & i32::MAX;
        let bytes = self.build(&records, producer_id, first_seq);
        self.queue.push_back(Sealed { records, bytes, first_seq, created_at, ordinal });
    }

    /// Puts batches on the wire up to the in-flight limit.
    async fn send_window(&mut self) {
        if self.retry_at.is_some() {
            return;
        }
        while self.n_sent < self.queue.len() && self.n_sent < self.shared.config.max_in_flight {
            let batch = self.queue[self.n_sent].bytes.clone();
            let request = send_batch(
                self.shared.client.clone(),
                self.shared.dispatch.clone(),
                self.topic.clone(),
                self.partition,
                batch,
                self.attempts as usize,
            );
            self.in_flight.push_back(Box::pin(request));
            self.n_sent += 1;
        }
    }

    async fn on_answer(&mut self, result: Result<i64>) {
        self.n_sent -= 1;
        match result {
            Ok(base_offset) => {
                self.attempts = 0;
                if let Some(batch) = self.queue.pop_front() {
                    self.complete(batch, base_offset);
                }
                self.answer_flushes();
            }
            // Not written, for sure: restart the sequence under a new epoch
            // and resend at once.
            Err(error) if error.code() == Some(ErrorCode::OutOfOrderSequence) => {
                self.drain_window(1).await;
                self.restart_sequence().await;
            }
            Err(error) if error.is_retriable() => {
                self.shared.client.note_error(&self.topic, self.partition, &error);
                self.drain_window(1).await;
                let timeout = self.shared.config.delivery_timeout;
                // Batches are created in order, so the expired ones lead.
                let expired = self.queue.iter().take_while(|b| b.created_at.elapsed() >= timeout).count();
                if expired > 0 {
                    // Their fate is unknown: fail every batch past its
                    // timeout at once (one per answer would keep a flush
                    // waiting a round trip per batch under a lasting
                    // error), and start afresh with a new epoch so later
                    // batches cannot be refused for a gap.
                    let error = Error::api(
                        ErrorCode::Timeout,
                        format!("not acknowledged within the delivery timeout {timeout:?}; last error: {error}"),
                    );
                    for batch in self.queue.drain(..expired).collect::<Vec<_>>() {
                        self.fail(batch.records, &error);
                    }
                    self.restart_sequence().await;
                    self.answer_flushes();
                    return;
                }
                self.attempts += 1;
                ProducerCounters::add(&self.shared.counters.retries, 1);
                let backoff = error.retry_after().unwrap_or_else(|| self.backoff());
                // As Kafka's producer does: a retry is worth a line, since
                // it holds the partition's records back for the backoff.
                tracing::warn!(
                    topic = %self.topic, partition = self.partition, attempt = self.attempts, ?backoff, %error,
                    "a produce request failed; retrying"
                );
                self.retry_at = Some(Instant::now() + backoff);
            }
            Err(error) => {
                // Refused for good: this batch was not written.
                if let Some(batch) = self.queue.pop_front() {
                    self.fail(batch.records, &error);
                }
                self.drain_window(0).await;
                self.restart_sequence().await;
                self.answer_flushes();
            }
        }
    }

    /// Waits for every batch still on the wire, keeping those that
    /// succeeded (possible only without idempotence) and leaving the rest
    /// to be resent. `first` is the queue position of the first batch still
    /// on the wire: 1 when the failed front batch stays queued, 0 when it
    /// was removed.
    async fn drain_window(&mut self, first: usize) {
        let mut position = first;
        while let Some(result) = self.in_flight.next().await {
            self.n_sent -= 1;
            match result {
                Ok(base_offset) => {
                    if let Some(batch) = self.queue.remove(position) {
                        self.complete(batch, base_offset);
                    }
                }
                Err(_) => position += 1,
            }
        }
        self.n_sent = 0;
    }

    /// A new epoch, sequences from 0, and every unacknowledged batch
    /// rebuilt under it.
    async fn restart_sequence(&mut self) {
        if !self.shared.config.idempotence {
            return;
        }
        self.epoch = self.epoch.wrapping_add(1) & i16::MAX;
        self.next_seq = 0;
        ProducerCounters::add(&self.shared.counters.epoch_restarts, 1);
        let Ok(producer_id) = producer_id(self.shared.clone()).await else { return };
        let mut rebuilt = VecDeque::with_capacity(self.queue.len());
        while let Some(mut batch) = self.queue.pop_front() {
            batch.first_seq = self.next_seq;
            self.next_seq += batch.records.len() as i32;
            batch.bytes = self.build(&batch.records, producer_id, batch.first_seq);
            rebuilt.push_back(batch);
        }
        self.queue = rebuilt;
    }

    fn backoff(&self) -> Duration {
        let random = splitmix(&mut self.shared.rng.lock().unwrap_or_else(|p| p.into_inner()));
        retry_backoff(&self.shared.config, self.attempts, random)
    }

    fn complete(&self, batch: Sealed, base_offset: i64) {
        let counters = &self.shared.counters;
        ProducerCounters::add(&counters.records_sent, batch.records.len() as u64);
        ProducerCounters::add(&counters.bytes_sent, batch.bytes.len() as u64);
        ProducerCounters::add(&counters.batches_sent, 1);
        self.shared.budget.give_back(batch.records.iter().map(PendingRecord::size).sum());
        let acknowledged_at = std::time::Instant::now();
        self.report_tagged(&batch.records, Ok(base_offset), acknowledged_at);
        for (i, record) in batch.records.into_iter().enumerate() {
            if let Done::Tag(_) = record.done {
                continue;
            }
            let offset = if base_offset >= 0 { base_offset + i as i64 } else { -1 };
            let metadata = RecordMetadata {
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                timestamp: record.timestamp,
                acknowledged_at,
            };
            record.done.finish(Ok(metadata));
        }
    }

    /// Fails a batch's records.
    fn fail(&self, records: Vec<PendingRecord>, error: &Error) {
        let shared = &self.shared;
        ProducerCounters::add(&shared.counters.records_failed, records.len() as u64);
        shared.budget.give_back(records.iter().map(PendingRecord::size).sum());
        self.report_tagged(&records, Err(error), std::time::Instant::now());
        for record in records {
            if let Done::Tag(_) = record.done {
                continue; // reported with its batch above
            }
            record.done.finish(Err(error.clone()));
        }
    }

    /// Hands the outcome of a batch's tagged records, if it has any, to the
    /// delivery handler.
    fn report_tagged(
        &self,
        records: &[PendingRecord],
        outcome: std::result::Result<i64, &Error>,
        acknowledged_at: std::time::Instant,
    ) {
        let Some(handler) = &self.shared.delivery else { return };
        if !records.iter().any(|r| matches!(r.done, Done::Tag(_))) {
            return;
        }
        let batch = DeliveredBatch { topic: &self.topic, partition: self.partition, outcome, acknowledged_at, records };
        run_user_code("delivery handler", || handler.delivered(&batch));
    }

    /// Answers the flushes whose batches are all done.
    fn answer_flushes(&mut self) {
        let oldest_pending = self.queue.front().map_or(u64::MAX, |b| b.ordinal);
        let waiters = std::mem::take(&mut self.flush_waiters);
        for (upto, tx) in waiters {
            if upto < oldest_pending {
                let _ = tx.send(());
            } else {
                self.flush_waiters.push((upto, tx));
            }
        }
    }
}

/// The producer id (fetched once per producer), or -1 without idempotence.
async fn producer_id(shared: Arc<Shared>) -> Result<i64> {
    if !shared.config.idempotence {
        return Ok(-1);
    }
    let client = shared.client.clone();
    let config = shared.config.clone();
    shared
        .producer_id
        .get_or_try_init(|| async move {
            // A retriable error (the controller electing a leader, say) is
            // retried with backoff, as a batch would be, until the delivery
            // timeout: the records waiting on the id must not fail for it.
            let deadline = Instant::now() + config.delivery_timeout;
            let mut backoff = config.retry_backoff;
            loop {
                let answer = client
                    .call_any(|mut stub| async move { stub.init_producer_id(pb::InitProducerIdRequest {}).await })
                    .await
                    .and_then(|response| match Error::from_pb(response.error) {
                        Some(error) => Err(error),
                        None => Ok(response.producer_id),
                    });
                match answer {
                    Err(error) if error.is_retriable() && Instant::now() + backoff < deadline => {
                        tracing::debug!(%error, "no producer id yet; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(config.retry_backoff_max);
                    }
                    answer => return answer,
                }
            }
        })
        .await
        .copied()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends one batch to the partition's leader, in the next produce request
/// to that broker (see [`crate::dispatch`]); resolves to its base offset.
async fn send_batch(
    client: Client,
    dispatch: Arc<Dispatchers>,
    topic: Arc<str>,
    partition: u32,
    batch: Bytes,
    attempt: usize,
) -> Result<i64> {
    let addr = client.leader_addr(&topic, partition, attempt).await?;
    dispatch.send(&addr, topic, partition, batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_kafka_hashes_them() {
        // Values from Kafka's own tests of its murmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
        assert!(partition_for_key(b"21", 12) < 12);
    }

    #[test]
    fn the_first_retry_waits_the_configured_backoff_and_each_later_one_twice_as_long_up_to_the_max() {
        let config = ProducerConfig::default(); // 100 ms, at most 1 s
        let range = |retry: u32| {
            let waits: Vec<Duration> = (0..41).map(|random| retry_backoff(&config, retry, random)).collect();
            (*waits.iter().min().expect("some"), *waits.iter().max().expect("some"))
        };
        let ms = Duration::from_millis;
        assert_eq!(range(1), (ms(80), ms(120)));
        assert_eq!(range(2), (ms(160), ms(240)));
        assert_eq!(range(3), (ms(320), ms(480)));
        assert_eq!(range(4), (ms(640), ms(960)));
        assert_eq!(range(5), (ms(800), ms(1200)), "capped at retry_backoff_max, jitter on top");
        assert_eq!(range(40), (ms(800), ms(1200)));
    }

    static UNLIMITED: Budget = Budget { limit: usize::MAX, used: AtomicUsize::new(0), room: Notify::const_new() };

    fn pending(value: &'static [u8]) -> PendingRecord {
        let (tx, _rx) = oneshot::channel();
        PendingRecord {
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(value)),
            headers: Vec::new(),
            done: Done::Future(tx),
        }
    }

    /// Fills the accumulator to its record limit, then starts one more
    /// sender, which must wait.
    async fn fill_then_wait(accumulator: &Arc<Accumulator>) -> JoinHandle<Result<()>> {
        while accumulator.lock().n_records < PARTITION_QUEUE_RECORDS {
            accumulator.add(&UNLIMITED, &mut Some(pending(b"v")), 1, usize::MAX).await.expect("below the limit");
        }
        let accumulator = accumulator.clone();
        tokio::spawn(async move { accumulator.add(&UNLIMITED, &mut Some(pending(b"late")), 1, usize::MAX).await })
    }

    #[tokio::test]
    async fn the_accumulator_wakes_its_task_per_batch_and_holds_senders_back_when_full() {
        let accumulator = Arc::new(Accumulator::default());
        let batch_size = 3 * pending(b"v").size();
        accumulator.add(&UNLIMITED, &mut Some(pending(b"v")), pending(b"v").size(), batch_size).await.expect("first");
        // The first record of a batch wakes the task (a permit is stored).
        tokio::time::timeout(Duration::from_secs(5), accumulator.wake.notified()).await.expect("woken");
        accumulator.add(&UNLIMITED, &mut Some(pending(b"v")), pending(b"v").size(), batch_size).await.expect("second");
        {
            let gathering = accumulator.lock();
            assert_eq!((gathering.open.len(), gathering.full.len()), (2, 0), "no batch filled yet");
        }
        accumulator.add(&UNLIMITED, &mut Some(pending(b"v")), pending(b"v").size(), batch_size).await.expect("third");
        {
            let gathering = accumulator.lock();
            assert_eq!(
                (gathering.open.len(), gathering.full.len(), gathering.n_batches),
                (0, 1, 1),
                "the batch filled"
            );
            assert_eq!(gathering.full[0].1.len(), 3);
        }
        // Fill to the limit; the next sender waits for room.
        let waiting = fill_then_wait(&accumulator).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a full accumulator must hold the sender back");
        // The task takes the full batch: room for the waiting sender.
        {
            let mut gathering = accumulator.lock();
            let (_, taken, _) = gathering.full.pop_front().expect("full batch");
            gathering.n_records -= taken.len();
        }
        accumulator.room.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("let in").expect("join").expect("added");
        // Once full again, closing answers a waiting sender with Closed.
        let waiting = fill_then_wait(&accumulator).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        accumulator.close();
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("answered").expect("join");
        assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
    }

    #[tokio::test]
    async fn senders_wait_while_the_buffer_memory_is_spent_and_a_lone_large_record_still_goes() {
        let size = pending(b"v").size();
        let budget = Arc::new(Budget { limit: 2 * size, used: AtomicUsize::new(0), room: Notify::new() });
        let accumulator = Arc::new(Accumulator::default());
        for _ in 0..2 {
            accumulator.add(&budget, &mut Some(pending(b"v")), size, usize::MAX).await.expect("within the budget");
        }
        let waiting = tokio::spawn({
            let (accumulator, budget) = (accumulator.clone(), budget.clone());
            async move { accumulator.add(&budget, &mut Some(pending(b"v")), size, usize::MAX).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a spent budget must hold the sender back");
        assert_eq!(accumulator.lock().n_records, 2);
        // A batch answered gives its bytes back.
        budget.give_back(size);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("let in").expect("join").expect("added");
        assert_eq!(budget.used.load(Ordering::Acquire), 2 * size);
        // With nothing held, a record larger than the whole budget goes alone.
        budget.give_back(2 * size);
        assert!(budget.try_take(10 * size), "a lone large record");
        assert!(!budget.try_take(1), "nothing beside it");
    }

    #[tokio::test]
    async fn a_producer_dropped_without_close_ends_its_partition_tasks() {
        let producer = Producer::new(&Client::new("127.0.0.1:1").expect("client"));
        let clone = producer.clone();
        let topic: Arc<str> = "orders".into();
        for partition in [0, 1] {
            let mut topics = producer.shared.topics.lock().expect("topics");
            let state = topics.entry(topic.to_string()).or_default();
            drop(producer.route(state, &topic, Some(partition), 2, 1));
        }
        let shared = Arc::downgrade(&producer.shared);
        drop(producer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(shared.upgrade().is_some(), "a clone still in use keeps the tasks");
        drop(clone);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the partition tasks outlived every producer handle");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
