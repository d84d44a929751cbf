// SPDX-License-Identifier: GPL-2.0

//! The V4L2 buffer ioctls on top of the queue core, like videobuf2-v4l2.c.
//!
//! Each function checks a UAPI argument the way videobuf2 does (buffer type, memory type,
//! index, flags), calls the queue core, and fills the argument back with every reserved
//! field cleared. Queue policy (states, ordering, ownership) stays in [`crate::queue`].

use crate::{
    bindings,
    fence::{
        Fence,
        OutFence, //
    },
    queue::{
        BufState,
        BufferInfo,
        Direction,
        FileId,
        MemArg,
        Memory,
        QbufFences,
        Queue,
        QueueOps,
        MAX_BUFFERS, //
    },
};
use kernel::{
    fs::file::{
        flags::{
            O_ACCMODE,
            O_CLOEXEC, //
        },
        FileDescriptorReservation, //
    },
    prelude::*,
    sync::Arc,
};

/// `V4L2_BUF_FLAG_IN_FENCE` (rvb2's UAPI, `include/uapi/linux/rvb2-fences.h`): `fence_fd` is a
/// sync_file the buffer must wait for before it reaches the driver.
const BUF_FLAG_IN_FENCE: u32 = bindings::V4L2_BUF_FLAG_IN_FENCE;
/// `V4L2_BUF_FLAG_OUT_FENCE`: QBUF returns, in `fence_fd`, a sync_file that signals when the
/// buffer is done.
const BUF_FLAG_OUT_FENCE: u32 = bindings::V4L2_BUF_FLAG_OUT_FENCE;
/// `V4L2_BUF_CAP_SUPPORTS_FENCES`, in the capabilities of REQBUFS and CREATE_BUFS.
const BUF_CAP_SUPPORTS_FENCES: u32 = bindings::V4L2_BUF_CAP_SUPPORTS_FENCES;

/// The capabilities REQBUFS and CREATE_BUFS report.
const BUF_CAPS: u32 = bindings::V4L2_BUF_CAP_SUPPORTS_MMAP
    | bindings::V4L2_BUF_CAP_SUPPORTS_USERPTR
    | bindings::V4L2_BUF_CAP_SUPPORTS_DMABUF
    | bindings::V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS
    | bindings::V4L2_BUF_CAP_SUPPORTS_MAX_NUM_BUFFERS
    | bindings::V4L2_BUF_CAP_SUPPORTS_REMOVE_BUFS
    | bindings::V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS
    | BUF_CAP_SUPPORTS_FENCES;

/// The buffer type of a queue's buffers (single-planar video: the memory of a buffer is one
/// plane in the core).
fn buf_type<Q: QueueOps>(q: &Queue<Q>) -> u32 {
    match q.direction() {
        Direction::Capture => bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE,
        Direction::Output => bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT,
    }
}

/// The timestamp flags of a queue's buffers. A capture buffer's timestamp is the
/// `CLOCK_MONOTONIC` time its frame ended; an output buffer's is copied from its QBUF (as
/// memory-to-memory drivers report it: the capture buffer made from it carries it on).
fn timestamp_flags<Q: QueueOps>(q: &Queue<Q>) -> u32 {
    match q.direction() {
        Direction::Capture => {
            bindings::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | bindings::V4L2_BUF_FLAG_TSTAMP_SRC_EOF
        }
        Direction::Output => bindings::V4L2_BUF_FLAG_TIMESTAMP_COPY,
    }
}

/// Whether the ioctl comes from a 32-bit process on a 64-bit kernel. The V4L2 core's 32-bit
/// conversion of `struct v4l2_buffer` does not carry `reserved2`, where the fence fd travels:
/// fences are not offered there (no capability, fence flags refused).
fn compat() -> bool {
    // SAFETY: May be called from any syscall context.
    unsafe { bindings::rvb2_in_compat_syscall() }
}

/// The buffer capabilities for the calling process.
fn buf_caps() -> u32 {
    if compat() {
        BUF_CAPS & !BUF_CAP_SUPPORTS_FENCES
    } else {
        BUF_CAPS
    }
}

