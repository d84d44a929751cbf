//! Fault injection over the QBUF-with-fences path (failslab and fail_function), the fence
//! sample program, module unload with a fence fd open, and the last-buffer flag.
//!
//! A QBUF that fails because an allocation failed must leave the process's fd table and the
//! buffer exactly as they were. failslab makes the n-th slab allocation of this thread fail
//! (task filter, `/proc/thread-self/make-it-fail`), for n = 1, 2, ... until QBUF succeeds, so
//! every allocation on the path fails once. fail_function makes `rvb2_sync_file_create()`
//! (the module's wrapper of `sync_file_create()`, marked `ALLOW_ERROR_INJECTION`) return NULL
//! once. Its check runs in a kprobe handler: on this kernel (no `CONFIG_KPROBES_ON_FTRACE`,
//! and fail_function's kprobes have a post handler, so they are never jump-optimised) that is
//! the int3 trap, entered like an NMI, where `in_task()` is false and no task filter applies;
//! the test reads `times` back (0) to see that the injection did happen.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::fences::{fd_count, flags_str};
use crate::harness::{wait_until, Ctx, Test, TestResult};
use crate::syncfile::{self, status_str, Timeline};
use crate::v4l2::*;

/// The fault-injection tests and the sample.
pub static FAULT_TESTS: &[Test] = &[
    ("fault_failslab_qbuf_out_fence", failslab_qbuf_out_fence),
    (
        "fault_failslab_qbuf_in_and_out_fence",
        failslab_qbuf_in_out_fence,
    ),
    (
        "fault_fail_function_sync_file_create",
        fail_function_sync_file,
    ),
    ("sample_fence_capture", sample_fence_capture),
    ("fence_out_fence_outlives_rmmod", out_fence_outlives_rmmod),
    ("last_buffer_then_epipe", last_buffer_then_epipe),
];

const FLAG_IN_FENCE: u32 = 0x0020_0000;
const FLAG_OUT_FENCE: u32 = 0x0040_0000;
const FAILSLAB: &str = "/sys/kernel/debug/failslab";
const FAIL_FUNCTION: &str = "/sys/kernel/debug/fail_function";

/// Writes `value` to the debugfs attribute `dir/name`, in one write(2) even when `value` is
/// empty (`fs::write` would make no write at all for an empty value).
fn set(dir: &str, name: &str, value: &str) -> TestResult {
    let path = Path::new(dir).join(name);
    let value = if value.is_empty() { "\n" } else { value };
    fs::write(&path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// Reads the debugfs attribute `dir/name`, trimmed.
fn get(dir: &str, name: &str) -> Result<String, String> {
    let path = Path::new(dir).join(name);
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Marks this thread as a target of fault injection while alive.
struct MakeItFail;

impl MakeItFail {
    fn new() -> Result<Self, String> {
        fs::write("/proc/thread-self/make-it-fail", "1")
            .map_err(|e| format!("/proc/thread-self/make-it-fail: {e}"))?;
        Ok(Self)
    }
}

impl Drop for MakeItFail {
    fn drop(&mut self) {
        let _ = fs::write("/proc/thread-self/make-it-fail", "0");
    }
}

/// Puts failslab back to never failing when dropped.
struct FailslabOff;

impl Drop for FailslabOff {
    fn drop(&mut self) {
        let _ = set(FAILSLAB, "probability", "0");
        let _ = set(FAILSLAB, "times", "0");
    }
}

/// Sets failslab to fail the `nth` slab allocation of a marked thread, once, silently.
fn failslab_nth(nth: u32) -> TestResult {
    set(FAILSLAB, "verbose", "0")?;
    set(FAILSLAB, "task-filter", "Y")?;
    set(FAILSLAB, "ignore-gfp-wait", "N")?;
    set(FAILSLAB, "space", "0")?;
    set(FAILSLAB, "interval", &nth.to_string())?;
    set(FAILSLAB, "times", "1")?;
    set(FAILSLAB, "probability", "100")
}

/// The status of sync_file `fd` (0 pending, 1 signalled, < 0 error).
fn fence_status(fd: RawFd, what: &str) -> Result<i32, String> {
    syncfile::status(fd).map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))
}

/// An open rvivid with `count` MMAP buffers, freed on drop.
struct Bufs {
    dev: Device,
}

impl Bufs {
    fn new(ctx: &Ctx, count: u32) -> Result<Self, String> {
        let node = ctx.find_rvivid()?;
        let dev = Device::open(&node).map_err(|e| format!("open {}: {e}", node.display()))?;
        dev.reqbufs(count)
            .map_err(|e| format!("VIDIOC_REQBUFS({count}): {e}"))?;
        Ok(Self { dev })
    }

    fn qbuf(&self, index: u32, flags: u32, fd: i32) -> Result<v4l2_buffer, Errno> {
        let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, index);
        b.flags = flags;
        b.reserved2 = fd as u32;
        self.dev.ioctl(VIDIOC_QBUF, &mut b).map(|()| b)
    }

    fn flags(&self, index: u32) -> Result<u32, String> {
        self.dev
            .querybuf(index)
            .map(|b| b.flags)
            .map_err(|e| format!("VIDIOC_QUERYBUF {index}: {e}"))
    }

    /// Takes every buffer back (STREAMOFF without streaming returns queued buffers).
    fn streamoff(&self) -> TestResult {
        self.dev
            .streamoff()
            .map_err(|e| format!("VIDIOC_STREAMOFF: {e}"))
    }
}

