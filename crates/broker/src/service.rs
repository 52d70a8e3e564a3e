//! The client API: each RPC of `proto/api.proto`, answered from this node's
//! replicas and its copy of the cluster metadata.
//!
//! Produce and fetch go to a partition's leader; a broker that does not lead
//! it answers NOT_LEADER with the leader's address when it knows it. Admin
//! changes go through the controller, wherever its leader is (see
//! `ClusterNode`). Protobuf types are converted here and in
//! [`crate::convert`], nowhere else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_log::{LogError, Offset};
use strata_proto::api as pb;
use strata_raft::metadata::{ClusterMetadata, TopicInfo};
use strata_raft::{BatchData, ClusterNode, Group, Submission, submit};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::convert::{error_to_pb, ok_or_error};
use crate::disk::DiskGuard;
use crate::error::{ApiError, Code};
use crate::groups::state::Heartbeat;
use crate::groups::{Committed, Coordinator, assign::Assignor};
use crate::limits::{
    ADMIN_TIMEOUT, FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MAX, PARTITIONS_MAX, PRODUCE_TIMEOUT_DEFAULT,
    PRODUCE_TIMEOUT_MAX, THROTTLE_RETRY_AFTER,
};
use crate::metrics::Metrics;
use crate::topic_config;

/// The target of the `partition{topic, partition}` span made for each
/// partition of a produce or a fetch. `strata server` makes these spans
/// only at debug level or when it exports spans over OTLP. The log layer
/// formats a span's fields when the span is made: some 5,000 instructions
/// for every partition of every request, 3% of a one-record produce
/// (`bench/run cost`), for log lines the hot paths hardly ever write.
pub const PARTITION_SPAN_TARGET: &str = "strata::partition";

/// The broker's request handling, shared by every connection.
pub struct Broker {
    cluster: Arc<ClusterNode>,
    coordinator: Arc<Coordinator>,
    metrics: Arc<Metrics>,
    node_id: u64,
    /// Topic settings where a topic sets none.
    topic_defaults: BTreeMap<String, String>,
    /// Bytes of produce data in flight; a request that cannot take its
    /// share is answered THROTTLED.
    produce_budget: Arc<Semaphore>,
    produce_budget_bytes: usize,
    /// `testing.ack_before_quorum`: UNSAFE, answer acks=all once proposed
    /// (the chaos harness's control run, which must see lost writes).
    ack_before_quorum: bool,
    /// Refuses produce while the data directory's disk is almost full.
    disk: Arc<DiskGuard>,
}

impl Broker {
    /// A broker over a started cluster node.
    pub fn new(
        cluster: Arc<ClusterNode>,
        coordinator: Arc<Coordinator>,
        metrics: Arc<Metrics>,
        disk: Arc<DiskGuard>,
        config: &ServerConfig,
    ) -> Broker {
        let budget = config.produce_memory_bytes as usize;
        Broker {
            cluster,
            coordinator,
            metrics,
            node_id: config.node_id,
            topic_defaults: config.topic_defaults.clone(),
            produce_budget: Arc::new(Semaphore::new(budget)),
            produce_budget_bytes: budget,
            ack_before_quorum: config.testing_ack_before_quorum,
            disk,
        }
    }

