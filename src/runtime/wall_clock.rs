//! The precise clock a producer stamps its records with: `CLOCK_REALTIME`, read from the
//! kernel or extrapolated from the time-stamp counter between kernel reads.
//!
//! A `clock_gettime` read orders its counter read (`lfence; rdtsc` or `rdtscp`), which costs
//! 25 ns on this project's benchmark VM: a fifth of a 64-byte ping-pong hop. A plain `rdtsc`
//! and a multiply cost less than half of that. So where the kernel itself keeps time with an
//! invariant counter ([`counter_usable`]), a [`WallClock`] reads the kernel clock now and then
//! (an *anchor*) and extrapolates from the counter in between:
//!
//! * **Calibration.** A new clock reads the kernel on every call until it has two anchors
//!   [`CALIBRATION_NS`] apart; their counter and kernel readings give the counter's rate.
//! * **Extrapolation.** For up to [`REANCHOR_NS`] of counter ticks past the last anchor, a
//!   read is `base + ticks × rate`. The first intervals are shorter: twice the interval the
//!   rate was measured over, so an early rate's error does not run for long.
//! * **Anchors.** The next read past the interval reads the kernel between two counter reads.
//!   A bracket wider than twice the narrowest seen (a read that was preempted) is not an
//!   anchor, unless no good one came for [`OVERDUE_NS`] (the kernel's reads got slower), and
//!   never one wider than a quarter of [`MAX_DRIFT_NS`]. A calibration that started from such
//!   a slow read starts again. Each anchor measures the rate anew over the interval since the
//!   last, so the clock follows NTP's frequency corrections one interval late.
//! * **Never back.** An extrapolation that ran ahead of the kernel keeps its lead at the anchor
//!   and runs slower by as much over the next interval. A read that is not an anchor returns
//!   no less than the extrapolation could have returned. While the kernel clock and the
//!   counter only move forward, one clock's readings never decrease.
//! * **Resets.** An anchor where the extrapolation was more than [`MAX_DRIFT_NS`] off (the
//!   kernel clock was stepped, the machine suspended, the VM migrated) drops the calibration,
//!   steps to the kernel's time even if that is back, checks again whether the counter may be
//!   used, and calibrates again. A rate more than [`MAX_RATE_CHANGE`] off the last one (a
//!   small clock step inside an interval, or a slew faster than ntpd's, which chrony may make)
//!   is not taken: the clock calibrates again, never below what it returned.
//!
//! Between anchors the error is the rate's error times the time since the anchor: tens of
//! nanoseconds with NTP's rate steady (`BENCHMARKS.md`, "The record clock"), and up to a
//! change of NTP's rate times [`REANCHOR_NS`] when it changes (10 ppm: 1 µs). A kernel clock
//! step is seen at the next anchor, up to [`REANCHOR_NS`] later; a step back of less than
//! [`MAX_DRIFT_NS`] is taken up as a lead. `rdtsc` may be disabled per thread
//! (`PR_SET_TSC`); the check is made by the thread that creates the process's first
//! producer.

use crate::runtime::clock::now_ns;

/// How far past an anchor the clock extrapolates at most (100 ms).
const REANCHOR_NS: u64 = 100_000_000;
/// The shortest interval a rate is measured over (10 ms).
const CALIBRATION_NS: u64 = 10_000_000;
/// With no anchor for this long (200 ms), a slow kernel read is taken as this machine's usual.
const OVERDUE_NS: u64 = 2 * REANCHOR_NS;
/// An extrapolation further than this from the kernel at an anchor resets the clock (1 ms).
const MAX_DRIFT_NS: u64 = 1_000_000;
/// A rate that differs from the last one by more than this fraction (1/2000: 500 ppm, NTP's
/// largest correction) was measured across a clock step.
const MAX_RATE_CHANGE: u64 = 2_000;
/// Brackets up to this many ticks (about 100 ns at 2.5 GHz) are always narrow enough.
const MIN_BRACKET_TICKS: u64 = 256;
/// A counter this many ticks or fewer behind the last anchor is another CPU's counter, a
/// little behind this one's (about 400 µs at 2.5 GHz): the read is not an anchor.
const SKEW_TICKS: u64 = 1 << 20;

/// What a [`WallClock`] reads: the hardware, or a test's fake.
pub(crate) trait Source {
    /// The time-stamp counter.
    fn counter(&self) -> u64;
    /// The kernel's `CLOCK_REALTIME` in ns (0: unreadable).
    fn kernel(&self) -> u64;
    /// Whether the counter may be used ([`counter_usable`]).
    fn counter_usable(&self) -> bool;
}

