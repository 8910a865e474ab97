//! Topics across processes: per-key order with 4 producer and 3 consumer processes in one
//! group, and rebalancing when a member is SIGKILLed and when one joins.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use shmq::{partition_for_key, Error, MemberOptions, Options, Topic, TopicOptions};

const PARTITIONS: u32 = 8;
const GROUP: &str = "orders";
/// The members' heartbeat interval: partitions move within one or two of these.
const HEARTBEAT: Duration = Duration::from_millis(50);
/// Generous: a member starved of CPU on a loaded machine must not be counted out.
const SESSION: Duration = Duration::from_secs(2);
/// Per-key test: every producer publishes `SEQS` records for each of `KEYS` keys.
const PRODUCERS: u32 = 4;
const KEYS: u32 = 1000;
const SEQS: u32 = 5;
/// Rebalance test: keys the single producer cycles through.
const REBALANCE_KEYS: u64 = 200;
/// Longest wait for any phase; a stuck process fails the test instead of hanging it.
const PHASE: Duration = Duration::from_secs(30);

fn main() {
    match common::role().as_deref() {
        Some("producer") => keyed_producer(),
        Some("paced_producer") => paced_producer(),
        Some("member") => member(),
        Some("join_and_leave") => join_and_leave(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            (
                "per_key_order_8_partitions_4_producers_3_members",
                per_key_order,
            ),
            ("rebalance_on_kill_and_on_join", rebalance),
            ("a_stopped_member_is_replaced_and_fenced", stopped_member),
            (
                "membership_survives_a_kill_at_every_crash_point",
                crash_points,
            ),
        ]),
    }
}