    /// The cluster node underneath.
    pub fn cluster(&self) -> &Arc<ClusterNode> {
        &self.cluster
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn client_addr(metadata: &ClusterMetadata, id: u64) -> Option<String> {
        metadata.brokers.get(&id).and_then(|b| b.client_addr.clone())
    }

    /// The local replica of a partition, if this node leads it.
    fn leader_replica(&self, metadata: &ClusterMetadata, topic: &str, partition: u32) -> Result<Group, ApiError> {
        let info = find_topic(metadata, topic)?;
        let group_id = info.partitions.get(partition as usize).map(|p| p.group).ok_or_else(|| {
            ApiError::new(
                Code::UnknownPartition,
                format!("topic {topic} has {} partitions; there is no partition {partition}", info.partitions.len()),
            )
        })?;
        let Some(group) = self.cluster.raft_node().group(group_id) else {
            let hint = metadata.leaders.get(&group_id).map(|h| h.node).filter(|l| *l != self.node_id);
            let leader = hint.and_then(|id| Self::client_addr(metadata, id).map(|a| (id, a)));
            return Err(ApiError::not_leader(&format!("{topic}/{partition}"), leader));
        };
        if !group.raft.is_leader() {
            if let Some(fatal) = group.stopped_by() {
                // The replica stopped (a storage error): say so, rather than
                // that the leader is unknown, as its state would.
                return Err(ApiError::new(
                    Code::Unavailable,
                    format!(
                        "{topic}/{partition}: its replica on broker {} stopped after an error and serves nothing \
                         until it is reopened (tried again after a pause): {fatal}",
                        self.node_id
                    ),
                ));
            }
            let leader = current_leader(&group).filter(|l| *l != self.node_id);
            let leader = leader.and_then(|id| Self::client_addr(metadata, id).map(|a| (id, a)));
            return Err(ApiError::not_leader(&format!("{topic}/{partition}"), leader));
        }
        Ok(group)
    }

    /// Produce: checks each batch, proposes them in request order, then
    /// waits as `acks` asks: for all, until a majority has the batch on disk
    /// and it is applied; for leader and none, not at all (the batch is
    /// checked and proposed, its offset not yet known). Proposing before
    /// answering keeps a producer's batches in order whatever its acks.
    pub async fn produce(&self, request: pb::ProduceRequest) -> pb::ProduceResponse {
        let started = std::time::Instant::now();
        let response = self.produce_inner(request).await;
        self.metrics.produce_latency(started.elapsed());
        response
    }

    async fn produce_inner(&self, request: pb::ProduceRequest) -> pb::ProduceResponse {
        let total: usize = request.partitions.iter().map(|p| p.batch.len()).sum();
        if let Err(error) = self.disk.check_produce() {
            return pb::ProduceResponse { partitions: Vec::new(), error: Some(error_to_pb(&error)) };
        }
        let share = total.clamp(1, self.produce_budget_bytes) as u32;
        let Ok(permit) = self.produce_budget.clone().try_acquire_many_owned(share) else {
            let error = ApiError::throttled(
                format!("the broker's produce memory ({} bytes) is in use; retry later", self.produce_budget_bytes),
                THROTTLE_RETRY_AFTER,
            );
            return pb::ProduceResponse { partitions: Vec::new(), error: Some(error_to_pb(&error)) };
        };
        let acks = match pb::Acks::try_from(request.acks) {
            Ok(acks) => acks,
            Err(_) => {
                let error =
                    ApiError::new(Code::InvalidRequest, format!("acks {} is not all, leader or none", request.acks));
                return pb::ProduceResponse { partitions: Vec::new(), error: Some(error_to_pb(&error)) };
            }
        };
        let timeout = match request.timeout_ms {
            0 => PRODUCE_TIMEOUT_DEFAULT,
            ms => Duration::from_millis(u64::from(ms)).min(PRODUCE_TIMEOUT_MAX),
        };
        let metadata = self.cluster.metadata();
        let mut submitted = Vec::with_capacity(request.partitions.len());
        for p in request.partitions {
            let outcome = self.submit_one(&metadata, &p.topic, p.partition, p.batch).await;
            submitted.push((p.topic, p.partition, outcome));
        }
        let waits = submitted.into_iter().map(|(topic, partition, outcome)| {
            let metadata = &metadata;
            // Under its own target: see `PARTITION_SPAN_TARGET`.
            let span = tracing::info_span!(target: PARTITION_SPAN_TARGET, "partition", topic = %topic, partition);
            tracing::Instrument::instrument(
                async move {
                    let what = || format!("{topic}/{partition}");
                    let result = match outcome {
                        Err(e) => Err(e),
                        Ok((group, submission)) => {
                            let log_start = group.log.state().log_start_offset.0 as i64;
                            match (acks, submission) {
                                (_, Submission::Stored(p)) => Ok((p.base_offset as i64, true, log_start)),
                                // The control run's deliberate bug: acknowledged
                                // before a majority has it (offset unknown yet).
                                (pb::Acks::All, Submission::InFlight(_)) if self.ack_before_quorum => {
                                    Ok((-1, false, log_start))
                                }
                                (pb::Acks::All, Submission::InFlight(answer)) => {
                                    match tokio::time::timeout(timeout, Submission::InFlight(answer).wait()).await {
                                        Ok(Ok(p)) => Ok((p.base_offset as i64, p.duplicate, log_start)),
                                        Ok(Err(e)) => Err(ApiError::from_produce(e, &what(), |id| {
                                            Self::client_addr(metadata, id)
                                        })),
                                        Err(_) => Err(ApiError::new(
                                            Code::Timeout,
                                            format!(
                                                "{}: not replicated within {timeout:?}; it may still be written",
                                                what()
                                            ),
                                        )),
                                    }
                                }
                                (_, Submission::InFlight(_)) => Ok((-1, false, log_start)),
                            }
                        }
                    };
                    let (base_offset, duplicate, log_start_offset, error) = match result {
                        Ok((offset, duplicate, start)) => (offset, duplicate, start, None),
                        Err(e) => (-1, false, -1, Some(error_to_pb(&e))),
                    };
                    pb::PartitionProduceResult { topic, partition, error, base_offset, duplicate, log_start_offset }
                },
                span,
            )
        });
        let partitions = futures::future::join_all(waits).await;
        drop(permit);
        pb::ProduceResponse { partitions, error: None }
    }

    async fn submit_one(
        &self,
        metadata: &ClusterMetadata,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> Result<(Group, Submission), ApiError> {
        let group = self.leader_replica(metadata, topic, partition)?;
        let info = find_topic(metadata, topic)?;
        let settings = topic_config::ProduceSettings::resolve(&self.topic_defaults, &info.configs);
        let max = settings.max_message_bytes;
        if batch.len() as u64 > max {
            return Err(ApiError::new(
                Code::MessageTooLarge,
                format!("a batch of {} bytes is larger than max.message.bytes {max} of topic {topic}", batch.len()),
            ));
        }
        let total =
            strata_batch::batch_total_len(&batch).map_err(|e| ApiError::new(Code::CorruptBatch, e.to_string()))?;
        if total != batch.len() {
            return Err(ApiError::new(
                Code::CorruptBatch,
                format!("expected exactly one batch of {total} bytes, got {} bytes", batch.len()),
            ));
        }
        // Checked once here (CRC included); Raft and the log take it as is.
        let (data, header) =
            BatchData::validate(batch).map_err(|e| ApiError::new(Code::CorruptBatch, e.to_string()))?;
        let batch = match settings.compression_type {
            "lz4" => strata_batch::recompress(data.bytes(), strata_batch::Compression::Lz4).and_then(BatchData::new),
            "uncompressed" => {
                strata_batch::recompress(data.bytes(), strata_batch::Compression::None).and_then(BatchData::new)
            }
            _ => Ok(data),
        }
        .map_err(|e| ApiError::new(Code::CorruptBatch, format!("cannot re-encode for compression.type: {e}")))?;
        let (n_records, n_bytes) = (header.record_count.max(0) as u64, batch.bytes().len() as u64);
        let submission = submit(&group, batch).await.map_err(|e| {
            ApiError::from_produce(e, &format!("{topic}/{partition}"), |id| Self::client_addr(metadata, id))
        })?;
        if !matches!(submission, Submission::Stored(_)) {
            self.metrics.topic(topic).produced(n_records, n_bytes);
        }
        Ok((group, submission))
    }

    /// Fetch: committed batches of each partition, served as slices of the
    /// log, waiting (long poll) until `min_bytes` are there or `max_wait_ms`
    /// passed.
    pub async fn fetch(&self, request: pb::FetchRequest) -> pb::FetchResponse {
        let started = std::time::Instant::now();
        let response = self.fetch_inner(request).await;
        self.metrics.fetch_latency(started.elapsed());
        for p in &response.partitions {
            if p.records.is_empty() {
                continue;
            }
            // From the headers alone: validating here computed the CRC of
            // every byte served (30% of a 1 MB fetch's instructions,
            // `bench/run cost`); the consumer validates what it decodes.
            let n_records: u64 = p.records.iter().map(|chunk| strata_batch::count_records(chunk)).sum();
            let n_bytes = p.records.iter().map(|c| c.len() as u64).sum();
            self.metrics.topic(&p.topic).fetched(n_records, n_bytes);
        }
        response
    }

    async fn fetch_inner(&self, request: pb::FetchRequest) -> pb::FetchResponse {
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
        let deadline = Instant::now() + max_wait;
        let total_max = match request.max_bytes {
            0 => FETCH_BYTES_MAX,
            n => (n as usize).min(FETCH_BYTES_MAX),
        };
        loop {
            let metadata = self.cluster.metadata();
            let mut results = Vec::with_capacity(request.partitions.len());
            let mut watchers = Vec::new();
            let mut total = 0usize;
            let mut failed = false;
            for p in &request.partitions {
                // Log lines about this partition's read carry its name (see
                // `PARTITION_SPAN_TARGET`).
                let _span =
                    tracing::info_span!(target: PARTITION_SPAN_TARGET, "partition", topic = %p.topic, partition = p.partition)
                        .entered();
                let mut result = pb::PartitionFetchResult {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next_offset: p.offset,
                    ..Default::default()
                };
                match self.leader_replica(&metadata, &p.topic, p.partition) {
                    Err(e) => {
                        result.error = Some(error_to_pb(&e));
                        failed = true;
                    }
                    Ok(group) => {
                        // Watch before reading, so a commit in between wakes us.
                        let mut watcher = group.state_machine.watch_high_watermark();
                        watcher.mark_unchanged();
                        watchers.push(watcher);
                        let high_watermark = group.state_machine.high_watermark();
                        let state = group.log.state();
                        result.high_watermark = high_watermark.0;
                        result.log_start_offset = state.log_start_offset.0;
                        let wanted = match p.max_bytes {
                            0 => FETCH_BYTES_DEFAULT,
                            n => n as usize,
                        };
                        let budget = wanted.min(total_max.saturating_sub(total));
                        if budget == 0 {
                            results.push(result);
                            continue;
                        }
                        match group.log.read_offsets(Offset(p.offset), budget, high_watermark) {
                            Ok(read) => {
                                total += read.n_bytes;
                                result.next_offset = read.next_offset.0;
                                result.records = read.chunks;
                            }
                            Err(e) => {
                                failed = true;
                                result.error = Some(error_to_pb(&read_error(e, &p.topic, p.partition)));
                            }
                        }
                    }
                }
                results.push(result);
            }
            let satisfied = total >= request.min_bytes.max(1) as usize || failed;
            if satisfied || watchers.is_empty() || Instant::now() >= deadline {
                return pb::FetchResponse { partitions: results, error: None };
            }
            let changes = watchers.iter_mut().map(|w| Box::pin(w.changed()));
            let _ = tokio::time::timeout_at(deadline, futures::future::select_all(changes)).await;
        }
    }

    /// ListOffsets: earliest (-2), latest (-1) or the first offset at a
    /// timestamp, per partition.
    pub async fn list_offsets(&self, request: pb::ListOffsetsRequest) -> pb::ListOffsetsResponse {
        let metadata = self.cluster.metadata();
        let partitions = request
            .partitions
            .into_iter()
            .map(|q| {
                let found = self.leader_replica(&metadata, &q.topic, q.partition).map(|group| {
                    let high_watermark = group.state_machine.high_watermark().0 as i64;
                    match q.timestamp {
                        -2 => group.log.state().log_start_offset.0 as i64,
                        -1 => high_watermark,
                        ts => group.log.offset_for_timestamp(ts).map_or(-1, |o| o.0 as i64).min(high_watermark),
                    }
                });
                let (offset, error) = match found {
                    Ok(offset) => (offset, None),
                    Err(e) => (-1, Some(error_to_pb(&e))),
                };
                pb::PartitionOffset { topic: q.topic, partition: q.partition, error, offset }
            })
            .collect();
        pb::ListOffsetsResponse { partitions }
    }

    /// DeleteRecords: per partition, on its leader, deletes the records
    /// before the offset asked (at most the high watermark; -1 for it) and
    /// answers the log start offset after it.
    pub async fn delete_records(&self, request: pb::DeleteRecordsRequest) -> pb::DeleteRecordsResponse {
        let metadata = self.cluster.metadata();
        let deletes = request.partitions.into_iter().map(|q| {
            let metadata = &metadata;
            async move {
                let result = async {
                    self.check_delete_records(metadata, &q.topic)?;
                    let group = self.leader_replica(metadata, &q.topic, q.partition)?;
                    let high_watermark = group.state_machine.high_watermark().0;
                    let offset = match q.offset {
                        -1 => high_watermark,
                        o if o >= 0 && o as u64 <= high_watermark => o as u64,
                        o => {
                            return Err(ApiError::new(
                                Code::OffsetOutOfRange,
                                format!(
                                    "cannot delete {}/{} before offset {o}: only committed records can be deleted, and its high watermark is {high_watermark}",
                                    q.topic, q.partition
                                ),
                            ));
                        }
                    };
                    let what = format!("{}/{}", q.topic, q.partition);
                    strata_raft::retention::delete_records(&group, offset, crate::retention::now_ms()).await.map_err(
                        |e| ApiError::from_produce(e, &what, |id| Self::client_addr(metadata, id)),
                    )
                }
                .await;
                let (offset, error) = match result {
                    Ok(start) => (start as i64, None),
                    Err(e) => (-1, Some(error_to_pb(&e))),
                };
                pb::PartitionOffset { topic: q.topic, partition: q.partition, error, offset }
            }
        });
        pb::DeleteRecordsResponse { partitions: futures::future::join_all(deletes).await }
    }

    /// Whether records of `topic` may be deleted before an offset: not of
    /// the internal offsets topic (the groups' committed offsets), nor of a
    /// topic whose cleanup.policy lacks `delete` (a compacted topic keeps
    /// every key's latest value), as Kafka refuses both.
    fn check_delete_records(&self, metadata: &ClusterMetadata, topic: &str) -> Result<(), ApiError> {
        if topic == crate::groups::OFFSETS_TOPIC {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("{topic} is internal: its records are the consumer groups' committed offsets"),
            ));
        }
        let info = find_topic(metadata, topic)?;
        if !topic_config::TopicSettings::resolve(&self.topic_defaults, &info.configs).delete {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("{topic} has cleanup.policy=compact: records are deleted only with the delete policy"),
            ));
        }
        Ok(())
    }

    /// The leader of a partition's group: as this node's replica sees it,
    /// or else the last leader reported to the controller (a hint).
    fn leader_of(&self, metadata: &ClusterMetadata, group: u64) -> Option<u64> {
        match self.cluster.raft_node().group(group) {
            Some(local) => current_leader(&local),
            None => metadata.leaders.get(&group).map(|h| h.node),
        }
    }

    fn partitions_pb(&self, metadata: &ClusterMetadata, info: &TopicInfo) -> Vec<pb::PartitionMetadata> {
        info.partitions
            .iter()
            .enumerate()
            .map(|(i, p)| pb::PartitionMetadata {
                partition: i as u32,
                leader: self.leader_of(metadata, p.group),
                replicas: p.replicas.clone(),
                error: None,
            })
            .collect()
    }

    fn brokers_pb(metadata: &ClusterMetadata) -> Vec<pb::Broker> {
        metadata
            .brokers
            .values()
            .map(|b| pb::Broker {
                id: b.id,
                address: b.client_addr.clone().unwrap_or_default(),
                raft_address: b.raft_addr.clone(),
            })
            .collect()
    }

    /// Metadata: brokers, and the topics asked for (all when none).
    pub async fn metadata(&self, request: pb::MetadataRequest) -> pb::MetadataResponse {
        let metadata = self.cluster.metadata();
        let names: Vec<String> =
            if request.topics.is_empty() { metadata.topics.keys().cloned().collect() } else { request.topics };
        let topics = names
            .into_iter()
            .map(|name| match find_topic(&metadata, &name) {
                Ok(info) => pb::TopicMetadata {
                    name,
                    error: None,
                    partitions: self.partitions_pb(&metadata, info),
                    configs: info.configs.clone().into_iter().collect(),
                },
                Err(e) => pb::TopicMetadata { name, error: Some(error_to_pb(&e)), ..Default::default() },
            })
            .collect();
        pb::MetadataResponse {
            brokers: Self::brokers_pb(&metadata),
            topics,
            controller: self.cluster.controller_leader(),
        }
    }

    /// A topic just made or changed, as the admin answers carry it.
    fn topic_pb(&self, info: TopicInfo) -> pb::TopicMetadata {
        pb::TopicMetadata {
            name: info.name.clone(),
            error: None,
            partitions: self.partitions_pb(&self.cluster.metadata(), &info),
            configs: info.configs.into_iter().collect(),
        }
    }

    /// CreateTopic, checked here before it goes to the controller.
    pub async fn create_topic(&self, request: pb::CreateTopicRequest) -> pb::CreateTopicResponse {
        match self.try_create_topic(request).await {
            Ok(info) => pb::CreateTopicResponse { error: None, topic: Some(self.topic_pb(info)) },
            Err(e) => pb::CreateTopicResponse { error: Some(error_to_pb(&e)), topic: None },
        }
    }

    async fn try_create_topic(&self, request: pb::CreateTopicRequest) -> Result<TopicInfo, ApiError> {
        topic_config::validate_name(&request.name).map_err(|m| ApiError::new(Code::InvalidRequest, m))?;
        if request.partitions == 0 || request.partitions > PARTITIONS_MAX {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("a topic has 1 to {PARTITIONS_MAX} partitions, not {}", request.partitions),
            ));
        }
        let configs: BTreeMap<String, String> = request.configs.into_iter().collect();
        topic_config::validate(&configs).map_err(|e| ApiError::new(Code::InvalidConfig, e.to_string()))?;
        let metadata = self.cluster.metadata();
        if metadata.topics.contains_key(&request.name) {
            return Err(ApiError::new(Code::TopicAlreadyExists, format!("topic {} already exists", request.name)));
        }
        let n_brokers = metadata.brokers.len() as u32;
        let replication_factor = match request.replication_factor {
            0 => n_brokers.clamp(1, 3),
            rf => rf,
        };
        if replication_factor > n_brokers {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("replication factor {replication_factor} is larger than the {n_brokers} registered brokers"),
            ));
        }
        let create = self.cluster.create_topic(&request.name, request.partitions, replication_factor, configs);
        admin_bounded(create).await?.map_err(|e| match e {
            strata_raft::ClusterError::Invalid(m) if m.contains("already exists") => {
                ApiError::new(Code::TopicAlreadyExists, m)
            }
            other => ApiError::from_cluster(other),
        })
    }

    /// DeleteTopic.
    pub async fn delete_topic(&self, request: pb::DeleteTopicRequest) -> pb::DeleteTopicResponse {
        let result = match find_topic(&self.cluster.metadata(), &request.name) {
            Err(e) => Err(e),
            Ok(_) => admin_bounded(self.cluster.delete_topic(&request.name))
                .await
                .and_then(|r| r.map_err(ApiError::from_cluster)),
        };
        pb::DeleteTopicResponse { error: ok_or_error(result) }
    }

    /// AlterTopicConfig: the resulting configuration is checked whole, then
    /// the change goes to the controller.
    pub async fn alter_topic_config(&self, request: pb::AlterTopicConfigRequest) -> pb::AlterTopicConfigResponse {
        match self.try_alter_topic_config(request).await {
            Ok(configs) => pb::AlterTopicConfigResponse { error: None, configs: configs.into_iter().collect() },
            Err(e) => pb::AlterTopicConfigResponse { error: Some(error_to_pb(&e)), configs: Default::default() },
        }
    }

    async fn try_alter_topic_config(
        &self,
        request: pb::AlterTopicConfigRequest,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let metadata = self.cluster.metadata();
        let info = find_topic(&metadata, &request.name)?;
        let set: BTreeMap<String, String> = request.set.into_iter().collect();
        if let Some(key) = request.delete.iter().find(|k| set.contains_key(*k)) {
            return Err(ApiError::new(Code::InvalidRequest, format!("{key} is both set and deleted")));
        }
        let known = |k: &String| topic_config::TOPIC_KEYS.iter().any(|(known, _)| known == k);
        if let Some(key) = request.delete.iter().find(|k| !known(k)) {
            return Err(ApiError::new(Code::InvalidConfig, format!("cannot delete unknown topic config key {key}")));
        }
        let mut result = info.configs.clone();
        for key in &request.delete {
            result.remove(key);
        }
        result.extend(set.clone());
        topic_config::validate(&result).map_err(|e| ApiError::new(Code::InvalidConfig, e.to_string()))?;
        let alter = self.cluster.alter_topic_config(&request.name, set, request.delete);
        admin_bounded(alter).await?.map_err(ApiError::from_cluster)
    }

    /// CreatePartitions: grows a topic through the controller (which
    /// refuses a count not above the current one).
    pub async fn create_partitions(&self, request: pb::CreatePartitionsRequest) -> pb::CreatePartitionsResponse {
        match self.try_create_partitions(request).await {
            Ok(info) => pb::CreatePartitionsResponse { error: None, topic: Some(self.topic_pb(info)) },
            Err(e) => pb::CreatePartitionsResponse { error: Some(error_to_pb(&e)), topic: None },
        }
    }

    async fn try_create_partitions(&self, request: pb::CreatePartitionsRequest) -> Result<TopicInfo, ApiError> {
        let metadata = self.cluster.metadata();
        find_topic(&metadata, &request.topic)?;
        if request.topic == crate::groups::OFFSETS_TOPIC {
            // Groups are placed by hash(group) % its partition count.
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("{} is internal: its partition count places the consumer groups", request.topic),
            ));
        }
        if request.count > PARTITIONS_MAX {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("a topic has 1 to {PARTITIONS_MAX} partitions, not {}", request.count),
            ));
        }
        let add = self.cluster.add_partitions(&request.topic, request.count);
        admin_bounded(add).await?.map_err(ApiError::from_cluster)
    }

    /// ReassignPartition: checks the replica set, then records it through
    /// the controller (the partition's leader carries the move out).
    pub async fn reassign_partition(&self, request: pb::ReassignPartitionRequest) -> pb::ReassignPartitionResponse {
        pb::ReassignPartitionResponse { error: ok_or_error(self.try_reassign_partition(request).await) }
    }

    async fn try_reassign_partition(&self, request: pb::ReassignPartitionRequest) -> Result<(), ApiError> {
        let metadata = self.cluster.metadata();
        let info = find_topic(&metadata, &request.topic)?;
        if request.partition as usize >= info.partitions.len() {
            return Err(ApiError::new(
                Code::UnknownPartition,
                format!(
                    "topic {} has {} partitions, not {}",
                    request.topic,
                    info.partitions.len(),
                    request.partition + 1
                ),
            ));
        }
        if request.replicas.is_empty() {
            return Err(ApiError::new(Code::InvalidRequest, "a partition needs at least one replica"));
        }
        let distinct: std::collections::BTreeSet<u64> = request.replicas.iter().copied().collect();
        if distinct.len() != request.replicas.len() {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("replicas {:?} name a broker twice", request.replicas),
            ));
        }
        if let Some(unknown) = request.replicas.iter().find(|id| !metadata.brokers.contains_key(id)) {
            return Err(ApiError::new(Code::InvalidRequest, format!("broker {unknown} is not registered")));
        }
        let reassign = self.cluster.reassign(&request.topic, request.partition, request.replicas);
        admin_bounded(reassign).await?.map_err(ApiError::from_cluster)
    }

    /// RemoveBroker: moves the broker's replicas to the others and
    /// removes it, through the controller.
    pub async fn remove_broker(&self, request: pb::RemoveBrokerRequest) -> pb::RemoveBrokerResponse {
        let removal = admin_bounded(self.cluster.remove_broker(request.broker_id)).await;
        match removal.and_then(|r| r.map_err(ApiError::from_cluster)) {
            Ok(moved) => pb::RemoveBrokerResponse { error: None, partitions_moved: moved as u32 },
            Err(err) => pb::RemoveBrokerResponse { error: ok_or_error(Err(err)), partitions_moved: 0 },
        }
    }

    /// ListTopics.
    pub async fn list_topics(&self) -> pb::ListTopicsResponse {
        pb::ListTopicsResponse { names: self.cluster.metadata().topics.keys().cloned().collect() }
    }

    /// DescribeTopic: replicas, leaders, and the extent of the replicas
    /// this broker holds.
    pub async fn describe_topic(&self, request: pb::DescribeTopicRequest) -> pb::DescribeTopicResponse {
        let metadata = self.cluster.metadata();
        let info = match find_topic(&metadata, &request.name) {
            Ok(info) => info,
            Err(e) => return pb::DescribeTopicResponse { error: Some(error_to_pb(&e)), ..Default::default() },
        };
        let partitions = info
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut d = pb::PartitionDescription {
                    partition: i as u32,
                    replicas: p.replicas.clone(),
                    leader: self.leader_of(&metadata, p.group),
                    ..Default::default()
                };
                if let Some(group) = self.cluster.raft_node().group(p.group) {
                    let state = group.log.state();
                    d.local = true;
                    d.leader = current_leader(&group);
                    d.log_start_offset = state.log_start_offset.0;
                    d.log_end_offset = state.next_offset.0;
                    d.high_watermark = group.state_machine.high_watermark().0;
                    d.size_bytes = state.size_bytes;
                    d.segments = state.n_segments as u32;
                }
                d
            })
            .collect();
        pb::DescribeTopicResponse {
            error: None,
            name: info.name.clone(),
            configs: info.configs.clone().into_iter().collect(),
            partitions,
            node_id: self.node_id,
        }
    }

    /// DescribeCluster.
    pub async fn describe_cluster(&self) -> pb::DescribeClusterResponse {
        let metadata = self.cluster.metadata();
        pb::DescribeClusterResponse {
            brokers: Self::brokers_pb(&metadata),
            controller: self.cluster.controller_leader(),
            node_id: self.node_id,
            topics: metadata.topics.len() as u32,
            partitions: metadata.topics.values().map(|t| t.partitions.len() as u32).sum(),
        }
    }

    /// InitProducerId: a new id from the controller, epoch 0.
    pub async fn init_producer_id(&self) -> pb::InitProducerIdResponse {
        let allocated =
            admin_bounded(self.cluster.allocate_producer_id()).await.and_then(|r| r.map_err(ApiError::from_cluster));
        match allocated {
            Ok(id) => pb::InitProducerIdResponse { error: None, producer_id: id as i64, producer_epoch: 0 },
            Err(e) => pb::InitProducerIdResponse { error: Some(error_to_pb(&e)), producer_id: -1, producer_epoch: -1 },
        }
    }
}

