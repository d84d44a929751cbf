// SPDX-License-Identifier: GPL-2.0

//! The rvivid driver: a virtual video capture device, like vivid's capture side.
//!
//! It registers a faux device, the parent of one V4L2 video capture node. Frames come from
//! the test pattern generator ([`crate::tpg`]) at the configured frame rate, from a delayed
//! work item, and are completed through the rvb2 queue core. Error-injection controls make
//! the next buffers fail, make `start_streaming` fail, or hold every buffer longer.
//!
//! # Frames, sequence numbers and timestamps
//!
//! Like vivid, rvivid counts frames from the start of the stream whether or not it had a
//! buffer for them: frame `k` ends at `first + k * interval`, where `first` is one frame
//! interval after `start_streaming`. Each buffer is given its frame's number as its sequence
//! number and that nominal end time as its timestamp ([`ActiveBuffer::set_sequence`],
//! [`ActiveBuffer::set_timestamp_ns`]). A frame goes into the oldest buffer the driver had
//! by the frame's time ([`ActiveBuffer::queued_ns`]); a frame with no buffer is dropped, and
//! shows as a gap in the sequence. When the work runs late (jiffies, a loaded machine) it
//! produces every frame it missed into the buffers that were there for them, so lateness
//! delays buffers but drops nothing. Timestamps always lie on the frame grid, and a
//! timestamp is never after the moment the buffer is completed.
//!
//! This file has no `unsafe` code: everything goes through the abstractions.

use crate::{
    fence::SignallingSection,
    mem::{
        CpuAccess,
        DmaDevice, //
    },
    queue::{
        ActiveBuffer,
        Direction,
        Queue,
        QueueOps, //
    },
    tpg::{
        Adjust,
        FrameFormat,
        FrameSink,
        Pattern,
        PixelFormat,
        Tpg,
        TpgError,
        PATTERN_NAMES, //
    },
    v4l2::{
        self,
        Capability,
        Control,
        ControlId,
        ControlKind,
        DeviceCap,
        FourCc,
        Fract,
        FrameSizes,
        Input,
        PixFormat, //
    },
    work,
};
use kernel::{
    faux,
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        Mutex, //
    },
    time::{
        msecs_to_jiffies,
        Jiffies, //
    },
    workqueue::{
        impl_has_delayed_work,
        new_delayed_work,
        DelayedWork,
        WorkItem, //
    },
    InPlaceModule,
    ThisModule, //
};

/// The pixel formats, in `VIDIOC_ENUM_FMT` order.
const FORMATS: [(FourCc, PixelFormat); 4] = [
    (FourCc::YUYV, PixelFormat::Yuyv),
    (FourCc::RGB24, PixelFormat::Rgb24),
    (FourCc::NV12, PixelFormat::Nv12),
    (FourCc::GREY, PixelFormat::Grey),
];

/// Frame size limits; both dimensions are even.
const MIN_WIDTH: u32 = 16;
const MAX_WIDTH: u32 = 1920;
const MIN_HEIGHT: u32 = 16;
const MAX_HEIGHT: u32 = 1080;

/// The frame intervals, slowest first, in `VIDIOC_ENUM_FRAMEINTERVALS` order. A frame size
/// offers the first of them up to a rate that depends on its height ([`intervals`]). None is
/// slower than 15 fps: the longest a buffer can legitimately wait, 32 buffers ahead, must stay
/// well below the fence bound (`fence_timeout_ms`).
const INTERVALS: [Fract; 7] = [
    Fract::new(1, 15),
    Fract::new(1, 25),
    Fract::new(1, 30),
    Fract::new(1, 40),
    Fract::new(1, 50),
    Fract::new(1, 60),
    Fract::new(1, 120),
];

/// The interval at load time (30 fps), which every frame size offers.
const DEFAULT_INTERVAL: Fract = INTERVALS[2];

/// The tallest frame that offers the rates above 30 fps.
const FAST_MAX_HEIGHT: u32 = 240;

/// The intervals a frame `height` lines high offers: up to 120 fps up to 240 lines, up to
/// 30 fps above. vivid's webcam offers 120 fps below 720 lines and 60 fps up to 1080; rvivid
/// offers what it holds on the test guest (TCG, KASAN), where `v4l2-compliance` streaming
/// 640x480 at 120 fps saw 190 sequence gaps.
fn intervals(height: u32) -> &'static [Fract] {
    if height <= FAST_MAX_HEIGHT {
        &INTERVALS
    } else {
        &INTERVALS[..3]
    }
}