fn key(k: u64) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// A value naming its producer, key and sequence number.
fn value(producer: u32, k: u64, seq: u64) -> Vec<u8> {
    [producer as u64, k, seq]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

fn topic_options() -> TopicOptions {
    TopicOptions {
        partitions: PARTITIONS,
        queue: Options {
            capacity: 1 << 18,
            max_message: 256,
            ..Options::default()
        },
    }
}

/// Child: publishes `SEQS` records for every key, sequence-major, so producers interleave.
fn keyed_producer() {
    let topic = Topic::open(common::arg::<String>("SHMQ_TOPIC")).unwrap();
    let id: u32 = common::arg("SHMQ_ID");
    let mut p = topic.producer().unwrap();
    for seq in 0..SEQS as u64 {
        for k in 0..KEYS as u64 {
            let sent = p.publish_keyed(&key(k), &value(id, k, seq)).unwrap();
            assert_eq!(sent.partition, partition_for_key(&key(k), PARTITIONS));
        }
    }
}

/// Child: publishes keyed records (key `i mod REBALANCE_KEYS`, sequence `i / REBALANCE_KEYS`)
/// at a moderate pace until the stop file exists, then prints how many.
fn paced_producer() {
    let topic = Topic::open(common::arg::<String>("SHMQ_TOPIC")).unwrap();
    let stop = PathBuf::from(common::arg::<String>("SHMQ_STOP"));
    let mut p = topic.producer().unwrap();
    let mut i = 0u64;
    loop {
        let k = i % REBALANCE_KEYS;
        p.publish_keyed(&key(k), &value(0, k, i / REBALANCE_KEYS))
            .unwrap();
        i += 1;
        if i.is_multiple_of(50) {
            if stop.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    println!("{i}");
}

/// Child: a group member. Logs `partition offset producer key seq` for every record (one
/// write(2) each, so a SIGKILL leaves whole lines) and then commits it; exits once the stop
/// file exists and a poll came back empty.
fn member() {
    let topic = Topic::open(common::arg::<String>("SHMQ_TOPIC")).unwrap();
    let stop = PathBuf::from(common::arg::<String>("SHMQ_STOP"));
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(common::arg::<String>("SHMQ_LOG"))
        .unwrap();
    let options = MemberOptions {
        heartbeat_interval: HEARTBEAT,
        session_timeout: SESSION,
        ..MemberOptions::default()
    };
    let mut c = topic.subscribe(GROUP, &options).unwrap();
    loop {
        let Some(m) = c.poll(Some(Duration::from_millis(100))).unwrap() else {
            if stop.exists() {
                return;
            }
            continue;
        };
        let word = |i: usize| u64::from_le_bytes(m.value[8 * i..8 * i + 8].try_into().unwrap());
        let (producer, k, seq) = (word(0), word(1), word(2));
        assert_eq!(
            m.key,
            Some(&key(k)[..]),
            "the key comes back with the record"
        );
        let (partition, offset) = (m.partition, m.offset);
        common::log_line(
            &mut log,
            &format!("{partition} {offset} {producer} {k} {seq}"),
        );
        match c.commit(partition, offset) {
            // Its partition was taken while it was stopped (SIGSTOP): the new holder
            // delivers the record again, and this member carries on with the others.
            Ok(()) | Err(shmq::Error::TakenOver { .. }) => {}
            Err(e) => panic!("commit: {e}"),
        }
    }
}

fn spawn_member(dir: &Path, stop: &Path, log: &Path) -> Child {
    common::spawn(
        "member",
        &[
            ("SHMQ_TOPIC", dir.display().to_string()),
            ("SHMQ_STOP", stop.display().to_string()),
            ("SHMQ_LOG", log.display().to_string()),
        ],
    )
}

/// Who holds each partition now (`None`: nobody alive).
fn holders(topic: &Topic) -> Vec<Option<u32>> {
    topic
        .info()
        .iter()
        .map(|p| {
            p.groups
                .iter()
                .find(|g| g.name == GROUP && g.holder_alive)
                .and_then(|g| g.holder)
        })
        .collect()
}

/// Waits until every partition is held by one of `members` and each holds a fair share
/// (`PARTITIONS / members`, rounded down or up); returns how long it took.
fn wait_fair(topic: &Topic, members: &[u32]) -> Duration {
    let start = Instant::now();
    let fair_low = PARTITIONS as usize / members.len();
    loop {
        let h = holders(topic);
        let counts: Vec<usize> = members
            .iter()
            .map(|m| h.iter().filter(|x| **x == Some(*m)).count())
            .collect();
        if h.iter()
            .all(|x| x.is_some_and(|pid| members.contains(&pid)))
            && counts.iter().all(|&c| c == fair_low || c == fair_low + 1)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PHASE,
            "no fair assignment to {members:?}: {h:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the group has committed everything published to every partition.
fn wait_drained(topic: &Topic) {
    let start = Instant::now();
    loop {
        let done = topic.info().iter().all(|p| {
            p.groups
                .iter()
                .any(|g| g.name == GROUP && g.committed == p.tail_offset)
        });
        if done {
            return;
        }
        assert!(start.elapsed() < PHASE, "the group did not drain the topic");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One logged delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    partition: u32,
    offset: u64,
    producer: u64,
    key: u64,
    seq: u64,
}

fn read_deliveries(log: &Path) -> Vec<Delivery> {
    common::read_log(log)
        .into_iter()
        .map(|w| Delivery {
            partition: w[0] as u32,
            offset: w[1],
            producer: w[2],
            key: w[3],
            seq: w[4],
        })
        .collect()
}

/// Checks what every consumer saw: each one's offsets rise within a partition (unless
/// `rewinds`: a member that lost a partition and got it back restarts at its committed
/// offset); every offset of every partition was delivered; each key sits in its routed
/// partition; and in offset order each (key, producer) sequence is 0, 1, 2, … without a gap.
/// Returns, per partition, the consumers that delivered each offset.
fn check_deliveries(
    topic: &Topic,
    logs: &[Vec<Delivery>],
    rewinds: bool,
) -> Vec<BTreeMap<u64, Vec<usize>>> {
    let mut by_partition: Vec<BTreeMap<u64, Vec<usize>>> =
        vec![BTreeMap::new(); PARTITIONS as usize];
    let mut records: HashMap<(u32, u64), Delivery> = HashMap::new();
    for (who, log) in logs.iter().enumerate() {
        let mut last: HashMap<u32, u64> = HashMap::new();
        for d in log {
            if let Some(&prev) = last.get(&d.partition).filter(|_| !rewinds) {
                assert!(
                    d.offset > prev,
                    "consumer {who}: partition {} went from offset {prev} to {}",
                    d.partition,
                    d.offset
                );
            }
            last.insert(d.partition, d.offset);
            assert_eq!(
                d.partition,
                partition_for_key(&key(d.key), PARTITIONS),
                "key {} in the wrong partition",
                d.key
            );
            by_partition[d.partition as usize]
                .entry(d.offset)
                .or_default()
                .push(who);
            if let Some(first) = records.insert((d.partition, d.offset), *d) {
                assert_eq!(first, *d, "two different records at one offset");
            }
        }
    }
    for (p, info) in topic.info().iter().enumerate() {
        let seen: Vec<u64> = by_partition[p].keys().copied().collect();
        let all: Vec<u64> = (0..info.tail_offset).collect();
        assert!(seen == all, "partition {p}: records lost");
    }
    let mut sorted: Vec<Delivery> = records.into_values().collect();
    sorted.sort_by_key(|d| (d.partition, d.offset));
    let mut next: HashMap<(u64, u64), u64> = HashMap::new();
    for d in sorted {
        let n = next.entry((d.key, d.producer)).or_default();
        assert_eq!(
            d.seq, *n,
            "key {} of producer {}: out of order",
            d.key, d.producer
        );
        *n += 1;
    }
    by_partition
}

/// A topic in a fresh directory, with the paths of a run: the stop files of members and of the
/// paced producer, and one delivery log per member.
struct Run {
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
    /// The topic directory.
    tdir: PathBuf,
    /// The open topic.
    topic: Topic,
    /// Members exit once this exists and a poll comes back empty.
    stop: PathBuf,
    /// The paced producer stops once this exists.
    stop_producer: PathBuf,
    /// Member `i` logs its deliveries to `logs[i]`.
    logs: Vec<PathBuf>,
}

impl Run {
    /// A run with room for `members` member logs.
    fn new(members: usize) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("orders.topic");
        let topic = Topic::create(&tdir, &topic_options()).unwrap();
        Run {
            stop: dir.path().join("stop"),
            stop_producer: dir.path().join("stop-producer"),
            logs: (0..members)
                .map(|i| dir.path().join(format!("m{i}.log")))
                .collect(),
            tdir,
            topic,
            _dir: dir,
        }
    }

    /// Starts member `i`.
    fn member(&self, i: usize) -> Child {
        spawn_member(&self.tdir, &self.stop, &self.logs[i])
    }

    /// The end of a run: stops the producer, waits until the group has committed everything,
    /// stops the members (each must exit cleanly), and checks every member's log (see
    /// [`check_deliveries`]). Returns how many records were published and, per partition, who
    /// delivered each offset.
    fn finish(
        &self,
        producer: Child,
        members: Vec<Option<Child>>,
        rewinds: bool,
    ) -> (u64, Vec<BTreeMap<u64, Vec<usize>>>) {
        let Run {
            topic,
            stop,
            stop_producer,
            logs,
            ..
        } = self;
        std::fs::write(stop_producer, b"").unwrap();
        let (out, status) = common::wait(producer, PHASE, "producer");
        assert!(status.success(), "producer failed");
        let published: u64 = out.trim().parse().unwrap();
        wait_drained(topic);
        std::fs::write(stop, b"").unwrap();
        for (i, child) in members.into_iter().enumerate() {
            if let Some(child) = child {
                let (out, status) = common::wait(child, PHASE, &format!("member {i}"));
                assert!(status.success(), "member {i} failed: {out}");
            }
        }
        let deliveries: Vec<Vec<Delivery>> = logs.iter().map(|l| read_deliveries(l)).collect();
        let by_partition = check_deliveries(topic, &deliveries, rewinds);
        let distinct: usize = by_partition.iter().map(BTreeMap::len).sum();
        assert_eq!(
            distinct as u64, published,
            "every published record delivered"
        );
        (published, by_partition)
    }

    /// Starts the paced producer.
    fn paced_producer(&self) -> Child {
        common::spawn(
            "paced_producer",
            &[
                ("SHMQ_TOPIC", self.tdir.display().to_string()),
                ("SHMQ_STOP", self.stop_producer.display().to_string()),
            ],
        )
    }
}

fn per_key_order() {
    let run = Run::new(3);
    let Run {
        tdir,
        topic,
        stop,
        logs,
        ..
    } = &run;
    let members: Vec<Child> = (0..3).map(|i| run.member(i)).collect();
    let pids: Vec<u32> = members.iter().map(Child::id).collect();
    let settle = wait_fair(topic, &pids);
    println!("  3 members settled on a fair assignment in {settle:.1?}");
    let producers: Vec<Child> = (0..PRODUCERS)
        .map(|id| {
            common::spawn(
                "producer",
                &[
                    ("SHMQ_TOPIC", tdir.display().to_string()),
                    ("SHMQ_ID", id.to_string()),
                ],
            )
        })
        .collect();
    let start = Instant::now();
    for (i, child) in producers.into_iter().enumerate() {
        let (_, status) = common::wait(child, PHASE, &format!("producer {i}"));
        assert!(status.success(), "producer {i} failed");
    }
    wait_drained(topic);
    let elapsed = start.elapsed();
    std::fs::write(stop, b"").unwrap();
    for (i, child) in members.into_iter().enumerate() {
        let (_, status) = common::wait(child, PHASE, &format!("member {i}"));
        assert!(status.success(), "member {i} failed");
    }
    let deliveries: Vec<Vec<Delivery>> = logs.iter().map(|l| read_deliveries(l)).collect();
    let total = (PRODUCERS * KEYS * SEQS) as usize;
    let by_partition = check_deliveries(topic, &deliveries, false);
    let delivered: usize = deliveries.iter().map(Vec::len).sum();
    assert_eq!(delivered, total, "every record exactly once");
    assert_eq!(by_partition.iter().map(BTreeMap::len).sum::<usize>(), total);
    let shares: Vec<usize> = deliveries.iter().map(Vec::len).collect();
    println!("  {total} records published and consumed in order per key in {elapsed:.1?}; per member {shares:?}");
}

fn rebalance() {
    let run = Run::new(4);
    let topic = &run.topic;
    let mut members: Vec<Option<Child>> = (0..3).map(|i| Some(run.member(i))).collect();
    let mut pids: Vec<u32> = members.iter().flatten().map(Child::id).collect();
    wait_fair(topic, &pids);
    let producer = run.paced_producer();
    std::thread::sleep(Duration::from_millis(500));

    // Kill member 0 mid-stream: its partitions must move to the survivors.
    let victim = pids[0];
    let orphaned: Vec<usize> = (0..PARTITIONS as usize)
        .filter(|&p| holders(topic)[p] == Some(victim))
        .collect();
    assert!(!orphaned.is_empty(), "member 0 held nothing");
    common::kill(members[0].take().unwrap());
    let killed_at = Instant::now();
    pids.remove(0);
    let taken_over = loop {
        let h = holders(topic);
        if orphaned.iter().all(|&p| h[p].is_some_and(|x| x != victim)) {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < PHASE, "orphaned partitions not taken");
        std::thread::sleep(Duration::from_millis(1));
    };
    let settled = killed_at.elapsed() + wait_fair(topic, &pids);
    println!(
        "  SIGKILL of a member: its partitions {orphaned:?} taken over in {taken_over:.1?}, \
         fair assignment to 2 members after {settled:.1?} (heartbeat {HEARTBEAT:?})"
    );
    // With every member polling, a dead holder's partition moves at the next tick of its new
    // assignee, and a reshuffle between survivors takes one more. Scheduling slack on a busy
    // 2-core machine is added on top: 1 s, still well under the 2 s session timeout, so a
    // takeover that waited for the session to expire would fail here.
    let slack = Duration::from_secs(1);
    assert!(
        taken_over <= HEARTBEAT + slack,
        "takeover took {taken_over:?}"
    );
    assert!(
        settled <= 2 * HEARTBEAT + slack,
        "settling took {settled:?}"
    );

    std::thread::sleep(Duration::from_millis(300));
    // A new member joins and must get a fair share.
    members.push(Some(run.member(3)));
    let joined_at = Instant::now();
    pids.push(members[3].as_ref().unwrap().id());
    // Joining includes the child's start-up; measure from the moment it is a member.
    while !topic.members().iter().any(|m| m.pid == pids[2] && m.live) {
        assert!(joined_at.elapsed() < PHASE, "the new member never joined");
        std::thread::sleep(Duration::from_millis(1));
    }
    let share = wait_fair(topic, &pids);
    println!(
        "  a joining member holds a fair share {share:.1?} after joining ({:.1?} after spawn)",
        joined_at.elapsed()
    );
    assert!(
        share <= 2 * HEARTBEAT + slack,
        "join rebalance took {share:?}"
    );

    std::thread::sleep(Duration::from_millis(300));
    let (published, by_partition) = run.finish(producer, members, false);
    let deliveries: Vec<Vec<Delivery>> = run.logs.iter().map(|l| read_deliveries(l)).collect();
    // Duplicates: only the record the victim logged last in a partition, which it may not have
    // committed before it died; its taker resumed at the committed offset, so at most that one.
    let mut redelivered = 0;
    for (p, offsets) in by_partition.iter().enumerate() {
        let victim_last = deliveries[0]
            .iter()
            .filter(|d| d.partition == p as u32)
            .map(|d| d.offset)
            .max();
        for (&offset, who) in offsets {
            if who.len() > 1 {
                assert_eq!(who.len(), 2, "partition {p} offset {offset}: {who:?}");
                assert!(who.contains(&0), "a duplicate not from the victim: {who:?}");
                assert_eq!(
                    Some(offset),
                    victim_last,
                    "partition {p}: redelivered too much"
                );
                redelivered += 1;
            }
        }
    }
    println!(
        "  {published} records, all delivered in order per key; {redelivered} delivered again \
         after the kill (read but not yet committed by the victim)"
    );
}

/// Waits (bounded) until the kernel shows process `pid` stopped.
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + PHASE;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the parenthesized command name.
        let state = stat.rsplit(')').next().unwrap().trim_start().chars().next();
        if state == Some('T') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop: {stat}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A member stopped with SIGSTOP (alive, but its heartbeat goes stale): after the session
/// timeout the other member takes its partitions; when it continues, its commits on them are
/// fenced, it rejoins, and nothing is lost.
fn stopped_member() {
    let run = Run::new(2);
    let topic = &run.topic;
    let members: Vec<Child> = (0..2).map(|i| run.member(i)).collect();
    let pids: Vec<u32> = members.iter().map(Child::id).collect();
    wait_fair(topic, &pids);
    let producer = run.paced_producer();
    std::thread::sleep(Duration::from_millis(300));
    let orphaned: Vec<usize> = (0..PARTITIONS as usize)
        .filter(|&p| holders(topic)[p] == Some(pids[0]))
        .collect();
    /// Continues the stopped member however the test ends, so that it can exit.
    struct Continue(u32);
    impl Drop for Continue {
        fn drop(&mut self) {
            common::signal(self.0, libc::SIGCONT);
        }
    }
    common::signal(pids[0], libc::SIGSTOP);
    let stopped = Continue(pids[0]);
    let stopped_at = Instant::now();
    wait_stopped(pids[0]);
    // Its session runs from its last heartbeat, which on a loaded machine may be well before
    // the stop (a member stamps it only when it gets to run).
    let last_beat = topic
        .members()
        .iter()
        .find(|m| m.pid == pids[0] && m.group == GROUP)
        .map(|m| Instant::now() - m.heartbeat_age)
        .expect("the stopped member's slot");
    let taken_over = loop {
        let h = holders(topic);
        if orphaned.iter().all(|&p| h[p] == Some(pids[1])) {
            break stopped_at.elapsed();
        }
        assert!(stopped_at.elapsed() < PHASE, "a stopped member kept {h:?}");
        std::thread::sleep(Duration::from_millis(2));
    };
    println!(
        "  SIGSTOP of a member: its partitions {orphaned:?} taken over in {taken_over:.1?} \
         (session timeout {SESSION:?}, heartbeat {HEARTBEAT:?})"
    );
    // Not before its session expired (counted from its last heartbeat; 20 ms for the coarse
    // clocks), and within a tick or two after (1 s of slack for a busy machine).
    let since_beat = (stopped_at + taken_over).saturating_duration_since(last_beat);
    assert!(
        since_beat + Duration::from_millis(20) >= SESSION,
        "taken from a live member {since_beat:?} after its last heartbeat"
    );
    assert!(
        taken_over <= SESSION + 2 * HEARTBEAT + Duration::from_secs(1),
        "takeover took {taken_over:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(stopped);
    let resumed = wait_fair(topic, &pids);
    println!("  after SIGCONT the two share the partitions again in {resumed:.1?}");

    std::thread::sleep(Duration::from_millis(300));
    let members = members.into_iter().map(Some).collect();
    let (published, by_partition) = run.finish(producer, members, true);
    let twice: usize = by_partition
        .iter()
        .flat_map(BTreeMap::values)
        .filter(|who| who.len() > 1)
        .count();
    println!("  {published} records, all delivered in order per key; {twice} delivered twice");
}

/// Child: joins the group, polls once and leaves (`SHMQ_CRASH_AT` kills it on the way).
fn join_and_leave() {
    let topic = Topic::open(common::arg::<String>("SHMQ_TOPIC")).unwrap();
    let mut c = topic.consumer(GROUP).unwrap();
    let _ = c.poll(Some(Duration::ZERO)).unwrap();
}

/// A member killed at each step of joining and leaving: the torn slot is not taken for a live
/// member, a new member gets every partition at once, and the slot is reused.
fn crash_points() {
    for point in shmq::crash::POINTS
        .iter()
        .filter(|p| p.starts_with("member."))
    {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("t.topic");
        let topic = Topic::create(&tdir, &topic_options()).unwrap();
        let child = common::spawn(
            "join_and_leave",
            &[
                ("SHMQ_TOPIC", tdir.display().to_string()),
                ("SHMQ_CRASH_AT", point.to_string()),
            ],
        );
        let (_, status) = common::wait(child, PHASE, point);
        assert!(
            common::killed(status),
            "{point}: not killed there ({status})"
        );
        let seen = topic.members();
        assert!(
            seen.iter().all(|m| !m.alive && !m.live),
            "{point}: the dead member counts: {seen:?}"
        );
        let first = topic.consumer(GROUP).unwrap();
        assert_eq!(
            first.assignment(),
            (0..PARTITIONS).collect::<Vec<_>>(),
            "{point}: a new member gets everything at once"
        );
        let mut others: Vec<_> = (1..64).map(|_| topic.consumer(GROUP).unwrap()).collect();
        match topic.consumer(GROUP) {
            Err(e @ Error::TooManyMembers { slots: 64, .. }) => {
                let file = tdir.join("members");
                assert!(e.to_string().contains(&file.display().to_string()), "{e}");
            }
            other => panic!(
                "{point}: the dead member's slot was reused, and no more: {:?}",
                other.err()
            ),
        }
        others.clear();
        drop(first);
    }
}
