// SPDX-License-Identifier: GPL-2.0

//! The rvivid driver: a virtual video capture device.
//!
//! It registers a faux device, the parent of one V4L2 video capture node.

use crate::v4l2;
use kernel::{faux, prelude::*};

/// V4L2 device capabilities: `V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING`.
const DEVICE_CAPS: u32 = 0x0000_0001 | 0x0400_0000;

/// The per-device state of rvivid.
#[pin_data]
struct Rvivid {}

#[vtable]
impl v4l2::VideoOps for Rvivid {
    fn querycap(&self, cap: &mut v4l2::Capability) -> Result {
        cap.set_driver(c"rvivid");
        cap.set_card(c"rvivid");
        cap.set_bus_info(c"platform:rvivid-0");
        Ok(())
    }
}

/// The module: one rvivid instance.
pub(crate) struct RvividModule {
    // Dropped first: the video node goes before its parent device.
    _video: v4l2::Registration<Rvivid>,
    _faux: faux::Registration,
}

impl kernel::Module for RvividModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let faux = faux::Registration::new(c"rvivid-0", None)?;
        let video = v4l2::Registration::new(
            faux.as_ref(),
            c"rvivid",
            DEVICE_CAPS,
            try_pin_init!(Rvivid {}),
            module,
        )?;
        Ok(Self {
            _video: video,
            _faux: faux,
        })
    }
}
