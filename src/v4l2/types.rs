// SPDX-License-Identifier: GPL-2.0

//! Plain Rust forms of the V4L2 structures a driver reads and writes.
//!
//! The trampolines in [`super::video`] convert between these and the UAPI structures, so a
//! driver never touches a C union or a raw pointer.

use crate::bindings;
use kernel::str::CStr;

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE`.
pub(crate) const BUF_TYPE_VIDEO_CAPTURE: u32 = bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
/// `V4L2_FIELD_NONE`.
pub(crate) const FIELD_NONE: u32 = bindings::v4l2_field_V4L2_FIELD_NONE;
/// `V4L2_COLORSPACE_SRGB`.
pub(crate) const COLORSPACE_SRGB: u32 = bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB;
/// `V4L2_INPUT_TYPE_CAMERA`.
pub(crate) const INPUT_TYPE_CAMERA: u32 = bindings::V4L2_INPUT_TYPE_CAMERA;

/// Builds a V4L2 four-character code.
pub(crate) const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// Copies `src` into a fixed-size C string field, truncating and always NUL-terminating it,
/// as `strscpy()` does.
pub(crate) fn copy_cstr<T: Copy + Default + From<u8>>(dst: &mut [T], src: &CStr) {
    let bytes = src.to_bytes();
    let n = bytes.len().min(dst.len().saturating_sub(1));
    for (d, s) in dst.iter_mut().zip(bytes.iter().take(n)) {
        *d = T::from(*s);
    }
    for d in dst.iter_mut().skip(n) {
        *d = T::default();
    }
}

/// A single-planar image format (`struct v4l2_pix_format`, the fields drivers set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PixFormat {
    /// Width in pixels.
    pub(crate) width: u32,
    /// Height in pixels.
    pub(crate) height: u32,
    /// The four-character code of the pixel format.
    pub(crate) pixelformat: u32,
    /// `enum v4l2_field`.
    pub(crate) field: u32,
    /// Bytes per line.
    pub(crate) bytesperline: u32,
    /// Bytes per image.
    pub(crate) sizeimage: u32,
    /// `enum v4l2_colorspace`.
    pub(crate) colorspace: u32,
}

impl PixFormat {
    /// Reads the format userspace passed.
    pub(crate) fn from_raw(p: &bindings::v4l2_pix_format) -> Self {
        Self {
            width: p.width,
            height: p.height,
            pixelformat: p.pixelformat,
            field: p.field,
            bytesperline: p.bytesperline,
            sizeimage: p.sizeimage,
            colorspace: p.colorspace,
        }
    }

    /// Writes the format back, with every other field set to its default (0).
    pub(crate) fn to_raw(self, p: &mut bindings::v4l2_pix_format) {
        *p = bindings::v4l2_pix_format {
            width: self.width,
            height: self.height,
            pixelformat: self.pixelformat,
            field: self.field,
            bytesperline: self.bytesperline,
            sizeimage: self.sizeimage,
            colorspace: self.colorspace,
            ..Default::default()
        };
    }
}

/// A fraction, e.g. a frame interval (`struct v4l2_fract`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fract {
    /// Numerator.
    pub(crate) numerator: u32,
    /// Denominator.
    pub(crate) denominator: u32,
}

/// Frame sizes a format supports (`VIDIOC_ENUM_FRAMESIZES`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum FrameSizes {
    /// A range with steps (`V4L2_FRMSIZE_TYPE_STEPWISE`).
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

/// A video input (`VIDIOC_ENUMINPUT`).
pub(crate) struct Input {
    /// Its name.
    pub(crate) name: &'static CStr,
    /// `V4L2_INPUT_TYPE_*`.
    pub(crate) kind: u32,
}

/// The argument of `VIDIOC_QUERYCAP`.
#[repr(transparent)]
pub(crate) struct Capability(pub(super) bindings::v4l2_capability);

impl Capability {
    /// Sets the driver name.
    pub(crate) fn set_driver(&mut self, name: &CStr) {
        copy_cstr(&mut self.0.driver, name);
    }

    /// Sets the card (device) name.
    pub(crate) fn set_card(&mut self, name: &CStr) {
        copy_cstr(&mut self.0.card, name);
    }

    /// Sets the bus information, e.g. `platform:rvivid-0`.
    pub(crate) fn set_bus_info(&mut self, info: &CStr) {
        copy_cstr(&mut self.0.bus_info, info);
    }
}

/// The kinds of control a driver declares.
#[derive(Clone, Copy)]
pub(crate) enum ControlKind {
    /// A standard integer control (`v4l2_ctrl_new_std()`).
    Std {
        /// Minimum.
        min: i64,
        /// Maximum.
        max: i64,
        /// Step.
        step: u64,
        /// Default.
        def: i64,
    },
    /// A standard menu control with driver-defined entries (`v4l2_ctrl_new_std_menu_items()`).
    StdMenu {
        /// The entries.
        items: &'static [&'static CStr],
        /// The default entry.
        def: u8,
    },
    /// A driver-specific integer control. Driver-specific controls act on every write, even of
    /// the current value (`V4L2_CTRL_FLAG_EXECUTE_ON_WRITE`).
    Integer {
        /// Name.
        name: &'static CStr,
        /// Minimum.
        min: i64,
        /// Maximum.
        max: i64,
        /// Default.
        def: i64,
    },
    /// A driver-specific boolean control.
    Boolean {
        /// Name.
        name: &'static CStr,
        /// Default.
        def: bool,
    },
}

/// A control the device offers.
#[derive(Clone, Copy)]
pub(crate) struct Control {
    /// The control ID (`V4L2_CID_*`).
    pub(crate) id: u32,
    /// What it is.
    pub(crate) kind: ControlKind,
}
