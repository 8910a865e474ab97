//! Topics in one process: fan-out, growth, routing, members sharing partitions, and the errors
//! for bad descriptors, membership files and missing partitions.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::format::{MEMBERS_GENERATION_AT, MEMBERS_SLOTS_AT};
use shmq::{
    fan_out, partition_for_key, Corruption, DescriptorFault, Error, MemberOptions, MembersFault,
    Options, Timestamps, Topic, TopicConsumer, TopicOptions,
};

fn options(partitions: u32) -> TopicOptions {
    TopicOptions {
        partitions,
        queue: Options {
            capacity: 1 << 17,
            max_message: 512,
            ..Options::default()
        },
    }
}

fn new_topic(dir: &tempfile::TempDir, name: &str, partitions: u32) -> (PathBuf, Topic) {
    let path = dir.path().join(name);
    let topic = Topic::create(&path, &options(partitions)).unwrap();
    (path, topic)
}

fn fast_member() -> MemberOptions {
    MemberOptions {
        heartbeat_interval: Duration::from_millis(10),
        session_timeout: Duration::from_millis(500),
        ..MemberOptions::default()
    }
}

/// Reads everything `c` delivers until it has been idle for 200 ms: `(partition, key, value)`.
fn drain(c: &mut TopicConsumer) -> Vec<(u32, Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = c.poll(Some(Duration::from_millis(200))).unwrap() {
        out.push((m.partition, m.key.map(<[u8]>::to_vec), m.value.to_vec()));
        let (p, o) = (m.partition, m.offset);
        c.commit(p, o).unwrap();
    }
    out
}

fn key(k: u32) -> Vec<u8> {
    format!("customer-{k}").into_bytes()
}

#[test]
fn fan_out_from_2_to_8_partitions_keeps_per_key_order_and_loses_nothing() {
    const KEYS: u32 = 300;
    const SEQS: u32 = 10;
    const UNKEYED: u32 = 50;
    let dir = tempfile::tempdir().unwrap();
    let (_, src) = new_topic(&dir, "src.topic", 2);
    drop(src.consumer("billing").unwrap()); // the group exists, so the backlog is kept for it
    let mut p = src.producer().unwrap();
    for seq in 0..SEQS {
        for k in 0..KEYS {
            p.publish_keyed(&key(k), &seq.to_le_bytes()).unwrap();
        }
    }
    for i in 0..UNKEYED {
        p.publish(&(1000 + i).to_le_bytes()).unwrap();
    }
    // The group already processed the first 100 records of partition 0: those stay behind.
    let mut first = src.partitions()[0].consumer("billing").unwrap();
    let mut skipped: HashMap<Vec<u8>, u32> = HashMap::new();
    for _ in 0..100 {
        let m = first.poll(Some(Duration::ZERO)).unwrap().unwrap();
        let k = m.payload[2..2 + m.payload[0] as usize].to_vec();
        *skipped.entry(k).or_default() += 1;
        let o = m.offset;
        first.commit(o).unwrap();
    }
    drop(first);

    let (_, dst) = new_topic(&dir, "dst.topic", 8);
    drop(dst.consumer("billing").unwrap());
    let report = fan_out(&src, "billing", &dst).unwrap();
    let total = (KEYS * SEQS + UNKEYED) as u64;
    assert_eq!(report.copied, total - 100);
    assert_eq!(report.per_partition.len(), 2);
    for info in src.info() {
        let g = info.groups.iter().find(|g| g.name == "billing").unwrap();
        assert_eq!(
            g.committed, info.tail_offset,
            "the backlog is committed in the source"
        );
    }
    assert_eq!(
        fan_out(&src, "billing", &dst).unwrap().copied,
        0,
        "nothing twice"
    );

    let mut c = dst.consumer("billing").unwrap();
    assert_eq!(c.assignment(), (0..8).collect::<Vec<_>>());
    let got = drain(&mut c);
    assert_eq!(got.len() as u64, total - 100);
    let mut next: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut unkeyed = 0;
    for (partition, k, value) in got {
        let Some(k) = k else {
            unkeyed += 1;
            continue;
        };
        assert_eq!(partition, partition_for_key(&k, 8), "routed by key in dst");
        let n = next
            .entry(k.clone())
            .or_insert_with(|| skipped.get(&k).copied().unwrap_or(0));
        assert_eq!(u32::from_le_bytes(value[..4].try_into().unwrap()), *n);
        *n += 1;
    }
    assert_eq!(unkeyed, UNKEYED);
    assert_eq!(next.len(), KEYS as usize);
    assert!(next.values().all(|&n| n == SEQS), "every key complete");
}

