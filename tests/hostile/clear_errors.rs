//! The clear, deterministic errors for common mistakes and for specific damage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shmq::{Corruption, Error, Options, OutOfRange, PathKind, Queue};

use crate::common::format::*;
use crate::exercise::*;
use crate::file::*;
use crate::template::*;

fn make_queue(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    let q = Queue::create(&path, &opts).unwrap();
    q.producer().unwrap().publish(b"x").unwrap();
    path
}

fn open_err(path: &Path) -> Error {
    match Queue::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

fn corruption(path: &Path) -> Corruption {
    match open_err(path) {
        Error::Corrupt { path: p, kind } => {
            assert_eq!(p, path, "error names the wrong path");
            let e = Error::Corrupt {
                path: p,
                kind: kind.clone(),
            };
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "message lacks the path: {e}"
            );
            kind
        }
        e => panic!("expected Corrupt, got {e:?}"),
    }
}

/// The directory holds exactly these names (no temp files left behind).
fn assert_dir_holds(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}

#[test]
fn template_is_valid_and_usable() {
    let t = template();
    let path = fresh_path();
    std::fs::write(&path, &t.bytes).unwrap();
    let q = Queue::open(&path).unwrap();
    assert_eq!(q.tail_offset(), T_RECORDS + 1);
    let mut names: Vec<(String, u64, bool)> = q
        .groups()
        .into_iter()
        .map(|g| (g.name, g.committed, g.gating))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("alpha".to_string(), T_RECORDS + 1 - 5, true),
            ("beta".to_string(), 30, false)
        ]
    );
    // alpha resumes at its first uncommitted record; beta was lapped long ago.
    let mut alpha = q.consumer("alpha").unwrap();
    let m = alpha.poll(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(m.offset, T_RECORDS + 1 - 5);
    assert_eq!(m.payload, &t_payload(T_RECORDS - 5)[..]);
    let mut beta = q.consumer("beta").unwrap();
    assert!(matches!(
        beta.poll(Some(Duration::ZERO)),
        Err(Error::Lagged { lost }) if lost > 0
    ));
    assert!(exercise(&path), "the undamaged template failed to open");
}

#[test]
fn wrong_magic_is_bad_magic_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    edit_file(&path, |b| b[0] ^= 0x20);
    assert_eq!(corruption(&path), Corruption::BadMagic);
    // A file that is not a queue at all, but long enough.
    std::fs::write(&path, vec![b'#'; 16384]).unwrap();
    assert_eq!(corruption(&path), Corruption::BadMagic);
}

#[test]
fn wrong_version_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    edit_file(&path, |b| {
        put32(b, OFF_VERSION, 2);
        reseal(b);
    });
    assert_eq!(
        corruption(&path),
        Corruption::Version {
            found: 2,
            supported: shmq::FORMAT_VERSION
        }
    );
    // The version is checked before the checksum.
    edit_file(&path, |b| put32(b, OFF_VERSION, 0xdead));
    assert!(matches!(
        corruption(&path),
        Corruption::Version { found: 0xdead, .. }
    ));
}

#[test]
fn truncated_and_extended_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    let good = std::fs::read(&path).unwrap();
    let full = good.len() as u64;
    for (len, need) in [
        (full - 1, full),
        (full - REGION_ALIGN, full),
        (HEADER_SIZE, full),
        (full + 1, full),
        (full * 2, full),
        (HEADER_SIZE - 1, HEADER_SIZE),
        (100, HEADER_SIZE),
        (0, HEADER_SIZE),
    ] {
        std::fs::write(&path, &good).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        assert_eq!(
            corruption(&path),
            Corruption::Truncated {
                len,
                need,
                header: HEADER_SIZE
            },
            "length {len}"
        );
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(Queue::open(&path).unwrap().tail_offset(), 1);
}

