//! The consumer-group table: named slots with a committed cursor and a lease.
//!
//! The slots' fields are `GroupTable`'s (`protocol/groups.rs`); this file is the policy over
//! them. The reset mark is [`MARK_UNSET`] while a group's creator has not stored it yet.
//!
//! # Sync points
//!
//! SYNC G (a slot's activation against producers' limit scans) and S (the session fields, a
//! seqlock keyed by the lease): see the table "Sync points" in `ARCHITECTURE.md`.
//!
//! Creating and deleting groups are rare administrative changes and run under an exclusive
//! `flock` on the queue file (the kernel drops it if the holder dies). Lookups, leases and
//! commits are lock-free. Joining and deleting exclude each other through the lease: a
//! deleter takes the lease before it frees the slot, and a joiner checks, after taking the
//! lease, that the slot still holds the group it looked up ([`MappedQueue::join_group`]).

use crate::error::{Corruption, Error, GroupKind, Malformed, Result};
use crate::mapping::lease::{self, Lease, OwnFd};
use crate::protocol::layout::MAX_GROUP_NAME;
use crate::protocol::ring::sane_cursor;
use crate::protocol::sync::{fence, pack, unpack, Ordering};
use crate::queue::mapped::MappedQueue;
use crate::runtime::clock;

const ACTIVE: u64 = 1;
const GATING: u64 = 1;
/// Group flag: a work group's slot (`queue/work.rs`); plain consumers refuse it.
const WORK: u64 = 2;

/// The reset mark of a group whose creator has activated the slot but not yet stored the tail
/// it saw afterwards (or died in between): a member that finds it validates every read below
/// the tail it loads itself (see [`MappedQueue::protected_from`]).
const MARK_UNSET: u64 = u64::MAX;

/// Facts about one consumer group, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Next offset the group will read after a restart (everything before it is committed).
    pub committed: u64,
    /// Records published but not committed by the group: the tail offset minus `committed`.
    pub lag: u64,
    /// Ring bytes from the group's committed position to the tail, record headers and padding
    /// included: how much of the ring the group holds back if it is gating.
    pub lag_bytes: u64,
    /// Whether the group holds producers back.
    pub gating: bool,
    /// Process id of the member holding the lease, if any.
    pub holder: Option<u32>,
    /// Whether that holder is still running.
    pub holder_alive: bool,
    /// Whether it is a work group ([`Queue::worker`](crate::Queue::worker)): its workers
    /// share the records, and `holder` is `None`.
    pub work: bool,
}

/// Holds the queue file's administration lock (an exclusive `flock` through a description of
/// its own, see [`OwnFd::flock_exclusive`]); released on drop.
pub(crate) struct AdminLock {
    _fd: OwnFd,
}

impl AdminLock {
    pub(crate) fn take(shared: &MappedQueue) -> Result<Self> {
        OwnFd::flock_exclusive(&shared.file, &shared.path)
            .map(|fd| AdminLock { _fd: fd })
            .map_err(|source| Error::Io {
                path: shared.path.clone(),
                op: "flock",
                source,
            })
    }
}

/// Checks a group name a caller gives: 1 to [`MAX_GROUP_NAME`] bytes of printable text.
pub(crate) fn check_name(name: &str) -> Result<()> {
    check_text("group name", name, MAX_GROUP_NAME)
}

/// Checks a name a caller gives as `argument` (a group name, a producer id): 1 to `max` bytes
/// of printable text.
pub(crate) fn check_text(argument: &'static str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() || name.len() > max {
        return Err(Error::InvalidArgument {
            argument,
            why: format!("must be 1 to {max} bytes, got {}", name.len()),
        });
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::InvalidArgument {
            argument,
            why: format!(
                "{name:?} contains the control character U+{:04X}: a {argument} is printable \
                 text (no newlines, tabs or other control characters)",
                u32::from(c)
            ),
        });
    }
    Ok(())
}

impl MappedQueue {
    pub(crate) fn group_active(&self, slot: u32) -> bool {
        // SYNC G (SeqCst): Acquire pairs with the store that activates a slot after its name
        // and cursor are written; SeqCst orders it after the tail load in a producer's limit
        // scan (see `find_or_create_group`). A plain load on x86.
        self.groups().state(slot).load(Ordering::SeqCst) == ACTIVE
    }

