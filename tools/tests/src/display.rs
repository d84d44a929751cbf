//! Capture to display: rvivid's buffers scanned out by vkms, zero-copy, with fences both ways
//! (`samples/vkms-pipeline.c`), every frame checked by what vkms composed.
//!
//! Each test loads vkms (`modprobe vkms`) and unloads it at the end. The sample checks frame by
//! frame, with vkms's CRCs (`-C`, debugfs `crtc-0/crc`): for every vblank a frame was on screen,
//! vkms's CRC of the composed frame must equal the CRC the sample computes from the capture
//! buffer it showed (read through the buffer's mapping once it is dequeued, before it is queued
//! again), and the buffer must carry its sequence number as rvivid's frame counter. (The sample's
//! `-w`, the same check through vkms's writeback connector, is not used here: vkms's writeback
//! loses jobs under load, see Documentation/display.rst.) The test then requires its summary:
//! every frame shown and checked, none failed, no error (a sequence that does not increase, a
//! vblank whose CRC differs, i.e. another frame or a torn one, a DQBUF that would have waited on
//! the fenced path). Sequence gaps (frames rvivid dropped for want of a released buffer) are
//! allowed and logged: they are not repeats.
//!
//! The implicit-synchronization bridge is tested alone too (`expbuf_write_fence_*` for MMAP
//! buffers, `dmabuf_write_fence_*` for imported dma-bufs): a buffer queued with an out-fence
//! carries it as the write fence of its dma-bufs' reservation object (an imported dma-buf's is
//! its exporter's), so `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` returns a fence that waits for the
//! frame, and with the display (`vkms_pipeline_implicit_crc`, `vkms_pipeline_import_implicit_crc`:
//! no `IN_FENCE_FD`, KMS finds the fence in the reservation object). The other direction, a
//! consumer's read fence keeping rvivid from writing the buffer, is tested on both kinds of
//! memory with the same cases (`dmabuf_read_fence_gates_capture`,
//! `expbuf_read_fence_gates_capture`: [`read_fence_cases`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Ctx, TestResult};
use crate::syncfile::{self, status_str};
use crate::v4l2::*;

/// The display tests.
pub static DISPLAY_TESTS: &[crate::harness::Test] = &[
    (
        "expbuf_write_fence_export_sync_file",
        write_fence_export_sync_file,
    ),
    (
        "dmabuf_write_fence_export_sync_file",
        imported_write_fence_export_sync_file,
    ),
    (
        "dmabuf_read_fence_gates_capture",
        imported_read_fence_gates_capture,
    ),
    (
        "expbuf_read_fence_gates_capture",
        exported_read_fence_gates_capture,
    ),
    ("vkms_pipeline_fenced_crc", pipeline_fenced),
    ("vkms_pipeline_import_fenced_crc", pipeline_import_fenced),
    ("vkms_pipeline_implicit_crc", pipeline_implicit),
    (
        "vkms_pipeline_import_implicit_crc",
        pipeline_import_implicit,
    ),
    ("vkms_pipeline_classic_crc", pipeline_classic),
    ("vkms_pipeline_failed_buffer", pipeline_failed_buffer),
    ("vkms_pipeline_failed_commit", pipeline_failed_commit),
    ("vkms_pipeline_close_mid_stream", pipeline_close_mid_stream),
    (
        "vkms_pipeline_streamoff_mid_stream",
        pipeline_streamoff_mid_stream,
    ),
];

const FLAG_OUT_FENCE: u32 = 0x0040_0000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// `struct dma_buf_export_sync_file` (`<linux/dma-buf.h>`).
#[repr(C)]
struct DmaBufExportSyncFile {
    flags: u32,
    fd: i32,
}

/// `DMA_BUF_SYNC_READ`: the fences a reader must wait for (the writers').
const DMA_BUF_SYNC_READ: u32 = 1;
const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: u32 = iowr::<DmaBufExportSyncFile>(b'b', 2);

