//! Who may open a queue file or topic: one that another user made (a squatter) or may write is
//! refused with `Error::Untrusted` unless the opener names that user or group in a `Trust`.
//! The other user is real: children of this test running as uid 65534 (`nobody` on Debian;
//! no user or group needs to exist, only the ids are used).
//!
//! The tests need root, to run children as another user and to chown files: without it they
//! fail, never skip.

mod common;

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shmq::{Distrust, Error, Options, Queue, Topic, TopicOptions, Trust, WorkOptions};

/// The second user: a squatter, or a user a queue is shared with.
const OTHER: u32 = 65534;
/// The other user's own group.
const OTHER_GROUP: u32 = 65534;
/// A group a queue is shared through (no name needed).
const SHARED: u32 = 4242;

fn main() {
    match common::role().as_deref() {
        Some("squat") => squat(),
        Some("publish") => publish_as_other(),
        Some(r) => panic!("unknown role {r}"),
        None => {
            assert!(
                common::harness::listing() || nix::unistd::Uid::effective().is_root(),
                "tests/permissions.rs needs root: it runs processes as uid {OTHER} and chowns \
                 files (CI runs as root)"
            );
            common::harness::run(&[
                ("a_squatters_queue_and_topic_are_refused", squatted),
                (
                    "a_group_writable_file_needs_its_group_trusted",
                    group_writable,
                ),
                ("every_file_of_a_topic_is_checked", every_topic_file),
                ("a_work_file_is_checked_like_its_queue", work_file_checked),
                (
                    "a_second_user_shares_only_through_a_granted_group",
                    shared_through_a_group,
                ),
            ])
        }
    }
}

fn small() -> Options {
    Options {
        capacity: 1 << 16,
        max_message: 1024,
        ..Options::default()
    }
}

fn topic_options(mode: u32) -> TopicOptions {
    TopicOptions {
        partitions: 2,
        queue: Options { mode, ..small() },
    }
}