#[test]
fn fan_out_from_a_handle_opened_before_a_growth_copies_the_new_partitions_too() {
    let dir = tempfile::tempdir().unwrap();
    let (path, stale) = new_topic(&dir, "src.topic", 2);
    drop(stale.consumer("billing").unwrap());
    let mut grown = Topic::open(&path).unwrap();
    grown.grow(4).unwrap();
    let mut p = grown.producer().unwrap();
    for partition in 0..4 {
        p.publish_to(partition, Some(b"k"), b"v").unwrap();
    }
    let (_, dst) = new_topic(&dir, "dst.topic", 2);
    let report = fan_out(&stale, "billing", &dst).unwrap();
    assert_eq!(report.per_partition, vec![1; 4], "every partition copied");
    assert_eq!(report.copied, 4);
}

#[test]
fn fan_out_refuses_a_group_with_a_live_member() {
    let dir = tempfile::tempdir().unwrap();
    let (_, src) = new_topic(&dir, "src.topic", 2);
    let (_, dst) = new_topic(&dir, "dst.topic", 4);
    let _member = src.consumer("billing").unwrap();
    assert!(matches!(
        fan_out(&src, "billing", &dst),
        Err(Error::GroupBusy { .. })
    ));
}

#[test]
fn fan_out_refuses_a_group_the_source_does_not_have_and_copies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, src) = new_topic(&dir, "src.topic", 2);
    drop(src.consumer("billing").unwrap());
    src.producer().unwrap().publish(b"x").unwrap();
    let (_, dst) = new_topic(&dir, "dst.topic", 2);
    assert!(matches!(
        fan_out(&src, "biling", &dst),
        Err(Error::UnknownGroup(g)) if g == "biling"
    ));
    assert!(
        dst.info().iter().all(|p| p.tail_offset == 0),
        "nothing copied"
    );
    assert!(
        src.info()
            .iter()
            .all(|p| p.groups.iter().all(|g| g.name == "billing")),
        "no group made in the source"
    );
}

#[test]
fn routing_round_robin_and_publish_to() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 4);
    let mut c = topic.consumer("g").unwrap();
    let mut p = topic.producer().unwrap();
    let mut per_partition = [0; 4];
    for i in 0..8u32 {
        per_partition[p.publish(&i.to_le_bytes()).unwrap().partition as usize] += 1;
    }
    assert_eq!(
        per_partition, [2; 4],
        "round-robin spreads unkeyed records evenly"
    );
    assert_eq!(p.publish_to(3, Some(b"k"), b"v").unwrap(), 2);
    assert_eq!(p.publish_to(1, None, b"").unwrap(), 2);
    assert!(matches!(
        p.publish_to(4, None, b""),
        Err(Error::NoSuchPartition {
            partition: 4,
            partitions: 4,
            ..
        })
    ));
    let sent = p.publish_keyed(b"123456789", b"x").unwrap();
    assert_eq!(
        sent.partition, 3,
        "the documented test vector: crc32c mod 4 = 3"
    );
    let got = drain(&mut c);
    assert_eq!(got.len(), 11);
    assert!(got.contains(&(3, Some(b"k".to_vec()), b"v".to_vec())));
    assert!(got.contains(&(1, None, Vec::new())));
    assert!(got.contains(&(3, Some(b"123456789".to_vec()), b"x".to_vec())));
    assert_eq!(
        c.committed(3),
        Some(4),
        "drain committed all 4 records of partition 3"
    );
    assert_eq!(c.committed(9), None);
    assert!(matches!(
        c.commit(7, 0),
        Err(Error::NoSuchPartition {
            partition: 7,
            partitions: 4,
            ..
        })
    ));
    let too_big = vec![0u8; 600];
    assert!(matches!(p.publish(&too_big), Err(Error::TooBig { .. })));
}

