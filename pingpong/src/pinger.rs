//! The parent side of a pair: starts the child, then times round trips.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use shmq::futex;

use crate::child::{new_dir, spawn_ready};
#[cfg(feature = "async")]
use crate::runtime;
use crate::shared::{map_word_file, word32, word64, Bell, Patience};
use crate::{echoed, queue_err, queue_paths, Error, Mode, CHILD_ENV, DIR_ENV, MSG, REPLY_TIMEOUT};

/// Ring size of the two ping-pong queues.
const QUEUE_CAPACITY: u64 = 1 << 20;
/// Largest message of the two ping-pong queues.
const QUEUE_MAX_MESSAGE: u32 = 4096;

/// The parent's end of one transport.
// One value per pinger: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// The atomic floor: the mapping and the last value stored.
    Floor { map: memmap2::MmapMut, seq: u64 },
    /// The futex floor: the mapping and the last value stored.
    Futex { map: memmap2::MmapMut, seq: u32 },
    /// shmq: a producer on the request queue and a consumer of the response queue.
    Shmq {
        tx: shmq::Producer,
        rx: shmq::Consumer,
        wait: Wait,
        _queues: (shmq::Queue, shmq::Queue),
    },
    /// A pipe pair or a socket: write the ping, read the pong.
    Fd { tx: File, rx: File },
    /// iceoryx2 publish-subscribe.
    #[cfg(feature = "iceoryx2")]
    Iox(crate::iox::Parent),
    /// A broker (Redis Streams or NATS) and the parent's connection to it.
    #[cfg(feature = "brokers")]
    Broker(crate::brokers::Parent),
}

/// How the shmq parent waits for its pong.
enum Wait {
    /// `poll(Some(Duration::ZERO))` in a loop.
    Spin,
    /// `poll(Some(REPLY_TIMEOUT))`.
    Block,
    /// `recv().await` on this runtime.
    #[cfg(feature = "async")]
    Async(tokio::runtime::Runtime),
}

/// The parent side of one ping-pong pair; kills and reaps its child on drop.
pub struct Pinger {
    /// Which transport.
    mode: Mode,
    /// The parent's end of it.
    link: Link,
    /// The echoing child.
    child: Child,
    /// The child's stdin, held so that the child exits when this pinger goes away.
    _stdin: Option<ChildStdin>,
    /// Tells the child whether its pair is being measured.
    bell: Arc<Bell>,
    /// The pair's files; removed on drop.
    _dir: tempfile::TempDir,
    /// The ping's payload; its first byte changes every round trip.
    msg: [u8; MSG],
}

