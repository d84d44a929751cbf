//! Buffer and streaming tests: REQBUFS, QUERYBUF, CREATE_BUFS, PREPARE_BUF, QBUF/DQBUF,
//! STREAMON/STREAMOFF, mmap, poll, queue ownership, signals, rvivid's error injection,
//! REMOVE_BUFS, and capturing frames (checked with [`crate::frame::check_color_bars`]).
//!
//! Where the V4L2 specification leaves the behaviour open, the tests expect what videobuf2
//! (drivers/media/common/videobuf2) does.

use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::formats::{g_parm, s_parm, set_format, RestoreDefaults};
use crate::frame::{check_color_bars, FrameFormat, FORMATS};
use crate::harness::{first_lines, Ctx, TestResult};
use crate::v4l2::*;
use crate::{ensure, expect_errno, ok, open_rvivid};

const CAPTURE: u32 = V4L2_BUF_TYPE_VIDEO_CAPTURE;

/// rvivid's maximum number of buffers per queue.
const MAX_BUFFERS: u32 = 32;

/// Buffers rvivid needs queued before frames flow.
const MIN_QUEUED: u32 = 2;

/// How long a test waits for one frame (the guest runs under TCG, with debug options on).
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call that must not block may take before it counts as blocked.
const NO_BLOCK_LIMIT: Duration = Duration::from_secs(5);

/// Capabilities REQBUFS and CREATE_BUFS must report, and the ones they must not.
/// rvivid imports dma-bufs (SUPPORTS_DMABUF) and orphans mapped or exported buffers that
/// REQBUFS(0) or REMOVE_BUFS free (their memory lives as long as a mapping or dma-buf does);
/// it reports fences (rvb2's `V4L2_BUF_CAP_SUPPORTS_FENCES`, 1 << 15), not requests.
const REQUIRED_CAPS: u32 = V4L2_BUF_CAP_SUPPORTS_MMAP
    | V4L2_BUF_CAP_SUPPORTS_USERPTR
    | V4L2_BUF_CAP_SUPPORTS_DMABUF
    | V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS
    | V4L2_BUF_CAP_SUPPORTS_REMOVE_BUFS
    | (1 << 15);
const FORBIDDEN_CAPS: u32 = V4L2_BUF_CAP_SUPPORTS_REQUESTS;

const POLL_IN: i16 = libc::POLLIN | libc::POLLRDNORM;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// A set of MMAP capture buffers on one fd: REQBUFS, QUERYBUF, mmap, queueing and dequeueing.
/// On drop it unmaps its mappings, then (best effort) STREAMOFF and REQBUFS(0).
pub struct Queue<'d> {
    dev: &'d Device,
    /// QUERYBUF of each buffer, by index (indices 0..count).
    bufs: Vec<v4l2_buffer>,
    maps: Vec<Option<Mapping>>,
    /// The capabilities REQBUFS reported.
    pub caps: u32,
    /// A CLOCK_MONOTONIC time before the next stream can start: when the set was made, then
    /// just before each STREAMON and just after each STREAMOFF through it.
    stream_floor: Cell<Duration>,
}

impl<'d> Queue<'d> {
    /// REQBUFS(`count`) of MMAP buffers and QUERYBUF of each (not mapped yet).
    pub fn request(dev: &'d Device, count: u32) -> Result<Self, String> {
        let floor = monotonic_now();
        let rb = ok(format!("VIDIOC_REQBUFS({count})"), dev.reqbufs(count))?;
        let mut q = Queue {
            dev,
            bufs: Vec::new(),
            maps: Vec::new(),
            caps: rb.capabilities,
            stream_floor: Cell::new(floor),
        };
        ensure(rb.count >= count.min(MAX_BUFFERS) && rb.count > 0, || {
            format!("VIDIOC_REQBUFS({count}) granted only {} buffers", rb.count)
        })?;
        q.add_buffers(0, rb.count)?;
        Ok(q)
    }

    /// Takes buffers `first..first + count` (made by CREATE_BUFS) into the set.
    pub fn add_buffers(&mut self, first: u32, count: u32) -> TestResult {
        ensure(first == self.count(), || {
            format!(
                "new buffers start at index {first}, not after the {} known ones",
                self.count()
            )
        })?;
        for i in first..first + count {
            let b = ok(format!("VIDIOC_QUERYBUF {i}"), self.dev.querybuf(i))?;
            self.bufs.push(b);
            self.maps.push(None);
        }
        Ok(())
    }

    /// The number of buffers.
    pub fn count(&self) -> u32 {
        self.bufs.len() as u32
    }

    /// QUERYBUF of buffer `index` as it was when the set learnt of it.
    pub fn buffer(&self, index: u32) -> &v4l2_buffer {
        &self.bufs[index as usize]
    }

    /// Maps every buffer (shared, read/write, its whole length).
    pub fn map_all(&mut self) -> TestResult {
        for (b, m) in self.bufs.iter().zip(self.maps.iter_mut()) {
            if m.is_none() {
                *m = Some(ok(
                    format!(
                        "mmap of buffer {} (offset {:#x}, length {})",
                        b.index,
                        b.offset(),
                        b.length
                    ),
                    Mapping::shared(self.dev, b.offset(), b.length as usize),
                )?);
            }
        }
        Ok(())
    }

    /// Whether every buffer is mapped.
    pub fn all_mapped(&self) -> bool {
        self.maps.iter().all(Option::is_some)
    }

    /// QBUF of buffer `index`.
    pub fn qbuf(&self, index: u32) -> TestResult {
        ok(format!("VIDIOC_QBUF {index}"), self.dev.qbuf(index)).map(drop)
    }

    /// QBUF of every buffer.
    pub fn queue_all(&self) -> TestResult {
        (0..self.count()).try_for_each(|i| self.qbuf(i))
    }

    pub fn streamon(&self) -> TestResult {
        self.stream_floor.set(monotonic_now());
        ok("VIDIOC_STREAMON", self.dev.streamon())
    }

    pub fn streamoff(&self) -> TestResult {
        let r = ok("VIDIOC_STREAMOFF", self.dev.streamoff());
        self.stream_floor.set(monotonic_now());
        r
    }

    /// The frame interval (VIDIOC_G_PARM).
    pub fn interval_ns(&self) -> Result<u64, String> {
        frame_interval_ns(self.dev)
    }

    /// Waits (poll) up to `timeout` for a done buffer and dequeues it.
    pub fn next_buffer(&self, timeout: Duration) -> Result<v4l2_buffer, String> {
        next_buffer(self.dev, timeout)
    }

    /// The mapped bytes of dequeued buffer `b`, up to its `bytesused`.
    pub fn data(&self, b: &v4l2_buffer) -> Result<&[u8], String> {
        let m = self
            .maps
            .get(b.index as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("buffer {} is not mapped", b.index))?;
        m.bytes().get(..b.bytesused as usize).ok_or_else(|| {
            format!(
                "buffer {}: bytesused {} exceeds the mapping ({} bytes)",
                b.index,
                b.bytesused,
                m.size()
            )
        })
    }
}

impl Drop for Queue<'_> {
    fn drop(&mut self) {
        self.maps.clear();
        let _ = self.dev.streamoff();
        let _ = self.dev.reqbufs(0);
    }
}

/// Waits (poll) up to `timeout` for a done buffer on `dev` and dequeues it.
fn next_buffer(dev: &Device, timeout: Duration) -> Result<v4l2_buffer, String> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let revents = ok("poll", dev.poll(POLL_IN, ms))?;
    if revents == 0 {
        return Err(format!(
            "no buffer was done within {timeout:?} (poll timed out)"
        ));
    }
    if revents & libc::POLLIN == 0 {
        return Err(format!(
            "poll while waiting for a buffer: revents {revents:#x} without POLLIN"
        ));
    }
    ok("VIDIOC_DQBUF", dev.dqbuf())
}

/// The frame interval of `dev` (VIDIOC_G_PARM), in nanoseconds, computed as rvivid does
/// (`numerator * 10^9 / denominator`, rounded down), so that its frame grid can be checked to
/// the nanosecond.
pub fn frame_interval_ns(dev: &Device) -> Result<u64, String> {
    let p = ok("VIDIOC_G_PARM", g_parm(dev))?;
    let t = p.capture().timeperframe;
    (u64::from(t.numerator) * 1_000_000_000)
        .checked_div(u64::from(t.denominator))
        .filter(|&ns| ns > 0)
        .ok_or_else(|| {
            format!(
                "VIDIOC_G_PARM: timeperframe {}/{}",
                t.numerator, t.denominator
            )
        })
}

/// A `v4l2_buffer` timestamp in nanoseconds.
fn timestamp_ns(what: &str, b: &v4l2_buffer) -> Result<u64, String> {
    timeval_duration(&b.timestamp)
        .map(|d| d.as_nanos() as u64)
        .ok_or_else(|| format!("{what}: invalid timestamp {:?}", b.timestamp))
}

/// What rvivid promises of the sequence numbers and timestamps of one stream (from one
/// STREAMON to the STREAMOFF): it counts frames from 0 at `start_streaming`, one per frame
/// interval whether or not it had a buffer for the frame, and stamps each buffer with its
/// frame's nominal end, `start + (sequence + 1) * interval` (see Documentation/rvivid.rst).
/// So a dropped frame is a gap in the sequence, and the timestamps lie on a grid whatever the
/// work's jitter, which on this guest is several milliseconds (jiffies, a loaded host).
pub struct StreamGrid {
    interval_ns: u64,
    /// `start_streaming` ran between these (CLOCK_MONOTONIC, ns).
    floor_ns: u64,
    ceil_ns: u64,
    /// The sequence number and timestamp of the last buffer checked.
    last: Option<(u32, u64)>,
}

impl StreamGrid {
    /// A stream whose driver started between `floor` and `ceil`, with `interval_ns` per frame.
    pub fn new(interval_ns: u64, floor: Duration, ceil: Duration) -> Self {
        StreamGrid {
            interval_ns,
            floor_ns: floor.as_nanos() as u64,
            ceil_ns: ceil.as_nanos() as u64,
            last: None,
        }
    }

    /// The timestamp of the last buffer checked.
    pub fn last_timestamp_ns(&self) -> Option<u64> {
        self.last.map(|(_, ts)| ts)
    }

    /// Checks dequeued buffer `b` (the next one of the stream, done or ERROR), dequeued at
    /// `dequeued_at` (CLOCK_MONOTONIC, read after DQBUF returned).
    pub fn check(&mut self, what: &str, b: &v4l2_buffer, dequeued_at: Duration) -> TestResult {
        let ts = timestamp_ns(what, b)?;
        let now = dequeued_at.as_nanos() as u64;
        let interval = self.interval_ns;
        ensure(
            b.flags & V4L2_BUF_FLAG_TIMESTAMP_MASK == V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC,
            || format!("{what}: flags {:#x} lack TIMESTAMP_MONOTONIC", b.flags),
        )?;
        // A frame is stamped with the time it ended: never later than its buffer could be
        // dequeued (the clock is precise to the microsecond here, see guest_clock_microsecond).
        ensure(ts <= now, || {
            format!("{what}: timestamp {ts} ns is after CLOCK_MONOTONIC at DQBUF, {now} ns")
        })?;
        match self.last {
            None => {
                // The first buffer after STREAMON: its frame number counts the periods since
                // the start, so the start it implies must lie in the window measured around
                // the call that started the stream. This catches a counter that does not
                // restart at 0 and a timestamp off the grid, and bounds how many frames can
                // have been dropped before it (only as many as there were periods between
                // the start and the DQBUF: the first frame is only dropped if the work ran a
                // whole period late). 2 us of slack: the timestamp is rounded down to the us.
                let offset = (u64::from(b.sequence) + 1).saturating_mul(interval);
                let start = ts.checked_sub(offset).ok_or_else(|| {
                    format!(
                        "{what}: first buffer of the stream: timestamp {ts} ns < (sequence + 1)                          * interval {interval} ns"
                    )
                })?;
                ensure(
                    start + 2_000 >= self.floor_ns && start <= self.ceil_ns,
                    || {
                        format!(
                            "{what}: first buffer of the stream: timestamp {ts} ns - (sequence +                              1) * interval {interval} ns = {start} ns, not within the start                              window [{}, {}] ns",
                            self.floor_ns, self.ceil_ns
                        )
                    },
                )?;
            }
            Some((lseq, lts)) => {
                // Strictly increasing; a gap is a frame the driver had no buffer for (or ran
                // too late for), which its timestamp shows: it is dseq whole intervals after
                // the previous one. rvivid's is exact; 10% is what a real driver's
                // timestamps can be held to.
                let dseq = b.sequence.wrapping_sub(lseq);
                ensure((1..1 << 31).contains(&dseq), || {
                    format!(
                        "{what}: sequence {} after {lseq}: not increasing",
                        b.sequence
                    )
                })?;
                let dts = i128::from(ts) - i128::from(lts);
                let want = i128::from(dseq) * i128::from(interval);
                ensure((dts - want).abs() <= i128::from(interval / 10), || {
                    format!(
                        "{what}: {dts} ns after the previous buffer (sequence {lseq}), {dseq}                          frames later: want {want} ns +- 10% of the interval {interval} ns"
                    )
                })?;
            }
        }
        self.last = Some((b.sequence, ts));
        Ok(())
    }
}

