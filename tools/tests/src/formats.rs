//! Format, frame size/interval, streaming parameter, input and control tests, and the guard
//! that puts rvivid's device-wide settings back to their defaults after a test.

use std::path::PathBuf;

use crate::frame::{FrameFormat, FORMATS, MAX_HEIGHT, MAX_WIDTH, MIN_HEIGHT, MIN_WIDTH, SIZE_STEP};
use crate::harness::{Ctx, TestResult};
use crate::v4l2::*;
use crate::{ensure, expect_errno, ok, open_rvivid};

/// The default format: 640x480 YUYV.
pub const DEFAULT_WIDTH: u32 = 640;
pub const DEFAULT_HEIGHT: u32 = 480;
pub const DEFAULT_FOURCC: u32 = V4L2_PIX_FMT_YUYV;

/// Every control rvivid has and its default value (the button has none).
pub const DEFAULT_CONTROLS: [(u32, i32); 10] = [
    (V4L2_CID_BRIGHTNESS, 128),
    (V4L2_CID_CONTRAST, 128),
    (V4L2_CID_SATURATION, 128),
    (V4L2_CID_HUE, 0),
    (V4L2_CID_TEST_PATTERN, 0),
    (RVIVID_CID_FAIL_NEXT_BUFFERS, 0),
    (RVIVID_CID_FAIL_START_STREAMING, 0),
    (RVIVID_CID_HOLD_MS, 0),
    (RVIVID_CID_UNORDERED, 0),
    (RVIVID_CID_MARK_LAST, 0),
];

/// The frame intervals rvivid offers, slowest first, in `VIDIOC_ENUM_FRAMEINTERVALS` order; a
/// frame size offers the first ones of them ([`intervals_for`]).
pub const INTERVALS: [(u32, u32); 7] = [
    (1, 15),
    (1, 25),
    (1, 30),
    (1, 40),
    (1, 50),
    (1, 60),
    (1, 120),
];

/// The intervals a frame `height` lines high offers: up to 120 fps up to 240 lines, up to
/// 30 fps above.
pub fn intervals_for(height: u32) -> &'static [(u32, u32)] {
    if height <= 240 {
        &INTERVALS
    } else {
        &INTERVALS[..3]
    }
}

/// The test pattern menu.
pub const TEST_PATTERNS: [&str; 7] = [
    "75% Colorbar",
    "Solid White",
    "Solid Red",
    "Solid Green",
    "Solid Blue",
    "Solid Black",
    "Checkerboard",
];

/// Puts rvivid's device-wide settings (format, frame interval, input, controls) back to their
/// defaults when dropped, through a fresh file descriptor. Create it first in a test (so it is
/// dropped last, after the test's own descriptors are closed and its buffers freed).
pub struct RestoreDefaults {
    node: PathBuf,
}

impl RestoreDefaults {
    pub fn new(ctx: &Ctx) -> Result<Self, String> {
        Ok(RestoreDefaults {
            node: ctx.find_rvivid()?,
        })
    }
}

impl Drop for RestoreDefaults {
    fn drop(&mut self) {
        if let Ok(dev) = Device::open(&self.node) {
            restore_defaults(&dev);
        }
    }
}

/// Best effort: the default format, frame interval, input and control values.
pub fn restore_defaults(dev: &Device) {
    let _ = dev.set_pix(
        false,
        DEFAULT_FOURCC,
        DEFAULT_WIDTH,
        DEFAULT_HEIGHT,
        V4L2_FIELD_NONE,
    );
    let _ = s_parm(dev, 1, 30);
    let mut input: libc::c_int = 0;
    let _ = dev.ioctl(VIDIOC_S_INPUT, &mut input);
    for (id, value) in DEFAULT_CONTROLS {
        let _ = dev.s_ctrl(id, value);
    }
}

/// Sets the capture format and requires the driver to take it as is; returns its layout.
pub fn set_format(
    dev: &Device,
    fourcc: u32,
    width: u32,
    height: u32,
) -> Result<FrameFormat, String> {
    let what = format!("VIDIOC_S_FMT {} {width}x{height}", fourcc_str(fourcc));
    let f = ok(
        &what,
        dev.set_pix(false, fourcc, width, height, V4L2_FIELD_NONE),
    )?;
    let p = f.pix();
    ensure(
        p.pixelformat == fourcc && p.width == width && p.height == height,
        || {
            format!(
                "{what}: the driver made it {} {}x{}",
                fourcc_str(p.pixelformat),
                p.width,
                p.height
            )
        },
    )?;
    check_pix(&what, p)?;
    Ok(FrameFormat::from_pix(p))
}

/// Checks the fields of a format rvivid returned that follow from its pixel format and size:
/// bytesperline and sizeimage minimal, field NONE, colorspace sRGB.
fn check_pix(what: &str, p: &v4l2_pix_format) -> TestResult {
    let want = FrameFormat::packed(p.pixelformat, p.width, p.height).ok_or_else(|| {
        format!(
            "{what}: pixelformat {} is not one of rvivid's",
            fourcc_str(p.pixelformat)
        )
    })?;
    ensure(
        p.bytesperline == want.bytesperline && p.sizeimage == want.sizeimage,
        || {
            format!(
                "{what}: bytesperline {} sizeimage {}, want {} and {} for {}",
                p.bytesperline,
                p.sizeimage,
                want.bytesperline,
                want.sizeimage,
                want.describe()
            )
        },
    )?;
    ensure(p.field == V4L2_FIELD_NONE, || {
        format!("{what}: field {}, want V4L2_FIELD_NONE (1)", p.field)
    })?;
    ensure(p.colorspace == V4L2_COLORSPACE_SRGB, || {
        format!(
            "{what}: colorspace {}, want V4L2_COLORSPACE_SRGB (8)",
            p.colorspace
        )
    })
}

