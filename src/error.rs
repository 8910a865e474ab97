//! Errors: one [`Error`] for every fallible operation, with the path and cause where a file is
//! involved, and the outcomes a caller must branch on (`Full`, `Timeout`, `Lagged`) as variants.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What is wrong with a queue file's contents (or with a topic's descriptor or membership
/// file). Each check that opening makes fails with its own variant (FORMAT.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file is shorter (or longer) than its header says, or too short to hold a header
    /// at all (then it is no queue file: an empty file, say).
    #[error("{}", truncated(*.len, *.need, *.header))]
    Truncated {
        /// Actual length.
        len: u64,
        /// Length the header requires.
        need: u64,
        /// The size of the header every queue file starts with (FORMAT.md), which the text
        /// names when the file is too short to hold one.
        header: u64,
    },
    /// The first 8 bytes are not the shmq magic.
    #[error("not a shmq queue file (bad magic)")]
    BadMagic,
    /// The format version is not the one this build supports.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The immutable header's checksum does not match.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum {
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum of the bytes as read.
        computed: u32,
    },
    /// The header-size field is not the one header size there is.
    #[error("invalid header field: header size {found}, expected {expected}")]
    HeaderSize {
        /// The value in the file.
        found: u32,
        /// The only valid value.
        expected: u64,
    },
    /// The full-policy field holds no known policy.
    #[error(
        "invalid header field: full policy {found} is unknown (0 Block, 1 Reject, 2 Overwrite)"
    )]
    FullPolicy {
        /// The value in the file.
        found: u32,
    },
    /// The durability field holds no known policy.
    #[error(
        "invalid header field: durability policy {found} is unknown (0 None, 1 Batch, 2 Sync)"
    )]
    Durability {
        /// The value in the file.
        found: u32,
    },
    /// The flags field has bits this build does not know.
    #[error("invalid header field: unknown header flags {found:#x} (only {known:#x} is defined)")]
    Flags {
        /// The flags in the file.
        found: u32,
        /// The bits this build knows.
        known: u32,
    },
    /// A geometry field (capacity, maximum message, slots, claim timeout, batch limits) is out
    /// of range or inconsistent with the others.
    #[error("invalid header field: {0}")]
    Field(OutOfRange),
    /// The file-size field disagrees with the size the other fields imply.
    #[error("invalid header field: file size {stored} disagrees with the {implied} bytes the geometry implies")]
    FileSize {
        /// The value in the file.
        stored: u64,
        /// The size the geometry implies.
        implied: u64,
    },
    /// A record's payload does not match the CRC32C its producer stored with it (a flipped
    /// bit on disk or in memory, or a hostile write). The consumer has moved past it.
    #[error("record {offset}'s payload fails its checksum (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The record's offset.
        offset: u64,
        /// The CRC32C in its header.
        stored: u32,
        /// The CRC32C of the payload as read.
        computed: u32,
    },
    /// A record or cursor in the shared mapping is malformed.
    #[error("malformed shared state: {0}")]
    Shared(Malformed),
    /// A topic's descriptor (its partition count and version) is missing or invalid.
    #[error("invalid topic descriptor: {0}")]
    Descriptor(DescriptorFault),
    /// A topic's membership file is missing or invalid.
    #[error("invalid membership file: {0}")]
    Members(MembersFault),
    /// A partition file that the topic's descriptor lists does not exist.
    #[error("partition {partition} is missing (no file {file})")]
    MissingPartition {
        /// The partition's index.
        partition: u32,
        /// The file it should be in.
        file: PathBuf,
    },
    /// A work group's file (`<queue>.work-<slot>`) is missing or damaged.
    #[error("invalid work file: {0}")]
    Work(WorkFault),
    /// An inbox's file (`<queue>.inbox-<name>`) is damaged.
    #[error("invalid inbox file: {0}")]
    Inbox(InboxFault),
    /// A topic's transaction file (`<topic>/transactions`) is damaged.
    #[error("invalid transaction file: {0}")]
    Txn(TxnFault),
    /// The producer-id file of idempotent producers (`<queue>.ids`) is damaged.
    #[error("invalid producer-id file: {0}")]
    Ids(IdsFault),
}

