// SPDX-License-Identifier: GPL-2.0

//! The rvb2 queue core: buffers, their states and order, streaming.
//!
//! This is the part of rvb2 that videobuf2-core.c is to videobuf2: it knows nothing of V4L2
//! structures (the V4L2 shim in [`crate::v4l2`] translates them) and nothing of a particular
//! device (a driver plugs in through [`QueueOps`]).
//!
//! # Buffer life cycle
//!
//! ```text
//!  REQBUFS/CREATE_BUFS                 QBUF             (ready, streaming)
//! ---------------------> Dequeued --------------> Queued ------------------> Active
//!                         ^   |   PREPARE_BUF       ^                          |
//!                         |   +--> (prepared) ------+    driver: done()/fail() |
//!                         |                                                    v
//!                         +------------------ DQBUF ---------------------- Done/Error
//! ```
//!
//! Buffers reach the driver in QBUF order: the queued list keeps that order, and
//! [`Queue::advance`] hands buffers over from its head, stopping at the first buffer whose
//! in-fence is pending. A buffer whose in-fence failed never reaches the driver and is
//! completed with an error in its turn. STREAMOFF (and freeing, and the owner's close) takes
//! every buffer back, whatever its state.
//!
//! # Fences
//!
//! QBUF takes an in-fence and an out-fence request as two arguments ([`QbufFences`]). A fence
//! callback only queues `fence_work`, which runs [`Queue::advance`]. Out-fences are created
//! before a QBUF changes anything, on one context per buffer allocation (ordered queues, in
//! sequence order) or one per fence (unordered queues), and every path that takes a buffer
//! back signals them. See `Documentation/design.rst`.
//!
//! A buffer of an imported dma-buf, or of MMAP memory that was exported, also waits for the
//! fences of others in the reservation object its dma-bufs share (implicit synchronization: a
//! reader's fence, added with `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`): QBUF collects those that have
//! not signalled and merges them into the buffer's in-fence, so it waits for them as for an
//! explicit in-fence (asynchronously, within the deadline, failing the buffer if one fails),
//! and QBUF itself never waits. Memory no one else can have added fences to (MMAP memory never
//! exported, user pages) takes the fast path, which does not look at a reservation object.
//!
//! # Sequence numbers and timestamps
//!
//! As in videobuf2, the driver owns them: before [`ActiveBuffer::done`] or
//! [`ActiveBuffer::fail`] it may give the buffer its frame's sequence number
//! ([`ActiveBuffer::set_sequence`], `vb2_v4l2_buffer.sequence`) and timestamp
//! ([`ActiveBuffer::set_timestamp_ns`], `vb2_buffer.timestamp`), so that a frame the driver
//! had no buffer for shows as a gap. What it does not set, the core fills in: the next number
//! of its own counter (from 0 at each STREAMON, and continuing after the last number the
//! driver gave) and the `CLOCK_MONOTONIC` time of completion. Buffers completed with an error
//! without reaching the driver (their in-fence failed) get the core's values too.
//!
//! QBUF and PREPARE_BUF clear a buffer's sequence number, timestamp, bytes used and LAST
//! flag; DQBUF and STREAMOFF keep them, so QUERYBUF after DQBUF reports what DQBUF did
//! (videobuf2's `__fill_v4l2_buffer()` reports the stored fields whatever the state).
//!
//! # The fence deadline
//!
//! A buffer queued with a fence (in or out), or waiting for implicit fences, gets a deadline:
//! its QBUF time plus
//! [`QueueOps::fence_timeout_ms`]. One delayed work per queue, `deadline_work`, is armed for the
//! earliest deadline of the buffers not yet completed. When it passes, the buffer and every
//! buffer queued before it that is not completed yet fail (`Error`), in QBUF order, whatever
//! they wait for (an in-fence, STREAMON, enough buffers to start, the driver): out-fences signal
//! `-ETIMEDOUT`, in QBUF order on an ordered queue. A buffer the driver holds is taken back as
//! STREAMOFF does (its token goes stale); the queue does not hand it to the driver again until
//! the driver gave the stale token back. The deadline work takes only `state`, so nothing
//! userspace does can keep an out-fence from signalling. A QBUF whose in-fence is, or
//! contains, a pending out-fence of the same queue fails with `EDEADLK`. See
//! `Documentation/dma-fence-rules.rst`.
//!
//! # Locking
//!
//! Three locks, always taken in this order:
//!
//! - `read`, a mutex, serialises `read()` calls (read I/O, see below), held while one waits
//!   for a frame; nothing else takes it but `poll()`, which only tries it.
//! - `ioctl`, a mutex, serialises the operations that change the buffers, their fence context
//!   or sequence numbers (the ioctls but DQBUF and QUERYBUF, `release()`, the changes of
//!   [`Queue::with_idle`]). They allocate memory (buffers, out-fences and their sync_files,
//!   dma-bufs), pin user pages (taking the process's `mmap_lock`) and import dma-bufs (taking
//!   their reservation locks, collecting their implicit fences) with only this one held. No
//!   signalling path takes it, and `mmap()`, which runs under `mmap_lock`, does not either.
//! - `lock`, a mutex, protects the buffers' memory and the streaming state; the operations
//!   above, DQBUF, `mmap()` (under the process's `mmap_lock`) and the fence work take it. Driver callbacks ([`QueueOps`]) run under it,
//!   except [`ActiveBuffer`] completion. Nothing allocates with `GFP_KERNEL`, copies to or
//!   from userspace or waits for a fence under it: the fence work, a signalling path, takes
//!   it.
//! - `state`, a spinlock taken with interrupts disabled, protects the buffer states, the
//!   queued and done lists and the buffers' fences and deadlines: the driver completes buffers
//!   from any context (a timer, a work item) with only this lock, and the deadline work takes
//!   only this one. Nothing that sleeps runs under it.
//!
//! Buffer memory ([`BufferMem`]) is released with none of these held but `ioctl`, in process
//! context, outside signalling sections: releasing may unpin pages or take a dma-buf's
//! reservation lock, which is held while waiting for fences. A token's memory reference is
//! parked in its slot for that (see `Slot::parked`).
//!
//! Two more locks nest inside: a waiter's registration lock (inside `state`, around the
//! fence's lock; see [`FenceWaiter`]) and the token counter's (taken by a token when it is made
//! and when it goes, with whatever the driver holds).
//!
//! Driver callbacks are never called with `state` held, so a driver may take its own locks in
//! them and complete buffers while holding those. A driver's callbacks run on signalling paths
//! (the fence work hands buffers over and starts streaming): they must not allocate with
//! `GFP_KERNEL`, nor take a lock held elsewhere around such an allocation.
//!
//! # Orphaned buffers and bounded memory
//!
//! Freeing buffers (REQBUFS, REMOVE_BUFS, the owner's close) never waits for userspace: memory
//! that is still mapped (or exported) lives on, unreachable through the queue, until the last
//! mapping goes (`V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS`). Every MMAP allocation is charged to
//! the queue's [`MemAccount`] until the memory is freed, whoever holds it last, and the account
//! refuses what would exceed [`QueueOps::max_memory`]: one queue, its orphans included, holds
//! at most that much.
//!
//! # Read I/O
//!
//! [`Queue::read`] is videobuf2's file I/O emulation (`vb2_read()`): the first `read()` (or a
//! `poll()` for input, on a queue without buffers) makes the caller the owner, allocates
//! MMAP buffers, queues them and starts streaming; each `read()` then copies from the oldest
//! completed buffer (dequeued as DQBUF does) and queues it again once it was read to its end.
//! Meanwhile the buffer ioctls and `mmap()` fail with `EBUSY`; the owner's close stops it.
//!
//! # Signalling sections
//!
//! Every path that can lead to `dma_fence_signal()` on an out-fence runs in a
//! [`SignallingSection`] (`dma_fence_begin_signalling()`): a driver's completion
//! ([`ActiveBuffer`]'s give-back; rvivid also wraps its frame work), the fence work, the
//! deadline work, the cancel of STREAMOFF, REQBUFS and the owner's close, and QBUF's and
//! STREAMON's [`Queue::advance`]. DQBUF signals nothing: a buffer reaches the done list with
//! its out-fence signalled. Lockdep then checks the rules above over the whole test suite.

#[cfg(CONFIG_KUNIT = "y")]
mod kunit;
mod list;

use crate::{
    errno::{
        ecanceled,
        edeadlk,
        enobufs, //
    },
    fence::{
        Fence,
        FenceAllocation,
        FenceContext,
        FenceNotify,
        FenceWaiter,
        OutFence,
        SignallingSection, //
    },
    mem::{
        BufferMem,
        CpuAccess,
        DataDir,
        DmaBuf,
        DmaBufRef,
        DmaDevice,
        MemAccount, //
    },
    sync::{
        new_irq_spinlock,
        IrqSpinLock, //
    },
    work, //
};
use kernel::{
    fs::File,
    new_condvar,
    new_mutex,
    new_poll_condvar,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        poll::{
            PollCondVar,
            PollTable, //
        },
        Arc,
        ArcBorrow,
        CondVar,
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
    }, //
};
use list::IndexList;

/// The most buffers a queue holds.
pub(crate) const MAX_BUFFERS: usize = 32;

/// `EPOLLIN | EPOLLRDNORM`.
pub(crate) const POLL_IN: u32 = 0x0001 | 0x0040;
/// `EPOLLERR`.
pub(crate) const POLL_ERR: u32 = 0x0008;

/// The default bound on the memory of one queue, in MiB (the `max_queue_mem_mb` module
/// parameter): 32 buffers of the largest frame rvivid makes (1920x1080 RGB24, 6075 KiB: 190 MiB),
/// with room left for orphans.
pub(crate) const MAX_MEMORY_DEFAULT_MB: u32 = 256;
/// The largest bound that can be set, in MiB.
pub(crate) const MAX_MEMORY_MAX_MB: u32 = 4096;

/// The stride between the `mmap()` offsets of consecutive buffers (16 MiB).
const OFFSET_SHIFT: u32 = 24;

/// The default bound on a fenced buffer, from QBUF to completion, in milliseconds (the
/// `fence_timeout_ms` module parameter): more than twice the longest a legitimate rvivid stream
/// makes a buffer wait (32 buffers ahead at its slowest rate, 15 fps: 2.2 s), and above the
/// 3.1 s that Samsung's Exynos scaler waits for an in-fence. See
/// `Documentation/dma-fence-rules.rst`.
pub(crate) const FENCE_TIMEOUT_DEFAULT_MS: u32 = 5000;
/// The smallest bound that can be set.
pub(crate) const FENCE_TIMEOUT_MIN_MS: u32 = 1;
/// The largest bound that can be set: 60 s, half the hung-task detector's default, so that a
/// task waiting on an rvb2 out-fence is never reported as hung.
pub(crate) const FENCE_TIMEOUT_MAX_MS: u32 = 60_000;

/// The ID of the fence work (`WorkItem<FENCE_WORK>`).
const FENCE_WORK: u64 = 0;
/// The ID of the deadline work (`WorkItem<DEADLINE_WORK>`).
const DEADLINE_WORK: u64 = 1;

/// The delay until `deadline_ns` (`CLOCK_MONOTONIC`), in jiffies: rounded up, plus one, since
/// the current jiffy has partly elapsed.
fn delay_until(deadline_ns: u64) -> Jiffies {
    let ns = deadline_ns.saturating_sub(crate::time::monotonic_ns());
    let ms = ns.div_ceil(1_000_000).min(u64::from(u32::MAX)) as u32;
    msecs_to_jiffies(ms).saturating_add(1)
}

/// Identifies a user of the queue (an open file of the device), for queue ownership.
///
/// Each [`FileId::new`] returns an identity no other call returned (a 64-bit counter, which
/// does not wrap in practice): outside this module, no code can make an identity equal to
/// another user's, whatever it does, so a closed file's identity is never mistaken for a new
/// one's (as an address could be).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FileId(u64);

impl FileId {
    /// A new identity, equal to no other.
    pub(crate) fn new() -> Self {
        static NEXT: Atomic<u64> = Atomic::new(1);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

/// The direction of a queue's buffers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Direction {
    /// The driver fills the buffers (a capture queue).
    Capture,
    /// The driver consumes the buffers userspace filled (an output queue). (Only the KUnit
    /// cases make one yet: rvivid has no output device.)
    #[cfg_attr(not(CONFIG_KUNIT = "y"), expect(dead_code))]
    Output,
}

/// The kinds of buffer memory the core handles.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Memory {
    /// Memory allocated by the queue and mapped by userspace (`V4L2_MEMORY_MMAP`).
    Mmap,
    /// User memory, pinned when the buffer is queued or prepared (`V4L2_MEMORY_USERPTR`).
    Userptr,
    /// A dma-buf, imported when the buffer is queued or prepared (`V4L2_MEMORY_DMABUF`).
    Dmabuf,
}