/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` for reading: a sync_file of the dma-buf's write fences.
fn export_sync_file(dmabuf: RawFd) -> Result<OwnedFd, String> {
    let mut a = DmaBufExportSyncFile {
        flags: DMA_BUF_SYNC_READ,
        fd: -1,
    };
    syncfile::ioctl(dmabuf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &mut a)
        .map_err(|e| format!("DMA_BUF_IOCTL_EXPORT_SYNC_FILE: {e}"))?;
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(a.fd) })
}

/// The status of sync_file `fd`.
fn status(fd: &OwnedFd, what: &str) -> Result<i32, String> {
    syncfile::status(fd.as_raw_fd()).map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))
}

/// Requires sync_file `fd` to have status `want` now.
fn require_status(fd: &OwnedFd, what: &str, want: i32) -> TestResult {
    let s = status(fd, what)?;
    if s != want {
        return Err(format!(
            "{what}: {}, want {}",
            status_str(s),
            status_str(want)
        ));
    }
    Ok(())
}

/// rvivid with two buffers, MMAP or DMABUF (buffer `i` importing `dmabufs[i]`); gives them
/// back, and clears the error injection, when dropped.
struct Rig {
    dev: Device,
    /// The dma-bufs the buffers import (none: MMAP buffers).
    dmabufs: Vec<RawFd>,
}

impl Rig {
    fn new(ctx: &Ctx) -> Result<Self, String> {
        let node = ctx.find_rvivid()?;
        let dev = Device::open(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
        dev.reqbufs(2)
            .map_err(|e| format!("VIDIOC_REQBUFS(2): {e}"))?;
        Ok(Rig {
            dev,
            dmabufs: Vec::new(),
        })
    }

    /// `n` MMAP buffers (at least three for the read-fence cases: rvivid's minimum); the device
    /// is opened `O_NONBLOCK`.
    fn mmap_nonblock(ctx: &Ctx, n: u32) -> Result<Self, String> {
        let node = ctx.find_rvivid()?;
        let dev =
            Device::open_nonblock(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
        dev.reqbufs(n)
            .map_err(|e| format!("VIDIOC_REQBUFS({n}): {e}"))?;
        Ok(Rig {
            dev,
            dmabufs: Vec::new(),
        })
    }

    /// DMABUF buffers (at least three: rvivid's minimum), buffer `i` importing `dmabufs[i]`
    /// (each at least a frame long); the device is opened `O_NONBLOCK`.
    fn importing(ctx: &Ctx, dmabufs: &[RawFd]) -> Result<Self, String> {
        let node = ctx.find_rvivid()?;
        let dev =
            Device::open_nonblock(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
        let n = dmabufs.len() as u32;
        dev.reqbufs_with(n, V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_DMABUF)
            .map_err(|e| format!("VIDIOC_REQBUFS({n}) DMABUF: {e}"))?;
        Ok(Rig {
            dev,
            dmabufs: dmabufs.to_vec(),
        })
    }

    fn memory(&self) -> u32 {
        if self.dmabufs.is_empty() {
            V4L2_MEMORY_MMAP
        } else {
            V4L2_MEMORY_DMABUF
        }
    }

    /// `VIDIOC_DQBUF` once `poll()` reports a buffer (within 5 s).
    fn dqbuf(&self) -> Result<v4l2_buffer, String> {
        let rev = self
            .dev
            .poll(libc::POLLIN, TIMEOUT.as_millis() as i32)
            .map_err(|e| format!("poll: {e}"))?;
        if rev & libc::POLLIN == 0 {
            return Err(format!(
                "no buffer to dequeue within 5 s (revents {rev:#x})"
            ));
        }
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, self.memory(), 0);
        self.dev
            .ioctl(VIDIOC_DQBUF, &mut b)
            .map_err(|e| format!("VIDIOC_DQBUF: {e}"))?;
        Ok(b)
    }

    fn expbuf(&self, index: u32) -> Result<OwnedFd, String> {
        let mut e: v4l2_exportbuffer = zeroed();
        e.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
        e.index = index;
        e.flags = (libc::O_CLOEXEC | libc::O_RDWR) as u32;
        self.dev
            .ioctl(VIDIOC_EXPBUF, &mut e)
            .map_err(|e| format!("VIDIOC_EXPBUF {index}: {e}"))?;
        // SAFETY: EXPBUF returned a new fd, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(e.fd) })
    }

    /// Queues `index`, with an out-fence (returned) if `out`.
    fn qbuf(&self, index: u32, out: bool) -> Result<Option<OwnedFd>, String> {
        self.qbuf_fenced(index, None, out)
    }

    /// Queues `index` with the in-fence `in_fence` (if any), and an out-fence (returned) if
    /// `out`.
    fn qbuf_fenced(
        &self,
        index: u32,
        in_fence: Option<&OwnedFd>,
        out: bool,
    ) -> Result<Option<OwnedFd>, String> {
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, self.memory(), index);
        if let Some(&fd) = self.dmabufs.get(index as usize) {
            // Length 0: the whole dma-buf.
            b.m.fd = fd;
        }
        if let Some(fence) = in_fence {
            b.flags |= FLAG_IN_FENCE;
            b.reserved2 = fence.as_raw_fd() as u32;
        }
        if out {
            b.flags |= FLAG_OUT_FENCE;
        }
        self.dev
            .ioctl(VIDIOC_QBUF, &mut b)
            .map_err(|e| format!("VIDIOC_QBUF {index} (flags {:#x}): {e}", b.flags))?;
        // SAFETY: with OUT_FENCE, QBUF installed a new fd that nothing else owns.
        Ok(out.then(|| unsafe { OwnedFd::from_raw_fd(b.reserved2 as i32) }))
    }

    /// `VIDIOC_QUERYBUF` of `index`: its flags.
    fn query_flags(&self, index: u32, when: &str) -> Result<u32, String> {
        let mut q = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, self.memory(), index);
        self.dev
            .ioctl(VIDIOC_QUERYBUF, &mut q)
            .map_err(|e| format!("VIDIOC_QUERYBUF {index} {when}: {e}"))?;
        Ok(q.flags)
    }

    /// Queues buffers 1 and 2 with no fence flag (behind buffer 0, queued by the caller) and
    /// starts streaming.
    fn queue_rest_and_stream(&self) -> TestResult {
        self.qbuf(1, false)?;
        self.qbuf(2, false)?;
        self.streamon()
    }

    fn streamon(&self) -> TestResult {
        self.dev
            .streamon()
            .map_err(|e| format!("VIDIOC_STREAMON: {e}"))
    }

    fn streamoff(&self) -> TestResult {
        self.dev
            .streamoff()
            .map_err(|e| format!("VIDIOC_STREAMOFF: {e}"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.dev.streamoff();
        let _ = self.dev.s_ctrl(RVIVID_CID_FAIL_NEXT_BUFFERS, 0);
        let _ = self
            .dev
            .reqbufs_with(0, V4L2_BUF_TYPE_VIDEO_CAPTURE, self.memory());
    }
}

/// The implicit-synchronization bridge on its own: after `VIDIOC_QBUF` with an out-fence, the
/// sync_file `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` exports from the buffer's dma-buf (made before or
/// after the QBUF) is pending until the frame is done, then has the out-fence's status: 1 for
/// a frame, -EIO for a buffer the driver failed (error injection), -ECANCELED for one
/// STREAMOFF took back; and no fence is left pending in the dma-buf afterwards.
fn write_fence_export_sync_file(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx)?;
    let before = rig.expbuf(0)?;
    require_status(
        &export_sync_file(before.as_raw_fd())?,
        "sync_file of a buffer never queued",
        1,
    )?;

    // A frame.
    let out = rig.qbuf(0, true)?.ok_or("no out-fence")?;
    let after = rig.expbuf(0)?;
    let implicit = export_sync_file(before.as_raw_fd())?;
    let implicit_after = export_sync_file(after.as_raw_fd())?;
    require_status(
        &implicit,
        "sync_file of the queued buffer (dma-buf made before)",
        0,
    )?;
    require_status(
        &implicit_after,
        "sync_file of the queued buffer (dma-buf made after)",
        0,
    )?;
    rig.qbuf(1, false)?;
    rig.streamon()?;
    let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence")?;
    if s != 1 {
        return Err(format!("out-fence of a frame: {}", status_str(s)));
    }
    require_status(&implicit, "sync_file once the frame is done", 1)?;
    require_status(
        &implicit_after,
        "sync_file (dma-buf made after) once done",
        1,
    )?;
    rig.streamoff()?;

    failed_and_taken_back(&rig, before.as_raw_fd())?;
    require_status(
        &export_sync_file(after.as_raw_fd())?,
        "a new sync_file after STREAMOFF",
        1,
    )
}

/// The write fence of buffer 0's dma-buf `dmabuf` for a buffer the driver fails (error
/// injection: -EIO) and for one STREAMOFF takes back before streaming (-ECANCELED), as
/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` exports it; buffer 1 is the other buffer of `rig`.
fn failed_and_taken_back(rig: &Rig, dmabuf: RawFd) -> TestResult {
    // A failed buffer: the driver fails the next buffer it completes, buffer 0.
    rig.dev
        .s_ctrl(RVIVID_CID_FAIL_NEXT_BUFFERS, 1)
        .map_err(|e| format!("VIDIOC_S_CTRL Fail Next Buffers: {e}"))?;
    let out = rig.qbuf(0, true)?.ok_or("no out-fence")?;
    let implicit = export_sync_file(dmabuf)?;
    require_status(&implicit, "sync_file of the buffer to fail", 0)?;
    rig.qbuf(1, false)?;
    rig.streamon()?;
    let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence")?;
    if s != -libc::EIO {
        return Err(format!(
            "out-fence of a failed buffer: {}, want -EIO",
            status_str(s)
        ));
    }
    require_status(&implicit, "sync_file of the failed buffer", -libc::EIO)?;
    let got = rig.dqbuf()?;
    if got.index != 0 || got.flags & V4L2_BUF_FLAG_ERROR == 0 {
        return Err(format!(
            "DQBUF: buffer {} flags {:#x}, want buffer 0 with V4L2_BUF_FLAG_ERROR",
            got.index, got.flags
        ));
    }
    rig.streamoff()?;
    rig.dev
        .s_ctrl(RVIVID_CID_FAIL_NEXT_BUFFERS, 0)
        .map_err(|e| format!("VIDIOC_S_CTRL Fail Next Buffers: {e}"))?;

    // Taken back: STREAMOFF (not streaming) cancels it at once; nothing stays pending.
    let _out = rig.qbuf(0, true)?.ok_or("no out-fence")?;
    let implicit = export_sync_file(dmabuf)?;
    require_status(&implicit, "sync_file of a queued buffer", 0)?;
    rig.streamoff()?;
    require_status(&implicit, "sync_file after STREAMOFF", -libc::ECANCELED)?;
    Ok(())
}