/// What is wrong with a producer-id file ([`Corruption::Ids`]; FORMAT.md, "Producer-id file").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdsFault {
    /// The file is not exactly the size its header implies (or shorter than a header).
    #[error("file is {len} bytes, expected {expected}")]
    Size {
        /// Its length.
        len: u64,
        /// The size its header implies (or the smallest file's size, if it is shorter).
        expected: u64,
    },
    /// The magic is not `SHMQPIDS`.
    #[error("bad magic")]
    BadMagic,
    /// Another format version.
    #[error("version {found}, expected 1")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A header field is out of its range.
    #[error("header field {field} out of range: {value}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// An id slot's word is not one shmq writes (its state, or its name's length or bytes).
    #[error("id slot {slot}: {field} {value:#x} is impossible")]
    Slot {
        /// The slot.
        slot: u32,
        /// The field: "state", "name length" or "name" (not UTF-8).
        field: &'static str,
        /// Its value (the name's length, for a name).
        value: u64,
    },
    /// An entry holds a sequence number that does not map to it.
    #[error("id slot {slot}: entry {index} holds sequence word {stored}, which maps elsewhere")]
    Entry {
        /// The slot.
        slot: u32,
        /// The entry.
        index: u64,
        /// The stored word (sequence number + 1).
        stored: u64,
    },
    /// The in-flight words name an offset no producer has claimed yet.
    #[error("id slot {slot}: in-flight offset {offset} is not claimed (the queue's next offset is {tail})")]
    InFlight {
        /// The slot.
        slot: u32,
        /// The offset in the in-flight words.
        offset: u64,
        /// The queue's tail offset.
        tail: u64,
    },
}

/// What is wrong with a topic's transaction file ([`Corruption::Txn`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxnFault {
    /// A partition holds a prepared record, but the topic has no transaction file.
    #[error("the file is missing")]
    Missing,
    /// The file is not exactly the format's size.
    #[error("file is {len} bytes, expected {expected}")]
    Size {
        /// Its length.
        len: u64,
        /// The format's size.
        expected: u64,
    },
    /// The magic is not `SHMQTXNS`.
    #[error("bad magic")]
    BadMagic,
    /// Another format version.
    #[error("version {found}, expected 1")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A header field is not the format's value.
    #[error("header field {field} is {value}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A transaction slot lists a participant that is not a partition of the topic, or more
    /// participants than the format allows.
    #[error("transaction {id:?} lists participant {what}")]
    Participant {
        /// The transactional id.
        id: String,
        /// What is wrong.
        what: String,
    },
}

/// What is wrong with an inbox's file ([`Corruption::Inbox`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboxFault {
    /// The file is not exactly the size its window implies.
    #[error("file is {len} bytes, expected {expected}")]
    Size {
        /// Its length.
        len: u64,
        /// The size its header implies (or the smallest file's, if it is shorter).
        expected: u64,
    },
    /// The magic is not `SHMQINBX`.
    #[error("bad magic")]
    BadMagic,
    /// Another format version.
    #[error("version {found}, expected 1")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A header field is out of its range.
    #[error("header field {field} out of range: {value}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The header names another inbox than the file name does.
    #[error("the file belongs to inbox {found:?}")]
    Name {
        /// The name the header holds.
        found: String,
    },
    /// A slot's state word is not one shmq writes for that slot.
    #[error("slot {slot} holds an impossible state word {high:#x}:{low:#x}")]
    Slot {
        /// The slot.
        slot: u64,
        /// The word's high 8 bytes (the holder).
        high: u64,
        /// The word's low 8 bytes (admission number and state).
        low: u64,
    },
    /// A slot's key length is over 64 bytes, or its hash is not its key's.
    #[error("slot {slot} holds a damaged key")]
    Key {
        /// The slot.
        slot: u64,
    },
    /// An index bucket names no slot, or the index has no empty bucket.
    #[error("index bucket {bucket} holds {value:#x}")]
    Index {
        /// The bucket (the bucket count if none is empty).
        bucket: u64,
        /// Its word.
        value: u64,
    },
    /// The admission counters are out of range.
    #[error("admitted {admitted}, pending {pending}: out of range")]
    Cursor {
        /// The `admitted` word.
        admitted: u64,
        /// The `pending` word.
        pending: u64,
    },
}

