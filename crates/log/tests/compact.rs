//! Key compaction: latest value per key, tombstones dropped after the delete
//! retention, offsets and Raft indexes preserved, crash-safe swap.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::TempDir;
use strata_batch::{BatchBuilder, Compression};
use strata_log::io::fs::FsDir;
use strata_log::{Compaction, Log, LogConfig, Offset, RaftIndex, Term};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, ..LogConfig::default() }
}

fn open(dir: &TempDir) -> Log {
    Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config(), None).expect("open")
}

/// All records from the start: (offset, key, value).
fn read_all(log: &Log) -> Vec<(i64, String, Option<Vec<u8>>)> {
    common::records_from_start(log)
        .into_iter()
        .map(|r| {
            let key = String::from_utf8(r.key.expect("keyed").to_vec()).expect("utf8");
            (r.offset, key, r.value.map(|v| v.to_vec()))
        })
        .collect()
}

#[test]
fn compaction_keeps_the_latest_value_per_key_and_expires_tombstones() {
    let dir = TempDir::new("compact");
    let log = open(&dir);
    let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let value = [7u8; 200];
    for i in 0..400u64 {
        let mut builder = BatchBuilder::new();
        for j in 0..5u64 {
            let key = format!("key-{}", (i * 5 + j) % 37);
            // Every 11th write deletes its key.
            let v = if (i * 5 + j) % 11 == 0 { None } else { Some(&value[..]) };
            builder.push(1_000, Some(key.as_bytes()), v, &[]);
            latest.insert(key.clone(), v.map(<[u8]>::to_vec));
            writes.push((key, v.map(<[u8]>::to_vec)));
        }
        let compression = if i % 2 == 0 { Compression::Lz4 } else { Compression::None };
        log.append(&builder.build(compression), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    let before = log.state();
    let entries_before = log.entries(before.first_index..RaftIndex(400), usize::MAX).expect("entries");

    // Tombstones still within delete retention: kept.
    let stats = log
        .compact(Compaction { boundary: RaftIndex(400), now_ms: 2_000, delete_retention_ms: 10_000 })
        .expect("compact");
    assert!(stats.n_segments_rewritten > 0 && stats.n_records_removed > 0, "{stats:?}");
    assert!(stats.bytes_after < stats.bytes_before);
    let after = log.state();
    assert_eq!((after.next_offset, after.first_index), (before.next_offset, before.first_index));
    let records = read_all(&log);
    // At most one record per key among the compacted segments; the active
    // segment is untouched, so a key may appear there again.
    let compacted_end = log.segment_infos().iter().filter(|s| s.sealed).map(|s| s.end_index).max().expect("sealed");
    let mut seen = std::collections::HashSet::new();
    let compacted_offset_end =
        log.entries(compacted_end..RaftIndex(compacted_end.0 + 1), 1).expect("entry")[0].base_offset;
    for (offset, key, _) in &records {
        if (*offset as u64) < compacted_offset_end.0 {
            assert!(seen.insert(key.clone()), "key {key} twice in compacted segments");
        }
    }
    // Every live key's latest value is readable; offsets only increase.
    let mut last_by_key: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut previous = -1;
    for (offset, key, value) in &records {
        assert!(*offset > previous);
        previous = *offset;
        last_by_key.insert(key.clone(), value.clone());
    }
    assert_eq!(last_by_key, latest);
    // Raft indexes and terms preserved: same number of entries, same offsets.
    let entries_after = log.entries(after.first_index..RaftIndex(400), usize::MAX).expect("entries");
    assert_eq!(entries_after.len(), entries_before.len());
    for (a, b) in entries_after.iter().zip(&entries_before) {
        assert_eq!((a.index, a.term, a.base_offset), (b.index, b.term, b.base_offset));
    }

    // Past delete retention: deleted keys disappear from compacted segments.
    log.compact(Compaction { boundary: RaftIndex(400), now_ms: 1_000_000, delete_retention_ms: 10_000 })
        .expect("compact");
    drop(log);
    let log = open(&dir);
    // Offsets equal write numbers here (one partition, no control entries).
    let mut latest_compacted: BTreeMap<String, (usize, Option<Vec<u8>>)> = BTreeMap::new();
    for (offset, (key, value)) in writes.iter().enumerate().take(compacted_offset_end.0 as usize) {
        latest_compacted.insert(key.clone(), (offset, value.clone()));
    }
    let mut n_compacted_records = 0;
    for (offset, key, value) in read_all(&log) {
        if (offset as u64) < compacted_offset_end.0 {
            n_compacted_records += 1;
            assert!(value.is_some(), "tombstone for {key} at {offset} outlived delete retention");
            assert_eq!(latest_compacted[&key], (offset as usize, value), "stale value of {key}");
        }
    }
    let n_live = latest_compacted.values().filter(|(_, v)| v.is_some()).count();
    assert_eq!(n_compacted_records, n_live, "every live key of the compacted range is kept once");
    assert_eq!(log.state().next_offset, before.next_offset);
    assert!(log.read_offsets(Offset(0), 1, before.next_offset).is_ok());
}

#[test]
fn compaction_never_touches_segments_at_or_past_the_boundary() {
    let dir = TempDir::new("compact-boundary");
    let log = open(&dir);
    for i in 0..200u64 {
        let mut builder = BatchBuilder::new();
        builder.push(0, Some(b"same-key"), Some(&vec![i as u8; 500]), &[]);
        log.append(&builder.build(Compression::None), Term(1)).expect("append");
    }
    let stats = log.compact(Compaction { boundary: RaftIndex(0), now_ms: 0, delete_retention_ms: 0 }).expect("compact");
    assert_eq!(stats.n_segments_rewritten, 0);
    let stats =
        log.compact(Compaction { boundary: RaftIndex(200), now_ms: 0, delete_retention_ms: 0 }).expect("compact");
    assert!(stats.n_segments_rewritten > 0);
}

#[test]
fn compaction_keeps_a_batch_attribute_bits() {
    // Regression: rewritten batches lost the transactional bit.
    let dir = TempDir::new("compact-attrs");
    let log = open(&dir);
    for i in 0..200u64 {
        let mut builder = BatchBuilder::new().attributes_from(1 << 4);
        builder.push(0, Some(b"k"), Some(&[i as u8; 500]), &[]);
        builder.push(0, Some(format!("u{i}").as_bytes()), Some(b"v"), &[]);
        log.append(&builder.build(Compression::None), Term(1)).expect("append");
    }
    let stats = log
        .compact(Compaction { boundary: RaftIndex(200), now_ms: 0, delete_retention_ms: u64::MAX })
        .expect("compact");
    assert!(stats.n_records_removed > 0);
    for entry in log.entries(RaftIndex(0)..RaftIndex(200), usize::MAX).expect("entries") {
        assert!(strata_batch::validate(&entry.batch).expect("valid").is_transactional());
    }
}

#[test]
fn a_compaction_that_finds_the_disk_full_leaves_the_log_as_it_was_and_writable() {
    use strata_log::io::Dir;
    use strata_log::io::sim::SimDisk;
    let disk = SimDisk::new();
    let log = Log::open(Arc::new(disk.clone()), config(), None).expect("open");
    let value = [7u8; 200];
    // 20 keys written over and over: most of every sealed segment is
    // superseded, so compaction has copies to write.
    let batch = |i: u64| {
        let mut builder = BatchBuilder::new();
        for j in 0..5u64 {
            builder.push(1_000, Some(format!("key-{}", (i * 5 + j) % 20).as_bytes()), Some(&value[..]), &[]);
        }
        builder.build(Compression::None)
    };
    for i in 0..400u64 {
        log.append(&batch(i), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    let before = read_all(&log);
    let state = log.state();
    assert!(state.n_segments > 3, "{state:?}");

    // Room for a few hundred bytes more, not for a compacted segment.
    disk.set_capacity(Some(disk.used_bytes() + 256));
    let compaction = Compaction { boundary: RaftIndex(400), now_ms: 2_000, delete_retention_ms: 10_000 };
    let err = log.compact(compaction).expect_err("no room for the copy");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(read_all(&log), before, "nothing changed");
    let names = disk.list().expect("list");
    assert!(!names.iter().any(|n| n.ends_with(".compacting")), "the copy is removed: {names:?}");

    // Space freed: the same log takes appends (it was not poisoned) and
    // compacts.
    disk.set_capacity(None);
    log.append(&batch(400), Term(1)).expect("append after the failed compaction");
    log.sync().expect("sync");
    let stats = log.compact(compaction).expect("compact once there is room");
    assert!(stats.n_records_removed > 0, "{stats:?}");
}