/// `poll()` of dma-buf `fd` for `POLLIN` without waiting: whether its write fences (those a
/// reader waits for) have all signalled.
fn dmabuf_readable(fd: RawFd, what: &str) -> Result<bool, String> {
    let rev = syncfile::poll_fd(fd, libc::POLLIN, 0).map_err(|e| format!("poll({what}): {e}"))?;
    Ok(rev & libc::POLLIN != 0)
}

/// Requires dma-buf `fd` to be readable (`want`) or not, now.
fn require_readable(fd: RawFd, what: &str, want: bool) -> TestResult {
    let got = dmabuf_readable(fd, what)?;
    if got != want {
        return Err(format!(
            "poll({what}): {}, want {}",
            if got { "POLLIN" } else { "not readable" },
            if want { "POLLIN" } else { "not readable" }
        ));
    }
    Ok(())
}

/// The bridge on imported buffers (`V4L2_MEMORY_DMABUF`), for a dma-buf of the system heap
/// and a udmabuf: after `VIDIOC_QBUF` with an out-fence, the out-fence is the write fence of
/// the imported dma-buf's own reservation object (the exporter's), so the sync_file
/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` exports from it is pending, and `poll()` on the dma-buf does
/// not report it readable, until the frame is done; then the sync_file has the out-fence's
/// status: 1 for a frame, -EIO for a buffer the driver failed, -ECANCELED for one STREAMOFF
/// took back; no fence is left pending in the dma-buf, and nothing of rvivid's (reference,
/// attachment) once the buffers are freed.
fn imported_write_fence_export_sync_file(ctx: &mut Ctx) -> TestResult {
    let size = {
        let node = ctx.find_rvivid()?;
        let dev = Device::open(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
        let f = dev.g_fmt().map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
        f.pix().sizeimage as usize
    };
    let len = size.next_multiple_of(page_size());
    let (_memfd0, udmabuf0) = crate::dmabuf::udmabuf_alloc(len)?;
    let (_memfd1, udmabuf1) = crate::dmabuf::udmabuf_alloc(len)?;
    let kinds = [
        (
            "system heap",
            crate::dmabuf::heap_alloc(len)?,
            crate::dmabuf::heap_alloc(len)?,
        ),
        ("udmabuf", udmabuf0, udmabuf1),
    ];
    for (kind, a, b) in &kinds {
        imported_write_fence_case(ctx, a, b).map_err(|e| format!("{kind} dma-bufs: {e}"))?;
        crate::dmabuf::expect_released(&format!("{kind} dma-buf 0 after the case"), a, 1)?;
        crate::dmabuf::expect_released(&format!("{kind} dma-buf 1 after the case"), b, 1)?;
    }
    Ok(())
}

/// [`imported_write_fence_export_sync_file`] with buffer 0 importing `a`, buffer 1 `b`.
fn imported_write_fence_case(ctx: &Ctx, a: &OwnedFd, b: &OwnedFd) -> TestResult {
    let a = a.as_raw_fd();
    let rig = Rig::importing(ctx, &[a, b.as_raw_fd()])?;
    require_status(
        &export_sync_file(a)?,
        "sync_file of a dma-buf never queued",
        1,
    )?;
    require_readable(a, "the dma-buf never queued", true)?;

    // A frame.
    let out = rig.qbuf(0, true)?.ok_or("no out-fence")?;
    let implicit = export_sync_file(a)?;
    require_status(&implicit, "sync_file of the queued buffer's dma-buf", 0)?;
    require_status(&out, "out-fence before STREAMON", 0)?;
    require_readable(a, "the queued buffer's dma-buf", false)?;
    rig.qbuf(1, false)?;
    rig.streamon()?;
    let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence")?;
    if s != 1 {
        return Err(format!("out-fence of a frame: {}", status_str(s)));
    }
    require_status(&implicit, "sync_file once the frame is done", 1)?;
    require_readable(a, "the dma-buf once the frame is done", true)?;
    let got = rig.dqbuf()?;
    if got.index != 0 || got.flags & V4L2_BUF_FLAG_ERROR != 0 || got.bytesused == 0 {
        return Err(format!(
            "DQBUF: buffer {} flags {:#x} bytesused {}, want buffer 0 with a frame",
            got.index, got.flags, got.bytesused
        ));
    }
    rig.streamoff()?;

    failed_and_taken_back(&rig, a)?;
    require_status(&export_sync_file(a)?, "a new sync_file after STREAMOFF", 1)?;
    require_readable(a, "the dma-buf after STREAMOFF", true)
}

/// `struct dma_buf_import_sync_file` (`<linux/dma-buf.h>`).
#[repr(C)]
struct DmaBufImportSyncFile {
    flags: u32,
    fd: i32,
}

const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: u32 = iow::<DmaBufImportSyncFile>(b'b', 3);

/// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` with `DMA_BUF_SYNC_READ`: adds the fence of sync_file
/// `fence` to the dma-buf's reservation object as a read fence (a consumer reading the
/// buffer until it signals).
fn import_read_fence(dmabuf: RawFd, fence: &OwnedFd) -> TestResult {
    let mut a = DmaBufImportSyncFile {
        flags: DMA_BUF_SYNC_READ,
        fd: fence.as_raw_fd(),
    };
    syncfile::ioctl(dmabuf, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &mut a)
        .map_err(|e| format!("DMA_BUF_IOCTL_IMPORT_SYNC_FILE (read): {e}"))
}