/// The machine's counter and clock.
pub(crate) struct Hardware;

impl Source for Hardware {
    #[inline(always)]
    fn counter(&self) -> u64 {
        tsc()
    }

    #[inline(always)]
    fn kernel(&self) -> u64 {
        now_ns()
    }

    fn counter_usable(&self) -> bool {
        counter_usable()
    }
}

/// One producer's precise clock (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct WallClock {
    /// The counter may be used; otherwise every read is a kernel read.
    tsc: bool,
    /// Counter and kernel readings of the last anchor (0, 0: none yet).
    anchor_tsc: u64,
    anchor_ns: u64,
    /// How far apart the counter reads around the last anchor's kernel read were.
    anchor_width: u64,
    /// The narrowest such bracket seen: what an unhurried kernel read takes here.
    narrowest: u64,
    /// The reading for `anchor_tsc`: `anchor_ns` plus the lead kept at the anchor.
    base_ns: u64,
    /// The counter's rate measured at the last anchor, ns per tick in 32.32 fixed point (0:
    /// not calibrated).
    rate: u64,
    /// The rate extrapolations use: `rate`, less the slew that takes up the kept lead.
    mult: u64,
    /// Ticks past `anchor_tsc` that are extrapolated (0: none, every read goes to `anchor`).
    span: u64,
    /// No reading is below this while the clock calibrates again after a soft reset.
    floor: u64,
}

impl WallClock {
    /// A clock that extrapolates from the counter where [`counter_usable`] says it may
    /// (checked once per process).
    pub(crate) fn new() -> Self {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        Self::with_counter(*USABLE.get_or_init(counter_usable))
    }

    /// A clock that uses the counter only if `tsc`.
    pub(crate) fn with_counter(tsc: bool) -> Self {
        WallClock {
            tsc,
            anchor_tsc: 0,
            anchor_ns: 0,
            anchor_width: u64::MAX,
            narrowest: u64::MAX,
            base_ns: 0,
            rate: 0,
            mult: 0,
            span: 0,
            floor: 0,
        }
    }

    /// Now, in nanoseconds since the Unix epoch (0 if the kernel clock cannot be read).
    // Always inlined: it is on every publish.
    #[inline(always)]
    pub(crate) fn now(&mut self) -> u64 {
        self.now_from(&Hardware)
    }

    /// [`now`](Self::now) on `source`.
    #[inline(always)]
    fn now_from<S: Source>(&mut self, source: &S) -> u64 {
        if self.span != 0 {
            let d = source.counter().wrapping_sub(self.anchor_tsc);
            if d < self.span {
                return self.base_ns + ticks_to_ns(d, self.mult);
            }
        }
        self.anchor(source)
    }

    /// A read past the extrapolated interval, before calibration, or without the counter: a
    /// kernel read, and an anchor if it is a good one. Out of line, although without the
    /// counter it is every read (a call more than an inline kernel read): the kernel read
    /// inline cost the counter's fast path 6 instructions of `publish` (callgrind, 330 → 336).
    #[cold]
    #[inline(never)]
    fn anchor<S: Source>(&mut self, source: &S) -> u64 {
        if !self.tsc {
            return source.kernel();
        }
        if self.rate == 0 && self.anchor_ns != 0 {
            // Calibrating: a plain kernel read until the rate can be measured.
            let ns = source.kernel();
            if ns >= self.anchor_ns && ns - self.anchor_ns < CALIBRATION_NS {
                return ns.max(self.floor);
            }
        }
        let before = source.counter();
        let ns = source.kernel();
        let after = source.counter();
        self.settle(source, before, ns, after)
    }

