//! The lock-free protocol over shared bytes: the file layout, the ring of records, and the
//! atomics and futex calls it is made of. Nothing here knows about files or processes, so the
//! loom model checker runs the same code over heap memory.

pub(crate) mod crc;
pub(crate) mod durable_state;
pub(crate) mod groups;
pub(crate) mod ids;
pub(crate) mod inbox;
pub(crate) mod layout;
#[cfg(all(test, loom))]
mod loom_tests;
pub(crate) mod producers;
pub(crate) mod ring;
pub(crate) mod sync;
pub(crate) mod txn;
pub(crate) mod work;
