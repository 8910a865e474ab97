//! Liveness with real processes: a holder (producer slot, group member) is alive exactly while
//! the kernel holds its lease lock, whatever its pid looks like from where the check is made.
//!
//! * **Fork after open** (`fork_after_open_hundreds_of_kills`): one parent keeps a queue open
//!   and `fork()`s 400 children that use the inherited `Queue` (producers, a consumer of group
//!   `g`), SIGKILLing them at random moments, many mid-publish. No producer slot leaks (8 slots,
//!   400 kills), `producers()` always equals the number of live holders, a group held by a
//!   killed child is taken over while the parent lives (and shows the child's pid, dead), a
//!   live child's group is busy for its siblings, every acknowledged publish is delivered
//!   intact, and the parent's own producer and consumer, made before each fork, fail with
//!   `Error::Forked` in the child and survive the child dropping its copies.
//! * **Stalled producer** (`stalled_producer_*`): producer A stops itself (`SHMQ_STOP_AT`) in
//!   the middle of a publish, past the claim timeout; the reader aborts its record. Producer B
//!   must not judge A dead: it waits behind A's intent and writes nothing within reach of A's
//!   claim while A is stopped. Then A continues: its publish fails with `Aborted`, and the reader
//!   sees no corrupt record, no header of another offset and no payload other than an
//!   acknowledged one, while B laps the ring many times. B runs plainly, out of file
//!   descriptors, and in a pid namespace of its own (`unshare`), where A's pid means nothing; a
//!   checker process in the same situation must count both producers as live.
//! * **Stopped group member** (`stopped_member_keeps_its_group`): a SIGSTOPped member keeps
//!   its group against joiners that are out of descriptors or in another pid namespace; once
//!   it is killed, a joiner with a single descriptor to spare takes the group over.
//!
//! The old liveness (pid and start time read from `/proc/<pid>/stat`, cached per process) fails
//! each of them: children carried their parent's identity (leaked slots, a group never taken
//! over, the parent's pid as holder, a child using the parent's slot), and a `/proc` read that
//! failed (EMFILE) or found no such pid (another pid namespace) read as dead (B laps A's claim,
//! A's late header lands in B's records; a joiner steals a stopped member's group). Each test
//! child that runs out of descriptors or lives in a namespace first checks that such a `/proc`
//! read really fails there.
//!
//! * **Takeovers and forks at the wrong moment**: a member taken over while it slept in a poll
//!   leaves its successor's sleeper bit set when it wakes, so a publish wakes the successor at
//!   once (`a_member_taken_over_asleep_*`); a member stopped inside a commit
//!   (`SHMQ_STOP_AT=commit.before_store`) whose commit lands after the takeover never changes
//!   a record its successor holds while producers reuse its bytes (`a_commit_landing_*`); a
//!   claim open across a fork stays the parent's (`a_claim_open_*`); and 200 children forked
//!   while a thread starts and stops a Batch queue's flusher each make a producer without
//!   hanging (`a_fork_while_*`). Each failed before its fix: a successor asleep until the end
//!   of its poll, a record overwritten under its reader, the parent's claim aborted by the
//!   child's drop, a child blocked for ever on a mutex locked at the fork.
//!
//! Children are this binary re-run in a role (`harness = false`, see `common`), except in the
//! fork tests, whose children are real `fork()`s of the test process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use shmq::{Consumer, Error, FullPolicy, Options, Producer, Queue, Start, Subscribe};

const MAX: usize = 200;
const CLAIM_TIMEOUT: Duration = Duration::from_millis(100);
/// Runs a child in a pid namespace of its own, with its own `/proc` (we run as root).
const UNSHARE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

fn main() {
    match common::role().as_deref() {
        Some("stalled") => stalled_role(),
        Some("lapper") => lapper_role(),
        Some("counter") => counter_role(),
        Some("member") => member_role(),
        Some("joiner") => joiner_role(),
        Some("ns_probe") => ns_probe_role(),
        Some("sleeper") => sleeper_role(),
        Some("successor") => successor_role(),
        Some("committer") => committer_role(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            (
                "fork_after_open_hundreds_of_kills",
                fork_after_open_hundreds_of_kills,
            ),
            ("stalled_producer_plain", || stalled(Variant::Plain)),
            ("stalled_producer_no_descriptors", || {
                stalled(Variant::NoDescriptors)
            }),
            ("stalled_producer_pid_namespace", || {
                stalled(Variant::PidNamespace)
            }),
            (
                "stopped_member_keeps_its_group",
                stopped_member_keeps_its_group,
            ),
            (
                "a_member_taken_over_asleep_leaves_its_successor_woken",
                a_member_taken_over_asleep_leaves_its_successor_woken,
            ),
            (
                "a_commit_landing_after_a_takeover_never_changes_a_record_read",
                a_commit_landing_after_a_takeover_never_changes_a_record_read,
            ),
            (
                "a_claim_open_across_a_fork_stays_the_parents",
                a_claim_open_across_a_fork_stays_the_parents,
            ),
            (
                "a_fork_while_a_thread_starts_the_flusher_never_hangs_the_child",
                a_fork_while_a_thread_starts_the_flusher_never_hangs_the_child,
            ),
        ]),
    }
}

fn options(capacity: u64) -> Options {
    Options {
        capacity,
        max_message: MAX as u32,
        claim_timeout: CLAIM_TIMEOUT,
        producer_slots: 8,
        group_slots: 4,
        full_policy: FullPolicy::Block,
        ..Options::default()
    }
}

/// How a group is joined by a process that must not create it gating.
fn non_gating() -> Subscribe {
    Subscribe {
        gating: false,
        start: Start::Latest,
        ..Subscribe::default()
    }
}

/// Ring bytes a record of `len` payload bytes takes (header, payload, alignment).
fn footprint(len: usize) -> u64 {
    (32 + len as u64 + 7) & !7
}

/// Reads a queue as group member and checks every record against what its producers say
/// they published: self-checking payloads, per-producer sequence numbers from 0 without gaps
/// (apart from `skip`ped ones), and no error of any kind from `poll`.
struct Reader {
    c: Consumer,
    /// `(producer, seq)` of every record read, by offset.
    got: BTreeMap<u64, (u32, u32)>,
    next: BTreeMap<u32, u32>,
    /// Per producer, sequence numbers whose publish failed (never to be delivered).
    skip: BTreeMap<u32, BTreeSet<u32>>,
}

impl Reader {
    fn new(c: Consumer) -> Reader {
        Reader {
            c,
            got: BTreeMap::new(),
            next: BTreeMap::new(),
            skip: BTreeMap::new(),
        }
    }

