//! The space of a file system (`statvfs`): what a broker checks before it
//! lets producers fill its disk. With [`super::mmap`], [`super::fallocate`],
//! [`super::arena`] and [`super::pread`], one of the five places in
//! `strata-log` with `unsafe`: one system call, given a string it only
//! reads and a struct it fills.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;

/// The space of the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process may still write (`f_bavail`): what a
    /// broker can count on, the root-reserved blocks left out.
    pub available: u64,
    /// The file system's size in bytes.
    pub total: u64,
}

/// The space of the file system holding `path` (`statvfs`).
pub fn space(path: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stat` is memory for
    // one `statvfs`, which the call fills in full when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: filled by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // The fields are 64-bit here and 32-bit on some targets.
    #[allow(clippy::unnecessary_cast)]
    let (block, available, total) = (stat.f_frsize as u64, stat.f_bavail as u64, stat.f_blocks as u64);
    Ok(Space { available: available.saturating_mul(block), total: total.saturating_mul(block) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_of_a_real_directory_and_of_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("strata-space-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let found = space(&dir).expect("statvfs");
        assert!(found.total > 0 && found.available <= found.total, "{found:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let missing = space(&dir.join("nothing-here")).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
