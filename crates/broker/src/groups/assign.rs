//! Server-side assignors: given the members (in a stable order) and each
//! one's subscribed topics, which partitions each should own. Pure.

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition.
pub type Tp = (String, u32);

/// How partitions are spread over members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, contiguous ranges, the first members getting one more.
    Range,
    /// Every partition in order, dealt to members in turn.
    RoundRobin,
    /// Balanced like round-robin, but a member keeps what it owns when the
    /// balance allows: a change moves only what must move.
    Sticky,
}

impl Assignor {
    /// By name: `range`, `roundrobin`, `sticky` (also the default).
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "" | "sticky" | "uniform" | "cooperative-sticky" => Some(Assignor::Sticky),
            "range" => Some(Assignor::Range),
            "roundrobin" | "round-robin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Sticky => "sticky",
        }
    }
}

/// One member as an assignor sees it.
pub struct MemberView<'a> {
    /// Member id.
    pub id: &'a str,
    /// Topics it subscribes to.
    pub topics: &'a BTreeSet<String>,
    /// What it owns now (used by `Sticky`).
    pub current: &'a BTreeSet<Tp>,
}

/// Assigns the partitions of `partition_counts` (topic → partitions) to
/// `members`. Every partition of a topic someone subscribes to goes to
/// exactly one member subscribing to it.
pub fn assign(
    assignor: Assignor,
    members: &[MemberView<'_>],
    partition_counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members.iter().map(|m| (m.id.to_string(), BTreeSet::new())).collect();
    if members.is_empty() {
        return out;
    }
    match assignor {
        Assignor::Range => {
            for (topic, n) in partition_counts {
                let subscribers: Vec<&str> =
                    members.iter().filter(|m| m.topics.contains(topic)).map(|m| m.id).collect();
                if subscribers.is_empty() {
                    continue;
                }
                let (per, extra) = (*n as usize / subscribers.len(), *n as usize % subscribers.len());
                let mut next = 0u32;
                for (i, member) in subscribers.iter().enumerate() {
                    let take = per + usize::from(i < extra);
                    for _ in 0..take {
                        out.entry(member.to_string()).or_default().insert((topic.clone(), next));
                        next += 1;
                    }
                }
            }
        }
        Assignor::RoundRobin => {
            let mut turn = 0usize;
            for (topic, n) in partition_counts {
                for p in 0..*n {
                    // The next member, in turn, that subscribes to the topic.
                    for k in 0..members.len() {
                        let m = &members[(turn + k) % members.len()];
                        if m.topics.contains(topic) {
                            out.entry(m.id.to_string()).or_default().insert((topic.clone(), p));
                            turn = (turn + k + 1) % members.len();
                            break;
                        }
                    }
                }
            }
        }
        Assignor::Sticky => {
            for (topic, n) in partition_counts {
                let subscribers: Vec<&MemberView<'_>> = members.iter().filter(|m| m.topics.contains(topic)).collect();
                if subscribers.is_empty() {
                    continue;
                }
                let (per, extra) = (*n as usize / subscribers.len(), *n as usize % subscribers.len());
                // Quotas: the `extra` members that already own the most keep
                // the larger quota, so fewer partitions move.
                let owned_here = |m: &MemberView<'_>| m.current.iter().filter(|tp| tp.0 == *topic && tp.1 < *n).count();
                let mut order: Vec<usize> = (0..subscribers.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(owned_here(subscribers[i])));
                let mut quota = vec![per; subscribers.len()];
                for &i in order.iter().take(extra) {
                    quota[i] += 1;
                }
                let mut taken: BTreeSet<u32> = BTreeSet::new();
                let mut given: Vec<Vec<u32>> = vec![Vec::new(); subscribers.len()];
                for (i, m) in subscribers.iter().enumerate() {
                    for tp in m.current.iter().filter(|tp| tp.0 == *topic && tp.1 < *n) {
                        if given[i].len() < quota[i] && taken.insert(tp.1) {
                            given[i].push(tp.1);
                        }
                    }
                }
                let mut free = (0..*n).filter(|p| !taken.contains(p));
                for (i, g) in given.iter_mut().enumerate() {
                    while g.len() < quota[i] {
                        match free.next() {
                            Some(p) => g.push(p),
                            None => break,
                        }
                    }
                }
                for (i, g) in given.into_iter().enumerate() {
                    let set = out.entry(subscribers[i].id.to_string()).or_default();
                    set.extend(g.into_iter().map(|p| (topic.clone(), p)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_exclusive_and_complete(out: &BTreeMap<String, BTreeSet<Tp>>, n: u32) {
        let mut all: Vec<Tp> = out.values().flatten().cloned().collect();
        all.sort();
        let expected: Vec<Tp> = (0..n).map(|p| ("t".to_string(), p)).collect();
        assert_eq!(all, expected, "every partition exactly once");
        let sizes: Vec<usize> = out.values().map(BTreeSet::len).collect();
        assert!(sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0) <= 1, "balanced: {sizes:?}");
    }

    #[test]
    fn every_assignor_gives_each_partition_to_one_member_balanced() {
        let topics: BTreeSet<String> = ["t".to_string()].into();
        let empty = BTreeSet::new();
        let members: Vec<MemberView<'_>> =
            ["a", "b", "c"].iter().map(|id| MemberView { id, topics: &topics, current: &empty }).collect();
        let counts = BTreeMap::from([("t".to_string(), 12)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky] {
            check_exclusive_and_complete(&assign(assignor, &members, &counts), 12);
        }
        let range = assign(Assignor::Range, &members, &counts);
        assert!(range["a"].contains(&("t".into(), 0)) && range["a"].contains(&("t".into(), 3)));
    }

    #[test]
    fn sticky_moves_only_what_must_move_when_a_member_joins() {
        let topics: BTreeSet<String> = ["t".to_string()].into();
        let empty = BTreeSet::new();
        let counts = BTreeMap::from([("t".to_string(), 12)]);
        let two: Vec<MemberView<'_>> =
            ["a", "b"].iter().map(|id| MemberView { id, topics: &topics, current: &empty }).collect();
        let before = assign(Assignor::Sticky, &two, &counts);
        let three: Vec<MemberView<'_>> = [("a", &before["a"]), ("b", &before["b"]), ("c", &empty)]
            .into_iter()
            .map(|(id, current)| MemberView { id, topics: &topics, current })
            .collect();
        let after = assign(Assignor::Sticky, &three, &counts);
        check_exclusive_and_complete(&after, 12);
        let moved = after["c"].len();
        assert_eq!(moved, 4, "only the new member's share moves");
        assert!(after["a"].is_subset(&before["a"]) && after["b"].is_subset(&before["b"]));
    }
}