/// `VIDIOC_S_PARM` of the capture frame interval `numerator/denominator`; returns the result.
pub fn s_parm(dev: &Device, numerator: u32, denominator: u32) -> Result<v4l2_streamparm, Errno> {
    let mut p = v4l2_streamparm::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
    p.capture_mut().timeperframe = v4l2_fract {
        numerator,
        denominator,
    };
    dev.ioctl(VIDIOC_S_PARM, &mut p)?;
    Ok(p)
}

/// `VIDIOC_G_PARM` of the capture type.
pub fn g_parm(dev: &Device) -> Result<v4l2_streamparm, Errno> {
    let mut p = v4l2_streamparm::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
    dev.ioctl(VIDIOC_G_PARM, &mut p)?;
    Ok(p)
}

/// Whether two fractions are equal in value (and have non-zero denominators).
fn same_fraction(a: v4l2_fract, b: (u32, u32)) -> bool {
    a.denominator != 0
        && b.1 != 0
        && u64::from(a.numerator) * u64::from(b.1) == u64::from(b.0) * u64::from(a.denominator)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// VIDIOC_ENUM_FMT lists YUYV, RGB3, NV12, GREY in that order, then EINVAL; wrong type EINVAL.
pub fn enum_fmt_lists_formats(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let enum_fmt = |index: u32, type_: u32| {
        let mut d: v4l2_fmtdesc = zeroed();
        d.index = index;
        d.type_ = type_;
        dev.ioctl(VIDIOC_ENUM_FMT, &mut d).map(|()| d)
    };
    for (i, &want) in FORMATS.iter().enumerate() {
        let what = format!("VIDIOC_ENUM_FMT index {i}");
        let d = ok(&what, enum_fmt(i as u32, V4L2_BUF_TYPE_VIDEO_CAPTURE))?;
        ensure(d.pixelformat == want, || {
            format!(
                "{what}: pixelformat {}, want {}",
                fourcc_str(d.pixelformat),
                fourcc_str(want)
            )
        })?;
        ensure(
            d.index == i as u32 && d.type_ == V4L2_BUF_TYPE_VIDEO_CAPTURE,
            || format!("{what}: index/type changed to {}/{}", d.index, d.type_),
        )?;
        ensure(d.flags & V4L2_FMT_FLAG_COMPRESSED == 0, || {
            format!("{what}: flags {:#x} say compressed", d.flags)
        })?;
        ensure(c_str(&d.description).is_some_and(|s| !s.is_empty()), || {
            format!(
                "{what}: empty or unterminated description {:?}",
                d.description
            )
        })?;
    }
    for index in [FORMATS.len() as u32, 100, u32::MAX] {
        expect_errno(
            format!("VIDIOC_ENUM_FMT index {index}"),
            enum_fmt(index, V4L2_BUF_TYPE_VIDEO_CAPTURE),
            libc::EINVAL,
        )?;
    }
    expect_errno(
        "VIDIOC_ENUM_FMT type VIDEO_OUTPUT",
        enum_fmt(0, V4L2_BUF_TYPE_VIDEO_OUTPUT),
        libc::EINVAL,
    )
}

/// VIDIOC_G_FMT after load: 640x480 YUYV, field NONE, sRGB, minimal bytesperline/sizeimage.
pub fn g_fmt_default(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let p = f.pix();
    ensure(
        p.pixelformat == DEFAULT_FOURCC && p.width == DEFAULT_WIDTH && p.height == DEFAULT_HEIGHT,
        || {
            format!(
                "VIDIOC_G_FMT: {} {}x{}, want YUYV 640x480 (the default)",
                fourcc_str(p.pixelformat),
                p.width,
                p.height
            )
        },
    )?;
    check_pix("VIDIOC_G_FMT", p)?;
    let mut out = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_OUTPUT);
    expect_errno(
        "VIDIOC_G_FMT type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_G_FMT, &mut out),
        libc::EINVAL,
    )
}

