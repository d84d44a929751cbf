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
//! [`Queue::enqueue_ready`] hands buffers over from its head. STREAMOFF (and freeing, and the
//! owner's close) takes every buffer back, whatever its state.
//!
//! # Locking
//!
//! Two locks, always taken in this order:
//!
//! - `lock`, a mutex, serialises the queue's operations (the ioctls, `mmap()`, `release()`)
//!   and protects the buffers' memory and the streaming state. Driver callbacks
//!   ([`QueueOps`]) run under it, except [`ActiveBuffer`] completion.
//! - `state`, a spinlock taken with interrupts disabled, protects the buffer states, the
//!   queued and done lists: the driver completes buffers from any context (a timer, a work
//!   item) with only this lock.
//!
//! Driver callbacks are never called with `state` held, so a driver may take its own locks in
//! them and complete buffers while holding those.

mod list;

use crate::mem::VmallocBuf;
use crate::sync::{new_irq_spinlock, IrqSpinLock};
use kernel::{
    fs::File,
    new_mutex, new_poll_condvar,
    prelude::*,
    sync::{
        poll::{PollCondVar, PollTable},
        Arc, Mutex,
    },
};
use list::IndexList;

/// The most buffers a queue holds.
pub(crate) const MAX_BUFFERS: usize = 32;

/// `EPOLLIN | EPOLLRDNORM`.
pub(crate) const POLL_IN: u32 = 0x0001 | 0x0040;
/// `EPOLLERR`.
pub(crate) const POLL_ERR: u32 = 0x0008;

/// The stride between the `mmap()` offsets of consecutive buffers (16 MiB).
const OFFSET_SHIFT: u32 = 24;

/// `ENOBUFS`, which the kernel crate does not name.
fn enobufs() -> Error {
    Error::from_errno(-(kernel::bindings::ENOBUFS as i32))
}

/// Identifies an open file of the device, for queue ownership (the address of its file
/// handle).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FileId(pub(crate) usize);

/// The kinds of buffer memory the core handles.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Memory {
    /// Memory allocated by the queue and mapped by userspace (`V4L2_MEMORY_MMAP`).
    Mmap,
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
    /// Bytes of data the driver produced (0 before the buffer is done).
    pub(crate) bytesused: u32,
    /// The buffer's state.
    pub(crate) state: BufState,
    /// Whether the buffer was prepared (PREPARE_BUF) and not yet queued.
    pub(crate) prepared: bool,
    /// Whether userspace has the buffer mapped.
    pub(crate) mapped: bool,
    /// The sequence number the core gave the buffer when it was completed.
    pub(crate) sequence: u32,
    /// The `CLOCK_MONOTONIC` time the buffer was completed, in nanoseconds.
    pub(crate) timestamp_ns: u64,
}

/// A driver's side of a queue, like `struct vb2_ops`.
///
/// The core calls these with its operation lock held (so never concurrently), and never with
/// its state spinlock held.
pub(crate) trait QueueOps: Send + Sync + Sized + 'static {
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
}

/// A buffer and its memory, owned by the queue.
struct Buffer {
    mem: Arc<VmallocBuf>,
    length: u32,
}

/// The per-buffer state kept under the state spinlock.
#[derive(Clone, Copy)]
struct Slot {
    state: BufState,
    prepared: bool,
    /// Bumped whenever the driver is given the buffer or it is taken back, so that a stale
    /// [`ActiveBuffer`] cannot complete a later use of the buffer.
    generation: u32,
    bytesused: u32,
    sequence: u32,
    timestamp_ns: u64,
}

impl Slot {
    const IDLE: Slot = Slot {
        state: BufState::Dequeued,
        prepared: false,
        generation: 0,
        bytesused: 0,
        sequence: 0,
        timestamp_ns: 0,
    };
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
}

/// State protected by the state spinlock.
struct State {
    slots: [Slot; MAX_BUFFERS],
    /// Buffers from QBUF to DQBUF, in QBUF order.
    queued: IndexList,
    /// Completed buffers, in completion order.
    done: IndexList,
    streaming: bool,
    /// No buffer was queued since streaming was set up (poll reports an error then).
    waiting_for_buffers: bool,
    owned_by_driver: u32,
    sequence: u32,
}

/// The outcome of a buffer the driver gives back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done(u32),
    Error,
    Requeue,
}

