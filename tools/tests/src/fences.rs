//! Explicit synchronization tests: in-fences and out-fences on `VIDIOC_QBUF`
//! (`include/uapi/linux/rvb2-fences.h`), against rvivid.
//!
//! Every test opens its own file descriptors through a [`Rig`], whose `Drop` leaves the device
//! clean whatever happened: STREAMOFF, buffers unmapped, REQBUFS(0), close, rvivid's
//! error-injection controls back to their defaults. In-fences come from sw_sync timelines
//! ([`Timeline`]); out-fences are checked with `SYNC_IOC_FILE_INFO` and `poll()`.
//!
//! Conventions the tests rely on (the UAPI contract):
//! - the fence fd is `v4l2_buffer.reserved2` read as `i32`;
//! - a failing QBUF installs no fd (`/proc/self/fd` is counted around every failing QBUF) and
//!   leaves the buffer's state as it was;
//! - out-fences signal with status 1 when their buffer is done, -EIO when it failed, and
//!   -ECANCELED when it never reached the driver and was taken back (STREAMOFF, REQBUFS(0),
//!   close);
//! - rvivid completes a frame every ~33-70 ms in the guest (much slower under TCG and KASAN with
//!   other guests running), so waits for something to happen are generous (5 s).
//!
//! "Nothing happens" is never checked by waiting a fixed time and looking, which on a slow
//! guest shows nothing. It is checked as a state, at once ([`Rig::expect_held`]: QUERYBUF
//! flags, out-fence status, poll() with timeout 0, non-blocking DQBUF), and where a buffer
//! must not have reached the driver: by keeping the driver from starting
//! ([`Rig::streamon_unstarted`]: rvivid's start_streaming is set to fail, so STREAMON, or a
//! QBUF, that started it would fail), by waiting for the queue to show it took a signal in
//! ([`Rig::wait_in_fence_settled`]), or against the driver's own frames and timestamps.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{Ctx, Test, TestResult};
use crate::syncfile::{self, status_str, Timeline};
use crate::v4l2::{
    v4l2_buffer, v4l2_control, v4l2_create_buffers, v4l2_format, v4l2_remove_buffers,
    v4l2_requestbuffers, Device, Errno, V4L2_BUF_FLAG_DONE, V4L2_BUF_FLAG_ERROR,
    V4L2_BUF_FLAG_MAPPED, V4L2_BUF_FLAG_PREPARED, V4L2_BUF_FLAG_QUEUED, V4L2_BUF_FLAG_REQUEST_FD,
    V4L2_BUF_FLAG_TIMESTAMP_MASK, V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC, V4L2_BUF_TYPE_VIDEO_CAPTURE,
    V4L2_MEMORY_DMABUF, V4L2_MEMORY_MMAP, V4L2_MEMORY_USERPTR, VIDIOC_CREATE_BUFS, VIDIOC_DQBUF,
    VIDIOC_G_CTRL, VIDIOC_G_FMT, VIDIOC_PREPARE_BUF, VIDIOC_QBUF, VIDIOC_QUERYBUF,
    VIDIOC_REMOVE_BUFS, VIDIOC_REQBUFS, VIDIOC_STREAMOFF, VIDIOC_STREAMON, VIDIOC_S_CTRL,
};

// ---------------------------------------------------------------------------------------------
// UAPI (rvb2-fences.h) and rvivid's controls
// ---------------------------------------------------------------------------------------------

/// `V4L2_BUF_FLAG_IN_FENCE`.
pub const V4L2_BUF_FLAG_IN_FENCE: u32 = 0x0020_0000;
/// `V4L2_BUF_FLAG_OUT_FENCE`.
pub const V4L2_BUF_FLAG_OUT_FENCE: u32 = 0x0040_0000;
/// `V4L2_BUF_CAP_SUPPORTS_FENCES`, in the capabilities of REQBUFS and CREATE_BUFS.
pub const V4L2_BUF_CAP_SUPPORTS_FENCES: u32 = 1 << 15;
/// `V4L2_BUF_TYPE_VIDEO_OUTPUT` (a type rvivid does not have).
const V4L2_BUF_TYPE_VIDEO_OUTPUT: u32 = 2;

const IN: u32 = V4L2_BUF_FLAG_IN_FENCE;
const OUT: u32 = V4L2_BUF_FLAG_OUT_FENCE;

/// The base of rvivid's own controls (user class).
const RVIVID_CID_BASE: u32 = 0x0098_0900 | 0xf100;
/// Integer 0..32: the next N buffers the driver completes come back with ERROR.
const RVIVID_CID_FAIL_NEXT_BUFFERS: u32 = RVIVID_CID_BASE;
/// Boolean: while 1, start_streaming fails with EIO.
const RVIVID_CID_FAIL_START_STREAMING: u32 = RVIVID_CID_BASE + 1;
/// Integer 0..10000: every buffer is held that many ms longer.
const RVIVID_CID_HOLD_MS: u32 = RVIVID_CID_BASE + 2;
/// Boolean: unordered completion; only while no buffers are allocated.
const RVIVID_CID_UNORDERED: u32 = RVIVID_CID_BASE + 3;

/// How long a buffer that should arrive may take.
const TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Fails with `msg` unless `cond` holds.
fn check(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// `v4l2_buffer.reserved2` read as the fence fd.
fn fence_fd(b: &v4l2_buffer) -> i32 {
    b.reserved2 as i32
}

/// The names of the buffer flags set in `flags`, for messages.
pub fn flags_str(flags: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (0x0000_0001, "MAPPED"),
        (0x0000_0002, "QUEUED"),
        (0x0000_0004, "DONE"),
        (0x0000_0040, "ERROR"),
        (0x0000_0400, "PREPARED"),
        (0x0010_0000, "LAST"),
        (V4L2_BUF_FLAG_IN_FENCE, "IN_FENCE"),
        (V4L2_BUF_FLAG_OUT_FENCE, "OUT_FENCE"),
        (0x0080_0000, "REQUEST_FD"),
    ];
    let mut names: Vec<String> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let known = NAMES.iter().fold(0, |acc, (bit, _)| acc | bit) | 0x0000_e000 | 0x0007_0000;
    if flags & !known != 0 {
        names.push(format!("{:#x}", flags & !known));
    }
    if names.is_empty() {
        format!("{flags:#x}")
    } else {
        format!("{flags:#x}({})", names.join("|"))
    }
}

/// The flags that describe a buffer's state (compared before and after a failing QBUF).
const STATE_FLAGS: u32 = V4L2_BUF_FLAG_QUEUED
    | V4L2_BUF_FLAG_DONE
    | V4L2_BUF_FLAG_ERROR
    | V4L2_BUF_FLAG_PREPARED
    | V4L2_BUF_FLAG_IN_FENCE
    | V4L2_BUF_FLAG_OUT_FENCE;

/// The number of open file descriptors of this process (entries of /proc/self/fd; the
/// directory's own fd is counted every time, so counts compare).
pub fn fd_count() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .map_err(|e| format!("reading /proc/self/fd: {e}"))
}

/// Fails unless the number of open fds is still `before`.
fn same_fd_count(before: usize, what: &str) -> TestResult {
    let now = fd_count()?;
    check(now == before, || {
        format!("{what}: {now} open fds, {before} before (an fd was installed or leaked)")
    })
}

/// Whether `fd` is open.
fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Whether `fd` has FD_CLOEXEC.
fn is_cloexec(fd: RawFd) -> Result<bool, String> {
    // SAFETY: F_GETFD on any number is harmless.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if r < 0 {
        return Err(format!("fcntl({fd}, F_GETFD): {}", Errno::last()));
    }
    Ok(r & libc::FD_CLOEXEC != 0)
}

/// The lowest fd number not in use.
fn lowest_free_fd() -> RawFd {
    (0..).find(|&fd| !fd_is_open(fd)).unwrap_or(0)
}

/// Wraps a new fd returned by a system call.
fn owned(fd: RawFd, what: &str) -> Result<OwnedFd, String> {
    if fd < 0 {
        return Err(format!("{what}: {}", Errno::last()));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new eventfd.
fn eventfd() -> Result<OwnedFd, String> {
    // SAFETY: plain system call.
    owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }, "eventfd")
}

/// A new pipe (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", Errno::last()));
    }
    Ok((owned(fds[0], "pipe2")?, owned(fds[1], "pipe2")?))
}

/// `dup(fd)` (with FD_CLOEXEC).
fn dup(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: plain system call.
    owned(
        unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) },
        "F_DUPFD_CLOEXEC",
    )
}

/// CLOCK_MONOTONIC now, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A buffer's timestamp in nanoseconds.
fn buf_ns(b: &v4l2_buffer) -> u64 {
    (b.timestamp.tv_sec as u64) * 1_000_000_000 + (b.timestamp.tv_usec as u64) * 1_000
}

/// The status of sync_file `fd` (0 pending, 1 signalled, < 0 error).
fn fstatus(fd: &OwnedFd, what: &str) -> Result<i32, String> {
    syncfile::status(fd.as_raw_fd()).map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))
}

/// The out-fence `fd` is still pending: status 0 and poll() reports nothing.
fn expect_pending(fd: &OwnedFd, what: &str) -> TestResult {
    let s = fstatus(fd, what)?;
    check(s == 0, || {
        format!("{what}: {} while it should be pending", status_str(s))
    })?;
    let rev = syncfile::poll_fd(fd.as_raw_fd(), libc::POLLIN, 0)
        .map_err(|e| format!("poll({what}): {e}"))?;
    check(rev == 0, || {
        format!("{what}: poll() gives revents {rev:#x} while the fence is pending")
    })
}

/// A merged in-fence one of whose components is still pending is pending. The merge (a
/// dma_fence_array) signals, and so calls the queue's callback, only after its last component
/// did: with this checked, the queue has not been told anything and there is nothing to wait
/// for.
fn expect_merge_pending(m: &OwnedFd) -> TestResult {
    let s = fstatus(m, "merged in-fence")?;
    check(s == 0, || {
        format!(
            "merged in-fence with a component pending: {}, want pending",
            status_str(s)
        )
    })
}

/// Signals the in-fence `f` of `tl` late, after the queue took its buffer back, and checks it
/// did signal. There is nothing to wait for afterwards: SW_SYNC_IOC_INC returns after
/// `dma_fence_signal()` ran every callback still registered on the fence (KASAN reports a
/// stale callback's use of freed memory right there). The queue removed its own when it took
/// the buffers back; had it not, that callback would only kick the queue's fence work, which
/// runs the queue's usual step (nothing at all on a queue that is not streaming): no state
/// change to wait for, and anything it did wrong KASAN and lockdep report whenever it runs
/// (the suite's last test, dmesg_clean, reads the kernel log).
fn late_signal(tl: &Timeline, f: &OwnedFd) -> TestResult {
    tl.inc(1)?;
    let s = fstatus(f, "the late in-fence")?;
    check(s == 1, || {
        format!("the late in-fence after SW_SYNC_IOC_INC: {}", status_str(s))
    })
}

/// Waits for `fd` to signal and requires success (status 1).
fn expect_ok(fd: &OwnedFd, what: &str) -> TestResult {
    let s = syncfile::wait_signalled(fd.as_raw_fd(), TIMEOUT, what)?;
    check(s == 1, || {
        format!("{what}: {}, want signalled (1)", status_str(s))
    })
}

/// Waits for `fd` to signal and requires an error (status < 0); returns it.
fn expect_error(fd: &OwnedFd, what: &str) -> Result<i32, String> {
    let s = syncfile::wait_signalled(fd.as_raw_fd(), TIMEOUT, what)?;
    check(s < 0, || {
        format!("{what}: {}, want an error", status_str(s))
    })?;
    Ok(s)
}

/// Waits for `fd` to signal and requires -ECANCELED (a buffer taken back before it reached
/// the driver).
fn expect_cancelled(fd: &OwnedFd, what: &str) -> TestResult {
    let s = syncfile::wait_signalled(fd.as_raw_fd(), TIMEOUT, what)?;
    check(s == -libc::ECANCELED, || {
        format!("{what}: {}, want -ECANCELED", status_str(s))
    })
}

/// The fence of an out-fence sync_file (exactly one), for its names and timestamp.
fn single_fence(fd: &OwnedFd, what: &str) -> Result<syncfile::FenceInfo, String> {
    let info = syncfile::file_info(fd.as_raw_fd())
        .map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))?;
    check(info.fences.len() == 1, || {
        format!("{what}: {info}, want exactly one fence")
    })?;
    Ok(info.fences[0].clone())
}

/// The number of fences in sync_file `fd`.
fn num_fences(fd: &OwnedFd, what: &str) -> Result<usize, String> {
    syncfile::file_info(fd.as_raw_fd())
        .map(|i| i.fences.len())
        .map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))
}

/// `SYNC_IOC_MERGE` of two sync_files.
fn merge(a: &OwnedFd, b: &OwnedFd, what: &str) -> Result<OwnedFd, String> {
    syncfile::merge(what, a.as_raw_fd(), b.as_raw_fd())
        .map_err(|e| format!("SYNC_IOC_MERGE({what}): {e}"))
}

/// Sets a control on `dev`.
fn set_ctrl(dev: &Device, id: u32, value: i32) -> Result<(), Errno> {
    let mut c = v4l2_control { id, value };
    dev.ioctl(VIDIOC_S_CTRL, &mut c)
}

/// Reads a control of `dev`.
fn get_ctrl(dev: &Device, id: u32) -> Result<i32, Errno> {
    let mut c = v4l2_control { id, value: 0 };
    dev.ioctl(VIDIOC_G_CTRL, &mut c)?;
    Ok(c.value)
}

/// Puts rvivid's error-injection controls back to their defaults (best effort; UNORDERED can
/// only change while no buffers are allocated).
fn reset_controls(dev: &Device) {
    for id in [
        RVIVID_CID_FAIL_NEXT_BUFFERS,
        RVIVID_CID_FAIL_START_STREAMING,
        RVIVID_CID_HOLD_MS,
        RVIVID_CID_UNORDERED,
    ] {
        let _ = set_ctrl(dev, id, 0);
    }
}

/// QBUF with an arbitrary `v4l2_buffer` on `dev`.
fn raw_qbuf(dev: &Device, b: &mut v4l2_buffer) -> Result<(), Errno> {
    dev.ioctl(VIDIOC_QBUF, b)
}

/// The memory the `_dmabuf` and `_userptr` variants of the core cases queue (one per buffer
/// index), and its length (sizeimage).
enum MemMode {
    /// DMABUF: dma-bufs from the system heap.
    Dmabuf { fds: Vec<OwnedFd>, length: u32 },
    /// USERPTR: page-aligned user memory of this process.
    Userptr { mems: Vec<PinProbe>, length: u32 },
}

thread_local! {
    /// Set while a `_dmabuf` or `_userptr` variant runs: the [`Rig`] then allocates DMABUF or
    /// USERPTR buffers and every buffer descriptor brings the memory of its index.
    static MEM_MODE: std::cell::RefCell<Option<MemMode>> =
        const { std::cell::RefCell::new(None) };
}

/// The memory type of the buffers the tests use.
fn memory() -> u32 {
    MEM_MODE.with(|m| match *m.borrow() {
        Some(MemMode::Dmabuf { .. }) => V4L2_MEMORY_DMABUF,
        Some(MemMode::Userptr { .. }) => V4L2_MEMORY_USERPTR,
        None => V4L2_MEMORY_MMAP,
    })
}

/// The sizeimage of rvivid's current format.
fn current_sizeimage(ctx: &Ctx) -> Result<u32, String> {
    let dev = Rig::open(ctx)?;
    let mut f = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
    dev.dev()?
        .ioctl(VIDIOC_G_FMT, &mut f)
        .map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
    Ok(f.pix().sizeimage)
}

/// Runs the fence test `case` on DMABUF buffers: 32 dma-bufs of sizeimage from the system
/// heap, buffer `i` importing dma-buf `i`. Afterwards (the case's [`Rig`] dropped: REQBUFS(0),
/// close) each dma-buf must be ours alone, with no attachment left.
fn on_dmabuf(ctx: &mut Ctx, case: fn(&mut Ctx) -> TestResult) -> TestResult {
    let length = current_sizeimage(ctx)?;
    let fds = (0..32)
        .map(|_| crate::dmabuf::heap_alloc(length as usize))
        .collect::<Result<Vec<_>, _>>()?;
    MEM_MODE.with(|m| *m.borrow_mut() = Some(MemMode::Dmabuf { fds, length }));
    let r = case(ctx);
    let mode = MEM_MODE.with(|m| m.borrow_mut().take());
    r?;
    if let Some(MemMode::Dmabuf { fds, .. }) = mode {
        for (i, fd) in fds.iter().enumerate() {
            crate::dmabuf::expect_released(&format!("dma-buf {i} after the case"), fd, 1)?;
        }
    }
    Ok(())
}

/// Runs the fence test `case` on USERPTR buffers: 32 page-aligned ranges of sizeimage bytes
/// of this process's memory (shared mappings of memfds, see [`PinProbe`]), buffer `i` at
/// range `i`. Afterwards (the case's [`Rig`] dropped: REQBUFS(0), close) no page of any range
/// may still be pinned.
fn on_userptr(ctx: &mut Ctx, case: fn(&mut Ctx) -> TestResult) -> TestResult {
    let length = current_sizeimage(ctx)?;
    let mems = (0..32)
        .map(|i| PinProbe::new(length as usize, &format!("rvb2-userptr-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    MEM_MODE.with(|m| *m.borrow_mut() = Some(MemMode::Userptr { mems, length }));
    let r = case(ctx);
    let mode = MEM_MODE.with(|m| m.borrow_mut().take());
    r?;
    if let Some(MemMode::Userptr { mut mems, .. }) = mode {
        for (i, mem) in mems.iter_mut().enumerate() {
            mem.unmap();
            mem.expect_unpinned(&format!("user memory {i} after the case"))?;
        }
    }
    Ok(())
}

/// User memory for USERPTR buffers whose pins can be observed: a shared mapping of a memfd
/// (`MFD_ALLOW_SEALING`). Once the mapping is gone, `F_ADD_SEALS(F_SEAL_WRITE)` fails with
/// EBUSY while a page of the memfd has references besides the page cache's (a pin by
/// `pin_user_pages()`: the kernel's `memfd_wait_for_pins()`, which waits up to about 150 ms
/// for them to go), and succeeds once none has.
struct PinProbe {
    memfd: OwnedFd,
    /// The mapping, until [`PinProbe::unmap`].
    ptr: Option<*mut u8>,
    /// The mapping's length (whole pages).
    len: usize,
}

impl PinProbe {
    /// A memfd of `len` bytes rounded up to whole pages, mapped shared (page-aligned, zeroed).
    fn new(len: usize, name: &str) -> Result<Self, String> {
        let len = len.next_multiple_of(crate::v4l2::page_size());
        let cname = CString::new(name).map_err(|e| format!("memfd name {name:?}: {e}"))?;
        let memfd = crate::dmabuf::sealable_memfd(&cname, len)?;
        // SAFETY: a fresh shared mapping of our memfd chosen by the kernel; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of a memfd of {len} bytes: {}", Errno::last()));
        }
        Ok(PinProbe {
            memfd,
            ptr: Some(p.cast()),
            len,
        })
    }

    /// The user address of the memory (0 once unmapped).
    fn addr(&self) -> libc::c_ulong {
        self.ptr.map_or(0, |p| p as libc::c_ulong)
    }

    /// The memory's first `len` bytes, while mapped.
    fn bytes(&self, len: usize) -> Result<&[u8], String> {
        let p = self.ptr.ok_or("the user memory is unmapped")?;
        // SAFETY: `p..p + self.len` stays mapped while `self.ptr` is set; u8 has no invalid
        // values (what the device writes meanwhile is only read as bytes).
        Ok(unsafe { std::slice::from_raw_parts(p, len.min(self.len)) })
    }

    /// Unmaps the memory (the memfd keeps the pages, and pins keep them pinned).
    fn unmap(&mut self) {
        if let Some(p) = self.ptr.take() {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(p.cast(), self.len) };
        }
    }

    /// `F_ADD_SEALS(F_SEAL_WRITE)` on the unmapped memfd: `Ok` once no page is pinned (the
    /// seal is then set, and setting it again is a no-op), EBUSY while one is.
    fn seal_write(&self) -> Result<(), Errno> {
        // SAFETY: plain system call on our fd.
        if unsafe {
            libc::fcntl(
                self.memfd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_WRITE,
            )
        } == 0
        {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    /// Fails unless no page of the (unmapped) memory is pinned.
    fn expect_unpinned(&self, what: &str) -> TestResult {
        self.seal_write()
            .map_err(|e| format!("{what}: F_ADD_SEALS(F_SEAL_WRITE): {e}: a page is still pinned"))
    }

    /// Fails unless a page of the (unmapped) memory is pinned.
    fn expect_pinned(&self, what: &str) -> TestResult {
        match self.seal_write() {
            Err(e) if e.0 == libc::EBUSY => Ok(()),
            Err(e) => Err(format!(
                "{what}: F_ADD_SEALS(F_SEAL_WRITE): {e}, want EBUSY"
            )),
            Ok(()) => Err(format!(
                "{what}: F_ADD_SEALS(F_SEAL_WRITE) succeeded: no page of the memory is pinned"
            )),
        }
    }
}

impl Drop for PinProbe {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// A capture buffer descriptor with `flags` and fence fd: MMAP, or in a `_dmabuf` variant
/// DMABUF importing the dma-buf of its index, or in a `_userptr` variant USERPTR at the user
/// memory of its index.
fn buffer(index: u32, flags: u32, fd: i32) -> v4l2_buffer {
    let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, index);
    MEM_MODE.with(|m| match m.borrow().as_ref() {
        Some(MemMode::Dmabuf { fds, length }) => {
            b.memory = V4L2_MEMORY_DMABUF;
            b.m.fd = fds.get(index as usize).map_or(-1, |f| f.as_raw_fd());
            b.length = *length;
        }
        Some(MemMode::Userptr { mems, length }) => {
            b.memory = V4L2_MEMORY_USERPTR;
            b.m.userptr = mems.get(index as usize).map_or(0, |m| m.addr());
            b.length = *length;
        }
        None => {}
    });
    b.flags = flags;
    b.reserved2 = fd as u32;
    b
}

/// QUERYBUF on `dev`.
fn querybuf_on(dev: &Device, index: u32) -> Result<v4l2_buffer, Errno> {
    let mut b = buffer(index, 0, 0);
    dev.ioctl(VIDIOC_QUERYBUF, &mut b)?;
    Ok(b)
}

/// Runs QBUF of `b` on `dev`, which must fail (with `want` if given): no fd may be installed
/// and the buffer's state (as `query` sees it with QUERYBUF) must not change.
fn expect_qbuf_fails(
    dev: &Device,
    query: &Device,
    b: v4l2_buffer,
    want: Option<i32>,
    what: &str,
) -> TestResult {
    let state_before = querybuf_on(query, b.index)
        .ok()
        .map(|q| q.flags & STATE_FLAGS);
    let before = fd_count()?;
    let mut arg = b;
    let r = raw_qbuf(dev, &mut arg);
    let after = fd_count()?;
    let ctx = format!(
        "{what}: QBUF(index {}, type {}, memory {}, flags {}, fence_fd {})",
        b.index,
        b.type_,
        b.memory,
        flags_str(b.flags),
        fence_fd(&b)
    );
    match r {
        Ok(()) => {
            // Do not leave a stray fd behind us.
            if b.flags & OUT != 0 && fence_fd(&arg) >= 0 && after > before {
                // SAFETY: the QBUF we just made installed this fd.
                unsafe { libc::close(fence_fd(&arg)) };
            }
            return Err(format!(
                "{ctx} succeeded (returned fence_fd {}), want {}",
                fence_fd(&arg),
                want.map(crate::v4l2::errno_name)
                    .unwrap_or_else(|| "an error".into())
            ));
        }
        Err(e) => {
            if let Some(w) = want {
                check(e.0 == w, || {
                    format!("{ctx} failed with {e}, want {}", crate::v4l2::errno_name(w))
                })?;
            }
        }
    }
    check(after == before, || {
        format!("{ctx} failed but the number of open fds went from {before} to {after}")
    })?;
    if let Some(sb) = state_before {
        let sa = querybuf_on(query, b.index)
            .map_err(|e| format!("{ctx}: QUERYBUF afterwards: {e}"))?
            .flags
            & STATE_FLAGS;
        check(sa == sb, || {
            format!(
                "{ctx} failed but changed the buffer's state: flags {} before, {} after",
                flags_str(sb),
                flags_str(sa)
            )
        })?;
    }
    Ok(())
}

/// Restores stdin (fd 0) when dropped, after a test put a sync_file there.
struct StdinSwap {
    saved: Option<OwnedFd>,
}

impl StdinSwap {
    /// Makes fd 0 a duplicate of `fd`.
    fn put(fd: RawFd) -> Result<Self, String> {
        // SAFETY: plain system call; fails with EBADF when stdin is closed.
        let s = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
        let saved = if s >= 0 {
            Some(owned(s, "F_DUPFD_CLOEXEC(0)")?)
        } else {
            None
        };
        let swap = StdinSwap { saved };
        // SAFETY: plain system call.
        if unsafe { libc::dup2(fd, 0) } != 0 {
            return Err(format!("dup2({fd}, 0): {}", Errno::last()));
        }
        Ok(swap)
    }
}

impl Drop for StdinSwap {
    fn drop(&mut self) {
        match &self.saved {
            // SAFETY: plain system calls on fds we own (fd 0 is ours while swapped).
            Some(s) => unsafe {
                libc::dup2(s.as_raw_fd(), 0);
            },
            // SAFETY: as above.
            None => unsafe {
                libc::close(0);
            },
        }
    }
}

/// Lowers RLIMIT_NOFILE's soft limit while alive.
struct NofileLimit {
    old: libc::rlimit,
}

impl NofileLimit {
    fn lower_to(limit: u64) -> Result<Self, String> {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
            return Err(format!("getrlimit(RLIMIT_NOFILE): {}", Errno::last()));
        }
        let new = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        // SAFETY: a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(format!(
                "setrlimit(RLIMIT_NOFILE, {limit}): {}",
                Errno::last()
            ));
        }
        Ok(NofileLimit { old })
    }
}

