//! Group commit: a few flusher threads per disk make appends durable for
//! many logs, with one `fdatasync` per dirty file covering every append that
//! arrived while the previous sync ran.
//!
//! Protocol, per log:
//! 1. `append` writes with `pwrite` and records the file as dirty and the
//!    appended index.
//! 2. `Log::flush(callback)` queues the callback with the appended index and
//!    wakes the flusher (once per log until served).
//! 3. The flusher takes the log's dirty files, directory flag and appended
//!    index *as of now*, syncs the directory if a segment was created, then
//!    each file, and only then raises the durable index and runs, in order,
//!    the callbacks at or below it.
//!
//! Crash after step 1 or 2: the data may be lost, but nothing reported it
//! durable. Crash during 3: same. A failed sync poisons the log: its waiters
//! get the error and later appends are refused, since after a failed
//! `fdatasync` the kernel may have dropped the dirty pages.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::FlushPolicy;
use crate::error::{LogError, Result};
use crate::io::{Dir, File};
use crate::limits::{FLUSH_THREADS, FLUSH_WAITERS_MAX};
use crate::types::RaftIndex;

/// Called once the appends it was queued after are durable (or failed).
pub type FlushCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// The durability state of one log, shared by the log and the flusher.
pub(crate) struct Durability {
    pub dir: Arc<dyn Dir>,
    /// The flush policy in force, changeable at runtime: 0 for
    /// [`FlushPolicy::Always`], else the interval in ms.
    policy_ms: std::sync::atomic::AtomicU64,
    state: Mutex<DurState>,
    /// Held for a whole sync, so that two syncers (the flusher thread and a
    /// caller of `Log::sync`) cannot interleave: otherwise the second could
    /// find the dirty list already taken and report durable what the first
    /// is still syncing.
    sync_lock: Mutex<()>,
}

#[derive(Default)]
pub(crate) struct DurState {
    /// Last index written (None: empty log).
    pub appended: Option<RaftIndex>,
    /// Last index known durable.
    pub durable: Option<RaftIndex>,
    pub dirty_files: Vec<Arc<dyn File>>,
    pub dir_dirty: bool,
    waiters: VecDeque<(Option<RaftIndex>, FlushCallback)>,
    queued: bool,
    /// Bumped by truncation, so a sync that started before it does not
    /// report indexes that no longer exist.
    pub generation: u64,
    pub poisoned: Option<String>,
    /// Callbacks released and not yet run, with the error they get, if any.
    ready: VecDeque<(FlushCallback, Option<String>)>,
    /// True while a thread is running callbacks from `ready`.
    delivering: bool,
    /// True while a flusher thread syncs this log ([`Durability::sync_from_flusher`]).
    flusher_syncing: bool,
    /// Set by a flusher thread that found another syncing this log: that
    /// one syncs again before it lets go.
    sync_again: bool,
}

impl Durability {
    pub fn new(dir: Arc<dyn Dir>, policy: FlushPolicy, appended: Option<RaftIndex>) -> Durability {
        let state = Mutex::new(DurState { appended, durable: appended, ..DurState::default() });
        let durability = Durability { dir, policy_ms: Default::default(), state, sync_lock: Mutex::new(()) };
        durability.set_policy(policy);
        durability
    }

