//! Quiescence: idle partitions cost (almost) nothing.
//!
//! openraft wakes every Raft instance several times per heartbeat interval
//! (its ticker), and a leader sends every follower a heartbeat each
//! interval. With 1,000 partitions that is most of a core per node, for
//! groups that do nothing. So a partition group that has been idle and
//! fully replicated for a while goes *quiet*: its followers, then its
//! leader, park openraft's ticker (no ticks: no heartbeats, no election
//! timer). What the heartbeats were for is then done once per pair of
//! nodes: every node pings every peer each heartbeat interval ([`Ping`]),
//! and a quiet group wakes (its ticker runs again) when
//!
//! - it has work: the leader's log grew (a write, a membership change), or
//!   a follower received entries, a vote request, a snapshot or a
//!   leadership transfer;
//! - the node it depends on stopped answering pings for an election timeout
//!   (a follower's leader: the follower then elects, as it would have after
//!   missing heartbeats), or answers again after that, or restarted (a
//!   leader's follower: the leader then heartbeats again, so the returning
//!   node learns who leads instead of calling an election);
//! - it is no longer what it was when it went quiet (leader, or follower of
//!   the same leader in the same term).
//!
//! A leader goes quiet only after every follower agreed to ([`QuiesceRequest`]:
//! same vote, same last log id), so a follower never waits on a leader that
//! stopped heartbeating without telling it. A follower that went quiet while
//! its leader did not is harmless: heartbeats reach it, and it needs no
//! election timer while the leader's node answers pings.
//!
//! **To ensure correctness:** this module only decides when openraft's timers
//! run; Raft is safe whatever its timers do, so safety never depends on it.
//! Liveness does: a quiet follower calls an election only when this module
//! wakes it. The controller group never goes quiet (it is one group, and the
//! metadata gate waits on its heartbeats).
//!
//! [`Ping`]: strata_proto::raft::Ping
//! [`QuiesceRequest`]: strata_proto::raft::QuiesceRequest

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use strata_proto::raft as pb;
use strata_proto::raft::raft_request::Body;
use strata_proto::raft::raft_response::Body as ReplyBody;
use tokio::sync::watch;

use crate::limits::QUIESCE_CONCURRENCY_MAX;
use crate::network::convert::{log_id_from_pb, log_id_to_pb, vote_from_pb, vote_to_pb};
use crate::network::faults::TransportFaults;
use crate::network::peer::Peers;
use crate::network::server::Router;
use crate::node::{Group, GroupRole};
use crate::types::RaftVote;

/// The timing of quiescence, derived from the Raft timing.
#[derive(Debug, Clone, Copy)]
pub struct QuiesceTiming {
    /// How often every peer is pinged (the heartbeat interval).
    pub ping_interval: Duration,
    /// A node that answered no ping for this long is taken as gone
    /// (the minimum election timeout).
    pub dead_after: Duration,
    /// How long a group must be idle and fully replicated before it goes
    /// quiet (twice the maximum election timeout).
    pub quiet_after: Duration,
    /// A woken follower whose leader is gone resumes ticking after a random
    /// delay below this (the spread of the election timeout), so that the
    /// followers of one group do not all stand at once and split the vote.
    pub wake_spread: Duration,
}

impl QuiesceTiming {
    /// The timing for an openraft config.
    pub fn from_raft(config: &openraft::Config) -> QuiesceTiming {
        QuiesceTiming {
            ping_interval: Duration::from_millis(config.heartbeat_interval),
            dead_after: Duration::from_millis(config.election_timeout_min),
            quiet_after: Duration::from_millis(2 * config.election_timeout_max),
            wake_spread: Duration::from_millis(config.election_timeout_max - config.election_timeout_min),
        }
    }
}

/// What this node last heard from a peer node.
#[derive(Debug, Clone, Copy)]
struct Contact {
    last_pong: Instant,
    incarnation: u64,
    /// Bumped when the peer restarts or answers again after a silence
    /// longer than `dead_after`: a quiet group compares it with the value
    /// it saw when it went quiet.
    generation: u64,
}

/// A quiet group and what keeps it quiet.
#[derive(Debug, Clone)]
enum Quiet {
    Leader {
        vote: RaftVote,
        last_log_index: Option<u64>,
        /// Each follower's node and its contact generation at the time.
        followers: Vec<(u64, u64)>,
    },
    Follower {
        vote: RaftVote,
        leader: u64,
        generation: u64,
    },
}

/// A Raft message that arrived for a group, as far as quiescence cares.
pub(crate) enum Arrived {
    /// An append; `has_entries` false is a heartbeat.
    Append { vote: RaftVote, has_entries: bool },
    /// A vote request, a snapshot or a leadership transfer.
    Other,
}