/// VIDIOC_TRY_FMT clamps sizes to 16x16..1920x1080, rounds odd ones to even, maps unknown
/// fourccs to YUYV and fields to NONE, does not change the format; wrong type EINVAL.
pub fn try_fmt_clamps_and_rounds(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let before = ok("VIDIOC_G_FMT", dev.g_fmt())?;

    // (asked width, height) -> acceptable widths, heights.
    type Case = ((u32, u32), &'static [u32], &'static [u32]);
    let cases: &[Case] = &[
        ((0, 0), &[MIN_WIDTH], &[MIN_HEIGHT]),
        ((1, 1), &[MIN_WIDTH], &[MIN_HEIGHT]),
        ((10_000, 10_000), &[MAX_WIDTH], &[MAX_HEIGHT]),
        ((u32::MAX, u32::MAX), &[MAX_WIDTH], &[MAX_HEIGHT]),
        ((MAX_WIDTH, MAX_HEIGHT), &[MAX_WIDTH], &[MAX_HEIGHT]),
        ((MIN_WIDTH, MIN_HEIGHT), &[MIN_WIDTH], &[MIN_HEIGHT]),
        ((322, 242), &[322], &[242]),
        ((1280, 720), &[1280], &[720]),
        // Odd: either neighbouring even value (the rounding direction is the driver's).
        ((641, 481), &[640, 642], &[480, 482]),
        ((17, 15), &[16, 18], &[16]),
        ((1921, 1081), &[MAX_WIDTH], &[MAX_HEIGHT]),
        ((1919, 1079), &[1918, 1920], &[1078, 1080]),
    ];
    for &fourcc in &FORMATS {
        for &((w, h), ws, hs) in cases {
            let what = format!("VIDIOC_TRY_FMT {} {w}x{h}", fourcc_str(fourcc));
            let f = ok(&what, dev.set_pix(true, fourcc, w, h, V4L2_FIELD_ANY))?;
            let p = f.pix();
            ensure(p.pixelformat == fourcc, || {
                format!("{what}: pixelformat became {}", fourcc_str(p.pixelformat))
            })?;
            ensure(ws.contains(&p.width) && hs.contains(&p.height), || {
                format!(
                    "{what}: got {}x{}, want width in {ws:?} and height in {hs:?}",
                    p.width, p.height
                )
            })?;
            ensure(
                p.width % SIZE_STEP == 0 && p.height % SIZE_STEP == 0,
                || format!("{what}: got odd size {}x{}", p.width, p.height),
            )?;
            check_pix(&what, p)?;
        }
    }

    for unknown in [fourcc(b"ABCD"), 0] {
        let what = format!("VIDIOC_TRY_FMT unknown pixelformat {:#010x}", unknown);
        let f = ok(&what, dev.set_pix(true, unknown, 320, 240, V4L2_FIELD_NONE))?;
        let p = f.pix();
        ensure(
            p.pixelformat == DEFAULT_FOURCC && p.width == 320 && p.height == 240,
            || {
                format!(
                    "{what}: got {} {}x{}, want YUYV 320x240",
                    fourcc_str(p.pixelformat),
                    p.width,
                    p.height
                )
            },
        )?;
        check_pix(&what, p)?;
    }

    for (field, name) in [
        (V4L2_FIELD_INTERLACED, "INTERLACED"),
        (V4L2_FIELD_TOP, "TOP"),
    ] {
        let what = format!("VIDIOC_TRY_FMT YUYV 640x480 field {name}");
        let f = ok(&what, dev.set_pix(true, V4L2_PIX_FMT_YUYV, 640, 480, field))?;
        check_pix(&what, f.pix())?;
    }

    for (type_, name) in [
        (V4L2_BUF_TYPE_VIDEO_OUTPUT, "VIDEO_OUTPUT"),
        (V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, "VIDEO_CAPTURE_MPLANE"),
    ] {
        let mut f = v4l2_format::new(type_);
        f.pix_mut().pixelformat = V4L2_PIX_FMT_YUYV;
        f.pix_mut().width = 640;
        f.pix_mut().height = 480;
        expect_errno(
            format!("VIDIOC_TRY_FMT type {name}"),
            dev.ioctl(VIDIOC_TRY_FMT, &mut f),
            libc::EINVAL,
        )?;
    }

    let after = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    ensure(
        FrameFormat::from_pix(after.pix()) == FrameFormat::from_pix(before.pix()),
        || {
            format!(
                "VIDIOC_TRY_FMT changed the format from {:?} to {:?}",
                before.pix(),
                after.pix()
            )
        },
    )
}

/// VIDIOC_S_FMT of each format at several sizes is taken as is and VIDIOC_G_FMT returns it;
/// S_FMT clamps like TRY_FMT; wrong type EINVAL.
pub fn s_fmt_round_trip(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    for &fourcc in &FORMATS {
        for (w, h) in [(320, 240), (1280, 720), (16, 16), (1920, 1080), (640, 480)] {
            let set = set_format(&dev, fourcc, w, h)?;
            let g = ok("VIDIOC_G_FMT", dev.g_fmt())?;
            let got = FrameFormat::from_pix(g.pix());
            ensure(got == set, || {
                format!(
                    "VIDIOC_G_FMT after S_FMT {}: {got:?}, want {set:?}",
                    set.describe()
                )
            })?;
            check_pix("VIDIOC_G_FMT", g.pix())?;
        }
    }
    let what = "VIDIOC_S_FMT GREY 5000x3";
    let f = ok(
        what,
        dev.set_pix(false, V4L2_PIX_FMT_GREY, 5000, 3, V4L2_FIELD_ANY),
    )?;
    ensure(
        f.pix().width == MAX_WIDTH && f.pix().height == MIN_HEIGHT,
        || {
            format!(
                "{what}: got {}x{}, want 1920x16",
                f.pix().width,
                f.pix().height
            )
        },
    )?;
    let g = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    ensure(
        FrameFormat::from_pix(g.pix()) == FrameFormat::from_pix(f.pix()),
        || format!("VIDIOC_G_FMT after {what}: {:?}", g.pix()),
    )?;
    let mut out = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_OUTPUT);
    out.pix_mut().pixelformat = V4L2_PIX_FMT_YUYV;
    expect_errno(
        "VIDIOC_S_FMT type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_S_FMT, &mut out),
        libc::EINVAL,
    )
}