    /// Reads what is there within `timeout` (at least one poll), commits it; returns how many
    /// records it read.
    fn read(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        let mut n = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.c.poll(Some(left)) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => panic!(
                    "the reader got an error at offset {}: {e} ({e:?})",
                    self.c.position()
                ),
            };
            let (p, seq) =
                common::check(m.payload).unwrap_or_else(|e| panic!("offset {}: {e}", m.offset));
            let mut expected = *self.next.get(&p).unwrap_or(&0);
            while self.skip.get(&p).is_some_and(|s| s.contains(&expected)) {
                expected += 1;
            }
            assert_eq!(
                seq, expected,
                "offset {}: producer {p} seq {seq}, expected {expected} (lost, repeated or \
                 a failed publish delivered)",
                m.offset
            );
            self.next.insert(p, seq + 1);
            assert!(self.got.insert(m.offset, (p, seq)).is_none());
            last = Some(m.offset);
            n += 1;
        }
        if let Some(o) = last {
            self.c.commit(o).expect("commit");
        }
        n
    }

    /// Sequence numbers delivered for producer `p`.
    fn delivered(&self, p: u32) -> u32 {
        self.got.values().filter(|(q, _)| *q == p).count() as u32
    }
}

// ------------------------------------------------------------------------------------------
// 1. Fork after open.

const FORK_ROUNDS: u32 = 400;
/// Children alive at once (each holds a producer slot, the parent holds one more).
const MAX_ALIVE: usize = 3;
const PARENT_ID: u32 = 1_000_000;

/// What a forked child does with group `g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupPlan {
    None,
    /// Join it (nobody alive holds it): must succeed.
    Join,
    /// Try to join it while the child with this pid holds it: must be told it is busy.
    Probe(u32),
}

struct Plan {
    id: u32,
    count: u32,
    group: GroupPlan,
    parent: u32,
    log: PathBuf,
}

/// A forked child, seen from the parent: its pid and the read end of its report pipe.
struct Kid {
    pid: libc::pid_t,
    id: u32,
    fd: OwnedFd,
    buf: Vec<u8>,
    lines: Vec<String>,
    reaped: bool,
}

impl Kid {
    /// Reads what the child reported; true at end of file (the child is gone). An `E` line is
    /// the child's failure.
    fn pump(&mut self) -> bool {
        let mut chunk = [0u8; 512];
        let eof = loop {
            // SAFETY: reads at most `chunk.len()` bytes into `chunk` from our open pipe end.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), chunk.as_mut_ptr().cast(), 512) };
            if n > 0 {
                self.buf.extend_from_slice(&chunk[..n as usize]);
                continue;
            }
            if n == 0 {
                break true;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock => break false,
                std::io::ErrorKind::Interrupted => continue,
                _ => panic!("reading child {}'s reports: {e}", self.id),
            }
        };
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]).into_owned();
            if let Some(msg) = line.strip_prefix("E ") {
                panic!("child {} (pid {}) failed: {msg}", self.id, self.pid);
            }
            self.lines.push(line);
        }
        eof
    }

    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// Waits until `done` holds for the child's reports.
    fn wait_for(&mut self, what: &str, done: impl Fn(&Kid) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let eof = self.pump();
            if done(self) {
                return;
            }
            assert!(
                !eof,
                "child {} died before {what}: {:?}",
                self.id, self.lines
            );
            assert!(
                Instant::now() < deadline,
                "child {} did not report {what} within 30 s: {:?}",
                self.id,
                self.lines
            );
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, 10) };
        }
    }

    /// SIGKILLs and reaps the child, then reads the rest of its reports.
    fn kill(&mut self) {
        let mut status = 0;
        // SAFETY: `pid` is our own unreaped child; kill and waitpid touch only `status`.
        let reaped = unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut status, 0)
        };
        assert_eq!(reaped, self.pid, "waitpid");
        self.reaped = true;
        self.pump();
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "child {} ended by itself ({status:#x}): {:?}",
            self.id,
            self.lines
        );
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: as in `kill`; a test that failed leaves no child running.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Writes one report line to the parent with a single write(2).
fn report(fd: RawFd, line: &str) {
    let line = format!("{line}\n");
    // SAFETY: writes `line.len()` bytes from a live buffer to our pipe end.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

/// The forked child: never returns into the test harness.
fn forked_child(q: &Queue, parent_p: Producer, parent_c: Consumer, plan: &Plan, out: RawFd) -> ! {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        child_main(q, parent_p, parent_c, plan, out)
    }));
    let msg = match r {
        Ok(Err(msg)) => msg,
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
    };
    report(out, &format!("E {msg}"));
    // SAFETY: ends this forked copy of the test process without running the parent's
    // destructors, atexit handlers or the rest of the test harness.
    unsafe { libc::_exit(1) }
}

fn child_main(
    q: &Queue,
    mut parent_p: Producer,
    mut parent_c: Consumer,
    plan: &Plan,
    out: RawFd,
) -> Result<std::convert::Infallible, String> {
    // SAFETY: prctl and getppid have no memory-safety preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() as u32 != plan.parent {
            libc::_exit(0);
        }
    }
    // The parent's handles are the parent's: they refuse to act, and dropping them must leave
    // the parent's slot and lease alone (the parent checks that).
    let forked = |what: &str, r: shmq::Result<()>| match r {
        Err(Error::Forked { pid, .. }) if pid == plan.parent => Ok(()),
        other => Err(format!("{what} in the child: {other:?}, expected Forked")),
    };
    forked("the parent's publish", parent_p.publish(b"x").map(drop))?;
    forked(
        "the parent's poll",
        parent_c.poll(Some(Duration::ZERO)).map(drop),
    )?;
    forked("the parent's commit", parent_c.commit(0))?;
    drop(parent_p);
    drop(parent_c);
    report(out, "F");

    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.log)
        .map_err(|e| format!("log: {e}"))?;
    let mut p = q.producer().map_err(|e| format!("producer: {e}"))?;
    report(out, "P");
    // Held until the child is killed.
    let mut _member = None;
    match plan.group {
        GroupPlan::None => {}
        GroupPlan::Join => {
            let c = q
                .subscribe("g", &non_gating())
                .map_err(|e| format!("joining g (its holder is dead): {e}"))?;
            _member = Some(c);
            report(out, "G");
        }
        GroupPlan::Probe(holder) => match q.subscribe("g", &non_gating()) {
            Err(Error::GroupBusy { pid, .. }) => report(out, &format!("B {pid}")),
            other => {
                return Err(format!(
                    "joining g held by live sibling {holder}: {:?}",
                    other.map(drop)
                ))
            }
        },
    }
    for seq in 0..plan.count {
        p.publish(&common::payload(plan.id, seq, MAX))
            .map_err(|e| format!("publish {seq}: {e}"))?;
        common::log_line(&mut log, &seq.to_string());
    }
    report(out, "D");
    loop {
        // SAFETY: pause(2) has no preconditions; we wait for the parent's SIGKILL.
        unsafe { libc::pause() };
    }
}

