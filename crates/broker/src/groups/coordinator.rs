//! The group coordinator: consumer groups' membership and committed
//! offsets, kept in the internal compacted topic `__consumer_offsets`.
//!
//! Group `g` lives in partition `hash(g) % N` of that topic (Java's string
//! hash, as Kafka does); the broker leading that partition coordinates it.
//! Every change — a commit, an assignment handed out, a member gone — is
//! written to the partition (acks=all) before it is answered, so the next
//! leader, after a failover, rebuilds the same state by reading the
//! partition from its start (one *shard* per partition, reloaded whenever
//! the Raft term changes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_batch::{BatchBuilder, Compression};
use strata_raft::{ClusterNode, Group as RaftGroup, produce};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::assign::Tp;
use super::state::{Group, GroupRecord, MemberError};
use crate::error::{ApiError, Code};

/// The internal topic of groups and offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often expired members are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(250);

/// The key of a record in `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Key {
    Offset { group: String, topic: String, partition: u32 },
    Group { group: String },
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: u64,
    /// Client metadata.
    #[serde(default)]
    pub metadata: String,
}

#[derive(Default)]
struct Shard {
    term: Option<u64>,
    groups: BTreeMap<String, Group>,
    offsets: BTreeMap<String, BTreeMap<Tp, Committed>>,
}

/// A group's state, as described to admins.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Empty, Reconciling, Stable.
    pub state: &'static str,
    /// Group epoch.
    pub epoch: i32,
    /// Assignor.
    pub assignor: &'static str,
    /// (member id, instance id, epoch, assignment).
    pub members: Vec<(String, Option<String>, i32, BTreeSet<Tp>)>,
    /// Committed offsets.
    pub offsets: BTreeMap<Tp, Committed>,
}

/// The coordinator of the groups whose shards this node leads.
pub struct Coordinator {
    cluster: Arc<ClusterNode>,
    shards: std::sync::Mutex<HashMap<u64, Arc<Mutex<Shard>>>>,
    next_member: AtomicU64,
    offsets_partitions: u32,
}

/// Java's `String.hashCode`, made non-negative with Kafka's `Utils.abs`.
pub fn group_hash(group: &str) -> u32 {
    let h = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    if h == i32::MIN { 0 } else { h.unsigned_abs() }
}

fn member_error(err: MemberError, group: &str) -> ApiError {
    match err {
        MemberError::Unknown => ApiError::new(Code::UnknownMemberId, format!("not a member of group {group}; rejoin")),
        MemberError::Fenced => {
            ApiError::new(Code::FencedMemberEpoch, format!("stale member epoch in group {group}: fenced; rejoin"))
        }
        MemberError::NotOwned((t, p)) => {
            ApiError::new(Code::FencedMemberEpoch, format!("{t}/{p} is not owned by this member of group {group}"))
        }
    }
}

impl Coordinator {
    /// A coordinator over `cluster`; `offsets_partitions` is the partition
    /// count `__consumer_offsets` is created with.
    pub fn new(cluster: Arc<ClusterNode>, offsets_partitions: u32) -> Arc<Coordinator> {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Arc::new(Coordinator {
            cluster,
            shards: std::sync::Mutex::default(),
            next_member: AtomicU64::new(seed),
            offsets_partitions,
        })
    }

    /// Runs the background work: creating `__consumer_offsets` (on the
    /// controller's leader, once every static peer registered) and expiring
    /// members.
    pub async fn run(self: Arc<Self>, peers: usize) {
        loop {
            tokio::time::sleep(EXPIRY_INTERVAL).await;
            let metadata = self.cluster.metadata();
            let me = self.cluster.raft_node().id();
            if !metadata.topics.contains_key(OFFSETS_TOPIC)
                && self.cluster.controller_leader() == Some(me)
                && metadata.brokers.len() >= peers
            {
                let rf = (metadata.brokers.len() as u32).min(3);
                let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
                if let Err(err) = self.cluster.create_topic(OFFSETS_TOPIC, self.offsets_partitions, rf, configs).await {
                    tracing::debug!(error = %err, "creating {OFFSETS_TOPIC} will be retried");
                }
            }
            let shards: Vec<(u64, Arc<Mutex<Shard>>)> =
                self.shards.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect();
            for (group_id, shard) in shards {
                let Some(raft) = self.cluster.raft_node().group(group_id) else { continue };
                if !raft.raft.is_leader() {
                    continue;
                }
                let mut shard = shard.lock().await;
                if shard.term != Some(term_of(&raft)) {
                    continue;
                }
                let now = Instant::now();
                let mut changed = Vec::new();
                for (name, group) in shard.groups.iter_mut() {
                    let gone = group.expire(now);
                    if !gone.is_empty() {
                        tracing::info!(group = %name, members = ?gone, "members expired");
                        changed.push((name.clone(), group.record()));
                    }
                }
                for (name, record) in changed {
                    if let Err(err) = write(&raft, &[group_entry(&name, Some(&record))]).await {
                        tracing::warn!(group = %name, error = %err, "recording expired members failed");
                        shard.term = None;
                    }
                }
            }
        }
    }