impl Drop for NofileLimit {
    fn drop(&mut self) {
        // SAFETY: a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.old) };
    }
}

/// A tiny deterministic PRNG (xorshift64*), for the stress test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with `pct` percent probability.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

// ---------------------------------------------------------------------------------------------
// The rig: one open fd of rvivid, with its buffers, cleaned up on drop
// ---------------------------------------------------------------------------------------------

/// One buffer mapping.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

/// An open rvivid fd (non-blocking) and the queue it may own; `Drop` stops streaming, unmaps,
/// frees the buffers, resets rvivid's controls and closes the fd.
struct Rig {
    dev: Option<Device>,
    node: PathBuf,
    /// Buffers allocated (REQBUFS/CREATE_BUFS).
    count: u32,
    maps: Vec<Mapping>,
}

impl Rig {
    /// Opens rvivid (non-blocking, so DQBUF never blocks: waits go through poll()).
    fn open(ctx: &Ctx) -> Result<Self, String> {
        let node = ctx.find_rvivid()?;
        let dev =
            Device::open_nonblock(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
        Ok(Rig {
            dev: Some(dev),
            node,
            count: 0,
            maps: Vec::new(),
        })
    }

    /// Opens rvivid and allocates at least `n` buffers with REQBUFS.
    fn new(ctx: &Ctx, n: u32) -> Result<Self, String> {
        let mut rig = Self::open(ctx)?;
        let r = rig.reqbufs(n)?;
        check(r.count >= n, || {
            format!("REQBUFS({n}) allocated only {} buffers", r.count)
        })?;
        Ok(rig)
    }

    fn dev(&self) -> Result<&Device, String> {
        self.dev
            .as_ref()
            .ok_or_else(|| "the video fd is closed".to_string())
    }

    fn fd(&self) -> RawFd {
        self.dev.as_ref().map_or(-1, |d| d.as_raw_fd())
    }

    /// Closes the video fd now (the queue is released as the owner's file goes).
    fn close_device(&mut self) {
        self.dev = None;
    }

    /// REQBUFS(count) for MMAP capture buffers.
    fn reqbufs_raw(&self, count: u32) -> Result<v4l2_requestbuffers, Errno> {
        let dev = self.dev().map_err(|_| Errno(libc::EBADF))?;
        let mut r: v4l2_requestbuffers = crate::v4l2::zeroed();
        r.count = count;
        r.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
        r.memory = memory();
        dev.ioctl(VIDIOC_REQBUFS, &mut r)?;
        Ok(r)
    }

    fn reqbufs(&mut self, count: u32) -> Result<v4l2_requestbuffers, String> {
        let r = self
            .reqbufs_raw(count)
            .map_err(|e| format!("VIDIOC_REQBUFS({count}): {e}"))?;
        self.count = r.count;
        if r.count > 0 {
            self.expect_memory(0, "after REQBUFS")?;
        }
        Ok(r)
    }

    /// Fails unless the queue reports buffer `index` with the memory type of the variant
    /// that runs (QUERYBUF), so that a case runs on the memory it claims to.
    fn expect_memory(&self, index: u32, why: &str) -> TestResult {
        let q = self.querybuf(index)?;
        check(q.memory == memory(), || {
            format!(
                "{why}: QUERYBUF({index}) reports memory {}, want {}",
                q.memory,
                memory()
            )
        })
    }

    /// CREATE_BUFS(count) with the current format.
    fn create_bufs(&mut self, count: u32) -> Result<v4l2_create_buffers, String> {
        let dev = self.dev()?;
        let mut f = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
        dev.ioctl(VIDIOC_G_FMT, &mut f)
            .map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
        let mut c: v4l2_create_buffers = crate::v4l2::zeroed();
        c.count = count;
        c.memory = memory();
        c.format = f;
        dev.ioctl(VIDIOC_CREATE_BUFS, &mut c)
            .map_err(|e| format!("VIDIOC_CREATE_BUFS({count}): {e}"))?;
        self.count = self.count.max(c.index + c.count);
        if c.count > 0 {
            self.expect_memory(c.index, "after CREATE_BUFS")?;
        }
        Ok(c)
    }

    /// Maps every buffer (as a legacy application would; in a `_dmabuf` variant, the
    /// dma-bufs; in a `_userptr` variant nothing: the memory is this process's own).
    fn map_all(&mut self) -> TestResult {
        if memory() == V4L2_MEMORY_USERPTR {
            return Ok(());
        }
        for i in 0..self.count {
            let b = self.querybuf(i)?;
            let dmabuf = MEM_MODE.with(|m| match m.borrow().as_ref() {
                Some(MemMode::Dmabuf { fds, length }) => {
                    fds.get(i as usize).map(|f| (f.as_raw_fd(), *length))
                }
                _ => None,
            });
            if let Some((fd, length)) = dmabuf {
                // SAFETY: mapping a dma-buf we allocated; unmapped only by `unmap_all`.
                let ptr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        length as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd,
                        0,
                    )
                };
                if ptr == libc::MAP_FAILED {
                    return Err(format!("mmap of dma-buf {i}: {}", Errno::last()));
                }
                self.maps.push(Mapping {
                    ptr,
                    len: length as usize,
                });
                continue;
            }
            // SAFETY: mapping a buffer of our device at the offset QUERYBUF gave; the mapping
            // is only unmapped by `unmap_all`.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    b.length as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd(),
                    b.offset() as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(format!(
                    "mmap of buffer {i} (length {}, offset {:#x}): {}",
                    b.length,
                    b.offset(),
                    Errno::last()
                ));
            }
            self.maps.push(Mapping {
                ptr,
                len: b.length as usize,
            });
        }
        Ok(())
    }

    fn unmap_all(&mut self) {
        for m in self.maps.drain(..) {
            // SAFETY: a mapping made by `map_all`, unmapped once.
            unsafe { libc::munmap(m.ptr, m.len) };
        }
    }

    /// QBUF of buffer `index` with `flags` and fence fd `fd`; the raw result.
    fn qbuf(&self, index: u32, flags: u32, fd: i32) -> Result<v4l2_buffer, Errno> {
        let dev = self.dev().map_err(|_| Errno(libc::EBADF))?;
        let mut b = buffer(index, flags, fd);
        raw_qbuf(dev, &mut b)?;
        Ok(b)
    }

    /// QBUF that must succeed. Checks the returned fence fd: with OUT_FENCE a new sync_file
    /// (returned, owned), else -1 with IN_FENCE and 0 without.
    fn queue(
        &self,
        index: u32,
        flags: u32,
        fd: i32,
    ) -> Result<(v4l2_buffer, Option<OwnedFd>), String> {
        let what = format!(
            "VIDIOC_QBUF(index {index}, flags {}, fence_fd {fd})",
            flags_str(flags)
        );
        let b = self
            .qbuf(index, flags, fd)
            .map_err(|e| format!("{what}: {e}"))?;
        let got = fence_fd(&b);
        if flags & OUT == 0 {
            let want = if flags & IN != 0 { -1 } else { 0 };
            check(got == want, || {
                format!("{what} returned fence_fd {got}, want {want}")
            })?;
            return Ok((b, None));
        }
        check(got >= 0, || {
            format!("{what} with OUT_FENCE returned fence_fd {got}")
        })?;
        // Never take ownership of an fd that is not a new one.
        check(got != fd && got != self.fd(), || {
            format!("{what} returned fence_fd {got}, which is not a new fd")
        })?;
        syncfile::status(got).map_err(|e| {
            format!("{what} returned fence_fd {got}, which is not a sync_file: {e}")
        })?;
        // SAFETY: QBUF installed this fd for us; nothing else owns it.
        Ok((b, Some(unsafe { OwnedFd::from_raw_fd(got) })))
    }

    /// QBUF without fences (fence_fd 0).
    fn q_plain(&self, index: u32) -> TestResult {
        self.queue(index, 0, 0).map(|_| ())
    }

    /// QBUF with an out-fence only; returns it.
    fn q_out(&self, index: u32) -> Result<OwnedFd, String> {
        let (_, out) = self.queue(index, OUT, 0)?;
        out.ok_or_else(|| "no out-fence".to_string())
    }

    /// QBUF with an in-fence only.
    fn q_in(&self, index: u32, fence: RawFd) -> TestResult {
        self.queue(index, IN, fence).map(|_| ())
    }

    /// QBUF with an in-fence and an out-fence; returns the out-fence.
    fn q_in_out(&self, index: u32, fence: RawFd) -> Result<OwnedFd, String> {
        let (_, out) = self.queue(index, IN | OUT, fence)?;
        out.ok_or_else(|| "no out-fence".to_string())
    }

    /// QBUF that must fail (with `want`), installing no fd and leaving the buffer as it was.
    fn q_fail(&self, index: u32, flags: u32, fd: i32, want: i32, what: &str) -> TestResult {
        let dev = self.dev()?;
        expect_qbuf_fails(dev, dev, buffer(index, flags, fd), Some(want), what)
    }

    fn querybuf(&self, index: u32) -> Result<v4l2_buffer, String> {
        querybuf_on(self.dev()?, index).map_err(|e| format!("VIDIOC_QUERYBUF({index}): {e}"))
    }

    fn prepare_buf(&self, index: u32, flags: u32, fd: i32) -> Result<v4l2_buffer, Errno> {
        let dev = self.dev().map_err(|_| Errno(libc::EBADF))?;
        let mut b = buffer(index, flags, fd);
        dev.ioctl(VIDIOC_PREPARE_BUF, &mut b)?;
        Ok(b)
    }

    fn streamon(&self) -> TestResult {
        let mut t = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        self.dev()?
            .ioctl(VIDIOC_STREAMON, &mut t)
            .map_err(|e| format!("VIDIOC_STREAMON: {e}"))
    }

    fn streamoff(&self) -> TestResult {
        let mut t = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        self.dev()?
            .ioctl(VIDIOC_STREAMOFF, &mut t)
            .map_err(|e| format!("VIDIOC_STREAMOFF: {e}"))
    }

    /// Non-blocking DQBUF (the fd is O_NONBLOCK).
    fn dqbuf_nb(&self) -> Result<v4l2_buffer, Errno> {
        let dev = self.dev().map_err(|_| Errno(libc::EBADF))?;
        let mut b = buffer(0, 0, 0);
        dev.ioctl(VIDIOC_DQBUF, &mut b)?;
        Ok(b)
    }

    /// DQBUF, waiting up to `timeout` (poll() on the video fd between attempts).
    fn dqbuf_within(&self, timeout: Duration) -> Result<v4l2_buffer, String> {
        let start = Instant::now();
        loop {
            match self.dqbuf_nb() {
                Ok(b) => return Ok(b),
                Err(e) if e.0 == libc::EAGAIN => {}
                Err(e) => return Err(format!("VIDIOC_DQBUF: {e}")),
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "VIDIOC_DQBUF: no buffer within {} ms",
                    timeout.as_millis()
                ));
            }
            let rev = syncfile::poll_fd(self.fd(), libc::POLLIN, 50)
                .map_err(|e| format!("poll(video fd): {e}"))?;
            if rev & libc::POLLIN == 0 {
                // POLLERR (not streaming / nothing queued yet) or a timeout: do not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn dqbuf(&self) -> Result<v4l2_buffer, String> {
        self.dqbuf_within(TIMEOUT)
    }

    /// DQBUF within [`TIMEOUT`], requiring buffer `index`, with ERROR iff `error`.
    fn dq_expect(&self, index: u32, error: bool) -> Result<v4l2_buffer, String> {
        let b = self
            .dqbuf()
            .map_err(|e| format!("waiting for buffer {index}: {e}"))?;
        check(b.index == index, || {
            format!(
                "DQBUF returned buffer {} (flags {}), want buffer {index} (QBUF order)",
                b.index,
                flags_str(b.flags)
            )
        })?;
        let has_error = b.flags & V4L2_BUF_FLAG_ERROR != 0;
        check(has_error == error, || {
            format!(
                "DQBUF of buffer {index}: flags {}, want ERROR {}",
                flags_str(b.flags),
                if error { "set" } else { "clear" }
            )
        })?;
        if !error {
            check(b.bytesused > 0, || {
                format!("DQBUF of buffer {index}: bytesused 0 on a good buffer")
            })?;
        }
        check(b.memory == memory(), || {
            format!(
                "DQBUF of buffer {index}: memory {}, want {}",
                b.memory,
                memory()
            )
        })?;
        Ok(b)
    }

    /// Asserts, at once, that nothing is done: poll() on the video fd (timeout 0) reports no
    /// POLLIN, a non-blocking DQBUF is EAGAIN and no buffer of the queue has DONE or ERROR;
    /// the `waiting` buffers are QUEUED with IN_FENCE (they wait for their in-fence), the
    /// `held` ones QUEUED (held back behind them).
    ///
    /// This is a snapshot: it shows what the queue decided, not what a driver that was handed
    /// a buffer would do a frame later. Tests that must also show that no buffer reached the
    /// driver use [`Rig::streamon_unstarted`] (the driver is not even started) or a check
    /// against the driver's frames.
    fn expect_held(&self, why: &str, waiting: &[u32], held: &[u32]) -> TestResult {
        let rev = syncfile::poll_fd(self.fd(), libc::POLLIN, 0)
            .map_err(|e| format!("poll(video fd): {e}"))?;
        check(rev & libc::POLLIN == 0, || {
            format!("{why}: poll() on the video fd reports POLLIN (revents {rev:#x})")
        })?;
        match self.dqbuf_nb() {
            Ok(b) => {
                return Err(format!(
                    "{why}: DQBUF returned buffer {} (flags {})",
                    b.index,
                    flags_str(b.flags)
                ))
            }
            Err(e) if e.0 == libc::EAGAIN => {}
            Err(e) => return Err(format!("{why}: VIDIOC_DQBUF: {e}, want EAGAIN")),
        }
        for i in 0..self.count {
            let b = self.querybuf(i)?;
            let (set, what) = if waiting.contains(&i) {
                (V4L2_BUF_FLAG_QUEUED | IN, "waiting for its in-fence")
            } else if held.contains(&i) {
                (V4L2_BUF_FLAG_QUEUED, "held back")
            } else {
                (0, "not done")
            };
            check(
                b.flags & set == set && b.flags & (V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR) == 0,
                || {
                    format!(
                        "{why}: QUERYBUF({i}) flags {}, want {} set and DONE|ERROR clear ({what})",
                        flags_str(b.flags),
                        flags_str(set)
                    )
                },
            )?;
        }
        Ok(())
    }

    /// STREAMON for a queue whose head buffer waits for an in-fence, so that fewer than the two
    /// buffers rvivid needs are ready: with rvivid's start_streaming set to fail
    /// (RVIVID_CID_FAIL_START_STREAMING), STREAMON must succeed, which shows at once that the
    /// queue did not start the driver and so handed it no buffer (the driver completes
    /// nothing before it is started). The control stays set until [`Rig::allow_start`]: a
    /// start the queue would attempt meanwhile (a QBUF's or a fence callback's) fails, and
    /// the queued buffers come back with ERROR, which [`Rig::expect_held`] sees.
    fn streamon_unstarted(&self, why: &str) -> TestResult {
        self.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1)?;
        self.streamon().map_err(|e| {
            format!(
                "{why}: {e}: the queue started the driver (whose start_streaming was set to \
                 fail) although its head buffer waits for an in-fence"
            )
        })
    }

    /// Lets the driver start again (see [`Rig::streamon_unstarted`]); before the signal that
    /// makes buffers ready.
    fn allow_start(&self) -> TestResult {
        self.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 0)
    }

    /// Waits (up to [`TIMEOUT`]) until QUERYBUF(`index`) no longer shows IN_FENCE: the queue
    /// has handled the signal of that buffer's in-fence, in the same locked step in which it
    /// would hand ready buffers to the driver or start it (QUERYBUF takes the same lock).
    fn wait_in_fence_settled(&self, index: u32, why: &str) -> TestResult {
        let mut last = 0;
        let settled = crate::harness::wait_until(TIMEOUT, || {
            self.querybuf(index)
                .map(|b| {
                    last = b.flags;
                    b.flags & IN == 0
                })
                .unwrap_or(false)
        });
        check(settled, || {
            format!(
                "{why}: QUERYBUF({index}) still shows IN_FENCE {} s after the fence signalled \
                 (flags {})",
                TIMEOUT.as_secs(),
                flags_str(last)
            )
        })
    }

    /// Sets one of rvivid's controls (reset by `Drop`).
    fn set_ctrl(&self, id: u32, value: i32) -> TestResult {
        set_ctrl(self.dev()?, id, value)
            .map_err(|e| format!("VIDIOC_S_CTRL({id:#x}, {value}): {e}"))
    }

    /// VIDIOC_REMOVE_BUFS.
    fn remove_bufs(&self, index: u32, count: u32) -> Result<(), Errno> {
        let dev = self.dev().map_err(|_| Errno(libc::EBADF))?;
        let mut d: v4l2_remove_buffers = crate::v4l2::zeroed();
        d.index = index;
        d.count = count;
        d.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
        dev.ioctl(VIDIOC_REMOVE_BUFS, &mut d)
    }

    /// QUERYBUF `index`; requires the flags in `set` and none of `clear`.
    fn expect_flags(&self, index: u32, set: u32, clear: u32, why: &str) -> TestResult {
        let b = self.querybuf(index)?;
        check(b.flags & set == set && b.flags & clear == 0, || {
            format!(
                "{why}: QUERYBUF({index}) flags {}, want {} set and {} clear",
                flags_str(b.flags),
                flags_str(set),
                flags_str(clear)
            )
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.as_ref() {
            let mut t = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
            let _ = dev.ioctl(VIDIOC_STREAMOFF, &mut t);
        }
        self.unmap_all();
        if self.dev.is_some() {
            let _ = self.reqbufs_raw(0);
        }
        match self.dev.as_ref() {
            Some(dev) => reset_controls(dev),
            None => {
                if let Ok(dev) = Device::open_nonblock(&self.node) {
                    reset_controls(&dev);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test list
// ---------------------------------------------------------------------------------------------

/// Every fence test, in the order they run.
pub static FENCE_TESTS: &[Test] = &[
    ("fence_sw_sync_selfcheck", fence_sw_sync_selfcheck),
    // The core cases again on imported dma-bufs (DMABUF memory).
    ("fence_dmabuf_out_fence_signals_after_dqbuf", |ctx| {
        on_dmabuf(ctx, fence_out_fence_signals_after_dqbuf)
    }),
    ("fence_dmabuf_in_fence_signalled_later_ok", |ctx| {
        on_dmabuf(ctx, fence_in_fence_signalled_later_ok)
    }),
    ("fence_dmabuf_in_fence_signalled_later_error", |ctx| {
        on_dmabuf(ctx, fence_in_fence_signalled_later_error)
    }),
    ("fence_dmabuf_mixed_fenced_unfenced", |ctx| {
        on_dmabuf(ctx, fence_mixed_fenced_unfenced)
    }),
    ("fence_dmabuf_driver_error_out_fence_eio", |ctx| {
        on_dmabuf(ctx, fence_driver_error_out_fence_eio)
    }),
    ("fence_dmabuf_never_signalled_streamoff", |ctx| {
        on_dmabuf(ctx, fence_never_signalled_streamoff)
    }),
    ("fence_dmabuf_never_signalled_close", |ctx| {
        on_dmabuf(ctx, fence_never_signalled_close)
    }),
    ("fence_dmabuf_streamoff_while_in_driver", |ctx| {
        on_dmabuf(ctx, fence_streamoff_while_in_driver)
    }),
    ("fence_dmabuf_deadline_in_driver", |ctx| {
        on_dmabuf(ctx, fence_deadline_in_driver)
    }),
    ("fence_dmabuf_requeue_same_index_new_out_fence", |ctx| {
        on_dmabuf(ctx, fence_requeue_same_index_new_out_fence)
    }),
    ("fence_dmabuf_stale_token_keeps_replaced_import", |ctx| {
        on_dmabuf(ctx, stale_token_keeps_replaced_import)
    }),
    // The core cases again on user memory (USERPTR).
    ("fence_userptr_out_fence_signals_after_dqbuf", |ctx| {
        on_userptr(ctx, fence_out_fence_signals_after_dqbuf)
    }),
    ("fence_userptr_in_fence_signalled_later_ok", |ctx| {
        on_userptr(ctx, fence_in_fence_signalled_later_ok)
    }),
    ("fence_userptr_in_fence_signalled_later_error", |ctx| {
        on_userptr(ctx, fence_in_fence_signalled_later_error)
    }),
    ("fence_userptr_mixed_fenced_unfenced", |ctx| {
        on_userptr(ctx, fence_mixed_fenced_unfenced)
    }),
    ("fence_userptr_driver_error_out_fence_eio", |ctx| {
        on_userptr(ctx, fence_driver_error_out_fence_eio)
    }),
    ("fence_userptr_never_signalled_streamoff", |ctx| {
        on_userptr(ctx, fence_never_signalled_streamoff)
    }),
    ("fence_userptr_never_signalled_close", |ctx| {
        on_userptr(ctx, fence_never_signalled_close)
    }),
    ("fence_userptr_streamoff_while_in_driver", |ctx| {
        on_userptr(ctx, fence_streamoff_while_in_driver)
    }),
    ("fence_userptr_deadline_in_driver", |ctx| {
        on_userptr(ctx, fence_deadline_in_driver)
    }),
    ("fence_userptr_requeue_same_index_new_out_fence", |ctx| {
        on_userptr(ctx, fence_requeue_same_index_new_out_fence)
    }),
    ("fence_userptr_stale_token_keeps_replaced_pins", |ctx| {
        on_userptr(ctx, stale_token_keeps_replaced_pins)
    }),
    ("fence_cap_reqbufs", fence_cap_reqbufs),
    ("fence_cap_create_bufs", fence_cap_create_bufs),
    ("fence_legacy_app_unchanged", fence_legacy_app_unchanged),
    (
        "fence_fd_minus1_without_flags_accepted",
        fence_fd_minus1_without_flags_accepted,
    ),
    (
        "fence_fd_5_without_in_fence_einval",
        fence_fd_5_without_in_fence_einval,
    ),
    (
        "fence_fd_minus2_without_in_fence_einval",
        fence_fd_minus2_without_in_fence_einval,
    ),
    (
        "fence_out_fence_with_stray_fd_einval",
        fence_out_fence_with_stray_fd_einval,
    ),
    (
        "fence_in_fence_negative_einval",
        fence_in_fence_negative_einval,
    ),
    (
        "fence_in_fence_closed_fd_einval",
        fence_in_fence_closed_fd_einval,
    ),
    (
        "fence_in_fence_video_fd_einval",
        fence_in_fence_video_fd_einval,
    ),
    (
        "fence_in_fence_eventfd_einval",
        fence_in_fence_eventfd_einval,
    ),
    (
        "fence_in_fence_other_files_einval",
        fence_in_fence_other_files_einval,
    ),
    (
        "fence_in_fence_fd0_sync_file_accepted",
        fence_in_fence_fd0_sync_file_accepted,
    ),
    (
        "fence_out_fence_fd_cloexec_info",
        fence_out_fence_fd_cloexec_info,
    ),
    (
        "fence_out_fence_signals_after_dqbuf",
        fence_out_fence_signals_after_dqbuf,
    ),
    ("fence_out_fence_poll", fence_out_fence_poll),
    (
        "fence_out_fence_fd_only_from_qbuf",
        fence_out_fence_fd_only_from_qbuf,
    ),
    (
        "fence_querybuf_second_fd_no_fd",
        fence_querybuf_second_fd_no_fd,
    ),
    (
        "fence_prepare_buf_fence_flags_einval",
        fence_prepare_buf_fence_flags_einval,
    ),
    ("fence_both_flags_one_buffer", fence_both_flags_one_buffer),
    ("fence_qbuf_fail_bad_index", fence_qbuf_fail_bad_index),
    (
        "fence_qbuf_fail_wrong_type_or_memory",
        fence_qbuf_fail_wrong_type_or_memory,
    ),
    (
        "fence_qbuf_fail_already_queued",
        fence_qbuf_fail_already_queued,
    ),
    (
        "fence_qbuf_fail_invalid_in_fence_with_out_fence",
        fence_qbuf_fail_invalid_in_fence_with_out_fence,
    ),
    ("fence_qbuf_fail_not_owner", fence_qbuf_fail_not_owner),
    ("fence_qbuf_fail_emfile", fence_qbuf_fail_emfile),
    (
        "fence_qbuf_fail_request_fd_with_out_fence",
        fence_qbuf_fail_request_fd_with_out_fence,
    ),
    (
        "fence_qbuf_fail_start_streaming",
        fence_qbuf_fail_start_streaming,
    ),
    (
        "fence_failed_streamon_leaves_no_trace",
        fence_failed_streamon_leaves_no_trace,
    ),
    (
        "fence_start_streaming_fail_from_fence_signal",
        fence_start_streaming_fail_from_fence_signal,
    ),
    (
        "fence_driver_error_out_fence_eio",
        fence_driver_error_out_fence_eio,
    ),
    (
        "fence_in_fence_signalled_ok_at_qbuf",
        fence_in_fence_signalled_ok_at_qbuf,
    ),
    (
        "fence_in_fence_signalled_error_at_qbuf",
        fence_in_fence_signalled_error_at_qbuf,
    ),
    (
        "fence_error_buffer_alone_at_head",
        fence_error_buffer_alone_at_head,
    ),
    (
        "fence_in_fence_signalled_later_ok",
        fence_in_fence_signalled_later_ok,
    ),
    (
        "fence_in_fence_signalled_later_error",
        fence_in_fence_signalled_later_error,
    ),
    (
        "fence_out_of_order_signalling",
        fence_out_of_order_signalling,
    ),
    ("fence_mixed_fenced_unfenced", fence_mixed_fenced_unfenced),
    (
        "fence_streamon_before_fences_ready",
        fence_streamon_before_fences_ready,
    ),
    (
        "fence_merged_in_fence_waits_for_both",
        fence_merged_in_fence_waits_for_both,
    ),
    (
        "fence_merged_in_fence_component_error",
        fence_merged_in_fence_component_error,
    ),
    (
        "fence_merged_in_fence_drops_failed_signalled",
        fence_merged_in_fence_drops_failed_signalled,
    ),
    (
        "fence_in_fence_fd_closed_after_qbuf",
        fence_in_fence_fd_closed_after_qbuf,
    ),
    (
        "fence_self_dependency_edeadlk",
        fence_self_dependency_edeadlk,
    ),
    (
        "fence_self_dependency_merged_edeadlk",
        fence_self_dependency_merged_edeadlk,
    ),
    (
        "fence_never_signalled_streamoff",
        fence_never_signalled_streamoff,
    ),
    ("fence_never_signalled_close", fence_never_signalled_close),
    (
        "fence_never_signalled_reqbufs0",
        fence_never_signalled_reqbufs0,
    ),
    (
        "fence_never_signalled_remove_bufs",
        fence_never_signalled_remove_bufs,
    ),
    (
        "fence_out_fence_cancelled_on_close_without_streamon",
        fence_out_fence_cancelled_on_close_without_streamon,
    ),
    (
        "fence_child_exit_cancels_out_fence",
        fence_child_exit_cancels_out_fence,
    ),
    (
        "fence_streamoff_while_in_driver",
        fence_streamoff_while_in_driver,
    ),
    ("fence_signal_then_close_race", fence_signal_then_close_race),
    (
        "fence_deadline_before_streamon",
        fence_deadline_before_streamon,
    ),
    (
        "fence_deadline_too_few_buffers",
        fence_deadline_too_few_buffers,
    ),
    (
        "fence_deadline_in_fence_never_signalled",
        fence_deadline_in_fence_never_signalled,
    ),
    ("fence_deadline_in_driver", fence_deadline_in_driver),
    (
        "fence_deadline_races_completion",
        fence_deadline_races_completion,
    ),
    (
        "fence_deadline_streamoff_close_race",
        fence_deadline_streamoff_close_race,
    ),
    ("fence_deadline_bound_changed", fence_deadline_bound_changed),
    (
        "fence_ordered_seqno_merge_dedup",
        fence_ordered_seqno_merge_dedup,
    ),
    (
        "fence_ordered_signal_order_timestamps",
        fence_ordered_signal_order_timestamps,
    ),
    (
        "fence_unordered_merge_two_contexts",
        fence_unordered_merge_two_contexts,
    ),
    (
        "fence_unordered_busy_while_allocated",
        fence_unordered_busy_while_allocated,
    ),
    (
        "fence_unordered_then_ordered_contexts",
        fence_unordered_then_ordered_contexts,
    ),
    (
        "fence_create_bufs_with_fences",
        fence_create_bufs_with_fences,
    ),
    (
        "fence_streamoff_streamon_cycles",
        fence_streamoff_streamon_cycles,
    ),
    ("fence_timestamp_consistency", fence_timestamp_consistency),
    (
        "fence_many_consecutive_error_buffers",
        fence_many_consecutive_error_buffers,
    ),
    ("fence_dqbuf_flags_per_kind", fence_dqbuf_flags_per_kind),
    (
        "fence_querybuf_flags_lifecycle",
        fence_querybuf_flags_lifecycle,
    ),
    (
        "fence_requeue_same_index_new_out_fence",
        fence_requeue_same_index_new_out_fence,
    ),
    ("fence_stress_random", fence_stress_random),
];

// ---------------------------------------------------------------------------------------------
// Infrastructure, capability, legacy behaviour
// ---------------------------------------------------------------------------------------------

/// sw_sync works as the tests expect (§6 #47): fences pending until the timeline reaches
/// them, a fence at the current value already signalled, merge, and closing the timeline
/// signals pending fences with -ENOENT (how the tests inject in-fence errors). No fd leaks.
fn fence_sw_sync_selfcheck(_ctx: &mut Ctx) -> TestResult {
    let before = fd_count()?;
    {
        let tl = Timeline::open()?;
        let f1 = tl.create_fence(1)?;
        let f2 = tl.create_fence(2)?;
        expect_pending(&f1, "sw_sync fence 1")?;
        expect_pending(&f2, "sw_sync fence 2")?;
        // Both on one timeline: the merge keeps the later one (same context).
        let m = merge(&f1, &f2, "sw_sync merge")?;
        expect_pending(&m, "merge of two pending sw_sync fences")?;
        tl.inc(1)?;
        let s1 = syncfile::wait_signalled(f1.as_raw_fd(), TIMEOUT, "sw_sync fence 1")?;
        check(s1 == 1, || format!("sw_sync fence 1: {}", status_str(s1)))?;
        expect_pending(&f2, "sw_sync fence 2 after inc(1)")?;
        let f0 = tl.create_fence(1)?;
        check(fstatus(&f0, "fence at the current value")? == 1, || {
            "a sw_sync fence at the timeline's current value is not signalled".into()
        })?;
        tl.close();
        let s2 = syncfile::wait_signalled(f2.as_raw_fd(), TIMEOUT, "sw_sync fence 2")?;
        check(s2 == -libc::ENOENT, || {
            format!(
                "closing the timeline left fence 2 {}, want -ENOENT",
                status_str(s2)
            )
        })?;
        let sm = fstatus(&m, "merged fence")?;
        check(sm < 0, || {
            format!("the merge of fence 1 and 2 is {}", status_str(sm))
        })?;
    }
    same_fd_count(before, "after closing every sw_sync fd")
}

/// REQBUFS reports V4L2_BUF_CAP_SUPPORTS_FENCES (§6 #1, #7: detection is by capability).
fn fence_cap_reqbufs(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::open(ctx)?;
    let r = rig.reqbufs(3)?;
    check(r.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES != 0, || {
        format!(
            "REQBUFS(3) capabilities {:#x} lack V4L2_BUF_CAP_SUPPORTS_FENCES ({:#x})",
            r.capabilities, V4L2_BUF_CAP_SUPPORTS_FENCES
        )
    })?;
    let r0 = rig.reqbufs(0)?;
    check(r0.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES != 0, || {
        format!(
            "REQBUFS(0) capabilities {:#x} lack V4L2_BUF_CAP_SUPPORTS_FENCES",
            r0.capabilities
        )
    })
}

/// CREATE_BUFS reports V4L2_BUF_CAP_SUPPORTS_FENCES, for count 0 (a query) and count 3.
fn fence_cap_create_bufs(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::open(ctx)?;
    let c0 = rig.create_bufs(0)?;
    check(c0.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES != 0, || {
        format!(
            "CREATE_BUFS(0) capabilities {:#x} lack V4L2_BUF_CAP_SUPPORTS_FENCES",
            c0.capabilities
        )
    })?;
    let c = rig.create_bufs(3)?;
    check(c.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES != 0, || {
        format!(
            "CREATE_BUFS(3) capabilities {:#x} lack V4L2_BUF_CAP_SUPPORTS_FENCES",
            c.capabilities
        )
    })?;
    check(c.count == 3, || {
        format!("CREATE_BUFS(3) created {} buffers", c.count)
    })
}

/// A legacy application (flags without fence bits, reserved2 = 0, buffers mapped) sees the
/// usual behaviour: QBUF, QUERYBUF, DQBUF and PREPARE_BUF return fence_fd 0, no fence flag,
/// no new fd (§6 #3).
fn fence_legacy_app_unchanged(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::new(ctx, 4)?;
    rig.map_all()?;
    let before = fd_count()?;
    for i in 0..4 {
        let (b, _) = rig.queue(i, 0, 0)?;
        check(b.flags & (IN | OUT) == 0, || {
            format!("QBUF({i}) returned flags {}", flags_str(b.flags))
        })?;
        check(b.flags & V4L2_BUF_FLAG_QUEUED != 0, || {
            format!(
                "QBUF({i}) returned flags {} without QUEUED",
                flags_str(b.flags)
            )
        })?;
        let q = rig.querybuf(i)?;
        check(fence_fd(&q) == 0 && q.flags & (IN | OUT) == 0, || {
            format!(
                "QUERYBUF({i}): fence_fd {}, flags {}",
                fence_fd(&q),
                flags_str(q.flags)
            )
        })?;
        check(q.flags & V4L2_BUF_FLAG_MAPPED != 0, || {
            format!("QUERYBUF({i}): flags {} without MAPPED", flags_str(q.flags))
        })?;
    }
    rig.streamon()?;
    for i in 0..4 {
        let b = rig.dq_expect(i, false)?;
        check(fence_fd(&b) == 0 && b.flags & (IN | OUT) == 0, || {
            format!(
                "DQBUF({i}): fence_fd {}, flags {}",
                fence_fd(&b),
                flags_str(b.flags)
            )
        })?;
    }
    let p = rig
        .prepare_buf(0, 0, 0)
        .map_err(|e| format!("PREPARE_BUF(0): {e}"))?;
    check(
        fence_fd(&p) == 0 && p.flags & V4L2_BUF_FLAG_PREPARED != 0,
        || {
            format!(
                "PREPARE_BUF(0): fence_fd {}, flags {}",
                fence_fd(&p),
                flags_str(p.flags)
            )
        },
    )?;
    rig.q_plain(0)?;
    rig.dq_expect(0, false)?;
    same_fd_count(before, "legacy streaming")
}

/// fence_fd -1 without any fence flag is accepted, and QBUF returns 0 (§6 #4).
fn fence_fd_minus1_without_flags_accepted(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let before = fd_count()?;
    for i in 0..3 {
        rig.queue(i, 0, -1)?;
        let q = rig.querybuf(i)?;
        check(fence_fd(&q) == 0, || {
            format!(
                "QUERYBUF({i}) after QBUF with fence_fd -1: fence_fd {}",
                fence_fd(&q)
            )
        })?;
    }
    rig.streamon()?;
    let b = rig.dq_expect(0, false)?;
    check(fence_fd(&b) == 0, || {
        format!("DQBUF: fence_fd {}, want 0", fence_fd(&b))
    })?;
    same_fd_count(before, "QBUF/DQBUF with fence_fd -1")
}

/// A stray fence_fd without IN_FENCE is EINVAL: no fd, buffer not queued.
fn stray_fence_fd(ctx: &Ctx, fd: i32) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    rig.q_fail(0, 0, fd, libc::EINVAL, "no fence flag")?;
    rig.expect_flags(0, 0, V4L2_BUF_FLAG_QUEUED, "after the failed QBUF")?;
    // The buffer is still usable.
    rig.q_plain(0)
}

/// fence_fd 5 without IN_FENCE → EINVAL (§6 #4).
fn fence_fd_5_without_in_fence_einval(ctx: &mut Ctx) -> TestResult {
    stray_fence_fd(ctx, 5)
}

/// fence_fd -2 without IN_FENCE → EINVAL (§6 #4).
fn fence_fd_minus2_without_in_fence_einval(ctx: &mut Ctx) -> TestResult {
    stray_fence_fd(ctx, -2)
}

/// OUT_FENCE alone with a fence_fd other than 0/-1 → EINVAL, even if that fd is a sync_file
/// (it is not an in-fence without IN_FENCE).
fn fence_out_fence_with_stray_fd_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    rig.q_fail(0, OUT, 5, libc::EINVAL, "OUT_FENCE with fence_fd 5")?;
    rig.q_fail(0, OUT, -7, libc::EINVAL, "OUT_FENCE with fence_fd -7")?;
    rig.q_fail(
        0,
        OUT,
        f.as_raw_fd(),
        libc::EINVAL,
        "OUT_FENCE with a sync_file fd but no IN_FENCE",
    )?;
    // -1 and 0 are fine with OUT_FENCE.
    rig.q_out(0)?;
    rig.queue(1, OUT, -1)?;
    Ok(())
}

/// IN_FENCE with a negative fence_fd → EINVAL (§6 #5).
fn fence_in_fence_negative_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    for fd in [-1, -2, i32::MIN] {
        rig.q_fail(0, IN, fd, libc::EINVAL, &format!("IN_FENCE, fence_fd {fd}"))?;
        rig.q_fail(
            0,
            IN | OUT,
            fd,
            libc::EINVAL,
            &format!("IN_FENCE|OUT_FENCE, fence_fd {fd}"),
        )?;
    }
    Ok(())
}

/// IN_FENCE with a closed fd → EINVAL (§6 #5).
fn fence_in_fence_closed_fd_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let n = f.as_raw_fd();
    drop(f);
    check(!fd_is_open(n), || {
        format!("fd {n} is still open after close")
    })?;
    rig.q_fail(0, IN, n, libc::EINVAL, "IN_FENCE with a closed fd")
}

/// IN_FENCE with the video fd itself, or another open of the video node → EINVAL (§6 #5).
fn fence_in_fence_video_fd_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    rig.q_fail(0, IN, rig.fd(), libc::EINVAL, "IN_FENCE with the video fd")?;
    let other = Device::open_nonblock(&rig.node).map_err(|e| format!("second open: {e}"))?;
    rig.q_fail(
        0,
        IN | OUT,
        other.as_raw_fd(),
        libc::EINVAL,
        "IN_FENCE|OUT_FENCE with another fd of the video node",
    )
}

/// IN_FENCE with an eventfd → EINVAL (§6 #5).
fn fence_in_fence_eventfd_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let e = eventfd()?;
    rig.q_fail(
        0,
        IN,
        e.as_raw_fd(),
        libc::EINVAL,
        "IN_FENCE with an eventfd",
    )
}

