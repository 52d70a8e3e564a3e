//! The engine's API on a real file system: append, read back by index and by
//! offset, roll, reopen, truncate, purge, reset, timestamps.

mod common;

use std::sync::Arc;
use std::sync::mpsc;

use common::{FileHooks, HookedDir, TempDir, control_batch, data_batch, unstamped};
use strata_log::io::fs::FsDir;
use strata_log::{FlushPolicy, Flusher, Log, LogConfig, LogError, LogId, Offset, RaftIndex, Term};

fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, ..LogConfig::default() }
}

fn open(dir: &TempDir, config: LogConfig) -> Log {
    Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config, None).expect("open")
}

#[test]
fn appended_batches_read_back_by_index_and_offset_across_rolls_and_reopen() {
    let dir = TempDir::new("basic");
    let mut expected = Vec::new();
    {
        let log = open(&dir, small_segments());
        for i in 0..200u64 {
            let batch = if i % 17 == 5 { control_batch(i) } else { data_batch(i, 10, 100, 1000 + i as i64) };
            let appended = log.append(&batch, Term(1 + i / 50)).expect("append");
            assert_eq!(appended.index, RaftIndex(i));
            expected.push((batch, appended));
        }
        log.sync().expect("sync");
        assert!(log.state().n_segments > 3, "rolled: {:?}", log.state());
    }
    let log = open(&dir, small_segments());
    let state = log.state();
    assert_eq!(state.last_log_id, Some(LogId { term: Term(4), index: RaftIndex(199) }));
    let n_data = expected.iter().filter(|(_, a)| a.n_offsets > 0).count() as u64;
    assert_eq!(state.next_offset, Offset(n_data * 10));
    // By index.
    let entries = log.entries(RaftIndex(0)..RaftIndex(200), usize::MAX).expect("entries");
    assert_eq!(entries.len(), 200);
    for (entry, (batch, appended)) in entries.iter().zip(&expected) {
        assert_eq!(unstamped(&entry.batch), unstamped(batch));
        assert_eq!(entry.base_offset, appended.base_offset);
        let header = strata_batch::validate(&entry.batch).expect("stored batch valid");
        assert_eq!(header.base_offset as u64, appended.base_offset.0);
        assert_eq!(header.partition_leader_epoch as u64, entry.term.0);
    }
    // By offset: only data batches, in order, whole.
    let mut from = Offset(0);
    let mut seen = Vec::new();
    while from < state.next_offset {
        let read = log.read_offsets(from, 5000, state.next_offset).expect("read");
        assert!(!read.chunks.is_empty());
        for chunk in &read.chunks {
            for item in strata_batch::split_batches(chunk) {
                let (header, bytes) = item.expect("whole batches");
                assert!(!header.is_control());
                seen.push(unstamped(bytes));
            }
        }
        from = read.next_offset;
    }
    let data: Vec<_> = expected.iter().filter(|(_, a)| a.n_offsets > 0).map(|(b, _)| unstamped(b)).collect();
    assert_eq!(seen, data);
}