/// A node's quiescence state: its peers' liveness and its quiet groups.
pub struct Quiescence {
    node_id: u64,
    incarnation: u64,
    timing: QuiesceTiming,
    contacts: Mutex<HashMap<u64, Contact>>,
    quiet: Mutex<HashMap<u64, Quiet>>,
    /// Leader groups' last log index, and since when it has not moved.
    idle: Mutex<HashMap<u64, (Option<u64>, Instant)>>,
    /// When this node started pinging.
    started: Instant,
}

impl Quiescence {
    /// The state of node `node_id` (empty: nothing quiet, no peer heard).
    pub fn new(node_id: u64, timing: QuiesceTiming) -> Quiescence {
        Quiescence {
            node_id,
            incarnation: random_u64(),
            timing,
            contacts: Mutex::default(),
            quiet: Mutex::default(),
            idle: Mutex::default(),
            started: Instant::now(),
        }
    }

    /// Whether group `group` is quiet on this node.
    pub fn is_quiet(&self, group: u64) -> bool {
        lock(&self.quiet).contains_key(&group)
    }

    /// How many of this node's groups are quiet.
    pub fn n_quiet(&self) -> usize {
        lock(&self.quiet).len()
    }

    /// How long since `node` last answered a ping (`None`: never).
    pub fn since_contact(&self, node: u64) -> Option<Duration> {
        lock(&self.contacts).get(&node).map(|c| c.last_pong.elapsed())
    }

    /// Whether `node` is not known to be down: it is this node, or it
    /// answered a ping within `silent`, or it never answered but this node
    /// has been up for less than `unheard` (while a cluster starts, a peer
    /// may take a while to answer a first time).
    pub fn answered_within(&self, node: u64, silent: Duration, unheard: Duration) -> bool {
        node == self.node_id
            || match self.since_contact(node) {
                Some(since) => since <= silent,
                None => self.started.elapsed() < unheard,
            }
    }

    /// `node`'s contact generation if it answered a ping within `dead_after`.
    fn live_generation(&self, node: u64) -> Option<u64> {
        let contacts = lock(&self.contacts);
        let contact = contacts.get(&node)?;
        (contact.last_pong.elapsed() <= self.timing.dead_after).then_some(contact.generation)
    }

    fn record_pong(&self, node: u64, incarnation: u64) {
        let now = Instant::now();
        let mut contacts = lock(&self.contacts);
        match contacts.get_mut(&node) {
            Some(contact) => {
                let silent = now.duration_since(contact.last_pong) > self.timing.dead_after;
                if silent || contact.incarnation != incarnation {
                    contact.generation += 1;
                }
                contact.last_pong = now;
                contact.incarnation = incarnation;
            }
            None => {
                contacts.insert(node, Contact { last_pong: now, incarnation, generation: 1 });
            }
        }
    }

    /// Answers a peer's ping.
    pub(crate) fn pong(&self) -> pb::Pong {
        pb::Pong { node: self.node_id, incarnation: self.incarnation }
    }

    /// Wakes `group` if it is quiet: its ticker runs again.
    pub(crate) fn wake(&self, group: &Group) {
        if lock(&self.quiet).remove(&group.id).is_some() {
            group.raft.runtime_config().tick(true);
            tracing::debug!(group = group.id, "quiet group woken");
        }
        lock(&self.idle).insert(group.id, (None, Instant::now()));
    }

