//! The cluster's metadata and the controller's state machine logic: brokers,
//! topics, partition → replica assignment, topic configs and producer ids.
//!
//! The controller is Raft group 0. Its log is a log like any partition's;
//! each record's value is one JSON [`MetadataCommand`], applied in log order
//! by every node, so every node answers metadata from its own copy.
//! Producer ids are the offsets of `AllocateProducerId` records: unique,
//! increasing and the same on every replica, with nothing else to store.
//!
//! Everything here is pure (no I/O), so the decisions are tested directly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::acl::AclBinding;

/// The controller's group id.
pub const CONTROLLER_GROUP: u64 = 0;

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetadataCommand {
    /// A broker joins (or changes its address).
    RegisterBroker {
        /// Its node id.
        id: u64,
        /// Its Raft transport address.
        raft_addr: String,
        /// The address clients reach it at; `None` keeps the known one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_addr: Option<String>,
    },
    /// A topic is created with replicas already assigned by the proposer
    /// (so every replica applies the same assignment).
    CreateTopic {
        /// Topic name.
        name: String,
        /// Replicas of each partition, leader-preferred first.
        assignment: Vec<Vec<u64>>,
        /// Topic configuration, key = value.
        configs: BTreeMap<String, String>,
    },
    /// Partitions are added to a topic, with their replicas assigned by
    /// the proposer. Applied only while the topic has `from` partitions (and
    /// the same partition 0), so a proposal sent twice adds them once.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The partition count the proposer saw: the new partitions are
        /// numbered from it.
        from: u32,
        /// The group of the topic's partition 0 the proposer saw, so that a
        /// topic deleted and made again meanwhile is not grown instead.
        first_group: u64,
        /// Replicas of each new partition, leader-preferred first.
        assignment: Vec<Vec<u64>>,
    },
    /// A topic is deleted.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Sets configuration keys of a topic.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// Keys to set.
        configs: BTreeMap<String, String>,
        /// Keys to remove (the cluster default applies again).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        delete: Vec<String>,
    },
    /// Allocates one producer id: the offset of this record.
    AllocateProducerId,
    /// Moves a partition to another set of replicas; the partition's Raft
    /// leader carries it out as a membership change.
    ReassignPartition {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The new replicas.
        replicas: Vec<u64>,
    },
    /// Changes nothing: a node proposes it and waits until it applied it,
    /// so its copy of the metadata is at least as new as when it asked
    /// (see `ClusterNode::sync_metadata`).
    Barrier,
    /// A broker leaves the cluster for good; its id is never used again.
    /// Applied only once no partition lists it among its replicas (the
    /// proposer reassigns them first, see `ClusterNode::remove_broker`).
    RemoveBroker {
        /// Its node id.
        id: u64,
    },
    /// A removed broker no longer holds any partition replica: the
    /// controller's leader then drops it from the controller group too.
    BrokerLeft {
        /// Its node id.
        id: u64,
    },
    /// A node became the leader of a partition's group in `term`: a hint
    /// every broker can hand to clients, also for partitions it holds no
    /// replica of. Only a newer term replaces a hint.
    LeaderChanged {
        /// The Raft group.
        group: u64,
        /// The leader's node id.
        node: u64,
        /// Its term.
        term: u64,
    },
    /// A node found its replica of a group damaged and quarantined it; the
    /// group's leader removes it from the group, then proposes
    /// `ReplicaRemoved`, after which the node starts the replica again,
    /// empty, and the leader adds it back (see `cluster.rs`).
    ReplicaDamaged {
        /// The Raft group.
        group: u64,
        /// The node whose replica is damaged.
        node: u64,
        /// Names this quarantine (the node's marker file holds it).
        nonce: u64,
    },
    /// The damaged replica named by `nonce` is out of the group's committed
    /// membership: its node may start it again, empty.
    ReplicaRemoved {
        /// The Raft group.
        group: u64,
        /// The node whose replica was removed.
        node: u64,
        /// The quarantine's nonce.
        nonce: u64,
    },
    /// Access control bindings are added (those already there are kept
    /// once).
    CreateAcls {
        /// The bindings, each validated by the proposer.
        acls: Vec<AclBinding>,
    },
    /// These access control bindings are removed (the proposer chose them
    /// with a filter, so it can report exactly what was removed).
    DeleteAcls {
        /// The bindings.
        acls: Vec<AclBinding>,
    },
}