#[test]
fn offset_reads_stop_at_the_upper_bound_and_return_one_batch_beyond_the_budget() {
    let dir = TempDir::new("upper");
    let log = open(&dir, LogConfig::default());
    for i in 0..10 {
        log.append(&data_batch(i, 5, 1000, 0), Term(1)).expect("append");
    }
    let read = log.read_offsets(Offset(0), 1, Offset(50)).expect("read");
    assert_eq!(read.next_offset, Offset(5), "one batch even with a 1-byte budget");
    let read = log.read_offsets(Offset(7), usize::MAX, Offset(23)).expect("read");
    assert_eq!(read.next_offset, Offset(20), "batch 20..25 is above the bound");
    let read = log.read_offsets(Offset(20), usize::MAX, Offset(23)).expect("read");
    assert!(read.chunks.is_empty());
    assert!(matches!(log.read_offsets(Offset(51), 10, Offset(50)), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn truncation_removes_later_entries_even_across_sealed_segments() {
    let dir = TempDir::new("truncate");
    let log = open(&dir, small_segments());
    for i in 0..100 {
        log.append(&data_batch(i, 4, 500, 0), Term(1)).expect("append");
    }
    let segments_before = log.state().n_segments;
    // Hold a slice of a sealed segment while truncating into it: it must stay valid.
    let held = log.entries(RaftIndex(20)..RaftIndex(21), usize::MAX).expect("entry").remove(0);
    log.truncate_from(RaftIndex(20)).expect("truncate");
    assert!(log.state().n_segments < segments_before);
    assert_eq!(log.state().last_log_id.map(|id| id.index), Some(RaftIndex(19)));
    assert_eq!(log.state().next_offset, Offset(80));
    strata_batch::validate(&held.batch).expect("held slice unchanged");
    let appended = log.append(&data_batch(999, 2, 10, 0), Term(2)).expect("append after truncate");
    assert_eq!((appended.index, appended.base_offset), (RaftIndex(20), Offset(80)));
    drop(log);
    let log = open(&dir, small_segments());
    let state = log.state();
    assert_eq!(state.last_log_id, Some(LogId { term: Term(2), index: RaftIndex(20) }));
    assert_eq!(state.next_offset, Offset(82));
}

#[test]
fn purge_and_reset_move_the_log_start_and_survive_reopen() {
    let dir = TempDir::new("purge");
    let log = open(&dir, small_segments());
    for i in 0..100 {
        log.append(&data_batch(i, 4, 500, 0), Term(1)).expect("append");
    }
    log.purge_upto(RaftIndex(49)).expect("purge");
    let state = log.state();
    assert_eq!(state.first_index, RaftIndex(50));
    assert_eq!(state.log_start_offset, Offset(200));
    assert!(matches!(log.entries(RaftIndex(10)..RaftIndex(11), 1), Err(LogError::IndexOutOfRange { .. })));
    assert!(matches!(log.read_offsets(Offset(0), 1, Offset(400)), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);
    let log = open(&dir, small_segments());
    assert_eq!(log.state().first_index, RaftIndex(50));
    assert_eq!(log.state().log_start_offset, Offset(200));
    assert_eq!(log.entries(RaftIndex(50)..RaftIndex(100), usize::MAX).expect("rest").len(), 50);

    log.reset(LogId { term: Term(7), index: RaftIndex(1000) }, Offset(5000)).expect("reset");
    drop(log);
    let log = open(&dir, small_segments());
    let state = log.state();
    assert_eq!(state.first_index, RaftIndex(1001));
    assert_eq!(state.last_log_id, Some(LogId { term: Term(7), index: RaftIndex(1000) }));
    assert_eq!(state.next_offset, Offset(5000));
    let appended = log.append(&data_batch(1, 1, 1, 0), Term(7)).expect("append");
    assert_eq!((appended.index, appended.base_offset), (RaftIndex(1001), Offset(5000)));
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_that_reaches_it() {
    let dir = TempDir::new("time");
    let log = open(&dir, small_segments());
    for i in 0..60 {
        log.append(&data_batch(i, 2, 1000, 10_000 + 100 * i as i64), Term(1)).expect("append");
    }
    assert_eq!(log.offset_for_timestamp(0), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(10_000 + 100 * 30), Some(Offset(60)));
    assert_eq!(log.offset_for_timestamp(10_000 + 100 * 30 + 1), Some(Offset(62)));
    assert_eq!(log.offset_for_timestamp(1_000_000), None);
}

#[test]
fn bad_batches_and_backwards_terms_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("bad");
    let log = open(&dir, LogConfig::default());
    log.append(&data_batch(1, 1, 10, 0), Term(3)).expect("append");
    let mut bad = data_batch(2, 1, 10, 0).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(log.append(&bad, Term(3)), Err(LogError::InvalidBatch(_))));
    assert!(matches!(log.append(&data_batch(3, 1, 10, 0), Term(2)), Err(LogError::InvalidArgument(_))));
    let good = data_batch(4, 1, 10, 0);
    assert!(log.append_many(&[(&good, Term(3)), (&bad, Term(3))]).is_err());
    assert_eq!(log.state().last_log_id.map(|id| id.index), Some(RaftIndex(0)));
}

#[test]
fn flusher_reports_appends_durable_in_order() {
    let dir = TempDir::new("flush");
    let flusher = Flusher::spawn("test").expect("flusher");
    let log =
        Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), LogConfig::default(), Some(&flusher)).expect("open");
    let (tx, rx) = mpsc::channel();
    for i in 0..50u64 {
        log.append(&data_batch(i, 1, 100, 0), Term(1)).expect("append");
        let tx = tx.clone();
        log.flush(Box::new(move |result| {
            result.expect("flushed");
            let _ = tx.send(i);
        }));
    }
    let order: Vec<u64> =
        (0..50).map(|_| rx.recv_timeout(std::time::Duration::from_secs(30)).expect("callback")).collect();
    assert_eq!(order, (0..50).collect::<Vec<_>>());
    assert_eq!(log.durable_index(), Some(RaftIndex(49)));
}

#[test]
fn interval_policy_reports_at_once_and_syncs_later() {
    let dir = TempDir::new("interval");
    let flusher = Flusher::spawn("test").expect("flusher");
    let config =
        LogConfig { flush_policy: FlushPolicy::Interval(std::time::Duration::from_millis(20)), ..LogConfig::default() };
    let log = Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config, Some(&flusher)).expect("open");
    log.append(&data_batch(1, 1, 100, 0), Term(1)).expect("append");
    let (tx, rx) = mpsc::channel();
    log.flush(Box::new(move |r| {
        let _ = tx.send(r.is_ok());
    }));
    assert_eq!(rx.try_recv(), Ok(true), "interval flush answers at once");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.durable_index() != Some(RaftIndex(0)) {
        assert!(std::time::Instant::now() < deadline, "interval sync never ran");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let dir = TempDir::new("config");
    let config = LogConfig { segment_bytes: 10, ..LogConfig::default() };
    let err = Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config, None).expect_err("refused");
    assert!(err.to_string().contains("segment_bytes"), "{err}");
}

