//! [`Topic`]: an open topic directory: atomic creation, validating open, growth, and the
//! partitions' and members' state. Its producers and members are made in `mod.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Corruption, DescriptorFault, Error, PathKind, Result};
use crate::mapping::file::io_err;
use crate::mapping::trust::Trust;
use crate::queue::consumer::Subscribe;
use crate::queue::group::GroupInfo;
use crate::queue::{Options, Queue};
use crate::topic::descriptor::{self, Descriptor};
use crate::topic::members::{self, MemberInfo, Members, Slot};

/// Creation parameters of a topic.
#[derive(Debug, Clone)]
pub struct TopicOptions {
    /// Number of partitions, 1 to [`MAX_PARTITIONS`](crate::MAX_PARTITIONS). Default 1.
    pub partitions: u32,
    /// The parameters of every partition's queue file (`mode` also applies to the descriptor
    /// and membership file; the directory gets the same bits plus search permission where read
    /// permission is given, and the setgid bit, so that files a later growth adds have the
    /// directory's group whoever grows it).
    pub queue: Options,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            partitions: 1,
            queue: Options::default(),
        }
    }
}

/// Facts about one partition of a topic, as read at one moment.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    /// The partition's index.
    pub partition: u32,
    /// Its queue file.
    pub path: PathBuf,
    /// The next offset a producer will be given in it.
    pub tail_offset: u64,
    /// Its consumer groups (a topic group is a group of the same name in every partition; the
    /// holder is the member reading this partition).
    pub groups: Vec<GroupInfo>,
}

/// An open topic. Cheap to clone. A handle sees the partition count of the descriptor it
/// read; [`Topic::refresh`] (called by producers and consumers on their own) picks up growth.
#[derive(Clone)]
pub struct Topic {
    dir: PathBuf,
    descriptor: Descriptor,
    partitions: Vec<Queue>,
    members: Arc<Members>,
    /// Whom this handle trusts with the topic's files (partitions added later included).
    trust: Trust,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("path", &self.dir)
            .field("partitions", &self.partition_count())
            .finish_non_exhaustive()
    }
}

impl Topic {
    /// Creates a topic directory at `dir` with `options.partitions` partitions; fails with
    /// [`Error::Exists`] if `dir` exists.
    ///
    /// Atomic: everything is built in a temporary directory next to `dir`, `fsync`ed, then
    /// renamed into place without replacing anything, so no opener sees a partial topic.
    pub fn create(dir: impl AsRef<Path>, options: &TopicOptions) -> Result<Topic> {
        let dir = dir.as_ref();
        descriptor::check_partitions(options.partitions)?;
        let name = dir.file_name().ok_or_else(|| Error::NoFileName {
            path: dir.to_path_buf(),
        })?;
        let parent = match dir.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mode = options.queue.mode;
        crate::mapping::trust::check_create_mode(mode)?;
        let tmp = parent.join(format!(
            ".{}.{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            crate::runtime::clock::now_ns()
        ));
        std::fs::create_dir(&tmp).map_err(io_err(&tmp, "create directory"))?;
        let built = build(&tmp, options, mode).and_then(|gid| {
            nix::fcntl::renameat2(
                None,
                &tmp,
                None,
                dir,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| match e {
                nix::errno::Errno::EEXIST | nix::errno::Errno::ENOTEMPTY => Error::Exists {
                    path: dir.to_path_buf(),
                },
                e => io_err(dir, "rename into place")(e.into()),
            })?;
            Ok(gid)
        });
        let gid = match built {
            Ok(gid) => gid,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        // Make the new name durable too; failure here is not fatal to using the topic.
        let _ = descriptor::sync_dir(parent);
        // A topic its group may write is shared with that group: trust the files its members
        // add by growing it.
        let trust = Trust {
            group: (mode & 0o020 != 0).then_some(gid),
            owner: None,
        };
        Topic::open_trusting(dir, &trust)
    }

    /// Whether `path` is a topic directory (a directory holding a topic descriptor), as
    /// opposed to a queue file: what a tool given either checks first. Nothing is validated;
    /// [`Topic::open`] does that.
    pub fn is_topic(path: impl AsRef<Path>) -> bool {
        crate::mapping::file::is_topic_dir(path.as_ref())
    }

    /// Opens the topic at `dir`: validates its descriptor and membership file and opens every
    /// partition. [`Error::TopicNotFound`] if `dir` does not exist; a missing partition file is
    /// [`Corruption::MissingPartition`]. The directory and every file in it must belong to
    /// this process's effective user, and neither their group nor others may write them
    /// ([`Error::Untrusted`] otherwise); [`Topic::open_trusting`] accepts another owner or
    /// group.
    pub fn open(dir: impl AsRef<Path>) -> Result<Topic> {
        Topic::open_trusting(dir, &Trust::default())
    }

    /// Opens the topic at `dir` like [`Topic::open`], also accepting a directory and files
    /// that belong to `trust.owner`, or whose group is `trust.group` (which may then write
    /// them). The handle keeps `trust` for the partitions a growth adds later.
    pub fn open_trusting(dir: impl AsRef<Path>, trust: &Trust) -> Result<Topic> {
        let dir = dir.as_ref().to_path_buf();
        let meta = std::fs::metadata(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::TopicNotFound { path: dir.clone() },
            _ => io_err(&dir, "stat")(e),
        })?;
        if !meta.is_dir() {
            return Err(Error::WrongKind {
                found: if is_queue_file(&dir) {
                    PathKind::QueueFile
                } else {
                    PathKind::File
                },
                path: dir,
                expected: PathKind::TopicDirectory,
            });
        }
        trust.check(&dir, &meta)?;
        let descriptor = descriptor::read(&dir, trust)?;
        let members = Arc::new(Members::open(&dir.join(members::FILE), trust)?);
        // A growth that died between replacing the descriptor and announcing it is announced
        // by the next opener, so members and producers do not keep the old count.
        members.publish_generation(descriptor.generation);
        let mut topic = Topic {
            dir,
            descriptor,
            partitions: Vec::new(),
            members,
            trust: *trust,
        };
        topic.open_partitions()?;
        Ok(topic)
    }