    /// The flush policy in force.
    pub fn policy(&self) -> FlushPolicy {
        match self.policy_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => FlushPolicy::Always,
            ms => FlushPolicy::Interval(std::time::Duration::from_millis(ms)),
        }
    }

    /// Changes the flush policy. Appends already waiting for a sync are
    /// released by the next one, whichever policy runs it.
    pub fn set_policy(&self, policy: FlushPolicy) {
        let ms = match policy {
            FlushPolicy::Always => 0,
            FlushPolicy::Interval(every) => every.as_millis().max(1) as u64,
        };
        self.policy_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn lock(&self) -> MutexGuard<'_, DurState> {
        // A panic while holding this lock leaves plain data behind; carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an append: the file is dirty and `index` is written.
    pub fn note_append(&self, file: &Arc<dyn File>, index: RaftIndex) {
        let mut s = self.lock();
        s.appended = Some(index);
        if !s.dirty_files.last().is_some_and(|f| Arc::ptr_eq(f, file)) {
            s.dirty_files.push(file.clone());
        }
    }

    /// Queues a callback; returns true if the log must be handed to the
    /// flusher (it was not queued yet).
    fn enqueue(&self, callback: FlushCallback) -> std::result::Result<bool, (FlushCallback, LogError)> {
        let mut s = self.lock();
        if let Some(reason) = &s.poisoned {
            let err = LogError::Poisoned(reason.clone());
            return Err((callback, err));
        }
        if s.waiters.len() >= FLUSH_WAITERS_MAX {
            return Err((callback, LogError::InvalidArgument("too many flushes in flight".into())));
        }
        let at = s.appended;
        s.waiters.push_back((at, callback));
        let wake = !s.queued;
        s.queued = true;
        Ok(wake)
    }

    /// Syncs everything written so far and reports it durable. Used by the
    /// flusher thread and by `Log::sync`.
    pub fn sync_now(&self) -> Result<()> {
        let (result, files) = self.sync_files_and_release();
        self.deliver();
        // With the waiters answered, the files may prepare space ahead of
        // their data (zeroes a direct file was asked for): the next group
        // commit finds it ready instead of waiting for it, and makes the new
        // blocks and length durable with its data. Session 17 synced them
        // here, on their own, to keep that metadata out of the commit
        // appends wait for; it doubled the device's flushes at full speed and
        // cost about 4% of RF=3 throughput, for no change in the p99 at 50k
        // records/s (docs/benchmarks.md, session 18).
        for file in files {
            if let Err(err) = file.write_ahead() {
                tracing::warn!(%err, "could not write ahead of a segment's data; appends will grow the file");
            }
        }
        result
    }

    /// A flusher thread's sync: [`Durability::sync_now`], except that a
    /// thread finding another flusher thread syncing this log leaves a note
    /// and returns at once instead of waiting on the sync lock; the syncing
    /// thread then syncs again before it lets go. Appends arriving during a
    /// sync queue the log again, so without this a busy log could hold
    /// several flusher threads (one syncing, the others waiting for it)
    /// while other logs' waiters waited for a free thread.
    fn sync_from_flusher(&self) -> Result<()> {
        {
            let mut s = self.lock();
            if s.flusher_syncing {
                s.sync_again = true;
                return Ok(());
            }
            s.flusher_syncing = true;
        }
        loop {
            let result = self.sync_now();
            let mut s = self.lock();
            if result.is_ok() && std::mem::take(&mut s.sync_again) {
                continue;
            }
            s.flusher_syncing = false;
            s.sync_again = false;
            return result;
        }
    }

    /// Syncs and releases the waiters it covers, but leaves running their
    /// callbacks to [`Durability::deliver`]: for callers that hold the log's
    /// lock, where a callback calling into the log would deadlock.
    pub fn sync_and_release(&self) -> Result<()> {
        self.sync_files_and_release().0
    }

    /// [`Durability::sync_and_release`], also returning the files it synced.
    fn sync_files_and_release(&self) -> (Result<()>, Vec<Arc<dyn File>>) {
        let _one_syncer = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (target, files, dir_dirty, generation) = {
            let mut s = self.lock();
            if let Some(reason) = &s.poisoned {
                return (Err(LogError::Poisoned(reason.clone())), Vec::new());
            }
            s.queued = false;
            (s.appended, std::mem::take(&mut s.dirty_files), std::mem::take(&mut s.dir_dirty), s.generation)
        };
        let started = std::time::Instant::now();
        let result: Result<()> = (|| {
            if dir_dirty {
                self.dir.sync_dir().map_err(LogError::io(|| "sync partition directory"))?;
            }
            for file in &files {
                file.sync_data().map_err(LogError::io(|| "sync segment"))?;
            }
            Ok(())
        })();
        let mut s = self.lock();
        if let Err(err) = &result {
            let reason = err.to_string();
            s.poisoned = Some(reason.clone());
            let failed: Vec<_> = s.waiters.drain(..).map(|(_, cb)| (cb, Some(reason.clone()))).collect();
            s.ready.extend(failed);
            return (result, Vec::new());
        }
        if s.generation == generation && target > s.durable {
            s.durable = target;
        }
        let durable = s.durable;
        let mut released = 0;
        while s.waiters.front().is_some_and(|(at, _)| *at <= durable) {
            if let Some((_, cb)) = s.waiters.pop_front() {
                s.ready.push_back((cb, None));
                released += 1;
            }
        }
        if !files.is_empty() || dir_dirty {
            crate::stats::record_sync(started.elapsed(), released);
        }
        (Ok(()), files)
    }

    /// Runs released callbacks in release order, without holding any lock,
    /// so a callback may call back into the log. One thread delivers at a
    /// time; others leave their callbacks to it, which keeps the order.
    pub fn deliver(&self) {
        {
            let mut s = self.lock();
            if s.delivering {
                return;
            }
            s.delivering = true;
        }
        loop {
            let next = {
                let mut s = self.lock();
                match s.ready.pop_front() {
                    Some(item) => item,
                    None => {
                        s.delivering = false;
                        return;
                    }
                }
            };
            match next {
                (callback, None) => callback(Ok(())),
                (callback, Some(reason)) => callback(Err(LogError::Poisoned(reason))),
            }
        }
    }

    /// Records a truncation that left everything kept durable: all waiters
    /// are released (run them with [`Durability::deliver`] once the log's
    /// lock is dropped). Call with the log's write lock held, so no append
    /// can slip in between the truncation and this.
    pub fn note_truncated(&self, last: Option<RaftIndex>) {
        let mut s = self.lock();
        s.appended = last;
        s.durable = last;
        s.generation += 1;
        s.dirty_files.clear();
        s.dir_dirty = false;
        let done: Vec<_> = s.waiters.drain(..).map(|(_, cb)| (cb, None)).collect();
        s.ready.extend(done);
    }

    /// Poisons the log: later syncs and appends are refused, and every
    /// queued waiter is released with the error (run by `deliver`).
    pub fn poison(&self, reason: String) {
        let mut s = self.lock();
        if s.poisoned.is_none() {
            s.poisoned = Some(reason);
        }
        let reason = s.poisoned.clone();
        let failed: Vec<_> = s.waiters.drain(..).map(|(_, cb)| (cb, reason.clone())).collect();
        s.ready.extend(failed);
    }
}

