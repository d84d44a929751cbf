//! `rvb2-tests --bench RVIVID_NODE VIVID_NODE [HEADER_LINE...]`: rvivid (rvb2) against vivid
//! (mainline videobuf2), side by side in one guest, in one table with the ratio rvivid/vivid
//! (`make bench` runs it in the guest on the measuring kernel; Documentation/bench.rst says how
//! to read it). Figures, not assertions.
//!
//! Everything here goes through the V4L2, sync_file and sw_sync UAPI (and /proc): the same
//! code drives both drivers. The rounds of each measurement alternate between the two drivers,
//! so a change of load on the (shared, emulated) machine hits both alike; each figure is the
//! median of its rounds, with the smallest and largest round beside it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::syncfile::{self, sw_sync_create_fence_data, Timeline};
use crate::v4l2::*;

const FLAG_IN_FENCE: u32 = 0x0020_0000;
const FLAG_OUT_FENCE: u32 = 0x0040_0000;
const CAP: u32 = V4L2_BUF_TYPE_VIDEO_CAPTURE;

/// Rounds of the per-call figures (each a batch of [`BATCH`] calls per driver).
const ROUNDS: usize = 9;
/// Buffers of the per-call figures: each round times one batch of calls on all of them.
const BATCH: u32 = 32;
/// Calls of the QUERYCAP floor per round.
const FLOOR_CALLS: u32 = 256;
/// Rounds and seconds of the streaming figures.
const STREAM_ROUNDS: usize = 3;
const STREAM_SECS: f64 = 4.0;
/// Buffers in flight while streaming.
const STREAM_BUFS: u32 = 4;

const SMALL: (u32, u32) = (320, 240);
const FULL: (u32, u32) = (1920, 1080);

fn now_ns() -> u64 {
    u64::try_from(monotonic_now().as_nanos()).unwrap_or(u64::MAX)
}

/// Microseconds between two `now_ns()` readings.
fn us(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1000.0
}

/// One figure's rounds.
#[derive(Clone, Debug, Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> Option<f64> {
        let v = self.sorted();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    /// `median [min-max]`, or `-` without samples.
    fn show(&self, prec: usize) -> String {
        let v = self.sorted();
        match (self.median(), v.first(), v.last()) {
            (Some(m), Some(lo), Some(hi)) if v.len() > 1 => {
                format!("{m:.prec$} [{lo:.prec$}-{hi:.prec$}]")
            }
            (Some(m), _, _) => format!("{m:.prec$}"),
            _ => "-".into(),
        }
    }

    /// Each round of `self` divided by the median of `by` (for "multiples of the floor").
    fn per(&self, by: &Samples) -> Samples {
        match by.median() {
            Some(d) if d > 0.0 => Samples(self.0.iter().map(|x| x / d).collect()),
            _ => Samples::default(),
        }
    }

    /// Round-by-round sums of two figures measured in the same rounds.
    fn plus(&self, other: &Samples) -> Samples {
        Samples(self.0.iter().zip(&other.0).map(|(a, b)| a + b).collect())
    }

    /// Round-by-round differences.
    fn minus(&self, other: &Samples) -> Samples {
        Samples(self.0.iter().zip(&other.0).map(|(a, b)| a - b).collect())
    }
}

/// A table row: a figure for rvivid and for vivid (either may be absent) and a note.
struct Row {
    name: String,
    rvivid: String,
    vivid: String,
    ratio: String,
    note: String,
}

fn ratio(a: &Samples, b: &Samples) -> String {
    match (a.median(), b.median()) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
        _ => "-".into(),
    }
}

fn row(name: &str, r: &Samples, v: &Samples, prec: usize, note: &str) -> Row {
    Row {
        name: name.into(),
        rvivid: r.show(prec),
        vivid: v.show(prec),
        ratio: ratio(r, v),
        note: note.into(),
    }
}

fn section(title: &str) -> Row {
    Row {
        name: title.into(),
        rvivid: String::new(),
        vivid: String::new(),
        ratio: String::new(),
        note: String::new(),
    }
}

fn print_table(rows: &[Row]) {
    let is_section = |r: &Row| r.rvivid.is_empty() && r.vivid.is_empty() && r.note.is_empty();
    let w0 = rows
        .iter()
        .filter(|r| !is_section(r))
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.rvivid.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let w2 = rows.iter().map(|r| r.vivid.len()).max().unwrap_or(0).max(5);
    println!(
        "{:<w0$}  {:>w1$}  {:>w2$}  {:>6}  note",
        "", "rvivid", "vivid", "rv/viv"
    );
    for r in rows {
        if is_section(r) {
            println!("{}", r.name);
            continue;
        }
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>6}  {}",
            r.name, r.rvivid, r.vivid, r.ratio, r.note
        );
    }
}