/// VIDIOC_S_FMT returns EBUSY on any fd while buffers are allocated (TRY_FMT and G_FMT still
/// work) and succeeds again after REQBUFS(0).
pub fn s_fmt_busy_with_buffers(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let owner = open_rvivid(ctx)?;
    let other = open_rvivid(ctx)?;
    set_format(&owner, V4L2_PIX_FMT_YUYV, 640, 480)?;
    let rb = ok("VIDIOC_REQBUFS(2)", owner.reqbufs(2))?;
    ensure(rb.count >= 1, || {
        "VIDIOC_REQBUFS(2) allocated no buffer".into()
    })?;

    let result = (|| -> TestResult {
        for (dev, who) in [(&owner, "the owner"), (&other, "another fd")] {
            expect_errno(
                format!("VIDIOC_S_FMT RGB3 320x240 by {who} while buffers are allocated"),
                dev.set_pix(false, V4L2_PIX_FMT_RGB24, 320, 240, V4L2_FIELD_NONE),
                libc::EBUSY,
            )?;
            ok(
                format!("VIDIOC_TRY_FMT by {who} while buffers are allocated"),
                dev.set_pix(true, V4L2_PIX_FMT_RGB24, 320, 240, V4L2_FIELD_NONE),
            )?;
            let g = ok(format!("VIDIOC_G_FMT by {who}"), dev.g_fmt())?;
            ensure(
                g.pix().pixelformat == V4L2_PIX_FMT_YUYV && g.pix().width == 640,
                || format!("the format changed while busy: {:?}", g.pix()),
            )?;
        }
        Ok(())
    })();
    let freed = ok("VIDIOC_REQBUFS(0)", owner.reqbufs(0));
    result?;
    freed?;
    set_format(&owner, V4L2_PIX_FMT_RGB24, 320, 240)
        .map_err(|e| format!("after REQBUFS(0): {e}"))?;
    set_format(&other, V4L2_PIX_FMT_YUYV, 640, 480)
        .map_err(|e| format!("after REQBUFS(0), by another fd: {e}"))?;
    Ok(())
}

/// VIDIOC_ENUM_FRAMESIZES: one STEPWISE 16x16..1920x1080 step 2 entry per format, then EINVAL.
pub fn enum_framesizes_stepwise(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let enum_sizes = |fourcc: u32, index: u32| {
        let mut s: v4l2_frmsizeenum = zeroed();
        s.index = index;
        s.pixel_format = fourcc;
        dev.ioctl(VIDIOC_ENUM_FRAMESIZES, &mut s).map(|()| s)
    };
    for &fourcc in &FORMATS {
        let what = format!("VIDIOC_ENUM_FRAMESIZES {} index 0", fourcc_str(fourcc));
        let s = ok(&what, enum_sizes(fourcc, 0))?;
        ensure(s.type_ == V4L2_FRMSIZE_TYPE_STEPWISE, || {
            format!("{what}: type {}, want STEPWISE (3)", s.type_)
        })?;
        let want = v4l2_frmsize_stepwise {
            min_width: MIN_WIDTH,
            max_width: MAX_WIDTH,
            step_width: SIZE_STEP,
            min_height: MIN_HEIGHT,
            max_height: MAX_HEIGHT,
            step_height: SIZE_STEP,
        };
        ensure(s.stepwise() == want, || {
            format!("{what}: {:?}, want {want:?}", s.stepwise())
        })?;
        for index in [1, 2, u32::MAX] {
            expect_errno(
                format!(
                    "VIDIOC_ENUM_FRAMESIZES {} index {index}",
                    fourcc_str(fourcc)
                ),
                enum_sizes(fourcc, index),
                libc::EINVAL,
            )?;
        }
    }
    Ok(())
}

/// VIDIOC_ENUM_FRAMEINTERVALS: for each format, at sizes up to 240 lines and above, the
/// discrete intervals of that size (1/15 up to 1/120 or 1/30), then EINVAL.
pub fn enum_frameintervals_discrete(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let enum_ivals = |fourcc: u32, w: u32, h: u32, index: u32| {
        let mut e: v4l2_frmivalenum = zeroed();
        e.index = index;
        e.pixel_format = fourcc;
        e.width = w;
        e.height = h;
        dev.ioctl(VIDIOC_ENUM_FRAMEINTERVALS, &mut e).map(|()| e)
    };
    for &fourcc in &FORMATS {
        for (w, h) in [(64, 48), (320, 240), (320, 242), (640, 480), (1920, 1080)] {
            let at = format!("{} {w}x{h}", fourcc_str(fourcc));
            let offered = intervals_for(h);
            for (i, &(n, d)) in offered.iter().enumerate() {
                let what = format!("VIDIOC_ENUM_FRAMEINTERVALS {at} index {i}");
                let e = ok(&what, enum_ivals(fourcc, w, h, i as u32))?;
                ensure(e.type_ == V4L2_FRMIVAL_TYPE_DISCRETE, || {
                    format!("{what}: type {}, want DISCRETE (1)", e.type_)
                })?;
                let got = e.discrete();
                ensure(got.numerator == n && got.denominator == d, || {
                    format!(
                        "{what}: {}/{}, want {n}/{d}",
                        got.numerator, got.denominator
                    )
                })?;
            }
            expect_errno(
                format!("VIDIOC_ENUM_FRAMEINTERVALS {at} index {}", offered.len()),
                enum_ivals(fourcc, w, h, offered.len() as u32),
                libc::EINVAL,
            )?;
        }
    }
    Ok(())
}