/// A buffer queue.
#[pin_data]
pub(crate) struct Queue<O: QueueOps> {
    #[pin]
    lock: Mutex<Inner>,
    #[pin]
    state: IrqSpinLock<State>,
    #[pin]
    done_wq: PollCondVar,
    #[pin]
    ops: O,
}

/// Returns `Err(EBUSY)` unless `owner` may use the queue.
fn check_owner(inner: &Inner, owner: FileId) -> Result {
    match inner.owner {
        Some(o) if o != owner => Err(EBUSY),
        _ => Ok(()),
    }
}

impl<O: QueueOps> Queue<O> {
    /// Creates a queue for the driver side `ops`.
    pub(crate) fn new(ops: impl PinInit<O, Error>) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                lock <- new_mutex!(Inner {
                    bufs: [const { None }; MAX_BUFFERS],
                    num_buffers: 0,
                    memory: None,
                    owner: None,
                    streaming: false,
                    start_streaming_called: false,
                    waiting_in_dqbuf: false,
                }),
                state <- new_irq_spinlock!(
                    State {
                        slots: [Slot::IDLE; MAX_BUFFERS],
                        queued: IndexList::new(),
                        done: IndexList::new(),
                        streaming: false,
                        waiting_for_buffers: true,
                        owned_by_driver: 0,
                        sequence: 0,
                    },
                    c"rvb2_queue_state"
                ),
                done_wq <- new_poll_condvar!("rvb2_queue_done"),
                ops <- ops,
            }? Error),
            GFP_KERNEL,
        )
    }

    /// The driver side of the queue.
    pub(crate) fn ops(&self) -> &O {
        &self.ops
    }

    /// Whether buffers are allocated (formats cannot change then, as with `vb2_is_busy()`).
    pub(crate) fn is_busy(&self) -> bool {
        self.lock.lock().num_buffers > 0
    }

    /// Frees buffers `start..start + count` (all must exist, be dequeued and unmapped).
    fn free_range(inner: &mut Inner, st: &mut State, start: usize, count: usize) {
        for i in start..start + count {
            if inner.bufs[i].take().is_some() {
                inner.num_buffers -= 1;
            }
            st.slots[i] = Slot::IDLE;
        }
        if inner.num_buffers == 0 {
            inner.memory = None;
        }
    }

    /// Allocates up to `count` buffers of `size` bytes in the first free range of slots.
    ///
    /// Returns the first index and how many were allocated.
    fn alloc(inner: &mut Inner, count: u32, size: u32) -> Result<(u32, u32)> {
        let count = count as usize;
        let first = (0..=MAX_BUFFERS.saturating_sub(count))
            .find(|&s| inner.bufs[s..s + count].iter().all(Option::is_none))
            .ok_or_else(enobufs)?;
        let mut allocated = 0;
        for slot in &mut inner.bufs[first..first + count] {
            match VmallocBuf::new(size as usize) {
                Ok(mem) => {
                    *slot = Some(Buffer { mem, length: size });
                    allocated += 1;
                }
                Err(_) => break,
            }
        }
        inner.num_buffers += allocated;
        Ok((first as u32, allocated))
    }

    /// Whether any allocated buffer is mapped by userspace.
    fn any_mapped(inner: &Inner) -> bool {
        inner.bufs.iter().flatten().any(|b| b.mem.mapped() > 0)
    }

    /// `VIDIOC_REQBUFS`: frees all buffers (`count == 0`) or replaces them with `count` new
    /// ones. Returns the number allocated.
    pub(crate) fn reqbufs(&self, owner: FileId, memory: Memory, count: u32) -> Result<u32> {
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        if inner.streaming {
            return Err(EBUSY);
        }
        if inner.waiting_in_dqbuf && count > 0 {
            return Err(EBUSY);
        }
        if inner.num_buffers > 0 || count == 0 {
            if Self::any_mapped(&inner) {
                return Err(EBUSY);
            }
            self.cancel(&mut inner);
            let mut st = self.state.lock();
            Self::free_range(&mut inner, &mut st, 0, MAX_BUFFERS);
            drop(st);
            if count == 0 {
                inner.owner = None;
                return Ok(0);
            }
        }
        let min = O::MIN_QUEUED_BUFFERS + 1;
        let count = count.max(min).min(MAX_BUFFERS as u32);
        let size = self.ops.buffer_size();
        let (_, allocated) = Self::alloc(&mut inner, count, size)?;
        if allocated < min {
            let mut st = self.state.lock();
            Self::free_range(&mut inner, &mut st, 0, MAX_BUFFERS);
            return Err(ENOMEM);
        }
        inner.memory = Some(memory);
        inner.owner = Some(owner);
        self.state.lock().waiting_for_buffers = true;
        Ok(allocated)
    }

    /// The number of allocated buffers (reported by `VIDIOC_CREATE_BUFS` as the next index).
    pub(crate) fn num_buffers(&self) -> u32 {
        self.lock.lock().num_buffers
    }

    /// Checks that buffers of `memory` can be created now (`vb2_verify_memory_type()`).
    pub(crate) fn verify_memory(&self, memory: Memory) -> Result {
        let inner = self.lock.lock();
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
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        if inner.memory.is_some_and(|m| m != memory) {
            return Err(EINVAL);
        }
        if inner.num_buffers as usize >= MAX_BUFFERS {
            return Err(enobufs());
        }
        if size < self.ops.buffer_size() {
            return Err(EINVAL);
        }
        let count = count.min(MAX_BUFFERS as u32 - inner.num_buffers);
        let (first, allocated) = Self::alloc(&mut inner, count, size)?;
        if allocated == 0 {
            return Err(ENOMEM);
        }
        inner.memory = Some(memory);
        inner.owner = Some(owner);
        Ok((first, allocated))
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
            bytesused: slot.bytesused,
            state: slot.state,
            prepared: slot.prepared,
            mapped: buf.mem.mapped() > 0,
            sequence: slot.sequence,
            timestamp_ns: slot.timestamp_ns,
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

    /// `VIDIOC_PREPARE_BUF`.
    pub(crate) fn prepare_buf(
        &self,
        owner: FileId,
        index: u32,
        memory: Memory,
    ) -> Result<BufferInfo> {
        let inner = self.lock.lock();
        check_owner(&inner, owner)?;
        let index = Self::check_buffer(&inner, index, memory)?;
        let slot = self.state.lock().slots[index];
        if slot.state != BufState::Dequeued || slot.prepared {
            return Err(EINVAL);
        }
        let length = inner.bufs[index].as_ref().map_or(0, |b| b.length);
        self.ops.buf_prepare(length)?;
        let mut st = self.state.lock();
        st.slots[index].prepared = true;
        Self::info(&inner, &st, index)
    }

    /// `VIDIOC_QBUF`.
    pub(crate) fn qbuf(
        this: &Arc<Self>,
        owner: FileId,
        index: u32,
        memory: Memory,
    ) -> Result<BufferInfo> {
        let mut inner = this.lock.lock();
        check_owner(&inner, owner)?;
        let index = Self::check_buffer(&inner, index, memory)?;
        let slot = this.state.lock().slots[index];
        if slot.state != BufState::Dequeued {
            return Err(EINVAL);
        }
        if !slot.prepared {
            let length = inner.bufs[index].as_ref().map_or(0, |b| b.length);
            this.ops.buf_prepare(length)?;
        }

        let mut st = this.state.lock();
        st.queued.push_back(index);
        st.slots[index].state = BufState::Queued;
        st.slots[index].prepared = false;
        st.slots[index].bytesused = 0;
        st.waiting_for_buffers = false;
        let queued = st.queued.len() as u32;
        drop(st);

        if inner.start_streaming_called {
            Self::enqueue_ready(this, &inner);
        } else if inner.streaming && queued >= O::MIN_QUEUED_BUFFERS {
            if let Err(e) = Self::start_streaming(this, &mut inner) {
                // The buffer was not queued after all.
                let mut st = this.state.lock();
                st.queued.remove(index);
                st.slots[index].state = BufState::Dequeued;
                st.slots[index].prepared = slot.prepared;
                return Err(e);
            }
        }
        let st = this.state.lock();
        Self::info(&inner, &st, index)
    }

    /// Hands the buffers at the head of the queued list to the driver, in order.
    fn enqueue_ready(this: &Arc<Self>, inner: &Inner) {
        let mut ready = IndexList::new();
        let mut gens = [0u32; MAX_BUFFERS];
        {
            let mut st = this.state.lock();
            let queued = st.queued.clone();
            for i in queued.iter() {
                let slot = &mut st.slots[i];
                if slot.state != BufState::Queued {
                    continue;
                }
                slot.state = BufState::Active;
                slot.generation = slot.generation.wrapping_add(1);
                gens[i] = slot.generation;
                ready.push_back(i);
                st.owned_by_driver += 1;
            }
        }
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
                given_back: false,
            });
        }
    }

    /// Gives the queued buffers to the driver and starts it.
    fn start_streaming(this: &Arc<Self>, inner: &mut Inner) -> Result {
        Self::enqueue_ready(this, inner);
        inner.start_streaming_called = true;
        let count = this.state.lock().owned_by_driver;
        let Err(e) = this.ops.start_streaming(count) else {
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
            pr_warn!("rvb2: start_streaming failed without returning {leaked} buffer(s)\n");
        }
        Err(e)
    }

    /// Stops the driver and takes every buffer back to the dequeued state.
    fn cancel(&self, inner: &mut Inner) {
        if inner.start_streaming_called {
            self.ops.stop_streaming();
        }
        inner.streaming = false;
        inner.start_streaming_called = false;
        let mut st = self.state.lock();
        if st.owned_by_driver > 0 {
            pr_warn!(
                "rvb2: stop_streaming left {} buffer(s) with the driver\n",
                st.owned_by_driver
            );
        }
        st.owned_by_driver = 0;
        for slot in st.slots.iter_mut() {
            if slot.state != BufState::Dequeued {
                slot.generation = slot.generation.wrapping_add(1);
            }
            slot.state = BufState::Dequeued;
            slot.prepared = false;
        }
        st.queued.clear();
        st.done.clear();
        st.streaming = false;
        st.waiting_for_buffers = true;
        drop(st);
        self.done_wq.notify_all();
    }

    /// `VIDIOC_STREAMON`.
    pub(crate) fn streamon(this: &Arc<Self>, owner: FileId) -> Result {
        let mut inner = this.lock.lock();
        check_owner(&inner, owner)?;
        if inner.streaming {
            return Ok(());
        }
        if inner.num_buffers == 0 || inner.num_buffers < O::MIN_QUEUED_BUFFERS {
            return Err(EINVAL);
        }
        let queued = {
            let mut st = this.state.lock();
            st.sequence = 0;
            st.queued.len() as u32
        };
        if queued >= O::MIN_QUEUED_BUFFERS {
            Self::start_streaming(this, &mut inner)?;
        }
        inner.streaming = true;
        this.state.lock().streaming = true;
        Ok(())
    }

    /// `VIDIOC_STREAMOFF`: stops streaming and returns every buffer to userspace.
    pub(crate) fn streamoff(&self, owner: FileId) -> Result {
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        self.cancel(&mut inner);
        Ok(())
    }

    /// `VIDIOC_DQBUF`: returns the oldest completed buffer, waiting for one unless
    /// `nonblocking`.
    pub(crate) fn dqbuf(&self, owner: FileId, nonblocking: bool) -> Result<BufferInfo> {
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        loop {
            let mut st = self.state.lock();
            if !st.streaming {
                return Err(EINVAL);
            }
            if let Some(index) = st.done.front() {
                st.done.remove(index);
                st.queued.remove(index);
                // What DQBUF reports is the buffer as it was completed.
                let info = Self::info(&inner, &st, index);
                let slot = &mut st.slots[index];
                slot.state = BufState::Dequeued;
                slot.prepared = false;
                return info;
            }
            if nonblocking {
                return Err(EAGAIN);
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
        }
    }

    /// `VIDIOC_REMOVE_BUFS`: frees buffers `start..start + count`.
    pub(crate) fn remove_bufs(&self, owner: FileId, start: u32, count: u32) -> Result {
        if count == 0 {
            return Ok(());
        }
        let mut inner = self.lock.lock();
        check_owner(&inner, owner)?;
        let (start, count) = (start as usize, count as usize);
        if count > inner.num_buffers as usize || start > MAX_BUFFERS - count {
            return Err(EINVAL);
        }
        let mut st = self.state.lock();
        for i in start..start + count {
            let Some(buf) = inner.bufs[i].as_ref() else {
                return Err(EINVAL);
            };
            if st.slots[i].state != BufState::Dequeued || buf.mem.mapped() > 0 {
                return Err(EBUSY);
            }
        }
        Self::free_range(&mut inner, &mut st, start, count);
        Ok(())
    }

    /// The owner's file was closed: stops streaming and frees the buffers (their memory lives
    /// on while userspace still maps it).
    pub(crate) fn release(&self, file: FileId) {
        let mut inner = self.lock.lock();
        if inner.owner != Some(file) {
            return;
        }
        self.cancel(&mut inner);
        let mut st = self.state.lock();
        Self::free_range(&mut inner, &mut st, 0, MAX_BUFFERS);
        drop(st);
        inner.owner = None;
    }

    /// The `mmap()` file operation: maps the buffer whose offset is the VMA's page offset.
    pub(crate) fn mmap(&self, pgoff: usize, vma: &kernel::mm::virt::VmaNew) -> Result {
        let shift = OFFSET_SHIFT as usize - kernel::page::PAGE_SHIFT;
        let index = pgoff >> shift;
        if index << shift != pgoff {
            return Err(EINVAL);
        }
        let inner = self.lock.lock();
        if inner.memory != Some(Memory::Mmap) {
            return Err(EINVAL);
        }
        let buf = inner
            .bufs
            .get(index)
            .and_then(Option::as_ref)
            .ok_or(EINVAL)?;
        VmallocBuf::mmap(&buf.mem, vma)
    }

    /// The `poll()` file operation, for the events in `requested`.
    pub(crate) fn poll(&self, file: &File, table: &PollTable<'_>, requested: u32) -> u32 {
        table.register_wait(file, &self.done_wq);
        if requested & POLL_IN == 0 {
            return 0;
        }
        let st = self.state.lock();
        if !st.streaming || st.waiting_for_buffers {
            return POLL_ERR;
        }
        if st.done.is_empty() {
            0
        } else {
            POLL_IN
        }
    }

    /// A buffer comes back from the driver.
    fn give_back(&self, index: usize, generation: u32, outcome: Outcome) {
        let mut st = self.state.lock();
        let slot = st.slots[index];
        if slot.state != BufState::Active || slot.generation != generation {
            // Taken back already (STREAMOFF reclaimed it); nothing to do.
            return;
        }
        st.owned_by_driver -= 1;
        let (state, bytesused) = match outcome {
            Outcome::Requeue => {
                st.slots[index].state = BufState::Queued;
                return;
            }
            Outcome::Done(bytesused) => (BufState::Done, bytesused),
            Outcome::Error => (BufState::Error, 0),
        };
        let sequence = st.sequence;
        st.sequence = st.sequence.wrapping_add(1);
        let slot = &mut st.slots[index];
        slot.state = state;
        slot.bytesused = bytesused;
        slot.sequence = sequence;
        slot.timestamp_ns = crate::time::monotonic_ns();
        st.done.push_back(index);
        drop(st);
        self.done_wq.notify_all();
    }
}

