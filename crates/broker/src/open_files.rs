//! The process's limit on open files, raised to what it may be at start.
//!
//! A node keeps two or three descriptors open per partition replica (its
//! active segment written and read, sealed segments while mapped), plus one
//! per client connection and peer stream. Shells and many init systems
//! start programs with a soft limit of 1,024 while allowing far more: with
//! that, a node holding a few hundred replicas can open no more (measured:
//! a 300-partition topic on a node started under `ulimit -Sn 512` left 67
//! partitions that could not open their logs, "Too many open files"; raised,
//! the node held 640 descriptors). So a server raises its
//! soft limit to the hard one, as Go programs do by themselves; the hard
//! limit stays whatever the system granted (`LimitNOFILE=` in
//! deploy/systemd/strata.service).
//!
//! The only `unsafe` of this crate: two system calls on a struct owned here.
#![allow(unsafe_code)]

use std::io;

/// The soft and hard limits on open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// What the process may open now.
    pub soft: u64,
    /// What it may raise `soft` to.
    pub hard: u64,
}

/// The process's limits now.
pub fn open_files_limit() -> io::Result<OpenFilesLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable `rlimit` for the duration of the
    // call, which fills it when it returns 0.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFilesLimit { soft: limit.rlim_cur, hard: limit.rlim_max })
}

/// Raises the soft limit to the hard one; returns the limits before and
/// after. Never lowers anything.
pub fn raise_open_files_limit() -> io::Result<(OpenFilesLimit, OpenFilesLimit)> {
    let before = open_files_limit()?;
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let limit = libc::rlimit { rlim_cur: before.hard, rlim_max: before.hard };
    // SAFETY: `limit` is a valid `rlimit` the call only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, open_files_limit()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let (before, after) = raise_open_files_limit().expect("raise");
        assert_eq!(after.soft, after.hard, "{before:?} -> {after:?}");
        assert_eq!(after.hard, before.hard, "the hard limit is left alone");
        assert!(after.soft >= before.soft);
        assert_eq!(open_files_limit().expect("read"), after);
    }
}
