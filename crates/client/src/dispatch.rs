//! One produce request per broker for many partitions' batches.
//!
//! A producer's partition tasks hand each sealed batch to the dispatcher of
//! its leader's address. The dispatcher keeps at most `max_in_flight`
//! produce requests on the wire to that broker (Kafka's
//! `max.in.flight.requests.per.connection`); a batch that arrives while
//! they are all out waits, and the next request carries every batch that
//! waited, oldest first. Under light load each batch still goes out at
//! once, alone; under load the requests grow instead of multiplying, so
//! the brokers answer far fewer of them.
//!
//! Unlike Kafka's, a request may carry two batches of one partition: the
//! broker proposes a request's batches in its order, so they stay in order,
//! and each partition's own window (`max_in_flight` batches) still bounds
//! them. Allowing one batch per partition per request, as Kafka does, left
//! too few batches on the wire: at Kafka's default 16 KiB batches a
//! three-node cluster took 54–57k records/s of 1 KB, against 61–70k with one
//! request per batch and 82–90k with this (docs/benchmarks.md, session 14).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use strata_proto::api as pb;
use strata_proto::{api_paths, chained};
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, RESPONSE_BYTES_MAX};
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::ProducerCounters;

/// A request is not filled past this many bytes of batches (one batch
/// larger than it still goes, alone). Far below the broker's default
/// request limit (64 MiB).
const REQUEST_BYTES_MAX: usize = 8 << 20;

/// One batch waiting for a request, and where its outcome goes: the
/// partition's base offset, or why it failed.
struct Item {
    topic: Arc<str>,
    partition: u32,
    batch: Bytes,
    reply: oneshot::Sender<Result<i64>>,
}

/// What every request of a producer carries alike.
#[derive(Clone)]
pub(crate) struct RequestSettings {
    pub acks: pb::Acks,
    pub timeout: Duration,
    pub max_in_flight: usize,
}

/// The dispatchers of one producer, one per broker address, started on
/// first use. Dropping this ends them once their requests are answered.
pub(crate) struct Dispatchers {
    client: Client,
    settings: RequestSettings,
    counters: Arc<ProducerCounters>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Item>>>,
}

impl Dispatchers {
    pub fn new(client: Client, settings: RequestSettings, counters: Arc<ProducerCounters>) -> Dispatchers {
        Dispatchers { client, settings, counters, queues: Mutex::default() }
    }

    /// Sends `batch` for `topic`/`partition` to the broker at `addr` in the
    /// next request there; resolves to the batch's base offset. Must be
    /// called inside a tokio runtime.
    pub async fn send(&self, addr: &str, topic: Arc<str>, partition: u32, batch: Bytes) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(addr, Item { topic, partition, batch, reply });
        // Each request is bounded by its own timeout; the wait before it is
        // bounded by those of the requests ahead. This bound only guards
        // against a dispatcher that stopped: dropping `answer` withdraws the
        // batch if it has not gone out yet.
        let bound = (self.settings.timeout + Duration::from_secs(5)) * (self.settings.max_in_flight as u32 + 1);
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Transport(format!("the producer's requests to {addr} stopped"))),
            Err(_) => Err(Error::api(ErrorCode::Timeout, format!("no answer from {addr} in time"))),
        }
    }

    fn enqueue(&self, addr: &str, item: Item) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let item = match queues.get(addr) {
            Some(queue) => match queue.send(item) {
                Ok(()) => return,
                // Its task ended (a panic, or a runtime shut down): start anew.
                Err(mpsc::error::SendError(item)) => item,
            },
            None => item,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        queues.insert(addr.to_string(), tx);
        let dispatcher = Dispatcher {
            client: self.client.clone(),
            addr: addr.to_string(),
            settings: self.settings.clone(),
            counters: self.counters.clone(),
        };
        tokio::spawn(dispatcher.run(rx));
    }
}

/// The task that sends one producer's batches to one broker.
struct Dispatcher {
    client: Client,
    addr: String,
    settings: RequestSettings,
    counters: Arc<ProducerCounters>,
}

impl Dispatcher {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut waiting: VecDeque<Item> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        let limit = self.settings.max_in_flight.max(1);
        loop {
            while in_flight.len() < limit {
                while let Ok(item) = rx.try_recv() {
                    waiting.push_back(item);
                }
                // A batch whose sender gave up is not sent.
                waiting.retain(|item| !item.reply.is_closed());
                if waiting.is_empty() {
                    break;
                }
                let items = take_request(&mut waiting);
                ProducerCounters::add(&self.counters.produce_requests, 1);
                in_flight.push(self.request(items));
            }
            if !open && waiting.is_empty() && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                item = rx.recv(), if open && in_flight.len() < limit => match item {
                    Some(item) => waiting.push_back(item),
                    None => open = false,
                },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
    }

