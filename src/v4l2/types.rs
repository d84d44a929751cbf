// SPDX-License-Identifier: GPL-2.0

//! Plain Rust forms of the V4L2 structures a driver reads and writes.
//!
//! The trampolines in [`super::video`] convert between these and the UAPI structures, so a
//! driver never touches a C union or a raw pointer.

use crate::bindings;
use kernel::{
    impl_flags,
    str::CStr, //
};

/// `V4L2_FIELD_NONE`.
pub(crate) const FIELD_NONE: u32 = bindings::v4l2_field_V4L2_FIELD_NONE;
/// `V4L2_COLORSPACE_SRGB`.
pub(crate) const COLORSPACE_SRGB: u32 = bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB;
/// `V4L2_INPUT_TYPE_CAMERA`.
pub(crate) const INPUT_TYPE_CAMERA: u32 = bindings::V4L2_INPUT_TYPE_CAMERA;

impl_flags!(
    /// The capabilities of a video node (`struct video_device`'s `device_caps`, which
    /// `VIDIOC_QUERYCAP` reports).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct DeviceCaps(u32);

    /// One capability of a video node (`V4L2_CAP_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum DeviceCap {
        /// `V4L2_CAP_VIDEO_CAPTURE`: a single-planar video capture node.
        VideoCapture = bindings::V4L2_CAP_VIDEO_CAPTURE,
        /// `V4L2_CAP_VIDEO_OUTPUT`: a single-planar video output node.
        VideoOutput = bindings::V4L2_CAP_VIDEO_OUTPUT,
        /// `V4L2_CAP_VIDEO_M2M`: a single-planar memory-to-memory node.
        VideoM2m = bindings::V4L2_CAP_VIDEO_M2M,
        /// `V4L2_CAP_READWRITE`: `read()`/`write()` I/O.
        ReadWrite = bindings::V4L2_CAP_READWRITE,
        /// `V4L2_CAP_STREAMING`: streaming I/O (the buffer ioctls).
        Streaming = bindings::V4L2_CAP_STREAMING,
    }
);

/// A V4L2 four-character code (`v4l2_fourcc()`), which names a pixel format.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FourCc(u32);

impl FourCc {
    /// `V4L2_PIX_FMT_YUYV`: packed YUV 4:2:2, Y0 U Y1 V.
    pub(crate) const YUYV: Self = Self::new(b"YUYV");
    /// `V4L2_PIX_FMT_RGB24`: packed RGB, 8 bits each, R G B.
    pub(crate) const RGB24: Self = Self::new(b"RGB3");
    /// `V4L2_PIX_FMT_NV12`: Y plane, then interleaved U V at half resolution.
    pub(crate) const NV12: Self = Self::new(b"NV12");
    /// `V4L2_PIX_FMT_GREY`: 8-bit luma only.
    pub(crate) const GREY: Self = Self::new(b"GREY");

    /// The code of the characters `code` (`v4l2_fourcc()`, a C macro bindgen cannot
    /// translate).
    pub(crate) const fn new(code: &[u8; 4]) -> Self {
        Self(u32::from_le_bytes(*code))
    }

    /// The code as the UAPI structures carry it.
    pub(crate) const fn as_raw(self) -> u32 {
        self.0
    }

    /// The code userspace passed.
    pub(crate) const fn from_raw(code: u32) -> Self {
        Self(code)
    }
}

/// A control ID (`V4L2_CID_*`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ControlId(u32);

impl ControlId {
    /// `V4L2_CID_BRIGHTNESS`.
    pub(crate) const BRIGHTNESS: Self = Self(bindings::V4L2_CID_BRIGHTNESS);
    /// `V4L2_CID_CONTRAST`.
    pub(crate) const CONTRAST: Self = Self(bindings::V4L2_CID_CONTRAST);
    /// `V4L2_CID_SATURATION`.
    pub(crate) const SATURATION: Self = Self(bindings::V4L2_CID_SATURATION);
    /// `V4L2_CID_HUE`.
    pub(crate) const HUE: Self = Self(bindings::V4L2_CID_HUE);
    /// `V4L2_CID_TEST_PATTERN`.
    pub(crate) const TEST_PATTERN: Self = Self(bindings::V4L2_CID_TEST_PATTERN);
    /// `V4L2_CID_USER_BASE`: the first control of the user class, where drivers put their own
    /// controls above the standard ones (vivid from `V4L2_CID_USER_BASE | 0xf000`).
    pub(crate) const USER_BASE: Self = Self(bindings::V4L2_CID_USER_BASE);

    /// The control `n` IDs after this one, for a driver's own range of controls.
    pub(crate) const fn offset(self, n: u32) -> Self {
        Self(self.0 + n)
    }

    /// The ID as the control framework passes it.
    pub(crate) const fn as_raw(self) -> u32 {
        self.0
    }

    /// The ID the control framework passed.
    pub(crate) const fn from_raw(id: u32) -> Self {
        Self(id)
    }
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
    /// The pixel format.
    pub(crate) pixelformat: FourCc,
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
            pixelformat: FourCc::from_raw(p.pixelformat),
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
            pixelformat: self.pixelformat.as_raw(),
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

impl Fract {
    /// `numerator / denominator`.
    pub(crate) const fn new(numerator: u32, denominator: u32) -> Self {
        Self {
            numerator,
            denominator,
        }
    }
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
    /// The control ID.
    pub(crate) id: ControlId,
    /// What it is.
    pub(crate) kind: ControlKind,
}
