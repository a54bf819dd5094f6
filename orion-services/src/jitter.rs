//! Random pauses, so that contenders that failed together do not try again together.

use std::time::Duration;

/// A uniformly random duration in `[0, ceiling]` ("full jitter").
pub fn jitter(ceiling: Duration) -> Duration {
    let random = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    );
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(fraction)
}