/// IN_FENCE with other files that are not sync_files → EINVAL: both ends of a pipe,
/// /dev/null, a memfd, and a sw_sync timeline fd (which makes fences but is none).
fn fence_in_fence_other_files_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let (r, w) = pipe()?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let name = CString::new("rvb2-fence-test").map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name.
    let memfd = owned(
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) },
        "memfd_create",
    )?;
    let tl = Timeline::open()?;
    for (fd, what) in [
        (r.as_raw_fd(), "a pipe's read end"),
        (w.as_raw_fd(), "a pipe's write end"),
        (null.as_raw_fd(), "/dev/null"),
        (memfd.as_raw_fd(), "a memfd"),
        (tl.as_raw_fd(), "a sw_sync timeline fd"),
    ] {
        rig.q_fail(0, IN, fd, libc::EINVAL, &format!("IN_FENCE with {what}"))?;
    }
    Ok(())
}

/// fd 0 is a valid fence fd: with a sync_file dup'ed onto stdin, IN_FENCE|OUT_FENCE with
/// fence_fd 0 is accepted and the buffer waits for that fence (§6 #5).
fn fence_in_fence_fd0_sync_file_accepted(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = {
        let _stdin = StdinSwap::put(f.as_raw_fd())?;
        rig.q_in_out(0, 0)?
    };
    drop(f);
    rig.expect_flags(
        0,
        V4L2_BUF_FLAG_QUEUED | IN,
        0,
        "waiting for the fd-0 fence",
    )?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for the fd-0 fence")?;
    rig.expect_held("the fd-0 in-fence has not signalled", &[0], &[1, 2])?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    rig.allow_start()?;
    tl.inc(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Out-fence creation and delivery
// ---------------------------------------------------------------------------------------------

/// OUT_FENCE returns a new fd ≥ 0 with FD_CLOEXEC, a sync_file with one pending fence from
/// driver "rvb2", timeline "rvb2-queue"; QUERYBUF shows QUEUED|OUT_FENCE and fence_fd -1
/// (§6 #11).
fn fence_out_fence_fd_cloexec_info(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let before = fd_count()?;
    let out = rig.q_out(0)?;
    same_fd_count(before + 1, "after QBUF with OUT_FENCE (one new fd)")?;
    check(is_cloexec(out.as_raw_fd())?, || {
        format!("out-fence fd {} lacks FD_CLOEXEC", out.as_raw_fd())
    })?;
    let info = syncfile::file_info(out.as_raw_fd())
        .map_err(|e| format!("SYNC_IOC_FILE_INFO(out-fence): {e}"))?;
    check(info.fences.len() == 1 && info.status == 0, || {
        format!("out-fence: {info}, want one pending fence")
    })?;
    let f = &info.fences[0];
    check(
        f.status == 0
            && f.timestamp_ns == 0
            && f.driver_name == "rvb2"
            && f.obj_name == "rvb2-queue",
        || format!("out-fence: {info}, want a pending fence rvb2/rvb2-queue"),
    )?;
    expect_pending(&out, "out-fence of buffer 0")?;
    let q = rig.querybuf(0)?;
    check(
        q.flags & (V4L2_BUF_FLAG_QUEUED | OUT) == V4L2_BUF_FLAG_QUEUED | OUT
            && q.flags & IN == 0
            && fence_fd(&q) == -1,
        || {
            format!(
                "QUERYBUF(0): flags {}, fence_fd {}; want QUEUED|OUT_FENCE, -1",
                flags_str(q.flags),
                fence_fd(&q)
            )
        },
    )?;
    same_fd_count(before + 1, "after QUERYBUF")
}

/// Out-fences are pending until their buffer is done: status 1 when DQBUF returns it, a
/// signal timestamp, and QUERYBUF no longer shows OUT_FENCE (§6 #11, #16).
fn fence_out_fence_signals_after_dqbuf(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let outs = (0..3)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, o) in outs.iter().enumerate() {
        expect_pending(o, &format!("out-fence {i} before STREAMON"))?;
    }
    rig.streamon()?;
    for (i, o) in outs.iter().enumerate() {
        let what = format!("out-fence {i}");
        rig.dq_expect(i as u32, false)?;
        let s = fstatus(o, &what)?;
        check(s == 1, || {
            format!("{what}: {} once its buffer was dequeued", status_str(s))
        })?;
        let f = single_fence(o, &what)?;
        check(f.status == 1 && f.timestamp_ns != 0, || {
            format!(
                "{what}: fence status {}, timestamp {}",
                f.status, f.timestamp_ns
            )
        })?;
        let q = rig.querybuf(i as u32)?;
        check(q.flags & (OUT | IN | V4L2_BUF_FLAG_QUEUED) == 0, || {
            format!("QUERYBUF({i}) after DQBUF: flags {}", flags_str(q.flags))
        })?;
    }
    Ok(())
}

/// poll() on an out-fence: nothing (timeout) before the buffer is done, POLLIN after.
fn fence_out_fence_poll(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    // With the driver's start_streaming set to fail, a QBUF that started it before STREAMON
    // would fail: nothing can then complete buffer 0, and poll() on its out-fence must report
    // nothing now (timeout 0) and its status be pending.
    rig.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1)?;
    let out = rig.q_out(0)?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    expect_pending(&out, "out-fence of buffer 0 before STREAMON")?;
    rig.allow_start()?;
    rig.streamon()?;
    expect_ok(&out, "out-fence of buffer 0")?;
    let rev = syncfile::poll_fd(out.as_raw_fd(), libc::POLLIN, 0)
        .map_err(|e| format!("poll(out-fence): {e}"))?;
    check(rev & libc::POLLIN != 0, || {
        format!("poll(out-fence) once signalled: revents {rev:#x}")
    })?;
    rig.dq_expect(0, false)?;
    Ok(())
}