impl Broker {
    /// CreateAcls: every binding is checked, then all go to the controller
    /// in one change.
    pub async fn create_acls(&self, request: pb::CreateAclsRequest) -> pb::CreateAclsResponse {
        let bindings: Result<Vec<_>, ApiError> = request.acls.iter().map(crate::convert::acl_from_pb).collect();
        let result = match bindings {
            Err(e) => Err(e),
            Ok(acls) => {
                admin_bounded(self.cluster.create_acls(acls)).await.and_then(|r| r.map_err(ApiError::from_cluster))
            }
        };
        pb::CreateAclsResponse { error: ok_or_error(result) }
    }

    /// DeleteAcls: removes the bindings the filter selects.
    pub async fn delete_acls(&self, request: pb::DeleteAclsRequest) -> pb::DeleteAclsResponse {
        let result = match crate::convert::acl_filter_from_pb(request.filter) {
            Err(e) => Err(e),
            Ok(filter) => {
                admin_bounded(self.cluster.delete_acls(filter)).await.and_then(|r| r.map_err(ApiError::from_cluster))
            }
        };
        match result {
            Ok(deleted) => {
                pb::DeleteAclsResponse { error: None, deleted: deleted.iter().map(crate::convert::acl_to_pb).collect() }
            }
            Err(e) => pb::DeleteAclsResponse { error: Some(error_to_pb(&e)), deleted: Vec::new() },
        }
    }