/// Checks the buffers a capture stream dequeues: each one's fields, and its sequence number
/// and timestamp on the stream's frame grid ([`StreamGrid`]).
pub struct FrameChecker {
    fmt: FrameFormat,
    count: u32,
    mapped: bool,
    grid: StreamGrid,
    /// The last timestamp of the previous stream, after a [`FrameChecker::restart`].
    previous_ts: Option<u64>,
}

impl FrameChecker {
    /// For the stream that `q` started (make it once the stream has started: after the
    /// STREAMON, or the QBUF, that started the driver).
    pub fn new(fmt: FrameFormat, q: &Queue) -> Result<Self, String> {
        Ok(FrameChecker {
            fmt,
            count: q.count(),
            mapped: q.all_mapped(),
            grid: StreamGrid::new(q.interval_ns()?, q.stream_floor.get(), monotonic_now()),
            previous_ts: None,
        })
    }

    /// After a new STREAMON (through `q`): the sequence starts at 0 again, on a new grid whose
    /// first timestamp comes after the previous stream's last.
    pub fn restart(&mut self, q: &Queue) -> TestResult {
        let grid = StreamGrid::new(q.interval_ns()?, q.stream_floor.get(), monotonic_now());
        if let Some(ts) = self.grid.last_timestamp_ns() {
            self.previous_ts = Some(ts);
        }
        self.grid = grid;
        Ok(())
    }

    /// Checks dequeued buffer `b`. With `allow_error`, a buffer flagged ERROR is accepted (its
    /// bytesused is then not checked; its sequence number and timestamp are, rvivid gives a
    /// failed frame both). Returns whether it was flagged ERROR.
    pub fn check(&mut self, b: &v4l2_buffer, allow_error: bool) -> Result<bool, String> {
        let now = monotonic_now();
        let what = format!("dequeued buffer {} (sequence {})", b.index, b.sequence);
        let error = b.flags & V4L2_BUF_FLAG_ERROR != 0;
        ensure(b.index < self.count, || {
            format!("{what}: index out of range 0..{}", self.count)
        })?;
        ensure(b.type_ == CAPTURE && b.memory == V4L2_MEMORY_MMAP, || {
            format!("{what}: type {} memory {}, want 1 and 1", b.type_, b.memory)
        })?;
        ensure(allow_error || !error, || {
            format!("{what}: flags {:#x} include ERROR", b.flags)
        })?;
        ensure(
            b.flags & (V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE) == 0,
            || format!("{what}: flags {:#x} include QUEUED or DONE", b.flags),
        )?;
        ensure(!self.mapped || b.flags & V4L2_BUF_FLAG_MAPPED != 0, || {
            format!("{what}: flags {:#x} lack MAPPED (it is mapped)", b.flags)
        })?;
        ensure(b.field == V4L2_FIELD_NONE, || {
            format!("{what}: field {}, want V4L2_FIELD_NONE (1)", b.field)
        })?;
        ensure(b.length >= self.fmt.sizeimage, || {
            format!(
                "{what}: length {} < sizeimage {}",
                b.length, self.fmt.sizeimage
            )
        })?;
        ensure(
            b.reserved2 == 0 && b.request_fd == 0 && b.flags & V4L2_BUF_FLAG_REQUEST_FD == 0,
            || {
                format!(
                    "{what}: reserved2 {} request_fd {} flags {:#x}: want 0, 0, no REQUEST_FD",
                    b.reserved2, b.request_fd, b.flags
                )
            },
        )?;
        let first = self.grid.last.is_none();
        self.grid.check(&what, b, now)?;
        if let (true, Some(prev)) = (first, self.previous_ts) {
            // Implied by the start window (the new stream started after the old one's last
            // frame was dequeued), checked on its own for a clearer message.
            let ts = timestamp_ns(&what, b)?;
            ensure(ts > prev, || {
                format!(
                    "{what}: first timestamp {ts} ns after the restart is not after the                      previous stream's last, {prev} ns"
                )
            })?;
        }
        if error {
            return Ok(true);
        }
        ensure(b.bytesused == self.fmt.sizeimage, || {
            format!(
                "{what}: bytesused {}, want sizeimage {} ({})",
                b.bytesused,
                self.fmt.sizeimage,
                self.fmt.describe()
            )
        })?;
        Ok(false)
    }
}

/// What [`capture`] keeps.
pub struct Captured {
    pub first: Vec<u8>,
    pub last: Vec<u8>,
}

/// Dequeues `frames` buffers from a streaming, mapped queue, checking each with `checker` and
/// requeueing it; returns copies of the first and last frames.
pub fn capture(q: &Queue, checker: &mut FrameChecker, frames: u32) -> Result<Captured, String> {
    let mut first = Vec::new();
    let mut last = Vec::new();
    for n in 0..frames {
        let b = q
            .next_buffer(FRAME_TIMEOUT)
            .map_err(|e| format!("frame {n}: {e}"))?;
        checker
            .check(&b, false)
            .map_err(|e| format!("frame {n}: {e}"))?;
        let data = q.data(&b)?;
        if n == 0 {
            first = data.to_vec();
        }
        if n + 1 == frames {
            last = data.to_vec();
        }
        q.qbuf(b.index)?;
    }
    Ok(Captured { first, last })
}

/// The current format's layout, which must be one of rvivid's.
fn current_format(dev: &Device) -> Result<FrameFormat, String> {
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let fmt = FrameFormat::from_pix(f.pix());
    ensure(
        FrameFormat::packed(fmt.fourcc, fmt.width, fmt.height).is_some(),
        || format!("VIDIOC_G_FMT: unexpected format {}", fmt.describe()),
    )?;
    Ok(fmt)
}

/// Fails unless every buffer of `dev` in `indices` is neither QUEUED nor DONE.
fn all_dequeued(dev: &Device, indices: impl IntoIterator<Item = u32>, when: &str) -> TestResult {
    for i in indices {
        let b = ok(format!("VIDIOC_QUERYBUF {i} {when}"), dev.querybuf(i))?;
        ensure(
            b.flags & (V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE) == 0,
            || {
                format!(
                    "buffer {i} {when}: flags {:#x} still include QUEUED or DONE",
                    b.flags
                )
            },
        )?;
    }
    Ok(())
}

/// Fails unless REQBUFS/CREATE_BUFS `capabilities` are rvivid's.
fn check_caps(what: &str, caps: u32) -> TestResult {
    ensure(
        caps & REQUIRED_CAPS == REQUIRED_CAPS && caps & FORBIDDEN_CAPS == 0,
        || {
            format!(
                "{what}: capabilities {caps:#x}, want SUPPORTS_MMAP|USERPTR|DMABUF|\
                 ORPHANED_BUFS|REMOVE_BUFS|FENCES ({REQUIRED_CAPS:#x}) set and \
                 SUPPORTS_REQUESTS ({FORBIDDEN_CAPS:#x}) clear"
            )
        },
    )
}

/// DQBUF without retrying on EINTR.
fn dqbuf_once(dev: &Device) -> Result<v4l2_buffer, Errno> {
    let mut b = v4l2_buffer::new(CAPTURE, V4L2_MEMORY_MMAP, 0);
    dev.ioctl_once(VIDIOC_DQBUF, &mut b).map(|()| b)
}

/// A DQBUF that must not block: if it is still waiting after [`NO_BLOCK_LIMIT`], a SIGALRM
/// interrupts it and this reports it as blocked.
fn dqbuf_must_not_block(dev: &Device, what: &str) -> Result<Result<v4l2_buffer, Errno>, String> {
    let alarm = Alarm::arm(NO_BLOCK_LIMIT)?;
    let r = dqbuf_once(dev);
    drop(alarm);
    match r {
        Err(Errno(libc::EINTR)) => Err(format!(
            "{what}: blocked (interrupted by SIGALRM after {NO_BLOCK_LIMIT:?})"
        )),
        r => Ok(r),
    }
}

extern "C" fn on_sigalrm(_: libc::c_int) {}

/// A one-shot SIGALRM with a handler installed without SA_RESTART, so a blocking system call
/// of this (the only) thread returns EINTR; drop disarms the timer and restores the old
/// handler.
struct Alarm {
    old: libc::sigaction,
}

impl Alarm {
    fn arm(after: Duration) -> Result<Self, String> {
        // SAFETY: zeroed sigaction structs are valid; sigemptyset/sigaction/setitimer get valid
        // pointers; the handler is async-signal-safe (it does nothing).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigalrm as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = 0; // no SA_RESTART
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGALRM, &sa, &mut old) != 0 {
                return Err(format!("sigaction(SIGALRM): {}", Errno::last()));
            }
            let alarm = Alarm { old };
            let it = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
                it_value: libc::timeval {
                    tv_sec: after.as_secs() as libc::time_t,
                    tv_usec: after.subsec_micros() as libc::suseconds_t,
                },
            };
            if libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) != 0 {
                return Err(format!("setitimer: {}", Errno::last()));
            }
            Ok(alarm)
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: as in `arm`. The timer is disarmed before the old handler (perhaps SIG_DFL,
        // which would end the process) comes back.
        unsafe {
            let zero: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_REAL, &zero, std::ptr::null_mut());
            libc::sigaction(libc::SIGALRM, &self.old, std::ptr::null_mut());
        }
    }
}

