// SPDX-License-Identifier: GPL-2.0

//! Test pattern generator of the rvivid driver.
//!
//! [`Tpg`] paints one frame of a test pattern (75% colour bars, solid colours or a
//! checkerboard) into a capture buffer in one of the [`PixelFormat`]s rvivid offers, with two
//! overlays that make consecutive frames differ: the frame number in decimal at the top left
//! and a white square moving along the bottom.
//!
//! The generator uses only `core`: no allocation, no floating point and no `unsafe`. It never
//! panics, whatever the format and buffer it is given; a buffer too small for the format is an
//! error. All colours are converted to the target format once, in [`Tpg::new`]; [`Tpg::fill`]
//! renders the first line of each kind (one for bars and solid colours, two for the
//! checkerboard), copies it to the other lines and then draws the overlays, so the cost per
//! frame is little more than a `memcpy` of the image. [`Tpg::fill_over`] does less when the
//! buffer still holds an earlier frame of the same generator: it paints the pattern back over
//! that frame's overlays and draws the new ones, writing only what differs between the two.
//!
//! Colours are defined in quarter code values (0..=1020 for 0..=255), so that 75% amplitude
//! is exact (765 = 191.25 code values): R'G'B' output rounds them to 191 (0xBF), and the BT.601
//! limited-range conversion gives the standard 75% bar values (white Y 180, yellow Y 162, ...).
//!
//! Geometry, for a frame of `width` x `height` pixels:
//!
//! - the bars, solid colours and checkerboard cover the whole frame;
//! - the frame counter is drawn in the top `height / 8` lines, at least 8 pixels from the
//!   top and left edges (skipped when the frame is too small for it);
//! - the moving box (side `height / 8`, at least 2; white, black on the solid white pattern)
//!   lies in the bottom `side` lines.
//!
//! So for any `height >= 8` the lines `height / 4 .. 3 * height / 4` show the pattern alone.

use core::ffi::CStr;

/// Pixel formats the generator can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PixelFormat {
    /// `V4L2_PIX_FMT_YUYV`: packed 4:2:2 Y'CbCr, bytes `Y0 U Y1 V` for each pair of pixels.
    Yuyv,
    /// `V4L2_PIX_FMT_RGB24` (`RGB3`): packed R'G'B', bytes `R G B` for each pixel.
    Rgb24,
    /// `V4L2_PIX_FMT_NV12`, single-planar: a Y plane of `height` lines followed by an
    /// interleaved CbCr plane (`U V` for each 2x2 block of pixels) of `height / 2` lines, both
    /// with the same `bytesperline`.
    Nv12,
    /// `V4L2_PIX_FMT_GREY`: 8-bit luma (the Y of the other formats) only.
    Grey,
}

/// The layout of a frame: format, size and line pitch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameFormat {
    /// The pixel format.
    pub(crate) pixfmt: PixelFormat,
    /// Width in pixels (even for [`PixelFormat::Yuyv`] and [`PixelFormat::Nv12`]).
    pub(crate) width: u32,
    /// Height in lines (even for [`PixelFormat::Nv12`]).
    pub(crate) height: u32,
    /// Bytes from the start of one line to the next, at least
    /// [`FrameFormat::min_bytesperline`]; the bytes past the image in each line are padding
    /// the generator does not touch.
    pub(crate) bytesperline: u32,
}

impl FrameFormat {
    /// Minimum `bytesperline` for `pixfmt` at `width` pixels: YUYV `2 * width`, RGB24
    /// `3 * width`, GREY and NV12 `width` (saturating at `u32::MAX`).
    pub(crate) fn min_bytesperline(pixfmt: PixelFormat, width: u32) -> u32 {
        match pixfmt {
            PixelFormat::Yuyv => width.saturating_mul(2),
            PixelFormat::Rgb24 => width.saturating_mul(3),
            PixelFormat::Nv12 | PixelFormat::Grey => width,
        }
    }

    /// Image size in bytes for this format: `bytesperline * height`, times 3/2 for NV12
    /// (saturating at `u32::MAX`). [`Tpg::fill`] needs a buffer at least this large.
    pub(crate) fn sizeimage(&self) -> u32 {
        let plane = u64::from(self.bytesperline).saturating_mul(u64::from(self.height));
        let size = match self.pixfmt {
            PixelFormat::Nv12 => plane.saturating_add(plane >> 1),
            PixelFormat::Yuyv | PixelFormat::Rgb24 | PixelFormat::Grey => plane,
        };
        u32::try_from(size).unwrap_or(u32::MAX)
    }
}

/// The test patterns, in the order of the `V4L2_CID_TEST_PATTERN` menu ([`PATTERN_NAMES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// Eight vertical bars at 75% amplitude: white, yellow, cyan, green, magenta, red, blue,
    /// black.
    ColorBars75,
    /// 100% white.
    SolidWhite,
    /// 100% red.
    SolidRed,
    /// 100% green.
    SolidGreen,
    /// 100% blue.
    SolidBlue,
    /// Black.
    SolidBlack,
    /// 16x16-pixel squares alternating 75% white and black, white at the top left.
    Checkerboard,
}

/// Menu entries of `V4L2_CID_TEST_PATTERN`, in the order of [`Pattern`].
pub(crate) const PATTERN_NAMES: [&CStr; 7] = [
    c"75% Colorbar",
    c"Solid White",
    c"Solid Red",
    c"Solid Green",
    c"Solid Blue",
    c"Solid Black",
    c"Checkerboard",
];

