//! A simulated disk that can crash.
//!
//! Files are inodes with two states: `current` (what reads see) and `durable`
//! (what survives a crash). Every write or `set_len` since the last
//! `sync_data` is kept as a pending operation; `sync_data` applies them all to
//! `durable`. Directory operations (create, remove, rename) are pending until
//! `sync_dir`. [`SimDisk::crash`] builds the disk a restart would find: the
//! durable state plus, chosen by a seeded generator, a prefix of the pending
//! operations, the last of which may be torn (only part of its bytes written).
//! That is the failure model of an ordered journaling file system such as ext4
//! with `data=ordered`, minus reordering of pages within one file.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{Dir, File};

#[derive(Debug, Clone)]
enum FileOp {
    Write { position: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link {
        name: String,
        inode: u64,
    },
    Unlink {
        name: String,
    },
    /// Atomic, as a journaling file system makes it.
    Rename {
        from: String,
        to: String,
        inode: u64,
    },
}

#[derive(Debug, Default)]
struct DiskState {
    inodes: HashMap<u64, Inode>,
    names: HashMap<String, u64>,
    durable_names: HashMap<String, u64>,
    pending_dir: Vec<DirOp>,
    next_inode: u64,
    /// Counts of operations, so tests can assert that faults had something to
    /// bite on.
    n_syncs: u64,
    /// When set, every operation fails: the disk "died" (used to stop the old
    /// engine instance from touching the disk after a simulated crash).
    dead: bool,
    /// Mutating operations left before the disk dies (a crash in the middle
    /// of a multi-step operation); `None` = unlimited.
    ops_left: Option<u64>,
    /// Bytes the named files may hold in all; a write or `set_len` that
    /// would grow them past it fails with `StorageFull` and changes
    /// nothing (a full disk). `None` = unlimited.
    capacity: Option<u64>,
}

impl DiskState {
    /// Fails with `StorageFull` if growing `inode` to `new_len` bytes would
    /// take the named files past the capacity.
    fn check_room(&self, inode: u64, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else { return Ok(()) };
        let old_len = self.inodes.get(&inode).map_or(0, |i| i.current.len() as u64);
        if new_len <= old_len {
            return Ok(());
        }
        if self.used_bytes() + (new_len - old_len) > capacity {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "sim disk: no space left"));
        }
        Ok(())
    }

    /// Bytes the named files hold (a file with two names counted once).
    fn used_bytes(&self) -> u64 {
        let mut ids: Vec<&u64> = self.names.values().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().filter_map(|id| self.inodes.get(id)).map(|i| i.current.len() as u64).sum()
    }
}

/// A crashable in-memory disk with one directory. Clones share the disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

/// What a crash keeps of the operations that were not synced.
#[derive(Debug, Clone, Copy)]
pub enum CrashMode {
    /// Keep only what was synced.
    SyncedOnly,
    /// Keep a random prefix of the unsynced operations of each file and of the
    /// directory, possibly tearing the last write, driven by `seed`.
    Random {
        /// Seed of the choice.
        seed: u64,
    },
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let state = self.state.lock().map_err(|_| io::Error::other("sim disk lock poisoned"))?;
        if state.dead {
            return Err(io::Error::other("sim disk: crashed"));
        }
        Ok(state)
    }

    /// Like `lock`, for an operation that changes the disk: counts it against
    /// the budget set by [`SimDisk::die_after`].
    fn lock_mut(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let mut state = self.lock()?;
        match state.ops_left {
            Some(0) => {
                state.dead = true;
                Err(io::Error::other("sim disk: died mid-operation"))
            }
            Some(n) => {
                state.ops_left = Some(n - 1);
                Ok(state)
            }
            None => Ok(state),
        }
    }

    /// Lets `n_ops` more mutating operations (writes, syncs, renames, ...)
    /// succeed, then fails every operation, as power loss in the middle of a
    /// multi-step operation would. Follow with [`SimDisk::crash`].
    pub fn die_after(&self, n_ops: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.ops_left = Some(n_ops);
        }
    }

    /// Limits the bytes the disk's files may hold (`None`: no limit); see
    /// `DiskState::capacity`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        if let Ok(mut state) = self.state.lock() {
            state.capacity = bytes;
        }
    }

    /// Bytes the disk's named files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().map(|state| state.used_bytes()).unwrap_or(0)
    }

    /// Number of `sync_data` and `sync_dir` calls so far.
    pub fn n_syncs(&self) -> u64 {
        self.state.lock().map(|s| s.n_syncs).unwrap_or(0)
    }

    /// Simulates power loss: this disk handle (and every file opened through
    /// it) fails from now on, and the returned disk holds what survived.
    pub fn crash(&self, mode: CrashMode) -> SimDisk {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.dead = true;
        let mut rng = match mode {
            CrashMode::SyncedOnly => None,
            CrashMode::Random { seed } => Some(SplitMix(seed)),
        };
        // The directory: durable names plus a prefix of pending dir ops.
        let mut names = state.durable_names.clone();
        let n_dir = rng.as_mut().map_or(0, |r| r.below(state.pending_dir.len() as u64 + 1) as usize);
        for op in &state.pending_dir[..n_dir] {
            match op {
                DirOp::Link { name, inode } => {
                    names.insert(name.clone(), *inode);
                }
                DirOp::Unlink { name } => {
                    names.remove(name);
                }
                DirOp::Rename { from, to, inode } => {
                    names.remove(from);
                    names.insert(to.clone(), *inode);
                }
            }
        }
        let mut inodes = HashMap::new();
        // Sorted, so a seed replays the same crash (HashMap order is random).
        let mut ids: Vec<u64> = state.inodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let inode = &state.inodes[&id];
            let mut data = inode.durable.clone();
            if let Some(r) = rng.as_mut() {
                let n_ops = r.below(inode.pending.len() as u64 + 1) as usize;
                for (i, op) in inode.pending[..n_ops].iter().enumerate() {
                    let last = i + 1 == n_ops;
                    match op {
                        FileOp::Write { position, data: bytes } => {
                            let n = if last && r.below(2) == 0 {
                                r.below(bytes.len() as u64 + 1) as usize
                            } else {
                                bytes.len()
                            };
                            write_into(&mut data, *position, &bytes[..n]);
                        }
                        FileOp::SetLen(len) => data.resize(*len as usize, 0),
                    }
                }
            }
            inodes.insert(id, Inode { current: data.clone(), durable: data, pending: Vec::new() });
        }
        let fresh = DiskState {
            inodes,
            durable_names: names.clone(),
            names,
            pending_dir: Vec::new(),
            next_inode: state.next_inode,
            n_syncs: 0,
            dead: false,
            ops_left: None,
            // The disk is the same size after a restart.
            capacity: state.capacity,
        };
        SimDisk { state: Arc::new(Mutex::new(fresh)) }
    }

    /// Overwrites bytes of a file durably, as a failing disk would (tests of
    /// corruption handling).
    pub fn corrupt(&self, name: &str, position: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock()?;
        let id = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| not_found(name))?;
        write_into(&mut inode.current, position, bytes);
        write_into(&mut inode.durable, position, bytes);
        Ok(())
    }

    /// Shrinks a file durably (tests of truncated files).
    pub fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut state = self.lock()?;
        let id = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| not_found(name))?;
        inode.current.truncate(len as usize);
        inode.durable.truncate(len as usize);
        Ok(())
    }

    /// A file's current length, if it exists.
    pub fn file_len(&self, name: &str) -> Option<u64> {
        let state = self.lock().ok()?;
        let id = state.names.get(name)?;
        state.inodes.get(id).map(|i| i.current.len() as u64)
    }
}

