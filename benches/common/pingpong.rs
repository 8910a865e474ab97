//! Cross-process ping-pong harness shared by `benches/latency.rs` and
//! `examples/latency_percentiles.rs`.
//!
//! The parent re-executes its own binary with `SHMQ_BENCH_CHILD=<mode>`; the child echoes every
//! 64-byte message back. The child's stdin is a pipe (or, for the socket mode, the socket) held
//! by the parent, so the child exits when the parent goes away.

#![allow(dead_code)]

use crate::support::bench_dir;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Payload size of every ping and pong.
pub const MSG: usize = 64;
/// Environment variable naming the child's role.
pub const CHILD_ENV: &str = "SHMQ_BENCH_CHILD";
const DIR_ENV: &str = "SHMQ_BENCH_DIR";
/// Spins (about 10-50 ms) after which an idle floor child starts sleeping between checks.
const IDLE_SPINS: u32 = 1 << 20;
/// Empty `poll(Some(ZERO))` calls after which an idle spin-mode child starts sleeping.
const IDLE_POLLS: u32 = 10_000;
const IDLE_SLEEP: Duration = Duration::from_micros(200);

/// One way of moving a 64-byte message between two processes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Two processes spinning on one `AtomicU64` in a shared mapping: the hardware floor.
    Floor,
    /// shmq, consumers spinning on `poll(Some(Duration::ZERO))`.
    ShmqSpin,
    /// shmq, consumers in `poll(Some(10 s))`, sleeping on the futex when idle.
    ShmqBlocking,
    /// A pair of pipes (blocking read/write).
    Pipe,
    /// A Unix domain stream socket pair (blocking read/write).
    UnixSocket,
}

impl Mode {
    /// Every mode, floor first.
    pub const ALL: [Mode; 5] = [
        Mode::Floor,
        Mode::ShmqSpin,
        Mode::ShmqBlocking,
        Mode::Pipe,
        Mode::UnixSocket,
    ];

    /// Short name, also the child role.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Floor => "floor_atomic",
            Mode::ShmqSpin => "shmq_spin",
            Mode::ShmqBlocking => "shmq_blocking",
            Mode::Pipe => "pipe",
            Mode::UnixSocket => "unix_socket",
        }
    }

    fn from_name(name: &str) -> Mode {
        *Mode::ALL
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("unknown bench child role {name:?}"))
    }

    fn poll_timeout(self) -> Option<Duration> {
        match self {
            Mode::ShmqSpin => Some(Duration::ZERO),
            _ => Some(Duration::from_secs(10)),
        }
    }
}

fn queue_options() -> shmq::Options {
    shmq::Options {
        capacity: 1 << 20,
        max_message: 4096,
        ..shmq::Options::default()
    }
}

/// If this process was started as a bench child, runs the child role and exits. Call first
/// thing in `main`, before criterion parses arguments.
pub fn maybe_run_child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mode = Mode::from_name(&role);
    // SAFETY: fd 0 and 1 were set up by the parent (`Command::stdin/stdout`) and nothing else
    // in this process owns them.
    let (mut rx, mut tx) = unsafe { (File::from_raw_fd(0), File::from_raw_fd(1)) };
    match mode {
        Mode::Pipe | Mode::UnixSocket => {
            let mut buf = [0u8; MSG];
            while rx.read_exact(&mut buf).is_ok() {
                if tx.write_all(&buf).is_err() {
                    break;
                }
            }
        }
        Mode::Floor | Mode::ShmqSpin | Mode::ShmqBlocking => {
            // Exit as soon as the parent closes our stdin (or dies).
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                let _ = rx.read(&mut b);
                std::process::exit(0);
            });
            let dir = PathBuf::from(std::env::var(DIR_ENV).expect("bench dir env"));
            if mode == Mode::Floor {
                child_floor(&dir);
            } else {
                child_shmq(&dir, mode);
            }
        }
    }
    std::process::exit(0);
}

fn map_word(path: &std::path::Path) -> memmap2::MmapMut {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open floor file");
    f.set_len(4096).expect("set_len");
    // SAFETY: the file is private to this benchmark (a fresh temp dir); the two processes only
    // touch it through the atomic below.
    unsafe { memmap2::MmapMut::map_mut(&f) }.expect("mmap floor file")
}

fn word(map: &memmap2::MmapMut) -> &AtomicU64 {
    // SAFETY: the mapping is page-aligned, at least 8 bytes long and lives as long as the
    // borrow; AtomicU64 has the same layout as u64.
    unsafe { &*(map.as_ptr() as *const AtomicU64) }
}