impl Pattern {
    /// The pattern at `index` in [`PATTERN_NAMES`] (the value of `V4L2_CID_TEST_PATTERN`), or
    /// `None` if `index` is out of range.
    pub(crate) fn from_index(index: u32) -> Option<Pattern> {
        match index {
            0 => Some(Pattern::ColorBars75),
            1 => Some(Pattern::SolidWhite),
            2 => Some(Pattern::SolidRed),
            3 => Some(Pattern::SolidGreen),
            4 => Some(Pattern::SolidBlue),
            5 => Some(Pattern::SolidBlack),
            6 => Some(Pattern::Checkerboard),
            _ => None,
        }
    }
}

/// Picture adjustments, with the ranges and defaults of the V4L2 user controls. Values out of
/// range are clamped by [`Tpg::new`]. The defaults ([`Adjust::default`]) leave the picture
/// exactly unchanged.
///
/// For the Y'CbCr formats (and GREY): `Y' = (Y - 16) * contrast / 128 + (brightness - 128) +
/// 16`; `(U - 128, V - 128)` rotated by `hue` and scaled by `saturation / 128`. For RGB24:
/// hue and saturation are applied the same way through a full-range BT.601 colour-difference
/// representation (only when they are not the defaults), then each component becomes
/// `C * contrast / 128 + (brightness - 128)`. Results are rounded and clamped to 0..=255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Adjust {
    /// Brightness, 0..=255, default 128 (no change); adds `brightness - 128` to the luma.
    pub(crate) brightness: i32,
    /// Contrast, 0..=255, default 128 (x1.0); gain `contrast / 128` on the luma.
    pub(crate) contrast: i32,
    /// Saturation, 0..=255, default 128 (x1.0); gain `saturation / 128` on the chroma.
    pub(crate) saturation: i32,
    /// Hue, -128..=127, default 0, in units of 1/256 turn (64 = 90 degrees): rotation of
    /// `(U, V)`, counterclockwise (`U' = U cos - V sin`, `V' = U sin + V cos`).
    pub(crate) hue: i32,
}

impl Default for Adjust {
    fn default() -> Self {
        Adjust {
            brightness: 128,
            contrast: 128,
            saturation: 128,
            hue: 0,
        }
    }
}

impl Adjust {
    /// The same adjustments, each clamped to its range.
    fn clamped(self) -> Adjust {
        Adjust {
            brightness: self.brightness.clamp(0, 255),
            contrast: self.contrast.clamp(0, 255),
            saturation: self.saturation.clamp(0, 255),
            hue: self.hue.clamp(-128, 127),
        }
    }
}

/// Why [`Tpg::fill`] could not fill a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TpgError {
    /// The format is unusable: zero width or height, `bytesperline` below
    /// [`FrameFormat::min_bytesperline`], or a size that does not fit in memory.
    BadFormat,
    /// The buffer is shorter than [`FrameFormat::sizeimage`].
    BufferTooSmall,
}

/// A colour in R'G'B', each component in quarter code values (0..=1020 stands for 0..=255).
#[derive(Clone, Copy)]
struct Rgb4 {
    r: i32,
    g: i32,
    b: i32,
}

/// Full amplitude, in quarter code values.
const FULL: i32 = 1020;
/// 75% amplitude, in quarter code values.
const AMP75: i32 = 765;

/// A grey (all three components `v`).
const fn grey(v: i32) -> Rgb4 {
    Rgb4 { r: v, g: v, b: v }
}

/// The eight 75% colour bars, left to right.
const BARS75: [Rgb4; 8] = [
    grey(AMP75),
    Rgb4 {
        r: AMP75,
        g: AMP75,
        b: 0,
    },
    Rgb4 {
        r: 0,
        g: AMP75,
        b: AMP75,
    },
    Rgb4 {
        r: 0,
        g: AMP75,
        b: 0,
    },
    Rgb4 {
        r: AMP75,
        g: 0,
        b: AMP75,
    },
    Rgb4 {
        r: AMP75,
        g: 0,
        b: 0,
    },
    Rgb4 {
        r: 0,
        g: 0,
        b: AMP75,
    },
    grey(0),
];

/// Colour of the overlays' foreground (counter digits, moving box).
const OVERLAY_FG: Rgb4 = grey(FULL);
/// Colour of the counter's background.
const OVERLAY_BG: Rgb4 = grey(0);

/// Side of the checkerboard squares, as a shift: 16 pixels.
const CHECKER_SHIFT: u32 = 4;
/// Distance of the frame counter from the top and left edges, in pixels.
const COUNTER_MARGIN: usize = 8;
/// Largest scale of the counter's font (5x7 font units).
const COUNTER_MAX_SCALE: usize = 4;
/// Pixels the moving box advances per frame.
const BOX_STEP: u32 = 4;

/// A 5x7 font for the digits 0 to 9: seven rows each, bit 4 is the leftmost column.
const DIGITS: [[u8; 7]; 10] = [
    [
        0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
    ],
    [
        0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
    ],
    [
        0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
    ],
    [
        0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
    ],
    [
        0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
    ],
    [
        0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
    ],
];

/// `round(4096 * sin(2 * pi * k / 256))` for `k` in 0..=64 (a quarter turn).
const SIN_Q12: [i32; 65] = [
    0, 101, 201, 301, 401, 501, 601, 700, 799, 897, 995, 1092, 1189, 1285, 1380, 1474, 1567, 1660,
    1751, 1842, 1931, 2019, 2106, 2191, 2276, 2359, 2440, 2520, 2598, 2675, 2751, 2824, 2896, 2967,
    3035, 3102, 3166, 3229, 3290, 3349, 3406, 3461, 3513, 3564, 3612, 3659, 3703, 3745, 3784, 3822,
    3857, 3889, 3920, 3948, 3973, 3996, 4017, 4036, 4052, 4065, 4076, 4085, 4091, 4095, 4096,
];

