//! Hand-written V4L2 UAPI definitions (a subset of `linux/videodev2.h`) and a small safe
//! wrapper around a V4L2 device node.
//!
//! Every struct's size, a few key field offsets and every ioctl request number are asserted at
//! compile time against the values gcc gives for the x86_64 kernel headers. The newest
//! additions (`VIDIOC_REMOVE_BUFS`, `v4l2_create_buffers::max_num_buffers`, kernel 6.10) follow
//! the current upstream header.

#![allow(non_camel_case_types, dead_code)]

use std::ffi::CString;
use std::fmt;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// ioctl request encoding (asm-generic/ioctl.h, as used on x86_64)
// ---------------------------------------------------------------------------------------------

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

pub const IOC_NONE: u32 = 0;
pub const IOC_WRITE: u32 = 1;
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IO(type, nr)`.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)`.
pub const fn ior<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}

/// `_IOW(type, nr, T)`.
pub const fn iow<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOWR(type, nr, T)`.
pub const fn iowr<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/// `v4l2_fourcc(a, b, c, d)`.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | ((code[1] as u32) << 8) | ((code[2] as u32) << 16) | ((code[3] as u32) << 24)
}

/// The fourcc as printable text (e.g. "YUYV").
pub fn fourcc_str(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

pub const V4L2_PIX_FMT_YUYV: u32 = fourcc(b"YUYV");
pub const V4L2_PIX_FMT_RGB24: u32 = fourcc(b"RGB3");
pub const V4L2_PIX_FMT_NV12: u32 = fourcc(b"NV12");
pub const V4L2_PIX_FMT_GREY: u32 = fourcc(b"GREY");

// enum v4l2_field
pub const V4L2_FIELD_ANY: u32 = 0;
pub const V4L2_FIELD_NONE: u32 = 1;
pub const V4L2_FIELD_TOP: u32 = 2;
pub const V4L2_FIELD_INTERLACED: u32 = 4;

// v4l2_fmtdesc flags
pub const V4L2_FMT_FLAG_COMPRESSED: u32 = 0x0001;

// enum v4l2_buf_type
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;

// enum v4l2_memory
pub const V4L2_MEMORY_MMAP: u32 = 1;
pub const V4L2_MEMORY_USERPTR: u32 = 2;
pub const V4L2_MEMORY_OVERLAY: u32 = 3;
pub const V4L2_MEMORY_DMABUF: u32 = 4;

// enum v4l2_colorspace (the ones a capture driver commonly reports)
pub const V4L2_COLORSPACE_DEFAULT: u32 = 0;
pub const V4L2_COLORSPACE_SMPTE170M: u32 = 1;
pub const V4L2_COLORSPACE_REC709: u32 = 3;
pub const V4L2_COLORSPACE_SRGB: u32 = 8;

// v4l2_capability capabilities / device_caps
pub const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const V4L2_CAP_VIDEO_OUTPUT: u32 = 0x0000_0002;
pub const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const V4L2_CAP_READWRITE: u32 = 0x0100_0000;
pub const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
pub const V4L2_CAP_IO_MC: u32 = 0x2000_0000;
pub const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;

// v4l2_buffer flags
pub const V4L2_BUF_FLAG_MAPPED: u32 = 0x0000_0001;
pub const V4L2_BUF_FLAG_QUEUED: u32 = 0x0000_0002;
pub const V4L2_BUF_FLAG_DONE: u32 = 0x0000_0004;
pub const V4L2_BUF_FLAG_KEYFRAME: u32 = 0x0000_0008;
pub const V4L2_BUF_FLAG_PFRAME: u32 = 0x0000_0010;
pub const V4L2_BUF_FLAG_BFRAME: u32 = 0x0000_0020;
pub const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;
pub const V4L2_BUF_FLAG_IN_REQUEST: u32 = 0x0000_0080;
pub const V4L2_BUF_FLAG_TIMECODE: u32 = 0x0000_0100;
pub const V4L2_BUF_FLAG_PREPARED: u32 = 0x0000_0400;
pub const V4L2_BUF_FLAG_NO_CACHE_INVALIDATE: u32 = 0x0000_0800;
pub const V4L2_BUF_FLAG_NO_CACHE_CLEAN: u32 = 0x0000_1000;
pub const V4L2_BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
pub const V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN: u32 = 0x0000_0000;
pub const V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
pub const V4L2_BUF_FLAG_TIMESTAMP_COPY: u32 = 0x0000_4000;
pub const V4L2_BUF_FLAG_TSTAMP_SRC_MASK: u32 = 0x0007_0000;
pub const V4L2_BUF_FLAG_TSTAMP_SRC_EOF: u32 = 0x0000_0000;
pub const V4L2_BUF_FLAG_TSTAMP_SRC_SOE: u32 = 0x0001_0000;
pub const V4L2_BUF_FLAG_LAST: u32 = 0x0010_0000;
pub const V4L2_BUF_FLAG_REQUEST_FD: u32 = 0x0080_0000;

// v4l2_requestbuffers / v4l2_create_buffers capabilities
pub const V4L2_BUF_CAP_SUPPORTS_MMAP: u32 = 1 << 0;
pub const V4L2_BUF_CAP_SUPPORTS_USERPTR: u32 = 1 << 1;
pub const V4L2_BUF_CAP_SUPPORTS_DMABUF: u32 = 1 << 2;
pub const V4L2_BUF_CAP_SUPPORTS_REQUESTS: u32 = 1 << 3;
pub const V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS: u32 = 1 << 4;
pub const V4L2_BUF_CAP_SUPPORTS_M2M_HOLD_CAPTURE_BUF: u32 = 1 << 5;
pub const V4L2_BUF_CAP_SUPPORTS_MMAP_CACHE_HINTS: u32 = 1 << 6;
pub const V4L2_BUF_CAP_SUPPORTS_MAX_NUM_BUFFERS: u32 = 1 << 7;
pub const V4L2_BUF_CAP_SUPPORTS_REMOVE_BUFS: u32 = 1 << 8;

// v4l2_input type / status
pub const V4L2_INPUT_TYPE_TUNER: u32 = 1;
pub const V4L2_INPUT_TYPE_CAMERA: u32 = 2;
pub const V4L2_INPUT_TYPE_TOUCH: u32 = 3;

// v4l2_captureparm capability
pub const V4L2_CAP_TIMEPERFRAME: u32 = 0x1000;
pub const V4L2_MODE_HIGHQUALITY: u32 = 0x0001;

// enum v4l2_frmsizetypes / v4l2_frmivaltypes
pub const V4L2_FRMSIZE_TYPE_DISCRETE: u32 = 1;
pub const V4L2_FRMSIZE_TYPE_CONTINUOUS: u32 = 2;
pub const V4L2_FRMSIZE_TYPE_STEPWISE: u32 = 3;
pub const V4L2_FRMIVAL_TYPE_DISCRETE: u32 = 1;
pub const V4L2_FRMIVAL_TYPE_CONTINUOUS: u32 = 2;
pub const V4L2_FRMIVAL_TYPE_STEPWISE: u32 = 3;

// Control ids and flags
pub const V4L2_CTRL_CLASS_USER: u32 = 0x0098_0000;
pub const V4L2_CID_BASE: u32 = V4L2_CTRL_CLASS_USER | 0x900;
pub const V4L2_CID_BRIGHTNESS: u32 = V4L2_CID_BASE;
pub const V4L2_CID_CONTRAST: u32 = V4L2_CID_BASE + 1;
pub const V4L2_CID_SATURATION: u32 = V4L2_CID_BASE + 2;
pub const V4L2_CID_HUE: u32 = V4L2_CID_BASE + 3;
pub const V4L2_CID_USER_BASE: u32 = V4L2_CID_BASE;
pub const V4L2_CID_PRIVATE_BASE: u32 = 0x0800_0000;
pub const V4L2_CTRL_FLAG_NEXT_CTRL: u32 = 0x8000_0000;
pub const V4L2_CTRL_FLAG_NEXT_COMPOUND: u32 = 0x4000_0000;
pub const V4L2_CTRL_FLAG_DISABLED: u32 = 0x0001;
pub const V4L2_CTRL_FLAG_READ_ONLY: u32 = 0x0004;
pub const V4L2_CTRL_FLAG_INACTIVE: u32 = 0x0010;
pub const V4L2_CTRL_FLAG_WRITE_ONLY: u32 = 0x0040;
pub const V4L2_CTRL_FLAG_VOLATILE: u32 = 0x0080;
pub const V4L2_CTRL_FLAG_EXECUTE_ON_WRITE: u32 = 0x0200;
pub const V4L2_CTRL_CLASS_IMAGE_PROC: u32 = 0x009f_0000;
pub const V4L2_CID_IMAGE_PROC_CLASS_BASE: u32 = V4L2_CTRL_CLASS_IMAGE_PROC | 0x900;
pub const V4L2_CID_TEST_PATTERN: u32 = V4L2_CID_IMAGE_PROC_CLASS_BASE + 3;

// rvivid's private controls (not UAPI: the driver's contract; see the tests in formats.rs)
pub const RVIVID_CID_BASE: u32 = V4L2_CID_USER_BASE | 0xf100;
/// Integer 0..32: the next N buffers the driver completes carry `V4L2_BUF_FLAG_ERROR`.
pub const RVIVID_CID_FAIL_NEXT_BUFFERS: u32 = RVIVID_CID_BASE;
/// Button: the next `start_streaming` fails (STREAMON returns EIO).
pub const RVIVID_CID_FAIL_START_STREAMING: u32 = RVIVID_CID_BASE + 1;
/// Integer 0..10000: each buffer is held that many ms longer in the driver.
pub const RVIVID_CID_HOLD_MS: u32 = RVIVID_CID_BASE + 2;
/// Boolean: complete buffers out of order (for the fence tests).
pub const RVIVID_CID_UNORDERED: u32 = RVIVID_CID_BASE + 3;
pub const RVIVID_CID_MARK_LAST: u32 = RVIVID_CID_BASE + 4;

// enum v4l2_ctrl_type (the simple ones)
pub const V4L2_CTRL_TYPE_INTEGER: u32 = 1;
pub const V4L2_CTRL_TYPE_BOOLEAN: u32 = 2;
pub const V4L2_CTRL_TYPE_MENU: u32 = 3;
pub const V4L2_CTRL_TYPE_BUTTON: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------------------------

/// Zero-initialised value of a plain-old-data UAPI struct (see [`Uapi`]).
pub fn zeroed<T: Uapi>() -> T {
    // SAFETY: `Uapi` is only implemented for POD structs of integers, arrays and unions thereof.
    unsafe { std::mem::zeroed() }
}

/// Marker for the POD UAPI structs of this module (all-zero is a valid value). A new struct
/// added here goes into the `uapi!` list below.
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers, arrays and unions of those.
pub unsafe trait Uapi: Sized {}

macro_rules! uapi {
    ($($t:ty),* $(,)?) => { $(unsafe impl Uapi for $t {})* };
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_pix_format {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    /// `ycbcr_enc` (or `hsv_enc`, same storage).
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

/// The `fmt` union of `v4l2_format`: 200 bytes, 8-byte aligned (the kernel's `v4l2_window`
/// member holds pointers).
#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_format_fmt {
    pub pix: v4l2_pix_format,
    pub raw_data: [u8; 200],
    _align: [u64; 25],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub fmt: v4l2_format_fmt,
}

impl v4l2_format {
    /// A zeroed format of the given buffer type.
    pub fn new(type_: u32) -> Self {
        let mut f: Self = zeroed();
        f.type_ = type_;
        f
    }

    /// The single-planar pixel format member.
    pub fn pix(&self) -> &v4l2_pix_format {
        // SAFETY: every bit pattern is a valid v4l2_pix_format (plain u32s).
        unsafe { &self.fmt.pix }
    }

    /// The single-planar pixel format member, mutably.
    pub fn pix_mut(&mut self) -> &mut v4l2_pix_format {
        // SAFETY: as above.
        unsafe { &mut self.fmt.pix }
    }
}

impl fmt::Debug for v4l2_format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("v4l2_format")
            .field("type_", &self.type_)
            .field("pix", self.pix())
            .finish()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_create_buffers {
    pub index: u32,
    pub count: u32,
    pub memory: u32,
    pub format: v4l2_format,
    pub capabilities: u32,
    pub flags: u32,
    /// Since Linux 6.10 (part of `reserved[6]` before).
    pub max_num_buffers: u32,
    pub reserved: [u32; 5],
}

/// `struct timeval` as the 64-bit kernel ABI lays it out in `v4l2_buffer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct v4l2_timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