    /// DescribeAcls: the bindings the filter selects, from this node's
    /// copy of the metadata.
    pub async fn describe_acls(&self, request: pb::DescribeAclsRequest) -> pb::DescribeAclsResponse {
        match crate::convert::acl_filter_from_pb(request.filter) {
            Ok(filter) => {
                let metadata = self.cluster.metadata();
                let acls = metadata.acls.iter().filter(|acl| filter.matches(acl)).map(crate::convert::acl_to_pb);
                pb::DescribeAclsResponse { error: None, acls: acls.collect() }
            }
            Err(e) => pb::DescribeAclsResponse { error: Some(error_to_pb(&e)), acls: Vec::new() },
        }
    }

    /// FindCoordinator.
    pub async fn find_coordinator(&self, request: pb::FindCoordinatorRequest) -> pb::FindCoordinatorResponse {
        match self.coordinator.find(&request.group) {
            Ok((node_id, address)) => pb::FindCoordinatorResponse { error: None, node_id, address },
            Err(e) => pb::FindCoordinatorResponse { error: Some(error_to_pb(&e)), ..Default::default() },
        }
    }

    /// GroupHeartbeat: join, stay or leave; answers the member's assignment.
    pub async fn group_heartbeat(&self, request: pb::GroupHeartbeatRequest) -> pb::GroupHeartbeatResponse {
        let assignor = match Assignor::parse(&request.assignor) {
            Some(a) => a,
            None => {
                let e = ApiError::new(
                    Code::InvalidRequest,
                    format!("unknown assignor {:?}; use range, roundrobin or sticky", request.assignor),
                );
                return pb::GroupHeartbeatResponse { error: Some(error_to_pb(&e)), ..Default::default() };
            }
        };
        let session = Duration::from_millis(u64::from(request.session_timeout_ms.max(1)));
        let hb = Heartbeat {
            member_id: request.member_id,
            epoch: request.member_epoch,
            instance_id: (!request.instance_id.is_empty()).then_some(request.instance_id),
            topics: request.topics.into_iter().collect(),
            assignor: Some(assignor),
            owned: from_topic_partitions(request.owned),
            session_timeout: session,
            rebalance_timeout: Duration::from_millis(u64::from(request.rebalance_timeout_ms.max(1))),
        };
        match self.coordinator.heartbeat(&request.group, hb).await {
            Ok(answer) => pb::GroupHeartbeatResponse {
                error: None,
                member_id: answer.member_id,
                member_epoch: answer.epoch,
                heartbeat_interval_ms: if answer.reconciling {
                    100
                } else {
                    (session.as_millis() as u32 / 5).clamp(100, 3000)
                },
                assignment: to_topic_partitions(&answer.assignment),
            },
            Err(e) => pb::GroupHeartbeatResponse { error: Some(error_to_pb(&e)), ..Default::default() },
        }
    }