/// Runs `f`; if it has not returned after `after`, a helper thread (which never takes
/// SIGALRM) issues STREAMOFF on `fd` to wake a stuck DQBUF. Returns `f`'s result and whether
/// the watchdog had to act.
fn with_streamoff_watchdog<R>(fd: RawFd, after: Duration, f: impl FnOnce() -> R) -> (R, bool) {
    let fired = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<()>();
    // The thread inherits the signal mask: block SIGALRM around the spawn so that it is only
    // ever delivered to this thread.
    // SAFETY: plain signal mask manipulation with valid sigset pointers.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
    }
    let flag = Arc::clone(&fired);
    let handle = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
            flag.store(true, Ordering::SeqCst);
            let mut t = CAPTURE as libc::c_int;
            // SAFETY: STREAMOFF with a valid int argument on an fd the caller keeps open
            // until this thread is joined.
            unsafe {
                libc::ioctl(fd, VIDIOC_STREAMOFF as libc::Ioctl, &mut t);
            }
        }
    });
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    let r = f();
    let _ = tx.send(());
    let _ = handle.join();
    (r, fired.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------
// Buffer management tests
// ---------------------------------------------------------------------------------------------

/// VIDIOC_REQBUFS: capabilities, count 4 gives 4..32 buffers, 0 frees, 100 gives 32, DMABUF
/// and USERPTR give buffers of their memory, other memory types and wrong buffer types are
/// EINVAL.
pub fn reqbufs_basics(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let rb = ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    ensure(rb.count == 0, || {
        format!("VIDIOC_REQBUFS(0): count {}, want 0", rb.count)
    })?;
    check_caps("VIDIOC_REQBUFS(0)", rb.capabilities)?;

    let rb = ok("VIDIOC_REQBUFS(4)", dev.reqbufs(4))?;
    ensure((4..=MAX_BUFFERS).contains(&rb.count), || {
        format!("VIDIOC_REQBUFS(4): count {}, want 4..=32", rb.count)
    })?;
    check_caps("VIDIOC_REQBUFS(4)", rb.capabilities)?;
    for i in 0..rb.count {
        ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
    }
    let rb = ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    ensure(rb.count == 0, || {
        format!("VIDIOC_REQBUFS(0) after 4: count {}", rb.count)
    })?;
    expect_errno(
        "VIDIOC_QUERYBUF 0 after REQBUFS(0)",
        dev.querybuf(0),
        libc::EINVAL,
    )?;

    let rb = ok("VIDIOC_REQBUFS(1)", dev.reqbufs(1))?;
    ensure((MIN_QUEUED..=MAX_BUFFERS).contains(&rb.count), || {
        format!(
            "VIDIOC_REQBUFS(1): count {}, want at least the {MIN_QUEUED} buffers streaming needs",
            rb.count
        )
    })?;

    let rb = ok("VIDIOC_REQBUFS(100)", dev.reqbufs(100))?;
    ensure(rb.count == MAX_BUFFERS, || {
        format!(
            "VIDIOC_REQBUFS(100): count {}, want the maximum 32",
            rb.count
        )
    })?;
    ok("VIDIOC_QUERYBUF 31", dev.querybuf(MAX_BUFFERS - 1))?;
    expect_errno(
        "VIDIOC_QUERYBUF 32 of 32",
        dev.querybuf(MAX_BUFFERS),
        libc::EINVAL,
    )?;
    ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;

    for (memory, name) in [
        (V4L2_MEMORY_USERPTR, "USERPTR"),
        (V4L2_MEMORY_DMABUF, "DMABUF"),
    ] {
        let rb = ok(
            format!("VIDIOC_REQBUFS(4) memory {name}"),
            dev.reqbufs_with(4, CAPTURE, memory),
        )?;
        check_caps(&format!("VIDIOC_REQBUFS(4) memory {name}"), rb.capabilities)?;
        let mut b = v4l2_buffer::new(CAPTURE, memory, 0);
        ok(
            format!("VIDIOC_QUERYBUF 0 of memory {name}"),
            dev.ioctl(VIDIOC_QUERYBUF, &mut b),
        )?;
        ensure(b.memory == memory && rb.count == 4, || {
            format!(
                "REQBUFS(4) memory {name} gave {} buffers; QUERYBUF 0: {b:?}",
                rb.count
            )
        })?;
        ok(
            format!("VIDIOC_REQBUFS(0) memory {name}"),
            dev.reqbufs_with(0, CAPTURE, memory),
        )?;
    }
    for (memory, name) in [(V4L2_MEMORY_OVERLAY, "OVERLAY"), (0, "0"), (99, "99")] {
        expect_errno(
            format!("VIDIOC_REQBUFS(4) memory {name}"),
            dev.reqbufs_with(4, CAPTURE, memory),
            libc::EINVAL,
        )?;
        expect_errno(
            format!("VIDIOC_QUERYBUF 0 after REQBUFS memory {name}"),
            dev.querybuf(0),
            libc::EINVAL,
        )?;
    }
    for (type_, name) in [
        (V4L2_BUF_TYPE_VIDEO_OUTPUT, "VIDEO_OUTPUT"),
        (V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, "VIDEO_CAPTURE_MPLANE"),
    ] {
        expect_errno(
            format!("VIDIOC_REQBUFS(4) type {name}"),
            dev.reqbufs_with(4, type_, V4L2_MEMORY_MMAP),
            libc::EINVAL,
        )?;
    }
    Ok(())
}

/// VIDIOC_QUERYBUF of each buffer: index, type, MMAP, length = sizeimage, distinct
/// page-aligned offsets, no state flags; index = count and wrong type are EINVAL.
pub fn querybuf_fields(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let q = Queue::request(&dev, 4)?;
    check_caps("VIDIOC_REQBUFS(4)", q.caps)?;
    let page = page_size() as u32;
    let mut offsets = Vec::new();
    for i in 0..q.count() {
        let what = format!("VIDIOC_QUERYBUF {i}");
        let b = ok(&what, dev.querybuf(i))?;
        ensure(
            b.index == i && b.type_ == CAPTURE && b.memory == V4L2_MEMORY_MMAP,
            || {
                format!(
                    "{what}: index {} type {} memory {}, want {i}, 1, 1",
                    b.index, b.type_, b.memory
                )
            },
        )?;
        ensure(b.length == fmt.sizeimage, || {
            format!(
                "{what}: length {}, want sizeimage {} ({})",
                b.length,
                fmt.sizeimage,
                fmt.describe()
            )
        })?;
        ensure(b.offset() % page == 0, || {
            format!("{what}: m.offset {:#x} is not page aligned", b.offset())
        })?;
        ensure(!offsets.contains(&b.offset()), || {
            format!(
                "{what}: m.offset {:#x} repeats another buffer's",
                b.offset()
            )
        })?;
        offsets.push(b.offset());
        let state = V4L2_BUF_FLAG_QUEUED
            | V4L2_BUF_FLAG_DONE
            | V4L2_BUF_FLAG_ERROR
            | V4L2_BUF_FLAG_MAPPED
            | V4L2_BUF_FLAG_PREPARED;
        ensure(b.flags & state == 0, || {
            format!(
                "{what}: flags {:#x} of a new, unmapped buffer include QUEUED/DONE/ERROR/\
                 MAPPED/PREPARED",
                b.flags
            )
        })?;
    }
    for index in [q.count(), MAX_BUFFERS, u32::MAX] {
        expect_errno(
            format!("VIDIOC_QUERYBUF {index} of {}", q.count()),
            dev.querybuf(index),
            libc::EINVAL,
        )?;
    }
    let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_OUTPUT, V4L2_MEMORY_MMAP, 0);
    expect_errno(
        "VIDIOC_QUERYBUF 0 type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_QUERYBUF, &mut b),
        libc::EINVAL,
    )
}

/// VIDIOC_CREATE_BUFS: count 0 only reports (index = number of buffers), new buffers follow
/// the REQBUFS ones, a too small sizeimage is EINVAL, a larger one gives longer buffers that
/// stream; past 32 buffers ENOBUFS.
pub fn create_bufs_count_and_sizes(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = set_format(&dev, V4L2_PIX_FMT_YUYV, 640, 480)?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let with_size = |size: u32| {
        let mut g = f;
        g.pix_mut().sizeimage = size;
        g
    };

    let cb = ok(
        "VIDIOC_CREATE_BUFS count 0",
        dev.create_bufs(0, V4L2_MEMORY_MMAP, &f),
    )?;
    ensure(cb.index == 0 && cb.count == 0, || {
        format!(
            "VIDIOC_CREATE_BUFS count 0 without buffers: index {} count {}, want 0 and 0",
            cb.index, cb.count
        )
    })?;
    check_caps("VIDIOC_CREATE_BUFS count 0", cb.capabilities)?;
    ensure(
        cb.capabilities & V4L2_BUF_CAP_SUPPORTS_MAX_NUM_BUFFERS != 0
            && cb.max_num_buffers == MAX_BUFFERS,
        || {
            format!(
                "VIDIOC_CREATE_BUFS: capabilities {:#x} max_num_buffers {}, want \
                 SUPPORTS_MAX_NUM_BUFFERS and 32",
                cb.capabilities, cb.max_num_buffers
            )
        },
    )?;
    expect_errno(
        "VIDIOC_QUERYBUF 0 after CREATE_BUFS count 0",
        dev.querybuf(0),
        libc::EINVAL,
    )?;

    let mut q = Queue::request(&dev, 2)?;
    let n = q.count();
    let cb = ok(
        "VIDIOC_CREATE_BUFS count 0",
        dev.create_bufs(0, V4L2_MEMORY_MMAP, &f),
    )?;
    ensure(cb.index == n && cb.count == 0, || {
        format!(
            "VIDIOC_CREATE_BUFS count 0 after REQBUFS gave {n}: index {} count {}, want {n} and 0",
            cb.index, cb.count
        )
    })?;
    expect_errno(
        format!("VIDIOC_QUERYBUF {n} after CREATE_BUFS count 0"),
        dev.querybuf(n),
        libc::EINVAL,
    )?;

    let cb = ok(
        "VIDIOC_CREATE_BUFS count 2",
        dev.create_bufs(2, V4L2_MEMORY_MMAP, &f),
    )?;
    ensure(cb.index == n && cb.count == 2, || {
        format!(
            "VIDIOC_CREATE_BUFS count 2 after {n} buffers: index {} count {}, want {n} and 2",
            cb.index, cb.count
        )
    })?;
    check_caps("VIDIOC_CREATE_BUFS count 2", cb.capabilities)?;
    q.add_buffers(n, 2)?;
    for i in n..n + 2 {
        let len = q.buffer(i).length;
        ensure(len == fmt.sizeimage, || {
            format!(
                "created buffer {i}: length {len}, want sizeimage {}",
                fmt.sizeimage
            )
        })?;
    }

    let next = n + 2;
    for (size, why) in [
        (fmt.sizeimage - 1, "sizeimage - 1"),
        (fmt.sizeimage / 2, "sizeimage / 2"),
        (0, "0"),
    ] {
        expect_errno(
            format!("VIDIOC_CREATE_BUFS count 1 with sizeimage {why}"),
            dev.create_bufs(1, V4L2_MEMORY_MMAP, &with_size(size)),
            libc::EINVAL,
        )?;
    }
    expect_errno(
        "VIDIOC_CREATE_BUFS count 1 memory USERPTR on a queue of MMAP buffers",
        dev.create_bufs(1, V4L2_MEMORY_USERPTR, &f),
        libc::EINVAL,
    )?;
    let mut out = f;
    out.type_ = V4L2_BUF_TYPE_VIDEO_OUTPUT;
    expect_errno(
        "VIDIOC_CREATE_BUFS count 1 type VIDEO_OUTPUT",
        dev.create_bufs(1, V4L2_MEMORY_MMAP, &out),
        libc::EINVAL,
    )?;
    expect_errno(
        format!("VIDIOC_QUERYBUF {next} after the failed CREATE_BUFS"),
        dev.querybuf(next),
        libc::EINVAL,
    )?;

    let big = fmt.sizeimage * 2;
    let cb = ok(
        "VIDIOC_CREATE_BUFS count 1 with sizeimage * 2",
        dev.create_bufs(1, V4L2_MEMORY_MMAP, &with_size(big)),
    )?;
    ensure(cb.index == next && cb.count == 1, || {
        format!(
            "VIDIOC_CREATE_BUFS (big): index {} count {}, want {next} and 1",
            cb.index, cb.count
        )
    })?;
    q.add_buffers(next, 1)?;
    let len = q.buffer(next).length;
    ensure(len == big, || {
        format!("buffer {next} created with sizeimage {big}: length {len}")
    })?;

    // All of them, the bigger one included, stream (bytesused stays sizeimage).
    q.map_all()?;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let cap = capture(&q, &mut checker, q.count() + 2)?;
    check_color_bars(&cap.last, &fmt)?;
    q.streamoff()?;
    drop(q);

    // The limit: after REQBUFS(max - 2), CREATE_BUFS(5) gets 2 and then there is no room.
    let q = Queue::request(&dev, MAX_BUFFERS - 2)?;
    let n = q.count();
    let room = MAX_BUFFERS.saturating_sub(n);
    if room > 0 {
        let cb = ok(
            format!("VIDIOC_CREATE_BUFS count 5 after {n} buffers"),
            dev.create_bufs(5, V4L2_MEMORY_MMAP, &f),
        )?;
        ensure(cb.index == n && cb.count == room.min(5), || {
            format!(
                "VIDIOC_CREATE_BUFS count 5 after {n} buffers: index {} count {}, want {n} and {}",
                cb.index,
                cb.count,
                room.min(5)
            )
        })?;
    }
    expect_errno(
        format!("VIDIOC_CREATE_BUFS count 1 with the maximum {MAX_BUFFERS} buffers allocated"),
        dev.create_bufs(1, V4L2_MEMORY_MMAP, &f),
        libc::ENOBUFS,
    )?;
    drop(q);
    Ok(())
}

