//! `Log::append_verified`: batches whose CRC the caller checked. Those that
//! already carry the offsets and term they get (a follower's copy of what
//! its leader stamped) are written and kept without a copy; the others are
//! copied and stamped, as by `append_many`. Either way the file holds
//! exactly what a reopened log reads.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{TempDir, data_batch, same};
use strata_log::io::fs::FsDir;
use strata_log::limits::ZERO_COPY_BYTES_MIN;
use strata_log::{Entry, Log, LogConfig, LogError, RaftIndex, Term};

fn open(dir: &TempDir) -> Log {
    Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), LogConfig::default(), None).expect("open")
}

/// `batch` as the leader stamped it: base offset and leader epoch set.
fn stamped(batch: &Bytes, base_offset: u64, term: Term) -> Bytes {
    let mut bytes = batch.to_vec();
    strata_batch::stamp(&mut bytes, base_offset as i64, term.0 as i32);
    Bytes::from(bytes)
}

fn entries(log: &Log, range: std::ops::Range<u64>) -> Vec<Entry> {
    log.entries(RaftIndex(range.start)..RaftIndex(range.end), usize::MAX).expect("entries")
}

fn n_offsets(batch: &Bytes) -> u64 {
    strata_batch::validate(batch).expect("valid").n_offsets()
}

#[test]
fn stamped_batches_are_kept_without_a_copy_and_the_rest_are_stamped_copies() {
    let dir = TempDir::new("verified-mixed");
    let log = open(&dir);
    let term = Term(3);
    let big = data_batch(1, 40, 1000, 0);
    assert!(big.len() >= ZERO_COPY_BYTES_MIN);
    let small = data_batch(2, 2, 100, 0);
    // Offsets: a small unstamped batch at 0, a big one stamped for where it
    // lands, a big one stamped wrongly (base offset 0), a small stamped one.
    let first_width = n_offsets(&small);
    let big_right = stamped(&big, first_width, term);
    let big_wrong = stamped(&big, 0, term);
    let small_right = stamped(&small, first_width + 2 * n_offsets(&big), term);
    let input = vec![(small.clone(), term), (big_right.clone(), term), (big_wrong.clone(), term), (small_right, term)];
    let appended = log.append_verified(&input).expect("append");
    assert_eq!(appended.iter().map(|a| a.index.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    log.sync().expect("sync");

    let read = entries(&log, 0..4);
    assert_eq!(read[1].batch.as_ptr(), big_right.as_ptr(), "a stamped big batch is kept as it came");
    assert_ne!(read[2].batch.as_ptr(), big_wrong.as_ptr(), "a wrongly stamped one is copied");
    assert_ne!(read[0].batch.as_ptr(), small.as_ptr(), "a small one is copied");
    for (entry, appended) in read.iter().zip(&appended) {
        let header = strata_batch::validate(&entry.batch).expect("what is read validates");
        assert_eq!(header.base_offset as u64, appended.base_offset.0, "entry {}", entry.index);
        assert_eq!(header.partition_leader_epoch as u64, term.0);
    }
    drop(log);

    let reopened = open(&dir);
    let from_file = entries(&reopened, 0..4);
    assert_eq!(from_file.len(), 4);
    for (a, b) in read.iter().zip(&from_file) {
        assert_eq!((a.index, a.term, a.base_offset), (b.index, b.term, b.base_offset));
        assert_eq!(a.batch, b.batch, "the file holds what memory served, entry {}", a.index);
    }
}

#[test]
fn structure_is_still_checked_and_a_bad_batch_writes_nothing() {
    let dir = TempDir::new("verified-bad");
    let log = open(&dir);
    let good = data_batch(1, 40, 1000, 0);
    let mut cut = good.to_vec();
    cut.truncate(good.len() - 10);
    let err = log
        .append_verified(&[(good.clone(), Term(1)), (Bytes::from(cut), Term(1))])
        .expect_err("a batch cut short is refused");
    assert!(matches!(err, LogError::InvalidArgument(_) | LogError::InvalidBatch(_)), "{err}");
    assert_eq!(log.state().last_log_id, None, "nothing of the call was written");
    let mut bad_magic = good.to_vec();
    bad_magic[16] = 1;
    assert!(log.append_verified(&[(Bytes::from(bad_magic), Term(1))]).is_err());
    assert!(log.append_verified(&[(good, Term(1))]).is_ok());
}

#[test]
fn a_stamped_batch_that_rolls_the_segment_lands_whole_in_the_new_one() {
    let dir = TempDir::new("verified-roll");
    let config = LogConfig { segment_bytes: 128 * 1024, ..LogConfig::default() };
    let log = Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config.clone(), None).expect("open");
    let term = Term(1);
    let big = data_batch(1, 45, 1000, 0);
    let width = n_offsets(&big);
    // Three stamped batches of ~46 KB in one call: the third rolls.
    let input: Vec<(Bytes, Term)> = (0..3).map(|i| (stamped(&big, i * width, term), term)).collect();
    log.append_verified(&input).expect("append");
    log.sync().expect("sync");
    assert_eq!(log.segment_infos().len(), 2, "rolled once");
    let read = entries(&log, 0..3);
    assert_eq!(read[2].batch.as_ptr(), input[2].0.as_ptr(), "kept as it came in the new segment");
    drop(log);
    let reopened = Log::open(Arc::new(FsDir::open(dir.path()).expect("dir")), config, None).expect("reopen");
    let from_file = entries(&reopened, 0..3);
    assert!(same(&read, &from_file), "the file holds what memory served");
}
