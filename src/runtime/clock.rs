//! Clocks: wall-clock timestamps for records, and the monotonic clock that heartbeats and
//! sessions are measured on. Every clock read of the library goes through [`clock_ns`].

use std::time::Duration;

/// Now on `clock`, in nanoseconds (0 if the clock cannot be read or is before its epoch).
// Always inlined: a call cost `publish` about 20 instructions (callgrind, `call_cost`).
#[inline(always)]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime writes
    // only it.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 || ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it or cannot be read).
///
/// Reads `CLOCK_REALTIME`, the clock behind `SystemTime::now()`, directly: every publish
/// stamps its record, and std's `SystemTime::duration_since` + `Duration` arithmetic cost
/// about 90 of the ~730 instructions of a 64-byte publish (callgrind, `BENCHMARKS.md`).
#[inline]
pub(crate) fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Nanoseconds since the Unix epoch at the kernel's last tick (`CLOCK_REALTIME_COARSE`: up to
/// one tick behind [`now_ns`], at a fraction of its cost; 0 as for `now_ns`).
#[inline]
pub(crate) fn coarse_now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME_COARSE)
}

/// `CLOCK_REALTIME` for one producer's record timestamps, in nanoseconds since the Unix
/// epoch: read from the kernel, or, where the kernel itself keeps time with the time-stamp
/// counter, extrapolated from that counter between reads of the kernel clock.
///
/// A `clock_gettime` read orders its counter read (`lfence; rdtsc` or `rdtscp`), which costs
/// 25 ns on this project's benchmark VM, a fifth of a 64-byte ping-pong hop. A plain `rdtsc`
/// and a multiply cost less than half of that. The extrapolation is anchored to a kernel read
/// at least every [`REANCHOR_NS`], and its rate is the counter's rate measured between the
/// last two anchors, so it follows NTP's frequency corrections one interval late. At an
/// anchor a clock that ran ahead keeps its lead rather than step back, and runs slower by as
/// much until the next one: one producer's timestamps never decrease but where the kernel
/// clock is stepped back. Measured here, reads stay within 40 ns of a kernel read (tests
/// below; `BENCHMARKS.md`, "The record clock"). An anchor whose extrapolation was more than
/// [`MAX_DRIFT_NS`] off (a suspended machine, a clock step, a migrated VM) drops the
/// calibration and returns to the kernel's reading, if need be a step back, and reads the
/// kernel until it has measured the rate again ([`CALIBRATION_NS`]).
#[derive(Debug, Clone)]
pub(crate) struct WallClock {
    /// The counter can be used: see [`tsc_usable`]. Otherwise every read is a kernel read.
    tsc: bool,
    /// Counter value and kernel reading of the last anchor (0, 0: none yet).
    anchor_tsc: u64,
    anchor_ns: u64,
    /// How far apart the counter reads around the last anchor's kernel read were.
    anchor_width: u64,
    /// The narrowest such bracket seen: what an unhurried kernel read takes here.
    narrowest: u64,
    /// The value returned for `anchor_tsc`: `anchor_ns`, or the extrapolation if it was ahead.
    base_ns: u64,
    /// Nanoseconds per counter tick, 32.32 fixed point (0: not calibrated).
    mult: u64,
    /// Ticks past `anchor_tsc` that are extrapolated; 0 while not calibrated.
    span: u64,
}

/// How often the extrapolation is re-anchored to a kernel read (100 ms).
const REANCHOR_NS: u64 = 100_000_000;
/// The shortest interval a counter rate is measured over (10 ms): with the anchors' error of
/// about 50 ns ([`MIN_BRACKET_TICKS`]), a rate within 10 ppm before the first re-anchor.
const CALIBRATION_NS: u64 = 10_000_000;
/// An extrapolation further than this from the kernel's reading at an anchor drops the
/// calibration (1 ms).
const MAX_DRIFT_NS: u64 = 1_000_000;
/// A kernel read is used as an anchor only if the counter reads around it are at most twice
/// as far apart as the narrowest bracket seen, or this many ticks (about 100 ns at 2.5 GHz): a
/// read that was preempted or interrupted would skew the rate. Relative, so that it also
/// calibrates where every read is slow (under valgrind, whose instruction counts of
/// `publish` are then those of the extrapolation).
const MIN_BRACKET_TICKS: u64 = 256;

impl WallClock {
    /// A clock that extrapolates from the counter where [`tsc_usable`] says it may.
    pub(crate) fn new() -> Self {
        Self::with_counter(tsc_usable())
    }

    /// A clock that uses the counter only if `tsc`.
    pub(crate) fn with_counter(tsc: bool) -> Self {
        WallClock {
            tsc,
            anchor_tsc: 0,
            anchor_ns: 0,
            anchor_width: 0,
            narrowest: u64::MAX,
            base_ns: 0,
            mult: 0,
            span: 0,
        }
    }

    /// Now, in nanoseconds since the Unix epoch (0 as for [`now_ns`]).
    // Always inlined: it is on every publish.
    #[inline(always)]
    pub(crate) fn now(&mut self) -> u64 {
        if self.span != 0 {
            let d = tsc().wrapping_sub(self.anchor_tsc);
            if d < self.span {
                return self.base_ns + ticks_to_ns(d, self.mult);
            }
        }
        self.anchor()
    }