/// Only QBUF returns an fd: DQBUF, QUERYBUF and PREPARE_BUF give -1 for a buffer last queued
/// with a fence flag, 0 otherwise, and install nothing (§6 #12, #41).
fn fence_out_fence_fd_only_from_qbuf(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let before = fd_count()?;
    let _out0 = rig.q_out(0)?;
    let _out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    let n = before + 2;
    same_fd_count(n, "after two QBUFs with OUT_FENCE")?;
    for (i, want) in [(0, -1), (1, -1), (2, 0)] {
        let q = rig.querybuf(i)?;
        check(fence_fd(&q) == want, || {
            format!("QUERYBUF({i}): fence_fd {}, want {want}", fence_fd(&q))
        })?;
    }
    same_fd_count(n, "after QUERYBUF")?;
    rig.streamon()?;
    for (i, want) in [(0, -1), (1, -1), (2, 0)] {
        let b = rig.dq_expect(i, false)?;
        check(fence_fd(&b) == want, || {
            format!("DQBUF({i}): fence_fd {}, want {want}", fence_fd(&b))
        })?;
    }
    same_fd_count(n, "after DQBUF")?;
    for (i, want) in [(0, -1), (2, 0)] {
        let p = rig
            .prepare_buf(i, 0, 0)
            .map_err(|e| format!("PREPARE_BUF({i}): {e}"))?;
        check(fence_fd(&p) == want, || {
            format!("PREPARE_BUF({i}): fence_fd {}, want {want}", fence_fd(&p))
        })?;
        let q = rig.querybuf(i)?;
        check(fence_fd(&q) == want, || {
            format!(
                "QUERYBUF({i}) of a prepared buffer: fence_fd {}, want {want}",
                fence_fd(&q)
            )
        })?;
    }
    same_fd_count(n, "after PREPARE_BUF")
}

/// QUERYBUF from a second open fd of the node shows the buffer's OUT_FENCE flag and
/// fence_fd -1, and installs nothing; DQBUF from it (not the owner) fails without an fd
/// (§6 #12).
fn fence_querybuf_second_fd_no_fd(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let out0 = rig.q_out(0)?;
    let other = Device::open_nonblock(&rig.node).map_err(|e| format!("second open: {e}"))?;
    let before = fd_count()?;
    let q = querybuf_on(&other, 0).map_err(|e| format!("QUERYBUF(0) on the second fd: {e}"))?;
    check(
        fence_fd(&q) == -1 && q.flags & (V4L2_BUF_FLAG_QUEUED | OUT) == V4L2_BUF_FLAG_QUEUED | OUT,
        || {
            format!(
                "QUERYBUF(0) on the second fd: fence_fd {}, flags {}",
                fence_fd(&q),
                flags_str(q.flags)
            )
        },
    )?;
    let q1 = querybuf_on(&other, 1).map_err(|e| format!("QUERYBUF(1) on the second fd: {e}"))?;
    check(fence_fd(&q1) == 0, || {
        format!("QUERYBUF(1) on the second fd: fence_fd {}", fence_fd(&q1))
    })?;
    let mut b = buffer(0, 0, 0);
    check(other.ioctl(VIDIOC_DQBUF, &mut b).is_err(), || {
        "DQBUF from a fd that does not own the queue succeeded".into()
    })?;
    same_fd_count(before, "QUERYBUF/DQBUF on the second fd")?;
    expect_pending(&out0, "out-fence of buffer 0")
}

/// PREPARE_BUF takes no fence flag: IN_FENCE, OUT_FENCE or both → EINVAL, no fd, buffer not
/// prepared; a prepared buffer can then be queued with OUT_FENCE.
fn fence_prepare_buf_fence_flags_einval(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let before = fd_count()?;
    for (flags, fd) in [(IN, f.as_raw_fd()), (OUT, 0), (IN | OUT, f.as_raw_fd())] {
        let what = format!("PREPARE_BUF(0, flags {})", flags_str(flags));
        match rig.prepare_buf(0, flags, fd) {
            Ok(p) => {
                return Err(format!(
                    "{what} succeeded (fence_fd {}), want EINVAL",
                    fence_fd(&p)
                ))
            }
            Err(e) => check(e.0 == libc::EINVAL, || format!("{what}: {e}, want EINVAL"))?,
        }
        same_fd_count(before, &what)?;
        rig.expect_flags(0, 0, V4L2_BUF_FLAG_PREPARED | V4L2_BUF_FLAG_QUEUED, &what)?;
    }
    let p = rig
        .prepare_buf(0, 0, 0)
        .map_err(|e| format!("PREPARE_BUF(0): {e}"))?;
    check(fence_fd(&p) == 0, || {
        format!("PREPARE_BUF(0): fence_fd {}", fence_fd(&p))
    })?;
    let out = rig.q_out(0)?;
    expect_pending(&out, "out-fence of the prepared buffer")
}

/// IN_FENCE and OUT_FENCE on one buffer: fence_fd carries the in-fence in and a new
/// out-fence out; QUERYBUF shows both flags; the buffer waits for the in-fence and its
/// out-fence signals once done (§6 #41, 2.8).
fn fence_both_flags_one_buffer(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out = rig.q_in_out(0, f.as_raw_fd())?;
    check(out.as_raw_fd() != f.as_raw_fd(), || {
        "the out-fence fd is the in-fence fd".into()
    })?;
    check(is_cloexec(out.as_raw_fd())?, || {
        "out-fence fd lacks FD_CLOEXEC".into()
    })?;
    expect_pending(&out, "out-fence of buffer 0")?;
    let q = rig.querybuf(0)?;
    check(
        q.flags & (IN | OUT | V4L2_BUF_FLAG_QUEUED) == IN | OUT | V4L2_BUF_FLAG_QUEUED
            && fence_fd(&q) == -1,
        || {
            format!(
                "QUERYBUF(0): flags {}, fence_fd {}; want QUEUED|IN_FENCE|OUT_FENCE, -1",
                flags_str(q.flags),
                fence_fd(&q)
            )
        },
    )?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for its in-fence")?;
    rig.expect_held("buffer 0's in-fence has not signalled", &[0], &[1, 2])?;
    expect_pending(&out, "out-fence of buffer 0")?;
    rig.allow_start()?;
    tl.inc(1)?;
    let b = rig.dq_expect(0, false)?;
    check(fence_fd(&b) == -1 && b.flags & (IN | OUT) == 0, || {
        format!(
            "DQBUF(0): fence_fd {}, flags {}",
            fence_fd(&b),
            flags_str(b.flags)
        )
    })?;
    expect_ok(&out, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Failing QBUF with OUT_FENCE: no fd, no state change (§6 #13, #14)
// ---------------------------------------------------------------------------------------------

/// QBUF with OUT_FENCE of an index that does not exist → EINVAL, no fd.
fn fence_qbuf_fail_bad_index(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    for index in [rig.count, 31, 32, 1000, u32::MAX] {
        rig.q_fail(index, OUT, 0, libc::EINVAL, "index out of range")?;
        rig.q_fail(
            index,
            IN | OUT,
            f.as_raw_fd(),
            libc::EINVAL,
            "index out of range, with an in-fence",
        )?;
    }
    Ok(())
}

/// QBUF with OUT_FENCE and a wrong buffer type or memory type → EINVAL, no fd, buffer 0 not
/// queued.
fn fence_qbuf_fail_wrong_type_or_memory(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let dev = rig.dev()?;
    for (type_, memory, what) in [
        (
            V4L2_BUF_TYPE_VIDEO_OUTPUT,
            V4L2_MEMORY_MMAP,
            "type VIDEO_OUTPUT",
        ),
        (0, V4L2_MEMORY_MMAP, "type 0"),
        (
            V4L2_BUF_TYPE_VIDEO_CAPTURE,
            V4L2_MEMORY_USERPTR,
            "memory USERPTR",
        ),
        (
            V4L2_BUF_TYPE_VIDEO_CAPTURE,
            V4L2_MEMORY_DMABUF,
            "memory DMABUF",
        ),
        (V4L2_BUF_TYPE_VIDEO_CAPTURE, 0, "memory 0"),
    ] {
        let mut b = buffer(0, OUT, 0);
        b.type_ = type_;
        b.memory = memory;
        expect_qbuf_fails(dev, dev, b, Some(libc::EINVAL), what)?;
    }
    rig.expect_flags(0, 0, V4L2_BUF_FLAG_QUEUED | OUT, "after the failed QBUFs")
}

/// QBUF with OUT_FENCE of a buffer that is already queued → EINVAL, no fd; the first
/// out-fence stays pending and the buffer stays queued (§6 #38: no second out-fence for a
/// queued buffer).
fn fence_qbuf_fail_already_queued(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_out(0)?;
    rig.q_fail(0, OUT, 0, libc::EINVAL, "buffer already queued")?;
    rig.q_fail(
        0,
        IN | OUT,
        f.as_raw_fd(),
        libc::EINVAL,
        "buffer already queued, with an in-fence",
    )?;
    rig.q_fail(0, 0, 0, libc::EINVAL, "buffer already queued, no fence")?;
    expect_pending(&out0, "the first out-fence of buffer 0")?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | OUT, IN, "still queued once")
}

/// An invalid in-fence together with OUT_FENCE → EINVAL and no out-fence fd (§6 #14).
fn fence_qbuf_fail_invalid_in_fence_with_out_fence(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let e = eventfd()?;
    let (r, _w) = pipe()?;
    let closed = {
        let tl = Timeline::open()?;
        let f = tl.create_fence(1)?;
        f.as_raw_fd()
    };
    check(!fd_is_open(closed), || format!("fd {closed} still open"))?;
    for (fd, what) in [
        (e.as_raw_fd(), "an eventfd"),
        (r.as_raw_fd(), "a pipe"),
        (-1, "-1"),
        (closed, "a closed fd"),
        (rig.fd(), "the video fd"),
    ] {
        rig.q_fail(
            0,
            IN | OUT,
            fd,
            libc::EINVAL,
            &format!("IN_FENCE|OUT_FENCE with {what}"),
        )?;
    }
    Ok(())
}

/// QBUF with OUT_FENCE on a fd that does not own the queue → EBUSY, no fd, buffer not
/// queued.
fn fence_qbuf_fail_not_owner(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let other = Device::open_nonblock(&rig.node).map_err(|e| format!("second open: {e}"))?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let dev = rig.dev()?;
    expect_qbuf_fails(
        &other,
        dev,
        buffer(0, OUT, 0),
        Some(libc::EBUSY),
        "QBUF with OUT_FENCE from a fd that does not own the queue",
    )?;
    expect_qbuf_fails(
        &other,
        dev,
        buffer(0, IN | OUT, f.as_raw_fd()),
        Some(libc::EBUSY),
        "QBUF with IN_FENCE|OUT_FENCE from a fd that does not own the queue",
    )?;
    rig.expect_flags(0, 0, V4L2_BUF_FLAG_QUEUED, "after the non-owner's QBUFs")?;
    rig.q_out(0).map(|_| ())
}

/// With RLIMIT_NOFILE lowered so that no fd is free, QBUF with OUT_FENCE → EMFILE, no fd,
/// buffer not queued; it works again once the limit is restored (§6 #13).
fn fence_qbuf_fail_emfile(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let before = fd_count()?;
    let state_before = rig.querybuf(0)?.flags & STATE_FLAGS;
    let lowest = lowest_free_fd();
    let r = {
        let _limit = NofileLimit::lower_to(lowest as u64)?;
        rig.qbuf(0, OUT, 0)
    };
    match r {
        Ok(b) => {
            let fd = fence_fd(&b);
            if fd >= 0 && fd != rig.fd() {
                // SAFETY: the QBUF installed it; do not leak it.
                unsafe { libc::close(fd) };
            }
            return Err(format!(
                "QBUF with OUT_FENCE and RLIMIT_NOFILE {lowest} succeeded (fence_fd {fd}), \
                 want EMFILE"
            ));
        }
        Err(e) => check(e.0 == libc::EMFILE, || {
            format!("QBUF with OUT_FENCE and no free fd: {e}, want EMFILE")
        })?,
    }
    same_fd_count(before, "after the EMFILE QBUF")?;
    let state_after = rig.querybuf(0)?.flags & STATE_FLAGS;
    check(state_after == state_before, || {
        format!(
            "the EMFILE QBUF changed buffer 0: flags {} before, {} after",
            flags_str(state_before),
            flags_str(state_after)
        )
    })?;
    let out = rig.q_out(0)?;
    expect_pending(&out, "out-fence once the limit is restored")
}

/// QBUF with OUT_FENCE and V4L2_BUF_FLAG_REQUEST_FD (the queue has no requests) fails,
/// installing no fd (§6 #9).
fn fence_qbuf_fail_request_fd_with_out_fence(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let dev = rig.dev()?;
    let mut b = buffer(0, OUT | V4L2_BUF_FLAG_REQUEST_FD, 0);
    b.request_fd = 0;
    expect_qbuf_fails(dev, dev, b, None, "QBUF with OUT_FENCE|REQUEST_FD")?;
    let mut b = buffer(0, OUT | V4L2_BUF_FLAG_REQUEST_FD, -1);
    b.request_fd = -1;
    expect_qbuf_fails(
        dev,
        dev,
        b,
        None,
        "QBUF with OUT_FENCE|REQUEST_FD, fence_fd -1",
    )
}

/// start_streaming failing in the QBUF that starts it (RVIVID_CID_FAIL_START_STREAMING):
/// STREAMON with nothing queued, QBUF 0 with OUT_FENCE succeeds, QBUF 1 with OUT_FENCE fails
/// with EIO installing no fd and leaving buffer 1 dequeued; buffer 0 stays queued with its
/// out-fence pending, which STREAMOFF then cancels. Streaming works again afterwards
/// (§6 #14).
fn fence_qbuf_fail_start_streaming(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    rig.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1)?;
    rig.streamon()?;
    let out0 = rig.q_out(0)?;
    rig.q_fail(
        1,
        OUT,
        0,
        libc::EIO,
        "the QBUF that starts streaming, start_streaming failing",
    )?;
    rig.expect_flags(1, 0, V4L2_BUF_FLAG_QUEUED | OUT, "buffer 1 after the EIO")?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | OUT, 0, "buffer 0 after the EIO")?;
    expect_pending(&out0, "out-fence of buffer 0 after the failed start")?;
    rig.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 0)?;
    rig.streamoff()?;
    expect_cancelled(&out0, "out-fence of buffer 0 after STREAMOFF")?;
    rig.expect_flags(0, 0, V4L2_BUF_FLAG_QUEUED | OUT, "buffer 0 after STREAMOFF")?;
    // Recovery: a normal stream.
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    rig.streamon()?;
    rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence of buffer 1 once streaming works")?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// A STREAMON that fails (start_streaming) leaves no trace (issue 12): a buffer whose in-fence
/// had failed stays QUEUED, not completed, and its out-fence pending, like the buffers behind
/// it. Once STREAMON works, it comes back first with ERROR and its out-fence signals an error;
/// the buffers behind it carry the stream's first frames, sequence 0 and 1.
fn fence_failed_streamon_leaves_no_trace(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let f = {
        let tl = Timeline::open()?;
        tl.create_fence(1)?
    };
    check(fstatus(&f, "in-fence")? < 0, || {
        "closing the timeline did not fail its fence".into()
    })?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    rig.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1)?;
    match rig.dev()?.streamon() {
        Err(e) if e.0 == libc::EIO => {}
        other => {
            return Err(format!(
                "STREAMON with start_streaming failing: {other:?}, want EIO"
            ))
        }
    }
    for i in 0..3 {
        rig.expect_flags(
            i,
            V4L2_BUF_FLAG_QUEUED,
            V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR,
            "after the failed STREAMON",
        )?;
    }
    expect_pending(
        &out0,
        "out-fence of buffer 0 (in-fence failed) after the failed STREAMON",
    )?;
    expect_pending(&out1, "out-fence of buffer 1 after the failed STREAMON")?;
    rig.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 0)?;
    rig.streamon()?;
    rig.dq_expect(0, true)?;
    expect_error(&out0, "out-fence of buffer 0 once STREAMON worked")?;
    let b1 = rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence of buffer 1 once STREAMON worked")?;
    let b2 = rig.dq_expect(2, false)?;
    check(b1.sequence == 0 && b2.sequence == 1, || {
        format!(
            "the first frames after the failed STREAMON: sequence {} and {}, want 0 and 1",
            b1.sequence, b2.sequence
        )
    })
}

