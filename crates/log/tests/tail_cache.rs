//! The tail cache: reads right behind the writer are served from the
//! buffers that were written, and never serve bytes the file no longer has.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{FileHooks, HookedDir, TempDir, data_batch, same};
use strata_log::io::fs::FsDir;
use strata_log::{Entry, Log, LogConfig, Offset, RaftIndex, Term};

fn open_counting(dir: &TempDir, config: LogConfig) -> (Log, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let counter = reads.clone();
    let on_read: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let hooks = FileHooks { on_read: Some(on_read), on_sync: None };
    let counting = HookedDir { inner: FsDir::open(dir.path()).expect("dir"), hooks };
    (Log::open(Arc::new(counting), config, None).expect("open"), reads)
}

/// What the file holds: the entries as a freshly opened log reads them.
fn entries_on_disk(dir: &TempDir, range: std::ops::Range<u64>) -> Vec<Entry> {
    let log = Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), LogConfig::default(), None).expect("reopen");
    log.entries(RaftIndex(range.start)..RaftIndex(range.end), usize::MAX).expect("entries on disk")
}

#[test]
fn reads_behind_the_writer_take_no_file_reads_and_match_what_the_file_holds() {
    let dir = TempDir::new("tail-hit");
    let (log, reads) = open_counting(&dir, LogConfig::default());
    for i in 0..6u64 {
        log.append(&data_batch(i, 4, 200, 0), Term(1)).expect("append");
    }
    let (a, b) = (data_batch(6, 4, 200, 0), data_batch(7, 4, 200, 0));
    log.append_many(&[(&a, Term(1)), (&b, Term(2))]).expect("append many");
    log.sync().expect("sync");
    let before = reads.load(Ordering::SeqCst);

    let cached = log.entries(RaftIndex(0)..RaftIndex(8), usize::MAX).expect("entries");
    let next = log.state().next_offset;
    let by_offset = log.read_offsets(Offset(0), usize::MAX, next).expect("read offsets");
    assert_eq!(reads.load(Ordering::SeqCst), before, "served from memory");

    assert!(same(&cached, &entries_on_disk(&dir, 0..8)), "the cache holds the stamped bytes the file holds");
    let flat: Vec<u8> = by_offset.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let from_file: Vec<u8> = cached.iter().flat_map(|e| e.batch.iter().copied()).collect();
    assert_eq!(flat, from_file, "reads by offset too");
}

#[test]
fn older_entries_than_the_budget_and_a_released_cache_are_read_from_the_file() {
    let dir = TempDir::new("tail-budget");
    let batch_len = data_batch(0, 4, 200, 0).len();
    let config = LogConfig { tail_cache_bytes: 3 * batch_len, ..LogConfig::default() };
    let (log, reads) = open_counting(&dir, config);
    for i in 0..10u64 {
        log.append(&data_batch(i, 4, 200, 0), Term(1)).expect("append");
    }
    let before = reads.load(Ordering::SeqCst);
    let newest = log.entries(RaftIndex(7)..RaftIndex(10), usize::MAX).expect("newest");
    assert_eq!(reads.load(Ordering::SeqCst), before, "the last three are cached");
    let all = log.entries(RaftIndex(0)..RaftIndex(10), usize::MAX).expect("all");
    assert!(reads.load(Ordering::SeqCst) > before, "older ones come from the file");
    assert!(same(&all, &entries_on_disk(&dir, 0..10)));
    assert!(same(&newest, &all[7..]));

    log.release_cache();
    let before = reads.load(Ordering::SeqCst);
    let again = log.entries(RaftIndex(9)..RaftIndex(10), usize::MAX).expect("after release");
    assert!(reads.load(Ordering::SeqCst) > before, "released");
    assert!(same(&again, &all[9..]));
}

#[test]
fn a_truncated_tail_is_never_served_from_memory() {
    // Raft truncates a follower's unconfirmed suffix and appends the
    // leader's entries at the same indexes and file positions.
    let dir = TempDir::new("tail-truncate");
    let (log, _) = open_counting(&dir, LogConfig::default());
    for i in 0..10u64 {
        log.append(&data_batch(i, 4, 200, 0), Term(1)).expect("append");
    }
    log.truncate_from(RaftIndex(5)).expect("truncate");
    for i in 0..3u64 {
        log.append(&data_batch(100 + i, 2, 50, 0), Term(2)).expect("append after truncation");
    }
    log.sync().expect("sync");
    let read = log.entries(RaftIndex(0)..RaftIndex(8), usize::MAX).expect("entries");
    assert!(same(&read, &entries_on_disk(&dir, 0..8)), "what the file holds, not the truncated batches");
    assert_eq!(read[5].term, Term(2));
    let next = log.state().next_offset;
    assert_eq!(next, Offset(5 * 4 + 3 * 2));
    let by_offset = log.read_offsets(Offset(20), usize::MAX, next).expect("read offsets");
    let flat: Vec<u8> = by_offset.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let expected: Vec<u8> = read[5..].iter().flat_map(|e| e.batch.iter().copied()).collect();
    assert_eq!(flat, expected);
}