/// Maps a `V4L2_MEMORY_*` value to the memory types the core handles.
fn memory(memory: u32) -> Result<Memory> {
    match memory {
        bindings::v4l2_memory_V4L2_MEMORY_MMAP => Ok(Memory::Mmap),
        bindings::v4l2_memory_V4L2_MEMORY_USERPTR => Ok(Memory::Userptr),
        bindings::v4l2_memory_V4L2_MEMORY_DMABUF => Ok(Memory::Dmabuf),
        _ => Err(EINVAL),
    }
}

/// Checks the buffer type of an argument against the queue's.
fn check_type<Q: QueueOps>(q: &Queue<Q>, kind: u32) -> Result {
    if kind == buf_type(q) {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

/// `VIDIOC_REQBUFS`.
pub(crate) fn reqbufs<Q: QueueOps>(
    q: &Queue<Q>,
    file: FileId,
    r: &mut bindings::v4l2_requestbuffers,
) -> Result {
    r.capabilities = buf_caps();
    r.flags = 0;
    r.reserved = [0; 3];
    check_type(q, r.type_)?;
    let mem = memory(r.memory)?;
    r.count = q.reqbufs(file, mem, r.count)?;
    Ok(())
}

/// `VIDIOC_CREATE_BUFS`.
pub(crate) fn create_bufs<Q: QueueOps>(
    q: &Queue<Q>,
    file: FileId,
    c: &mut bindings::v4l2_create_buffers,
) -> Result {
    c.capabilities = buf_caps();
    c.flags = 0;
    c.max_num_buffers = MAX_BUFFERS as u32;
    c.reserved = [0; 5];
    c.index = q.num_buffers();
    check_type(q, c.format.type_)?;
    let mem = memory(c.memory)?;
    if c.count == 0 {
        // Only checks the memory type. Otherwise the core answers another file than the
        // queue's owner with EBUSY before it checks the memory type against the buffers', as
        // videobuf2 does.
        return q.verify_memory(mem);
    }
    // SAFETY: The format's type is the queue's, a single-planar video one, whose member of the
    // union is `pix`; every bit pattern is a valid `v4l2_pix_format`.
    let size = unsafe { c.format.fmt.pix.sizeimage };
    if size == 0 {
        return Err(EINVAL);
    }
    let (first, count) = q.create_bufs(file, mem, c.count, size)?;
    c.index = first;
    c.count = count;
    Ok(())
}

/// Checks a `struct v4l2_buffer` passed to QBUF or PREPARE_BUF; returns the memory it brings.
fn check_buffer<Q: QueueOps>(q: &Queue<Q>, b: &bindings::v4l2_buffer) -> Result<MemArg> {
    check_type(q, b.type_)?;
    if b.flags & bindings::V4L2_BUF_FLAG_REQUEST_FD != 0 {
        // The queue does not support requests.
        return Err(Error::from_errno(-(kernel::bindings::EBADR as i32)));
    }
    Ok(match memory(b.memory)? {
        Memory::Mmap => MemArg::Mmap,
        Memory::Userptr => MemArg::Userptr {
            // SAFETY: For `V4L2_MEMORY_USERPTR` the member of the union is `userptr`; every
            // bit pattern is a valid `c_ulong`.
            addr: unsafe { b.m.userptr },
            length: b.length,
        },
        Memory::Dmabuf => MemArg::Dmabuf {
            // SAFETY: For `V4L2_MEMORY_DMABUF` the member of the union is `fd`; every bit
            // pattern is a valid `c_int`.
            fd: unsafe { b.m.fd },
            length: b.length,
        },
    })
}

/// Fills a `struct v4l2_buffer` from what the core reports.
fn fill<Q: QueueOps>(q: &Queue<Q>, b: &mut bindings::v4l2_buffer, info: &BufferInfo) {
    let mut flags = timestamp_flags(q);
    match info.state {
        BufState::Queued | BufState::Active => flags |= bindings::V4L2_BUF_FLAG_QUEUED,
        BufState::Error => flags |= bindings::V4L2_BUF_FLAG_ERROR | bindings::V4L2_BUF_FLAG_DONE,
        BufState::Done => flags |= bindings::V4L2_BUF_FLAG_DONE,
        BufState::Dequeued => {
            if info.prepared {
                flags |= bindings::V4L2_BUF_FLAG_PREPARED;
            }
        }
    }
    if info.mapped {
        flags |= bindings::V4L2_BUF_FLAG_MAPPED;
    }
    if info.last {
        flags |= bindings::V4L2_BUF_FLAG_LAST;
    }
    if info.in_fence_pending {
        flags |= BUF_FLAG_IN_FENCE;
    }
    if info.out_fence_pending {
        flags |= BUF_FLAG_OUT_FENCE;
    }
    *b = bindings::v4l2_buffer {
        index: info.index,
        type_: buf_type(q),
        bytesused: info.bytesused,
        flags,
        field: super::types::FIELD_NONE,
        // As `__fill_v4l2_buffer()`: the stored fields whatever the state. The core clears
        // them at QBUF and PREPARE_BUF and keeps them after DQBUF and STREAMOFF.
        sequence: info.sequence,
        memory: match info.memory {
            Memory::Mmap => bindings::v4l2_memory_V4L2_MEMORY_MMAP,
            Memory::Userptr => bindings::v4l2_memory_V4L2_MEMORY_USERPTR,
            Memory::Dmabuf => bindings::v4l2_memory_V4L2_MEMORY_DMABUF,
        },
        m: match info.memory {
            Memory::Mmap => bindings::v4l2_buffer__bindgen_ty_1 {
                offset: info.offset,
            },
            Memory::Userptr => bindings::v4l2_buffer__bindgen_ty_1 {
                userptr: info.userptr,
            },
            Memory::Dmabuf => bindings::v4l2_buffer__bindgen_ty_1 { fd: info.fd },
        },
        length: info.length,
        // `fence_fd`: never an fd here (only QBUF returns one, see `qbuf()`), -1 for a buffer
        // queued with a fence, 0 otherwise (what applications that zero `reserved2` expect).
        reserved2: if info.fenced { -1i32 as u32 } else { 0 },
        ..Default::default()
    };
    let ns = info.timestamp_ns;
    b.timestamp.tv_sec = (ns / 1_000_000_000) as kernel::ffi::c_longlong;
    b.timestamp.tv_usec = ((ns % 1_000_000_000) / 1_000) as kernel::ffi::c_longlong;
}

/// `VIDIOC_QUERYBUF`.
pub(crate) fn querybuf<Q: QueueOps>(q: &Queue<Q>, b: &mut bindings::v4l2_buffer) -> Result {
    check_type(q, b.type_)?;
    let info = q.querybuf(b.index)?;
    fill(q, b, &info);
    Ok(())
}

/// Reads `fence_fd` (`reserved2`).
fn fence_fd(b: &bindings::v4l2_buffer) -> i32 {
    b.reserved2 as i32
}

/// Checks `fence_fd` of a buffer without `V4L2_BUF_FLAG_IN_FENCE`: 0 or -1.
fn check_no_fence_fd(b: &bindings::v4l2_buffer) -> Result {
    match fence_fd(b) {
        0 | -1 => Ok(()),
        _ => Err(EINVAL),
    }
}

/// `VIDIOC_PREPARE_BUF`. Fences belong to QBUF: PREPARE_BUF takes no fence flag.
pub(crate) fn prepare_buf<Q: QueueOps>(
    q: &Queue<Q>,
    file: FileId,
    b: &mut bindings::v4l2_buffer,
) -> Result {
    let mem = check_buffer(q, b)?;
    if b.flags & (BUF_FLAG_IN_FENCE | BUF_FLAG_OUT_FENCE) != 0 {
        return Err(EINVAL);
    }
    check_no_fence_fd(b)?;
    let info = q.prepare_buf(file, b.index, mem)?;
    fill(q, b, &info);
    Ok(())
}

/// `VIDIOC_QBUF`, with the in-fence and the out-fence as separate arguments of the core.
///
/// The out-fence's fd is reserved before the core queues the buffer and installed only once
/// everything succeeded, as the very last step: a failing QBUF leaves no fd and no fence.
pub(crate) fn qbuf<Q: QueueOps>(
    q: &Arc<Queue<Q>>,
    file: FileId,
    b: &mut bindings::v4l2_buffer,
) -> Result {
    let mem = check_buffer(q, b)?;
    let flags = b.flags;
    if flags & (BUF_FLAG_IN_FENCE | BUF_FLAG_OUT_FENCE) != 0 && compat() {
        return Err(EINVAL);
    }
    let in_fence = if flags & BUF_FLAG_IN_FENCE != 0 {
        // Any fd that is not a sync_file (negative, closed, another kind of file) is EINVAL.
        Some(Fence::from_sync_file(fence_fd(b))?)
    } else {
        check_no_fence_fd(b)?;
        None
    };
    let reservation = if flags & BUF_FLAG_OUT_FENCE != 0 {
        Some(FileDescriptorReservation::get_unused_fd_flags(O_CLOEXEC)?)
    } else {
        None
    };
    let fences = QbufFences {
        in_fence,
        publish: reservation
            .as_ref()
            .map(|_| |out: &OutFence| out.sync_file()),
    };
    let (info, sync_file) = Queue::qbuf(q, file, b.index, mem, fences)?;
    fill(q, b, &info);
    if let (Some(reservation), Some(sync_file)) = (reservation, sync_file) {
        b.reserved2 = reservation.reserved_fd();
        reservation.fd_install(sync_file);
    }
    Ok(())
}

/// `VIDIOC_DQBUF`.
pub(crate) fn dqbuf<Q: QueueOps>(
    q: &Queue<Q>,
    file: FileId,
    nonblocking: bool,
    b: &mut bindings::v4l2_buffer,
) -> Result {
    check_type(q, b.type_)?;
    let info = q.dqbuf(file, nonblocking)?;
    fill(q, b, &info);
    // DONE describes a buffer waiting to be dequeued, which this one no longer is.
    b.flags &= !bindings::V4L2_BUF_FLAG_DONE;
    Ok(())
}

/// `VIDIOC_STREAMON`.
pub(crate) fn streamon<Q: QueueOps>(q: &Arc<Queue<Q>>, file: FileId, kind: u32) -> Result {
    check_type(q, kind)?;
    Queue::streamon(q, file)
}

/// `VIDIOC_STREAMOFF`.
pub(crate) fn streamoff<Q: QueueOps>(q: &Queue<Q>, file: FileId, kind: u32) -> Result {
    check_type(q, kind)?;
    q.streamoff(file)
}

/// `VIDIOC_REMOVE_BUFS`.
pub(crate) fn remove_bufs<Q: QueueOps>(
    q: &Queue<Q>,
    file: FileId,
    d: &mut bindings::v4l2_remove_buffers,
) -> Result {
    check_type(q, d.type_)?;
    d.reserved = [0; 13];
    q.remove_bufs(file, d.index, d.count)
}

/// `VIDIOC_EXPBUF`: exports an MMAP buffer as a dma-buf fd (`vb2_core_expbuf()`).
pub(crate) fn expbuf<Q: QueueOps>(
    q: &Queue<Q>,
    file: FileId,
    e: &mut bindings::v4l2_exportbuffer,
) -> Result {
    check_type(q, e.type_)?;
    let accmode = O_ACCMODE;
    if e.flags & !(O_CLOEXEC | accmode) != 0 || e.plane != 0 {
        return Err(EINVAL);
    }
    let dmabuf = q.expbuf(file, e.index, e.flags & accmode)?;
    e.fd = dmabuf.into_fd(e.flags & !accmode)?;
    e.reserved = [0; 11];
    Ok(())
}
