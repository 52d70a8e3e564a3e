//! A real-disk mode for crash tests of whole server processes: every
//! directory keeps, beside its files, what each of them held at its last
//! `sync_data` and which names it had at its last `sync_dir`, so that
//! [`lose_unsynced`] can later rewrite it to what a power loss would have
//! left.
//!
//! A `strata server` killed with SIGKILL forgets nothing: the kernel's page
//! cache still holds every write, synced or not, and a restarted process
//! reads it all. [`super::sim`] models power loss, but only in memory, for
//! the engine's own tests. This mode brings the same model to real
//! processes: the server runs on a journaled [`super::fs::FsDir`] (the UNSAFE testing
//! setting `testing.journal_unsynced`, which calls [`journal_under`] for
//! the data directory), a harness kills it, calls [`lose_unsynced`] on each
//! partition directory and starts it again.
//!
//! # What is kept
//!
//! In `<dir>/.journal/` (a directory, so [`super::Dir::list`], which lists
//! regular files only, never shows it):
//!
//! - `state`: the directory's names as of the last `sync_dir` (*durable*)
//!   and now (*current*), each naming an *inode id* given by the journal
//!   (the durable content belongs to the inode, not to the name, exactly as
//!   in `sim.rs`: a file renamed over another keeps its own), the next id,
//!   and the directory operation in progress (see *A process killed in the
//!   middle* below).
//!   Replaced whole (`state.new`, then a rename) on every create, remove,
//!   rename and `sync_dir`.
//! - `ino-<id>`: the inode's *shadow*, its content as of its last
//!   `sync_data` (absent: empty, never synced). Each `sync_data` copies the
//!   bytes from the first one changed since the previous sync to the end of
//!   the file, and sets the shadow's length to the file's. The engine only
//!   appends to segments, writes index and temporary files whole once, and
//!   cuts a segment's tail, so this is exactly the bytes written since
//!   (plus nothing); a write in the middle of a large file would copy the
//!   rest of it too, still exactly, only slower.
//! - `ino-<id>.dirty`: exists while the file may differ from its shadow. It
//!   is created *before* the first change after a sync and removed after
//!   the sync that covers it, so a process that restarts on the directory
//!   knows which files its predecessor left unsynced (it then treats the
//!   whole file as changed).
//!
//! Ids start from the clock's nanoseconds when a journal is created, so a
//! handle left over from a directory that was moved aside (a quarantined
//! replica) never writes the shadow of an inode of the new one.
//!
//! Reads, `len` and `map` go straight to the file. The cost — a copy of
//! every byte written, one small file created and removed per sync, the
//! state file rewritten at each directory operation — is paid only in this
//! mode: [`super::fs::FsDir::open`] checks one atomic flag otherwise.
//!
//! # A process killed in the middle
//!
//! Each create, remove and rename is written to `state` as the pending
//! operation, with the names as they will be, *before* it is carried out.
//! Loading the state (a restarted server, or [`lose_unsynced`]) asks the
//! directory whether it happened (the created name exists; the removed or
//! renamed-away name does not) and takes it back if not. A current name
//! whose file is gone is dropped. A shadow is patched in place, so a kill
//! during a `sync_data` may leave part of the patch (see below); the marker
//! stays until the patch is whole, so a restarted process copies the whole
//! file at its first sync of it.
//!
//! # What [`lose_unsynced`] does
//!
//! With no process using the directory, it rewrites it to its durable state,
//! the state `sim.rs`'s `crash(CrashMode::SyncedOnly)` builds:
//!
//! - every durable name holds its inode's shadow (files whose content
//!   changed since their last sync get it back; names removed, or renamed
//!   away or over, since the last `sync_dir` come back with the content
//!   their inode had at its last sync);
//! - every name created (or renamed into place) since the last `sync_dir`
//!   is removed;
//! - files the journal never saw (written outside the `io` seam) are left
//!   as they are.
//!
//! It then makes that state the journal's: a server started on the
//! directory continues from it (and a second `lose_unsynced` changes
//! nothing).
//!
//! # Compared with `sim.rs`
//!
//! Modelled the same way: durable data per inode, pending until
//! `sync_data`; names pending until `sync_dir`; a file `sync_data`ed before
//! its name was dir-synced loses its name; an unlinked inode still durably
//! named comes back with its durable content; a process crash without
//! power loss (SIGKILL and restart, without `lose_unsynced`) keeps
//! everything, and what the killed process left unsynced stays unsynced
//! until the new one syncs it.
//!
//! Not modelled:
//!
//! - `sim.rs`'s `CrashMode::Random` (a prefix of the pending operations
//!   surviving, the last write torn) and `die_after`: this mode keeps only
//!   what was synced, nothing more. One exception: a process killed in the
//!   middle of a `sync_data` (which therefore never returned) may leave the
//!   shadow with part of the new bytes, which is also a state a real disk
//!   can be in after power loss during `fdatasync`.
//! - Files written outside the seam. In Strata these are the Raft crate's
//!   `snapshot` (and `snapshot.tmp`) in each partition directory and the
//!   node's rebuild markers (`group-G.rebuild`) beside the partition
//!   directories, and the partition directories themselves (created,
//!   moved aside when quarantined, removed with their topic). They are
//!   kept as the killed process left them. The two files are each written
//!   to a temporary file, fdatasync'ed, renamed and their directory
//!   fsync'ed before they are relied on, so their durable state is their
//!   current one except while such a write is in flight.
//! - Files present before the journal saw them (a directory journaled for
//!   the first time, or a file a foreign writer created): adopted as
//!   durable, name and content, when the seam first opens, removes or
//!   renames them. A foreign change to a file the journal knows is not
//!   seen.
//! - The journal itself is not fsync'ed: it survives SIGKILL (the page
//!   cache does), not a real power loss. It is a test instrument.
//!
//! Turning the mode off and on again over the same data directory is not
//! supported: writes made meanwhile are not in the journal. Remove the
//! `.journal` directories first (a fresh journal adopts every file).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use super::File;
use crate::limits::JOURNAL_COPY_CHUNK_BYTES;