fn write_into(data: &mut Vec<u8>, position: u64, bytes: &[u8]) {
    let end = position as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[position as usize..end].copy_from_slice(bytes);
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("sim disk: no file {name}"))
}

struct SimFile {
    disk: SimDisk,
    inode: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.lock()?;
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::other("sim disk: inode gone"))?;
        f(inode)
    }

    /// Runs a change that leaves the file `new_len` bytes long, if the
    /// disk has room for it.
    fn with_mut<T>(
        &self,
        new_len: impl FnOnce(u64) -> u64,
        f: impl FnOnce(&mut Inode) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.lock_mut()?;
        let len = state.inodes.get(&self.inode).map_or(0, |i| i.current.len() as u64);
        state.check_room(self.inode, new_len(len))?;
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::other("sim disk: inode gone"))?;
        f(inode)
    }
}

impl File for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.with(|inode| {
            let end = position as usize + buf.len();
            if end > inode.current.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sim disk: read past end"));
            }
            buf.copy_from_slice(&inode.current[position as usize..end]);
            Ok(())
        })
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.with_mut(
            |len| len.max(position + buf.len() as u64),
            |inode| {
                write_into(&mut inode.current, position, buf);
                inode.pending.push(FileOp::Write { position, data: buf.to_vec() });
                Ok(())
            },
        )
    }
    fn len(&self) -> io::Result<u64> {
        self.with(|inode| Ok(inode.current.len() as u64))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_mut(
            |_| len,
            |inode| {
                inode.current.resize(len as usize, 0);
                inode.pending.push(FileOp::SetLen(len));
                Ok(())
            },
        )
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        // No blocks to reserve in memory: growing with zeroes is all of it.
        if len > self.len()? { self.set_len(len) } else { Ok(()) }
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.disk.lock_mut()?;
        state.n_syncs += 1;
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io::Error::other("sim disk: inode gone"))?;
        inode.durable = inode.current.clone();
        inode.pending.clear();
        Ok(())
    }
    fn map(&self, len: u64) -> io::Result<Bytes> {
        self.with(|inode| {
            if len as usize > inode.current.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sim disk: map past end"));
            }
            Ok(Bytes::copy_from_slice(&inode.current[..len as usize]))
        })
    }
}

impl Dir for SimDisk {
    fn open(&self, name: &str) -> io::Result<Arc<dyn File>> {
        let state = self.lock()?;
        let inode = *state.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(Arc::new(SimFile { disk: self.clone(), inode }))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn File>> {
        let mut state = self.lock_mut()?;
        if state.names.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("sim disk: {name} exists")));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.names.insert(name.to_string(), inode);
        state.pending_dir.push(DirOp::Link { name: name.to_string(), inode });
        Ok(Arc::new(SimFile { disk: self.clone(), inode }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock_mut()?;
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        state.pending_dir.push(DirOp::Unlink { name: name.to_string() });
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock_mut()?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_string(), inode);
        state.pending_dir.push(DirOp::Rename { from: from.to_string(), to: to.to_string(), inode });
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock()?.names.keys().cloned().collect())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock_mut()?;
        state.n_syncs += 1;
        state.durable_names = state.names.clone();
        state.pending_dir.clear();
        Ok(())
    }
}

/// SplitMix64: a tiny seeded generator, good enough to pick crash points.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}