/// The memory a QBUF or PREPARE_BUF brings for its buffer (USERPTR, DMABUF), or none (MMAP).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MemArg {
    /// The buffer uses the memory the queue allocated.
    Mmap,
    /// The `length` bytes at user address `addr`.
    Userptr {
        /// The user address.
        addr: usize,
        /// The length in bytes.
        length: u32,
    },
    /// The first `length` bytes of the dma-buf of file descriptor `fd` (its whole size if
    /// `length` is 0).
    Dmabuf {
        /// The dma-buf's file descriptor, in the calling process.
        fd: i32,
        /// The length in bytes, or 0.
        length: u32,
    },
}

impl MemArg {
    /// The kind of memory.
    pub(crate) fn memory(self) -> Memory {
        match self {
            MemArg::Mmap => Memory::Mmap,
            MemArg::Userptr { .. } => Memory::Userptr,
            MemArg::Dmabuf { .. } => Memory::Dmabuf,
        }
    }
}

/// What a QBUF or PREPARE_BUF acquires for its buffer's memory, with `ioctl` held but not
/// `lock` (from [`Queue::check_mem`]).
enum Acquire {
    /// The buffer keeps its memory (MMAP, the same user range).
    Keep,
    /// Pin `length` bytes at user address `addr`.
    Pin { addr: usize, length: u32 },
    /// Import the dma-buf of `fd` (`length`: as in [`MemArg::Dmabuf`]), unless it is the one
    /// the buffer has (`current`).
    Import {
        fd: i32,
        length: u32,
        current: Option<BufferMem>,
    },
}

/// What [`Queue::acquire_mem`] acquired, for [`Queue::install_mem`].
struct Acquired {
    /// The buffer's new memory, if it changes.
    mem: Option<BufferMem>,
    /// What the buffer records of userspace's memory (USERPTR, DMABUF): its length, user
    /// address and dma-buf fd.
    user: Option<(u32, usize, i32)>,
}

/// What [`Queue::install_mem`] replaced: dropped by the caller once `lock` is released.
#[must_use = "drop it after releasing `lock`"]
struct Replaced {
    _mem: Option<BufferMem>,
    _parked: Option<BufferMem>,
}

/// The state of a buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BufState {
    /// Owned by userspace (after allocation, DQBUF or STREAMOFF).
    Dequeued,
    /// Queued by userspace, not yet given to the driver.
    Queued,
    /// Owned by the driver.
    Active,
    /// Completed by the driver, waiting for DQBUF.
    Done,
    /// Completed with an error, waiting for DQBUF.
    Error,
}

/// What the core reports of one buffer (QUERYBUF, QBUF, DQBUF).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BufferInfo {
    /// The buffer's index.
    pub(crate) index: u32,
    /// The buffer's size in bytes.
    pub(crate) length: u32,
    /// The `mmap()` offset of the buffer.
    pub(crate) offset: u32,
    /// The kind of memory of the buffer.
    pub(crate) memory: Memory,
    /// The user address of a USERPTR buffer (0 until it is first queued or prepared).
    pub(crate) userptr: usize,
    /// The dma-buf fd a DMABUF buffer was last queued or prepared with (0 before).
    pub(crate) fd: i32,
    /// Bytes of data the driver produced (0 from QBUF until the buffer is done; kept after
    /// DQBUF).
    pub(crate) bytesused: u32,
    /// The buffer's state.
    pub(crate) state: BufState,
    /// Whether the buffer was prepared (PREPARE_BUF) and not yet queued.
    pub(crate) prepared: bool,
    /// Whether userspace has the buffer mapped.
    pub(crate) mapped: bool,
    /// The buffer's sequence number, set when it was completed (by the driver, or the core's
    /// counter); 0 from QBUF until then, kept after DQBUF.
    pub(crate) sequence: u32,
    /// The buffer's `CLOCK_MONOTONIC` timestamp in nanoseconds, set when it was completed (by
    /// the driver, or the time of completion); 0 from QBUF until then, kept after DQBUF.
    pub(crate) timestamp_ns: u64,
    /// The buffer waits for its in-fence.
    pub(crate) in_fence_pending: bool,
    /// The buffer's out-fence has not signalled yet.
    pub(crate) out_fence_pending: bool,
    /// The buffer was last queued with an in-fence or an out-fence.
    pub(crate) fenced: bool,
    /// The driver marked the buffer the last of the stream (`V4L2_BUF_FLAG_LAST`); kept after
    /// DQBUF, until the next QBUF.
    pub(crate) last: bool,
}

/// The fences of a QBUF.
pub(crate) struct QbufFences<F> {
    /// The buffer must not reach the driver before this fence signals.
    pub(crate) in_fence: Option<ARef<Fence>>,
    /// Requests an out-fence: the core creates it and calls this to publish it (e.g. wrap it
    /// in a sync_file) before the QBUF takes effect. If it fails, the QBUF fails and nothing
    /// changed; if the QBUF fails after it, the published object is dropped and the
    /// out-fence signalled with an error.
    pub(crate) publish: Option<F>,
}

/// A driver's side of a queue, like `struct vb2_ops`.
///
/// The core calls these with its operation lock held (so never concurrently), and never with
/// its state spinlock held.
pub(crate) trait QueueOps: Send + Sync + Sized + 'static {
    /// The queue's name in the warnings the core prints when the driver breaks its contract
    /// ("rvb2: NAME: stop_streaming left 1 buffer(s) with the driver").
    const NAME: &'static str;

    /// How many buffers must be queued before [`QueueOps::start_streaming`] is called.
    const MIN_QUEUED_BUFFERS: u32;

    /// The size a buffer needs for the current format (`queue_setup`).
    fn buffer_size(&self) -> u32;

    /// Checks that a buffer of `length` bytes fits the current format (`buf_prepare`).
    fn buf_prepare(&self, length: u32) -> Result {
        if length < self.buffer_size() {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Takes ownership of a buffer to fill (`buf_queue`). The driver gives it back with
    /// [`ActiveBuffer::done`], [`ActiveBuffer::fail`] or, only while
    /// [`QueueOps::start_streaming`] fails, [`ActiveBuffer::requeue`].
    fn buf_queue(&self, buf: ActiveBuffer<Self>);

    /// Starts streaming; `count` buffers are already with the driver. On failure the driver
    /// must have given every buffer back with [`ActiveBuffer::requeue`].
    fn start_streaming(&self, count: u32) -> Result;

    /// Stops streaming. The driver must give every buffer it holds back (usually with
    /// [`ActiveBuffer::fail`]) before returning.
    fn stop_streaming(&self);

    /// Whether the driver may complete buffers in another order than it got them, for the
    /// current format. Asked when buffers are allocated: an ordered queue gets one out-fence
    /// context for its buffers, an unordered one a new context for every out-fence.
    fn is_unordered(&self) -> bool {
        false
    }

    /// The bound on a buffer queued with a fence, in milliseconds: if it is not completed that
    /// long after its QBUF, the queue fails it (and every buffer queued before it) and signals
    /// its out-fence with `-ETIMEDOUT`. Asked at each fenced QBUF; it must exceed the longest a
    /// buffer can legitimately wait with this driver (its slowest frame period times the buffers
    /// ahead of it). By default, the `fence_timeout_ms` module parameter. The queue holds it to
    /// [`FENCE_TIMEOUT_MIN_MS`]..=[`FENCE_TIMEOUT_MAX_MS`].
    fn fence_timeout_ms(&self) -> u32 {
        crate::param::FENCE_TIMEOUT_MS.get()
    }

    /// The most memory, in bytes, the queue's MMAP buffers may take, orphans (freed buffers
    /// still mapped or exported) included: REQBUFS and CREATE_BUFS allocate no more (`ENOMEM`
    /// if not even their minimum fits). Asked at each allocation. By default, the
    /// `max_queue_mem_mb` module parameter.
    fn max_memory(&self) -> usize {
        crate::param::MAX_QUEUE_MEM_MB.get() as usize * 1024 * 1024
    }
}

/// Who asks for a buffer operation: userspace's streaming ioctls, refused (`EBUSY`) while
/// read I/O is active, or read I/O itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Io {
    Streaming,
    Read,
}

/// Read I/O (see [`Queue::read`]): the buffer being read, if any.
#[derive(Default)]
struct Reader {
    cur: Option<ReadBuf>,
}

/// A completed buffer that `read()` copies from.
#[derive(Clone, Copy)]
struct ReadBuf {
    index: usize,
    /// The bytes already read.
    pos: usize,
    /// The bytes of data in the buffer.
    len: usize,
}

/// A buffer and its memory, owned by the queue.
struct Buffer {
    /// The memory: from the allocation (MMAP), or from the last QBUF or PREPARE_BUF that
    /// brought some (USERPTR, DMABUF; none before).
    mem: Option<BufferMem>,
    /// The size of the memory in bytes (for USERPTR and DMABUF, the size it was created with
    /// until memory comes).
    length: u32,
    /// The size the buffer was created with (REQBUFS: the format's; CREATE_BUFS: the one
    /// asked for): the least memory a QBUF may bring (`vb2_plane.min_length`).
    min_length: u32,
    /// The user address of USERPTR memory.
    userptr: usize,
    /// The fd of DMABUF memory, as userspace gave it.
    fd: i32,
}

/// The per-buffer state kept under the state spinlock.
struct Slot {
    state: BufState,
    prepared: bool,
    /// Bumped whenever the driver is given the buffer or it is taken back, so that a stale
    /// [`ActiveBuffer`] cannot complete a later use of the buffer.
    generation: u32,
    bytesused: u32,
    sequence: u32,
    timestamp_ns: u64,
    /// The fence the (queued) buffer waits for; the buffer's waiter is registered on it.
    in_fence: Option<ARef<Fence>>,
    /// The in-fence signalled with an error: the buffer is completed with an error, in its
    /// turn, without reaching the driver.
    fence_failed: bool,
    /// Signalled when the buffer is completed (or with an error when it is taken back).
    out_fence: Option<OutFence>,
    /// The last QBUF had a fence.
    fenced: bool,
    /// The driver marked the buffer the last of the stream.
    last: bool,
    /// When a fenced buffer must be completed (`CLOCK_MONOTONIC` ns), set by QBUF.
    deadline_ns: Option<u64>,
    /// The deadline failed the buffer: its out-fence signals `-ETIMEDOUT`.
    timed_out: bool,
    /// The driver holds a token ([`ActiveBuffer`]) for the buffer, current or stale. The buffer
    /// is not handed to the driver again until that token is given back, so that the driver
    /// never holds two tokens of one buffer (the deadline takes buffers back from a driver that
    /// is still using them). Survives STREAMOFF and frees, as the token does.
    held: bool,
    /// The memory reference of the last token of the buffer given back. A token never drops
    /// it, since it may be given back in atomic context and be the last reference (the buffer
    /// freed meanwhile); the queue drops it in process context: when it hands the buffer to
    /// the driver again, frees it, in the fence work, or at shutdown.
    parked: Option<BufferMem>,
    /// The buffer's memory was replaced (QBUF, PREPARE_BUF) or the buffer freed while the
    /// driver held a stale token: that token's memory, parked once it is given back, may be the
    /// last reference to it. The buffer does not go to the driver again (which drops what is
    /// parked, under `lock`) before the fence work, outside `lock`, dropped it.
    foreign: bool,
}

impl Slot {
    const IDLE: Slot = Slot {
        state: BufState::Dequeued,
        prepared: false,
        generation: 0,
        bytesused: 0,
        sequence: 0,
        timestamp_ns: 0,
        in_fence: None,
        fence_failed: false,
        out_fence: None,
        fenced: false,
        last: false,
        deadline_ns: None,
        timed_out: false,
        held: false,
        parked: None,
        foreign: false,
    };

    /// Signals the out-fence of a completed buffer, if it has one pending: with `-ETIMEDOUT` if
    /// its deadline failed it, `-EIO` if it failed otherwise.
    fn signal_out_fence(slot: &mut Slot) {
        if let Some(out) = slot.out_fence.take() {
            let error = if slot.timed_out {
                Some(ETIMEDOUT)
            } else {
                (slot.state == BufState::Error).then_some(EIO)
            };
            out.signal(error);
        }
    }

    /// Clears what the last completion reported, as QBUF and PREPARE_BUF do in videobuf2.
    fn clear_frame(&mut self) {
        self.bytesused = 0;
        self.sequence = 0;
        self.timestamp_ns = 0;
        self.last = false;
    }

    /// Whether the buffer is queued and may go to the driver now.
    fn ready(&self) -> bool {
        self.state == BufState::Queued
            && self.in_fence.is_none()
            && !self.fence_failed
            && !self.held
            && !self.foreign
    }

    /// Whether the buffer is queued and holds back the buffers queued after it: it waits for
    /// its in-fence, for the driver to give back a stale token of it, or for the fence work to
    /// drop that token's memory.
    fn blocks(&self) -> bool {
        self.state == BufState::Queued
            && !self.fence_failed
            && (self.in_fence.is_some() || self.held || self.foreign)
    }