    /// The name in an active slot; `None` if the stored length is out of range (corrupt) or
    /// the bytes are not UTF-8.
    pub(crate) fn group_name(&self, slot: u32) -> Option<String> {
        let t = self.groups();
        // Relaxed: ordered by the Acquire in `group_active`.
        let len = t.name_len(slot).load(Ordering::Relaxed);
        if len == 0 || len > MAX_GROUP_NAME as u64 {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        t.read_name(slot, &mut buf);
        String::from_utf8(buf).ok()
    }

    pub(crate) fn find_group(&self, name: &str) -> Option<u32> {
        (0..self.geometry.group_slots)
            .find(|&s| self.group_active(s) && self.group_name(s).as_deref() == Some(name))
    }

    /// Finds `name`, or creates it with `gating` and a committed cursor from `start` (called
    /// under the admin lock, so two processes never create the same name twice).
    /// Returns the slot. A work group is [`Error::WrongGroupKind`].
    pub(crate) fn find_or_create_group(
        &self,
        name: &str,
        gating: bool,
        start: impl FnOnce() -> (u64, u64),
    ) -> Result<u32> {
        self.find_or_create_kind(name, gating, None, start)
    }

    /// Fails with [`Error::WrongGroupKind`] unless slot `slot` (group `name`) is a work group
    /// exactly when `work` says so.
    pub(crate) fn check_kind(&self, slot: u32, name: &str, work: bool) -> Result<()> {
        if self.is_work(slot) == work {
            return Ok(());
        }
        Err(Error::WrongGroupKind {
            path: self.path.clone(),
            group: name.into(),
            expected: if work {
                GroupKind::Work
            } else {
                GroupKind::Plain
            },
        })
    }

    /// Whether slot `slot` is a work group's.
    pub(crate) fn is_work(&self, slot: u32) -> bool {
        // Relaxed: written once before activation; ordered by `group_active`.
        self.groups().flags(slot).load(Ordering::Relaxed) & WORK != 0
    }

    /// [`find_or_create_group`](Self::find_or_create_group) for either kind: with `work`, a
    /// work group (always gating), whose file `work` makes for the slot under the admin lock
    /// before the slot becomes active.
    pub(crate) fn find_or_create_kind(
        &self,
        name: &str,
        gating: bool,
        work: Option<&dyn Fn(u32) -> Result<()>>,
        start: impl FnOnce() -> (u64, u64),
    ) -> Result<u32> {
        check_name(name)?;
        if let Some(s) = self.find_group(name) {
            self.check_kind(s, name, work.is_some())?;
            return Ok(s);
        }
        let _lock = AdminLock::take(self)?;
        if let Some(s) = self.find_group(name) {
            self.check_kind(s, name, work.is_some())?;
            return Ok(s);
        }
        let slot = (0..self.geometry.group_slots)
            .find(|&s| !self.group_active(s))
            .ok_or(Error::TooManyGroups(self.geometry.group_slots))?;
        if let Some(make) = work {
            make(slot)?;
        }
        let t = self.groups();
        let flags = match work {
            Some(_) => GATING | WORK,
            None if gating => GATING,
            None => 0,
        };
        // Relaxed stores: the slot is invisible until the Release store of ACTIVE below.
        t.flags(slot).store(flags, Ordering::Relaxed);
        t.name_len(slot).store(name.len() as u64, Ordering::Relaxed);
        let mut padded = [0u8; MAX_GROUP_NAME];
        padded[..name.len()].copy_from_slice(name.as_bytes());
        t.write_name(slot, &padded);
        t.lease(slot).store(0, Ordering::Relaxed);
        // The mark can only be known once the slot is active (below); until then a member that
        // finds the group bounds its validated reads by its own tail.
        t.reset_mark(slot).store(MARK_UNSET, Ordering::Relaxed);
        let (offset, pos) = start();
        // SeqCst like every committed-cursor store (producers read it with SeqCst, SYNC G).
        t.committed(slot).store(pack(offset, pos), Ordering::SeqCst);
        // SYNC G (SeqCst): Release publishes everything above to `group_active`; SeqCst orders
        // it before our tail load below.
        t.state(slot).store(ACTIVE, Ordering::SeqCst);
        // SYNC G: producers cache their claim limit and rescan only when a claim would pass it,
        // so one whose last scan missed this group may overwrite the group's first records.
        // That scan loaded the group's state before the ACTIVE store above in the single order
        // of SeqCst operations, and the tail before that, so its limit is at most that tail plus
        // the capacity. Our tail load (SeqCst) comes after the ACTIVE store, so it reads that
        // tail or a later one: records from it on are protected, older ones must be validated.
        // It must follow the store: a tail read before it could be older than the tail of a
        // producer that claims and scans in between and still misses the group.
        let (_, tail_pos) = self.ring.tail();
        // Release: pairs with the Acquire in `reset_mark`. A plain store replaces MARK_UNSET;
        // only the admin-lock holder writes the mark, and we hold the lock.
        t.reset_mark(slot).store(tail_pos, Ordering::Release);
        Ok(slot)
    }

    /// Takes the admin lock, finds group `name` and takes its lease from nobody or a dead
    /// holder ([`Error::GroupBusy`] if a live member holds it): what an operator's change to a
    /// group (a deletion, a reset) holds while it makes it. The admin lock keeps the group from
    /// being deleted (and its slot reused) meanwhile; the lease keeps members from joining or
    /// committing. Returns the lock, the slot and the lease, which the caller drops in reverse.
    fn hold_group(&self, name: &str) -> Result<(AdminLock, u32, Lease)> {
        let lock = AdminLock::take(self)?;
        let slot = self
            .find_group(name)
            .ok_or_else(|| Error::UnknownGroup(name.into()))?;
        let lease = self.new_lease()?;
        self.acquire_lease(slot, name, lease.word(), |_| false)?;
        Ok((lock, slot, lease))
    }

    /// Deletes group `name` unless a live member holds it. For a work group, `idle` checks
    /// (under the admin lock, before the slot is freed) that no live worker is in it, and
    /// `remove` removes its file once the slot is free.
    pub(crate) fn delete_group(
        &self,
        name: &str,
        idle: impl FnOnce(u32) -> Result<()>,
        remove: impl FnOnce(u32) -> Result<()>,
    ) -> Result<()> {
        // Hold the lease while freeing the slot: a member joining meanwhile either took the
        // lease first (the group is busy) or finds it ours, and after us an inactive slot.
        // The lease word stays behind in the free slot, dead once `_lease` is dropped.
        let (_lock, slot, _lease) = self.hold_group(name)?;
        let work = self.is_work(slot);
        if work {
            idle(slot)?;
        }
        // SeqCst (SYNC G): readers that still see the old slot see it whole; producers stop
        // counting it as gating at their next limit scan, which the wake below triggers.
        self.groups().state(slot).store(0, Ordering::SeqCst);
        self.ring.notify_space();
        if work {
            // Workers notice the freed slot at their next poll.
            self.ring.notify_data();
            remove(slot)?;
        }
        Ok(())
    }

    pub(crate) fn gating(&self, slot: u32) -> bool {
        // Relaxed: written once before activation; ordered by `group_active`.
        self.groups().flags(slot).load(Ordering::Relaxed) & GATING != 0
    }

    /// The group's committed cursor `(next offset, position)`.
    pub(crate) fn committed(&self, slot: u32) -> (u64, u64) {
        // SeqCst (SYNC G): producers deciding whether to sleep for space must not miss a commit.
        unpack(self.groups().committed(slot).load(Ordering::SeqCst))
    }

    /// The committed cursor as its raw word, for [`MappedQueue::swap_committed`].
    pub(crate) fn committed_word(&self, slot: u32) -> u128 {
        // SeqCst as in `committed`.
        self.groups().committed(slot).load(Ordering::SeqCst)
    }

    /// The committed cursor's raw word, checked: a cursor no record stream can reach (or
    /// past the tail) is [`Error::Corrupt`], so that a work group's arithmetic on its base
    /// never meets a hostile value.
    pub(crate) fn checked_committed(&self, slot: u32) -> Result<u128> {
        let word = self.committed_word(slot);
        let (offset, pos) = unpack(word);
        if sane_cursor(offset, pos) && offset <= self.ring.tail().0 {
            return Ok(word);
        }
        Err(Error::Corrupt {
            path: self.path.clone(),
            kind: Corruption::Shared(Malformed::Cursor {
                which: "committed",
                offset,
                pos,
            }),
        })
    }

    /// Moves the committed cursor from `seen` (the raw word the caller last read or stored) to
    /// `(offset, pos)`; `Err` with the word found if anyone else changed it meanwhile. A
    /// member's commits go through this, so a second holder (one that judged the first dead)
    /// or a reset fences the first one off instead of being silently overwritten.
    pub(crate) fn swap_committed(
        &self,
        slot: u32,
        seen: u128,
        offset: u64,
        pos: u64,
    ) -> std::result::Result<u128, u128> {
        let next = pack(offset, pos);
        // SeqCst (SYNC G) like the plain store it replaces: ordered before the space-waiter
        // check in the caller. Relaxed on failure: the caller only reports the value.
        self.groups()
            .committed(slot)
            .compare_exchange(seen, next, Ordering::SeqCst, Ordering::Relaxed)
            .map(|_| next)
    }

    /// Stores the committed cursor `(offset, pos)` and returns the one it replaced.
    pub(crate) fn set_committed(&self, slot: u32, offset: u64, pos: u64) -> (u64, u64) {
        // SeqCst (SYNC G): ordered before the space-waiter check in the caller. A swap, not a
        // store: a member taken over while inside a commit can move the cursor until the
        // moment we replace it, and a reset must compare against what it really replaced.
        unpack(
            self.groups()
                .committed(slot)
                .swap(pack(offset, pos), Ordering::SeqCst),
        )
    }

    /// Puts the group's committed cursor on disk (`Sync` durability).
    pub(crate) fn sync_committed(&self, slot: u32) -> Result<()> {
        let (off, len) = self.groups().committed_range(slot);
        self.sync_range(off, len)
    }

    /// The lease word of `slot` (0: nobody).
    pub(crate) fn lease(&self, slot: u32) -> u128 {
        // Acquire: pairs with the lease CAS of the previous holder.
        self.groups().lease(slot).load(Ordering::Acquire)
    }

    /// Takes the lease of `slot` for `word`, from nobody, from a dead holder, or from a live
    /// one for which `may_take` says so (a topic member whose heartbeat went stale) or whose
    /// session expired. A holder whose lease was taken finds out at its next commit
    /// ([`Error::TakenOver`]). Returns true if it was taken from a live holder: that holder may
    /// still be inside a commit that checked the lease before we took it, so its cursor CAS can
    /// land after we read the cursor (see `Consumer::with_lease`).
    pub(crate) fn acquire_lease(
        &self,
        slot: u32,
        name: &str,
        word: u128,
        may_take: impl Fn(u128) -> bool,
    ) -> Result<bool> {
        let cell = self.groups().lease(slot);
        loop {
            let held = self.lease(slot);
            let live = lease::alive(&self.file, held);
            if live && !may_take(held) && !self.session_expired(slot, held) {
                return Err(Error::GroupBusy {
                    group: name.into(),
                    pid: lease::pid(held),
                });
            }
            // AcqRel: Acquire sees the previous holder's last commit; Release publishes ours.
            if cell
                .compare_exchange(held, word, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // A dead holder may have died asleep: clear its sleeper bit (see `sleep_on`).
                // SeqCst like every sleeper-bitmap change.
                self.ring
                    .region
                    .u64(crate::protocol::layout::DATA_WAITERS)
                    .fetch_and(!(1u64 << slot), Ordering::SeqCst);
                return Ok(live);
            }
        }
    }

    /// A new lease on this queue file, for a member, a reset or a deletion.
    pub(crate) fn new_lease(&self) -> Result<Lease> {
        Lease::new(&self.file, &self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            op: "take a lease",
            source,
        })
    }