/// A buffer the driver owns, from [`QueueOps::buf_queue`] until it gives it back.
///
/// Dropping it without giving it back completes it with an error.
pub(crate) struct ActiveBuffer<O: QueueOps> {
    queue: Arc<Queue<O>>,
    index: usize,
    generation: u32,
    mem: Arc<VmallocBuf>,
    length: u32,
    given_back: bool,
}

impl<O: QueueOps> ActiveBuffer<O> {
    /// The buffer's index.
    pub(crate) fn index(&self) -> u32 {
        self.index as u32
    }

    /// The buffer's memory, to fill.
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: The driver owns the buffer through this unique token, so there is no other
        // reference to its contents in the kernel.
        let all = unsafe { self.mem.as_mut_slice() };
        let len = (self.length as usize).min(all.len());
        &mut all[..len]
    }

    fn give_back(mut self, outcome: Outcome) {
        self.given_back = true;
        self.queue.give_back(self.index, self.generation, outcome);
    }

    /// Completes the buffer with `bytesused` bytes of data.
    pub(crate) fn done(self, bytesused: u32) {
        self.give_back(Outcome::Done(bytesused));
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
            pr_warn!("rvb2: buffer {} dropped by the driver\n", self.index);
            self.queue
                .give_back(self.index, self.generation, Outcome::Error);
        }
    }
}
