//! The checker: finds anomalies in a history, as Jepsen's Kafka checker
//! defines them. Pure: a history in, a verdict out; unit-tested on
//! hand-made histories (at least one per anomaly) at the bottom.
//!
//! Terms. A *key* is a partition of the chaos topic; every value is sent
//! once, so a value names one send. The *version order* of a key is the
//! sorted set of offsets at which anything was observed (by a poll, the
//! final read or a send's acknowledgement); "the next offset" below means
//! the next one in that order, so the checks do not assume offsets are
//! dense.
//!
//! Anomalies (every one makes the run invalid):
//! - `lost-write`: an acknowledged send whose value is never read although
//!   a later value of its key is (later: a higher offset; or, when the ack
//!   carried no offset, a send invoked after this one completed);
//! - `unseen`: an acknowledged send never read, and not lost by the rule
//!   above (the final read reads everything, so this is data loss too);
//! - `duplicate`: a value at more than one offset;
//! - `inconsistent-offsets`: one offset of a key holding different values;
//! - `G1a` (aborted read): a value read whose send definitely failed;
//! - `unexpected-value`: a value read that no send ever carried;
//! - `nonmonotonic-send`: a process's acknowledged sends to one key not at
//!   increasing offsets;
//! - `int-poll-skip` / `int-nonmonotonic-poll`: within one poll, a key's
//!   records skipping an offset / going back;
//! - `poll-skip` / `nonmonotonic-poll`: the same between a process's
//!   consecutive polls of a key, and between an assign's seek and the
//!   first record read after it, as long as its consumer kept its position
//!   (an assign, a subscribe, a failed poll, or a rebalance of that key
//!   during the poll, which the poll's entry records, starts afresh);
//! - `group-commit-backwards`: a committed offset (from a commit or a
//!   describe of the group) below one that was committed before it began;
//! - `group-double-owner`: one description of the group giving a partition
//!   to two members;
//! - `group-resume-after-commit`: a member given a partition whose first
//!   record read is past every offset ever committed for it (records
//!   skipped by the group).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use crate::history::{F, Op, OpType};

/// Examples kept per anomaly.
const EXAMPLES_MAX: usize = 8;

/// One kind of anomaly: how often, and a few cases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Anomaly {
    /// Cases found.
    pub count: u64,
    /// Up to [`EXAMPLES_MAX`] of them.
    pub examples: Vec<Value>,
}

/// Counts that describe the history checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Operations completed, by function then type ("send" → "ok" → n).
    pub ops: BTreeMap<String, BTreeMap<String, u64>>,
    /// Distinct values read by polls or the final read.
    pub n_values_read: u64,
    /// Acknowledged sends.
    pub n_sends_ok: u64,
    /// Acknowledged sends that were read.
    pub n_sends_ok_read: u64,
    /// Sends of unknown outcome that were read (they did happen).
    pub n_sends_info_read: u64,
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// True when no anomaly was found.
    pub valid: bool,
    /// Anomaly name → cases (only anomalies found).
    pub anomalies: BTreeMap<String, Anomaly>,
    /// What was checked.
    pub stats: Stats,
}

impl Verdict {
    fn add(&mut self, name: &str, example: Value) {
        let anomaly = self.anomalies.entry(name.to_string()).or_default();
        anomaly.count += 1;
        if anomaly.examples.len() < EXAMPLES_MAX {
            anomaly.examples.push(example);
        }
    }

    /// How many cases of `name` were found.
    pub fn count(&self, name: &str) -> u64 {
        self.anomalies.get(name).map_or(0, |a| a.count)
    }
}

/// One send, from its invoke and completion.
#[derive(Debug, Clone)]
struct Send {
    key: u32,
    process: i64,
    invoke_ns: u64,
    complete_ns: Option<u64>,
    outcome: Option<OpType>,
    offset: Option<u64>,
}

/// A committed-offset observation: a commit (write) or a describe (read).
#[derive(Debug, Clone)]
struct CommitSeen {
    invoke_ns: u64,
    complete_ns: u64,
    offsets: BTreeMap<u32, u64>,
    index: u64,
}