/// Waits up to `timeout` until thread `tid` of this process sleeps in `ioctl(fd, req, ...)`
/// (`/proc/self/task/TID/syscall` names a syscall only while the thread is blocked in it).
fn wait_blocked_in_ioctl(tid: libc::pid_t, fd: RawFd, req: u32, timeout: Duration) -> TestResult {
    let path = format!("/proc/self/task/{tid}/syscall");
    let want = format!("{} {:#x} {:#x} ", libc::SYS_ioctl, fd, req);
    let start = Instant::now();
    loop {
        let last = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        if last.starts_with(&want) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "thread {tid} was not blocked in ioctl({fd}, {req:#x}) within {timeout:?}: \
                 {path} says {:?}",
                last.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CREATE_BUFS while another thread of the owner waits in a blocking DQBUF: videobuf2 refuses
/// (EBUSY) only on a queue with no buffers (`vb2_core_create_bufs()`), so the buffer is made,
/// can be queued while the DQBUF waits, and is what the DQBUF returns once frames flow.
pub fn create_bufs_while_dqbuf_waits(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let q = Queue::request(&dev, 3)?;
    let new_index = q.count();
    // Streaming with nothing queued: a blocking DQBUF waits until a buffer is done.
    q.streamon()?;
    // SAFETY: gettid() has no preconditions.
    let waiter = unsafe { libc::gettid() };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (helper, dq) = std::thread::scope(|s| {
        let dev = &dev;
        let fmt = &fmt;
        let helper = s.spawn(move || {
            let r = (|| {
                wait_blocked_in_ioctl(
                    waiter,
                    dev.as_raw_fd(),
                    VIDIOC_DQBUF,
                    Duration::from_secs(10),
                )?;
                let cb = ok(
                    "VIDIOC_CREATE_BUFS(1) while another thread waits in VIDIOC_DQBUF",
                    dev.create_bufs(1, V4L2_MEMORY_MMAP, fmt),
                )?;
                ensure(cb.count == 1 && cb.index == new_index, || {
                    format!(
                        "VIDIOC_CREATE_BUFS(1) made {} buffers from index {}, want 1 at {new_index}",
                        cb.count, cb.index
                    )
                })?;
                ok(format!("VIDIOC_QBUF {new_index}"), dev.qbuf(new_index))?;
                ok("VIDIOC_QBUF 0", dev.qbuf(0)).map(drop)
            })();
            // Wake the waiter if this failed, or if no frame ends its wait.
            if r.is_err() || done_rx.recv_timeout(FRAME_TIMEOUT * 2).is_err() {
                let _ = dev.streamoff();
            }
            r
        });
        let dq = dev.dqbuf();
        let _ = done_tx.send(());
        (helper.join(), dq)
    });
    helper.map_err(|_| "the helper thread panicked".to_string())??;
    let b = ok("the blocking VIDIOC_DQBUF", dq)?;
    ensure(
        b.index == new_index && b.flags & V4L2_BUF_FLAG_ERROR == 0 && b.bytesused > 0,
        || {
            format!(
                "the waiting VIDIOC_DQBUF returned buffer {} (flags {:#x}, bytesused {}), want \
                 buffer {new_index}, the one CREATE_BUFS made and QBUF queued first",
                b.index, b.flags, b.bytesused
            )
        },
    )?;
    q.streamoff()
}

/// VIDIOC_PREPARE_BUF sets PREPARED and the buffer then queues and streams; preparing it
/// again, or once queued, is EINVAL, as are a bad index, type or memory.
pub fn prepare_buf_then_qbuf(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;

    let b = ok("VIDIOC_PREPARE_BUF 0", dev.prepare_buf(0))?;
    ensure(
        b.flags & V4L2_BUF_FLAG_PREPARED != 0 && b.flags & V4L2_BUF_FLAG_QUEUED == 0,
        || {
            format!(
                "VIDIOC_PREPARE_BUF 0: flags {:#x}, want PREPARED and not QUEUED",
                b.flags
            )
        },
    )?;
    let b = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    ensure(b.flags & V4L2_BUF_FLAG_PREPARED != 0, || {
        format!(
            "VIDIOC_QUERYBUF 0 after PREPARE_BUF: flags {:#x} lack PREPARED",
            b.flags
        )
    })?;
    expect_errno(
        "VIDIOC_PREPARE_BUF 0 again (already prepared)",
        dev.prepare_buf(0),
        libc::EINVAL,
    )?;
    let b = ok("VIDIOC_QBUF 0 (prepared)", dev.qbuf(0))?;
    ensure(b.flags & V4L2_BUF_FLAG_QUEUED != 0, || {
        format!("VIDIOC_QBUF 0: flags {:#x} lack QUEUED", b.flags)
    })?;
    expect_errno(
        "VIDIOC_PREPARE_BUF 0 while queued",
        dev.prepare_buf(0),
        libc::EINVAL,
    )?;
    for index in [q.count(), u32::MAX] {
        expect_errno(
            format!("VIDIOC_PREPARE_BUF {index}"),
            dev.prepare_buf(index),
            libc::EINVAL,
        )?;
    }
    let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_OUTPUT, V4L2_MEMORY_MMAP, 1);
    expect_errno(
        "VIDIOC_PREPARE_BUF 1 type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_PREPARE_BUF, &mut b),
        libc::EINVAL,
    )?;
    let mut b = v4l2_buffer::new(CAPTURE, V4L2_MEMORY_USERPTR, 1);
    expect_errno(
        "VIDIOC_PREPARE_BUF 1 memory USERPTR",
        dev.ioctl(VIDIOC_PREPARE_BUF, &mut b),
        libc::EINVAL,
    )?;

    ok("VIDIOC_PREPARE_BUF 1", dev.prepare_buf(1))?;
    q.qbuf(1)?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let mut seen = Vec::new();
    for n in 0..2 {
        let b = q
            .next_buffer(FRAME_TIMEOUT)
            .map_err(|e| format!("frame {n} from the prepared buffers: {e}"))?;
        checker.check(&b, false)?;
        check_color_bars(q.data(&b)?, &fmt)?;
        seen.push(b.index);
    }
    seen.sort_unstable();
    ensure(seen == [0, 1], || {
        format!("dequeued buffers {seen:?}, want the prepared 0 and 1")
    })?;
    q.streamoff()
}

/// VIDIOC_QBUF errors: no buffers, index out of range, wrong type or memory, queueing a
/// queued buffer: all EINVAL.
pub fn qbuf_errors(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    expect_errno("VIDIOC_QBUF 0 with no buffers", dev.qbuf(0), libc::EINVAL)?;
    let q = Queue::request(&dev, 4)?;
    for index in [q.count(), MAX_BUFFERS, u32::MAX] {
        expect_errno(
            format!("VIDIOC_QBUF {index} of {}", q.count()),
            dev.qbuf(index),
            libc::EINVAL,
        )?;
    }
    for (type_, memory, what) in [
        (
            V4L2_BUF_TYPE_VIDEO_OUTPUT,
            V4L2_MEMORY_MMAP,
            "type VIDEO_OUTPUT",
        ),
        (CAPTURE, V4L2_MEMORY_USERPTR, "memory USERPTR"),
        (CAPTURE, V4L2_MEMORY_DMABUF, "memory DMABUF"),
    ] {
        let mut b = v4l2_buffer::new(type_, memory, 0);
        expect_errno(
            format!("VIDIOC_QBUF 0 {what}"),
            dev.ioctl(VIDIOC_QBUF, &mut b),
            libc::EINVAL,
        )?;
    }
    let b = ok("VIDIOC_QBUF 0", dev.qbuf(0))?;
    ensure(b.flags & V4L2_BUF_FLAG_QUEUED != 0, || {
        format!("VIDIOC_QBUF 0: flags {:#x} lack QUEUED", b.flags)
    })?;
    let b = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    ensure(b.flags & V4L2_BUF_FLAG_QUEUED != 0, || {
        format!(
            "VIDIOC_QUERYBUF 0 after QBUF: flags {:#x} lack QUEUED",
            b.flags
        )
    })?;
    expect_errno("VIDIOC_QBUF 0 twice", dev.qbuf(0), libc::EINVAL)?;
    ok("VIDIOC_QBUF 1", dev.qbuf(1))?;
    Ok(())
}

/// VIDIOC_DQBUF while not streaming is EINVAL at once (blocking or not); streaming with only
/// one buffer queued (frames need two), the driver is not started and an O_NONBLOCK DQBUF is
/// EAGAIN; wrong type EINVAL.
pub fn dqbuf_not_streaming_and_nonblock(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let q = Queue::request(&dev, 4)?;
    q.queue_all()?;
    expect_errno(
        "blocking VIDIOC_DQBUF with buffers queued but no STREAMON",
        dqbuf_must_not_block(&dev, "blocking VIDIOC_DQBUF without STREAMON")?,
        libc::EINVAL,
    )?;
    ok("fcntl O_NONBLOCK", dev.set_nonblocking(true))?;
    expect_errno(
        "O_NONBLOCK VIDIOC_DQBUF without STREAMON",
        dev.dqbuf(),
        libc::EINVAL,
    )?;
    let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_OUTPUT, V4L2_MEMORY_MMAP, 0);
    expect_errno(
        "VIDIOC_DQBUF type VIDEO_OUTPUT",
        dev.ioctl(VIDIOC_DQBUF, &mut b),
        libc::EINVAL,
    )?;

    q.streamoff()?;
    q.qbuf(0)?;
    // With the driver's start_streaming set to fail, the STREAMON succeeds only if the queue
    // did not start the driver, which completes nothing before it is started: nothing can
    // complete, which the state shows at once (no waiting for it not to happen).
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_FAIL_START_STREAMING",
        dev.s_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1),
    )?;
    ok(
        "VIDIOC_STREAMON with 1 buffer queued (fewer than the 2 needed; must not start the \
         driver, whose start_streaming is set to fail)",
        dev.streamon(),
    )?;
    expect_errno(
        "O_NONBLOCK VIDIOC_DQBUF streaming with 1 buffer queued",
        dev.dqbuf(),
        libc::EAGAIN,
    )?;
    let r = ok("poll with 1 buffer queued", dev.poll(POLL_IN, 0))?;
    ensure(r & libc::POLLIN == 0, || {
        format!("poll streaming with 1 buffer queued: revents {r:#x}, want no POLLIN")
    })?;
    let b = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    ensure(
        b.flags & V4L2_BUF_FLAG_QUEUED != 0
            && b.flags & (V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR) == 0,
        || {
            format!(
                "buffer 0, alone in the queue: flags {:#x}, want QUEUED (not DONE/ERROR)",
                b.flags
            )
        },
    )?;
    q.streamoff()?;
    ok("fcntl ~O_NONBLOCK", dev.set_nonblocking(false))
}

/// STREAMON without buffers or of a wrong type is EINVAL; STREAMON/STREAMOFF twice succeed;
/// REQBUFS while streaming is EBUSY; STREAMOFF returns every buffer, after which a blocking
/// DQBUF is EINVAL at once.
pub fn streamon_streamoff_rules(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    expect_errno(
        "VIDIOC_STREAMON before any REQBUFS",
        dev.streamon(),
        libc::EINVAL,
    )?;
    ok("VIDIOC_REQBUFS(4)", dev.reqbufs(4))?;
    ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    expect_errno(
        "VIDIOC_STREAMON after REQBUFS(0)",
        dev.streamon(),
        libc::EINVAL,
    )?;

    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    for (type_, name) in [
        (V4L2_BUF_TYPE_VIDEO_OUTPUT, "VIDEO_OUTPUT"),
        (V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, "VIDEO_CAPTURE_MPLANE"),
    ] {
        expect_errno(
            format!("VIDIOC_STREAMON type {name}"),
            dev.streamon_type(type_),
            libc::EINVAL,
        )?;
        expect_errno(
            format!("VIDIOC_STREAMOFF type {name}"),
            dev.streamoff_type(type_),
            libc::EINVAL,
        )?;
    }

    // STREAMOFF without STREAMON still returns queued buffers.
    q.qbuf(0)?;
    q.qbuf(1)?;
    ok("VIDIOC_STREAMOFF before STREAMON", dev.streamoff())?;
    all_dequeued(&dev, 0..q.count(), "after STREAMOFF without STREAMON")?;

    q.queue_all()?;
    ok("VIDIOC_STREAMON", dev.streamon())?;
    ok("VIDIOC_STREAMON again while streaming", dev.streamon())?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    capture(&q, &mut checker, 2)?;
    expect_errno(
        "VIDIOC_REQBUFS(4) while streaming",
        dev.reqbufs(4),
        libc::EBUSY,
    )?;

    ok("VIDIOC_STREAMOFF", dev.streamoff())?;
    all_dequeued(&dev, 0..q.count(), "after STREAMOFF")?;
    ok("VIDIOC_STREAMOFF again", dev.streamoff())?;
    expect_errno(
        "blocking VIDIOC_DQBUF after STREAMOFF",
        dqbuf_must_not_block(&dev, "blocking VIDIOC_DQBUF after STREAMOFF")?,
        libc::EINVAL,
    )
}

