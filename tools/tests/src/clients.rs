//! Real clients against rvivid: GStreamer (`gst-launch-1.0 v4l2src`), ffmpeg and ffprobe
//! (`-f v4l2`) and `v4l2-ctl`, run as subprocesses in the guest. Each test asserts what the
//! client got (caps, frame count, byte size, pixel values, sequence numbers and timestamps),
//! not only its exit status.
//!
//! The I/O modes come from one table, [`IO_MODES`]: a test runs every mode rvivid advertises
//! (QUERYCAP, REQBUFS capabilities, EXPBUF) in each client that has it, so a mode rvivid gains
//! is tested by every client without a new test. What ran is in each test's log.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::formats::{set_format, RestoreDefaults};
use crate::frame::{check_color_bars, FrameFormat, FORMATS};
use crate::harness::{command_line, first_lines, Ctx, TestResult};
use crate::v4l2::*;
use crate::{ensure, ok, open_rvivid};

/// How long one client run may take: a few frames, but under TCG with the debug kernel on a
/// machine other guests load, and ffmpeg maps about 250 shared libraries over 9p: its first
/// start took 96 s, later ones 30 s.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

/// v4l2src's warnings (lost frames) on stderr, without colour codes.
const GST_DEBUG_ENV: &[(&str, &str)] = &[("GST_DEBUG", "v4l2src:2"), ("GST_DEBUG_NO_COLOR", "1")];

/// ffmpeg's log without colour codes.
const FFMPEG_ENV: &[(&str, &str)] = &[("AV_LOG_FORCE_NOCOLOR", "1")];

/// An I/O mode and how each client names it.
pub struct IoMode {
    pub name: &'static str,
    /// Whether rvivid advertises the mode.
    advertised: fn(&Device) -> Result<bool, String>,
    /// `v4l2src io-mode=`.
    gst: Option<&'static str>,
    /// `v4l2-ctl`'s streaming option.
    v4l2_ctl: Option<&'static str>,
    /// Whether the client gets the driver's sequence numbers and timestamps with each frame
    /// (not through `read()`, which carries the data only: v4l2src numbers the frames itself
    /// and stamps each with its clock when it reads it).
    driver_timestamps: bool,
}

/// Every I/O mode the clients have; the tests run those rvivid advertises. (ffmpeg's v4l2
/// input uses mmap only.)
pub static IO_MODES: &[IoMode] = &[
    IoMode {
        name: "mmap",
        advertised: |d| buf_cap(d, V4L2_MEMORY_MMAP, V4L2_BUF_CAP_SUPPORTS_MMAP),
        gst: Some("mmap"),
        v4l2_ctl: Some("--stream-mmap"),
        driver_timestamps: true,
    },
    IoMode {
        name: "read",
        advertised: |d| {
            let cap = ok("VIDIOC_QUERYCAP", d.querycap())?;
            Ok(cap.device_caps & V4L2_CAP_READWRITE != 0)
        },
        gst: Some("rw"),
        // v4l2-ctl has no read() capture.
        v4l2_ctl: None,
        driver_timestamps: false,
    },
    IoMode {
        name: "userptr",
        advertised: |d| buf_cap(d, V4L2_MEMORY_USERPTR, V4L2_BUF_CAP_SUPPORTS_USERPTR),
        // v4l2src's io-mode=userptr only imports into a buffer pool the element after it
        // proposes ("No downstream pool to import from"), which no headless sink does:
        // gst_v4l2src_imports_into_v4l2sink runs it (and io-mode=dmabuf-import) into
        // v4l2sink on vivid's output.
        gst: None,
        v4l2_ctl: Some("--stream-user"),
        driver_timestamps: true,
    },
    IoMode {
        name: "dmabuf-export",
        advertised: supports_expbuf,
        gst: Some("dmabuf"),
        v4l2_ctl: None,
        driver_timestamps: true,
    },
];

/// Whether REQBUFS(0) of `memory` succeeds and reports `cap`.
fn buf_cap(dev: &Device, memory: u32, cap: u32) -> Result<bool, String> {
    match dev.reqbufs_with(0, V4L2_BUF_TYPE_VIDEO_CAPTURE, memory) {
        Ok(r) => Ok(r.capabilities & cap != 0),
        Err(e) if e.0 == libc::EINVAL => Ok(false),
        Err(e) => Err(format!("VIDIOC_REQBUFS(0) of memory {memory}: {e}")),
    }
}

/// Whether an MMAP buffer can be exported as a DMABUF (VIDIOC_EXPBUF).
fn supports_expbuf(dev: &Device) -> Result<bool, String> {
    ok("VIDIOC_REQBUFS(1)", dev.reqbufs(1))?;
    let mut e: v4l2_exportbuffer = zeroed();
    e.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    e.flags = libc::O_CLOEXEC as u32;
    let r = dev.ioctl(VIDIOC_EXPBUF, &mut e);
    if r.is_ok() {
        // SAFETY: EXPBUF succeeded, so `e.fd` is a new fd this process owns.
        drop(unsafe { OwnedFd::from_raw_fd(e.fd) });
    }
    ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    Ok(r.is_ok())
}

/// The modes of [`IO_MODES`] rvivid advertises, and a line for the log saying which ran.
fn advertised_modes(ctx: &Ctx) -> Result<(Vec<&'static IoMode>, String), String> {
    let dev = open_rvivid(ctx)?;
    let mut modes = Vec::new();
    let mut note = String::from("I/O modes:");
    for m in IO_MODES {
        let yes = (m.advertised)(&dev).map_err(|e| format!("is {} advertised: {e}", m.name))?;
        note.push_str(&format!(
            " {}={}",
            m.name,
            if yes { "advertised" } else { "not advertised" }
        ));
        if yes {
            modes.push(m);
        }
    }
    note.push('\n');
    Ok((modes, note))
}

/// A client run: the command line, what it printed, and its status.
struct Run {
    line: String,
    out: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// The run for the test's log.
    fn log(&self) -> String {
        format!(
            "$ {}\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n\n",
            self.line,
            self.out.status,
            first_lines(&self.stdout(), 200),
            first_lines(&self.stderr(), 60)
        )
    }

    /// Fails unless the client exited 0.
    fn success(&self) -> TestResult {
        ensure(self.out.status.success(), || {
            format!(
                "`{}` failed ({}): {}",
                self.line,
                self.out.status,
                first_lines(&self.stderr(), 8)
            )
        })
    }
}