    /// Joins group `name`: finds it or creates it (see [`MappedQueue::find_or_create_group`]),
    /// then takes its lease for `word` (see [`MappedQueue::acquire_lease`]). A deletion (and the
    /// slot's reuse) racing with the lookup is caught after the lease is ours: the slot must
    /// still be active under `name`, with our word as its lease, or we let go and look again.
    /// `session` is the member's session timeout in nanoseconds (0: none), stored with a
    /// first heartbeat once the lease is ours ([`MappedQueue::session_expired`]). Returns the slot
    /// and whether the lease was taken from a live holder (see [`MappedQueue::acquire_lease`]).
    pub(crate) fn join_group(
        &self,
        name: &str,
        gating: bool,
        start: impl Fn() -> (u64, u64),
        word: u128,
        session: u64,
        may_take: impl Fn(u128) -> bool,
    ) -> Result<(u32, bool)> {
        loop {
            let slot = self.find_or_create_group(name, gating, &start)?;
            crate::crash::point("group.join.before_lease");
            let from_live = self.acquire_lease(slot, name, word, &may_take)?;
            crate::crash::point("group.join.after_lease");
            // A deleter stores the slot inactive while it holds the lease, before it lets go.
            // We could take the lease only after our probe saw its lock released, and its
            // `STATE` store precedes its `close` of the lock: the kernel's lock (a spinlock's
            // release and acquire) orders that store before our `group_active` load below. That
            // is an ordering through the kernel, outside the Rust memory model; it holds on x86
            // and arm64. A creator reusing the slot clears the lease before it activates the
            // slot (SYNC G, SeqCst), so seeing it active shows us that clearing.
            if self.group_active(slot)
                && self.group_name(slot).as_deref() == Some(name)
                && self.lease(slot) == word
            {
                self.start_session(slot, word, session);
                crate::crash::point("group.join.after_session");
                return Ok((slot, from_live));
            }
            self.release_lease(slot, word);
        }
    }

