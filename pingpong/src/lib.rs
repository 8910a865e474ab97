//! Cross-process ping-pong of 64-byte messages: the harness behind shmq's latency benchmark and
//! `shmq bench`.
//!
//! A [`Pinger`] starts a child process (its own binary again, with `SHMQ_BENCH_CHILD=<mode>`)
//! that echoes every message back, and times round trips; one-way latency = round trip / 2.
//! A binary that uses this crate must call [`maybe_run_child`] first thing in `main`.
//!
//! The child's stdin is a pipe (for the socket mode, the socket) held by the parent, so the
//! child exits when the parent goes away. Every wait on the child is bounded by
//! [`REPLY_TIMEOUT`].
//!
//! [`throughput`] is the cross-process throughput harness (producer processes, a consumer in
//! this one) of the same binaries, with its own child roles.
//!
//! Under `--cfg loom` (shmq's model checks, which build every dev-dependency of shmq) shmq
//! exports only its ring, so this crate compiles to nothing.

#![cfg(not(loom))]

#[cfg(feature = "brokers")]
mod brokers;
mod child;
#[cfg(feature = "iceoryx2")]
mod iox;
pub mod percentiles;
mod pinger;
mod shared;
pub mod throughput;

use std::path::PathBuf;
use std::time::Duration;

pub use child::maybe_run_child;
pub use pinger::Pinger;

/// Payload size of every ping and pong.
pub const MSG: usize = 64;
/// Longest a parent waits for one reply before it gives up with [`Error::Timeout`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variable naming the child's role.
const CHILD_ENV: &str = "SHMQ_BENCH_CHILD";
/// Environment variable naming the directory the parent made for this pair.
const DIR_ENV: &str = "SHMQ_BENCH_DIR";

/// One way of moving a 64-byte message between two processes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Two processes spinning on one `AtomicU64` in a shared mapping: the hardware floor.
    Floor,
    /// Two processes on one `AtomicU32` in a shared mapping, each sleeping in `FUTEX_WAIT`
    /// until the other stores and calls `FUTEX_WAKE` (shared, not private, futexes: shmq's own
    /// calls, [`shmq::futex`]): the floor of waking a sleeping process.
    FutexFloor,
    /// shmq, consumers spinning on `poll(Some(Duration::ZERO))`.
    ShmqSpin,
    /// shmq, consumers in `poll(Some(timeout))`: a short spin, then the futex.
    ShmqBlocking,
    /// shmq's async API: consumers awaiting `recv()` on a current-thread tokio runtime, woken
    /// through the process's waker thread (no spin).
    #[cfg(feature = "async")]
    ShmqAsync,
    /// A pair of pipes (blocking read/write).
    Pipe,
    /// A Unix domain stream socket pair (blocking read/write).
    UnixSocket,
    /// iceoryx2 publish-subscribe (`ipc::Service`), subscribers spinning on `receive()`.
    #[cfg(feature = "iceoryx2")]
    Iceoryx2,
    /// Redis Streams: `XADD` and `XREAD BLOCK` through a redis-server on 127.0.0.1 that the
    /// pair starts.
    #[cfg(feature = "brokers")]
    RedisStreams,
    /// NATS core publish-subscribe through a nats-server on 127.0.0.1 that the pair starts.
    #[cfg(feature = "brokers")]
    Nats,
}