/// Polls both members in turn (one thread: ticks happen inside `poll`) until `done` holds.
fn poll_until(a: &mut TopicConsumer, b: &mut TopicConsumer, done: impl Fn(&[u32], &[u32]) -> bool) {
    let start = Instant::now();
    while !done(&a.assignment(), &b.assignment()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no rebalance: {:?} {:?}",
            a.assignment(),
            b.assignment()
        );
        let _ = a.poll(Some(Duration::from_millis(5))).unwrap();
        let _ = b.poll(Some(Duration::from_millis(5))).unwrap();
    }
}

#[test]
fn members_in_one_process_share_partitions_and_take_over_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 4);
    let mut a = topic.subscribe("g", &fast_member()).unwrap();
    assert_eq!(a.assignment(), vec![0, 1, 2, 3]);
    let mut b = topic.subscribe("g", &fast_member()).unwrap();
    poll_until(&mut a, &mut b, |x, y| x.len() == 2 && y.len() == 2);
    let members = topic.members();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.live && m.alive && m.group == "g"));
    let mut third = topic.subscribe("other", &fast_member()).unwrap();
    assert_eq!(
        third.assignment(),
        vec![0, 1, 2, 3],
        "another group is independent"
    );
    let _ = third.poll(Some(Duration::ZERO)).unwrap();
    drop(b);
    let start = Instant::now();
    while a.assignment().len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(10));
        let _ = a.poll(Some(Duration::from_millis(5))).unwrap();
    }
}

#[test]
fn huge_member_durations_are_refused_or_saturate_never_panic_or_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 2);
    let huge = MemberOptions {
        heartbeat_interval: Duration::MAX,
        session_timeout: Duration::MAX,
        ..MemberOptions::default()
    };
    assert!(matches!(
        topic.subscribe("g", &huge),
        Err(Error::InvalidArgument { argument: "session timeout", why }) if why.contains("at least twice")
    ));
    // 2^64 + 1 ns: truncated to u64 it would be a 1 ns session, counted out at once.
    let long = MemberOptions {
        heartbeat_interval: Duration::from_millis(10),
        session_timeout: Duration::from_nanos(u64::MAX) + Duration::from_nanos(2),
        ..MemberOptions::default()
    };
    let _member = topic.subscribe("g", &long).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let seen = topic.members();
    assert_eq!(seen[0].session_timeout, Duration::from_nanos(u64::MAX));
    assert!(seen[0].live, "{seen:?}");
}

#[test]
fn a_partition_that_cannot_be_opened_does_not_stop_a_member_taking_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(4);
    opts.queue.group_slots = 1;
    let topic = Topic::create(dir.path().join("t.topic"), &opts).unwrap();
    let mut a = topic.subscribe("g", &fast_member()).unwrap();
    let mut b = topic.subscribe("g", &fast_member()).unwrap();
    poll_until(&mut a, &mut b, |x, y| x.len() == 2 && y.len() == 2);
    let (first, last) = (b.assignment()[0], b.assignment()[1]);
    drop(b);
    // The first of b's partitions now has its one group slot taken by another group, so `a`
    // cannot open `g` there; it must still take the other one.
    let blocked = &topic.partitions()[first as usize];
    blocked.delete_group("g").unwrap();
    drop(blocked.consumer("other").unwrap());
    let start = Instant::now();
    let mut errors = 0;
    while !a.assignment().contains(&last) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "partition {last} never taken: {:?}",
            a.assignment()
        );
        match a.poll(Some(Duration::from_millis(5))) {
            Err(Error::TooManyGroups(1)) => errors += 1,
            other => assert!(matches!(other, Ok(None)), "{other:?}"),
        }
    }
    assert!(!a.assignment().contains(&first));
    assert!(errors > 0, "the failure is reported, not swallowed");
}

