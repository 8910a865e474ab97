//! The demo's "order paid" event, the clock it is stamped with, the checksum every process
//! computes over what it saw, and pacing to a rate.

use std::time::{Duration, Instant};

/// Encoded size of an [`OrderPaid`] event.
pub const EVENT_LEN: usize = 32;

/// Order ids start here (offset 0 carries order `FIRST_ORDER`).
pub const FIRST_ORDER: u64 = 1_000_001;

/// An "order paid" event as the order service publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderPaid {
    /// The order, increasing by one per event.
    pub order_id: u64,
    /// The paying customer.
    pub user_id: u64,
    /// Amount paid, in cents.
    pub amount_cents: u64,
    /// When it was published: [`monotonic_ns`] (comparable across processes on one host).
    pub paid_at_ns: u64,
}

impl OrderPaid {
    /// The event for order `order_id`, stamped now.
    pub fn new(order_id: u64) -> Self {
        OrderPaid {
            order_id,
            user_id: order_id.wrapping_mul(2_654_435_761) % 100_000,
            amount_cents: 500 + order_id % 20_000,
            paid_at_ns: monotonic_ns(),
        }
    }

    /// The 32-byte little-endian encoding.
    pub fn encode(&self) -> [u8; EVENT_LEN] {
        let mut b = [0u8; EVENT_LEN];
        for (chunk, v) in b.chunks_exact_mut(8).zip([
            self.order_id,
            self.user_id,
            self.amount_cents,
            self.paid_at_ns,
        ]) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes an event; `None` if `bytes` is not exactly one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != EVENT_LEN {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Some(OrderPaid {
            order_id: word(0),
            user_id: word(1),
            amount_cents: word(2),
            paid_at_ns: word(3),
        })
    }
}

/// Nanoseconds on the system-wide monotonic clock (the same clock in every process).
pub fn monotonic_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// FNV-1a over every `(offset, payload)` a process saw, in order: equal hashes mean equal
/// sequences (for this demo's purposes).
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Digest {
    /// The digest of the empty sequence.
    pub fn new() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    /// Adds one record.
    pub fn add(&mut self, offset: u64, payload: &[u8]) {
        for &b in offset.to_le_bytes().iter().chain(payload) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The value so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// Keeps a loop at or under a rate by sleeping (never spinning) when it runs ahead.
pub struct Pacer {
    /// When the first event was paced.
    start: Option<Instant>,
    /// Nanoseconds per event; 0 means unthrottled.
    interval_ns: u64,
}

/// Do not sleep for less than this (sleeps are coarse; several events share one).
const MIN_SLEEP: Duration = Duration::from_millis(1);

impl Pacer {
    /// A pacer for `per_sec` events per second (0: no limit).
    pub fn new(per_sec: u64) -> Self {
        Pacer {
            start: None,
            interval_ns: if per_sec == 0 {
                0
            } else {
                1_000_000_000 / per_sec.min(1_000_000_000)
            },
        }
    }

    /// Call after event number `done` (1-based): sleeps if that is ahead of schedule. The
    /// schedule starts at the first call, so time spent waiting for work earns no credit.
    pub fn pace(&mut self, done: u64) {
        if self.interval_ns == 0 {
            return;
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = Duration::from_nanos(done.saturating_mul(self.interval_ns));
        let ahead = due.saturating_sub(start.elapsed());
        if ahead >= MIN_SLEEP {
            std::thread::sleep(ahead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let e = OrderPaid::new(FIRST_ORDER + 5);
        assert_eq!(OrderPaid::decode(&e.encode()), Some(e));
        assert_eq!(OrderPaid::decode(&[0; 31]), None);
    }

    #[test]
    fn digest_depends_on_order() {
        let (mut a, mut b) = (Digest::new(), Digest::new());
        a.add(0, b"x");
        a.add(1, b"y");
        b.add(1, b"y");
        b.add(0, b"x");
        assert_ne!(a.value(), b.value());
    }

    #[test]
    fn pacer_limits_the_rate() {
        let mut p = Pacer::new(1000);
        let start = Instant::now();
        for i in 0..=20 {
            p.pace(i);
        }
        assert!(start.elapsed() >= Duration::from_millis(19));
    }
}
