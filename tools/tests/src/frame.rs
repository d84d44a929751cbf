//! Pure helpers about rvivid's frames: the size arithmetic of its four pixel formats, reading
//! a pixel out of a frame held in a byte slice, and the one colour-bar checker every capture
//! test uses. No I/O here, so it is unit-tested on synthetic frames (`cargo test`).

use crate::v4l2::{
    fourcc_str, v4l2_pix_format, V4L2_PIX_FMT_GREY, V4L2_PIX_FMT_NV12, V4L2_PIX_FMT_RGB24,
    V4L2_PIX_FMT_YUYV,
};

/// rvivid's formats in `VIDIOC_ENUM_FMT` order.
pub const FORMATS: [u32; 4] = [
    V4L2_PIX_FMT_YUYV,
    V4L2_PIX_FMT_RGB24,
    V4L2_PIX_FMT_NV12,
    V4L2_PIX_FMT_GREY,
];

/// Frame size limits: `VIDIOC_ENUM_FRAMESIZES` is stepwise MIN..MAX, step STEP.
pub const MIN_WIDTH: u32 = 16;
pub const MIN_HEIGHT: u32 = 16;
pub const MAX_WIDTH: u32 = 1920;
pub const MAX_HEIGHT: u32 = 1080;
pub const SIZE_STEP: u32 = 2;

/// The minimum `bytesperline` of `fourcc` at `width` (of the luma plane for NV12), or `None`
/// for a format rvivid does not have.
pub fn min_bytesperline(fourcc: u32, width: u32) -> Option<u32> {
    match fourcc {
        V4L2_PIX_FMT_YUYV => Some(width * 2),
        V4L2_PIX_FMT_RGB24 => Some(width * 3),
        V4L2_PIX_FMT_NV12 | V4L2_PIX_FMT_GREY => Some(width),
        _ => None,
    }
}

/// `sizeimage` for `bytesperline` and `height` (NV12: the luma plane plus half as much chroma).
pub fn sizeimage_for(fourcc: u32, bytesperline: u32, height: u32) -> Option<u32> {
    match fourcc {
        V4L2_PIX_FMT_NV12 => Some(bytesperline * height * 3 / 2),
        V4L2_PIX_FMT_YUYV | V4L2_PIX_FMT_RGB24 | V4L2_PIX_FMT_GREY => Some(bytesperline * height),
        _ => None,
    }
}

/// A frame's layout, as the driver reported it in `v4l2_pix_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFormat {
    pub fourcc: u32,
    pub width: u32,
    pub height: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
}

impl FrameFormat {
    /// The layout `pix` describes.
    pub fn from_pix(pix: &v4l2_pix_format) -> Self {
        FrameFormat {
            fourcc: pix.pixelformat,
            width: pix.width,
            height: pix.height,
            bytesperline: pix.bytesperline,
            sizeimage: pix.sizeimage,
        }
    }

    /// The layout with the minimum `bytesperline` (what rvivid reports), or `None` for an
    /// unknown format.
    pub fn packed(fourcc: u32, width: u32, height: u32) -> Option<Self> {
        let bytesperline = min_bytesperline(fourcc, width)?;
        Some(FrameFormat {
            fourcc,
            width,
            height,
            bytesperline,
            sizeimage: sizeimage_for(fourcc, bytesperline, height)?,
        })
    }

    /// "YUYV 640x480" for messages.
    pub fn describe(&self) -> String {
        format!("{} {}x{}", fourcc_str(self.fourcc), self.width, self.height)
    }
}

/// The eight 75% colour bars, left to right: name, R'G'B' and Y'CbCr (BT.601, limited range).
pub const BARS: [(&str, [u8; 3], [u8; 3]); 8] = [
    ("white", [191, 191, 191], [180, 128, 128]),
    ("yellow", [191, 191, 0], [162, 44, 142]),
    ("cyan", [0, 191, 191], [131, 156, 44]),
    ("green", [0, 191, 0], [112, 72, 58]),
    ("magenta", [191, 0, 191], [84, 184, 198]),
    ("red", [191, 0, 0], [65, 100, 212]),
    ("blue", [0, 0, 191], [35, 212, 114]),
    ("black", [0, 0, 0], [16, 128, 128]),
];