#[test]
fn a_member_that_stops_polling_loses_its_partitions_and_its_late_commit_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 4);
    let short = MemberOptions {
        heartbeat_interval: Duration::from_millis(20),
        session_timeout: Duration::from_millis(100),
        ..MemberOptions::default()
    };
    let mut p = topic.producer().unwrap();
    for partition in 0..4 {
        for i in 0..2u8 {
            p.publish_to(partition, None, &[partition as u8, i])
                .unwrap();
        }
    }
    let mut hung = topic.subscribe("g", &short).unwrap();
    assert_eq!(hung.assignment().len(), 4);
    let m = hung.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
    let (read_partition, read_offset) = (m.partition, m.offset);
    // It read a record but stops (a hung process) before committing it.
    std::thread::sleep(Duration::from_millis(250));
    let me = topic.members();
    assert!(me[0].alive && !me[0].live, "stale heartbeat: {me:?}");
    // A new member is the only live one: every partition is assigned to it, and it takes
    // them from the counted-out member although that process runs.
    let mut fresh = topic.subscribe("g", &short).unwrap();
    assert_eq!(fresh.assignment(), vec![0, 1, 2, 3]);
    let got = drain(&mut fresh);
    assert_eq!(
        got.len(),
        8,
        "every record, the one read but not committed included"
    );
    // The first member wakes up: its commit of what it read is refused, and changes nothing.
    match hung.commit(read_partition, read_offset) {
        Err(Error::TakenOver { group, found: 2 }) => assert_eq!(group, "g"),
        other => panic!("expected TakenOver, got {other:?}"),
    }
    assert!(!hung.assignment().contains(&read_partition));
    // Polling again makes it live, and the two share the partitions.
    poll_until(&mut hung, &mut fresh, |x, y| x.len() == 2 && y.len() == 2);
    for info in topic.info() {
        let g = info.groups.iter().find(|g| g.name == "g").unwrap();
        assert_eq!(
            g.committed, 2,
            "partition {}: nothing moved back",
            info.partition
        );
    }
}

#[test]
fn growth_reroutes_keys_and_members_and_producers_pick_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let (path, topic) = new_topic(&dir, "t.topic", 2);
    let mut c = topic.subscribe("g", &fast_member()).unwrap();
    let mut p = topic.producer().unwrap();
    p.publish_keyed(b"a", b"before").unwrap();
    let mut admin = Topic::open(&path).unwrap();
    admin.grow(5).unwrap();
    assert_eq!(admin.partition_count(), 5);
    assert!(matches!(
        admin.grow(3),
        Err(Error::InvalidArgument {
            argument: "partitions",
            ..
        })
    ));
    admin.grow(5).unwrap();
    for info in &admin.info()[2..] {
        let g = info.groups.iter().find(|g| g.name == "g").unwrap();
        assert_eq!(
            g.committed, 0,
            "new partitions carry the group from offset 0"
        );
    }
    let keys: Vec<Vec<u8>> = (0..50).map(key).collect();
    for k in &keys {
        let sent = p.publish_keyed(k, b"after").unwrap();
        assert_eq!(
            sent.partition,
            partition_for_key(k, 5),
            "routed with the new count"
        );
    }
    assert_eq!(p.topic().partition_count(), 5);
    let got = drain(&mut c);
    assert_eq!(got.len(), 51);
    assert_eq!(c.assignment(), vec![0, 1, 2, 3, 4]);
    assert!(got.iter().any(|(partition, _, _)| *partition >= 2));
    assert_eq!(Topic::open(&path).unwrap().partition_count(), 5);
}

#[test]
fn producers_and_members_made_from_a_handle_opened_before_a_growth_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, stale) = new_topic(&dir, "t.topic", 2);
    Topic::open(&path).unwrap().grow(8).unwrap();
    assert_eq!(
        stale.partition_count(),
        2,
        "the handle itself has not refreshed"
    );
    let mut p = stale.producer().unwrap();
    let k = (0..)
        .map(key)
        .find(|k| partition_for_key(k, 8) >= 2)
        .unwrap();
    let sent = p.publish_keyed(&k, b"v").unwrap();
    assert_eq!(
        sent.partition,
        partition_for_key(&k, 8),
        "routed with the topic's count, like every other producer"
    );
    let mut c = stale.subscribe("g", &fast_member()).unwrap();
    assert_eq!(
        c.assignment(),
        (0..8).collect::<Vec<_>>(),
        "the only member holds every partition, the new ones too"
    );
    let got = drain(&mut c);
    assert_eq!(got, vec![(sent.partition, Some(k), b"v".to_vec())]);
}

