// SPDX-License-Identifier: GPL-2.0

//! Host-side tests of rvivid's test pattern generator.
//!
//! The generator (`src/tpg.rs` of the module) is `no_std` and uses only `core`, so the very
//! same file compiles here as a module of an ordinary crate. Run with `cargo test --release`;
//! `cargo test --release -- --nocapture` also prints the time taken to fill 1920x1080 frames.

// The module's items are only used by the tests.
#![allow(dead_code)]

#[path = "../../../src/tpg.rs"]
mod tpg;

#[cfg(test)]
// The tests walk several tables of the eight bars with one index.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::tpg::*;
    use std::time::Instant;

    const ALL_FORMATS: [PixelFormat; 4] = [
        PixelFormat::Yuyv,
        PixelFormat::Rgb24,
        PixelFormat::Nv12,
        PixelFormat::Grey,
    ];

    const ALL_PATTERNS: [Pattern; 7] = [
        Pattern::ColorBars75,
        Pattern::SolidWhite,
        Pattern::SolidRed,
        Pattern::SolidGreen,
        Pattern::SolidBlue,
        Pattern::SolidBlack,
        Pattern::Checkerboard,
    ];

    /// What the generator produces for the 75% bars with the default adjustments, `[Y, U, V]`:
    /// exactly the standard BT.601 75% colour bars.
    const BARS_YUV: [[u8; 3]; 8] = [
        [180, 128, 128], // white
        [162, 44, 142],  // yellow
        [131, 156, 44],  // cyan
        [112, 72, 58],   // green
        [84, 184, 198],  // magenta
        [65, 100, 212],  // red
        [35, 212, 114],  // blue
        [16, 128, 128],  // black
    ];

    /// The 75% bars in R'G'B' (191 = 0xBF).
    const BARS_RGB: [[u8; 3]; 8] = [
        [191, 191, 191],
        [191, 191, 0],
        [0, 191, 191],
        [0, 191, 0],
        [191, 0, 191],
        [191, 0, 0],
        [0, 0, 191],
        [0, 0, 0],
    ];

    /// Sizes the bar tests run at (the last ones have bar edges at odd pixels).
    const SIZES: [(u32, u32); 6] = [
        (640, 480),
        (1920, 1080),
        (160, 120),
        (650, 246),
        (176, 144),
        (48, 32),
    ];

    fn format(pixfmt: PixelFormat, width: u32, height: u32) -> FrameFormat {
        FrameFormat {
            pixfmt,
            width,
            height,
            bytesperline: FrameFormat::min_bytesperline(pixfmt, width),
        }
    }

    fn render(fmt: FrameFormat, pattern: Pattern, adjust: Adjust, frame: u32) -> Vec<u8> {
        let mut buf = vec![0u8; fmt.sizeimage() as usize];
        Tpg::new(fmt, pattern, adjust)
            .fill(&mut buf[..], frame)
            .expect("fill");
        buf
    }

    /// The pixel at (x, y): `[Y, U, V]` for YUYV and NV12, `[R, G, B]` for RGB24, `[Y, 0, 0]`
    /// for GREY.
    fn pixel(fmt: &FrameFormat, buf: &[u8], x: usize, y: usize) -> [u8; 3] {
        let bpl = fmt.bytesperline as usize;
        let h = fmt.height as usize;
        match fmt.pixfmt {
            PixelFormat::Yuyv => {
                let pair = y * bpl + (x & !1) * 2;
                [buf[pair + (x & 1) * 2], buf[pair + 1], buf[pair + 3]]
            }
            PixelFormat::Rgb24 => {
                let p = y * bpl + x * 3;
                [buf[p], buf[p + 1], buf[p + 2]]
            }
            PixelFormat::Nv12 => {
                let c = h * bpl + (y / 2) * bpl + (x & !1);
                [buf[y * bpl + x], buf[c], buf[c + 1]]
            }
            PixelFormat::Grey => [buf[y * bpl + x], 0, 0],
        }
    }

    /// `[Y, U, V]`/`[R, G, B]` as `pixel` reads it for this format.
    fn expected(pixfmt: PixelFormat, yuv: [u8; 3], rgb: [u8; 3]) -> [u8; 3] {
        match pixfmt {
            PixelFormat::Yuyv | PixelFormat::Nv12 => yuv,
            PixelFormat::Rgb24 => rgb,
            PixelFormat::Grey => [yuv[0], 0, 0],
        }
    }

    /// Centre column of bar `i`.
    fn bar_centre(width: u32, i: usize) -> usize {
        let w = width as usize;
        (i * w / 8 + (i + 1) * w / 8) / 2
    }

    /// The sample rows: `height / 4 .. 3 * height / 4`.
    fn sample_rows(height: u32) -> std::ops::Range<usize> {
        height as usize / 4..3 * height as usize / 4
    }

    /// Checks the bars at their centres in all sample rows.
    fn check_bars(fmt: &FrameFormat, buf: &[u8], yuv: &[[u8; 3]; 8], rgb: &[[u8; 3]; 8]) {
        for i in 0..8 {
            let want = expected(fmt.pixfmt, yuv[i], rgb[i]);
            let x = bar_centre(fmt.width, i);
            for y in sample_rows(fmt.height) {
                assert_eq!(
                    pixel(fmt, buf, x, y),
                    want,
                    "{:?} bar {} at ({}, {})",
                    fmt,
                    i,
                    x,
                    y
                );
            }
        }
    }

    #[test]
    fn bars_exact_values() {
        for pixfmt in ALL_FORMATS {
            for (w, h) in SIZES {
                let fmt = format(pixfmt, w, h);
                let buf = render(fmt, Pattern::ColorBars75, Adjust::default(), 0);
                check_bars(&fmt, &buf, &BARS_YUV, &BARS_RGB);
            }
        }
    }

    #[test]
    fn bars_fill_whole_lines() {
        // Every pixel of a sample row belongs to the bar its x says, including the edges.
        for pixfmt in ALL_FORMATS {
            for (w, h) in SIZES {
                let fmt = format(pixfmt, w, h);
                let buf = render(fmt, Pattern::ColorBars75, Adjust::default(), 3);
                let y = h as usize / 2;
                for x in 0..w as usize {
                    let bar = (0..8).rev().find(|&i| x >= i * w as usize / 8).unwrap();
                    let got = pixel(&fmt, &buf, x, y);
                    let want = expected(pixfmt, BARS_YUV[bar], BARS_RGB[bar]);
                    // The chroma of a pair of pixels is the one of its left pixel.
                    let left = (0..8)
                        .rev()
                        .find(|&i| (x & !1) >= i * w as usize / 8)
                        .unwrap();
                    let want_chroma = expected(pixfmt, BARS_YUV[left], BARS_RGB[left]);
                    match pixfmt {
                        PixelFormat::Yuyv | PixelFormat::Nv12 => {
                            assert_eq!(got[0], want[0], "{:?} Y at x {}", fmt, x);
                            assert_eq!(got[1..], want_chroma[1..], "{:?} UV at x {}", fmt, x);
                        }
                        PixelFormat::Rgb24 | PixelFormat::Grey => {
                            assert_eq!(got, want, "{:?} at x {}", fmt, x)
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn solid_colours() {
        let cases: [(Pattern, [u8; 3], [u8; 3]); 5] = [
            (Pattern::SolidWhite, [235, 128, 128], [255, 255, 255]),
            (Pattern::SolidRed, [81, 90, 240], [255, 0, 0]),
            (Pattern::SolidGreen, [145, 54, 34], [0, 255, 0]),
            (Pattern::SolidBlue, [41, 240, 110], [0, 0, 255]),
            (Pattern::SolidBlack, [16, 128, 128], [0, 0, 0]),
        ];
        for pixfmt in ALL_FORMATS {
            for (w, h) in SIZES {
                let fmt = format(pixfmt, w, h);
                for (pattern, yuv, rgb) in cases {
                    let buf = render(fmt, pattern, Adjust::default(), 5);
                    let want = expected(pixfmt, yuv, rgb);
                    for y in sample_rows(h) {
                        for x in 0..w as usize {
                            assert_eq!(pixel(&fmt, &buf, x, y), want, "{:?} {:?}", fmt, pattern);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn checkerboard() {
        let white = ([180, 128, 128], [191, 191, 191]);
        let black = ([16, 128, 128], [0, 0, 0]);
        for pixfmt in ALL_FORMATS {
            for (w, h) in SIZES {
                let fmt = format(pixfmt, w, h);
                let buf = render(fmt, Pattern::Checkerboard, Adjust::default(), 9);
                for y in sample_rows(h) {
                    for x in 0..w as usize {
                        let (yuv, rgb) = if ((x >> 4) + (y >> 4)) % 2 == 0 {
                            white
                        } else {
                            black
                        };
                        let want = expected(pixfmt, yuv, rgb);
                        assert_eq!(pixel(&fmt, &buf, x, y), want, "{:?} ({}, {})", fmt, x, y);
                    }
                }
            }
        }
    }

    #[test]
    fn padding_untouched() {
        for pixfmt in ALL_FORMATS {
            for (w, h) in [(640, 480), (160, 120), (650, 246)] {
                let min = FrameFormat::min_bytesperline(pixfmt, w);
                let fmt = FrameFormat {
                    bytesperline: min + 37,
                    ..format(pixfmt, w, h)
                };
                assert!(fmt.sizeimage() > format(pixfmt, w, h).sizeimage());
                let size = fmt.sizeimage() as usize;
                let mut buf = vec![0xa5u8; size + 100];
                for frame in [0, 1, 1234] {
                    Tpg::new(fmt, Pattern::ColorBars75, Adjust::default())
                        .fill(&mut buf[..], frame)
                        .unwrap();
                    check_bars(&fmt, &buf, &BARS_YUV, &BARS_RGB);
                    let bpl = fmt.bytesperline as usize;
                    let lines = if pixfmt == PixelFormat::Nv12 {
                        h as usize * 3 / 2
                    } else {
                        h as usize
                    };
                    for line in 0..lines {
                        let pad = &buf[line * bpl + min as usize..(line + 1) * bpl];
                        assert!(pad.iter().all(|&b| b == 0xa5), "{:?} line {}", fmt, line);
                    }
                    assert!(buf[size..].iter().all(|&b| b == 0xa5), "{:?} tail", fmt);
                }
            }
        }
    }

    #[test]
    fn small_buffer_is_an_error() {
        for pixfmt in ALL_FORMATS {
            for (w, h) in [(640, 480), (2, 2), (48, 32)] {
                let fmt = format(pixfmt, w, h);
                let tpg = Tpg::new(fmt, Pattern::ColorBars75, Adjust::default());
                let size = fmt.sizeimage() as usize;
                for len in [0, 1, size / 2, size - 1] {
                    let mut buf = vec![0x5au8; len];
                    assert_eq!(tpg.fill(&mut buf[..], 0), Err(TpgError::BufferTooSmall));
                    assert!(buf.iter().all(|&b| b == 0x5a), "written to on error");
                }
                let mut buf = vec![0u8; size];
                assert_eq!(tpg.fill(&mut buf[..], 0), Ok(()));
            }
        }
    }

    #[test]
    fn bad_formats_are_errors() {
        let mut buf = vec![0u8; 1 << 16];
        for pixfmt in ALL_FORMATS {
            let bad = [
                FrameFormat {
                    bytesperline: FrameFormat::min_bytesperline(pixfmt, 64) - 1,
                    ..format(pixfmt, 64, 48)
                },
                format(pixfmt, 0, 48),
                format(pixfmt, 64, 0),
                format(pixfmt, u32::MAX, 1),
                FrameFormat {
                    bytesperline: u32::MAX,
                    ..format(pixfmt, u32::MAX, u32::MAX)
                },
            ];
            for fmt in bad {
                let _ = fmt.sizeimage();
                let err = Tpg::new(fmt, Pattern::ColorBars75, Adjust::default())
                    .fill(&mut buf[..], 0)
                    .unwrap_err();
                assert!(
                    matches!(err, TpgError::BadFormat | TpgError::BufferTooSmall),
                    "{:?}",
                    fmt
                );
            }
            // Too narrow a pitch is a format error even with a large buffer.
            let fmt = FrameFormat {
                bytesperline: 1,
                ..format(pixfmt, 64, 48)
            };
            let tpg = Tpg::new(fmt, Pattern::SolidRed, Adjust::default());
            assert_eq!(tpg.fill(&mut buf[..], 0), Err(TpgError::BadFormat));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(FrameFormat::min_bytesperline(PixelFormat::Yuyv, 640), 1280);
        assert_eq!(FrameFormat::min_bytesperline(PixelFormat::Rgb24, 640), 1920);
        assert_eq!(FrameFormat::min_bytesperline(PixelFormat::Nv12, 640), 640);
        assert_eq!(FrameFormat::min_bytesperline(PixelFormat::Grey, 640), 640);
        assert_eq!(format(PixelFormat::Yuyv, 640, 480).sizeimage(), 614_400);
        assert_eq!(format(PixelFormat::Rgb24, 640, 480).sizeimage(), 921_600);
        assert_eq!(format(PixelFormat::Nv12, 640, 480).sizeimage(), 460_800);
        assert_eq!(format(PixelFormat::Grey, 640, 480).sizeimage(), 307_200);
        assert_eq!(format(PixelFormat::Nv12, 1920, 1080).sizeimage(), 3_110_400);
        let huge = FrameFormat {
            bytesperline: u32::MAX,
            ..format(PixelFormat::Nv12, u32::MAX, u32::MAX)
        };
        assert_eq!(huge.sizeimage(), u32::MAX);
        assert_eq!(
            FrameFormat::min_bytesperline(PixelFormat::Rgb24, u32::MAX),
            u32::MAX
        );
    }

    /// Byte ranges of the lines `rows` (of the main plane, and of the NV12 chroma plane).
    fn line_ranges(fmt: &FrameFormat, rows: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
        let bpl = fmt.bytesperline as usize;
        let row_len = FrameFormat::min_bytesperline(fmt.pixfmt, fmt.width) as usize;
        let mut v: Vec<_> = rows.clone().map(|y| y * bpl..y * bpl + row_len).collect();
        if fmt.pixfmt == PixelFormat::Nv12 {
            let base = fmt.height as usize * bpl;
            let start = rows.start.div_ceil(2);
            let end = rows.end / 2;
            v.extend((start..end).map(|y| base + y * bpl..base + y * bpl + row_len));
        }
        v
    }

    #[test]
    fn frames_differ_outside_the_sample_area_only() {
        for pixfmt in ALL_FORMATS {
            for (w, h) in SIZES {
                let fmt = format(pixfmt, w, h);
                for pattern in ALL_PATTERNS {
                    let f0 = render(fmt, pattern, Adjust::default(), 0);
                    let f1 = render(fmt, pattern, Adjust::default(), 1);
                    assert!(
                        f0 != f1,
                        "{:?} {:?}: frames 0 and 1 are the same",
                        fmt,
                        pattern
                    );
                    // Overlays stay in the top h/8 and the bottom max(h/8, 2) lines.
                    let side = (h as usize / 8).max(2);
                    let middle = h as usize / 8..h as usize - side;
                    for frame in [1, 2, 99, 12_345, u32::MAX] {
                        let f = render(fmt, pattern, Adjust::default(), frame);
                        for r in line_ranges(&fmt, middle.clone()) {
                            assert!(f0[r.clone()] == f[r], "{:?} {:?} {}", fmt, pattern, frame);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn counter_and_box_are_drawn() {
        let fmt = format(PixelFormat::Grey, 640, 480);
        let top = 480 / 8;
        let count_white = |buf: &[u8], rows: std::ops::Range<usize>| {
            rows.map(|y| {
                buf[y * 640..(y + 1) * 640]
                    .iter()
                    .filter(|&&v| v == 235)
                    .count()
            })
            .sum::<usize>()
        };
        // Solid black: only the overlays are white.
        let f0 = render(fmt, Pattern::SolidBlack, Adjust::default(), 0);
        let f8 = render(fmt, Pattern::SolidBlack, Adjust::default(), 8);
        let f12345 = render(fmt, Pattern::SolidBlack, Adjust::default(), 12_345);
        assert!(count_white(&f0, 0..top) > 0, "no counter");
        assert!(
            f0[..top * 640] != f8[..top * 640],
            "counter does not change"
        );
        assert!(count_white(&f12345, 0..top) > count_white(&f8, 0..top));
        // Nothing in the 8-pixel margin.
        for y in 0..top {
            for x in 0..8 {
                assert_eq!(f12345[y * 640 + x], 16);
            }
        }
        assert!(f12345[..8 * 640].iter().all(|&v| v == 16));
        // The box: 60x60 in the bottom 60 lines, 4 pixels further each frame.
        let side = 60;
        for (frame, buf) in [(0, &f0), (8, &f8)] {
            let x = frame * 4;
            for y in 480 - side..480 {
                let line = &buf[y * 640..(y + 1) * 640];
                assert!(
                    line[x..x + side].iter().all(|&v| v == 235),
                    "frame {}",
                    frame
                );
                assert_eq!(count_white(buf, y..y + 1), side);
            }
        }
        // It wraps around: positions 0..=580, frame 146 is at 584 - 581 = 3, made even.
        let f = render(fmt, Pattern::SolidBlack, Adjust::default(), 146);
        let row = 479 * 640;
        assert_eq!(f[row + 1], 16);
        assert!(f[row + 2..row + 62].iter().all(|&v| v == 235));
        assert_eq!(f[row + 62], 16);
        // On solid white the box is black.
        let white = render(fmt, Pattern::SolidWhite, Adjust::default(), 2);
        assert_eq!(white[row + 7], 235);
        assert!(white[row + 8..row + 68].iter().all(|&v| v == 16));
        assert_eq!(white[row + 68], 235);
    }

    #[test]
    fn small_and_odd_sizes_do_not_panic() {
        for pixfmt in ALL_FORMATS {
            for pattern in ALL_PATTERNS {
                for w in 1..=40 {
                    for h in 1..=40 {
                        for extra in [0, 3] {
                            let fmt = FrameFormat {
                                bytesperline: FrameFormat::min_bytesperline(pixfmt, w) + extra,
                                ..format(pixfmt, w, h)
                            };
                            let tpg = Tpg::new(fmt, pattern, Adjust::default());
                            let mut buf = vec![0u8; fmt.sizeimage() as usize];
                            for frame in [0, 1, 7, u32::MAX] {
                                assert_eq!(tpg.fill(&mut buf[..], frame), Ok(()), "{:?}", fmt);
                            }
                            if !buf.is_empty() {
                                let short = buf.len() - 1;
                                assert_eq!(
                                    tpg.fill(&mut buf[..short], 0),
                                    Err(TpgError::BufferTooSmall)
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn odd_width_yuyv_and_odd_height_nv12() {
        // Not formats the driver accepts, but they must work sensibly.
        for (pixfmt, w, h) in [
            (PixelFormat::Yuyv, 641, 480),
            (PixelFormat::Nv12, 641, 480),
            (PixelFormat::Nv12, 640, 481),
            (PixelFormat::Nv12, 641, 481),
        ] {
            let fmt = format(pixfmt, w, h);
            let buf = render(fmt, Pattern::ColorBars75, Adjust::default(), 77);
            for i in 0..8 {
                let x = bar_centre(w, i);
                for y in sample_rows(h) {
                    assert_eq!(pixel(&fmt, &buf, x, y)[0], BARS_YUV[i][0], "{:?}", fmt);
                }
            }
        }
    }

    #[test]
    fn defaults_are_identity() {
        let d = Adjust::default();
        assert_eq!(
            d,
            Adjust {
                brightness: 128,
                contrast: 128,
                saturation: 128,
                hue: 0
            }
        );
        // The exact bars above were checked with the defaults; out-of-range values clamp.
        for pixfmt in ALL_FORMATS {
            let fmt = format(pixfmt, 320, 240);
            let clamped = |a: Adjust| render(fmt, Pattern::ColorBars75, a, 0);
            let a = Adjust {
                brightness: 1000,
                contrast: -5,
                saturation: i32::MAX,
                hue: i32::MIN,
            };
            let b = Adjust {
                brightness: 255,
                contrast: 0,
                saturation: 255,
                hue: -128,
            };
            assert_eq!(clamped(a), clamped(b));
        }
    }

    fn bars_with(pixfmt: PixelFormat, adjust: Adjust) -> [[u8; 3]; 8] {
        let fmt = format(pixfmt, 320, 240);
        let buf = render(fmt, Pattern::ColorBars75, adjust, 0);
        core::array::from_fn(|i| pixel(&fmt, &buf, bar_centre(320, i), 120))
    }

    fn adjusted(f: impl Fn(&mut Adjust)) -> Adjust {
        let mut a = Adjust::default();
        f(&mut a);
        a
    }

    #[test]
    fn brightness_and_contrast() {
        let bright = adjusted(|a| a.brightness = 160);
        let yuv = bars_with(PixelFormat::Yuyv, bright);
        for i in 0..8 {
            assert_eq!(
                yuv[i],
                [BARS_YUV[i][0] + 32, BARS_YUV[i][1], BARS_YUV[i][2]]
            );
        }
        let grey = bars_with(PixelFormat::Grey, bright);
        assert_eq!(grey[0][0], 212);
        let rgb = bars_with(PixelFormat::Rgb24, bright);
        assert_eq!(rgb[1], [223, 223, 32]);

        let dark = bars_with(PixelFormat::Nv12, adjusted(|a| a.brightness = 0));
        assert_eq!(dark[0], [52, 128, 128]);
        assert_eq!(dark[7], [0, 128, 128]);

        let half = adjusted(|a| a.contrast = 64);
        let yuv = bars_with(PixelFormat::Yuyv, half);
        assert_eq!(yuv[0], [98, 128, 128]); // 16 + 164 / 2
        assert_eq!(yuv[7], [16, 128, 128]);
        assert_eq!(yuv[1][1..], BARS_YUV[1][1..]);
        let rgb = bars_with(PixelFormat::Rgb24, half);
        assert_eq!(rgb[1], [96, 96, 0]); // 191.25 / 2 rounded
        let zero = bars_with(PixelFormat::Grey, adjusted(|a| a.contrast = 0));
        assert!(zero.iter().all(|p| p[0] == 16));
        let high = bars_with(PixelFormat::Grey, adjusted(|a| a.contrast = 255));
        assert_eq!(high[0][0], 255); // clamped
    }

    #[test]
    fn saturation_and_hue() {
        let grey = bars_with(PixelFormat::Yuyv, adjusted(|a| a.saturation = 0));
        for i in 0..8 {
            assert_eq!(grey[i], [BARS_YUV[i][0], 128, 128]);
        }
        let double = bars_with(PixelFormat::Nv12, adjusted(|a| a.saturation = 255));
        assert_eq!(double[1], [162, 0, 156]); // U 128 - 84 * 255/128 clamps, V 128 + 14 * 1.99
                                              // A quarter turn: U' = -(V - 128), V' = U - 128.
        let quarter = bars_with(PixelFormat::Yuyv, adjusted(|a| a.hue = 64));
        for i in 0..8 {
            let [y, u, v] = BARS_YUV[i];
            assert_eq!(quarter[i], [y, (256 - u16::from(v)) as u8, u]);
        }
        // A half turn negates both.
        let half = bars_with(PixelFormat::Nv12, adjusted(|a| a.hue = -128));
        for i in 0..8 {
            let [y, u, v] = BARS_YUV[i];
            let neg = |c: u8| (256 - u16::from(c)).min(255) as u8;
            assert_eq!(half[i], [y, neg(u), neg(v)]);
        }
        let small = bars_with(PixelFormat::Yuyv, adjusted(|a| a.hue = 5));
        assert_ne!(small, BARS_YUV);
        assert_eq!(small[0], BARS_YUV[0]);
    }

    #[test]
    fn rgb_saturation_and_hue() {
        let close = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= 1);
        // No saturation: grey at the luma of each bar (0.299 R + 0.587 G + 0.114 B).
        let grey = bars_with(PixelFormat::Rgb24, adjusted(|a| a.saturation = 0));
        let lumas = [191, 169, 134, 112, 79, 57, 22, 0];
        for i in 0..8 {
            let l = lumas[i];
            assert!(close(grey[i], [l, l, l]), "bar {}: {:?}", i, grey[i]);
        }
        // A half turn of the hue: R' = 2Y - R, ...
        let half = bars_with(PixelFormat::Rgb24, adjusted(|a| a.hue = -128));
        assert!(close(half[5], [0, 114, 114]), "{:?}", half[5]);
        assert!(close(half[0], [191, 191, 191]), "{:?}", half[0]);
        // The round trip through (Cb, Cr) is close to exact.
        let near = bars_with(PixelFormat::Rgb24, adjusted(|a| a.hue = 1));
        for i in 0..8 {
            for c in 0..3 {
                assert!(near[i][c].abs_diff(BARS_RGB[i][c]) <= 6, "{:?}", near);
            }
        }
        assert_ne!(near, BARS_RGB);
    }

    /// The colour maths in `Tpg::new` cannot overflow for any adjustment: its results depend
    /// on (brightness, contrast) and on (hue, saturation) separately, so sweep each pair
    /// exhaustively with the other at its extremes (the build checks overflow, see
    /// Cargo.toml).
    #[test]
    fn every_adjustment_is_safe() {
        let fmts = [
            format(PixelFormat::Yuyv, 2, 2),
            format(PixelFormat::Rgb24, 2, 2),
        ];
        let patterns = [
            Pattern::ColorBars75,
            Pattern::SolidWhite,
            Pattern::SolidRed,
            Pattern::SolidGreen,
            Pattern::SolidBlue,
        ];
        let check = |adjust: Adjust| {
            for fmt in fmts {
                for pattern in patterns {
                    std::hint::black_box(Tpg::new(fmt, pattern, adjust));
                }
            }
        };
        for a in -300..300 {
            for b in -300..300 {
                for (brightness, contrast) in [(0, 255), (255, 255)] {
                    check(Adjust {
                        brightness,
                        contrast,
                        saturation: a,
                        hue: b,
                    });
                }
                for (saturation, hue) in [(255, -128), (255, 127), (255, 64)] {
                    check(Adjust {
                        brightness: a,
                        contrast: b,
                        saturation,
                        hue,
                    });
                }
            }
        }
    }

    #[test]
    fn pattern_names() {
        assert_eq!(PATTERN_NAMES.len(), ALL_PATTERNS.len());
        for (i, p) in ALL_PATTERNS.iter().enumerate() {
            assert_eq!(Pattern::from_index(i as u32), Some(*p));
        }
        assert_eq!(Pattern::from_index(7), None);
        assert_eq!(Pattern::from_index(u32::MAX), None);
        let names: Vec<&str> = PATTERN_NAMES.iter().map(|n| n.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "75% Colorbar",
                "Solid White",
                "Solid Red",
                "Solid Green",
                "Solid Blue",
                "Solid Black",
                "Checkerboard"
            ]
        );
    }

    /// `fill_over` on a buffer holding frame `prev` gives exactly what `fill` gives, bytes
    /// past the image and padding included, whatever the format, pattern, size and frames
    /// (counters of other lengths, boxes far apart, overlapping or wrapping around).
    #[test]
    fn fill_over_equals_fill() {
        let sizes = [
            (1920, 1080, 0),
            (640, 480, 0),
            (650, 246, 6),
            (176, 144, 0),
            (48, 32, 2),
            (30, 22, 0),
            (16, 16, 0),
            (1918, 1078, 0),
        ];
        let pairs: [(u32, u32); 12] = [
            (0, 1),
            (1, 5),
            (9, 10),
            (96, 100),
            (99_999, 100_003),
            (5, 4),
            (1234, 1234),
            (u32::MAX, 3),
            (3, u32::MAX),
            (7, 1_000_000),
            (400, 403),
            (123, 4_000_000_000),
        ];
        let adjusts = [
            Adjust::default(),
            Adjust {
                brightness: 90,
                contrast: 200,
                saturation: 30,
                hue: -70,
            },
        ];
        for pixfmt in ALL_FORMATS {
            for pattern in ALL_PATTERNS {
                for (w, h, pad) in sizes {
                    let mut fmt = format(pixfmt, w, h);
                    fmt.bytesperline += pad;
                    for adjust in adjusts {
                        let tpg = Tpg::new(fmt, pattern, adjust);
                        let size = fmt.sizeimage() as usize + 7;
                        let garbage: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
                        for (prev, frame) in pairs {
                            let mut want = garbage.clone();
                            tpg.fill(&mut want[..], frame).unwrap();
                            let mut got = garbage.clone();
                            tpg.fill(&mut got[..], prev).unwrap();
                            tpg.fill_over(&mut got[..], frame, Some(prev)).unwrap();
                            assert!(
                                got == want,
                                "{pixfmt:?} {pattern:?} {w}x{h}+{pad} {adjust:?}: \
                                 frame {frame} over {prev} differs"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Prints the time to fill 1920x1080 frames (with `-- --nocapture`); asserts nothing.
    #[test]
    fn timing_1080p() {
        let frames = 60u32;
        for pixfmt in ALL_FORMATS {
            for pattern in [Pattern::ColorBars75, Pattern::Checkerboard] {
                let fmt = format(pixfmt, 1920, 1080);
                let tpg = Tpg::new(fmt, pattern, Adjust::default());
                let mut buf = vec![0u8; fmt.sizeimage() as usize];
                tpg.fill(&mut buf[..], 0).unwrap();
                let start = Instant::now();
                for frame in 0..frames {
                    tpg.fill(&mut buf[..], frame).unwrap();
                }
                let us = start.elapsed().as_micros() / u128::from(frames);
                // Over the frame the buffer held 4 frames before (4 buffers in turn).
                let start = Instant::now();
                for frame in 4..frames + 4 {
                    tpg.fill_over(&mut buf[..], frame, Some(frame - 4)).unwrap();
                }
                let over = start.elapsed().as_micros() / u128::from(frames);
                println!(
                    "tpg 1920x1080 {:?} {:?}: {}.{:03} ms per frame, {}.{:03} ms over an earlier one",
                    pixfmt,
                    pattern,
                    us / 1000,
                    us % 1000,
                    over / 1000,
                    over % 1000
                );
            }
        }
    }

    /// Writes sample frames as PPM files into the temporary directory, for looking at them,
    /// and checks that each is a whole RGB image of its size.
    #[test]
    fn dump_ppm() {
        for (w, h, pattern, name) in [
            (640, 480, Pattern::ColorBars75, "bars"),
            (640, 480, Pattern::Checkerboard, "checker"),
            (160, 120, Pattern::SolidRed, "red-small"),
        ] {
            let fmt = format(PixelFormat::Rgb24, w, h);
            let buf = render(fmt, pattern, Adjust::default(), 1_234_567);
            let mut out = format!("P6\n{} {}\n255\n", w, h).into_bytes();
            out.extend_from_slice(&buf);
            let path = std::env::temp_dir().join(format!("tpg-{}.ppm", name));
            std::fs::write(&path, &out).unwrap();
            let back = std::fs::read(&path).unwrap();
            let header = format!("P6\n{} {}\n255\n", w, h);
            assert!(back.starts_with(header.as_bytes()));
            assert_eq!(back.len(), header.len() + (w * h * 3) as usize);
            println!("{}", path.display());
        }
    }
}