/// The frame rates follow the frame size: VIDIOC_S_PARM picks the nearest interval the current
/// size offers (up to 120 fps at 320x240, 30 at 640x480), and VIDIOC_S_FMT to a taller size
/// slows a rate it does not offer down to its fastest, which VIDIOC_G_PARM then reports.
pub fn frame_rates_follow_frame_size(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let expect_parm = |what: &str, want: (u32, u32)| {
        let t = ok("VIDIOC_G_PARM", g_parm(&dev))?.capture().timeperframe;
        ensure(same_fraction(t, want), || {
            format!(
                "VIDIOC_G_PARM {what}: {}/{}, want {}/{}",
                t.numerator, t.denominator, want.0, want.1
            )
        })
    };
    let s_parm_to = |size: &str, asked: (u32, u32), want: (u32, u32)| {
        let what = format!("VIDIOC_S_PARM {}/{} at {size}", asked.0, asked.1);
        let t = ok(&what, s_parm(&dev, asked.0, asked.1))?
            .capture()
            .timeperframe;
        ensure(same_fraction(t, want), || {
            format!(
                "{what}: got {}/{}, want {}/{}",
                t.numerator, t.denominator, want.0, want.1
            )
        })
    };
    set_format(&dev, DEFAULT_FOURCC, 320, 240)?;
    for (asked, want) in [
        ((1, 120), (1, 120)),
        ((1, 100), (1, 120)),
        ((1, 58), (1, 60)),
        ((1, 50), (1, 50)),
        ((1, 40), (1, 40)),
    ] {
        s_parm_to("320x240", asked, want)?;
    }
    s_parm_to("320x240", (1, 60), (1, 60))?;
    set_format(&dev, DEFAULT_FOURCC, 640, 480)?;
    expect_parm("after S_FMT 640x480 at 1/60", (1, 30))?;
    s_parm_to("640x480", (1, 120), (1, 30))?;
    s_parm_to("640x480", (1, 25), (1, 25))?;
    set_format(&dev, DEFAULT_FOURCC, 1920, 1080)?;
    expect_parm("after S_FMT 1920x1080 at 1/25", (1, 25))?;
    // Back to a small size: the rate stays what it was.
    set_format(&dev, DEFAULT_FOURCC, 320, 240)?;
    expect_parm("after S_FMT 320x240 at 1/25", (1, 25))
}

/// VIDIOC_G_PARM: TIMEPERFRAME capability, 1/30 by default; VIDIOC_S_PARM picks the nearest
/// supported interval and G_PARM then reports it; wrong type EINVAL.
pub fn g_s_parm_timeperframe(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let p = ok("VIDIOC_G_PARM", g_parm(&dev))?;
    let c = p.capture();
    ensure(c.capability & V4L2_CAP_TIMEPERFRAME != 0, || {
        format!(
            "VIDIOC_G_PARM: capability {:#x} lacks V4L2_CAP_TIMEPERFRAME",
            c.capability
        )
    })?;
    ensure(same_fraction(c.timeperframe, (1, 30)), || {
        format!(
            "VIDIOC_G_PARM: timeperframe {}/{}, want 1/30 (the default)",
            c.timeperframe.numerator, c.timeperframe.denominator
        )
    })?;

    // Asked -> nearest supported at 640x480 (unambiguous both as intervals and as frame
    // rates).
    let cases = [
        ((1, 25), (1, 25)),
        ((1, 15), (1, 15)),
        ((1, 30), (1, 30)),
        ((2, 50), (1, 25)),
        ((1, 60), (1, 30)),
        ((1, 1000), (1, 30)),
        ((1, 29), (1, 30)),
        ((1, 24), (1, 25)),
        ((1, 16), (1, 15)),
        ((1, 1), (1, 15)),
        ((5, 1), (1, 15)),
    ];
    for ((n, d), want) in cases {
        let what = format!("VIDIOC_S_PARM timeperframe {n}/{d}");
        let p = ok(&what, s_parm(&dev, n, d))?;
        let c = p.capture();
        ensure(same_fraction(c.timeperframe, want), || {
            format!(
                "{what}: got {}/{}, want {}/{}",
                c.timeperframe.numerator, c.timeperframe.denominator, want.0, want.1
            )
        })?;
        ensure(c.capability & V4L2_CAP_TIMEPERFRAME != 0, || {
            format!("{what}: capability {:#x} lacks TIMEPERFRAME", c.capability)
        })?;
        let g = ok("VIDIOC_G_PARM", g_parm(&dev))?;
        let t = g.capture().timeperframe;
        ensure(same_fraction(t, want), || {
            format!(
                "VIDIOC_G_PARM after {what}: {}/{}, want {}/{}",
                t.numerator, t.denominator, want.0, want.1
            )
        })?;
    }

    let mut out = v4l2_streamparm::new(V4L2_BUF_TYPE_VIDEO_OUTPUT);
    expect_errno(
        "VIDIOC_G_PARM type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_G_PARM, &mut out),
        libc::EINVAL,
    )?;
    let mut out = v4l2_streamparm::new(V4L2_BUF_TYPE_VIDEO_OUTPUT);
    expect_errno(
        "VIDIOC_S_PARM type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_S_PARM, &mut out),
        libc::EINVAL,
    )
}