    /// Stores the session of the member holding `slot` as `word`: its timeout `session` (ns, 0
    /// for none), a first heartbeat, then the word's tag (SYNC S: Release fence, the fields,
    /// Release store of the tag ↔ [`MappedQueue::session_expired`]).
    fn start_session(&self, slot: u32, word: u128, session: u64) {
        let t = self.groups();
        // SYNC S (Release fence): a reader whose field loads see any store below also sees our
        // lease CAS (made before this) on its second lease load, and discards what it read.
        fence(Ordering::Release);
        // Relaxed: published by the Release store of the tag below.
        t.session(slot).store(session, Ordering::Relaxed);
        t.heartbeat(slot)
            .store(clock::monotonic_ns(), Ordering::Relaxed);
        // SYNC S (Release): the fields above are visible to whoever sees the tag match.
        t.session_tag(slot)
            .store(lease::tag(word), Ordering::Release);
    }

    /// Stamps a heartbeat for the member holding `slot` as `word`; false if the lease is no
    /// longer `word` (taken over after the session expired, or by a reset).
    pub(crate) fn heartbeat(&self, slot: u32, word: u128) -> bool {
        if self.lease(slot) != word {
            return false;
        }
        // Relaxed: a timestamp that a reader only compares with the clock. `fetch_max`, not a
        // store: a holder taken over between its lease check and this write (stopped there)
        // must not set its successor's heartbeat back; raising it only delays a takeover.
        self.groups()
            .heartbeat(slot)
            .fetch_max(clock::monotonic_ns(), Ordering::Relaxed);
        true
    }