#[test]
fn a_growth_that_died_before_announcing_itself_is_announced_by_the_next_opener() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, topic) = new_topic(&dir, "t.topic", 2);
    let mut p = topic.producer().unwrap();
    Topic::open(&path).unwrap().grow(4).unwrap();
    // Undo the announcement (the generation word of the membership file), as if
    // the growing process had died right after replacing the descriptor.
    let members = std::fs::OpenOptions::new()
        .write(true)
        .open(path.join("members"))
        .unwrap();
    members
        .write_all_at(&0u64.to_le_bytes(), MEMBERS_GENERATION_AT)
        .unwrap();
    p.publish(b"x").unwrap();
    assert_eq!(p.topic().partition_count(), 2, "nothing announced yet");
    drop(Topic::open(&path).unwrap());
    p.publish(b"x").unwrap();
    assert_eq!(p.topic().partition_count(), 4, "announced by the opener");
}

fn open_err(path: &Path) -> Error {
    match Topic::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

/// A change to a descriptor's bytes.
type Edit = fn(&mut Vec<u8>);

/// Rewrites the descriptor with `edit` applied and the checksum recomputed.
fn rewrite_descriptor(path: &Path, edit: impl Fn(&mut Vec<u8>)) {
    let file = path.join("descriptor");
    let mut b = std::fs::read(&file).unwrap();
    edit(&mut b);
    if b.len() == 64 {
        let crc = crc32c::crc32c(&b[..60]);
        b[60..].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&file, &b).unwrap();
}

#[test]
fn bad_descriptors_and_missing_partitions_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| new_topic(&dir, name, 4).0;

    let missing = dir.path().join("none.topic");
    let e = open_err(&missing);
    assert_eq!(
        e.to_string(),
        format!("{}: no such topic", missing.display())
    );
    assert!(matches!(e, Error::TopicNotFound { path } if path == missing));
    assert!(!Topic::is_topic(&missing));
    let path = fresh("exists.topic");
    assert!(Topic::is_topic(&path));
    assert!(
        !Topic::is_topic(path.join("partition-0000.q")),
        "a queue file is not a topic"
    );
    assert!(matches!(
        Topic::create(&path, &options(4)),
        Err(Error::Exists { .. })
    ));
    assert!(matches!(
        Topic::create(dir.path().join("zero.topic"), &options(0)),
        Err(Error::InvalidArgument {
            argument: "partitions",
            ..
        })
    ));
    assert!(!dir.path().join("zero.topic").exists());

    let path = fresh("lost.topic");
    std::fs::remove_file(path.join("partition-0002.q")).unwrap();
    let e = open_err(&path);
    assert!(
        matches!(
            &e,
            Error::Corrupt {
                kind: Corruption::MissingPartition { partition: 2, .. },
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("partition 2 is missing") && text.contains("partition-0002.q"),
        "{text}"
    );

    let cases: [(&str, Edit, &str); 6] = [
        ("truncated", |b| b.truncate(40), "40 bytes, expected 64"),
        ("magic", |b| b[0] = b'X', "bad magic"),
        ("version", |b| b[8] = 9, "version 9 is not supported"),
        (
            "count",
            |b| b[12..16].copy_from_slice(&0u32.to_le_bytes()),
            "partition count 0",
        ),
        ("routing", |b| b[16] = 7, "unknown routing 7"),
        ("reserved", |b| b[50] = 1, "reserved bytes"),
    ];
    for (name, edit, expected) in cases {
        let path = fresh(&format!("{name}.topic"));
        rewrite_descriptor(&path, edit);
        let e = open_err(&path);
        let text = e.to_string();
        assert!(
            matches!(&e, Error::Corrupt { kind: Corruption::Descriptor(_), path: p } if *p == path),
            "{name}: {e:?}"
        );
        assert!(text.contains(expected), "{name}: {text}");
    }
    let path = fresh("checksum.topic");
    let file = path.join("descriptor");
    let mut b = std::fs::read(&file).unwrap();
    b[12] ^= 1;
    std::fs::write(&file, &b).unwrap();
    assert!(open_err(&path).to_string().contains("checksum mismatch"));

    let path = fresh("more.topic");
    rewrite_descriptor(&path, |b| b[12] = 6);
    assert!(open_err(&path)
        .to_string()
        .contains("partition 4 is missing"));

    let path = fresh("nodesc.topic");
    std::fs::remove_file(path.join("descriptor")).unwrap();
    assert!(open_err(&path).to_string().contains("not a shmq topic"));

    let path = fresh("members.topic");
    let members = path.join("members");
    let len = std::fs::metadata(&members).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&members)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let e = open_err(&path);
    assert!(
        matches!(
            &e,
            Error::Corrupt {
                kind: Corruption::Members(MembersFault::Size { .. }),
                ..
            }
        ),
        "{e:?}"
    );
    let path = fresh("members2.topic");
    let mut b = std::fs::read(path.join("members")).unwrap();
    b[12] = 65;
    std::fs::write(path.join("members"), &b).unwrap();
    assert!(open_err(&path).to_string().contains("bad header"));
}

#[test]
fn growing_a_topic_whose_generation_is_at_its_maximum_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = new_topic(&dir, "t.topic", 2);
    rewrite_descriptor(&path, |b| {
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    let mut topic = Topic::open(&path).unwrap();
    let e = topic.grow(4).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { kind: Corruption::Descriptor(DescriptorFault::Generation(g)), path: p } if *p == path && *g == u64::MAX),
        "{e:?}"
    );
    assert!(e.to_string().contains("cannot grow"), "{e}");
    assert_eq!(Topic::open(&path).unwrap().partition_count(), 2);
    assert!(!path.join("partition-0002.q").exists(), "nothing was made");
}

