//! The queue file as an operating-system object: creating and mapping it, guarding the
//! mapping against truncation, watching it for removal, checking who owns it, and the
//! kernel-backed leases held in it.

pub(crate) mod file;
pub(crate) mod lease;
pub(crate) mod side_file;
pub(crate) mod sigbus;
pub(crate) mod trust;
pub(crate) mod watch;