/// `n / d` rounded to nearest, halves away from zero; `d` must be positive.
///
/// The callers only pass small values (bounded by the colours and the clamped adjustments,
/// `|n| < 2^28`), far from overflow; the host tests sweep every adjustment with overflow
/// checks on.
fn div_round(n: i32, d: i32) -> i32 {
    let half = d / 2;
    if n >= 0 {
        (n + half) / d
    } else {
        -((half - n) / d)
    }
}

/// `v` clamped to a byte.
fn to_u8(v: i32) -> u8 {
    // Cannot fail after the clamp.
    u8::try_from(v.clamp(0, 255)).unwrap_or(0)
}

/// `(cos, sin)` of `hue` (1/256 turn units), in Q12.
fn cos_sin(hue: i32) -> (i32, i32) {
    let angle = hue.rem_euclid(256);
    let quadrant = angle >> 6;
    let i = angle & 63;
    let at = |k: i32| {
        usize::try_from(k)
            .ok()
            .and_then(|k| SIN_Q12.get(k))
            .copied()
            .unwrap_or(0)
    };
    let (a, b) = (at(i), at(64 - i));
    match quadrant {
        0 => (b, a),
        1 => (-a, b),
        2 => (-b, -a),
        _ => (a, -b),
    }
}

/// `(U - 128, V - 128)` rotated by the hue and scaled by the saturation of `adj`.
fn adjust_chroma(u: i32, v: i32, adj: &Adjust) -> (i32, i32) {
    let (cos, sin) = cos_sin(adj.hue);
    let ur = div_round(u * cos - v * sin, 4096);
    let vr = div_round(u * sin + v * cos, 4096);
    (
        div_round(ur * adj.saturation, 128),
        div_round(vr * adj.saturation, 128),
    )
}

/// `c` in BT.601 limited-range Y'CbCr with the adjustments applied: `[Y, U, V]`.
fn to_yuv(c: Rgb4, adj: &Adjust) -> [u8; 3] {
    // Coefficients of BT.601 in thousandths (65.481 = 219 * 0.299, ...), applied to quarter
    // code values: divide by 255 * 4 * 1000.
    const DEN: i32 = 1_020_000;
    let y = div_round(65_481 * c.r + 128_553 * c.g + 24_966 * c.b, DEN);
    let u = div_round(-37_797 * c.r - 74_203 * c.g + 112_000 * c.b, DEN);
    let v = div_round(112_000 * c.r - 93_786 * c.g - 18_214 * c.b, DEN);
    let y = div_round(y * adj.contrast, 128) + (adj.brightness - 128) + 16;
    let (u, v) = adjust_chroma(u, v, adj);
    [to_u8(y), to_u8(u + 128), to_u8(v + 128)]
}

/// `c` in R'G'B' with the adjustments applied: `[R, G, B]`.
fn to_rgb(c: Rgb4, adj: &Adjust) -> [u8; 3] {
    let c = if adj.saturation != 128 || adj.hue != 0 {
        // Through full-range BT.601: Y = 0.299 R + 0.587 G + 0.114 B, Cb = (B - Y) / 1.772,
        // Cr = (R - Y) / 1.402, all in quarter code values; the hue rotation and saturation
        // gain act on (Cb, Cr) exactly as on (U, V) for the Y'CbCr formats.
        let y = div_round(299 * c.r + 587 * c.g + 114 * c.b, 1000);
        let cb = div_round((c.b - y) * 1000, 1772);
        let cr = div_round((c.r - y) * 1000, 1402);
        let (cb, cr) = adjust_chroma(cb, cr, adj);
        let r = y + div_round(cr * 1402, 1000);
        let b = y + div_round(cb * 1772, 1000);
        // G = (Y - 0.299 R - 0.114 B) / 0.587.
        let g = div_round(1000 * y - 299 * r - 114 * b, 587);
        Rgb4 { r, g, b }
    } else {
        c
    };
    let out = |v: i32| to_u8(div_round(v * adj.contrast, 128 * 4) + (adj.brightness - 128));
    [out(c.r), out(c.g), out(c.b)]
}

/// How the samples of one line of a plane are laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One byte per pixel: `Y` (GREY and the Y plane of NV12).
    Luma,
    /// Two bytes per pixel, `Y0 U Y1 V` for each pair; the chroma of a pair is the one of its
    /// left pixel.
    Yuyv,
    /// Three bytes per pixel, `R G B`.
    Rgb,
    /// NV12 chroma line: `U V` for each pair of pixels, from the left (even) pixel.
    Chroma,
}

/// Where the generator paints a frame: a range of bytes written only through these methods,
/// never through references to it, so that it can be the memory of a capture buffer, which
/// userspace may map and access meanwhile. Offsets count from the start of the frame; a range
/// past [`FrameSink::size`] is an error ([`TpgError::BufferTooSmall`]) and writes nothing.
pub(crate) trait FrameSink {
    /// The size in bytes.
    fn size(&self) -> usize;
    /// Writes `src` at `offset`.
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<(), TpgError>;
    /// Sets the `len` bytes from `offset` to `byte`.
    fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<(), TpgError>;
    /// Copies the `len` bytes at `src` to `dst` (the ranges may overlap).
    fn copy_within(&mut self, src: usize, dst: usize, len: usize) -> Result<(), TpgError>;
}

impl FrameSink for [u8] {
    fn size(&self) -> usize {
        self.len()
    }