/// Runs `cmd args` with `env` added, stdin from /dev/null, within [`CLIENT_TIMEOUT`] (killed
/// after it: an error).
fn run_client(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Run, String> {
    let line = format!(
        "{}{}",
        env.iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        command_line(cmd, args)
    );
    let mut child = Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    // Drain the pipes in threads so that a chatty client never blocks on them.
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| format!("{line}: wait: {e}"))? {
            break Some(s);
        }
        if start.elapsed() >= CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "`{line}` did not finish within {CLIENT_TIMEOUT:?} (killed); stderr: {}",
            first_lines(&String::from_utf8_lossy(&stderr), 8)
        ));
    };
    Ok(Run {
        line,
        out: Output {
            status,
            stdout,
            stderr,
        },
    })
}

/// A scratch file on the guest's tmpfs, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rvb2-client-{name}"));
        let _ = std::fs::remove_file(&p);
        Scratch(p)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| format!("{}: {e}", self.0.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks that `data` is `frames` frames of `fmt` back to back, each showing the colour bars.
fn check_frames(what: &str, data: &[u8], fmt: &FrameFormat, frames: usize) -> TestResult {
    let size = fmt.sizeimage as usize;
    ensure(data.len() == frames * size, || {
        format!(
            "{what}: {} bytes, want {frames} frames of {size} ({})",
            data.len(),
            fmt.describe()
        )
    })?;
    for (n, frame) in data.chunks(size).enumerate() {
        check_color_bars(frame, fmt).map_err(|e| format!("{what}: frame {n}: {e}"))?;
    }
    Ok(())
}

/// GStreamer's name of a V4L2 format.
fn gst_format(fourcc: u32) -> &'static str {
    match fourcc {
        V4L2_PIX_FMT_YUYV => "YUY2",
        V4L2_PIX_FMT_RGB24 => "RGB",
        V4L2_PIX_FMT_NV12 => "NV12",
        V4L2_PIX_FMT_GREY => "GRAY8",
        _ => "?",
    }
}

/// ffmpeg's name of a V4L2 format.
fn ffmpeg_format(fourcc: u32) -> &'static str {
    match fourcc {
        V4L2_PIX_FMT_YUYV => "yuyv422",
        V4L2_PIX_FMT_RGB24 => "rgb24",
        V4L2_PIX_FMT_NV12 => "nv12",
        V4L2_PIX_FMT_GREY => "gray",
        _ => "?",
    }
}

/// The node's path as a string.
fn node(ctx: &Ctx) -> Result<String, String> {
    Ok(ctx.find_rvivid()?.to_string_lossy().into_owned())
}

/// The frame intervals rvivid offers for `fourcc` at `width`x`height` (discrete), as
/// (numerator, denominator).
fn intervals(
    dev: &Device,
    fourcc: u32,
    width: u32,
    height: u32,
) -> Result<Vec<(u32, u32)>, String> {
    let mut v = Vec::new();
    for index in 0.. {
        let mut e: v4l2_frmivalenum = zeroed();
        e.index = index;
        e.pixel_format = fourcc;
        e.width = width;
        e.height = height;
        match dev.ioctl(VIDIOC_ENUM_FRAMEINTERVALS, &mut e) {
            Ok(()) => {
                ensure(e.type_ == V4L2_FRMIVAL_TYPE_DISCRETE, || {
                    format!("VIDIOC_ENUM_FRAMEINTERVALS {index}: type {}", e.type_)
                })?;
                let f = e.discrete();
                v.push((f.numerator, f.denominator));
            }
            Err(err) if err.0 == libc::EINVAL => break,
            Err(err) => return Err(format!("VIDIOC_ENUM_FRAMEINTERVALS {index}: {err}")),
        }
    }
    ensure(!v.is_empty(), || {
        format!("no frame interval for {width}x{height}")
    })?;
    Ok(v)
}

/// The caps `v4l2src`'s source pad got, from `gst-launch-1.0 -v` output.
fn gst_src_caps(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|l| l.split_once("GstV4l2Src:v4l2src0.GstPad:src: caps = "))
        .map(|(_, caps)| caps)
}