    /// The state machine of anchors (module docs), given a kernel reading `ns` between counter
    /// readings `before` and `after`.
    fn settle<S: Source>(&mut self, source: &S, before: u64, ns: u64, after: u64) -> u64 {
        if ns == 0 {
            return 0;
        }
        let width = after.wrapping_sub(before);
        if width >= 1 << 62 {
            // The counter went back across the read (another CPU's): not an anchor.
            return self.hold(ns, before);
        }
        let overdue = self.anchor_ns != 0 && ns.saturating_sub(self.anchor_ns) > OVERDUE_NS;
        self.narrowest = if overdue {
            width
        } else {
            self.narrowest.min(width)
        };
        // Never an anchor: a read slower than twice this machine's usual one, and, even when
        // overdue, one whose bracket spans a quarter of the drift a reset allows.
        if width > self.narrowest.saturating_mul(2).max(MIN_BRACKET_TICKS)
            || (self.rate != 0 && ticks_to_ns(width, self.rate) > MAX_DRIFT_NS / 4)
        {
            return self.hold(ns, after);
        }
        let t = before.wrapping_add(width / 2);
        let back = self.anchor_tsc.wrapping_sub(t);
        if self.anchor_ns != 0 && back != 0 && back <= SKEW_TICKS {
            return self.hold(ns, self.anchor_tsc);
        }
        if self.rate != 0 {
            // Where the extrapolation is, give or take the two brackets' uncertainty.
            let slack = ticks_to_ns(width.saturating_add(self.anchor_width) / 2, self.rate);
            if self.extrapolated(t).abs_diff(ns) > MAX_DRIFT_NS + slack {
                // Hard reset: back on the kernel's time, whichever way, and calibrate again
                // if the counter may still be used.
                self.tsc = source.counter_usable();
                self.start(t, ns, width, 0);
                return ns;
            }
        }
        let ticks = t.wrapping_sub(self.anchor_tsc);
        let elapsed = ns.wrapping_sub(self.anchor_ns);
        let measurable = self.anchor_ns != 0 && ns >= self.anchor_ns && ticks < 1 << 62;
        if measurable && elapsed < CALIBRATION_NS {
            // Too short to measure a rate over: a counter that ran ahead of the kernel (`anchor`
            // brackets a calibrating clock's read only once the kernel is past the window).
            return self.hold(ns, t);
        }
        let held = self.hold(ns, t);
        if self.rate == 0
            && self.anchor_width > self.narrowest.saturating_mul(2).max(MIN_BRACKET_TICKS)
        {
            // Calibration started from a slow read (the first read of a process may take a
            // page fault, or be preempted): the rate would be off by as much. Start again
            // from this one.
            self.start(t, ns, width, held);
            return held;
        }
        let measured = if measurable && ticks > 0 {
            (((elapsed as u128) << 32) / ticks as u128).min(u64::MAX as u128) as u64
        } else {
            0
        };
        // Between 0.05 and 10 ns per tick: a counter of 100 MHz to 20 GHz.
        let plausible = ((1 << 32) / 20..=10 << 32).contains(&measured);
        if !plausible
            || (self.rate != 0 && measured.abs_diff(self.rate) > self.rate / MAX_RATE_CHANGE)
        {
            // Soft reset: calibrate again from here, never below what was returned.
            self.start(t, ns, width, held);
            return held;
        }
        // The interval: at most twice the one just measured over, at most `REANCHOR_NS`.
        let span = (((REANCHOR_NS as u128) << 32) / measured as u128).min(2 * ticks as u128);
        // The lead kept at this anchor is taken up over the next interval (at most
        // `MAX_DRIFT_NS` over twice `CALIBRATION_NS`: 5 %).
        let lead = held - ns;
        let slew = ((lead as u128) << 32) / span.max(1);
        (self.anchor_tsc, self.anchor_ns, self.anchor_width) = (t, ns, width);
        self.base_ns = held;
        self.rate = measured;
        self.mult = (measured as u128).saturating_sub(slew).max(1) as u64;
        self.span = span as u64;
        held
    }

    /// Starts calibrating from an anchor at `(t, ns)`, returning no less than `floor` until
    /// calibrated.
    fn start(&mut self, t: u64, ns: u64, width: u64, floor: u64) {
        (self.anchor_tsc, self.anchor_ns, self.anchor_width) = (t, ns, width);
        self.base_ns = ns;
        (self.rate, self.mult, self.span, self.floor) = (0, 0, 0, floor);
    }

    /// The reading at counter `t` for a kernel read `ns` that is not an anchor: the kernel's,
    /// but no less than the extrapolation could have returned by `t` (a counter behind the
    /// anchor: the anchor's reading), nor the floor while calibrating.
    fn hold(&self, ns: u64, t: u64) -> u64 {
        let d = t.wrapping_sub(self.anchor_tsc);
        let returned = if self.rate == 0 {
            self.floor
        } else if d >= 1 << 62 {
            self.base_ns
        } else {
            self.base_ns + ticks_to_ns(d.min(self.span), self.mult)
        };
        ns.max(returned)
    }