    /// The offsets partition of `group`, its Raft group id and replicas.
    fn locate(&self, group: &str) -> Result<(u32, u64, Vec<u64>), ApiError> {
        let metadata = self.cluster.metadata();
        let topic = metadata.topics.get(OFFSETS_TOPIC).ok_or_else(|| {
            ApiError::new(Code::CoordinatorLoadInProgress, format!("{OFFSETS_TOPIC} is not created yet; retry"))
        })?;
        let n = topic.partitions.len() as u32;
        let p = group_hash(group) % n.max(1);
        let info = topic.partitions.get(p as usize).ok_or_else(|| {
            ApiError::new(Code::CoordinatorLoadInProgress, format!("{OFFSETS_TOPIC} has no partitions yet; retry"))
        })?;
        Ok((p, info.group, info.replicas.clone()))
    }

    /// The broker coordinating `group`: (node id, client address).
    pub fn find(&self, group: &str) -> Result<(u64, String), ApiError> {
        let (_, group_id, replicas) = self.locate(group)?;
        let leader = match self.cluster.raft_node().group(group_id) {
            Some(g) => term_and_leader(&g).1,
            None => replicas.first().copied(),
        };
        let leader = leader
            .ok_or_else(|| ApiError::new(Code::CoordinatorLoadInProgress, "the coordinator is being elected; retry"))?;
        let addr = self.cluster.metadata().brokers.get(&leader).and_then(|b| b.client_addr.clone());
        let addr = addr.ok_or_else(|| {
            ApiError::new(Code::CoordinatorLoadInProgress, "the coordinator's address is not known yet")
        })?;
        Ok((leader, addr))
    }

    /// The shard of `group`, loaded, if this node leads it.
    async fn shard(&self, group: &str) -> Result<(RaftGroup, tokio::sync::OwnedMutexGuard<Shard>), ApiError> {
        let (_, group_id, _) = self.locate(group)?;
        let raft = self.cluster.raft_node().group(group_id).filter(|g| g.raft.is_leader()).ok_or_else(|| {
            ApiError::new(Code::NotCoordinator, format!("this broker does not coordinate group {group}; find it again"))
        })?;
        let shard = self.shards.lock().unwrap_or_else(|p| p.into_inner()).entry(group_id).or_default().clone();
        let mut shard = shard.lock_owned().await;
        let term = term_of(&raft);
        if shard.term != Some(term) {
            *shard = load(&raft).await?;
            shard.term = Some(term);
        }
        Ok((raft, shard))
    }

    /// A heartbeat (join, stay, leave).
    pub async fn heartbeat(&self, group: &str, hb: super::state::Heartbeat) -> Result<super::state::Answer, ApiError> {
        let (raft, mut shard) = self.shard(group).await?;
        let metadata = self.cluster.metadata();
        let counts: BTreeMap<String, u32> =
            metadata.topics.iter().map(|(name, t)| (name.clone(), t.partitions.len() as u32)).collect();
        let now = Instant::now();
        let next = &self.next_member;
        let state = shard.groups.entry(group.to_string()).or_insert_with(|| Group::new(group));
        let (answer, changed) = state
            .heartbeat(hb, &counts, now, || format!("m-{:x}", next.fetch_add(1, Ordering::Relaxed)))
            .map_err(|e| member_error(e, group))?;
        if changed {
            let record = state.record();
            if let Err(err) = write(&raft, &[group_entry(group, Some(&record))]).await {
                // The state in memory may be ahead of the log: reload it.
                shard.term = None;
                return Err(err);
            }
        }
        Ok(answer)
    }