/// The group-commit threads of one disk, shared by every log on it.
///
/// A few threads, so that different logs' `fdatasync`s run at once: a disk
/// completes concurrent syncs of several files in about the time of one
/// (on the benchmark machine, 100 KB writes each followed by `fdatasync`
/// reach 390 MB/s from one file and 806 MB/s from four written at once),
/// while one thread would sync the files of a node's partitions one after
/// another. Each log is synced by one thread at a time (its sync lock), and
/// its callbacks run in order whichever thread syncs it; a thread that picks
/// a log another thread is syncing moves on to the next log, and the syncing
/// thread syncs that log once more.
///
/// Dropping the flusher stops the threads after they have served what was
/// queued; logs that outlive it then sync inline.
pub struct Flusher {
    shared: Arc<FlushQueue>,
    threads: Vec<JoinHandle<()>>,
}

/// Logs waiting for a sync, shared by the flusher's threads and the logs.
struct FlushQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Logs to sync now, in request order.
    ready: VecDeque<Arc<Durability>>,
    /// Logs under an interval policy, with when each is due.
    timed: Vec<(Instant, Arc<Durability>)>,
    /// Set by drop: serve what is queued, then exit; later requests sync inline.
    stopping: bool,
}

impl Flusher {
    /// Starts [`FLUSH_THREADS`] flusher threads named `flush-{name}`.
    pub fn spawn(name: &str) -> std::io::Result<Flusher> {
        Flusher::spawn_threads(name, FLUSH_THREADS)
    }

    /// Starts `n_threads` (at least one) flusher threads.
    pub fn spawn_threads(name: &str, n_threads: usize) -> std::io::Result<Flusher> {
        let shared = Arc::new(FlushQueue { state: Mutex::default(), wake: Condvar::new() });
        let mut flusher = Flusher { shared: shared.clone(), threads: Vec::new() };
        for _ in 0..n_threads.max(1) {
            let shared = shared.clone();
            // On error, dropping `flusher` stops the threads already started.
            let thread = std::thread::Builder::new().name(format!("flush-{name}")).spawn(move || run(&shared))?;
            flusher.threads.push(thread);
        }
        Ok(flusher)
    }