    /// The extrapolation at counter `t` (for the drift check): on the slewed rate up to the
    /// end of the interval, on the measured rate past it.
    fn extrapolated(&self, t: u64) -> u64 {
        let d = t.wrapping_sub(self.anchor_tsc);
        if d >= 1 << 62 {
            return self.base_ns;
        }
        let within = d.min(self.span);
        self.base_ns
            .saturating_add(ticks_to_ns(within, self.mult))
            .saturating_add(ticks_to_ns(d - within, self.rate))
    }
}

/// `ticks` of the counter in nanoseconds at `mult` (32.32 fixed point).
#[inline(always)]
fn ticks_to_ns(ticks: u64, mult: u64) -> u64 {
    ((ticks as u128 * mult as u128) >> 32) as u64
}

/// The time-stamp counter, unordered (`rdtsc`): it may be read a little before the
/// instructions ahead of it finish, which only makes a timestamp earlier by that much.
#[inline(always)]
fn tsc() -> u64 {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // The library builds with Rust 1.89, where `_rdtsc` is unsafe to call; newer toolchains
    // call it safely and see an unused block.
    #[allow(unused_unsafe)]
    // SAFETY: `rdtsc` reads a counter and touches no memory; every x86-64 CPU has it, and
    // `counter_usable` checked that this process may execute it.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    0
}