/// A frame interval in microseconds (`None` for a zero denominator).
fn interval_us(i: Fract) -> Option<u64> {
    (u64::from(i.numerator) * 1_000_000).checked_div(u64::from(i.denominator))
}

/// The interval of `offered` nearest to `want`; 0/0 asks for the default.
fn nearest_interval(offered: &[Fract], want: Fract) -> Fract {
    let default_us = interval_us(DEFAULT_INTERVAL).unwrap_or(0);
    let want_us = if want.numerator == 0 {
        default_us
    } else {
        interval_us(want).unwrap_or(default_us)
    };
    offered
        .iter()
        .min_by_key(|i| interval_us(**i).unwrap_or(u64::MAX).abs_diff(want_us))
        .copied()
        .unwrap_or(DEFAULT_INTERVAL)
}

/// The base of rvivid's own controls, in the user class (where vivid's start too).
const RVIVID_CID_BASE: ControlId = ControlId::USER_BASE.offset(0xf000);
/// The next N buffers the driver completes come back with `V4L2_BUF_FLAG_ERROR`.
const RVIVID_CID_FAIL_NEXT_BUFFERS: ControlId = RVIVID_CID_BASE;
/// While set, `start_streaming` fails with `EIO`.
const RVIVID_CID_FAIL_START_STREAMING: ControlId = RVIVID_CID_BASE.offset(1);
/// Every buffer is held this many milliseconds longer in the driver.
const RVIVID_CID_HOLD_MS: ControlId = RVIVID_CID_BASE.offset(2);
/// Buffers are completed out of order (for the fence work: an "unordered" format).
const RVIVID_CID_UNORDERED: ControlId = RVIVID_CID_BASE.offset(3);
/// The next buffer the driver completes is the last of the stream (`V4L2_BUF_FLAG_LAST`).
const RVIVID_CID_MARK_LAST: ControlId = RVIVID_CID_BASE.offset(4);

static CONTROLS: [Control; 10] = [
    Control {
        id: ControlId::BRIGHTNESS,
        kind: ControlKind::Std {
            min: 0,
            max: 255,
            step: 1,
            def: 128,
        },
    },
    Control {
        id: ControlId::CONTRAST,
        kind: ControlKind::Std {
            min: 0,
            max: 255,
            step: 1,
            def: 128,
        },
    },
    Control {
        id: ControlId::SATURATION,
        kind: ControlKind::Std {
            min: 0,
            max: 255,
            step: 1,
            def: 128,
        },
    },
    Control {
        id: ControlId::HUE,
        kind: ControlKind::Std {
            min: -128,
            max: 127,
            step: 1,
            def: 0,
        },
    },
    Control {
        id: ControlId::TEST_PATTERN,
        kind: ControlKind::StdMenu {
            items: &PATTERN_NAMES,
            def: 0,
        },
    },
    Control {
        id: RVIVID_CID_FAIL_NEXT_BUFFERS,
        kind: ControlKind::Integer {
            name: c"Fail Next Buffers",
            min: 0,
            max: 32,
            def: 0,
        },
    },
    Control {
        id: RVIVID_CID_FAIL_START_STREAMING,
        kind: ControlKind::Boolean {
            name: c"Fail Start Streaming",
            def: false,
        },
    },
    Control {
        id: RVIVID_CID_HOLD_MS,
        kind: ControlKind::Integer {
            name: c"Hold Buffer (ms)",
            min: 0,
            max: 10000,
            def: 0,
        },
    },
    Control {
        id: RVIVID_CID_UNORDERED,
        kind: ControlKind::Boolean {
            name: c"Unordered Completion",
            def: false,
        },
    },
    Control {
        id: RVIVID_CID_MARK_LAST,
        kind: ControlKind::Boolean {
            name: c"Mark Last Buffer",
            def: false,
        },
    },
];

/// Returns the generator's format for a V4L2 pixel format code.
fn pixel_format(code: FourCc) -> Option<PixelFormat> {
    FORMATS.iter().find(|f| f.0 == code).map(|f| f.1)
}