/// mmap: MAP_PRIVATE is EINVAL; MAP_SHARED read/write works for each buffer (QUERYBUF then
/// shows MAPPED); an unknown offset or a length past the buffer is EINVAL.
pub fn mmap_flags_and_offsets(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let q = Queue::request(&dev, 4)?;
    let page = page_size();
    let mut maps = Vec::new();
    for i in 0..q.count() {
        let b = *q.buffer(i);
        let len = b.length as usize;
        expect_errno(
            format!("mmap MAP_PRIVATE of buffer {i}"),
            Mapping::new(
                &dev,
                b.offset(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
            ),
            libc::EINVAL,
        )?;
        let mut m = ok(
            format!("mmap MAP_SHARED of buffer {i} (offset {:#x})", b.offset()),
            Mapping::shared(&dev, b.offset(), len),
        )?;
        let bytes = m.bytes_mut();
        bytes[0] = 0x5a;
        bytes[len - 1] = 0xa5;
        ensure(m.bytes()[0] == 0x5a && m.bytes()[len - 1] == 0xa5, || {
            format!("buffer {i}: bytes written through the mapping do not read back")
        })?;
        maps.push(m);
        let qb = ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
        ensure(qb.flags & V4L2_BUF_FLAG_MAPPED != 0, || {
            format!(
                "VIDIOC_QUERYBUF {i} while mapped: flags {:#x} lack MAPPED",
                qb.flags
            )
        })?;
    }

    // Far past any buffer in any sane offset scheme (and not videobuf2's cookie of a buffer).
    let bad = 0x3fff_8000u32;
    ensure((0..q.count()).all(|i| q.buffer(i).offset() != bad), || {
        "the bad offset chosen is a buffer's".into()
    })?;
    expect_errno(
        format!("mmap of unknown offset {bad:#x}"),
        Mapping::shared(&dev, bad, page),
        libc::EINVAL,
    )?;
    let b = *q.buffer(0);
    let too_long = (b.length as usize).div_ceil(page) * page + page;
    expect_errno(
        format!(
            "mmap of buffer 0 with length {too_long} (> its {} bytes)",
            b.length
        ),
        Mapping::shared(&dev, b.offset(), too_long),
        libc::EINVAL,
    )?;

    drop(maps);
    for i in 0..q.count() {
        let qb = ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
        ensure(qb.flags & V4L2_BUF_FLAG_MAPPED == 0, || {
            format!(
                "VIDIOC_QUERYBUF {i} after munmap: flags {:#x} still MAPPED",
                qb.flags
            )
        })?;
    }
    Ok(())
}

/// Orphaned buffers (SUPPORTS_ORPHANED_BUFS, as videobuf2): REQBUFS(0), REMOVE_BUFS and the
/// owner's close succeed while buffers are mapped, by the owner or by another opener (any
/// opener may map, as in videobuf2; its mapping counts as MAPPED); each mapping keeps its
/// memory, contents and writability until munmap, and a buffer made in a freed slot gets fresh
/// zeroed memory, not the orphan's. Afterwards another opener allocates and maps again. (That
/// an orphan's memory goes at munmap is observed by `queue_memory_limit`; the kernel log,
/// kmemleak and KASAN by the harness.)
pub fn reqbufs_orphans_mapped_buffers(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let other = open_rvivid(ctx)?;
    let rb = ok("VIDIOC_REQBUFS(2)", dev.reqbufs(2))?;
    ensure(
        rb.capabilities & V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS != 0,
        || {
            format!(
                "VIDIOC_REQBUFS: capabilities {:#x} lack SUPPORTS_ORPHANED_BUFS",
                rb.capabilities
            )
        },
    )?;
    let b0 = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    let b1 = ok("VIDIOC_QUERYBUF 1", dev.querybuf(1))?;
    let len = b0.length as usize;
    let mut m0 = ok(
        "mmap of buffer 0 by the owner",
        Mapping::shared(&dev, b0.offset(), len),
    )?;
    let mut m1 = ok(
        "mmap of buffer 1 by another opener",
        Mapping::shared(&other, b1.offset(), len),
    )?;
    let q1 = ok("VIDIOC_QUERYBUF 1", dev.querybuf(1))?;
    ensure(q1.flags & V4L2_BUF_FLAG_MAPPED != 0, || {
        format!(
            "buffer 1 mapped by another opener: flags {:#x} lack MAPPED",
            q1.flags
        )
    })?;
    let mark = |m: &mut Mapping, head: [u8; 4], tail: u8| {
        m.bytes_mut()[..4].copy_from_slice(&head);
        m.bytes_mut()[len - 1] = tail;
    };
    let marked =
        |m: &Mapping, head: [u8; 4], tail: u8| m.bytes()[..4] == head && m.bytes()[len - 1] == tail;
    mark(&mut m0, [1, 2, 3, 4], 9);
    mark(&mut m1, [5, 6, 7, 8], 10);

    ok(
        "VIDIOC_REQBUFS(0) while buffers 0 and 1 are mapped",
        dev.reqbufs(0),
    )?;
    for i in [0, 1] {
        expect_errno(
            format!("VIDIOC_QUERYBUF {i} after REQBUFS(0)"),
            dev.querybuf(i),
            libc::EINVAL,
        )?;
    }
    ensure(
        marked(&m0, [1, 2, 3, 4], 9) && marked(&m1, [5, 6, 7, 8], 10),
        || "an orphaned buffer's mapping lost its contents after REQBUFS(0)".into(),
    )?;
    m0.bytes_mut()[len / 2] = 7;
    ensure(m0.bytes()[len / 2] == 7, || {
        "the orphaned buffer's mapping is not writable".into()
    })?;

    // REMOVE_BUFS of a mapped buffer; the slot's next buffer is new memory.
    let rb = ok("VIDIOC_REQBUFS(3)", dev.reqbufs(3))?;
    ensure(rb.count == 3, || format!("REQBUFS(3) gave {}", rb.count))?;
    let b1 = ok("VIDIOC_QUERYBUF 1", dev.querybuf(1))?;
    let mut m2 = ok("mmap of buffer 1", Mapping::shared(&dev, b1.offset(), len))?;
    mark(&mut m2, [0xaa; 4], 0xab);
    ok(
        "VIDIOC_REMOVE_BUFS index 1 count 1 while buffer 1 is mapped",
        dev.remove_bufs(1, 1, CAPTURE),
    )?;
    expect_errno(
        "VIDIOC_QUERYBUF 1 after REMOVE_BUFS",
        dev.querybuf(1),
        libc::EINVAL,
    )?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let cb = ok(
        "VIDIOC_CREATE_BUFS count 1 into the freed slot",
        dev.create_bufs(1, V4L2_MEMORY_MMAP, &f),
    )?;
    ensure(cb.index == 1 && cb.count == 1, || {
        format!(
            "CREATE_BUFS after REMOVE_BUFS 1: index {} count {}, want index 1 count 1",
            cb.index, cb.count
        )
    })?;
    let b1 = ok("VIDIOC_QUERYBUF 1 (new)", dev.querybuf(1))?;
    let m3 = ok(
        "mmap of the new buffer 1",
        Mapping::shared(&dev, b1.offset(), len),
    )?;
    ensure(marked(&m3, [0; 4], 0), || {
        "the new buffer 1 shows the removed buffer's contents (want fresh zeroed memory)".into()
    })?;
    ensure(marked(&m2, [0xaa; 4], 0xab), || {
        "the removed buffer's mapping lost its contents".into()
    })?;

    // The owner's close frees the buffers, mapped or not.
    drop(dev);
    ensure(
        marked(&m0, [1, 2, 3, 4], 9)
            && marked(&m1, [5, 6, 7, 8], 10)
            && marked(&m2, [0xaa; 4], 0xab),
        || "an orphaned buffer's mapping lost its contents after the owner's close".into(),
    )?;
    drop((m0, m1, m2, m3));
    let mut q = Queue::request(&other, 4).map_err(|e| format!("after the orphaning: {e}"))?;
    q.map_all()
}

// ---------------------------------------------------------------------------------------------
// Capture tests
// ---------------------------------------------------------------------------------------------

/// Streams 10 frames of the current format with 4 buffers: sequence from 0 (gaps only for
/// dropped frames) with monotonic timestamps on the frame grid, bytesused, flags, field;
/// colour bars in the first frame.
pub fn capture_frames(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let cap = capture(&q, &mut checker, 10)?;
    check_color_bars(&cap.first, &fmt).map_err(|e| format!("first frame: {e}"))?;
    q.streamoff()
}

/// Each format at 640x480 and 320x240: S_FMT, REQBUFS(3), 5 checked frames, colour bars in
/// the last one, STREAMOFF, REQBUFS(0).
pub fn capture_each_format(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    for fourcc in FORMATS {
        for (w, h) in [(640, 480), (320, 240)] {
            let fmt = set_format(&dev, fourcc, w, h)?;
            let at = fmt.describe();
            (|| {
                let mut q = Queue::request(&dev, 3)?;
                q.map_all()?;
                q.queue_all()?;
                q.streamon()?;
                let mut checker = FrameChecker::new(fmt, &q)?;
                let cap = capture(&q, &mut checker, 5)?;
                check_color_bars(&cap.last, &fmt).map_err(|e| format!("last frame: {e}"))?;
                q.streamoff()?;
                drop(q);
                ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0)).map(drop)
            })()
            .map_err(|e: String| format!("{at}: {e}"))?;
        }
    }
    Ok(())
}

/// `v4l2-ctl --stream-mmap --stream-count=60 --stream-to=FILE` at 640x480 for each format
/// exits 0, writes 60 frames of sizeimage bytes, and the last shows the colour bars.
pub fn v4l2_ctl_stream(ctx: &mut Ctx) -> TestResult {
    const FRAMES: u64 = 60;
    let _restore = RestoreDefaults::new(ctx)?;
    let node = ctx.find_rvivid()?;
    let node = node.to_string_lossy().into_owned();
    let mut notes = String::new();
    for fourcc in FORMATS {
        let name = fourcc_str(fourcc);
        let fmt = FrameFormat::packed(fourcc, 640, 480).ok_or("unknown format")?;
        // On the guest's tmpfs: 55 MB through 9p to the logs would take most of the test.
        let file = std::env::temp_dir().join(format!("rvb2-stream-{name}.raw"));
        let file_s = file.to_string_lossy().into_owned();
        let _ = std::fs::remove_file(&file);
        let set_fmt = format!("--set-fmt-video=width=640,height=480,pixelformat={name}");
        let count = format!("--stream-count={FRAMES}");
        let to = format!("--stream-to={file_s}");
        let args = ["-d", &*node, &*set_fmt, "--stream-mmap", &*count, &*to];
        let out = ctx.run("v4l2-ctl", &args)?;
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let result = (|| {
            ensure(out.status.success(), || {
                format!(
                    "`{}` failed ({}): {}",
                    crate::harness::command_line("v4l2-ctl", &args),
                    out.status,
                    first_lines(&String::from_utf8_lossy(&out.stderr), 5)
                )
            })?;
            let want = FRAMES * u64::from(fmt.sizeimage);
            ensure(size == want, || {
                format!(
                    "{name}: {file_s} has {size} bytes, want {FRAMES} frames of {} = {want}",
                    fmt.sizeimage
                )
            })?;
            let mut last = vec![0u8; fmt.sizeimage as usize];
            let mut f = std::fs::File::open(&file).map_err(|e| format!("{file_s}: {e}"))?;
            f.seek(SeekFrom::Start(size - u64::from(fmt.sizeimage)))
                .and_then(|_| f.read_exact(&mut last))
                .map_err(|e| format!("{file_s}: reading the last frame: {e}"))?;
            check_color_bars(&last, &fmt).map_err(|e| format!("{name}: last frame: {e}"))
        })();
        let _ = std::fs::remove_file(&file);
        notes.push_str(&format!(
            "$ {}\n{}\nfile: {size} bytes (deleted); check: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n\n",
            crate::harness::command_line("v4l2-ctl", &args),
            out.status,
            match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.clone(),
            },
            first_lines(&String::from_utf8_lossy(&out.stdout), 10),
            first_lines(&String::from_utf8_lossy(&out.stderr), 10),
        ));
        if let Err(e) = result {
            let _ = ctx.save_log("v4l2-ctl-stream.txt", &notes);
            return Err(e);
        }
    }
    ctx.save_log("v4l2-ctl-stream.txt", &notes)
}

/// poll: POLLERR with buffers but no STREAMON, and after STREAMON with none queued; POLLIN
/// within 2 s once buffers are queued; POLLERR again after STREAMOFF. (With no buffers at
/// all, a poll for input starts read I/O, as `vb2_poll()` does: `read_io_poll`.)
pub fn poll_states(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let expect_err = |when: &str| -> TestResult {
        let r = ok(format!("poll {when}"), dev.poll(POLL_IN, 0))?;
        ensure(r & libc::POLLERR != 0, || {
            format!("poll {when}: revents {r:#x}, want POLLERR")
        })
    };
    let q = Queue::request(&dev, 4)?;
    expect_err("with buffers but no STREAMON")?;
    q.streamon()?;
    expect_err("after STREAMON with no buffer queued")?;
    q.queue_all()?;
    let r = ok("poll streaming", dev.poll(POLL_IN, 2000))?;
    ensure(r & libc::POLLIN != 0 && r & libc::POLLERR == 0, || {
        format!(
            "poll streaming with {} buffers queued: revents {r:#x} within 2 s, want POLLIN",
            q.count()
        )
    })?;
    ok("fcntl O_NONBLOCK", dev.set_nonblocking(true))?;
    ok("VIDIOC_DQBUF after POLLIN", dev.dqbuf())?;
    q.streamoff()?;
    expect_err("after STREAMOFF")
}

/// While one fd owns the buffers, another gets EBUSY for REQBUFS, CREATE_BUFS, QBUF,
/// PREPARE_BUF, DQBUF, STREAMON, STREAMOFF, REMOVE_BUFS and S_FMT (QUERYBUF works); once the
/// owner closes, the other can allocate and stream.
pub fn queue_ownership(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let other = open_rvivid(ctx)?;
    let fmt = current_format(&other)?;
    {
        let owner = open_rvivid(ctx)?;
        let mut q = Queue::request(&owner, 4)?;
        let f = ok("VIDIOC_G_FMT", other.g_fmt())?;
        let busy = |what: &str, r: Result<(), Errno>| {
            expect_errno(format!("{what} from a second fd"), r, libc::EBUSY)
        };
        busy("VIDIOC_REQBUFS(4)", other.reqbufs(4).map(drop))?;
        busy("VIDIOC_REQBUFS(0)", other.reqbufs(0).map(drop))?;
        busy(
            "VIDIOC_CREATE_BUFS count 1",
            other.create_bufs(1, V4L2_MEMORY_MMAP, &f).map(drop),
        )?;
        ok(
            "VIDIOC_CREATE_BUFS count 0 (a query) from a second fd",
            other.create_bufs(0, V4L2_MEMORY_MMAP, &f),
        )?;
        ok("VIDIOC_QUERYBUF 0 from a second fd", other.querybuf(0))?;
        busy("VIDIOC_QBUF 0", other.qbuf(0).map(drop))?;
        busy("VIDIOC_PREPARE_BUF 0", other.prepare_buf(0).map(drop))?;
        busy("VIDIOC_STREAMON", other.streamon())?;
        busy("VIDIOC_REMOVE_BUFS 0,1", other.remove_bufs(0, 1, CAPTURE))?;
        busy(
            "VIDIOC_S_FMT",
            other
                .set_pix(false, V4L2_PIX_FMT_GREY, 320, 240, V4L2_FIELD_NONE)
                .map(drop),
        )?;

        q.map_all()?;
        q.queue_all()?;
        q.streamon()?;
        let mut checker = FrameChecker::new(fmt, &q)?;
        capture(&q, &mut checker, 1)?;
        ok("fcntl O_NONBLOCK", other.set_nonblocking(true))?;
        busy("VIDIOC_DQBUF", other.dqbuf().map(drop))?;
        busy("VIDIOC_STREAMOFF", other.streamoff())?;
        ok("fcntl ~O_NONBLOCK", other.set_nonblocking(false))?;
        capture(&q, &mut checker, 1).map_err(|e| format!("after the second fd's tries: {e}"))?;
    }
    let mut q =
        Queue::request(&other, 4).map_err(|e| format!("second fd, after the owner closed: {e}"))?;
    q.map_all()?;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    capture(&q, &mut checker, 2).map_err(|e| format!("second fd streaming: {e}"))?;
    q.streamoff()
}