/// Pairs each completion with its invoke: (invoke, completion).
fn pairs(history: &[Op]) -> Vec<(Op, Option<Op>)> {
    let mut pending: HashMap<i64, usize> = HashMap::new();
    let mut out: Vec<(Op, Option<Op>)> = Vec::new();
    for op in history {
        match op.op_type {
            OpType::Invoke => {
                pending.insert(op.process, out.len());
                out.push((op.clone(), None));
            }
            _ => match pending.remove(&op.process) {
                Some(at) => out[at].1 = Some(op.clone()),
                // A completion without invoke (rebalance events, describes
                // recorded whole): its own pair.
                None => out.push((op.clone(), Some(op.clone()))),
            },
        }
    }
    out
}

fn type_name(t: OpType) -> &'static str {
    match t {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

fn f_name(f: F) -> String {
    serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{f:?}"))
}

/// Checks `history` and returns the verdict.
pub fn check(history: &[Op]) -> Verdict {
    let mut verdict = Verdict::default();
    let ops = pairs(history);

    // Stats, sends, and every observation of (key, offset, value).
    let mut sends: HashMap<u64, Send> = HashMap::new();
    let mut at_offset: BTreeMap<u32, BTreeMap<u64, BTreeSet<u64>>> = BTreeMap::new();
    let mut where_value: HashMap<u64, BTreeSet<(u32, u64)>> = HashMap::new();
    let mut read_values: HashMap<u64, u64> = HashMap::new(); // value → index of first read
    for (invoke, completion) in &ops {
        if let Some(done) = completion {
            if done.op_type != OpType::Invoke {
                *verdict
                    .stats
                    .ops
                    .entry(f_name(done.f))
                    .or_default()
                    .entry(type_name(done.op_type).to_string())
                    .or_default() += 1;
            }
        }
        match invoke.f {
            F::Send => {
                let (Some(key), Some(value)) = (invoke.key, invoke.value) else { continue };
                let offset = completion.as_ref().filter(|c| c.op_type == OpType::Ok).and_then(|c| c.offset);
                sends.insert(
                    value,
                    Send {
                        key,
                        process: invoke.process,
                        invoke_ns: invoke.time_ns,
                        complete_ns: completion.as_ref().map(|c| c.time_ns),
                        outcome: completion.as_ref().map(|c| c.op_type),
                        offset,
                    },
                );
                if let Some(offset) = offset {
                    at_offset.entry(key).or_default().entry(offset).or_default().insert(value);
                    where_value.entry(value).or_default().insert((key, offset));
                }
            }
            F::Poll | F::FinalRead => {
                let Some(done) = completion.as_ref().filter(|c| c.op_type == OpType::Ok) else { continue };
                for (key, records) in done.reads.iter().flatten() {
                    for &(offset, value) in records {
                        at_offset.entry(*key).or_default().entry(offset).or_default().insert(value);
                        where_value.entry(value).or_default().insert((*key, offset));
                        read_values.entry(value).or_insert(done.index);
                    }
                }
            }
            _ => {}
        }
    }
    verdict.stats.n_values_read = read_values.len() as u64;

    // Version orders.
    let order: BTreeMap<u32, Vec<u64>> =
        at_offset.iter().map(|(key, offsets)| (*key, offsets.keys().copied().collect())).collect();
    let index_of = |key: u32, offset: u64| -> Option<usize> { order.get(&key)?.binary_search(&offset).ok() };

    for (key, offsets) in &at_offset {
        for (offset, values) in offsets {
            if values.len() > 1 {
                verdict.add("inconsistent-offsets", json!({"key": key, "offset": offset, "values": values}));
            }
        }
    }
    let mut duplicated: Vec<(&u64, &BTreeSet<(u32, u64)>)> =
        where_value.iter().filter(|(_, places)| places.len() > 1).collect();
    duplicated.sort();
    for (value, places) in duplicated {
        let places: Vec<Value> = places.iter().map(|(k, o)| json!({"key": k, "offset": o})).collect();
        verdict.add("duplicate", json!({"value": value, "at": places}));
    }

    // Read values: aborted or never sent.
    let mut read_sorted: Vec<(&u64, &u64)> = read_values.iter().collect();
    read_sorted.sort();
    for (value, first_read) in read_sorted {
        match sends.get(value) {
            None => verdict.add("unexpected-value", json!({"value": value, "read_at_op": first_read})),
            Some(send) if send.outcome == Some(OpType::Fail) => {
                verdict.add("G1a", json!({"value": value, "key": send.key, "read_at_op": first_read}))
            }
            Some(send) if send.outcome == Some(OpType::Info) => verdict.stats.n_sends_info_read += 1,
            Some(_) => {}
        }
    }

    // Lost and unseen acknowledged sends.
    let mut highest_read: BTreeMap<u32, u64> = BTreeMap::new();
    let mut latest_invoke_read: BTreeMap<u32, u64> = BTreeMap::new();
    for value in read_values.keys() {
        if let Some(send) = sends.get(value) {
            let latest = latest_invoke_read.entry(send.key).or_default();
            *latest = (*latest).max(send.invoke_ns);
        }
        for (key, offset) in where_value.get(value).into_iter().flatten() {
            let high = highest_read.entry(*key).or_default();
            *high = (*high).max(*offset);
        }
    }
    let mut acked: Vec<(&u64, &Send)> = sends.iter().filter(|(_, s)| s.outcome == Some(OpType::Ok)).collect();
    acked.sort_by_key(|(v, _)| **v);
    verdict.stats.n_sends_ok = acked.len() as u64;
    for (value, send) in acked {
        if read_values.contains_key(value) {
            verdict.stats.n_sends_ok_read += 1;
            continue;
        }
        let later_read = match send.offset {
            Some(offset) => highest_read.get(&send.key).is_some_and(|high| *high > offset),
            None => latest_invoke_read.get(&send.key).is_some_and(|t| Some(*t) > send.complete_ns),
        };
        let example = json!({"key": send.key, "value": value, "offset": send.offset, "process": send.process});
        verdict.add(if later_read { "lost-write" } else { "unseen" }, example);
    }

    // Sends of one process to one key at increasing offsets.
    let mut last_send: HashMap<(i64, u32), (u64, u64)> = HashMap::new();
    for (invoke, completion) in &ops {
        let Some(done) = completion.as_ref().filter(|c| c.op_type == OpType::Ok && invoke.f == F::Send) else {
            continue;
        };
        let (Some(key), Some(offset)) = (invoke.key, done.offset) else { continue };
        if let Some((prev_offset, prev_value)) =
            last_send.insert((invoke.process, key), (offset, invoke.value.unwrap_or(0)))
        {
            if offset <= prev_offset {
                verdict.add(
                    "nonmonotonic-send",
                    json!({"process": invoke.process, "key": key, "offsets": [prev_offset, offset],
                           "values": [prev_value, invoke.value]}),
                );
            }
        }
    }

    // Polls: within one poll and between a process's polls.
    let mut last_read: HashMap<(i64, u32), u64> = HashMap::new();
    // Where an assign sought each key: its first poll must start there.
    let mut sought: HashMap<(i64, u32), u64> = HashMap::new();
    for (invoke, completion) in &ops {
        let process = invoke.process;
        match invoke.f {
            F::Assign | F::Subscribe => {
                last_read.retain(|(p, _), _| *p != process);
                sought.retain(|(p, _), _| *p != process);
                let done = completion.as_ref().filter(|c| c.op_type == OpType::Ok && c.f == F::Assign);
                for (key, offset) in done.and_then(|d| d.offsets.as_ref()).into_iter().flatten() {
                    sought.insert((process, *key), *offset);
                }
            }
            F::Poll => {
                let Some(done) = completion.as_ref().filter(|c| c.op_type == OpType::Ok) else {
                    // A failed poll may have moved positions past records
                    // it never returned: the worker starts a new consumer.
                    last_read.retain(|(p, _), _| *p != process);
                    sought.retain(|(p, _), _| *p != process);
                    continue;
                };
                // A rebalance during the poll moved the keys it names.
                for key in done.keys.iter().flatten().chain(done.revoked.iter().flatten()) {
                    last_read.remove(&(process, *key));
                    sought.remove(&(process, *key));
                }
                for (key, records) in done.reads.iter().flatten() {
                    let Some(&(first, first_value)) = records.first() else { continue };
                    if let Some(from) = sought.remove(&(process, *key)) {
                        let example = json!({"process": process, "key": key, "sought": from, "offset": first,
                                             "value": first_value, "op": done.index});
                        let lowest = order[key].partition_point(|o| *o < from);
                        if first < from {
                            verdict.add("nonmonotonic-poll", example);
                        } else if let Some(b) = index_of(*key, first).filter(|b| *b > lowest) {
                            let mut example = example;
                            example["skipped"] = json!(order[key][lowest..b].iter().take(5).collect::<Vec<_>>());
                            verdict.add("poll-skip", example);
                        }
                    }
                    let mut prev = last_read.get(&(process, *key)).map(|o| (*o, false));
                    for &(offset, value) in records {
                        if let Some((prev_offset, within)) = prev {
                            let (Some(a), Some(b)) = (index_of(*key, prev_offset), index_of(*key, offset)) else {
                                continue;
                            };
                            let example = json!({"process": process, "key": key, "offsets": [prev_offset, offset],
                                                 "value": value, "op": done.index});
                            if b <= a {
                                verdict
                                    .add(if within { "int-nonmonotonic-poll" } else { "nonmonotonic-poll" }, example);
                            } else if b > a + 1 {
                                let skipped: Vec<u64> = order[key][a + 1..b].iter().take(5).copied().collect();
                                let mut example = example;
                                example["skipped"] = json!(skipped);
                                verdict.add(if within { "int-poll-skip" } else { "poll-skip" }, example);
                            }
                        }
                        prev = Some((offset, true));
                    }
                    if let Some((offset, _)) = prev {
                        last_read.insert((process, *key), offset);
                    }
                }
            }
            _ => {}
        }
    }

    check_group(&ops, &mut verdict);
    verdict.valid = verdict.anomalies.is_empty();
    verdict
}

/// The consumer-group checks.
fn check_group(ops: &[(Op, Option<Op>)], verdict: &mut Verdict) {
    // Committed offsets: an observation must not be below anything that
    // completed before it began.
    let mut seen: Vec<CommitSeen> = Vec::new();
    for (invoke, completion) in ops {
        let Some(done) = completion.as_ref().filter(|c| c.op_type == OpType::Ok) else { continue };
        let offsets = match invoke.f {
            F::Commit => invoke.offsets.clone().unwrap_or_default(),
            F::DescribeGroup => done.group.as_ref().map(|g| g.committed.clone()).unwrap_or_default(),
            _ => continue,
        };
        seen.push(CommitSeen { invoke_ns: invoke.time_ns, complete_ns: done.time_ns, offsets, index: done.index });
    }
    let mut by_complete: Vec<&CommitSeen> = seen.iter().collect();
    by_complete.sort_by_key(|s| s.complete_ns);
    let mut by_invoke: Vec<&CommitSeen> = seen.iter().collect();
    by_invoke.sort_by_key(|s| s.invoke_ns);
    let mut floor: BTreeMap<u32, (u64, u64)> = BTreeMap::new(); // key → (offset, op index)
    let mut done_at = 0;
    for observation in by_invoke {
        while done_at < by_complete.len() && by_complete[done_at].complete_ns < observation.invoke_ns {
            for (key, offset) in &by_complete[done_at].offsets {
                let entry = floor.entry(*key).or_insert((*offset, by_complete[done_at].index));
                if *offset > entry.0 {
                    *entry = (*offset, by_complete[done_at].index);
                }
            }
            done_at += 1;
        }
        for (key, offset) in &observation.offsets {
            if let Some((high, high_op)) = floor.get(key) {
                if offset < high {
                    verdict.add(
                        "group-commit-backwards",
                        json!({"key": key, "offset": offset, "op": observation.index,
                               "earlier_offset": high, "earlier_op": high_op}),
                    );
                }
            }
        }
    }

    // One description, one owner per partition.
    for (_, completion) in ops {
        let Some(done) = completion.as_ref().filter(|c| c.op_type == OpType::Ok && c.f == F::DescribeGroup) else {
            continue;
        };
        let Some(group) = &done.group else { continue };
        let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
        for (member, keys) in &group.members {
            for key in keys {
                if let Some(other) = owner.insert(*key, member) {
                    verdict.add(
                        "group-double-owner",
                        json!({"key": key, "members": [other, member], "epoch": group.epoch, "op": done.index}),
                    );
                }
            }
        }
    }

    // A member given a partition resumes at or before the newest commit
    // that may have happened (any commit invoked before its read ended).
    let mut commits: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new(); // key → (invoke ns, offset)
    for (invoke, _) in ops {
        if invoke.f == F::Commit && invoke.op_type == OpType::Invoke {
            for (key, offset) in invoke.offsets.iter().flatten() {
                commits.entry(*key).or_default().push((invoke.time_ns, *offset));
            }
        }
    }
    let mut resuming: HashMap<(i64, u32), u64> = HashMap::new();
    for (invoke, completion) in ops {
        let Some(done) = completion.as_ref().filter(|c| c.op_type == OpType::Ok) else {
            if invoke.f == F::Poll {
                // The worker replaces a consumer whose poll failed.
                resuming.retain(|(p, _), _| *p != invoke.process);
            }
            continue;
        };
        match invoke.f {
            F::Subscribe => resuming.retain(|(p, _), _| *p != invoke.process),
            F::Poll => {
                // The rebalance that happened during the poll comes first.
                for key in done.revoked.iter().flatten() {
                    resuming.remove(&(invoke.process, *key));
                }
                for key in done.keys.iter().flatten() {
                    resuming.insert((invoke.process, *key), done.index);
                }
                for (key, records) in done.reads.iter().flatten() {
                    let Some(&(first, _)) = records.first() else { continue };
                    let Some(assigned_op) = resuming.remove(&(invoke.process, *key)) else { continue };
                    let bound = commits
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter(|(t, _)| *t < done.time_ns)
                        .map(|(_, o)| *o)
                        .max()
                        .unwrap_or(0);
                    if first > bound {
                        verdict.add(
                            "group-resume-after-commit",
                            json!({"process": invoke.process, "key": key, "resumed_at": first,
                                   "newest_commit": bound, "assigned_op": assigned_op, "poll_op": done.index}),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::GroupView;

    /// Builds histories by hand: each call appends one entry, timed 1 ms
    /// after the previous.
    #[derive(Default)]
    struct H {
        ops: Vec<Op>,
    }

    impl H {
        fn push(&mut self, mut op: Op) -> &mut H {
            op.index = self.ops.len() as u64;
            op.time_ns = op.index * 1_000_000;
            self.ops.push(op);
            self
        }
        fn send(&mut self, p: i64, key: u32, value: u64, outcome: OpType, offset: Option<u64>) -> &mut H {
            let mut invoke = Op::new(p, OpType::Invoke, F::Send);
            invoke.key = Some(key);
            invoke.value = Some(value);
            let mut done = invoke.clone();
            done.op_type = outcome;
            done.offset = offset;
            self.push(invoke).push(done)
        }
        fn poll(&mut self, p: i64, key: u32, records: &[(u64, u64)]) -> &mut H {
            self.read(p, F::Poll, key, records)
        }
        fn read(&mut self, p: i64, f: F, key: u32, records: &[(u64, u64)]) -> &mut H {
            let invoke = Op::new(p, OpType::Invoke, f);
            let mut done = Op::new(p, OpType::Ok, f);
            done.reads = Some(BTreeMap::from([(key, records.to_vec())]));
            self.push(invoke).push(done)
        }
        fn assign(&mut self, p: i64) -> &mut H {
            let invoke = Op::new(p, OpType::Invoke, F::Assign);
            let done = Op::new(p, OpType::Ok, F::Assign);
            self.push(invoke).push(done)
        }
        /// An assign that sought `key` to `offset`.
        fn assign_at(&mut self, p: i64, key: u32, offset: u64) -> &mut H {
            let invoke = Op::new(p, OpType::Invoke, F::Assign);
            let mut done = Op::new(p, OpType::Ok, F::Assign);
            done.offsets = Some(BTreeMap::from([(key, offset)]));
            self.push(invoke).push(done)
        }
        fn commit(&mut self, p: i64, key: u32, offset: u64) -> &mut H {
            let mut invoke = Op::new(p, OpType::Invoke, F::Commit);
            invoke.offsets = Some(BTreeMap::from([(key, offset)]));
            let mut done = invoke.clone();
            done.op_type = OpType::Ok;
            self.push(invoke).push(done)
        }
        /// A poll during which the group gave the process `keys`.
        fn poll_assigned(&mut self, p: i64, keys: &[u32], key: u32, records: &[(u64, u64)]) -> &mut H {
            let invoke = Op::new(p, OpType::Invoke, F::Poll);
            let mut done = Op::new(p, OpType::Ok, F::Poll);
            done.keys = Some(keys.to_vec());
            done.reads = Some(BTreeMap::from([(key, records.to_vec())]));
            self.push(invoke).push(done)
        }
        fn describe(&mut self, members: &[(&str, &[u32])], committed: &[(u32, u64)]) -> &mut H {
            let mut done = Op::new(100, OpType::Ok, F::DescribeGroup);
            done.group = Some(GroupView {
                epoch: 3,
                members: members.iter().map(|(m, k)| (m.to_string(), k.to_vec())).collect(),
                committed: committed.iter().copied().collect(),
            });
            self.push(Op::new(100, OpType::Invoke, F::DescribeGroup)).push(done)
        }
    }

    /// Checks `h` and asserts exactly the anomalies `expected` (name, count).
    fn check_anomalies(h: &H, expected: &[(&str, u64)]) -> Verdict {
        let verdict = check(&h.ops);
        let got: BTreeMap<&str, u64> = verdict.anomalies.iter().map(|(k, a)| (k.as_str(), a.count)).collect();
        let want: BTreeMap<&str, u64> = expected.iter().copied().collect();
        assert_eq!(got, want, "anomalies: {:#?}", verdict.anomalies);
        assert_eq!(verdict.valid, expected.is_empty());
        verdict
    }

    #[test]
    fn a_clean_history_is_valid() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, Some(0)).send(0, 0, 2, OpType::Ok, Some(1)).send(1, 0, 3, OpType::Info, None);
        h.assign(2).poll(2, 0, &[(0, 1)]).poll(2, 0, &[(1, 2), (2, 3)]);
        h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3)]);
        let verdict = check_anomalies(&h, &[]);
        assert_eq!(verdict.stats.n_sends_ok, 2);
        assert_eq!(verdict.stats.n_sends_ok_read, 2);
        assert_eq!(verdict.stats.n_sends_info_read, 1);
    }

    #[test]
    fn an_acknowledged_value_missing_below_a_read_one_is_a_lost_write() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, Some(0)).send(0, 0, 2, OpType::Ok, Some(1));
        h.read(-2, F::FinalRead, 0, &[(1, 2)]);
        check_anomalies(&h, &[("lost-write", 1)]);
    }

    #[test]
    fn without_offsets_a_lost_write_is_found_by_real_time_order() {
        // The control run's broker acknowledges without an offset.
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, None).send(0, 0, 2, OpType::Ok, None);
        h.read(-2, F::FinalRead, 0, &[(0, 2)]);
        check_anomalies(&h, &[("lost-write", 1)]);
    }

    #[test]
    fn an_acknowledged_value_never_read_at_the_tail_is_unseen() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, Some(0)).send(0, 0, 2, OpType::Ok, Some(1));
        h.read(-2, F::FinalRead, 0, &[(0, 1)]);
        check_anomalies(&h, &[("unseen", 1)]);
    }

    #[test]
    fn a_value_at_two_offsets_is_a_duplicate() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, Some(0)).send(0, 0, 2, OpType::Ok, Some(1));
        h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 1)]);
        check_anomalies(&h, &[("duplicate", 1)]);
    }

    #[test]
    fn two_values_at_one_offset_are_inconsistent_offsets() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, Some(0)).send(1, 0, 2, OpType::Info, None);
        h.poll(2, 0, &[(0, 2)]);
        h.read(-2, F::FinalRead, 0, &[(0, 1)]);
        // Value 2 read at offset 0 and value 1 there too; value 1 is read
        // so nothing is lost.
        check_anomalies(&h, &[("inconsistent-offsets", 1)]);
    }

    #[test]
    fn reading_a_value_whose_send_failed_is_an_aborted_read() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Fail, None);
        h.read(-2, F::FinalRead, 0, &[(0, 1)]);
        check_anomalies(&h, &[("G1a", 1)]);
    }

    #[test]
    fn reading_a_value_nobody_sent_is_unexpected() {
        let mut h = H::default();
        h.read(-2, F::FinalRead, 0, &[(0, 99)]);
        check_anomalies(&h, &[("unexpected-value", 1)]);
    }

    #[test]
    fn a_process_acknowledged_at_a_lower_offset_than_before_is_a_nonmonotonic_send() {
        let mut h = H::default();
        h.send(0, 0, 1, OpType::Ok, Some(5)).send(0, 0, 2, OpType::Ok, Some(4));
        h.read(-2, F::FinalRead, 0, &[(4, 2), (5, 1)]);
        check_anomalies(&h, &[("nonmonotonic-send", 1)]);
    }

    #[test]
    fn a_gap_between_two_polls_is_a_poll_skip_and_inside_one_an_int_poll_skip() {
        let mut h = H::default();
        for (v, o) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            h.send(0, 0, v, OpType::Ok, Some(o));
        }
        h.assign(1).poll(1, 0, &[(0, 1)]).poll(1, 0, &[(2, 3)]);
        h.assign(2).poll(2, 0, &[(0, 1), (2, 3)]);
        h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
        check_anomalies(&h, &[("poll-skip", 1), ("int-poll-skip", 1)]);
    }

    #[test]
    fn going_back_between_polls_is_nonmonotonic_and_inside_one_int_nonmonotonic() {
        let mut h = H::default();
        for (v, o) in [(1, 0), (2, 1), (3, 2)] {
            h.send(0, 0, v, OpType::Ok, Some(o));
        }
        h.assign(1).poll(1, 0, &[(0, 1), (1, 2)]).poll(1, 0, &[(1, 2), (2, 3)]);
        h.assign(2).poll(2, 0, &[(1, 2), (0, 1)]);
        h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3)]);
        check_anomalies(&h, &[("nonmonotonic-poll", 1), ("int-nonmonotonic-poll", 1)]);
    }

    #[test]
    fn the_first_poll_after_a_seek_starts_at_the_sought_offset() {
        let sends = |h: &mut H| {
            for (v, o) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
                h.send(0, 0, v, OpType::Ok, Some(o));
            }
            h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
        };
        let mut fine = H::default();
        sends(&mut fine);
        fine.assign_at(1, 0, 1).poll(1, 0, &[(1, 2), (2, 3)]);
        check_anomalies(&fine, &[]);
        let mut skip = H::default();
        sends(&mut skip);
        skip.assign_at(1, 0, 1).poll(1, 0, &[(3, 4)]);
        check_anomalies(&skip, &[("poll-skip", 1)]);
        let mut back = H::default();
        sends(&mut back);
        back.assign_at(1, 0, 2).poll(1, 0, &[(1, 2), (2, 3)]);
        check_anomalies(&back, &[("nonmonotonic-poll", 1)]);
    }

    #[test]
    fn a_new_assignment_may_start_anywhere() {
        let mut h = H::default();
        for (v, o) in [(1, 0), (2, 1), (3, 2)] {
            h.send(0, 0, v, OpType::Ok, Some(o));
        }
        h.assign(1).poll(1, 0, &[(2, 3)]).assign(1).poll(1, 0, &[(0, 1)]);
        h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3)]);
        check_anomalies(&h, &[]);
    }

    #[test]
    fn a_commit_below_an_earlier_completed_one_goes_backwards() {
        let mut h = H::default();
        h.commit(1, 0, 10).commit(2, 0, 7).describe(&[], &[(0, 7)]);
        check_anomalies(&h, &[("group-commit-backwards", 2)]);
    }

    #[test]
    fn one_partition_owned_by_two_members_in_one_description_is_a_double_owner() {
        let mut h = H::default();
        h.describe(&[("a", &[0, 1]), ("b", &[1])], &[]);
        check_anomalies(&h, &[("group-double-owner", 1)]);
        let mut fine = H::default();
        fine.describe(&[("a", &[0]), ("b", &[1])], &[]);
        check_anomalies(&fine, &[]);
    }

    #[test]
    fn a_member_resuming_past_every_commit_skipped_records() {
        let mut h = H::default();
        for (v, o) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            h.send(0, 0, v, OpType::Ok, Some(o));
        }
        h.commit(1, 0, 1).poll_assigned(2, &[0], 0, &[(3, 4)]);
        h.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
        check_anomalies(&h, &[("group-resume-after-commit", 1)]);
        let mut fine = H::default();
        for (v, o) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            fine.send(0, 0, v, OpType::Ok, Some(o));
        }
        fine.poll(2, 0, &[(0, 1)]).commit(1, 0, 3).poll_assigned(2, &[0], 0, &[(1, 2), (2, 3), (3, 4)]);
        fine.read(-2, F::FinalRead, 0, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
        check_anomalies(&fine, &[]);
    }
}