/// What is wrong with a work group's file ([`Corruption::Work`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkFault {
    /// The group slot says work group but its file does not exist.
    #[error("the file is missing")]
    Missing,
    /// The file is not exactly the size its window implies.
    #[error("file is {len} bytes, expected {expected}")]
    Size {
        /// Its length.
        len: u64,
        /// The size its header implies (or the header's size, if it is shorter).
        expected: u64,
    },
    /// The magic is not `SHMQWORK`.
    #[error("bad magic")]
    BadMagic,
    /// Another format version.
    #[error("version {found}, expected 1")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A header field is out of its range.
    #[error("header field {field} out of range: {value}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The header names another group or slot than the queue file's group slot (the error's
    /// group).
    #[error("the file belongs to {found}")]
    Group {
        /// The group name and slot the work file holds.
        found: String,
    },
    /// An entry's state word is not one shmq writes for it.
    #[error("entry of offset {offset} holds an impossible state word {high:#x}:{low:#x}")]
    Entry {
        /// The offset whose entry was read.
        offset: u64,
        /// The word's high 8 bytes (deadline, count, holder).
        high: u64,
        /// The word's low 8 bytes (offset and state).
        low: u64,
    },
}

/// The kind of a consumer group ([`Error::WrongGroupKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupKind {
    /// A plain group: one member at a time reads every record in order
    /// ([`Consumer`](crate::Consumer)).
    #[error("a plain consumer group")]
    Plain,
    /// A work group: competing workers with per-record acks ([`Worker`](crate::Worker)).
    #[error("a work group")]
    Work,
}

/// A queue parameter out of range: in a file's header ([`Corruption::Field`]) or in the
/// options of a queue being created ([`Error::InvalidOptions`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutOfRange {
    /// The capacity is not a power of two between the bounds.
    #[error("capacity {found} must be a power of two between {min} and {max}")]
    Capacity {
        /// The capacity given.
        found: u64,
        /// The smallest capacity.
        min: u64,
        /// The largest capacity.
        max: u64,
    },
    /// The maximum message size is 0, or a record of it does not fit in half the ring.
    #[error("max message {found} must be at least 1 and at most {max} for a {capacity}-byte ring")]
    MaxMessage {
        /// The maximum message size given.
        found: u32,
        /// The largest valid one for this capacity.
        max: u64,
        /// The ring's capacity.
        capacity: u64,
    },
    /// A slot count (`"group"` or `"producer"`) is 0 or above the maximum.
    #[error("{table} slots {found} must be between 1 and {max}")]
    Slots {
        /// Which table: "group" or "producer".
        table: &'static str,
        /// The count given.
        found: u32,
        /// The largest count.
        max: u32,
    },
    /// The claim timeout is zero.
    #[error("claim timeout must be positive")]
    ClaimTimeout,
    /// `Batch` durability with a zero delay or byte limit.
    #[error(
        "batch durability needs a positive max delay and max bytes (got {}, {max_bytes} bytes)",
        humane(*.max_delay)
    )]
    BatchLimits {
        /// The delay given.
        max_delay: Duration,
        /// The byte limit given.
        max_bytes: u64,
    },
    /// `Batch` or `Sync` durability without record checksums (recovery needs them).
    #[error("batch and sync durability need record checksums")]
    NoChecksums,
}

/// What is malformed in a queue file's shared state ([`Corruption::Shared`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// A cursor (`which`: "tail", "flushed cursor", "cursor") pairs an offset with a position
    /// no record stream can reach.
    #[error("{which} ({offset}, {pos}) is impossible")]
    Cursor {
        /// Which cursor.
        which: &'static str,
        /// Its offset.
        offset: u64,
        /// Its position.
        pos: u64,
    },
    /// A record's slot places it across the end of the ring.
    #[error("record {offset} at position {pos} is misplaced")]
    Misplaced {
        /// The record's offset.
        offset: u64,
        /// Its position.
        pos: u64,
    },
    /// A record's header names another offset than its slot.
    #[error("record {offset}'s header carries offset {found}")]
    HeaderOffset {
        /// The record's offset.
        offset: u64,
        /// The offset in its header.
        found: u64,
    },
    /// A record's length exceeds the maximum message size or the ring.
    #[error("record {offset} has invalid length {len} (the maximum message is {max})")]
    Length {
        /// The record's offset.
        offset: u64,
        /// The length in its header.
        len: u64,
        /// The queue's maximum message size.
        max: u32,
    },
    /// A topic record is too short to hold its key length.
    #[error("record {offset}: a topic record of {len} bytes is too short for its key length")]
    ShortFrame {
        /// The record's offset.
        offset: u64,
        /// Its payload length.
        len: usize,
    },
    /// A topic record's key length exceeds the bytes after it.
    #[error("record {offset}: key length {key_len} exceeds the {rest} bytes that follow it")]
    KeyLength {
        /// The record's offset.
        offset: u64,
        /// The key length in its framing.
        key_len: u16,
        /// The bytes after the framing.
        rest: usize,
    },
    /// A payload given to [`DeadLetter::parse`](crate::DeadLetter::parse) is not a
    /// dead-letter record.
    #[error("not a dead-letter record ({len} bytes): {why}")]
    DeadLetter {
        /// The payload's length.
        len: usize,
        /// What is wrong: too short, the magic, the reason, or the source path.
        why: &'static str,
    },
}