/// A temporary directory every user may enter and write, with the sticky bit, like
/// `/dev/shm`; this test's binary is copied into it so that the other user may run it
/// wherever the build lives.
struct Shared {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o1777)).unwrap();
        let exe = dir.path().join("permissions-test");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, PermissionsExt::from_mode(0o755)).unwrap();
        Shared { dir, exe }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs this binary in `role` as uid [`OTHER`] with primary group `gid` (and no other
    /// group); returns the one line it prints.
    fn run_as_other(&self, gid: u32, role: &str, env: &[(&str, String)]) -> String {
        let mut cmd = Command::new(&self.exe);
        cmd.env("SHMQ_TEST_ROLE", role)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir("/")
            .uid(OTHER)
            .gid(gid)
            .stdin(Stdio::null());
        let out = cmd.output().expect("run a child as another user");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{role} as {OTHER}:{gid} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// Child: makes a queue file and a topic as the squatter, with a consumer group "spy" in the
/// queue, and lets every user write the queue file.
fn squat() {
    let queue = PathBuf::from(common::arg::<String>("SHMQ_QUEUE"));
    let q = Queue::create(&queue, &small()).unwrap();
    drop(q.consumer("spy").unwrap());
    std::fs::set_permissions(&queue, PermissionsExt::from_mode(0o666)).unwrap();
    let topic = PathBuf::from(common::arg::<String>("SHMQ_TOPIC"));
    Topic::create(&topic, &topic_options(0o600)).unwrap();
    println!("squatted");
}

/// Child: opens the queue or topic at SHMQ_PATH trusting group SHMQ_TRUST_GROUP (if set),
/// publishes a record, grows a topic to SHMQ_GROW partitions (if set), and prints `ok` or the
/// error's `Debug` form.
fn publish_as_other() {
    let path = PathBuf::from(common::arg::<String>("SHMQ_PATH"));
    let trust = Trust {
        group: std::env::var("SHMQ_TRUST_GROUP")
            .ok()
            .map(|g| g.parse().unwrap()),
        owner: None,
    };
    let result = if Topic::is_topic(&path) {
        Topic::open_trusting(&path, &trust).and_then(|mut topic| {
            topic
                .producer()?
                .publish_keyed(b"key", b"from the other user")?;
            match std::env::var("SHMQ_GROW") {
                Ok(n) => topic.grow(n.parse().unwrap()),
                Err(_) => Ok(()),
            }
        })
    } else {
        Queue::open_trusting(&path, &trust)
            .and_then(|q| q.producer()?.publish(b"from the other user"))
            .map(drop)
    };
    match result {
        Ok(()) => println!("ok"),
        Err(e) => println!("{e:?}"),
    }
}

/// The error of opening `path` as a queue file with `trust`.
fn queue_refusal(path: &Path, trust: &Trust) -> Error {
    match Queue::open_trusting(path, trust) {
        Ok(_) => panic!("{} opened with {trust:?}", path.display()),
        Err(e) => e,
    }
}

/// The error of opening the topic `path` with `trust`.
fn topic_refusal(path: &Path, trust: &Trust) -> Error {
    match Topic::open_trusting(path, trust) {
        Ok(_) => panic!("{} opened with {trust:?}", path.display()),
        Err(e) => e,
    }
}

/// Asserts that `e` refuses `file` for `want`, owned by `owner` with mode `mode`, and that
/// its message names all of it.
fn assert_untrusted(e: &Error, file: &Path, owner: u32, mode: u32, want: Distrust) {
    let Error::Untrusted {
        path,
        owner: o,
        mode: m,
        why,
        ..
    } = e
    else {
        panic!("expected Untrusted for {}, got {e:?}", file.display());
    };
    assert_eq!(
        (path.as_path(), o.id, *m, *why),
        (file, owner, mode, want),
        "{e}"
    );
    let text = e.to_string();
    for needle in [
        file.display().to_string(),
        format!("{owner}"),
        format!("mode {mode:04o}"),
        want.to_string(),
    ] {
        assert!(text.contains(&needle), "{text:?} lacks {needle:?}");
    }
}

/// The reported case: another user creates the queue first, in a directory every user may
/// write, with mode 0666 and a consumer group of its own. Creating it fails (it exists), and
/// opening it is refused, so nothing is published where the squatter can read it.
fn squatted() {
    let shared = Shared::new();
    let queue = shared.path("orders.q");
    let topic = shared.path("orders");
    let out = shared.run_as_other(
        OTHER_GROUP,
        "squat",
        &[
            ("SHMQ_QUEUE", queue.display().to_string()),
            ("SHMQ_TOPIC", topic.display().to_string()),
        ],
    );
    assert_eq!(out, "squatted");
    assert_eq!(std::fs::metadata(&queue).unwrap().uid(), OTHER);

    assert!(matches!(
        Queue::create(&queue, &small()),
        Err(Error::Exists { .. })
    ));
    let e = queue_refusal(&queue, &Trust::default());
    assert_untrusted(&e, &queue, OTHER, 0o666, Distrust::OthersMayWrite);
    // A file every user may write is refused whoever is trusted.
    let all = Trust {
        owner: Some(OTHER),
        group: Some(OTHER_GROUP),
    };
    let e = queue_refusal(&queue, &all);
    assert_untrusted(&e, &queue, OTHER, 0o666, Distrust::OthersMayWrite);

    // Mode 0600: still the squatter's own file.
    std::fs::set_permissions(&queue, PermissionsExt::from_mode(0o600)).unwrap();
    let e = queue_refusal(&queue, &Trust::default());
    assert_untrusted(&e, &queue, OTHER, 0o600, Distrust::Owner);
    let e = queue_refusal(
        &queue,
        &Trust {
            group: Some(SHARED),
            owner: Some(SHARED),
        },
    );
    assert_untrusted(&e, &queue, OTHER, 0o600, Distrust::Owner);
    // Opting in: trusting the owner, or the file's group.
    for trust in [
        Trust {
            owner: Some(OTHER),
            group: None,
        },
        Trust {
            owner: None,
            group: Some(OTHER_GROUP),
        },
    ] {
        let q = Queue::open_trusting(&queue, &trust).unwrap();
        assert!(q.groups().iter().any(|g| g.name == "spy"));
    }

    // The squatter's topic: refused at its directory.
    assert!(matches!(
        Topic::create(&topic, &topic_options(0o600)),
        Err(Error::Exists { .. })
    ));
    let dir_mode = std::fs::metadata(&topic).unwrap().mode() & 0o7777;
    let e = topic_refusal(&topic, &Trust::default());
    assert_untrusted(&e, &topic, OTHER, dir_mode, Distrust::Owner);
    let t = Topic::open_trusting(
        &topic,
        &Trust {
            owner: Some(OTHER),
            group: None,
        },
    )
    .unwrap();
    assert_eq!(t.partition_count(), 2);
}

/// One's own file that its group may write is refused unless that group is trusted; a mode
/// that lets every user write is refused at creation.
fn group_writable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::create(
        &path,
        &Options {
            mode: 0o660,
            ..small()
        },
    )
    .unwrap();
    drop(q);
    let gid = std::fs::metadata(&path).unwrap().gid();
    let e = queue_refusal(&path, &Trust::default());
    assert_untrusted(&e, &path, 0, 0o660, Distrust::GroupMayWrite);
    for wrong in [
        Trust {
            owner: Some(0),
            group: None,
        },
        Trust {
            owner: None,
            group: Some(gid + 1),
        },
    ] {
        let e = queue_refusal(&path, &wrong);
        assert_untrusted(&e, &path, 0, 0o660, Distrust::GroupMayWrite);
    }
    Queue::open_trusting(
        &path,
        &Trust {
            owner: None,
            group: Some(gid),
        },
    )
    .unwrap();
    // Readable by its group is not writable: accepted as it is.
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o640)).unwrap();
    Queue::open(&path).unwrap();

    for mode in [0o666, 0o602, 0o1600] {
        let options = Options { mode, ..small() };
        let file = dir.path().join(format!("mode-{mode:o}"));
        let e = Queue::create(&file, &options).expect_err("refused");
        let mode_refused = |e: &Error| {
            matches!(
                e,
                Error::InvalidArgument {
                    argument: "mode",
                    ..
                }
            )
        };
        assert!(mode_refused(&e), "{mode:o}: {e:?}");
        let e = Topic::create(&file, &topic_options(mode)).expect_err("refused");
        assert!(mode_refused(&e), "{mode:o}: {e:?}");
        assert!(!file.exists());
    }
    // A topic its group may write: its creator trusts that group, files and all.
    let topic = dir.path().join("t");
    let t = Topic::create(&topic, &topic_options(0o660)).unwrap();
    assert_eq!(t.partition_count(), 2);
    assert_eq!(
        std::fs::metadata(&topic).unwrap().mode() & 0o7777,
        0o2770,
        "a topic directory has the setgid bit"
    );
    let e = topic_refusal(&topic, &Trust::default());
    assert_untrusted(&e, &topic, 0, 0o2770, Distrust::GroupMayWrite);
}

