//! A clock for the producer's lingers, finer than tokio's.
//!
//! tokio's timers round a deadline up to the next millisecond, so a 1 ms
//! linger lasted between 1 and 2 ms, and every record of a batch waited for
//! the rounding. The clock is one thread per producer (started when a batch
//! first lingers) that sleeps with the kernel's fine timeout until the
//! earliest deadline and rings the alarm set for it. The partition tasks
//! keep their tokio timer as well, so a late clock costs at most the
//! rounding it was meant to save.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Mutex, Weak};
use std::time::Instant;

/// What the clock wakes at a deadline.
pub(crate) trait Alarm: Send + Sync {
    fn ring(&self);
}

/// Rings alarms at their deadlines, from a thread of its own.
#[derive(Default)]
pub(crate) struct LingerClock {
    /// To the clock's thread; `None` until the first alarm is set. The
    /// thread ends once this is dropped (with the producer).
    tx: Mutex<Option<Sender<Entry>>>,
}

impl LingerClock {
    /// Rings `alarm` at `at`, unless it is gone by then.
    pub(crate) fn set(&self, at: Instant, alarm: Weak<dyn Alarm>) {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.is_none() {
            let (sender, receiver) = channel();
            let spawned = std::thread::Builder::new().name("strata-linger".into()).spawn(move || run(receiver));
            if spawned.is_err() {
                // No clock: the partition tasks' own timers still fire.
                return;
            }
            *tx = Some(sender);
        }
        if let Some(sender) = tx.as_ref() {
            let _ = sender.send(Entry { at, alarm });
        }
    }
}

struct Entry {
    at: Instant,
    alarm: Weak<dyn Alarm>,
}

// The heap orders by deadline only, the earliest first.
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

fn run(rx: Receiver<Entry>) {
    let mut due: BinaryHeap<Entry> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while due.peek().is_some_and(|entry| entry.at <= now) {
            if let Some(alarm) = due.pop().and_then(|entry| entry.alarm.upgrade()) {
                alarm.ring();
            }
        }
        let next = match due.peek() {
            Some(entry) => rx.recv_timeout(entry.at.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(entry) => due.push(entry),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
    use std::time::Duration;

    use super::*;

    struct Count(AtomicU32, Mutex<Option<Instant>>);

    impl Alarm for Count {
        fn ring(&self) {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
            *self.1.lock().expect("lock") = Some(Instant::now());
        }
    }

    #[test]
    fn alarms_ring_once_at_or_after_their_deadline_in_deadline_order_and_dropped_ones_not_at_all() {
        let clock = LingerClock::default();
        let start = Instant::now();
        let late = Arc::new(Count(AtomicU32::new(0), Mutex::new(None)));
        let early = Arc::new(Count(AtomicU32::new(0), Mutex::new(None)));
        let dropped = Arc::new(Count(AtomicU32::new(0), Mutex::new(None)));
        let weak = |a: &Arc<Count>| Arc::downgrade(a) as Weak<dyn Alarm>;
        clock.set(start + Duration::from_millis(60), weak(&late));
        clock.set(start + Duration::from_millis(20), weak(&early));
        clock.set(start + Duration::from_millis(30), weak(&dropped));
        drop(dropped);
        let deadline = Instant::now() + Duration::from_secs(10);
        while late.0.load(AtomicOrdering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the clock never rang");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(early.0.load(AtomicOrdering::SeqCst), 1);
        assert_eq!(late.0.load(AtomicOrdering::SeqCst), 1);
        let rang_at = |a: &Count| a.1.lock().expect("lock").expect("rang");
        let (early_at, late_at) = (rang_at(&early), rang_at(&late));
        assert!(early_at >= start + Duration::from_millis(20), "rang before its deadline");
        assert!(late_at >= start + Duration::from_millis(60), "rang before its deadline");
        assert!(early_at < late_at, "out of deadline order");
    }
}
