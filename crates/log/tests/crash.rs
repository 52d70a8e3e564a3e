//! A seeded property test: run the engine on a simulated disk, crash it at
//! random points (keeping only what was synced, plus a random prefix of the
//! rest with a possibly torn last write), reopen, and check against a simple
//! model that every batch reported durable survived, that what survived is a
//! prefix of what was written, and that nothing corrupt is served.
//!
//! Set `STRATA_SEED` to replay a failing run; the seed is printed first.

mod common;

use std::sync::Arc;

use common::{control_batch, data_batch, unstamped};
use strata_log::io::sim::{CrashMode, SimDisk, SplitMix};
use strata_log::{Log, LogConfig, LogError, Offset, RaftIndex, Term};

#[derive(Clone)]
struct ModelEntry {
    term: Term,
    unstamped: Vec<u8>,
    n_offsets: u64,
}

/// What the log must hold: entries from `first` on, the first `n_durable`
/// of them reported durable.
struct Model {
    first: RaftIndex,
    first_offset: Offset,
    entries: Vec<ModelEntry>,
    n_durable: usize,
    term: Term,
}

impl Model {
    fn end(&self) -> RaftIndex {
        RaftIndex(self.first.0 + self.entries.len() as u64)
    }
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, ..LogConfig::default() }
}

fn open(disk: &SimDisk) -> Log {
    Log::open(Arc::new(disk.clone()), config(), None).expect("open after crash")
}

/// Bytes of all data files on the disk, headroom included.
fn data_file_bytes(disk: &SimDisk) -> u64 {
    use strata_log::io::Dir;
    let names = disk.list().expect("list");
    names.iter().filter(|n| n.ends_with(".log")).map(|n| disk.open(n).expect("open").len().expect("len")).sum()
}

/// Checks the reopened log against the model and trims the model to what
/// survived (a non-durable tail may or may not survive).
fn check(log: &Log, model: &mut Model, seed: u64, round: usize) {
    let state = log.state();
    let ctx = format!("seed {seed} round {round}");
    assert_eq!(state.first_index, model.first, "{ctx}: first index");
    let n_survived = (state.last_log_id.map_or(0, |id| id.index.0 + 1).saturating_sub(model.first.0)) as usize;
    assert!(n_survived >= model.n_durable, "{ctx}: lost durable entries: {n_survived} < {}", model.n_durable);
    assert!(n_survived <= model.entries.len(), "{ctx}: more entries than written");
    let entries =
        log.entries(model.first..RaftIndex(model.first.0 + n_survived as u64), usize::MAX).expect("read entries");
    assert_eq!(entries.len(), n_survived, "{ctx}");
    let mut offset = model.first_offset;
    for (entry, expected) in entries.iter().zip(&model.entries) {
        let header =
            strata_batch::validate(&entry.batch).unwrap_or_else(|e| panic!("{ctx}: corrupt entry served: {e}"));
        assert_eq!(unstamped(&entry.batch), expected.unstamped, "{ctx}: entry {} differs", entry.index);
        assert_eq!(entry.term, expected.term, "{ctx}");
        assert_eq!(header.base_offset as u64, offset.0, "{ctx}: offset of entry {}", entry.index);
        offset = Offset(offset.0 + expected.n_offsets);
    }
    assert_eq!(state.next_offset, offset, "{ctx}: next offset");
    // Offset reads serve exactly the data batches.
    let mut from = state.log_start_offset;
    let mut n_data = 0;
    while from < state.next_offset {
        let read = log.read_offsets(from, 64 * 1024, state.next_offset).expect("read offsets");
        assert!(read.next_offset > from, "{ctx}: no progress");
        for chunk in &read.chunks {
            for item in strata_batch::split_batches(chunk) {
                let (header, _) = item.unwrap_or_else(|e| panic!("{ctx}: bad batch served by offset: {e}"));
                assert!(!header.is_control(), "{ctx}");
                n_data += 1;
            }
        }
        from = read.next_offset;
    }
    assert_eq!(n_data, model.entries[..n_survived].iter().filter(|e| e.n_offsets > 0).count(), "{ctx}");
    model.entries.truncate(n_survived);
    model.n_durable = n_survived;
}