    /// Whether the member holding `slot` as `held` is counted out: it declared a session
    /// timeout and its heartbeat is older than that (a hung or stopped process). Its lease may
    /// then be taken; its commits are fenced afterwards. Fields that are not `held`'s own (a
    /// predecessor's, or being written) read as "not expired".
    pub(crate) fn session_expired(&self, slot: u32, held: u128) -> bool {
        let t = self.groups();
        // SYNC S (Acquire): pairs with the Release store of the tag.
        if held == 0 || t.session_tag(slot).load(Ordering::Acquire) != lease::tag(held) {
            return false;
        }
        // Relaxed: ordered by the Acquire load of the tag.
        let session = t.session(slot).load(Ordering::Relaxed);
        let heartbeat = t.heartbeat(slot).load(Ordering::Relaxed);
        // SYNC S (Acquire fence, then Relaxed): if the lease changed hands while we read, the
        // new holder's CAS is visible here and what we read is discarded.
        fence(Ordering::Acquire);
        if t.lease(slot).load(Ordering::Relaxed) != held {
            return false;
        }
        session != 0 && clock::monotonic_ns().saturating_sub(heartbeat) > session
    }

    /// Clears a lease whoever holds it (recovery after a restart, when nobody can).
    pub(crate) fn clear_lease(&self, slot: u32) {
        // Release: pairs with the Acquire of the next `acquire_lease`.
        self.groups().lease(slot).store(0, Ordering::Release);
    }