/// Adjusts a format to one the device produces: known pixel format (YUYV otherwise), size in
/// range and even, progressive, sRGB, and the minimum line and image sizes.
fn adjust_format(f: &mut PixFormat) {
    let pixfmt = match pixel_format(f.pixelformat) {
        Some(p) => p,
        None => {
            f.pixelformat = FORMATS[0].0;
            FORMATS[0].1
        }
    };
    f.width = f.width.clamp(MIN_WIDTH, MAX_WIDTH) & !1;
    f.height = f.height.clamp(MIN_HEIGHT, MAX_HEIGHT) & !1;
    f.field = v4l2::FIELD_NONE;
    f.colorspace = v4l2::COLORSPACE_SRGB;
    f.bytesperline = FrameFormat::min_bytesperline(pixfmt, f.width);
    f.sizeimage = frame_format(f).sizeimage();
}

/// The generator's view of a (valid) format.
fn frame_format(f: &PixFormat) -> FrameFormat {
    FrameFormat {
        pixfmt: pixel_format(f.pixelformat).unwrap_or(PixelFormat::Yuyv),
        width: f.width,
        height: f.height,
        bytesperline: f.bytesperline,
    }
}

/// Converts a frame interval to nanoseconds.
fn interval_ns(i: Fract) -> u64 {
    (u64::from(i.numerator) * 1_000_000_000)
        .checked_div(u64::from(i.denominator))
        .unwrap_or(1_000_000_000 / 30)
}

/// The delay from `now_ns` until `deadline_ns` (`CLOCK_MONOTONIC`), in whole jiffies
/// (rounded up). The timer may still fire up to a jiffy early (the current jiffy has
/// partly elapsed), which the frame work checks for.
fn jiffies_until(deadline_ns: u64, now_ns: u64) -> Jiffies {
    let ns = deadline_ns.saturating_sub(now_ns);
    msecs_to_jiffies(ns.div_ceil(1_000_000).min(u64::from(u32::MAX)) as u32)
}

/// The device's settings, changed by ioctls and controls.
struct Config {
    fmt: PixFormat,
    interval: Fract,
    pattern: Pattern,
    adjust: Adjust,
}

/// What the frame work needs, under the generator's lock.
struct GenState {
    streaming: bool,
    /// Buffers the driver owns, oldest first.
    active: KVec<ActiveBuffer<Capture>>,
    tpg: Option<Tpg>,
    /// Numbers the generators `tpg` held (from 1; 0 before the first): with the frame
    /// number, it tags what a buffer holds ([`GenState::content_tag`]). It wraps after 2^32
    /// format or control changes, far more than a buffer waits for its next frame.
    tpg_gen: u32,
    sizeimage: u32,
    /// The frame interval (fixed while streaming: `VIDIOC_S_PARM` is `EBUSY` then).
    interval_ns: u64,
    /// The nominal time of frame 0 of the stream (`CLOCK_MONOTONIC`): one interval after
    /// `start_streaming`. Frame `k`'s is `first_ns + k * interval_ns`.
    first_ns: u64,
    /// The number of the next frame not yet produced or dropped (from 0 at
    /// `start_streaming`; the low 32 bits are the sequence number).
    next_frame: u64,
    /// The "Hold" control: no buffer is completed before this time (`CLOCK_MONOTONIC`),
    /// `interval + hold` after the last completed buffer's frame.
    hold_until_ns: u64,
    fail_next: u32,
    hold_ms: u32,
    unordered: bool,
    /// The next completed buffer is the last of the stream.
    mark_last: bool,
}

impl GenState {
    /// The nominal time of frame `k`.
    fn frame_ns(&self, k: u64) -> u64 {
        self.first_ns
            .saturating_add(k.saturating_mul(self.interval_ns))
    }

    /// When the work has something to do: when frame `next_frame` is due, or later if a
    /// buffer is held.
    fn wake_ns(&self) -> u64 {
        self.frame_ns(self.next_frame).max(self.hold_until_ns)
    }

    /// The delay until [`GenState::wake_ns`], for the frame work. Deadlines are absolute, so
    /// whole-jiffy delays do not make the rate drift.
    fn delay(&self) -> Jiffies {
        jiffies_until(self.wake_ns(), crate::time::monotonic_ns())
    }

