// SPDX-License-Identifier: GPL-2.0

//! The error codes rvb2 returns that the 7.2 kernel crate does not name
//! ([`kernel::error::code`]), in one place.

use kernel::{bindings, error::Error};

/// `ECANCELED`: the error of an out-fence whose buffer was never processed.
pub(crate) fn ecanceled() -> Error {
    Error::from_errno(-(bindings::ECANCELED as i32))
}

/// `EDEADLK`: a `VIDIOC_QBUF` whose in-fence waits for an out-fence of its own queue.
pub(crate) fn edeadlk() -> Error {
    Error::from_errno(-(bindings::EDEADLK as i32))
}

/// `ENOBUFS`: `VIDIOC_CREATE_BUFS` on a full queue.
pub(crate) fn enobufs() -> Error {
    Error::from_errno(-(bindings::ENOBUFS as i32))
}