/// Checks that `caps` (GStreamer's text) has each of `fields` (e.g. "width=(int)320").
fn check_caps(what: &str, caps: Option<&str>, fields: &[String]) -> TestResult {
    let caps = caps.ok_or_else(|| format!("{what}: gst-launch -v printed no caps for v4l2src"))?;
    for f in fields {
        ensure(caps.split(", ").any(|c| c == f), || {
            format!("{what}: v4l2src's caps {caps:?} lack {f:?}")
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// GStreamer
// ---------------------------------------------------------------------------------------------

/// One buffer as `identity` or `fakesink` with `silent=false` reports it under
/// `gst-launch-1.0 -v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GstBuffer {
    size: u64,
    pts_ns: u64,
    offset: u64,
}

/// Parses "H:MM:SS.NNNNNNNNN" into nanoseconds.
fn parse_clock_time(s: &str) -> Option<u64> {
    let mut it = s.split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    let (s, ns) = sec.split_once('.')?;
    let (h, m, s, ns): (u64, u64, u64, u64) = (
        h.parse().ok()?,
        m.parse().ok()?,
        s.parse().ok()?,
        ns.parse().ok()?,
    );
    Some(((h * 60 + m) * 60 + s) * 1_000_000_000 + ns)
}

/// The buffers an `identity` or `fakesink` with `silent=false` reported, in order.
fn gst_buffers(stdout: &str) -> Vec<GstBuffer> {
    stdout
        .lines()
        .filter(|l| l.contains("last-message = chain"))
        .filter_map(|l| {
            let field = |name: &str| -> Option<&str> {
                let at = l.find(name)? + name.len();
                l[at..].split([',', ')', ' ']).next()
            };
            let size = l.split_once(") (")?.1.split(' ').next()?.parse().ok()?;
            Some(GstBuffer {
                size,
                pts_ns: parse_clock_time(field("pts: ")?)?,
                offset: field("offset: ")?.parse().ok()?,
            })
        })
        .collect()
}

/// v4l2src's "lost frames detected: count = N - ts: T" warnings, as (N, T in ns).
fn gst_lost_frames(stderr: &str) -> Vec<(u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("lost frames detected: count = "))
        .filter_map(|(_, rest)| {
            let (count, ts) = rest.split_once(" - ts: ")?;
            let ts = ts.split_whitespace().next()?;
            Some((count.parse().ok()?, parse_clock_time(ts)?))
        })
        .collect()
}

/// Checks a v4l2src stream as fakesink saw it: `frames` buffers of `size` bytes, offsets
/// (V4L2 sequence numbers) increasing, each gap matched by the timestamps (`dseq` intervals of
/// `interval_ns`, to within half an interval: v4l2src maps the driver's timestamps to its
/// clock through two clock reads, which a loaded machine can pull apart by milliseconds; a
/// frame from before the pipeline started has pts 0 and is not compared; `None` for a mode
/// that carries no driver timestamp, where v4l2src stamps a frame when it gets it), and
/// v4l2src's lost-frame warnings adding up to exactly those gaps. The first buffer is not
/// compared: v4l2src gives it its own offset 0, and counts the loss at the second buffer from
/// that. Returns the frames dropped after the first buffer.
fn check_gst_stream(
    what: &str,
    bufs: &[GstBuffer],
    frames: usize,
    size: u64,
    interval_ns: Option<u64>,
    lost: &[(u64, u64)],
) -> Result<u64, String> {
    ensure(bufs.len() == frames, || {
        format!(
            "{what}: fakesink reported {} buffers, want {frames}",
            bufs.len()
        )
    })?;
    let mut gaps = 0;
    for (n, b) in bufs.iter().enumerate() {
        ensure(b.size == size, || {
            format!("{what}: buffer {n} has {} bytes, want {size}", b.size)
        })?;
        let Some(prev) = n.checked_sub(1).map(|p| bufs[p]) else {
            continue;
        };
        ensure(b.offset > prev.offset, || {
            format!(
                "{what}: buffer {n}: offset (sequence) {} after {}",
                b.offset, prev.offset
            )
        })?;
        if n == 1 {
            // v4l2src labels the first buffer with its own counter (0), not always the
            // driver's sequence number, and checks no loss after it.
            continue;
        }
        let dseq = b.offset - prev.offset;
        gaps += dseq - 1;
        let Some(interval_ns) = interval_ns else {
            continue;
        };
        if prev.pts_ns == 0 {
            // v4l2src clamps the running time of a frame captured before the pipeline
            // started to 0: it says nothing of the frame's time.
            continue;
        }
        let dts = i128::from(b.pts_ns) - i128::from(prev.pts_ns);
        let want = i128::from(dseq) * i128::from(interval_ns);
        ensure((dts - want).abs() < i128::from(interval_ns / 2), || {
            format!(
                "{what}: buffer {n} (offset {}): pts {dts} ns after the previous one (offset \
                 {}), want {dseq} intervals = {want} ns +- half an interval",
                b.offset, prev.offset
            )
        })?;
    }
    // The warning at the second buffer compares with v4l2src's own count of the first.
    let second_pts = bufs.get(1).map(|b| b.pts_ns);
    let lost_reported: u64 = lost
        .iter()
        .filter(|&&(_, ts)| Some(ts) != second_pts)
        .map(|&(count, _)| count)
        .sum();
    ensure(lost_reported == gaps, || {
        format!(
            "{what}: v4l2src reported {lost_reported} lost frames, the sequence numbers after \
             the first buffer show {gaps}"
        )
    })?;
    Ok(gaps)
}

/// The size each format is captured at by [`gst_v4l2src_each_format`], and which of the frame
/// rates rvivid offers there (by index, modulo their number): together they negotiate several
/// sizes and every rate of the usual three.
const GST_CASES: [(u32, u32, u32, usize); 4] = [
    (V4L2_PIX_FMT_YUYV, 320, 240, 0),
    (V4L2_PIX_FMT_RGB24, 176, 144, 1),
    (V4L2_PIX_FMT_NV12, 640, 480, 2),
    (V4L2_PIX_FMT_GREY, 352, 288, 0),
];

/// `gst-launch-1.0 -v v4l2src io-mode=M num-buffers=8 ! video/x-raw,format=F,width=W,
/// height=H,framerate=R ! identity silent=false ! filesink` for every advertised I/O mode and
/// every rvivid format (at the sizes and rates of [`GST_CASES`]): exit 0; v4l2src negotiated
/// exactly those caps and rvivid is left set to them (G_FMT, G_PARM); the file is 8 frames of
/// sizeimage bytes, each showing the colour bars; and the buffers' offsets (V4L2 sequence
/// numbers) and timestamps agree, with exactly the sequence gaps reported as lost frames by
/// v4l2src (no spurious drop; see [`check_gst_stream`]).
pub fn gst_v4l2src_each_format(ctx: &mut Ctx) -> TestResult {
    const FRAMES: usize = 8;
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let dev = open_rvivid(ctx)?;
    let (modes, mut log) = advertised_modes(ctx)?;
    let result = (|| {
        for mode in modes.iter().filter(|m| m.gst.is_some()) {
            let io = mode.gst.unwrap_or_default();
            for (fourcc, w, h, rate) in GST_CASES {
                let fmt = FrameFormat::packed(fourcc, w, h).ok_or("unknown format")?;
                let offered = intervals(&dev, fourcc, w, h)?;
                let (num, den) = offered[rate % offered.len()];
                let what = format!("io-mode={io} {} at {den}/{num} fps", fmt.describe());
                let file = Scratch::new(&format!("gst-{io}-{}.raw", gst_format(fourcc)));
                let (device, count) = (format!("device={node}"), format!("num-buffers={FRAMES}"));
                let iomode = format!("io-mode={io}");
                let caps = format!(
                    "video/x-raw,format={},width={w},height={h},framerate={den}/{num}",
                    gst_format(fourcc)
                );
                let location = format!("location={}", file.path());
                let args = [
                    "-v",
                    "v4l2src",
                    &*device,
                    &*count,
                    &*iomode,
                    "!",
                    &*caps,
                    "!",
                    "identity",
                    "silent=false",
                    "!",
                    "filesink",
                    &*location,
                ];
                let run = run_client("gst-launch-1.0", &args, GST_DEBUG_ENV)?;
                log.push_str(&run.log());
                run.success()?;
                let stdout = run.stdout();
                check_caps(
                    &what,
                    gst_src_caps(&stdout),
                    &[
                        format!("format=(string){}", gst_format(fourcc)),
                        format!("width=(int){w}"),
                        format!("height=(int){h}"),
                        format!("framerate=(fraction){den}/{num}"),
                    ],
                )?;
                // rvivid keeps what GStreamer set.
                let cur = FrameFormat::from_pix(ok("VIDIOC_G_FMT", dev.g_fmt())?.pix());
                ensure(cur == fmt, || {
                    format!("{what}: after the run G_FMT is {}", cur.describe())
                })?;
                let p = ok("VIDIOC_G_PARM", crate::formats::g_parm(&dev))?;
                let tpf = p.capture().timeperframe;
                ensure(
                    u64::from(tpf.numerator) * u64::from(den)
                        == u64::from(tpf.denominator) * u64::from(num),
                    || {
                        format!(
                            "{what}: after the run G_PARM is {}/{}",
                            tpf.numerator, tpf.denominator
                        )
                    },
                )?;
                check_frames(&what, &file.read()?, &fmt, FRAMES)?;
                let dropped = check_gst_stream(
                    &what,
                    &gst_buffers(&stdout),
                    FRAMES,
                    u64::from(fmt.sizeimage),
                    mode.driver_timestamps
                        .then(|| 1_000_000_000 * u64::from(num) / u64::from(den)),
                    &gst_lost_frames(&run.stderr()),
                )?;
                log.push_str(&format!("{what}: ok, {dropped} frames dropped\n\n"));
            }
        }
        Ok(())
    })();
    ctx.save_log("gst-formats.txt", &log)?;
    result
}

/// Caps negotiation that must fail: a frame rate and a width rvivid does not offer are not
/// negotiated (gst-launch fails with not-negotiated). ([`gst_v4l2src_each_format`] checks
/// that what rvivid offers is.)
pub fn gst_caps_negotiation(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let dev = open_rvivid(ctx)?;
    let mut log = String::new();
    let result = (|| {
        let offered = intervals(&dev, V4L2_PIX_FMT_YUYV, 320, 240)?;
        let odd_rate = (1..1000)
            .find(|&fps| !offered.iter().any(|&(n, d)| n * fps == d))
            .unwrap_or(1);
        for caps in [
            format!("video/x-raw,format=YUY2,width=320,height=240,framerate={odd_rate}/1"),
            format!(
                "video/x-raw,format=YUY2,width={},height=240",
                crate::frame::MAX_WIDTH + 2
            ),
        ] {
            let device = format!("device={node}");
            let args = [
                "v4l2src",
                &*device,
                "num-buffers=1",
                "!",
                &*caps,
                "!",
                "fakesink",
            ];
            let run = run_client("gst-launch-1.0", &args, &[])?;
            log.push_str(&run.log());
            let text = format!("{}{}", run.stdout(), run.stderr());
            ensure(
                !run.out.status.success() && text.contains("not-negotiated"),
                || {
                    format!(
                        "`{}`: {}, want a failure with not-negotiated: {}",
                        run.line,
                        run.out.status,
                        first_lines(&text, 8)
                    )
                },
            )?;
        }
        Ok(())
    })();
    ctx.save_log("gst-caps.txt", &log)?;
    result
}

/// The big-endian u32 at `at` in `data`.
fn be32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// A frame through `pngenc`: `v4l2src ! video/x-raw,format=RGB,width=320,height=240 !
/// pngenc ! filesink` writes a PNG whose header says 320x240, 8-bit RGB, and which `pngdec`
/// decodes back to an RGB frame showing the colour bars.
pub fn gst_pngenc_color_bars(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let png = Scratch::new("frame.png");
    let raw = Scratch::new("frame-decoded.rgb");
    let mut log = String::new();
    let result = (|| {
        let (device, location) = (format!("device={node}"), format!("location={}", png.path()));
        let args = [
            "v4l2src",
            &*device,
            "num-buffers=1",
            "!",
            "video/x-raw,format=RGB,width=320,height=240",
            "!",
            "pngenc",
            "!",
            "filesink",
            &*location,
        ];
        let run = run_client("gst-launch-1.0", &args, &[])?;
        log.push_str(&run.log());
        run.success()?;
        let data = png.read()?;
        ensure(data.starts_with(b"\x89PNG\r\n\x1a\n"), || {
            format!("{}: no PNG signature ({} bytes)", png.path(), data.len())
        })?;
        // The first chunk is IHDR: width, height, bit depth, colour type 2 (RGB).
        let ihdr = (
            be32(&data, 8),
            data.get(12..16),
            be32(&data, 16),
            be32(&data, 20),
        );
        let depth_type = (data.get(24).copied(), data.get(25).copied());
        ensure(
            ihdr == (Some(13), Some(&b"IHDR"[..]), Some(320), Some(240))
                && depth_type == (Some(8), Some(2)),
            || format!("{}: IHDR {ihdr:?}, depth/type {depth_type:?}", png.path()),
        )?;
        let (src, location) = (
            format!("location={}", png.path()),
            format!("location={}", raw.path()),
        );
        let args = [
            "filesrc",
            &*src,
            "!",
            "pngdec",
            "!",
            "video/x-raw,format=RGB",
            "!",
            "filesink",
            &*location,
        ];
        let run = run_client("gst-launch-1.0", &args, &[])?;
        log.push_str(&run.log());
        run.success()?;
        let fmt = FrameFormat::packed(V4L2_PIX_FMT_RGB24, 320, 240).ok_or("RGB24")?;
        check_frames("the PNG decoded by pngdec", &raw.read()?, &fmt, 1)
    })();
    ctx.save_log("gst-png.txt", &log)?;
    result
}

/// Drop accounting through GStreamer: with rvivid holding each buffer back 100 ms
/// (RVIVID_CID_HOLD_MS) at 30 fps, the frames it produced meanwhile had no buffer, so each
/// buffer v4l2src gets is at least 4 frames after the previous one (frame k's buffer comes
/// back no earlier than frame k+1's time + 100 ms); the timestamps show the same gaps, and
/// v4l2src reports exactly those frames as lost.
pub fn gst_reports_held_frames_as_lost(ctx: &mut Ctx) -> TestResult {
    const FRAMES: usize = 6;
    const HOLD_MS: i32 = 100;
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = set_format(&dev, V4L2_PIX_FMT_GREY, 64, 48)?;
    ok(
        "VIDIOC_S_PARM 1/30",
        crate::formats::s_parm(&dev, 1, 30).map(drop),
    )?;
    let interval_ns = crate::streaming::frame_interval_ns(&dev)?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_HOLD_MS",
        dev.s_ctrl(RVIVID_CID_HOLD_MS, HOLD_MS),
    )?;
    let min_step = 1 + HOLD_MS as u64 * 1_000_000 / interval_ns;
    let device = format!("device={node}");
    let count = format!("num-buffers={FRAMES}");
    let args = [
        "-v",
        "v4l2src",
        &*device,
        &*count,
        "!",
        // The rate S_PARM set: without one in the caps, v4l2src picks the fastest offered.
        "video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1",
        "!",
        "fakesink",
        "silent=false",
        "sync=false",
    ];
    let run = run_client("gst-launch-1.0", &args, GST_DEBUG_ENV)?;
    let mut log = run.log();
    let result = (|| {
        run.success()?;
        let bufs = gst_buffers(&run.stdout());
        let what = format!("{} holding each buffer {HOLD_MS} ms", fmt.describe());
        let dropped = check_gst_stream(
            &what,
            &bufs,
            FRAMES,
            u64::from(fmt.sizeimage),
            Some(interval_ns),
            &gst_lost_frames(&run.stderr()),
        )?;
        // Not from the first buffer, whose offset is v4l2src's own.
        for pair in bufs.windows(2).skip(1) {
            ensure(pair[1].offset - pair[0].offset >= min_step, || {
                format!(
                    "{what}: offset {} follows {}: want at least {min_step} frames later",
                    pair[1].offset, pair[0].offset
                )
            })?;
        }
        log.push_str(&format!("ok: {dropped} frames dropped\n"));
        Ok(())
    })();
    ctx.save_log("gst-hold.txt", &log)?;
    result
}

/// The frames `identity dump=true` printed (`gst_util_dump_mem()`: 16 bytes a line, "OFFSET
/// (POINTER): HEX... ASCII"), in order: a line at offset 0 starts a frame, and every line must
/// continue its frame where the previous one stopped. Other lines are ignored.
fn gst_dumped_frames(stdout: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for line in stdout.lines() {
        let Some((head, rest)) = line.split_once("): ") else {
            continue;
        };
        let Some((offset, ptr)) = head.split_once(" (") else {
            continue;
        };
        if offset.len() != 8 || !ptr.starts_with("0x") {
            continue;
        }
        let Ok(offset) = usize::from_str_radix(offset, 16) else {
            continue;
        };
        // The hex column is 48 characters wide ("xx " for each of up to 16 bytes).
        let hex = rest.get(..48.min(rest.len())).unwrap_or(rest);
        let bytes = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("identity's dump line {line:?}: {e}"))?;
        if offset == 0 {
            frames.push(Vec::new());
        }
        let n = frames.len();
        let frame = frames
            .last_mut()
            .ok_or_else(|| format!("identity's dump starts at offset {offset:#x}"))?;
        ensure(frame.len() == offset, || {
            format!(
                "identity's dump of frame {}: line at offset {offset:#x} after {:#x} bytes",
                n - 1,
                frame.len()
            )
        })?;
        frame.extend_from_slice(&bytes);
    }
    Ok(frames)
}