/// VIDIOC_ENUMINPUT: one CAMERA input "Camera 0", index 1 EINVAL; G_INPUT 0; S_INPUT(0) works,
/// S_INPUT(1) EINVAL.
pub fn inputs_enum_g_s(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let enum_input = |index: u32| {
        let mut i: v4l2_input = zeroed();
        i.index = index;
        dev.ioctl(VIDIOC_ENUMINPUT, &mut i).map(|()| i)
    };
    let i = ok("VIDIOC_ENUMINPUT index 0", enum_input(0))?;
    ensure(c_str(&i.name) == Some(b"Camera 0"), || {
        format!(
            "VIDIOC_ENUMINPUT index 0: name {:?}, want \"Camera 0\"",
            c_str_lossy(&i.name)
        )
    })?;
    ensure(i.type_ == V4L2_INPUT_TYPE_CAMERA && i.index == 0, || {
        format!(
            "VIDIOC_ENUMINPUT index 0: type {} index {}, want CAMERA (2) and 0",
            i.type_, i.index
        )
    })?;
    for index in [1, u32::MAX] {
        expect_errno(
            format!("VIDIOC_ENUMINPUT index {index}"),
            enum_input(index),
            libc::EINVAL,
        )?;
    }

    let g_input = || {
        let mut n: libc::c_int = -1;
        dev.ioctl(VIDIOC_G_INPUT, &mut n).map(|()| n)
    };
    let n = ok("VIDIOC_G_INPUT", g_input())?;
    ensure(n == 0, || format!("VIDIOC_G_INPUT: {n}, want 0"))?;
    let mut zero: libc::c_int = 0;
    ok("VIDIOC_S_INPUT(0)", dev.ioctl(VIDIOC_S_INPUT, &mut zero))?;
    for bad in [1, -1] {
        let mut n: libc::c_int = bad;
        expect_errno(
            format!("VIDIOC_S_INPUT({bad})"),
            dev.ioctl(VIDIOC_S_INPUT, &mut n),
            libc::EINVAL,
        )?;
    }
    let n = ok("VIDIOC_G_INPUT", g_input())?;
    ensure(n == 0, || {
        format!("VIDIOC_G_INPUT after the failed S_INPUT: {n}, want 0")
    })
}

/// What [`controls_query`] expects of one control.
struct CtrlSpec {
    id: u32,
    label: &'static str,
    /// The standard name, where the control framework sets it.
    name: Option<&'static str>,
    type_: u32,
    range: Option<(i32, i32)>,
    default: Option<i32>,
}

const CONTROLS: [CtrlSpec; 10] = [
    CtrlSpec {
        id: V4L2_CID_BRIGHTNESS,
        label: "BRIGHTNESS",
        name: Some("Brightness"),
        type_: V4L2_CTRL_TYPE_INTEGER,
        range: Some((0, 255)),
        default: Some(128),
    },
    CtrlSpec {
        id: V4L2_CID_CONTRAST,
        label: "CONTRAST",
        name: Some("Contrast"),
        type_: V4L2_CTRL_TYPE_INTEGER,
        range: None,
        default: Some(128),
    },
    CtrlSpec {
        id: V4L2_CID_SATURATION,
        label: "SATURATION",
        name: Some("Saturation"),
        type_: V4L2_CTRL_TYPE_INTEGER,
        range: None,
        default: Some(128),
    },
    CtrlSpec {
        id: V4L2_CID_HUE,
        label: "HUE",
        name: Some("Hue"),
        type_: V4L2_CTRL_TYPE_INTEGER,
        range: Some((-128, 127)),
        default: Some(0),
    },
    CtrlSpec {
        id: V4L2_CID_TEST_PATTERN,
        label: "TEST_PATTERN",
        name: Some("Test Pattern"),
        type_: V4L2_CTRL_TYPE_MENU,
        range: Some((0, 6)),
        default: Some(0),
    },
    CtrlSpec {
        id: RVIVID_CID_FAIL_NEXT_BUFFERS,
        label: "RVIVID_CID_FAIL_NEXT_BUFFERS",
        name: None,
        type_: V4L2_CTRL_TYPE_INTEGER,
        range: Some((0, 32)),
        default: Some(0),
    },
    CtrlSpec {
        id: RVIVID_CID_FAIL_START_STREAMING,
        label: "RVIVID_CID_FAIL_START_STREAMING",
        name: None,
        type_: V4L2_CTRL_TYPE_BOOLEAN,
        range: Some((0, 1)),
        default: Some(0),
    },
    CtrlSpec {
        id: RVIVID_CID_HOLD_MS,
        label: "RVIVID_CID_HOLD_MS",
        name: None,
        type_: V4L2_CTRL_TYPE_INTEGER,
        range: Some((0, 10_000)),
        default: Some(0),
    },
    CtrlSpec {
        id: RVIVID_CID_UNORDERED,
        label: "RVIVID_CID_UNORDERED",
        name: None,
        type_: V4L2_CTRL_TYPE_BOOLEAN,
        range: Some((0, 1)),
        default: Some(0),
    },
    CtrlSpec {
        id: RVIVID_CID_MARK_LAST,
        label: "RVIVID_CID_MARK_LAST",
        name: None,
        type_: V4L2_CTRL_TYPE_BOOLEAN,
        range: Some((0, 1)),
        default: Some(0),
    },
];

