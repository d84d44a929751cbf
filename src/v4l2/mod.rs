// SPDX-License-Identifier: GPL-2.0

//! V4L2 abstractions: a `struct v4l2_device` with a `struct video_device` node, whose
//! `v4l2_ioctl_ops` call a Rust trait.
//!
//! C headers: [`include/media/v4l2-device.h`](srctree/include/media/v4l2-device.h),
//! [`include/media/v4l2-dev.h`](srctree/include/media/v4l2-dev.h),
//! [`include/media/v4l2-ioctl.h`](srctree/include/media/v4l2-ioctl.h).

mod video;

pub(crate) use video::{Capability, Registration, VideoOps};
