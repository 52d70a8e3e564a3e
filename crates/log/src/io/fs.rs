//! The real disk: `std::fs` files with positional I/O and `fdatasync`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{Dir, File};

/// A directory on the real file system.
#[derive(Debug, Clone)]
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    /// Opens (creating it and its parents if needed) the directory at `path`.
    pub fn open(path: impl AsRef<Path>) -> io::Result<FsDir> {
        std::fs::create_dir_all(path.as_ref())?;
        Ok(FsDir { path: path.as_ref().to_path_buf() })
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
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.file.write_all_at(buf, position)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
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
        let file = std::fs::OpenOptions::new().read(true).write(true).open(self.path.join(name))?;
        Ok(Arc::new(FsFile { file }))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn File>> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(self.path.join(name))?;
        Ok(Arc::new(FsFile { file }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
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
        std::fs::File::open(&self.path)?.sync_all()
    }
}