    /// Opens the partitions the descriptor lists that this handle has not opened yet.
    fn open_partitions(&mut self) -> Result<()> {
        for i in self.partitions.len() as u32..self.descriptor.partitions {
            let file = descriptor::partition_file(&self.dir, i);
            let queue = Queue::open_trusting(&file, &self.trust).map_err(|e| match e {
                Error::NotFound { .. } => Error::Corrupt {
                    path: self.dir.clone(),
                    kind: Corruption::MissingPartition { partition: i, file },
                },
                e => e,
            })?;
            self.partitions.push(queue);
        }
        Ok(())
    }

    /// Re-reads the descriptor and opens partitions added since (by [`Topic::grow`] in any
    /// process). Returns whether the partition count changed.
    pub fn refresh(&mut self) -> Result<bool> {
        let d = descriptor::read(&self.dir, &self.trust)?;
        if d.partitions < self.descriptor.partitions {
            return Err(Error::Corrupt {
                path: self.dir.clone(),
                kind: Corruption::Descriptor(DescriptorFault::Shrank {
                    before: self.descriptor.partitions,
                    after: d.partitions,
                }),
            });
        }
        let grown = d.partitions != self.descriptor.partitions;
        self.descriptor = d;
        self.open_partitions()?;
        Ok(grown)
    }