    /// OffsetCommit.
    pub async fn offset_commit(&self, request: pb::OffsetCommitRequest) -> pb::OffsetCommitResponse {
        let offsets = request
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), Committed { offset: o.offset, metadata: o.metadata }))
            .collect();
        let result = self.coordinator.commit(&request.group, &request.member_id, request.member_epoch, offsets).await;
        pb::OffsetCommitResponse { error: ok_or_error(result) }
    }

    /// OffsetFetch.
    pub async fn offset_fetch(&self, request: pb::OffsetFetchRequest) -> pb::OffsetFetchResponse {
        let tps =
            (!request.partitions.is_empty()).then(|| from_topic_partitions(request.partitions).into_iter().collect());
        match self.coordinator.fetch(&request.group, tps).await {
            Ok(found) => pb::OffsetFetchResponse { error: None, offsets: committed_to_pb(found) },
            Err(e) => pb::OffsetFetchResponse { error: Some(error_to_pb(&e)), offsets: Vec::new() },
        }
    }

    /// ListGroups: the groups this broker coordinates.
    pub async fn list_groups(&self) -> pb::ListGroupsResponse {
        self.coordinator.load_led_shards().await;
        pb::ListGroupsResponse { groups: self.coordinator.list().await }
    }

    /// DescribeGroup.
    pub async fn describe_group(&self, request: pb::DescribeGroupRequest) -> pb::DescribeGroupResponse {
        match self.coordinator.describe(&request.group).await {
            Ok(d) => pb::DescribeGroupResponse {
                error: None,
                group: request.group,
                state: d.state.to_string(),
                group_epoch: d.epoch,
                assignor: d.assignor.to_string(),
                members: d
                    .members
                    .into_iter()
                    .map(|(member_id, instance_id, member_epoch, assignment)| pb::GroupMember {
                        member_id,
                        instance_id: instance_id.unwrap_or_default(),
                        member_epoch,
                        assignment: to_topic_partitions(&assignment),
                    })
                    .collect(),
                offsets: committed_to_pb(d.offsets.into_iter().map(|(tp, c)| (tp, Some(c))).collect()),
                coordinator: self.node_id,
            },
            Err(e) => pb::DescribeGroupResponse { error: Some(error_to_pb(&e)), ..Default::default() },
        }
    }

    /// DeleteGroup.
    pub async fn delete_group(&self, request: pb::DeleteGroupRequest) -> pb::DeleteGroupResponse {
        pb::DeleteGroupResponse { error: ok_or_error(self.coordinator.delete(&request.group).await) }
    }
}

