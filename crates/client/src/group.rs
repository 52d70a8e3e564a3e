//! Group membership for a [`crate::Consumer`]: a background task
//! heartbeats the group's coordinator (found through FindCoordinator) with
//! the partitions the consumer still owns, and keeps the newest assignment
//! for the consumer to apply on its next poll.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::api as pb;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::consumer::TopicPartition;
use crate::error::{Error, ErrorCode, Result};

/// How a group member runs.
#[derive(Debug, Clone)]
pub(crate) struct MemberConfig {
    pub group: String,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub assignor: String,
}

/// What the heartbeat task and the consumer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub topics: BTreeSet<String>,
    pub member_id: String,
    pub epoch: i32,
    /// The newest assignment from the coordinator.
    pub target: Option<BTreeSet<TopicPartition>>,
    /// What the consumer consumes now.
    pub owned: BTreeSet<TopicPartition>,
    /// Membership lost (fenced or expired): drop everything, rejoin.
    pub lost: bool,
    /// The group refused the member for good (NOT_AUTHORIZED): the
    /// heartbeat stopped, and the consumer's next poll returns this.
    pub refused: Option<Error>,
    coordinator: Option<String>,
    leaving: bool,
}

pub(crate) struct Membership {
    pub client: Client,
    pub config: MemberConfig,
    pub shared: Arc<Mutex<Shared>>,
    pub wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

fn to_pb(set: &BTreeSet<TopicPartition>) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for tp in set {
        match out.last_mut() {
            Some(last) if last.topic == tp.topic => last.partitions.push(tp.partition),
            _ => out.push(pb::TopicPartitions { topic: tp.topic.clone(), partitions: vec![tp.partition] }),
        }
    }
    out
}

pub(crate) fn from_pb(list: Vec<pb::TopicPartitions>) -> BTreeSet<TopicPartition> {
    list.into_iter()
        .flat_map(|t| t.partitions.into_iter().map(move |p| TopicPartition::new(t.topic.clone(), p)))
        .collect()
}