/// Threads of this process (a fork copies only the calling one), besides shmq's file watcher
/// (which takes its lock only under the fork handlers' mutex, so no fork copies it held).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .map_or(true, |c| c.trim() != "shmq-watch")
        })
        .count()
}

/// The holder of group `name` as `(pid, alive)`.
fn holder(q: &Queue, name: &str) -> Option<(u32, bool)> {
    let g = q.groups().into_iter().find(|g| g.name == name).unwrap();
    g.holder.map(|pid| (pid, g.holder_alive))
}

fn fork_after_open_hundreds_of_kills() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(1 << 16)).unwrap();
    drop(q.subscribe("g", &non_gating()).unwrap());
    // Made before every fork: the parent's own reader and producer.
    let mut all = Reader::new(q.consumer("all").unwrap());
    let mut pp = q.producer().unwrap();
    // Publishes fail at once when the ring is full: the parent drains it and tries again.
    pp.set_timeout(Some(Duration::ZERO));
    let parent = std::process::id();
    let mut rng = common::Rng::new();
    let mut kids: Vec<Kid> = Vec::new();
    let mut parent_seq = 0u32;
    // Group g: the live child holding it, and the pid of a killed one whose word is still there.
    let mut g_holder: Option<u32> = None;
    let mut g_dead: Option<u32> = None;
    let (mut early, mut mid_publish, mut takeovers, mut probes, mut parent_joins) = (0, 0, 0, 0, 0);
    let mut max_alive_checked = 0;

    // Kills one child; if it held g, g's word is now a dead child's.
    let mut reap = |kid: &mut Kid, g_holder: &mut Option<u32>, g_dead: &mut Option<u32>| {
        kid.kill();
        if kid.has("P") && !kid.has("D") {
            mid_publish += 1;
        }
        if *g_holder == Some(kid.pid as u32) {
            *g_holder = None;
            *g_dead = Some(kid.pid as u32);
        }
    };

    for round in 0..FORK_ROUNDS {
        // The parent's producer still owns its slot: children dropped their copies of it.
        loop {
            match pp.publish(&common::payload(PARENT_ID, parent_seq, MAX)) {
                Ok(_) => break,
                Err(Error::Timeout { .. }) => {
                    all.read(Duration::from_millis(5));
                }
                Err(e) => panic!("round {round}: the parent's publish: {e}"),
            }
        }
        parent_seq += 1;
        all.read(Duration::ZERO);
        assert_eq!(
            holder(&q, "all"),
            Some((parent, true)),
            "round {round}: the parent's group"
        );

        if g_holder.is_none() && round % 16 == 15 {
            // The parent itself takes g over from a killed child, and lets it go.
            let c = q
                .subscribe("g", &non_gating())
                .unwrap_or_else(|e| panic!("round {round}: the parent joining g: {e}"));
            assert_eq!(holder(&q, "g"), Some((parent, true)));
            drop(c);
            if g_dead.take().is_some() {
                takeovers += 1;
            }
            parent_joins += 1;
        }

        let group = match (g_holder, rng.range(0, 4)) {
            (None, 0 | 1) => GroupPlan::Join,
            (Some(h), 0) => GroupPlan::Probe(h),
            _ => GroupPlan::None,
        };
        if group == GroupPlan::Join {
            if let Some(dead) = g_dead {
                // Its killer still runs: the word left in the slot reads as dead all the same.
                assert_eq!(
                    holder(&q, "g"),
                    Some((dead, false)),
                    "round {round}: g's holder after its child was killed"
                );
            }
        }
        let plan = Plan {
            id: round,
            // Short runs that end before the kill, and long ones that fill the ring and wait
            // for room (the parent reads only between its forks and kills).
            count: if rng.range(0, 2) == 0 {
                rng.range(1, 50)
            } else {
                rng.range(200, 3000)
            } as u32,
            group,
            parent,
            log: dir.path().join(format!("k{round}")),
        };
        let kill_early = rng.range(0, 4) == 0;

        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        assert_eq!(threads(), 1, "the parent must be single-threaded to fork");
        // SAFETY: this process has no thread but shmq's watcher (checked above), which holds
        // nothing a fork could copy locked, so the child may go on using everything of it;
        // it never returns from `forked_child`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: the child's copy of the read end, which it does not use.
            unsafe { libc::close(fds[0]) };
            forked_child(&q, pp, all.c, &plan, fds[1]);
        }
        // SAFETY: both ends are ours: the write end is the child's now, the read end becomes
        // an `OwnedFd` and is made non-blocking.
        let fd = unsafe {
            libc::close(fds[1]);
            libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK);
            OwnedFd::from_raw_fd(fds[0])
        };
        let mut kid = Kid {
            pid,
            id: round,
            fd,
            buf: Vec::new(),
            lines: Vec::new(),
            reaped: false,
        };

        if kill_early {
            // A kill at a random moment of the child's start: opening its producer, joining,
            // publishing.
            std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
            reap(&mut kid, &mut g_holder, &mut g_dead);
            if group == GroupPlan::Join {
                // It may have taken g, with or without telling: whoever holds it is dead.
                let h = holder(&q, "g");
                assert!(
                    !matches!(h, Some((_, true))),
                    "round {round}: g held by {h:?}"
                );
                if kid.has("G") && g_dead.is_some() {
                    takeovers += 1;
                }
                g_dead = h.map(|(pid, _)| pid);
            }
            early += 1;
        } else {
            kid.wait_for("its producer and group", |k| {
                k.has("P")
                    && match group {
                        GroupPlan::None => true,
                        GroupPlan::Join => k.has("G"),
                        GroupPlan::Probe(_) => k.lines.iter().any(|l| l.starts_with("B ")),
                    }
            });
            match group {
                GroupPlan::None => {}
                GroupPlan::Join => {
                    assert_eq!(
                        holder(&q, "g"),
                        Some((pid as u32, true)),
                        "round {round}: g's holder is the child that joined"
                    );
                    if g_dead.take().is_some() {
                        takeovers += 1;
                    }
                    g_holder = Some(pid as u32);
                }
                GroupPlan::Probe(h) => {
                    assert!(
                        kid.has(&format!("B {h}")),
                        "round {round}: probe of g: {:?}, holder {h}",
                        kid.lines
                    );
                    probes += 1;
                }
            }
            kids.push(kid);
            // Every live child reported its producer: each holds one slot, the parent one.
            assert_eq!(
                q.live_producers(),
                1 + kids.len() as u32,
                "round {round}: live producers with {} children alive",
                kids.len()
            );
            max_alive_checked = max_alive_checked.max(kids.len());
        }

        // Kill some children, at least enough to keep MAX_ALIVE alive.
        while kids.len() > MAX_ALIVE || (!kids.is_empty() && rng.range(0, 3) == 0) {
            std::thread::sleep(Duration::from_micros(rng.range(0, 2000)));
            let mut victim = kids.swap_remove(rng.range(0, kids.len() as u64) as usize);
            reap(&mut victim, &mut g_holder, &mut g_dead);
            assert_eq!(
                q.live_producers(),
                1 + kids.len() as u32,
                "round {round}: live producers after a kill"
            );
        }
        all.read(Duration::ZERO);
    }
    for kid in &mut kids {
        reap(kid, &mut g_holder, &mut g_dead);
    }
    kids.clear();
    assert_eq!(q.live_producers(), 1, "only the parent's producer is left");
    let last = q.tail_offset();
    let deadline = Instant::now() + Duration::from_secs(30);
    while all.c.position() < last {
        assert!(
            Instant::now() < deadline,
            "records before {last} never came"
        );
        all.read(Duration::from_millis(200));
    }
    assert!(all.c.poll(Some(Duration::ZERO)).unwrap().is_none());
    drop(pp);
    assert_eq!(q.live_producers(), 0, "no producer is left");

    assert_eq!(all.delivered(PARENT_ID), parent_seq, "the parent's records");
    let mut acked_total = 0;
    for id in 0..FORK_ROUNDS {
        let acked = common::read_log(&dir.path().join(format!("k{id}"))).len() as u32;
        let got = all.delivered(id);
        // At most the one publish in flight at the kill is delivered without its ack.
        assert!(
            got == acked || got == acked + 1,
            "child {id}: {acked} publishes acknowledged, {got} delivered"
        );
        acked_total += acked;
    }
    println!(
        "  {FORK_ROUNDS} children forked and killed ({early} early, {mid_publish} before \
         they finished publishing); {acked_total} acknowledged records delivered; g taken \
         over from a dead child {takeovers} times ({parent_joins} parent joins), busy for {probes} \
         probes; up to {max_alive_checked} children alive at once; {:.1?}",
        started.elapsed()
    );
    assert!(
        mid_publish >= 100,
        "too few kills mid-publish: {mid_publish}"
    );
    assert!(takeovers >= 10, "too few takeovers of g: {takeovers}");
    assert!(probes >= 10, "too few probes of a busy g: {probes}");
    assert!(
        max_alive_checked > MAX_ALIVE,
        "never had {} siblings alive at once",
        MAX_ALIVE + 1
    );
}