    pub(crate) fn handle(&self) -> FlusherHandle {
        FlusherHandle { queue: Some(self.shared.clone()) }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl FlushQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a log; false once the flusher is stopping (sync inline then).
    fn push(&self, durability: &Arc<Durability>) -> bool {
        let mut state = self.lock();
        if state.stopping {
            return false;
        }
        state.ready.push_back(durability.clone());
        drop(state);
        self.wake.notify_one();
        true
    }
}

/// What a log keeps to reach its flusher.
#[derive(Clone)]
pub(crate) struct FlusherHandle {
    queue: Option<Arc<FlushQueue>>,
}

impl FlusherHandle {
    /// No flusher thread: every flush syncs inline.
    pub fn inline() -> FlusherHandle {
        FlusherHandle { queue: None }
    }

    /// Queues `callback` to run once everything appended so far is durable.
    pub fn request(&self, durability: &Arc<Durability>, callback: FlushCallback) {
        match durability.policy() {
            FlushPolicy::Interval(_) => {
                // Weaker by design: reported at once, synced on the timer.
                let poisoned = durability.lock().poisoned.clone();
                if let Some(reason) = poisoned {
                    callback(Err(LogError::Poisoned(reason)));
                    return;
                }
                callback(Ok(()));
                let mut s = durability.lock();
                let wake = !s.queued;
                s.queued = true;
                drop(s);
                if wake {
                    self.send_or_sync(durability);
                }
            }
            FlushPolicy::Always => match durability.enqueue(callback) {
                Ok(true) => self.send_or_sync(durability),
                Ok(false) => {}
                Err((callback, err)) => callback(Err(err)),
            },
        }
    }

