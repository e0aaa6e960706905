//! The wall clock as the C daemon keeps it: whole seconds since the epoch
//! in 32 bits (entry mtimes, message times, status timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in seconds since the epoch (0 before it).
pub(crate) fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as u32)
}