/// Who last reported leading a group, and in which term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's node id.
    pub node: u64,
    /// Its Raft term.
    pub term: u64,
}

/// A replica being rebuilt (see `MetadataCommand::ReplicaDamaged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRebuild {
    /// The Raft group.
    pub group: u64,
    /// The node.
    pub node: u64,
    /// The quarantine's nonce.
    pub nonce: u64,
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Node id.
    pub id: u64,
    /// Raft transport address.
    pub raft_addr: String,
    /// Client API address, once the broker announced it.
    #[serde(default)]
    pub client_addr: Option<String>,
}

/// One partition: its Raft group and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// The Raft group replicating it.
    pub group: u64,
    /// Replica node ids, leader-preferred first.
    pub replicas: Vec<u64>,
    /// The replicas it was created with; the first of them initializes the
    /// group, or another of them when the first has not within a few
    /// seconds (never a replica added later).
    pub initial_replicas: Vec<u64>,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Partitions, by partition number.
    pub partitions: Vec<PartitionInfo>,
    /// Configuration.
    pub configs: BTreeMap<String, String>,
}

/// The whole cluster metadata, as of some controller log position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Brokers by id.
    pub brokers: BTreeMap<u64, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// The next Raft group id to hand out (group 0 is the controller).
    pub next_group: u64,
    /// The last producer id allocated, if any.
    pub last_producer_id: Option<u64>,
    /// The last leader each partition group reported, by group (a hint:
    /// leadership may have moved since).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leaders: BTreeMap<u64, LeaderHint>,
    /// Brokers removed from the cluster: never registered again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub removed_brokers: std::collections::BTreeSet<u64>,
    /// Removed brokers that have handed over every replica.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub left_brokers: std::collections::BTreeSet<u64>,
    /// Damaged replicas waiting to be removed from their group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<ReplicaRebuild>,
    /// The last damaged replica removed, per (group, node): its node may
    /// start it again empty when this nonce matches its marker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<ReplicaRebuild>,
    /// Access control bindings, sorted, each once (see `acl.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<AclBinding>,
}

