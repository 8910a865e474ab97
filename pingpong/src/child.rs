//! The child side of every mode: echo each 64-byte message back until the parent goes away.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;

use shmq::futex;

use crate::shared::{map_word_file, word32, word64, Bell, Idle, IDLE_POLLS, IDLE_SPINS};
use crate::{queue_err, queue_paths, Error, Mode, CHILD_ENV, DIR_ENV, MSG};

/// How long a blocking child sleeps in one `poll` before it looks again.
const CHILD_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// If this process was started as a ping-pong child, runs the child role and exits; otherwise
/// returns at once. Call it first thing in `main`, before any argument parsing.
pub fn maybe_run_child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let code = match run(&role) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ping-pong child {role}: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// Runs the child role `role`; returns when the parent closes the data channel, or never for
/// the shared-memory modes (those exit when the parent closes stdin).
fn run(role: &str) -> Result<(), Error> {
    // The producers of the throughput cases.
    if let Some(done) = crate::throughput::child(role) {
        return done;
    }
    let mode = Mode::from_name(role).ok_or(Error::Transport {
        mode: "child",
        what: format!("unknown role {role:?}"),
    })?;
    // SAFETY: fds 0 and 1 were set up by the parent (`Command::stdin/stdout`), are open, and
    // nothing else in this process owns them.
    let (mut rx, mut tx) = unsafe {
        (
            File::from(OwnedFd::from_raw_fd(0)),
            File::from(OwnedFd::from_raw_fd(1)),
        )
    };
    if !mode.child_signals_ready() {
        let mut buf = [0u8; MSG];
        while rx.read_exact(&mut buf).is_ok() {
            if tx.write_all(&buf).is_err() {
                break;
            }
        }
        return Ok(());
    }
    // Exit as soon as the parent closes our stdin (or dies).
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = rx.read(&mut b);
        std::process::exit(0);
    });
    let dir = pair_dir(mode.name())?;
    let ready = move || {
        tx.write_all(b"R").map_err(|source| Error::Io {
            path: "stdout".into(),
            op: "signal ready",
            source,
        })
    };
    match mode {
        Mode::Floor => floor(&dir, ready),
        Mode::FutexFloor => futex_floor(&dir, ready),
        Mode::ShmqSpin | Mode::ShmqBlocking => shmq_echo(&dir, mode, ready),
        #[cfg(feature = "async")]
        Mode::ShmqAsync => shmq_echo_async(&dir, ready),
        #[cfg(feature = "iceoryx2")]
        Mode::Iceoryx2 => crate::iox::child(&dir, ready),
        #[cfg(feature = "brokers")]
        Mode::RedisStreams | Mode::Nats => crate::brokers::child(mode, &dir, ready),
        Mode::Pipe | Mode::UnixSocket => unreachable!("handled above"),
    }
}

/// The directory the parent made for this child's pair (`mode` names it in the error).
pub(crate) fn pair_dir(mode: &'static str) -> Result<PathBuf, Error> {
    let dir = std::env::var_os(DIR_ENV).ok_or(Error::Transport {
        mode,
        what: format!("{DIR_ENV} is not set"),
    })?;
    Ok(PathBuf::from(dir))
}

/// Makes a new temporary directory under `base` for a pair's or flow's files, its name
/// starting with `prefix`; removed when the returned handle drops.
pub(crate) fn new_dir(prefix: &str, base: &Path) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .map_err(|source| Error::Io {
            path: base.to_path_buf(),
            op: "create a temporary directory",
            source,
        })
}

/// Starts this binary again as the child `role` (of the pair or flow `mode`) with its files in
/// `dir` and `env` set too, and waits for its ready byte on its stdout. Returns the child and
/// its stdin, which the caller holds: the child exits when it is closed.
pub(crate) fn spawn_ready(
    role: &str,
    mode: &'static str,
    dir: &Path,
    env: &[(&str, String)],
) -> Result<(Child, ChildStdin), Error> {
    let exe = std::env::current_exe().map_err(|source| Error::Spawn { mode, source })?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, role)
        .env(DIR_ENV, dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| Error::Spawn { mode, source })?;
    // The child writes one byte once its end is set up; EOF means it failed.
    let mut ready = [0u8; 1];
    let ok = child
        .stdout
        .take()
        .is_some_and(|mut out| out.read_exact(&mut ready).is_ok());
    match child.stdin.take() {
        Some(stdin) if ok => Ok((child, stdin)),
        _ => {
            // Our own child, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::ChildGone { mode })
        }
    }
}