/// What is wrong with a topic's descriptor ([`Corruption::Descriptor`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorFault {
    /// The directory has no descriptor file: it is no topic.
    #[error("{} is missing: not a shmq topic", .file.display())]
    Missing {
        /// The descriptor file's path.
        file: PathBuf,
    },
    /// The file is not exactly the descriptor's size.
    #[error("file is {len} bytes, expected {expected}")]
    Size {
        /// Its length (one more than `expected` for any longer file).
        len: u64,
        /// The descriptor's size.
        expected: u64,
    },
    /// The magic is not the descriptor's.
    #[error("bad magic (not a shmq topic descriptor)")]
    BadMagic,
    /// The version is not the one this build reads.
    #[error("version {found} is not supported (this build reads version {supported})")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The checksum does not match.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The partition count is 0 or above the maximum.
    #[error("partition count {found} is outside 1..={max}")]
    Partitions {
        /// The count in the file.
        found: u32,
        /// The largest count.
        max: u32,
    },
    /// The routing is not one this build knows.
    #[error("unknown routing {found} (this build knows 1, CRC32C)")]
    Routing {
        /// The routing in the file.
        found: u32,
    },
    /// Reserved bytes are not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// The partition count went down since this process last read it.
    #[error("partition count went down from {before} to {after} (topics only grow)")]
    Shrank {
        /// The count read before.
        before: u32,
        /// The count read now.
        after: u32,
    },
    /// The generation is at its maximum, so the topic cannot grow.
    #[error("generation {0} cannot grow any further")]
    Generation(u64),
}

/// What is wrong with a topic's membership file ([`Corruption::Members`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembersFault {
    /// The topic has no membership file.
    #[error("the file is missing")]
    Missing,
    /// The file is not exactly the membership file's size.
    #[error("file is {len} bytes, expected {expected}")]
    Size {
        /// Its length.
        len: u64,
        /// The membership file's size.
        expected: u64,
    },
    /// Its header is not the one header a membership file has.
    #[error("bad header (magic, version, slot count or checksum)")]
    Header,
}

/// What a path names, where [`Error::WrongKind`] says it is not what a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathKind {
    /// A shmq queue file.
    #[error("a queue file")]
    QueueFile,
    /// A shmq topic directory.
    #[error("a topic directory")]
    TopicDirectory,
    /// A directory that is not a topic.
    #[error("a directory")]
    Directory,
    /// A regular file that is not a queue file.
    #[error("a file")]
    File,
    /// A named pipe.
    #[error("a FIFO, not a regular file")]
    Fifo,
    /// A Unix socket.
    #[error("a socket, not a regular file")]
    Socket,
    /// A character or block device.
    #[error("a device, not a regular file")]
    Device,
}

/// The text of [`Corruption::Truncated`]: a file too short for the header is no queue file.
fn truncated(len: u64, need: u64, header: u64) -> String {
    match len {
        0 if need == header => {
            format!("file is empty: not a shmq queue file (one starts with a {header}-byte header)")
        }
        len if len < header => format!(
            "file is {len} bytes, too short for the {header}-byte header a shmq queue file \
             starts with: not a shmq queue file"
        ),
        len => format!("file is {len} bytes, expected {need}"),
    }
}

