//! The engine on the journaled real disk (`io::journaled`), the mode the
//! chaos harness runs servers in to make them lose unsynced writes: after a
//! process crash (the log dropped; the files keep everything, as the page
//! cache would) every write is still there, and after a power loss
//! (`lose_unsynced`) exactly what was synced is, and the engine opens it as
//! a valid log. The seeded test prints its seed; set `STRATA_SEED` to replay.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{TempDir, control_batch, data_batch, unstamped};
use strata_log::io::fs::FsDir;
use strata_log::io::journaled::lose_unsynced;
use strata_log::io::sim::SplitMix;
use strata_log::{Log, LogConfig, LogId, Offset, RaftIndex, Term};

fn open(path: &Path, segment_bytes: u64) -> Log {
    let dir = FsDir::open_journaled(path).expect("open dir");
    Log::open(Arc::new(dir), LogConfig { segment_bytes, ..LogConfig::default() }, None).expect("open log")
}

fn n_stored(log: &Log) -> u64 {
    let state = log.state();
    state.last_log_id.map_or(0, |id| id.index.0 + 1) - state.first_index.0
}

#[test]
fn a_power_loss_keeps_exactly_what_was_synced_and_a_process_crash_everything() {
    let tmp = TempDir::new("journaled-exact");
    let log = open(tmp.path(), 1 << 30);
    log.save_vote(b"term 2 node 1").expect("vote");
    for i in 0..10 {
        log.append(&data_batch(i, 3, 100, 0), Term(2)).expect("append");
    }
    log.sync().expect("sync");
    for i in 10..15 {
        log.append(&data_batch(i, 3, 100, 0), Term(2)).expect("append");
    }
    drop(log);
    let log = open(tmp.path(), 1 << 30);
    assert_eq!(n_stored(&log), 15, "a process crash loses nothing");
    log.append(&data_batch(15, 3, 100, 0), Term(2)).expect("append");
    drop(log);
    let lost = lose_unsynced(tmp.path()).expect("lose");
    // The reopened log synced all 15 on open; only the 16th was unsynced.
    assert_eq!(lost.n_files_rewritten, 1, "{lost:?}");
    let log = open(tmp.path(), 1 << 30);
    assert_eq!(n_stored(&log), 15);
    assert_eq!(log.meta().vote, b"term 2 node 1");
    for i in 16..20 {
        log.append(&data_batch(i, 3, 100, 0), Term(2)).expect("append");
    }
    drop(log);
    lose_unsynced(tmp.path()).expect("lose");
    assert_eq!(n_stored(&open(tmp.path(), 1 << 30)), 15, "power loss right after appends without a sync");
}

#[test]
fn a_segment_rolled_but_not_yet_named_durably_disappears_and_the_log_still_opens() {
    let tmp = TempDir::new("journaled-roll");
    let log = open(tmp.path(), 64 * 1024);
    let mut n = 0;
    while log.state().n_segments < 2 {
        log.append(&data_batch(n, 4, 1000, 0), Term(1)).expect("append");
        n += 1;
    }
    // The roll synced the first segment's data; the second segment's name
    // and the first one's index file wait for the next sync.
    drop(log);
    let lost = lose_unsynced(tmp.path()).expect("lose");
    assert!(lost.n_files_removed >= 1, "the new segment and the index were never dir-synced: {lost:?}");
    let log = open(tmp.path(), 64 * 1024);
    assert_eq!(n_stored(&log), n - 1, "everything but the entry in the new segment");
    assert_eq!(log.state().n_segments, 1);
}