/// Atomic floor: waits (spinning) for each odd value and answers with the next even one.
fn floor(dir: &Path, ready: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    let map = map_word_file(&dir.join("floor"))?;
    let w = word64(&map);
    let bell = Bell::open(dir)?;
    ready()?;
    let mut expect = 1u64;
    let mut idle = Idle::new(IDLE_SPINS, &bell);
    loop {
        // Acquire pairs with the parent's Release store of the ping (a real payload would be
        // published by it).
        while w.load(Ordering::Acquire) != expect {
            idle.empty();
        }
        idle.busy();
        // Release: publishes everything before the pong to the parent's Acquire load.
        w.store(expect + 1, Ordering::Release);
        expect += 2;
    }
}

/// Futex floor: sleeps in `FUTEX_WAIT` until the parent's ping, stores the pong and wakes it.
fn futex_floor(dir: &Path, ready: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    let map = map_word_file(&dir.join("futex"))?;
    let w = word32(&map);
    ready()?;
    let mut expect = 1u32;
    loop {
        // Acquire pairs with the parent's Release store of the ping.
        let v = w.load(Ordering::Acquire);
        if v != expect {
            // No timeout: the child sleeps until the next ping or until it is told to exit.
            futex::wait(w, v, None);
            continue;
        }
        // Release: the pong publishes what came before it to the parent's Acquire load.
        w.store(expect.wrapping_add(1), Ordering::Release);
        futex::wake_all(w);
        expect = expect.wrapping_add(2);
    }
}

/// Copies request `m` into `buf`; returns its offset.
fn take_request(mode: Mode, m: &shmq::Message<'_>, buf: &mut [u8; MSG]) -> Result<u64, Error> {
    if m.payload.len() != MSG {
        return Err(Error::Transport {
            mode: mode.name(),
            what: format!("a {}-byte request, expected {MSG}", m.payload.len()),
        });
    }
    buf.copy_from_slice(m.payload);
    Ok(m.offset)
}

/// The child's consumer of the request queue and producer of the response queue in `dir`,
/// and the two paths.
fn shmq_ends(dir: &Path) -> Result<(shmq::Consumer, shmq::Producer, [PathBuf; 2]), Error> {
    let [req_path, resp_path] = queue_paths(dir);
    let req = shmq::Queue::open(&req_path).map_err(queue_err(&req_path))?;
    let resp = shmq::Queue::open(&resp_path).map_err(queue_err(&resp_path))?;
    // As the parent does (`shmq_link`).
    for q in [&req, &resp] {
        crate::prefault(q);
    }
    let rx = req.consumer("child").map_err(queue_err(&req_path))?;
    let tx = resp.producer().map_err(queue_err(&resp_path))?;
    Ok((rx, tx, [req_path, resp_path]))
}

/// shmq's async API: awaits each request with `recv()` on a current-thread runtime and
/// publishes it to the response queue.
#[cfg(feature = "async")]
fn shmq_echo_async(dir: &Path, ready: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    let (mut rx, mut tx, [req_path, resp_path]) = shmq_ends(dir)?;
    let rt = crate::runtime(&req_path)?;
    ready()?;
    let mut buf = [0u8; MSG];
    rt.block_on(async {
        loop {
            let m = rx.recv().await.map_err(queue_err(&req_path))?;
            let off = take_request(Mode::ShmqAsync, &m, &mut buf)?;
            tx.publish(&buf).map_err(queue_err(&resp_path))?;
            rx.commit(off).map_err(queue_err(&req_path))?;
        }
    })
}

/// shmq: consumes the request queue and publishes each payload to the response queue.
fn shmq_echo(
    dir: &Path,
    mode: Mode,
    ready: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let (mut rx, mut tx, [req_path, resp_path]) = shmq_ends(dir)?;
    let bell = Bell::open(dir)?;
    let timeout = match mode {
        Mode::ShmqSpin => std::time::Duration::ZERO,
        _ => CHILD_POLL,
    };
    ready()?;
    let mut buf = [0u8; MSG];
    let mut idle = Idle::new(IDLE_POLLS, &bell);
    loop {
        let off = match rx.poll(Some(timeout)).map_err(queue_err(&req_path))? {
            Some(m) => take_request(mode, &m, &mut buf)?,
            None => {
                idle.empty();
                continue;
            }
        };
        idle.busy();
        tx.publish(&buf).map_err(queue_err(&resp_path))?;
        rx.commit(off).map_err(queue_err(&req_path))?;
    }
}