// ------------------------------------------------------------------------------------------
// 2. The stalled producer.

const A_ID: u32 = 1;
const B_ID: u32 = 2;
/// A's publishes; the third one stops itself.
const A_COUNT: u32 = 5;
const A_STOPPED_SEQ: u32 = 2;
/// B's publishes: with records of 104 bytes on average, about ten laps of a 4 KiB ring.
const B_COUNT: u32 = 300;
/// B's publish timeout: each expiry while it waits for room is one `t` line in its log.
const B_TIMEOUT: Duration = Duration::from_millis(20);
const CAPACITY: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Plain,
    /// B, and a checker, out of file descriptors.
    NoDescriptors,
    /// B, and a checker, each in a pid namespace of its own.
    PidNamespace,
}

/// Child (A): publishes `A_COUNT` records as producer `A_ID`; `SHMQ_STOP_AT` stops it inside
/// one of them. Logs `ok <seq> <offset>` or `aborted <seq> <offset>` for each.
fn stalled_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut log = open_log();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_secs(60)));
    for seq in 0..A_COUNT {
        let line = match p.publish(&common::payload(A_ID, seq, MAX)) {
            Ok(o) => format!("ok {seq} {o}"),
            Err(Error::Aborted { offset }) => format!("aborted {seq} {offset}"),
            Err(e) => panic!("A: publish {seq}: {e}"),
        };
        common::log_line(&mut log, &line);
    }
}

/// Child (B): makes its producer, runs out of descriptors if `SHMQ_EXHAUST` is 1, then
/// publishes `B_COUNT` records as producer `B_ID` with a short publish timeout. Logs `ready`,
/// then `ok <seq> <offset>` per publish and `t` per timeout.
fn lapper_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut log = open_log();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(B_TIMEOUT));
    let _held = (common::arg::<u32>("SHMQ_EXHAUST") == 1).then(|| exhaust_descriptors(0));
    check_blind_to(common::arg("SHMQ_OTHER_PID"));
    common::log_line(&mut log, "ready");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq = 0;
    while seq < B_COUNT {
        assert!(Instant::now() < deadline, "B: gave up at seq {seq}");
        match p.publish(&common::payload(B_ID, seq, MAX)) {
            Ok(o) => {
                common::log_line(&mut log, &format!("ok {seq} {o}"));
                seq += 1;
            }
            Err(Error::Timeout { .. }) => common::log_line(&mut log, "t"),
            Err(e) => panic!("B: publish {seq}: {e}"),
        }
    }
}

/// Child (checker): runs out of descriptors if `SHMQ_EXHAUST` is 1, then prints how many
/// producers are live and whether group `g`'s holder is.
fn counter_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let _held = (common::arg::<u32>("SHMQ_EXHAUST") == 1).then(|| exhaust_descriptors(0));
    check_blind_to(common::arg("SHMQ_OTHER_PID"));
    let g = holder(&q, "g").expect("g has a holder");
    println!("producers {} g_alive {}", q.live_producers(), g.1);
}

fn open_log() -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(common::arg::<String>("SHMQ_LOG"))
        .unwrap()
}

/// Opens `/dev/null` until the process has no descriptor left but `spare`; the returned
/// files keep them taken. The soft limit is first lowered to just above the highest open
/// descriptor, so that takes a handful of opens.
fn exhaust_descriptors(spare: usize) -> Vec<File> {
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit on our stack.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = (highest + 1 + 4).min(lim.rlim_cur);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    for _ in 0..spare {
        held.pop();
    }
    if spare == 0 {
        // What the old liveness check did, and how it failed here.
        let e = std::fs::read_to_string("/proc/self/stat").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
    }
    held
}

/// In a pid namespace of our own, the other process's pid is nowhere in our `/proc`: a
/// liveness check by pid would call it dead. Outside one, it is there. 0: no such process.
fn check_blind_to(other: u32) {
    if other == 0 {
        return;
    }
    let seen = Path::new(&format!("/proc/{other}")).exists();
    let namespaced = std::process::id() == 1;
    assert_eq!(
        seen,
        !namespaced,
        "pid {other} in /proc of pid {}",
        std::process::id()
    );
}