/// `DMA_BUF_SYNC_WRITE`: the fences a writer must wait for (every reader's and writer's).
const DMA_BUF_SYNC_WRITE: u32 = 2;

/// The status of the sync_file a writer of the dma-buf would wait for
/// (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` with `DMA_BUF_SYNC_WRITE`).
fn writer_status(dmabuf: RawFd) -> Result<i32, String> {
    let mut a = DmaBufExportSyncFile {
        flags: DMA_BUF_SYNC_WRITE,
        fd: -1,
    };
    syncfile::ioctl(dmabuf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &mut a)
        .map_err(|e| format!("DMA_BUF_IOCTL_EXPORT_SYNC_FILE (write): {e}"))?;
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(a.fd) };
    status(&fd, "the writer's sync_file")
}

/// `V4L2_BUF_FLAG_IN_FENCE`.
const FLAG_IN_FENCE: u32 = crate::fences::V4L2_BUF_FLAG_IN_FENCE;

/// The state of capture buffer 0, whose implicit fences are pending, observed: QBUF
/// returned (the caller checks the fences are still pending), QUERYBUF says it is queued and
/// waits for its in-fence (`V4L2_BUF_FLAG_IN_FENCE`, not `DONE`), a non-blocking DQBUF finds
/// nothing (once `streaming`), its out-fence (if any) is pending, and its memory still holds
/// `fill`: the driver, which only writes buffers the queue handed to it, has not been given it.
fn require_held(
    rig: &Rig,
    map: &Mapping,
    fill: u8,
    out: Option<&OwnedFd>,
    streaming: bool,
    when: &str,
) -> TestResult {
    let flags = rig.query_flags(0, when)?;
    if flags & V4L2_BUF_FLAG_QUEUED == 0
        || flags & FLAG_IN_FENCE == 0
        || flags & (V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR) != 0
    {
        return Err(format!(
            "QUERYBUF 0 {when}: flags {flags:#x}, want QUEUED | IN_FENCE (waiting for the read fence)"
        ));
    }
    let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, rig.memory(), 0);
    match rig.dev.ioctl(VIDIOC_DQBUF, &mut b) {
        Err(e) if e.0 == libc::EAGAIN && streaming => {}
        // Not streaming: DQBUF is EINVAL whatever the buffers hold.
        Err(e) if e.0 == libc::EINVAL && !streaming => {}
        Err(e) => return Err(format!("non-blocking DQBUF {when}: {e}")),
        Ok(()) => {
            return Err(format!(
                "non-blocking DQBUF {when} returned buffer {} (flags {:#x})",
                b.index, b.flags
            ))
        }
    }
    if let Some(out) = out {
        require_status(out, &format!("out-fence {when}"), 0)?;
    }
    if let Some(i) = map.bytes().iter().position(|&x| x != fill) {
        return Err(format!(
            "the dma-buf {when}: byte {i} is {:#x}, want {fill:#x}: written while a reader held it",
            map.bytes()[i]
        ));
    }
    Ok(())
}

/// Read fences on an imported dma-buf are an implicit in-fence: a consumer's read fence
/// (a sw_sync fence added with `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`) keeps rvivid from writing the
/// buffer, without `VIDIOC_QBUF` waiting for it: the cases of [`read_fence_cases`], on the
/// first of three imported dma-bufs of the system heap; none is held afterwards.
fn imported_read_fence_gates_capture(ctx: &mut Ctx) -> TestResult {
    let fmt = current_format(ctx)?;
    let len = (fmt.sizeimage as usize).next_multiple_of(page_size());
    let a = crate::dmabuf::heap_alloc(len)?;
    let b = crate::dmabuf::heap_alloc(len)?;
    let c = crate::dmabuf::heap_alloc(len)?;
    let mut map = Mapping::shared(&a, 0, len).map_err(|e| format!("mmap of dma-buf 0: {e}"))?;
    {
        // Three buffers: after buffer 0 fails, 1 and 2 are enough for rvivid to start.
        let rig = Rig::importing(ctx, &[a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd()])?;
        read_fence_cases(&rig, a.as_raw_fd(), &mut map, &fmt)?;
    }
    // Our fd and our mapping.
    crate::dmabuf::expect_released("dma-buf 0 after the test", &a, 2)?;
    drop(map);
    crate::dmabuf::expect_released("dma-buf 1 after the test", &b, 1)?;
    crate::dmabuf::expect_released("dma-buf 2 after the test", &c, 1)
}