/// One driver under test.
struct Drv {
    name: &'static str,
    dev: Device,
    /// Takes V4L2_BUF_FLAG_IN_FENCE / OUT_FENCE (rvivid).
    fences: bool,
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn set_fmt(d: &Drv, (w, h): (u32, u32)) -> Result<u32, String> {
    let f = d
        .dev
        .set_pix(false, V4L2_PIX_FMT_YUYV, w, h, V4L2_FIELD_NONE)
        .map_err(err("VIDIOC_S_FMT"))?;
    let p = f.pix();
    if (p.width, p.height, p.pixelformat) != (w, h, V4L2_PIX_FMT_YUYV) {
        return Err(format!(
            "{}: asked YUYV {w}x{h}, got {} {}x{}",
            d.name,
            fourcc_str(p.pixelformat),
            p.width,
            p.height
        ));
    }
    Ok(p.sizeimage)
}

/// Sets the frame interval; returns the one the driver chose.
fn set_interval(d: &Drv, ival: v4l2_fract) -> Result<v4l2_fract, String> {
    let mut p = v4l2_streamparm::new(CAP);
    p.capture_mut().timeperframe = ival;
    d.dev
        .ioctl(VIDIOC_S_PARM, &mut p)
        .map_err(err("VIDIOC_S_PARM"))?;
    Ok(p.capture().timeperframe)
}

fn fps_of(f: v4l2_fract) -> f64 {
    if f.numerator == 0 {
        0.0
    } else {
        f64::from(f.denominator) / f64::from(f.numerator)
    }
}

/// The shortest frame interval the driver offers for YUYV at `size`.
fn fastest_interval(d: &Drv, (w, h): (u32, u32)) -> Result<v4l2_fract, String> {
    let mut best: Option<v4l2_fract> = None;
    for index in 0..64 {
        let mut e: v4l2_frmivalenum = zeroed();
        e.index = index;
        e.pixel_format = V4L2_PIX_FMT_YUYV;
        e.width = w;
        e.height = h;
        if d.dev.ioctl(VIDIOC_ENUM_FRAMEINTERVALS, &mut e).is_err() {
            break;
        }
        let f = if e.type_ == V4L2_FRMIVAL_TYPE_DISCRETE {
            e.discrete()
        } else {
            e.stepwise().min
        };
        if best.is_none_or(|b| fps_of(f) > fps_of(b)) {
            best = Some(f);
        }
        if e.type_ != V4L2_FRMIVAL_TYPE_DISCRETE {
            break;
        }
    }
    best.ok_or_else(|| format!("{}: no frame interval for YUYV {w}x{h}", d.name))
}

fn reqbufs(d: &Drv, count: u32) -> Result<u32, String> {
    let rb = d.dev.reqbufs(count).map_err(err("VIDIOC_REQBUFS"))?;
    if count > 0 && rb.count != count {
        return Err(format!("{}: REQBUFS({count}) gave {}", d.name, rb.count));
    }
    Ok(rb.count)
}

/// QBUF of buffer `index` with `flags` (and in-fence `in_fd`); returns the out-fence, if any.
fn qbuf(d: &Drv, index: u32, flags: u32, in_fd: RawFd) -> Result<Option<OwnedFd>, String> {
    let mut b = v4l2_buffer::new(CAP, V4L2_MEMORY_MMAP, index);
    b.flags = flags;
    if flags & FLAG_IN_FENCE != 0 {
        b.reserved2 = in_fd as u32;
    }
    d.dev
        .ioctl(VIDIOC_QBUF, &mut b)
        .map_err(err("VIDIOC_QBUF"))?;
    if flags & FLAG_OUT_FENCE == 0 {
        return Ok(None);
    }
    let fd = b.reserved2 as i32;
    if fd < 0 {
        return Err(format!("{}: QBUF with OUT_FENCE returned fd {fd}", d.name));
    }
    // SAFETY: QBUF installed this fd for us and nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn dqbuf(d: &Drv) -> Result<v4l2_buffer, String> {
    d.dev.dqbuf().map_err(err("VIDIOC_DQBUF"))
}

fn streamon(d: &Drv) -> Result<(), String> {
    d.dev.streamon().map_err(err("VIDIOC_STREAMON"))
}

fn streamoff(d: &Drv) -> Result<(), String> {
    d.dev.streamoff().map_err(err("VIDIOC_STREAMOFF"))
}

/// Waits until buffers `0..n` are all done (QUERYBUF shows V4L2_BUF_FLAG_DONE).
fn wait_all_done(d: &Drv, n: u32) -> Result<(), String> {
    let start = now_ns();
    loop {
        let mut all = true;
        for i in 0..n {
            let b = d.dev.querybuf(i).map_err(err("VIDIOC_QUERYBUF"))?;
            if b.flags & V4L2_BUF_FLAG_DONE == 0 {
                all = false;
                break;
            }
        }
        if all {
            return Ok(());
        }
        if now_ns() - start > 30_000_000_000 {
            return Err(format!("{}: {n} buffers not done within 30 s", d.name));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mean microseconds per call of `n` calls of `f(i)`, `i` in `0..n`.
fn per_call(n: u32, mut f: impl FnMut(u32) -> Result<(), String>) -> Result<f64, String> {
    let t0 = now_ns();
    for i in 0..n {
        f(i)?;
    }
    Ok(us(t0, now_ns()) / f64::from(n))
}

/// A new sw_sync fence at `value` (with a fixed name: no heap allocation in the timed loop).
fn sw_sync_fence(tl: &Timeline, value: u32) -> Result<OwnedFd, String> {
    let mut data = sw_sync_create_fence_data {
        value,
        name: syncfile::name_field("rvb2-bench"),
        fence: -1,
    };
    syncfile::ioctl(
        tl.as_raw_fd(),
        syncfile::SW_SYNC_IOC_CREATE_FENCE,
        &mut data,
    )
    .map_err(err("SW_SYNC_IOC_CREATE_FENCE"))?;
    // SAFETY: the kernel installed this fd for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(data.fence) })
}

/// The per-call figures of one driver, microseconds per call.
#[derive(Default)]
struct Calls {
    querycap: Samples,
    qbuf_idle: Samples,
    qbuf_stream: Samples,
    dqbuf: Samples,
    qbuf_out: Samples,
    qbuf_in: Samples,
    sw_sync: Samples,
}

/// One round of the per-call figures on `d` (YUYV 320x240 at 30 fps, [`BATCH`] buffers).
fn calls_round(d: &Drv, tl: &Timeline, c: &mut Calls) -> Result<(), String> {
    let mut cap: v4l2_capability = zeroed();
    c.querycap.push(per_call(FLOOR_CALLS, |_| {
        d.dev
            .ioctl(VIDIOC_QUERYCAP, &mut cap)
            .map_err(err("VIDIOC_QUERYCAP"))
    })?);

    // QBUF while not streaming: the queue core only (videobuf2 hands buffers to the driver
    // at STREAMON; so does rvb2).
    c.qbuf_idle
        .push(per_call(BATCH, |i| qbuf(d, i, 0, -1).map(drop))?);
    streamon(d)?;
    // Every buffer is filled (one per frame) and left done: DQBUF then never waits.
    wait_all_done(d, BATCH)?;
    c.dqbuf.push(per_call(BATCH, |_| dqbuf(d).map(drop))?);
    // QBUF while streaming: the buffer goes on to the driver's list (which sleeps until the
    // next frame, tens of milliseconds away).
    c.qbuf_stream
        .push(per_call(BATCH, |i| qbuf(d, i, 0, -1).map(drop))?);
    streamoff(d)?;

    if d.fences {
        // OUT_FENCE: QBUF with the flag plus the close() of the sync_file it returns. The
        // fences are cancelled by the STREAMOFF after the batch (not timed).
        c.qbuf_out.push(per_call(BATCH, |i| {
            qbuf(d, i, FLAG_OUT_FENCE, -1).map(drop)
        })?);
        streamoff(d)?;
        // IN_FENCE, already signalled: the fences are made before the batch.
        let fences = (0..BATCH)
            .map(|_| sw_sync_fence(tl, 0))
            .collect::<Result<Vec<_>, _>>()?;
        c.qbuf_in.push(per_call(BATCH, |i| {
            qbuf(d, i, FLAG_IN_FENCE, fences[i as usize].as_raw_fd()).map(drop)
        })?);
        drop(fences);
        streamoff(d)?;
        // The floor: a fence, its sync_file and fd, and their close (unsignalled, like a
        // fresh out-fence).
        c.sw_sync
            .push(per_call(BATCH, |_| sw_sync_fence(tl, u32::MAX).map(drop))?);
    }
    Ok(())
}

/// What to poll while streaming.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    /// poll() the video node, no fences.
    Dqbuf,
    /// poll() the video node; every buffer queued with OUT_FENCE, whose signal time is the
    /// completion time.
    DqbufFenced,
    /// poll() the out-fence of the oldest queued buffer, then DQBUF.
    OutFence,
}

/// What one stream gave.
#[derive(Default)]
struct Stream {
    frames: u64,
    dropped: u64,
    secs: f64,
    /// Guest CPU time, all tasks (ns), during the stream.
    busy_ns: u64,
    /// Poll wake-up latencies (us): from the buffer timestamp, from the out-fence's signal time.
    lat_ts: Samples,
    lat_fence: Samples,
}

/// The run time of every task in the guest (ns), from /proc/*/task/*/schedstat (exact, unlike
/// the tick-sampled utime/stime; needs CONFIG_SCHED_INFO). Tasks that exit in between are
/// lost: vivid's frame thread exits at STREAMOFF, so a stream reads it before that; rvivid's
/// workers do not exit.
fn all_tasks_runtime_ns() -> Result<u64, String> {
    let mut sum = 0u64;
    let mut files = 0;
    let procs = std::fs::read_dir("/proc").map_err(err("/proc"))?;
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                files += 1;
                sum += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    if files == 0 {
        return Err("no /proc/*/task/*/schedstat: the kernel lacks CONFIG_SCHED_INFO".into());
    }
    Ok(sum)
}

/// The signal time of the (single, signalled) fence of sync_file `fd`.
fn fence_time_ns(fd: RawFd) -> Result<u64, String> {
    let info = syncfile::file_info(fd).map_err(err("SYNC_IOC_FILE_INFO"))?;
    match info.fences.first() {
        Some(f) if f.status == 1 => Ok(f.timestamp_ns),
        _ => Err(format!("out-fence not signalled after its buffer: {info}")),
    }
}

/// Streams YUYV at `size` and `ival` for [`STREAM_SECS`] with [`STREAM_BUFS`] buffers, mapped
/// into this process (`mmap()`, as every client that looks at the frames does) if `mapped`.
fn stream(
    d: &Drv,
    size: (u32, u32),
    ival: v4l2_fract,
    wait: Wait,
    mapped: bool,
) -> Result<Stream, String> {
    let sizeimage = set_fmt(d, size)? as usize;
    let got = set_interval(d, ival)?;
    if got != ival {
        return Err(format!(
            "{}: asked interval {}/{}, got {}/{}",
            d.name, ival.numerator, ival.denominator, got.numerator, got.denominator
        ));
    }
    let n = reqbufs(d, STREAM_BUFS)?;
    let maps = if mapped {
        (0..n)
            .map(|i| {
                let b = d.dev.querybuf(i).map_err(err("VIDIOC_QUERYBUF"))?;
                Mapping::shared(&d.dev, b.offset(), sizeimage).map_err(err("mmap"))
            })
            .collect::<Result<Vec<_>, String>>()?
    } else {
        Vec::new()
    };
    let flags = if wait == Wait::Dqbuf {
        0
    } else {
        FLAG_OUT_FENCE
    };
    let mut fences: Vec<Option<OwnedFd>> = (0..n).map(|_| None).collect();
    let mut order = VecDeque::new();
    for i in 0..n {
        fences[i as usize] = qbuf(d, i, flags, -1)?;
        order.push_back(i);
    }
    let mut s = Stream::default();
    let busy0 = all_tasks_runtime_ns()?;
    streamon(d)?;
    let t0 = now_ns();
    let mut first_seq = None;
    let mut last_seq = 0u32;
    let vfd = d.dev.as_raw_fd();
    while us(t0, now_ns()) < STREAM_SECS * 1e6 {
        let (pfd, idx) = match wait {
            Wait::OutFence => {
                let i = *order.front().ok_or("no buffer queued")?;
                let f = fences[i as usize].as_ref().ok_or("no out-fence")?;
                (f.as_raw_fd(), Some(i))
            }
            _ => (vfd, None),
        };
        // A waiter that finds the event already there measures no wake-up: such frames
        // count, but give no latency sample.
        let ready = syncfile::poll_fd(pfd, libc::POLLIN, 0).map_err(err("poll"))? != 0;
        let before = now_ns();
        if !ready && syncfile::poll_fd(pfd, libc::POLLIN, 5000).map_err(err("poll"))? == 0 {
            return Err(format!("{}: no frame within 5 s", d.name));
        }
        let woke = now_ns();
        let b = dqbuf(d)?;
        if idx.is_some_and(|i| i != b.index) {
            return Err(format!(
                "{}: out-fence of buffer {idx:?} signalled, DQBUF gave {}",
                d.name, b.index
            ));
        }
        order.retain(|&i| i != b.index);
        s.frames += 1;
        first_seq.get_or_insert(b.sequence);
        last_seq = b.sequence;
        if !ready {
            if let Some(ts) = timeval_duration(&b.timestamp) {
                let ts = u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX);
                if ts <= woke {
                    s.lat_ts.push(us(ts, woke));
                }
            }
            if let Some(f) = &fences[b.index as usize] {
                let ft = fence_time_ns(f.as_raw_fd())?;
                if ft >= before {
                    s.lat_fence.push(us(ft, woke));
                }
            }
        }
        fences[b.index as usize] = qbuf(d, b.index, flags, -1)?;
        order.push_back(b.index);
    }
    s.secs = us(t0, now_ns()) / 1e6;
    // Before STREAMOFF: vivid's frame thread exists only while streaming (created at
    // STREAMON, so counted whole from 0), and its run time goes with it when it exits.
    s.busy_ns = all_tasks_runtime_ns()?.saturating_sub(busy0);
    streamoff(d)?;
    drop(fences);
    drop(maps);
    reqbufs(d, 0)?;
    if let Some(f) = first_seq {
        s.dropped = (u64::from(last_seq.wrapping_sub(f)) + 1).saturating_sub(s.frames);
    }
    Ok(s)
}

/// Guest CPU (all tasks, ns per second) with nothing streaming, over [`STREAM_SECS`].
fn idle_busy_rate() -> Result<f64, String> {
    let b0 = all_tasks_runtime_ns()?;
    let t0 = now_ns();
    std::thread::sleep(Duration::from_secs_f64(STREAM_SECS));
    let b1 = all_tasks_runtime_ns()?;
    Ok(b1.saturating_sub(b0) as f64 / (us(t0, now_ns()) / 1e6))
}

/// Median microseconds of one memcpy of `len` bytes (both buffers faulted in first).
fn memcpy_us(len: usize) -> Samples {
    let src: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let mut dst = vec![1u8; len];
    let mut s = Samples::default();
    for _ in 0..15 {
        let t0 = now_ns();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        s.push(us(t0, now_ns()));
    }
    s
}

fn meminfo_kib(key: &str) -> Result<i64, String> {
    let m = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
    m.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {key} in /proc/meminfo"))
}

/// Memory per buffer (KiB) of 8 YUYV 1920x1080 buffers: vmalloc, page tables (kernel, at
/// REQBUFS; user, at mmap) and MemFree.
fn memory(d: &Drv) -> Result<[Samples; 4], String> {
    const N: u32 = 8;
    let size = set_fmt(d, FULL)? as usize;
    let mut out: [Samples; 4] = Default::default();
    for _ in 0..3 {
        let keys = ["VmallocUsed", "PageTables", "MemFree"];
        let read = || keys.map(meminfo_kib);
        let before = read();
        reqbufs(d, N)?;
        let alloc = read();
        let maps = (0..N)
            .map(|i| {
                let b = d.dev.querybuf(i).map_err(err("VIDIOC_QUERYBUF"))?;
                Mapping::shared(&d.dev, b.offset(), size).map_err(err("mmap"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mapped = read();
        drop(maps);
        reqbufs(d, 0)?;
        let delta = |a: &Result<i64, String>, b: &Result<i64, String>| -> Result<f64, String> {
            Ok((*a.as_ref()? - *b.as_ref()?) as f64 / f64::from(N))
        };
        out[0].push(delta(&alloc[0], &before[0])?);
        out[1].push(delta(&alloc[1], &before[1])?);
        out[2].push(delta(&mapped[1], &alloc[1])?);
        out[3].push(delta(&before[2], &mapped[2])?);
    }
    Ok(out)
}

/// (rvivid's size, vivid's size, vivid's modules) from /proc/modules, in KiB.
fn module_sizes() -> Result<(f64, f64, String), String> {
    let m = std::fs::read_to_string("/proc/modules").map_err(|e| e.to_string())?;
    let mut rvivid = 0.0;
    let mut vivid = 0.0;
    let mut names = Vec::new();
    for l in m.lines() {
        let mut f = l.split_whitespace();
        let (Some(name), Some(size)) = (f.next(), f.next().and_then(|s| s.parse::<f64>().ok()))
        else {
            continue;
        };
        if name == "rvivid" {
            rvivid = size / 1024.0;
        } else {
            // Everything else was loaded by `modprobe vivid`: vivid and what it needs.
            vivid += size / 1024.0;
            names.push(name.to_string());
        }
    }
    Ok((rvivid, vivid, names.join("+")))
}

/// Runs the benchmark; `args` are the rvivid node, the vivid node and header lines.
/// `rvb2-tests --bench-load NODE NAME WHAT SECS`: one workload of the bench, repeated for
/// about SECS seconds on the driver at NODE (NAME: `rvivid` or `vivid`), for a profiler to
/// sample (`make bench-profile`): `frames` streams YUYV 1920x1080 at 15 fps (the CPU per frame
/// figure), `frames-mapped` the same with the buffers mapped, `calls` repeats the per-call rounds without fences (QUERYCAP, QBUF, DQBUF).
pub fn load(args: &[String]) -> Result<(), String> {
    let [node, name, what, secs] = args else {
        return Err(
            "usage: rvb2-tests --bench-load NODE NAME frames|frames-mapped|calls SECS".into(),
        );
    };
    let secs: f64 = secs.parse().map_err(err("SECS"))?;
    let d = Drv {
        name: if name == "rvivid" { "rvivid" } else { "vivid" },
        dev: Device::open(node).map_err(err(node))?,
        fences: false,
    };
    let t0 = now_ns();
    let fps15 = v4l2_fract {
        numerator: 1,
        denominator: 15,
    };
    match what.as_str() {
        "frames" | "frames-mapped" => {
            while us(t0, now_ns()) < secs * 1e6 {
                stream(&d, FULL, fps15, Wait::Dqbuf, what == "frames-mapped")?;
            }
        }
        "calls" => {
            let tl = Timeline::open()?;
            set_fmt(&d, SMALL)?;
            set_interval(
                &d,
                v4l2_fract {
                    numerator: 1,
                    denominator: 30,
                },
            )?;
            reqbufs(&d, BATCH)?;
            let mut c = Calls::default();
            while us(t0, now_ns()) < secs * 1e6 {
                calls_round(&d, &tl, &mut c)?;
            }
            reqbufs(&d, 0)?;
        }
        _ => return Err(format!("unknown workload {what}")),
    }
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let [rnode, vnode, header @ ..] = args else {
        return Err("usage: rvb2-tests --bench RVIVID_NODE VIVID_NODE [HEADER...]".into());
    };
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "rvb2 bench: kernel {} (clocksource {}), {} CPUs",
        release.trim(),
        clocksource.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for h in header {
        println!("{h}");
    }
    let drv = [
        Drv {
            name: "rvivid",
            dev: Device::open(rnode).map_err(err(rnode))?,
            fences: true,
        },
        Drv {
            name: "vivid",
            dev: Device::open(vnode).map_err(err(vnode))?,
            fences: false,
        },
    ];
    let tl = Timeline::open()?;
    let fps30 = v4l2_fract {
        numerator: 1,
        denominator: 30,
    };
    let fps15 = v4l2_fract {
        numerator: 1,
        denominator: 15,
    };

    // Per-call figures.
    eprintln!("bench: per-call figures ({ROUNDS} rounds)");
    let mut calls: [Calls; 2] = Default::default();
    for d in &drv {
        set_fmt(d, SMALL)?;
        set_interval(d, fps30)?;
        reqbufs(d, BATCH)?;
    }
    for r in 0..ROUNDS {
        for k in 0..2 {
            let k = if r % 2 == 0 { k } else { 1 - k };
            calls_round(&drv[k], &tl, &mut calls[k])?;
        }
    }
    for d in &drv {
        reqbufs(d, 0)?;
    }

    // Frame rates.
    eprintln!("bench: frame rates");
    let mut rates: Vec<[(Samples, Samples, f64); 2]> = Vec::new();
    for size in [SMALL, FULL] {
        let mut per: [(Samples, Samples, f64); 2] = Default::default();
        let ivals = [
            fastest_interval(&drv[0], size)?,
            fastest_interval(&drv[1], size)?,
        ];
        for r in 0..STREAM_ROUNDS {
            for k in 0..2 {
                let k = if r % 2 == 0 { k } else { 1 - k };
                let s = stream(&drv[k], size, ivals[k], Wait::Dqbuf, false)?;
                per[k].0.push(s.frames as f64 / s.secs);
                per[k].1.push(s.dropped as f64);
                per[k].2 = fps_of(ivals[k]);
            }
        }
        rates.push(per);
    }

    // CPU per 1080p frame at 15 fps.
    eprintln!("bench: CPU per frame");
    let mut cpu: [Samples; 2] = Default::default();
    let mut cpu_fps: [Samples; 2] = Default::default();
    let mut cpu_mapped: [Samples; 2] = Default::default();
    for r in 0..STREAM_ROUNDS {
        let idle = idle_busy_rate()?;
        for k in 0..2 {
            let k = if r % 2 == 0 { k } else { 1 - k };
            let s = stream(&drv[k], FULL, fps15, Wait::Dqbuf, false)?;
            let busy = s.busy_ns as f64 - idle * s.secs;
            cpu[k].push(busy / 1000.0 / s.frames.max(1) as f64);
            cpu_fps[k].push(s.frames as f64 / s.secs);
            let s = stream(&drv[k], FULL, fps15, Wait::Dqbuf, true)?;
            let busy = s.busy_ns as f64 - idle * s.secs;
            cpu_mapped[k].push(busy / 1000.0 / s.frames.max(1) as f64);
        }
    }
    let memcpy = memcpy_us(FULL.0 as usize * FULL.1 as usize * 2);

    // Poll wake-up latency at 320x240, 30 fps.
    eprintln!("bench: poll wake-up");
    let mut lat_dq_ts: [Samples; 2] = Default::default();
    let mut lat_dq_fence = Samples::default();
    let mut lat_fence = Samples::default();
    for r in 0..STREAM_ROUNDS {
        for k in 0..2 {
            let k = if r % 2 == 0 { k } else { 1 - k };
            if drv[k].fences {
                let s = stream(&drv[k], SMALL, fps30, Wait::DqbufFenced, false)?;
                lat_dq_ts[k].0.extend(s.lat_ts.0);
                lat_dq_fence.0.extend(s.lat_fence.0);
                let s = stream(&drv[k], SMALL, fps30, Wait::OutFence, false)?;
                lat_fence.0.extend(s.lat_fence.0);
            } else {
                let s = stream(&drv[k], SMALL, fps30, Wait::Dqbuf, false)?;
                lat_dq_ts[k].0.extend(s.lat_ts.0);
            }
        }
    }

    eprintln!("bench: memory");
    let mem = [memory(&drv[0])?, memory(&drv[1])?];
    let (rv_mod, viv_mod, viv_mods) = module_sizes()?;

    // The table.
    let [rc, vc] = &calls;
    let none = Samples::default();
    let mut rows = vec![
        section("Per call, us (YUYV 320x240, 32 buffers; median [min-max] of 9 rounds)"),
        row("QUERYCAP (the floor)", &rc.querycap, &vc.querycap, 2, ""),
        row(
            "QBUF, not streaming",
            &rc.qbuf_idle,
            &vc.qbuf_idle,
            2,
            "queue core only",
        ),
        row(
            "QBUF, streaming",
            &rc.qbuf_stream,
            &vc.qbuf_stream,
            2,
            "hands the buffer to the driver",
        ),
        row("DQBUF, buffer done", &rc.dqbuf, &vc.dqbuf, 2, "never waits"),
    ];
    let rsum = rc.qbuf_stream.plus(&rc.dqbuf);
    let vsum = vc.qbuf_stream.plus(&vc.dqbuf);
    rows.push(row(
        "QBUF+DQBUF (streaming)",
        &rsum,
        &vsum,
        2,
        "goal: <= 0.9x vivid",
    ));
    rows.push(row(
        "  in QUERYCAPs",
        &rsum.per(&rc.querycap),
        &vsum.per(&vc.querycap),
        1,
        "each driver's own floor",
    ));
    let out_extra = rc.qbuf_out.minus(&rc.qbuf_idle);
    let in_extra = rc.qbuf_in.minus(&rc.qbuf_idle);
    rows.push(row(
        "sw_sync fence create+close (floor)",
        &rc.sw_sync,
        &none,
        2,
        "",
    ));
    rows.push(row(
        "QBUF OUT_FENCE extra (+close)",
        &out_extra,
        &none,
        2,
        &format!(
            "{:.2}x the sw_sync floor; goal <= 1.5x",
            out_extra.median().unwrap_or(0.0) / rc.sw_sync.median().unwrap_or(f64::NAN)
        ),
    ));
    rows.push(row(
        "QBUF IN_FENCE extra (signalled)",
        &in_extra,
        &none,
        2,
        &format!(
            "{:.2}x the sw_sync floor",
            in_extra.median().unwrap_or(0.0) / rc.sw_sync.median().unwrap_or(f64::NAN)
        ),
    ));

    rows.push(section(&format!(
        "CPU per YUYV 1920x1080 frame at 15 fps, us (all guest tasks, idle subtracted; \
         {STREAM_ROUNDS} rounds of {STREAM_SECS} s)"
    )));
    rows.push(row(
        "CPU per frame, not mapped",
        &cpu[0],
        &cpu[1],
        0,
        "goal: <= 0.8x vivid, <= 1.5x memcpy",
    ));
    rows.push(row(
        "  in memcpys of the frame",
        &cpu[0].per(&memcpy),
        &cpu[1].per(&memcpy),
        2,
        &format!("one memcpy of 4050 KiB: {} us", memcpy.show(0)),
    ));
    rows.push(row(
        "  frames per second held",
        &cpu_fps[0],
        &cpu_fps[1],
        1,
        "",
    ));
    rows.push(row(
        "CPU per frame, buffers mapped",
        &cpu_mapped[0],
        &cpu_mapped[1],
        0,
        "mmap()ed by the reader: rvivid fills all",
    ));
    rows.push(row(
        "  in memcpys of the frame",
        &cpu_mapped[0].per(&memcpy),
        &cpu_mapped[1].per(&memcpy),
        2,
        "",
    ));

    rows.push(section(&format!(
        "Highest frame rate held, YUYV ({STREAM_ROUNDS} rounds of {STREAM_SECS} s, \
         {STREAM_BUFS} buffers, fastest interval each offers)"
    )));
    for (size, per) in [SMALL, FULL].iter().zip(&rates) {
        rows.push(row(
            &format!("{}x{} fps", size.0, size.1),
            &per[0].0,
            &per[1].0,
            1,
            &format!("offered: rvivid {:.0}, vivid {:.0}", per[0].2, per[1].2),
        ));
        rows.push(row(
            &format!("{}x{} frames dropped", size.0, size.1),
            &per[0].1,
            &per[1].1,
            0,
            "sequence gaps per round",
        ));
    }

    rows.push(section(&format!(
        "Poll wake-up, us (YUYV 320x240 at 30 fps, all frames of {STREAM_ROUNDS} rounds of \
         {STREAM_SECS} s)"
    )));
    rows.push(row(
        "DQBUF poll, from buffer timestamp",
        &lat_dq_ts[0],
        &lat_dq_ts[1],
        0,
        "includes the fill (see docs)",
    ));
    rows.push(row(
        "DQBUF poll, from completion",
        &lat_dq_fence,
        &none,
        0,
        "completion = out-fence signal time",
    ));
    rows.push(row(
        "out-fence poll, from completion",
        &lat_fence,
        &none,
        0,
        &format!(
            "goal: <= DQBUF poll ({:.2}x)",
            lat_fence.median().unwrap_or(0.0) / lat_dq_fence.median().unwrap_or(f64::NAN)
        ),
    ));

    rows.push(section(
        "Memory per YUYV 1920x1080 buffer, KiB (8 buffers, 3 rounds; image 4050 KiB)",
    ));
    for (i, (name, note)) in [
        ("vmalloc (VmallocUsed)", ""),
        (
            "kernel page tables (REQBUFS)",
            "0 once warm: vfree keeps vmalloc's page tables",
        ),
        ("user page tables (mmap)", ""),
        ("MemFree drop", "everything, noisy"),
    ]
    .iter()
    .enumerate()
    {
        rows.push(row(name, &mem[0][i], &mem[1][i], 1, note));
    }
    rows.push(section("Module size, KiB (/proc/modules)"));
    rows.push(row(
        "module text+data",
        &Samples(vec![rv_mod]),
        &Samples(vec![viv_mod]),
        0,
        &format!("vivid: {viv_mods}"),
    ));
    println!();
    print_table(&rows);
    Ok(())
}