/// The lines of a `GST_DEBUG` log that `object` (a name in the object's path, as
/// "<v4l2src0:pool0:src:allocator>") logged and that contain `text`.
fn gst_log_lines<'a>(stderr: &'a str, object: &str, text: &str) -> Vec<&'a str> {
    let object = format!(":{object}:");
    stderr
        .lines()
        .filter(|l| l.contains(text))
        .filter(|l| {
            l.split_once(":<")
                .and_then(|(_, o)| o.split_once('>'))
                .is_some_and(|(o, _)| format!(":{o}:").contains(&object))
        })
        .collect()
}

/// The index, in `v4l2-ctl --list-dv-timings` output, of VESA's 800x600 timings that are not
/// CE video (no "CE-video" flag). vivid's HDMI output takes sRGB, rvivid's colorimetry, only at
/// such timings (`vivid_try_fmt_vid_out()`); at CE timings, 720p60 by default, it turns the
/// colorimetry v4l2sink asks for into BT.709 with default encoding and transfer function, and
/// v4l2sink fails ("does not support 2:4:7:1 colorimetry"). (Its DVI-D transmit mode would
/// also take sRGB, but vivid creates that control without operations: setting it changes
/// nothing.)
fn monitor_timings(list: &str) -> Option<u32> {
    let mut index = None;
    let (mut width, mut height) = (0, 0);
    for line in list.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Index: ") {
            index = v.trim().parse().ok();
            (width, height) = (0, 0);
        } else if let Some(v) = line.strip_prefix("Active width: ") {
            width = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Active height: ") {
            height = v.trim().parse().unwrap_or(0);
        } else if let Some(flags) = line.strip_prefix("Flags:") {
            if (width, height) == (800, 600) && !flags.contains("CE-video") {
                return index;
            }
        }
    }
    None
}