    pub(crate) fn release_lease(&self, slot: u32, word: u128) {
        // Release: our commits happen-before the next holder's Acquire.
        let _ = self.groups().lease(slot).compare_exchange(
            word,
            0,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// The group's reset mark: the tail its creator saw after activating it, raised to the
    /// tail seen by each [`MappedQueue::reset_group`] that moved its cursor backwards; [`MARK_UNSET`]
    /// while the creator has not stored it.
    fn reset_mark(&self, slot: u32) -> u64 {
        // Acquire: pairs with the Release stores in `find_or_create_group` and `reset_group`;
        // the lease CAS a member makes before reading this orders it after a resetter's lease
        // release anyway.
        self.groups().reset_mark(slot).load(Ordering::Acquire)
    }

    /// The position below which a member joining group `slot` now must validate what it reads
    /// (copy, then the SYNC L check) rather than read in place: producers whose claim limit
    /// predates the group's creation or its last backwards reset may still overwrite those
    /// bytes. Call it after finding the group and taking its lease.
    ///
    /// It is the reset mark, or the caller's own tail if that is lower: while the mark is
    /// [`MARK_UNSET`] (a creation in progress, or its creator died), and if a hostile write
    /// raised it. The caller's tail is always a sound bound. SYNC G: its load (SeqCst) comes
    /// after the caller's load that found the slot active, so after the ACTIVE store in the
    /// single order, like the creator's; and after a reset's cursor store, which happens before
    /// the reset's lease release, which the caller's lease CAS read. A hostile low value only
    /// makes members read in place what they should have checked, which a hostile writer can
    /// spoil anyway.
    pub(crate) fn protected_from(&self, slot: u32) -> u64 {
        self.reset_mark(slot).min(self.ring.tail().1)
    }

    /// Moves group `name`'s committed cursor to the one `target` returns, holding the group's
    /// lease meanwhile so that no member commits concurrently. Fails with
    /// [`Error::GroupBusy`] if a live member holds the group. Returns the new committed offset.
    pub(crate) fn reset_group(
        &self,
        name: &str,
        target: impl FnOnce(u32) -> Result<(u64, u64)>,
    ) -> Result<u64> {
        let (_lock, slot, lease) = self.hold_group(name)?;
        // A work group's file keeps per-record state that a moved cursor would contradict.
        let moved = self
            .check_kind(slot, name, false)
            .and_then(|()| target(slot))
            .and_then(|(offset, pos)| {
                let (_, old_pos) = self.set_committed(slot, offset, pos);
                if pos < old_pos {
                    // Producers may still hold claim limits computed from the old, later cursor
                    // (they rescan only when a claim would pass the limit), so the records between
                    // `pos` and the old cursor are no longer protected. Such a limit came from a
                    // scan before the store above, so it is at most the tail we load now (SeqCst,
                    // after the store in the single order, SYNC G) plus the capacity: bytes from
                    // that tail on are safe, older ones must be validated by the next member.
                    let (_, tail_pos) = self.ring.tail();
                    // Release: published to the next member by our lease release below as well.
                    // A maximum, so a mark left unset by a creator that died stays unset (members
                    // then bound their validated reads by their own tail, which is at least ours).
                    self.groups()
                        .reset_mark(slot)
                        .fetch_max(tail_pos, Ordering::Release);
                }
                if self.geometry.durability == crate::Durability::Sync {
                    self.sync_committed(slot)?;
                }
                Ok(offset)
            });
        self.release_lease(slot, lease.word());
        // A cursor moved forwards frees room: wake producers waiting for it.
        self.ring.notify_space();
        moved
    }

    /// Lowest committed position among gating groups, if any.
    pub(crate) fn min_gating_pos(&self) -> Option<u64> {
        (0..self.geometry.group_slots)
            .filter(|&s| self.group_active(s) && self.gating(s))
            .map(|s| self.committed(s).1)
            .min()
    }

    /// A snapshot of every group. The tail is read after every cursor, so no lag is negative
    /// (each cursor may be older than the others by the time it took to read them).
    pub(crate) fn group_infos(&self) -> Vec<GroupInfo> {
        let mut infos: Vec<(GroupInfo, u64)> = (0..self.geometry.group_slots)
            .filter(|&s| self.group_active(s))
            .filter_map(|s| {
                let lease = self.lease(s);
                let (committed, pos) = self.committed(s);
                let info = GroupInfo {
                    name: self.group_name(s)?,
                    committed,
                    lag: 0,
                    lag_bytes: 0,
                    gating: self.gating(s),
                    holder: (lease != 0).then(|| lease::pid(lease)),
                    holder_alive: lease::alive(&self.file, lease),
                    work: self.is_work(s),
                };
                Some((info, pos))
            })
            .collect();
        let (tail, tail_pos) = self.ring.tail();
        for (info, pos) in &mut infos {
            info.lag = tail.saturating_sub(info.committed);
            info.lag_bytes = tail_pos.saturating_sub(*pos);
        }
        infos.into_iter().map(|(info, _)| info).collect()
    }
}