/// The `m` union of `v4l2_buffer`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_buffer_m {
    pub offset: u32,
    pub userptr: libc::c_ulong,
    pub planes: *mut libc::c_void,
    pub fd: i32,
}

impl fmt::Debug for v4l2_buffer_m {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: all members are plain integers/pointers; showing the widest one.
        write!(f, "{{ userptr/offset/fd: {:#x} }}", unsafe { self.userptr })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: v4l2_timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    pub m: v4l2_buffer_m,
    pub length: u32,
    pub reserved2: u32,
    /// `request_fd` (or `reserved`, same storage).
    pub request_fd: i32,
}

impl v4l2_buffer {
    /// A zeroed buffer descriptor with type, memory and index set.
    pub fn new(type_: u32, memory: u32, index: u32) -> Self {
        let mut b: Self = zeroed();
        b.type_ = type_;
        b.memory = memory;
        b.index = index;
        b
    }

    /// `m.offset` (MMAP).
    pub fn offset(&self) -> u32 {
        // SAFETY: plain integer member.
        unsafe { self.m.offset }
    }

    /// `m.fd` (DMABUF).
    pub fn fd(&self) -> i32 {
        // SAFETY: plain integer member.
        unsafe { self.m.fd }
    }

    /// `m.userptr` (USERPTR).
    pub fn userptr(&self) -> libc::c_ulong {
        // SAFETY: plain integer member.
        unsafe { self.m.userptr }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_exportbuffer {
    pub type_: u32,
    pub index: u32,
    pub plane: u32,
    pub flags: u32,
    pub fd: i32,
    pub reserved: [u32; 11],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_input {
    pub index: u32,
    pub name: [u8; 32],
    pub type_: u32,
    pub audioset: u32,
    pub tuner: u32,
    pub std: u64,
    pub status: u32,
    pub capabilities: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_captureparm {
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
}

/// The `parm` union of `v4l2_streamparm` (only the capture member is spelled out).
#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_streamparm_parm {
    pub capture: v4l2_captureparm,
    pub raw_data: [u8; 200],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    pub parm: v4l2_streamparm_parm,
}

impl v4l2_streamparm {
    /// A zeroed streamparm of the given buffer type.
    pub fn new(type_: u32) -> Self {
        let mut p: Self = zeroed();
        p.type_ = type_;
        p
    }

    /// The capture member.
    pub fn capture(&self) -> &v4l2_captureparm {
        // SAFETY: every bit pattern is a valid v4l2_captureparm (plain u32s).
        unsafe { &self.parm.capture }
    }

    /// The capture member, mutably.
    pub fn capture_mut(&mut self) -> &mut v4l2_captureparm {
        // SAFETY: as above.
        unsafe { &mut self.parm.capture }
    }
}

impl fmt::Debug for v4l2_streamparm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("v4l2_streamparm")
            .field("type_", &self.type_)
            .field("capture", self.capture())
            .finish()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct v4l2_frmsize_discrete {
    pub width: u32,
    pub height: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct v4l2_frmsize_stepwise {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_frmsize_u {
    pub discrete: v4l2_frmsize_discrete,
    pub stepwise: v4l2_frmsize_stepwise,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_frmsizeenum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    pub u: v4l2_frmsize_u,
    pub reserved: [u32; 2],
}

impl v4l2_frmsizeenum {
    /// The discrete member (valid when `type_ == V4L2_FRMSIZE_TYPE_DISCRETE`).
    pub fn discrete(&self) -> v4l2_frmsize_discrete {
        // SAFETY: plain u32s.
        unsafe { self.u.discrete }
    }

    /// The stepwise member (valid for the STEPWISE and CONTINUOUS types).
    pub fn stepwise(&self) -> v4l2_frmsize_stepwise {
        // SAFETY: plain u32s.
        unsafe { self.u.stepwise }
    }
}

impl fmt::Debug for v4l2_frmsizeenum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("v4l2_frmsizeenum")
            .field("index", &self.index)
            .field("pixel_format", &fourcc_str(self.pixel_format))
            .field("type_", &self.type_)
            .field("stepwise", &self.stepwise())
            .finish()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct v4l2_frmival_stepwise {
    pub min: v4l2_fract,
    pub max: v4l2_fract,
    pub step: v4l2_fract,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_frmival_u {
    pub discrete: v4l2_fract,
    pub stepwise: v4l2_frmival_stepwise,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_frmivalenum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    pub u: v4l2_frmival_u,
    pub reserved: [u32; 2],
}

impl v4l2_frmivalenum {
    /// The discrete member (valid when `type_ == V4L2_FRMIVAL_TYPE_DISCRETE`).
    pub fn discrete(&self) -> v4l2_fract {
        // SAFETY: plain u32s.
        unsafe { self.u.discrete }
    }

    /// The stepwise member (valid for the STEPWISE and CONTINUOUS types).
    pub fn stepwise(&self) -> v4l2_frmival_stepwise {
        // SAFETY: plain u32s.
        unsafe { self.u.stepwise }
    }
}

impl fmt::Debug for v4l2_frmivalenum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("v4l2_frmivalenum")
            .field("index", &self.index)
            .field("pixel_format", &fourcc_str(self.pixel_format))
            .field("width", &self.width)
            .field("height", &self.height)
            .field("type_", &self.type_)
            .field("stepwise", &self.stepwise())
            .finish()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct v4l2_control {
    pub id: u32,
    pub value: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_queryctrl {
    pub id: u32,
    pub type_: u32,
    pub name: [u8; 32],
    pub minimum: i32,
    pub maximum: i32,
    pub step: i32,
    pub default_value: i32,
    pub flags: u32,
    pub reserved: [u32; 2],
}

/// Since Linux 6.10 (not in older installed headers).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_remove_buffers {
    pub index: u32,
    pub count: u32,
    pub type_: u32,
    pub reserved: [u32; 13],
}

/// `struct v4l2_querymenu` (packed in the UAPI header: 44 bytes, alignment 1). The header's
/// `union { __u8 name[32]; __s64 value; }` is kept as its bytes (see [`v4l2_querymenu::value`]).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_querymenu {
    pub id: u32,
    pub index: u32,
    pub name: [u8; 32],
    pub reserved: u32,
}

impl v4l2_querymenu {
    /// The `value` member (integer menus), the union's first 8 bytes.
    pub fn value(&self) -> i64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.name[..8]);
        i64::from_ne_bytes(b)
    }
}

uapi!(
    v4l2_capability,
    v4l2_fmtdesc,
    v4l2_pix_format,
    v4l2_format,
    v4l2_requestbuffers,
    v4l2_create_buffers,
    v4l2_timeval,
    v4l2_timecode,
    v4l2_buffer,
    v4l2_exportbuffer,
    v4l2_input,
    v4l2_fract,
    v4l2_captureparm,
    v4l2_streamparm,
    v4l2_frmsizeenum,
    v4l2_frmivalenum,
    v4l2_control,
    v4l2_queryctrl,
    v4l2_remove_buffers,
    v4l2_querymenu,
    i32,
    u32,
);

// Sizes and offsets as gcc reports them for linux/videodev2.h on x86_64.
const _: () = assert!(size_of::<v4l2_capability>() == 104);
const _: () = assert!(size_of::<v4l2_fmtdesc>() == 64);
const _: () = assert!(size_of::<v4l2_pix_format>() == 48);
const _: () = assert!(size_of::<v4l2_format>() == 208);
const _: () = assert!(size_of::<v4l2_requestbuffers>() == 20);
const _: () = assert!(size_of::<v4l2_create_buffers>() == 256);
const _: () = assert!(size_of::<v4l2_timeval>() == 16);
const _: () = assert!(size_of::<v4l2_timecode>() == 16);
const _: () = assert!(size_of::<v4l2_buffer>() == 88);
const _: () = assert!(size_of::<v4l2_exportbuffer>() == 64);
const _: () = assert!(size_of::<v4l2_input>() == 80);
const _: () = assert!(size_of::<v4l2_fract>() == 8);
const _: () = assert!(size_of::<v4l2_captureparm>() == 40);
const _: () = assert!(size_of::<v4l2_streamparm>() == 204);
const _: () = assert!(size_of::<v4l2_frmsizeenum>() == 44);
const _: () = assert!(size_of::<v4l2_frmivalenum>() == 52);
const _: () = assert!(size_of::<v4l2_control>() == 8);
const _: () = assert!(size_of::<v4l2_queryctrl>() == 68);
const _: () = assert!(size_of::<v4l2_remove_buffers>() == 64);
const _: () = assert!(size_of::<v4l2_querymenu>() == 44);
const _: () = assert!(std::mem::align_of::<v4l2_querymenu>() == 1);

const _: () = assert!(offset_of!(v4l2_format, fmt) == 8);
const _: () = assert!(offset_of!(v4l2_fmtdesc, pixelformat) == 44);
const _: () = assert!(offset_of!(v4l2_requestbuffers, flags) == 16);
const _: () = assert!(offset_of!(v4l2_create_buffers, format) == 16);
const _: () = assert!(offset_of!(v4l2_create_buffers, capabilities) == 224);
const _: () = assert!(offset_of!(v4l2_buffer, timestamp) == 24);
const _: () = assert!(offset_of!(v4l2_buffer, timecode) == 40);
const _: () = assert!(offset_of!(v4l2_buffer, sequence) == 56);
const _: () = assert!(offset_of!(v4l2_buffer, memory) == 60);
const _: () = assert!(offset_of!(v4l2_buffer, m) == 64);
const _: () = assert!(offset_of!(v4l2_buffer, length) == 72);
const _: () = assert!(offset_of!(v4l2_buffer, reserved2) == 76);
const _: () = assert!(offset_of!(v4l2_buffer, request_fd) == 80);
const _: () = assert!(offset_of!(v4l2_exportbuffer, fd) == 16);
const _: () = assert!(offset_of!(v4l2_input, std) == 48);
const _: () = assert!(offset_of!(v4l2_input, status) == 56);
const _: () = assert!(offset_of!(v4l2_streamparm, parm) == 4);
const _: () = assert!(offset_of!(v4l2_frmsizeenum, u) == 12);
const _: () = assert!(offset_of!(v4l2_frmivalenum, u) == 20);
const _: () = assert!(offset_of!(v4l2_queryctrl, minimum) == 40);
const _: () = assert!(offset_of!(v4l2_querymenu, name) == 8);
const _: () = assert!(offset_of!(v4l2_querymenu, reserved) == 40);

// ---------------------------------------------------------------------------------------------
// ioctl request numbers
// ---------------------------------------------------------------------------------------------

const V: u8 = b'V';

pub const VIDIOC_QUERYCAP: u32 = ior::<v4l2_capability>(V, 0);
pub const VIDIOC_ENUM_FMT: u32 = iowr::<v4l2_fmtdesc>(V, 2);
pub const VIDIOC_G_FMT: u32 = iowr::<v4l2_format>(V, 4);
pub const VIDIOC_S_FMT: u32 = iowr::<v4l2_format>(V, 5);
pub const VIDIOC_REQBUFS: u32 = iowr::<v4l2_requestbuffers>(V, 8);
pub const VIDIOC_QUERYBUF: u32 = iowr::<v4l2_buffer>(V, 9);
pub const VIDIOC_QBUF: u32 = iowr::<v4l2_buffer>(V, 15);
pub const VIDIOC_EXPBUF: u32 = iowr::<v4l2_exportbuffer>(V, 16);
pub const VIDIOC_DQBUF: u32 = iowr::<v4l2_buffer>(V, 17);
pub const VIDIOC_STREAMON: u32 = iow::<libc::c_int>(V, 18);
pub const VIDIOC_STREAMOFF: u32 = iow::<libc::c_int>(V, 19);
pub const VIDIOC_G_PARM: u32 = iowr::<v4l2_streamparm>(V, 21);
pub const VIDIOC_S_PARM: u32 = iowr::<v4l2_streamparm>(V, 22);
pub const VIDIOC_ENUMINPUT: u32 = iowr::<v4l2_input>(V, 26);
pub const VIDIOC_G_CTRL: u32 = iowr::<v4l2_control>(V, 27);
pub const VIDIOC_S_CTRL: u32 = iowr::<v4l2_control>(V, 28);
pub const VIDIOC_QUERYCTRL: u32 = iowr::<v4l2_queryctrl>(V, 36);
pub const VIDIOC_QUERYMENU: u32 = iowr::<v4l2_querymenu>(V, 37);
pub const VIDIOC_G_INPUT: u32 = ior::<libc::c_int>(V, 38);
pub const VIDIOC_S_INPUT: u32 = iowr::<libc::c_int>(V, 39);
pub const VIDIOC_TRY_FMT: u32 = iowr::<v4l2_format>(V, 64);
pub const VIDIOC_ENUM_FRAMESIZES: u32 = iowr::<v4l2_frmsizeenum>(V, 74);
pub const VIDIOC_ENUM_FRAMEINTERVALS: u32 = iowr::<v4l2_frmivalenum>(V, 75);
pub const VIDIOC_CREATE_BUFS: u32 = iowr::<v4l2_create_buffers>(V, 92);
pub const VIDIOC_PREPARE_BUF: u32 = iowr::<v4l2_buffer>(V, 93);
pub const VIDIOC_REMOVE_BUFS: u32 = iowr::<v4l2_remove_buffers>(V, 104);

// The values gcc computes from linux/videodev2.h on x86_64 (VIDIOC_REMOVE_BUFS from its
// definition, `_IOWR('V', 104, struct v4l2_remove_buffers)`).
const _: () = assert!(VIDIOC_QUERYCAP == 0x8068_5600);
const _: () = assert!(VIDIOC_ENUM_FMT == 0xc040_5602);
const _: () = assert!(VIDIOC_G_FMT == 0xc0d0_5604);
const _: () = assert!(VIDIOC_S_FMT == 0xc0d0_5605);
const _: () = assert!(VIDIOC_TRY_FMT == 0xc0d0_5640);
const _: () = assert!(VIDIOC_REQBUFS == 0xc014_5608);
const _: () = assert!(VIDIOC_QUERYBUF == 0xc058_5609);
const _: () = assert!(VIDIOC_QBUF == 0xc058_560f);
const _: () = assert!(VIDIOC_DQBUF == 0xc058_5611);
const _: () = assert!(VIDIOC_EXPBUF == 0xc040_5610);
const _: () = assert!(VIDIOC_STREAMON == 0x4004_5612);
const _: () = assert!(VIDIOC_STREAMOFF == 0x4004_5613);
const _: () = assert!(VIDIOC_CREATE_BUFS == 0xc100_565c);
const _: () = assert!(VIDIOC_PREPARE_BUF == 0xc058_565d);
const _: () = assert!(VIDIOC_REMOVE_BUFS == 0xc040_5668);
const _: () = assert!(VIDIOC_ENUMINPUT == 0xc050_561a);
const _: () = assert!(VIDIOC_G_INPUT == 0x8004_5626);
const _: () = assert!(VIDIOC_S_INPUT == 0xc004_5627);
const _: () = assert!(VIDIOC_G_PARM == 0xc0cc_5615);
const _: () = assert!(VIDIOC_S_PARM == 0xc0cc_5616);
const _: () = assert!(VIDIOC_ENUM_FRAMESIZES == 0xc02c_564a);
const _: () = assert!(VIDIOC_ENUM_FRAMEINTERVALS == 0xc034_564b);
const _: () = assert!(VIDIOC_G_CTRL == 0xc008_561b);
const _: () = assert!(VIDIOC_S_CTRL == 0xc008_561c);
const _: () = assert!(VIDIOC_QUERYCTRL == 0xc044_5624);
const _: () = assert!(VIDIOC_QUERYMENU == 0xc02c_5625);
const _: () = assert!(V4L2_CID_TEST_PATTERN == 0x009f_0903);
const _: () = assert!(RVIVID_CID_BASE == 0x0098_f900);

const _: () = assert!(V4L2_PIX_FMT_YUYV == 0x5659_5559);
const _: () = assert!(V4L2_PIX_FMT_RGB24 == 0x3342_4752);
const _: () = assert!(V4L2_PIX_FMT_NV12 == 0x3231_564e);
const _: () = assert!(V4L2_PIX_FMT_GREY == 0x5945_5247);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The bytes of a fixed-size C string field up to its first NUL, or `None` if there is no NUL
/// (the field is not properly terminated).
pub fn c_str(field: &[u8]) -> Option<&[u8]> {
    field.iter().position(|&b| b == 0).map(|n| &field[..n])
}

/// A fixed-size C string field as text, for messages (lossy; unterminated shown in full).
pub fn c_str_lossy(field: &[u8]) -> String {
    String::from_utf8_lossy(c_str(field).unwrap_or(field)).into_owned()
}

/// An errno value returned by a failed system call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current errno.
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = errno_name(self.0);
        let text = std::io::Error::from_raw_os_error(self.0);
        // io::Error's Display appends " (os error N)".
        let text = text.to_string();
        let text = text.split(" (os error").next().unwrap_or("");
        write!(f, "{name} ({text})")
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

/// The symbolic name of the errno values V4L2 drivers return, else "errno N".
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOTTY => "ENOTTY",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTSUP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        libc::ENOLINK => "ENOLINK",
        libc::ENOBUFS => "ENOBUFS",
        libc::EBADR => "EBADR",
        libc::ESRCH => "ESRCH",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// An open V4L2 device node; closed on drop.
#[derive(Debug)]
pub struct Device {
    fd: RawFd,
    path: String,
}

impl Device {
    /// Opens `path` with `O_RDWR | O_CLOEXEC` (blocking).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Errno> {
        Self::open_with(path, false)
    }

    /// Opens `path` with `O_RDWR | O_CLOEXEC | O_NONBLOCK`.
    pub fn open_nonblock(path: impl AsRef<Path>) -> Result<Self, Errno> {
        Self::open_with(path, true)
    }

    /// Opens `path` with `O_RDWR | O_CLOEXEC`, plus `O_NONBLOCK` if `nonblock`.
    pub fn open_with(path: impl AsRef<Path>, nonblock: bool) -> Result<Self, Errno> {
        use std::os::unix::ffi::OsStrExt;
        let path = path.as_ref();
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))?;
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
        if nonblock {
            flags |= libc::O_NONBLOCK;
        }
        loop {
            // SAFETY: `cpath` is a valid NUL-terminated string.
            let fd = unsafe { libc::open(cpath.as_ptr(), flags) };
            if fd >= 0 {
                return Ok(Device {
                    fd,
                    path: path.display().to_string(),
                });
            }
            let e = Errno::last();
            if e.0 != libc::EINTR {
                return Err(e);
            }
        }
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Issues `ioctl(fd, req, arg)`; retried on EINTR. Returns the errno on failure.
    ///
    /// `req` must be a request whose argument is a `T` (as the `VIDIOC_*` constants here are:
    /// they encode `size_of::<T>()`).
    pub fn ioctl<T>(&self, req: u32, arg: &mut T) -> Result<(), Errno> {
        loop {
            // SAFETY: `arg` points to a live, properly sized `T` for the request's duration;
            // the request numbers here encode `size_of::<T>()`, so the kernel reads/writes
            // within it.
            let r = unsafe { libc::ioctl(self.fd, req as libc::Ioctl, arg as *mut T) };
            if r >= 0 {
                return Ok(());
            }
            let e = Errno::last();
            if e.0 != libc::EINTR {
                return Err(e);
            }
        }
    }

    /// Issues `ioctl(fd, req, arg)` once: unlike [`Device::ioctl`], an `EINTR` is returned to
    /// the caller (for the tests of blocking calls and signals). Same contract on `req`.
    pub fn ioctl_once<T>(&self, req: u32, arg: &mut T) -> Result<(), Errno> {
        // SAFETY: as in `ioctl`.
        let r = unsafe { libc::ioctl(self.fd, req as libc::Ioctl, arg as *mut T) };
        if r >= 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    /// `VIDIOC_QUERYCAP`.
    pub fn querycap(&self) -> Result<v4l2_capability, Errno> {
        let mut cap: v4l2_capability = zeroed();
        self.ioctl(VIDIOC_QUERYCAP, &mut cap)?;
        Ok(cap)
    }

    /// Sets or clears `O_NONBLOCK` on the open file (DQBUF honours the file's current flags).
    pub fn set_nonblocking(&self, nonblock: bool) -> Result<(), Errno> {
        // SAFETY: plain fcntl calls on our fd.
        let flags = unsafe { libc::fcntl(self.fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(Errno::last());
        }
        let flags = if nonblock {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// `VIDIOC_G_FMT` for the video capture type.
    pub fn g_fmt(&self) -> Result<v4l2_format, Errno> {
        let mut f = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
        self.ioctl(VIDIOC_G_FMT, &mut f)?;
        Ok(f)
    }

    /// `VIDIOC_S_FMT` (or `VIDIOC_TRY_FMT` if `try_only`) of a single-planar capture format
    /// with `pixelformat`, `width`, `height` and `field`, the rest zero; returns what the driver
    /// made of it.
    pub fn set_pix(
        &self,
        try_only: bool,
        pixelformat: u32,
        width: u32,
        height: u32,
        field: u32,
    ) -> Result<v4l2_format, Errno> {
        let mut f = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
        let p = f.pix_mut();
        p.pixelformat = pixelformat;
        p.width = width;
        p.height = height;
        p.field = field;
        let req = if try_only {
            VIDIOC_TRY_FMT
        } else {
            VIDIOC_S_FMT
        };
        self.ioctl(req, &mut f)?;
        Ok(f)
    }

    /// `VIDIOC_REQBUFS` of `count` MMAP video capture buffers; returns the driver's answer.
    pub fn reqbufs(&self, count: u32) -> Result<v4l2_requestbuffers, Errno> {
        self.reqbufs_with(count, V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP)
    }

    /// `VIDIOC_REQBUFS` with any type and memory.
    pub fn reqbufs_with(
        &self,
        count: u32,
        type_: u32,
        memory: u32,
    ) -> Result<v4l2_requestbuffers, Errno> {
        let mut rb: v4l2_requestbuffers = zeroed();
        rb.count = count;
        rb.type_ = type_;
        rb.memory = memory;
        self.ioctl(VIDIOC_REQBUFS, &mut rb)?;
        Ok(rb)
    }

    /// `VIDIOC_QUERYBUF` of MMAP video capture buffer `index`.
    pub fn querybuf(&self, index: u32) -> Result<v4l2_buffer, Errno> {
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, index);
        self.ioctl(VIDIOC_QUERYBUF, &mut b)?;
        Ok(b)
    }

    /// `VIDIOC_QBUF` of MMAP video capture buffer `index`; returns the driver's update.
    pub fn qbuf(&self, index: u32) -> Result<v4l2_buffer, Errno> {
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, index);
        self.ioctl(VIDIOC_QBUF, &mut b)?;
        Ok(b)
    }

    /// `VIDIOC_PREPARE_BUF` of MMAP video capture buffer `index`.
    pub fn prepare_buf(&self, index: u32) -> Result<v4l2_buffer, Errno> {
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, index);
        self.ioctl(VIDIOC_PREPARE_BUF, &mut b)?;
        Ok(b)
    }

    /// `VIDIOC_DQBUF` of an MMAP video capture buffer (blocking unless the file is
    /// `O_NONBLOCK`; an interrupted wait is restarted, see [`Device::ioctl`]).
    pub fn dqbuf(&self) -> Result<v4l2_buffer, Errno> {
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, 0);
        self.ioctl(VIDIOC_DQBUF, &mut b)?;
        Ok(b)
    }

    /// `VIDIOC_STREAMON` of `type_`.
    pub fn streamon_type(&self, type_: u32) -> Result<(), Errno> {
        let mut t = type_ as libc::c_int;
        self.ioctl(VIDIOC_STREAMON, &mut t)
    }

    /// `VIDIOC_STREAMOFF` of `type_`.
    pub fn streamoff_type(&self, type_: u32) -> Result<(), Errno> {
        let mut t = type_ as libc::c_int;
        self.ioctl(VIDIOC_STREAMOFF, &mut t)
    }

    /// `VIDIOC_STREAMON` of the video capture type.
    pub fn streamon(&self) -> Result<(), Errno> {
        self.streamon_type(V4L2_BUF_TYPE_VIDEO_CAPTURE)
    }

    /// `VIDIOC_STREAMOFF` of the video capture type.
    pub fn streamoff(&self) -> Result<(), Errno> {
        self.streamoff_type(V4L2_BUF_TYPE_VIDEO_CAPTURE)
    }

    /// `VIDIOC_CREATE_BUFS` of `count` MMAP buffers for `format`; returns the driver's answer.
    pub fn create_bufs(
        &self,
        count: u32,
        memory: u32,
        format: &v4l2_format,
    ) -> Result<v4l2_create_buffers, Errno> {
        let mut cb: v4l2_create_buffers = zeroed();
        cb.count = count;
        cb.memory = memory;
        cb.format = *format;
        self.ioctl(VIDIOC_CREATE_BUFS, &mut cb)?;
        Ok(cb)
    }

    /// `VIDIOC_REMOVE_BUFS` of buffers `index..index + count` of `type_`.
    pub fn remove_bufs(&self, index: u32, count: u32, type_: u32) -> Result<(), Errno> {
        let mut rb: v4l2_remove_buffers = zeroed();
        rb.index = index;
        rb.count = count;
        rb.type_ = type_;
        self.ioctl(VIDIOC_REMOVE_BUFS, &mut rb)
    }

    /// `VIDIOC_G_CTRL`.
    pub fn g_ctrl(&self, id: u32) -> Result<i32, Errno> {
        let mut c = v4l2_control { id, value: 0 };
        self.ioctl(VIDIOC_G_CTRL, &mut c)?;
        Ok(c.value)
    }

    /// `VIDIOC_S_CTRL`; returns the value the driver wrote back.
    pub fn s_ctrl(&self, id: u32, value: i32) -> Result<i32, Errno> {
        let mut c = v4l2_control { id, value };
        self.ioctl(VIDIOC_S_CTRL, &mut c)?;
        Ok(c.value)
    }

    /// `VIDIOC_QUERYCTRL`.
    pub fn queryctrl(&self, id: u32) -> Result<v4l2_queryctrl, Errno> {
        let mut q: v4l2_queryctrl = zeroed();
        q.id = id;
        self.ioctl(VIDIOC_QUERYCTRL, &mut q)?;
        Ok(q)
    }

    /// `VIDIOC_QUERYMENU`.
    pub fn querymenu(&self, id: u32, index: u32) -> Result<v4l2_querymenu, Errno> {
        let mut q: v4l2_querymenu = zeroed();
        q.id = id;
        q.index = index;
        self.ioctl(VIDIOC_QUERYMENU, &mut q)?;
        Ok(q)
    }

    /// `read()` of up to `buf.len()` bytes into `buf` (read I/O); returns how many were read.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let r = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(Errno::last());
        }
        Ok(r as usize)
    }

    /// `read()` of `len` bytes into the raw address `addr` (which may be invalid: the kernel
    /// checks it); returns how many were read.
    pub fn read_raw(&self, addr: usize, len: usize) -> Result<usize, Errno> {
        // SAFETY: the kernel checks the user address; nothing on this side uses it.
        let r = unsafe { libc::read(self.fd, addr as *mut libc::c_void, len) };
        if r < 0 {
            return Err(Errno::last());
        }
        Ok(r as usize)
    }

    /// `poll()` of this fd for `events`, waiting up to `timeout_ms` (restarted on EINTR with
    /// the full timeout); returns `revents` (0 on timeout).
    pub fn poll(&self, events: i16, timeout_ms: i32) -> Result<i16, Errno> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if r >= 0 {
                return Ok(pfd.revents);
            }
            let e = Errno::last();
            if e.0 != libc::EINTR {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: we own `fd` and close it exactly once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// A `mmap()`ed region of a device's buffer; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    pub fn new(
        fd: &impl AsRawFd,
        offset: u32,
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> Result<Self, Errno> {
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address); checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags,
                fd.as_raw_fd(),
                libc::off_t::from(offset),
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// A `MAP_SHARED`, `PROT_READ | PROT_WRITE` mapping (what V4L2 MMAP streaming uses).
    pub fn shared(fd: &impl AsRawFd, offset: u32, len: usize) -> Result<Self, Errno> {
        Self::new(
            fd,
            offset,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
    }

    /// The mapping's size in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// The mapped bytes. Only meaningful while userspace owns the buffer (dequeued): the
    /// device writes into it while it is queued.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` stays mapped until drop; u8 has no invalid values.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapped bytes, mutably (the mapping must have been made with `PROT_WRITE`).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes this the only Rust view of the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and unmap it exactly once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// `CLOCK_MONOTONIC` now.
pub fn monotonic_now() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A `v4l2_buffer` timestamp as a duration since the clock's epoch (`None` if negative or
/// `tv_usec` is out of range).
pub fn timeval_duration(tv: &v4l2_timeval) -> Option<std::time::Duration> {
    let sec = u64::try_from(tv.tv_sec).ok()?;
    let usec = u32::try_from(tv.tv_usec).ok().filter(|&u| u < 1_000_000)?;
    Some(std::time::Duration::new(sec, usec * 1000))
}