/// What held producers back when a publish found the ring full ([`Error::Full`],
/// [`Error::Timeout`]): the oldest thing producers must preserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// A gating consumer group that has not committed far enough.
    Group {
        /// The group.
        name: String,
        /// Records published but not committed by it.
        behind: u64,
        /// The process holding its lease, and whether it runs (`None`: nobody holds it).
        holder: Option<(u32, bool)>,
    },
    /// Records not yet on disk (or not yet behind the flushed cursor on disk) under `Batch` or
    /// `Sync` durability.
    Flush,
    /// A record another producer claimed but has not finished writing.
    Unfinished,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::Group {
                name,
                behind,
                holder,
            } => {
                write!(
                    f,
                    "the slowest gating group {name:?} is {behind} messages behind"
                )?;
                match holder {
                    Some((pid, true)) => write!(f, " (held by process {pid})"),
                    Some((pid, false)) => write!(f, " (its holder, process {pid}, is dead)"),
                    None => write!(f, " (no member holds it)"),
                }
            }
            Blocker::Flush => f.write_str("records not yet on disk hold producers back"),
            Blocker::Unfinished => {
                f.write_str("a record another producer has not finished holds producers back")
            }
        }
    }
}

/// "; BLOCKER", or nothing.
fn blocked(b: &Option<Box<Blocker>>) -> String {
    b.as_ref().map_or(String::new(), |b| format!("; {b}"))
}

/// A duration as people write it: `250ms`, `10s`, `1.5s`.
fn humane(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Why [`Error::Untrusted`] refused a file: who other than the opener could have written it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Distrust {
    /// Every user may write it (mode bit `0o002`). Never accepted, whatever is trusted.
    #[error("every user may write it; share a queue through a group and mode 0660 instead")]
    OthersMayWrite,
    /// Its group may write it (mode bit `0o020`), and that group is not the trusted group.
    #[error("its group may write it; trust that group to open it")]
    GroupMayWrite,
    /// It belongs to a user who is neither the opener's effective user nor the trusted owner,
    /// and its group is not the trusted group.
    #[error("it belongs to another user; trust that user or the file's group to open it")]
    Owner,
}

/// Why [`Error::Detached`] says a queue file is no longer the one its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Detachment {
    /// The file was removed (or renamed): its path names nothing, and new openers find no
    /// queue.
    #[error("removed: its path no longer names it, so no new process can open this queue")]
    Removed,
    /// The path names another file now: new openers use that one, a different queue.
    #[error("replaced by another file at its path, which new processes open instead")]
    Replaced,
}

