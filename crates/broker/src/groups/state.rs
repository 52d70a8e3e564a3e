//! One consumer group's membership and assignment, KIP-848 style, without
//! I/O: members join and heartbeat, the coordinator computes a target
//! assignment, and each member converges to its share — a partition is
//! handed to a member only once no other member owns it or still reports
//! consuming it, so no partition is ever consumed by two members at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::assign::{Assignor, MemberView, Tp, assign};

/// Bounds on the timeouts a member may ask for.
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// Longest session timeout.
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Given by the coordinator on join.
    pub id: String,
    /// Static membership id, if any.
    pub instance_id: Option<String>,
    /// Bumped to the group's target epoch once the member owns its share.
    pub epoch: i32,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// What the coordinator told it to own.
    pub current: BTreeSet<Tp>,
    /// What it last reported it still consumes.
    pub owned: BTreeSet<Tp>,
    last_seen: Instant,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    revoking_since: Option<Instant>,
}

/// Why a heartbeat or commit is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberError {
    /// Not a member (expired, left, or replaced): rejoin.
    Unknown,
    /// The epoch is not the member's current one: fenced, rejoin.
    Fenced,
    /// A commit for a partition the member does not own.
    NotOwned(Tp),
}

/// A heartbeat's content.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Member id (empty to join).
    pub member_id: String,
    /// 0 join, -1 leave, -2 static leave (keep the assignment), else epoch.
    pub epoch: i32,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Subscribed topics (empty: unchanged).
    pub topics: BTreeSet<String>,
    /// Assignor asked for.
    pub assignor: Option<Assignor>,
    /// Partitions the member still consumes.
    pub owned: BTreeSet<Tp>,
    /// Session timeout asked for.
    pub session_timeout: Duration,
    /// Rebalance timeout asked for.
    pub rebalance_timeout: Duration,
}

/// What the member is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its id.
    pub member_id: String,
    /// Its epoch.
    pub epoch: i32,
    /// What it owns from now on.
    pub assignment: BTreeSet<Tp>,
    /// True while it has not converged (heartbeat again soon).
    pub reconciling: bool,
}

/// A consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Name.
    pub name: String,
    /// Bumped on every membership or subscription change.
    pub epoch: i32,
    /// The assignor in use.
    pub assignor: Assignor,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<Tp>>,
    target_epoch: i32,
    target_counts: BTreeMap<String, u32>,
}

/// The durable part of a group (its record in `__consumer_offsets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Group epoch.
    pub epoch: i32,
    /// Assignor name.
    pub assignor: String,
    /// Members.
    pub members: Vec<MemberRecord>,
}

/// The durable part of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Id.
    pub id: String,
    /// Static id.
    pub instance_id: Option<String>,
    /// Epoch.
    pub epoch: i32,
    /// Topics.
    pub topics: BTreeSet<String>,
    /// Assignment handed out.
    pub current: BTreeSet<Tp>,
    /// Partitions it was still giving up (revoked, not yet acknowledged):
    /// a new coordinator must not hand them out before the member lets go.
    #[serde(default)]
    pub owned: BTreeSet<Tp>,
    /// Session timeout, ms.
    pub session_ms: u64,
    /// Rebalance timeout, ms.
    pub rebalance_ms: u64,
}

impl Group {
    /// An empty group.
    pub fn new(name: &str) -> Group {
        Group {
            name: name.to_string(),
            epoch: 0,
            assignor: Assignor::Sticky,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            target_epoch: -1,
            target_counts: BTreeMap::new(),
        }
    }

    /// Restores a group from its record; every member gets a fresh session
    /// (it must heartbeat within its timeout) and is taken to still consume
    /// what it was handed.
    pub fn restore(name: &str, record: &GroupRecord, now: Instant) -> Group {
        let mut group = Group::new(name);
        group.epoch = record.epoch;
        group.assignor = Assignor::parse(&record.assignor).unwrap_or(Assignor::Sticky);
        for m in &record.members {
            group.members.insert(
                m.id.clone(),
                Member {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    epoch: m.epoch,
                    topics: m.topics.clone(),
                    current: m.current.clone(),
                    owned: m.current.union(&m.owned).cloned().collect(),
                    last_seen: now,
                    session_timeout: Duration::from_millis(m.session_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_ms),
                    revoking_since: None,
                },
            );
        }
        group
    }