#[test]
fn a_record_without_topic_framing_is_an_error_then_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 1);
    let mut c = topic.consumer("g").unwrap();
    let mut raw = topic.partitions()[0].producer().unwrap();
    raw.publish(b"x").unwrap(); // too short for a key length
    raw.publish(&[9, 0, b'a']).unwrap(); // key length past the end
    let mut p = topic.producer().unwrap();
    p.publish_keyed(b"k", b"fine").unwrap();
    for expected in ["too short", "key length 9 exceeds"] {
        match c.poll(Some(Duration::from_secs(1))) {
            Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains(expected), "{e}"),
            other => panic!("expected a framing error, got {other:?}"),
        }
    }
    let m = c.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
    assert_eq!(
        (m.key, m.value, m.offset),
        (Some(&b"k"[..]), &b"fine"[..], 2)
    );
}

#[test]
fn a_sleeping_member_uses_no_cpu_and_a_publish_wakes_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 4);
    // A long heartbeat: a wake-up that came from the tick would take up to a second.
    let slow = MemberOptions {
        heartbeat_interval: Duration::from_secs(1),
        session_timeout: Duration::from_secs(3),
        ..MemberOptions::default()
    };
    let mut c = topic.subscribe("g", &slow).unwrap();
    let cpu = common::thread_cpu();
    let start = Instant::now();
    assert!(c.poll(Some(Duration::from_millis(1500))).unwrap().is_none());
    let (idle, used) = (start.elapsed(), common::thread_cpu() - cpu);
    assert!(idle >= Duration::from_millis(1500));
    println!("idle poll of {idle:.1?} used {used:.1?} of CPU");
    assert!(
        used < idle / 50,
        "an idle member must sleep: {used:?} of CPU in {idle:?}"
    );

    let mut latencies = Vec::new();
    for round in 0..5u32 {
        let producer_topic = topic.clone();
        let publisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut p = producer_topic.producer().unwrap();
            p.publish_keyed(&round.to_le_bytes(), b"wake").unwrap();
            Instant::now()
        });
        let m = c
            .poll(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("woken");
        let received = Instant::now();
        assert_eq!(m.value, b"wake");
        let (p, o) = (m.partition, m.offset);
        c.commit(p, o).unwrap();
        let sent = publisher.join().unwrap();
        latencies.push(received.saturating_duration_since(sent));
    }
    latencies.sort();
    println!("publish to a sleeping member, woken: {latencies:.1?}");
    assert!(
        latencies[2] < Duration::from_millis(100),
        "the median wake-up must not wait for the 1 s tick: {latencies:?}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever another process wrote into the membership file's mutable words and member
    /// slots, listing members, joining, polling and publishing neither panic nor misbehave.
    #[test]
    fn a_hostile_membership_file_never_panics(
        slots in proptest::collection::vec(proptest::prelude::any::<u8>(), 8192),
        words in proptest::collection::vec(
            proptest::prelude::any::<u8>(),
            (MEMBERS_SLOTS_AT - MEMBERS_GENERATION_AT) as usize,
        ),
    ) {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, topic) = new_topic(&dir, "t.topic", 2);
        let file = std::fs::OpenOptions::new().write(true).open(path.join("members")).unwrap();
        file.write_all_at(&words, MEMBERS_GENERATION_AT).unwrap();
        file.write_all_at(&slots, MEMBERS_SLOTS_AT).unwrap();
        let _ = topic.members();
        let mut p = topic.producer().unwrap();
        p.publish_keyed(b"k", b"v").unwrap();
        match topic.subscribe("g", &fast_member()) {
            Ok(mut c) => {
                let _ = c.poll(Some(Duration::from_millis(5)));
                proptest::prop_assert!(c.assignment().len() <= 2);
            }
            Err(e) => proptest::prop_assert!(matches!(e, Error::TooManyMembers { slots: 64, .. }), "{e}"),
        }
    }
}

