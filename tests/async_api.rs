//! The async API (feature `tokio`): 64 consumers awaited on one current-thread runtime and fed
//! by a producer process, cancellation of a receive and of a publish, `publish_async` on a full
//! queue resuming when a consumer commits, topic members, streams, and the CPU that idle
//! async consumers use.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shmq::{Error, MemberOptions, Options, Queue, Topic, TopicOptions};
use tokio_stream::StreamExt;

/// Records the producer process publishes.
const RECORDS: u64 = 2_000;
/// Consumers (one group each) awaited at once.
const GROUPS: usize = 64;
/// Bound on anything a test waits for: generous for a loaded two-core machine.
const LIMIT: Duration = Duration::from_secs(60);

fn main() {
    match common::role().as_deref() {
        Some("producer") => producer(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            (
                "sixty_four_consumers_on_one_runtime",
                sixty_four_consumers_on_one_runtime,
            ),
            (
                "a_cancelled_recv_loses_nothing",
                a_cancelled_recv_loses_nothing,
            ),
            (
                "publish_async_resumes_on_commit",
                publish_async_resumes_on_commit,
            ),
            (
                "topic_members_recv_and_stream",
                topic_members_recv_and_stream,
            ),
            (
                "idle_async_consumers_use_no_cpu",
                idle_async_consumers_use_no_cpu,
            ),
            (
                "more_files_than_futex_waitv_takes",
                more_files_than_futex_waitv_takes,
            ),
        ]),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a current-thread runtime")
}

fn small_queue(path: &Path, capacity: u64) -> Queue {
    let options = Options {
        capacity,
        max_message: 256,
        ..Options::default()
    };
    Queue::create(path, &options).expect("create the queue")
}

/// The producer process: publishes `RECORDS` records whose payload is their sequence number,
/// in bursts with pauses, so that the consumers go to sleep between them.
fn producer() {
    let queue = Queue::open(common::arg::<String>("SHMQ_PATH")).expect("open the queue");
    let mut producer = queue.producer().expect("a producer");
    for seq in 0..RECORDS {
        producer.publish(&seq.to_le_bytes()).expect("publish");
        if seq % 250 == 249 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload.try_into().expect("an 8-byte payload"))
}

/// 64 groups, each read by one async consumer on one current-thread runtime, from a producer
/// in another process: every group gets every record exactly once, in order.
fn sixty_four_consumers_on_one_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let queue = small_queue(&path, 1 << 20);
    // Every group exists before the producer starts, so each sees every record.
    let consumers: Vec<_> = (0..GROUPS)
        .map(|g| queue.consumer(&format!("g{g}")).expect("join a group"))
        .collect();
    let child = common::spawn("producer", &[("SHMQ_PATH", path.display().to_string())]);
    let received = runtime().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for mut consumer in consumers {
            tasks.spawn(async move {
                let mut seen = Vec::new();
                while (seen.len() as u64) < RECORDS {
                    let m = consumer.recv().await.expect("recv");
                    assert_eq!(
                        m.offset,
                        seen.len() as u64,
                        "{}: dense offsets",
                        consumer.group()
                    );
                    seen.push(seq_of(m.payload));
                    let offset = m.offset;
                    if offset % 100 == 99 {
                        consumer.commit(offset).expect("commit");
                    }
                }
                seen
            });
        }
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        while let Some(done) = tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .expect("every consumer got every record within the limit")
        {
            all.push(done.expect("a consumer task"));
        }
        all
    });
    let (_, status) = common::wait(child, LIMIT, "the producer");
    assert!(status.success(), "producer: {status}");
    assert_eq!(received.len(), GROUPS);
    let expected: Vec<u64> = (0..RECORDS).collect();
    for seen in received {
        assert_eq!(seen, expected, "a group got every record once, in order");
    }
}