impl Pinger {
    /// Starts the child for `mode`, with the pair's files in a new temporary directory under
    /// `base`, and completes 1,000 warm-up round trips.
    pub fn start(mode: Mode, base: &Path) -> Result<Pinger, Error> {
        let dir = new_dir(mode.name(), base)?;
        let exe = std::env::current_exe().map_err(|source| Error::Spawn {
            mode: mode.name(),
            source,
        })?;
        // Before the child starts: it maps the same file.
        let bell = Bell::register(dir.path())?;
        let mut cmd = Command::new(exe);
        cmd.env(CHILD_ENV, mode.name())
            .env(DIR_ENV, dir.path())
            .stderr(Stdio::inherit());
        // The shared-memory modes' parent ends; the descriptor modes' come with the child.
        let link = match mode {
            Mode::Floor => {
                let map = map_word_file(&dir.path().join("floor"))?;
                // SeqCst: set up before the child exists; the spawn orders it anyway.
                word64(&map).store(0, Ordering::SeqCst);
                Some(Link::Floor { map, seq: 0 })
            }
            Mode::FutexFloor => {
                let map = map_word_file(&dir.path().join("futex"))?;
                // SeqCst: as above.
                word32(&map).store(0, Ordering::SeqCst);
                Some(Link::Futex { map, seq: 0 })
            }
            Mode::ShmqSpin | Mode::ShmqBlocking => Some(shmq_link(dir.path(), mode)?),
            #[cfg(feature = "async")]
            Mode::ShmqAsync => Some(shmq_link(dir.path(), mode)?),
            #[cfg(feature = "iceoryx2")]
            Mode::Iceoryx2 => Some(Link::Iox(crate::iox::Parent::new(dir.path())?)),
            #[cfg(feature = "brokers")]
            Mode::RedisStreams | Mode::Nats => {
                Some(Link::Broker(crate::brokers::Parent::new(mode, dir.path())?))
            }
            Mode::Pipe | Mode::UnixSocket => None,
        };
        let spawn = |cmd: &mut Command| {
            cmd.spawn().map_err(|source| Error::Spawn {
                mode: mode.name(),
                source,
            })
        };
        let (link, mut child) = match link {
            None if mode == Mode::Pipe => {
                let mut child = spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()))?;
                let gone = || Error::ChildGone { mode: mode.name() };
                let tx = File::from(OwnedFd::from(child.stdin.take().ok_or_else(gone)?));
                let rx = File::from(OwnedFd::from(child.stdout.take().ok_or_else(gone)?));
                (Link::Fd { tx, rx }, child)
            }
            None => {
                let io = |op| {
                    move |source| Error::Io {
                        path: "socketpair".into(),
                        op,
                        source,
                    }
                };
                let (ours, theirs) = UnixStream::pair().map_err(io("socketpair"))?;
                let theirs2 = theirs.try_clone().map_err(io("dup"))?;
                let child = spawn(
                    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
                        .stdout(Stdio::from(OwnedFd::from(theirs2))),
                )?;
                let rx = File::from(OwnedFd::from(ours.try_clone().map_err(io("dup"))?));
                let tx = File::from(OwnedFd::from(ours));
                (Link::Fd { tx, rx }, child)
            }
            Some(link) => {
                let (mut child, stdin) = spawn_ready(mode.name(), mode.name(), dir.path(), &[])?;
                child.stdin = Some(stdin);
                (link, child)
            }
        };
        let stdin = child.stdin.take();
        let mut p = Pinger {
            mode,
            link,
            child,
            _stdin: stdin,
            bell,
            _dir: dir,
            msg: [7u8; MSG],
        };
        p.warm(1000)?;
        Ok(p)
    }

    /// Which transport this pair uses.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts a timed block of this pair: its child spins (it never sleeps while its pair is
    /// measured), every other pair of this process rests (an idle child sleeps), then `n`
    /// untimed round trips.
    pub fn warm(&mut self, n: u32) -> Result<(), Error> {
        self.bell.activate();
        for _ in 0..n {
            self.round_trip()?;
        }
        Ok(())
    }

    /// One ping and its pong.
    #[inline]
    pub fn round_trip(&mut self) -> Result<(), Error> {
        let mode = self.mode;
        // A new first byte each time, which the echoing transports check.
        self.msg[0] = self.msg[0].wrapping_add(1);
        match &mut self.link {
            Link::Floor { map, seq } => {
                let w = word64(map);
                *seq += 2;
                // Release/Acquire: the pair a real payload handoff would need.
                w.store(*seq - 1, Ordering::Release);
                let mut patience = Patience::new();
                while w.load(Ordering::Acquire) != *seq {
                    patience.spin(mode)?;
                }
            }
            Link::Futex { map, seq } => {
                let w = word32(map);
                *seq = seq.wrapping_add(2);
                let want = *seq;
                // Release/Acquire: as for the atomic floor.
                w.store(want.wrapping_sub(1), Ordering::Release);
                futex::wake_all(w);
                loop {
                    let v = w.load(Ordering::Acquire);
                    if v == want {
                        break;
                    }
                    if !futex::wait(w, v, Some(REPLY_TIMEOUT)) {
                        return Err(Error::Timeout { mode: mode.name() });
                    }
                }
            }
            Link::Shmq { tx, rx, wait, .. } => {
                let err = |source| Error::Transport {
                    mode: mode.name(),
                    what: format!("{source}"),
                };
                tx.publish(&self.msg).map_err(err)?;
                let first = self.msg[0];
                let off = match wait {
                    #[cfg(feature = "async")]
                    Wait::Async(rt) => {
                        // The timer is made inside the runtime, which it needs.
                        let pong = rt.block_on(async {
                            tokio::time::timeout(REPLY_TIMEOUT, rx.recv()).await
                        });
                        let m = pong.map_err(|_| Error::Timeout { mode: mode.name() })?;
                        echoed(mode, &m.map_err(err)?, first)?
                    }
                    Wait::Spin | Wait::Block => {
                        let spin = matches!(wait, Wait::Spin);
                        let timeout = if spin { Duration::ZERO } else { REPLY_TIMEOUT };
                        let mut patience = Patience::new();
                        loop {
                            match rx.poll(Some(timeout)).map_err(err)? {
                                Some(m) => break echoed(mode, &m, first)?,
                                None if spin => patience.spin(mode)?,
                                None => return Err(Error::Timeout { mode: mode.name() }),
                            }
                        }
                    }
                };
                rx.commit(off).map_err(err)?;
            }
            Link::Fd { tx, rx } => {
                let gone = |_| Error::ChildGone { mode: mode.name() };
                tx.write_all(&self.msg).map_err(gone)?;
                rx.read_exact(&mut self.msg).map_err(gone)?;
            }
            #[cfg(feature = "iceoryx2")]
            Link::Iox(p) => p.round_trip(&self.msg)?,
            #[cfg(feature = "brokers")]
            Link::Broker(p) => p.round_trip(&self.msg)?,
        }
        Ok(())
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the request and response queues in `dir` and the parent's producer and consumer.
fn shmq_link(dir: &Path, mode: Mode) -> Result<Link, Error> {
    let options = shmq::Options {
        capacity: QUEUE_CAPACITY,
        max_message: QUEUE_MAX_MESSAGE,
        ..shmq::Options::default()
    };
    let [req_path, resp_path] = queue_paths(dir);
    let req = shmq::Queue::create(&req_path, &options).map_err(queue_err(&req_path))?;
    let resp = shmq::Queue::create(&resp_path, &options).map_err(queue_err(&resp_path))?;
    // Steady-state latency: no first-touch page fault inside the timed blocks (each is a few
    // microseconds, one per 43 messages of the first lap: BENCHMARKS.md, "First-touch faults").
    for q in [&req, &resp] {
        crate::prefault(q);
    }
    let rx = resp.consumer("parent").map_err(queue_err(&resp_path))?;
    let tx = req.producer().map_err(queue_err(&req_path))?;
    let wait = match mode {
        Mode::ShmqSpin => Wait::Spin,
        #[cfg(feature = "async")]
        Mode::ShmqAsync => Wait::Async(runtime(&resp_path)?),
        _ => Wait::Block,
    };
    Ok(Link::Shmq {
        tx,
        rx,
        wait,
        _queues: (req, resp),
    })
}