    /// A kernel read, and a new anchor (or a step of the calibration) if it is a good one.
    #[cold]
    #[inline(never)]
    fn anchor(&mut self) -> u64 {
        if !self.tsc {
            return now_ns();
        }
        let before = tsc();
        let ns = now_ns();
        let after = tsc();
        let width = after.wrapping_sub(before);
        self.narrowest = self.narrowest.min(width);
        if ns == 0 || width > (2 * self.narrowest).max(MIN_BRACKET_TICKS) {
            // Not an anchor: stay as we are, and try again on the next read. Never before
            // what the extrapolation returned last.
            return ns.max(self.extrapolated(after));
        }
        let t = before + width / 2;
        let (ticks, elapsed) = (
            t.wrapping_sub(self.anchor_tsc),
            ns.wrapping_sub(self.anchor_ns),
        );
        let calibrating = self.anchor_ns != 0 && ns >= self.anchor_ns && ticks < 1 << 62;
        if calibrating && elapsed < CALIBRATION_NS {
            if self.mult == 0 && width * 2 < self.anchor_width {
                // A much tighter read than the one the rate is being measured from (the
                // first read of a process may take a page fault): measure from this one.
                (self.anchor_tsc, self.anchor_ns, self.anchor_width) = (t, ns, width);
                self.base_ns = ns;
            }
            return ns.max(self.extrapolated(t));
        }
        let predicted = self.extrapolated(t);
        let mult = if calibrating {
            ((elapsed as u128) << 32)
                .checked_div(ticks as u128)
                .unwrap_or(0)
        } else {
            0
        };
        // A rate between 0.05 and 10 ns per tick (20 GHz to 100 MHz), and an extrapolation
        // that kept within `MAX_DRIFT_NS` of the kernel (or none was made).
        let plausible = ((1 << 32) / 20..=10 << 32).contains(&mult);
        let kept = self.mult == 0 || predicted.abs_diff(ns) <= MAX_DRIFT_NS;
        (self.anchor_tsc, self.anchor_ns, self.anchor_width) = (t, ns, width);
        let span = ((REANCHOR_NS as u128) << 32).checked_div(mult).unwrap_or(0);
        if plausible && kept && span > 0 {
            // A clock that ran ahead keeps its lead at the anchor (it never steps back) and
            // runs slower by as much over the next interval, so that by the next anchor it
            // is back on the measured rate's line: leads do not pile up from one interval to
            // the next. At most `MAX_DRIFT_NS` over `REANCHOR_NS`: 1 %.
            let lead = predicted.saturating_sub(ns);
            self.mult = (mult - ((lead as u128) << 32) / span) as u64;
            self.base_ns = ns + lead;
            self.span = span as u64;
        } else {
            // Start over: measure the rate from this anchor.
            self.mult = 0;
            self.span = 0;
            self.base_ns = ns;
        }
        self.base_ns
    }

    /// The extrapolation at counter value `t` (0 if not calibrated).
    fn extrapolated(&self, t: u64) -> u64 {
        if self.mult == 0 {
            return 0;
        }
        let d = t.wrapping_sub(self.anchor_tsc);
        if d >= 1 << 62 {
            return 0;
        }
        self.base_ns.saturating_add(ticks_to_ns(d, self.mult))
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
    // The library builds with Rust 1.80, where `_rdtsc` is unsafe to call; newer toolchains
    // call it safely and see an unused block.
    #[allow(unused_unsafe)]
    // SAFETY: `rdtsc` reads a counter; it touches no memory and every x86-64 CPU has it.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    0
}

/// Whether record timestamps may be extrapolated from the time-stamp counter: the CPU says
/// its counter runs at a constant rate in every power state (CPUID `0x8000_0007`, EDX bit 8,
/// "invariant TSC") and the kernel keeps its own time with it (the current clocksource is
/// `tsc`, so the kernel checked that the CPUs' counters agree). Checked once per process.
pub(crate) fn tsc_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        invariant_tsc()
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
    })
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

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: one clock for every process on the host.
pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The same clock at tick resolution (a few milliseconds) and a fraction of the cost: what a
/// poll checks to know whether a heartbeat is due.
pub(crate) fn coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years) instead of truncating.
pub(crate) fn saturating_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            if i % 4096 == 0 {
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

    /// Past three re-anchors, the extrapolation stays within 50 µs of the kernel clock (it
    /// is typically within 100 ns; a wrong rate would be off by milliseconds).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_extrapolation_follows_the_kernel_clock() {
        let mut clock = WallClock::with_counter(true);
        let (behind, ahead) = drift(&mut clock, Duration::from_millis(350));
        assert!(
            clock.mult != 0 && clock.span != 0,
            "never calibrated: {clock:?}"
        );
        assert!(
            behind < 50_000 && ahead < 50_000,
            "behind {behind} ns, ahead {ahead} ns"
        );
    }

    /// A calibration that went wrong (here: a rate twice the true one, as after a clock step
    /// or a migration) is dropped at the next anchor, and the clock is accurate again once it
    /// has measured the rate anew.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_wrong_rate_is_dropped_and_measured_again() {
        let mut clock = WallClock::with_counter(true);
        drift(&mut clock, Duration::from_millis(30));
        assert!(clock.mult != 0, "never calibrated: {clock:?}");
        clock.mult *= 2;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(150) {
            clock.now();
        }
        let (behind, ahead) = drift(&mut clock, Duration::from_millis(250));
        assert!(clock.mult != 0, "never calibrated again: {clock:?}");
        assert!(
            behind < 50_000 && ahead < 50_000,
            "behind {behind} ns, ahead {ahead} ns"
        );
    }

    #[test]
    fn matches_system_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .expect("clock after 1970");
        let ns = now_ns();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .expect("clock after 1970");
        assert!(before <= ns && ns <= after, "{before} <= {ns} <= {after}");
    }
}
