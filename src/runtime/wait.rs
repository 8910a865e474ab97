//! [`Wait`]: the pacing of every blocking wait of the library (a consumer's, topic member's and
//! tail reader's poll, a producer waiting for room, a durability wait), and [`INFLIGHT_POLL`],
//! the sleep cap behind a record that finishes without a wake-up call.
//!
//! The caller checks its condition, asks [`Wait::pause`] what to do when it failed, and, told
//! to sleep, sleeps on its futex word with its sleeper bit flagged (SYNC W in `protocol/ring.rs`) for at
//! most the time given. The sleep itself stays with the caller because what it sleeps on
//! differs: the data word with a group slot's bit, the space or durability word with a producer
//! slot's bit, a topic's wake-up word, or no bit at all for a tail reader.

use std::time::Duration;

use crossbeam_utils::Backoff;

use crate::runtime::clock;

/// Longest single sleep while waiting behind a claimed record that is not committed yet (for a
/// consumer, or holding back a producer's limit or the durable cursor): its producer commits
/// without a wake-up call when nobody is flagged for it, so the waiter polls.
pub(crate) const INFLIGHT_POLL: Duration = Duration::from_millis(1);

/// The pacing of one blocking call, asked after each failed check of its condition:
///
/// 1. **A zero timeout** returns at once, without spinning or reading the clock: a caller
///    that spins itself (a busy loop over `poll(Some(ZERO))`, the C API) gets its answer at
///    once.
/// 2. **Spin, then yield** (waits made with [`spinning`](Self::spinning): readers):
///    `crossbeam_utils::Backoff::snooze`, which spins 1, 2, 4, … 64 times between checks and
///    then yields the CPU four times. A record is usually committed within a microsecond of
///    the moment a reader finds it claimed; catching it here saves the sleeper the two
///    syscalls of a sleep and a wake-up, and its producer the wake-up. The yields let a
///    producer preempted on the reader's core finish. Producers waiting for room and
///    durability waiters do not spin: room comes from a consumer's commit or a flush, rarely
///    within microseconds.
/// 3. **The deadline** is fixed when the first sleep is due (or when the wait is made, with
///    [`started`](Self::started)), on `CLOCK_MONOTONIC` ([`clock::monotonic_ns`]): a call whose
///    condition holds at once, or within the spin, reads no clock. A timeout too long to
///    represent waits for ever.
/// 4. **Sleep** for the time left, capped by the caller: some events come without a wake-up
///    call (a claimed record committed while nobody was flagged, a flush leader that died, a
///    heartbeat or rebalance due, what the file watcher found), so no single sleep outlasts
///    the earliest of them.
/// 5. **Time out** once the deadline has passed.
pub(crate) struct Wait {
    timeout: Option<Duration>,
    /// Spins and yields before the first sleep (readers only).
    spins: bool,
    /// The deadline on [`clock::monotonic_ns`] once fixed (`u64::MAX`: none); `None` before.
    deadline: Option<u64>,
    backoff: Backoff,
}

/// What a blocking call does after a failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// The timeout passed: give up.
    TimedOut,
    /// It spun or yielded: check again.
    Spun,
    /// Sleep for at most this long (the time left, capped by the caller), then check again.
    Sleep(Duration),
}

impl Wait {
    /// The pacing of a reader waiting up to `timeout` (`None`: for ever): spin, yield, sleep.
    pub(crate) fn spinning(timeout: Option<Duration>) -> Wait {
        Wait::new(timeout, true)
    }

    /// The pacing of a wait that sleeps at once (a producer waiting for room), up to
    /// `timeout` (`None`: for ever).
    pub(crate) fn sleeping(timeout: Option<Duration>) -> Wait {
        Wait::new(timeout, false)
    }

    /// As [`sleeping`](Self::sleeping), with the deadline fixed now: the timeout also covers
    /// the work of the first checks (a durability wait's first flush, a future's first poll).
    pub(crate) fn started(timeout: Option<Duration>) -> Wait {
        let mut wait = Wait::sleeping(timeout);
        wait.deadline();
        wait
    }