    /// The frame work: unless it runs early (a timer fires up to a jiffy before its time),
    /// produces every frame due since the last run, as the emulated sensor would have: frame
    /// `k` goes into the oldest waiting buffer the driver had by the frame's time
    /// ([`ActiveBuffer::queued_ns`]); a frame with no such buffer is dropped (a gap in the
    /// sequence). So the work running late (jiffies, a loaded machine) delays buffers but
    /// drops no frame a buffer was there for; only a queue left empty by userspace drops
    /// frames. With "Hold" set, one buffer is completed per hold period, with the newest frame
    /// due; the frames in between are dropped.
    fn produce(&mut self) {
        let now = crate::time::monotonic_ns();
        if now < self.wake_ns() || self.interval_ns == 0 {
            return;
        }
        // `now >= frame_ns(next_frame)`, so `newest >= next_frame`.
        let newest = (now - self.first_ns) / self.interval_ns;
        let first = if self.hold_ms > 0 {
            newest
        } else {
            self.next_frame
        };
        self.next_frame = newest + 1;
        let mut k = first;
        while k <= newest {
            // The oldest waiting buffer serves no frame before it was queued: skip to the
            // first frame it can serve (the frames skipped are dropped).
            let Some(oldest) = self.active.first().map(ActiveBuffer::queued_ns) else {
                return;
            };
            if oldest > self.frame_ns(k) {
                k = (oldest - self.first_ns).div_ceil(self.interval_ns);
                continue;
            }
            let at = self.frame_ns(k);
            // The buffers there for frame `k` (the list is in hand-over order, so they are
            // its first ones). In unordered mode the newest of them is completed first.
            let waiting = self.active.iter().filter(|b| b.queued_ns() <= at).count();
            let pick = if self.unordered && waiting > 1 {
                waiting - 1
            } else {
                0
            };
            let Ok(buf) = self.active.remove(pick) else {
                return;
            };
            self.complete(buf, k);
            if self.hold_ms > 0 {
                return;
            }
            k += 1;
        }
    }

    /// The tag of a buffer holding frame `sequence` of the current generator (never 0).
    fn content_tag(&self, sequence: u32) -> u64 {
        (u64::from(self.tpg_gen) << 32) | u64::from(sequence)
    }

    /// Fills `buf` with frame `k` and completes it (or fails it, if the error injection says
    /// so or the fill failed).
    fn complete(&mut self, mut buf: ActiveBuffer<Capture>, k: u64) {
        // The frame counter is the sequence number (it wraps as V4L2's does).
        let sequence = k as u32;
        buf.set_sequence(sequence);
        buf.set_timestamp_ns(self.frame_ns(k));
        let filled = match (self.tpg.as_ref(), buf.memory()) {
            (Some(tpg), Some(mut mem)) => {
                // A buffer that still holds an earlier frame of this generator (nobody else can
                // have written it: see `CpuAccess::content`) gets only what differs.
                let prev = mem
                    .content()
                    .filter(|t| t >> 32 == u64::from(self.tpg_gen))
                    .map(|t| t as u32);
                mem.set_content(None);
                let ok = tpg.fill_over(&mut mem, sequence, prev).is_ok();
                if ok {
                    mem.set_content(Some(self.content_tag(sequence)));
                }
                ok
            }
            _ => false,
        };
        if self.fail_next > 0 || !filled {
            self.fail_next = self.fail_next.saturating_sub(1);
            buf.fail();
        } else if core::mem::take(&mut self.mark_last) {
            buf.done_last(self.sizeimage);
        } else {
            buf.done(self.sizeimage);
        }
        // "Hold": the next buffer is completed no earlier than `hold` after the next frame's
        // time, with the newest frame due then.
        let hold_ns = u64::from(self.hold_ms) * 1_000_000;
        self.hold_until_ns = self.frame_ns(k + 1).saturating_add(hold_ns);
    }
}

/// The generator paints frames straight into buffer memory.
impl FrameSink for CpuAccess<'_> {
    fn size(&self) -> usize {
        CpuAccess::size(self)
    }

    fn write(&mut self, offset: usize, src: &[u8]) -> Result<(), TpgError> {
        CpuAccess::write(self, offset, src).map_err(|_| TpgError::BufferTooSmall)
    }

    fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<(), TpgError> {
        CpuAccess::fill(self, offset, len, byte).map_err(|_| TpgError::BufferTooSmall)
    }

    fn copy_within(&mut self, src: usize, dst: usize, len: usize) -> Result<(), TpgError> {
        CpuAccess::copy_within(self, src, dst, len).map_err(|_| TpgError::BufferTooSmall)
    }
}