/// Child: prints its pid (1 in a new pid namespace) and whether `/proc/<SHMQ_OTHER_PID>`
/// exists where it runs.
fn ns_probe_role() {
    let other: u32 = common::arg("SHMQ_OTHER_PID");
    println!(
        "pid {} sees {}",
        std::process::id(),
        Path::new(&format!("/proc/{other}")).exists()
    );
}

/// Fails the test (never skips it) unless `unshare` can run a child of this binary in a pid
/// namespace of its own with its own `/proc`, where pid `other` does not exist.
fn require_pid_namespace(other: u32) {
    let out = common::command_via(
        UNSHARE,
        "ns_probe",
        &[("SHMQ_OTHER_PID", other.to_string())],
    )
    .stderr(std::process::Stdio::piped())
    .output()
    .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", UNSHARE.join(" ")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "pid 1 sees false",
        "this test needs `{}` (root or CAP_SYS_ADMIN, util-linux unshare) to run a child in a \
         pid namespace of its own; it gave {}, stdout {stdout:?}, stderr {:?}",
        UNSHARE.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Children of one test, SIGKILLed and reaped if the test fails half-way.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn add(&mut self, c: Child) -> usize {
        self.0.push(c);
        self.0.len() - 1
    }

    fn pid(&self, i: usize) -> libc::pid_t {
        self.0[i].id() as libc::pid_t
    }

    /// The exit status, if the child has exited.
    fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        self.0[i].try_wait().unwrap()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A log's complete lines.
fn log_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(str::to_string)
        .collect()
}

/// `(seq, offset)` of each `ok` line, and how many `t` lines.
fn acks(lines: &[String]) -> (Vec<(u32, u64)>, usize) {
    let mut ok = Vec::new();
    let mut timeouts = 0;
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w[..] {
            ["ok", seq, off] => ok.push((seq.parse().unwrap(), off.parse().unwrap())),
            ["t"] => timeouts += 1,
            _ => {}
        }
    }
    (ok, timeouts)
}

fn stalled(variant: Variant) {
    for point in ["publish.after_claim", "publish.before_header"] {
        stalled_at(variant, point);
    }
}