    fn new(timeout: Option<Duration>, spins: bool) -> Wait {
        Wait {
            timeout,
            spins,
            deadline: None,
            backoff: Backoff::new(),
        }
    }

    /// Whether a failed next check is followed by a sleep, so a reader reads the tail in it
    /// (see [`Cursor::step`](crate::queue::cursor::Cursor::step)).
    pub(crate) fn sleeping_next(&self) -> bool {
        self.timeout != Some(Duration::ZERO) && (!self.spins || self.backoff.is_completed())
    }

    /// What to do after a failed check; `cap()` is the longest the caller may sleep (asked only
    /// when a sleep is due).
    pub(crate) fn pause(&mut self, cap: impl FnOnce() -> Duration) -> Pause {
        if self.timeout == Some(Duration::ZERO) {
            return Pause::TimedOut;
        }
        if self.spins && !self.backoff.is_completed() {
            self.backoff.snooze();
            return Pause::Spun;
        }
        let deadline = self.deadline();
        if deadline == u64::MAX {
            return Pause::Sleep(cap());
        }
        match deadline.saturating_sub(clock::monotonic_ns()) {
            0 => Pause::TimedOut,
            left => Pause::Sleep(cap().min(Duration::from_nanos(left))),
        }
    }

    /// The deadline, fixed now if it is not yet.
    fn deadline(&mut self) -> u64 {
        let timeout = self.timeout;
        *self.deadline.get_or_insert_with(|| {
            timeout.map_or(u64::MAX, |t| {
                clock::monotonic_ns().saturating_add(clock::saturating_ns(t))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn a_zero_timeout_times_out_at_once() {
        for mut wait in [
            Wait::spinning(Some(Duration::ZERO)),
            Wait::sleeping(Some(Duration::ZERO)),
            Wait::started(Some(Duration::ZERO)),
        ] {
            assert!(!wait.sleeping_next());
            assert_eq!(wait.pause(|| CAP), Pause::TimedOut);
        }
    }

    #[test]
    fn a_reader_spins_and_yields_before_it_sleeps_without_reading_the_clock() {
        let mut wait = Wait::spinning(None);
        let mut spun = 0;
        while !wait.sleeping_next() {
            assert_eq!(
                wait.pause(|| panic!("no sleep while spinning")),
                Pause::Spun
            );
            spun += 1;
            assert!(spun <= 100, "the spin ends");
        }
        assert!(spun > 0, "a reader spins first");
        assert!(wait.deadline.is_none(), "no clock read while spinning");
        assert_eq!(wait.pause(|| CAP), Pause::Sleep(CAP), "no timeout: the cap");
    }

    #[test]
    fn sleeps_are_capped_by_the_caller_and_by_the_time_left() {
        let mut wait = Wait::sleeping(Some(CAP));
        assert!(wait.sleeping_next(), "no spin");
        let short = Duration::from_millis(1);
        assert_eq!(wait.pause(|| short), Pause::Sleep(short));
        match wait.pause(|| Duration::MAX) {
            Pause::Sleep(d) => assert!(d <= CAP, "{d:?}"),
            other => panic!("expected a sleep, got {other:?}"),
        }
    }

    #[test]
    fn a_wait_times_out_once_its_deadline_passed() {
        let mut wait = Wait::sleeping(Some(Duration::from_millis(20)));
        match wait.pause(|| CAP) {
            Pause::Sleep(d) => assert!(d <= Duration::from_millis(20), "{d:?}"),
            other => panic!("expected a sleep, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(wait.pause(|| CAP), Pause::TimedOut);
    }

    #[test]
    fn a_started_wait_counts_from_its_start() {
        let mut wait = Wait::started(Some(Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(wait.pause(|| CAP), Pause::TimedOut);
    }

    #[test]
    fn a_timeout_too_long_to_represent_waits_for_ever() {
        let mut wait = Wait::started(Some(Duration::MAX));
        assert_eq!(wait.pause(|| CAP), Pause::Sleep(CAP));
    }
}