    /// Sends one request of `items` and answers each of them.
    async fn request(&self, items: Vec<Item>) {
        let partitions = items
            .iter()
            .map(|item| pb::PartitionRecords {
                topic: item.topic.to_string(),
                partition: item.partition,
                batch: item.batch.clone(),
            })
            .collect();
        let request = pb::ProduceRequest {
            acks: self.settings.acks.into(),
            timeout_ms: self.settings.timeout.as_millis() as u32,
            partitions,
        };
        match self.call(request).await {
            Err(error) => {
                for item in items {
                    let _ = item.reply.send(Err(error.clone()));
                }
            }
            Ok(results) if results.len() != items.len() => {
                let error = Error::Transport(format!(
                    "{} answered {} results for a produce of {} batches",
                    self.addr,
                    results.len(),
                    items.len()
                ));
                for item in items {
                    let _ = item.reply.send(Err(error.clone()));
                }
            }
            Ok(results) => {
                for (item, result) in items.into_iter().zip(results) {
                    let outcome = match Error::from_pb(result.error) {
                        Some(error) => Err(error),
                        None => Ok(result.base_offset),
                    };
                    let _ = item.reply.send(outcome);
                }
            }
        }
    }

    /// The request's per-partition results, in the request's order, or the
    /// error that failed it whole.
    ///
    /// The request goes out with its batches shared, not copied into
    /// tonic's buffer (`strata_proto::chained`).
    async fn call(&self, request: pb::ProduceRequest) -> Result<Vec<pb::PartitionProduceResult>> {
        let mut channel = self.client.channel(&self.addr)?;
        let timeout = self.settings.timeout + Duration::from_secs(5);
        let call = chained::unary::<_, pb::ProduceResponse>(
            &mut channel,
            api_paths::PRODUCE,
            request,
            usize::MAX,
            RESPONSE_BYTES_MAX,
        );
        let response = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => response,
            Ok(Err(status)) => return Err(Error::from_status(status)),
            Err(_) => return Err(Error::api(ErrorCode::Timeout, format!("no answer from {} in time", self.addr))),
        };
        if let Some(error) = Error::from_pb(response.error) {
            return Err(error);
        }
        Ok(response.partitions)
    }
}

/// Takes from the front of `waiting` the batches of the next request, up to
/// [`REQUEST_BYTES_MAX`] bytes (at least one batch). It stops at the first
/// batch that does not fit, so none overtakes an older one.
fn take_request(waiting: &mut VecDeque<Item>) -> Vec<Item> {
    let mut taken = Vec::new();
    let mut bytes = 0;
    while let Some(item) = waiting.front() {
        if !taken.is_empty() && bytes + item.batch.len() > REQUEST_BYTES_MAX {
            break;
        }
        bytes += item.batch.len();
        taken.extend(waiting.pop_front());
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(topic: &str, partition: u32, len: usize) -> (Item, oneshot::Receiver<Result<i64>>) {
        let (reply, rx) = oneshot::channel();
        (Item { topic: topic.into(), partition, batch: Bytes::from(vec![0u8; len]), reply }, rx)
    }

    fn names(items: &[Item]) -> Vec<(String, u32)> {
        items.iter().map(|i| (i.topic.to_string(), i.partition)).collect()
    }

    #[test]
    fn a_request_takes_what_waited_in_order_even_two_batches_of_a_partition() {
        let mut receivers = Vec::new();
        let mut waiting = VecDeque::new();
        for (topic, partition) in [("a", 0), ("a", 1), ("a", 0), ("b", 0)] {
            let (item, rx) = item(topic, partition, 10);
            waiting.push_back(item);
            receivers.push(rx);
        }
        let first = take_request(&mut waiting);
        assert_eq!(names(&first), [("a".into(), 0), ("a".into(), 1), ("a".into(), 0), ("b".into(), 0)]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_request_stops_at_its_byte_limit_and_no_batch_overtakes_one_that_did_not_fit() {
        let mut receivers = Vec::new();
        let mut waiting = VecDeque::new();
        let sizes = [(0, REQUEST_BYTES_MAX + 1), (1, 10), (2, REQUEST_BYTES_MAX), (1, 10), (3, 10)];
        for (partition, len) in sizes {
            let (item, rx) = item("t", partition, len);
            waiting.push_back(item);
            receivers.push(rx);
        }
        // A lone batch over the limit still goes.
        assert_eq!(names(&take_request(&mut waiting)), [("t".into(), 0)]);
        // Partition 2's batch does not fit after partition 1's: the small
        // ones behind it wait too.
        assert_eq!(names(&take_request(&mut waiting)), [("t".into(), 1)]);
        assert_eq!(names(&take_request(&mut waiting)), [("t".into(), 2)]);
        assert_eq!(names(&take_request(&mut waiting)), [("t".into(), 1), ("t".into(), 3)]);
        assert!(waiting.is_empty());
    }
}