fn stalled_at(variant: Variant, point: &str) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(CAPACITY)).unwrap();
    let mut r = Reader::new(q.consumer("g").unwrap());
    let mut kids = Children::default();
    let path_s = path.display().to_string();
    let log = |n: &str| dir.path().join(n);

    // A stops itself inside its third publish.
    let a = kids.add(common::spawn(
        "stalled",
        &[
            ("SHMQ_PATH", path_s.clone()),
            ("SHMQ_LOG", log("a").display().to_string()),
            ("SHMQ_STOP_AT", format!("{point}:{}", A_STOPPED_SEQ + 1)),
        ],
    ));
    let a_pid = kids.pid(a);
    common::wait_stopped(a_pid, "A");
    if variant == Variant::PidNamespace {
        require_pid_namespace(a_pid as u32);
    }
    assert_eq!(
        log_lines(&log("a")),
        ["ok 0 0", "ok 1 1"],
        "{point}: A's log"
    );
    let a_offset = 2;
    r.skip.entry(A_ID).or_default().insert(A_STOPPED_SEQ);

    // The reader reads A's two records and gives the third up after the claim timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.c.position() <= a_offset {
        assert!(
            Instant::now() < deadline,
            "{point}: A's record never aborted"
        );
        r.read(Duration::from_millis(50));
    }
    assert_eq!(r.got.len(), 2);

    // B starts, in the variant's situation, and soon waits behind A's claim.
    let (wrapper, exhaust): (&[&str], u32) = match variant {
        Variant::Plain => (&[], 0),
        Variant::NoDescriptors => (&[], 1),
        Variant::PidNamespace => (UNSHARE, 0),
    };
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("SHMQ_PATH", path_s.clone()),
            ("SHMQ_EXHAUST", exhaust.to_string()),
            ("SHMQ_OTHER_PID", a_pid.to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let b = kids.add(
        common::command_via(
            wrapper,
            "lapper",
            &env(&[("SHMQ_LOG", log("b").display().to_string())]),
        )
        .spawn()
        .unwrap(),
    );
    let footprints = |acks: &[(u32, u64)]| -> u64 {
        acks.iter()
            .map(|&(seq, _)| footprint(common::payload(B_ID, seq, MAX).len()))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (b_acks, b_timeouts) = loop {
        r.read(Duration::from_millis(10));
        let (ok, t) = acks(&log_lines(&log("b")));
        // Enough waiting to know B waits for A, or B went more than a ring past A's claim.
        if t >= 10 || footprints(&ok) > CAPACITY {
            break (ok, t);
        }
        if let Some(s) = kids.exited(b) {
            panic!("{point}: B ended early ({s}) with {} acks", ok.len());
        }
        assert!(
            Instant::now() < deadline,
            "{point}: B neither published nor waited"
        );
    };
    let a_len = common::payload(A_ID, A_STOPPED_SEQ, MAX).len();
    let within_reach = |acks: &[(u32, u64)], when: &str| {
        let bytes = footprints(acks);
        assert!(
            bytes + footprint(a_len) <= CAPACITY,
            "{variant:?} {point}: {when}, B published {} records ({bytes} bytes) while A was \
             stopped: more than one ring past A's claim, so it judged A dead",
            acks.len()
        );
    };
    within_reach(&b_acks, "waiting");
    assert!(b_timeouts >= 10);

    // A checker in B's situation counts A and B as live, and the reader's lease too.
    let checker = common::command_via(wrapper, "counter", &env(&[]))
        .spawn()
        .unwrap();
    let (out, status) = common::wait(checker, Duration::from_secs(30), "checker");
    assert!(status.success(), "{point}: checker failed: {out}");
    assert_eq!(
        out.trim(),
        "producers 2 g_alive true",
        "{variant:?} {point}: the checker's view"
    );
    assert_eq!(q.live_producers(), 2);

    // The reader pauses: had B lapped A's claim, its records would now fill the whole ring,
    // unread, and A's late writes would land in them.
    std::thread::sleep(Duration::from_millis(300));
    let (b_acks, _) = acks(&log_lines(&log("b")));
    within_reach(&b_acks, "with the reader paused");
    let b_while_stopped = b_acks.len();

    // A continues: its publish was aborted, and says so.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(a_pid, libc::SIGCONT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines(&log("a")).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "{point}: A did not finish its publish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        log_lines(&log("a"))[2],
        format!("aborted {A_STOPPED_SEQ} {a_offset}"),
        "{point}: A's stalled publish"
    );

    // Everything else goes through: B laps the ring many times.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut a_done, mut b_done) = (None, None);
    while a_done.is_none() || b_done.is_none() {
        assert!(Instant::now() < deadline, "{point}: A or B did not finish");
        r.read(Duration::from_millis(20));
        a_done = a_done.or_else(|| kids.exited(a));
        b_done = b_done.or_else(|| kids.exited(b));
    }
    assert!(a_done.unwrap().success(), "{point}: A failed");
    assert!(b_done.unwrap().success(), "{point}: B failed");
    let last = q.tail_offset();
    while r.c.position() < last {
        assert!(
            Instant::now() < deadline,
            "{point}: records before {last} never came"
        );
        r.read(Duration::from_millis(50));
    }

    // Every delivered record is exactly an acknowledged one, at its offset, and nothing else.
    let mut acked: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    let a_lines = log_lines(&log("a"));
    assert_eq!(
        a_lines.len(),
        A_COUNT as usize,
        "{point}: A's log {a_lines:?}"
    );
    for (id, name) in [(A_ID, "a"), (B_ID, "b")] {
        for (seq, offset) in acks(&log_lines(&log(name))).0 {
            assert!(
                acked.insert(offset, (id, seq)).is_none(),
                "offset {offset} twice"
            );
        }
    }
    assert!(
        !r.got.contains_key(&a_offset),
        "the aborted record was delivered"
    );
    assert_eq!(
        r.got, acked,
        "{point}: delivered records differ from acknowledged ones"
    );
    let b_total = footprints(&acks(&log_lines(&log("b"))).0);
    assert_eq!(r.delivered(B_ID), B_COUNT);
    assert!(b_total >= 8 * CAPACITY, "B lapped the ring too few times");
    println!(
        "  {variant:?}, A stopped at {point}: B waited ({b_timeouts}+ timeouts, \
         {b_while_stopped} records while A was stopped), A's publish aborted, {} records \
         read intact ({:.1} laps); {:.1?}",
        r.got.len(),
        b_total as f64 / CAPACITY as f64,
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------
// 3. A stopped group member.

/// Child: joins group `h`, says so, and stops itself until the test kills it.
fn member_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let _c = q.subscribe("h", &non_gating()).unwrap();
    println!("joined");
    // SAFETY: kill(2) on our own pid; SIGSTOP stops the process until SIGCONT or SIGKILL.
    unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Child: keeps `SHMQ_SPARE` descriptors free, then tries to join group `h`; prints `ok`,
/// `busy <pid>` or `err <error>`.
fn joiner_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let _held = exhaust_descriptors(common::arg("SHMQ_SPARE"));
    check_blind_to(common::arg("SHMQ_OTHER_PID"));
    match q.subscribe("h", &non_gating()) {
        Ok(_) => println!("ok"),
        Err(Error::GroupBusy { pid, .. }) => println!("busy {pid}"),
        Err(e) => println!("err {e}"),
    }
}

fn stopped_member_keeps_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(CAPACITY)).unwrap();
    drop(q.subscribe("h", &non_gating()).unwrap());
    let path_s = path.display().to_string();
    let mut kids = Children::default();
    let m = kids.add(common::spawn("member", &[("SHMQ_PATH", path_s.clone())]));
    let m_pid = kids.pid(m);
    common::wait_stopped(m_pid, "the member");
    assert_eq!(holder(&q, "h"), Some((m_pid as u32, true)));
    require_pid_namespace(m_pid as u32);

    // A joiner checks that `member`'s pid is visible where it runs unless it is in a pid
    // namespace (0 once the member is dead).
    let join = |wrapper: &[&str], spare: u32, member: libc::pid_t| -> String {
        let child = common::command_via(
            wrapper,
            "joiner",
            &[
                ("SHMQ_PATH", path_s.clone()),
                ("SHMQ_SPARE", spare.to_string()),
                ("SHMQ_OTHER_PID", member.to_string()),
            ],
        )
        .spawn()
        .unwrap();
        let (out, status) = common::wait(child, Duration::from_secs(30), "joiner");
        assert!(status.success(), "joiner failed: {out}");
        out.trim().to_string()
    };
    let busy = format!("busy {m_pid}");
    let mut outcomes = Vec::new();
    for (wrapper, spare) in [(&[][..], 1), (&[][..], 0), (UNSHARE, 1), (UNSHARE, 0)] {
        let got = join(wrapper, spare, m_pid);
        let where_ = if wrapper.is_empty() {
            "here"
        } else {
            "in a pid namespace"
        };
        // One spare descriptor is what the joiner's own lease needs; without it the join
        // fails before it looks at the holder. Either way it must not take the group.
        if spare == 1 {
            assert_eq!(got, busy, "a joiner {where_} with one spare descriptor");
        } else {
            assert!(
                got.starts_with("err ") && got.contains("Too many open files"),
                "a joiner {where_} with no spare descriptor: {got}"
            );
        }
        assert_eq!(
            holder(&q, "h"),
            Some((m_pid as u32, true)),
            "the stopped member still holds h after a joiner {where_} with {spare} spare"
        );
        outcomes.push(got);
    }

    // Once the member is dead, a joiner short of descriptors takes the group over.
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(m_pid, libc::SIGKILL);
        libc::waitpid(m_pid, std::ptr::null_mut(), 0);
    }
    kids.0.clear();
    assert_eq!(holder(&q, "h"), Some((m_pid as u32, false)));
    assert_eq!(join(&[], 1, 0), "ok", "taking over a dead member's group");
    assert_eq!(join(UNSHARE, 1, 0), "ok", "the same from a pid namespace");
    println!("  joiners of a stopped member's group: {outcomes:?}; after its death: ok");
}

// ------------------------------------------------------------------------------------------
// 4. Takeovers and forks at the wrong moment.

/// Session timeout of the members taken over below: short, for a quick takeover.
const SHORT_SESSION: Duration = Duration::from_millis(400);
/// How long the successor of a member taken over asleep polls for its first record.
const SUCCESSOR_POLL: Duration = Duration::from_secs(30);
/// Within this of a publish, a sleeping successor must have its record. A woken one gets it at
/// once; one whose wake-up was lost gets it at the end of its sleep, capped at 1 s (at the end
/// of its poll, `SUCCESSOR_POLL`, before the cap existed).
const WOKEN_WITHIN: Duration = Duration::from_secs(5);
/// Children forked while a thread starts and stops the flusher, and how long each may take.
const FLUSHER_FORKS: u32 = 200;
const FORKED_CHILD_LIMIT: Duration = Duration::from_secs(20);

/// The data-waiters bitmap (FORMAT.md, "Mutable words"): bit `g` is set while a member of
/// group slot `g` sleeps in a poll (or is about to).
fn data_waiters(file: &File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, common::format::DATA_WAITERS_AT)
        .unwrap();
    u64::from_le_bytes(word)
}