/// VIDIOC_QUERYCTRL of every rvivid control: type, name, range, default, enabled; the button
/// is write-only; an unknown id is EINVAL.
pub fn controls_query(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    for c in &CONTROLS {
        let what = format!("VIDIOC_QUERYCTRL {} ({:#010x})", c.label, c.id);
        let q = ok(&what, dev.queryctrl(c.id))?;
        ensure(q.id == c.id, || format!("{what}: id came back {:#x}", q.id))?;
        ensure(q.type_ == c.type_, || {
            format!("{what}: type {}, want {}", q.type_, c.type_)
        })?;
        ensure(q.flags & V4L2_CTRL_FLAG_DISABLED == 0, || {
            format!("{what}: flags {:#x} say disabled", q.flags)
        })?;
        let name = c_str(&q.name).ok_or_else(|| format!("{what}: unterminated name"))?;
        ensure(!name.is_empty(), || format!("{what}: empty name"))?;
        if let Some(want) = c.name {
            ensure(name == want.as_bytes(), || {
                format!("{what}: name {:?}, want {want:?}", c_str_lossy(&q.name))
            })?;
        }
        if let Some((min, max)) = c.range {
            ensure(q.minimum == min && q.maximum == max, || {
                format!(
                    "{what}: range {}..{}, want {min}..{max}",
                    q.minimum, q.maximum
                )
            })?;
        }
        if let Some(def) = c.default {
            ensure(q.default_value == def, || {
                format!("{what}: default {}, want {def}", q.default_value)
            })?;
        }
        match c.type_ {
            V4L2_CTRL_TYPE_INTEGER | V4L2_CTRL_TYPE_BOOLEAN => {
                ensure(q.step >= 1, || format!("{what}: step {}", q.step))?;
                ensure(
                    q.minimum <= q.default_value && q.default_value <= q.maximum,
                    || {
                        format!(
                            "{what}: default {} outside {}..{}",
                            q.default_value, q.minimum, q.maximum
                        )
                    },
                )?;
            }
            V4L2_CTRL_TYPE_BUTTON => {
                ensure(q.flags & V4L2_CTRL_FLAG_WRITE_ONLY != 0, || {
                    format!("{what}: button flags {:#x} lack WRITE_ONLY", q.flags)
                })?;
            }
            _ => {}
        }
        // The value right now is the default (nothing else changed it).
        if let Some(def) = c.default {
            let v = ok(format!("VIDIOC_G_CTRL {}", c.label), dev.g_ctrl(c.id))?;
            ensure(v == def, || {
                format!("VIDIOC_G_CTRL {}: {v}, want the default {def}", c.label)
            })?;
        }
    }
    let unknown = RVIVID_CID_BASE + 0x50;
    expect_errno(
        format!("VIDIOC_QUERYCTRL unknown id {unknown:#010x}"),
        dev.queryctrl(unknown),
        libc::EINVAL,
    )
}

/// VIDIOC_S_CTRL/G_CTRL round trips for brightness, hue, the test pattern and rvivid's
/// integer/boolean controls; G_CTRL of the button is EACCES; unknown id EINVAL.
pub fn controls_set_get(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let cases: [(u32, &str, &[i32]); 5] = [
        (V4L2_CID_BRIGHTNESS, "BRIGHTNESS", &[200, 0, 255, 1, 128]),
        (V4L2_CID_HUE, "HUE", &[-100, 127, -128, 0]),
        (V4L2_CID_TEST_PATTERN, "TEST_PATTERN", &[6, 1, 0]),
        (RVIVID_CID_HOLD_MS, "RVIVID_CID_HOLD_MS", &[100, 10_000, 0]),
        (RVIVID_CID_UNORDERED, "RVIVID_CID_UNORDERED", &[1, 0]),
    ];
    for (id, label, values) in cases {
        for &v in values {
            ok(format!("VIDIOC_S_CTRL {label} = {v}"), dev.s_ctrl(id, v))?;
            let got = ok(format!("VIDIOC_G_CTRL {label}"), dev.g_ctrl(id))?;
            ensure(got == v, || {
                format!("VIDIOC_G_CTRL {label} after S_CTRL {v}: {got}")
            })?;
        }
    }
    // A second fd sees the same (device-wide) value.
    ok(
        "VIDIOC_S_CTRL BRIGHTNESS = 77",
        dev.s_ctrl(V4L2_CID_BRIGHTNESS, 77),
    )?;
    let other = open_rvivid(ctx)?;
    let got = ok(
        "VIDIOC_G_CTRL BRIGHTNESS",
        other.g_ctrl(V4L2_CID_BRIGHTNESS),
    )?;
    ensure(got == 77, || {
        format!("VIDIOC_G_CTRL BRIGHTNESS on another fd: {got}, want 77")
    })?;
    ok(
        "VIDIOC_S_CTRL BRIGHTNESS = 128",
        dev.s_ctrl(V4L2_CID_BRIGHTNESS, 128),
    )?;

    let fail_start = ok(
        "VIDIOC_G_CTRL of the boolean RVIVID_CID_FAIL_START_STREAMING",
        dev.g_ctrl(RVIVID_CID_FAIL_START_STREAMING),
    )?;
    ensure(fail_start == 0, || {
        format!("VIDIOC_G_CTRL RVIVID_CID_FAIL_START_STREAMING: {fail_start}, want 0")
    })?;
    let unknown = RVIVID_CID_BASE + 0x50;
    expect_errno(
        format!("VIDIOC_G_CTRL unknown id {unknown:#010x}"),
        dev.g_ctrl(unknown),
        libc::EINVAL,
    )?;
    expect_errno(
        format!("VIDIOC_S_CTRL unknown id {unknown:#010x}"),
        dev.s_ctrl(unknown, 1),
        libc::EINVAL,
    )
}