/// A receive dropped by a timeout, even after the record arrived while it was registered,
/// takes nothing: the next receive gets the record. The stream does the same.
fn a_cancelled_recv_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let queue = small_queue(&path, 1 << 16);
    let mut consumer = queue.consumer("g").unwrap();
    let mut producer = queue.producer().unwrap();
    runtime().block_on(async {
        // Nothing there: the timeout drops the pending receive.
        let waited = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        assert!(waited.is_err(), "nothing to receive yet");

        // A receive registered with the waker thread, a record published, and the future
        // dropped before it is polled again.
        {
            let mut pending = std::pin::pin!(consumer.recv());
            let first = tokio::time::timeout(Duration::from_millis(100), &mut pending).await;
            assert!(first.is_err(), "nothing to receive yet");
            producer.publish(b"first").unwrap();
        }
        let m = tokio::time::timeout(LIMIT, consumer.recv())
            .await
            .expect("the record within the limit")
            .expect("recv");
        assert_eq!((m.offset, m.payload), (0, &b"first"[..]));

        // A select that another branch wins; the record comes from another thread after it.
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            m = consumer.recv() => panic!("the timer wins: {:?}", m.map(|m| m.offset)),
        }
        let publisher = std::thread::spawn(move || producer.publish(b"second").unwrap());
        let m = tokio::time::timeout(LIMIT, consumer.recv())
            .await
            .expect("the record within the limit")
            .expect("recv");
        publisher.join().unwrap();
        assert_eq!((m.offset, m.payload), (1, &b"second"[..]));
        consumer.commit(1).unwrap();

        // A stream dropped while it waits loses nothing either.
        let mut stream = consumer.into_stream();
        let waited = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(waited.is_err(), "nothing to stream yet");
        drop(stream);
        let mut producer = queue.producer().unwrap();
        producer.publish(b"third").unwrap();
        let mut stream = queue.consumer("g").unwrap().into_stream();
        let m = tokio::time::timeout(LIMIT, stream.next())
            .await
            .expect("the record within the limit")
            .expect("a stream does not end")
            .expect("recv");
        assert_eq!((m.offset, &m.payload[..]), (2, &b"third"[..]));
    });
}

/// A full queue: `publish_async` waits without a thread, resumes when a consumer commits and
/// publishes exactly once; a dropped one publishes nothing.
fn publish_async_resumes_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let queue = small_queue(&path, 4096);
    let mut consumer = queue.consumer("g").unwrap();
    let mut producer = queue.producer().unwrap();
    producer.set_timeout(Some(Duration::ZERO));
    // Records of one size: the next one needs exactly the room the oldest one frees.
    let mut filled = 0u64;
    loop {
        match producer.publish(&[7; 200]) {
            Ok(_) => filled += 1,
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("filling the queue: {e}"),
        }
    }
    assert!(filled > 0);
    producer.set_timeout(None);
    let rt = runtime();
    // Dropped while it waits for room: publishes nothing.
    rt.block_on(async {
        let waited = tokio::time::timeout(
            Duration::from_millis(200),
            producer.publish_async(&[8; 200]),
        )
        .await;
        assert!(waited.is_err(), "the queue is full");
    });
    assert_eq!(
        queue.tail_offset(),
        filled,
        "a dropped publish_async published nothing"
    );

    let task = rt.spawn(async move {
        let offset = producer.publish_async(&[9; 200]).await;
        (offset, Instant::now())
    });
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let m = consumer.poll(Some(LIMIT)).expect("poll").expect("a record");
        let offset = m.offset;
        let committed = Instant::now();
        consumer.commit(offset).expect("commit");
        (consumer, committed)
    });
    let (offset, published) = rt.block_on(async {
        tokio::time::timeout(LIMIT, task)
            .await
            .expect("publish_async resumed within the limit")
            .expect("the publishing task")
    });
    let (mut consumer, committed) = committer.join().unwrap();
    assert_eq!(
        offset.expect("publish_async"),
        filled,
        "published once, next offset"
    );
    assert!(published >= committed, "it waited for the commit");
    assert_eq!(queue.tail_offset(), filled + 1);
    let mut last = None;
    while let Some(m) = consumer.poll(Some(Duration::ZERO)).unwrap() {
        last = Some((m.offset, m.payload.to_vec()));
    }
    assert_eq!(last, Some((filled, vec![9; 200])));
}