impl ClusterMetadata {
    /// Applies a command found at `offset` of the controller log. Commands
    /// that no longer make sense (a topic created twice) change nothing.
    pub fn apply(&mut self, offset: u64, command: &MetadataCommand) {
        self.next_group = self.next_group.max(1);
        match command {
            MetadataCommand::RegisterBroker { id, raft_addr, client_addr } => {
                if self.removed_brokers.contains(id) {
                    return;
                }
                let known = self.brokers.get(id).and_then(|b| b.client_addr.clone());
                let client_addr = client_addr.clone().or(known);
                self.brokers.insert(*id, BrokerInfo { id: *id, raft_addr: raft_addr.clone(), client_addr });
            }
            MetadataCommand::CreateTopic { name, assignment, configs } => {
                if self.topics.contains_key(name) {
                    return;
                }
                let partitions = self.new_partitions(assignment);
                self.topics
                    .insert(name.clone(), TopicInfo { name: name.clone(), partitions, configs: configs.clone() });
            }
            MetadataCommand::AddPartitions { name, from, first_group, assignment } => {
                let current =
                    self.topics.get(name).map(|t| (t.partitions.len(), t.partitions.first().map(|p| p.group)));
                let known = assignment.iter().flatten().all(|r| self.brokers.contains_key(r));
                let same = current == Some((*from as usize, Some(*first_group)));
                if !same || !known || assignment.iter().any(Vec::is_empty) {
                    return;
                }
                let added = self.new_partitions(assignment);
                if let Some(topic) = self.topics.get_mut(name) {
                    topic.partitions.extend(added);
                }
            }
            MetadataCommand::DeleteTopic { name } => {
                if let Some(topic) = self.topics.remove(name) {
                    for partition in &topic.partitions {
                        self.leaders.remove(&partition.group);
                    }
                    let gone = |r: &ReplicaRebuild| topic.partitions.iter().any(|p| p.group == r.group);
                    self.damaged.retain(|r| !gone(r));
                    self.removed.retain(|r| !gone(r));
                }
            }
            MetadataCommand::AlterTopicConfig { name, configs, delete } => {
                if let Some(topic) = self.topics.get_mut(name) {
                    for key in delete {
                        topic.configs.remove(key);
                    }
                    topic.configs.extend(configs.clone());
                }
            }
            MetadataCommand::AllocateProducerId => self.last_producer_id = Some(offset),
            MetadataCommand::Barrier => {}
            MetadataCommand::ReassignPartition { topic, partition, replicas } => {
                let known = replicas.iter().all(|r| self.brokers.contains_key(r));
                let target = self.topics.get_mut(topic).and_then(|t| t.partitions.get_mut(*partition as usize));
                if let (Some(target), true, false) = (target, known, replicas.is_empty()) {
                    target.replicas = replicas.clone();
                }
            }
            MetadataCommand::RemoveBroker { id } => {
                let holds = self.topics.values().flat_map(|t| &t.partitions).any(|p| p.replicas.contains(id));
                if !holds && self.brokers.remove(id).is_some() {
                    self.removed_brokers.insert(*id);
                }
            }
            MetadataCommand::LeaderChanged { group, node, term } => {
                let newer = self.leaders.get(group).is_none_or(|known| *term > known.term);
                if newer && self.partition_of_group(*group).is_some() {
                    self.leaders.insert(*group, LeaderHint { node: *node, term: *term });
                }
            }
            MetadataCommand::BrokerLeft { id } => {
                if self.removed_brokers.contains(id) {
                    self.left_brokers.insert(*id);
                }
            }
            MetadataCommand::ReplicaDamaged { group, node, nonce } => {
                let this = ReplicaRebuild { group: *group, node: *node, nonce: *nonce };
                // A re-proposal of a quarantine already dealt with changes nothing.
                let known = *group == CONTROLLER_GROUP || self.partition_of_group(*group).is_some();
                if !known || self.removed.contains(&this) {
                    return;
                }
                self.damaged.retain(|r| (r.group, r.node) != (*group, *node));
                self.damaged.push(this);
            }
            MetadataCommand::ReplicaRemoved { group, node, nonce } => {
                let this = ReplicaRebuild { group: *group, node: *node, nonce: *nonce };
                if self.damaged.contains(&this) {
                    self.damaged.retain(|r| *r != this);
                    self.removed.retain(|r| (r.group, r.node) != (*group, *node));
                    self.removed.push(this);
                }
            }
            MetadataCommand::CreateAcls { acls } => {
                self.acls.extend(acls.iter().cloned());
                self.acls.sort();
                self.acls.dedup();
            }
            MetadataCommand::DeleteAcls { acls } => self.acls.retain(|acl| !acls.contains(acl)),
        }
    }

    /// Partitions with these replicas, each with the next group id.
    fn new_partitions(&mut self, assignment: &[Vec<u64>]) -> Vec<PartitionInfo> {
        assignment
            .iter()
            .map(|replicas| {
                let group = self.next_group;
                self.next_group += 1;
                PartitionInfo { group, replicas: replicas.clone(), initial_replicas: replicas.clone() }
            })
            .collect()
    }

    /// The partition served by Raft group `group`, with its topic's name.
    pub fn partition_of_group(&self, group: u64) -> Option<(&str, u32)> {
        self.topics
            .values()
            .find_map(|t| t.partitions.iter().position(|p| p.group == group).map(|i| (t.name.as_str(), i as u32)))
    }

    /// The nonce of `node`'s damaged replica of `group`, until it is removed.
    pub fn damaged_replica(&self, group: u64, node: u64) -> Option<u64> {
        self.damaged.iter().find(|r| (r.group, r.node) == (group, node)).map(|r| r.nonce)
    }