    /// Wakes `group` if it is quiet and, if it leads, renews its lease:
    /// heartbeats and waits (at most `dead_after`) for a quorum to answer.
    pub(crate) async fn ensure_awake(&self, group: &Group) {
        if !self.is_quiet(group.id) {
            return;
        }
        self.wake(group);
        let woke = Instant::now();
        if !group.raft.is_leader() {
            return;
        }
        if group.raft.trigger().heartbeat().await.is_err() {
            return;
        }
        while woke.elapsed() < self.timing.dead_after {
            let acked = group.raft.metrics().borrow_watched().last_quorum_acked;
            if acked.is_some_and(|at| openraft::Instant::elapsed(&*at) < woke.elapsed()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// After `group` handled a message from a peer: work wakes it; a
    /// heartbeat of the leader it is quiet under does not.
    pub(crate) fn arrived(&self, group: &Group, message: Arrived) {
        let keep_quiet = match (&message, lock(&self.quiet).get(&group.id)) {
            (_, None) => return,
            (Arrived::Append { vote, has_entries: false }, Some(Quiet::Follower { vote: quiet_vote, .. })) => {
                vote == quiet_vote
            }
            _ => false,
        };
        if !keep_quiet {
            self.wake(group);
        }
    }

    /// A follower's side of [`QuiesceRequest`](pb::QuiesceRequest): goes
    /// quiet if it follows the asking leader in the same term, has the same
    /// last log id, and hears the leader's node.
    pub(crate) fn on_quiesce_request(&self, group: &Group, request: pb::QuiesceRequest) -> bool {
        if group.role != GroupRole::Partition {
            return false;
        }
        let Ok(vote) = vote_from_pb(request.vote) else { return false };
        let last_log_id = request.last_log_id.map(log_id_from_pb);
        let metrics = group.raft.metrics().borrow_watched().clone();
        if !vote.committed || metrics.vote != vote || metrics.state != ServerState::Follower {
            return false;
        }
        if metrics.last_log_index != last_log_id.map(|id| id.index) {
            return false;
        }
        let leader = vote.leader_id.voted_for;
        let Some(generation) = self.live_generation(leader) else { return false };
        group.raft.runtime_config().tick(false);
        lock(&self.quiet).insert(group.id, Quiet::Follower { vote, leader, generation });
        // Everything is applied: nobody is about to read the log's tail.
        group.log.release_cache();
        tracing::debug!(group = group.id, leader, "quiet (follower)");
        true
    }

    /// Whether a quiet group should stay quiet, from its Raft metrics.
    fn stays_quiet(&self, quiet: &Quiet, metrics: &openraft::RaftMetrics<crate::types::C>) -> bool {
        match quiet {
            Quiet::Leader { vote, last_log_index, followers } => {
                metrics.state == ServerState::Leader
                    && metrics.vote == *vote
                    && metrics.last_log_index == *last_log_index
                    && followers.iter().all(|(node, generation)| self.live_generation(*node) == Some(*generation))
            }
            Quiet::Follower { vote, leader, generation } => {
                metrics.vote == *vote && self.live_generation(*leader) == Some(*generation)
            }
        }
    }

    /// One pass over the node's groups: wakes quiet groups that must wake,
    /// and quiets leader groups idle and fully replicated for `quiet_after`.
    async fn check(&self, router: &Router, peers: &Peers, faults: &TransportFaults) {
        let groups = router.all();
        let mut candidates = Vec::new();
        {
            let ids: std::collections::HashSet<u64> = groups.iter().map(|g| g.id).collect();
            lock(&self.quiet).retain(|id, _| ids.contains(id));
            lock(&self.idle).retain(|id, _| ids.contains(id));
        }
        for group in groups {
            if group.role != GroupRole::Partition {
                continue;
            }
            let metrics = group.raft.metrics().borrow_watched().clone();
            let quiet = lock(&self.quiet).get(&group.id).cloned();
            if let Some(quiet) = quiet {
                if !self.stays_quiet(&quiet, &metrics) {
                    let leader_gone =
                        matches!(quiet, Quiet::Follower { leader, .. } if self.live_generation(leader).is_none());
                    if leader_gone {
                        // Its leader's node is gone: spread the followers'
                        // elections (their leases expired long ago, so the
                        // first tick stands for election).
                        lock(&self.quiet).remove(&group.id);
                        let delay = random_below(self.timing.wake_spread);
                        let group = group.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            group.raft.runtime_config().tick(true);
                        });
                        tracing::debug!(group = group.id, "quiet follower's leader is gone: waking to elect");
                    } else {
                        self.wake(&group);
                    }
                }
                continue;
            }
            if metrics.state != ServerState::Leader {
                lock(&self.idle).remove(&group.id);
                continue;
            }
            let last_log_index = metrics.last_log_index;
            let since = {
                let mut idle = lock(&self.idle);
                let entry = idle.entry(group.id).or_insert((last_log_index, Instant::now()));
                if entry.0 != last_log_index {
                    *entry = (last_log_index, Instant::now());
                }
                entry.1
            };
            if since.elapsed() < self.timing.quiet_after {
                continue;
            }
            let applied = metrics.last_applied.map(|id| id.index);
            let Some(replication) = metrics.replication.as_ref() else { continue };
            let caught_up = applied == last_log_index
                && replication
                    .iter()
                    .filter(|(node, _)| **node != self.node_id)
                    .all(|(_, matched)| matched.map(|id| id.index) == last_log_index);
            if !caught_up {
                continue;
            }
            let membership = metrics.membership_config.membership();
            let mut followers = Vec::new();
            for (node, info) in membership.nodes() {
                if *node == self.node_id {
                    continue;
                }
                match self.live_generation(*node) {
                    Some(generation) if !faults.is_isolated(*node) => {
                        followers.push((*node, generation, info.addr.clone()));
                    }
                    _ => {
                        followers.clear();
                        break;
                    }
                }
            }
            if followers.is_empty() && membership.nodes().count() > 1 {
                continue;
            }
            candidates.push((group, metrics.vote, last_log_index, followers));
            if candidates.len() >= QUIESCE_CONCURRENCY_MAX {
                break;
            }
        }
        let attempts = candidates.into_iter().map(|(group, vote, last_log_index, followers)| {
            self.quiesce_leader(group, vote, last_log_index, followers, peers)
        });
        futures::future::join_all(attempts).await;
    }

    /// Asks every follower to go quiet, then parks the leader's ticker if
    /// all did and nothing moved meanwhile.
    async fn quiesce_leader(
        &self,
        group: Group,
        vote: RaftVote,
        last_log_index: Option<u64>,
        followers: Vec<(u64, u64, String)>,
        peers: &Peers,
    ) {
        let last_log_id = group.raft.metrics().borrow_watched().last_applied;
        if last_log_id.map(|id| id.index) != last_log_index {
            return;
        }
        let request =
            pb::QuiesceRequest { vote: Some(vote_to_pb(&vote)), last_log_id: last_log_id.map(|id| log_id_to_pb(&id)) };
        let asks = followers.iter().map(|(node, _, addr)| {
            let body = Body::Quiesce(request);
            let peer = peers.get(*node, addr);
            async move {
                matches!(
                    peer.call(group.id, body, self.timing.dead_after).await,
                    Ok(pb::RaftResponse { body: Some(ReplyBody::Quiesce(pb::QuiesceReply { quiet: true })), .. })
                )
            }
        });
        let answers = futures::future::join_all(asks).await;
        if !answers.iter().all(|quiet| *quiet) {
            // Try again after another idle period.
            lock(&self.idle).insert(group.id, (last_log_index, Instant::now()));
            return;
        }
        let metrics = group.raft.metrics().borrow_watched().clone();
        if metrics.state != ServerState::Leader || metrics.vote != vote || metrics.last_log_index != last_log_index {
            return;
        }
        group.raft.runtime_config().tick(false);
        let followers = followers.into_iter().map(|(node, generation, _)| (node, generation)).collect();
        lock(&self.quiet).insert(group.id, Quiet::Leader { vote, last_log_index, followers });
        // Replicated and applied everywhere: nobody is about to read the tail.
        group.log.release_cache();
        tracing::debug!(group = group.id, "quiet (leader)");
    }

    /// Runs the node's pings and quiescence checks until `stopping` turns true.
    pub(crate) async fn run(
        self: Arc<Self>,
        router: Arc<Router>,
        peers: Arc<Peers>,
        faults: Arc<TransportFaults>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut ping_tick = tokio::time::interval(self.timing.ping_interval);
        ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check_tick = tokio::time::interval(2 * self.timing.ping_interval);
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let in_flight: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>> = Arc::default();
        let mut known: HashMap<u64, String> = HashMap::new();
        let mut known_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ping_tick.tick() => {
                    // The peer set changes rarely: re-read it every second.
                    if known_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        known = self.peer_addresses(&router);
                        known_at = Some(Instant::now());
                    }
                    for (node, addr) in &known {
                        if faults.is_isolated(*node) {
                            continue;
                        }
                        let busy = lock(&in_flight).entry(*node).or_default().clone();
                        if busy.swap(true, Ordering::AcqRel) {
                            continue;
                        }
                        let peer = peers.get(*node, addr);
                        let this = self.clone();
                        let ttl = self.timing.dead_after;
                        tokio::spawn(async move {
                            let ping = Body::Ping(pb::Ping { from_node: this.node_id, incarnation: this.incarnation });
                            if let Ok(pb::RaftResponse { body: Some(ReplyBody::Pong(pong)), .. }) =
                                peer.call(0, ping, ttl).await
                            {
                                this.record_pong(pong.node, pong.incarnation);
                            }
                            busy.store(false, Ordering::Release);
                        });
                    }
                }
                _ = check_tick.tick() => self.check(&router, &peers, &faults).await,
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// Every other node named in a membership of this node's groups.
    fn peer_addresses(&self, router: &Router) -> HashMap<u64, String> {
        let mut out = HashMap::new();
        for group in router.all() {
            let membership = group.raft.metrics().borrow_watched().membership_config.clone();
            for (node, info) in membership.membership().nodes() {
                if *node != self.node_id {
                    out.entry(*node).or_insert_with(|| info.addr.clone());
                }
            }
        }
        out
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random u64 from the standard library's randomly keyed hasher (no
/// dependency for a few random numbers that need not be strong).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

fn random_below(bound: Duration) -> Duration {
    let nanos = bound.as_nanos() as u64;
    if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(random_u64() % nanos) }
}