/// Stops child `pid` while it sleeps in a poll: flagged under `bit` in the data-waiters bitmap.
/// Stopped between a wake-up and its next sleep instead, it continues and is stopped again.
fn stop_asleep(pid: libc::pid_t, header: &File, bit: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        common::wait_until(&format!("{what} asleep"), Duration::from_secs(30), || {
            data_waiters(header) & bit != 0
        });
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        common::wait_stopped(pid, what);
        if data_waiters(header) & bit != 0 {
            return;
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        assert!(Instant::now() < deadline, "{what} was never stopped asleep");
    }
}

/// The lines a child prints, as they come (a thread reads them until the child ends).
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line from [`lines`], waiting up to `limit` for it.
fn next_line(lines: &std::sync::mpsc::Receiver<String>, limit: Duration, what: &str) -> String {
    lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{what}: no line within {limit:?} ({e})"))
}

/// Waits up to 30 s for child `i` to exit; panics unless it succeeded.
fn wait_success(kids: &mut Children, i: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = kids.exited(i) {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not end within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Child (sleeper): joins group `g` with a short session, says `joined`, then waits in polls
/// until one fails; prints `taken over` or the error.
fn sleeper_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let sub = Subscribe {
        session_timeout: Some(SHORT_SESSION),
        ..non_gating()
    };
    let mut c = q.subscribe("g", &sub).unwrap();
    println!("joined");
    loop {
        match c.poll(Some(Duration::from_secs(60))) {
            Ok(None) => {}
            Ok(Some(m)) => panic!("sleeper: record {} came", m.offset),
            Err(Error::TakenOver { .. }) => return println!("taken over"),
            Err(e) => return println!("error {e}"),
        }
    }
}

/// Child (successor): takes group `g` over once its member's session has expired, says
/// `joined`, then polls once for up to `SUCCESSOR_POLL`; prints `got <offset>`, `none` or the
/// error.
fn successor_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut c = join_when_free(&q, &non_gating());
    println!("joined");
    match c.poll(Some(SUCCESSOR_POLL)) {
        Ok(Some(m)) => println!("got {}", m.offset),
        Ok(None) => println!("none"),
        Err(e) => println!("error {e}"),
    }
}

/// Joins group `g`, retrying for up to 30 s while its holder is within its session.
fn join_when_free(q: &Queue, sub: &Subscribe) -> Consumer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match q.subscribe("g", sub) {
            Ok(c) => return c,
            Err(Error::GroupBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("taking g over: {e}"),
        }
    }
}

/// A member taken over while it slept in a poll must not clear, when it wakes, the sleeper bit
/// its successor set: the bit belongs to the group slot, and producers wake only flagged
/// groups, so the successor would sleep through every record until its own timeout. Both are
/// stopped while flagged, so the bit is checked when only the old member can have touched it;
/// then the successor must be woken by a publish.
fn a_member_taken_over_asleep_leaves_its_successor_woken() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(CAPACITY)).unwrap();
    let header = File::open(&path).unwrap();
    let path_s = path.display().to_string();
    let mut kids = Children::default();
    let limit = Duration::from_secs(30);

    // The member joins g, sleeps in a poll, and is stopped there, flagged.
    let m = kids.add(common::spawn("sleeper", &[("SHMQ_PATH", path_s.clone())]));
    let m_lines = lines(&mut kids.0[m]);
    assert_eq!(next_line(&m_lines, limit, "the member"), "joined");
    common::wait_until("the member asleep", Duration::from_secs(30), || {
        data_waiters(&header) != 0
    });
    let bit = data_waiters(&header);
    assert_eq!(bit.count_ones(), 1, "one sleeping group: {bit:#x}");
    stop_asleep(kids.pid(m), &header, bit, "the member");

    // Past the member's session, the successor takes g over (which clears the bit) and sleeps
    // in its own poll, flagged under the same bit. It is stopped there too.
    let s = kids.add(common::spawn("successor", &[("SHMQ_PATH", path_s)]));
    let s_lines = lines(&mut kids.0[s]);
    assert_eq!(next_line(&s_lines, 2 * limit, "the successor"), "joined");
    stop_asleep(kids.pid(s), &header, bit, "the successor");

    // The member continues: it wakes, finds g taken and ends.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(kids.pid(m), libc::SIGCONT) }, 0);
    assert_eq!(next_line(&m_lines, limit, "the member"), "taken over");
    wait_success(&mut kids, m, "the member");
    let kept = data_waiters(&header) & bit != 0;

    // The successor continues, and a record is published: the successor must be woken.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(kids.pid(s), libc::SIGCONT) }, 0);
    let mut p = q.producer().unwrap();
    let sent = Instant::now();
    p.publish(b"wake up").unwrap();
    let got = next_line(&s_lines, SUCCESSOR_POLL + limit, "the successor's poll");
    let latency = sent.elapsed();
    println!(
        "  a member taken over asleep {} its successor's sleeper bit; the successor said \
         {got:?} {latency:.1?} after the publish; {:.1?}",
        if kept { "left" } else { "cleared" },
        started.elapsed()
    );
    assert!(
        kept,
        "the member taken over while asleep cleared its successor's sleeper bit on waking"
    );
    assert_eq!(got, "got 0", "the successor's poll");
    assert!(
        latency < WOKEN_WITHIN,
        "the successor got the record {latency:?} after its publish: it was not woken"
    );
}

/// Child (committer): joins gating group `g` with a short session, reads ten records and
/// commits the last; `SHMQ_STOP_AT=commit.before_store` stops it between its lease check and
/// its cursor CAS. Prints `commit <offset>: ok` or the error.
fn committer_role() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let sub = Subscribe {
        session_timeout: Some(SHORT_SESSION),
        ..Subscribe::default()
    };
    let mut c = q.subscribe("g", &sub).unwrap();
    let mut last = 0;
    for _ in 0..10 {
        last = c
            .poll(Some(Duration::from_secs(30)))
            .unwrap()
            .expect("a record")
            .offset;
    }
    match c.commit(last) {
        Ok(()) => println!("commit {last}: ok"),
        Err(e) => println!("commit {last}: {e}"),
    }
}

