//! The reported squatting case through the `shmq` binary, with a real second user (uid 65534,
//! `nobody` on Debian; only the ids are used): a queue another user made first is refused
//! with its owner and mode named, `--trust-owner` and `--trust-group` opt in, and two users
//! share a queue and a topic through a group.
//!
//! Needs root (to run `shmq` as another user): fails, never skips, without it.

mod common;

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fails, ok, shmq};

/// The second user.
const OTHER: u32 = 65534;
/// Its own group.
const OTHER_GROUP: u32 = 65534;
/// A group a queue is shared through.
const SHARED: u32 = 4242;

/// A directory every user may write, with the sticky bit (like `/dev/shm`), holding a copy of
/// `shmq` that the other user may run wherever the build lives.
struct Shared {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "cli/tests/trust.rs needs root: it runs shmq as uid {OTHER} (CI runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o1777)).unwrap();
        let exe = dir.path().join("shmq");
        std::fs::copy(env!("CARGO_BIN_EXE_shmq"), &exe).unwrap();
        std::fs::set_permissions(&exe, PermissionsExt::from_mode(0o755)).unwrap();
        Shared { dir, exe }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs `shmq args` as uid [`OTHER`] with primary group `gid` and no other group.
    fn run_as(&self, gid: u32, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let start = || {
            Command::new(&self.exe)
                .args(args)
                .current_dir("/")
                .uid(OTHER)
                .gid(gid)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        };
        // ETXTBSY: a process another test thread forked while our copy of the binary was open
        // for writing holds that descriptor until it execs; it goes away within moments.
        let mut tries = 0;
        let mut child = loop {
            match start() {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.expect("start shmq as another user"),
            }
        };
        // A refused command exits without reading its input.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    /// [`Shared::run_as`], which must succeed; its stdout.
    fn ok_as(&self, gid: u32, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run_as(gid, args, stdin);
        assert!(
            out.status.success(),
            "shmq {args:?} as {OTHER}:{gid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn a_squatted_queue_is_refused_and_trust_opts_in() {
    let shared = Shared::new();
    let q = shared.path("orders.q");
    // The squatter: a queue with a group of its own, and a mode every user may write.
    let e = String::from_utf8(
        shared
            .run_as(OTHER_GROUP, &["create", &q, "--mode", "0666"], b"")
            .stderr,
    )
    .unwrap();
    assert!(e.contains("0666") && e.contains("group"), "{e}");
    shared.ok_as(OTHER_GROUP, &["create", &q, "--capacity", "64KiB"], b"");
    shared.ok_as(OTHER_GROUP, &["group", "create", &q, "spy"], b"");
    std::fs::set_permissions(&q, PermissionsExt::from_mode(0o666)).unwrap();

    fails(&["create", &q], &[&q, "already exists"]);
    let out = shmq(&["publish", &q], b"card 4111-1111-1111-1111 paid\n");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    for needle in [
        q.as_str(),
        "owner",
        "65534",
        "mode 0666",
        "every user may write it",
    ] {
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
    fails(
        &["publish", &q, "--trust-owner", "65534"],
        &["every user may write it"],
    );

    // Mode 0600: the squatter's file all the same. Nothing reached it.
    std::fs::set_permissions(&q, PermissionsExt::from_mode(0o600)).unwrap();
    let read = shared.ok_as(
        OTHER_GROUP,
        &["consume", &q, "--group", "spy", "--timeout", "100ms"],
        b"",
    );
    assert_eq!(read, "", "nothing reached the squatter");
    for command in [
        &["info", &q][..],
        &["stat", &q, "--count", "1"],
        &["group", "list", &q],
    ] {
        fails(
            command,
            &[
                &q,
                "65534",
                "mode 0600",
                "belongs to another user",
                "--trust-owner",
            ],
        );
    }
    // Opting in, by uid or by the file's group.
    let info = ok(&["info", &q, "--json", "--trust-owner", &OTHER.to_string()]);
    assert!(info.contains("\"spy\""), "{info}");
    ok(&[
        "group",
        "list",
        &q,
        "--trust-group",
        &OTHER_GROUP.to_string(),
    ]);
    fails(
        &["info", &q, "--trust-owner", "no-such-user-here"],
        &["--trust-owner", "no user named"],
    );
}

/// A private directory of group [`SHARED`] with the setgid bit (mode 2770), as the README
/// recommends: what is made in it gets its group.
fn group_directory(shared: &Shared) -> String {
    let dir = shared.path("private");
    std::fs::create_dir(&dir).unwrap();
    chown(&dir, Some(0), Some(SHARED)).unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o2770)).unwrap();
    dir
}

fn gid_of(path: &str) -> u32 {
    std::fs::metadata(Path::new(path)).unwrap().gid()
}

#[test]
fn two_users_share_through_a_group() {
    let shared = Shared::new();
    let dir = group_directory(&shared);
    let group = SHARED.to_string();
    let q = format!("{dir}/orders.q");
    ok(&["create", &q, "--capacity", "64KiB", "--mode", "0660"]);
    assert_eq!(gid_of(&q), SHARED);
    ok(&["group", "create", &q, "audit", "--trust-group", &group]);

    let out = shared.ok_as(SHARED, &["publish", &q, "--trust-group", &group], b"paid\n");
    assert_eq!(out, "0\n");
    let refused = shared.run_as(SHARED, &["publish", &q], b"paid\n");
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && e.contains("its group may write it")
            && e.contains("--trust-group"),
        "{e}"
    );
    let denied = shared.run_as(
        OTHER_GROUP,
        &["publish", &q, "--trust-group", &group],
        b"x\n",
    );
    let e = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && e.contains("ermission denied"),
        "{e}"
    );
    let read = ok(&[
        "consume",
        &q,
        "--group",
        "audit",
        "--count",
        "1",
        "--trust-group",
        &group,
    ]);
    assert_eq!(read, "paid\n");

    // A topic, grown by the other user; the flags follow a subcommand's arguments too.
    let t = format!("{dir}/orders");
    ok(&[
        "create",
        &t,
        "--partitions",
        "2",
        "--capacity",
        "64KiB",
        "--mode",
        "0660",
    ]);
    shared.ok_as(
        SHARED,
        &[
            "topic",
            "grow",
            &t,
            "--partitions",
            "3",
            "--trust-group",
            &group,
        ],
        b"",
    );
    let grown = format!("{t}/partition-0002.q");
    assert_eq!(
        std::fs::metadata(&grown)
            .map(|m| (m.uid(), m.gid()))
            .unwrap(),
        (OTHER, SHARED)
    );
    fails(
        &["topic", "route", &t, "k"],
        &[&t, "its group may write it"],
    );
    let route = ok(&["topic", "route", &t, "k", "--trust-group", &group]);
    assert_eq!(route.trim(), shmq::partition_for_key(b"k", 3).to_string());
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", &t, "--json", "--trust-group", &group])).unwrap();
    assert_eq!(info["partitions"], 3, "{info}");
}