/// Read fences on an exported MMAP buffer are an implicit in-fence too, exactly as on an
/// imported dma-buf (`dmabuf_read_fence_gates_capture`): buffer 0 of three MMAP buffers is
/// exported (`VIDIOC_EXPBUF`), and the consumer's read fences are added to that dma-buf.
///
/// - Exported, with no fence added by anyone: the buffer streams as before (QBUF with no fence
///   flag, then with an out-fence; QUERYBUF without `IN_FENCE`; the frame arrives);
/// - the cases of [`read_fence_cases`], the consumer's view of the buffer being the exported
///   dma-buf (mapped through it);
/// - the exported fd and its mapping closed: the buffer streams as before (with an out-fence,
///   then with no fence flag), although its reservation object still holds the (signalled,
///   one failed) fences of the cases.
fn exported_read_fence_gates_capture(ctx: &mut Ctx) -> TestResult {
    let fmt = current_format(ctx)?;
    let len = (fmt.sizeimage as usize).next_multiple_of(page_size());
    let rig = Rig::mmap_nonblock(ctx, 3)?;
    let a = rig.expbuf(0)?;
    let mut map = Mapping::shared(&a, 0, len).map_err(|e| format!("mmap of the dma-buf: {e}"))?;
    streams_unfenced(
        &rig,
        &map,
        &fmt,
        false,
        "exported, no fence added, no fence flag",
    )?;
    streams_unfenced(&rig, &map, &fmt, true, "exported, no fence added")?;
    read_fence_cases(&rig, a.as_raw_fd(), &mut map, &fmt)?;
    crate::dmabuf::expect_released("the exported dma-buf after the cases", &a, 2)?;
    drop(map);
    drop(a);
    // What the buffer holds is checked through the V4L2 mapping now.
    let mut q = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, 0);
    rig.dev
        .ioctl(VIDIOC_QUERYBUF, &mut q)
        .map_err(|e| format!("VIDIOC_QUERYBUF 0: {e}"))?;
    let map =
        Mapping::shared(&rig.dev, q.offset(), len).map_err(|e| format!("mmap of buffer 0: {e}"))?;
    streams_unfenced(&rig, &map, &fmt, true, "the exported fd closed")?;
    streams_unfenced(
        &rig,
        &map,
        &fmt,
        false,
        "the exported fd closed, no fence flag",
    )
}