/// The directory, the descriptor, the membership file and each partition file of a topic are
/// each checked: another owner, a group that may write, or every user.
fn every_topic_file() {
    let dir = tempfile::tempdir().unwrap();
    let topic = dir.path().join("t");
    drop(Topic::create(&topic, &topic_options(0o600)).unwrap());
    let files = [
        topic.clone(),
        topic.join("descriptor"),
        topic.join("members"),
        topic.join("partition-0000.q"),
        topic.join("partition-0001.q"),
    ];
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().mode() & 0o7777;
        chown(file, Some(OTHER), None).unwrap();
        let e = topic_refusal(&topic, &Trust::default());
        assert_untrusted(&e, file, OTHER, mode, Distrust::Owner);
        let trust = Trust {
            owner: Some(OTHER),
            group: None,
        };
        Topic::open_trusting(&topic, &trust).unwrap();
        chown(file, Some(0), None).unwrap();

        for (bits, why) in [
            (0o020, Distrust::GroupMayWrite),
            (0o002, Distrust::OthersMayWrite),
        ] {
            std::fs::set_permissions(file, PermissionsExt::from_mode(mode | bits)).unwrap();
            let e = topic_refusal(&topic, &Trust::default());
            assert_untrusted(&e, file, 0, mode | bits, why);
        }
        std::fs::set_permissions(file, PermissionsExt::from_mode(mode)).unwrap();
    }
    Topic::open(&topic).unwrap();
}

/// A private directory of group [`SHARED`] with the setgid bit (mode 2770), the recipe of the
/// README: files made in it get its group.
fn group_directory(shared: &Shared) -> PathBuf {
    let dir = shared.path("private");
    std::fs::create_dir(&dir).unwrap();
    chown(&dir, Some(0), Some(SHARED)).unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o2770)).unwrap();
    dir
}

