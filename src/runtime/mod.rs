//! What the library needs from the process around it: clocks, the boot id, and its own
//! background threads.

pub(crate) mod boot;
pub(crate) mod clock;
pub(crate) mod thread;
