// SPDX-License-Identifier: GPL-2.0

//! The monotonic clock, in nanoseconds, as V4L2 buffer timestamps use it.

use crate::bindings;

/// `ktime_get_ns()`: `CLOCK_MONOTONIC` in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    // SAFETY: `ktime_get_ns()` may be called from any context.
    unsafe { bindings::rvb2_ktime_get_ns() }
}