#[test]
fn a_compacted_log_survives_a_power_loss_as_it_was_compacted() {
    let tmp = TempDir::new("journaled-compact");
    let log = open(tmp.path(), 64 * 1024);
    let value = [7u8; 200];
    for i in 0..300u64 {
        let mut builder = strata_batch::BatchBuilder::new();
        for j in 0..5u64 {
            builder.push(1_000, Some(format!("key-{}", (i * 5 + j) % 37).as_bytes()), Some(&value[..]), &[]);
        }
        log.append(&builder.build(strata_batch::Compression::None), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    let compaction = strata_log::Compaction { boundary: RaftIndex(300), now_ms: 2_000, delete_retention_ms: 0 };
    let stats = log.compact(compaction).expect("compact");
    assert!(stats.n_segments_rewritten > 0, "{stats:?}");
    let compacted = common::records_from_start(&log);
    log.append(&data_batch(1_000, 2, 10, 0), Term(1)).expect("an unsynced append");
    drop(log);
    let lost = lose_unsynced(tmp.path()).expect("lose");
    assert!(lost.n_files_rewritten >= 1, "the unsynced append is dropped: {lost:?}");
    let log = open(tmp.path(), 64 * 1024);
    assert_eq!(common::records_from_start(&log), compacted);
}

#[derive(Clone)]
struct ModelEntry {
    term: Term,
    unstamped: Vec<u8>,
    n_offsets: u64,
}

/// Checks the log against the model after a crash: with `power_loss`, at
/// least the durable entries survive (a prefix of what was written);
/// without, all of them. Trims the model to what survived.
fn check(
    log: &Log,
    first: RaftIndex,
    entries: &mut Vec<ModelEntry>,
    n_durable: &mut usize,
    power_loss: bool,
    ctx: &str,
) {
    let state = log.state();
    assert_eq!(state.first_index, first, "{ctx}: first index");
    let n_survived = (state.last_log_id.map_or(0, |id| id.index.0 + 1) - first.0) as usize;
    if power_loss {
        assert!(n_survived >= *n_durable, "{ctx}: lost durable entries: {n_survived} < {n_durable}");
    } else {
        assert_eq!(n_survived, entries.len(), "{ctx}: a process crash lost entries");
    }
    assert!(n_survived <= entries.len(), "{ctx}: more entries than written");
    let read = log.entries(first..RaftIndex(first.0 + n_survived as u64), usize::MAX).expect("read entries");
    assert_eq!(read.len(), n_survived, "{ctx}");
    for (entry, expected) in read.iter().zip(entries.iter()) {
        strata_batch::validate(&entry.batch).unwrap_or_else(|e| panic!("{ctx}: corrupt entry served: {e}"));
        assert_eq!(unstamped(&entry.batch), expected.unstamped, "{ctx}: entry {} differs", entry.index);
        assert_eq!(entry.term, expected.term, "{ctx}");
    }
    entries.truncate(n_survived);
    *n_durable = n_survived;
}

/// One seeded run; returns (process crashes, power losses) checked.
fn run(seed: u64, n_rounds: usize, path: &Path) -> (usize, usize) {
    let mut rng = SplitMix(seed);
    let segment_bytes = 64 * 1024;
    let mut log = open(path, segment_bytes);
    let (mut first, mut first_offset) = (RaftIndex(0), Offset(0));
    let mut entries: Vec<ModelEntry> = Vec::new();
    let mut n_durable = 0;
    let mut term = Term(1);
    let mut tag = 0u64;
    let (mut n_kills, mut n_losses) = (0, 0);
    for round in 0..n_rounds {
        let ctx = format!("seed {seed} round {round}");
        match rng.below(100) {
            0..=59 => {
                let n = 1 + rng.below(4) as usize;
                let batches: Vec<_> = (0..n)
                    .map(|_| {
                        tag += 1;
                        if rng.below(10) == 0 {
                            control_batch(tag)
                        } else {
                            data_batch(tag, 1 + rng.below(8) as usize, rng.below(3000) as usize, tag as i64)
                        }
                    })
                    .collect();
                if rng.below(20) == 0 {
                    term = Term(term.0 + 1);
                }
                let items: Vec<(&[u8], Term)> = batches.iter().map(|b| (&b[..], term)).collect();
                for (batch, appended) in batches.iter().zip(log.append_many(&items).expect("append")) {
                    entries.push(ModelEntry { term, unstamped: unstamped(batch), n_offsets: appended.n_offsets });
                }
            }
            60..=74 => {
                log.sync().expect("sync");
                n_durable = entries.len();
            }
            75..=79 => {
                let keep = rng.below(entries.len() as u64 + 1) as usize;
                log.truncate_from(RaftIndex(first.0 + keep as u64)).expect("truncate");
                if keep < entries.len() {
                    entries.truncate(keep);
                    n_durable = keep;
                }
            }
            80..=82 => {
                if n_durable > 1 {
                    let n = rng.below(n_durable as u64) as usize;
                    log.purge_upto(RaftIndex(first.0 + n as u64)).expect("purge");
                    let removed: Vec<ModelEntry> = entries.drain(..=n).collect();
                    first = RaftIndex(first.0 + n as u64 + 1);
                    first_offset = Offset(first_offset.0 + removed.iter().map(|e| e.n_offsets).sum::<u64>());
                    n_durable -= removed.len();
                }
            }
            83 => {
                let last = RaftIndex(first.0 + entries.len() as u64 + rng.below(10));
                first_offset = Offset(first_offset.0 + 10_000 + rng.below(1000));
                term = Term(term.0 + 1);
                log.reset(LogId { term, index: last }, first_offset).expect("reset");
                first = last.next();
                entries.clear();
                n_durable = 0;
            }
            84..=91 => {
                log.save_vote(format!("vote {round}").as_bytes()).expect("vote");
            }
            _ => {
                let vote = log.meta().vote;
                drop(log);
                let power_loss = rng.below(2) == 0;
                if power_loss {
                    lose_unsynced(path).expect("lose unsynced");
                    n_losses += 1;
                } else {
                    n_kills += 1;
                }
                log = open(path, segment_bytes);
                check(&log, first, &mut entries, &mut n_durable, power_loss, &ctx);
                assert_eq!(log.meta().vote, vote, "{ctx}: the vote is synced when saved");
            }
        }
    }
    (n_kills, n_losses)
}

#[test]
fn every_durable_batch_survives_random_power_losses_of_the_journaled_disk() {
    let seed = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("STRATA_SEED={seed}");
    let mut rng = SplitMix(seed);
    let (mut n_kills, mut n_losses) = (0, 0);
    for run_idx in 0..4 {
        let tmp = TempDir::new(&format!("journaled-run{run_idx}"));
        let (kills, losses) = run(rng.next_u64(), 400, tmp.path());
        n_kills += kills;
        n_losses += losses;
    }
    assert!(n_kills >= 20 && n_losses >= 20, "only {n_kills} process crashes and {n_losses} power losses");
}
