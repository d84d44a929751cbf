// SPDX-License-Identifier: GPL-2.0

//! V4L2: safe abstractions over a `struct v4l2_device` with a `struct video_device` node,
//! its `v4l2_ioctl_ops` and controls, and the buffer ioctls on top of the queue core (the
//! V4L2 shim, like videobuf2-v4l2.c).
//!
//! C headers: [`include/media/v4l2-device.h`](srctree/include/media/v4l2-device.h),
//! [`include/media/v4l2-dev.h`](srctree/include/media/v4l2-dev.h),
//! [`include/media/v4l2-ioctl.h`](srctree/include/media/v4l2-ioctl.h),
//! [`include/media/v4l2-ctrls.h`](srctree/include/media/v4l2-ctrls.h).

mod buffer;
mod types;
mod video;

pub(crate) use types::*;
pub(crate) use video::{Registration, VideoOps};