/// start_streaming failing when an in-fence signal makes enough buffers ready (§6 #34): the
/// queued buffers come back with ERROR, in order, and their out-fences signal with an error.
fn fence_start_streaming_fail_from_fence_signal(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    rig.set_ctrl(RVIVID_CID_FAIL_START_STREAMING, 1)?;
    rig.streamon()?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    expect_pending(&out0, "out-fence 0 before the in-fence signals")?;
    expect_pending(&out1, "out-fence 1 before the in-fence signals")?;
    tl.inc(1)?;
    expect_error(&out0, "out-fence 0 after start_streaming failed")?;
    expect_error(&out1, "out-fence 1 after start_streaming failed")?;
    rig.dq_expect(0, true)?;
    rig.dq_expect(1, true)?;
    Ok(())
}

/// A buffer the driver fails (RVIVID_CID_FAIL_NEXT_BUFFERS = 1) comes back with ERROR and its
/// out-fence signals -EIO; the next ones are fine (§6 #16).
fn fence_driver_error_out_fence_eio(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    rig.set_ctrl(RVIVID_CID_FAIL_NEXT_BUFFERS, 1)?;
    let outs = (0..3)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    rig.streamon()?;
    rig.dq_expect(0, true)?;
    let s = fstatus(&outs[0], "out-fence 0")?;
    check(s == -libc::EIO, || {
        format!(
            "out-fence of the failed buffer: {}, want -EIO",
            status_str(s)
        )
    })?;
    let rev = syncfile::poll_fd(outs[0].as_raw_fd(), libc::POLLIN, 0)
        .map_err(|e| format!("poll(out-fence 0): {e}"))?;
    check(rev & libc::POLLIN != 0, || {
        format!("poll() on an error-signalled out-fence: revents {rev:#x}, want POLLIN")
    })?;
    for (i, o) in outs.iter().enumerate().skip(1) {
        rig.dq_expect(i as u32, false)?;
        expect_ok(o, &format!("out-fence {i}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// In-fences
// ---------------------------------------------------------------------------------------------

/// An in-fence already signalled at QBUF: the buffer is processed as if unfenced (§6 #21).
fn fence_in_fence_signalled_ok_at_qbuf(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    tl.inc(1)?;
    let f = tl.create_fence(1)?;
    check(fstatus(&f, "in-fence")? == 1, || {
        "the in-fence is not signalled".into()
    })?;
    rig.q_in(0, f.as_raw_fd())?;
    let out1 = rig.q_in_out(1, f.as_raw_fd())?;
    rig.q_plain(2)?;
    rig.streamon()?;
    let b = rig.dq_expect(0, false)?;
    check(fence_fd(&b) == -1, || {
        format!("DQBUF(0): fence_fd {}, want -1", fence_fd(&b))
    })?;
    rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence of buffer 1")?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// An in-fence already signalled with an error at QBUF: QBUF succeeds, the buffer never
/// reaches the driver and DQBUF returns it with ERROR, in order; its out-fence signals an
/// error; the buffer is reusable (§6 #22, as this contract decides it).
fn fence_in_fence_signalled_error_at_qbuf(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let f = {
        let tl = Timeline::open()?;
        tl.create_fence(1)?
    };
    let s = fstatus(&f, "in-fence")?;
    check(s < 0, || {
        format!("closing the timeline left the fence {}", status_str(s))
    })?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    rig.streamon()?;
    rig.dq_expect(0, true)?;
    expect_error(&out0, "out-fence of buffer 0 (failed in-fence)")?;
    rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence of buffer 1")?;
    rig.dq_expect(2, false)?;
    // Reusable.
    rig.q_plain(0)?;
    rig.q_plain(3)?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(3, false)?;
    Ok(())
}

/// A fence-failed buffer at the head of the queue, with nothing in the driver before it, is
/// still returned: once when the in-fence fails while waiting, once when it had failed
/// before QBUF (§6 #25).
fn fence_error_buffer_alone_at_head(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    rig.streamon()?;
    // Alone in the queue, buffer 0 cannot start the driver (two are needed): only the queue
    // itself could complete it, in STREAMON, which this sees at once.
    rig.expect_held("the in-fence is pending", &[0], &[])?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    tl.close();
    rig.dq_expect(0, true)?;
    expect_error(&out0, "out-fence of buffer 0")?;
    // Already failed at QBUF, alone in the queue.
    let out1 = rig.q_in_out(1, f.as_raw_fd())?;
    rig.dq_expect(1, true)?;
    expect_error(&out1, "out-fence of buffer 1")?;
    Ok(())
}

/// An in-fence signalled later: nothing reaches the driver before (DQBUF → EAGAIN, QUERYBUF
/// shows IN_FENCE, later buffers stay queued), then everything arrives in QBUF order
/// (§6 #23, #31, #40).
fn fence_in_fence_signalled_later_ok(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for its in-fence")?;
    rig.expect_held("buffer 0's in-fence has not signalled", &[0], &[1, 2])?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | IN, V4L2_BUF_FLAG_DONE, "waiting")?;
    rig.expect_flags(1, V4L2_BUF_FLAG_QUEUED, V4L2_BUF_FLAG_DONE, "held back")?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    rig.allow_start()?;
    tl.inc(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    rig.expect_flags(0, 0, IN | OUT | V4L2_BUF_FLAG_QUEUED, "dequeued")
}

/// An in-fence that signals later with an error (its timeline is closed): the buffer comes
/// back with ERROR in its turn, its out-fence errors, later buffers are fine (§6 #24).
fn fence_in_fence_signalled_later_error(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for its in-fence")?;
    rig.expect_held("buffer 0's in-fence has not signalled", &[0], &[1, 2])?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    expect_pending(&out1, "out-fence of buffer 1")?;
    rig.allow_start()?;
    tl.close();
    rig.dq_expect(0, true)?;
    expect_error(&out0, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence of buffer 1")?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// Out-of-order signalling: A(fA), B(fB), then C (no fence); fB signals first → nothing
/// reaches the driver; then fA → A, B, C in order (§6 #27).
fn fence_out_of_order_signalling(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let t1 = Timeline::open()?;
    let t2 = Timeline::open()?;
    let fa = t1.create_fence(1)?;
    let fb = t2.create_fence(1)?;
    rig.q_in(0, fa.as_raw_fd())?;
    rig.q_in(1, fb.as_raw_fd())?;
    rig.streamon_unstarted("A and B wait for their in-fences")?;
    rig.expect_held("no in-fence signalled", &[0, 1], &[])?;
    t2.inc(1)?;
    let s = fstatus(&fb, "fB")?;
    check(s == 1, || {
        format!("fB after SW_SYNC_IOC_INC: {}", status_str(s))
    })?;
    // The queue takes in fB's signal in a work item, which changes nothing visible when it
    // is right (A still waits, nothing is ready). QBUF of C runs the same step at once
    // (settle the signalled in-fences from the head, start the driver once two buffers are
    // ready): it succeeds only if fB made nothing ready ahead of A, as the driver's
    // start_streaming is still set to fail.
    rig.q_plain(2)
        .map_err(|e| format!("QBUF of C after fB signalled (A still waits): {e}"))?;
    rig.expect_held("fB signalled but fA (ahead of it) has not", &[0], &[1, 2])?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | IN, 0, "A waits for fA")?;
    rig.allow_start()?;
    t1.inc(1)?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// Unfenced buffers queued after a pending fenced buffer wait for it (§6 #28).
fn fence_mixed_fenced_unfenced(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 5)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    rig.q_plain(0)?;
    rig.q_plain(1)?;
    let out2 = rig.q_in_out(2, f.as_raw_fd())?;
    rig.q_plain(3)?;
    rig.q_plain(4)?;
    rig.streamon()?;
    let b0 = rig.dq_expect(0, false)?;
    let b1 = rig.dq_expect(1, false)?;
    let why = "buffers 3 and 4 are behind the pending buffer 2";
    rig.expect_held(why, &[2], &[3, 4])?;
    expect_pending(&out2, "out-fence of buffer 2")?;
    // The driver runs: it completed buffers 0 and 1 on consecutive frames. Had the queue also
    // handed it buffer 2 (and 3, 4), it would complete 2 on its next frame, whether or not
    // the in-fence signalled. So the fence is held until two of the driver's frame periods,
    // as buffers 0 and 1 measured it, have passed since buffer 1, and the state is checked
    // again; then buffers 2, 3 and 4 must all be completed after the in-fence signalled
    // (their timestamps, below), which a buffer completed on that next frame would not be.
    let period = buf_ns(&b1).saturating_sub(buf_ns(&b0)).max(1_000_000);
    let until = buf_ns(&b1) + 2 * period;
    let now = monotonic_ns();
    if now < until {
        std::thread::sleep(Duration::from_nanos(until - now));
    }
    rig.expect_held(why, &[2], &[3, 4])?;
    expect_pending(&out2, "out-fence of buffer 2")?;
    tl.inc(1)?;
    let signalled = single_fence(&f, "in-fence of buffer 2")?.timestamp_ns;
    // Buffer timestamps have microseconds.
    let signalled_us = signalled - signalled % 1_000;
    for i in 2..5 {
        let b = rig.dq_expect(i, false)?;
        check(buf_ns(&b) >= signalled_us, || {
            format!(
                "buffer {i} was completed at {} ns, before buffer 2's in-fence signalled \
                 ({signalled} ns)",
                buf_ns(&b)
            )
        })?;
    }
    expect_ok(&out2, "out-fence of buffer 2")?;
    let o2 = single_fence(&out2, "out-fence of buffer 2")?;
    check(o2.timestamp_ns >= signalled, || {
        format!(
            "out-fence of buffer 2 signalled at {} ns, before its in-fence ({signalled} ns)",
            o2.timestamp_ns
        )
    })
}

/// STREAMON with fewer ready buffers than needed because of pending in-fences: streaming
/// starts from the fence-signal path once two are ready (§6 #33).
fn fence_streamon_before_fences_ready(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let t1 = Timeline::open()?;
    let t2 = Timeline::open()?;
    let f1 = t1.create_fence(1)?;
    let f2 = t2.create_fence(1)?;
    let out0 = rig.q_in_out(0, f1.as_raw_fd())?;
    let out1 = rig.q_in_out(1, f2.as_raw_fd())?;
    rig.streamon_unstarted("both buffers wait for their in-fences")?;
    rig.expect_held("no in-fence signalled", &[0, 1], &[])?;
    t1.inc(1)?;
    // Once QUERYBUF(0) drops IN_FENCE the queue has taken in f1's signal and decided, in the
    // same step, not to start the driver with one ready buffer: a start would have failed
    // (start_streaming is still set to fail) and completed both buffers with ERROR.
    rig.wait_in_fence_settled(0, "buffer 0")?;
    rig.expect_held("only one buffer is ready (two are needed)", &[1], &[0])?;
    expect_pending(&out0, "out-fence 0")?;
    expect_pending(&out1, "out-fence 1")?;
    rig.allow_start()?;
    t2.inc(1)?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(1, false)?;
    expect_ok(&out0, "out-fence 0")?;
    expect_ok(&out1, "out-fence 1")
}

/// A merged in-fence (two sw_sync timelines) waits for both components (§6 #29).
fn fence_merged_in_fence_waits_for_both(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let t1 = Timeline::open()?;
    let t2 = Timeline::open()?;
    let m = {
        let f1 = t1.create_fence(1)?;
        let f2 = t2.create_fence(1)?;
        merge(&f1, &f2, "in-fence merge")?
    };
    check(num_fences(&m, "merged in-fence")? == 2, || {
        "the merge of two timelines' fences does not hold two fences".into()
    })?;
    let out0 = rig.q_in_out(0, m.as_raw_fd())?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for the merged in-fence")?;
    rig.expect_held("no component signalled", &[0], &[1, 2])?;
    t1.inc(1)?;
    expect_merge_pending(&m)?;
    rig.expect_held(
        "one component of the merged in-fence is pending",
        &[0],
        &[1, 2],
    )?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | IN, 0, "half-signalled merge")?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    rig.allow_start()?;
    t2.inc(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// A merged in-fence one of whose components fails: the buffer comes back with ERROR
/// (§6 #29).
fn fence_merged_in_fence_component_error(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let t1 = Timeline::open()?;
    let t2 = Timeline::open()?;
    let f1 = t1.create_fence(1)?;
    let f2 = t2.create_fence(1)?;
    let m = merge(&f1, &f2, "in-fence merge")?;
    let out0 = rig.q_in_out(0, m.as_raw_fd())?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for the merged in-fence")?;
    t1.inc(1)?;
    expect_merge_pending(&m)?;
    rig.expect_held("one component is pending", &[0], &[1, 2])?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    rig.allow_start()?;
    t2.close();
    rig.dq_expect(0, true)?;
    expect_error(&out0, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// Merging a fence that already failed with a pending one keeps only the pending one
/// (dma_fence_unwrap_merge drops signalled fences, errors included), so the buffer is
/// processed normally once that one signals (§6 #29, "document").
fn fence_merged_in_fence_drops_failed_signalled(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let t1 = Timeline::open()?;
    let failed = {
        let t2 = Timeline::open()?;
        t2.create_fence(1)?
    };
    check(fstatus(&failed, "failed fence")? < 0, || {
        "the fence of a closed timeline did not fail".into()
    })?;
    let pending = t1.create_fence(1)?;
    let m = merge(&failed, &pending, "failed+pending")?;
    let n = num_fences(&m, "failed+pending merge")?;
    let s = fstatus(&m, "failed+pending merge")?;
    check(n == 1 && s == 0, || {
        format!(
            "merge of a failed and a pending fence: {n} fence(s), {}; the kernel's merge \
             should keep only the pending fence",
            status_str(s)
        )
    })?;
    let out0 = rig.q_in_out(0, m.as_raw_fd())?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for the pending component")?;
    rig.expect_held("the pending component", &[0], &[1, 2])?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    rig.allow_start()?;
    t1.inc(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence of buffer 0")
}

/// The in-fence fd closed right after QBUF: the queue keeps its own reference, still waits,
/// and nothing leaks once done (§6 #30).
fn fence_in_fence_fd_closed_after_qbuf(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let before = fd_count()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    drop(f);
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon_unstarted("buffer 0 waits for the closed fd's fence")?;
    rig.expect_held("the closed in-fence fd's fence is pending", &[0], &[1, 2])?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | IN, 0, "waiting")?;
    expect_pending(&out0, "out-fence of buffer 0")?;
    rig.allow_start()?;
    tl.inc(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence of buffer 0")?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    drop(out0);
    same_fd_count(
        before,
        "after the buffers came back and the out-fence was closed",
    )
}

/// An in-fence that is this queue's own pending out-fence is refused with EDEADLK (§6 #32
/// within one queue): buffer 1 would wait for buffer 0's out-fence, which waits for buffer 0,
/// which waits for a second ready buffer to start streaming. Nothing changes and no fd is
/// installed; the same buffers then stream normally, and once signalled the same fence is an
/// ordinary in-fence.
fn fence_self_dependency_edeadlk(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let out0 = rig.q_out(0)?;
    rig.streamon()?;
    let fd = out0.as_raw_fd();
    rig.q_fail(1, IN, fd, libc::EDEADLK, "in-fence = own out-fence")?;
    rig.q_fail(
        1,
        IN | OUT,
        fd,
        libc::EDEADLK,
        "in-fence = own out-fence, OUT",
    )?;
    expect_pending(&out0, "out-fence 0 after the refused QBUFs")?;
    rig.expect_flags(1, 0, V4L2_BUF_FLAG_QUEUED | IN | OUT, "refused")?;
    rig.q_plain(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence 0")?;
    rig.dq_expect(1, false)?;
    rig.q_in(2, fd)?;
    rig.q_plain(3)?;
    rig.dq_expect(2, false)?;
    rig.dq_expect(3, false)?;
    Ok(())
}

/// A merged in-fence that contains a pending out-fence of this queue is EDEADLK too: merged
/// with a sw_sync fence (a `dma_fence_array`), and two of the queue's own out-fences (on an
/// ordered queue the merge keeps the later one; on an unordered queue, whose fences have a
/// context each, an array of both). Once the queue's component signalled, the same merge is
/// accepted.
fn fence_self_dependency_merged_edeadlk(ctx: &mut Ctx) -> TestResult {
    {
        let rig = Rig::new(ctx, 4)?;
        let tl = Timeline::open()?;
        let t1 = tl.create_fence(1)?;
        let out0 = rig.q_out(0)?;
        let m = merge(&t1, &out0, "sw_sync + own out-fence")?;
        check(num_fences(&m, "sw_sync + own out-fence")? == 2, || {
            "the merge of a sw_sync fence and an out-fence does not hold two fences".into()
        })?;
        rig.q_fail(1, IN | OUT, m.as_raw_fd(), libc::EDEADLK, "merge with own")?;
        let out1 = rig.q_out(1)?;
        let both = merge(&out0, &out1, "own + own (ordered)")?;
        rig.q_fail(
            2,
            IN,
            both.as_raw_fd(),
            libc::EDEADLK,
            "merge of own (ordered)",
        )?;
        rig.streamon()?;
        rig.dq_expect(0, false)?;
        rig.dq_expect(1, false)?;
        expect_ok(&out0, "out-fence 0")?;
        rig.q_in(2, m.as_raw_fd())?;
        rig.q_plain(3)?;
        rig.expect_held("the sw_sync component pends", &[2], &[3])?;
        tl.inc(1)?;
        rig.dq_expect(2, false)?;
        rig.dq_expect(3, false)?;
    }
    let mut rig = Rig::open(ctx)?;
    rig.set_ctrl(RVIVID_CID_UNORDERED, 1)?;
    rig.reqbufs(3)?;
    let out0 = rig.q_out(0)?;
    let out1 = rig.q_out(1)?;
    let both = merge(&out0, &out1, "own + own (unordered)")?;
    check(num_fences(&both, "own + own (unordered)")? == 2, || {
        "two unordered out-fences merge into fewer than two fences".into()
    })?;
    rig.q_fail(
        2,
        IN | OUT,
        both.as_raw_fd(),
        libc::EDEADLK,
        "merge (unordered)",
    )
}

// ---------------------------------------------------------------------------------------------
// In-fences that never signal; cancellation and lifetime (§6 #31, #35-#37)
// ---------------------------------------------------------------------------------------------

/// Runs `f` and fails if it took longer than 2 s (nothing may hang on a pending fence).
fn quick<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let start = Instant::now();
    let r = f()?;
    let took = start.elapsed();
    check(took < Duration::from_secs(2), || {
        format!("{what} took {} ms", took.as_millis())
    })?;
    Ok(r)
}

/// A never-signalled in-fence, then STREAMOFF: DQBUF gives EAGAIN and poll() no POLLIN while
/// it waits; STREAMOFF returns at once; every out-fence (the waiting buffer's and those held
/// behind it) signals -ECANCELED; a later signal of the in-fence is harmless and the queue
/// works again (§6 #31, #36 b/c).
fn fence_never_signalled_streamoff(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    let out2 = rig.q_out(2)?;
    rig.streamon_unstarted("buffer 0 waits for its in-fence")?;
    rig.expect_held("the in-fence never signals", &[0], &[1, 2])?;
    for (i, o) in [&out0, &out1, &out2].iter().enumerate() {
        expect_pending(o, &format!("out-fence of buffer {i}"))?;
    }
    rig.allow_start()?;
    quick("STREAMOFF with a pending in-fence", || rig.streamoff())?;
    expect_cancelled(&out0, "out-fence of the waiting buffer 0")?;
    expect_cancelled(&out1, "out-fence of buffer 1 (held behind 0)")?;
    expect_cancelled(&out2, "out-fence of buffer 2 (held behind 0)")?;
    for i in 0..3 {
        rig.expect_flags(i, 0, V4L2_BUF_FLAG_QUEUED | IN | OUT, "after STREAMOFF")?;
    }
    late_signal(&tl, &f)?;
    rig.expect_flags(
        0,
        0,
        V4L2_BUF_FLAG_QUEUED | IN | OUT,
        "after the late signal",
    )?;
    for i in 0..3 {
        rig.q_plain(i)?;
    }
    rig.streamon()?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(1, false)?;
    Ok(())
}

/// A never-signalled in-fence, then close() of the video fd: close returns at once and the
/// out-fences (checked through a dup, the original fd closed first) signal -ECANCELED; the
/// late in-fence signal is harmless and the device can be used again (§6 #31, #37).
fn fence_never_signalled_close(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    let kept = dup(out0.as_raw_fd())?;
    drop(out0);
    rig.streamon_unstarted("buffer 0 waits for its in-fence")?;
    rig.expect_held("the in-fence never signals", &[0], &[1])?;
    expect_pending(&kept, "out-fence of buffer 0 (dup)")?;
    expect_pending(&out1, "out-fence of buffer 1")?;
    rig.allow_start()?;
    quick("close() of the video fd with a pending in-fence", || {
        rig.close_device();
        Ok(())
    })?;
    expect_cancelled(&kept, "out-fence of buffer 0 (dup) after close")?;
    expect_cancelled(&out1, "out-fence of buffer 1 after close")?;
    late_signal(&tl, &f)?;
    let again = Rig::new(ctx, 3)?;
    for i in 0..3 {
        again.q_plain(i)?;
    }
    again.streamon()?;
    again.dq_expect(0, false)?;
    Ok(())
}

/// A never-signalled in-fence, then REQBUFS(0) (not streaming): it returns at once and the
/// out-fences signal -ECANCELED; the late signal is harmless; REQBUFS again works
/// (§6 #35, #37).
fn fence_never_signalled_reqbufs0(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    quick("REQBUFS(0) with a pending in-fence", || {
        rig.reqbufs(0).map(|_| ())
    })?;
    expect_cancelled(&out0, "out-fence of buffer 0 after REQBUFS(0)")?;
    expect_cancelled(&out1, "out-fence of buffer 1 after REQBUFS(0)")?;
    late_signal(&tl, &f)?;
    rig.reqbufs(3)?;
    for i in 0..3 {
        rig.q_plain(i)?;
    }
    rig.streamon()?;
    rig.dq_expect(0, false)?;
    Ok(())
}

/// REMOVE_BUFS of a buffer waiting for a never-signalled in-fence → EBUSY (also as part of a
/// range), its out-fence stays pending; others can be removed; after STREAMOFF (-ECANCELED)
/// it can be removed, the late signal is harmless and the remaining buffers stream (§6 #37).
fn fence_never_signalled_remove_bufs(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    rig.streamon()?;
    for (index, count) in [(0, 1), (0, 2)] {
        match rig.remove_bufs(index, count) {
            Ok(()) => {
                return Err(format!(
                    "REMOVE_BUFS({index}, {count}) of a queued buffer succeeded, want EBUSY"
                ))
            }
            Err(e) => check(e.0 == libc::EBUSY, || {
                format!("REMOVE_BUFS({index}, {count}) of a queued buffer: {e}, want EBUSY")
            })?,
        }
    }
    expect_pending(&out0, "out-fence of buffer 0 after the refused REMOVE_BUFS")?;
    rig.remove_bufs(3, 1)
        .map_err(|e| format!("REMOVE_BUFS(3, 1) of a dequeued buffer: {e}"))?;
    quick("STREAMOFF", || rig.streamoff())?;
    expect_cancelled(&out0, "out-fence of buffer 0 after STREAMOFF")?;
    rig.remove_bufs(0, 1)
        .map_err(|e| format!("REMOVE_BUFS(0, 1) after STREAMOFF: {e}"))?;
    late_signal(&tl, &f)?;
    check(rig.querybuf(0).is_err(), || {
        "QUERYBUF(0) succeeds after REMOVE_BUFS(0, 1)".into()
    })?;
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    rig.streamon()?;
    rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence of buffer 1")?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// Out-fences of buffers queued without STREAMON signal -ECANCELED when the video fd is
/// closed: a fence signals in finite time even if the app never streams (§6 #35).
fn fence_out_fence_cancelled_on_close_without_streamon(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::new(ctx, 3)?;
    let out0 = rig.q_out(0)?;
    let out1 = rig.q_out(1)?;
    expect_pending(&out0, "out-fence 0")?;
    quick("close() of the video fd", || {
        rig.close_device();
        Ok(())
    })?;
    expect_cancelled(&out0, "out-fence 0 after close")?;
    expect_cancelled(&out1, "out-fence 1 after close")
}

/// `socketpair(AF_UNIX, SOCK_STREAM)`.
fn socketpair() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(format!("socketpair: {}", Errno::last()));
    }
    Ok((owned(fds[0], "socketpair")?, owned(fds[1], "socketpair")?))
}

/// Sends `fd` over unix socket `sock` (SCM_RIGHTS, one data byte).
fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Errno> {
    let mut byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a constant computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is `space` bytes, room for one cmsg with one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
    }
    // SAFETY: `msg` and what it points to live for the call.
    if unsafe { libc::sendmsg(sock, &msg, 0) } != 1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
fn recv_fd(sock: RawFd) -> Result<OwnedFd, String> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a constant computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` and what it points to live for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n != 1 {
        return Err(format!("recvmsg: got {n} bytes ({})", Errno::last()));
    }
    // SAFETY: the kernel filled `msg.msg_control` (within `space` bytes).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err("recvmsg: no SCM_RIGHTS message".into());
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
        owned(fd, "recvmsg fd")
    }
}

/// The child of [`fence_child_exit_cancels_out_fence`]: opens the device, queues a buffer
/// with the inherited (never-signalled) in-fence and an out-fence, streams, sends the
/// out-fence to the parent and exits when told. Returns its exit code (the failing step).
fn child_main(node: &std::path::Path, in_fence: RawFd, sock: RawFd) -> i32 {
    let Ok(dev) = Device::open(node) else {
        return 10;
    };
    let mut r: v4l2_requestbuffers = crate::v4l2::zeroed();
    r.count = 3;
    r.type_ = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    r.memory = V4L2_MEMORY_MMAP;
    if dev.ioctl(VIDIOC_REQBUFS, &mut r).is_err() {
        return 11;
    }
    let mut b = buffer(0, IN | OUT, in_fence);
    if raw_qbuf(&dev, &mut b).is_err() {
        return 12;
    }
    let out = fence_fd(&b);
    if out < 0 {
        return 13;
    }
    let mut t = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
    if dev.ioctl(VIDIOC_STREAMON, &mut t).is_err() {
        return 14;
    }
    if send_fd(sock, out).is_err() {
        return 15;
    }
    // Wait (at most 10 s) for the parent's go, then exit without any cleanup: the kernel
    // closes the device fd.
    match syncfile::poll_fd(sock, libc::POLLIN, 10_000) {
        Ok(rev) if rev != 0 => 0,
        _ => 16,
    }
}

/// Kills and reaps a child process if it is still there.
struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

impl Child {
    /// Waits up to `timeout` for the child to exit; returns its wait status.
    fn wait(&mut self, timeout: Duration) -> Result<i32, String> {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: plain system call on our child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return Ok(status);
            }
            if r < 0 {
                return Err(format!("waitpid({}): {}", self.pid, Errno::last()));
            }
            if start.elapsed() >= timeout {
                return Err(format!(
                    "the child did not exit within {} ms",
                    timeout.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let mut status = 0;
            // SAFETY: plain system calls on our child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}

/// Another process queues a buffer with a never-signalled in-fence and an out-fence, passes
/// the out-fence to us (SCM_RIGHTS) and exits: the out-fence signals -ECANCELED once it is
/// gone, the late in-fence signal is harmless and the device is free again (§6 #12, #31:
/// process exit must not hang or leak).
fn fence_child_exit_cancels_out_fence(ctx: &mut Ctx) -> TestResult {
    let node = ctx.find_rvivid()?;
    let tl = Timeline::open()?;
    let fin = tl.create_fence(1)?;
    let (ours, theirs) = socketpair()?;
    // SAFETY: the harness is single-threaded; the child only makes system calls and exits
    // with _exit().
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", Errno::last()));
    }
    if pid == 0 {
        let code = child_main(&node, fin.as_raw_fd(), theirs.as_raw_fd());
        // SAFETY: leave the child at once, running no destructor of the parent's state.
        unsafe { libc::_exit(code) };
    }
    let mut child = Child { pid, reaped: false };
    drop(theirs);
    let rev = syncfile::poll_fd(ours.as_raw_fd(), libc::POLLIN, 10_000)
        .map_err(|e| format!("poll(socket): {e}"))?;
    if rev == 0 {
        return Err("the child sent no out-fence within 10 s".into());
    }
    let out = match recv_fd(ours.as_raw_fd()) {
        Ok(fd) => fd,
        Err(e) => {
            let status = child.wait(Duration::from_secs(5)).unwrap_or(-1);
            return Err(format!(
                "{e} (child wait status {status:#x}: exit code {} names the failing step)",
                libc::WEXITSTATUS(status)
            ));
        }
    };
    let f = single_fence(&out, "the child's out-fence")?;
    check(f.status == 0 && f.driver_name == "rvb2", || {
        format!(
            "the child's out-fence: {} {}/{}, want a pending rvb2 fence",
            status_str(f.status),
            f.driver_name,
            f.obj_name
        )
    })?;
    // SAFETY: writing one byte from a live buffer.
    if unsafe { libc::write(ours.as_raw_fd(), b"x".as_ptr().cast(), 1) } != 1 {
        return Err(format!("write(socket): {}", Errno::last()));
    }
    let status = child.wait(Duration::from_secs(10))?;
    check(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        || format!("the child failed: wait status {status:#x}"),
    )?;
    expect_cancelled(&out, "the child's out-fence after it exited")?;
    late_signal(&tl, &fin)?;
    let rig = Rig::new(ctx, 3)?;
    for i in 0..3 {
        rig.q_plain(i)?;
    }
    rig.streamon()?;
    rig.dq_expect(0, false)?;
    Ok(())
}

/// STREAMOFF while buffers are in the driver (held longer with RVIVID_CID_HOLD_MS): their
/// out-fences are pending (QUERYBUF shows QUEUED|OUT_FENCE) and signal with an error at
/// STREAMOFF (§6 #36 a).
fn fence_streamoff_while_in_driver(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    rig.set_ctrl(RVIVID_CID_HOLD_MS, 3000)?;
    let outs = (0..4)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    rig.streamon()?;
    let first = rig.dqbuf_within(Duration::from_secs(10))?;
    check(first.index == 0, || {
        format!("first DQBUF returned buffer {}, want 0", first.index)
    })?;
    let mut pending = Vec::new();
    for (i, o) in outs.iter().enumerate().skip(1) {
        if fstatus(o, "out-fence")? == 0 {
            pending.push(i);
        }
    }
    check(!pending.is_empty(), || {
        "no buffer is left in the driver to test (RVIVID_CID_HOLD_MS 3000 had no effect?)".into()
    })?;
    for &i in &pending {
        rig.expect_flags(
            i as u32,
            V4L2_BUF_FLAG_QUEUED | OUT,
            V4L2_BUF_FLAG_DONE,
            "held in the driver",
        )?;
    }
    quick("STREAMOFF with buffers in the driver", || rig.streamoff())?;
    for &i in &pending {
        expect_error(
            &outs[i],
            &format!("out-fence {i} (in the driver at STREAMOFF)"),
        )?;
        rig.expect_flags(i as u32, 0, V4L2_BUF_FLAG_QUEUED | OUT, "after STREAMOFF")?;
    }
    Ok(())
}

/// An in-fence signals and the queue goes away right after (close or STREAMOFF), many times:
/// the fence work racing with the release must not crash (KASAN/lockdep watch in
/// dmesg_clean) and the out-fence always signals (§6 #37).
fn fence_signal_then_close_race(ctx: &mut Ctx) -> TestResult {
    for round in 0..20 {
        let mut rig = Rig::new(ctx, 3)?;
        let tl = Timeline::open()?;
        let f = tl.create_fence(1)?;
        let out0 = rig.q_in_out(0, f.as_raw_fd())?;
        rig.q_plain(1)?;
        rig.q_plain(2)?;
        rig.streamon()?;
        tl.inc(1)?;
        if round % 2 == 0 {
            rig.close_device();
        } else {
            rig.streamoff()?;
        }
        let s = syncfile::wait_signalled(out0.as_raw_fd(), TIMEOUT, "out-fence 0")
            .map_err(|e| format!("round {round}: {e}"))?;
        check(s == 1 || s < 0, || {
            format!("round {round}: out-fence 0 {}", status_str(s))
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bound on fenced buffers (fence_timeout_ms): every out-fence signals in finite time
// ---------------------------------------------------------------------------------------------

/// The module parameter that holds the bound, in ms.
const FENCE_TIMEOUT_PARAM: &str = "/sys/module/rvivid/parameters/fence_timeout_ms";
/// Its default.
const FENCE_TIMEOUT_DEFAULT_MS: u32 = 5000;
/// Its range.
const FENCE_TIMEOUT_MAX_MS: u32 = 60_000;

/// Reads the bound.
fn read_bound() -> Result<u32, String> {
    let text = std::fs::read_to_string(FENCE_TIMEOUT_PARAM)
        .map_err(|e| format!("reading {FENCE_TIMEOUT_PARAM}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{FENCE_TIMEOUT_PARAM} holds {text:?}: {e}"))
}

/// Writes `value` to the bound's sysfs file.
fn write_bound(value: &str) -> std::io::Result<()> {
    std::fs::write(FENCE_TIMEOUT_PARAM, value)
}

/// Sets the bound while alive, and puts back the value it found.
pub struct Bound {
    old: u32,
}

impl Bound {
    pub fn set(ms: u32) -> Result<Self, String> {
        let old = read_bound()?;
        let bound = Bound { old };
        bound.change(ms)?;
        Ok(bound)
    }

    /// Changes the bound again (the old value is still restored).
    fn change(&self, ms: u32) -> TestResult {
        write_bound(&ms.to_string())
            .map_err(|e| format!("writing {ms} to {FENCE_TIMEOUT_PARAM}: {e}"))
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = write_bound(&self.old.to_string());
    }
}

/// (DMABUF only.) rvivid holds every buffer after its first for 5 s; the deadline takes
/// buffer 1 back meanwhile. Buffer 1 is then queued with another dma-buf while the driver still
/// holds the stale token, which keeps the first import (observed: rvivid's reference and
/// attachment stay). When the driver gives the token back, that last reference is dropped by
/// the fence work, outside `lock` and any signalling section (observed: the import goes;
/// lockdep and the log are checked), and only then does buffer 1 go to the driver again and
/// come back with a frame in the new dma-buf. (What `Slot::foreign` guards against, another
/// QBUF handing buffer 1 over between the give-back and the fence work, which would drop that
/// reference under `lock` in a signalling section, is a race this test does not force: it
/// passes without the guard too.)
fn stale_token_keeps_replaced_import(ctx: &mut Ctx) -> TestResult {
    const BOUND: u32 = 300;
    let (first, second) = MEM_MODE
        .with(|m| match m.borrow().as_ref() {
            Some(MemMode::Dmabuf { fds, .. }) => Some((fds[1].as_raw_fd(), fds[2].as_raw_fd())),
            _ => None,
        })
        .ok_or("not a DMABUF variant")?;
    // SAFETY: the fd stays open while the test runs (MEM_MODE owns it).
    let first_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(first) };
    let rig = stale_token_rig(ctx, BOUND)?;
    // The driver holds buffer 1's stale token for seconds more: queue it with dma-buf 2.
    let mut b = buffer(1, 0, 0);
    b.m.fd = second;
    raw_qbuf(rig.dev()?, &mut b).map_err(|e| format!("QBUF 1 with dma-buf 2: {e}"))?;
    let held = crate::dmabuf::bufinfo(&first_fd)?;
    check(held.count == 2 && held.attached.len() == 1, || {
        format!("dma-buf 1 while the stale token holds it: {held:?}, want rvivid's reference")
    })?;
    rig.set_ctrl(RVIVID_CID_HOLD_MS, 0)?;
    let released = crate::harness::wait_until(Duration::from_secs(15), || {
        crate::dmabuf::bufinfo(&first_fd).is_ok_and(|i| i.count == 1 && i.attached.is_empty())
    });
    check(released, || {
        format!(
            "dma-buf 1 still held 15 s after its buffer was queued with another: {:?}",
            crate::dmabuf::bufinfo(&first_fd)
        )
    })?;
    let b = rig.dq_expect(1, false)?;
    check(b.fd() == second, || {
        format!("DQBUF 1: fd {}, want dma-buf 2's {second}", b.fd())
    })
}

/// Two buffers streaming, rvivid holding every buffer after its first for 5 s, and a fence
/// deadline of `bound` ms that takes buffer 1 (queued with an out-fence) back from the driver
/// meanwhile: both are dequeued, buffer 1 failed, and the driver still holds its stale token.
fn stale_token_rig(ctx: &mut Ctx, bound: u32) -> Result<Rig, String> {
    let rig = Rig::new(ctx, 2)?;
    rig.set_ctrl(RVIVID_CID_HOLD_MS, 5000)?;
    let bound_set = Bound::set(bound)?;
    rig.q_plain(0)?;
    let out = rig.q_out(1)?;
    rig.streamon()?;
    expect_timed_out(&out, bound, "out-fence of buffer 1, held in the driver")?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(1, true)?;
    drop(bound_set);
    Ok(rig)
}

/// (USERPTR only.) The same with user memory: rvivid holds every buffer after its first for
/// 5 s; the deadline takes buffer 1 back meanwhile. Buffer 1 is then queued at another user
/// address (user memory 2) while the driver still holds the stale token, which keeps the
/// pages of the first address pinned (observed: with our mapping of user memory 1 gone, its
/// memfd cannot be sealed for writing, see [`PinProbe`]). When the driver gives the token back,
/// that last reference is dropped by the fence work, outside `lock` and any signalling section
/// (unpinning locks the pages and may sleep: lockdep and the log are checked), and the pages
/// are unpinned (observed: the seal succeeds); only then does buffer 1 go to the driver again
/// and come back with a frame, the colour bars, at the new address.
fn stale_token_keeps_replaced_pins(ctx: &mut Ctx) -> TestResult {
    const BOUND: u32 = 300;
    let fmt = {
        let dev = Rig::open(ctx)?;
        let mut f = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
        dev.dev()?
            .ioctl(VIDIOC_G_FMT, &mut f)
            .map_err(|e| format!("VIDIOC_G_FMT: {e}"))?;
        crate::frame::FrameFormat::from_pix(f.pix())
    };
    let second = MEM_MODE
        .with(|m| match m.borrow().as_ref() {
            Some(MemMode::Userptr { mems, .. }) => Some(mems[2].addr()),
            _ => None,
        })
        .ok_or("not a USERPTR variant")?;
    let rig = stale_token_rig(ctx, BOUND)?;
    // The driver holds buffer 1's stale token for seconds more: queue it at user memory 2.
    let mut b = buffer(1, 0, 0);
    b.m.userptr = second;
    raw_qbuf(rig.dev()?, &mut b).map_err(|e| format!("QBUF 1 at user memory 2: {e}"))?;
    // Our mapping of user memory 1 goes; the stale token's pins keep its pages.
    MEM_MODE.with(|m| {
        if let Some(MemMode::Userptr { mems, .. }) = m.borrow_mut().as_mut() {
            mems[1].unmap();
        }
    });
    let probe = |f: &dyn Fn(&PinProbe) -> TestResult| {
        MEM_MODE.with(|m| match m.borrow().as_ref() {
            Some(MemMode::Userptr { mems, .. }) => f(&mems[1]),
            _ => Err("not a USERPTR variant".into()),
        })
    };
    probe(&|p| p.expect_pinned("user memory 1 while the stale token holds it"))?;
    rig.set_ctrl(RVIVID_CID_HOLD_MS, 0)?;
    let released = crate::harness::wait_until(Duration::from_secs(15), || {
        probe(&|p| p.seal_write().map_err(|e| e.to_string())).is_ok()
    });
    check(released, || {
        "user memory 1 still pinned 15 s after its buffer was queued at another address".into()
    })?;
    let b = rig.dq_expect(1, false)?;
    check(b.userptr() == second, || {
        format!(
            "DQBUF 1: userptr {:#x}, want user memory 2's {second:#x}",
            b.userptr()
        )
    })?;
    MEM_MODE.with(|m| match m.borrow().as_ref() {
        Some(MemMode::Userptr { mems, .. }) => {
            crate::frame::check_color_bars(mems[2].bytes(b.bytesused as usize)?, &fmt)
                .map_err(|e| format!("the frame of buffer 1 in user memory 2: {e}"))
        }
        _ => Err("not a USERPTR variant".into()),
    })
}

/// How long an out-fence whose bound is `bound_ms` may take to signal once its deadline is
/// near: a few times the bound, plus a second for a loaded guest.
pub fn expiry_limit(bound_ms: u32) -> Duration {
    Duration::from_millis(u64::from(bound_ms) * 4 + 1000)
}

/// Waits (polling the fd) for an out-fence that the deadline must fail: it must signal within
/// [`expiry_limit`] with -ETIMEDOUT. Returns its signal time (CLOCK_MONOTONIC ns).
fn expect_timed_out(fd: &OwnedFd, bound_ms: u32, what: &str) -> Result<u64, String> {
    let s = syncfile::wait_signalled(fd.as_raw_fd(), expiry_limit(bound_ms), what)?;
    check(s == -libc::ETIMEDOUT, || {
        format!("{what}: {}, want -ETIMEDOUT", status_str(s))
    })?;
    Ok(single_fence(fd, what)?.timestamp_ns)
}

/// Fails unless `ts_ns` (a fence's signal time) is at least `bound_ms` after `t0_ns` (a time
/// taken before the buffer's QBUF): the deadline never fires early.
fn not_before(ts_ns: u64, t0_ns: u64, bound_ms: u32, what: &str) -> TestResult {
    let bound_ns = u64::from(bound_ms) * 1_000_000;
    check(ts_ns >= t0_ns + bound_ns, || {
        format!(
            "{what} signalled {} ms after its QBUF, before its {bound_ms} ms bound",
            ts_ns.saturating_sub(t0_ns) / 1_000_000
        )
    })
}

/// Out-fences of buffers queued without STREAMON signal -ETIMEDOUT at the bound, in QBUF order,
/// never before it; an unfenced buffer has no bound. Until STREAMON, QUERYBUF shows the failed
/// buffers DONE|ERROR (neither QUEUED nor a pending fence), QBUF of them is EINVAL and DQBUF is
/// EINVAL (not streaming); after STREAMON, DQBUF returns them first, with ERROR, and the queue
/// streams on.
fn fence_deadline_before_streamon(ctx: &mut Ctx) -> TestResult {
    const BOUND: u32 = 200;
    let rig = Rig::new(ctx, 3)?;
    let _bound = Bound::set(BOUND)?;
    let t0 = monotonic_ns();
    let out0 = rig.q_out(0)?;
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    let ts0 = expect_timed_out(&out0, BOUND, "out-fence 0 (no STREAMON)")?;
    let ts1 = expect_timed_out(&out1, BOUND, "out-fence 1 (no STREAMON)")?;
    not_before(ts0, t0, BOUND, "out-fence 0")?;
    check(ts0 <= ts1, || {
        format!("out-fence 1 signalled at {ts1} ns, before out-fence 0 ({ts0} ns)")
    })?;
    for i in 0..2 {
        rig.expect_flags(
            i,
            V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR,
            V4L2_BUF_FLAG_QUEUED | IN | OUT,
            "failed at the bound before STREAMON",
        )?;
    }
    rig.expect_flags(
        2,
        V4L2_BUF_FLAG_QUEUED,
        V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR,
        "unfenced: no bound",
    )?;
    crate::expect_errno("DQBUF before STREAMON", rig.dqbuf_nb(), libc::EINVAL)?;
    rig.q_fail(
        0,
        0,
        0,
        libc::EINVAL,
        "QBUF of a failed buffer not dequeued",
    )?;
    rig.streamon()?;
    for i in 0..2 {
        let b = rig.dq_expect(i, true)?;
        check(
            b.flags & V4L2_BUF_FLAG_DONE == 0 && b.bytesused == 0,
            || {
                format!(
                    "DQBUF({i}): flags {}, bytesused {}",
                    flags_str(b.flags),
                    b.bytesused
                )
            },
        )?;
    }
    rig.q_plain(0)?;
    rig.dq_expect(2, false)?;
    rig.dq_expect(0, false)?;
    Ok(())
}

/// Streaming with fewer buffers than rvivid needs to start (two): the lone out-fenced buffer
/// fails at the bound (-ETIMEDOUT, DQBUF gives it with ERROR); then the queue starts normally.
fn fence_deadline_too_few_buffers(ctx: &mut Ctx) -> TestResult {
    const BOUND: u32 = 200;
    let rig = Rig::new(ctx, 4)?;
    let bound = Bound::set(BOUND)?;
    rig.streamon()?;
    let t0 = monotonic_ns();
    let out0 = rig.q_out(0)?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | OUT, V4L2_BUF_FLAG_DONE, "alone")?;
    let ts = expect_timed_out(&out0, BOUND, "out-fence 0 (one buffer of two)")?;
    not_before(ts, t0, BOUND, "out-fence 0")?;
    rig.dq_expect(0, true)?;
    drop(bound);
    let out1 = rig.q_out(1)?;
    rig.q_plain(2)?;
    rig.dq_expect(1, false)?;
    expect_ok(&out1, "out-fence 1")?;
    rig.dq_expect(2, false)?;
    Ok(())
}

/// An in-fence that never signals (its sw_sync timeline is never advanced): its buffer, with an
/// out-fence or without, fails at the bound and comes back with ERROR in QBUF order (IN_FENCE
/// no longer reported); the buffers behind it then stream; the late signal changes nothing.
fn fence_deadline_in_fence_never_signalled(ctx: &mut Ctx) -> TestResult {
    const BOUND: u32 = 300;
    let rig = Rig::new(ctx, 4)?;
    let bound = Bound::set(BOUND)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let t0 = monotonic_ns();
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    rig.q_in(1, f.as_raw_fd())?;
    rig.streamon()?;
    rig.expect_flags(
        0,
        V4L2_BUF_FLAG_QUEUED | IN | OUT,
        0,
        "waiting for the in-fence",
    )?;
    let ts = expect_timed_out(&out0, BOUND, "out-fence of buffer 0")?;
    not_before(ts, t0, BOUND, "out-fence of buffer 0")?;
    let b = rig.dq_expect(0, true)?;
    check(b.flags & (IN | OUT) == 0, || {
        format!("DQBUF(0): flags {}", flags_str(b.flags))
    })?;
    let b = rig
        .dqbuf_within(expiry_limit(BOUND))
        .map_err(|e| format!("buffer 1 (in-fence only): {e}"))?;
    check(b.index == 1 && b.flags & V4L2_BUF_FLAG_ERROR != 0, || {
        format!(
            "DQBUF: buffer {} flags {}, want buffer 1 with ERROR",
            b.index,
            flags_str(b.flags)
        )
    })?;
    drop(bound);
    let out2 = rig.q_out(2)?;
    rig.q_plain(3)?;
    rig.dq_expect(2, false)?;
    expect_ok(&out2, "out-fence of buffer 2")?;
    rig.dq_expect(3, false)?;
    tl.inc(1)?;
    rig.expect_held("the late in-fence signal", &[], &[])?;
    rig.expect_flags(
        0,
        0,
        V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE,
        "after the late signal",
    )
}

/// The bound passes while buffers are with the driver (rvivid holds each 3 s longer,
/// "Hold Buffer (ms)"): they are taken back, fail with ERROR and -ETIMEDOUT, in QBUF order (at
/// least buffers 1-3, which the hold keeps past the bound; buffer 0's fate depends on the
/// guest's speed, but its ERROR flag agrees with its fence). Queued again, they are handed to
/// the driver once it let go of its stale tokens, and complete normally.
fn fence_deadline_in_driver(ctx: &mut Ctx) -> TestResult {
    const BOUND: u32 = 300;
    let rig = Rig::new(ctx, 4)?;
    rig.set_ctrl(RVIVID_CID_HOLD_MS, 3000)?;
    let bound = Bound::set(BOUND)?;
    let t0 = monotonic_ns();
    let outs = (0..4)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    rig.streamon()?;
    let mut last_ts = 0;
    for (i, out) in outs.iter().enumerate() {
        let what = format!("out-fence {i}");
        let s = syncfile::wait_signalled(out.as_raw_fd(), expiry_limit(BOUND), &what)?;
        let ts = single_fence(out, &what)?.timestamp_ns;
        check(s == 1 || s == -libc::ETIMEDOUT, || {
            format!("{what}: {}, want signalled or -ETIMEDOUT", status_str(s))
        })?;
        check(i == 0 || s == -libc::ETIMEDOUT, || {
            format!(
                "{what}: {}, want -ETIMEDOUT (held 3 s in the driver)",
                status_str(s)
            )
        })?;
        if s < 0 {
            not_before(ts, t0, BOUND, &what)?;
        }
        check(ts >= last_ts, || {
            format!("{what} signalled before out-fence {}", i - 1)
        })?;
        last_ts = ts;
        rig.dq_expect(i as u32, s < 0)?;
    }
    drop(bound);
    rig.set_ctrl(RVIVID_CID_HOLD_MS, 0)?;
    let again = (1..4)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, out) in (1..4).zip(&again) {
        rig.dq_expect(i, false)?;
        expect_ok(out, &format!("out-fence of buffer {i}, queued again"))?;
    }
    Ok(())
}

/// Expiry racing normal completion: four buffers always queued with out-fences at 30 fps (a
/// buffer waits about four frame periods), with a bound cycling around that wait (20 ms to
/// 400 ms). Each buffer comes back once, in QBUF order, its out-fence signalled either OK or
/// -ETIMEDOUT, its ERROR flag set exactly when the fence failed, and the fences signal in QBUF
/// order. Both outcomes must occur.
fn fence_deadline_races_completion(ctx: &mut Ctx) -> TestResult {
    const BOUNDS: [u32; 5] = [20, 60, 100, 150, 400];
    const BUFFERS: usize = 60;
    let rig = Rig::new(ctx, 6)?;
    let bound = Bound::set(BOUNDS[0])?;
    let mut pending: VecDeque<(u32, OwnedFd)> = VecDeque::new();
    for i in 0..4 {
        pending.push_back((i, rig.q_out(i)?));
    }
    let mut free: VecDeque<u32> = (4..6).collect();
    rig.streamon()?;
    let (mut good, mut timed_out) = (0, 0);
    let mut last_ts = 0;
    let mut n = 0;
    while good + timed_out < BUFFERS {
        let b = rig.dqbuf()?;
        let (want, out) = pending.pop_front().ok_or("DQBUF with nothing queued")?;
        check(b.index == want, || {
            format!(
                "DQBUF returned buffer {}, want {want} (QBUF order)",
                b.index
            )
        })?;
        let f = single_fence(&out, "out-fence")?;
        let error = b.flags & V4L2_BUF_FLAG_ERROR != 0;
        check(
            (f.status == 1 && !error) || (f.status == -libc::ETIMEDOUT && error),
            || {
                format!(
                    "buffer {} came back with flags {}, its out-fence {}",
                    b.index,
                    flags_str(b.flags),
                    status_str(f.status)
                )
            },
        )?;
        check(f.timestamp_ns >= last_ts, || {
            format!(
                "out-fence of buffer {} signalled before the one queued before it",
                b.index
            )
        })?;
        last_ts = f.timestamp_ns;
        if error {
            timed_out += 1;
        } else {
            good += 1;
        }
        free.push_back(b.index);
        n += 1;
        bound.change(BOUNDS[n % BOUNDS.len()])?;
        let i = free.pop_front().ok_or("no free buffer")?;
        pending.push_back((i, rig.q_out(i)?));
    }
    check(good > 0 && timed_out > 0, || {
        format!("{good} buffers completed and {timed_out} timed out: the race was not run")
    })
}

/// STREAMOFF or close() racing the deadline (bound 30-90 ms, the queue stopped 0-100 ms after
/// STREAMON), twenty times: every out-fence signals exactly once (OK, -EIO, -ECANCELED or
/// -ETIMEDOUT), in QBUF order, and after STREAMOFF every buffer is dequeued.
fn fence_deadline_streamoff_close_race(ctx: &mut Ctx) -> TestResult {
    for round in 0..20u32 {
        let mut rig = Rig::new(ctx, 4)?;
        let _bound = Bound::set(30 + (round % 4) * 20)?;
        let outs = (0..4)
            .map(|i| rig.q_out(i))
            .collect::<Result<Vec<_>, _>>()?;
        rig.streamon()?;
        std::thread::sleep(Duration::from_millis(u64::from(round * 37 % 100)));
        let streamoff = round % 2 == 0;
        if streamoff {
            quick("STREAMOFF", || rig.streamoff())?;
        } else {
            quick("close()", || {
                rig.close_device();
                Ok(())
            })?;
        }
        let mut last_ts = 0;
        for (i, out) in outs.iter().enumerate() {
            let what = format!("round {round}: out-fence {i}");
            let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, &what)?;
            check(
                [1, -libc::EIO, -libc::ECANCELED, -libc::ETIMEDOUT].contains(&s),
                || format!("{what}: {}", status_str(s)),
            )?;
            let ts = single_fence(out, &what)?.timestamp_ns;
            check(ts >= last_ts, || {
                format!("{what} signalled out of QBUF order")
            })?;
            last_ts = ts;
            if streamoff {
                rig.expect_flags(
                    i as u32,
                    0,
                    V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_ERROR | OUT,
                    &format!("round {round}: after STREAMOFF"),
                )?;
            }
        }
    }
    Ok(())
}

/// The bound is the module parameter fence_timeout_ms: 5000 ms by default, readable and
/// writable in sysfs, 1..60000 (anything else is EINVAL and changes nothing). A change applies
/// to buffers queued afterwards: lowered, the newer buffer fails at its shorter bound and the
/// older one with it (buffers fail in QBUF order), long before the older one's bound; raised,
/// the older buffer still fails at its own bound and the newer one stays pending.
fn fence_deadline_bound_changed(ctx: &mut Ctx) -> TestResult {
    const SHORT: u32 = 250;
    let value = read_bound()?;
    check(value == FENCE_TIMEOUT_DEFAULT_MS, || {
        format!("{FENCE_TIMEOUT_PARAM} is {value}, want the default {FENCE_TIMEOUT_DEFAULT_MS}")
    })?;
    let bound = Bound::set(FENCE_TIMEOUT_DEFAULT_MS)?;
    let max = FENCE_TIMEOUT_MAX_MS.to_string();
    let over = (FENCE_TIMEOUT_MAX_MS + 1).to_string();
    for bad in ["0", &*over, "-1", "abc", "\n"] {
        match write_bound(bad) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            r => {
                return Err(format!(
                    "writing {bad:?} to {FENCE_TIMEOUT_PARAM}: {r:?}, want EINVAL"
                ))
            }
        }
        let v = read_bound()?;
        check(v == FENCE_TIMEOUT_DEFAULT_MS, || {
            format!("after writing {bad:?}: {FENCE_TIMEOUT_PARAM} is {v}")
        })?;
    }
    for good in ["1", &*max, "0x100\n"] {
        write_bound(good).map_err(|e| format!("writing {good:?}: {e}"))?;
    }
    check(read_bound()? == 256, || {
        "0x100 did not read back as 256".into()
    })?;

    let rig = Rig::new(ctx, 4)?;
    bound.change(FENCE_TIMEOUT_DEFAULT_MS)?;
    let t0 = monotonic_ns();
    let out0 = rig.q_out(0)?;
    bound.change(SHORT)?;
    let t1 = monotonic_ns();
    let out1 = rig.q_out(1)?;
    let ts1 = expect_timed_out(&out1, SHORT, "out-fence 1 (queued after lowering)")?;
    not_before(ts1, t1, SHORT, "out-fence 1")?;
    let s0 = fstatus(&out0, "out-fence 0")?;
    let ts0 = single_fence(&out0, "out-fence 0")?.timestamp_ns;
    check(s0 == -libc::ETIMEDOUT && ts0 <= ts1, || {
        format!(
            "out-fence 0 (queued before, 5 s bound): {}, at {ts0} ns (1 at {ts1})",
            status_str(s0)
        )
    })?;
    check(ts0 < t0 + 2_500_000_000, || {
        "out-fence 0 did not fail with the later buffer, long before its own bound".into()
    })?;
    rig.streamoff()?;

    let t2 = monotonic_ns();
    let out2 = rig.q_out(2)?;
    bound.change(FENCE_TIMEOUT_MAX_MS)?;
    let out3 = rig.q_out(3)?;
    let ts2 = expect_timed_out(&out2, SHORT, "out-fence 2 (queued before raising)")?;
    not_before(ts2, t2, SHORT, "out-fence 2")?;
    let rev = syncfile::poll_fd(out3.as_raw_fd(), libc::POLLIN, 3 * SHORT as i32)
        .map_err(|e| format!("poll(out-fence 3): {e}"))?;
    check(rev == 0, || {
        format!("out-fence 3 (60 s bound) signalled within {} ms", 3 * SHORT)
    })?;
    expect_pending(&out3, "out-fence 3 (60 s bound)")?;
    rig.streamoff()?;
    expect_cancelled(&out3, "out-fence 3 after STREAMOFF")
}

// ---------------------------------------------------------------------------------------------
// Out-fence contexts and order (§6 #17-#20)
// ---------------------------------------------------------------------------------------------

/// Ordered queue: out-fences share one context with increasing seqnos. Merging two pending
/// out-fences (A queued before B, in either argument order) gives one fence, and it is B's
/// (dedup keeps the later seqno): once A signalled the merge is still pending until B is done
/// (§6 #17).
fn fence_ordered_seqno_merge_dedup(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out_a = rig.q_out(0)?;
    rig.q_plain(1)?;
    let out_b = rig.q_in_out(2, f.as_raw_fd())?;
    let m1 = merge(&out_a, &out_b, "A+B")?;
    let m2 = merge(&out_b, &out_a, "B+A")?;
    for (m, what) in [(&m1, "merge(A, B)"), (&m2, "merge(B, A)")] {
        let info = syncfile::file_info(m.as_raw_fd())
            .map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))?;
        check(info.fences.len() == 1, || {
            format!(
                "{what} of two pending out-fences of one ordered queue: {info}; want 1 fence \
                 (same context)"
            )
        })?;
        check(
            info.fences[0].driver_name == "rvb2" && info.status == 0,
            || format!("{what}: {info}"),
        )?;
    }
    rig.streamon()?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(1, false)?;
    expect_ok(&out_a, "out-fence A")?;
    expect_pending(
        &m1,
        "merge(A, B) once A signalled (it must be B, the later seqno)",
    )?;
    expect_pending(
        &m2,
        "merge(B, A) once A signalled (it must be B, the later seqno)",
    )?;
    tl.inc(1)?;
    rig.dq_expect(2, false)?;
    expect_ok(&out_b, "out-fence B")?;
    expect_ok(&m1, "merge(A, B)")?;
    expect_ok(&m2, "merge(B, A)")
}

/// Out-fences of consecutive QBUFs signal in QBUF order: DQBUF order and sequence numbers
/// follow QBUF order and the fences' signal timestamps do not decrease (§6 #17).
fn fence_ordered_signal_order_timestamps(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 6)?;
    let outs = (0..6)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    rig.streamon()?;
    let mut last_seq = None;
    for i in 0..6 {
        let b = rig.dq_expect(i, false)?;
        if let Some(prev) = last_seq {
            check(b.sequence > prev, || {
                format!("buffer {i}: sequence {} after {prev}", b.sequence)
            })?;
        }
        last_seq = Some(b.sequence);
    }
    let mut prev_ts = 0;
    for (i, o) in outs.iter().enumerate() {
        let f = single_fence(o, &format!("out-fence {i}"))?;
        check(f.status == 1 && f.timestamp_ns >= prev_ts, || {
            format!(
                "out-fence {i}: {} at {} ns, the previous one at {prev_ts} ns (QBUF order)",
                status_str(f.status),
                f.timestamp_ns
            )
        })?;
        prev_ts = f.timestamp_ns;
    }
    Ok(())
}

/// Unordered mode (RVIVID_CID_UNORDERED = 1 before REQBUFS): every out-fence has its own
/// context, so a merge of two keeps both; the driver completes the newer of two waiting
/// buffers first, so DQBUF order differs from QBUF order (§6 #17, #18).
fn fence_unordered_merge_two_contexts(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::open(ctx)?;
    rig.set_ctrl(RVIVID_CID_UNORDERED, 1)?;
    rig.reqbufs(3)?;
    let out0 = rig.q_out(0)?;
    let out1 = rig.q_out(1)?;
    let m = merge(&out0, &out1, "unordered 0+1")?;
    check(num_fences(&m, "unordered merge")? == 2, || {
        format!(
            "merge of two pending out-fences of an unordered queue: {}; want 2 fences",
            syncfile::file_info(m.as_raw_fd())
                .map(|i| i.to_string())
                .unwrap_or_default()
        )
    })?;
    expect_pending(&m, "unordered merge")?;
    rig.streamon()?;
    let first = rig.dqbuf()?;
    let second = rig.dqbuf()?;
    check(first.index == 1 && second.index == 0, || {
        format!(
            "unordered DQBUF order {}, {}; the driver completes the newest buffer first (1, 0)",
            first.index, second.index
        )
    })?;
    let f0 = single_fence(&out0, "out-fence 0")?;
    let f1 = single_fence(&out1, "out-fence 1")?;
    check(f0.status == 1 && f1.status == 1, || {
        format!(
            "out-fences 0 {}, 1 {}",
            status_str(f0.status),
            status_str(f1.status)
        )
    })?;
    check(f1.timestamp_ns <= f0.timestamp_ns, || {
        format!(
            "out-fence 1 signalled at {} ns, after out-fence 0 ({} ns)",
            f1.timestamp_ns, f0.timestamp_ns
        )
    })?;
    expect_ok(&m, "unordered merge")
}

/// RVIVID_CID_UNORDERED cannot change while buffers are allocated (EBUSY); it can after
/// REQBUFS(0).
fn fence_unordered_busy_while_allocated(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::new(ctx, 3)?;
    let dev = rig.dev()?;
    match set_ctrl(dev, RVIVID_CID_UNORDERED, 1) {
        Ok(()) => return Err("setting UNORDERED with buffers allocated succeeded".into()),
        Err(e) => check(e.0 == libc::EBUSY, || {
            format!("setting UNORDERED with buffers allocated: {e}, want EBUSY")
        })?,
    }
    let v = get_ctrl(dev, RVIVID_CID_UNORDERED).map_err(|e| format!("G_CTRL(UNORDERED): {e}"))?;
    check(v == 0, || {
        format!("UNORDERED is {v} after the refused change")
    })?;
    rig.reqbufs(0)?;
    rig.set_ctrl(RVIVID_CID_UNORDERED, 1)?;
    rig.set_ctrl(RVIVID_CID_UNORDERED, 0)
}

/// The ordering is settled per allocation (§6 #19): unordered buffers give a 2-fence merge,
/// after REQBUFS(0) and back to ordered the new buffers' out-fences merge into one.
fn fence_unordered_then_ordered_contexts(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::open(ctx)?;
    rig.set_ctrl(RVIVID_CID_UNORDERED, 1)?;
    rig.reqbufs(3)?;
    {
        let a = rig.q_out(0)?;
        let b = rig.q_out(1)?;
        let m = merge(&a, &b, "unordered")?;
        check(num_fences(&m, "unordered merge")? == 2, || {
            "unordered queue: the merge of two out-fences does not hold 2 fences".into()
        })?;
        rig.reqbufs(0)?;
        expect_cancelled(&a, "unordered out-fence 0 after REQBUFS(0)")?;
        expect_cancelled(&b, "unordered out-fence 1 after REQBUFS(0)")?;
    }
    rig.set_ctrl(RVIVID_CID_UNORDERED, 0)?;
    rig.reqbufs(3)?;
    let a = rig.q_out(0)?;
    let b = rig.q_out(1)?;
    let m = merge(&a, &b, "ordered")?;
    check(num_fences(&m, "ordered merge")? == 1, || {
        "ordered again: the merge of two out-fences does not hold 1 fence".into()
    })?;
    rig.q_plain(2)?;
    rig.streamon()?;
    rig.dq_expect(0, false)?;
    rig.dq_expect(1, false)?;
    expect_ok(&m, "ordered merge")
}

/// Buffers from CREATE_BUFS (alone, and added while streaming) work with in- and out-fences.
fn fence_create_bufs_with_fences(ctx: &mut Ctx) -> TestResult {
    let mut rig = Rig::open(ctx)?;
    let c = rig.create_bufs(3)?;
    check(c.index == 0 && c.count == 3, || {
        format!("CREATE_BUFS(3): index {}, count {}", c.index, c.count)
    })?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    let out1 = rig.q_out(1)?;
    let out2 = rig.q_out(2)?;
    rig.streamon_unstarted("buffer 0 waits for its in-fence")?;
    rig.expect_held("buffer 0's in-fence", &[0], &[1, 2])?;
    rig.allow_start()?;
    tl.inc(1)?;
    for (i, o) in [&out0, &out1, &out2].iter().enumerate() {
        rig.dq_expect(i as u32, false)?;
        expect_ok(o, &format!("out-fence {i}"))?;
    }
    let c2 = rig.create_bufs(2)?;
    check(c2.index == 3 && c2.count == 2, || {
        format!(
            "CREATE_BUFS(2) while streaming: index {}, count {}",
            c2.index, c2.count
        )
    })?;
    check(c2.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES != 0, || {
        "CREATE_BUFS lacks V4L2_BUF_CAP_SUPPORTS_FENCES".into()
    })?;
    let f2 = tl.create_fence(2)?;
    let out3 = rig.q_out(3)?;
    let out4 = rig.q_in_out(4, f2.as_raw_fd())?;
    rig.dq_expect(3, false)?;
    expect_ok(&out3, "out-fence 3")?;
    tl.inc(1)?;
    rig.dq_expect(4, false)?;
    expect_ok(&out4, "out-fence 4")
}

/// Three STREAMON/STREAMOFF cycles with fences: at each STREAMOFF every out-fence of the
/// cycle has signalled (the waiting one -ECANCELED), the next cycle's are new and pending,
/// and nothing leaks (§6 #20).
fn fence_streamoff_streamon_cycles(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let before = fd_count()?;
    for cycle in 0..3 {
        let tl = Timeline::open()?;
        let f = tl.create_fence(1)?;
        let mut outs = Vec::new();
        for i in 0..3 {
            outs.push(rig.q_out(i)?);
        }
        outs.push(rig.q_in_out(3, f.as_raw_fd())?);
        for (i, o) in outs.iter().enumerate() {
            expect_pending(o, &format!("cycle {cycle}: new out-fence {i}"))?;
        }
        rig.streamon()?;
        rig.dq_expect(0, false)?;
        rig.dq_expect(1, false)?;
        rig.streamoff()?;
        for (i, o) in outs.iter().enumerate() {
            let s = fstatus(o, &format!("cycle {cycle}: out-fence {i}"))?;
            check(s != 0, || {
                format!("cycle {cycle}: out-fence {i} still pending after STREAMOFF")
            })?;
            if i < 2 {
                check(s == 1, || {
                    format!(
                        "cycle {cycle}: out-fence {i} of a dequeued buffer is {}",
                        status_str(s)
                    )
                })?;
            }
        }
        expect_cancelled(
            &outs[3],
            &format!("cycle {cycle}: out-fence of the waiting buffer"),
        )?;
    }
    same_fd_count(before, "after three cycles")
}

/// The out-fence's signal time (FILE_INFO timestamp_ns, CLOCK_MONOTONIC) is consistent with
/// the buffer's timestamp: not zero, within a second of it, not in the future (§6 #44).
fn fence_timestamp_consistency(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let outs = (0..3)
        .map(|i| rig.q_out(i))
        .collect::<Result<Vec<_>, _>>()?;
    rig.streamon()?;
    for (i, o) in outs.iter().enumerate() {
        let b = rig.dq_expect(i as u32, false)?;
        check(
            b.flags & V4L2_BUF_FLAG_TIMESTAMP_MASK == V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC,
            || {
                format!(
                    "buffer {i}: flags {} lack TIMESTAMP_MONOTONIC",
                    flags_str(b.flags)
                )
            },
        )?;
        let now = monotonic_ns();
        let f = single_fence(o, &format!("out-fence {i}"))?;
        let ts = f.timestamp_ns;
        let bts = buf_ns(&b);
        check(ts != 0 && bts != 0, || {
            format!("buffer {i}: fence timestamp {ts} ns, buffer timestamp {bts} ns")
        })?;
        check(
            ts + 1_000_000_000 >= bts && ts <= bts + 1_000_000_000,
            || {
                format!(
                    "buffer {i}: fence signalled at {ts} ns, buffer timestamp {bts} ns (more than \
                 1 s apart)"
                )
            },
        )?;
        check(ts <= now, || {
            format!("buffer {i}: fence timestamp {ts} ns is after now ({now} ns)")
        })?;
    }
    Ok(())
}

/// Ten consecutive buffers whose in-fences all fail (one timeline closed) come back in order
/// with ERROR, their out-fences fail in order, and the unfenced ones after them are fine
/// (§6 #26).
fn fence_many_consecutive_error_buffers(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 12)?;
    let tl = Timeline::open()?;
    let mut outs = Vec::new();
    for i in 0..10u32 {
        let f = tl.create_fence(i + 1)?;
        outs.push(rig.q_in_out(i, f.as_raw_fd())?);
    }
    rig.q_plain(10)?;
    rig.q_plain(11)?;
    rig.streamon_unstarted("buffers 0 to 9 wait for their in-fences")?;
    let waiting: Vec<u32> = (0..10).collect();
    rig.expect_held("ten pending in-fences", &waiting, &[10, 11])?;
    rig.allow_start()?;
    tl.close();
    for i in 0..10 {
        rig.dq_expect(i, true)?;
    }
    let mut prev = 0;
    for (i, o) in outs.iter().enumerate() {
        let what = format!("out-fence {i}");
        expect_error(o, &what)?;
        let f = single_fence(o, &what)?;
        check(f.timestamp_ns >= prev, || {
            format!("{what} signalled before out-fence {} (QBUF order)", i - 1)
        })?;
        prev = f.timestamp_ns;
    }
    rig.dq_expect(10, false)?;
    rig.dq_expect(11, false)?;
    Ok(())
}

/// DQBUF results for buffers queued with IN_FENCE, OUT_FENCE, both and none: fence_fd -1,
/// -1, -1, 0; no fence flag left once done; no ERROR (§6 #41).
fn fence_dqbuf_flags_per_kind(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 4)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    rig.q_in(0, f.as_raw_fd())?;
    let _o1 = rig.q_out(1)?;
    let _o2 = rig.q_in_out(2, f.as_raw_fd())?;
    rig.q_plain(3)?;
    rig.streamon()?;
    tl.inc(1)?;
    for (i, want) in [(0, -1), (1, -1), (2, -1), (3, 0)] {
        let b = rig.dq_expect(i, false)?;
        check(fence_fd(&b) == want && b.flags & (IN | OUT) == 0, || {
            format!(
                "DQBUF({i}): fence_fd {}, flags {}; want {want}, no fence flag",
                fence_fd(&b),
                flags_str(b.flags)
            )
        })?;
    }
    Ok(())
}

/// QUERYBUF reporting through a buffer's life: QUEUED|IN_FENCE|OUT_FENCE while waiting,
/// IN_FENCE gone once the fence signalled and the buffer moved on, nothing after DQBUF;
/// fence_fd -1 throughout (§6 #40).
fn fence_querybuf_flags_lifecycle(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let f = tl.create_fence(1)?;
    let out0 = rig.q_in_out(0, f.as_raw_fd())?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | IN | OUT, 0, "queued, waiting")?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon()?;
    rig.expect_flags(0, V4L2_BUF_FLAG_QUEUED | IN | OUT, 0, "streaming, waiting")?;
    tl.inc(1)?;
    let mut last = 0;
    let cleared = crate::harness::wait_until(TIMEOUT, || {
        rig.querybuf(0)
            .map(|b| {
                last = b.flags;
                b.flags & IN == 0
            })
            .unwrap_or(false)
    });
    check(cleared, || {
        format!(
            "QUERYBUF(0) still shows IN_FENCE 5 s after the fence signalled (flags {})",
            flags_str(last)
        )
    })?;
    rig.dq_expect(0, false)?;
    expect_ok(&out0, "out-fence 0")?;
    let q = rig.querybuf(0)?;
    check(
        q.flags & (IN | OUT | V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE) == 0 && fence_fd(&q) == -1,
        || {
            format!(
                "QUERYBUF(0) after DQBUF: flags {}, fence_fd {}",
                flags_str(q.flags),
                fence_fd(&q)
            )
        },
    )
}

/// Requeueing a dequeued buffer with OUT_FENCE gives a new, distinct out-fence; the old one
/// stays signalled (§6 #38).
fn fence_requeue_same_index_new_out_fence(ctx: &mut Ctx) -> TestResult {
    let rig = Rig::new(ctx, 3)?;
    let tl = Timeline::open()?;
    let first = rig.q_out(0)?;
    rig.q_plain(1)?;
    rig.q_plain(2)?;
    rig.streamon()?;
    rig.dq_expect(0, false)?;
    expect_ok(&first, "first out-fence of buffer 0")?;
    // Behind a pending in-fence, so that the new out-fence is certainly pending when checked.
    let f = tl.create_fence(1)?;
    let second = rig.q_in_out(0, f.as_raw_fd())?;
    check(second.as_raw_fd() != first.as_raw_fd(), || {
        "the new out-fence fd is the old one".into()
    })?;
    expect_pending(&second, "second out-fence of buffer 0")?;
    check(fstatus(&first, "first out-fence")? == 1, || {
        "the first out-fence is no longer signalled".into()
    })?;
    rig.dq_expect(1, false)?;
    rig.dq_expect(2, false)?;
    tl.inc(1)?;
    rig.dq_expect(0, false)?;
    expect_ok(&second, "second out-fence of buffer 0")
}

// ---------------------------------------------------------------------------------------------
// Stress (§6 #45)
// ---------------------------------------------------------------------------------------------

/// A sw_sync timeline of the stress test, kept (closed) for the record.
struct StressTimeline {
    tl: Option<Timeline>,
    /// The timeline's value (frozen when closed).
    value: u32,
    /// The next pending value to hand out.
    next: u32,
    /// Closed: its fences above `value` failed.
    closed: bool,
}

/// What the stress test knows of a queued buffer.
struct StressBuf {
    out: Option<OwnedFd>,
    /// (timeline index, value) of its in-fence.
    fence: Option<(usize, u32)>,
}

/// The expected outcome of a dequeued buffer's in-fence: `Some(true)` failed, `Some(false)`
/// signalled, `None` still pending (it must not have been dequeued).
fn in_fence_outcome(tls: &[StressTimeline], fence: Option<(usize, u32)>) -> Option<bool> {
    match fence {
        None => Some(false),
        Some((t, v)) => {
            let rec = &tls[t];
            if v <= rec.value {
                Some(false)
            } else if rec.closed {
                Some(true)
            } else {
                None
            }
        }
    }
}

/// The stress test's state and checks.
struct Stress<'a> {
    rig: &'a Rig,
    tls: Vec<StressTimeline>,
    /// The two open timelines (indexes into `tls`).
    open: [usize; 2],
    bufs: Vec<Option<StressBuf>>,
    order: VecDeque<u32>,
    dequeued: usize,
    errors: usize,
}

impl Stress<'_> {
    fn new_timeline(&mut self) -> Result<usize, String> {
        self.tls.push(StressTimeline {
            tl: Some(Timeline::open()?),
            value: 0,
            next: 1,
            closed: false,
        });
        Ok(self.tls.len() - 1)
    }

    /// Queues free buffer `i`, with an in-fence (pending, or already signalled) or not, and
    /// an out-fence or not.
    fn queue(&mut self, rng: &mut Rng, i: u32) -> TestResult {
        let mut fence = None;
        let mut fence_fd_owned = None;
        if rng.chance(60) {
            let t = self.open[rng.below(2) as usize];
            let rec = &mut self.tls[t];
            let value = if rng.chance(15) && rec.value > 0 {
                rec.value
            } else {
                let v = rec.next.max(rec.value + 1);
                rec.next = v + 1;
                v
            };
            let tl = rec.tl.as_ref().ok_or("open timeline is closed")?;
            fence_fd_owned = Some(tl.create_fence(value)?);
            fence = Some((t, value));
        }
        let mut flags = if fence.is_some() { IN } else { 0 };
        if rng.chance(50) {
            flags |= OUT;
        }
        let fd = fence_fd_owned.as_ref().map_or(0, |f| f.as_raw_fd());
        let (_, out) = self.rig.queue(i, flags, fd)?;
        self.bufs[i as usize] = Some(StressBuf { out, fence });
        self.order.push_back(i);
        Ok(())
    }

    /// Checks a dequeued buffer against the model: QBUF order, ERROR iff its in-fence failed,
    /// never before its in-fence signalled, out-fence status.
    fn dequeued(&mut self, b: &v4l2_buffer) -> TestResult {
        let want = self.order.pop_front();
        check(want == Some(b.index), || {
            format!(
                "DQBUF returned buffer {}, want {want:?} (QBUF order)",
                b.index
            )
        })?;
        let sb = self.bufs[b.index as usize]
            .take()
            .ok_or_else(|| format!("buffer {} dequeued but not queued", b.index))?;
        let failed = in_fence_outcome(&self.tls, sb.fence).ok_or_else(|| {
            format!(
                "buffer {} dequeued while its in-fence {:?} has not signalled",
                b.index, sb.fence
            )
        })?;
        let has_error = b.flags & V4L2_BUF_FLAG_ERROR != 0;
        check(has_error == failed, || {
            format!(
                "buffer {} (in-fence {:?}, {}) came back with flags {}",
                b.index,
                sb.fence,
                if failed { "failed" } else { "signalled" },
                flags_str(b.flags)
            )
        })?;
        if let Some(out) = &sb.out {
            let s = fstatus(out, "out-fence")?;
            check((s == 1 && !failed) || (s < 0 && failed), || {
                format!(
                    "buffer {} dequeued ({}): its out-fence is {}",
                    b.index,
                    flags_str(b.flags),
                    status_str(s)
                )
            })?;
        }
        self.dequeued += 1;
        self.errors += usize::from(failed);
        Ok(())
    }

    /// Dequeues whatever is ready.
    fn drain(&mut self) -> TestResult {
        loop {
            match self.rig.dqbuf_nb() {
                Ok(b) => self.dequeued(&b)?,
                Err(e) if e.0 == libc::EAGAIN => return Ok(()),
                Err(e) => return Err(format!("VIDIOC_DQBUF: {e}")),
            }
        }
    }

    /// STREAMOFF: every queued buffer's out-fence has signalled; all buffers are free.
    fn streamoff(&mut self) -> TestResult {
        self.rig.streamoff()?;
        for (i, b) in self.bufs.iter_mut().enumerate() {
            if let Some(sb) = b.take() {
                if let Some(out) = &sb.out {
                    let s = fstatus(out, "out-fence")?;
                    check(s != 0, || {
                        format!("out-fence of buffer {i} still pending after STREAMOFF")
                    })?;
                }
            }
        }
        self.order.clear();
        Ok(())
    }
}

/// 200 random steps (at most ~18 s): QBUF of random buffers with random in-fences (pending,
/// already signalled, on two timelines) and out-fences, random signalling order, timelines
/// closed (in-fence errors), occasional STREAMOFF/STREAMON, non-blocking DQBUF checked against
/// a model (order, ERROR, out-fence status). At the end everything drains and no fd leaked.
fn fence_stress_random(ctx: &mut Ctx) -> TestResult {
    const NBUF: u32 = 10;
    /// Never more queued than this, so that the final drain has free buffers to start with.
    const MAX_QUEUED: usize = 8;
    let seed = monotonic_ns();
    let baseline = fd_count()?;
    // The model expects in-fences to hold buffers as long as the test wants (18 s at most):
    // the bound is the largest while it runs.
    let _bound = Bound::set(FENCE_TIMEOUT_MAX_MS)?;
    let result = (|| {
        let rig = Rig::new(ctx, NBUF)?;
        let mut rng = Rng::new(seed);
        let mut st = Stress {
            rig: &rig,
            tls: Vec::new(),
            open: [0, 0],
            bufs: (0..NBUF).map(|_| None).collect(),
            order: VecDeque::new(),
            dequeued: 0,
            errors: 0,
        };
        st.open = [st.new_timeline()?, st.new_timeline()?];
        rig.streamon()?;
        let start = Instant::now();
        let mut step = 0;
        while step < 200 && start.elapsed() < Duration::from_secs(18) {
            step += 1;
            let r = (|| {
                match rng.below(100) {
                    0..=49 => {
                        let free: Vec<u32> = (0..NBUF)
                            .filter(|&i| st.bufs[i as usize].is_none())
                            .collect();
                        if !free.is_empty() && st.order.len() < MAX_QUEUED {
                            let i = free[rng.below(free.len() as u64) as usize];
                            st.queue(&mut rng, i)?;
                        }
                    }
                    50..=74 => {
                        let t = st.open[rng.below(2) as usize];
                        let n = 1 + rng.below(3) as u32;
                        let rec = &mut st.tls[t];
                        rec.tl.as_ref().ok_or("open timeline is closed")?.inc(n)?;
                        rec.value += n;
                    }
                    75..=78 => {
                        st.streamoff()?;
                        rig.streamon()?;
                    }
                    79..=81 => {
                        let slot = rng.below(2) as usize;
                        let t = st.open[slot];
                        st.tls[t].closed = true;
                        st.tls[t].tl = None;
                        st.open[slot] = st.new_timeline()?;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10 + rng.below(40))),
                }
                // Let a frame or so pass now and then, so that completions interleave.
                std::thread::sleep(Duration::from_millis(rng.below(30)));
                st.drain()
            })();
            r.map_err(|e| format!("step {step}: {e}"))?;
        }
        // Drain: signal everything, queue free buffers (at least two), dequeue all.
        for t in st.open {
            let rec = &mut st.tls[t];
            let n = rec.next.saturating_sub(rec.value) + 1;
            rec.tl.as_ref().ok_or("open timeline is closed")?.inc(n)?;
            rec.value += n;
        }
        for i in 0..NBUF {
            if st.bufs[i as usize].is_none() {
                st.queue_plain(i)?;
            }
        }
        while !st.order.is_empty() {
            let b = rig
                .dqbuf()
                .map_err(|e| format!("final drain ({} left): {e}", st.order.len()))?;
            st.dequeued(&b).map_err(|e| format!("final drain: {e}"))?;
        }
        st.streamoff()?;
        check(st.dequeued > 0, || "no buffer was dequeued at all".into())?;
        drop(st);
        drop(rig);
        Ok(())
    })();
    result.map_err(|e: String| format!("seed {seed:#x}: {e}"))?;
    same_fd_count(baseline, "after the stress test")
}

impl Stress<'_> {
    /// Queues free buffer `i` without fences.
    fn queue_plain(&mut self, i: u32) -> TestResult {
        self.rig.q_plain(i)?;
        self.bufs[i as usize] = Some(StressBuf {
            out: None,
            fence: None,
        });
        self.order.push_back(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names() {
        let mut names: Vec<&str> = FENCE_TESTS.iter().map(|t| t.0).collect();
        assert!(names.len() >= 45, "only {} fence tests", names.len());
        assert!(names
            .iter()
            .all(|n| n.starts_with("fence_") && !n.contains(char::is_whitespace)));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FENCE_TESTS.len(), "duplicate fence test names");
    }

    #[test]
    fn flag_names() {
        assert_eq!(flags_str(0), "0x0");
        assert_eq!(
            flags_str(V4L2_BUF_FLAG_QUEUED | IN | OUT),
            "0x600002(QUEUED|IN_FENCE|OUT_FENCE)"
        );
        assert_eq!(flags_str(0x2000 | 0x40), "0x2040(ERROR)");
        assert_eq!(flags_str(0x0100_0000), "0x1000000(0x1000000)");
    }

    #[test]
    fn uapi_values() {
        assert_eq!(V4L2_BUF_FLAG_IN_FENCE, 0x0020_0000);
        assert_eq!(V4L2_BUF_FLAG_OUT_FENCE, 0x0040_0000);
        assert_eq!(V4L2_BUF_CAP_SUPPORTS_FENCES, 0x8000);
        assert_eq!(RVIVID_CID_FAIL_NEXT_BUFFERS, 0x0098_f900);
        assert_eq!(RVIVID_CID_UNORDERED, 0x0098_f903);
        let mut b = buffer(1, IN, -1);
        assert_eq!(fence_fd(&b), -1);
        b.reserved2 = 7;
        assert_eq!(fence_fd(&b), 7);
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            let x = a.below(7);
            assert_eq!(x, b.below(7));
            assert!(x < 7);
        }
        let mut c = Rng::new(0);
        assert_ne!(c.next_u64(), 0);
        let hits = (0..10_000).filter(|_| c.chance(30)).count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
    }

    #[test]
    fn fd_helpers() {
        let _serial = crate::syncfile::FD_TEST_LOCK.lock();
        let before = fd_count().unwrap();
        let (r, w) = pipe().unwrap();
        assert_eq!(fd_count().unwrap(), before + 2);
        assert!(is_cloexec(r.as_raw_fd()).unwrap());
        let d = dup(w.as_raw_fd()).unwrap();
        assert!(fd_is_open(d.as_raw_fd()));
        let n = d.as_raw_fd();
        drop(d);
        assert!(!fd_is_open(n));
        assert!(!fd_is_open(lowest_free_fd()));
        drop((r, w));
        assert_eq!(fd_count().unwrap(), before);
        assert!(same_fd_count(before, "x").is_ok());
        assert!(same_fd_count(before + 1, "x").is_err());
    }

    #[test]
    fn stress_model() {
        let tls = vec![
            StressTimeline {
                tl: None,
                value: 3,
                next: 6,
                closed: false,
            },
            StressTimeline {
                tl: None,
                value: 2,
                next: 5,
                closed: true,
            },
        ];
        assert_eq!(in_fence_outcome(&tls, None), Some(false));
        assert_eq!(in_fence_outcome(&tls, Some((0, 3))), Some(false));
        assert_eq!(in_fence_outcome(&tls, Some((0, 4))), None);
        assert_eq!(in_fence_outcome(&tls, Some((1, 2))), Some(false));
        assert_eq!(in_fence_outcome(&tls, Some((1, 3))), Some(true));
    }

    #[test]
    fn monotonic_clock() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