#[test]
fn entries_not_applied_yet_stay_cached_past_the_budget_until_applied() {
    let dir = TempDir::new("tail-held");
    let batch_len = data_batch(0, 4, 200, 0).len();
    let config = LogConfig { tail_cache_bytes: 3 * batch_len, ..LogConfig::default() };
    let (log, reads) = open_counting(&dir, config);
    log.hold_cache_from(RaftIndex(2));
    for i in 0..10u64 {
        log.append(&data_batch(i, 4, 200, 0), Term(1)).expect("append");
    }
    let before = reads.load(Ordering::SeqCst);
    let unapplied = log.entries(RaftIndex(2)..RaftIndex(10), usize::MAX).expect("unapplied");
    assert_eq!(reads.load(Ordering::SeqCst), before, "eight entries held, budget or not");
    log.entries(RaftIndex(0)..RaftIndex(2), usize::MAX).expect("applied");
    assert!(reads.load(Ordering::SeqCst) > before, "applied ones beyond the budget were let go");

    // Once applied, the next append trims the cache back to its budget.
    log.hold_cache_from(RaftIndex(10));
    log.append(&data_batch(10, 4, 200, 0), Term(1)).expect("append");
    let before = reads.load(Ordering::SeqCst);
    log.entries(RaftIndex(9)..RaftIndex(11), usize::MAX).expect("newest");
    assert_eq!(reads.load(Ordering::SeqCst), before, "the budget's worth is still cached");
    log.entries(RaftIndex(5)..RaftIndex(8), usize::MAX).expect("older");
    assert!(reads.load(Ordering::SeqCst) > before, "the rest was let go");
    log.sync().expect("sync");
    assert!(same(&unapplied, &entries_on_disk(&dir, 2..10)), "held bytes are the file's");
}

#[test]
fn a_sealed_segment_keeps_its_unapplied_tail_until_applied() {
    let dir = TempDir::new("tail-held-roll");
    let config = LogConfig { segment_bytes: 64 * 1024, tail_cache_bytes: 1024, ..LogConfig::default() };
    let (log, reads) = open_counting(&dir, config);
    log.hold_cache_from(RaftIndex(0));
    // Four batches of about 16 KB fill a segment: seven make one roll.
    for i in 0..7u64 {
        log.append(&data_batch(i, 4, 4000, 0), Term(1)).expect("append");
    }
    let sealed = log.segment_infos().iter().filter(|s| s.sealed).count();
    assert_eq!(sealed, 1, "one roll happened");
    let before = reads.load(Ordering::SeqCst);
    let held = log.entries(RaftIndex(0)..RaftIndex(7), usize::MAX).expect("held");
    assert_eq!(reads.load(Ordering::SeqCst), before, "neither segment's entries touch the file");
    let by_offset = log.read_offsets(Offset(0), usize::MAX, log.state().next_offset).expect("by offset");
    assert_eq!(reads.load(Ordering::SeqCst), before, "nor do reads by offset");
    let flat: Vec<u8> = by_offset.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let expected: Vec<u8> = held.iter().flat_map(|e| e.batch.iter().copied()).collect();
    assert_eq!(flat, expected);

    // All applied: the next append lets the sealed segment's copy go.
    log.hold_cache_from(RaftIndex(7));
    log.append(&data_batch(7, 4, 4000, 0), Term(1)).expect("append");
    let before = reads.load(Ordering::SeqCst);
    let again = log.entries(RaftIndex(0)..RaftIndex(2), usize::MAX).expect("sealed again");
    assert!(reads.load(Ordering::SeqCst) > before, "read through the map now");
    assert!(same(&again, &held[..2]));
    log.sync().expect("sync");
    assert!(same(&held, &entries_on_disk(&dir, 0..7)));
}

#[test]
fn a_state_machine_that_stops_applying_holds_at_most_the_ceiling() {
    let dir = TempDir::new("tail-held-ceiling");
    let config = LogConfig { tail_cache_bytes: 1024, ..LogConfig::default() };
    let (log, reads) = open_counting(&dir, config);
    log.hold_cache_from(RaftIndex(0));
    // 20 batches of about 1 MiB: more than the 16 MiB held at most.
    for i in 0..20u64 {
        log.append(&data_batch(i, 16, 64 * 1024, 0), Term(1)).expect("append");
    }
    let before = reads.load(Ordering::SeqCst);
    log.entries(RaftIndex(19)..RaftIndex(20), usize::MAX).expect("newest");
    assert_eq!(reads.load(Ordering::SeqCst), before, "the newest are held");
    log.entries(RaftIndex(0)..RaftIndex(1), usize::MAX).expect("oldest");
    assert!(reads.load(Ordering::SeqCst) > before, "the oldest were let go past the ceiling");
}
