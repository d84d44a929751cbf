// SPDX-License-Identifier: GPL-2.0

//! The monotonic clock, in nanoseconds, as V4L2 buffer timestamps use it.

use kernel::time::{
    ClockSource,
    Monotonic, //
};

/// `ktime_get_ns()`: `CLOCK_MONOTONIC` in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    // `ClockSource::ktime_get()` returns a value in `0..=KTIME_MAX`: the cast is lossless.
    Monotonic::ktime_get() as u64
}
