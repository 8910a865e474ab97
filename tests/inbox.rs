//! Inboxes (`Queue::inbox`): fresh, done and busy keys, a dropped mark releasing its key, a
//! killed holder's key taken again, the window's eviction and a key past it, a full window,
//! errors that name the path, listing and deletion, reopening, and handles inherited by a
//! forked child.

mod common;

use std::time::Duration;

use shmq::{
    Admit, Corruption, Error, InboxFault, InboxOptions, Mark, Options, Queue, MAX_INBOX_KEY,
};

fn queue(dir: &tempfile::TempDir) -> Queue {
    Queue::create(dir.path().join("orders.q"), &Options::default()).unwrap()
}

fn small() -> InboxOptions {
    InboxOptions { window: 64 }
}

fn fresh(a: Admit) -> Mark {
    match a {
        Admit::Fresh(m) => m,
        other => panic!("expected Fresh, got {other:?}"),
    }
}

/// Inboxes and marks move between threads.
#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    send::<shmq::Inbox>();
    send::<Mark>();
}

#[test]
fn fresh_then_busy_then_done() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut a = q.inbox("payments", &small()).unwrap();
    let mut b = q.inbox("payments", &small()).unwrap();
    let mark = fresh(a.begin(b"order-1").unwrap());
    assert!(matches!(b.begin(b"order-1").unwrap(), Admit::Busy));
    assert!(
        matches!(a.begin(b"order-1").unwrap(), Admit::Busy),
        "own mark"
    );
    assert!(matches!(
        b.once(b"order-1", || ()),
        Err(Error::KeyBusy { .. })
    ));
    mark.done().unwrap();
    assert!(matches!(b.begin(b"order-1").unwrap(), Admit::Done));
    assert_eq!(b.once(b"order-1", || 7).unwrap(), None);
    assert_eq!(b.once(b"order-2", || 8).unwrap(), Some(8));
    assert_eq!(a.once(b"order-2", || 9).unwrap(), None);
    // An empty key and a key of exactly the maximum are keys like any other.
    assert_eq!(a.once(b"", || 1).unwrap(), Some(1));
    assert_eq!(a.once(&[7; MAX_INBOX_KEY], || 1).unwrap(), Some(1));
    assert_eq!(a.once(&[7; MAX_INBOX_KEY], || 1).unwrap(), None);
    let info = q.inbox_info("payments").unwrap();
    assert_eq!(
        (info.admitted, info.fill, info.done, info.held),
        (4, 4, 4, 0)
    );
    assert_eq!((info.duplicates, info.busy), (4, 3));
    assert_eq!(info.window, 64);
}

#[test]
fn a_dropped_mark_releases_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut a = q.inbox("payments", &small()).unwrap();
    let mut b = q.inbox("payments", &small()).unwrap();
    drop(fresh(a.begin(b"k").unwrap()));
    let mark = fresh(b.begin(b"k").unwrap());
    assert_eq!(q.inbox_info("payments").unwrap().held, 1);
    mark.done().unwrap();
    assert!(matches!(a.begin(b"k").unwrap(), Admit::Done));
    // A panicking effect releases the key too.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = a.once(b"p", || panic!("the effect failed"));
    }));
    assert!(panicked.is_err());
    assert_eq!(b.once(b"p", || 1).unwrap(), Some(1));
    let info = q.inbox_info("payments").unwrap();
    assert_eq!((info.admitted, info.retaken, info.held), (2, 2, 0));
}

#[test]
fn a_killed_holders_key_is_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut parent = q.inbox("payments", &small()).unwrap();
    // SAFETY: fork in a test; the child uses only the inherited Queue, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        common::in_child(|| {
            let mut inbox = q.inbox("payments", &small()).unwrap();
            let mark = fresh(inbox.begin(b"k").unwrap());
            std::mem::forget(mark);
            // SAFETY: kill(2) on our own pid: the child dies holding the key.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            0
        });
    }
    let code = common::reap(pid, Duration::from_secs(30));
    assert_eq!(code, Some(128 + libc::SIGKILL));
    let mark = fresh(parent.begin(b"k").unwrap());
    mark.done().unwrap();
    assert_eq!(q.inbox_info("payments").unwrap().retaken, 1);
}

#[test]
fn the_window_evicts_the_oldest_key_which_is_fresh_again() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut inbox = q.inbox("payments", &small()).unwrap();
    for k in 0..64u32 {
        assert_eq!(inbox.once(&k.to_le_bytes(), || k).unwrap(), Some(k));
    }
    for k in 0..64u32 {
        assert_eq!(inbox.once(&k.to_le_bytes(), || k).unwrap(), None, "{k}");
    }
    assert_eq!(inbox.once(&64u32.to_le_bytes(), || 64).unwrap(), Some(64));
    // Key 0 was the oldest: evicted, it is fresh again (and evicts key 1).
    assert_eq!(inbox.once(&0u32.to_le_bytes(), || 0).unwrap(), Some(0));
    assert_eq!(inbox.once(&2u32.to_le_bytes(), || 2).unwrap(), None);
    let info = q.inbox_info("payments").unwrap();
    assert_eq!((info.admitted, info.fill, info.evicted), (66, 64, 2));
    // Reopened, the inbox remembers.
    drop(inbox);
    let mut again = q.inbox("payments", &small()).unwrap();
    assert_eq!(again.once(&63u32.to_le_bytes(), || 63).unwrap(), None);
}