/// Root shares a queue and a topic with the other user through a group: the other user
/// granted that group publishes (and grows the topic) when it trusts the group, is refused
/// when it does not, and cannot reach them at all without the group.
fn shared_through_a_group() {
    let shared = Shared::new();
    let dir = group_directory(&shared);
    let queue = dir.join("orders.q");
    let opts = Options {
        mode: 0o660,
        ..small()
    };
    drop(Queue::create(&queue, &opts).unwrap());
    assert_eq!(std::fs::metadata(&queue).unwrap().gid(), SHARED);
    let trusting = Trust {
        owner: None,
        group: Some(SHARED),
    };
    // Root makes the group before anyone publishes.
    let root = Queue::open_trusting(&queue, &trusting).unwrap();
    let mut reader = root.consumer("audit").unwrap();

    let path = ("SHMQ_PATH", queue.display().to_string());
    let trust = ("SHMQ_TRUST_GROUP", SHARED.to_string());
    let out = shared.run_as_other(SHARED, "publish", &[path.clone(), trust.clone()]);
    assert_eq!(out, "ok");
    let msg = reader.poll(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!(msg.payload, b"from the other user");
    drop(reader);

    let out = shared.run_as_other(SHARED, "publish", std::slice::from_ref(&path));
    assert!(
        out.starts_with("Untrusted") && out.contains("GroupMayWrite"),
        "{out}"
    );
    let out = shared.run_as_other(OTHER_GROUP, "publish", &[path, trust.clone()]);
    assert!(
        out.contains("Permission denied"),
        "without the group: {out}"
    );
    let e = queue_refusal(&queue, &Trust::default());
    assert_untrusted(&e, &queue, 0, 0o660, Distrust::GroupMayWrite);

    // A topic, grown by the other user: the new partition is the other user's, in the group.
    let topic = dir.join("orders");
    drop(Topic::create(&topic, &topic_options(0o660)).unwrap());
    let path = ("SHMQ_PATH", topic.display().to_string());
    let out = shared.run_as_other(
        SHARED,
        "publish",
        &[path, trust, ("SHMQ_GROW", "3".to_string())],
    );
    assert_eq!(out, "ok");
    let grown = topic.join("partition-0002.q");
    let meta = std::fs::metadata(&grown).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (OTHER, SHARED));
    let t = Topic::open_trusting(&topic, &trusting).unwrap();
    assert_eq!(t.partition_count(), 3);
    let mut member = t.consumer("audit").unwrap();
    let msg = member.poll(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!(
        (msg.key, msg.value),
        (Some(&b"key"[..]), &b"from the other user"[..])
    );
    let e = topic_refusal(
        &topic,
        &Trust {
            owner: Some(OTHER),
            group: None,
        },
    );
    assert_untrusted(&e, &topic, 0, 0o2770, Distrust::GroupMayWrite);
}

/// A work group's file is opened with its queue's trust: another owner's work file, or one
/// others may write, is refused (by joining, `pending` and `work_info`) with the file and the
/// reason, unless that owner is trusted.
fn work_file_checked() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("jobs.q");
    let q = Queue::create(&queue, &small()).unwrap();
    drop(q.worker("jobs", &WorkOptions::default()).unwrap());
    let mut work = queue.as_os_str().to_owned();
    work.push(".work-0");
    let work = PathBuf::from(work);
    let mode = std::fs::metadata(&work).unwrap().mode() & 0o7777;
    chown(&work, Some(OTHER), None).unwrap();
    let refusal = |q: &Queue| match q.worker("jobs", &WorkOptions::default()) {
        Ok(_) => panic!("joined a work group whose file another user owns"),
        Err(e) => e,
    };
    assert_untrusted(&refusal(&q), &work, OTHER, mode, Distrust::Owner);
    assert_untrusted(
        &q.pending("jobs").unwrap_err(),
        &work,
        OTHER,
        mode,
        Distrust::Owner,
    );
    assert_untrusted(
        &q.work_info("jobs").unwrap_err(),
        &work,
        OTHER,
        mode,
        Distrust::Owner,
    );
    let trusting = Queue::open_trusting(
        &queue,
        &Trust {
            owner: Some(OTHER),
            group: None,
        },
    )
    .unwrap();
    drop(trusting.worker("jobs", &WorkOptions::default()).unwrap());
    chown(&work, Some(0), None).unwrap();
    std::fs::set_permissions(&work, PermissionsExt::from_mode(mode | 0o002)).unwrap();
    assert_untrusted(
        &refusal(&q),
        &work,
        0,
        mode | 0o002,
        Distrust::OthersMayWrite,
    );
    std::fs::set_permissions(&work, PermissionsExt::from_mode(mode)).unwrap();
    drop(q.worker("jobs", &WorkOptions::default()).unwrap());
}