/// Waits (up to [`FRAME_TIMEOUT`]) until poll() on `dev` reports POLLIN: the driver runs and
/// has completed a buffer.
fn wait_frame_done(dev: &Device, what: &str) -> TestResult {
    let r = ok(
        format!("poll ({what})"),
        dev.poll(POLL_IN, FRAME_TIMEOUT.as_millis() as i32),
    )?;
    ensure(r & libc::POLLIN != 0, || {
        format!("{what}: no buffer done {FRAME_TIMEOUT:?} after STREAMON (revents {r:#x})")
    })
}

/// Closing an fd while streaming (buffers unmapped; then buffers still mapped, unmapped only
/// after the close) frees the queue: a new open streams again. Each close comes once a frame
/// is done, so the driver demonstrably streams; with the buffers mapped, the driver goes on
/// filling them after the close (the mappings keep the file, and so the queue, until the last
/// munmap releases it), until every buffer holds a frame.
pub fn close_while_streaming(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    // Round 1: nothing mapped.
    {
        let dev = open_rvivid(ctx)?;
        let rb = ok("VIDIOC_REQBUFS(4)", dev.reqbufs(4))?;
        for i in 0..rb.count {
            ok(format!("VIDIOC_QBUF {i}"), dev.qbuf(i))?;
        }
        ok("VIDIOC_STREAMON", dev.streamon())?;
        wait_frame_done(&dev, "round 1")?;
        // Closed here without STREAMOFF.
    }
    // Round 2: mapped, and the mappings outlive the fd.
    {
        let mut maps = Vec::new();
        let fmt;
        {
            let dev =
                open_rvivid(ctx).map_err(|e| format!("after closing while streaming: {e}"))?;
            fmt = current_format(&dev)?;
            let rb = ok(
                "VIDIOC_REQBUFS(4) after closing while streaming",
                dev.reqbufs(4),
            )?;
            for i in 0..rb.count {
                let b = ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
                maps.push(ok(
                    format!("mmap of buffer {i}"),
                    Mapping::shared(&dev, b.offset(), b.length as usize),
                )?);
                ok(format!("VIDIOC_QBUF {i}"), dev.qbuf(i))?;
            }
            ok("VIDIOC_STREAMON", dev.streamon())?;
            wait_frame_done(&dev, "round 2")?;
        }
        // The buffers stay valid and in use until the last munmap, which releases the file:
        // the driver fills every queued buffer (they were zeroed at REQBUFS), also after the
        // close.
        let start = Instant::now();
        loop {
            let empty: Vec<usize> = (0..maps.len())
                .filter(|&i| check_color_bars(maps[i].bytes(), &fmt).is_err())
                .collect();
            if empty.is_empty() {
                break;
            }
            if start.elapsed() >= FRAME_TIMEOUT {
                return Err(format!(
                    "closed while streaming with the buffers mapped: buffers {empty:?} hold no \
                     frame {FRAME_TIMEOUT:?} later"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for m in &maps {
            std::hint::black_box(m.bytes()[m.size() - 1]);
        }
    }
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)
        .map_err(|e| format!("after closing while streaming and mapped: {e}"))?;
    q.map_all()?;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let cap = capture(&q, &mut checker, 3)
        .map_err(|e| format!("streaming after closing while streaming: {e}"))?;
    check_color_bars(&cap.last, &fmt)?;
    q.streamoff()
}

/// A blocking DQBUF (streaming, one buffer queued so nothing completes) interrupted by a
/// SIGALRM whose handler lacks SA_RESTART returns EINTR; the queue then still works.
pub fn dqbuf_interrupted_by_signal(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    q.qbuf(0)?;
    q.streamon()?;

    let start = Instant::now();
    let (r, watchdog) = with_streamoff_watchdog(dev.as_raw_fd(), Duration::from_secs(10), || {
        let alarm = Alarm::arm(Duration::from_millis(200))?;
        let r = dqbuf_once(&dev);
        drop(alarm);
        Ok::<_, String>(r)
    });
    let elapsed = start.elapsed();
    let r = r?;
    ensure(!watchdog, || {
        format!(
            "blocking VIDIOC_DQBUF did not return on SIGALRM (200 ms); a STREAMOFF after 10 s \
             ended it with {:?}",
            r.map(|b| b.index)
        )
    })?;
    expect_errno(
        "blocking VIDIOC_DQBUF interrupted by SIGALRM (no SA_RESTART)",
        r,
        libc::EINTR,
    )?;
    ensure(elapsed >= Duration::from_millis(150), || {
        format!("VIDIOC_DQBUF returned after only {elapsed:?}, before the signal")
    })?;

    // Not broken by the interruption: a second buffer starts the stream.
    q.qbuf(1)?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let b = q
        .next_buffer(FRAME_TIMEOUT)
        .map_err(|e| format!("after the interrupted DQBUF: {e}"))?;
    checker.check(&b, false)?;
    q.streamoff()
}

// ---------------------------------------------------------------------------------------------
// Error injection, REMOVE_BUFS, restarting
// ---------------------------------------------------------------------------------------------

/// RVIVID_CID_FAIL_NEXT_BUFFERS=1 while streaming: exactly one of the next buffers comes back
/// with V4L2_BUF_FLAG_ERROR, with its frame's sequence number and timestamp on the stream's
/// grid like the others, and streaming goes on.
pub fn inject_buffer_error(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    capture(&q, &mut checker, 3)?;

    ok(
        "VIDIOC_S_CTRL RVIVID_CID_FAIL_NEXT_BUFFERS = 1",
        dev.s_ctrl(RVIVID_CID_FAIL_NEXT_BUFFERS, 1),
    )?;
    let mut errors = Vec::new();
    let after = 12;
    for n in 0..after {
        let b = q
            .next_buffer(FRAME_TIMEOUT)
            .map_err(|e| format!("frame {n} after FAIL_NEXT_BUFFERS=1: {e}"))?;
        if checker
            .check(&b, true)
            .map_err(|e| format!("frame {n} after FAIL_NEXT_BUFFERS=1: {e}"))?
        {
            errors.push((n, b.sequence));
        } else if n + 1 == after {
            check_color_bars(q.data(&b)?, &fmt)?;
        }
        q.qbuf(b.index)?;
    }
    ensure(errors.len() == 1, || {
        format!(
            "after FAIL_NEXT_BUFFERS=1, {} of the next {after} buffers had ERROR (at \
             (frame, sequence) {errors:?}), want exactly 1",
            errors.len()
        )
    })?;
    // The buffers already done when the control was set come first.
    let (n, _) = errors[0];
    ensure(n <= q.count(), || {
        format!(
            "the ERROR buffer came {n} buffers after FAIL_NEXT_BUFFERS=1, later than the {} \
             already queued",
            q.count()
        )
    })?;
    q.streamoff()
}

/// With RVIVID_CID_FAIL_START_STREAMING set, STREAMON (4 buffers queued) is EIO, the buffers
/// stay QUEUED and streaming is off; STREAMOFF returns them, and once the control is cleared
/// a new STREAMON streams.
pub fn inject_start_streaming_failure(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    q.queue_all()?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_FAIL_START_STREAMING",
        dev.s_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1),
    )?;
    expect_errno(
        "VIDIOC_STREAMON after RVIVID_CID_FAIL_START_STREAMING",
        dev.streamon(),
        libc::EIO,
    )?;
    for i in 0..q.count() {
        let b = ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
        ensure(
            b.flags & V4L2_BUF_FLAG_QUEUED != 0
                && b.flags & (V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR) == 0,
            || {
                format!(
                    "buffer {i} after the failed STREAMON: flags {:#x}, want QUEUED (and not \
                     DONE/ERROR)",
                    b.flags
                )
            },
        )?;
    }
    ok("fcntl O_NONBLOCK", dev.set_nonblocking(true))?;
    expect_errno(
        "VIDIOC_DQBUF after the failed STREAMON (not streaming)",
        dev.dqbuf(),
        libc::EINVAL,
    )?;
    ok("fcntl ~O_NONBLOCK", dev.set_nonblocking(false))?;
    let r = ok("poll after the failed STREAMON", dev.poll(POLL_IN, 0))?;
    ensure(r & libc::POLLERR != 0, || {
        format!("poll after the failed STREAMON: revents {r:#x}, want POLLERR")
    })?;

    ok(
        "VIDIOC_STREAMOFF after the failed STREAMON",
        dev.streamoff(),
    )?;
    all_dequeued(
        &dev,
        0..q.count(),
        "after the failed STREAMON and STREAMOFF",
    )?;
    q.queue_all()?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_FAIL_START_STREAMING = 0",
        dev.s_ctrl(RVIVID_CID_FAIL_START_STREAMING, 0),
    )?;
    ok(
        "VIDIOC_STREAMON after the failed one, with the control cleared",
        dev.streamon(),
    )?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let cap = capture(&q, &mut checker, 3)?;
    check_color_bars(&cap.last, &fmt)?;
    q.streamoff()
}

/// With STREAMON done before enough buffers were queued, the start happens in QBUF: after
/// RVIVID_CID_FAIL_START_STREAMING the QBUF reaching 2 buffers is EIO and that buffer is not
/// queued; queueing it again starts streaming (videobuf2's behaviour).
pub fn inject_start_failure_on_qbuf(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    q.streamon()?;
    q.qbuf(0)?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_FAIL_START_STREAMING",
        dev.s_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1),
    )?;
    expect_errno(
        "VIDIOC_QBUF 1 (the 2nd queued: starts streaming, which is made to fail)",
        dev.qbuf(1),
        libc::EIO,
    )?;
    let b0 = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    let b1 = ok("VIDIOC_QUERYBUF 1", dev.querybuf(1))?;
    ensure(
        b0.flags & V4L2_BUF_FLAG_QUEUED != 0 && b1.flags & V4L2_BUF_FLAG_QUEUED == 0,
        || {
            format!(
                "after the failed QBUF 1: flags of buffer 0 {:#x} (want QUEUED), of buffer 1 \
                 {:#x} (want not QUEUED)",
                b0.flags, b1.flags
            )
        },
    )?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_FAIL_START_STREAMING = 0",
        dev.s_ctrl(RVIVID_CID_FAIL_START_STREAMING, 0),
    )?;
    ok("VIDIOC_QBUF 1 again", dev.qbuf(1))?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let b = q
        .next_buffer(FRAME_TIMEOUT)
        .map_err(|e| format!("after QBUF 1 again: {e}"))?;
    checker.check(&b, false)?;
    q.streamoff()
}