/// One random run; returns the crashes simulated and the appends after
/// which the active segment had space allocated ahead of its data.
fn run(seed: u64, n_rounds: usize) -> (usize, usize) {
    let mut rng = SplitMix(seed);
    // Every other run with segments large enough to be preallocated.
    let config =
        if seed.is_multiple_of(2) { config() } else { LogConfig { segment_bytes: 512 * 1024, ..LogConfig::default() } };
    let open = |disk: &SimDisk| Log::open(Arc::new(disk.clone()), config.clone(), None).expect("open after crash");
    let mut n_preallocated = 0;
    let mut disk = SimDisk::new();
    let mut log = open(&disk);
    let mut model =
        Model { first: RaftIndex(0), first_offset: Offset(0), entries: Vec::new(), n_durable: 0, term: Term(1) };
    let mut n_crashes = 0;
    let mut tag = 0u64;
    let trace = std::env::var("STRATA_TRACE").is_ok();
    for round in 0..n_rounds {
        let op = rng.below(100);
        if trace {
            eprintln!(
                "round {round} op {op} first {} n {} durable {} state {:?}",
                model.first,
                model.entries.len(),
                model.n_durable,
                log.state()
            );
        }
        match op {
            0..=54 => {
                // Append a few batches in one call.
                let n = 1 + rng.below(4) as usize;
                let mut batches = Vec::new();
                for _ in 0..n {
                    tag += 1;
                    let batch = if rng.below(10) == 0 {
                        control_batch(tag)
                    } else {
                        data_batch(tag, 1 + rng.below(8) as usize, rng.below(3000) as usize, tag as i64)
                    };
                    batches.push(batch);
                }
                if rng.below(20) == 0 {
                    model.term = Term(model.term.0 + 1);
                }
                let items: Vec<(&[u8], Term)> = batches.iter().map(|b| (&b[..], model.term)).collect();
                let appended = log.append_many(&items).expect("append");
                if data_file_bytes(&disk) > log.state().size_bytes {
                    n_preallocated += 1;
                }
                for (batch, a) in batches.iter().zip(appended) {
                    assert_eq!(a.index, model.end(), "seed {seed} round {round}: index");
                    model.entries.push(ModelEntry {
                        term: model.term,
                        unstamped: unstamped(batch),
                        n_offsets: a.n_offsets,
                    });
                }
            }
            55..=69 => {
                log.sync().expect("sync");
                model.n_durable = model.entries.len();
            }
            70..=74 => {
                // Truncate an uncommitted-looking suffix.
                if !model.entries.is_empty() {
                    let keep = rng.below(model.entries.len() as u64 + 1) as usize;
                    log.truncate_from(RaftIndex(model.first.0 + keep as u64)).expect("truncate");
                    // A real cut leaves everything kept durable; a cut at the
                    // end is a no-op and syncs nothing.
                    if keep < model.entries.len() {
                        model.entries.truncate(keep);
                        model.n_durable = keep;
                    }
                }
            }
            75..=77 => {
                if model.entries.len() > 2 {
                    let n = rng.below(model.entries.len() as u64 - 1) as usize;
                    let upto = RaftIndex(model.first.0 + n as u64);
                    // Purge only durable entries, as Raft purges applied ones.
                    if n < model.n_durable {
                        log.purge_upto(upto).expect("purge");
                        let removed: Vec<ModelEntry> = model.entries.drain(..=n).collect();
                        model.first = upto.next();
                        model.first_offset =
                            Offset(model.first_offset.0 + removed.iter().map(|e| e.n_offsets).sum::<u64>());
                        model.n_durable -= removed.len();
                    }
                }
            }
            78 => {
                // Reset, as a snapshot install past the log does.
                let last = RaftIndex(model.end().0 + rng.below(10));
                let next_offset = Offset(model.first_offset.0 + 10_000 + rng.below(1000));
                model.term = Term(model.term.0 + 1);
                log.reset(strata_log::LogId { term: model.term, index: last }, next_offset).expect("reset");
                model.first = last.next();
                model.first_offset = next_offset;
                model.entries.clear();
                model.n_durable = 0;
            }
            _ => {
                let mode =
                    if rng.below(4) == 0 { CrashMode::SyncedOnly } else { CrashMode::Random { seed: rng.next_u64() } };
                drop(log);
                disk = disk.crash(mode);
                log = open(&disk);
                check(&log, &mut model, seed, round);
                n_crashes += 1;
            }
        }
    }
    drop(log);
    disk = disk.crash(CrashMode::Random { seed: rng.next_u64() });
    let log = open(&disk);
    check(&log, &mut model, seed, n_rounds);
    (n_crashes + 1, n_preallocated)
}

