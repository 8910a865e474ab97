//! Whom an opener trusts: the owner and mode checks made on every file and directory of a
//! queue or topic before it is mapped or read.
//!
//! Whoever may write a queue file can read every record, inject records and truncate the file
//! (every process mapping it then gets SIGBUS). Another user who creates the file first in a
//! shared directory such as `/dev/shm` (a squatter) would be all of that. So an opener accepts
//! a file only if nobody it does not trust may write it:
//!
//! * its owner is the process's effective user, or [`Trust::owner`], or its group is
//!   [`Trust::group`] (a file of that group was made by a member of it, whom the caller trusts);
//! * its group may write it only if its group is [`Trust::group`];
//! * every user may write it: never.
//!
//! The check is an `fstat` of the descriptor that is then used (no race with a rename of the
//! path), except for a topic's directory, whose files are each checked again. The effective
//! user is not special-cased when it is root: root opening another user's file is the
//! squatting case itself. The directory a queue file lies in is not checked: a sticky one such
//! as `/dev/shm` is the usual place, and whatever another user puts at the path is refused by
//! the checks above.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Account, Distrust, Error, Result};

/// Whom an opener trusts besides its own effective user, for `Queue::open_trusting` and
/// `Topic::open_trusting`. The default trusts nobody else: the file must belong to this
/// process's effective user and neither its group nor others may write it.
///
/// ```
/// # fn main() -> shmq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("orders.q");
/// # shmq::Queue::create(&path, &shmq::Options::default())?;
/// // A queue shared through a group: made with mode 0o660 by one member, opened by the others.
/// let gid = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap();
/// let queue = shmq::Queue::open_trusting(&path, &shmq::Trust { group: Some(gid), owner: None })?;
/// # drop(queue); Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trust {
    /// Another user (uid) whose files are accepted like the opener's own: they may belong to
    /// it, and still neither their group (unless it is [`Trust::group`]) nor others may write
    /// them.
    pub owner: Option<u32>,
    /// A group (gid) whose members are trusted: a file whose group it is is accepted whoever
    /// owns it, and may be writable by the group.
    pub group: Option<u32>,
}

impl Trust {
    /// Accepts the file or directory at `path` whose status is `meta` (from `fstat` of the
    /// descriptor about to be used), or says why not: [`Error::Untrusted`].
    pub(crate) fn check(&self, path: &Path, meta: &Metadata) -> Result<()> {
        let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
        let group_trusted = self.group == Some(gid);
        let why = if mode & 0o002 != 0 {
            Distrust::OthersMayWrite
        } else if mode & 0o020 != 0 && !group_trusted {
            Distrust::GroupMayWrite
        } else if uid == Uid::effective().as_raw() || self.owner == Some(uid) || group_trusted {
            return Ok(());
        } else {
            Distrust::Owner
        };
        Err(Error::Untrusted {
            path: path.to_path_buf(),
            owner: Account {
                id: uid,
                name: User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name),
            },
            group: Account {
                id: gid,
                name: Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name),
            },
            mode,
            why,
        })
    }
}

/// Checks the permission bits a caller asks a new file to be created with: only `0o777`, and
/// never writable by every user (no opener would accept the file).
pub(crate) fn check_create_mode(mode: u32) -> Result<()> {
    if mode & !0o777 != 0 {
        return Err(Error::InvalidArgument {
            argument: "mode",
            why: format!("{mode:#o} has bits outside 0o777"),
        });
    }
    if mode & 0o002 != 0 {
        return Err(Error::InvalidArgument {
            argument: "mode",
            why: format!(
                "{mode:04o} lets every user write the file, and no opener accepts such a file; \
                 share it through a group with mode 0660 instead"
            ),
        });
    }
    Ok(())
}

/// Opens an existing shared file (a queue file, a topic's membership file) for reading and
/// writing; a symbolic link is refused (`ELOOP`), and the descriptor is not inherited by
/// children.
pub(crate) fn open_shared(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}