    /// The buffer's deadline, if it has one and is not completed yet, or is completed but its
    /// out-fence still waits (on an ordered queue, for the buffers queued before it).
    fn pending_deadline(&self) -> Option<u64> {
        match self.state {
            BufState::Queued | BufState::Active => self.deadline_ns,
            BufState::Done | BufState::Error if self.out_fence.is_some() => self.deadline_ns,
            _ => None,
        }
    }
}

/// State protected by the operation mutex.
struct Inner {
    bufs: [Option<Buffer>; MAX_BUFFERS],
    num_buffers: u32,
    memory: Option<Memory>,
    owner: Option<FileId>,
    streaming: bool,
    start_streaming_called: bool,
    waiting_in_dqbuf: bool,
    /// The out-fence context of an ordered queue, allocated with the buffers.
    fence_context: FenceContext,
    /// The driver said, when the buffers were allocated, that it completes out of order.
    unordered: bool,
    /// Read I/O is active: the buffers are the reader's.
    reading: Option<Reader>,
}

/// State protected by the state spinlock.
struct State {
    slots: [Slot; MAX_BUFFERS],
    /// Buffers from QBUF to DQBUF, in QBUF order.
    queued: IndexList,
    /// Completed buffers waiting for DQBUF: in completion order on an unordered queue, in QBUF
    /// order on an ordered one (see [`Queue::flush`]).
    done: IndexList,
    streaming: bool,
    /// No buffer was queued since streaming was set up (poll reports an error then).
    waiting_for_buffers: bool,
    owned_by_driver: u32,
    /// The core's sequence counter: the number a completed buffer gets if the driver gives it
    /// none. From 0 at STREAMON; continues after any number the driver gives.
    sequence: u32,
    /// The queue is ordered (see `Inner::unordered`): out-fences signal in QBUF order.
    ordered: bool,
    /// Userspace dequeued a buffer marked last: nothing more comes until STREAMOFF.
    last_buffer_dequeued: bool,
    /// The deadline the deadline work is armed for, until it runs.
    deadline_armed_ns: Option<u64>,
}

/// The outcome of a buffer the driver gives back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done { bytesused: u32, last: bool },
    Error,
    Requeue,
}

/// What the driver says of the frame a buffer is completed with (see
/// [`ActiveBuffer::set_sequence`]); what it leaves `None` the core fills in.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct FrameInfo {
    sequence: Option<u32>,
    timestamp_ns: Option<u64>,
}

/// A buffer queue.
///
/// # Invariants
///
/// With `lock` and `state` held (`state` alone for what it protects):
///
/// - A slot that is not `Dequeued`, or is `prepared`, has a buffer in `Inner::bufs`.
/// - `state.queued` holds, in QBUF order, exactly the buffers that are `Queued`, `Active`,
///   `Done` or `Error`. `state.done` holds only `Done` and `Error` buffers: on an unordered
///   queue in completion order, on an ordered queue in QBUF order and only once every buffer
///   queued before it is completed. A buffer on `state.done` has no pending out-fence.
/// - `owned_by_driver` is the number of `Active` slots. A slot is `held` while a token
///   ([`ActiveBuffer`]) for it exists, current or stale; there is at most one, and a current
///   one (same generation, `Active`) for every `Active` slot.
/// - `waiters[i]` is registered only while slot `i` is `Queued` with an `in_fence` (and
///   briefly after a path took that fence, until it unregisters the waiter).
/// - A slot has an `out_fence` only while it is on `state.queued`; every out-fence of an
///   ordered queue is on `Inner::fence_context`, and they signal in sequence number order.
/// - `tokens` counts the existing tokens; each holds a reference on the queue until it stops
///   counting, so none is the last while [`Queue::shutdown`] has not returned.
#[pin_data]
pub(crate) struct Queue<O: QueueOps> {
    /// Serialises the operations that change the buffers, their fence context or sequence
    /// numbers, and may allocate memory (QBUF, REQBUFS, CREATE_BUFS, EXPBUF...): they hold it
    /// around their allocations and take `lock` only around the changes. No signalling path
    /// takes it.
    #[pin]
    ioctl: Mutex<()>,
    /// Serialises `read()` calls, held while one waits for a frame; taken before `ioctl`.
    #[pin]
    read: Mutex<()>,
    #[pin]
    lock: Mutex<Inner>,
    #[pin]
    state: IrqSpinLock<State>,
    #[pin]
    done_wq: PollCondVar,
    /// Runs when an in-fence signals: buffers behind it may go to the driver now.
    #[pin]
    fence_work: DelayedWork<Self, FENCE_WORK>,
    /// Runs at the earliest deadline of the fenced buffers: fails the buffers whose deadline
    /// passed. Takes only `state`.
    #[pin]
    deadline_work: DelayedWork<Self, DEADLINE_WORK>,
    /// One in-fence callback per buffer, registered while the buffer waits for its in-fence.
    #[pin]
    waiters: [FenceWaiter<Self>; MAX_BUFFERS],
    /// Counts the driver's tokens: [`Queue::shutdown`] waits for them.
    tokens: Arc<Tokens>,
    /// The MMAP memory the queue allocated that is still alive (orphans included).
    account: Arc<MemAccount>,
    /// Whether the driver fills the buffers or consumes them.
    direction: Direction,
    /// The device imported dma-bufs are attached to (none: they are only mapped in the kernel).
    dma_dev: Option<DmaDevice>,
    #[pin]
    ops: O,
}

/// Counts the [`ActiveBuffer`]s that exist, so that [`Queue::shutdown`] can wait until the last
/// one is gone. It lives in an `Arc` of its own, shared by the queue and its tokens: a token
/// stops counting (see [`TokenCount`]) only after it dropped its reference on the queue, so
/// until `shutdown()` returns, a token's reference on the queue is never the last one.
#[pin_data]
struct Tokens {
    #[pin]
    count: IrqSpinLock<u32>,
    #[pin]
    gone: CondVar,
}

/// One count of [`Tokens`], held by a token; declared after the token's other fields, so it is
/// dropped last.
struct TokenCount(Arc<Tokens>);

impl TokenCount {
    fn new(tokens: &Arc<Tokens>) -> Self {
        *tokens.count.lock() += 1;
        Self(tokens.clone())
    }
}

impl Drop for TokenCount {
    fn drop(&mut self) {
        let mut count = self.0.count.lock();
        *count -= 1;
        if *count == 0 {
            self.0.gone.notify_all();
        }
        // Unlocked, then the `Arc` dropped: if it is the last, only `Tokens` is freed, which
        // may happen in any context.
    }
}

impl_has_delayed_work! {
    impl{O: QueueOps} HasDelayedWork<Self, FENCE_WORK> for Queue<O> { self.fence_work }
    impl{O: QueueOps} HasDelayedWork<Self, DEADLINE_WORK> for Queue<O> { self.deadline_work }
}

impl<O: QueueOps> WorkItem<FENCE_WORK> for Queue<O> {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        // What tokens given back left behind (possibly the last reference on a freed buffer's
        // memory) is dropped here, in process context, with no lock held and outside the
        // signalling section.
        drop(this.take_parked());
        // It hands buffers to the driver and completes failed ones: out-fences need it.
        let _signalling = SignallingSection::begin();
        let mut inner = this.lock.lock();
        if Self::advance(&this, &mut inner).is_err() {
            // `start_streaming()` failed with nobody to tell: the queued buffers come back
            // with an error, and their out-fences signal one.
            this.fail_queued();
        }
    }
}

impl<O: QueueOps> WorkItem<DEADLINE_WORK> for Queue<O> {
    type Pointer = Arc<Self>;

    fn run(this: Arc<Self>) {
        Self::expire(&this);
    }
}

impl<O: QueueOps> FenceNotify for Queue<O> {
    fn fence_signalled(this: ArcBorrow<'_, Self>) {
        Self::kick(&Arc::from(this));
    }
}

/// Returns `Err(EBUSY)` unless `owner` may use the queue.
fn check_owner(inner: &Inner, owner: FileId) -> Result {
    match inner.owner {
        Some(o) if o != owner => Err(EBUSY),
        _ => Ok(()),
    }
}

/// Returns `Err(EBUSY)` if read I/O owns the buffers and `io` is not it (`vb2_fileio_is_active()`).
fn check_io(inner: &Inner, io: Io) -> Result {
    if io == Io::Streaming && inner.reading.is_some() {
        return Err(EBUSY);
    }
    Ok(())
}