    /// Commits offsets for a member (or, with an empty member id and epoch
    /// -1, for an admin, when the group has no members).
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
        offsets: Vec<(Tp, Committed)>,
    ) -> Result<(), ApiError> {
        let (raft, mut shard) = self.shard(group).await?;
        let state = shard.groups.get(group);
        if member_id.is_empty() && epoch == -1 {
            if state.is_some_and(|g| !g.members.is_empty()) {
                return Err(ApiError::new(Code::GroupNotEmpty, format!("group {group} has active members")));
            }
        } else {
            let state = state.ok_or_else(|| member_error(MemberError::Unknown, group))?;
            state
                .check_commit(member_id, epoch, offsets.iter().map(|(tp, _)| tp))
                .map_err(|e| member_error(e, group))?;
        }
        let entries: Vec<(Bytes, Option<Bytes>)> = offsets
            .iter()
            .map(|((topic, partition), c)| {
                let key = Key::Offset { group: group.into(), topic: topic.clone(), partition: *partition };
                (json(&key), Some(json(c)))
            })
            .collect();
        if let Err(err) = write(&raft, &entries).await {
            shard.term = None;
            return Err(err);
        }
        let map = shard.offsets.entry(group.to_string()).or_default();
        for (tp, c) in offsets {
            map.insert(tp, c);
        }
        Ok(())
    }

    /// The committed offsets of `group` (all, or those of `tps`).
    pub async fn fetch(&self, group: &str, tps: Option<Vec<Tp>>) -> Result<Vec<(Tp, Option<Committed>)>, ApiError> {
        let (_, shard) = self.shard(group).await?;
        let committed = shard.offsets.get(group);
        Ok(match tps {
            Some(tps) => tps
                .into_iter()
                .map(|tp| {
                    let c = committed.and_then(|m| m.get(&tp)).cloned();
                    (tp, c)
                })
                .collect(),
            None => {
                committed.map(|m| m.iter().map(|(tp, c)| (tp.clone(), Some(c.clone()))).collect()).unwrap_or_default()
            }
        })
    }

    /// Groups whose shards this node leads (and has loaded).
    pub async fn list(&self) -> Vec<String> {
        let shards: Vec<Arc<Mutex<Shard>>> =
            self.shards.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut names = BTreeSet::new();
        for shard in shards {
            let shard = shard.lock().await;
            if shard.term.is_none() {
                continue;
            }
            names.extend(shard.groups.iter().filter(|(_, g)| !g.members.is_empty()).map(|(n, _)| n.clone()));
            names.extend(shard.offsets.iter().filter(|(_, o)| !o.is_empty()).map(|(n, _)| n.clone()));
        }
        names.into_iter().collect()
    }

    /// Loads every shard this node leads (so `list` sees them).
    pub async fn load_led_shards(&self) {
        let Ok(topic) = self.cluster.metadata().topics.get(OFFSETS_TOPIC).cloned().ok_or(()) else { return };
        for p in &topic.partitions {
            if self.cluster.raft_node().group(p.group).is_some_and(|g| g.raft.is_leader()) {
                let shard = self.shards.lock().unwrap_or_else(|e| e.into_inner()).entry(p.group).or_default().clone();
                let mut shard = shard.lock().await;
                if let Some(raft) = self.cluster.raft_node().group(p.group) {
                    let term = term_of(&raft);
                    if shard.term != Some(term) {
                        if let Ok(loaded) = load(&raft).await {
                            *shard = loaded;
                            shard.term = Some(term);
                        }
                    }
                }
            }
        }
    }

    /// A group's members, assignment and offsets.
    pub async fn describe(&self, group: &str) -> Result<GroupDescription, ApiError> {
        let (_, shard) = self.shard(group).await?;
        let offsets = shard.offsets.get(group).cloned().unwrap_or_default();
        let state = shard.groups.get(group);
        if state.is_none_or(|g| g.members.is_empty()) && offsets.is_empty() {
            return Err(ApiError::new(Code::UnknownGroup, format!("group {group} does not exist")));
        }
        Ok(match state {
            Some(g) => GroupDescription {
                state: g.state(),
                epoch: g.epoch,
                assignor: g.assignor.name(),
                members: g
                    .members
                    .values()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.epoch, m.current.clone()))
                    .collect(),
                offsets,
            },
            None => GroupDescription { state: "Empty", epoch: 0, assignor: "sticky", members: Vec::new(), offsets },
        })
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete(&self, group: &str) -> Result<(), ApiError> {
        let (raft, mut shard) = self.shard(group).await?;
        if shard.groups.get(group).is_some_and(|g| !g.members.is_empty()) {
            return Err(ApiError::new(Code::GroupNotEmpty, format!("group {group} has active members")));
        }
        let offsets = shard.offsets.get(group).cloned().unwrap_or_default();
        if offsets.is_empty() && !shard.groups.contains_key(group) {
            return Err(ApiError::new(Code::UnknownGroup, format!("group {group} does not exist")));
        }
        let mut entries: Vec<(Bytes, Option<Bytes>)> = offsets
            .keys()
            .map(|(topic, partition)| {
                (json(&Key::Offset { group: group.into(), topic: topic.clone(), partition: *partition }), None)
            })
            .collect();
        entries.push(group_entry(group, None));
        if let Err(err) = write(&raft, &entries).await {
            shard.term = None;
            return Err(err);
        }
        shard.offsets.remove(group);
        shard.groups.remove(group);
        Ok(())
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn group_entry(group: &str, record: Option<&GroupRecord>) -> (Bytes, Option<Bytes>) {
    (json(&Key::Group { group: group.into() }), record.map(json))
}

fn term_and_leader(group: &RaftGroup) -> (u64, Option<u64>) {
    use openraft::async_runtime::WatchReceiver;
    let metrics = group.raft.metrics().borrow_watched().clone();
    (metrics.current_term, metrics.current_leader)
}

fn term_of(group: &RaftGroup) -> u64 {
    term_and_leader(group).0
}

/// Writes records to the shard's partition and waits until committed.
async fn write(raft: &RaftGroup, entries: &[(Bytes, Option<Bytes>)]) -> Result<(), ApiError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut builder = BatchBuilder::new();
    for (key, value) in entries {
        builder.push(now, Some(key), value.as_deref(), &[]);
    }
    produce(raft, builder.build(Compression::None)).await.map(|_| ()).map_err(|e| match e {
        strata_raft::ProduceError::NotLeader { .. } => {
            ApiError::new(Code::NotCoordinator, "this broker no longer coordinates the group; find it again")
        }
        other => ApiError::new(Code::Unavailable, format!("recording group state: {other}")),
    })
}

