//! Fault injection on the sending side of the transport, for tests of
//! replication under bad networks: isolate peers, and drop, duplicate or
//! delay (and so reorder) messages, chosen by a seeded generator so a
//! failing run can be replayed with the same fault decisions.
//!
//! Off unless a test turns it on; the cost when off is one atomic load per
//! message.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Send it as is.
    Deliver,
    /// Do not send it; the caller sees the peer as unreachable.
    Drop,
    /// Send it twice; the second answer is discarded.
    Duplicate,
    /// Wait this long, then send it (later messages may overtake it).
    Delay(Duration),
}

/// Probabilities (in percent) of each fault for messages to reachable peers.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultRates {
    /// Percent of messages dropped.
    pub drop_pct: u64,
    /// Percent of messages sent twice.
    pub duplicate_pct: u64,
    /// Percent of messages delayed by up to `delay_max`.
    pub delay_pct: u64,
    /// Longest delay.
    pub delay_max: Duration,
}

#[derive(Default)]
struct State {
    isolated: HashSet<u64>,
    rates: FaultRates,
    rng: u64,
    n_injected: u64,
}

/// The fault switchboard of one node's outgoing messages.
#[derive(Default)]
pub struct TransportFaults {
    enabled: AtomicBool,
    state: Mutex<State>,
}

impl TransportFaults {
    /// Stops sending anything to `peer` (pair it with the peer isolating
    /// this node for a full partition).
    pub fn isolate(&self, peer: u64) {
        self.lock().isolated.insert(peer);
        self.enabled.store(true, Ordering::Release);
    }

    /// Injects random faults at `rates`, decided by a generator seeded with `seed`.
    pub fn set_rates(&self, rates: FaultRates, seed: u64) {
        let mut state = self.lock();
        state.rates = rates;
        state.rng = seed;
        self.enabled.store(true, Ordering::Release);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.isolated.clear();
        state.rates = FaultRates::default();
        self.enabled.store(false, Ordering::Release);
    }

    /// Whether messages to `peer` are all dropped (node liveness pings obey
    /// isolation too, or a quiet group would never notice it).
    pub fn is_isolated(&self, peer: u64) -> bool {
        self.enabled.load(Ordering::Acquire) && self.lock().isolated.contains(&peer)
    }

    /// Faults injected so far (drops, duplicates, delays, isolated messages).
    pub fn n_injected(&self) -> u64 {
        self.lock().n_injected
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides the fate of one message to `peer`.
    pub fn decide(&self, peer: u64) -> FaultAction {
        if !self.enabled.load(Ordering::Acquire) {
            return FaultAction::Deliver;
        }
        let mut state = self.lock();
        if state.isolated.contains(&peer) {
            state.n_injected += 1;
            return FaultAction::Drop;
        }
        let rates = state.rates;
        let roll = next(&mut state.rng) % 100;
        let action = if roll < rates.drop_pct {
            FaultAction::Drop
        } else if roll < rates.drop_pct + rates.duplicate_pct {
            FaultAction::Duplicate
        } else if roll < rates.drop_pct + rates.duplicate_pct + rates.delay_pct {
            let max_ms = rates.delay_max.as_millis().max(1) as u64;
            FaultAction::Delay(Duration::from_millis(next(&mut state.rng) % max_ms))
        } else {
            FaultAction::Deliver
        };
        if action != FaultAction::Deliver {
            state.n_injected += 1;
        }
        action
    }
}

/// SplitMix64 step.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