/// Two topic members on one runtime, one through `recv` and one through its stream, share the
/// partitions and get each record of a producer thread exactly once.
fn topic_members_recv_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let topic_dir = dir.path().join("orders");
    let queue = Options {
        capacity: 1 << 16,
        max_message: 256,
        ..Options::default()
    };
    let topic = Topic::create(
        &topic_dir,
        &TopicOptions {
            partitions: 4,
            queue,
        },
    )
    .unwrap();
    let options = MemberOptions {
        heartbeat_interval: Duration::from_millis(50),
        ..MemberOptions::default()
    };
    let mut a = topic.subscribe("billing", &options).unwrap();
    let b = topic.subscribe("billing", &options).unwrap();
    const KEYED: u64 = 400;
    let publisher = {
        let topic = Topic::open(&topic_dir).unwrap();
        std::thread::spawn(move || {
            let mut producer = topic.producer().unwrap();
            // Let both members take their share first.
            std::thread::sleep(Duration::from_millis(300));
            for seq in 0..KEYED {
                let key = format!("key-{}", seq % 37);
                producer
                    .publish_keyed(key.as_bytes(), &seq.to_le_bytes())
                    .unwrap();
            }
        })
    };
    let got = runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tx_b = tx.clone();
        let mut set = tokio::task::JoinSet::new();
        set.spawn(async move {
            loop {
                let m = a.recv().await.expect("recv");
                let (partition, offset) = (m.partition, m.offset);
                if tx.send(seq_of(m.value)).is_err() {
                    return;
                }
                a.commit(partition, offset).expect("commit");
            }
        });
        set.spawn(async move {
            let mut stream = b.into_stream();
            while let Some(m) = stream.next().await {
                let m = m.expect("stream");
                assert!(m.key.is_some(), "keyed records keep their key");
                if tx_b.send(seq_of(&m.value)).is_err() {
                    return;
                }
                stream.commit(m.partition, m.offset).expect("commit");
            }
        });
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        while (got.len() as u64) < KEYED {
            let seq = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("every record within the limit")
                .expect("the members run");
            got.push(seq);
        }
        set.abort_all();
        got
    });
    publisher.join().unwrap();
    let distinct: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(got.len(), distinct.len(), "no record twice");
    assert_eq!(distinct, (0..KEYED).collect(), "every record");
}

/// CPU time of this process (user + system) from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name, which ends with the last ')': utime and stime are the
    // 12th and 13th of them, in clock ticks.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// 64 idle async consumers (8 queue files, 8 groups each) cost under 1 % of a core.
fn idle_async_consumers_use_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..8).map(|i| dir.path().join(format!("q{i}"))).collect();
    let queues: Vec<Queue> = paths.iter().map(|p| small_queue(p, 1 << 16)).collect();
    let consumers: Vec<_> = queues
        .iter()
        .flat_map(|q| (0..8).map(move |g| q.consumer(&format!("g{g}")).unwrap()))
        .collect();
    assert_eq!(consumers.len(), 64);
    let rt = runtime();
    let mut tasks = tokio::task::JoinSet::new();
    let _guard = rt.enter();
    for mut consumer in consumers {
        tasks.spawn_on(
            async move {
                let m = consumer.recv().await.expect("recv");
                m.offset
            },
            rt.handle(),
        );
    }
    let window = Duration::from_secs(3);
    let (cpu, wall) = rt.block_on(async {
        // Let every task register.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (cpu0, wall0) = (process_cpu(), Instant::now());
        tokio::time::sleep(window).await;
        (process_cpu() - cpu0, wall0.elapsed())
    });
    println!("64 idle async consumers: {cpu:?} CPU over {wall:?}");
    assert!(
        cpu < wall / 100,
        "idle async consumers used {cpu:?} of CPU in {wall:?} (limit 1 %)"
    );
    // They are alive: one record per queue wakes all of its consumers.
    for q in &queues {
        q.producer().unwrap().publish(b"wake").unwrap();
    }
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + LIMIT;
        let mut done = 0;
        while let Some(offset) = tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .expect("every consumer woke within the limit")
        {
            assert_eq!(offset.expect("a consumer task"), 0);
            done += 1;
        }
        assert_eq!(done, 64);
    });
}

/// Consumers of 130 queue files wait on more futex words than one `futex_waitv` takes (127
/// besides the waker thread's bell): the thread falls back to re-reading every word each
/// millisecond, and each consumer still gets its record.
fn more_files_than_futex_waitv_takes() {
    const FILES: usize = 130;
    let dir = tempfile::tempdir().unwrap();
    let queues: Vec<Queue> = (0..FILES)
        .map(|i| small_queue(&dir.path().join(format!("q{i}")), 4096))
        .collect();
    let rt = runtime();
    let _guard = rt.enter();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, q) in queues.iter().enumerate() {
        let mut consumer = q.consumer("g").unwrap();
        tasks.spawn_on(
            async move {
                let m = consumer.recv().await.expect("recv");
                (i, m.payload.to_vec())
            },
            rt.handle(),
        );
    }
    rt.block_on(async {
        // Let every consumer register first, then publish to each file in turn.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, q) in queues.iter().enumerate() {
            q.producer().unwrap().publish(&i.to_le_bytes()).unwrap();
        }
        let deadline = tokio::time::Instant::now() + LIMIT;
        let mut seen = HashSet::new();
        while let Some(done) = tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .expect("every consumer got its record within the limit")
        {
            let (i, payload) = done.expect("a consumer task");
            assert_eq!(payload, i.to_le_bytes(), "file {i}");
            seen.insert(i);
        }
        assert_eq!(seen.len(), FILES);
    });
}