/// One way `v4l2src` imports memory from the pool of the element after it: its `io-mode`,
/// the `io-mode` of the `v4l2sink` whose pool it is, and what GStreamer's V4L2 allocator logs
/// for each buffer v4l2src queues, and for each buffer v4l2sink's pool makes.
struct ImportMode {
    src: &'static str,
    sink: &'static str,
    /// Logged by v4l2src's allocator when it queues a buffer with the downstream memory.
    imported: &'static str,
    /// Logged by v4l2sink's allocator for each buffer of its pool, if anything.
    exported: Option<&'static str>,
}

/// The two import modes: USERPTR into v4l2sink's mmap()ed MMAP buffers, DMABUF of v4l2sink's
/// buffers exported with VIDIOC_EXPBUF.
const IMPORT_MODES: [ImportMode; 2] = [
    ImportMode {
        src: "userptr",
        sink: "mmap",
        imported: "imported USERPTR",
        exported: None,
    },
    ImportMode {
        src: "dmabuf-import",
        sink: "dmabuf",
        imported: "imported DMABUF",
        exported: Some("exported DMABUF"),
    },
];

/// Camera to output device, rvivid capturing into the output device's buffers:
/// `gst-launch-1.0 -v v4l2src io-mode=userptr|dmabuf-import num-buffers=8 !
/// video/x-raw,format=YUY2,width=160,height=120,framerate=30/1 ! identity silent=false
/// dump=true ! v4l2sink device=VIVID-OUT io-mode=mmap|dmabuf sync=false` with vivid (loaded
/// for the test) set to its HDMI output at a monitor's timings ([`monitor_timings`]). v4l2src imports only from a pool the element after it proposes
/// (`gst_v4l2_object_decide_allocation()`: "No downstream pool to import from" otherwise);
/// v4l2sink proposes its own pool of vivid's output buffers in io-mode mmap and dmabuf
/// (`gst_v4l2_object_propose_allocation()`), and `identity` passes the query through. So
/// rvivid's USERPTR buffers are vivid's mmap()ed output buffers, and its DMABUF buffers
/// vivid's output buffers exported as dma-bufs; v4l2sink queues each frame, untouched, to
/// vivid's output. Checked: exit 0; the caps; `identity`'s 8 buffers, all of the size of
/// vivid's buffers (at least a frame), with sequence numbers and timestamps that agree and
/// v4l2src's lost-frame warnings matching the gaps ([`check_gst_stream`]: identity's dump
/// makes frames late under TCG, so rvivid drops some); every buffer's bytes (identity's dump,
/// read through GStreamer's mapping of vivid's buffer) show the colour bars; and GStreamer's
/// V4L2 allocator log (`GST_DEBUG=v4l2allocator:6`) shows v4l2src's allocator making at least
/// 8 QBUFs, each of memory it imported (USERPTR or DMABUF), and, with dmabuf, v4l2sink's pool
/// exporting its buffers.
pub fn gst_v4l2src_imports_into_v4l2sink(ctx: &mut Ctx) -> TestResult {
    const FRAMES: usize = 8;
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let vivid = crate::memory::Vivid::load(ctx)?;
    let out_node = crate::memory::find_node("vivid-000-vid-out")?;
    let fmt = FrameFormat::packed(V4L2_PIX_FMT_YUYV, 160, 120).ok_or("no YUYV 160x120")?;
    let mut log = String::new();
    let result = (|| {
        // vivid's output 1 is HDMI (output 0, S-Video, is interlaced), at a computer
        // monitor's timings (see `monitor_timings`).
        log.push_str(&ctx.run_ok("v4l2-ctl", &["-d", &out_node, "--set-output=1"])?);
        let list = ctx.run_ok("v4l2-ctl", &["-d", &out_node, "--list-dv-timings"])?;
        let index = monitor_timings(&list).ok_or_else(|| {
            format!(
                "vivid's output offers no 800x600 timings that are not CE video: {}",
                first_lines(&list, 20)
            )
        })?;
        let set = format!("--set-dv-bt-timings=index={index}");
        log.push_str(&ctx.run_ok("v4l2-ctl", &["-d", &out_node, &set])?);
        for mode in &IMPORT_MODES {
            let what = format!(
                "v4l2src io-mode={} into v4l2sink io-mode={}",
                mode.src, mode.sink
            );
            let (device, count) = (format!("device={node}"), format!("num-buffers={FRAMES}"));
            let (src_io, sink_dev, sink_io) = (
                format!("io-mode={}", mode.src),
                format!("device={out_node}"),
                format!("io-mode={}", mode.sink),
            );
            let args = [
                "-v",
                "v4l2src",
                &*device,
                &*count,
                &*src_io,
                "!",
                "video/x-raw,format=YUY2,width=160,height=120,framerate=30/1",
                "!",
                "identity",
                "silent=false",
                "dump=true",
                "!",
                "v4l2sink",
                &*sink_dev,
                &*sink_io,
                // Every frame goes to vivid's output, however late identity's dump made it.
                "sync=false",
            ];
            let env = [
                ("GST_DEBUG", "v4l2src:2,v4l2allocator:6"),
                ("GST_DEBUG_NO_COLOR", "1"),
            ];
            let run = run_client("gst-launch-1.0", &args, &env)?;
            let (stdout, stderr) = (run.stdout(), run.stderr());
            log.push_str(&format!(
                "$ {}\n{}\n--- stderr: v4l2src's and v4l2sink's allocators ---\n{}\n\n",
                run.line,
                run.out.status,
                first_lines(
                    &stderr
                        .lines()
                        .filter(|l| l.contains("imported")
                            || l.contains("exported")
                            || l.contains("WARN")
                            || l.contains("ERROR"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    80
                )
            ));
            run.success()?;
            check_caps(
                &what,
                gst_src_caps(&stdout),
                &[
                    "format=(string)YUY2".to_string(),
                    "width=(int)160".to_string(),
                    "height=(int)120".to_string(),
                ],
            )?;
            // The buffers are vivid's output buffers, whose size vivid chooses: at least a
            // frame's.
            let bufs = gst_buffers(&stdout);
            let size = bufs.first().map_or(0, |b| b.size);
            ensure(size >= u64::from(fmt.sizeimage), || {
                format!(
                    "{what}: identity's first buffer has {size} bytes, less than a frame ({})",
                    fmt.sizeimage
                )
            })?;
            let dropped = check_gst_stream(
                &what,
                &bufs,
                FRAMES,
                size,
                Some(1_000_000_000 / 30),
                &gst_lost_frames(&stderr),
            )?;
            let frames = gst_dumped_frames(&stdout)?;
            ensure(frames.len() == FRAMES, || {
                format!(
                    "{what}: identity dumped {} buffers, want {FRAMES}",
                    frames.len()
                )
            })?;
            for (n, frame) in frames.iter().enumerate() {
                ensure(frame.len() as u64 == size, || {
                    format!(
                        "{what}: identity dumped {} bytes of buffer {n}, want {size}",
                        frame.len()
                    )
                })?;
                check_color_bars(frame, &fmt).map_err(|e| format!("{what}: buffer {n}: {e}"))?;
            }
            let queued = gst_log_lines(&stderr, "v4l2src0", "queued buffer");
            ensure(queued.len() >= FRAMES, || {
                format!(
                    "{what}: v4l2src's allocator logged {} QBUFs, want at least {FRAMES}",
                    queued.len()
                )
            })?;
            let imported = gst_log_lines(&stderr, "v4l2src0", mode.imported);
            ensure(imported.len() >= FRAMES, || {
                format!(
                    "{what}: v4l2src's allocator logged {:?} {} times, want at least {FRAMES} \
                     (one per buffer it queued)",
                    mode.imported,
                    imported.len()
                )
            })?;
            if let Some(exported) = mode.exported {
                let lines = gst_log_lines(&stderr, "v4l2sink0", exported);
                ensure(!lines.is_empty(), || {
                    format!("{what}: v4l2sink's allocator never logged {exported:?}")
                })?;
            }
            log.push_str(&format!(
                "{what}: ok, {} imports, {dropped} frames dropped\n\n",
                imported.len()
            ));
        }
        Ok(())
    })();
    drop(vivid);
    ctx.save_log("gst-import.txt", &log)?;
    result
}

// ---------------------------------------------------------------------------------------------
// ffmpeg, ffprobe
// ---------------------------------------------------------------------------------------------

/// `ffmpeg -f v4l2 -list_formats all`: lists each rvivid format as a raw format with its V4L2
/// name and the stepwise size range.
pub fn ffmpeg_list_formats(ctx: &mut Ctx) -> TestResult {
    let node = node(ctx)?;
    let args = [
        "-hide_banner",
        "-f",
        "v4l2",
        "-list_formats",
        "all",
        "-i",
        &*node,
    ];
    let run = run_client("ffmpeg", &args, FFMPEG_ENV)?;
    ctx.save_log("ffmpeg-list-formats.txt", run.log())?;
    // ffmpeg exits non-zero after listing ("Immediate exit requested").
    let text = run.stderr();
    let sizes = format!(
        "{{{}-{}, {}}}x{{{}-{}, {}}}",
        crate::frame::MIN_WIDTH,
        crate::frame::MAX_WIDTH,
        crate::frame::SIZE_STEP,
        crate::frame::MIN_HEIGHT,
        crate::frame::MAX_HEIGHT,
        crate::frame::SIZE_STEP
    );
    for fourcc in FORMATS {
        let name = ffmpeg_format(fourcc);
        let line = text.lines().find(|l| {
            let f: Vec<&str> = l.split(" : ").map(str::trim).collect();
            f.len() >= 4 && f[0].ends_with("Raw") && f[1] == name
        });
        let line = line.ok_or_else(|| {
            format!(
                "`{}` lists no raw format {name}: {}",
                run.line,
                first_lines(&text, 12)
            )
        })?;
        ensure(line.trim_end().ends_with(&sizes), || {
            format!(
                "`{}`: {line:?} does not end with the sizes {sizes}",
                run.line
            )
        })?;
    }
    Ok(())
}

/// The pts of the frames ffmpeg's `showinfo` filter logged, in order.
fn showinfo_pts(stderr: &str) -> Vec<i64> {
    stderr
        .lines()
        .filter(|l| l.contains("Parsed_showinfo") && l.contains(" n:"))
        .filter_map(|l| {
            l.split_once(" pts:")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Checks that each pts (microseconds) is a whole number of `interval_ns` frame intervals
/// after the previous one (±2 us: V4L2 timestamps are whole microseconds).
fn check_pts_steps(what: &str, pts: &[i64], interval_ns: u64) -> TestResult {
    let interval = interval_ns as f64 / 1000.0;
    for (n, w) in pts.windows(2).enumerate() {
        let d = (w[1] - w[0]) as f64;
        let frames = (d / interval).round();
        ensure(
            frames >= 1.0 && (d - frames * interval).abs() <= 2.0,
            || {
                format!(
                    "{what}: frame {}: pts {} us after {} us: not a whole number of {interval} us \
                 frame intervals later",
                    n + 1,
                    w[1],
                    w[0]
                )
            },
        )?;
    }
    Ok(())
}

/// ffmpeg's `-input_format` name of each rvivid format (libavdevice's v4l2 conversion table
/// has all four).
const FFMPEG_FORMATS: [(u32, &str); 4] = [
    (V4L2_PIX_FMT_YUYV, "yuyv422"),
    (V4L2_PIX_FMT_RGB24, "rgb24"),
    (V4L2_PIX_FMT_NV12, "nv12"),
    (V4L2_PIX_FMT_GREY, "gray"),
];

/// For every rvivid format: `ffmpeg -f v4l2 -input_format F -video_size 320x240 -framerate 30
/// -i NODE -vf showinfo -fps_mode passthrough -frames:v 5 -f rawvideo FILE`: exit 0, the file
/// is 5 frames of sizeimage bytes each showing the colour bars, and their pts increase by
/// whole frame intervals. (ffmpeg's v4l2 input captures with MMAP buffers only.)
pub fn ffmpeg_raw_frames(ctx: &mut Ctx) -> TestResult {
    const FRAMES: usize = 5;
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let mut log = String::new();
    let result = (|| {
        for (fourcc, name) in FFMPEG_FORMATS {
            let fmt = FrameFormat::packed(fourcc, 320, 240).ok_or("unknown format")?;
            let what = format!("ffmpeg {}", fmt.describe());
            let file = Scratch::new(&format!("ffmpeg-{name}.raw"));
            let frames = FRAMES.to_string();
            let path = file.path();
            let args = [
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "info",
                "-f",
                "v4l2",
                "-input_format",
                name,
                "-video_size",
                "320x240",
                "-framerate",
                "30",
                "-i",
                &*node,
                "-vf",
                "showinfo",
                "-fps_mode",
                "passthrough",
                "-frames:v",
                &*frames,
                "-f",
                "rawvideo",
                "-y",
                &*path,
            ];
            let run = run_client("ffmpeg", &args, FFMPEG_ENV)?;
            log.push_str(&run.log());
            run.success()?;
            check_frames(&what, &file.read()?, &fmt, FRAMES)?;
            // The filter sees the frames the encoder wrote, and may see one more.
            let pts = showinfo_pts(&run.stderr());
            ensure(pts.len() >= FRAMES, || {
                format!(
                    "{what}: showinfo logged {} frames, want {FRAMES}",
                    pts.len()
                )
            })?;
            check_pts_steps(&what, &pts[..FRAMES], 1_000_000_000 / 30)?;
            log.push_str(&format!("{what}: ok\n\n"));
        }
        Ok(())
    })();
    ctx.save_log("ffmpeg-raw.txt", &log)?;
    result
}

// ---------------------------------------------------------------------------------------------
// v4l2-ctl
// ---------------------------------------------------------------------------------------------

/// `v4l2-ctl --stream-<mode> --stream-count=8 --stream-to=FILE` in every advertised memory
/// type v4l2-ctl has (YUYV 320x240): exit 0, 8 frames of sizeimage bytes, each showing the
/// colour bars. (`v4l2_ctl_stream` runs every format in mmap.)
pub fn v4l2_ctl_each_memory_type(ctx: &mut Ctx) -> TestResult {
    const FRAMES: usize = 8;
    let _restore = RestoreDefaults::new(ctx)?;
    let node = node(ctx)?;
    let (modes, mut log) = advertised_modes(ctx)?;
    let result = (|| {
        let fmt = FrameFormat::packed(V4L2_PIX_FMT_YUYV, 320, 240).ok_or("YUYV")?;
        for mode in modes {
            let Some(opt) = mode.v4l2_ctl else { continue };
            let file = Scratch::new(&format!("v4l2-ctl-{}.raw", mode.name));
            let (count, to) = (
                format!("--stream-count={FRAMES}"),
                format!("--stream-to={}", file.path()),
            );
            let args = [
                "-d",
                &*node,
                "--set-fmt-video=width=320,height=240,pixelformat=YUYV",
                opt,
                &*count,
                &*to,
            ];
            let run = run_client("v4l2-ctl", &args, &[])?;
            log.push_str(&run.log());
            run.success()?;
            check_frames(&format!("v4l2-ctl {opt}"), &file.read()?, &fmt, FRAMES)?;
        }
        Ok(())
    })();
    ctx.save_log("v4l2-ctl-modes.txt", &log)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_identity_dumps() {
        let out = "00000000 (0x7f00aa000000): 10 80 10 80 00 01 02 03 04 05 06 07 08 09 0a 0b  \
                   ................\n\
                   /GstPipeline:pipeline0/GstIdentity:identity0: last-message = chain\n\
                   00000010 (0x7f00aa000010): 41 42 43                                         \
                   ABC\n\
                   00000000 (0x7f00bb000000): ff                                               \
                   .\n";
        let frames = gst_dumped_frames(out).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 19);
        assert_eq!(&frames[0][..4], &[0x10, 0x80, 0x10, 0x80]);
        assert_eq!(&frames[0][16..], b"ABC");
        assert_eq!(frames[1], [0xff]);
        // A line that does not continue its frame is an error.
        assert!(gst_dumped_frames("00000000 (0x1): 00 01\n00000020 (0x21): 02\n").is_err());
        assert!(gst_dumped_frames("00000010 (0x1): 00\n").is_err());
    }

    #[test]
    fn finds_monitor_timings() {
        let list = "ioctl: VIDIOC_ENUM_DV_TIMINGS\n\tIndex: 0\n\tActive width: 640\n\t\
                    Active height: 480\n\tFlags: has CTA-861 VIC\n\n\tIndex: 7\n\t\
                    Active width: 800\n\tActive height: 600\n\tFlags: CE-video\n\n\t\
                    Index: 21\n\tActive width: 800\n\tActive height: 600\n\t\
                    Pixelclock: 36000000 Hz (56.25 frames per second)\n\tFlags: \n\n\t\
                    Index: 22\n\tActive width: 800\n\tActive height: 600\n\tFlags: \n";
        assert_eq!(monitor_timings(list), Some(21));
        assert_eq!(monitor_timings("\tIndex: 0\n\tActive width: 800\n"), None);
    }

    #[test]
    fn picks_an_objects_log_lines() {
        let err = "0:00:01.1 77 0x5 LOG v4l2allocator gstv4l2allocator.c:1194:\
                   gst_v4l2_allocator_import_userptr:<v4l2src0:pool0:src:allocator> [0] imported \
                   USERPTR 0x7f plane 0 size 38400\n\
                   0:00:01.2 77 0x5 LOG v4l2allocator gstv4l2allocator.c:919:\
                   gst_v4l2_allocator_alloc_dmabuf:<v4l2sink0:pool0:sink:allocator> exported \
                   DMABUF as fd 9 plane 0\n";
        assert_eq!(gst_log_lines(err, "v4l2src0", "imported USERPTR").len(), 1);
        assert_eq!(gst_log_lines(err, "v4l2sink0", "imported USERPTR").len(), 0);
        assert_eq!(gst_log_lines(err, "v4l2sink0", "exported DMABUF").len(), 1);
        assert_eq!(gst_log_lines(err, "v4l2src", "imported USERPTR").len(), 0);
    }

    #[test]
    fn parses_fakesink_lines() {
        let out = "/GstPipeline:pipeline0/GstFakeSink:fakesink0: last-message = chain   \
                   ******* (fakesink0:sink) (38016 bytes, dts: none, pts: 0:00:01.066666666, \
                   duration: 0:00:00.033333333, offset: 12, offset_end: 13, flags: 00004040 \
                   discont tag-memory , meta: GstVideoMeta) 0x7f0000001234\nother line\n";
        assert_eq!(
            gst_buffers(out),
            [GstBuffer {
                size: 38016,
                pts_ns: 1_066_666_666,
                offset: 12
            }]
        );
        assert_eq!(
            parse_clock_time("1:02:03.000000004"),
            Some(3_723_000_000_004)
        );
    }

    #[test]
    fn counts_lost_frames() {
        let err = "0:00:01.2 1 0x1 WARN v4l2src gstv4l2src.c:1:gst_v4l2src_create:<v4l2src0> \
                   lost frames detected: count = 3 - ts: 0:00:00.100000000\nx\n\
                   ... lost frames detected: count = 4 - ts: 0:00:00.500000000 \n";
        assert_eq!(gst_lost_frames(err), [(3, 100_000_000), (4, 500_000_000)]);
    }

    #[test]
    fn stream_check() {
        let b = |offset: u64, pts_ns: u64| GstBuffer {
            size: 10,
            pts_ns,
            offset,
        };
        let i = 33_333_333;
        let bufs = [b(0, 0), b(2, 2 * i), b(3, 3 * i), b(7, 7 * i)];
        // The warning at the second buffer (v4l2src's own count) is not compared.
        let lost = [(1, 2 * i), (3, 7 * i)];
        assert_eq!(check_gst_stream("s", &bufs, 4, 10, Some(i), &lost), Ok(3));
        assert!(check_gst_stream("s", &bufs, 4, 10, Some(i), &lost[..1]).is_err());
        assert!(check_gst_stream("s", &bufs, 4, 10, Some(i), &[(4, 7 * i)]).is_err());
        assert!(check_gst_stream("s", &bufs, 5, 10, Some(i), &lost).is_err());
        // The first buffer's offset may not be its sequence number.
        let first = [b(0, i), b(2, 2 * i), b(3, 3 * i)];
        assert_eq!(check_gst_stream("s", &first, 3, 10, Some(i), &[]), Ok(0));
        // A timestamp off the sequence.
        let bad = [b(0, 0), b(1, i), b(2, 3 * i)];
        assert!(check_gst_stream("s", &bad, 3, 10, Some(i), &[]).is_err());
        // The first frames, from before the pipeline started, have pts 0.
        let early = [b(0, 0), b(1, 0), b(3, i), b(4, 2 * i)];
        assert_eq!(
            check_gst_stream("s", &early, 4, 10, Some(i), &[(1, i)]),
            Ok(1)
        );
    }

    #[test]
    fn ffmpeg_showinfo() {
        let err = "[Parsed_showinfo_0 @ 0x5] config in time_base: 1/1000000\n\
                   [Parsed_showinfo_0 @ 0x5] n:   0 pts:      0 pts_time:0 duration:33333\n\
                   [Parsed_showinfo_0 @ 0x5] n:   1 pts:  33333 pts_time:0.033333\n\
                   [Parsed_showinfo_0 @ 0x5] n:   2 pts: 100000 pts_time:0.1\n";
        let pts = showinfo_pts(err);
        assert_eq!(pts, [0, 33_333, 100_000]);
        assert!(check_pts_steps("f", &pts, 33_333_333).is_ok());
        assert!(check_pts_steps("f", &[0, 33_333, 33_333], 33_333_333).is_err());
        assert!(check_pts_steps("f", &[0, 50_000], 33_333_333).is_err());
    }

    #[test]
    fn caps_line() {
        let out = "/GstPipeline:pipeline0/GstV4l2Src:v4l2src0.GstPad:src: caps = video/x-raw, \
                   format=(string)YUY2, width=(int)320, height=(int)240, \
                   framerate=(fraction)30/1\n";
        let caps = gst_src_caps(out);
        assert!(check_caps("c", caps, &["width=(int)320".into()]).is_ok());
        assert!(check_caps("c", caps, &["width=(int)32".into()]).is_err());
        assert!(check_caps("c", None, &[]).is_err());
    }
}