/// VIDIOC_REMOVE_BUFS: removes 1..=2 of 4 (QUERYBUF then EINVAL there, 0 and 3 intact),
/// CREATE_BUFS refills from index 1, a queued buffer is EBUSY, count 0 is a no-op, missing
/// buffers or out-of-range index/count or a wrong type are EINVAL and remove nothing.
pub fn remove_bufs(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    ok(
        "VIDIOC_REMOVE_BUFS count 0 with no buffers",
        dev.remove_bufs(0, 0, CAPTURE),
    )?;
    let rb = ok("VIDIOC_REQBUFS(4)", dev.reqbufs(4))?;
    ensure(rb.count == 4, || {
        format!("VIDIOC_REQBUFS(4): count {}, this test wants 4", rb.count)
    })?;
    ensure(
        rb.capabilities & V4L2_BUF_CAP_SUPPORTS_REMOVE_BUFS != 0,
        || {
            format!(
                "VIDIOC_REQBUFS: capabilities {:#x} lack SUPPORTS_REMOVE_BUFS",
                rb.capabilities
            )
        },
    )?;
    let offset = |i: u32| dev.querybuf(i).map(|b| b.offset());
    let off0 = ok("VIDIOC_QUERYBUF 0", offset(0))?;
    let off3 = ok("VIDIOC_QUERYBUF 3", offset(3))?;

    ok(
        "VIDIOC_REMOVE_BUFS index 1 count 2",
        dev.remove_bufs(1, 2, CAPTURE),
    )?;
    for i in [1, 2] {
        expect_errno(
            format!("VIDIOC_QUERYBUF {i} after removing 1..=2"),
            dev.querybuf(i),
            libc::EINVAL,
        )?;
    }
    for (i, off) in [(0, off0), (3, off3)] {
        let b = ok(
            format!("VIDIOC_QUERYBUF {i} after removing 1..=2"),
            dev.querybuf(i),
        )?;
        ensure(
            b.index == i && b.offset() == off && b.length == fmt.sizeimage,
            || format!("buffer {i} changed when 1..=2 were removed: {b:?}"),
        )?;
    }

    for (index, count, why) in [
        (1, 1, "an already removed buffer"),
        (0, 2, "a range with a removed buffer"),
        (4, 1, "a never allocated index"),
        (MAX_BUFFERS, 1, "index 32"),
        (u32::MAX, 1, "index u32::MAX"),
        (0, MAX_BUFFERS + 1, "count 33"),
        (3, u32::MAX, "count u32::MAX"),
    ] {
        expect_errno(
            format!("VIDIOC_REMOVE_BUFS index {index} count {count} ({why})"),
            dev.remove_bufs(index, count, CAPTURE),
            libc::EINVAL,
        )?;
    }
    ok(
        "VIDIOC_QUERYBUF 0 after the failed REMOVE_BUFS (nothing may be removed on error)",
        dev.querybuf(0),
    )?;
    for (count, what) in [(1, "count 1"), (0, "count 0")] {
        expect_errno(
            format!("VIDIOC_REMOVE_BUFS type VIDEO_OUTPUT {what}"),
            dev.remove_bufs(0, count, V4L2_BUF_TYPE_VIDEO_OUTPUT),
            libc::EINVAL,
        )?;
    }
    ok(
        "VIDIOC_REMOVE_BUFS count 0",
        dev.remove_bufs(99, 0, CAPTURE),
    )?;

    let cb = ok(
        "VIDIOC_CREATE_BUFS count 2 after removing 1..=2",
        dev.create_bufs(2, V4L2_MEMORY_MMAP, &f),
    )?;
    ensure(cb.index == 1 && cb.count == 2, || {
        format!(
            "VIDIOC_CREATE_BUFS count 2: index {} count {}, want the freed slots: index 1 count 2",
            cb.index, cb.count
        )
    })?;
    let mut offsets = vec![off0, off3];
    for i in [1, 2] {
        let b = ok(format!("VIDIOC_QUERYBUF {i} (re-created)"), dev.querybuf(i))?;
        ensure(
            !offsets.contains(&b.offset()) && b.length == fmt.sizeimage,
            || {
                format!(
                    "re-created buffer {i}: offset {:#x} length {}",
                    b.offset(),
                    b.length
                )
            },
        )?;
        offsets.push(b.offset());
    }

    ok("VIDIOC_QBUF 0", dev.qbuf(0))?;
    expect_errno(
        "VIDIOC_REMOVE_BUFS index 0 count 1 of a queued buffer",
        dev.remove_bufs(0, 1, CAPTURE),
        libc::EBUSY,
    )?;
    let b = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    ensure(b.flags & V4L2_BUF_FLAG_QUEUED != 0, || {
        format!(
            "buffer 0 after the refused REMOVE_BUFS: flags {:#x}, want QUEUED",
            b.flags
        )
    })?;

    // The re-created set streams.
    let mut maps = Vec::new();
    for i in 0..4 {
        let b = ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
        maps.push(ok(
            format!("mmap of buffer {i}"),
            Mapping::shared(&dev, b.offset(), b.length as usize),
        )?);
        if i > 0 {
            ok(format!("VIDIOC_QBUF {i}"), dev.qbuf(i))?;
        }
    }
    let interval = frame_interval_ns(&dev)?;
    let floor = monotonic_now();
    ok("VIDIOC_STREAMON", dev.streamon())?;
    // Four buffers were queued: the driver started in STREAMON. Frames it had no buffer for
    // (none is requeued here) or ran a period late for are gaps; what is exact is the grid.
    let mut grid = StreamGrid::new(interval, floor, monotonic_now());
    let mut seen = Vec::new();
    for n in 0..4u32 {
        let b = next_buffer(&dev, FRAME_TIMEOUT).map_err(|e| format!("frame {n}: {e}"))?;
        grid.check(&format!("frame {n}"), &b, monotonic_now())?;
        ensure(b.bytesused == fmt.sizeimage, || {
            format!("frame {n}: bytesused {}", b.bytesused)
        })?;
        check_color_bars(
            &maps[b.index as usize].bytes()[..b.bytesused as usize],
            &fmt,
        )?;
        seen.push(b.index);
    }
    seen.sort_unstable();
    ensure(seen == [0, 1, 2, 3], || {
        format!("dequeued buffers {seen:?}, want each of 0..=3 once")
    })?;
    ok("VIDIOC_STREAMOFF", dev.streamoff())?;
    drop(maps);
    ok(
        "VIDIOC_REMOVE_BUFS index 0 count 4 (all)",
        dev.remove_bufs(0, 4, CAPTURE),
    )?;
    expect_errno(
        "VIDIOC_QUERYBUF 0 after removing all",
        dev.querybuf(0),
        libc::EINVAL,
    )
}

