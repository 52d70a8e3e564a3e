//! Free space on the node's disk, and refusing writes before it runs out.
//!
//! A log that cannot write its appended data (`ENOSPC`) fails its flush,
//! and a Raft group whose log fails stops for good (openraft treats every
//! storage error as fatal): the partition's replica on that node serves
//! nothing until the broker restarts. So a node refuses produce requests
//! while the file system of its data directory has less than
//! `limits.min_free_disk_bytes` available, with a clear UNAVAILABLE answer
//! (retriable: the producer keeps trying until its delivery timeout, and
//! the batches go through once retention, a deleted topic or an operator
//! has freed space). Only produce is refused: Raft's own traffic, offset
//! commits and the controller's records are small, and deleting a topic,
//! the quickest way out, is itself a controller record.
//!
//! The space is read with `statvfs` at most every [`REFRESH`], by the
//! produce path and the metrics, so the margin must cover what a node may
//! write in that time.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_log::io::{Space, space};

use crate::error::{ApiError, Code};

/// How old a reading of the free space may be before it is taken again.
pub const REFRESH: Duration = Duration::from_millis(100);

/// The node's data directory's free space, as last read.
pub struct DiskGuard {
    node_id: u64,
    path: PathBuf,
    /// Refuse produce below this many bytes available; 0: never.
    min_free: u64,
    state: Mutex<Reading>,
}

#[derive(Clone, Copy)]
struct Reading {
    at: Option<Instant>,
    space: Option<Space>,
    refusing: bool,
    /// The last read failed (logged once, until one succeeds).
    failing: bool,
}

impl DiskGuard {
    /// Watches the file system holding `path` for node `node_id`.
    pub fn new(node_id: u64, path: PathBuf, min_free: u64) -> DiskGuard {
        DiskGuard {
            node_id,
            path,
            min_free,
            state: Mutex::new(Reading { at: None, space: None, refusing: false, failing: false }),
        }
    }

    /// The space as of at most [`REFRESH`] ago (read now if older), and
    /// whether produce is refused. A failed read keeps the previous state.
    fn reading(&self) -> Reading {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.at.is_some_and(|at| at.elapsed() < REFRESH) {
            return *state;
        }
        state.at = Some(Instant::now());
        match space(&self.path) {
            Ok(now) => {
                let refusing = self.min_free > 0 && now.available < self.min_free;
                if refusing != state.refusing {
                    if refusing {
                        tracing::warn!(
                            available = now.available,
                            min_free = self.min_free,
                            path = %self.path.display(),
                            "disk almost full: refusing produce requests until space is freed"
                        );
                    } else {
                        tracing::info!(available = now.available, "disk space freed: taking produce requests again");
                    }
                }
                state.space = Some(now);
                state.refusing = refusing;
                state.failing = false;
            }
            Err(err) => {
                if !state.failing {
                    tracing::warn!(error = %err, path = %self.path.display(), "cannot read the disk's free space");
                }
                state.failing = true;
            }
        }
        *state
    }

    /// Ok while produce requests may be taken; else the answer to give.
    pub fn check_produce(&self) -> Result<(), ApiError> {
        let reading = self.reading();
        if !reading.refusing {
            return Ok(());
        }
        let available = reading.space.map_or(0, |s| s.available);
        Err(ApiError::new(
            Code::Unavailable,
            format!(
                "broker {} refuses writes: its data directory {} has {} available, below \
                 limits.min_free_disk_bytes ({}); free space (retention, deleting a topic) and retry",
                self.node_id,
                self.path.display(),
                human_bytes(available),
                human_bytes(self.min_free)
            ),
        ))
    }

    /// Bytes available and in all, and whether produce is refused; `None`
    /// if the space could never be read.
    pub fn snapshot(&self) -> Option<(Space, bool)> {
        let reading = self.reading();
        reading.space.map(|s| (s, reading.refusing))
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-disk-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn refuses_produce_only_below_the_minimum() {
        let dir = temp_dir("min");
        let available = space(&dir).expect("statvfs").available;
        // More than the disk has: refused, with the numbers and the setting.
        let full = DiskGuard::new(3, dir.clone(), available.saturating_add(1 << 40));
        let err = full.check_produce().expect_err("refused");
        assert_eq!(err.code, Code::Unavailable);
        assert!(err.code.retriable());
        for part in ["broker 3 refuses writes", "limits.min_free_disk_bytes", &dir.display().to_string()] {
            assert!(err.message.contains(part), "{} lacks {part}", err.message);
        }
        let (space, refusing) = full.snapshot().expect("read");
        assert!(refusing && space.total > 0);
        // Far less than it has, or the check off: taken.
        assert!(DiskGuard::new(3, dir.clone(), 1).check_produce().is_ok());
        assert!(DiskGuard::new(3, dir.clone(), 0).check_produce().is_ok());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_directory_that_cannot_be_read_refuses_nothing() {
        let guard = DiskGuard::new(1, temp_dir("gone").join("missing"), u64::MAX);
        assert!(guard.check_produce().is_ok());
        assert!(guard.snapshot().is_none());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
    }
}