/// The frame generator: a delayed work item that fills the oldest buffer at each frame.
#[pin_data]
struct Generator {
    #[pin]
    work: DelayedWork<Generator>,
    #[pin]
    st: Mutex<GenState>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for Generator { self.work }
}

impl WorkItem for Generator {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        // Completing buffers signals their out-fences: nothing here may allocate or wait for a
        // lock held around an allocation (`st` never is).
        let _signalling = SignallingSection::begin();
        let mut st = this.st.lock();
        if !st.streaming {
            return;
        }
        // Buffers the queue took back (their fence deadline passed) are dropped, which gives
        // them back: the queue hands them out again only then.
        st.active.retain(|b| !b.taken_back());
        st.produce();
        let delay = st.delay();
        drop(st);
        // `Err` only while `stop_streaming()` cancels the work: the next frame is not wanted.
        let _ = work::system_percpu().enqueue_delayed(this, delay);
    }
}

/// The capture queue's driver side.
#[pin_data]
struct Capture {
    #[pin]
    cfg: Mutex<Config>,
    gen: Arc<Generator>,
    #[pin]
    fail_start: Mutex<bool>,
}

impl Capture {
    /// Rebuilds the generator's picture after a format or control change. The interval
    /// cannot change while streaming (`VIDIOC_S_PARM` is `EBUSY` then), so the stream's frame
    /// grid stays put.
    fn update_generator(&self, cfg: &Config) {
        let mut st = self.gen.st.lock();
        st.tpg = Some(Tpg::new(frame_format(&cfg.fmt), cfg.pattern, cfg.adjust));
        // What buffers hold from earlier generators is of no use to this one.
        st.tpg_gen = st.tpg_gen.checked_add(1).unwrap_or(1);
        st.sizeimage = cfg.fmt.sizeimage;
        st.interval_ns = interval_ns(cfg.interval);
    }
}

impl QueueOps for Capture {
    const NAME: &'static str = "rvivid-capture";
    const MIN_QUEUED_BUFFERS: u32 = 2;

    fn buffer_size(&self) -> u32 {
        self.cfg.lock().fmt.sizeimage
    }

    fn buf_queue(&self, buf: ActiveBuffer<Self>) {
        let mut st = self.gen.st.lock();
        // The list has room for every buffer of the queue (see `RvividModule::init`).
        if let Err(e) = st.active.push_within_capacity(buf) {
            drop(st);
            e.0.fail();
        }
    }

    fn start_streaming(&self, _count: u32) -> Result {
        if *self.fail_start.lock() {
            let mut st = self.gen.st.lock();
            for buf in st.active.drain_all() {
                buf.requeue();
            }
            return Err(EIO);
        }
        // Under the configuration lock, so that `s_parm` sees `streaming` and the interval
        // cannot change under the stream.
        let cfg = self.cfg.lock();
        self.update_generator(&cfg);
        let mut st = self.gen.st.lock();
        st.streaming = true;
        // Frame 0 ends one interval from now; the frame counter starts at 0.
        st.first_ns = crate::time::monotonic_ns() + st.interval_ns;
        st.next_frame = 0;
        st.hold_until_ns = 0;
        let delay = st.delay();
        drop(st);
        drop(cfg);
        // The work is idle: `stop_streaming()` cancelled it, or it never ran.
        let _ = work::system_percpu().enqueue_delayed(self.gen.clone(), delay);
        Ok(())
    }

    fn is_unordered(&self) -> bool {
        self.gen.st.lock().unordered
    }

    fn stop_streaming(&self) {
        self.gen.st.lock().streaming = false;
        work::cancel_delayed_work_sync(&self.gen);
        // Oldest first: the queue's out-fences signal in order.
        let mut st = self.gen.st.lock();
        for buf in st.active.drain_all() {
            buf.fail();
        }
    }
}

/// The per-device state of rvivid.
#[pin_data(PinnedDrop)]
struct Rvivid {
    queue: Arc<Queue<Capture>>,
}