/// After STREAMOFF and a new STREAMON the frame counter starts at 0 again: the first buffer's
/// timestamp minus (sequence + 1) intervals falls within the STREAMON call (its sequence is
/// only above 0 if the work ran a whole period late, and then by the periods it missed), the
/// later ones stay on that grid, and the timestamps keep increasing across streams.
pub fn sequence_restarts_after_restream(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    for round in 1..=3 {
        q.queue_all()?;
        q.streamon()?;
        checker.restart(&q)?;
        capture(&q, &mut checker, 3).map_err(|e| format!("stream {round}: {e}"))?;
        q.streamoff()?;
        all_dequeued(&dev, 0..q.count(), &format!("after STREAMOFF {round}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timing: the guest's clock, sequence numbers and timestamps, drops
// ---------------------------------------------------------------------------------------------

/// The guest's clock is precise enough for the timestamp tests: its clocksource is the TSC
/// (tools/vm passes `tsc_early_khz`), and CLOCK_MONOTONIC read in a tight loop advances in
/// steps far below the frame grid's tolerance (10% of 33 ms), where a jiffies clock would
/// step by 4 ms. The clocksource and the step statistics go to clocksource.txt.
pub fn guest_clock_microsecond(ctx: &mut Ctx) -> TestResult {
    const READS: usize = 10_000;
    let dir = std::path::Path::new("/sys/devices/system/clocksource/clocksource0");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let current = read("current_clocksource")?;
    let available = read("available_clocksource").unwrap_or_else(|e| e);
    let mut steps = Vec::with_capacity(READS);
    let mut prev = monotonic_now();
    for _ in 0..READS {
        let t = monotonic_now();
        steps.push(t.saturating_sub(prev).as_nanos() as u64);
        prev = t;
    }
    let mut nonzero: Vec<u64> = steps.iter().copied().filter(|&s| s > 0).collect();
    nonzero.sort_unstable();
    steps.sort_unstable();
    let median = steps[steps.len() / 2];
    let min = nonzero.first().copied();
    ctx.save_log(
        "clocksource.txt",
        format!(
            "current_clocksource: {current}\navailable_clocksource: {available}\n\
             {READS} consecutive CLOCK_MONOTONIC reads: {} zero steps, smallest non-zero step \
             {min:?} ns, median step {median} ns, largest step {} ns\n",
            READS - nonzero.len(),
            steps[steps.len() - 1]
        ),
    )?;
    ensure(current == "tsc", || {
        format!("current clocksource is {current:?}, want \"tsc\" (available: {available})")
    })?;
    // The smallest step shows the resolution; the median, that readings advance in small
    // steps (a read preempted by the host may take longer, hence not the largest).
    ensure(min.is_some_and(|m| m < 10_000), || {
        format!("smallest non-zero step of CLOCK_MONOTONIC over {READS} reads: {min:?} ns, want < 10 us")
    })?;
    ensure(median < 100_000, || {
        format!("median step of CLOCK_MONOTONIC over {READS} reads: {median} ns, want < 100 us")
    })
}

/// At every frame interval rvivid offers at 640x480 (1/30, the default, first; it offers none
/// faster at this size), 20 frames with 4 buffers: each timestamp is CLOCK_MONOTONIC (flag set), not after
/// the DQBUF, and each pair of consecutive buffers has `dseq >= 1` and `|dts - dseq * interval|`
/// within 10% of the interval; the first buffer's implies a start within STREAMON.
/// VIDIOC_S_PARM is EBUSY while streaming (a stream keeps its grid). The buffers go to
/// frame-timestamps.txt.
pub fn timestamps_follow_frame_interval(ctx: &mut Ctx) -> TestResult {
    const FRAMES: u32 = 20;
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let default = ok("VIDIOC_G_PARM", g_parm(&dev))?.capture().timeperframe;
    ensure((default.numerator, default.denominator) == (1, 30), || {
        format!(
            "default timeperframe {}/{}, want 1/30",
            default.numerator, default.denominator
        )
    })?;
    let mut intervals = vec![(1, 30)];
    for index in 0.. {
        let mut e: v4l2_frmivalenum = zeroed();
        e.index = index;
        e.pixel_format = fmt.fourcc;
        e.width = fmt.width;
        e.height = fmt.height;
        if dev.ioctl(VIDIOC_ENUM_FRAMEINTERVALS, &mut e).is_err() {
            break;
        }
        let d = e.discrete();
        if e.type_ == V4L2_FRMIVAL_TYPE_DISCRETE
            && !intervals.contains(&(d.numerator, d.denominator))
        {
            intervals.push((d.numerator, d.denominator));
        }
    }
    let mut log = String::new();
    let result = (|| {
        for &(n, d) in &intervals {
            let what = format!("at {n}/{d} s");
            let p = ok(format!("VIDIOC_S_PARM {n}/{d}"), s_parm(&dev, n, d))?;
            let t = p.capture().timeperframe;
            ensure((t.numerator, t.denominator) == (n, d), || {
                format!(
                    "VIDIOC_S_PARM {n}/{d}: got {}/{}",
                    t.numerator, t.denominator
                )
            })?;
            let q = Queue::request(&dev, 4)?;
            let interval = q.interval_ns()?;
            q.queue_all()?;
            let floor = monotonic_now();
            q.streamon()?;
            // Four buffers queued: the driver started in STREAMON.
            let mut grid = StreamGrid::new(interval, floor, monotonic_now());
            let other = if (n, d) == (1, 30) { (1, 15) } else { (1, 30) };
            expect_errno(
                format!(
                    "VIDIOC_S_PARM {}/{} while streaming {what}",
                    other.0, other.1
                ),
                s_parm(&dev, other.0, other.1),
                libc::EBUSY,
            )?;
            log.push_str(&format!(
                "{what} (interval {interval} ns): index sequence timestamp_ns dqbuf_ns\n"
            ));
            let mut gaps = 0;
            let mut last_seq = None;
            for f in 0..FRAMES {
                let b = q
                    .next_buffer(FRAME_TIMEOUT)
                    .map_err(|e| format!("{what}, frame {f}: {e}"))?;
                let now = monotonic_now();
                log.push_str(&format!(
                    "  {} {} {} {}\n",
                    b.index,
                    b.sequence,
                    timestamp_ns("", &b).unwrap_or(0),
                    now.as_nanos()
                ));
                grid.check(
                    &format!(
                        "{what}, frame {f} (buffer {}, sequence {})",
                        b.index, b.sequence
                    ),
                    &b,
                    now,
                )?;
                if last_seq.is_some_and(|l: u32| b.sequence != l.wrapping_add(1)) {
                    gaps += 1;
                }
                last_seq = Some(b.sequence);
                q.qbuf(b.index)?;
            }
            log.push_str(&format!(
                "  {gaps} gap(s) in the sequence (dropped frames)\n"
            ));
            q.streamoff()?;
        }
        Ok(())
    })();
    ctx.save_log("frame-timestamps.txt", &log)?;
    result
}

/// After DQBUF, QUERYBUF reports what DQBUF did, as videobuf2's `__fill_v4l2_buffer()` does:
/// sequence, timestamp, bytesused, field, flags (MAPPED, the timestamp type, LAST); STREAMOFF
/// keeps them; PREPARE_BUF and QBUF clear sequence, timestamp and bytesused (a queued capture
/// buffer reports 0, as v4l2-compliance checks) and LAST.
pub fn querybuf_after_dqbuf_keeps_fields(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = current_format(&dev)?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let same = |what: &str, dq: &v4l2_buffer| -> TestResult {
        let qb = ok(
            format!("VIDIOC_QUERYBUF {} {what}", dq.index),
            dev.querybuf(dq.index),
        )?;
        ensure(
            qb.sequence == dq.sequence
                && qb.timestamp.tv_sec == dq.timestamp.tv_sec
                && qb.timestamp.tv_usec == dq.timestamp.tv_usec
                && qb.bytesused == dq.bytesused
                && qb.field == dq.field
                && qb.flags == dq.flags
                && qb.length == dq.length
                && qb.offset() == dq.offset(),
            || {
                format!(
                    "VIDIOC_QUERYBUF {} {what}: sequence {} timestamp {:?} bytesused {} field {} \
                     flags {:#x}, but DQBUF reported sequence {} timestamp {:?} bytesused {} \
                     field {} flags {:#x}",
                    dq.index,
                    qb.sequence,
                    qb.timestamp,
                    qb.bytesused,
                    qb.field,
                    qb.flags,
                    dq.sequence,
                    dq.timestamp,
                    dq.bytesused,
                    dq.field,
                    dq.flags
                )
            },
        )
    };
    let cleared = |what: &str, b: &v4l2_buffer| {
        ensure(
            b.sequence == 0
                && b.timestamp.tv_sec == 0
                && b.timestamp.tv_usec == 0
                && b.bytesused == 0
                && b.flags & V4L2_BUF_FLAG_LAST == 0,
            || {
                format!(
                    "{what}: sequence {} timestamp {:?} bytesused {} flags {:#x}, want 0, 0, 0 \
                     and no LAST",
                    b.sequence, b.timestamp, b.bytesused, b.flags
                )
            },
        )
    };
    // Dequeued, requeued: kept, then cleared by QBUF.
    let b = q.next_buffer(FRAME_TIMEOUT)?;
    checker.check(&b, false)?;
    same("after DQBUF", &b)?;
    let qb = ok(format!("VIDIOC_QBUF {}", b.index), dev.qbuf(b.index))?;
    cleared(&format!("VIDIOC_QBUF {}", b.index), &qb)?;
    let qb = ok(
        format!("VIDIOC_QUERYBUF {}", b.index),
        dev.querybuf(b.index),
    )?;
    if qb.flags & V4L2_BUF_FLAG_DONE == 0 {
        cleared(&format!("VIDIOC_QUERYBUF {} after QBUF", b.index), &qb)?;
    } else {
        // The driver filled it again in between (a frame interval passed: a loaded machine):
        // QUERYBUF reports that frame, a later one than the dequeued.
        ensure(qb.sequence > b.sequence && qb.bytesused > 0, || {
            format!(
                "VIDIOC_QUERYBUF {} after QBUF, done again: sequence {} (dequeued: {}) \
                     bytesused {}",
                b.index, qb.sequence, b.sequence, qb.bytesused
            )
        })?;
    }
    // Kept dequeued; then the last buffer of the stream ("Mark Last Buffer"), whose LAST flag
    // QUERYBUF keeps reporting too.
    let kept = q.next_buffer(FRAME_TIMEOUT)?;
    checker.check(&kept, false)?;
    same("after DQBUF", &kept)?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_MARK_LAST = 1",
        dev.s_ctrl(RVIVID_CID_MARK_LAST, 1),
    )?;
    let mut last = None;
    for _ in 0..q.count() + 2 {
        let b = q.next_buffer(FRAME_TIMEOUT)?;
        checker.check(&b, false)?;
        if b.flags & V4L2_BUF_FLAG_LAST != 0 {
            last = Some(b);
            break;
        }
        q.qbuf(b.index)?;
    }
    let last = last.ok_or("no buffer with V4L2_BUF_FLAG_LAST after RVIVID_CID_MARK_LAST")?;
    same("after DQBUF of the LAST buffer", &last)?;
    q.streamoff()?;
    same("after STREAMOFF", &kept)?;
    same("after STREAMOFF", &last)?;
    // PREPARE_BUF clears them as QBUF does.
    let p = ok(
        format!("VIDIOC_PREPARE_BUF {}", last.index),
        dev.prepare_buf(last.index),
    )?;
    cleared(&format!("VIDIOC_PREPARE_BUF {}", last.index), &p)?;
    let qb = ok(format!("VIDIOC_QBUF {}", kept.index), dev.qbuf(kept.index))?;
    cleared(&format!("VIDIOC_QBUF {} after STREAMOFF", kept.index), &qb)
}

/// A dropped frame is visible: with every buffer dequeued and held for 6 frame periods
/// (measured with CLOCK_MONOTONIC), the next buffer's sequence number jumps by the number of
/// periods that passed since the last buffer's frame, within 1 either way. Exactly: its frame
/// is the newest due when the work first runs after the QBUF, so its timestamp (on the grid)
/// is less than a period before the QBUF, and it is not after the DQBUF; on a loaded host the
/// work may run more than a period late, and the DQBUF time bounds that.
pub fn drops_show_as_sequence_gaps(ctx: &mut Ctx) -> TestResult {
    const HOLD_FRAMES: u32 = 6;
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let q = Queue::request(&dev, 4)?;
    let interval = q.interval_ns()?;
    q.queue_all()?;
    let floor = monotonic_now();
    q.streamon()?;
    let mut grid = StreamGrid::new(interval, floor, monotonic_now());
    // Take every buffer back: from the last one on, the driver has none.
    let mut held = Vec::new();
    for n in 0..q.count() {
        let b = q
            .next_buffer(FRAME_TIMEOUT)
            .map_err(|e| format!("frame {n}: {e}"))?;
        grid.check(&format!("frame {n}"), &b, monotonic_now())?;
        held.push(b);
    }
    let last = held[held.len() - 1];
    let last_ts = timestamp_ns("the last buffer before the hold", &last)?;
    std::thread::sleep(Duration::from_nanos(interval * u64::from(HOLD_FRAMES)));
    let queued_at = monotonic_now().as_nanos() as u64;
    q.qbuf(held[0].index)?;
    let b = q
        .next_buffer(FRAME_TIMEOUT)
        .map_err(|e| format!("after holding every buffer: {e}"))?;
    let dequeued_at = monotonic_now();
    grid.check("the buffer queued after the hold", &b, dequeued_at)?;
    let dseq = u64::from(b.sequence.wrapping_sub(last.sequence));
    // Periods from the last frame that had a buffer to the QBUF (those frames had none).
    let passed = (queued_at - last_ts) / interval;
    // Upper bound: the frame is not after the DQBUF.
    let by_dqbuf = (dequeued_at.as_nanos() as u64 - last_ts) / interval;
    let detail = format!(
        "last buffer before the hold: sequence {} at {last_ts} ns; QBUF at {queued_at} ns \
         ({passed} periods of {interval} ns later); next buffer: sequence {} (+{dseq}), \
         dequeued at {} ns ({by_dqbuf} periods)",
        last.sequence,
        b.sequence,
        dequeued_at.as_nanos()
    );
    ctx.save_log("drops.txt", format!("{detail}\n"))?;
    ensure(passed >= u64::from(HOLD_FRAMES), || {
        format!("held for fewer than {HOLD_FRAMES} periods: {detail}")
    })?;
    ensure(
        dseq + 1 >= passed && dseq <= (passed + 1).max(by_dqbuf),
        || format!("the sequence jumped by {dseq}, want {passed} +- 1: {detail}"),
    )?;
    q.streamoff()
}

/// Drops with the hold control: RVIVID_CID_HOLD_MS = 100 at 30 fps makes rvivid give each
/// buffer back no earlier than 100 ms after the next frame's time, with the newest frame due
/// then, so the frames in between are dropped: each buffer is at least 1 + 100 ms / interval
/// = 4 frames after the previous one, and its timestamp is exactly that many intervals later
/// ([`StreamGrid`]): the gap in the sequence is the frames rvivid produced without a buffer.
pub fn hold_control_drops_show_as_sequence_gaps(ctx: &mut Ctx) -> TestResult {
    const HOLD_MS: i32 = 100;
    const FRAMES: u32 = 5;
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = set_format(&dev, V4L2_PIX_FMT_GREY, 64, 48)?;
    ok("VIDIOC_S_PARM 1/30", s_parm(&dev, 1, 30).map(drop))?;
    ok(
        "VIDIOC_S_CTRL RVIVID_CID_HOLD_MS",
        dev.s_ctrl(RVIVID_CID_HOLD_MS, HOLD_MS),
    )?;
    let mut q = Queue::request(&dev, 4)?;
    q.map_all()?;
    let interval = q.interval_ns()?;
    let min_step = 1 + HOLD_MS as u32 * 1_000_000 / interval as u32;
    q.queue_all()?;
    q.streamon()?;
    let mut checker = FrameChecker::new(fmt, &q)?;
    let mut seqs = Vec::new();
    for n in 0..FRAMES {
        let b = q
            .next_buffer(FRAME_TIMEOUT)
            .map_err(|e| format!("frame {n}: {e}"))?;
        checker
            .check(&b, false)
            .map_err(|e| format!("frame {n}: {e}"))?;
        check_color_bars(q.data(&b)?, &fmt).map_err(|e| format!("frame {n}: {e}"))?;
        seqs.push(b.sequence);
        q.qbuf(b.index)?;
    }
    ctx.save_log("hold-drops.txt", format!("sequence numbers: {seqs:?}\n"))?;
    for w in seqs.windows(2) {
        ensure(w[1].wrapping_sub(w[0]) >= min_step, || {
            format!(
                "holding each buffer {HOLD_MS} ms at {interval} ns per frame: sequence {} \
                 follows {}, want at least {min_step} frames later (sequence numbers {seqs:?})",
                w[1], w[0]
            )
        })?;
    }
    q.streamoff()
}

/// rvivid holds the fast rates it offers at small sizes (120 and 60 fps at 64x48, 8 buffers,
/// one second each): every buffer lies on the stream's nominal grid ([`StreamGrid`]), and no
/// frame is dropped while a buffer waited for it. A drop (a sequence gap) is legitimate only
/// when userspace had no buffer with the driver at the dropped frame's time: the test records
/// when each buffer was with the driver for sure (once its QBUF returned; STREAMON for the
/// first ones), and the buffer after a gap must have come after the last dropped frame ended
/// (its nominal time, one interval before that buffer's timestamp). On a loaded guest
/// userspace may fall behind, which drops frames legitimately (counted in frame-rates.txt); the
/// driver running late may not.
pub fn fast_rates_hold_without_spurious_drops(ctx: &mut Ctx) -> TestResult {
    const BUFFERS: u32 = 8;
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    set_format(&dev, V4L2_PIX_FMT_YUYV, 64, 48)?;
    let mut log = String::new();
    let result = (|| {
        for (n, d) in [(1u32, 120u32), (1, 60)] {
            let what = format!("64x48 at {n}/{d} s");
            let p = ok(format!("VIDIOC_S_PARM {n}/{d}"), s_parm(&dev, n, d))?;
            let t = p.capture().timeperframe;
            ensure((t.numerator, t.denominator) == (n, d), || {
                format!(
                    "VIDIOC_S_PARM {n}/{d}: got {}/{}",
                    t.numerator, t.denominator
                )
            })?;
            // One second of frames.
            let frames = d / n;
            let q = Queue::request(&dev, BUFFERS)?;
            let interval = q.interval_ns()?;
            q.queue_all()?;
            let floor = monotonic_now();
            q.streamon()?;
            let on = monotonic_now();
            let mut grid = StreamGrid::new(interval, floor, on);
            // By index: a time at which the buffer was with the driver (CLOCK_MONOTONIC, ns).
            let mut with_driver = vec![on.as_nanos() as u64; q.count() as usize];
            let mut prev: Option<u32> = None;
            let mut dropped = 0u64;
            let mut last_dqbuf = on;
            for f in 0..frames {
                let b = q
                    .next_buffer(FRAME_TIMEOUT)
                    .map_err(|e| format!("{what}, frame {f}: {e}"))?;
                last_dqbuf = monotonic_now();
                let at = format!(
                    "{what}, frame {f} (buffer {}, sequence {})",
                    b.index, b.sequence
                );
                grid.check(&at, &b, last_dqbuf)?;
                let ts = timestamp_ns(&at, &b)?;
                // The frames since the previous buffer (or the start) that had no buffer.
                let missed_from = prev.map_or(0, |p| p.wrapping_add(1));
                if b.sequence != missed_from {
                    let last_missed = b.sequence.wrapping_sub(1);
                    // The grid puts the last dropped frame one interval before this buffer
                    // (timestamps are rounded down to the us: this errs towards no failure).
                    let last_missed_ns = ts.saturating_sub(interval);
                    let queued = with_driver[b.index as usize];
                    ensure(queued > last_missed_ns, || {
                        format!(
                            "{at}: frames {missed_from}..={last_missed} were dropped although \
                             this buffer was with the driver at {queued} ns, before frame \
                             {last_missed} ended at {last_missed_ns} ns"
                        )
                    })?;
                    dropped += u64::from(b.sequence.wrapping_sub(missed_from));
                }
                prev = Some(b.sequence);
                q.qbuf(b.index)?;
                with_driver[b.index as usize] = monotonic_now().as_nanos() as u64;
            }
            let wall = last_dqbuf.saturating_sub(on).as_secs_f64();
            let last = prev.unwrap_or(0);
            log.push_str(&format!(
                "{what}: {frames} buffers, sequence 0..={last}, {dropped} frame(s) dropped while \
                 userspace had no buffer with the driver; {frames} buffers in {wall:.3} s from \
                 STREAMON to the last DQBUF ({:.1} per second, nominal {:.1})\n",
                f64::from(frames) / wall.max(f64::EPSILON),
                1e9 / interval as f64
            ));
            q.streamoff()?;
        }
        Ok(())
    })();
    ctx.save_log("frame-rates.txt", &log)?;
    result
}