/// The capture format rvivid has now.
fn current_format(ctx: &Ctx) -> Result<crate::frame::FrameFormat, String> {
    let node = ctx.find_rvivid()?;
    let dev = Device::open(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
    let f = dev.g_fmt().map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
    Ok(crate::frame::FrameFormat::from_pix(f.pix()))
}

/// Once `out` (buffer 0's out-fence, if it has one) signals, buffer 0 is dequeued with a
/// frame (colour bars in `map`, its memory), then buffer 1; then STREAMOFF.
fn frame_arrives(
    rig: &Rig,
    map: &Mapping,
    fmt: &crate::frame::FrameFormat,
    out: Option<&OwnedFd>,
    what: &str,
) -> TestResult {
    if let Some(out) = out {
        let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence")?;
        if s != 1 {
            return Err(format!(
                "{what}: out-fence {}, want signalled",
                status_str(s)
            ));
        }
    }
    let got = rig.dqbuf()?;
    if got.index != 0 || got.flags & V4L2_BUF_FLAG_ERROR != 0 {
        return Err(format!(
            "{what}: DQBUF buffer {} flags {:#x}, want buffer 0 with a frame",
            got.index, got.flags
        ));
    }
    crate::frame::check_color_bars(&map.bytes()[..got.bytesused as usize], fmt)
        .map_err(|e| format!("{what}: buffer 0: {e}"))?;
    let got = rig.dqbuf()?;
    if got.index != 1 || got.flags & V4L2_BUF_FLAG_ERROR != 0 {
        return Err(format!(
            "{what}: DQBUF buffer {} flags {:#x}, want buffer 1 with a frame",
            got.index, got.flags
        ));
    }
    rig.streamoff()
}

/// Buffer 0 (memory `map`), whose reservation object holds no pending fence of others,
/// streams as any buffer: QBUF (with an out-fence if `out`, else with no fence flag at all),
/// QUERYBUF says it is queued and waits for no in-fence (no `IN_FENCE`), and once streaming
/// the frame arrives.
fn streams_unfenced(
    rig: &Rig,
    map: &Mapping,
    fmt: &crate::frame::FrameFormat,
    out: bool,
    what: &str,
) -> TestResult {
    let fence = rig.qbuf(0, out)?;
    if out && fence.is_none() {
        return Err(format!("{what}: QBUF gave no out-fence"));
    }
    let flags = rig.query_flags(0, what)?;
    if flags & V4L2_BUF_FLAG_QUEUED == 0 || flags & FLAG_IN_FENCE != 0 {
        return Err(format!(
            "QUERYBUF 0 {what}: flags {flags:#x}, want QUEUED without IN_FENCE (nothing to wait for)"
        ));
    }
    rig.queue_rest_and_stream()?;
    frame_arrives(rig, map, fmt, fence.as_ref(), what)
}

/// The read-fence cases, on buffer 0 of `rig` (three capture buffers, the device
/// `O_NONBLOCK`), whose memory a consumer sees as the dma-buf `dmabuf`, mapped by `map`:
///
/// - QBUF (with an out-fence) returns while the read fence is pending; after STREAMON the
///   buffer stays queued, waiting (QUERYBUF `IN_FENCE`), nothing can be dequeued, its
///   out-fence is pending, and the dma-buf keeps what we wrote in it; once the read fence
///   signals, the frame arrives (colour bars, out-fence 1);
/// - an explicit in-fence and a read fence: the buffer waits for both (the explicit one
///   signalled first changes nothing), then the frame arrives;
/// - a read fence that signals an error (its timeline closed: -ENOENT) fails the buffer as a
///   failed in-fence does: `V4L2_BUF_FLAG_ERROR`, out-fence -EIO; the buffer after it gets
///   its frame;
/// - an explicit in-fence that failed before the QBUF, with a read fence pending: the buffer
///   fails at once (`V4L2_BUF_FLAG_ERROR`, out-fence -EIO), unwritten, the reader untouched;
/// - a read fence that never signals, on a buffer queued with no fence flag at all: the
///   fence deadline bounds it (`V4L2_BUF_FLAG_ERROR` within the bound), the buffer after it
///   gets its frame.
fn read_fence_cases(
    rig: &Rig,
    dmabuf: RawFd,
    map: &mut Mapping,
    fmt: &crate::frame::FrameFormat,
) -> TestResult {
    // A read fence alone.
    map.bytes_mut().fill(0x5a);
    let readers = syncfile::Timeline::open()?;
    let read = readers.create_fence(1)?;
    import_read_fence(dmabuf, &read)?;
    if writer_status(dmabuf)? != 0 {
        return Err("the read fence is not in the dma-buf's reservation object".into());
    }
    let out = rig.qbuf(0, true)?.ok_or("no out-fence")?;
    require_status(&read, "the read fence once QBUF returned", 0)?;
    require_held(rig, map, 0x5a, Some(&out), false, "after QBUF")?;
    rig.queue_rest_and_stream()?;
    require_held(rig, map, 0x5a, Some(&out), true, "after STREAMON")?;
    require_status(
        &export_sync_file(dmabuf)?,
        "the dma-buf's write fence (the out-fence)",
        0,
    )?;
    readers.inc(1)?;
    frame_arrives(rig, map, fmt, Some(&out), "once the read fence signalled")?;

    // An explicit in-fence and a read fence: both are waited for.
    map.bytes_mut().fill(0x3c);
    let explicit = syncfile::Timeline::open()?;
    let in_fence = explicit.create_fence(1)?;
    let read = readers.create_fence(2)?;
    import_read_fence(dmabuf, &read)?;
    let out = rig
        .qbuf_fenced(0, Some(&in_fence), true)?
        .ok_or("no out-fence")?;
    rig.queue_rest_and_stream()?;
    require_held(rig, map, 0x3c, Some(&out), true, "with both fences pending")?;
    explicit.inc(1)?;
    require_status(&in_fence, "the explicit in-fence", 1)?;
    require_held(
        rig,
        map,
        0x3c,
        Some(&out),
        true,
        "with the read fence pending",
    )?;
    readers.inc(1)?;
    frame_arrives(rig, map, fmt, Some(&out), "once both signalled")?;

    // A read fence that fails.
    map.bytes_mut().fill(0x11);
    let failing = syncfile::Timeline::open()?;
    let read = failing.create_fence(1)?;
    import_read_fence(dmabuf, &read)?;
    let out = rig.qbuf(0, true)?.ok_or("no out-fence")?;
    rig.queue_rest_and_stream()?;
    require_held(
        rig,
        map,
        0x11,
        Some(&out),
        true,
        "before the read fence fails",
    )?;
    failing.close();
    require_status(&read, "the read fence of a closed timeline", -libc::ENOENT)?;
    let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence")?;
    if s != -libc::EIO {
        return Err(format!(
            "out-fence behind a failed read fence: {}, want -EIO",
            status_str(s)
        ));
    }
    failed_then_next(rig, map, 0x11, "its read fence failed")?;
    rig.streamoff()?;

    // An explicit in-fence that failed before the QBUF, with a read fence pending: the
    // buffer fails at once, unwritten, without waiting for the reader (the merge of the
    // two keeps the failed fence's error, which dma_fence_unwrap_merge() alone drops).
    map.bytes_mut().fill(0x22);
    let failed = syncfile::Timeline::open()?;
    let in_fence = failed.create_fence(1)?;
    failed.close();
    require_status(
        &in_fence,
        "the in-fence of a closed timeline",
        -libc::ENOENT,
    )?;
    let read = readers.create_fence(3)?;
    import_read_fence(dmabuf, &read)?;
    let out = rig
        .qbuf_fenced(0, Some(&in_fence), true)?
        .ok_or("no out-fence")?;
    rig.queue_rest_and_stream()?;
    let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence")?;
    if s != -libc::EIO {
        return Err(format!(
            "out-fence behind a failed in-fence and a pending read fence: {}, want -EIO",
            status_str(s)
        ));
    }
    require_status(&read, "the read fence, still held by its reader", 0)?;
    failed_then_next(rig, map, 0x22, "its in-fence failed")?;
    readers.inc(1)?;
    rig.streamoff()?;

    // A read fence that never signals, on a buffer queued with no fence flag.
    const BOUND: u32 = 300;
    let bound = crate::fences::Bound::set(BOUND)?;
    map.bytes_mut().fill(0x77);
    let stuck = syncfile::Timeline::open()?;
    let read = stuck.create_fence(1)?;
    import_read_fence(dmabuf, &read)?;
    rig.qbuf(0, false)?;
    require_held(rig, map, 0x77, None, false, "queued without fence flags")?;
    rig.queue_rest_and_stream()?;
    let limit = crate::fences::expiry_limit(BOUND);
    let rev = rig
        .dev
        .poll(libc::POLLIN, limit.as_millis() as i32)
        .map_err(|e| format!("poll: {e}"))?;
    if rev & libc::POLLIN == 0 {
        return Err(format!(
            "no buffer within {} ms of a {BOUND} ms bound (revents {rev:#x})",
            limit.as_millis()
        ));
    }
    require_status(&read, "the read fence nobody signalled", 0)?;
    failed_then_next(rig, map, 0x77, "failed by the deadline")?;
    rig.streamoff()?;
    drop(bound);
    stuck.inc(1)?;
    Ok(())
}

/// Buffer 0 is dequeued failed (`V4L2_BUF_FLAG_ERROR`, `why`) and unwritten (its memory,
/// `map`, still all `fill`), then buffer 1 with a frame.
fn failed_then_next(rig: &Rig, map: &Mapping, fill: u8, why: &str) -> TestResult {
    let got = rig.dqbuf()?;
    if got.index != 0 || got.flags & V4L2_BUF_FLAG_ERROR == 0 {
        return Err(format!(
            "DQBUF: buffer {} flags {:#x}, want buffer 0 with V4L2_BUF_FLAG_ERROR ({why})",
            got.index, got.flags
        ));
    }
    if let Some(i) = map.bytes().iter().position(|&x| x != fill) {
        return Err(format!("buffer 0 ({why}) was written (byte {i})"));
    }
    let got = rig.dqbuf()?;
    if got.index != 1 || got.flags & V4L2_BUF_FLAG_ERROR != 0 {
        return Err(format!(
            "DQBUF: buffer {} flags {:#x}, want buffer 1 with a frame",
            got.index, got.flags
        ));
    }
    Ok(())
}

/// Unloads vkms when dropped.
pub struct Vkms<'c>(&'c Ctx);