#[pinned_drop]
impl PinnedDrop for Rvivid {
    fn drop(self: Pin<&mut Self>) {
        // The node is gone and no file is open: stop the queue's fence work before the module
        // can go.
        Queue::shutdown(&self.queue);
    }
}

#[vtable]
impl v4l2::VideoOps for Rvivid {
    type Queue = Capture;

    fn queue(&self) -> &Arc<Queue<Capture>> {
        &self.queue
    }

    fn querycap(&self, cap: &mut Capability) -> Result {
        cap.set_driver(c"rvivid");
        cap.set_card(c"rvivid");
        cap.set_bus_info(c"platform:rvivid-0");
        Ok(())
    }

    fn enum_fmt(&self, index: u32) -> Result<FourCc> {
        FORMATS.get(index as usize).map(|f| f.0).ok_or(EINVAL)
    }

    fn g_fmt(&self) -> PixFormat {
        self.queue.ops().cfg.lock().fmt
    }

    fn try_fmt(&self, f: &mut PixFormat) -> Result {
        adjust_format(f);
        Ok(())
    }

    fn s_fmt(&self, f: &mut PixFormat) -> Result {
        adjust_format(f);
        let ops = self.queue.ops();
        // The buffers are sized for the format: it cannot change under them.
        self.queue.with_idle(|| {
            let mut cfg = ops.cfg.lock();
            cfg.fmt = *f;
            // A taller frame may not offer the current rate: the nearest it offers is its
            // fastest (the ones it offers are the slowest ones).
            let offered = intervals(f.height);
            if !offered.contains(&cfg.interval) {
                cfg.interval = offered.last().copied().unwrap_or(DEFAULT_INTERVAL);
            }
            ops.update_generator(&cfg);
        })
    }

    fn enum_framesizes(&self, index: u32, pixelformat: FourCc) -> Result<FrameSizes> {
        if index != 0 || pixel_format(pixelformat).is_none() {
            return Err(EINVAL);
        }
        Ok(FrameSizes::Stepwise {
            min_width: MIN_WIDTH,
            max_width: MAX_WIDTH,
            step_width: 2,
            min_height: MIN_HEIGHT,
            max_height: MAX_HEIGHT,
            step_height: 2,
        })
    }

    fn enum_frameintervals(
        &self,
        index: u32,
        pixelformat: FourCc,
        width: u32,
        height: u32,
    ) -> Result<Fract> {
        let mut f = PixFormat {
            width,
            height,
            pixelformat,
            field: 0,
            bytesperline: 0,
            sizeimage: 0,
            colorspace: 0,
        };
        adjust_format(&mut f);
        if pixel_format(pixelformat).is_none() || f.width != width || f.height != height {
            return Err(EINVAL);
        }
        intervals(height).get(index as usize).copied().ok_or(EINVAL)
    }

    fn g_parm(&self) -> Fract {
        self.queue.ops().cfg.lock().interval
    }

    fn s_parm(&self, want: Fract) -> Result<Fract> {
        let ops = self.queue.ops();
        let mut cfg = ops.cfg.lock();
        // A stream keeps its frame interval: the sequence numbers and timestamps of its frames
        // lie on one grid. It may change between streams.
        if ops.gen.st.lock().streaming {
            return Err(EBUSY);
        }
        let best = nearest_interval(intervals(cfg.fmt.height), want);
        cfg.interval = best;
        ops.update_generator(&cfg);
        Ok(best)
    }

    fn enum_input(&self, index: u32) -> Result<Input> {
        if index != 0 {
            return Err(EINVAL);
        }
        Ok(Input {
            name: c"Camera 0",
            kind: v4l2::INPUT_TYPE_CAMERA,
        })
    }

    fn g_input(&self) -> u32 {
        0
    }

    fn s_input(&self, index: u32) -> Result {
        if index != 0 {
            return Err(EINVAL);
        }
        Ok(())
    }