/// A member stopped inside a commit (after its lease check, before its cursor CAS) past its
/// session: its successor takes the gating group over at the committed offset, then the old
/// member's CAS lands and moves the cursor past records the successor has not read yet, so
/// producers may overwrite them. A record the successor holds must not change under it (it
/// copies and checks its reads until its own first commit).
fn a_commit_landing_after_a_takeover_never_changes_a_record_read() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(CAPACITY)).unwrap();
    drop(q.subscribe("g", &Subscribe::default()).unwrap()); // gating, from the first record
    let mut p = q.producer().unwrap();
    let record = |i: u8| [b'A' + i; 64];
    for i in 0..20 {
        p.publish(&record(i)).unwrap();
    }
    let mut kids = Children::default();
    let old = kids.add(common::spawn(
        "committer",
        &[
            ("SHMQ_PATH", path.display().to_string()),
            ("SHMQ_STOP_AT", "commit.before_store".into()),
        ],
    ));
    common::wait_stopped(kids.pid(old), "the old member");

    // Past the old member's session, the successor takes g over, at the committed offset 0.
    let mut j = join_when_free(&q, &Subscribe::default());
    assert_eq!(j.position(), 0);

    // The old member continues: its commit of records 0..=9 lands after the takeover.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(kids.pid(old), libc::SIGCONT) }, 0);
    let (out, status) = common::wait(
        kids.0.remove(old),
        Duration::from_secs(30),
        "the old member",
    );
    assert!(status.success(), "the old member failed: {out}");
    assert_eq!(
        (out.trim(), q.groups()[0].committed),
        ("commit 9: ok", 10),
        "the old member's commit landed after the takeover (the race under test)"
    );

    // The successor reads record 0 and holds it while producers fill the ring: with the
    // cursor at 10, they reuse record 0's bytes.
    let msg = j.poll(Some(Duration::ZERO)).unwrap().expect("record 0");
    assert_eq!((msg.offset, msg.payload), (0, &record(0)[..]));
    p.set_timeout(Some(Duration::ZERO));
    let mut more = 0;
    loop {
        match p.publish(&[b'z'; 64]) {
            Ok(_) => more += 1,
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("publish: {e}"),
        }
    }
    let now = msg.payload.to_vec();
    println!(
        "  record 0, read by the successor of a member whose commit landed late, holds {:?}.. \
         after {more} more publishes; {:.1?}",
        String::from_utf8_lossy(&now[..4]),
        started.elapsed()
    );
    assert!(
        q.oldest_offset() > 0,
        "the producers did not reuse record 0's bytes ({more} publishes)"
    );
    assert!(
        now == record(0),
        "record 0 changed under the successor holding it: it reads {:?}..",
        String::from_utf8_lossy(&now[..4])
    );
}

/// A record claimed in place before a fork is the parent's: in the child, dropping the claim
/// (what returning or unwinding there does) must leave it alone, and committing it fails with
/// `Forked`. The parent then commits it, and it is delivered.
fn a_claim_open_across_a_fork_stays_the_parents() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::create(common::queue_path(&dir), &options(CAPACITY)).unwrap();
    let mut p = q.producer().unwrap();
    let mut claimed = p.claim(8).unwrap();
    claimed.as_mut_slice().copy_from_slice(b"parent!!");
    let parent = std::process::id();
    let limit = Duration::from_secs(30);

    // One child drops its copy of the claim.
    // SAFETY: the child only drops the claim and ends in `in_child`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        common::in_child(move || {
            drop(claimed);
            0
        });
    }
    let dropped = common::reap(pid, limit);
    // Another tries to commit it.
    // SAFETY: the child only commits the claim and ends in `in_child`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        common::in_child(move || match claimed.commit() {
            Err(Error::Forked { pid, .. }) if pid == parent => 0,
            Ok(_) => 2,
            Err(Error::Aborted { .. }) => 3,
            Err(_) => 4,
        });
    }
    let child_commit = match common::reap(pid, limit) {
        Some(0) => "Forked".to_string(),
        Some(2) => "Ok".into(),
        Some(3) => "Aborted".into(),
        other => format!("{other:?}"),
    };
    let ours = claimed.commit();
    let mut c = q.consumer("r").unwrap();
    let delivered = match c.poll(Some(Duration::from_millis(100))) {
        Ok(Some(m)) => Ok((m.offset, m.payload.to_vec())),
        other => Err(format!("{:?}", other.map(|m| m.map(|m| m.offset)))),
    };
    println!(
        "  a claim open across a fork: the child's drop {dropped:?}, the child's commit \
         {child_commit}, the parent's commit {ours:?}"
    );
    assert_eq!(dropped, Some(0), "the child that dropped the claim");
    assert_eq!(ours.ok(), Some(0), "the parent's commit after its children");
    assert_eq!(
        delivered,
        Ok((0, b"parent!!".to_vec())),
        "what is delivered"
    );
    assert_eq!(
        child_commit, "Forked",
        "the parent's claim committed in a child"
    );
}

/// A thread that makes and drops producers of a Batch queue until stopped: each one starts
/// this process's flusher and stops it again.
struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Churn {
    fn start(q: &Queue) -> Churn {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (q, flag) = (q.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            // Relaxed: a stop flag; the join orders everything else.
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                drop(q.producer().expect("the churning thread's producer"));
                rounds += 1;
            }
            rounds
        });
        Churn {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread; returns how many producers it made.
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        thread.join().expect("the churning thread panicked")
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fork while another thread starts or stops the flusher (a Batch queue's, one per process)
/// must leave the child nothing locked: its first producer starts a flusher of its own. Each
/// child makes a producer and ends; none may hang.
fn a_fork_while_a_thread_starts_the_flusher_never_hangs_the_child() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: shmq::Durability::Batch {
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(5),
        },
        ..options(CAPACITY)
    };
    let q = Queue::create(common::queue_path(&dir), &opts).unwrap();
    // What is set up once per process (fork handlers, crash points) is set up before any
    // other thread runs, so no child inherits it half-made.
    q.producer().unwrap().publish(b"set up").unwrap();
    let churn = Churn::start(&q);
    let mut hung = None;
    for i in 0..FLUSHER_FORKS {
        // SAFETY: the child only makes a producer of the inherited queue (the code under test)
        // and ends in `in_child`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            common::in_child(|| match q.producer() {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("forked child: {e}");
                    1
                }
            });
        }
        match common::reap(pid, FORKED_CHILD_LIMIT) {
            Some(0) => {}
            Some(code) => panic!("forked child {i}: exit code {code}"),
            None => {
                hung = Some(i);
                break;
            }
        }
    }
    let rounds = churn.stop();
    println!(
        "  {} children forked while a thread made {rounds} producers of a Batch queue: {}; \
         {:.1?}",
        hung.map_or(FLUSHER_FORKS, |i| i + 1),
        match hung {
            None => "none hung".to_string(),
            Some(i) => format!("child {i} hung"),
        },
        started.elapsed()
    );
    assert!(
        hung.is_none(),
        "a child forked while a thread started or stopped the flusher did not make its \
         producer within {FORKED_CHILD_LIMIT:?}"
    );
    assert!(rounds >= 20, "the thread made only {rounds} producers");
}