    fn write(&mut self, offset: usize, src: &[u8]) -> Result<(), TpgError> {
        let end = offset
            .checked_add(src.len())
            .ok_or(TpgError::BufferTooSmall)?;
        self.get_mut(offset..end)
            .ok_or(TpgError::BufferTooSmall)?
            .copy_from_slice(src);
        Ok(())
    }

    fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<(), TpgError> {
        let end = offset.checked_add(len).ok_or(TpgError::BufferTooSmall)?;
        self.get_mut(offset..end)
            .ok_or(TpgError::BufferTooSmall)?
            .fill(byte);
        Ok(())
    }

    fn copy_within(&mut self, src: usize, dst: usize, len: usize) -> Result<(), TpgError> {
        let src_end = src.checked_add(len).ok_or(TpgError::BufferTooSmall)?;
        let dst_end = dst.checked_add(len).ok_or(TpgError::BufferTooSmall)?;
        if src_end > self.len() || dst_end > self.len() {
            return Err(TpgError::BufferTooSmall);
        }
        <[u8]>::copy_within(self, src..src_end, dst);
        Ok(())
    }
}

/// A range of bytes of the frame: `len` bytes from `start`.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    /// Bytes `start..end` of this span, clipped to it (empty if out of range).
    fn sub(self, start: usize, end: usize) -> Span {
        let end = end.min(self.len);
        if start >= end {
            return Span {
                start: self.start,
                len: 0,
            };
        }
        Span {
            start: self.start.saturating_add(start),
            len: end - start,
        }
    }

    /// Writes `byte` at `offset` of the span, if it is inside.
    fn put<S: FrameSink + ?Sized>(
        self,
        sink: &mut S,
        offset: usize,
        byte: u8,
    ) -> Result<(), TpgError> {
        if offset >= self.len {
            return Ok(());
        }
        sink.write(self.start.saturating_add(offset), &[byte])
    }
}

/// The most bytes [`fill_repeat`] writes at once (a multiple of every pattern length, 1 to 4).
const REPEAT_CHUNK: usize = 192;

/// Fills `dst` with copies of `pat`; the last copy is cut short if `dst` ends inside it.
fn fill_repeat<S: FrameSink + ?Sized>(sink: &mut S, dst: Span, pat: &[u8]) -> Result<(), TpgError> {
    if dst.len == 0 {
        return Ok(());
    }
    if let [byte] = pat {
        return sink.fill(dst.start, dst.len, *byte);
    }
    // Whole copies of `pat`, no more than the span needs, written chunk by chunk.
    let unit = (REPEAT_CHUNK / pat.len().max(1)) * pat.len();
    let mut chunk = [0u8; REPEAT_CHUNK];
    let unit = unit
        .min(dst.len.next_multiple_of(pat.len().max(1)))
        .min(REPEAT_CHUNK);
    if unit == 0 {
        return Ok(());
    }
    // One copy of `pat`, then doubled (a few copies rather than a loop over every byte).
    let Some(first) = chunk.get_mut(..pat.len()) else {
        return Ok(());
    };
    first.copy_from_slice(pat);
    let mut have = pat.len();
    while have < unit {
        // `have` is a multiple of `pat.len()` until the last copy; `have + n <= unit`.
        let n = have.min(unit - have);
        chunk.copy_within(..n, have);
        have += n;
    }
    let mut done = 0;
    while done < dst.len {
        let n = (dst.len - done).min(unit);
        sink.write(dst.start.saturating_add(done), &chunk[..n])?;
        done += n;
    }
    Ok(())
}

/// Paints the pixels `x0..x1` of `row` (a line laid out as `layout`) with `px`, which holds
/// `[Y, U, V]` or `[R, G, B]`. Pixels beyond the end of `row` are ignored. (The arithmetic
/// saturates: callers pass `x1 <= width`, but this must not panic whatever they pass.)
fn write_run<S: FrameSink + ?Sized>(
    layout: Layout,
    sink: &mut S,
    row: Span,
    x0: usize,
    x1: usize,
    px: [u8; 3],
) -> Result<(), TpgError> {
    if x0 >= x1 {
        return Ok(());
    }
    let [a, b, c] = px;
    match layout {
        Layout::Luma => fill_repeat(sink, row.sub(x0, x1), &[a]),
        Layout::Rgb => fill_repeat(
            sink,
            row.sub(x0.saturating_mul(3), x1.saturating_mul(3)),
            &px,
        ),
        Layout::Chroma => {
            // The even pixels in x0..x1 carry the chroma of their pair.
            let first = x0.saturating_add(1) & !1;
            let end = x1.saturating_add(1) & !1;
            if first < end {
                fill_repeat(sink, row.sub(first, end), &[b, c])?;
            }
            Ok(())
        }
        Layout::Yuyv => {
            let mut x = x0;
            if x & 1 == 1 {
                // Right pixel of a pair: its chroma belongs to the left one.
                row.put(sink, x.saturating_mul(2), a)?;
                x = x.saturating_add(1);
            }
            let pairs_end = x1 & !1;
            if x < pairs_end {
                let (start, end) = (x.saturating_mul(2), pairs_end.saturating_mul(2));
                fill_repeat(sink, row.sub(start, end), &[a, b, a, c])?;
            }
            if x1 & 1 == 1 && pairs_end >= x {
                // Left pixel of a pair whose right pixel is not ours: Y, U and V.
                let p = pairs_end.saturating_mul(2);
                for (i, s) in [(0, a), (1, b), (3, c)] {
                    row.put(sink, p.saturating_add(i), s)?;
                }
            }
            Ok(())
        }
    }
}