    /// Grows the topic to `partitions` partitions (a no-op if it has that many).
    ///
    /// New partitions copy partition 0's parameters and its consumer groups (starting at
    /// offset 0, so nothing published to them is missed); a work group is created as a work
    /// group with the settings of its file in partition 0. Then the descriptor is replaced
    /// atomically and every producer and member picks the new count up at its next publish or
    /// rebalance. **Keyed routing changes with the count**: a key's new records may go to
    /// another partition than its old ones, so per-key order holds only among records
    /// published after the growth. To spread an existing backlog while keeping per-key order,
    /// copy it into a new topic with [`fan_out`](crate::fan_out) instead.
    ///
    /// Safe against concurrent growth (under the membership file's lock) and against a crash
    /// (a partition file left by an interrupted growth is reused).
    pub fn grow(&mut self, partitions: u32) -> Result<()> {
        descriptor::check_partitions(partitions)?;
        let members = self.members.clone();
        let _lock = members.lock()?;
        self.refresh()?;
        let have = self.descriptor.partitions;
        if partitions < have {
            return Err(Error::InvalidArgument {
                argument: "partitions",
                why: format!(
                    "a topic cannot shrink: it has {have} partitions, {partitions} asked for"
                ),
            });
        }
        if partitions == have {
            return Ok(());
        }
        // The generation comes from the file: a hostile one may be at its maximum already.
        // Checked before any partition file is made.
        let generation =
            self.descriptor
                .generation
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt {
                    path: self.dir.clone(),
                    kind: Corruption::Descriptor(DescriptorFault::Generation(
                        self.descriptor.generation,
                    )),
                })?;
        let first = &self.partitions[0];
        let g = first.geometry();
        let mode = std::fs::metadata(first.path())
            .map_err(io_err(first.path(), "stat"))?
            .permissions()
            .mode()
            & 0o777;
        let options = Options {
            capacity: g.capacity,
            max_message: g.max_message,
            full_policy: g.full_policy,
            group_slots: g.group_slots,
            producer_slots: g.producer_slots,
            claim_timeout: g.claim_timeout,
            mode,
            durability: g.durability,
            checksums: g.checksums,
        };
        let groups = first.groups();
        for i in have..partitions {
            let file = descriptor::partition_file(&self.dir, i);
            let queue = match Queue::create(&file, &options) {
                Err(Error::Exists { .. }) => Queue::open_trusting(&file, &self.trust)?,
                r => r?,
            };
            for group in &groups {
                if group.work {
                    // A work group gets its own kind, with partition 0's settings.
                    queue.create_work_group_like(first, &group.name)?;
                    continue;
                }
                let subscribe = Subscribe {
                    gating: group.gating,
                    ..Subscribe::default()
                };
                match queue.subscribe(&group.name, &subscribe) {
                    // Reused file: the group exists and a member already reads it.
                    Ok(_) | Err(Error::GroupBusy { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let next = Descriptor {
            partitions,
            generation,
            ..self.descriptor
        };
        descriptor::write(&self.dir, &next, mode)?;
        members.publish_generation(next.generation);
        self.refresh()?;
        Ok(())
    }

    /// The growth generation of the descriptor this handle read: what a producer or member
    /// made from it compares with the membership file's word to know whether it is stale.
    pub(crate) fn generation(&self) -> u64 {
        self.descriptor.generation
    }

    /// Refreshes this handle if the topic grew since growth generation `*seen` (what its
    /// user last saw; one atomic load of the membership file when it did not), and records
    /// the new generation; true if it grew. A failed refresh leaves `*seen` as it was, so the
    /// next call tries again.
    pub(crate) fn refresh_if_grown(&mut self, seen: &mut u64) -> Result<bool> {
        let generation = self.members_file().generation();
        if generation == *seen {
            return Ok(false);
        }
        self.refresh()?;
        *seen = generation;
        Ok(true)
    }

    /// The topic directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The number of partitions this handle knows of.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The partitions' queues, by index (for inspection: publishing to them directly bypasses
    /// the key framing, and topic consumers refuse such records).
    pub fn partitions(&self) -> &[Queue] {
        &self.partitions
    }

    /// Per-partition facts: file, tail and groups.
    pub fn info(&self) -> Vec<PartitionInfo> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(i, q)| PartitionInfo {
                partition: i as u32,
                path: q.path().to_path_buf(),
                tail_offset: q.tail_offset(),
                groups: q.groups(),
            })
            .collect()
    }

    /// Checks every partition file now ([`Queue::check_file`]) and the membership file:
    /// [`Error::Truncated`](crate::Error::Truncated) or
    /// [`Error::Detached`](crate::Error::Detached) for the first one that is damaged.
    pub fn check_file(&self) -> Result<()> {
        self.members.check_damage()?;
        self.partitions.iter().try_for_each(Queue::check_file)
    }

    /// [`Queue::prefault`] for every partition file: this process's publishes and polls on the
    /// topic then take no first-touch page fault. Stops at the first partition that fails.
    pub fn prefault(&self) -> Result<()> {
        self.partitions.iter().try_for_each(Queue::prefault)
    }

    /// The members of every consumer group, with their liveness.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.infos()
    }

    /// Whom this handle trusts with the topic's files.
    pub(crate) fn trust(&self) -> Trust {
        self.trust
    }

    pub(crate) fn members_file(&self) -> &Arc<Members> {
        &self.members
    }

    /// Wakes members and workers sleeping in a poll (after a publish, or a nack).
    pub(crate) fn notify(&self) {
        crate::protocol::ring::wake_on(
            self.members.region(),
            members::WAKE_WAITERS,
            members::WAKE_SEQ,
        );
    }

    /// Sleeps on the topic's wake-up word with the bit of membership slot `slot` flagged,
    /// until [`notify`](Self::notify), `ready` turns true (re-checked after the flag, SYNC W in
    /// `members.rs`), or `timeout` passed.
    pub(crate) fn sleep(&self, slot: Slot, ready: impl Fn() -> bool, timeout: Duration) {
        crate::protocol::ring::sleep_on(
            self.members.region(),
            members::WAKE_WAITERS,
            members::WAKE_SEQ,
            1u64 << slot.index,
            ready,
            Some(timeout),
        );
    }
}

/// Fills the temporary directory `tmp` with a new topic's files; returns the directory's
/// group, which its files have too.
fn build(tmp: &Path, options: &TopicOptions, mode: u32) -> Result<u32> {
    // Search permission wherever read permission is given. Setgid: every file in the
    // directory, also those a growth by another user adds, gets the directory's group.
    let dir_mode = mode | (mode & 0o444) >> 2 | 0o2000;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(dir_mode))
        .map_err(io_err(tmp, "chmod"))?;
    let gid = std::fs::metadata(tmp).map_err(io_err(tmp, "stat"))?.gid();
    for i in 0..options.partitions {
        Queue::create(descriptor::partition_file(tmp, i), &options.queue)?;
    }
    Members::create(&tmp.join(members::FILE), mode)?;
    let d = Descriptor {
        partitions: options.partitions,
        created_ns: crate::runtime::clock::now_ns(),
        generation: 0,
    };
    descriptor::write(tmp, &d, mode)?;
    Ok(gid)
}

/// Whether `path` starts with a queue file's magic (for an error message only: nothing else is
/// validated).
fn is_queue_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == crate::protocol::layout::MAGIC)
}
