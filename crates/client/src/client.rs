//! [`Client`]: connections to the brokers and a cache of the cluster
//! metadata, shared by producers, consumers and admin.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::api as pb;
use strata_proto::api::strata_client::StrataClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long connecting to a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message the client accepts from a broker (a fetch answer).
pub(crate) const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest HTTP/2 frame the client accepts (HTTP/2's default is 16 KiB).
const H2_FRAME_BYTES: u32 = 1024 * 1024;
/// HTTP/2 flow-control windows, per answer and per connection (hyper's
/// defaults are 2 and 5 MiB; a fetch answer may be up to 64 MiB).
const H2_STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
const H2_CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// The leader's broker id, when known.
    pub leader: Option<u64>,
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<u64>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Broker id → client address.
    brokers: BTreeMap<u64, String>,
    topics: HashMap<String, Vec<PartitionInfo>>,
    /// Per partition, how many calls failed without learning its leader:
    /// the replica guessed next when no broker names a leader (a broker
    /// describes only replicas it has open; the first replica may be down).
    misses: HashMap<(String, u32), usize>,
}

struct Inner {
    bootstrap: Vec<String>,
    /// TLS to every broker, when the cluster's client port speaks it.
    tls: Option<crate::Tls>,
    channels: Mutex<HashMap<String, Channel>>,
    cache: Mutex<Cache>,
    /// Bumped whenever the cache's topics change (see
    /// [`Client::metadata_generation`]).
    generation: AtomicU64,
    /// How old the cached topics may grow before they are fetched again,
    /// in ms (Kafka's `metadata.max.age.ms`).
    max_age_ms: AtomicU64,
    /// Whether the task that keeps the cache fresh was started.
    refresher: AtomicBool,
}

/// How old cached metadata may grow by default: Kafka's
/// `metadata.max.age.ms` default, 5 minutes.
const METADATA_MAX_AGE_DEFAULT: Duration = Duration::from_secs(300);
/// The shortest max age: a refresh is a request to a broker.
const METADATA_MAX_AGE_MIN: Duration = Duration::from_millis(100);
/// How often the refresher looks whether the metadata is due.
const REFRESHER_TICK: Duration = Duration::from_secs(1);

/// Fetches the cached topics' metadata again every max age while a
/// [`Client`] sharing `inner` exists, so that partitions added to a topic
/// (and leaders that moved without an error telling) are seen.
async fn refresh_periodically(inner: std::sync::Weak<Inner>) {
    let mut last = tokio::time::Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let max_age = Duration::from_millis(strong.max_age_ms.load(Ordering::Relaxed));
        let due = last + max_age;
        drop(strong);
        tokio::time::sleep_until(due.min(tokio::time::Instant::now() + REFRESHER_TICK)).await;
        if tokio::time::Instant::now() < due {
            continue;
        }
        let Some(strong) = inner.upgrade() else { return };
        let client = Client { inner: strong };
        let topics: Vec<String> =
            client.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).topics.keys().cloned().collect();
        if !topics.is_empty()
            && let Err(err) = client.fetch_metadata(&topics).await
        {
            tracing::debug!(error = %err, "metadata refresh failed; retried at the next");
        }
        last = tokio::time::Instant::now();
    }
}