/// Fills the `rows` lines of `plane` (`bpl` bytes apart, `row_len` bytes used) by rendering
/// each kind of line once with `render(sink, line, kind)` and copying it to the other lines of
/// that kind. With `period_shift` `Some(s)`, line `y` is of kind `(y >> s) & 1` (the first line
/// of kind 1 is line `1 << s`); with `None` all lines are of kind 0.
fn fill_plane<S, F>(
    sink: &mut S,
    plane: Span,
    bpl: usize,
    rows: usize,
    row_len: usize,
    period_shift: Option<u32>,
    render: F,
) -> Result<(), TpgError>
where
    S: FrameSink + ?Sized,
    F: Fn(&mut S, Span, usize) -> Result<(), TpgError>,
{
    let mut start = 0usize;
    for y in 0..rows {
        let template = match period_shift {
            Some(s) => y & (1 << s),
            None => 0,
        };
        let end = start.checked_add(row_len).ok_or(TpgError::BadFormat)?;
        if end > plane.len {
            return Err(TpgError::BufferTooSmall);
        }
        let line = Span {
            start: plane.start.saturating_add(start),
            len: row_len,
        };
        if template == y {
            render(sink, line, (y >> period_shift.unwrap_or(0)) & 1)?;
        } else {
            // The template line is above this one: it was rendered already.
            let src_start = template.checked_mul(bpl).ok_or(TpgError::BadFormat)?;
            let src_end = src_start.checked_add(row_len).ok_or(TpgError::BadFormat)?;
            if src_end > start {
                return Err(TpgError::BufferTooSmall);
            }
            sink.copy_within(plane.start.saturating_add(src_start), line.start, row_len)?;
        }
        start = start.saturating_add(bpl);
    }
    Ok(())
}

/// Sizes of a frame in bytes and pixels, checked to fit in `usize`.
struct Geometry {
    /// Width in pixels.
    w: usize,
    /// Height in lines.
    h: usize,
    /// Bytes per line.
    bpl: usize,
    /// Bytes used by the image in a line of the main plane.
    row_len: usize,
    /// Bytes of the main plane (`bpl * h`).
    main_len: usize,
    /// Lines of the NV12 chroma plane (`h / 2`), 0 for the other formats.
    chroma_rows: usize,
    /// Bytes of the frame ([`FrameFormat::sizeimage`]).
    total: usize,
}

impl Geometry {
    /// The geometry of `fmt`, or [`TpgError::BadFormat`] if it is unusable.
    fn new(fmt: &FrameFormat) -> Result<Geometry, TpgError> {
        let conv = |v: u32| usize::try_from(v).map_err(|_| TpgError::BadFormat);
        let w = conv(fmt.width)?;
        let h = conv(fmt.height)?;
        let bpl = conv(fmt.bytesperline)?;
        let bytes_per_pixel: usize = match fmt.pixfmt {
            PixelFormat::Yuyv => 2,
            PixelFormat::Rgb24 => 3,
            PixelFormat::Nv12 | PixelFormat::Grey => 1,
        };
        let row_len = w.checked_mul(bytes_per_pixel).ok_or(TpgError::BadFormat)?;
        if w == 0 || h == 0 || bpl < row_len {
            return Err(TpgError::BadFormat);
        }
        let main_len = bpl.checked_mul(h).ok_or(TpgError::BadFormat)?;
        let (chroma_rows, total) = match fmt.pixfmt {
            PixelFormat::Nv12 => (h / 2, main_len.checked_add(main_len / 2)),
            PixelFormat::Yuyv | PixelFormat::Rgb24 | PixelFormat::Grey => (0, Some(main_len)),
        };
        let total = total.ok_or(TpgError::BadFormat)?;
        Ok(Geometry {
            w,
            h,
            bpl,
            row_len,
            main_len,
            chroma_rows,
            total,
        })
    }
}

/// The planes of one frame being filled, for drawing the overlays.
struct Canvas<'a, S: FrameSink + ?Sized> {
    /// Where the frame goes.
    sink: &'a mut S,
    /// Layout of the main plane (the only plane but for NV12).
    layout: Layout,
    /// The main plane.
    main: Span,
    /// The NV12 chroma plane (empty for the other formats).
    chroma: Span,
    /// Geometry of the frame.
    geo: &'a Geometry,
}

