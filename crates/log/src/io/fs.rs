//! The real disk: `std::fs` files with positional I/O and `fdatasync`.
//!
//! An [`FsDir`] may also be *journaled* (see [`super::journaled`]), a test
//! mode that records what was synced so a harness can make the directory
//! lose its unsynced writes after the process is killed. Opened by
//! [`FsDir::open_journaled`], or by [`FsDir::open`] under a root given to
//! [`super::journaled::journal_under`]; otherwise every call goes straight
//! to `std::fs`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};

use super::journaled::Journal;
use super::{Dir, File};

/// A directory on the real file system.
#[derive(Debug, Clone)]
pub struct FsDir {
    path: PathBuf,
    /// Set in the journaled test mode only.
    journal: Option<Arc<Journal>>,
    /// Segment data files are opened with `O_DIRECT` (see [`super::direct`]).
    direct_segments: bool,
}

/// Set once a file system refused `O_DIRECT`, so the fallback is logged once.
static DIRECT_REFUSED: AtomicBool = AtomicBool::new(false);

impl FsDir {
    /// Opens (creating it and its parents if needed) the directory at `path`:
    /// journaled if it lies under a root given to
    /// [`super::journaled::journal_under`] in this process (a test mode),
    /// plain otherwise.
    pub fn open(path: impl AsRef<Path>) -> io::Result<FsDir> {
        std::fs::create_dir_all(path.as_ref())?;
        let journal = super::journaled::journal_for(path.as_ref())?;
        Ok(FsDir { path: path.as_ref().to_path_buf(), journal, direct_segments: false })
    }

    /// Opens (creating it if needed) the directory at `path` in the
    /// journaled test mode, whatever [`super::journaled::journal_under`]
    /// was told.
    pub fn open_journaled(path: impl AsRef<Path>) -> io::Result<FsDir> {
        std::fs::create_dir_all(path.as_ref())?;
        let journal = super::journaled::shared_journal(path.as_ref())?;
        Ok(FsDir { path: path.as_ref().to_path_buf(), journal: Some(journal), direct_segments: false })
    }

    /// Opens segment data files with `O_DIRECT` (if `direct`): appends and
    /// reads of the active segment then bypass the page cache (see
    /// [`super::direct`]). Where the file system refuses it (tmpfs), or in
    /// the journaled test mode, files are opened as usual; the first refusal
    /// is logged.
    pub fn with_direct_segments(mut self, direct: bool) -> FsDir {
        self.direct_segments = direct && self.journal.is_none();
        self
    }

    fn open_direct(&self, name: &str, create_new: bool) -> io::Result<Option<Arc<dyn File>>> {
        if !self.direct_segments {
            return Ok(None);
        }
        match super::direct::open(&self.path.join(name), create_new)? {
            Some(file) => Ok(Some(Arc::new(file))),
            None => {
                if !DIRECT_REFUSED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.path.display(), "the file system refuses O_DIRECT; segments use the page cache");
                }
                Ok(None)
            }
        }
    }

    /// Whether the directory is journaled (see [`super::journaled`]).
    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

struct FsFile {
    file: std::fs::File,
}

impl File for FsFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, position)
    }
    fn read_bytes_at(&self, position: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(len);
        super::pread::read_exact_appending(&self.file, &mut buf, len, position)?;
        Ok(buf.freeze())
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.file.write_all_at(buf, position)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        let old_len = self.file.metadata()?.len();
        super::fallocate::allocate(&self.file, old_len, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn map(&self, len: u64) -> io::Result<Bytes> {
        super::mmap::map_read_only(&self.file, len)
    }
}

impl Dir for FsDir {
    fn open(&self, name: &str) -> io::Result<Arc<dyn File>> {
        if let Some(journal) = &self.journal {
            return journal.open_file(name);
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).open(self.path.join(name))?;
        Ok(Arc::new(FsFile { file }))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn File>> {
        if let Some(journal) = &self.journal {
            return journal.create_file(name);
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(self.path.join(name))?;
        Ok(Arc::new(FsFile { file }))
    }
    fn create_segment(&self, name: &str) -> io::Result<Arc<dyn File>> {
        match self.open_direct(name, true)? {
            Some(file) => Ok(file),
            // A refused direct open may have created the file already.
            None if self.direct_segments && self.path.join(name).exists() => self.open(name),
            None => self.create(name),
        }
    }
    fn open_segment(&self, name: &str) -> io::Result<Arc<dyn File>> {
        match self.open_direct(name, false)? {
            Some(file) => Ok(file),
            None => self.open(name),
        }
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        if let Some(journal) = &self.journal {
            return journal.remove_file(name);
        }
        std::fs::remove_file(self.path.join(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if let Some(journal) = &self.journal {
            return journal.rename_file(from, to);
        }
        std::fs::rename(self.path.join(from), self.path.join(to))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }
    fn sync_dir(&self) -> io::Result<()> {
        if let Some(journal) = &self.journal {
            return journal.sync_dir();
        }
        std::fs::File::open(&self.path)?.sync_all()
    }
}