impl<'c> Vkms<'c> {
    /// Loads vkms (with its writeback connector).
    pub fn load(ctx: &'c Ctx) -> Result<Self, String> {
        ctx.run_ok("modprobe", &["vkms", "enable_writeback=1"])?;
        Ok(Vkms(ctx))
    }
}

impl Drop for Vkms<'_> {
    fn drop(&mut self) {
        let _ = self.0.run("modprobe", &["-r", "vkms"]);
    }
}

/// build/samples/vkms-pipeline (built by `make check`).
fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/samples/vkms-pipeline")
}

/// The number just before `label` in `line` ("300 frames shown" for " frames shown").
fn field(line: &str, label: &str) -> Option<u64> {
    let end = line.find(label)?;
    let start = line[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    line[start..end].parse().ok()
}

/// The sample's summary, as the tests read it.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub shown: u64,
    pub checked: u64,
    pub failed: u64,
    pub gaps: u64,
    /// Commits that failed (`-F`), and buffers of failed commits shown later.
    pub commits_failed: u64,
    pub returned: u64,
    pub errors: u64,
}

/// Parses the sample's last line.
pub fn parse_summary(line: &str) -> Option<Summary> {
    Some(Summary {
        shown: field(line, " frames shown")?,
        checked: field(line, " checked")?,
        failed: field(line, " failed")?,
        gaps: field(line, " gaps")?,
        commits_failed: field(line, " commits failed")?,
        returned: field(line, " returned")?,
        errors: field(line, " errors")?,
    })
}

/// Runs the sample with `args` (after the video node) against vkms; saves its output as
/// `log`; returns its summary once it exited 0.
fn run_pipeline(ctx: &Ctx, log: &str, args: &[&str]) -> Result<Summary, String> {
    let node = ctx.find_rvivid()?;
    let _vkms = Vkms::load(ctx)?;
    let node = node.to_string_lossy();
    let mut all = vec!["-d", &*node];
    all.extend_from_slice(args);
    let out = ctx.run(&sample().to_string_lossy(), &all)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ctx.save_log(
        log,
        format!(
            "vkms-pipeline {}\n{stdout}\n--- stderr ---\n{stderr}\n--- {} ---\n",
            all.join(" "),
            out.status
        ),
    )?;
    let last = stdout.lines().last().unwrap_or("");
    if !out.status.success() {
        return Err(format!(
            "vkms-pipeline {} ({}): {} {}",
            all.join(" "),
            out.status,
            stderr.trim(),
            last
        ));
    }
    parse_summary(last).ok_or_else(|| format!("vkms-pipeline: no summary in {last:?}"))
}

/// Requires every one of `frames` frames shown and checked, none failed, no commit failed, no
/// error.
fn require_all_checked(s: &Summary, frames: u64) -> TestResult {
    if s.shown != frames
        || s.checked != frames
        || s.failed != 0
        || s.commits_failed != 0
        || s.errors != 0
    {
        return Err(format!(
            "{s:?}: want {frames} frames shown and checked, none failed, no error"
        ));
    }
    Ok(())
}

/// Runs the pipeline with `args` (logged to `log`); every one of its `frames` frames must have
/// been shown and checked, none failed, no error.
fn checked_pipeline(ctx: &Ctx, log: &str, args: &[&str], frames: u64) -> TestResult {
    require_all_checked(&run_pipeline(ctx, log, args)?, frames)
}

/// 300 frames with fences both ways: capture out-fence as the plane's IN_FENCE_FD, the CRTC's
/// out-fence as the in-fence of the buffer it released; no wait between capture and display.
fn pipeline_fenced(ctx: &mut Ctx) -> TestResult {
    checked_pipeline(
        ctx,
        "vkms-pipeline-fenced.txt",
        &["-m", "fenced", "-n", "300", "-b", "3", "-C", "-v"],
        300,
    )
}

/// The other way round: vkms's dumb buffers, exported as dma-bufs (PRIME), are rvivid's
/// capture buffers (`V4L2_MEMORY_DMABUF`), with the same fences both ways and the same checks.
fn pipeline_import_fenced(ctx: &mut Ctx) -> TestResult {
    checked_pipeline(
        ctx,
        "vkms-pipeline-import-fenced.txt",
        &[
            "-M", "import", "-m", "fenced", "-n", "300", "-b", "3", "-C", "-v",
        ],
        300,
    )
}

/// The implicit-synchronization bridge with a display: no IN_FENCE_FD on the plane; KMS
/// (`drm_gem_plane_helper_prepare_fb()`) waits for the write fence it finds in the imported
/// dma-buf's reservation object, which is the buffer's out-fence. Every vblank is CRC-checked.
/// rvivid runs at 15 fps, so that the commits come before their frames are captured (see
/// [`pipeline_import_implicit`]).
fn pipeline_implicit(ctx: &mut Ctx) -> TestResult {
    checked_pipeline(
        ctx,
        "vkms-pipeline-implicit.txt",
        &[
            "-m", "implicit", "-r", "15", "-n", "120", "-b", "3", "-C", "-v",
        ],
        120,
    )
}

/// The bridge with a display, the other way round: vkms's dumb buffers imported as rvivid's
/// capture buffers (`V4L2_MEMORY_DMABUF`), no IN_FENCE_FD on the plane; KMS waits for the write
/// fence rvivid put into the dumb buffer's own reservation object (its GEM object's), which is
/// the buffer's out-fence. Every vblank is CRC-checked: without that fence KMS would show the
/// buffer before rvivid wrote it. rvivid runs at its slowest rate (15 fps, a quarter of the
/// display's), so that each commit is made well before its frame is captured (the commit of
/// frame k follows the flip of frame k - 1, a capture interval before frame k): at 30 fps the
/// guest's pipeline is slower than the capture, the frames are mostly written before their
/// commits, and the test passed without the fence too.
fn pipeline_import_implicit(ctx: &mut Ctx) -> TestResult {
    checked_pipeline(
        ctx,
        "vkms-pipeline-import-implicit.txt",
        &[
            "-M", "import", "-m", "implicit", "-r", "15", "-n", "120", "-b", "3", "-C", "-v",
        ],
        120,
    )
}