impl<S: FrameSink + ?Sized> Canvas<'_, S> {
    /// Paints the rectangle `x0..x1` x `y0..y1` (clipped to the frame) with `px`.
    fn rect(
        &mut self,
        x0: usize,
        y0: usize,
        x1: usize,
        y1: usize,
        px: [u8; 3],
    ) -> Result<(), TpgError> {
        let r = Rect { x0, y0, x1, y1 };
        self.paint(
            r,
            |_| 0,
            |sink, layout, line, a, b, _| write_run(layout, sink, line, a, b, px),
        )
    }

    /// Paints the pattern of `tpg` back over the rectangle `x0..x1` x `y0..y1` (clipped to the
    /// frame), exactly as [`Tpg::fill`] paints it there before the overlays.
    fn restore(
        &mut self,
        tpg: &Tpg,
        x0: usize,
        y0: usize,
        x1: usize,
        y1: usize,
    ) -> Result<(), TpgError> {
        let r = Rect { x0, y0, x1, y1 };
        let w = self.geo.w;
        // The kind of line `y` (see `fill_plane`); a chroma line `y / 2` is of the kind of
        // line `y` (half the period on half the lines).
        let shift = tpg.period_shift();
        self.paint(
            r,
            |y| shift.map_or(0, |s| (y >> s) & 1),
            |sink, layout, line, a, b, kind| tpg.render_span(layout, sink, line, w, kind, a, b),
        )
    }

    /// Paints the rectangle `r` (clipped to the frame), whose line `y` is of kind
    /// `kind_of(y)` (0 or 1): `render(sink, layout, line, x0, x1, kind)` paints pixels
    /// `x0..x1` of a line of that kind, writing each pixel's bytes as `write_run` does. The
    /// first line of each kind in `r` is rendered, the others copy its bytes (whole rows:
    /// one copy per line), all but the pixels at an odd edge of YUYV, whose bytes are not
    /// contiguous with the others' (a pair's chroma belongs to its left pixel): those are
    /// rendered on each line.
    fn paint<K, R>(&mut self, r: Rect, kind_of: K, render: R) -> Result<(), TpgError>
    where
        K: Fn(usize) -> usize,
        R: Fn(&mut S, Layout, Span, usize, usize, usize) -> Result<(), TpgError>,
    {
        let geo = self.geo;
        let (x0, x1) = (r.x0, r.x1.min(geo.w));
        if x0 >= x1 {
            return Ok(());
        }
        // The pixels whose bytes are one contiguous range of the line, and that range.
        let (ia, ib) = match self.layout {
            Layout::Yuyv => (x0.saturating_add(1) & !1, x1 & !1),
            _ => (x0, x1),
        };
        let bytes = |a: usize, b: usize| match self.layout {
            Layout::Yuyv => (a.saturating_mul(2), b.saturating_mul(2)),
            Layout::Rgb => (a.saturating_mul(3), b.saturating_mul(3)),
            Layout::Luma | Layout::Chroma => (a, b),
        };
        let (ba, bb) = bytes(ia, ib);
        // NV12 chroma: the even pixels in x0..x1, one contiguous range of bytes (of the `w`
        // bytes of a chroma line).
        let (ca, cb) = (
            x0.saturating_add(1) & !1,
            (x1.saturating_add(1) & !1).min(geo.w),
        );
        let mut first = [None::<usize>; 2];
        let mut first_chroma = [None::<usize>; 2];
        for y in r.y0..r.y1.min(geo.h) {
            let kind = kind_of(y) & 1;
            let start = y.saturating_mul(geo.bpl);
            let line = self.main.sub(start, start.saturating_add(geo.row_len));
            match first[kind] {
                Some(src) if ia < ib => {
                    let src = self.main.start.saturating_add(src);
                    self.sink.copy_within(
                        src.saturating_add(ba),
                        line.start.saturating_add(ba),
                        bb - ba,
                    )?;
                    render(self.sink, self.layout, line, x0, ia, kind)?;
                    render(self.sink, self.layout, line, ib, x1, kind)?;
                }
                _ => {
                    render(self.sink, self.layout, line, x0, x1, kind)?;
                    first[kind] = Some(start);
                }
            }
            if self.layout == Layout::Luma && y & 1 == 0 && y / 2 < geo.chroma_rows {
                let start = (y / 2).saturating_mul(geo.bpl);
                let line = self.chroma.sub(start, start.saturating_add(geo.w));
                match first_chroma[kind] {
                    Some(src) if ca < cb => {
                        let src = self.chroma.start.saturating_add(src);
                        self.sink.copy_within(
                            src.saturating_add(ca),
                            line.start.saturating_add(ca),
                            cb - ca,
                        )?;
                    }
                    _ => {
                        render(self.sink, Layout::Chroma, line, x0, x1, kind)?;
                        first_chroma[kind] = Some(start);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A rectangle of pixels: `x0..x1` x `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// A test pattern generator for one format, pattern and set of adjustments, with all colours
/// precomputed in the target format.
#[derive(Clone, Debug)]
pub(crate) struct Tpg {
    /// The frame format.
    fmt: FrameFormat,
    /// The pattern.
    pattern: Pattern,
    /// Colours of the pattern in the target format (`[Y, U, V]` or `[R, G, B]`): the eight
    /// bars, the solid colour in slot 0, or the checkerboard's two colours in slots 0 and 1.
    colors: [[u8; 3]; 8],
    /// Overlay foreground colour in the target format.
    fg: [u8; 3],
    /// Overlay background colour in the target format.
    bg: [u8; 3],
}

impl Tpg {
    /// A generator of `pattern` frames in `fmt` with the adjustments `adjust` (clamped to
    /// their ranges). Cheap: create a new one whenever the format or a control changes.
    pub(crate) fn new(fmt: FrameFormat, pattern: Pattern, adjust: Adjust) -> Tpg {
        let adj = adjust.clamped();
        let convert = |c: Rgb4| match fmt.pixfmt {
            PixelFormat::Rgb24 => to_rgb(c, &adj),
            PixelFormat::Yuyv | PixelFormat::Nv12 | PixelFormat::Grey => to_yuv(c, &adj),
        };
        let mut colors = [[0u8; 3]; 8];
        let mut set = |sources: &[Rgb4]| {
            for (dst, src) in colors.iter_mut().zip(sources) {
                *dst = convert(*src);
            }
        };
        match pattern {
            Pattern::ColorBars75 => set(&BARS75),
            Pattern::SolidWhite => set(&[grey(FULL)]),
            Pattern::SolidRed => set(&[Rgb4 {
                r: FULL,
                g: 0,
                b: 0,
            }]),
            Pattern::SolidGreen => set(&[Rgb4 {
                r: 0,
                g: FULL,
                b: 0,
            }]),
            Pattern::SolidBlue => set(&[Rgb4 {
                r: 0,
                g: 0,
                b: FULL,
            }]),
            Pattern::SolidBlack => set(&[grey(0)]),
            Pattern::Checkerboard => set(&[grey(AMP75), grey(0)]),
        }
        Tpg {
            fmt,
            pattern,
            colors,
            fg: convert(OVERLAY_FG),
            bg: convert(OVERLAY_BG),
        }
    }

    /// Fills one frame into `sink` (at least [`FrameFormat::sizeimage`] bytes; the bytes past
    /// it and the padding at the end of each line are left alone). `frame` is the frame
    /// counter (sequence number), drawn at the top left and moving the box at the bottom.
    ///
    /// It writes once per run of pixels of the first line of each kind and per run of the
    /// overlays, and copies each other line. (The driver calls [`Tpg::fill_over`].)
    #[cfg_attr(not(test), expect(dead_code))]
    pub(crate) fn fill<S: FrameSink + ?Sized>(
        &self,
        sink: &mut S,
        frame: u32,
    ) -> Result<(), TpgError> {
        self.fill_over(sink, frame, None)
    }

    /// Fills frame `frame` into `sink` as [`Tpg::fill`] does, with the same result; but if
    /// `prev` is `Some(p)`, the caller knows that `sink` holds exactly frame `p` of this
    /// generator (as [`Tpg::fill`] left it), and only the overlays of both frames are written:
    /// the pattern goes back where `p`'s counter and box were, then `frame`'s are drawn.
    pub(crate) fn fill_over<S: FrameSink + ?Sized>(
        &self,
        sink: &mut S,
        frame: u32,
        prev: Option<u32>,
    ) -> Result<(), TpgError> {
        let geo = Geometry::new(&self.fmt)?;
        if sink.size() < geo.total {
            return Err(TpgError::BufferTooSmall);
        }
        let main = Span {
            start: 0,
            len: geo.main_len,
        };
        let chroma = Span {
            start: geo.main_len,
            len: geo
                .total
                .checked_sub(geo.main_len)
                .ok_or(TpgError::BadFormat)?,
        };
        let layout = match self.fmt.pixfmt {
            PixelFormat::Yuyv => Layout::Yuyv,
            PixelFormat::Rgb24 => Layout::Rgb,
            PixelFormat::Nv12 | PixelFormat::Grey => Layout::Luma,
        };
        if let Some(prev) = prev {
            let mut canvas = Canvas {
                sink,
                layout,
                main,
                chroma,
                geo: &geo,
            };
            for r in [counter_rect(&geo, prev), box_rect(&geo, prev)]
                .into_iter()
                .flatten()
            {
                canvas.restore(self, r.x0, r.y0, r.x1, r.y1)?;
            }
            self.draw_counter(&mut canvas, frame)?;
            return self.draw_box(&mut canvas, frame);
        }
        let shift = self.period_shift();
        let w = geo.w;
        fill_plane(
            sink,
            main,
            geo.bpl,
            geo.h,
            geo.row_len,
            shift,
            |sink, line, kind| self.render_line(layout, sink, line, w, kind),
        )?;
        if geo.chroma_rows > 0 {
            // A chroma line covers two lines of pixels: half the period.
            let shift = shift.map(|s| s.saturating_sub(1));
            fill_plane(
                sink,
                chroma,
                geo.bpl,
                geo.chroma_rows,
                w,
                shift,
                |sink, line, kind| self.render_line(Layout::Chroma, sink, line, w, kind),
            )?;
        }
        let mut canvas = Canvas {
            sink,
            layout,
            main,
            chroma,
            geo: &geo,
        };
        self.draw_counter(&mut canvas, frame)?;
        self.draw_box(&mut canvas, frame)
    }

    /// The checkerboard's period in lines, as a shift (see `fill_plane`); `None` for the
    /// patterns whose lines are all alike.
    fn period_shift(&self) -> Option<u32> {
        match self.pattern {
            Pattern::Checkerboard => Some(CHECKER_SHIFT),
            _ => None,
        }
    }

    /// Renders one line (`w` pixels) of the pattern into `line`; `kind` is the checkerboard
    /// phase (0: starts with white).
    fn render_line<S: FrameSink + ?Sized>(
        &self,
        layout: Layout,
        sink: &mut S,
        line: Span,
        w: usize,
        kind: usize,
    ) -> Result<(), TpgError> {
        self.render_span(layout, sink, line, w, kind, 0, w)
    }

    /// Renders the pixels `x0..x1` of one line (`w` pixels) of the pattern into `line`, each
    /// byte as [`Tpg::render_line`] writes it (`write_run` writes a pixel's bytes whatever run
    /// it is painted in); `kind` is the checkerboard phase.
    #[expect(clippy::too_many_arguments)]
    fn render_span<S: FrameSink + ?Sized>(
        &self,
        layout: Layout,
        sink: &mut S,
        line: Span,
        w: usize,
        kind: usize,
        x0: usize,
        x1: usize,
    ) -> Result<(), TpgError> {
        let color = |i: usize| self.colors.get(i).copied().unwrap_or_default();
        let x1 = x1.min(w);
        // The part of `a..b` inside `x0..x1`.
        let mut run = |a: usize, b: usize, px: [u8; 3]| {
            write_run(layout, sink, line, a.max(x0), b.min(x1), px)
        };
        match self.pattern {
            Pattern::ColorBars75 => {
                // Bar i covers i * w / 8 .. (i + 1) * w / 8, without overflowing.
                let (q, r) = (w / 8, w % 8);
                let edge = |i: usize| q.saturating_mul(i).saturating_add(r * i / 8);
                for i in 0..8 {
                    run(edge(i), edge(i + 1), color(i))?;
                }
                Ok(())
            }
            Pattern::Checkerboard => {
                let side = 1usize << CHECKER_SHIFT;
                // The square `x0` lies in, then the following ones up to `x1`.
                let mut x = x0 & !(side - 1);
                let mut phase = (kind ^ (x >> CHECKER_SHIFT)) & 1;
                while x < x1 {
                    let end = x.saturating_add(side).min(w);
                    run(x, end, color(phase))?;
                    phase ^= 1;
                    x = end;
                }
                Ok(())
            }
            Pattern::SolidWhite
            | Pattern::SolidRed
            | Pattern::SolidGreen
            | Pattern::SolidBlue
            | Pattern::SolidBlack => run(0, w, color(0)),
        }
    }

    /// Draws `frame` in decimal, white on black, at the top left (skipped if it does not fit
    /// in the top `height / 8` lines at `COUNTER_MARGIN` pixels from the edges).
    fn draw_counter<S: FrameSink + ?Sized>(
        &self,
        canvas: &mut Canvas<'_, S>,
        frame: u32,
    ) -> Result<(), TpgError> {
        let Some(c) = Counter::new(canvas.geo, frame) else {
            return Ok(());
        };
        let at = |base: usize, units: usize| base.saturating_add(units.saturating_mul(c.scale));
        let r = c.rect();
        canvas.rect(r.x0, r.y0, r.x1, r.y1, self.bg)?;
        let top = at(r.y0, 1);
        for (pos, digit) in c.digits.iter().take(c.count).rev().enumerate() {
            let Some(glyph) = DIGITS.get(*digit) else {
                continue;
            };
            let left = at(r.x0, pos.saturating_mul(6).saturating_add(1));
            for (row, bits) in glyph.iter().enumerate() {
                let y = at(top, row);
                // Runs of set bits, from the leftmost column (bit 4).
                let mut col = 0;
                while col < 5 {
                    if bits & (0x10 >> col) == 0 {
                        col += 1;
                        continue;
                    }
                    let run_start = col;
                    while col < 5 && bits & (0x10 >> col) != 0 {
                        col += 1;
                    }
                    canvas.rect(at(left, run_start), y, at(left, col), at(y, 1), self.fg)?;
                }
            }
        }
        Ok(())
    }

    /// Draws the box of side `height / 8` (at least 2) at the bottom, `BOX_STEP` pixels further
    /// right each frame, wrapping around: white, but black on the solid white pattern.
    fn draw_box<S: FrameSink + ?Sized>(
        &self,
        canvas: &mut Canvas<'_, S>,
        frame: u32,
    ) -> Result<(), TpgError> {
        let Some(r) = box_rect(canvas.geo, frame) else {
            return Ok(());
        };
        let color = match self.pattern {
            Pattern::SolidWhite => self.bg,
            _ => self.fg,
        };
        canvas.rect(r.x0, r.y0, r.x1, r.y1, color)
    }
}

/// The frame counter of one frame: its digits and the scale of its font.
struct Counter {
    /// Digits, most significant last.
    digits: [usize; 10],
    /// How many of `digits` are used.
    count: usize,
    /// Pixels per font unit, 1 to `COUNTER_MAX_SCALE`.
    scale: usize,
}

impl Counter {
    /// The counter of `frame` in a frame of geometry `geo`, or `None` if it does not fit in
    /// the top `height / 8` lines at `COUNTER_MARGIN` pixels from the edges.
    fn new(geo: &Geometry, frame: u32) -> Option<Counter> {
        let mut digits = [0usize; 10];
        let mut count = 0;
        let mut n = frame;
        for (i, d) in digits.iter_mut().enumerate() {
            *d = usize::try_from(n % 10).unwrap_or(0);
            count = i + 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let count = count.min(digits.len());
        // The box: one font unit of border around the digits, each 5 units wide and 7 high
        // with one unit between them: (6 * count + 1) x 9 units. `scale` is at most
        // `COUNTER_MAX_SCALE`, so the coordinates stay small.
        let units_w = 6 * count + 1;
        let avail_h = (geo.h / 8).saturating_sub(COUNTER_MARGIN);
        let avail_w = geo.w.saturating_sub(2 * COUNTER_MARGIN);
        let scale = (avail_h / 9).min(avail_w / units_w).min(COUNTER_MAX_SCALE);
        (scale > 0).then_some(Counter {
            digits,
            count,
            scale,
        })
    }

    /// The rectangle the counter covers (its black box).
    fn rect(&self) -> Rect {
        let at = |units: usize| COUNTER_MARGIN.saturating_add(units.saturating_mul(self.scale));
        Rect {
            x0: COUNTER_MARGIN,
            y0: COUNTER_MARGIN,
            x1: at(6 * self.count + 1),
            y1: at(9),
        }
    }
}

/// The rectangle the counter of `frame` covers, if it is drawn.
fn counter_rect(geo: &Geometry, frame: u32) -> Option<Rect> {
    Counter::new(geo, frame).map(|c| c.rect())
}

/// The rectangle the moving box of `frame` covers, if it is drawn: side `height / 8` (at least
/// 2) at the bottom, `BOX_STEP` pixels further right each frame, wrapping around.
fn box_rect(geo: &Geometry, frame: u32) -> Option<Rect> {
    let side = (geo.h / 8).max(2);
    if side > geo.h || side > geo.w {
        return None;
    }
    let positions = u32::try_from(geo.w.saturating_sub(side).saturating_add(1)).unwrap_or(u32::MAX);
    let x = frame
        .wrapping_mul(BOX_STEP)
        .checked_rem(positions)
        .unwrap_or(0);
    // Even, for the chroma of YUYV and NV12.
    let x = usize::try_from(x).unwrap_or(0) & !1;
    Some(Rect {
        x0: x,
        y0: geo.h.saturating_sub(side),
        x1: x.saturating_add(side),
        y1: geo.h,
    })
}
