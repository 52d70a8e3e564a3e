//! Preallocation: the active segment keeps blocks allocated ahead of its
//! data, a sealed segment is exactly its data, and whatever a crash leaves
//! allocated past the data is cut on open without losing a byte of it.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{TempDir, data_batch, same};
use strata_log::io::fs::FsDir;
use strata_log::{Entry, Log, LogConfig, RaftIndex, Term};

const SEGMENT_BYTES: u64 = 1024 * 1024;

fn config() -> LogConfig {
    LogConfig { segment_bytes: SEGMENT_BYTES, ..LogConfig::default() }
}

fn open(dir: &TempDir, config: LogConfig) -> Log {
    Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config, None).expect("open")
}

/// The data files of the directory, oldest first.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn all_entries(log: &Log) -> Vec<Entry> {
    let end = log.state().last_log_id.map_or(0, |id| id.index.0 + 1);
    log.entries(RaftIndex(0)..RaftIndex(end), usize::MAX).expect("entries")
}

#[test]
fn the_active_segment_keeps_allocated_space_ahead_and_a_sealed_one_is_exactly_its_data() {
    let dir = TempDir::new("prealloc-ahead");
    let log = open(&dir, config());
    let mut i = 0u64;
    // Past the threshold below which a segment gets no headroom.
    while log.state().size_bytes < 200 * 1024 {
        log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
        i += 1;
    }
    log.sync().expect("sync");
    let data = log.state().size_bytes;
    let file = &data_files(dir.path())[0];
    let meta = std::fs::metadata(file).expect("stat");
    assert!(meta.len() > data, "{} bytes on disk for {data} of data: no headroom", meta.len());
    assert!(meta.len() <= 2 * data && meta.len() <= SEGMENT_BYTES, "headroom bounded by the data and the segment");
    assert!(meta.blocks() * 512 >= meta.len(), "the headroom's blocks are allocated, not a hole");

    // Roll: the sealed segment is cut back to its data.
    while log.segment_infos().len() < 2 {
        log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
        i += 1;
    }
    log.sync().expect("sync");
    let sealed = &log.segment_infos()[0];
    assert!(sealed.sealed);
    assert_eq!(std::fs::metadata(&data_files(dir.path())[0]).expect("stat").len(), sealed.size_bytes);

    // Appends keep landing in the headroom of the new segment; then the
    // process goes away without any cut and a fresh open finds every entry.
    while log.segment_infos()[1].size_bytes < 300 * 1024 {
        log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
        i += 1;
    }
    log.sync().expect("sync");
    let active = log.segment_infos()[1].size_bytes;
    assert!(std::fs::metadata(&data_files(dir.path())[1]).expect("stat").len() > active, "headroom again");
    let before = all_entries(&log);
    drop(log);

    let log = open(&dir, config());
    assert!(same(&all_entries(&log), &before), "the reopened log reads exactly what was written");
    assert_eq!(std::fs::metadata(&data_files(dir.path())[1]).expect("stat").len(), active, "headroom cut on open");
    let next = log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append after reopen");
    assert_eq!(next.index, RaftIndex(before.len() as u64));
}

#[test]
fn zeroes_past_the_data_of_any_segment_are_cut_on_open_and_nothing_is_lost() {
    let dir = TempDir::new("prealloc-crash");
    let log = open(&dir, config());
    let mut i = 0u64;
    while log.segment_infos().len() < 2 {
        log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
        i += 1;
    }
    log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
    log.sync().expect("sync");
    let before = all_entries(&log);
    let sizes: Vec<u64> = log.segment_infos().iter().map(|s| s.size_bytes).collect();
    drop(log);

    // As a crash could leave them: the sealed segment's cut not durable
    // (its index file then disagrees with its length), the active one with
    // allocated space.
    let files = data_files(dir.path());
    for file in &files {
        let f = std::fs::OpenOptions::new().write(true).open(file).expect("open data file");
        f.set_len(f.metadata().expect("stat").len() + 300_000).expect("grow");
    }

    let log = open(&dir, config());
    assert!(same(&all_entries(&log), &before), "every entry survives");
    for (file, size) in files.iter().zip(&sizes) {
        assert_eq!(std::fs::metadata(file).expect("stat").len(), *size, "{} cut to its data", file.display());
    }
    log.append(&data_batch(i + 1, 10, 1000, 0), Term(1)).expect("append after reopen");
}

#[test]
fn a_torn_write_followed_by_zeroes_is_cut_as_torn_and_what_came_before_stays() {
    let dir = TempDir::new("prealloc-torn");
    let log = open(&dir, config());
    for i in 0..30 {
        log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    let before = all_entries(&log);
    let size = log.state().size_bytes;
    drop(log);

    // Half a batch written into allocated space, then zeroes.
    let file = &data_files(dir.path())[0];
    let torn = data_batch(99, 10, 1000, 0);
    let f = std::fs::OpenOptions::new().write(true).open(file).expect("open data file");
    f.set_len(size + 100_000).expect("grow");
    std::os::unix::fs::FileExt::write_all_at(&f, &torn[..torn.len() / 2], size).expect("write half a batch");

    let log = open(&dir, config());
    assert!(same(&all_entries(&log), &before), "the torn batch is gone, the rest stays");
    assert_eq!(std::fs::metadata(file).expect("stat").len(), size);
}

#[test]
fn preallocation_off_keeps_the_file_exactly_its_data() {
    let dir = TempDir::new("prealloc-off");
    let log = open(&dir, LogConfig { preallocate_bytes: 0, ..config() });
    for i in 0..30 {
        log.append(&data_batch(i, 10, 1000, 0), Term(1)).expect("append");
    }
    log.sync().expect("sync");
    assert_eq!(std::fs::metadata(&data_files(dir.path())[0]).expect("stat").len(), log.state().size_bytes);
}
