//! Decisions without I/O: when to roll a segment and what retention deletes.
//! They return values that tests check directly; the log carries them out.

use std::time::Duration;

use crate::types::RaftIndex;

/// What the roll decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct ActiveSegment {
    /// Bytes in the active segment.
    pub size_bytes: u64,
    /// Entries in the active segment.
    pub n_entries: usize,
    /// Time since its first append, if it has one.
    pub age: Option<Duration>,
}

/// Why a segment is rolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollReason {
    /// The next append would pass `segment_bytes`.
    Size,
    /// The first entry is older than `segment_age_max`.
    Age,
    /// The in-memory index of the active segment is full.
    Entries,
}

/// Decides whether to seal the active segment before appending
/// `incoming_bytes`. An empty segment is never rolled (a batch bigger than a
/// segment gets a segment of its own).
pub fn roll_reason(
    active: ActiveSegment,
    incoming_bytes: u64,
    segment_bytes: u64,
    segment_age_max: Option<Duration>,
    entries_max: usize,
) -> Option<RollReason> {
    if active.n_entries == 0 {
        return None;
    }
    if active.size_bytes + incoming_bytes > segment_bytes {
        return Some(RollReason::Size);
    }
    if active.n_entries >= entries_max {
        return Some(RollReason::Entries);
    }
    match (active.age, segment_age_max) {
        (Some(age), Some(max)) if age >= max => Some(RollReason::Age),
        _ => None,
    }
}

/// What retention looks at for each sealed segment, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First Raft index.
    pub base_index: RaftIndex,
    /// One past the last Raft index.
    pub end_index: RaftIndex,
    /// Bytes of data.
    pub size_bytes: u64,
    /// Largest record timestamp in it (ms), -1 if none.
    pub max_timestamp: i64,
    /// False for the active segment.
    pub sealed: bool,
}

/// Retention settings; `None` disables a limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Delete a segment once its newest record is older than this (ms).
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while the log exceeds this many bytes.
    pub retention_bytes: Option<u64>,
}

/// Returns the index before which everything may be purged (whole segments;
/// never the active one; never at or past `boundary`, e.g. the commit or
/// applied index), or `None` when nothing is due.
pub fn retention_purge_before(
    segments: &[SegmentInfo],
    now_ms: i64,
    retention: Retention,
    boundary: RaftIndex,
) -> Option<RaftIndex> {
    let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut remaining = total;
    let mut purge_before = None;
    for segment in segments {
        if !segment.sealed || segment.end_index > boundary {
            break;
        }
        let too_old = retention
            .retention_ms
            .is_some_and(|ms| segment.max_timestamp >= 0 && now_ms.saturating_sub(segment.max_timestamp) > ms as i64);
        let too_big = retention.retention_bytes.is_some_and(|limit| remaining - segment.size_bytes >= limit);
        if !(too_old || too_big) {
            break;
        }
        remaining -= segment.size_bytes;
        purge_before = Some(segment.end_index);
    }
    purge_before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, end: u64, size: u64, ts: i64, sealed: bool) -> SegmentInfo {
        SegmentInfo {
            base_index: RaftIndex(base),
            end_index: RaftIndex(end),
            size_bytes: size,
            max_timestamp: ts,
            sealed,
        }
    }

    fn check_roll(size: u64, n: usize, age_s: Option<u64>, incoming: u64, expect: Option<RollReason>) {
        let active = ActiveSegment { size_bytes: size, n_entries: n, age: age_s.map(Duration::from_secs) };
        let got = roll_reason(active, incoming, 1000, Some(Duration::from_secs(60)), 10);
        assert_eq!(got, expect, "size {size} n {n} age {age_s:?} incoming {incoming}");
    }

    #[test]
    fn roll_decisions_follow_size_age_and_entry_limits() {
        check_roll(0, 0, None, 5000, None);
        check_roll(900, 3, Some(1), 100, None);
        check_roll(900, 3, Some(1), 101, Some(RollReason::Size));
        check_roll(10, 10, Some(1), 1, Some(RollReason::Entries));
        check_roll(10, 3, Some(60), 1, Some(RollReason::Age));
        check_roll(10, 3, Some(59), 1, None);
    }

    fn check_retention(retention: Retention, boundary: u64, expect: Option<u64>) {
        let segments = [
            seg(1, 11, 100, 1_000, true),
            seg(11, 21, 100, 2_000, true),
            seg(21, 31, 100, 3_000, true),
            seg(31, 35, 40, 4_000, false),
        ];
        let got = retention_purge_before(&segments, 10_000, retention, RaftIndex(boundary));
        assert_eq!(got, expect.map(RaftIndex), "{retention:?} boundary {boundary}");
    }

    #[test]
    fn retention_deletes_whole_old_or_excess_segments_up_to_the_boundary() {
        check_retention(Retention::default(), 100, None);
        check_retention(Retention { retention_ms: Some(8_500), ..Retention::default() }, 100, Some(11));
        check_retention(Retention { retention_ms: Some(7_500), ..Retention::default() }, 100, Some(21));
        // Never the active segment, however old.
        check_retention(Retention { retention_ms: Some(1), ..Retention::default() }, 100, Some(31));
        // Never past the boundary.
        check_retention(Retention { retention_ms: Some(1), ..Retention::default() }, 20, Some(11));
        // Size: 340 bytes in all; drop the oldest while what is left stays >= the limit.
        check_retention(Retention { retention_bytes: Some(130), ..Retention::default() }, 100, Some(21));
        check_retention(Retention { retention_bytes: Some(150), ..Retention::default() }, 100, Some(11));
        check_retention(Retention { retention_bytes: Some(340), ..Retention::default() }, 100, None);
        check_retention(Retention { retention_bytes: Some(240), ..Retention::default() }, 100, Some(11));
    }
}