/// Out-of-range VIDIOC_S_CTRL: integer controls are clamped (0 returned, G_CTRL shows the
/// limit), a menu index past the end is ERANGE and leaves the value alone.
pub fn controls_out_of_range(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let cases = [
        (V4L2_CID_BRIGHTNESS, "BRIGHTNESS", 1000, 255),
        (V4L2_CID_BRIGHTNESS, "BRIGHTNESS", -5, 0),
        (V4L2_CID_HUE, "HUE", 500, 127),
        (V4L2_CID_HUE, "HUE", -500, -128),
        (
            RVIVID_CID_FAIL_NEXT_BUFFERS,
            "RVIVID_CID_FAIL_NEXT_BUFFERS",
            -1,
            0,
        ),
        (RVIVID_CID_HOLD_MS, "RVIVID_CID_HOLD_MS", 20_000, 10_000),
    ];
    for (id, label, value, clamped) in cases {
        let what = format!("VIDIOC_S_CTRL {label} = {value} (out of range)");
        ok(&what, dev.s_ctrl(id, value))
            .map_err(|e| format!("{e} (the control framework clamps integer controls)"))?;
        let got = ok(format!("VIDIOC_G_CTRL {label}"), dev.g_ctrl(id))?;
        ensure(got == clamped, || {
            format!("VIDIOC_G_CTRL {label} after {what}: {got}, want {clamped}")
        })?;
    }
    ok(
        "VIDIOC_S_CTRL HOLD_MS = 0",
        dev.s_ctrl(RVIVID_CID_HOLD_MS, 0),
    )?;

    ok(
        "VIDIOC_S_CTRL TEST_PATTERN = 2",
        dev.s_ctrl(V4L2_CID_TEST_PATTERN, 2),
    )?;
    for bad in [7, 100, -1] {
        expect_errno(
            format!("VIDIOC_S_CTRL TEST_PATTERN = {bad}"),
            dev.s_ctrl(V4L2_CID_TEST_PATTERN, bad),
            libc::ERANGE,
        )?;
    }
    let got = ok(
        "VIDIOC_G_CTRL TEST_PATTERN",
        dev.g_ctrl(V4L2_CID_TEST_PATTERN),
    )?;
    ensure(got == 2, || {
        format!("VIDIOC_G_CTRL TEST_PATTERN after the rejected sets: {got}, want 2")
    })
}

/// VIDIOC_QUERYMENU names the seven test patterns; index 7 and a non-menu control are EINVAL.
pub fn test_pattern_menu(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    for (i, want) in TEST_PATTERNS.iter().enumerate() {
        let what = format!("VIDIOC_QUERYMENU TEST_PATTERN index {i}");
        let m = ok(&what, dev.querymenu(V4L2_CID_TEST_PATTERN, i as u32))?;
        let (id, index) = (m.id, m.index);
        ensure(id == V4L2_CID_TEST_PATTERN && index == i as u32, || {
            format!("{what}: id/index came back {id:#x}/{index}")
        })?;
        ensure(c_str(&m.name) == Some(want.as_bytes()), || {
            format!("{what}: {:?}, want {want:?}", c_str_lossy(&m.name))
        })?;
    }
    expect_errno(
        "VIDIOC_QUERYMENU TEST_PATTERN index 7",
        dev.querymenu(V4L2_CID_TEST_PATTERN, TEST_PATTERNS.len() as u32),
        libc::EINVAL,
    )?;
    expect_errno(
        "VIDIOC_QUERYMENU of the integer control BRIGHTNESS",
        dev.querymenu(V4L2_CID_BRIGHTNESS, 0),
        libc::EINVAL,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions() {
        let f = |n, d| v4l2_fract {
            numerator: n,
            denominator: d,
        };
        assert!(same_fraction(f(2, 50), (1, 25)));
        assert!(!same_fraction(f(1, 30), (1, 25)));
        assert!(!same_fraction(f(0, 0), (0, 0)));
    }

    #[test]
    fn defaults_cover_every_valued_control() {
        for c in &CONTROLS {
            match c.default {
                Some(d) => assert!(DEFAULT_CONTROLS.contains(&(c.id, d)), "{}", c.label),
                None => assert_eq!(c.type_, V4L2_CTRL_TYPE_BUTTON),
            }
        }
        assert_eq!(TEST_PATTERNS.len(), 7);
    }
}