/// Rebuilds a shard from its partition: every record up to the commit.
async fn load(raft: &RaftGroup) -> Result<Shard, ApiError> {
    raft.raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex).await.map_err(|_| {
        ApiError::new(Code::NotCoordinator, "this broker no longer coordinates the group; find it again")
    })?;
    let mut shard = Shard::default();
    let now = Instant::now();
    let high_watermark = raft.state_machine.high_watermark();
    let mut at = raft.log.state().log_start_offset;
    while at < high_watermark {
        let read = raft
            .log
            .read_offsets(at, 8 << 20, high_watermark)
            .map_err(|e| ApiError::new(Code::CoordinatorLoadInProgress, format!("loading group state: {e}")))?;
        if read.next_offset == at {
            break;
        }
        for chunk in &read.chunks {
            for batch in strata_batch::split_batches(chunk) {
                let Ok((_, bytes)) = batch else { continue };
                let Ok(records) = strata_batch::decode_records(&Bytes::copy_from_slice(bytes)) else { continue };
                for record in records.flatten() {
                    let Some(key) = record.key.as_ref().and_then(|k| serde_json::from_slice::<Key>(k).ok()) else {
                        continue;
                    };
                    apply(&mut shard, key, record.value.as_deref(), now);
                }
            }
        }
        at = read.next_offset;
    }
    Ok(shard)
}

fn apply(shard: &mut Shard, key: Key, value: Option<&[u8]>, now: Instant) {
    match key {
        Key::Offset { group, topic, partition } => {
            let map = shard.offsets.entry(group).or_default();
            match value.and_then(|v| serde_json::from_slice::<Committed>(v).ok()) {
                Some(c) => {
                    map.insert((topic, partition), c);
                }
                None => {
                    map.remove(&(topic, partition));
                }
            }
        }
        Key::Group { group } => match value.and_then(|v| serde_json::from_slice::<GroupRecord>(v).ok()) {
            Some(record) => {
                shard.groups.insert(group.clone(), Group::restore(&group, &record, now));
            }
            None => {
                shard.groups.remove(&group);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hash_as_java_strings_do() {
        // "hello".hashCode() == 99162322 in Java.
        assert_eq!(group_hash("hello"), 99_162_322);
        assert_eq!(group_hash(""), 0);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: abs gives 0.
        assert_eq!(group_hash("polygenelubricants"), 0);
        // A negative hash is made positive: "hello world, again".
        assert!(group_hash("a fairly long group name that overflows") < 1 << 31);
    }
}