impl<O: QueueOps> Queue<O> {
    /// Creates a queue of `direction` for the driver side `ops`; imported dma-bufs are
    /// attached to `dma_dev`.
    pub(crate) fn new(
        direction: Direction,
        dma_dev: Option<DmaDevice>,
        ops: impl PinInit<O, Error>,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                ioctl <- new_mutex!((), "rvb2_queue_ioctl"),
                read <- new_mutex!((), "rvb2_queue_read"),
                lock <- new_mutex!(Inner {
                    bufs: [const { None }; MAX_BUFFERS],
                    num_buffers: 0,
                    memory: None,
                    owner: None,
                    streaming: false,
                    start_streaming_called: false,
                    waiting_in_dqbuf: false,
                    fence_context: FenceContext::new(),
                    unordered: false,
                    reading: None,
                }),
                state <- new_irq_spinlock!(
                    State {
                        slots: [const { Slot::IDLE }; MAX_BUFFERS],
                        queued: IndexList::new(),
                        done: IndexList::new(),
                        streaming: false,
                        waiting_for_buffers: true,
                        owned_by_driver: 0,
                        sequence: 0,
                        ordered: true,
                        last_buffer_dequeued: false,
                        deadline_armed_ns: None,
                    },
                    c"rvb2_queue_state"
                ),
                done_wq <- new_poll_condvar!("rvb2_queue_done"),
                fence_work <- new_delayed_work!("rvb2_queue_fence_work"),
                deadline_work <- new_delayed_work!("rvb2_queue_deadline_work"),
                waiters <- pin_init::pin_init_array_from_fn(|_| FenceWaiter::new()),
                tokens: Arc::pin_init(
                    pin_init!(Tokens {
                        count <- new_irq_spinlock!(0, c"rvb2_queue_tokens"),
                        gone <- new_condvar!("rvb2_queue_tokens_gone"),
                    }),
                    GFP_KERNEL,
                )?,
                account: MemAccount::new()?,
                direction,
                dma_dev,
                ops <- ops,
            }? Error),
            GFP_KERNEL,
        )
    }

    /// The driver side of the queue.
    pub(crate) fn ops(&self) -> &O {
        &self.ops
    }

    /// Whether the driver fills the buffers or consumes them.
    pub(crate) fn direction(&self) -> Direction {
        self.direction
    }

    /// Which way the data goes between the driver and the memory.
    fn data_dir(&self) -> DataDir {
        match self.direction {
            Direction::Capture => DataDir::DeviceWrites,
            Direction::Output => DataDir::DeviceReads,
        }
    }

    /// Runs `f` unless buffers are allocated (`EBUSY` then, as drivers check `vb2_is_busy()`),
    /// with the operation locks held, so that no REQBUFS or CREATE_BUFS runs meanwhile: for
    /// changes the buffers depend on (the format, the ordering). `f` must not allocate with
    /// `GFP_KERNEL` (`lock` is held).
    pub(crate) fn with_idle<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        let _ioctl = self.ioctl.lock();
        let inner = self.lock.lock();
        if inner.num_buffers > 0 {
            return Err(EBUSY);
        }
        let r = f();
        drop(inner);
        Ok(r)
    }

    /// Winds the queue down: called, from process context, when the queue's device goes away
    /// (no file is open, so the queue is not streaming, no fence callback is registered and
    /// none can be), before the driver drops its reference.
    ///
    /// It waits until the driver has dropped or given back every [`ActiveBuffer`] (after
    /// `stop_streaming()` it holds none, but one may still be on its way back, e.g. from a
    /// timer), so that no token ever drops the last reference on the queue; then stops the
    /// fence and deadline works (the deadline work first: it may queue the fence work) and
    /// drops what tokens left behind. Nothing queues the works again.
    pub(crate) fn shutdown(this: &Arc<Self>) {
        let mut count = this.tokens.count.lock();
        while *count > 0 {
            this.tokens.gone.wait(&mut count);
        }
        drop(count);
        // None should be registered; if one were, its reference on the queue would keep it
        // alive for ever.
        for waiter in &this.waiters {
            waiter.unregister();
        }
        work::cancel_delayed_work_sync::<Self, DEADLINE_WORK>(this);
        work::cancel_delayed_work_sync::<Self, FENCE_WORK>(this);
        drop(this.take_parked());
    }

    /// Takes the memory references that tokens left in the slots (`Slot::parked`), to be
    /// dropped in process context without `state` held.
    fn take_parked(&self) -> [Option<BufferMem>; MAX_BUFFERS] {
        let mut parked = [const { None }; MAX_BUFFERS];
        let mut st = self.state.lock();
        for (p, slot) in parked.iter_mut().zip(st.slots.iter_mut()) {
            *p = slot.parked.take();
            if !slot.held {
                // What the stale token left is dropped by the caller.
                slot.foreign = false;
            }
        }
        parked
    }

    /// Queues the fence work, which moves the queue forward ([`Queue::advance`]).
    fn kick(this: &Arc<Self>) {
        // Already queued (`Err`) is as good: the work has not run yet.
        let _ = work::system_percpu().enqueue_delayed::<_, FENCE_WORK>(this.clone(), 0);
    }

    /// Frees buffers `start..start + count` (all must exist and be dequeued; memory userspace
    /// still maps lives on as an orphan).
    ///
    /// Returns them: the caller drops them (releasing their memory, which may sleep or, for
    /// memory of other kinds later, unpin pages) once it released `lock`, which the signalling
    /// paths take.
    #[must_use = "drop the freed buffers after releasing `lock`"]
    fn free_range(
        &self,
        inner: &mut Inner,
        start: usize,
        count: usize,
    ) -> (
        [Option<Buffer>; MAX_BUFFERS],
        [Option<BufferMem>; MAX_BUFFERS],
    ) {
        let mut freed: [Option<Buffer>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        let mut parked: [Option<BufferMem>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        {
            let mut st = self.state.lock();
            let range = start..start + count;
            for (((buf, freed), parked), slot) in inner.bufs[range.clone()]
                .iter_mut()
                .zip(&mut freed[range.clone()])
                .zip(&mut parked[range.clone()])
                .zip(&mut st.slots[range])
            {
                *freed = buf.take();
                *parked = slot.parked.take();
                if freed.is_some() {
                    inner.num_buffers -= 1;
                }
                // The generation survives, so that a token the driver kept stays stale, and so does
                // the record of that token, whose memory is not the next buffer's.
                *slot = Slot {
                    generation: slot.generation.wrapping_add(1),
                    held: slot.held,
                    foreign: slot.held,
                    ..Slot::IDLE
                };
            }
        }
        if inner.num_buffers == 0 {
            inner.memory = None;
        }
        (freed, parked)
    }

    /// The first range of `count` free slots.
    fn first_free(inner: &Inner, count: usize) -> Result<usize> {
        (0..=MAX_BUFFERS.saturating_sub(count))
            .find(|&s| inner.bufs[s..s + count].iter().all(Option::is_none))
            .ok_or_else(enobufs)
    }

    /// Allocates the memory of up to `count` buffers of `size` bytes, stopping at the first
    /// failure; returns it and how many. Called with `ioctl` held but not `lock`, which the
    /// signalling paths take.
    ///
    /// MMAP memory is charged to the queue's account, within [`QueueOps::max_memory`]: what
    /// does not fit is not allocated.
    fn alloc_mem(
        &self,
        memory: Memory,
        count: usize,
        size: u32,
    ) -> ([Option<BufferMem>; MAX_BUFFERS], u32) {
        let mut mems = [const { None }; MAX_BUFFERS];
        if memory != Memory::Mmap {
            // The memory comes with each QBUF.
            return (mems, count as u32);
        }
        let limit = self.ops.max_memory();
        let mut allocated = 0;
        for mem in mems.iter_mut().take(count) {
            match BufferMem::alloc_mmap(size as usize, &self.account, limit) {
                Ok(m) => {
                    *mem = Some(m);
                    allocated += 1;
                }
                Err(_) => break,
            }
        }
        (mems, allocated)
    }

    /// Installs the buffers `mems` (of `size` bytes) from slot `first` on. On an empty queue
    /// the format is settled now: the driver says how out-fences are ordered, and an ordered
    /// queue gets its fence context. Returns how many were installed.
    fn install(
        &self,
        inner: &mut Inner,
        first: usize,
        mems: &mut [Option<BufferMem>; MAX_BUFFERS],
        count: u32,
        size: u32,
    ) -> u32 {
        if inner.num_buffers == 0 {
            inner.unordered = self.ops.is_unordered();
            self.state.lock().ordered = !inner.unordered;
            inner.fence_context = FenceContext::new();
        }
        let mut installed = 0;
        for (slot, mem) in inner.bufs[first..]
            .iter_mut()
            .zip(mems.iter_mut())
            .take(count as usize)
        {
            *slot = Some(Buffer {
                mem: mem.take(),
                length: size,
                min_length: size,
                userptr: 0,
                fd: 0,
            });
            installed += 1;
        }
        inner.num_buffers += installed;
        installed
    }

    /// `VIDIOC_REQBUFS`: frees all buffers (`count == 0`) or replaces them with `count` new
    /// ones. Returns the number allocated. Buffers userspace still maps, or that are
    /// exported, are orphaned: their memory lives until the last mapping or dma-buf goes
    /// (`V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS`).
    pub(crate) fn reqbufs(&self, owner: FileId, memory: Memory, count: u32) -> Result<u32> {
        let _ioctl = self.ioctl.lock();
        self.reqbufs_locked(owner, memory, count, Io::Streaming)
    }

    /// [`Queue::reqbufs`] with `ioctl` held, for `io`.
    fn reqbufs_locked(&self, owner: FileId, memory: Memory, count: u32, io: Io) -> Result<u32> {
        let min = O::MIN_QUEUED_BUFFERS + 1;
        let (count, size) = {
            let mut inner = self.lock.lock();
            check_owner(&inner, owner)?;
            check_io(&inner, io)?;
            if inner.streaming && io == Io::Streaming {
                return Err(EBUSY);
            }
            if inner.waiting_in_dqbuf && count > 0 {
                return Err(EBUSY);
            }
            if inner.num_buffers > 0 || count == 0 {
                self.cancel(&mut inner);
                let freed = self.free_range(&mut inner, 0, MAX_BUFFERS);
                if count == 0 {
                    inner.owner = None;
                    inner.reading = None;
                }
                drop(inner);
                drop(freed);
                if count == 0 {
                    return Ok(0);
                }
            }
            (
                count.max(min).min(MAX_BUFFERS as u32),
                self.ops.buffer_size(),
            )
        };
        // The queue is empty, and stays so while `ioctl` is held.
        let (mut mems, allocated) = self.alloc_mem(memory, count as usize, size);
        if allocated < min {
            return Err(ENOMEM);
        }
        let mut inner = self.lock.lock();
        let installed = self.install(&mut inner, 0, &mut mems, allocated, size);
        inner.memory = Some(memory);
        inner.owner = Some(owner);
        self.state.lock().waiting_for_buffers = true;
        Ok(installed)
    }

    /// The number of allocated buffers (reported by `VIDIOC_CREATE_BUFS` as the next index).
    pub(crate) fn num_buffers(&self) -> u32 {
        self.lock.lock().num_buffers
    }

    /// Checks that buffers of `memory` can be created now (`vb2_verify_memory_type()`).
    pub(crate) fn verify_memory(&self, memory: Memory) -> Result {
        let inner = self.lock.lock();
        check_io(&inner, Io::Streaming)?;
        if inner.memory.is_some_and(|m| m != memory) {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// `VIDIOC_CREATE_BUFS`: adds up to `count` buffers of `size` bytes (at least the current
    /// format's size). Returns the first new index and the number created.
    pub(crate) fn create_bufs(
        &self,
        owner: FileId,
        memory: Memory,
        count: u32,
        size: u32,
    ) -> Result<(u32, u32)> {
        let _ioctl = self.ioctl.lock();
        let (first, count) = {
            let inner = self.lock.lock();
            check_owner(&inner, owner)?;
            check_io(&inner, Io::Streaming)?;
            if inner.memory.is_some_and(|m| m != memory) {
                return Err(EINVAL);
            }
            // As in videobuf2: a DQBUF waiting (on a dup()ed fd) only keeps the first
            // buffers of a queue from being made, not more of them.
            if inner.waiting_in_dqbuf && inner.num_buffers == 0 {
                return Err(EBUSY);
            }
            if inner.num_buffers as usize >= MAX_BUFFERS {
                return Err(enobufs());
            }
            if size < self.ops.buffer_size() {
                return Err(EINVAL);
            }
            let count = count.min(MAX_BUFFERS as u32 - inner.num_buffers) as usize;
            (Self::first_free(&inner, count)?, count)
        };
        // The free range stays free while `ioctl` is held.
        let (mut mems, allocated) = self.alloc_mem(memory, count, size);
        if allocated == 0 {
            return Err(ENOMEM);
        }
        let mut inner = self.lock.lock();
        let installed = self.install(&mut inner, first, &mut mems, allocated, size);
        inner.memory = Some(memory);
        inner.owner = Some(owner);
        Ok((first as u32, installed))
    }

    /// Returns what userspace sees of buffer `index`.
    fn info(inner: &Inner, st: &State, index: usize) -> Result<BufferInfo> {
        let buf = inner
            .bufs
            .get(index)
            .and_then(Option::as_ref)
            .ok_or(EINVAL)?;
        let slot = &st.slots[index];
        Ok(BufferInfo {
            index: index as u32,
            length: buf.length,
            offset: (index as u32) << OFFSET_SHIFT,
            memory: inner.memory.unwrap_or(Memory::Mmap),
            userptr: buf.userptr,
            fd: buf.fd,
            bytesused: slot.bytesused,
            state: slot.state,
            prepared: slot.prepared,
            mapped: buf.mem.as_ref().is_some_and(BufferMem::mapped),
            sequence: slot.sequence,
            timestamp_ns: slot.timestamp_ns,
            in_fence_pending: slot.in_fence.is_some(),
            out_fence_pending: slot.out_fence.is_some(),
            fenced: slot.fenced,
            last: slot.last,
        })
    }

    /// `VIDIOC_QUERYBUF`.
    pub(crate) fn querybuf(&self, index: u32) -> Result<BufferInfo> {
        let inner = self.lock.lock();
        let st = self.state.lock();
        Self::info(&inner, &st, index as usize)
    }

    /// Checks the memory and index of a buffer argument and returns the buffer's index.
    fn check_buffer(inner: &Inner, index: u32, memory: Memory) -> Result<usize> {
        if inner.memory != Some(memory) {
            return Err(EINVAL);
        }
        let index = index as usize;
        match inner.bufs.get(index) {
            Some(Some(_)) => Ok(index),
            _ => Err(EINVAL),
        }
    }

    /// Checks the memory `arg` brings for buffer `index` against the format and the buffer's
    /// size (`buf_prepare`, `EINVAL`) as far as it can without acquiring it, and says what to
    /// acquire. Called with `lock` held.
    fn check_mem(&self, inner: &Inner, index: usize, arg: MemArg) -> Result<Acquire> {
        let Some(buf) = inner.bufs[index].as_ref() else {
            return Err(EINVAL);
        };
        match arg {
            MemArg::Mmap => {
                self.ops.buf_prepare(buf.length)?;
                Ok(Acquire::Keep)
            }
            MemArg::Userptr { addr, length } => {
                self.check_length(buf, length)?;
                let same = buf
                    .mem
                    .as_ref()
                    .is_some_and(|m| m.is_user(addr, length as usize));
                Ok(if same {
                    Acquire::Keep
                } else {
                    Acquire::Pin { addr, length }
                })
            }
            MemArg::Dmabuf { fd, length } => Ok(Acquire::Import {
                fd,
                length,
                current: buf.mem.clone(),
            }),
        }
    }

    /// Checks that `length` bytes of memory brought for `buf` are enough: for the format
    /// (`buf_prepare`) and for the size the buffer was created with (`EINVAL`).
    fn check_length(&self, buf: &Buffer, length: u32) -> Result {
        self.ops.buf_prepare(length)?;
        if length < buf.min_length {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Acquires what `plan` (from [`Queue::check_mem`]) says: pins user pages or imports a
    /// dma-buf (unless it is the buffer's already). Called with `ioctl` held but not `lock`:
    /// pinning takes the process's `mmap_lock`, importing a dma-buf its reservation lock; both
    /// allocate.
    fn acquire_mem(&self, plan: Acquire) -> Result<Acquired> {
        let (mem, user) = match plan {
            Acquire::Keep => {
                return Ok(Acquired {
                    mem: None,
                    user: None,
                });
            }
            Acquire::Pin { addr, length } => (
                BufferMem::pin_user(addr, length as usize, self.data_dir())?,
                (length, addr, 0),
            ),
            Acquire::Import {
                fd,
                length,
                current,
            } => {
                // As videobuf2: a closed fd, or one that is no dma-buf, is EINVAL; a length of 0
                // means the whole dma-buf, a larger one than the dma-buf is EINVAL.
                let dmabuf = DmaBufRef::get(fd)?;
                let size = dmabuf.size();
                let length = if length == 0 {
                    u32::try_from(size).unwrap_or(u32::MAX)
                } else {
                    length
                };
                if length as usize > size {
                    return Err(EINVAL);
                }
                let user = Some((length, 0, fd));
                if current.is_some_and(|m| m.imports(&dmabuf, length as usize)) {
                    // The same dma-buf again: its attachment and mapping are kept.
                    return Ok(Acquired { mem: None, user });
                }
                let mem = BufferMem::import(
                    dmabuf,
                    length as usize,
                    self.dma_dev.as_ref(),
                    self.data_dir(),
                )?;
                (mem, (length, 0, fd))
            }
        };
        Ok(Acquired {
            mem: Some(mem),
            user: Some(user),
        })
    }

    /// Checks what [`Queue::acquire_mem`] acquired for buffer `index` against the format and
    /// the buffer's size (a dma-buf's length is known only once it is looked up). Called with
    /// `lock` held.
    fn check_acquired(&self, inner: &Inner, index: usize, acquired: &Acquired) -> Result {
        let Some(buf) = inner.bufs[index].as_ref() else {
            return Err(EINVAL);
        };
        match acquired.user {
            Some((length, _, _)) => self.check_length(buf, length),
            None => Ok(()),
        }
    }

    /// Gives buffer `index` what `acquired` holds (from [`Queue::acquire_mem`]); returns what
    /// it replaces, for the caller to drop once `lock` is released.
    ///
    /// That includes the reference the buffer's last token parked in its slot, unless the
    /// driver still holds a stale token: after a replacement it may be the last reference on
    /// the old memory (USERPTR pages to unpin, a dma-buf to detach), which must not be dropped
    /// under `lock` when the buffer is next handed to the driver. If the driver does hold a
    /// stale token, the buffer waits for the fence work to drop that token's memory
    /// (`Slot::foreign`).
    fn install_mem(&self, inner: &mut Inner, index: usize, acquired: Acquired) -> Replaced {
        let Some(buf) = inner.bufs[index].as_mut() else {
            return Replaced {
                _mem: acquired.mem,
                _parked: None,
            };
        };
        if let Some((length, userptr, fd)) = acquired.user {
            buf.length = length;
            buf.userptr = userptr;
            buf.fd = fd;
        }
        let Some(mem) = acquired.mem else {
            return Replaced {
                _mem: None,
                _parked: None,
            };
        };
        let replaced = buf.mem.replace(mem);
        let parked = {
            let mut st = self.state.lock();
            let slot = &mut st.slots[index];
            if slot.held {
                slot.foreign = true;
                None
            } else {
                // What a stale token left is dropped by the caller.
                slot.foreign = false;
                slot.parked.take()
            }
        };
        Replaced {
            _mem: replaced,
            _parked: parked,
        }
    }

    /// `VIDIOC_PREPARE_BUF`.
    pub(crate) fn prepare_buf(&self, owner: FileId, index: u32, arg: MemArg) -> Result<BufferInfo> {
        let _ioctl = self.ioctl.lock();
        let (index, plan) = {
            let inner = self.lock.lock();
            check_owner(&inner, owner)?;
            check_io(&inner, Io::Streaming)?;
            let index = Self::check_buffer(&inner, index, arg.memory())?;
            {
                let st = self.state.lock();
                let slot = &st.slots[index];
                if slot.state != BufState::Dequeued || slot.prepared {
                    return Err(EINVAL);
                }
            }
            (index, self.check_mem(&inner, index, arg)?)
        };
        // The buffer stays dequeued and allocated while `ioctl` is held. What was acquired, or
        // replaced, is dropped after `lock` (declared before it).
        let acquired = self.acquire_mem(plan)?;
        let _replaced;
        let mut inner = self.lock.lock();
        self.check_acquired(&inner, index, &acquired)?;
        _replaced = self.install_mem(&mut inner, index, acquired);
        let mut st = self.state.lock();
        let slot = &mut st.slots[index];
        slot.prepared = true;
        slot.clear_frame();
        Self::info(&inner, &st, index)
    }

    /// `VIDIOC_QBUF`, with optional fences.
    ///
    /// Returns the buffer's state and, if an out-fence was requested, what `publish` made of
    /// it. On failure nothing changed: no out-fence is left unsignalled, and a published
    /// object is dropped.
    pub(crate) fn qbuf<P, F: FnOnce(&OutFence) -> Result<P>>(
        this: &Arc<Self>,
        owner: FileId,
        index: u32,
        arg: MemArg,
        fences: QbufFences<F>,
    ) -> Result<(BufferInfo, Option<P>)> {
        // Held throughout: no other operation changes the buffer, the fence context or the
        // sequence numbers while `lock` is released for the allocations below.
        let _ioctl = this.ioctl.lock();
        Self::qbuf_locked(this, owner, index, arg, fences, Io::Streaming)
    }

    /// [`Queue::qbuf`] with `ioctl` held, for `io`.
    fn qbuf_locked<P, F: FnOnce(&OutFence) -> Result<P>>(
        this: &Arc<Self>,
        owner: FileId,
        index: u32,
        arg: MemArg,
        fences: QbufFences<F>,
        io: Io,
    ) -> Result<(BufferInfo, Option<P>)> {
        // The out-fence's memory is allocated ahead, without `lock` (the signalling paths take
        // it); creating the fence under `lock` then cannot fail.
        let storage = fences
            .publish
            .is_some()
            .then(FenceAllocation::new)
            .transpose()?;
        // Memory the buffer no longer uses is dropped after `lock` (declared before it); so
        // are, on failure, the memory acquired for the buffer (dropping an import takes the
        // dma-buf's reservation lock) and the out-fence's reservation slot (which holds a
        // reservation lock: released after `lock`, before anything else that takes one).
        let _replaced;
        let mem;
        let acquired;
        let fence_slot;
        let published;
        let in_fence: Option<ARef<Fence>>;
        let out_ref: Option<ARef<Fence>>;
        let explicit_in_fence = fences.in_fence.is_some();
        let mut inner = this.lock.lock();
        let (index, prepared, out, plan, current) = {
            check_owner(&inner, owner)?;
            check_io(&inner, io)?;
            let index = Self::check_buffer(&inner, index, arg.memory())?;
            let prepared = {
                let st = this.state.lock();
                let slot = &st.slots[index];
                if slot.state != BufState::Dequeued {
                    return Err(EINVAL);
                }
                slot.prepared
            };
            // A prepared buffer keeps the memory PREPARE_BUF gave it, as in videobuf2
            // (whatever `arg` says).
            let plan = if prepared {
                None
            } else {
                Some(this.check_mem(&inner, index, arg)?)
            };
            if let Some(fence) = fences.in_fence.as_ref() {
                this.check_self_dependency(fence)?;
            }
            // An ordered queue's out-fence takes the next sequence number of its context; an
            // unordered one's gets a context of its own. If the QBUF fails from here on, the
            // fence is dropped unpublished, which signals it.
            let out = storage.map(|storage| {
                if inner.unordered {
                    FenceContext::new().new_fence(storage)
                } else {
                    inner.fence_context.new_fence(storage)
                }
            });
            // The buffer's memory now: unless the QBUF brings other memory, the one whose
            // reservation object will carry the out-fence and may hold fences of others
            // (implicit synchronization).
            let current = inner.bufs.get(index).and_then(|b| b.as_ref()?.mem.clone());
            (index, prepared, out, plan, current)
        };
        // Nothing to acquire, collect or publish: the buffer keeps memory whose reservation
        // object nobody else can have added fences to (MMAP memory never exported, the same
        // user range) and no out-fence is asked for. `lock` then stays held, as it could have
        // been released and taken again at once.
        let fast = fences.publish.is_none()
            && matches!(plan, None | Some(Acquire::Keep))
            && !current.as_ref().is_some_and(BufferMem::shares_resv);
        if fast {
            acquired = plan.map(|_| Acquired {
                mem: None,
                user: None,
            });
            published = None;
            // Not the last reference to the memory: the buffer keeps it.
            drop(current);
            fence_slot = None;
            in_fence = fences.in_fence;
            out_ref = None;
        } else {
            drop(inner);
            // USERPTR memory is pinned and a dma-buf imported first, without `lock`; until it
            // is installed below, a failure only releases it again.
            acquired = plan.map(|plan| this.acquire_mem(plan)).transpose()?;
            // The memory the buffer will have: what the QBUF brings, or what it has.
            mem = acquired.as_ref().and_then(|a| a.mem.clone()).or(current);
            // The out-fence's slot in the reservation object implicit synchronization sees
            // for that memory (MMAP memory's own, shared by its dma-bufs; an imported
            // dma-buf's), locked and allocated here (it may sleep), held until the QBUF
            // succeeded and the fence is added, and released on failure: no signalling path
            // takes a reservation object, nor waits for this one.
            fence_slot = match (out.as_ref(), mem.as_ref()) {
                (Some(_), Some(m)) => m.reserve_fence(this.data_dir())?,
                _ => None,
            };
            // The fences of others the driver must wait for before it touches an imported
            // dma-buf or exported MMAP memory (the writers', and on a capture queue the
            // readers', such as a read fence a consumer added with
            // DMA_BUF_IOCTL_IMPORT_SYNC_FILE), collected under the
            // reservation lock if the slot holds it, so that none is added in between: the
            // buffer waits for them with its in-fence, asynchronously, never in this ioctl.
            // This queue's own out-fences are left out (its order already waits for them, and
            // waiting for them would be waiting for itself); only this QBUF makes out-fences,
            // and `ioctl` is held, so the set read here stays the same until the buffer is
            // queued.
            let implicit = match mem.as_ref() {
                Some(m) => {
                    let (ours, n) = this.pending_out_contexts();
                    m.implicit_fences(this.data_dir(), &ours[..n])?
                }
                None => None,
            };
            in_fence = match (fences.in_fence, implicit) {
                (Some(explicit), Some(implicit)) => Some(explicit.merge(&implicit)?),
                (explicit, implicit) => explicit.or(implicit),
            };
            out_ref = out.as_ref().map(|o| o.fence().into());
            // The out-fence is published before anything changes, so that a failure leaves
            // nothing behind; its fd is installed by the caller only after success. Publishing
            // allocates (a sync_file), so `lock` is not held.
            published = match (fences.publish, out.as_ref()) {
                (Some(publish), Some(fence)) => Some(publish(fence)?),
                _ => None,
            };
            inner = this.lock.lock();
            if let Some(acquired) = acquired.as_ref() {
                this.check_acquired(&inner, index, acquired)?;
            }
        }
        // Fenced by userspace (reported as such); a buffer that only waits for implicit fences
        // gets a deadline too.
        let fenced = out.is_some() || explicit_in_fence;
        let bounded = fenced || in_fence.is_some();
        if let Some(fence) = in_fence.as_ref() {
            // The waiter kicks `fence_work`, which settles the fence; an already signalled
            // fence is settled by `advance()` below. It is registered before the buffer is
            // queued, so that the buffer is never queued with a callback it does not know of
            // (the deadline work removes callbacks of the buffers it fails). Until then the
            // fence work it may kick waits for `lock`. The buffer was dequeued, so its waiter
            // is free (every path that takes a buffer back unregisters it).
            this.waiters[index].register(fence, this)?;
        }
        _replaced = acquired.map(|acquired| this.install_mem(&mut inner, index, acquired));
        let deadline_ns = bounded.then(|| {
            // A driver's own bound is held to the range the module parameter allows.
            let bound_ms = this
                .ops
                .fence_timeout_ms()
                .clamp(FENCE_TIMEOUT_MIN_MS, FENCE_TIMEOUT_MAX_MS);
            let bound_ns = u64::from(bound_ms) * 1_000_000;
            crate::time::monotonic_ns().saturating_add(bound_ns)
        });
        {
            let mut st = this.state.lock();
            st.queued.push_back(index);
            let slot = &mut st.slots[index];
            slot.state = BufState::Queued;
            slot.prepared = false;
            slot.clear_frame();
            slot.fence_failed = false;
            slot.fenced = fenced;
            slot.out_fence = out;
            slot.in_fence = in_fence;
            slot.deadline_ns = deadline_ns;
            slot.timed_out = false;
            st.waiting_for_buffers = false;
            if deadline_ns.is_some() {
                Self::arm_deadline(this, &mut st);
            }
        }

        // Buffers may go to the driver, and failed ones complete: out-fences need this.
        let signalling = SignallingSection::begin();
        if let Err(e) = Self::advance(this, &mut inner) {
            // `start_streaming()` failed: as in videobuf2, this buffer was not queued.
            Self::unqueue(this, index, prepared);
            return Err(e);
        }
        drop(signalling);
        let st = this.state.lock();
        let mut info = Self::info(&inner, &st, index)?;
        if matches!(info.state, BufState::Done | BufState::Error) {
            // The driver completed it already (it runs concurrently): QBUF reports the buffer
            // as it queued it, with no frame yet; DQBUF returns the frame.
            info.state = BufState::Active;
            info.bytesused = 0;
            info.sequence = 0;
            info.timestamp_ns = 0;
            info.last = false;
            info.out_fence_pending = published.is_some();
        }
        drop(st);
        drop(inner);
        if let (Some(slot), Some(fence)) = (fence_slot, out_ref.as_ref()) {
            slot.add_fence(fence);
        }
        Ok((info, published))
    }

    /// Undoes a QBUF of `index` that failed: the buffer is dequeued again, its waiter
    /// removed and its out-fence signalled with an error. (Its deadline may have failed it
    /// meanwhile: it is then taken off the done list too.)
    fn unqueue(this: &Arc<Self>, index: usize, prepared: bool) {
        let (in_fence, out) = {
            let mut st = this.state.lock();
            st.queued.remove(index);
            st.done.remove(index);
            let slot = &mut st.slots[index];
            slot.state = BufState::Dequeued;
            slot.prepared = prepared;
            slot.fenced = false;
            slot.deadline_ns = None;
            slot.timed_out = false;
            (slot.in_fence.take(), slot.out_fence.take())
        };
        if in_fence.is_some() {
            this.waiters[index].unregister();
        }
        drop(in_fence);
        if let Some(o) = out {
            o.signal(Some(ecanceled()));
        }
    }

    /// Moves the queue forward: settles signalled in-fences at the head of the queued list,
    /// starts streaming once enough buffers are ready, hands ready buffers to the driver in
    /// QBUF order, and completes buffers whose in-fence failed, each in its turn.
    ///
    /// Only a failing `start_streaming()` makes it fail.
    fn advance(this: &Arc<Self>, inner: &mut Inner) -> Result {
        if !inner.streaming {
            return Ok(());
        }
        if inner.start_streaming_called && Self::enqueue_ready_unfenced(this, inner) {
            return Ok(());
        }
        let ready = this.settle_fences();
        if !inner.start_streaming_called {
            if ready < O::MIN_QUEUED_BUFFERS {
                this.flush();
                return Ok(());
            }
            return Self::start_streaming(this, inner);
        }
        Self::enqueue_ready(this, inner);
        Ok(())
    }

    /// Settles the in-fences that signalled, from the head of the queued list up to the first
    /// pending one. Returns how many buffers there are ready for the driver before it.
    fn settle_fences(&self) -> u32 {
        let mut settled: [Option<ARef<Fence>>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        let mut ready = 0;
        {
            let mut st = self.state.lock();
            let queued = st.queued.clone();
            for i in queued.iter() {
                let slot = &mut st.slots[i];
                if slot.state != BufState::Queued {
                    continue;
                }
                if let Some(fence) = slot.in_fence.as_ref() {
                    let status = fence.status();
                    if status == 0 {
                        break;
                    }
                    slot.fence_failed = status < 0;
                    settled[i] = slot.in_fence.take();
                }
                if slot.blocks() {
                    // The driver still holds a stale token of it.
                    break;
                }
                if slot.ready() {
                    ready += 1;
                }
            }
        }
        for (i, fence) in settled.iter().enumerate() {
            if fence.is_some() {
                // The callback ran or is running; this waits for it to finish.
                self.waiters[i].unregister();
            }
        }
        ready
    }

    /// Hands the ready buffers to the driver, in order, up to the first one whose in-fence is
    /// pending; completes fence-failed buffers in their turn once the driver has started (before
    /// that, [`Queue::start_streaming`] does if the driver starts: a failed start completes
    /// nothing).
    fn enqueue_ready(this: &Arc<Self>, inner: &Inner) {
        let mut ready = IndexList::new();
        let mut gens = [0u32; MAX_BUFFERS];
        // Not the last references: the buffers are allocated (`inner`), and a slot whose parked
        // memory may be another than its buffer's (`foreign`) is not handed over.
        let mut parked: [Option<BufferMem>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        Self::take_ready(&mut this.state.lock(), &mut ready, &mut gens, &mut parked);
        drop(parked);
        if inner.start_streaming_called {
            this.flush();
        }
        Self::hand_over(this, inner, &ready, &gens);
    }

    /// [`Queue::advance`] once the driver has started, when no queued buffer has an in-fence
    /// to settle (always so on a queue used without fences): hands the ready buffers to the
    /// driver and flushes, as `settle_fences()`, `enqueue_ready()` and `flush()` would, in one
    /// pass under `state`. Returns `false`, having changed nothing, if a queued buffer has an
    /// in-fence.
    fn enqueue_ready_unfenced(this: &Arc<Self>, inner: &Inner) -> bool {
        let mut ready = IndexList::new();
        let mut gens = [0u32; MAX_BUFFERS];
        // Not the last references: the buffers are allocated (`inner`).
        let mut parked: [Option<BufferMem>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        let any = {
            let mut st = this.state.lock();
            if st.queued.iter().any(|i| st.slots[i].in_fence.is_some()) {
                return false;
            }
            Self::take_ready(&mut st, &mut ready, &mut gens, &mut parked);
            Self::flush_locked(&mut st)
        };
        drop(parked);
        if any {
            this.done_wq.notify_all();
        }
        Self::hand_over(this, inner, &ready, &gens);
        true
    }

    /// Marks the ready buffers `Active`, in QBUF order up to the first that blocks (see
    /// [`Queue::enqueue_ready`]); puts them in `ready`, their new generation in `gens` and
    /// what their last token parked in `parked`, to be dropped without `state`.
    fn take_ready(
        st: &mut State,
        ready: &mut IndexList,
        gens: &mut [u32; MAX_BUFFERS],
        parked: &mut [Option<BufferMem>; MAX_BUFFERS],
    ) {
        let queued = st.queued.clone();
        for i in queued.iter() {
            let slot = &mut st.slots[i];
            if slot.state != BufState::Queued || slot.fence_failed {
                continue;
            }
            if slot.blocks() {
                // Everything behind a pending in-fence (or a buffer whose stale token the
                // driver still holds) waits: QBUF order is kept.
                break;
            }
            slot.state = BufState::Active;
            slot.held = true;
            parked[i] = slot.parked.take();
            slot.generation = slot.generation.wrapping_add(1);
            gens[i] = slot.generation;
            ready.push_back(i);
            st.owned_by_driver += 1;
        }
    }

    /// Gives the buffers of `ready` (from [`Queue::take_ready`]) to the driver, in order.
    fn hand_over(this: &Arc<Self>, inner: &Inner, ready: &IndexList, gens: &[u32; MAX_BUFFERS]) {
        let queued_ns = crate::time::monotonic_ns();
        for i in ready.iter() {
            let Some(buf) = inner.bufs[i].as_ref() else {
                continue;
            };
            this.ops.buf_queue(ActiveBuffer {
                queue: this.clone(),
                index: i,
                generation: gens[i],
                mem: buf.mem.clone(),
                length: buf.length,
                frame: FrameInfo::default(),
                queued_ns,
                given_back: false,
                _count: TokenCount::new(&this.tokens),
            });
        }
    }

    /// Completes `index` as done or failed: gives it its sequence number and timestamp (the
    /// driver's, from `frame`, or the core's counter and the time now). An unordered queue
    /// signals its out-fence and adds it to the done list at once; an ordered one leaves both
    /// to [`Queue::flush`], which keeps QBUF order.
    fn complete(st: &mut State, index: usize, state: BufState, bytesused: u32, frame: FrameInfo) {
        let sequence = frame.sequence.unwrap_or(st.sequence);
        st.sequence = sequence.wrapping_add(1);
        let ordered = st.ordered;
        let slot = &mut st.slots[index];
        slot.state = state;
        slot.bytesused = bytesused;
        slot.sequence = sequence;
        slot.timestamp_ns = frame.timestamp_ns.unwrap_or_else(crate::time::monotonic_ns);
        if !ordered {
            Slot::signal_out_fence(slot);
            st.done.push_back(index);
        }
    }

    /// From the head of the queued list, up to the first buffer still pending: completes the
    /// fence-failed buffers with an error and signals the out-fences of the completed ones; on
    /// an ordered queue, also moves them to the done list. So buffers whose in-fence failed
    /// come back in QBUF order, and on an ordered queue, buffers are dequeued and their
    /// out-fences signal in QBUF order (their sequence number order), even if the driver
    /// completes them in another: a buffer completed early waits, its out-fence pending, for
    /// the buffers queued before it (or for its deadline, which fails them).
    fn flush(&self) {
        let any = Self::flush_locked(&mut self.state.lock());
        if any {
            self.done_wq.notify_all();
        }
    }

    /// [`Queue::flush`] with `state` held; returns whether it added a buffer to the done list.
    fn flush_locked(st: &mut State) -> bool {
        let mut any = false;
        let queued = st.queued.clone();
        for i in queued.iter() {
            let slot = &st.slots[i];
            match slot.state {
                BufState::Done | BufState::Error => {}
                BufState::Queued if slot.fence_failed => {
                    Self::complete(st, i, BufState::Error, 0, FrameInfo::default());
                    any = true;
                }
                _ => break,
            }
            Slot::signal_out_fence(&mut st.slots[i]);
            if st.ordered && !st.done.contains(i) {
                st.done.push_back(i);
                any = true;
            }
        }
        any
    }

    /// Arms the deadline work for the earliest deadline of the buffers not completed yet,
    /// unless it is armed for that time or earlier already (it re-arms itself when it runs).
    fn arm_deadline(this: &Arc<Self>, st: &mut State) {
        let next = st
            .queued
            .iter()
            .filter_map(|i| st.slots[i].pending_deadline())
            .min();
        let Some(next) = next else {
            return;
        };
        if st.deadline_armed_ns.is_some_and(|armed| armed <= next) {
            return;
        }
        st.deadline_armed_ns = Some(next);
        work::mod_delayed_work::<Self, DEADLINE_WORK>(
            work::system_percpu(),
            this,
            delay_until(next),
        );
    }

    /// The deadline work: fails the buffers whose deadline passed, and every buffer queued
    /// before them, then re-arms for the next deadline. Takes only `state`: nothing held
    /// around an allocation or a wait for userspace, so out-fences signal whatever userspace
    /// does with the queue's ioctls.
    fn expire(this: &Arc<Self>) {
        let _signalling = SignallingSection::begin();
        // Fence references are put after `state` is released.
        let mut in_fences: [Option<ARef<Fence>>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        let expired = {
            let mut st = this.state.lock();
            st.deadline_armed_ns = None;
            let expired = this.expire_locked(&mut st, crate::time::monotonic_ns(), &mut in_fences);
            Self::arm_deadline(this, &mut st);
            expired
        };
        drop(in_fences);
        if expired {
            this.done_wq.notify_all();
            // Buffers queued behind the failed ones may go to the driver now.
            Self::kick(this);
        }
    }

    /// Fails, in QBUF order, every buffer not completed yet up to the last one whose deadline
    /// is `now` or earlier; returns whether there was one. The in-fences of the failed buffers
    /// are moved to `in_fences`, their callbacks removed.
    fn expire_locked(
        &self,
        st: &mut State,
        now: u64,
        in_fences: &mut [Option<ARef<Fence>>; MAX_BUFFERS],
    ) -> bool {
        let queued = st.queued.clone();
        let Some(last) = queued
            .iter()
            .filter(|&i| st.slots[i].pending_deadline().is_some_and(|d| d <= now))
            .last()
        else {
            return false;
        };
        for i in queued.iter() {
            let slot = &mut st.slots[i];
            match slot.state {
                BufState::Queued => {
                    if let Some(fence) = slot.in_fence.take() {
                        // Under `state`, so that no QBUF can register this waiter again before
                        // the callback is off the fence: the buffer only becomes dequeued
                        // (DQBUF) once `state` is released.
                        self.waiters[i].unregister();
                        in_fences[i] = Some(fence);
                    }
                    // A buffer whose in-fence failed keeps its `-EIO`.
                    slot.timed_out = !slot.fence_failed;
                    Self::complete(st, i, BufState::Error, 0, FrameInfo::default());
                }
                BufState::Active => {
                    // Taken back from the driver, whose token goes stale (`held` stays until
                    // the driver gives it back).
                    slot.generation = slot.generation.wrapping_add(1);
                    slot.timed_out = true;
                    st.owned_by_driver -= 1;
                    Self::complete(st, i, BufState::Error, 0, FrameInfo::default());
                }
                _ => {}
            }
            if i == last {
                break;
            }
        }
        // An ordered queue's out-fences signal in QBUF order.
        Self::flush_locked(st);
        true
    }

    /// The fence contexts of this queue's out-fences that have not signalled (the first `n` of
    /// the array): one per buffer allocation on an ordered queue, one per fence on an unordered
    /// one. No out-fence appears while `ioctl` is held (only QBUF makes them).
    fn pending_out_contexts(&self) -> ([u64; MAX_BUFFERS], usize) {
        let mut ours = [0u64; MAX_BUFFERS];
        let mut n = 0;
        let st = self.state.lock();
        for out in st.slots.iter().filter_map(|s| s.out_fence.as_ref()) {
            if !ours[..n].contains(&out.fence().context()) {
                ours[n] = out.fence().context();
                n += 1;
            }
        }
        (ours, n)
    }

    /// Fails with `EDEADLK` if `fence` is, or contains, an out-fence of this queue that has not
    /// signalled: the buffer would wait for the queue itself (a buffer queued before it, which
    /// may itself wait for this one to start streaming). Called with `lock` held, so no new
    /// out-fence appears meanwhile; out-fences that signal meanwhile only make the answer
    /// conservative.
    fn check_self_dependency(&self, fence: &Fence) -> Result {
        let (ours, n) = self.pending_out_contexts();
        let mut dependent = false;
        fence.for_each_pending_context(|context| dependent |= ours[..n].contains(&context));
        if dependent {
            Err(edeadlk())
        } else {
            Ok(())
        }
    }

    /// Completes every queued buffer with an error, in order (the driver has none).
    fn fail_queued(&self) {
        let mut in_fences: [Option<ARef<Fence>>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        {
            let mut st = self.state.lock();
            for (i, slot) in st.slots.iter_mut().enumerate() {
                if slot.state == BufState::Queued {
                    slot.fence_failed = true;
                    in_fences[i] = slot.in_fence.take();
                }
            }
        }
        for (i, fence) in in_fences.iter().enumerate() {
            if fence.is_some() {
                self.waiters[i].unregister();
            }
        }
        self.flush();
    }

    /// Gives the queued buffers to the driver and starts it.
    ///
    /// If the driver refuses, the buffers stay queued and the error is returned: nothing was
    /// completed (buffers whose in-fence failed are completed only once the driver started),
    /// so the failed ioctl leaves no trace.
    fn start_streaming(this: &Arc<Self>, inner: &mut Inner) -> Result {
        Self::enqueue_ready(this, inner);
        inner.start_streaming_called = true;
        let count = this.state.lock().owned_by_driver;
        let Err(e) = this.ops.start_streaming(count) else {
            // The buffers whose in-fence failed, ahead of those the driver has, complete now
            // (or did already, when the driver completed a buffer queued after them).
            this.flush();
            return Ok(());
        };
        inner.start_streaming_called = false;
        // The driver should have given every buffer back with `requeue()`; take back any it
        // kept, as queued.
        let mut st = this.state.lock();
        let mut leaked = 0;
        for slot in st.slots.iter_mut().filter(|s| s.state == BufState::Active) {
            slot.state = BufState::Queued;
            slot.generation = slot.generation.wrapping_add(1);
            leaked += 1;
        }
        st.owned_by_driver = 0;
        drop(st);
        if leaked > 0 {
            pr_warn!(
                "rvb2: {}: start_streaming failed without returning {leaked} buffer(s)\n",
                O::NAME
            );
        }
        Err(e)
    }

    /// Stops the driver and takes every buffer back to the dequeued state: pending in-fence
    /// callbacks are removed, and out-fences not yet signalled signal with `-ECANCELED`.
    fn cancel(&self, inner: &mut Inner) {
        // The driver gives its buffers back, and the rest are signalled here.
        let _signalling = SignallingSection::begin();
        if inner.start_streaming_called {
            self.ops.stop_streaming();
        }
        inner.streaming = false;
        inner.start_streaming_called = false;
        let mut in_fences: [Option<ARef<Fence>>; MAX_BUFFERS] = [const { None }; MAX_BUFFERS];
        {
            let mut st = self.state.lock();
            if st.owned_by_driver > 0 {
                pr_warn!(
                    "rvb2: {}: stop_streaming left {} buffer(s) with the driver\n",
                    O::NAME,
                    st.owned_by_driver
                );
            }
            st.owned_by_driver = 0;
            // Out-fences signal in QBUF order, which is their sequence number order.
            let queued = st.queued.clone();
            for i in queued.iter() {
                if let Some(out) = st.slots[i].out_fence.take() {
                    out.signal(Some(ecanceled()));
                }
            }
            for (i, slot) in st.slots.iter_mut().enumerate() {
                if slot.state != BufState::Dequeued {
                    slot.generation = slot.generation.wrapping_add(1);
                }
                // The sequence number, timestamp, bytes used and LAST flag stay, as in
                // videobuf2, until the next QBUF.
                slot.state = BufState::Dequeued;
                slot.prepared = false;
                slot.fence_failed = false;
                slot.deadline_ns = None;
                slot.timed_out = false;
                in_fences[i] = slot.in_fence.take();
                if let Some(out) = slot.out_fence.take() {
                    out.signal(Some(ecanceled()));
                }
            }
            st.queued.clear();
            st.done.clear();
            st.streaming = false;
            st.waiting_for_buffers = true;
            st.last_buffer_dequeued = false;
        }
        for (i, fence) in in_fences.iter().enumerate() {
            if fence.is_some() {
                // After this the callback cannot run any more; a `fence_work` it queued finds
                // nothing to do.
                self.waiters[i].unregister();
            }
        }
        self.done_wq.notify_all();
    }

    /// `VIDIOC_STREAMON`.
    pub(crate) fn streamon(this: &Arc<Self>, owner: FileId) -> Result {
        let _ioctl = this.ioctl.lock();
        Self::streamon_locked(this, owner, Io::Streaming)
    }

    /// [`Queue::streamon`] with `ioctl` held, for `io`.
    fn streamon_locked(this: &Arc<Self>, owner: FileId, io: Io) -> Result {
        let mut inner = this.lock.lock();
        check_owner(&inner, owner)?;
        check_io(&inner, io)?;
        if inner.streaming {
            return Ok(());
        }
        if inner.num_buffers == 0 || inner.num_buffers < O::MIN_QUEUED_BUFFERS {
            return Err(EINVAL);
        }
        this.state.lock().sequence = 0;
        inner.streaming = true;
        let _signalling = SignallingSection::begin();
        if let Err(e) = Self::advance(this, &mut inner) {
            inner.streaming = false;
            return Err(e);
        }
        this.state.lock().streaming = true;
        Ok(())
    }

    /// `VIDIOC_STREAMOFF`: stops streaming and returns every buffer to userspace.
    pub(crate) fn streamoff(&self, owner: FileId) -> Result {
        let _ioctl = self.ioctl.lock();
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        check_io(&inner, Io::Streaming)?;
        self.cancel(&mut inner);
        Ok(())
    }

    /// `VIDIOC_DQBUF`: returns the oldest completed buffer, waiting for one unless
    /// `nonblocking`.
    pub(crate) fn dqbuf(&self, owner: FileId, nonblocking: bool) -> Result<BufferInfo> {
        self.dqbuf_as(owner, nonblocking, Io::Streaming)
    }

    /// [`Queue::dqbuf`] for `io`.
    fn dqbuf_as(&self, owner: FileId, nonblocking: bool, io: Io) -> Result<BufferInfo> {
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        check_io(&inner, io)?;
        loop {
            let mut st = self.state.lock();
            if !st.streaming {
                return Err(EINVAL);
            }
            if st.last_buffer_dequeued {
                return Err(EPIPE);
            }
            if let Some(index) = st.done.front() {
                st.done.remove(index);
                st.queued.remove(index);
                // What DQBUF reports is the buffer as it was completed.
                let info = Self::info(&inner, &st, index);
                // A buffer reaches the done list with its out-fence signalled.
                let slot = &mut st.slots[index];
                // What QUERYBUF reports of it from now on too, until the next QBUF.
                slot.state = BufState::Dequeued;
                slot.prepared = false;
                let last = slot.last;
                st.last_buffer_dequeued = last;
                return info;
            }
            if nonblocking {
                return Err(EAGAIN);
            }
            if inner.waiting_in_dqbuf {
                // Another (dup()ed) fd already waits, as in videobuf2.
                return Err(EBUSY);
            }
            // Wait without the operation lock, so that QBUF and STREAMOFF can proceed.
            inner.waiting_in_dqbuf = true;
            drop(st);
            drop(inner);
            let mut st = self.state.lock();
            let mut interrupted = false;
            while st.streaming && st.done.is_empty() && !interrupted {
                interrupted = self.done_wq.wait_interruptible(&mut st);
            }
            drop(st);
            inner = self.lock.lock();
            inner.waiting_in_dqbuf = false;
            if interrupted {
                return Err(ERESTARTSYS);
            }
            // The queue may have changed hands while we waited.
            check_owner(&inner, owner)?;
            check_io(&inner, io)?;
        }
    }

    /// `VIDIOC_REMOVE_BUFS`: frees buffers `start..start + count`.
    pub(crate) fn remove_bufs(&self, owner: FileId, start: u32, count: u32) -> Result {
        if count == 0 {
            return Ok(());
        }
        let _ioctl = self.ioctl.lock();
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        check_io(&inner, Io::Streaming)?;
        let (start, count) = (start as usize, count as usize);
        if count > inner.num_buffers as usize || start > MAX_BUFFERS - count {
            return Err(EINVAL);
        }
        {
            let st = self.state.lock();
            for i in start..start + count {
                if inner.bufs[i].is_none() {
                    return Err(EINVAL);
                }
                // A mapped or exported buffer is orphaned: its memory lives on.
                if st.slots[i].state != BufState::Dequeued {
                    return Err(EBUSY);
                }
            }
        }
        let freed = self.free_range(&mut inner, start, count);
        drop(inner);
        drop(freed);
        Ok(())
    }

    /// The owner's file was closed: stops streaming and frees the buffers (their memory lives
    /// on while userspace still maps it).
    pub(crate) fn release(&self, file: FileId) {
        let _ioctl = self.ioctl.lock();
        let mut inner = self.lock.lock();
        if inner.owner != Some(file) {
            return;
        }
        self.cancel(&mut inner);
        let freed = self.free_range(&mut inner, 0, MAX_BUFFERS);
        inner.owner = None;
        inner.reading = None;
        drop(inner);
        drop(freed);
        // A fence work still queued finds nothing to do; `shutdown()` stops it for good.
    }

    /// `VIDIOC_EXPBUF`: exports the memory of buffer `index` as a dma-buf whose file has the
    /// access mode `flags`. The dma-buf keeps the memory alive: the buffer may be freed
    /// (REQBUFS, REMOVE_BUFS, the owner's close) while it is held, as videobuf2 orphans it.
    pub(crate) fn expbuf(&self, owner: FileId, index: u32, flags: u32) -> Result<DmaBuf> {
        // The export allocates: `ioctl` only, which keeps the buffer from being freed meanwhile.
        let _ioctl = self.ioctl.lock();
        let mem = {
            let inner = self.lock.lock();
            check_owner(&inner, owner)?;
            check_io(&inner, Io::Streaming)?;
            if inner.memory != Some(Memory::Mmap) {
                return Err(EINVAL);
            }
            let buf = inner
                .bufs
                .get(index as usize)
                .and_then(Option::as_ref)
                .ok_or(EINVAL)?;
            buf.mem.clone().ok_or(EINVAL)?
        };
        mem.export(flags)
    }

    /// The `mmap()` file operation: maps the buffer whose offset is the VMA's page offset.
    pub(crate) fn mmap(&self, pgoff: usize, vma: &kernel::mm::virt::VmaNew) -> Result {
        let shift = OFFSET_SHIFT as usize - kernel::page::PAGE_SHIFT;
        let index = pgoff >> shift;
        if index << shift != pgoff {
            return Err(EINVAL);
        }
        // Any opener may map the buffers, as in videobuf2. The mapping takes its own reference
        // on the memory, so a buffer freed meanwhile (REQBUFS, REMOVE_BUFS) only leaves an
        // orphan. Mapping allocates page tables, so not under `lock`; not under `ioctl` either:
        // `mmap()` runs under the process's `mmap_lock`, which an ioctl may take under `ioctl`
        // (pinning user pages, faulting in a user copy).
        let mem = {
            let inner = self.lock.lock();
            check_io(&inner, Io::Streaming)?;
            if inner.memory != Some(Memory::Mmap) {
                return Err(EINVAL);
            }
            let buf = inner
                .bufs
                .get(index)
                .and_then(Option::as_ref)
                .ok_or(EINVAL)?;
            buf.mem.clone().ok_or(EINVAL)?
        };
        mem.mmap(vma)
    }

    /// The number of buffers read I/O allocates (`__vb2_init_fileio()`): one more than the
    /// driver needs queued to stream, at least 2.
    pub(crate) fn read_buffers() -> u32 {
        (O::MIN_QUEUED_BUFFERS + 1).max(2)
    }

    /// Starts read I/O for `owner`: allocates MMAP buffers, queues them all and starts
    /// streaming. `EBUSY` if another file owns the queue or buffers exist (streaming I/O);
    /// on failure nothing is left. Called with `read` and `ioctl` held.
    fn start_reading(this: &Arc<Self>, owner: FileId) -> Result {
        {
            let inner = this.lock.lock();
            check_owner(&inner, owner)?;
            if inner.reading.is_some() {
                return Ok(());
            }
            if inner.num_buffers > 0 || inner.streaming {
                return Err(EBUSY);
            }
            if this.direction != Direction::Capture {
                return Err(EINVAL);
            }
        }
        let count = this.reqbufs_locked(owner, Memory::Mmap, Self::read_buffers(), Io::Read)?;
        this.lock.lock().reading = Some(Reader::default());
        let started = (0..count)
            .try_for_each(|i| Self::requeue_locked(this, owner, i as usize))
            .and_then(|()| Self::streamon_locked(this, owner, Io::Read));
        if let Err(e) = started {
            // Frees the buffers and gives the queue up (`reading` is cleared with them).
            let _ = this.reqbufs_locked(owner, Memory::Mmap, 0, Io::Read);
            return Err(e);
        }
        Ok(())
    }

    /// Queues buffer `index` for read I/O (no fences). Called with `ioctl` held.
    fn requeue_locked(this: &Arc<Self>, owner: FileId, index: usize) -> Result {
        let fences = QbufFences::<fn(&OutFence) -> Result> {
            in_fence: None,
            publish: None,
        };
        Self::qbuf_locked(this, owner, index as u32, MemArg::Mmap, fences, Io::Read).map(|_| ())
    }

    /// The `read()` file operation (`vb2_read()`): copies up to `len` bytes of the oldest frame
    /// with `copy(memory, offset, count)` and returns how many it copied.
    ///
    /// The first call starts read I/O for `owner` (see the module documentation). Each call
    /// copies from the buffer a previous call did not finish, else dequeues the next completed
    /// one (waiting for it unless `nonblocking`: `EAGAIN`), so one call returns at most one
    /// frame; a buffer read to its end is queued again. Buffers completed with an error or
    /// empty are queued again unread (a `read()` of 0 bytes would mean end of file). If `copy`
    /// fails (a bad user address), nothing counts as read.
    pub(crate) fn read(
        this: &Arc<Self>,
        owner: FileId,
        nonblocking: bool,
        len: usize,
        copy: impl FnOnce(&CpuAccess<'_>, usize, usize) -> Result,
    ) -> Result<usize> {
        let _read = this.read.lock();
        {
            let _ioctl = this.ioctl.lock();
            Self::start_reading(this, owner)?;
        }
        if len == 0 {
            return Ok(0);
        }
        let (cur, mem) = loop {
            let cur = {
                let inner = this.lock.lock();
                check_owner(&inner, owner)?;
                let reader = inner.reading.as_ref().ok_or(EBUSY)?;
                reader.cur.map(|c| {
                    let mem = inner.bufs[c.index].as_ref().and_then(|b| b.mem.clone());
                    (c, mem)
                })
            };
            if let Some((cur, Some(mem))) = cur {
                break (cur, mem);
            }
            let info = this.dqbuf_as(owner, nonblocking, Io::Read)?;
            let index = info.index as usize;
            if info.state == BufState::Error || info.bytesused == 0 {
                let _ioctl = this.ioctl.lock();
                Self::requeue_locked(this, owner, index)?;
                continue;
            }
            if let Some(reader) = this.lock.lock().reading.as_mut() {
                reader.cur = Some(ReadBuf {
                    index,
                    pos: 0,
                    len: info.bytesused as usize,
                });
            }
        };
        let count = len.min(cur.len.saturating_sub(cur.pos));
        {
            // The buffer is dequeued: no driver token writes it meanwhile.
            let access = mem.cpu_access(cur.len).ok_or(EBUSY)?;
            copy(&access, cur.pos, count)?;
        }
        drop(mem);
        let finished = {
            let mut inner = this.lock.lock();
            match inner.reading.as_mut() {
                Some(reader) => match reader.cur.as_mut() {
                    Some(c) if c.index == cur.index => {
                        c.pos += count;
                        let finished = c.pos >= c.len;
                        if finished {
                            reader.cur = None;
                        }
                        finished
                    }
                    _ => false,
                },
                None => false,
            }
        };
        if finished {
            let _ioctl = this.ioctl.lock();
            Self::requeue_locked(this, owner, cur.index)?;
        }
        Ok(count)
    }

    /// The `poll()` file operation of `owner`'s file, for the events in `requested`.
    ///
    /// On a capture queue that offers read I/O (`may_read`), a poll for input on a queue
    /// without buffers starts read I/O for `owner`, as `vb2_poll()` does, so that a client
    /// that polls before it reads gets its frames; the buffer `read()` is in the middle of
    /// counts as input.
    pub(crate) fn poll(
        this: &Arc<Self>,
        owner: FileId,
        may_read: bool,
        file: &File,
        table: &PollTable<'_>,
        requested: u32,
    ) -> u32 {
        table.register_wait(file, &this.done_wq);
        if requested & POLL_IN == 0 {
            return 0;
        }
        if may_read && this.direction == Direction::Capture {
            // A reader waiting for a frame holds `read`: read I/O is on then.
            if let Some(_read) = this.read.try_lock() {
                let _ioctl = this.ioctl.lock();
                let start = {
                    let inner = this.lock.lock();
                    inner.reading.is_none()
                        && inner.num_buffers == 0
                        && inner.owner.is_none_or(|o| o == owner)
                };
                if start && Self::start_reading(this, owner).is_err() {
                    return POLL_ERR;
                }
            }
            let inner = this.lock.lock();
            if inner.owner == Some(owner) && inner.reading.as_ref().is_some_and(|r| r.cur.is_some())
            {
                return POLL_IN;
            }
        }
        let st = this.state.lock();
        if !st.streaming || st.waiting_for_buffers {
            return POLL_ERR;
        }
        if st.done.is_empty() && !st.last_buffer_dequeued {
            0
        } else {
            POLL_IN
        }
    }

    /// A buffer comes back from the driver, with the token's memory reference `mem`, which is
    /// parked in the slot rather than dropped here (see `Slot::parked`).
    fn give_back(
        this: &Arc<Self>,
        index: usize,
        generation: u32,
        outcome: Outcome,
        frame: FrameInfo,
        mem: Option<BufferMem>,
    ) {
        // The driver may have begun one (it should, from where it completes buffers); from
        // atomic context this annotates nothing.
        let _signalling = SignallingSection::begin();
        // Declared before the guard, so dropped after it: nothing is dropped under `state`.
        let _replaced;
        let mut st = this.state.lock();
        let slot = &mut st.slots[index];
        // The driver holds no token of the buffer any more (it never holds two). The slot's
        // previous parked reference was taken when this token was made (or the buffer freed),
        // so `_replaced` is empty.
        slot.held = false;
        _replaced = core::mem::replace(&mut slot.parked, mem);
        if slot.state != BufState::Active || slot.generation != generation {
            // Taken back already (STREAMOFF or the deadline reclaimed it): nothing to complete.
            // The buffer may have been freed since, and the parked reference be its last: the
            // fence work drops it. If the buffer was queued again meanwhile, it waited for this
            // token, and the fence work moves on.
            drop(st);
            Self::kick(this);
            return;
        }
        st.owned_by_driver -= 1;
        if outcome != Outcome::Requeue {
            // Buffers whose in-fence failed at the head of the queue complete before this one,
            // in QBUF order (during `start_streaming()` they are not completed yet).
            Self::flush_locked(&mut st);
        }
        match outcome {
            Outcome::Requeue => {
                st.slots[index].state = BufState::Queued;
                return;
            }
            Outcome::Done { bytesused, last } => {
                Self::complete(&mut st, index, BufState::Done, bytesused, frame);
                st.slots[index].last = last;
            }
            Outcome::Error => Self::complete(&mut st, index, BufState::Error, 0, frame),
        }
        drop(st);
        this.flush();
        this.done_wq.notify_all();
    }
}

/// A buffer the driver owns, from [`QueueOps::buf_queue`] until it gives it back.
///
/// Like a `vb2_v4l2_buffer` in a videobuf2 driver, it carries the frame's sequence number and
/// timestamp, which the driver sets before it gives the buffer back with
/// [`ActiveBuffer::done`] or [`ActiveBuffer::fail`].
///
/// Dropping it without giving it back completes it with an error.
///
/// It may be given back or dropped in any context (a timer, under a spinlock): it frees
/// nothing and never drops the last reference on the queue. Its memory reference goes to the
/// queue, which drops it in process context (`Slot::parked`), and [`Queue::shutdown`] waits for
/// every token to be gone (`TokenCount`, dropped last) before the driver drops the queue.
pub(crate) struct ActiveBuffer<O: QueueOps> {
    queue: Arc<Queue<O>>,
    index: usize,
    generation: u32,
    /// The buffer's memory, until the token is given back (then parked in the slot).
    mem: Option<BufferMem>,
    length: u32,
    frame: FrameInfo,
    /// When the core handed the buffer to the driver (`CLOCK_MONOTONIC` nanoseconds).
    queued_ns: u64,
    given_back: bool,
    /// Dropped last, after `queue`.
    _count: TokenCount,
}

impl<O: QueueOps> ActiveBuffer<O> {
    /// The buffer's index.
    #[cfg_attr(not(CONFIG_KUNIT = "y"), expect(dead_code))]
    pub(crate) fn index(&self) -> u32 {
        self.index as u32
    }

    /// When the core handed the buffer to the driver, in `CLOCK_MONOTONIC` nanoseconds: a
    /// driver that emulates a frame clock can tell whether the buffer was there for a frame.
    pub(crate) fn queued_ns(&self) -> u64 {
        self.queued_ns
    }

    /// Whether the queue took the buffer back (STREAMOFF reclaimed a buffer the driver kept,
    /// or its fence deadline passed): the token is stale, completing it does nothing, and the
    /// driver should give it back (any way) or drop it soon, since the queue does not hand the
    /// buffer to the driver again before.
    pub(crate) fn taken_back(&self) -> bool {
        let st = self.queue.state.lock();
        let slot = &st.slots[self.index];
        slot.state != BufState::Active || slot.generation != self.generation
    }

    /// CPU access to the buffer's memory (its first `length` bytes), to write the frame;
    /// `None` if the queue took the buffer back ([`ActiveBuffer::taken_back`]): this token is
    /// stale then and must not write.
    pub(crate) fn memory(&mut self) -> Option<CpuAccess<'_>> {
        if self.taken_back() {
            return None;
        }
        // The queue hands a buffer to the driver again only once its previous token is given
        // back, so this is the only access (`cpu_access()` checks it anyway).
        self.mem.as_ref()?.cpu_access(self.length as usize)
    }

    /// Gives the buffer the sequence number of its frame (`vb2_v4l2_buffer.sequence`), which
    /// it reports once completed. A driver that counts every frame period from the start of
    /// the stream, whether or not it had a buffer for it, makes dropped frames visible as
    /// gaps. Without it the core numbers the buffer (see the module documentation).
    pub(crate) fn set_sequence(&mut self, sequence: u32) {
        self.frame.sequence = Some(sequence);
    }

    /// Gives the buffer its timestamp, in `CLOCK_MONOTONIC` nanoseconds
    /// (`vb2_buffer.timestamp`), e.g. when its frame ended. Without it the core stamps the
    /// buffer with the time it is completed.
    pub(crate) fn set_timestamp_ns(&mut self, timestamp_ns: u64) {
        self.frame.timestamp_ns = Some(timestamp_ns);
    }

    fn give_back(mut self, outcome: Outcome) {
        self.given_back = true;
        Queue::give_back(
            &self.queue,
            self.index,
            self.generation,
            outcome,
            self.frame,
            self.mem.take(),
        );
    }

    /// Completes the buffer with `bytesused` bytes of data.
    pub(crate) fn done(self, bytesused: u32) {
        self.give_back(Outcome::Done {
            bytesused,
            last: false,
        });
    }

    /// Completes the buffer as the last of the stream (`V4L2_BUF_FLAG_LAST`): once userspace
    /// dequeued it, DQBUF fails with `EPIPE` and poll reports readable, until STREAMOFF.
    pub(crate) fn done_last(self, bytesused: u32) {
        self.give_back(Outcome::Done {
            bytesused,
            last: true,
        });
    }

    /// Completes the buffer with an error (`V4L2_BUF_FLAG_ERROR`).
    pub(crate) fn fail(self) {
        self.give_back(Outcome::Error);
    }

    /// Gives the buffer back as queued: only while [`QueueOps::start_streaming`] fails.
    pub(crate) fn requeue(self) {
        self.give_back(Outcome::Requeue);
    }
}

impl<O: QueueOps> Drop for ActiveBuffer<O> {
    fn drop(&mut self) {
        if !self.given_back {
            // Dropping a token the queue took back is a fine way to give it back.
            if !self.taken_back() {
                pr_warn!(
                    "rvb2: {}: buffer {} dropped by the driver\n",
                    O::NAME,
                    self.index
                );
            }
            Queue::give_back(
                &self.queue,
                self.index,
                self.generation,
                Outcome::Error,
                FrameInfo::default(),
                self.mem.take(),
            );
        }
    }
}