    /// The durable part.
    pub fn record(&self) -> GroupRecord {
        GroupRecord {
            epoch: self.epoch,
            assignor: self.assignor.name().to_string(),
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    epoch: m.epoch,
                    topics: m.topics.clone(),
                    current: m.current.clone(),
                    owned: m.owned.difference(&m.current).cloned().collect(),
                    session_ms: m.session_timeout.as_millis() as u64,
                    rebalance_ms: m.rebalance_timeout.as_millis() as u64,
                })
                .collect(),
        }
    }

    /// Empty, Reconciling or Stable.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.target_epoch == self.epoch
            && self
                .members
                .values()
                .all(|m| self.target.get(&m.id).is_some_and(|t| *t == m.current && m.owned.is_subset(t)))
        {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Handles one heartbeat; `counts` are the partition counts of the
    /// topics, `new_id` makes a member id. Returns the answer, and whether
    /// the group's durable state changed (it must be written before the
    /// answer is sent).
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        counts: &BTreeMap<String, u32>,
        now: Instant,
        new_id: impl FnOnce() -> String,
    ) -> Result<(Answer, bool), MemberError> {
        let mut changed = false;
        let member_id = match hb.epoch {
            -1 | -2 => {
                let leaving = self.members.get(&hb.member_id).ok_or(MemberError::Unknown)?;
                let keep = hb.epoch == -2 && leaving.instance_id.is_some();
                if !keep {
                    self.members.remove(&hb.member_id);
                    self.epoch += 1;
                }
                let answer = Answer {
                    member_id: hb.member_id,
                    epoch: hb.epoch,
                    assignment: BTreeSet::new(),
                    reconciling: false,
                };
                return Ok((answer, true));
            }
            0 => {
                // Static membership: a restarted instance takes its old
                // place and assignment, without a rebalance.
                let previous = hb
                    .instance_id
                    .as_ref()
                    .and_then(|instance| self.members.values().find(|m| m.instance_id.as_ref() == Some(instance)))
                    .map(|m| m.id.clone());
                let id = new_id();
                let member = match previous.and_then(|old| self.members.remove(&old)) {
                    Some(mut old) => {
                        if let Some(share) = self.target.remove(&old.id) {
                            self.target.insert(id.clone(), share);
                        }
                        old.id = id.clone();
                        old
                    }
                    None => {
                        if self.members.is_empty() {
                            self.assignor = hb.assignor.unwrap_or(self.assignor);
                        }
                        self.epoch += 1;
                        // Never 0: a heartbeat with epoch 0 means "join".
                        Member {
                            id: id.clone(),
                            instance_id: hb.instance_id.clone(),
                            epoch: self.epoch,
                            topics: BTreeSet::new(),
                            current: BTreeSet::new(),
                            owned: BTreeSet::new(),
                            last_seen: now,
                            session_timeout: hb.session_timeout,
                            rebalance_timeout: hb.rebalance_timeout,
                            revoking_since: None,
                        }
                    }
                };
                self.members.insert(id.clone(), member);
                changed = true;
                id
            }
            epoch => {
                let member = self.members.get(&hb.member_id).ok_or(MemberError::Unknown)?;
                if member.epoch != epoch {
                    return Err(MemberError::Fenced);
                }
                hb.member_id.clone()
            }
        };
        let member = self.members.get_mut(&member_id).ok_or(MemberError::Unknown)?;
        member.last_seen = now;
        member.session_timeout = hb.session_timeout.clamp(SESSION_TIMEOUT_MIN, SESSION_TIMEOUT_MAX);
        member.rebalance_timeout = hb.rebalance_timeout.max(SESSION_TIMEOUT_MIN);
        if hb.epoch != 0 {
            // Only what it was given can it still own: a report of more (a
            // client that rejoined before letting go) is not believed.
            let allowed: BTreeSet<Tp> = member.current.union(&member.owned).cloned().collect();
            member.owned = hb.owned.intersection(&allowed).cloned().collect();
        }
        if !hb.topics.is_empty() && hb.topics != member.topics {
            member.topics = hb.topics;
            self.epoch += 1;
            changed = true;
        }
        self.refresh_target(counts);
        let (answer, member_changed) = self.reconcile(&member_id, now);
        Ok((answer, changed || member_changed))
    }

    /// Recomputes the target assignment when the group or the topics changed.
    fn refresh_target(&mut self, counts: &BTreeMap<String, u32>) {
        let subscribed: BTreeSet<&String> = self.members.values().flat_map(|m| m.topics.iter()).collect();
        let counts: BTreeMap<String, u32> =
            counts.iter().filter(|(t, _)| subscribed.contains(t)).map(|(t, n)| (t.clone(), *n)).collect();
        if self.target_epoch == self.epoch && counts == self.target_counts {
            return;
        }
        let views: Vec<MemberView<'_>> =
            self.members.values().map(|m| MemberView { id: &m.id, topics: &m.topics, current: &m.current }).collect();
        self.target = assign(self.assignor, &views, &counts);
        self.target_epoch = self.epoch;
        self.target_counts = counts;
    }

    /// Moves one member toward its share: it keeps what stays its own,
    /// loses what does not (revocation), and gains a partition only once
    /// no other member owns it or still consumes it.
    fn reconcile(&mut self, member_id: &str, now: Instant) -> (Answer, bool) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let busy: BTreeSet<Tp> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.current.iter().chain(m.owned.iter()).cloned())
            .collect();
        let target_epoch = self.target_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return (
                Answer { member_id: member_id.into(), epoch: 0, assignment: BTreeSet::new(), reconciling: false },
                false,
            );
        };
        let keep: BTreeSet<Tp> = member.current.intersection(&target).cloned().collect();
        let add = target.iter().filter(|tp| !member.current.contains(*tp) && !busy.contains(*tp)).cloned();
        let next: BTreeSet<Tp> = keep.into_iter().chain(add).collect();
        let mut changed = false;
        if next != member.current {
            member.current = next;
            changed = true;
        }
        let converged = member.current == target;
        if converged && member.epoch != target_epoch {
            member.epoch = target_epoch;
            changed = true;
        }
        let revoking = !member.owned.is_subset(&member.current);
        member.revoking_since = if revoking { Some(member.revoking_since.unwrap_or(now)) } else { None };
        let answer = Answer {
            member_id: member_id.to_string(),
            epoch: member.epoch,
            assignment: member.current.clone(),
            reconciling: !converged || revoking,
        };
        (answer, changed)
    }

    /// Removes members whose session expired or who did not give up
    /// revoked partitions within their rebalance timeout; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now.duration_since(m.last_seen) > m.session_timeout
                    || m.revoking_since.is_some_and(|t| now.duration_since(t) > m.rebalance_timeout)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.epoch += 1;
        }
        gone
    }

    /// Checks that a commit comes from a current member for partitions it
    /// owns.
    pub fn check_commit<'a>(
        &self,
        member_id: &str,
        epoch: i32,
        tps: impl IntoIterator<Item = &'a Tp>,
    ) -> Result<(), MemberError> {
        let member = self.members.get(member_id).ok_or(MemberError::Unknown)?;
        if member.epoch != epoch {
            return Err(MemberError::Fenced);
        }
        for tp in tps {
            if !member.current.contains(tp) && !member.owned.contains(tp) {
                return Err(MemberError::NotOwned(tp.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(member_id: &str, epoch: i32, owned: &BTreeSet<Tp>) -> Heartbeat {
        Heartbeat {
            member_id: member_id.into(),
            epoch,
            topics: ["t".to_string()].into(),
            owned: owned.clone(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            ..Heartbeat::default()
        }
    }

    /// No partition is in two members' assignments or reported ownership.
    fn assert_exclusive(group: &Group) {
        let mut seen = BTreeMap::new();
        for m in group.members.values() {
            for tp in m.current.iter() {
                if let Some(other) = seen.insert(tp.clone(), m.id.clone()) {
                    panic!("{tp:?} held by {other} and {}", m.id);
                }
            }
        }
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_gave_it_up() {
        let counts = BTreeMap::from([("t".to_string(), 4)]);
        let now = Instant::now();
        let mut g = Group::new("g");
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("m{n}")
        };
        let (a, _) = g.heartbeat(hb("", 0, &BTreeSet::new()), &counts, now, &mut ids).expect("join");
        assert_eq!(a.assignment.len(), 4, "alone, it gets everything");
        let a_owned = a.assignment.clone();
        let (b, _) = g.heartbeat(hb("", 0, &BTreeSet::new()), &counts, now, &mut ids).expect("join");
        assert!(b.assignment.is_empty(), "nothing is free yet: a still owns it all");
        assert_exclusive(&g);
        // a heartbeats: two of its partitions are revoked...
        let (a2, _) = g.heartbeat(hb(&a.member_id, a.epoch, &a_owned), &counts, now, &mut ids).expect("hb");
        assert_eq!(a2.assignment.len(), 2);
        // ...but b gets them only once a stops reporting them.
        let (b2, _) = g.heartbeat(hb(&b.member_id, b.epoch, &BTreeSet::new()), &counts, now, &mut ids).expect("hb");
        assert!(b2.assignment.is_empty(), "a still consumes them");
        g.heartbeat(hb(&a.member_id, a2.epoch, &a2.assignment), &counts, now, &mut ids).expect("hb");
        let (b3, _) = g.heartbeat(hb(&b.member_id, b2.epoch, &BTreeSet::new()), &counts, now, &mut ids).expect("hb");
        assert_eq!(b3.assignment.len(), 2);
        assert_eq!(g.members.len(), 2, "heartbeats of a member with nothing yet are not joins");
        assert!(b3.assignment.is_disjoint(&a2.assignment));
        assert_exclusive(&g);
        assert_eq!(g.state(), "Stable");
        // A stale epoch is fenced, for heartbeats and commits.
        assert_eq!(
            g.heartbeat(hb(&b.member_id, b.epoch + 7, &BTreeSet::new()), &counts, now, &mut ids).err(),
            Some(MemberError::Fenced)
        );
        assert_eq!(g.check_commit(&b.member_id, b3.epoch - 1, b3.assignment.iter()), Err(MemberError::Fenced));
        let not_b = a2.assignment.iter().next().expect("one").clone();
        assert_eq!(g.check_commit(&b.member_id, b3.epoch, [&not_b]), Err(MemberError::NotOwned(not_b.clone())));
        // b stops heartbeating: it expires and a gets everything back.
        let later = now + Duration::from_secs(11);
        g.members.get_mut(&a.member_id).expect("a").last_seen = later;
        assert_eq!(g.expire(later), vec![b.member_id.clone()]);
        let (a4, _) = g.heartbeat(hb(&a.member_id, a2.epoch, &a2.assignment), &counts, later, &mut ids).expect("hb");
        assert_eq!(a4.assignment.len(), 4);
    }

    #[test]
    fn a_static_member_restarting_keeps_its_partitions_without_a_rebalance() {
        let counts = BTreeMap::from([("t".to_string(), 4)]);
        let now = Instant::now();
        let mut g = Group::new("g");
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("m{n}")
        };
        let join = |instance: &str| Heartbeat { instance_id: Some(instance.into()), ..hb("", 0, &BTreeSet::new()) };
        let (a, _) = g.heartbeat(join("i-a"), &counts, now, &mut ids).expect("join");
        let (b, _) = g.heartbeat(join("i-b"), &counts, now, &mut ids).expect("join");
        let (mut a, mut b) = (a, b);
        for _ in 0..3 {
            a = g.heartbeat(hb(&a.member_id, a.epoch, &a.assignment), &counts, now, &mut ids).expect("hb").0;
            b = g.heartbeat(hb(&b.member_id, b.epoch, &b.assignment), &counts, now, &mut ids).expect("hb").0;
        }
        assert_eq!((a.assignment.len(), b.assignment.len()), (2, 2));
        let epoch = g.epoch;
        // b restarts: a static leave, then a join under the same instance id.
        g.heartbeat(Heartbeat { epoch: -2, ..hb(&b.member_id, b.epoch, &b.assignment) }, &counts, now, &mut ids)
            .expect("leave");
        let (b2, _) = g.heartbeat(join("i-b"), &counts, now, &mut ids).expect("rejoin");
        assert_ne!(b2.member_id, b.member_id);
        assert_eq!(b2.assignment, b.assignment, "the same partitions, at once");
        assert_eq!(g.epoch, epoch, "no rebalance");
        assert_eq!(g.check_commit(&b.member_id, b.epoch, b.assignment.iter()), Err(MemberError::Unknown));
    }

    #[test]
    fn partitions_being_revoked_stay_blocked_across_a_failover_and_over_reports_are_not_believed() {
        let counts = BTreeMap::from([("t".to_string(), 4)]);
        let now = Instant::now();
        let mut g = Group::new("g");
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("m{n}")
        };
        let (a, _) = g.heartbeat(hb("", 0, &BTreeSet::new()), &counts, now, &mut ids).expect("join");
        let (b, _) = g.heartbeat(hb("", 0, &BTreeSet::new()), &counts, now, &mut ids).expect("join");
        // a is told to give two partitions up but still consumes all four.
        let (a2, _) = g.heartbeat(hb(&a.member_id, a.epoch, &a.assignment), &counts, now, &mut ids).expect("hb");
        assert_eq!(a2.assignment.len(), 2);
        // The coordinator fails over: the new one rebuilds from the record.
        let mut g2 = Group::restore("g", &g.record(), now);
        let (b2, _) = g2.heartbeat(hb(&b.member_id, b.epoch, &BTreeSet::new()), &counts, now, &mut ids).expect("hb");
        assert!(b2.assignment.is_empty(), "a still consumes them: {b2:?}");
        // a claims more than it was ever given: not believed.
        let all: BTreeSet<Tp> = (0..4).map(|p| ("t".to_string(), p)).collect();
        g2.heartbeat(hb(&a.member_id, a2.epoch, &all), &counts, now, &mut ids).expect("hb");
        g2.heartbeat(hb(&a.member_id, a2.epoch, &a2.assignment), &counts, now, &mut ids).expect("hb");
        let (b3, _) = g2.heartbeat(hb(&b.member_id, b2.epoch, &BTreeSet::new()), &counts, now, &mut ids).expect("hb");
        assert_eq!(b3.assignment.len(), 2);
        assert!(b3.assignment.is_disjoint(&a2.assignment));
    }
}
