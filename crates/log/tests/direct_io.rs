//! The engine with segment data files opened with `O_DIRECT` (written behind,
//! padded to blocks; see `strata_log::io::direct`): the same bytes read back,
//! through rolls, truncations and reopening, as with the page cache.

mod common;

use std::sync::Arc;

use common::{TempDir, data_batch, unstamped};
use strata_log::io::fs::FsDir;
use strata_log::{FlushPolicy, Log, LogConfig, Offset, RaftIndex, Term};

/// 64 KiB segments and no tail cache, so reads of the active segment go to
/// the file (or to what is not written out yet).
fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, tail_cache_bytes: 0, ..LogConfig::default() }
}

fn open(dir: &TempDir) -> Log {
    Log::open(Arc::new(FsDir::open(dir.path()).expect("dir").with_direct_segments(true)), config(), None).expect("open")
}

/// Whether the directory's file system takes `O_DIRECT` (tmpfs does not;
/// the log then falls back to the page cache and these tests check that).
#[cfg(not(target_os = "linux"))]
fn direct_io_works(_dir: &TempDir) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn direct_io_works(dir: &TempDir) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.path().join("probe"))
        .map(|_| std::fs::remove_file(dir.path().join("probe")))
        .is_ok()
}

/// Every data file but the last is its batches exactly: no padding left
/// after the seal.
fn assert_sealed_files_hold_only_batches(dir: &TempDir) {
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".log"))
        .collect();
    names.sort();
    names.pop();
    assert!(!names.is_empty());
    for name in names {
        let bytes = std::fs::read(dir.path().join(&name)).expect("read");
        let covered: usize = strata_batch::split_batches(&bytes).map(|item| item.expect("a whole batch").1.len()).sum();
        assert_eq!(covered, bytes.len(), "{name} holds {} bytes past its batches", bytes.len() - covered);
    }
}

fn check_all(log: &Log, expected: &[Vec<u8>]) {
    let entries = log.entries(RaftIndex(0)..RaftIndex(expected.len() as u64), usize::MAX).expect("entries");
    assert_eq!(entries.len(), expected.len());
    for (i, (entry, batch)) in entries.iter().zip(expected).enumerate() {
        assert_eq!(unstamped(&entry.batch), unstamped(batch), "entry {i}");
        strata_batch::validate(&entry.batch).expect("stored batch valid");
    }
}

#[test]
fn batches_of_any_size_read_back_before_and_after_sync_across_rolls_and_reopen() {
    let dir = TempDir::new("direct");
    if !direct_io_works(&dir) {
        eprintln!("{} has no O_DIRECT; the page-cache fallback is tested instead", dir.path().display());
    }
    let mut expected = Vec::new();
    {
        let log = open(&dir);
        for i in 0..300u64 {
            // 1 to 29 records of 1 to 600 bytes: batches ending anywhere in a block.
            let batch = data_batch(i, 1 + (i as usize * 7) % 29, 1 + (i as usize * 131) % 600, i as i64);
            log.append(&batch, Term(1)).expect("append");
            expected.push(batch.to_vec());
            if i % 10 == 3 {
                // Some read back while not yet written out, some after.
                check_all(&log, &expected);
            }
            if i % 25 == 0 {
                log.sync().expect("sync");
            }
        }
        log.sync().expect("sync");
        check_all(&log, &expected);
        assert!(log.state().n_segments > 3, "rolled: {:?}", log.state());
        assert_sealed_files_hold_only_batches(&dir);
    }
    let log = open(&dir);
    check_all(&log, &expected);
    // Appends after reopening start inside the last block written before.
    for i in 300..340u64 {
        let batch = data_batch(i, 3, 77, i as i64);
        log.append(&batch, Term(2)).expect("append");
        expected.push(batch.to_vec());
    }
    log.sync().expect("sync");
    drop(log);
    let log = open(&dir);
    check_all(&log, &expected);
    let state = log.state();
    let records: u64 = (0..300u64).map(|i| 1 + (i * 7) % 29).sum::<u64>() + 40 * 3;
    assert_eq!(state.next_offset, Offset(records));
}

#[test]
fn a_truncation_of_written_and_unwritten_entries_keeps_the_rest_and_takes_new_appends() {
    let dir = TempDir::new("direct-truncate");
    let mut expected = Vec::new();
    let log = open(&dir);
    for i in 0..40u64 {
        let batch = data_batch(i, 4, 333, i as i64);
        log.append(&batch, Term(1)).expect("append");
        expected.push(batch.to_vec());
        if i == 29 {
            log.sync().expect("sync");
        }
    }
    // Entries 35.. were never written out; 25.. were.
    log.truncate_from(RaftIndex(35)).expect("truncate unwritten");
    expected.truncate(35);
    check_all(&log, &expected);
    log.truncate_from(RaftIndex(25)).expect("truncate written");
    expected.truncate(25);
    check_all(&log, &expected);
    for i in 0..10u64 {
        let batch = data_batch(100 + i, 2, 999, 0);
        log.append(&batch, Term(2)).expect("append");
        expected.push(batch.to_vec());
    }
    check_all(&log, &expected);
    log.sync().expect("sync");
    drop(log);
    let log = open(&dir);
    check_all(&log, &expected);
    assert_eq!(log.state().next_offset, Offset(25 * 4 + 10 * 2));
}

#[test]
fn under_the_interval_policy_an_append_is_in_the_file_before_any_sync() {
    let dir = TempDir::new("direct-interval");
    let config = LogConfig { flush_policy: FlushPolicy::Interval(std::time::Duration::from_secs(3600)), ..config() };
    let log = Log::open(Arc::new(FsDir::open(dir.path()).expect("dir").with_direct_segments(true)), config, None)
        .expect("open");
    let batch = data_batch(7, 3, 500, 0);
    log.append(&batch, Term(1)).expect("append");
    // Reported durable at once: a crash of the process must not lose it.
    let name = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".log"))
        .expect("a segment");
    let on_disk = std::fs::read(dir.path().join(name)).expect("read");
    assert!(on_disk.len() >= batch.len(), "{} bytes in the file", on_disk.len());
    assert_eq!(unstamped(&on_disk[..batch.len()]), unstamped(&batch));
}