impl Drop for Bufs {
    fn drop(&mut self) {
        let _ = self.streamoff();
        let _ = self.dev.reqbufs(0);
    }
}

/// Runs QBUF of buffer 0 with `flags` under failslab for n = 1, 2, ...: every failure must be
/// ENOMEM and leave no fd and the buffer unqueued; stops at the first success (all the
/// allocations of the path were failed once by then).
fn failslab_sweep(ctx: &mut Ctx, with_in_fence: bool) -> TestResult {
    if !Path::new(FAILSLAB).exists() {
        return Err(format!("{FAILSLAB} missing (CONFIG_FAILSLAB, debugfs)"));
    }
    let bufs = Bufs::new(ctx, 3)?;
    let timeline = Timeline::open()?;
    let _off = FailslabOff;
    let mut failures = 0;
    for nth in 1..=64 {
        let in_fence = if with_in_fence {
            Some(timeline.create_fence(1)?)
        } else {
            None
        };
        let (flags, fd) = match &in_fence {
            Some(f) => (
                FLAG_IN_FENCE | FLAG_OUT_FENCE,
                std::os::fd::AsRawFd::as_raw_fd(f),
            ),
            None => (FLAG_OUT_FENCE, 0),
        };
        let before = fd_count()?;
        failslab_nth(nth)?;
        let r = {
            let _fail = MakeItFail::new()?;
            bufs.qbuf(0, flags, fd)
        };
        set(FAILSLAB, "probability", "0")?;
        match r {
            Err(e) if e.0 == libc::ENOMEM => {
                failures += 1;
                let after = fd_count()?;
                if after != before {
                    return Err(format!(
                        "allocation {nth} failed: QBUF ENOMEM left {after} fds, had {before}"
                    ));
                }
                let f = bufs.flags(0)?;
                if f & V4L2_BUF_FLAG_QUEUED != 0 {
                    return Err(format!(
                        "allocation {nth} failed: QBUF ENOMEM left the buffer queued ({f:#x})"
                    ));
                }
            }
            Err(e) => return Err(format!("allocation {nth} failed: QBUF returned {e}")),
            Ok(b) => {
                // Past the last allocation of the path: the QBUF went through.
                let out = b.reserved2 as i32;
                if out < 0 {
                    return Err(format!("QBUF succeeded with fence_fd {out}"));
                }
                // SAFETY: `out` is the fd QBUF just installed for us.
                unsafe { libc::close(out) };
                bufs.streamoff()?;
                if failures == 0 {
                    return Err("QBUF succeeded with its first allocation failed: the \
                                injection did not reach the fence path"
                        .into());
                }
                let after = fd_count()?;
                if after != before {
                    return Err(format!(
                        "after the successful QBUF: {after} fds, had {before}"
                    ));
                }
                return Ok(());
            }
        }
    }
    Err("QBUF still failed after 64 injected allocation failures".into())
}

/// failslab over QBUF with an out-fence: each failing allocation gives ENOMEM, no fd, the
/// buffer unqueued.
fn failslab_qbuf_out_fence(ctx: &mut Ctx) -> TestResult {
    failslab_sweep(ctx, false)
}

/// failslab over QBUF with an in-fence and an out-fence.
fn failslab_qbuf_in_out_fence(ctx: &mut Ctx) -> TestResult {
    failslab_sweep(ctx, true)
}

/// Removes the fail_function injection of `rvb2_sync_file_create` when dropped.
struct FailFunctionOff;

impl Drop for FailFunctionOff {
    fn drop(&mut self) {
        let _ = set(FAIL_FUNCTION, "probability", "0");
        let _ = set(FAIL_FUNCTION, "inject", "!rvb2_sync_file_create");
    }
}