/// How far a sampled component may be from the expected value.
pub const BAR_TOLERANCE: u8 = 2;

/// The names of the components [`sample`] returns for `fourcc`.
pub fn component_names(fourcc: u32) -> &'static str {
    match fourcc {
        V4L2_PIX_FMT_RGB24 => "R,G,B",
        V4L2_PIX_FMT_GREY => "Y",
        _ => "Y,U,V",
    }
}

/// The components bar `bar` must have in a `fourcc` frame (see [`sample`]).
pub fn expected_bar(fourcc: u32, bar: usize) -> Vec<u8> {
    let (_, rgb, yuv) = BARS[bar];
    match fourcc {
        V4L2_PIX_FMT_RGB24 => rgb.to_vec(),
        V4L2_PIX_FMT_GREY => vec![yuv[0]],
        _ => yuv.to_vec(),
    }
}

/// The components of pixel (`x`, `y`) of `frame`: R,G,B for RGB24; Y,U,V for YUYV and NV12
/// (the chroma shared with the neighbouring pixels); Y for GREY.
pub fn sample(frame: &[u8], fmt: &FrameFormat, x: u32, y: u32) -> Result<Vec<u8>, String> {
    if x >= fmt.width || y >= fmt.height {
        return Err(format!(
            "pixel ({x},{y}) is outside the {}x{} frame",
            fmt.width, fmt.height
        ));
    }
    let (x, y, bpl) = (x as usize, y as usize, fmt.bytesperline as usize);
    let at = |i: usize| -> Result<u8, String> {
        frame.get(i).copied().ok_or_else(|| {
            format!(
                "pixel ({x},{y}) needs byte {i} but the frame has only {} bytes",
                frame.len()
            )
        })
    };
    match fmt.fourcc {
        V4L2_PIX_FMT_YUYV => {
            let row = y * bpl;
            let pair = row + (x / 2) * 4;
            Ok(vec![at(row + x * 2)?, at(pair + 1)?, at(pair + 3)?])
        }
        V4L2_PIX_FMT_RGB24 => {
            let p = y * bpl + x * 3;
            Ok(vec![at(p)?, at(p + 1)?, at(p + 2)?])
        }
        V4L2_PIX_FMT_NV12 => {
            let chroma = bpl * fmt.height as usize + (y / 2) * bpl + (x / 2) * 2;
            Ok(vec![at(y * bpl + x)?, at(chroma)?, at(chroma + 1)?])
        }
        V4L2_PIX_FMT_GREY => Ok(vec![at(y * bpl + x)?]),
        other => Err(format!("no pixel reader for format {}", fourcc_str(other))),
    }
}

/// The rows [`check_color_bars`] samples: clear of the counter and the moving box, which only
/// touch rows `< height/8` and `>= 7*height/8`.
pub fn bar_rows(height: u32) -> [u32; 3] {
    [height / 4, height / 2, height * 3 / 4]
}

/// The columns [`check_color_bars`] samples in bar `bar`: its centre and a quarter of a bar
/// either side of it (well inside the bar whichever way the driver rounds its edges).
pub fn bar_columns(width: u32, bar: u32) -> [u32; 3] {
    let centre = (2 * bar + 1) * width / 16;
    let quarter = width / 32;
    [centre - quarter, centre, centre + quarter]
}