#[test]
fn damaged_header_fields_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    let good = std::fs::read(&path).unwrap();
    // A flipped bit without a new checksum.
    edit_file(&path, |b| b[OFF_CAPACITY] ^= 1);
    assert!(matches!(
        corruption(&path),
        Corruption::HeaderChecksum { .. }
    ));
    // Bad values with a valid checksum.
    type Expect = fn(&Corruption) -> bool;
    let cases: [(usize, u64, Expect); 10] = [
        (OFF_FULL_POLICY, 3, |c| {
            matches!(c, Corruption::FullPolicy { found: 3 })
        }),
        (OFF_GROUP_SLOTS, 0, |c| {
            matches!(
                c,
                Corruption::Field(OutOfRange::Slots {
                    table: "group",
                    found: 0,
                    max: 64
                })
            )
        }),
        (OFF_GROUP_SLOTS, 65, |c| {
            matches!(
                c,
                Corruption::Field(OutOfRange::Slots {
                    table: "group",
                    found: 65,
                    ..
                })
            )
        }),
        (OFF_PRODUCER_SLOTS, 0, |c| {
            matches!(
                c,
                Corruption::Field(OutOfRange::Slots {
                    table: "producer",
                    found: 0,
                    ..
                })
            )
        }),
        (OFF_MAX_MESSAGE, 0, |c| {
            matches!(
                c,
                Corruption::Field(OutOfRange::MaxMessage { found: 0, .. })
            )
        }),
        (OFF_MAX_MESSAGE, 4096, |c| {
            matches!(
                c,
                Corruption::Field(OutOfRange::MaxMessage { found: 4096, .. })
            )
        }),
        (OFF_CAPACITY, 4095, |c| {
            matches!(
                c,
                Corruption::Field(OutOfRange::Capacity { found: 4095, .. })
            )
        }),
        (
            OFF_CAPACITY,
            1 << 41,
            |c| matches!(c, Corruption::Field(OutOfRange::Capacity { found, .. }) if *found == 1 << 41),
        ),
        (OFF_CLAIM_TIMEOUT, 0, |c| {
            matches!(c, Corruption::Field(OutOfRange::ClaimTimeout))
        }),
        (OFF_FILE_SIZE, 12345, |c| {
            matches!(c, Corruption::FileSize { stored: 12345, .. })
        }),
    ];
    for (at, value, expected) in cases {
        std::fs::write(&path, &good).unwrap();
        edit_file(&path, |b| {
            if at == OFF_CAPACITY || at == OFF_CLAIM_TIMEOUT || at == OFF_FILE_SIZE {
                put64(b, at, value);
            } else {
                put32(b, at, value as u32);
            }
            reseal(b);
        });
        let found = corruption(&path);
        assert!(expected(&found), "field at {at} = {value}: {found:?}");
        assert!(
            found.to_string().starts_with("invalid header field: "),
            "{found}"
        );
    }
    // A consistent but different capacity: the file is now the wrong size.
    std::fs::write(&path, &good).unwrap();
    edit_file(&path, |b| {
        let l = Layout::new(8192, 64, 64);
        put64(b, OFF_CAPACITY, 8192);
        put64(b, OFF_FILE_SIZE, l.file_size);
        reseal(b);
    });
    assert!(matches!(
        corruption(&path),
        Corruption::Truncated { need, .. } if need == Layout::new(8192, 64, 64).file_size
    ));
}

#[test]
fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.q");
    match open_err(&path) {
        Error::NotFound { path: p } => assert_eq!(p, path),
        e => panic!("expected NotFound, got {e:?}"),
    }
    assert!(!path.exists());
}

#[test]
fn symlinks_and_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = make_queue(&dir);
    let before = std::fs::read(&target).unwrap();
    let link = dir.path().join("link.q");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    match open_err(&link) {
        Error::Symlink { path } => assert_eq!(path, link),
        e => panic!("expected a refusal, got {e:?}"),
    }
    // A dangling link is refused too, not followed into a new file.
    let dangling = dir.path().join("dangling.q");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(open_err(&dangling), Error::Symlink { .. }));
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    assert!(matches!(
        Queue::create(&dangling, &opts),
        Err(Error::Exists { .. })
    ));
    assert!(!dir.path().join("nowhere").exists());
    // A FIFO is not a regular file.
    let fifo = dir.path().join("fifo.q");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(matches!(
        open_err(&fifo),
        Error::WrongKind {
            found: PathKind::Fifo,
            expected: PathKind::QueueFile,
            ..
        }
    ));
    // A directory is refused with an error, not a panic.
    assert!(Queue::open(dir.path()).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), before);
}