/// The folder, inside a journaled directory, that holds its journal.
pub const JOURNAL_DIR_NAME: &str = ".journal";
const STATE_FILE: &str = "state";
const STATE_NEW_FILE: &str = "state.new";
const RESTORE_TMP_FILE: &str = "restore.tmp";
const STATE_HEADER: &str = "strata-journal 1";

/// Whether any root was given to [`journal_under`] in this process: the
/// only cost of this module when it is not used.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The roots given to [`journal_under`], canonical.
static ROOTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The journals open in this process, so that two `FsDir`s over one
/// directory share one (and its in-memory state).
static OPEN: Mutex<Vec<Weak<Journal>>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic with a lock held can at worst leave a journal that disagrees
    // with its directory, which only a crash test sees; better than making
    // every later I/O of the process fail.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes every directory that [`super::fs::FsDir::open`] opens at or under
/// `root` from now on, in this process, a journaled one (created if need
/// be). UNSAFE for production, for the same reason as any test mode: it
/// doubles the bytes written. Directories opened before are not affected.
pub fn journal_under(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    let root = std::fs::canonicalize(root)?;
    let mut roots = lock(&ROOTS);
    if !roots.contains(&root) {
        roots.push(root);
    }
    ENABLED.store(true, Ordering::Release);
    Ok(())
}

/// The journal of `dir` if it lies under a root given to [`journal_under`].
pub(crate) fn journal_for(dir: &Path) -> io::Result<Option<Arc<Journal>>> {
    if !ENABLED.load(Ordering::Acquire) {
        return Ok(None);
    }
    let dir = std::fs::canonicalize(dir)?;
    if !lock(&ROOTS).iter().any(|root| dir.starts_with(root)) {
        return Ok(None);
    }
    shared_journal(&dir).map(Some)
}

/// The journal of the existing directory `dir`: the one already open in
/// this process, or a newly loaded one.
pub(crate) fn shared_journal(dir: &Path) -> io::Result<Arc<Journal>> {
    let dir = std::fs::canonicalize(dir)?;
    let identity = dir_identity(&dir)?;
    let mut open = lock(&OPEN);
    open.retain(|weak| weak.strong_count() > 0);
    // A directory moved aside and replaced by a new one at the same path
    // gets a journal of its own.
    if let Some(journal) = open.iter().filter_map(Weak::upgrade).find(|j| j.dir == dir && j.dir_identity == identity) {
        return Ok(journal);
    }
    let journal = Arc::new(Journal::open(&dir, identity)?);
    open.push(Arc::downgrade(&journal));
    Ok(journal)
}

fn dir_identity(dir: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::metadata(dir)?;
    Ok((meta.dev(), meta.ino()))
}

/// The journal's name for an inode: unique within its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct InodeId(u64);

impl fmt::Display for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A directory operation written to the state before it is carried out;
/// whether it happened is read from the directory when the state is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DirOp {
    Create { name: String, id: InodeId },
    Remove { name: String, id: InodeId },
    Rename { from: String, to: String, id: InodeId, replaced: Option<InodeId> },
}

impl DirOp {
    /// Whether the operation shows in `dir`. Each one's name was checked
    /// before (absent for a create, present for a remove or a rename's
    /// source), so the name alone tells.
    fn happened(&self, dir: &Path) -> bool {
        match self {
            DirOp::Create { name, .. } => dir.join(name).exists(),
            DirOp::Remove { name, .. } => !dir.join(name).exists(),
            DirOp::Rename { from, .. } => !dir.join(from).exists(),
        }
    }

    /// Takes the operation back out of `current`.
    fn undo(&self, current: &mut BTreeMap<String, InodeId>) {
        match self {
            DirOp::Create { name, .. } => {
                current.remove(name);
            }
            DirOp::Remove { name, id } => {
                current.insert(name.clone(), *id);
            }
            DirOp::Rename { from, to, id, replaced } => {
                current.insert(from.clone(), *id);
                match replaced {
                    Some(old) => current.insert(to.clone(), *old),
                    None => current.remove(to),
                };
            }
        }
    }
}

/// The persisted state of a journal (`.journal/state`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Names {
    next_id: u64,
    /// Names as of the last `sync_dir`.
    durable: BTreeMap<String, InodeId>,
    /// Names now.
    current: BTreeMap<String, InodeId>,
    /// The last directory operation, written before it was carried out.
    pending: Option<DirOp>,
}

impl Names {
    fn fresh() -> Names {
        // Ids of a new journal start far from any other's (see the module
        // docs); the low bits leave room for 2^20 ids per microsecond.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Names { next_id: nanos, ..Names::default() }
    }

    fn allocate(&mut self) -> InodeId {
        let id = InodeId(self.next_id);
        self.next_id += 1;
        id
    }

    fn referenced(&self) -> BTreeSet<InodeId> {
        self.current.values().chain(self.durable.values()).copied().collect()
    }

    fn encode(&self) -> String {
        let mut out = format!("{STATE_HEADER}\nnext {}\n", self.next_id);
        for (name, id) in &self.durable {
            out.push_str(&format!("durable {id} {name}\n"));
        }
        for (name, id) in &self.current {
            out.push_str(&format!("current {id} {name}\n"));
        }
        match &self.pending {
            None => {}
            Some(DirOp::Create { name, id }) => out.push_str(&format!("pending create {id} {name}\n")),
            Some(DirOp::Remove { name, id }) => out.push_str(&format!("pending remove {id} {name}\n")),
            Some(DirOp::Rename { from, to, id, replaced }) => {
                let replaced = replaced.map_or_else(|| "-".to_string(), |r| r.to_string());
                out.push_str(&format!("pending rename {id} {replaced} {from} {to}\n"));
            }
        }
        out
    }