/// Checks that `frame` shows the eight 75% colour bars, sampling each bar at
/// [`bar_columns`] × [`bar_rows`] (±[`BAR_TOLERANCE`]). The error names the bar, the pixel,
/// what was read and what was expected.
pub fn check_color_bars(frame: &[u8], fmt: &FrameFormat) -> Result<(), String> {
    if (frame.len() as u64) < u64::from(fmt.sizeimage) {
        return Err(format!(
            "{} frame has {} bytes, less than sizeimage {}",
            fmt.describe(),
            frame.len(),
            fmt.sizeimage
        ));
    }
    let names = component_names(fmt.fourcc);
    for (bar, (name, _, _)) in BARS.iter().enumerate() {
        let want = expected_bar(fmt.fourcc, bar);
        for y in bar_rows(fmt.height) {
            for x in bar_columns(fmt.width, bar as u32) {
                let got = sample(frame, fmt, x, y)?;
                let close = got
                    .iter()
                    .zip(&want)
                    .all(|(&g, &w)| g.abs_diff(w) <= BAR_TOLERANCE);
                if !close {
                    return Err(format!(
                        "{}: bar {bar} ({name}) at ({x},{y}): {names} = {got:?}, want {want:?} \
                         ±{BAR_TOLERANCE}",
                        fmt.describe()
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with the bars (bar of pixel x = x*8/width), and noise where the driver draws
    /// its overlays (rows < h/8 and >= 7h/8).
    fn render(fmt: &FrameFormat, offset: i16) -> Vec<u8> {
        let mut f = vec![0u8; fmt.sizeimage as usize];
        let (w, h, bpl) = (
            fmt.width as usize,
            fmt.height as usize,
            fmt.bytesperline as usize,
        );
        let bar = |x: usize| x * 8 / w;
        let adj = |v: u8| (i16::from(v) + offset).clamp(0, 255) as u8;
        for y in 0..h {
            let overlay = y < h / 8 || y >= h * 7 / 8;
            for x in 0..w {
                let (_, rgb, yuv) = BARS[bar(x)];
                let (rgb, yuv) = if overlay {
                    ([235, 16, 77], [(x * 7 + y) as u8, 3, 250])
                } else {
                    (rgb.map(adj), yuv.map(adj))
                };
                match fmt.fourcc {
                    V4L2_PIX_FMT_YUYV => {
                        f[y * bpl + x * 2] = yuv[0];
                        let pair = y * bpl + (x / 2) * 4;
                        if x % 2 == 0 {
                            f[pair + 1] = yuv[1];
                            f[pair + 3] = yuv[2];
                        }
                    }
                    V4L2_PIX_FMT_RGB24 => {
                        f[y * bpl + x * 3..y * bpl + x * 3 + 3].copy_from_slice(&rgb)
                    }
                    V4L2_PIX_FMT_NV12 => {
                        f[y * bpl + x] = yuv[0];
                        if x % 2 == 0 && y % 2 == 0 {
                            let c = bpl * h + (y / 2) * bpl + x;
                            f[c] = yuv[1];
                            f[c + 1] = yuv[2];
                        }
                    }
                    V4L2_PIX_FMT_GREY => f[y * bpl + x] = yuv[0],
                    _ => unreachable!(),
                }
            }
        }
        f
    }

    const SIZES: [(u32, u32); 5] = [(640, 480), (320, 240), (16, 16), (176, 144), (1920, 1080)];

    #[test]
    fn sizes() {
        let s = |f, w, h| FrameFormat::packed(f, w, h).map(|f| (f.bytesperline, f.sizeimage));
        assert_eq!(s(V4L2_PIX_FMT_YUYV, 640, 480), Some((1280, 614_400)));
        assert_eq!(s(V4L2_PIX_FMT_RGB24, 640, 480), Some((1920, 921_600)));
        assert_eq!(s(V4L2_PIX_FMT_NV12, 640, 480), Some((640, 460_800)));
        assert_eq!(s(V4L2_PIX_FMT_GREY, 640, 480), Some((640, 307_200)));
        assert_eq!(s(crate::v4l2::fourcc(b"ABCD"), 640, 480), None);
    }

    #[test]
    fn synthetic_bars_pass() {
        for fourcc in FORMATS {
            for (w, h) in SIZES {
                let fmt = FrameFormat::packed(fourcc, w, h).unwrap();
                for offset in [0, BAR_TOLERANCE as i16, -(BAR_TOLERANCE as i16)] {
                    let frame = render(&fmt, offset);
                    check_color_bars(&frame, &fmt)
                        .unwrap_or_else(|e| panic!("{} offset {offset}: {e}", fmt.describe()));
                }
            }
        }
    }

    #[test]
    fn padded_lines_pass() {
        // A driver may pad lines; the reader follows bytesperline.
        for fourcc in FORMATS {
            let mut fmt = FrameFormat::packed(fourcc, 320, 240).unwrap();
            fmt.bytesperline += 64;
            fmt.sizeimage = sizeimage_for(fourcc, fmt.bytesperline, fmt.height).unwrap();
            check_color_bars(&render(&fmt, 0), &fmt).unwrap();
        }
    }

    #[test]
    fn wrong_frames_fail() {
        for fourcc in FORMATS {
            let fmt = FrameFormat::packed(fourcc, 640, 480).unwrap();
            // Off by more than the tolerance.
            let e = check_color_bars(&render(&fmt, BAR_TOLERANCE as i16 + 1), &fmt).unwrap_err();
            assert!(e.contains("bar 0 (white)"), "{e}");
            // All black: the first bar is already wrong.
            let e = check_color_bars(&vec![0; fmt.sizeimage as usize], &fmt).unwrap_err();
            assert!(
                e.contains("white") && e.contains(component_names(fourcc)),
                "{e}"
            );
            let frame = render(&fmt, 0);
            // Mirrored bars (GREY: one byte per pixel, easy to mirror).
            if fourcc == V4L2_PIX_FMT_GREY {
                let mut flipped = frame.clone();
                for (y, row) in flipped.chunks_mut(640).enumerate() {
                    for (x, p) in row.iter_mut().enumerate() {
                        *p = frame[y * 640 + 639 - x];
                    }
                }
                let e = check_color_bars(&flipped, &fmt).unwrap_err();
                assert!(e.contains("bar 0 (white)"), "{e}");
            }
            // Too short.
            let e = check_color_bars(&frame[..frame.len() - 1], &fmt).unwrap_err();
            assert!(e.contains("less than sizeimage"), "{e}");
        }
    }

    #[test]
    fn one_wrong_bar_is_named() {
        let fmt = FrameFormat::packed(V4L2_PIX_FMT_RGB24, 640, 480).unwrap();
        let mut frame = render(&fmt, 0);
        // Paint bar 5 (red, x 400..480) blue in one sampled row.
        let y = 240usize;
        for x in 400..480usize {
            frame[y * 1920 + x * 3..y * 1920 + x * 3 + 3].copy_from_slice(&[0, 0, 191]);
        }
        let e = check_color_bars(&frame, &fmt).unwrap_err();
        assert!(e.contains("bar 5 (red) at (") && e.contains(",240)"), "{e}");
    }

    #[test]
    fn pixel_reader() {
        let fmt = FrameFormat::packed(V4L2_PIX_FMT_YUYV, 16, 16).unwrap();
        let mut f = vec![0u8; fmt.sizeimage as usize];
        f[32 + 4..32 + 8].copy_from_slice(&[10, 20, 30, 40]);
        assert_eq!(sample(&f, &fmt, 2, 1).unwrap(), [10, 20, 40]);
        assert_eq!(sample(&f, &fmt, 3, 1).unwrap(), [30, 20, 40]);
        assert!(sample(&f, &fmt, 16, 0).is_err());
        let nv12 = FrameFormat::packed(V4L2_PIX_FMT_NV12, 16, 16).unwrap();
        let mut f = vec![0u8; nv12.sizeimage as usize];
        f[16 * 3 + 5] = 7;
        f[256 + 16 + 4] = 8;
        f[256 + 16 + 5] = 9;
        assert_eq!(sample(&f, &nv12, 5, 3).unwrap(), [7, 8, 9]);
        assert!(sample(&f[..100], &nv12, 5, 3).is_err());
    }

    #[test]
    fn sample_points_stay_clear_of_overlays_and_edges() {
        for (w, h) in SIZES {
            for y in bar_rows(h) {
                assert!(y >= h / 8 && y < h * 7 / 8, "{w}x{h}: row {y}");
            }
            for bar in 0..8 {
                for x in bar_columns(w, bar) {
                    assert_eq!(x * 8 / w, bar, "{w}x{h}: column {x}");
                    // The YUYV pair / NV12 chroma column of x is in the same bar.
                    assert_eq!((x & !1) * 8 / w, bar, "{w}x{h}: column {x}");
                    assert_eq!((x | 1) * 8 / w, bar, "{w}x{h}: column {x}");
                }
            }
        }
    }
}