#[test]
fn retention_deletes_exactly_the_expired_or_excess_segments() {
    use strata_log::plan::Retention;
    let dir = TempDir::new("retention");
    let log = open(&dir, small_segments());
    // ~2 KB batches, timestamps rising 1 s per batch.
    for i in 0..200u64 {
        log.append(&data_batch(i, 4, 500, 1_000 * i as i64), Term(1)).expect("append");
    }
    let infos = log.segment_infos();
    assert!(infos.len() > 4);
    // Time: everything whose newest record is older than 100 s at t = 150 s,
    // i.e. segments whose max timestamp < 50 s.
    let expected = infos.iter().take_while(|s| s.sealed && s.max_timestamp < 50_000).last().map(|s| s.end_index);
    let retention = Retention { retention_ms: Some(100_000), retention_bytes: None };
    let got = log.apply_retention(150_000, retention, RaftIndex(200)).expect("retention");
    assert_eq!(got, expected);
    assert_eq!(log.state().first_index, expected.expect("something expired"));
    // Size: keep at most 3 segments' worth.
    let infos = log.segment_infos();
    let total: u64 = infos.iter().map(|s| s.size_bytes).sum();
    let limit = infos.iter().rev().take(3).map(|s| s.size_bytes).sum::<u64>();
    let retention = Retention { retention_ms: None, retention_bytes: Some(limit) };
    log.apply_retention(150_000, retention, RaftIndex(200)).expect("retention");
    let left: u64 = log.segment_infos().iter().map(|s| s.size_bytes).sum();
    assert!(left >= limit && left < total, "left {left} of {total}, limit {limit}");
    assert_eq!(log.segment_infos().len(), 3);
    // Nothing at or past the boundary goes, whatever the limits say.
    let first = log.state().first_index;
    let retention = Retention { retention_ms: Some(0), retention_bytes: Some(0) };
    assert_eq!(log.apply_retention(i64::MAX / 2, retention, first).expect("retention"), None);
}

#[test]
fn dropping_the_flusher_before_its_logs_does_not_hang_and_syncs_fall_back_inline() {
    // Regression: Flusher::drop waited for every log to go away.
    let dir = TempDir::new("flusher-drop");
    let flusher = Flusher::spawn("test").expect("flusher");
    let log =
        Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), LogConfig::default(), Some(&flusher)).expect("open");
    log.append(&data_batch(1, 1, 10, 0), Term(1)).expect("append");
    drop(flusher);
    let (tx, rx) = mpsc::channel();
    log.flush(Box::new(move |r| {
        let _ = tx.send(r.is_ok());
    }));
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true));
    assert_eq!(log.durable_index(), Some(RaftIndex(0)));
}

/// Counts syncs running at once; once armed, a sync waits (up to a
/// deadline) until another runs beside it.
#[derive(Default)]
struct SyncMeter {
    /// Syncs are held only once armed (opening a log syncs too).
    armed: std::sync::atomic::AtomicBool,
    /// (syncs running now, most running at once)
    state: std::sync::Mutex<(usize, usize)>,
    changed: std::sync::Condvar,
}

impl SyncMeter {
    fn hold(&self) {
        if !self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut state = self.state.lock().expect("meter lock");
        state.0 += 1;
        state.1 = state.1.max(state.0);
        self.changed.notify_all();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while state.1 < 2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.changed.wait_timeout(state, left).expect("meter lock").0;
        }
        state.0 -= 1;
    }
}

#[test]
fn one_flusher_syncs_different_logs_at_the_same_time() {
    // A node's partitions share one flusher; a disk completes concurrent
    // syncs of several files in about the time of one, so one log's sync
    // must not wait for another's.
    let syncs = Arc::new(SyncMeter::default());
    let flusher = Flusher::spawn("test").expect("flusher");
    let dirs = [TempDir::new("overlap-a"), TempDir::new("overlap-b")];
    let logs: Vec<Log> = dirs
        .iter()
        .map(|dir| {
            let meter = syncs.clone();
            let on_sync: Arc<dyn Fn() + Send + Sync> = Arc::new(move || meter.hold());
            let hooks = FileHooks { on_read: None, on_sync: Some(on_sync) };
            let dir = HookedDir { inner: FsDir::open(dir.path()).expect("dir"), hooks };
            Log::open(Arc::new(dir), LogConfig::default(), Some(&flusher)).expect("open")
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    for log in &logs {
        log.append(&data_batch(0, 1, 100, 0), Term(1)).expect("append");
    }
    syncs.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    for log in &logs {
        let tx = tx.clone();
        log.flush(Box::new(move |result| {
            let _ = tx.send(result.is_ok());
        }));
    }
    for _ in &logs {
        assert!(rx.recv_timeout(std::time::Duration::from_secs(30)).expect("callback"), "flushed");
    }
    assert_eq!(syncs.state.lock().expect("meter lock").1, 2, "the two logs' syncs overlapped");
}