    fn decode(text: &str) -> Result<Names, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, STATE_HEADER)) => {}
            other => return Err(format!("expected {STATE_HEADER:?} first, found {:?}", other.map(|(_, l)| l))),
        }
        let parse_id = |word: Option<&str>| -> Result<InodeId, String> {
            word.and_then(|w| w.parse().ok()).map(InodeId).ok_or_else(|| format!("bad inode id {word:?}"))
        };
        let name = |word: Option<&str>| -> Result<String, String> {
            word.map(str::to_string).ok_or_else(|| "missing name".to_string())
        };
        let mut names = Names::default();
        let mut has_next = false;
        for (n, line) in lines {
            let mut words = line.split_whitespace();
            let at = |e: String| format!("line {}: {e}", n + 1);
            match (words.next(), words.next()) {
                (Some("next"), Some(next)) => {
                    names.next_id = next.parse().map_err(|_| at(format!("bad next id {next:?}")))?;
                    has_next = true;
                }
                (Some("durable"), word) => {
                    let id = parse_id(word).map_err(at)?;
                    names.durable.insert(name(words.next()).map_err(at)?, id);
                }
                (Some("current"), word) => {
                    let id = parse_id(word).map_err(at)?;
                    names.current.insert(name(words.next()).map_err(at)?, id);
                }
                (Some("pending"), Some("create")) => {
                    let id = parse_id(words.next()).map_err(at)?;
                    names.pending = Some(DirOp::Create { name: name(words.next()).map_err(at)?, id });
                }
                (Some("pending"), Some("remove")) => {
                    let id = parse_id(words.next()).map_err(at)?;
                    names.pending = Some(DirOp::Remove { name: name(words.next()).map_err(at)?, id });
                }
                (Some("pending"), Some("rename")) => {
                    let id = parse_id(words.next()).map_err(at)?;
                    let replaced = match words.next() {
                        Some("-") => None,
                        word => Some(parse_id(word).map_err(at)?),
                    };
                    let from = name(words.next()).map_err(at)?;
                    let to = name(words.next()).map_err(at)?;
                    names.pending = Some(DirOp::Rename { from, to, id, replaced });
                }
                _ => return Err(at(format!("cannot read {line:?}"))),
            }
        }
        if !has_next {
            return Err("no next id".into());
        }
        Ok(names)
    }

    /// Brings the state in line with the directory after a process died:
    /// settles the pending operation, and forgets current names that are
    /// gone (removed outside the seam).
    fn reconcile(&mut self, dir: &Path) {
        if let Some(op) = self.pending.take() {
            if !op.happened(dir) {
                op.undo(&mut self.current);
            }
        }
        self.current.retain(|name, _| dir.join(name).is_file());
    }
}

/// Names the journal can record: one word, no path separator.
fn check_name(name: &str) -> io::Result<()> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains(char::is_whitespace);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("journaled dir: cannot record the name {name:?}"),
        ));
    }
    Ok(())
}

fn shadow_path(journal_dir: &Path, id: InodeId) -> PathBuf {
    journal_dir.join(format!("ino-{id}"))
}