    /// The nonce of the last damaged replica of `group` on `node` that was
    /// removed from the group.
    pub fn removed_replica(&self, group: u64, node: u64) -> Option<u64> {
        self.removed.iter().find(|r| (r.group, r.node) == (group, node)).map(|r| r.nonce)
    }

    /// The partitions `node` holds (or held first, unless it was removed
    /// from the cluster) a replica of.
    pub fn partitions_of(&self, node: u64) -> Vec<&PartitionInfo> {
        let removed = self.removed_brokers.contains(&node);
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&node) || (!removed && p.initial_replicas.first() == Some(&node)))
            .collect()
    }
}

/// Spreads `n_partitions` × `replication_factor` replicas over `brokers`:
/// partition p's replicas are consecutive brokers starting at `(start + p)`,
/// so replicas and preferred leaders (the first replica) are balanced.
pub fn assign_replicas(
    brokers: &[u64],
    n_partitions: u32,
    replication_factor: u32,
    start: usize,
) -> Result<Vec<Vec<u64>>, String> {
    if n_partitions == 0 {
        return Err("a topic needs at least one partition".into());
    }
    if replication_factor == 0 || replication_factor as usize > brokers.len() {
        return Err(format!(
            "replication factor {replication_factor} is outside [1, {}] (the number of brokers)",
            brokers.len()
        ));
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    Ok((0..n_partitions as usize)
        .map(|p| (0..replication_factor as usize).map(|r| sorted[(start + p + r) % sorted.len()]).collect())
        .collect())
}

/// As [`assign_replicas`], over the brokers that can take a new partition
/// now: the `live` ones when there are at least `replication_factor` of
/// them, so that nothing starts under-replicated. Else each partition has
/// every live broker first (its first replica, the preferred leader,
/// turning over them), then brokers that are down: the first replica
/// initializes the group, so a partition whose first replica were down
/// would wait seconds for another replica to do it in its place. `start`
/// picks the first broker from the list used.
pub fn assign_replicas_live(
    brokers: &[u64],
    live: &std::collections::BTreeSet<u64>,
    n_partitions: u32,
    replication_factor: u32,
    start: impl Fn(&[u64]) -> usize,
) -> Result<Vec<Vec<u64>>, String> {
    let mut all = brokers.to_vec();
    all.sort_unstable();
    let (up, down): (Vec<u64>, Vec<u64>) = all.iter().partition(|b| live.contains(b));
    if up.len() >= replication_factor as usize {
        return assign_replicas(&up, n_partitions, replication_factor, start(&up));
    }
    let assignment = assign_replicas(&all, n_partitions, replication_factor, start(&all))?;
    if up.is_empty() {
        return Ok(assignment);
    }
    let (first, rf) = (start(&up), replication_factor as usize);
    Ok((0..n_partitions as usize)
        .map(|p| {
            let mut replicas: Vec<u64> = (0..up.len()).map(|i| up[(first + p + i) % up.len()]).collect();
            replicas.extend((0..rf - up.len()).map(|i| down[(first + p + i) % down.len()]));
            replicas
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_are_added_once_and_removed_by_filter_and_survive_a_snapshot() {
        use crate::acl::{Operation, PatternType, Permission, ResourceType};
        let binding = |principal: &str, operation| AclBinding {
            principal: principal.into(),
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern: PatternType::Literal,
            operation,
            permission: Permission::Allow,
        };
        let mut md = ClusterMetadata::default();
        let acls = vec![binding("User:b", Operation::Read), binding("User:a", Operation::Write)];
        md.apply(1, &MetadataCommand::CreateAcls { acls: acls.clone() });
        md.apply(2, &MetadataCommand::CreateAcls { acls: vec![acls[0].clone()] });
        assert_eq!(md.acls, vec![acls[1].clone(), acls[0].clone()], "sorted, each once");
        let json = serde_json::to_string(&md).expect("serialize");
        let back: ClusterMetadata = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.acls, md.acls);
        md.apply(3, &MetadataCommand::DeleteAcls { acls: vec![acls[1].clone()] });
        assert_eq!(md.acls, vec![acls[0].clone()]);
    }

    #[test]
    fn assignment_balances_replicas_and_leaders() {
        let assignment = assign_replicas(&[3, 1, 2], 6, 3, 0).expect("assign");
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for partition in &assignment {
            assert_eq!(partition.len(), 3);
            let mut distinct = partition.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "a partition's replicas are distinct brokers");
            *leaders.entry(partition[0]).or_insert(0) += 1;
            for r in partition {
                *replicas.entry(*r).or_insert(0) += 1;
            }
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![6, 6, 6]);
        assert!(assign_replicas(&[1, 2], 3, 3, 0).is_err());
        assert!(assign_replicas(&[1, 2], 0, 1, 0).is_err());
    }

    #[test]
    fn new_partitions_go_to_live_brokers_first() {
        let live = |ids: &[u64]| ids.iter().copied().collect::<std::collections::BTreeSet<u64>>();
        // Enough live brokers: the down one gets nothing.
        let a = assign_replicas_live(&[1, 2, 3, 4], &live(&[1, 2, 4]), 6, 3, |_| 0).expect("assign");
        assert!(a.iter().all(|r| !r.contains(&3) && r.len() == 3), "{a:?}");
        assert_eq!(a, assign_replicas(&[1, 2, 4], 6, 3, 0).expect("assign"));
        // Too few: every broker, the live ones first, leading in turn.
        let a = assign_replicas_live(&[1, 2, 3], &live(&[1, 2]), 6, 3, |_| 0).expect("assign");
        assert!(a.iter().all(|r| r.len() == 3 && r[2] == 3), "{a:?}");
        let led_by_1 = a.iter().filter(|r| r[0] == 1).count();
        assert_eq!(led_by_1, 3, "{a:?}");
        let a = assign_replicas_live(&[1, 2, 3, 4, 5], &live(&[4]), 4, 3, |_| 0).expect("assign");
        assert!(a.iter().all(|r| r[0] == 4 && !r[1..].contains(&4) && r[1] != r[2]), "{a:?}");
        // All live: as before; and `start` is taken over the list used.
        let a = assign_replicas_live(&[3, 1, 2], &live(&[1, 2, 3]), 3, 2, |l| l.len() - 1).expect("assign");
        assert_eq!(a, assign_replicas(&[1, 2, 3], 3, 2, 2).expect("assign"));
        assert!(assign_replicas_live(&[1, 2], &live(&[1]), 1, 3, |_| 0).is_err());
    }

    #[test]
    fn commands_apply_deterministically() {
        let mut md = ClusterMetadata::default();
        md.apply(
            0,
            &MetadataCommand::RegisterBroker { id: 1, raft_addr: "a:1".into(), client_addr: Some("a:0".into()) },
        );
        md.apply(0, &MetadataCommand::RegisterBroker { id: 1, raft_addr: "a:1".into(), client_addr: None });
        assert_eq!(md.brokers[&1].client_addr.as_deref(), Some("a:0"), "a registration without address keeps it");
        let create = MetadataCommand::CreateTopic {
            name: "orders".into(),
            assignment: vec![vec![1], vec![1]],
            configs: BTreeMap::new(),
        };
        md.apply(1, &create);
        md.apply(2, &create); // a second create changes nothing
        assert_eq!(md.topics["orders"].partitions.iter().map(|p| p.group).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(md.next_group, 3);
        let add = |name: &str, from: u32, first_group: u64, replicas: Vec<u64>| MetadataCommand::AddPartitions {
            name: name.into(),
            from,
            first_group,
            assignment: vec![replicas],
        };
        md.apply(2, &add("orders", 2, 1, vec![1]));
        md.apply(2, &add("orders", 2, 1, vec![1])); // sent twice: the topic no longer has 2 partitions
        assert_eq!(md.topics["orders"].partitions.iter().map(|p| p.group).collect::<Vec<_>>(), vec![1, 2, 3]);
        md.apply(2, &add("orders", 3, 1, vec![9]));
        md.apply(2, &add("orders", 3, 1, vec![]));
        md.apply(2, &add("orders", 3, 7, vec![1]));
        md.apply(2, &add("none", 0, 0, vec![1]));
        assert_eq!(md.topics["orders"].partitions.len(), 3, "unknown brokers, no replica, another topic: refused");
        assert_eq!((md.next_group, md.partition_of_group(3)), (4, Some(("orders", 2))));
        md.apply(3, &MetadataCommand::AllocateProducerId);
        assert_eq!(md.last_producer_id, Some(3));
        assert_eq!(md.partitions_of(1).len(), 3);
        md.apply(4, &MetadataCommand::ReassignPartition { topic: "orders".into(), partition: 0, replicas: vec![9] });
        assert_eq!(md.topics["orders"].partitions[0].replicas, vec![1], "unknown brokers are refused");
        let damaged = MetadataCommand::ReplicaDamaged { group: 1, node: 1, nonce: 7 };
        md.apply(5, &MetadataCommand::ReplicaRemoved { group: 1, node: 1, nonce: 7 });
        assert_eq!(md.removed_replica(1, 1), None, "only a known damaged replica can be removed");
        md.apply(5, &damaged);
        assert_eq!(md.damaged_replica(1, 1), Some(7));
        md.apply(5, &MetadataCommand::ReplicaRemoved { group: 1, node: 1, nonce: 6 });
        assert_eq!(md.damaged_replica(1, 1), Some(7), "another quarantine's removal changes nothing");
        md.apply(5, &MetadataCommand::ReplicaRemoved { group: 1, node: 1, nonce: 7 });
        assert_eq!((md.damaged_replica(1, 1), md.removed_replica(1, 1)), (None, Some(7)));
        md.apply(5, &damaged);
        assert_eq!(md.damaged_replica(1, 1), None, "a late re-proposal of a finished quarantine is ignored");
        md.apply(5, &MetadataCommand::LeaderChanged { group: 1, node: 1, term: 3 });
        md.apply(5, &MetadataCommand::LeaderChanged { group: 1, node: 2, term: 2 });
        assert_eq!(md.leaders[&1], LeaderHint { node: 1, term: 3 }, "an older term's report changes nothing");
        md.apply(5, &MetadataCommand::LeaderChanged { group: 9, node: 2, term: 2 });
        assert!(!md.leaders.contains_key(&9), "no hint for an unknown group");
        md.apply(5, &MetadataCommand::RemoveBroker { id: 1 });
        assert!(md.brokers.contains_key(&1), "a broker still holding replicas is not removed");
        md.apply(5, &MetadataCommand::ReplicaDamaged { group: 9, node: 1, nonce: 8 });
        assert_eq!(md.damaged_replica(9, 1), None, "a replica of an unknown group is not rebuilt");
        md.apply(5, &MetadataCommand::ReplicaDamaged { group: CONTROLLER_GROUP, node: 1, nonce: 8 });
        assert_eq!(md.damaged_replica(CONTROLLER_GROUP, 1), Some(8), "the controller's replicas are rebuilt too");
        md.apply(5, &MetadataCommand::DeleteTopic { name: "orders".into() });
        assert_eq!(md.removed_replica(1, 1), None, "a deleted topic's rebuilds are forgotten");
        assert_eq!(md.damaged_replica(CONTROLLER_GROUP, 1), Some(8), "but not the controller's");
        assert!(md.leaders.is_empty(), "and so are its leaders");
        md.apply(6, &MetadataCommand::RemoveBroker { id: 1 });
        assert!(md.brokers.is_empty() && md.removed_brokers.contains(&1));
        md.apply(7, &MetadataCommand::RegisterBroker { id: 1, raft_addr: "a:1".into(), client_addr: None });
        assert!(md.brokers.is_empty(), "a removed broker's id is never registered again");
        md.apply(8, &MetadataCommand::BrokerLeft { id: 2 });
        assert!(md.left_brokers.is_empty(), "only a removed broker leaves");
        md.apply(8, &MetadataCommand::BrokerLeft { id: 1 });
        assert!(md.left_brokers.contains(&1));
        assert!(md.topics.is_empty());
        let json = serde_json::to_string(&create).expect("json");
        assert!(json.contains("\"op\":\"create_topic\""), "{json}");
    }
}