/// A user or group id, with its name where the system's user database has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The uid or gid.
    pub id: u32,
    /// Its name, if it has one.
    pub name: Option<String>,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// Every error shmq returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call on the queue file failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The queue file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The queue file is not valid.
    #[error("{path}: {kind}")]
    Corrupt {
        /// The queue file.
        path: PathBuf,
        /// What is wrong.
        kind: Corruption,
    },
    /// The file already exists (create never replaces a file).
    #[error("{path}: already exists")]
    Exists {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file does not exist.
    #[error("{path}: no such queue file")]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file (a queue file, or a topic's directory, descriptor or membership file) could
    /// have been written by someone the opener does not trust, so it was not opened: another
    /// user could use it to read, inject or truncate the records of everyone who opens it.
    /// [`Trust`](crate::Trust) names the owner or group to accept (`Queue::open_trusting`,
    /// `Topic::open_trusting`); a file every user may write is never accepted.
    #[error("{path}: owner {owner}, group {group}, mode {mode:04o}: refused because {why}")]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: Account,
        /// Its group.
        group: Account,
        /// Its permission bits (with the setuid, setgid and sticky bits).
        mode: u32,
        /// What made it untrusted.
        why: Distrust,
    },
    /// The topic directory does not exist.
    #[error("{path}: no such topic")]
    TopicNotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// An argument is out of range or inconsistent with the state it applies to.
    #[error("invalid {argument}: {why}")]
    InvalidArgument {
        /// Which argument: "group name", "mode", "offset", "session timeout", ...
        argument: &'static str,
        /// Why it is refused, and what would be accepted.
        why: String,
    },
    /// The options of a queue being created are out of range.
    #[error("invalid queue options: {0}")]
    InvalidOptions(OutOfRange),
    /// The path is a symbolic link, which shmq never follows to a shared file: whoever may
    /// change the link could point it at another file.
    #[error("{path}: is a symbolic link (refused for safety)")]
    Symlink {
        /// The path given.
        path: PathBuf,
    },
    /// The path names no file (it is empty, `/`, or ends in `..`).
    #[error("{path}: names no file (it ends in a root or `..`)")]
    NoFileName {
        /// The path given.
        path: PathBuf,
    },
    /// The topic has no such partition.
    #[error("{path}: partition {partition} does not exist (the topic has {partitions})")]
    NoSuchPartition {
        /// The topic directory.
        path: PathBuf,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// A topic record's key is longer than [`MAX_KEY`](crate::MAX_KEY).
    #[error("key of {len} bytes exceeds the maximum of {max}")]
    KeyTooBig {
        /// The key's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// This machine cannot run shmq (e.g. no lock-free 128-bit compare-and-swap).
    #[error("unsupported platform: {0}")]
    Unsupported(&'static str),
    /// A payload is larger than the queue's maximum message size.
    #[error("message of {len} bytes exceeds the queue's maximum of {max}")]
    TooBig {
        /// Payload length.
        len: usize,
        /// The queue's maximum.
        max: u32,
    },
    /// A batch of records ([`Producer::publish_batch`](crate::Producer::publish_batch)) needs
    /// more room than the ring has, so no claim could ever take it.
    #[error("{path}: a batch of {records} records needs up to {bytes} bytes, more than the ring's {capacity}")]
    BatchTooBig {
        /// The queue file.
        path: PathBuf,
        /// How many records the batch has.
        records: usize,
        /// The bytes the batch may need: its records' footprints and the padding of one
        /// record placed at the next lap.
        bytes: u64,
        /// The ring's capacity in bytes.
        capacity: u64,
    },
    /// The ring is full and the queue's policy is `Reject`.
    #[error("{path}: queue is full{}", blocked(.blocked_by))]
    Full {
        /// The queue file.
        path: PathBuf,
        /// What held producers back when the publish gave up (a snapshot; boxed to keep
        /// `Error` small).
        blocked_by: Option<Box<Blocker>>,
    },
    /// Nothing happened within the timeout: a publish found no room under `Block`, or a
    /// confirm ([`Producer::wait_durable`](crate::Producer::wait_durable)) no flush.
    #[error(
        "{path}: timed out after {} waiting for {waiting_for}{}",
        humane(*.waited),
        blocked(.blocked_by)
    )]
    Timeout {
        /// The queue file.
        path: PathBuf,
        /// What the call waited for: "room in the queue" or "the flush".
        waiting_for: &'static str,
        /// How long it waited: its timeout (it gave up once that had passed).
        waited: Duration,
        /// What held producers back when it gave up (a snapshot; `None` for a confirm).
        blocked_by: Option<Box<Blocker>>,
    },
    /// Every producer slot is taken by a live producer.
    #[error("all {0} producer slots are in use by live producers")]
    TooManyProducers(u32),
    /// Every group slot is in use.
    #[error("all {0} consumer-group slots are in use")]
    TooManyGroups(u32),
    /// Every member slot of a topic's membership file is taken by a live member.
    #[error("{path}: all {slots} member slots are in use by live members")]
    TooManyMembers {
        /// The membership file.
        path: PathBuf,
        /// How many slots it has.
        slots: u32,
    },
    /// The named group does not exist.
    #[error("consumer group {0:?} does not exist")]
    UnknownGroup(String),
    /// Another live process holds this producer id (an
    /// [`IdempotentProducer`](crate::IdempotentProducer) of it): of two processes opening the
    /// same id, one wins and the other gets this.
    #[error("{path}: producer id {id:?} is held by live process {pid}")]
    ProducerIdBusy {
        /// The queue file.
        path: PathBuf,
        /// The producer id.
        id: String,
        /// The holder's process id.
        pid: u32,
    },
    /// A retry of a sequence number older than the producer id's de-duplication window: its
    /// entry may have been reused by a newer one, so shmq cannot tell whether it was published,
    /// and publishes nothing.
    #[error("{path}: producer id {id:?}: sequence number {seq} is older than the de-duplication window (oldest {oldest})")]
    SequenceOutsideWindow {
        /// The queue file.
        path: PathBuf,
        /// The producer id.
        id: String,
        /// The sequence number given.
        seq: u64,
        /// The oldest sequence number the window answers for.
        oldest: u64,
    },
    /// Every slot of the producer-id file belongs to another producer id.
    #[error("{path}: all {slots} producer-id slots are in use")]
    TooManyProducerIds {
        /// The producer-id file.
        path: PathBuf,
        /// How many slots it has.
        slots: u32,
    },
    /// The producer id does not exist.
    #[error("{path}: no producer id {id:?}")]
    UnknownProducerId {
        /// The queue file.
        path: PathBuf,
        /// The producer id.
        id: String,
    },
    /// Another live process holds the transactional id ([`Topic::transactional_producer`]).
    ///
    /// [`Topic::transactional_producer`]: crate::Topic::transactional_producer
    #[error("{path}: transactional id {id:?} is held by live process {pid}")]
    TransactionalIdBusy {
        /// The topic's transaction file.
        path: PathBuf,
        /// The transactional id.
        id: String,
        /// The holder's process id.
        pid: u32,
    },
    /// A transaction was aborted instead of committed: a reader gave one of its records up
    /// (the commit stalled past the claim timeout), or a partition refused a record. None of
    /// its records is visible.
    #[error("{path}: transaction {id:?} was aborted: {why}")]
    TransactionAborted {
        /// The topic's transaction file.
        path: PathBuf,
        /// The transactional id.
        id: String,
        /// Why.
        why: String,
    },
    /// Every transaction slot of the topic's transaction file is taken by another id.
    #[error("{path}: all {slots} transactional ids are in use")]
    TooManyTransactionalIds {
        /// The topic's transaction file.
        path: PathBuf,
        /// How many the file holds.
        slots: u32,
    },
    /// Another live consumer holds the group's lease.
    #[error("consumer group {group:?} is held by live process {pid}")]
    GroupBusy {
        /// The group.
        group: String,
        /// The holder's process id.
        pid: u32,
    },
    /// Someone else took the group's lease or moved its committed offset while this consumer
    /// held the group: a second member took it over (it judged this one dead, or its topic
    /// heartbeat went stale) or an operator reset it. The commit changed nothing; this
    /// consumer should stop reading the group and drop.
    #[error(
        "consumer group {group:?} was taken over by another member (committed offset now {found})"
    )]
    TakenOver {
        /// The group.
        group: String,
        /// The committed offset found instead of this consumer's own last one.
        found: u64,
    },
    /// A topic member committed a partition it does not hold (any more): the partition moved
    /// to another member at a rebalance, and its uncommitted records are delivered again there
    /// (at-least-once). Nothing was committed; the member goes on with the partitions it holds.
    #[error(
        "partition {partition} is not held by this member of group {group:?} (it moved to \
         another member, which delivers its uncommitted records again)"
    )]
    NotHeld {
        /// The group.
        group: String,
        /// The partition.
        partition: u32,
    },
    /// A non-gating consumer was overrun; `lost` records were skipped and it now reads the
    /// oldest record still in the ring.
    #[error("consumer lagged behind and lost {lost} records")]
    Lagged {
        /// How many records it missed.
        lost: u64,
    },
    /// The publish took longer than the queue's claim timeout and a reader gave its record up;
    /// the record was not delivered and the publish did not happen.
    #[error("record {offset} was aborted by a reader after the claim timeout")]
    Aborted {
        /// The offset the record would have had.
        offset: u64,
    },
    /// The record was published (consumers will see it) but is not known to be on disk, so the
    /// durability promise is broken. If the wait for its flush timed out (`op` is "wait for
    /// the flush"), a later flush may still cover it. If the flush failed (`op` is "fdatasync"),
    /// the file is now poisoned (see [`Error::Poisoned`]) and the record is never reported
    /// durable.
    #[error("{path}: record {offset} was published but is not durable: {op}: {source}")]
    NotDurable {
        /// The queue file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// The failed call.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The handle was made by another process, which then forked this one: it holds that
    /// process's producer slot or group lease, so this process may not use it. Make a new
    /// handle (from the same [`Queue`](crate::Queue) or [`Topic`](crate::Topic), which work
    /// in a forked child) instead.
    #[error("{path}: this handle was made by process {pid} before a fork; make a new one in this process")]
    Forked {
        /// The queue file or topic directory.
        path: PathBuf,
        /// The process that made the handle.
        pid: u32,
    },
    /// A flush of the queue file failed earlier, so the records from `offset` on may not be on
    /// disk (the kernel marks pages whose writeback failed clean and reports the error once, so
    /// no later flush can be trusted to cover them). The file is poisoned: its durable offset
    /// stays below `offset`, and every confirm, flush and `Batch` or `Sync` publish fails with
    /// this, in every process, until recovery after a machine restart (ARCHITECTURE.md,
    /// "Durability"). Reads and commits keep working.
    #[error(
        "{path}: poisoned: a flush failed ({source}), so records from offset {offset} on are \
         never reported durable"
    )]
    Poisoned {
        /// The queue file.
        path: PathBuf,
        /// The first record that is not durable: the durable offset when the flush failed.
        offset: u64,
        /// The error of the failed `fdatasync`.
        source: io::Error,
    },
    /// The queue file shrank under this process's mapping (someone truncated it): its records
    /// are gone. Every later call on the file returns this; other queues are unaffected.
    /// Open the queue again once it is recreated.
    #[error("{path}: the queue file was truncated under this process; its records are gone")]
    Truncated {
        /// The queue file (or a topic's membership file).
        path: PathBuf,
    },
    /// The queue file this process maps is no longer the file its path names (`why`): writes
    /// reach only processes that opened it before. Every later call on the file returns this.
    #[error("{path}: the queue file was {why}")]
    Detached {
        /// The queue file.
        path: PathBuf,
        /// Removed, or replaced by another file.
        why: Detachment,
    },
    /// The requested offset is not in the ring.
    #[error("offset {requested} is outside the retained range {earliest}..={latest}")]
    OffsetOutOfRange {
        /// What was asked for.
        requested: u64,
        /// Oldest offset still readable.
        earliest: u64,
        /// The next offset to be written.
        latest: u64,
    },
    /// A worker acked, nacked, rejected or extended a delivery it no longer holds: its
    /// visibility timeout passed (the record may be redelivered to another worker, which then
    /// owns it) or the delivery was already settled. Nothing was changed.
    #[error("{path}: work group {group:?}: the lease on record {offset} expired or was settled")]
    LeaseExpired {
        /// The queue file.
        path: PathBuf,
        /// The work group.
        group: String,
        /// The record's offset.
        offset: u64,
    },
    /// Every key of an inbox's window is held by a live process, so the oldest cannot be
    /// evicted to admit a new one. Nothing changed; retry once a holder records its key done
    /// or releases it, or use a larger window.
    #[error("{path}: all {window} keys of the inbox's window are held by live processes")]
    InboxFull {
        /// The inbox file.
        path: PathBuf,
        /// Its window (keys).
        window: u32,
    },
    /// Another live process holds the key ([`Inbox::once`](crate::Inbox::once)): it is being
    /// applied now. Retry later: if that process dies before recording it done, the key is
    /// taken again.
    #[error("{path}: the key is held by another live process")]
    KeyBusy {
        /// The inbox file.
        path: PathBuf,
    },
    /// A [`Mark`](crate::Mark) was no longer its holder's when it was recorded done: someone
    /// wrote the inbox file outside the protocol. Nothing was recorded.
    #[error("{path}: the key's mark was lost (the slot changed under its holder)")]
    MarkLost {
        /// The inbox file.
        path: PathBuf,
    },
    /// The queue has no inbox of this name.
    #[error("{path}: no such inbox")]
    UnknownInbox {
        /// The inbox file the name gives.
        path: PathBuf,
    },
    /// A group is of another kind than the call joins: a plain consumer on a work group, a
    /// worker on a plain group, or an administrative change that one kind does not allow.
    #[error("{path}: group {group:?} is not {expected}")]
    WrongGroupKind {
        /// The queue file.
        path: PathBuf,
        /// The group.
        group: String,
        /// The kind the call needs.
        expected: GroupKind,
    },
    /// The path is another kind of thing than the call expects: a topic directory (or another
    /// directory, a FIFO, a socket or a device) given to [`Queue::open`](crate::Queue::open),
    /// or a file given to [`Topic::open`](crate::Topic::open).
    #[error("{path}: is {found}, not {expected}")]
    WrongKind {
        /// The path given.
        path: PathBuf,
        /// What it is.
        found: PathKind,
        /// What the call takes: a queue file or a topic directory.
        expected: PathKind,
    },
}

/// Shorthand for `Result<T, shmq::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