#[test]
fn every_durable_batch_survives_thousands_of_random_crashes() {
    let seed = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("STRATA_SEED={seed}");
    let (mut n_crashes, mut n_preallocated) = (0, 0);
    let mut rng = SplitMix(seed);
    if let Some(inner) = std::env::var("STRATA_INNER_SEED").ok().and_then(|s| s.parse().ok()) {
        run(inner, 1000);
        return;
    }
    for i in 0..20 {
        // Alternate the seed's parity, so half the runs preallocate.
        let (crashes, preallocated) = run((rng.next_u64() & !1) | (i & 1), 1000);
        n_crashes += crashes;
        n_preallocated += preallocated;
    }
    assert!(n_crashes >= 2000, "only {n_crashes} crashes were simulated");
    assert!(n_preallocated >= 100, "segments had space allocated ahead after only {n_preallocated} appends");
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_reported_never_served() {
    let disk = SimDisk::new();
    let log = open(&disk);
    for i in 0..100 {
        log.append(&data_batch(i, 4, 1000, 0), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    drop(log);
    let name = {
        use strata_log::io::Dir;
        let mut names: Vec<String> = disk.list().expect("list").into_iter().filter(|n| n.ends_with(".log")).collect();
        names.sort();
        names[0].clone()
    };
    disk.corrupt(&name, 5000, &[0xAA]).expect("corrupt");
    // With the index intact, open succeeds and the damage shows on read.
    let log = open(&disk);
    let err = log.entries(RaftIndex(0)..RaftIndex(10), usize::MAX).expect_err("damage must not be served");
    match err {
        LogError::Corrupt { file, position, .. } => {
            assert_eq!(file.to_str(), Some(name.as_str()));
            assert!(position <= 5000);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(log.read_offsets(Offset(0), usize::MAX, Offset(400)).is_err());
    drop(log);
    // Without the index, the rebuild finds it and open fails naming the spot.
    use strata_log::io::Dir;
    disk.remove(&name.replace(".log", ".index")).expect("remove index");
    let err = Log::open(Arc::new(disk.clone()), config(), None).expect_err("open must refuse");
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn damaged_or_missing_index_files_are_rebuilt() {
    use strata_log::io::Dir;
    let disk = SimDisk::new();
    let log = open(&disk);
    for i in 0..100 {
        log.append(&data_batch(i, 4, 1000, 0), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    let before = log.entries(RaftIndex(0)..RaftIndex(100), usize::MAX).expect("entries");
    drop(log);
    let mut indexes: Vec<String> = disk.list().expect("list").into_iter().filter(|n| n.ends_with(".index")).collect();
    indexes.sort();
    assert!(indexes.len() >= 2, "need sealed segments");
    disk.corrupt(&indexes[0], 40, &[1, 2, 3]).expect("corrupt index");
    disk.remove(&indexes[1]).expect("remove index");
    let log = open(&disk);
    let after = log.entries(RaftIndex(0)..RaftIndex(100), usize::MAX).expect("entries");
    assert_eq!(before, after);
}

#[test]
fn a_torn_tail_is_cut_to_the_last_whole_batch() {
    use strata_log::io::Dir;
    let disk = SimDisk::new();
    let log = open(&disk);
    for i in 0..5 {
        log.append(&data_batch(i, 4, 100, 0), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    drop(log);
    let disk = disk.crash(CrashMode::SyncedOnly);
    let name = disk.list().expect("list").into_iter().find(|n| n.ends_with(".log")).expect("segment");
    let len = disk.file_len(&name).expect("len");
    disk.truncate(&name, len - 7).expect("tear");
    let log = open(&disk);
    assert_eq!(log.state().last_log_id.map(|id| id.index), Some(RaftIndex(3)));
    assert_eq!(log.append(&data_batch(9, 1, 1, 0), Term(1)).expect("append").index, RaftIndex(4));
}

/// Records readable by offset: offset -> (key, value).
fn records_by_offset(log: &Log) -> std::collections::BTreeMap<i64, (Option<bytes::Bytes>, Option<bytes::Bytes>)> {
    common::records_from_start(log).into_iter().map(|r| (r.offset, (r.key, r.value))).collect()
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Compact,
    Truncate(u64),
    Purge(u64),
    Roll,
}

/// Builds the same keyed log each time, all of it durable.
fn keyed_log(disk: &SimDisk) -> Log {
    let log = open(disk);
    for i in 0..120u64 {
        let mut builder = strata_batch::BatchBuilder::new();
        for j in 0..4u64 {
            let key = format!("k{}", (i * 4 + j) % 13);
            builder.push(0, Some(key.as_bytes()), Some(&vec![(i % 200) as u8; 300]), &[]);
        }
        log.append(&builder.build(strata_batch::Compression::None), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    log
}

#[test]
fn every_multi_step_operation_survives_power_loss_at_each_step() {
    let mut n_interrupted = 0;
    for step in [Step::Compact, Step::Truncate(30), Step::Truncate(100), Step::Purge(50), Step::Roll] {
        for n_ops in 0..40u64 {
            for mode in [CrashMode::SyncedOnly, CrashMode::Random { seed: n_ops * 31 + 7 }] {
                let disk = SimDisk::new();
                let log = keyed_log(&disk);
                let before = records_by_offset(&log);
                let end = log.state().next_offset;
                disk.die_after(n_ops);
                let result = match step {
                    Step::Compact => log
                        .compact(strata_log::Compaction { boundary: RaftIndex(120), now_ms: 0, delete_retention_ms: 0 })
                        .map(|_| ()),
                    Step::Truncate(k) => log.truncate_from(RaftIndex(k)),
                    Step::Purge(p) => log.purge_upto(RaftIndex(p)),
                    Step::Roll => log
                        .append_many(&vec![(&data_batch(1, 10, 5000, 0)[..], Term(2)); 30])
                        .map(|_| ())
                        .and_then(|()| log.sync()),
                };
                n_interrupted += usize::from(result.is_err());
                drop(log);
                let disk = disk.crash(mode);
                let log = Log::open(Arc::new(disk.clone()), config(), None)
                    .unwrap_or_else(|e| panic!("{step:?} died after {n_ops} ops ({mode:?}): open failed: {e}"));
                let after = records_by_offset(&log);
                let ctx = format!("{step:?} died after {n_ops} ops ({mode:?})");
                // Nothing invented: every record read is one that was written.
                for (offset, record) in &after {
                    if let Some(original) = before.get(offset) {
                        assert_eq!(original, record, "{ctx}: record {offset} changed");
                    } else {
                        assert!(
                            matches!(step, Step::Roll) && Offset(*offset as u64) >= end,
                            "{ctx}: invented {offset}"
                        );
                    }
                }
                // Nothing durable lost.
                match step {
                    Step::Compact => {
                        let mut latest = std::collections::HashMap::new();
                        for (offset, (key, _)) in &before {
                            latest.insert(key.clone(), *offset);
                        }
                        for offset in latest.values() {
                            assert!(after.contains_key(offset), "{ctx}: latest record {offset} lost");
                        }
                    }
                    Step::Truncate(k) => {
                        let kept_end = log.entries(RaftIndex(0)..RaftIndex(k), usize::MAX).expect("kept entries");
                        assert_eq!(kept_end.len() as u64, k, "{ctx}");
                    }
                    Step::Purge(_) | Step::Roll => {
                        for offset in before.keys().filter(|o| **o as u64 >= log.state().log_start_offset.0) {
                            assert!(after.contains_key(offset), "{ctx}: {offset} lost");
                        }
                        assert!(log.state().log_start_offset <= Offset(51 * 4), "{ctx}");
                    }
                }
            }
        }
    }
    assert!(n_interrupted > 50, "only {n_interrupted} operations were interrupted");
}

#[test]
fn data_found_after_a_process_crash_is_synced_before_it_is_reported_durable() {
    // Regression: a reopened log reported page-cache data durable unsynced.
    let disk = SimDisk::new();
    let log = open(&disk);
    for i in 0..5 {
        log.append(&data_batch(i, 2, 100, 0), Term(1)).expect("append");
    }
    drop(log); // a process crash: the "page cache" (current state) survives
    let log = open(&disk);
    assert_eq!(log.durable_index(), Some(RaftIndex(4)));
    drop(log);
    let disk = disk.crash(CrashMode::SyncedOnly); // then power loss
    assert_eq!(open(&disk).state().last_log_id.map(|id| id.index), Some(RaftIndex(4)));
}

#[test]
fn a_flush_callback_may_call_back_into_the_log() {
    // Regression: callbacks ran under the sync lock and deadlocked.
    let disk = SimDisk::new();
    let log = Arc::new(open(&disk));
    log.append(&data_batch(1, 1, 10, 0), Term(1)).expect("append");
    let (tx, rx) = std::sync::mpsc::channel();
    let inner_log = log.clone();
    log.flush(Box::new(move |r| {
        r.expect("flushed");
        inner_log.append(&data_batch(2, 1, 10, 0), Term(1)).expect("append from callback");
        inner_log.flush(Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }));
    }));
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true));
    assert_eq!(log.durable_index(), Some(RaftIndex(1)));
}

#[test]
fn an_index_file_with_a_huge_entry_count_is_rebuilt_not_a_panic() {
    // Regression: the length check overflowed on a corrupt entry count.
    use strata_log::io::Dir;
    let disk = SimDisk::new();
    let log = open(&disk);
    for i in 0..100 {
        log.append(&data_batch(i, 4, 1000, 0), Term(1)).expect("append");
    }
    drop(log);
    let index = disk.list().expect("list").into_iter().find(|n| n.ends_with(".index")).expect("an index");
    disk.corrupt(&index, 23, &[0xa5]).expect("corrupt");
    assert_eq!(open(&disk).entries(RaftIndex(0)..RaftIndex(100), usize::MAX).expect("entries").len(), 100);
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_is_an_error_not_a_silent_cut() {
    // Regression: damage in the last batch of a non-last segment was taken
    // for a torn write, and every later (durable) segment was deleted.
    use strata_log::io::Dir;
    let disk = SimDisk::new();
    let log = open(&disk);
    for i in 0..100 {
        log.append(&data_batch(i, 4, 1000, 0), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    drop(log);
    let mut names: Vec<String> = disk.list().expect("list").into_iter().filter(|n| n.ends_with(".log")).collect();
    names.sort();
    let len = disk.file_len(&names[0]).expect("len");
    disk.corrupt(&names[0], len - 3, &[0x77]).expect("corrupt");
    disk.remove(&names[0].replace(".log", ".index")).expect("remove index");
    let err = Log::open(Arc::new(disk.clone()), config(), None).expect_err("must refuse");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert_eq!(
        disk.list().expect("list").iter().filter(|n| n.ends_with(".log")).count(),
        names.len(),
        "nothing deleted"
    );
}

#[test]
fn truncation_with_a_flush_queued_delivers_it_without_deadlock() {
    // Regression: truncate_from ran callbacks under the log's write lock.
    let disk = SimDisk::new();
    let log = Arc::new(open(&disk));
    for i in 0..10 {
        log.append(&data_batch(i, 1, 10, 0), Term(1)).expect("append");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = log.clone();
    // Queue a waiter without syncing: poison-free path through truncation.
    log.append(&data_batch(10, 1, 10, 0), Term(1)).expect("append");
    let waiter_log = log.clone();
    std::thread::spawn(move || {
        waiter_log.flush(Box::new(move |r| {
            let _ = reader.state(); // calls back into the log
            let _ = tx.send(r.is_ok());
        }));
    });
    log.truncate_from(RaftIndex(5)).expect("truncate");
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true));
}

#[test]
fn a_failed_write_fails_the_queued_flushes_instead_of_dropping_them() {
    // Regression: poisoning left queued callbacks waiting forever.
    let disk = SimDisk::new();
    let flusher = strata_log::Flusher::spawn("t").expect("flusher");
    let log = Log::open(Arc::new(disk.clone()), config(), Some(&flusher)).expect("open");
    log.append(&data_batch(1, 1, 10, 0), Term(1)).expect("append");
    disk.die_after(0);
    let (tx, rx) = std::sync::mpsc::channel();
    log.flush(Box::new(move |r| {
        let _ = tx.send(r.is_ok());
    }));
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(false));
    assert!(log.append(&data_batch(2, 1, 10, 0), Term(1)).is_err(), "poisoned log refuses appends");
}

#[test]
fn reset_is_idempotent_and_survives_a_crash_at_every_step() {
    // Past the log, and exactly at its last entry (where an interrupted reset
    // once reopened with the old segment's next offset).
    for target_index in [110u64, 99] {
        for n_ops in 0..12u64 {
            let disk = SimDisk::new();
            let log = open(&disk);
            for i in 0..100 {
                log.append(&data_batch(i, 4, 100, 0), Term(1)).expect("append");
            }
            log.sync().expect("sync");
            let target = strata_log::LogId { term: Term(3), index: RaftIndex(target_index) };
            disk.die_after(n_ops);
            let _ = log.reset(target, Offset(1000));
            drop(log);
            let disk = disk.crash(CrashMode::Random { seed: n_ops });
            let log = open(&disk);
            let state = log.state();
            let ctx = format!("reset to {target_index}, died after {n_ops}");
            if state.first_index == RaftIndex(target_index + 1) {
                let appended = log.append(&data_batch(1, 1, 1, 0), Term(3)).expect("append");
                assert_eq!(
                    (appended.index, appended.base_offset),
                    (RaftIndex(target_index + 1), Offset(1000)),
                    "{ctx}"
                );
            } else {
                assert_eq!(state.first_index, RaftIndex(0), "{ctx}: neither old nor new log");
                assert_eq!(state.last_log_id.map(|id| id.index), Some(RaftIndex(99)), "{ctx}");
                log.reset(target, Offset(1000)).expect("reset again");
                log.reset(target, Offset(1000)).expect("reset is idempotent");
            }
        }
    }
}