/// A handle on a Strata cluster: cheap to clone, shared by everything
/// made from it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client for the cluster reachable at `bootstrap` (`host:port`,
    /// several separated by commas). Connects lazily; the first request
    /// tells whether the cluster is there.
    pub fn new(bootstrap: &str) -> Result<Client> {
        Client::build(bootstrap, None)
    }

    /// As [`Client::new`], for a cluster whose client port speaks TLS
    /// (`tls.*` in the server's configuration).
    pub fn with_tls(bootstrap: &str, tls: crate::Tls) -> Result<Client> {
        tls.check()?;
        Client::build(bootstrap, Some(tls))
    }

    fn build(bootstrap: &str, tls: Option<crate::Tls>) -> Result<Client> {
        let bootstrap: Vec<String> =
            bootstrap.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if bootstrap.is_empty() {
            return Err(Error::Invalid("no bootstrap server given".into()));
        }
        let inner = Inner {
            bootstrap,
            tls,
            channels: Mutex::default(),
            cache: Mutex::default(),
            generation: AtomicU64::new(0),
            max_age_ms: AtomicU64::new(METADATA_MAX_AGE_DEFAULT.as_millis() as u64),
            refresher: AtomicBool::new(false),
        };
        Ok(Client { inner: Arc::new(inner) })
    }

    /// As [`Client::new`], then fetches the metadata once, so a wrong
    /// address fails here.
    pub async fn connect(bootstrap: &str) -> Result<Client> {
        let client = Client::new(bootstrap)?;
        client.refresh_metadata(&[]).await?;
        Ok(client)
    }

    /// The gRPC stub for the broker at `addr`.
    pub(crate) fn stub(&self, addr: &str) -> Result<StrataClient<Channel>> {
        Ok(StrataClient::new(self.channel(addr)?)
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The HTTP/2 connection to the broker at `addr`, made lazily and
    /// shared by every call there.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let scheme = if self.inner.tls.is_some() { "https" } else { "http" };
                let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
                    .map_err(|e| Error::Invalid(format!("bad broker address {addr}: {e}")))?;
                if let Some(tls) = &self.inner.tls {
                    endpoint = endpoint
                        .tls_config(tls.config())
                        .map_err(|e| Error::Invalid(format!("TLS to {addr}: {}", strata_proto::error_chain(&e))))?;
                }
                let endpoint = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    // Large frames and windows for megabyte fetch answers,
                    // as the broker has for produce requests.
                    .max_frame_size(H2_FRAME_BYTES)
                    .initial_stream_window_size(H2_STREAM_WINDOW_BYTES)
                    .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(10));
                let channel = endpoint.connect_lazy();
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(channel)
    }

    /// Some broker to ask cluster-wide questions: a known one, else a
    /// bootstrap address. `attempt` rotates through them.
    pub(crate) fn any_broker(&self, attempt: usize) -> String {
        let cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = self.inner.bootstrap.clone();
        for addr in cache.brokers.values() {
            if !all.contains(addr) {
                all.push(addr.clone());
            }
        }
        all[attempt % all.len()].clone()
    }

    /// Calls `f` on one broker after another until one answers (at most
    /// one round over the known brokers), starting with the first: metadata
    /// then comes from the broker that just made an admin change, if any.
    pub(crate) async fn call_any<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(StrataClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = {
            let cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            self.inner.bootstrap.len() + cache.brokers.len()
        };
        let mut last = Error::Transport("no broker reachable".into());
        for attempt in 0..n.max(1) {
            let addr = self.any_broker(attempt);
            match f(self.stub(&addr)?).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => {
                    let error = Error::from_status(status);
                    if !matches!(error, Error::Transport(_)) {
                        return Err(error);
                    }
                    last = Error::Transport(format!("{addr}: {error}"));
                }
            }
        }
        Err(last)
    }

    /// Every known broker's client address, bootstrap ones included.
    pub(crate) fn broker_addrs(&self) -> Vec<String> {
        let cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = cache.brokers.values().cloned().collect();
        if all.is_empty() {
            all = self.inner.bootstrap.clone();
        }
        all
    }

    /// Fetches metadata for `topics` (all when empty) and updates the cache.
    /// The first call also starts, on the current runtime, the task that
    /// refreshes the cached topics every max age while the client exists
    /// (see [`Client::set_metadata_max_age`]).
    pub async fn refresh_metadata(&self, topics: &[String]) -> Result<()> {
        self.fetch_metadata(topics).await?;
        if !self.inner.refresher.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh_periodically(Arc::downgrade(&self.inner)));
        }
        Ok(())
    }

    async fn fetch_metadata(&self, topics: &[String]) -> Result<()> {
        let request = pb::MetadataRequest { topics: topics.to_vec() };
        let response = self
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.metadata(request).await }
            })
            .await?;
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        for broker in response.brokers {
            if !broker.address.is_empty() {
                cache.brokers.insert(broker.id, broker.address);
            }
        }
        // A topic this client may not see fails the call (after the other
        // topics are cached), as Kafka's TOPIC_AUTHORIZATION_FAILED does:
        // waiting for it to appear would be in vain.
        let mut refused = None;
        for topic in response.topics {
            if let Some(error) = topic.error.filter(|e| e.code != pb::ErrorCode::None as i32) {
                if error.code == pb::ErrorCode::NotAuthorized as i32 {
                    refused = Error::from_pb(Some(error));
                }
                cache.topics.remove(&topic.name);
                continue;
            }
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| PartitionInfo { partition: p.partition, leader: p.leader, replicas: p.replicas })
                .collect();
            cache.topics.insert(topic.name, partitions);
        }
        self.inner.generation.fetch_add(1, Ordering::Release);
        refused.map_or(Ok(()), Err)
    }

    /// How old the cached metadata of the topics in use may grow before it
    /// is fetched again (Kafka's `metadata.max.age.ms`; 5 minutes by
    /// default). Errors (a partition's leader moved) refresh it at once;
    /// what only the periodic refresh brings is partitions added to a
    /// topic, which producers and consumers of this client then use.
    pub fn set_metadata_max_age(&self, age: Duration) {
        let age = age.max(METADATA_MAX_AGE_MIN);
        self.inner.max_age_ms.store(age.as_millis() as u64, Ordering::Relaxed);
    }

    /// The partitions of `topic`, from the cache or the cluster.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionInfo>> {
        if let Some(partitions) = self.cached_partitions(topic) {
            return Ok(partitions);
        }
        self.refresh_metadata(&[topic.to_string()]).await?;
        self.cached_partitions(topic)
            .ok_or_else(|| Error::api(crate::ErrorCode::UnknownTopic, format!("topic {topic} does not exist")))
    }

    /// How many partitions `topic` has (from the cache, asking the cluster
    /// only when the topic is not known yet): the producer's per-record
    /// question, answered without copying the partition list.
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.cached_partition_count(topic) {
            return Ok(n);
        }
        self.refresh_metadata(&[topic.to_string()]).await?;
        self.cached_partition_count(topic)
            .ok_or_else(|| Error::api(crate::ErrorCode::UnknownTopic, format!("topic {topic} does not exist")))
    }

    /// Changes whenever the cached topics change: what a caller read from
    /// the cache is still what it holds while this has not moved.
    pub(crate) fn metadata_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// How many partitions `topic` has, if the cache knows it.
    pub(crate) fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).topics.get(topic).map(|p| p.len() as u32)
    }

    fn cached_partitions(&self, topic: &str) -> Option<Vec<PartitionInfo>> {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).topics.get(topic).cloned()
    }

    /// The address of the broker believed to lead `topic`/`partition`: the
    /// known leader, else one replica after another as `attempt` grows.
    pub(crate) async fn leader_addr(&self, topic: &str, partition: u32, attempt: usize) -> Result<String> {
        let mut partitions = self.partitions(topic).await?;
        if !partitions.iter().any(|p| p.partition == partition) {
            // Perhaps a partition added since the cache was filled.
            self.refresh_metadata(&[topic.to_string()]).await?;
            partitions = self.partitions(topic).await?;
        }
        let info = partitions.iter().find(|p| p.partition == partition).ok_or_else(|| {
            Error::api(crate::ErrorCode::UnknownPartition, format!("topic {topic} has no partition {partition}"))
        })?;
        let cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let by_id = |id: &u64| cache.brokers.get(id).cloned();
        let attempt = attempt + cache.misses.get(&(topic.to_string(), partition)).copied().unwrap_or(0);
        let replica = (!info.replicas.is_empty()).then(|| info.replicas[attempt % info.replicas.len()]);
        let addr = info.leader.as_ref().and_then(by_id).or_else(|| replica.as_ref().and_then(by_id));
        drop(cache);
        Ok(addr.unwrap_or_else(|| self.any_broker(attempt)))
    }

    /// Learns from an error: a NOT_LEADER naming the leader updates the
    /// cache at once; any other error forgets the topic, so the next call
    /// fetches fresh metadata, and moves the partition's guess to its next
    /// replica, in case the metadata names no leader again.
    pub(crate) fn note_error(&self, topic: &str, partition: u32, error: &Error) {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Error::Api { leader: Some((id, addr)), .. } = error {
            cache.brokers.insert(*id, addr.clone());
            let known = cache.topics.get_mut(topic).and_then(|ps| ps.iter_mut().find(|p| p.partition == partition));
            if let Some(p) = known {
                p.leader = Some(*id);
                return;
            }
        }
        *cache.misses.entry((topic.to_string(), partition)).or_default() += 1;
        cache.topics.remove(topic);
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// The offset for a ListOffsets query (-2 earliest, -1 latest, else a
    /// timestamp), from the partition's leader.
    pub(crate) async fn list_offset(&self, topic: &str, partition: u32, timestamp: i64) -> Result<u64> {
        let query = pb::PartitionOffsetQuery { topic: topic.to_string(), partition, timestamp };
        let offset = self
            .ask_leader(topic, partition, |mut stub| {
                let request = pb::ListOffsetsRequest { partitions: vec![query.clone()] };
                async move { stub.list_offsets(request).await.map(|r| r.into_inner().partitions.into_iter().next()) }
            })
            .await?;
        u64::try_from(offset).map_err(|_| Error::Invalid(format!("no record at or after timestamp {timestamp}")))
    }

    /// Deletes the records of `topic`/`partition` before `offset` (-1: the
    /// high watermark) on its leader; returns the partition's log start
    /// offset after it.
    pub(crate) async fn delete_records(&self, topic: &str, partition: u32, offset: i64) -> Result<u64> {
        let target = pb::PartitionOffset { topic: topic.to_string(), partition, error: None, offset };
        let start = self
            .ask_leader(topic, partition, |mut stub| {
                let request = pb::DeleteRecordsRequest { partitions: vec![target.clone()] };
                async move { stub.delete_records(request).await.map(|r| r.into_inner().partitions.into_iter().next()) }
            })
            .await?;
        u64::try_from(start).map_err(|_| Error::Invalid(format!("no log start offset for {topic}/{partition}")))
    }

    /// Sends `call` to the leader of `topic`/`partition` and returns the
    /// offset its one result carries. A partition just created or whose
    /// leader just failed has none for an election timeout or two: retriable
    /// failures are asked again, with backoff, for a while.
    async fn ask_leader<F, Fut>(&self, topic: &str, partition: u32, call: F) -> Result<i64>
    where
        F: Fn(StrataClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Option<pb::PartitionOffset>, tonic::Status>>,
    {
        let mut last = Error::Transport("no attempt".into());
        let deadline = tokio::time::Instant::now() + crate::consumer::LEADER_WAIT_MAX;
        let mut backoff = Duration::from_millis(50);
        for attempt in 0.. {
            if attempt > 0 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            let addr = self.leader_addr(topic, partition, attempt).await?;
            let result = match call(self.stub(&addr)?).await {
                Ok(result) => result,
                Err(status) => {
                    last = Error::from_status(status);
                    self.note_error(topic, partition, &last);
                    continue;
                }
            };
            let Some(result) = result else { return Err(Error::Transport(format!("{addr} sent no offset"))) };
            match Error::from_pb(result.error) {
                None => return Ok(result.offset),
                Some(e) if e.is_retriable() => {
                    self.note_error(topic, partition, &e);
                    last = e;
                }
                Some(e) => return Err(e),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_topic_moves_the_metadata_generation() {
        let client = Client::new("127.0.0.1:1").expect("client");
        let before = client.metadata_generation();
        client.note_error("orders", 0, &Error::Closed);
        assert!(client.metadata_generation() > before, "a producer's cached partition count must be read again");
    }
}