/// A payload byte flipped in the file (on disk or by another process) is caught by the record's
/// CRC32C: the consumer gets an error naming the file and offset, then goes on with the next
/// record. With verification turned off, the damaged bytes are delivered as they are.
#[test]
fn a_flipped_payload_byte_fails_the_checksum_and_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::create(&path, &Options::default()).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..3u32 {
        p.publish(format!("payload number {i:04} to be checked").as_bytes())
            .unwrap();
    }
    let needle = b"payload number 0001";
    edit_file(&path, |b| {
        let at = b
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("payload 1 in the file");
        b[at + 3] ^= 0x20;
    });
    let mut unchecked = q.consumer("raw").unwrap();
    unchecked.set_verify_checksums(false);
    let mut c = q.consumer("g").unwrap();
    assert_eq!(c.poll(Some(Duration::ZERO)).unwrap().unwrap().offset, 0);
    match c.poll(Some(Duration::ZERO)) {
        Err(Error::Corrupt {
            path: p,
            kind:
                Corruption::Checksum {
                    offset: 1,
                    stored,
                    computed,
                },
        }) => {
            assert_eq!(p, path);
            assert_ne!(stored, computed);
        }
        other => panic!("expected a checksum error for record 1, got {other:?}"),
    }
    let next = c.poll(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(next.offset, 2, "the damaged record is skipped");
    assert_eq!(next.payload, b"payload number 0002 to be checked");
    unchecked.poll(Some(Duration::ZERO)).unwrap().unwrap();
    let damaged = unchecked.poll(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(damaged.payload, b"payLoad number 0001 to be checked");
}

#[test]
fn create_never_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    let before = std::fs::read(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let opts = Options {
        capacity: 8192,
        max_message: 256,
        ..Options::default()
    };
    match Queue::create(&path, &opts) {
        Err(Error::Exists { path: p }) => assert_eq!(p, path),
        other => panic!("expected Exists, got {:?}", other.err()),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    // Any existing file, queue or not.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"keep me").unwrap();
    assert!(matches!(
        Queue::create(&other, &opts),
        Err(Error::Exists { .. })
    ));
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    // No temporary files left behind, and the queue still opens with its record.
    assert_dir_holds(dir.path(), &["q", "notes.txt"]);
    let q = Queue::open(&path).unwrap();
    assert_eq!(q.tail_offset(), 1);
}

#[test]
fn invalid_options_are_refused_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let base = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    let cases: Vec<(&str, Options)> = vec![
        (
            "capacity not a power of two",
            Options {
                capacity: 5000,
                ..base.clone()
            },
        ),
        (
            "capacity too small",
            Options {
                capacity: 2048,
                max_message: 16,
                ..base.clone()
            },
        ),
        (
            "capacity too large",
            Options {
                capacity: 1 << 41,
                ..base.clone()
            },
        ),
        (
            "max_message too big",
            Options {
                max_message: 2048,
                ..base.clone()
            },
        ),
        (
            "max_message far too big",
            Options {
                max_message: u32::MAX,
                ..base.clone()
            },
        ),
        (
            "max_message zero",
            Options {
                max_message: 0,
                ..base.clone()
            },
        ),
        (
            "mode 0o10000",
            Options {
                mode: 0o10000,
                ..base.clone()
            },
        ),
        (
            "group slots 0",
            Options {
                group_slots: 0,
                ..base.clone()
            },
        ),
        (
            "group slots 65",
            Options {
                group_slots: 65,
                ..base.clone()
            },
        ),
        (
            "producer slots 0",
            Options {
                producer_slots: 0,
                ..base.clone()
            },
        ),
        (
            "claim timeout zero",
            Options {
                claim_timeout: Duration::ZERO,
                ..base.clone()
            },
        ),
    ];
    for (what, opts) in cases {
        match Queue::create(&path, &opts) {
            Err(Error::InvalidOptions(why)) => assert!(!why.to_string().is_empty(), "{what}"),
            Err(Error::InvalidArgument {
                argument: "mode", ..
            }) if what.starts_with("mode") => {}
            other => panic!("{what}: expected InvalidOptions, got {:?}", other.err()),
        }
        assert_dir_holds(dir.path(), &[]);
    }
    // The largest valid message size is accepted.
    Queue::create(
        &path,
        &Options {
            max_message: 2048 - 32,
            ..base
        },
    )
    .unwrap();
}