type Tp = (String, u32);

fn from_topic_partitions(list: Vec<pb::TopicPartitions>) -> std::collections::BTreeSet<Tp> {
    list.into_iter().flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p))).collect()
}

fn to_topic_partitions(set: &std::collections::BTreeSet<Tp>) -> Vec<pb::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (topic, p) in set {
        by_topic.entry(topic).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| pb::TopicPartitions { topic: topic.to_string(), partitions })
        .collect()
}

fn committed_to_pb(found: Vec<(Tp, Option<Committed>)>) -> Vec<pb::CommittedOffset> {
    found
        .into_iter()
        .map(|((topic, partition), c)| pb::CommittedOffset {
            topic,
            partition,
            offset: c.as_ref().map_or(-1, |c| c.offset as i64),
            metadata: c.map(|c| c.metadata).unwrap_or_default(),
        })
        .collect()
}

/// Bounds an admin change by `ADMIN_TIMEOUT`.
async fn admin_bounded<T>(change: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(ADMIN_TIMEOUT, change).await.map_err(|_| {
        ApiError::new(Code::Timeout, format!("the controller did not apply the change within {ADMIN_TIMEOUT:?}"))
    })
}

fn find_topic<'a>(metadata: &'a ClusterMetadata, topic: &str) -> Result<&'a TopicInfo, ApiError> {
    metadata.topics.get(topic).ok_or_else(|| ApiError::new(Code::UnknownTopic, format!("topic {topic} does not exist")))
}

fn current_leader(group: &Group) -> Option<u64> {
    use openraft::async_runtime::WatchReceiver;
    group.raft.metrics().borrow_watched().current_leader
}

fn read_error(err: LogError, topic: &str, partition: u32) -> ApiError {
    match err {
        LogError::OffsetOutOfRange { offset, log_start, log_end } => ApiError::new(
            Code::OffsetOutOfRange,
            format!("offset {offset} is outside {topic}/{partition}, which holds offsets {log_start} to {log_end}"),
        ),
        other => ApiError::new(Code::Unknown, format!("reading {topic}/{partition}: {other}")),
    }
}