/// fail_function on `rvb2_sync_file_create()`: QBUF with an out-fence fails with ENOMEM, no
/// fd, the buffer unqueued and without fence flags, the injection used up (`times` 0); QBUF
/// works again once the injection is removed.
fn fail_function_sync_file(ctx: &mut Ctx) -> TestResult {
    if !Path::new(FAIL_FUNCTION).exists() {
        return Err(format!(
            "{FAIL_FUNCTION} missing (CONFIG_FAIL_FUNCTION, debugfs)"
        ));
    }
    let bufs = Bufs::new(ctx, 3)?;
    set(FAIL_FUNCTION, "probability", "0")?;
    set(FAIL_FUNCTION, "inject", "rvb2_sync_file_create")?;
    let _off = FailFunctionOff;
    set(FAIL_FUNCTION, "verbose", "0")?;
    // The check runs in the int3 handler, where neither the task filter nor fail-nth applies
    // (module documentation); only this test calls the function now, so the next call fails,
    // once.
    set(FAIL_FUNCTION, "task-filter", "N")?;
    set(FAIL_FUNCTION, "space", "0")?;
    set(FAIL_FUNCTION, "interval", "1")?;
    set(FAIL_FUNCTION, "times", "1")?;
    set(FAIL_FUNCTION, "probability", "100")?;
    let before = fd_count()?;
    let r = bufs.qbuf(0, FLAG_OUT_FENCE, 0);
    set(FAIL_FUNCTION, "probability", "0")?;
    match r {
        Err(e) if e.0 == libc::ENOMEM => {}
        Err(e) => return Err(format!("QBUF with the injection: {e}, want ENOMEM")),
        Ok(_) => return Err("QBUF with the injection succeeded, want ENOMEM".into()),
    }
    let times = get(FAIL_FUNCTION, "times")?;
    if times != "0" {
        return Err(format!(
            "fail_function times is {times} after the QBUF: the injection did not happen"
        ));
    }
    let after = fd_count()?;
    if after != before {
        return Err(format!("QBUF ENOMEM left {after} fds, had {before}"));
    }
    let f = bufs.flags(0)?;
    if f & (V4L2_BUF_FLAG_QUEUED | FLAG_IN_FENCE | FLAG_OUT_FENCE) != 0 {
        return Err(format!(
            "QBUF ENOMEM left the buffer with flags {}, want it not queued and without fence \
             flags",
            flags_str(f)
        ));
    }
    set(FAIL_FUNCTION, "inject", "!rvb2_sync_file_create")?;
    let list = get(FAIL_FUNCTION, "inject")?;
    if list.contains("rvb2_sync_file_create") {
        return Err(format!(
            "fail_function still injects {list:?} after its removal"
        ));
    }
    let b = bufs
        .qbuf(0, FLAG_OUT_FENCE, 0)
        .map_err(|e| format!("QBUF without the injection: {e}"))?;
    // SAFETY: the fd QBUF just installed for us; the OwnedFd closes it.
    let out = unsafe { OwnedFd::from_raw_fd(b.reserved2 as i32) };
    let now = fd_count()?;
    if now != before + 1 {
        return Err(format!(
            "QBUF without the injection: {now} fds, had {before} (want one new fd)"
        ));
    }
    let s = fence_status(out.as_raw_fd(), "out-fence")?;
    if s != 0 {
        return Err(format!(
            "out-fence of the queued buffer: {}, want pending",
            status_str(s)
        ));
    }
    Ok(())
}

