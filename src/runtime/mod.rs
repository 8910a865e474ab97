//! What the library needs from the process around it: clocks, the boot id, its own
//! background threads, and the pacing of its blocking waits.

pub(crate) mod boot;
pub(crate) mod clock;
pub(crate) mod thread;
pub(crate) mod wait;
pub(crate) mod wall_clock;
