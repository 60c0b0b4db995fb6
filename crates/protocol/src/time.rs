//! Time as an input. The core never reads a clock: callers pass `now`.

use serde::{Deserialize, Serialize};

pub use core::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch chosen by the driver
/// (simulated time in the simulator, a monotonic clock in the node).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Instant(pub u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// This instant plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(d.as_micros().min(u128::from(u64::MAX)) as u64),
        )
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> u64 {
        self.0 / 1000
    }
}