impl Membership {
    /// Starts heartbeating for `topics`.
    pub fn start(client: Client, config: MemberConfig, topics: BTreeSet<String>) -> Membership {
        let shared = Arc::new(Mutex::new(Shared { topics, ..Shared::default() }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(client.clone(), config.clone(), shared.clone(), wake.clone()));
        Membership { client, config, shared, wake, task: Some(task) }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The coordinator's address (found if not known).
    pub async fn coordinator(&self) -> Result<String> {
        coordinator(&self.client, &self.config.group, &self.shared).await
    }

    pub fn forget_coordinator(&self) {
        self.lock().coordinator = None;
    }

    /// Leaves the group (the coordinator reassigns at once) and stops.
    pub async fn leave(&mut self) {
        self.lock().leaving = true;
        self.wake.notify_one();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Commits `offsets` for the member whose state is `shared`, finding the
/// coordinator again while it moves.
pub(crate) async fn commit(
    client: Client,
    group: String,
    shared: Arc<Mutex<Shared>>,
    offsets: Vec<(TopicPartition, u64)>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + crate::consumer::LEADER_WAIT_MAX;
    loop {
        let (member_id, epoch) = {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            if s.lost {
                // The positions belong to a membership that is gone.
                return Err(Error::api(ErrorCode::UnknownMemberId, "the group membership was lost; not committing"));
            }
            (s.member_id.clone(), s.epoch)
        };
        let request = pb::OffsetCommitRequest {
            group: group.clone(),
            member_id: member_id.clone(),
            member_epoch: epoch,
            offsets: offsets
                .iter()
                .map(|(tp, offset)| pb::PartitionOffsetCommit {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        let error = match coordinator(&client, &group, &shared).await {
            Ok(addr) => match client.stub(&addr)?.offset_commit(request).await {
                Ok(answer) => match Error::from_pb(answer.into_inner().error) {
                    None => return Ok(()),
                    Some(e) => e,
                },
                Err(status) => Error::from_status(status),
            },
            Err(e) => e,
        };
        // A heartbeat that moved the member to a new epoch while the commit
        // was on its way: the same member, so commit again under the new one.
        let epoch_moved = error.code() == Some(ErrorCode::FencedMemberEpoch) && {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            !s.lost && s.member_id == member_id && s.epoch != epoch
        };
        if epoch_moved && tokio::time::Instant::now() < deadline {
            continue;
        }
        if !error.is_retriable() || tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        shared.lock().unwrap_or_else(|p| p.into_inner()).coordinator = None;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn coordinator(client: &Client, group: &str, shared: &Mutex<Shared>) -> Result<String> {
    if let Some(addr) = shared.lock().unwrap_or_else(|p| p.into_inner()).coordinator.clone() {
        return Ok(addr);
    }
    let request = pb::FindCoordinatorRequest { group: group.to_string() };
    let response = client
        .call_any(|mut stub| {
            let request = request.clone();
            async move { stub.find_coordinator(request).await }
        })
        .await?;
    if let Some(error) = Error::from_pb(response.error) {
        return Err(error);
    }
    shared.lock().unwrap_or_else(|p| p.into_inner()).coordinator = Some(response.address.clone());
    Ok(response.address)
}

async fn run(client: Client, config: MemberConfig, shared: Arc<Mutex<Shared>>, wake: Arc<Notify>) {
    let mut interval = Duration::from_millis(100);
    loop {
        let (request, leaving) = {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let epoch = if s.leaving {
                if s.member_id.is_empty() {
                    return;
                }
                if config.instance_id.is_some() { -2 } else { -1 }
            } else {
                s.epoch
            };
            let request = pb::GroupHeartbeatRequest {
                group: config.group.clone(),
                member_id: s.member_id.clone(),
                member_epoch: epoch,
                instance_id: config.instance_id.clone().unwrap_or_default(),
                topics: s.topics.iter().cloned().collect(),
                assignor: config.assignor.clone(),
                owned: to_pb(&s.owned),
                rebalance_timeout_ms: config.rebalance_timeout.as_millis() as u32,
                session_timeout_ms: config.session_timeout.as_millis() as u32,
            };
            (request, s.leaving)
        };
        let answer = match coordinator(&client, &config.group, &shared).await {
            Ok(addr) => match client.stub(&addr) {
                Ok(mut stub) => {
                    match tokio::time::timeout(Duration::from_secs(10), stub.group_heartbeat(request)).await {
                        Ok(Ok(response)) => Ok(response.into_inner()),
                        Ok(Err(status)) => Err(Error::from_status(status)),
                        Err(_) => Err(Error::Transport("heartbeat timed out".into())),
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let mut retry_soon = false;
        {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            match answer.map(|r| (Error::from_pb(r.error.clone()), r)) {
                Ok((None, response)) => {
                    if leaving {
                        return;
                    }
                    s.member_id = response.member_id;
                    s.epoch = response.member_epoch;
                    s.target = Some(from_pb(response.assignment));
                    interval = Duration::from_millis(u64::from(response.heartbeat_interval_ms.max(50)));
                }
                Ok((Some(error), _)) | Err(error) => {
                    match error.code() {
                        Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch) => {
                            if leaving {
                                return;
                            }
                            tracing::info!(group = %config.group, %error, "membership lost; rejoining");
                            s.lost = true;
                            s.owned.clear();
                            s.member_id.clear();
                            s.epoch = 0;
                            s.target = None;
                        }
                        // No binding lets this client into the group:
                        // retrying would not change that.
                        Some(ErrorCode::NotAuthorized) => {
                            tracing::warn!(group = %config.group, %error, "the group refused this member");
                            s.refused = Some(error);
                            return;
                        }
                        _ => {
                            tracing::debug!(group = %config.group, %error, "heartbeat failed; retrying");
                            s.coordinator = None;
                        }
                    }
                    retry_soon = true;
                }
            }
        }
        let wait = if retry_soon { Duration::from_millis(100) } else { interval };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}