/// A member that lost a partition at a rebalance (a second member joined) gets `NotHeld` when
/// it commits there, and nothing is committed.
#[test]
fn committing_a_partition_that_moved_is_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "t.topic", 4);
    let mut first = topic.subscribe("g", &fast_member()).unwrap();
    assert_eq!(first.assignment(), vec![0, 1, 2, 3]);
    let mut second = topic.subscribe("g", &fast_member()).unwrap();
    // Within a few heartbeats the first member gives up half of the partitions.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while first.assignment().len() != 2 {
        assert!(std::time::Instant::now() < deadline, "no rebalance");
        first.poll(Some(Duration::from_millis(20))).unwrap();
        second.poll(Some(Duration::from_millis(20))).unwrap();
    }
    let moved = (0..4).find(|p| !first.assignment().contains(p)).unwrap();
    assert!(matches!(
        first.commit(moved, 0),
        Err(Error::NotHeld { partition, .. }) if partition == moved
    ));
}

/// A topic producer set to the coarse clock stamps its records in every partition with it,
/// including partitions it opens after the setting: records published within one tick share
/// a timestamp (a precise clock gives each its own).
#[test]
fn a_topic_producer_stamps_every_partition_with_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (_, topic) = new_topic(&dir, "stamps", 2);
    let mut c = topic.consumer("g").unwrap();
    let mut p = topic.producer().unwrap();
    p.set_timestamps(Timestamps::Coarse);
    let wall = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.unwrap().as_nanos() as u64
    };
    let before = wall();
    for i in 0..1000u32 {
        p.publish_to(i % 2, None, &i.to_le_bytes()).unwrap();
    }
    let after = wall();
    let mut stamps = Vec::new();
    while stamps.len() < 1000 {
        let m = c
            .poll(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("a record");
        stamps.push((m.partition, m.timestamp_ns));
    }
    let tick = 10_000_000; // the longest tick: CONFIG_HZ = 100
    assert!(stamps
        .iter()
        .all(|&(_, t)| before - tick <= t && t <= after));
    for partition in 0..2 {
        let mut seen: Vec<u64> = stamps
            .iter()
            .filter(|&&(p, _)| p == partition)
            .map(|&(_, t)| t)
            .collect();
        assert_eq!(seen.len(), 500);
        seen.dedup();
        assert!(
            seen.len() < 50,
            "partition {partition}: {} distinct stamps",
            seen.len()
        );
    }
}