fn marker_path(journal_dir: &Path, id: InodeId) -> PathBuf {
    journal_dir.join(format!("ino-{id}.dirty"))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_names(journal_dir: &Path) -> io::Result<Names> {
    let path = journal_dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Names::decode(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("journal {}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Names::fresh()),
        Err(e) => Err(e),
    }
}

/// Replaces the state file whole (a SIGKILL leaves the old or the new one).
fn write_names(journal_dir: &Path, names: &Names) -> io::Result<()> {
    let new = journal_dir.join(STATE_NEW_FILE);
    std::fs::write(&new, names.encode())?;
    std::fs::rename(&new, journal_dir.join(STATE_FILE))
}

/// Removes the shadows and markers of inodes nothing refers to, and the
/// leftovers of an interrupted state write or restore.
fn sweep(journal_dir: &Path, names: &Names) -> io::Result<()> {
    let referenced = names.referenced();
    for entry in std::fs::read_dir(journal_dir)? {
        let entry = entry?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let id = file_name.strip_prefix("ino-").map(|rest| rest.trim_end_matches(".dirty"));
        let stale = match id.and_then(|id| id.parse().ok()) {
            Some(id) => !referenced.contains(&InodeId(id)),
            None => file_name == STATE_NEW_FILE || file_name == RESTORE_TMP_FILE,
        };
        if stale {
            remove_if_there(&entry.path())?;
        }
    }
    Ok(())
}

/// The journal of one directory, shared by every handle on it in a process.
pub(crate) struct Journal {
    dir: PathBuf,
    journal_dir: PathBuf,
    /// Device and inode number of `dir` when the journal was opened.
    dir_identity: (u64, u64),
    state: Mutex<DirState>,
}

struct DirState {
    names: Names,
    /// Every inode the names refer to.
    inodes: HashMap<InodeId, Arc<Inode>>,
}

/// One file's journal: where its shadow is and what changed since it.
struct Inode {
    shadow: PathBuf,
    marker: PathBuf,
    state: Mutex<InodeState>,
}

struct InodeState {
    /// First byte that may differ from the shadow; `None`: the file equals
    /// its shadow.
    dirty_from: Option<u64>,
    /// No name refers to the inode any more, now or durably: its writes
    /// can never show again and are not recorded.
    forgotten: bool,
}

impl Inode {
    fn new(journal_dir: &Path, id: InodeId, dirty: bool) -> Inode {
        Inode {
            shadow: shadow_path(journal_dir, id),
            marker: marker_path(journal_dir, id),
            state: Mutex::new(InodeState { dirty_from: dirty.then_some(0), forgotten: false }),
        }
    }

    /// Records that bytes from `from` on are about to change.
    fn note_change(&self, state: &mut InodeState, from: u64) -> io::Result<()> {
        if state.forgotten {
            return Ok(());
        }
        if state.dirty_from.is_none() {
            // Before the change: a process killed right after it must leave
            // the marker behind.
            std::fs::File::create(&self.marker)?;
        }
        state.dirty_from = Some(state.dirty_from.map_or(from, |d| d.min(from)));
        Ok(())
    }

    /// Makes the shadow equal to `file`: copies bytes `[dirty_from, len)`
    /// and sets its length.
    fn catch_up(&self, state: &mut InodeState, file: &std::fs::File) -> io::Result<()> {
        let Some(from) = state.dirty_from.filter(|_| !state.forgotten) else { return Ok(()) };
        let len = file.metadata()?.len();
        let shadow = OpenOptions::new().write(true).create(true).truncate(false).open(&self.shadow)?;
        let mut at = from.min(len);
        let mut buf = vec![0u8; (len - at).min(JOURNAL_COPY_CHUNK_BYTES as u64) as usize];
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            shadow.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        shadow.set_len(len)?;
        remove_if_there(&self.marker)?;
        state.dirty_from = None;
        Ok(())
    }

    fn forget(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.forgotten = true;
        state.dirty_from = None;
        remove_if_there(&self.shadow)?;
        remove_if_there(&self.marker)
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

impl Journal {
    /// Loads (or starts) the journal of `dir` and settles what a killed
    /// process left in progress.
    fn open(dir: &Path, dir_identity: (u64, u64)) -> io::Result<Journal> {
        let journal_dir = dir.join(JOURNAL_DIR_NAME);
        match std::fs::create_dir(&journal_dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let mut names = read_names(&journal_dir)?;
        names.reconcile(dir);
        write_names(&journal_dir, &names)?;
        sweep(&journal_dir, &names)?;
        let inodes = names
            .referenced()
            .into_iter()
            .map(|id| (id, Arc::new(Inode::new(&journal_dir, id, marker_path(&journal_dir, id).exists()))))
            .collect();
        Ok(Journal { dir: dir.to_path_buf(), journal_dir, dir_identity, state: Mutex::new(DirState { names, inodes }) })
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        lock(&self.state)
    }

    /// Writes the state, unless the directory was moved away from under
    /// this journal (a late call on a quarantined replica's handles).
    fn save(&self, names: &Names) -> io::Result<()> {
        if dir_identity(&self.dir)? != self.dir_identity {
            return Err(io::Error::other(format!("journaled dir {} was replaced", self.dir.display())));
        }
        write_names(&self.journal_dir, names)
    }

    /// Applies `change` to the names, persists them, then runs `op`; if
    /// either fails, the names are restored (and persisted) as they were.
    fn change_then<T>(
        &self,
        state: &mut DirState,
        change: impl FnOnce(&mut Names),
        op: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let before = state.names.clone();
        change(&mut state.names);
        let result = self.save(&state.names).and_then(|()| op());
        match result {
            Ok(value) => {
                state.names.pending = None;
                Ok(value)
            }
            Err(e) => {
                state.names = before;
                let _ = self.save(&state.names);
                Err(e)
            }
        }
    }

    /// Takes a file the journal has not seen as durable, name and content.
    fn adopt(&self, state: &mut DirState, name: &str) -> io::Result<InodeId> {
        let id = state.names.allocate();
        std::fs::copy(self.dir.join(name), shadow_path(&self.journal_dir, id))?;
        let replaced = state.names.durable.insert(name.to_string(), id);
        state.names.current.insert(name.to_string(), id);
        state.names.pending = None;
        self.save(&state.names)?;
        state.inodes.insert(id, Arc::new(Inode::new(&self.journal_dir, id, false)));
        self.forget_unreferenced(state, replaced)?;
        Ok(id)
    }

    /// The id of `name`, adopting the file if the journal has not seen it.
    fn id_of(&self, state: &mut DirState, name: &str) -> io::Result<Option<InodeId>> {
        match state.names.current.get(name) {
            Some(id) => Ok(Some(*id)),
            None if self.dir.join(name).is_file() => self.adopt(state, name).map(Some),
            None => Ok(None),
        }
    }

    fn inode(&self, state: &mut DirState, id: InodeId) -> Arc<Inode> {
        state.inodes.entry(id).or_insert_with(|| Arc::new(Inode::new(&self.journal_dir, id, false))).clone()
    }

    fn forget_unreferenced(&self, state: &mut DirState, ids: impl IntoIterator<Item = InodeId>) -> io::Result<()> {
        let referenced = state.names.referenced();
        for id in ids {
            if !referenced.contains(&id) {
                match state.inodes.remove(&id) {
                    Some(inode) => inode.forget()?,
                    None => {
                        remove_if_there(&shadow_path(&self.journal_dir, id))?;
                        remove_if_there(&marker_path(&self.journal_dir, id))?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn open_file(self: &Arc<Self>, name: &str) -> io::Result<Arc<dyn File>> {
        check_name(name)?;
        let mut state = self.lock();
        let Some(id) = self.id_of(&mut state, name)? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")));
        };
        let file = OpenOptions::new().read(true).write(true).open(self.dir.join(name))?;
        Ok(Arc::new(JournaledFile { file, inode: self.inode(&mut state, id), _journal: self.clone() }))
    }

    pub(crate) fn create_file(self: &Arc<Self>, name: &str) -> io::Result<Arc<dyn File>> {
        check_name(name)?;
        let mut state = self.lock();
        if state.names.current.contains_key(name) || self.dir.join(name).exists() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{name} exists")));
        }
        let id = state.names.allocate();
        let path = self.dir.join(name);
        let file = self.change_then(
            &mut state,
            |names| {
                names.current.insert(name.to_string(), id);
                names.pending = Some(DirOp::Create { name: name.to_string(), id });
            },
            || OpenOptions::new().read(true).write(true).create_new(true).open(&path),
        )?;
        Ok(Arc::new(JournaledFile { file, inode: self.inode(&mut state, id), _journal: self.clone() }))
    }

    pub(crate) fn remove_file(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut state = self.lock();
        let Some(id) = self.id_of(&mut state, name)? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")));
        };
        let path = self.dir.join(name);
        self.change_then(
            &mut state,
            |names| {
                names.current.remove(name);
                names.pending = Some(DirOp::Remove { name: name.to_string(), id });
            },
            || std::fs::remove_file(&path),
        )?;
        self.forget_unreferenced(&mut state, [id])
    }

    pub(crate) fn rename_file(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let (from_path, to_path) = (self.dir.join(from), self.dir.join(to));
        if from == to {
            return std::fs::rename(&from_path, &to_path);
        }
        let mut state = self.lock();
        let Some(id) = self.id_of(&mut state, from)? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")));
        };
        let replaced = self.id_of(&mut state, to)?;
        self.change_then(
            &mut state,
            |names| {
                names.current.remove(from);
                names.current.insert(to.to_string(), id);
                names.pending = Some(DirOp::Rename { from: from.to_string(), to: to.to_string(), id, replaced });
            },
            || std::fs::rename(&from_path, &to_path),
        )?;
        self.forget_unreferenced(&mut state, replaced)
    }

    pub(crate) fn sync_dir(&self) -> io::Result<()> {
        {
            let mut state = self.lock();
            self.change_then(&mut state, |names| names.durable = names.current.clone(), || Ok(()))?;
            let ids: Vec<InodeId> = state.inodes.keys().copied().collect();
            self.forget_unreferenced(&mut state, ids)?;
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// A file of a journaled directory.
struct JournaledFile {
    file: std::fs::File,
    inode: Arc<Inode>,
    /// Keeps the directory's journal (and so its in-memory state) the one
    /// every `FsDir` on the directory gets while any of its files is open.
    _journal: Arc<Journal>,
}

impl File for JournaledFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, position)
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        // Held across the write, so a concurrent sync copies either none or
        // all of it and its note.
        let mut state = lock(&self.inode.state);
        self.inode.note_change(&mut state, position)?;
        self.file.write_all_at(buf, position)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock(&self.inode.state);
        // Growing changes the bytes from the old end (zeros appear there).
        let old_len = self.file.metadata()?.len();
        self.inode.note_change(&mut state, len.min(old_len))?;
        self.file.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut state = lock(&self.inode.state);
        let old_len = self.file.metadata()?.len();
        if len <= old_len {
            return Ok(());
        }
        // Like growing with set_len: zeroes appear from the old end.
        self.inode.note_change(&mut state, old_len)?;
        super::fallocate::allocate(&self.file, old_len, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inode.catch_up(&mut lock(&self.inode.state), &self.file)?;
        // The real sync too, off the lock, so that the timing of appends
        // against syncs stays that of the real disk.
        self.file.sync_data()
    }
    fn map(&self, len: u64) -> io::Result<Bytes> {
        super::mmap::map_read_only(&self.file, len)
    }
}

/// What [`lose_unsynced`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Files given back their content as of their last sync (unsynced
    /// writes, growth or truncation undone).
    pub n_files_rewritten: u64,
    /// Files removed: created, or renamed into place, since the last
    /// `sync_dir`.
    pub n_files_removed: u64,
    /// Names brought back: removed, renamed away or renamed over since the
    /// last `sync_dir`.
    pub n_names_restored: u64,
    /// Bytes in the files the journal knows, before.
    pub bytes_before: u64,
    /// Bytes in the files the journal knows, after.
    pub bytes_after: u64,
}

impl Lost {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.n_files_rewritten + self.n_files_removed + self.n_names_restored == 0
    }
}

impl std::ops::AddAssign for Lost {
    fn add_assign(&mut self, other: Lost) {
        self.n_files_rewritten += other.n_files_rewritten;
        self.n_files_removed += other.n_files_removed;
        self.n_names_restored += other.n_names_restored;
        self.bytes_before += other.bytes_before;
        self.bytes_after += other.bytes_after;
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files rewritten, {} removed, {} names restored, {} -> {} bytes",
            self.n_files_rewritten, self.n_files_removed, self.n_names_restored, self.bytes_before, self.bytes_after
        )
    }
}

/// Rewrites the journaled directory `dir` to what it held at its last syncs
/// (see the module docs), as a power loss would leave it. No process may
/// have it open. Fails with `NotFound` if `dir` has no journal.
pub fn lose_unsynced(dir: &Path) -> io::Result<Lost> {
    let journal_dir = dir.join(JOURNAL_DIR_NAME);
    if !journal_dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no journal of unsynced writes (it was not opened in journaled mode)", dir.display()),
        ));
    }
    let mut names = read_names(&journal_dir)?;
    names.reconcile(dir);
    let mut lost = Lost::default();
    let managed: BTreeSet<String> = names.current.keys().chain(names.durable.keys()).cloned().collect();
    let tmp = journal_dir.join(RESTORE_TMP_FILE);
    for name in managed {
        let path = dir.join(&name);
        let len_now = std::fs::metadata(&path).ok().filter(|m| m.is_file()).map(|m| m.len());
        lost.bytes_before += len_now.unwrap_or(0);
        let Some(&durable) = names.durable.get(&name) else {
            if len_now.is_some() {
                std::fs::remove_file(&path)?;
                lost.n_files_removed += 1;
            }
            continue;
        };
        let same_inode = names.current.get(&name) == Some(&durable);
        if same_inode && len_now.is_some() && !marker_path(&journal_dir, durable).exists() {
            lost.bytes_after += len_now.unwrap_or(0);
            continue;
        }
        let shadow = shadow_path(&journal_dir, durable);
        match std::fs::copy(&shadow, &tmp) {
            Ok(len) => lost.bytes_after += len,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::File::create(&tmp)?;
            }
            Err(e) => return Err(e),
        }
        std::fs::File::open(&tmp)?.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        if same_inode && len_now.is_some() {
            lost.n_files_rewritten += 1;
        } else {
            lost.n_names_restored += 1;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    // Every durable name now holds its shadow: that is the new state.
    names.current = names.durable.clone();
    for id in names.referenced() {
        remove_if_there(&marker_path(&journal_dir, id))?;
    }
    write_names(&journal_dir, &names)?;
    sweep(&journal_dir, &names)?;
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::io::Dir;
    use crate::io::TempDir;
    use crate::io::fs::FsDir;
    use crate::io::sim::{CrashMode, SimDisk, SplitMix};

    /// Every regular file of `dir` with its bytes (the journal's folder is
    /// not a regular file).
    fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(dir).expect("list") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                let name = entry.file_name().to_str().expect("utf-8 name").to_string();
                out.insert(name, std::fs::read(entry.path()).expect("read"));
            }
        }
        out
    }

    fn sim_contents(disk: &SimDisk) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for name in disk.list().expect("list") {
            let file = disk.open(&name).expect("open");
            let mut buf = vec![0u8; file.len().expect("len") as usize];
            file.read_exact_at(&mut buf, 0).expect("read");
            out.insert(name, buf);
        }
        out
    }

    fn files(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect()
    }

    #[test]
    fn synced_bytes_survive_and_unsynced_ones_are_lost() {
        let tmp = TempDir::new("synced");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let file = dir.create("seg").expect("create");
        dir.sync_dir().expect("sync dir");
        file.write_all_at(b"hello", 0).expect("write");
        file.sync_data().expect("sync");
        file.write_all_at(b" world", 5).expect("write");
        file.write_all_at(b"HE", 0).expect("write over");
        drop((file, dir));
        assert_eq!(contents(&tmp.0), files(&[("seg", b"HEllo world")]), "the process crash keeps everything");
        let lost = lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("seg", b"hello")]));
        assert_eq!((lost.n_files_rewritten, lost.bytes_before, lost.bytes_after), (1, 11, 5), "{lost:?}");
        assert!(lose_unsynced(&tmp.0).expect("again").is_empty(), "a second loss finds nothing unsynced");
    }

    #[test]
    fn truncation_and_growth_since_the_last_sync_are_undone() {
        let tmp = TempDir::new("len");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let file = dir.create("seg").expect("create");
        file.write_all_at(b"0123456789", 0).expect("write");
        file.sync_data().expect("sync");
        dir.sync_dir().expect("sync dir");
        file.set_len(4).expect("cut");
        file.set_len(12).expect("grow");
        drop((file, dir));
        assert_eq!(contents(&tmp.0), files(&[("seg", b"0123\0\0\0\0\0\0\0\0")]));
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("seg", b"0123456789")]));
        // And a synced cut then growth is kept, zeros included.
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let file = dir.open("seg").expect("open seg");
        file.set_len(3).expect("cut");
        file.set_len(5).expect("grow");
        file.sync_data().expect("sync");
        file.write_all_at(b"x", 9).expect("unsynced write");
        drop((file, dir));
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("seg", b"012\0\0")]));
    }

    #[test]
    fn a_file_created_after_the_last_dir_sync_is_removed_even_if_its_data_was_synced() {
        let tmp = TempDir::new("create");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let kept = dir.create("kept").expect("create");
        dir.sync_dir().expect("sync dir");
        let new = dir.create("new").expect("create");
        new.write_all_at(b"data", 0).expect("write");
        new.sync_data().expect("sync");
        kept.write_all_at(b"unsynced", 0).expect("write");
        drop((kept, new, dir));
        let lost = lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("kept", b"")]));
        assert_eq!((lost.n_files_removed, lost.n_files_rewritten), (1, 1), "{lost:?}");
    }

    #[test]
    fn a_rename_not_dir_synced_is_undone_and_a_dir_synced_one_is_kept() {
        // The meta file's protocol: write a temp file, sync it, rename it
        // over, sync the directory.
        let tmp = TempDir::new("rename");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let store = |bytes: &[u8], sync_dir: bool| {
            let file = dir.create("meta.tmp").expect("create");
            file.write_all_at(bytes, 0).expect("write");
            file.sync_data().expect("sync");
            dir.rename("meta.tmp", "meta").expect("rename");
            if sync_dir {
                dir.sync_dir().expect("sync dir");
            }
        };
        store(b"old", true);
        store(b"new", false);
        assert_eq!(contents(&tmp.0), files(&[("meta", b"new")]));
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("meta", b"old")]), "the old inode comes back under the name");
        let dir = FsDir::open_journaled(&tmp.0).expect("reopen");
        let file = dir.create("meta.tmp").expect("create");
        file.write_all_at(b"newer", 0).expect("write");
        file.sync_data().expect("sync");
        dir.rename("meta.tmp", "meta").expect("rename");
        dir.sync_dir().expect("sync dir");
        drop((file, dir));
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("meta", b"newer")]));
    }

    #[test]
    fn a_removal_not_dir_synced_is_undone_with_the_content_last_synced() {
        let tmp = TempDir::new("remove");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let file = dir.create("seg").expect("create");
        file.write_all_at(b"synced", 0).expect("write");
        file.sync_data().expect("sync");
        dir.sync_dir().expect("sync dir");
        file.write_all_at(b"+unsynced", 6).expect("write");
        dir.remove("seg").expect("remove");
        // Writes through a handle of the unlinked inode still count while a
        // durable name refers to it.
        file.write_all_at(b"!", 0).expect("write");
        file.sync_data().expect("sync");
        drop((file, dir));
        assert_eq!(contents(&tmp.0), files(&[]));
        let lost = lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("seg", b"!ynced+unsynced")]));
        assert_eq!(lost.n_names_restored, 1, "{lost:?}");
        // Once the removal is dir-synced it stays.
        let dir = FsDir::open_journaled(&tmp.0).expect("reopen");
        dir.remove("seg").expect("remove");
        dir.sync_dir().expect("sync dir");
        drop(dir);
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[]));
    }

    #[test]
    fn a_restarted_process_inherits_what_the_killed_one_left_unsynced() {
        let tmp = TempDir::new("restart");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        let file = dir.create("seg").expect("create");
        file.write_all_at(b"abc", 0).expect("write");
        file.sync_data().expect("sync");
        dir.sync_dir().expect("sync dir");
        file.write_all_at(b"def", 3).expect("unsynced write");
        drop((file, dir)); // SIGKILL: the page cache keeps "abcdef"
        let dir = FsDir::open_journaled(&tmp.0).expect("restart");
        let file = dir.open("seg").expect("open");
        let mut buf = [0u8; 6];
        file.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"abcdef");
        drop((file, dir)); // killed again before syncing
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("seg", b"abc")]), "the new process never synced the tail");
        // The same, but the new process syncs what it found.
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        dir.open("seg").expect("open").write_all_at(b"ghi", 3).expect("write");
        let dir = {
            drop(dir);
            FsDir::open_journaled(&tmp.0).expect("restart")
        };
        dir.open("seg").expect("open").sync_data().expect("sync");
        drop(dir);
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("seg", b"abcghi")]));
    }

    #[test]
    fn files_written_outside_the_seam_are_left_alone_and_adopted_when_touched() {
        let tmp = TempDir::new("foreign");
        std::fs::write(tmp.0.join("old"), b"before the journal").expect("write");
        let dir = FsDir::open_journaled(&tmp.0).expect("open");
        std::fs::write(tmp.0.join("snapshot"), b"raft's own").expect("write");
        dir.remove("old").expect("remove");
        assert_eq!(dir.list().expect("list"), vec!["snapshot".to_string()], "the journal's folder is not listed");
        drop(dir);
        lose_unsynced(&tmp.0).expect("lose");
        assert_eq!(contents(&tmp.0), files(&[("old", b"before the journal"), ("snapshot", b"raft's own")]));
    }

    #[test]
    fn a_directory_operation_cut_short_by_a_kill_is_settled_from_the_directory() {
        // The state names each operation before it is carried out; here the
        // directory is put back by hand as if the process had died between.
        let tmp = TempDir::new("pending");
        let path = tmp.0.join("d");
        let dir = FsDir::open_journaled(&path).expect("open");
        let file = dir.create("seg").expect("create");
        file.write_all_at(b"abc", 0).expect("write");
        file.sync_data().expect("sync");
        dir.sync_dir().expect("sync dir");
        file.write_all_at(b"def", 3).expect("unsynced write");
        std::fs::hard_link(path.join("seg"), tmp.0.join("kept")).expect("link");
        dir.remove("seg").expect("remove");
        drop((file, dir));
        std::fs::rename(tmp.0.join("kept"), path.join("seg")).expect("undo the removal by hand");
        // The removal did not happen: "seg" is still the journal's, with
        // unsynced bytes (not a file of unknown origin to adopt as durable).
        let dir = FsDir::open_journaled(&path).expect("restart");
        dir.open("seg").expect("still there");
        drop(dir);
        lose_unsynced(&path).expect("lose");
        assert_eq!(contents(&path), files(&[("seg", b"abc")]));

        let dir = FsDir::open_journaled(&path).expect("open");
        dir.open("seg").expect("open").write_all_at(b"XYZ", 3).expect("unsynced write");
        dir.rename("seg", "seg.new").expect("rename");
        drop(dir);
        std::fs::rename(path.join("seg.new"), path.join("seg")).expect("undo the rename by hand");
        let dir = FsDir::open_journaled(&path).expect("restart");
        assert!(dir.open("seg.new").is_err());
        dir.open("seg").expect("still there");
        drop(dir);
        lose_unsynced(&path).expect("lose");
        assert_eq!(contents(&path), files(&[("seg", b"abc")]));
    }

    #[test]
    fn fs_dirs_opened_under_a_journaled_root_are_journaled_and_others_not() {
        let tmp = TempDir::new("roots");
        let (inside, outside) = (tmp.0.join("data").join("group-1"), tmp.0.join("elsewhere"));
        assert!(!FsDir::open(&inside).expect("open").is_journaled(), "nothing is journaled before journal_under");
        journal_under(&tmp.0.join("data")).expect("journal_under");
        let dir = FsDir::open(&inside).expect("open");
        assert!(dir.is_journaled() && inside.join(JOURNAL_DIR_NAME).is_dir());
        assert!(!FsDir::open(&outside).expect("open").is_journaled());
        // A second FsDir on the directory works with the first one's files.
        let file = dir.create("seg").expect("create");
        file.write_all_at(b"x", 0).expect("write");
        FsDir::open(&inside).expect("again").open("seg").expect("open").sync_data().expect("sync");
        dir.sync_dir().expect("sync dir");
        drop((file, dir));
        lose_unsynced(&inside).expect("lose");
        assert_eq!(contents(&inside), files(&[("seg", b"x")]));
    }

    #[test]
    fn a_directory_without_a_journal_is_refused() {
        let tmp = TempDir::new("plain");
        std::fs::write(tmp.0.join("seg"), b"x").expect("write");
        let err = lose_unsynced(&tmp.0).expect_err("no journal");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(contents(&tmp.0), files(&[("seg", b"x")]));
    }

    #[test]
    fn state_files_round_trip() {
        let mut names = Names::fresh();
        let (a, b) = (names.allocate(), names.allocate());
        names.durable.insert("meta".into(), a);
        names.current.insert("meta".into(), b);
        for pending in [
            None,
            Some(DirOp::Create { name: "x.log".into(), id: b }),
            Some(DirOp::Remove { name: "x.log".into(), id: a }),
            Some(DirOp::Rename { from: "meta.tmp".into(), to: "meta".into(), id: b, replaced: Some(a) }),
            Some(DirOp::Rename { from: "meta.tmp".into(), to: "meta".into(), id: b, replaced: None }),
        ] {
            names.pending = pending;
            assert_eq!(Names::decode(&names.encode()), Ok(names.clone()));
        }
        assert!(Names::decode("strata-journal 1\ncurrent 1\n").is_err(), "a name is missing");
        assert!(Names::decode("something else\nnext 1\n").is_err());
        assert!(check_name("a b").is_err() && check_name("../x").is_err() && check_name("meta.tmp").is_ok());
    }

    /// Handles of one inode: on the sim disk, on the real directory.
    type Pair = (Arc<dyn File>, Arc<dyn File>);

    /// One seeded run of random operations on the sim disk and on a
    /// journaled real directory side by side; after each crash (SyncedOnly
    /// on one, [`lose_unsynced`] on the other) both must hold the same
    /// files. Returns the number of crashes compared.
    fn agree_with_the_sim_disk(seed: u64, n_rounds: usize) -> usize {
        const NAMES: [&str; 5] = ["a", "b", "c", "meta", "meta.tmp"];
        let tmp = TempDir::new("model");
        let mut rng = SplitMix(seed);
        let mut sim = SimDisk::new();
        let mut real = FsDir::open_journaled(&tmp.0).expect("open");
        // Handles by current name, and handles of unlinked inodes.
        let mut named: BTreeMap<String, Pair> = BTreeMap::new();
        let mut unlinked: Vec<Pair> = Vec::new();
        let mut n_crashes = 0;
        for round in 0..n_rounds {
            let ctx = format!("seed {seed} round {round}");
            let name = NAMES[rng.below(NAMES.len() as u64) as usize].to_string();
            let other = NAMES[rng.below(NAMES.len() as u64) as usize].to_string();
            let pick = |rng: &mut SplitMix, named: &BTreeMap<String, Pair>, unlinked: &[Pair]| {
                let all: Vec<_> = named.values().chain(unlinked.iter()).cloned().collect();
                (!all.is_empty()).then(|| all[rng.below(all.len() as u64) as usize].clone())
            };
            match rng.below(100) {
                0..=9 => {
                    let (s, r) = (sim.create(&name), real.create(&name));
                    assert_eq!(s.is_ok(), r.is_ok(), "{ctx}: create {name}");
                    if let (Ok(s), Ok(r)) = (s, r) {
                        named.insert(name, (s, r));
                    }
                }
                10..=14 => {
                    let (s, r) = (sim.open(&name), real.open(&name));
                    assert_eq!(s.is_ok(), r.is_ok(), "{ctx}: open {name}");
                    if let (Ok(s), Ok(r)) = (s, r) {
                        named.insert(name, (s, r));
                    }
                }
                15..=44 => {
                    if let Some((s, r)) = pick(&mut rng, &named, &unlinked) {
                        let len = s.len().expect("len");
                        assert_eq!(len, r.len().expect("len"), "{ctx}");
                        // Mostly appends, as the engine does; sometimes
                        // anywhere, holes included.
                        let position = if rng.below(4) == 0 { rng.below(len + 64) } else { len };
                        let bytes: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next_u64() as u8).collect();
                        s.write_all_at(&bytes, position).expect("sim write");
                        r.write_all_at(&bytes, position).expect("real write");
                    }
                }
                45..=49 => {
                    if let Some((s, r)) = pick(&mut rng, &named, &unlinked) {
                        let len = rng.below(s.len().expect("len") + 64);
                        s.set_len(len).expect("sim set_len");
                        r.set_len(len).expect("real set_len");
                    }
                }
                50..=64 => {
                    if let Some((s, r)) = pick(&mut rng, &named, &unlinked) {
                        s.sync_data().expect("sim sync");
                        r.sync_data().expect("real sync");
                    }
                }
                65..=71 => {
                    let (s, r) = (sim.remove(&name), real.remove(&name));
                    assert_eq!(s.is_ok(), r.is_ok(), "{ctx}: remove {name}");
                    if s.is_ok() {
                        unlinked.extend(named.remove(&name));
                    }
                }
                72..=79 => {
                    let (s, r) = (sim.rename(&name, &other), real.rename(&name, &other));
                    assert_eq!(s.is_ok(), r.is_ok(), "{ctx}: rename {name} {other}");
                    if s.is_ok() && name != other {
                        unlinked.extend(named.remove(&other));
                        if let Some(pair) = named.remove(&name) {
                            named.insert(other, pair);
                        }
                    }
                }
                80..=89 => {
                    sim.sync_dir().expect("sim sync dir");
                    real.sync_dir().expect("real sync dir");
                }
                90..=94 => {
                    // A process crash: the page cache (and the sim's
                    // current state) survives; only handles go.
                    named.clear();
                    unlinked.clear();
                    drop(real);
                    real = FsDir::open_journaled(&tmp.0).expect("restart");
                }
                _ => {
                    named.clear();
                    unlinked.clear();
                    drop(real);
                    sim = sim.crash(CrashMode::SyncedOnly);
                    lose_unsynced(&tmp.0).expect("lose");
                    assert_eq!(contents(&tmp.0), sim_contents(&sim), "{ctx}: after the crash");
                    real = FsDir::open_journaled(&tmp.0).expect("reopen");
                    n_crashes += 1;
                }
            }
            assert_eq!(contents(&tmp.0), sim_contents(&sim), "{ctx}: the current state");
        }
        n_crashes
    }

    #[test]
    fn lose_unsynced_agrees_with_the_sim_disks_synced_only_crash_on_random_operations() {
        let seed = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        println!("STRATA_SEED={seed}");
        let mut rng = SplitMix(seed);
        let n_crashes: usize = (0..20).map(|_| agree_with_the_sim_disk(rng.next_u64(), 400)).sum();
        assert!(n_crashes >= 100, "only {n_crashes} crashes were compared");
    }
}