    fn controls(&self) -> &'static [Control] {
        &CONTROLS
    }

    fn s_ctrl(&self, id: ControlId, value: i32) -> Result {
        let ops = self.queue.ops();
        match id {
            RVIVID_CID_FAIL_NEXT_BUFFERS => {
                ops.gen.st.lock().fail_next = value as u32;
                return Ok(());
            }
            RVIVID_CID_FAIL_START_STREAMING => {
                *ops.fail_start.lock() = value != 0;
                return Ok(());
            }
            RVIVID_CID_HOLD_MS => {
                ops.gen.st.lock().hold_ms = value as u32;
                return Ok(());
            }
            RVIVID_CID_MARK_LAST => {
                ops.gen.st.lock().mark_last = value != 0;
                return Ok(());
            }
            RVIVID_CID_UNORDERED => {
                // The queue takes the ordering when it allocates buffers (it decides how
                // out-fences are ordered); it cannot change under them.
                return self
                    .queue
                    .with_idle(|| ops.gen.st.lock().unordered = value != 0);
            }
            _ => {}
        }
        let mut cfg = ops.cfg.lock();
        match id {
            ControlId::BRIGHTNESS => cfg.adjust.brightness = value,
            ControlId::CONTRAST => cfg.adjust.contrast = value,
            ControlId::SATURATION => cfg.adjust.saturation = value,
            ControlId::HUE => cfg.adjust.hue = value,
            ControlId::TEST_PATTERN => {
                cfg.pattern = Pattern::from_index(value as u32).ok_or(EINVAL)?;
            }
            _ => return Err(EINVAL),
        }
        ops.update_generator(&cfg);
        Ok(())
    }
}

/// The module: one rvivid instance.
#[pin_data]
pub(crate) struct RvividModule {
    // Dropped in this order: the video node goes before its parent device, and the module
    // waits for fence users to be done with it last.
    #[pin]
    _video: v4l2::Registration<Rvivid>,
    _faux: faux::Registration,
    _fences: FenceQuiesce,
}

/// Waits, when the module goes, for an RCU grace period: our signalled out-fences may still
/// be read through RCU (their names and operations live in this module).
struct FenceQuiesce;

impl Drop for FenceQuiesce {
    fn drop(&mut self) {
        crate::fence::synchronize_rcu_on_unload();
    }
}

impl Rvivid {
    /// The device's state: its capture queue, 640x480 YUYV at the first frame interval, which
    /// attaches imported dma-bufs to `dma_dev`.
    fn new(dma_dev: DmaDevice) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            queue: Self::new_queue(dma_dev)?,
        }? Error)
    }

    /// The capture queue and its frame generator.
    fn new_queue(dma_dev: DmaDevice) -> Result<Arc<Queue<Capture>>> {
        let mut fmt = PixFormat {
            width: 640,
            height: 480,
            pixelformat: FORMATS[0].0,
            field: 0,
            bytesperline: 0,
            sizeimage: 0,
            colorspace: 0,
        };
        adjust_format(&mut fmt);
        let gen = Arc::pin_init(
            pin_init!(Generator {
                work <- new_delayed_work!("rvivid_frame_work"),
                st <- new_mutex!(GenState {
                    streaming: false,
                    active: KVec::with_capacity(crate::queue::MAX_BUFFERS, GFP_KERNEL)?,
                    tpg: None,
                    tpg_gen: 0,
                    sizeimage: 0,
                    interval_ns: 0,
                    first_ns: 0,
                    next_frame: 0,
                    hold_until_ns: 0,
                    fail_next: 0,
                    hold_ms: 0,
                    unordered: false,
                    mark_last: false,
                }),
            }? Error),
            GFP_KERNEL,
        )?;
        let queue = Queue::new(
            Direction::Capture,
            Some(dma_dev),
            try_pin_init!(Capture {
                cfg <- new_mutex!(Config {
                    fmt,
                    interval: DEFAULT_INTERVAL,
                    pattern: Pattern::ColorBars75,
                    adjust: Adjust::default(),
                }),
                gen,
                fail_start <- new_mutex!(false),
            }),
        )?;
        queue.ops().update_generator(&queue.ops().cfg.lock());
        Ok(queue)
    }
}

impl InPlaceModule for RvividModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pin_init::pin_init_scope(move || {
            let faux = faux::Registration::new(c"rvivid-0", None)?;
            let dma_dev = DmaDevice::for_faux(&faux)?;
            Ok(try_pin_init!(Self {
                _video <- v4l2::Registration::new(
                    faux.as_ref(),
                    c"rvivid",
                    DeviceCap::VideoCapture | DeviceCap::Streaming | DeviceCap::ReadWrite,
                    Rvivid::new(dma_dev),
                    module,
                ),
                _faux: faux,
                _fences: FenceQuiesce,
            }? Error))
        })
    }
}