/// The classic CPU path (DQBUF, commit, wait for the flip, QBUF) through the same checks: the
/// reference the fenced pipeline is compared with.
fn pipeline_classic(ctx: &mut Ctx) -> TestResult {
    checked_pipeline(
        ctx,
        "vkms-pipeline-classic.txt",
        &["-m", "classic", "-n", "60", "-b", "3", "-C", "-v"],
        60,
    )
}

/// A capture buffer that fails (rvivid's error injection at frame 20): its out-fence signals
/// -EIO; KMS ignores fence errors and shows it, the pipeline learns of it at DQBUF
/// (V4L2_BUF_FLAG_ERROR), leaves it unchecked and goes on; every other frame is checked.
fn pipeline_failed_buffer(ctx: &mut Ctx) -> TestResult {
    let s = run_pipeline(
        ctx,
        "vkms-pipeline-failed-buffer.txt",
        &[
            "-m", "fenced", "-n", "60", "-b", "3", "-f", "20", "-C", "-v",
        ],
    )?;
    if s.shown != 60 || s.failed != 1 || s.checked != 59 || s.errors != 0 {
        return Err(format!(
            "{s:?}: want 60 frames shown, 1 failed, 59 checked, no error"
        ));
    }
    Ok(())
}

/// A display commit that fails (its plane asks for a source wider than the framebuffer: the
/// atomic check refuses it, ENOSPC) returns its buffer: the commit leaves no out-fence and no
/// flip event, the frame on screen stays, the next frame queued is shown in its place, and
/// the buffer goes back to the capture (dequeued once a later frame is, its capture fence
/// signalled, queued again with no release fence) and is shown again later. Cases:
///
/// - at frame 20 of 60, every frame shown CRC-checked, both ways (rvivid's buffers exported,
///   vkms's dumb buffers imported); four buffers, since with -C one more is held and the
///   commit after the failed one needs a frame queued besides it;
/// - the tightest case without -C: three buffers, the failure at the first commit after the
///   modeset (frame 1), with implicit synchronization (no IN_FENCE_FD);
/// - three buffers, the failure at the last frame (59): its buffer is dequeued at the end,
///   not shown again.
fn pipeline_failed_commit(ctx: &mut Ctx) -> TestResult {
    let cases: [(&str, &[&str], u64, u64); 4] = [
        (
            "export",
            &["-M", "export", "-m", "fenced", "-b", "4", "-F", "20", "-C"],
            60,
            1,
        ),
        (
            "import",
            &["-M", "import", "-m", "fenced", "-b", "4", "-F", "20", "-C"],
            60,
            1,
        ),
        ("implicit", &["-m", "implicit", "-b", "3", "-F", "1"], 0, 1),
        ("last", &["-m", "fenced", "-b", "3", "-F", "59"], 0, 0),
    ];
    for (name, args, checked, returned) in cases {
        let mut all = vec!["-n", "60", "-v"];
        all.extend_from_slice(args);
        let s = run_pipeline(
            ctx,
            &format!("vkms-pipeline-failed-commit-{name}.txt"),
            &all,
        )?;
        if s.shown != 60
            || s.checked != checked
            || s.failed != 0
            || s.commits_failed != 1
            || s.returned != returned
            || s.errors != 0
        {
            return Err(format!(
                "{}: {s:?}: want 60 frames shown, {checked} checked, 1 commit failed, \
                 {returned} buffer of it shown again, no error",
                all.join(" ")
            ));
        }
    }
    Ok(())
}

/// Closing the video device in the middle (a commit waiting for a capture fence, buffers
/// queued behind release fences; four buffers, no CRC, so that two more are queued then):
/// every capture fence the pipeline holds has signalled, the pending flip happens, nothing is
/// left pending (what leaked, kmemleak reports at the end).
fn pipeline_close_mid_stream(ctx: &mut Ctx) -> TestResult {
    quit_mid_stream(ctx, "-q", "vkms-pipeline-close.txt")
}

/// The same with `VIDIOC_STREAMOFF` instead of the close: every capture fence held has
/// signalled, the pending flip happens, and every buffer is back with the program (QUERYBUF:
/// neither queued, done nor waiting for a fence).
fn pipeline_streamoff_mid_stream(ctx: &mut Ctx) -> TestResult {
    quit_mid_stream(ctx, "-S", "vkms-pipeline-streamoff.txt")
}

/// Runs the pipeline with `quit` (`-q` or `-S`) at frame 30 of 60, logged to `log`.
fn quit_mid_stream(ctx: &Ctx, quit: &str, log: &str) -> TestResult {
    let node = ctx.find_rvivid()?;
    let _vkms = Vkms::load(ctx)?;
    let node = node.to_string_lossy();
    let args = [
        "-d", &*node, "-m", "fenced", "-n", "60", "-b", "4", quit, "30",
    ];
    let out = ctx.run(&sample().to_string_lossy(), &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ctx.save_log(
        log,
        format!(
            "{stdout}\n--- stderr ---\n{stderr}\n--- {} ---\n",
            out.status
        ),
    )?;
    let last = stdout.lines().last().unwrap_or("");
    let summary = parse_summary(last);
    if !out.status.success()
        || !stdout.contains("all signalled")
        || summary.is_none_or(|s| s.errors != 0)
    {
        return Err(format!(
            "vkms-pipeline {quit} 30 ({}): {} {}",
            out.status,
            stderr.trim(),
            stdout.trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary() {
        let line = "fenced export 320x240 30 fps 3 buffers: 300 frames shown, 298 checked \
                    (900 vblanks), 2 failed, 1 gaps, 20.0 fps shown, latency mean 40000 max \
                    52000 us, cpu 120 us/frame, 1 commits failed, 1 returned, 0 errors";
        assert_eq!(
            parse_summary(line),
            Some(Summary {
                shown: 300,
                checked: 298,
                failed: 2,
                gaps: 1,
                commits_failed: 1,
                returned: 1,
                errors: 0
            })
        );
        assert_eq!(parse_summary("VIDIOC_QBUF: Invalid argument"), None);
    }
}