/// samples/fence-capture (built by `make check`) streams 12 frames gated by sw_sync in-fences,
/// waiting on out-fences, and exits 0.
fn sample_fence_capture(ctx: &mut Ctx) -> TestResult {
    let node = ctx.find_rvivid()?;
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sample = top.join("build/samples/fence-capture");
    let out = ctx.run(&sample.to_string_lossy(), &[&node.to_string_lossy(), "12"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ctx.save_log(
        "sample-fence-capture.txt",
        format!(
            "{stdout}\n--- stderr ---\n{stderr}\n--- {} ---\n",
            out.status
        ),
    )?;
    if !out.status.success() || !stdout.contains("12 frames, 0 errors") {
        return Err(format!(
            "fence-capture: {} ({})",
            stdout.lines().last().unwrap_or(""),
            out.status
        ));
    }
    Ok(())
}

/// Close with pending fences, then rmmod: an out-fence fd kept open across the unload still
/// answers SYNC_IOC_FILE_INFO (cancelled, detached from the module), and signalling the
/// in-fence afterwards is harmless; the module loads again.
fn out_fence_outlives_rmmod(ctx: &mut Ctx) -> TestResult {
    let module = ctx.module()?.to_path_buf();
    let timeline = Timeline::open()?;
    let in_fence = timeline.create_fence(1)?;
    let out = {
        let bufs = Bufs::new(ctx, 3)?;
        let b = bufs
            .qbuf(0, FLAG_IN_FENCE | FLAG_OUT_FENCE, in_fence.as_raw_fd())
            .map_err(|e| format!("QBUF with both fences: {e}"))?;
        // SAFETY: the fd QBUF just installed for us; the OwnedFd closes it.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(b.reserved2 as i32) }
        // Dropping `bufs` closes the video fd with the buffer waiting for its in-fence.
    };
    let status = syncfile::status(out.as_raw_fd()).map_err(|e| format!("FILE_INFO: {e}"))?;
    if status != -libc::ECANCELED {
        return Err(format!(
            "out-fence after close: status {status}, want -ECANCELED"
        ));
    }
    let unload = ctx.run_ok("rmmod", &["rvivid"]);
    if let Err(e) = unload {
        return Err(format!("rmmod with an out-fence fd open: {e}"));
    }
    let reload = |ctx: &Ctx| -> TestResult {
        ctx.run_ok("insmod", &[&*module.to_string_lossy()])?;
        if !wait_until(Duration::from_secs(5), || ctx.rvivid_present()) {
            return Err("no rvivid node 5 s after insmod".into());
        }
        Ok(())
    };
    let checks = (|| -> TestResult {
        let info = syncfile::file_info(out.as_raw_fd()).map_err(|e| format!("FILE_INFO: {e}"))?;
        if info.status != -libc::ECANCELED || info.fences.len() != 1 {
            return Err(format!("out-fence after rmmod: {info}"));
        }
        timeline.inc(1)?;
        Ok(())
    })();
    reload(ctx)?;
    checks
}

/// With "Mark Last Buffer" set, a buffer comes back with V4L2_BUF_FLAG_LAST; then DQBUF is
/// EPIPE and poll reports readable until STREAMOFF, after which streaming works again.
fn last_buffer_then_epipe(ctx: &mut Ctx) -> TestResult {
    let bufs = Bufs::new(ctx, 4)?;
    let dev = &bufs.dev;
    let guard = LastOff(dev);
    let qbuf_all = || -> TestResult {
        for i in 0..4 {
            dev.qbuf(i).map_err(|e| format!("VIDIOC_QBUF {i}: {e}"))?;
        }
        dev.streamon().map_err(|e| format!("VIDIOC_STREAMON: {e}"))
    };
    let dqbuf = || -> Result<v4l2_buffer, String> {
        let r = dev
            .poll(libc::POLLIN, 5000)
            .map_err(|e| format!("poll: {e}"))?;
        if r & libc::POLLIN == 0 {
            return Err(format!("no buffer within 5 s (revents {r:#x})"));
        }
        dev.dqbuf().map_err(|e| format!("VIDIOC_DQBUF: {e}"))
    };
    qbuf_all()?;
    dev.s_ctrl(RVIVID_CID_MARK_LAST, 1)
        .map_err(|e| format!("VIDIOC_S_CTRL Mark Last Buffer: {e}"))?;
    let mut found = false;
    for _ in 0..20 {
        let b = dqbuf()?;
        if b.flags & V4L2_BUF_FLAG_LAST != 0 {
            found = true;
            break;
        }
        dev.qbuf(b.index)
            .map_err(|e| format!("VIDIOC_QBUF {}: {e}", b.index))?;
    }
    if !found {
        return Err("no buffer with V4L2_BUF_FLAG_LAST within 20 frames".into());
    }
    dev.set_nonblocking(true)
        .map_err(|e| format!("O_NONBLOCK: {e}"))?;
    match dev.dqbuf() {
        Err(e) if e.0 == libc::EPIPE => {}
        other => {
            return Err(format!(
                "VIDIOC_DQBUF after the last buffer: {other:?}, want EPIPE"
            ))
        }
    }
    dev.set_nonblocking(false)
        .map_err(|e| format!("~O_NONBLOCK: {e}"))?;
    let r = dev
        .poll(libc::POLLIN, 0)
        .map_err(|e| format!("poll: {e}"))?;
    if r & libc::POLLIN == 0 {
        return Err(format!(
            "poll after the last buffer: revents {r:#x}, want POLLIN"
        ));
    }
    bufs.streamoff()?;
    drop(guard);
    qbuf_all()?;
    let b = dqbuf()?;
    if b.flags & V4L2_BUF_FLAG_LAST != 0 {
        return Err("a buffer of the new stream is marked LAST".into());
    }
    bufs.streamoff()
}

/// Clears "Mark Last Buffer" when dropped.
struct LastOff<'a>(&'a Device);

impl Drop for LastOff<'_> {
    fn drop(&mut self) {
        let _ = self.0.s_ctrl(RVIVID_CID_MARK_LAST, 0);
    }
}