#[test]
fn a_window_of_held_keys_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut inbox = q.inbox("payments", &small()).unwrap();
    let mut marks: Vec<Mark> = (0..64u32)
        .map(|k| fresh(inbox.begin(&k.to_le_bytes()).unwrap()))
        .collect();
    match inbox.begin(b"one more") {
        Err(Error::InboxFull { path, window: 64 }) => {
            assert!(path.ends_with("orders.q.inbox-payments"), "{path:?}")
        }
        other => panic!("expected InboxFull, got {other:?}"),
    }
    marks.remove(0).done().unwrap();
    fresh(inbox.begin(b"one more").unwrap()).done().unwrap();
    assert_eq!(q.inbox_info("payments").unwrap().held, 63);
}

#[test]
fn errors_name_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut inbox = q.inbox("payments", &small()).unwrap();
    assert!(matches!(
        inbox.begin(&[0; MAX_INBOX_KEY + 1]),
        Err(Error::KeyTooBig { len: 65, max: 64 })
    ));
    for bad in [
        "",
        ".hidden",
        "a/b",
        "white space",
        "x.tmp",
        &"x".repeat(65),
    ] {
        assert!(
            matches!(q.inbox(bad, &small()), Err(Error::InvalidArgument { .. })),
            "{bad:?}"
        );
    }
    for window in [0, 32, 100, 1 << 21] {
        assert!(matches!(
            q.inbox("other", &InboxOptions { window }),
            Err(Error::InvalidArgument { .. })
        ));
    }
    match q.inbox_info("missing") {
        Err(Error::UnknownInbox { path }) => {
            assert!(path.ends_with("orders.q.inbox-missing"), "{path:?}")
        }
        other => panic!("expected UnknownInbox, got {other:?}"),
    }
    // An existing inbox keeps its window.
    assert_eq!(
        q.inbox("payments", &InboxOptions::default())
            .unwrap()
            .window(),
        64
    );
    let path = inbox.path().to_path_buf();
    drop(inbox);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    match q.inbox("payments", &small()) {
        Err(Error::Corrupt {
            path: p,
            kind: Corruption::Inbox(InboxFault::BadMagic),
        }) => assert_eq!(p, path),
        other => panic!("expected BadMagic, got {other:?}"),
    }
    std::fs::write(&path, &bytes[..4096]).unwrap();
    assert!(matches!(
        q.inbox_info("payments"),
        Err(Error::Corrupt {
            kind: Corruption::Inbox(InboxFault::Size { len: 4096, .. }),
            ..
        })
    ));
}

#[test]
fn inboxes_are_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut a = q.inbox("b-second", &small()).unwrap();
    let _b = q.inbox("a-first", &small()).unwrap();
    assert_eq!(q.inboxes().unwrap(), ["a-first", "b-second"]);
    let mark = fresh(a.begin(b"k").unwrap());
    assert!(matches!(
        q.delete_inbox("b-second"),
        Err(Error::KeyBusy { .. })
    ));
    mark.done().unwrap();
    q.delete_inbox("b-second").unwrap();
    assert!(matches!(
        q.delete_inbox("b-second"),
        Err(Error::UnknownInbox { .. })
    ));
    assert_eq!(q.inboxes().unwrap().len(), 1);
    // The handle on the removed file is told within the watcher's interval.
    common::wait_until(
        "the removed inbox reported detached",
        Duration::from_secs(20),
        || matches!(a.begin(b"k2"), Err(Error::Detached { .. })),
    );
}

#[test]
fn handles_made_before_fork_are_refused_in_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mut inbox = q.inbox("payments", &small()).unwrap();
    let mark = fresh(inbox.begin(b"held").unwrap());
    // SAFETY: fork in a test; the child uses the inherited handles, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        common::in_child(move || {
            let forked = |r: shmq::Result<()>| matches!(r, Err(Error::Forked { .. }));
            let mut ok = forked(inbox.begin(b"other").map(drop));
            ok &= forked(mark.done());
            // A new inbox made in the child works, and sees the parent's key held.
            let mut own = q.inbox("payments", &small()).unwrap();
            ok &= matches!(own.begin(b"held"), Ok(Admit::Busy));
            i32::from(!ok)
        });
    }
    assert_eq!(common::reap(pid, Duration::from_secs(30)), Some(0));
    // The child's drop of its copy of the mark left the parent's hold alone.
    assert_eq!(q.inbox_info("payments").unwrap().held, 1);
    mark.done().unwrap();
    assert!(matches!(inbox.begin(b"held").unwrap(), Admit::Done));
}

/// The inbox file is trusted as its queue is: one every user may write is refused.
#[test]
fn an_inbox_file_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let path = q.inbox("payments", &small()).unwrap().path().to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    let queue_mode = std::fs::metadata(dir.path().join("orders.q"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, queue_mode, "made with the queue file's mode");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    for r in [
        q.inbox("payments", &small()).map(drop),
        q.inbox_info("payments").map(drop),
    ] {
        match r {
            Err(Error::Untrusted { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Untrusted, got {other:?}"),
        }
    }
}