impl Mode {
    /// Every mode, the floors first.
    pub const ALL: &'static [Mode] = &[
        Mode::Floor,
        Mode::FutexFloor,
        Mode::ShmqSpin,
        Mode::ShmqBlocking,
        #[cfg(feature = "async")]
        Mode::ShmqAsync,
        Mode::Pipe,
        Mode::UnixSocket,
        #[cfg(feature = "iceoryx2")]
        Mode::Iceoryx2,
        #[cfg(feature = "brokers")]
        Mode::RedisStreams,
        #[cfg(feature = "brokers")]
        Mode::Nats,
    ];

    /// Short name, also the child role.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Floor => "floor_atomic",
            Mode::FutexFloor => "floor_futex",
            Mode::ShmqSpin => "shmq_spin",
            Mode::ShmqBlocking => "shmq_blocking",
            #[cfg(feature = "async")]
            Mode::ShmqAsync => "shmq_async",
            Mode::Pipe => "pipe",
            Mode::UnixSocket => "unix_socket",
            #[cfg(feature = "iceoryx2")]
            Mode::Iceoryx2 => "iceoryx2",
            #[cfg(feature = "brokers")]
            Mode::RedisStreams => "redis_streams",
            #[cfg(feature = "brokers")]
            Mode::Nats => "nats",
        }
    }

    /// The mode called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// Whether the child says it is ready on its stdout before the first ping (every mode
    /// except those whose stdout is the data channel).
    fn child_signals_ready(self) -> bool {
        !matches!(self, Mode::Pipe | Mode::UnixSocket)
    }
}

/// Why a ping-pong pair could not be started or stopped answering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or descriptor operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file (or a description of the descriptor).
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A shmq call failed.
    #[error("{path}: {source}")]
    Queue {
        /// The queue file.
        path: PathBuf,
        /// The library's error.
        #[source]
        source: shmq::Error,
    },
    /// The child process could not be started.
    #[error("{mode}: starting the child process: {source}")]
    Spawn {
        /// The mode's name.
        mode: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The child exited (or closed its end) before answering.
    #[error("{mode}: the child process exited before answering")]
    ChildGone {
        /// The mode's name.
        mode: &'static str,
    },
    /// No reply within [`REPLY_TIMEOUT`].
    #[error("{mode}: no reply within {} s", REPLY_TIMEOUT.as_secs())]
    Timeout {
        /// The mode's name.
        mode: &'static str,
    },
    /// The mode cannot run on this machine (e.g. its server is not installed): skip it.
    #[error("{mode} skipped: {reason}")]
    Unavailable {
        /// The mode's name.
        mode: &'static str,
        /// Why, and what would make it available.
        reason: String,
    },
    /// The transport under test reported an error of its own.
    #[error("{mode}: {what}")]
    Transport {
        /// The mode's name.
        mode: &'static str,
        /// Its error, as text.
        what: String,
    },
}

/// The file names of a shmq pair's request and response queues, in the pair's directory.
const QUEUE_FILES: [&str; 2] = ["req.q", "resp.q"];

/// Paths of the pair's request and response queues in `dir`.
fn queue_paths(dir: &std::path::Path) -> [PathBuf; 2] {
    QUEUE_FILES.map(|name| dir.join(name))
}

/// Prefaults `queue` in this process (`Queue::prefault`), so that no first-touch page fault
/// falls in a timed block. Where the kernel refuses (before Linux 5.14) the pair runs without
/// it, and says so on stderr: its first lap then includes those faults.
fn prefault(queue: &shmq::Queue) {
    if let Err(e) = queue.prefault() {
        eprintln!("  shmq pair: {e}; timing without a prefault (the first lap takes page faults)");
    }
}

/// Maps a shmq error on the queue file `path` (cloned only when there is an error, so this
/// can sit on a hot path).
fn queue_err(path: &std::path::Path) -> impl FnOnce(shmq::Error) -> Error + '_ {
    move |source| Error::Queue {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `m` echoes a ping whose first byte is `first`; returns its offset.
fn echoed(mode: Mode, m: &shmq::Message<'_>, first: u8) -> Result<u64, Error> {
    if m.payload.len() != MSG || m.payload[0] != first {
        return Err(Error::Transport {
            mode: mode.name(),
            what: "the pong does not echo the ping".into(),
        });
    }
    Ok(m.offset)
}

/// A current-thread tokio runtime with timers, for the async mode's side on queue `path`.
#[cfg(feature = "async")]
fn runtime(path: &std::path::Path) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            op: "start a tokio runtime",
            source,
        })
}

/// Median of a slice (sorts it); NaN for an empty one.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for &m in Mode::ALL {
            assert_eq!(Mode::from_name(m.name()), Some(m));
        }
        let mut names: Vec<_> = Mode::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Mode::ALL.len());
        assert_eq!(Mode::from_name("nope"), None);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