fn child_floor(dir: &std::path::Path) {
    let map = map_word(&dir.join("floor"));
    let w = word(&map);
    let mut expect = 1u64;
    loop {
        // Spin while busy; once idle for a while (another case is being measured), sleep so an
        // idle child does not take a core from the case being measured.
        let mut spins = 0u32;
        while w.load(Ordering::Acquire) != expect {
            std::hint::spin_loop();
            spins = spins.saturating_add(1);
            if spins > IDLE_SPINS {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
        w.store(expect + 1, Ordering::Release);
        expect += 2;
    }
}

fn child_shmq(dir: &std::path::Path, mode: Mode) {
    let req = shmq::Queue::open(dir.join("req.q")).expect("open req queue");
    let resp = shmq::Queue::open(dir.join("resp.q")).expect("open resp queue");
    let mut rx = req.consumer("child").expect("child consumer");
    let mut tx = resp.producer().expect("child producer");
    let timeout = mode.poll_timeout();
    let mut buf = [0u8; MSG];
    let mut idle = 0u32;
    loop {
        let off = match rx.poll(timeout).expect("child poll") {
            Some(m) => {
                buf.copy_from_slice(m.payload);
                m.offset
            }
            None => {
                // As in `child_floor`: stop spinning when another case is being measured.
                idle = idle.saturating_add(1);
                if idle > IDLE_POLLS {
                    std::thread::sleep(IDLE_SLEEP);
                }
                continue;
            }
        };
        idle = 0;
        tx.publish(&buf).expect("child publish");
        rx.commit(off).expect("child commit");
    }
}

// One value per pinger: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Link {
    Floor {
        map: memmap2::MmapMut,
        seq: u64,
    },
    Shmq {
        tx: shmq::Producer,
        rx: shmq::Consumer,
        timeout: Option<Duration>,
        _queues: (shmq::Queue, shmq::Queue),
    },
    Fd {
        tx: File,
        rx: File,
    },
}

/// The parent side of one ping-pong pair; kills and reaps its child on drop.
pub struct Pinger {
    /// Which transport.
    pub mode: Mode,
    link: Link,
    child: Child,
    _stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
    msg: [u8; MSG],
}

impl Pinger {
    /// Starts the child for `mode` and completes one warm-up round trip.
    pub fn start(mode: Mode) -> Pinger {
        let dir = tempfile::Builder::new()
            .prefix(mode.name())
            .tempdir_in(bench_dir())
            .expect("tempdir");
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.env(CHILD_ENV, mode.name())
            .env(DIR_ENV, dir.path())
            .stderr(Stdio::inherit());
        let (link, child, stdin) = match mode {
            Mode::Floor => {
                let map = map_word(&dir.path().join("floor"));
                word(&map).store(0, Ordering::SeqCst);
                let child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn");
                (Link::Floor { map, seq: 0 }, child, None)
            }
            Mode::ShmqSpin | Mode::ShmqBlocking => {
                let req = shmq::Queue::create(dir.path().join("req.q"), &queue_options())
                    .expect("create req");
                let resp = shmq::Queue::create(dir.path().join("resp.q"), &queue_options())
                    .expect("create resp");
                let rx = resp.consumer("parent").expect("parent consumer");
                let tx = req.producer().expect("parent producer");
                let child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn");
                let link = Link::Shmq {
                    tx,
                    rx,
                    timeout: mode.poll_timeout(),
                    _queues: (req, resp),
                };
                (link, child, None)
            }
            Mode::Pipe => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                let tx = File::from(OwnedFd::from(child.stdin.take().expect("stdin")));
                let rx = File::from(OwnedFd::from(child.stdout.take().expect("stdout")));
                (Link::Fd { tx, rx }, child, None)
            }
            Mode::UnixSocket => {
                let (ours, theirs) = UnixStream::pair().expect("socketpair");
                let theirs2 = theirs.try_clone().expect("dup");
                let child = cmd
                    .stdin(Stdio::from(OwnedFd::from(theirs)))
                    .stdout(Stdio::from(OwnedFd::from(theirs2)))
                    .spawn()
                    .expect("spawn");
                let rx = File::from(OwnedFd::from(ours.try_clone().expect("dup")));
                let tx = File::from(OwnedFd::from(ours));
                (Link::Fd { tx, rx }, child, None)
            }
        };
        let mut child = child;
        let stdin = stdin.or_else(|| child.stdin.take());
        let mut p = Pinger {
            mode,
            link,
            child,
            _stdin: stdin,
            _dir: dir,
            msg: [7u8; MSG],
        };
        p.warm(1000);
        p
    }

    /// `n` untimed round trips (wakes an idle child back into its spin loop).
    pub fn warm(&mut self, n: u32) {
        for _ in 0..n {
            self.round_trip();
        }
    }

    /// One ping and its pong.
    #[inline]
    pub fn round_trip(&mut self) {
        match &mut self.link {
            Link::Floor { map, seq } => {
                let w = word(map);
                *seq += 2;
                w.store(*seq - 1, Ordering::Release);
                while w.load(Ordering::Acquire) != *seq {
                    std::hint::spin_loop();
                }
            }
            Link::Shmq {
                tx, rx, timeout, ..
            } => {
                self.msg[0] = self.msg[0].wrapping_add(1);
                tx.publish(&self.msg).expect("publish");
                loop {
                    let got = rx.poll(*timeout).expect("poll");
                    if let Some(m) = got {
                        debug_assert_eq!(m.payload[0], self.msg[0]);
                        let off = m.offset;
                        rx.commit(off).expect("commit");
                        break;
                    }
                }
            }
            Link::Fd { tx, rx } => {
                tx.write_all(&self.msg).expect("write");
                rx.read_exact(&mut self.msg).expect("read");
            }
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median of a slice (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