/// Whether records may be stamped from the time-stamp counter: the CPU says it runs at a
/// constant rate in every power state (CPUID `0x8000_0007`, EDX bit 8, "invariant TSC"), the
/// kernel keeps its own time with it (the current clocksource is `tsc`, so the kernel checked
/// that the CPUs' counters agree), and this process may read it (`PR_GET_TSC`: not set to
/// fault).
pub(crate) fn counter_usable() -> bool {
    invariant_tsc()
        && tsc_allowed()
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

/// CPUID's invariant-TSC bit.
fn invariant_tsc() -> bool {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    #[allow(unused_unsafe)]
    // SAFETY: `cpuid` exists on every x86-64 CPU; leaf 0x8000_0007 is read only if the
    // highest extended leaf (leaf 0x8000_0000's EAX) reaches it.
    unsafe {
        use core::arch::x86_64::__cpuid;
        if __cpuid(0x8000_0000).eax < 0x8000_0007 {
            return false;
        }
        __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    false
}

/// Whether `rdtsc` is allowed in this process (`prctl(PR_GET_TSC)`: not `PR_TSC_SIGSEGV`).
fn tsc_allowed() -> bool {
    let mut mode: libc::c_int = 0;
    // SAFETY: PR_GET_TSC writes one int through the pointer, which points at `mode`.
    let r = unsafe { libc::prctl(libc::PR_GET_TSC, &mut mode as *mut libc::c_int) };
    r == 0 && mode == libc::PR_TSC_ENABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// Reads `clock` for `run`, each read between two kernel reads, pausing now and then;
    /// returns how far its reads fell behind the kernel read before them and ran ahead of
    /// the one after them (ns), asserting they never decrease.
    fn drift(clock: &mut WallClock, run: Duration) -> (u64, u64) {
        let (mut behind, mut ahead, mut last) = (0, 0, 0);
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < run {
            let before = now_ns();
            let v = clock.now();
            let after = now_ns();
            assert!(v >= last, "went back from {last} to {v}");
            last = v;
            behind = behind.max(before.saturating_sub(v));
            ahead = ahead.max(v.saturating_sub(after));
            i += 1;
            if i.is_multiple_of(4096) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        (behind, ahead)
    }

    #[test]
    fn without_the_counter_every_read_is_the_kernels() {
        let mut clock = WallClock::with_counter(false);
        assert_eq!(drift(&mut clock, Duration::from_millis(50)), (0, 0));
        assert_eq!(clock.span, 0);
    }

    /// On this machine's counter, past calibration and a few anchors, the clock stays within
    /// 50 µs of the kernel clock (typically within 100 ns; a wrong rate would be off by
    /// milliseconds). Where the kernel does not keep time with the counter, the clock a
    /// producer gets must not use it: every read is then the kernel's.
    #[test]
    fn the_extrapolation_follows_the_kernel_clock() {
        let mut clock = WallClock::new();
        if !clock.tsc {
            eprintln!(
                "the time-stamp counter is not used on this machine (clocksource not tsc, or no \
                 invariant counter): checking that every read is the kernel's instead"
            );
            assert_eq!(drift(&mut clock, Duration::from_millis(50)), (0, 0));
            return;
        }
        let (behind, ahead) = drift(&mut clock, Duration::from_millis(400));
        assert!(
            clock.rate != 0 && clock.span != 0,
            "never calibrated: {clock:?}"
        );
        assert!(
            behind < 50_000 && ahead < 50_000,
            "behind {behind} ns, ahead {ahead} ns"
        );
    }

    /// A simulated machine: a counter (2.5 GHz unless changed), a kernel clock that may be
    /// stepped, and counter reads that take `read_ns` each (a bracket is two reads).
    struct Fake {
        /// Simulated time, ns.
        now: Cell<u64>,
        /// The counter in millionths of a tick, at `tsc_at`.
        tsc: Cell<u128>,
        tsc_at: Cell<u64>,
        ticks_per_ms: Cell<u64>,
        /// The kernel clock's offset from simulated time, ns.
        kernel_offset: Cell<i64>,
        read_ns: Cell<u64>,
        /// Time lost right after the next kernel read (a preempted read), ns.
        stall_once: Cell<u64>,
        usable: Cell<bool>,
    }

    const EPOCH: u64 = 1_800_000_000_000_000_000;

    impl Fake {
        fn new() -> Fake {
            Fake {
                now: Cell::new(EPOCH),
                tsc: Cell::new(1 << 80),
                tsc_at: Cell::new(EPOCH),
                ticks_per_ms: Cell::new(2_500_000),
                kernel_offset: Cell::new(0),
                read_ns: Cell::new(16),
                stall_once: Cell::new(0),
                usable: Cell::new(true),
            }
        }

        fn advance(&self, ns: u64) {
            self.now.set(self.now.get() + ns);
        }

        /// Brings the counter up to now (before its rate changes).
        fn sync(&self) {
            let elapsed = (self.now.get() - self.tsc_at.get()) as u128;
            self.tsc
                .set(self.tsc.get() + elapsed * self.ticks_per_ms.get() as u128);
            self.tsc_at.set(self.now.get());
        }

        /// Moves the counter back by `ticks`.
        fn counter_back(&self, ticks: u64) {
            self.sync();
            self.tsc.set(self.tsc.get() - ticks as u128 * 1_000_000);
        }

        fn truth(&self) -> u64 {
            self.now.get().wrapping_add_signed(self.kernel_offset.get())
        }
    }

    impl Source for Fake {
        fn counter(&self) -> u64 {
            self.sync();
            let v = (self.tsc.get() / 1_000_000) as u64;
            self.advance(self.read_ns.get());
            v
        }

        fn kernel(&self) -> u64 {
            let ns = self.truth();
            self.advance(self.stall_once.replace(0));
            ns
        }

        fn counter_usable(&self) -> bool {
            self.usable.get()
        }
    }

    /// Reads `clock` every `every` ns of simulated time for `run` ns; returns the largest
    /// error against the kernel clock (ns, either way), asserting readings never decrease
    /// (if `monotonic`).
    fn run(clock: &mut WallClock, fake: &Fake, every: u64, run: u64, monotonic: bool) -> u64 {
        let (mut worst, mut last) = (0, 0);
        let end = fake.now.get() + run;
        while fake.now.get() < end {
            let v = clock.now_from(fake);
            if monotonic {
                assert!(
                    v >= last,
                    "went back from {last} to {v} at {}",
                    fake.now.get()
                );
            }
            last = v;
            worst = worst.max(v.abs_diff(fake.truth()));
            fake.advance(every);
        }
        worst
    }

    /// A calibrated clock on a fake machine, past its first intervals.
    fn calibrated() -> (Fake, WallClock) {
        let (fake, mut clock) = (Fake::new(), WallClock::with_counter(true));
        run(&mut clock, &fake, 1_000, 500_000_000, true);
        assert!(clock.rate != 0 && clock.span != 0, "calibrated: {clock:?}");
        (fake, clock)
    }

    #[test]
    fn a_steady_counter_is_extrapolated_within_nanoseconds() {
        let (fake, mut clock) = calibrated();
        let worst = run(&mut clock, &fake, 1_000, 1_000_000_000, true);
        assert!(worst < 50, "off by {worst} ns");
        // The intervals grew to 100 ms of ticks.
        assert!(clock.span > 240_000_000, "{clock:?}");
    }

    #[test]
    fn a_new_rate_is_followed_one_interval_late() {
        let (fake, mut clock) = calibrated();
        // The counter runs 100 ppm faster from now on.
        fake.sync();
        fake.ticks_per_ms.set(2_500_250);
        let during = run(&mut clock, &fake, 1_000, 300_000_000, true);
        assert!(during < 20_000, "off by {during} ns while the rate changed");
        let after = run(&mut clock, &fake, 1_000, 300_000_000, true);
        assert!(after < 50, "off by {after} ns after");
    }

    #[test]
    fn a_clock_stepped_back_resets_the_calibration() {
        let (fake, mut clock) = calibrated();
        fake.kernel_offset.set(-10_000_000_000); // back 10 s
                                                 // Up to the next anchor the clock does not know; then it steps back with the kernel.
        run(&mut clock, &fake, 1_000, 250_000_000, false);
        let worst = run(&mut clock, &fake, 1_000, 500_000_000, true);
        assert!(worst < 50, "off by {worst} ns after the reset");
        assert!(clock.rate != 0, "calibrated again: {clock:?}");
    }

    #[test]
    fn a_small_step_back_is_not_taken_for_a_rate_and_never_goes_back() {
        let (fake, mut clock) = calibrated();
        fake.kernel_offset.set(-500_000); // back 0.5 ms: under the reset's threshold
        run(&mut clock, &fake, 1_000, 500_000_000, true);
        let worst = run(&mut clock, &fake, 1_000, 500_000_000, true);
        assert!(worst < 50, "off by {worst} ns after the step");
    }

    #[test]
    fn a_counter_read_just_behind_the_anchor_is_not_an_anchor() {
        let (fake, mut clock) = calibrated();
        let (rate, base) = (clock.rate, clock.base_ns);
        // Another CPU's counter, 500 ticks behind this one's, right after an anchor.
        let t = clock.anchor_tsc - 500;
        let v = clock.settle(&fake, t, fake.truth(), t + 40);
        assert!(v >= base, "{v} < {base}");
        assert_eq!(clock.rate, rate, "no reset");
    }

    #[test]
    fn a_preempted_first_read_does_not_skew_the_rate() {
        let (fake, mut clock) = (Fake::new(), WallClock::with_counter(true));
        // The first kernel read is preempted for 2 ms before the counter is read again.
        fake.stall_once.set(2_000_000);
        run(&mut clock, &fake, 1_000, 500_000_000, true);
        let worst = run(&mut clock, &fake, 1_000, 500_000_000, true);
        assert!(worst < 50, "off by {worst} ns");
    }

    #[test]
    fn a_preempted_overdue_read_is_not_an_anchor() {
        let (fake, mut clock) = calibrated();
        fake.advance(300_000_000); // nobody published for 300 ms
        fake.stall_once.set(2_000_000);
        run(&mut clock, &fake, 1_000, 500_000_000, true);
        let worst = run(&mut clock, &fake, 1_000, 500_000_000, true);
        assert!(worst < 50, "off by {worst} ns");
    }

    #[test]
    fn a_counter_far_behind_the_anchor_calibrates_again_without_a_jump() {
        let (fake, mut clock) = calibrated();
        // Right after an anchor, the counter falls 3,000,000 ticks (1.2 ms) back.
        let anchor = clock.anchor_tsc;
        while clock.anchor_tsc == anchor {
            clock.now_from(&fake);
            fake.advance(1_000);
        }
        fake.counter_back(3_000_000);
        let worst = run(&mut clock, &fake, 1_000, 500_000_000, false);
        assert!(worst < 1_000_000, "off by {worst} ns");
        assert!(clock.rate != 0, "calibrated again: {clock:?}");
    }

    #[test]
    fn slow_kernel_reads_still_anchor_after_two_intervals() {
        let (fake, mut clock) = calibrated();
        // Every kernel read now takes 100 times as long, and the kernel moved 20 µs ahead.
        fake.read_ns.set(1_600);
        fake.kernel_offset.set(20_000);
        run(&mut clock, &fake, 10_000, 400_000_000, true);
        let worst = run(&mut clock, &fake, 10_000, 500_000_000, true);
        // The bracket's midpoint is half a read from the kernel read: 800 ns.
        assert!(worst < 2_000, "off by {worst} ns");
    }

    #[test]
    fn a_counter_no_longer_usable_is_dropped_at_a_reset() {
        let (fake, mut clock) = calibrated();
        fake.usable.set(false);
        fake.kernel_offset.set(5_000_000); // a 5 ms step: a reset at the next anchor
        run(&mut clock, &fake, 1_000, 250_000_000, true);
        assert!(!clock.tsc, "{clock:?}");
        assert_eq!(run(&mut clock, &fake, 1_000, 10_000_000, true), 0);
    }
}