    fn send_or_sync(&self, durability: &Arc<Durability>) {
        let sent = self.queue.as_ref().is_some_and(|queue| queue.push(durability));
        if !sent {
            // No flusher thread (or it stopped): sync inline so callers are
            // never left waiting.
            if let Err(err) = durability.sync_now() {
                tracing::error!(error = %err, "inline sync failed");
            }
        }
    }
}

/// What a flusher thread does next.
enum Job {
    Sync(Arc<Durability>),
    Exit,
}

/// Takes the next job, waiting for one: a log to sync now, an interval log
/// whose time has come, or, when stopping, the interval logs still waiting
/// and then exit.
fn next_job(queue: &FlushQueue) -> Job {
    let mut state = queue.lock();
    loop {
        while let Some(d) = state.ready.pop_front() {
            match d.policy() {
                FlushPolicy::Always => return Job::Sync(d),
                FlushPolicy::Interval(every) => state.timed.push((Instant::now() + every, d)),
            }
        }
        let now = Instant::now();
        let due = state.timed.iter().position(|(at, _)| state.stopping || *at <= now);
        if let Some(i) = due {
            return Job::Sync(state.timed.swap_remove(i).1);
        }
        if state.stopping {
            return Job::Exit;
        }
        state = match state.timed.iter().map(|(at, _)| at.saturating_duration_since(now)).min() {
            None => queue.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(timeout) => queue.wake.wait_timeout(state, timeout).unwrap_or_else(|p| p.into_inner()).0,
        };
    }
}

fn run(queue: &FlushQueue) {
    loop {
        match next_job(queue) {
            Job::Sync(d) => {
                if let Err(err) = d.sync_from_flusher() {
                    tracing::error!(error = %err, "group commit failed; log poisoned");
                }
            }
            Job::Exit => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::io::sim::SimDisk;

    /// A file for the flusher's tests: its syncs wait while the gate is
    /// closed; `write_ahead` does nothing (`ahead` is `None`), writes zeroes
    /// or fails, and notes the sync count at each call.
    struct TestFile {
        gate: Mutex<bool>,
        opened: Condvar,
        syncs: AtomicUsize,
        ahead: Option<bool>,
        ahead_after_syncs: Mutex<Vec<usize>>,
    }

    impl TestFile {
        /// Syncs wait until the gate opens (at once if `open`).
        fn gated(open: bool) -> TestFile {
            TestFile {
                gate: Mutex::new(open),
                opened: Condvar::new(),
                syncs: AtomicUsize::new(0),
                ahead: None,
                ahead_after_syncs: Mutex::new(Vec::new()),
            }
        }

        /// Has zeroes to write ahead (`writes`), or fails to write them.
        fn ahead(writes: bool) -> TestFile {
            TestFile { ahead: Some(writes), ..TestFile::gated(true) }
        }

        fn open_gate(&self) {
            *self.gate.lock().expect("gate lock") = true;
            self.opened.notify_all();
        }
    }

    impl File for TestFile {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn len(&self) -> std::io::Result<u64> {
            Ok(0)
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn allocate(&self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_ahead(&self) -> std::io::Result<bool> {
            self.ahead_after_syncs.lock().expect("test lock").push(self.syncs.load(Ordering::SeqCst));
            match self.ahead {
                Some(false) => Err(std::io::Error::other("disk full")),
                writes => Ok(writes.is_some()),
            }
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate.lock().expect("gate lock");
            while !*open {
                open = self.opened.wait(open).expect("gate lock");
            }
            Ok(())
        }
        fn map(&self, _: u64) -> std::io::Result<Bytes> {
            Ok(Bytes::new())
        }
    }

    fn log_with(file: &Arc<dyn File>) -> Arc<Durability> {
        let log = Arc::new(Durability::new(Arc::new(SimDisk::new()), FlushPolicy::Always, None));
        log.note_append(file, RaftIndex(1));
        log
    }

    #[test]
    fn space_is_written_ahead_after_the_group_commit_without_a_sync_of_its_own() {
        let file = Arc::new(TestFile::ahead(true));
        let as_dyn: Arc<dyn File> = file.clone();
        let log = log_with(&as_dyn);
        log.sync_now().expect("synced");
        assert_eq!(log.lock().durable, Some(RaftIndex(1)));
        assert_eq!(*file.ahead_after_syncs.lock().expect("test lock"), [1], "zeroes after the group commit");
        assert_eq!(file.syncs.load(Ordering::SeqCst), 1, "the group commit only: the next one carries the zeroes");

        // A write ahead that fails is only logged: appends grow the file.
        let file = Arc::new(TestFile::ahead(false));
        let as_dyn: Arc<dyn File> = file.clone();
        let log = log_with(&as_dyn);
        log.sync_now().expect("the group commit itself succeeded");
        assert_eq!(file.ahead_after_syncs.lock().expect("test lock").len(), 1);
        assert!(log.lock().poisoned.is_none(), "the log goes on");
        log.note_append(&as_dyn, RaftIndex(2));
        log.sync_now().expect("later syncs too");
        assert_eq!(log.lock().durable, Some(RaftIndex(2)));
    }

    struct OpenOnDrop(Arc<TestFile>);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open_gate();
        }
    }

    #[test]
    fn a_log_whose_sync_is_slow_holds_one_flusher_thread_and_the_others_serve_other_logs() {
        let slow_file = Arc::new(TestFile::gated(false));
        let flusher = Flusher::spawn_threads("test", 2).expect("spawn");
        // Dropped first, should an assertion fail: the gate opens, so the
        // flusher's threads can finish and the test fails instead of hanging.
        let _open_on_drop = OpenOnDrop(slow_file.clone());
        let handle = flusher.handle();
        let slow_dyn: Arc<dyn File> = slow_file.clone();
        let slow = log_with(&slow_dyn);
        let (done, finished) = mpsc::channel::<&'static str>();
        let tell = |what: &'static str| {
            let done = done.clone();
            Box::new(move |result: Result<()>| {
                result.expect("synced");
                done.send(what).expect("test waits");
            }) as FlushCallback
        };
        // The slow log's first sync takes a thread and does not return.
        handle.request(&slow, tell("slow 1"));
        while slow_file.syncs.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // An append during that sync queues the slow log again: the second
        // thread picks it up, finds it syncing, and leaves it.
        slow.note_append(&slow_dyn, RaftIndex(2));
        handle.request(&slow, tell("slow 2"));
        // Another log's sync, queued behind it, is served meanwhile by the
        // second thread.
        let other_file: Arc<dyn File> = Arc::new(TestFile::gated(true));
        let other = log_with(&other_file);
        handle.request(&other, tell("other"));
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok("other"), "a free thread served the other log");
        // Once the slow sync returns, its thread syncs the log again for the
        // append that came meanwhile, and both waiters are answered in order.
        slow_file.open_gate();
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok("slow 1"));
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok("slow 2"));
        assert_eq!(slow.lock().durable, Some(RaftIndex(2)));
        assert_eq!(slow_file.syncs.load(Ordering::SeqCst), 2, "synced again for the second append");
    }
}
