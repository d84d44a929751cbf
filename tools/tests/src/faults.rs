//! Fault injection over the QBUF-with-fences path (failslab with the per-task `fail-nth`, and
//! fail_function), the fence sample program, module unload with a fence fd open, and the
//! last-buffer flag.
//!
//! A QBUF that fails because an allocation failed must leave the process's fd table and the
//! buffer exactly as they were.
//!
//! # The failslab sweep
//!
//! It uses `/proc/thread-self/fail-nth` (`Documentation/fault-injection/fault-injection.rst`,
//! "Fault injection via /proc/thread-self/fail-nth"): writing N makes the N-th fail point this
//! thread reaches fail, once; reading it back gives 0 once that fault was injected, or how
//! many fail points were still to go. For N = 1, 2, ... the sweep writes N, issues one QBUF at
//! once (the arguments are ready, the fail-nth file is open, nothing else enters the kernel in
//! between), reads fail-nth back and disarms it. So step N fails exactly the N-th fail point
//! of that QBUF and nothing else, whatever the steps before did. Each step checks:
//!
//! - a fault was injected and QBUF failed: the error is ENOMEM, the number of open fds did not
//!   change, the buffer is not queued and has no fence flag (QUERYBUF), the in-fence is still
//!   pending;
//! - QBUF succeeded (a fault was injected and absorbed, e.g. by kmemleak, whose metadata
//!   allocation falls back on its own pool; or none was injected): exactly one new
//!   fd, the buffer QUEUED with OUT_FENCE (and IN_FENCE), the out-fence pending, and it works:
//!   streamed (with a second buffer, as rvivid needs two, and the in-fence signalled), the
//!   out-fence signals 1 and DQBUF returns the buffer;
//! - a QBUF that failed with no fault injected is an error.
//!
//! The sweep ends at the first step where QBUF succeeded and no fault was injected (the QBUF
//! made fewer than N calls to fail points): every fail point of the path has failed once by
//! then. More than [`MAX_STEPS`] steps fail the test. The steps are logged in the logs
//! directory, in a file named after the test (`fault_failslab_qbuf_out_fence.txt`, ...).
//!
//! What counts as a fail point (`lib/fault-inject.c`, `should_fail_ex()`): every call of a
//! fault capability's check in this task that passes the capability's own filters. fail-nth
//! is consulted before the generic attributes (probability, interval, times, space,
//! task-filter and make-it-fail play no part in it); only the per-capability filters come
//! first, so the sweep sets failslab's `ignore-gfp-wait` to N (GFP_KERNEL allocations count;
//! by default only atomic ones would) and `cache-filter` to N, and `verbose` to 0 (no message
//! per injected fault). failslab's `probability` is set to 0, so that no other task sees a
//! failure while `ignore-gfp-wait` is N. The test kernel (`tools/kernel/rvb2.config`) has
//! failslab and fail_function, and `fail_mempool_alloc`, whose failures mempools absorb; no
//! fail_page_alloc, fail_usercopy or fail_futex, whose points would count too (a failed
//! usercopy would be EFAULT, not ENOMEM). fail_function's check counts only for functions in
//! its injection list, and only where its kprobe handler runs in task context (not on this
//! kernel, see below); the sweep requires the list to be empty.
//!
//! On the test kernel a QBUF with an out-fence (with or without an in-fence) reaches 10 fail
//! points: the out-fence's kmalloc, the fence list of the buffer's reservation object
//! (`dma_resv_reserve_fences()`, for implicit synchronization), then in `sync_file_create()`
//! the sync_file, its dentry and its file, each followed by kmemleak's allocation for it. So a
//! sweep takes 11 steps: 5 ENOMEM, 5 absorbed, 1 without a fault.
//!
//! # fail_function
//!
//! fail_function makes `rvb2_sync_file_create()` (the module's wrapper of
//! `sync_file_create()`, marked `ALLOW_ERROR_INJECTION`) return NULL once. Its check runs in a
//! kprobe handler: on this kernel (no `CONFIG_KPROBES_ON_FTRACE`, and fail_function's kprobes
//! have a post handler, so they are never jump-optimised) that is the int3 trap, entered like
//! an NMI, where `in_task()` is false: neither fail-nth nor the task filter applies there, so
//! the test uses a global "fail the next call, once" (times 1), and reads `times` back (0) to
//! see that the injection did happen.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
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
const FAIL_NTH: &str = "/proc/thread-self/fail-nth";
/// The most steps a sweep may take: far more than the fail points of one QBUF (a few
/// allocations, each also doing kmemleak's).
const MAX_STEPS: u32 = 200;
/// How long a streamed buffer may take.
const TIMEOUT: Duration = Duration::from_secs(5);

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

/// This thread's `/proc/thread-self/fail-nth`, open for the whole sweep (opening it allocates,
/// which must not happen while it is armed); disarmed (0) when dropped.
struct FailNth {
    file: fs::File,
}

impl FailNth {
    fn open() -> Result<Self, String> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(FAIL_NTH)
            .map_err(|e| format!("{FAIL_NTH}: {e} (CONFIG_FAULT_INJECTION)"))?;
        let f = FailNth { file };
        f.write(0)?;
        Ok(f)
    }

    /// Writes `n` (the kernel ignores the file position). No heap allocation here: a free()
    /// could enter the kernel after the write.
    fn write(&self, n: u32) -> TestResult {
        let mut buf = [0u8; 10];
        let mut i = buf.len();
        let mut v = n;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        match self.file.write_at(&buf[i..], 0) {
            Ok(w) if w == buf.len() - i => Ok(()),
            Ok(w) => Err(format!("{FAIL_NTH}: short write ({w} bytes) of {n}")),
            Err(e) => Err(format!("writing {n} to {FAIL_NTH}: {e}")),
        }
    }

    /// Reads the value back: 0 once the armed fault was injected, else how many fail points
    /// were still to go.
    fn read(&self) -> Result<u32, String> {
        let mut buf = [0u8; 16];
        let n = self
            .file
            .read_at(&mut buf, 0)
            .map_err(|e| format!("reading {FAIL_NTH}: {e}"))?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("{FAIL_NTH} reads {:?}", &buf[..n]))
    }

    /// Arms the `n`-th fail point, runs `call` (one system call, prepared beforehand), then
    /// reads back and disarms. Returns `call`'s result and what was left of `n`.
    fn inject<T>(&self, n: u32, call: impl FnOnce() -> T) -> Result<(T, u32), String> {
        self.write(n)?;
        let r = call();
        let left = self.read();
        if !matches!(left, Ok(0)) {
            // Not consumed: disarm before anything else enters the kernel.
            self.write(0)?;
        }
        Ok((r, left?))
    }
}

impl Drop for FailNth {
    fn drop(&mut self) {
        let _ = self.write(0);
    }
}

/// failslab set up for fail-nth (see the module documentation); on drop, probability 0 and the
/// other attributes as they were.
struct FailslabForNth {
    saved: Vec<(&'static str, String)>,
}

impl FailslabForNth {
    fn new() -> Result<Self, String> {
        if !Path::new(FAILSLAB).exists() {
            return Err(format!("{FAILSLAB} missing (CONFIG_FAILSLAB, debugfs)"));
        }
        let mut saved = Vec::new();
        for name in ["verbose", "ignore-gfp-wait", "cache-filter"] {
            saved.push((name, get(FAILSLAB, name)?));
        }
        let this = FailslabForNth { saved };
        set(FAILSLAB, "probability", "0")?;
        set(FAILSLAB, "verbose", "0")?;
        set(FAILSLAB, "ignore-gfp-wait", "N")?;
        set(FAILSLAB, "cache-filter", "N")?;
        Ok(this)
    }
}

impl Drop for FailslabForNth {
    fn drop(&mut self) {
        let _ = set(FAILSLAB, "probability", "0");
        for (name, value) in &self.saved {
            let _ = set(FAILSLAB, name, value);
        }
    }
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

/// The flags that describe a buffer's state.
const STATE_FLAGS: u32 = V4L2_BUF_FLAG_QUEUED
    | V4L2_BUF_FLAG_DONE
    | V4L2_BUF_FLAG_ERROR
    | V4L2_BUF_FLAG_PREPARED
    | FLAG_IN_FENCE
    | FLAG_OUT_FENCE;

/// The status of sync_file `fd` (0 pending, 1 signalled, < 0 error).
fn fence_status(fd: RawFd, what: &str) -> Result<i32, String> {
    syncfile::status(fd).map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))
}

/// What one step of a sweep saw.
enum Step {
    /// The fault was injected and QBUF failed with ENOMEM.
    Failed,
    /// QBUF succeeded although the fault was injected (something absorbed it).
    Absorbed,
    /// No fault was injected (the QBUF made `calls` calls to fail points) and QBUF succeeded.
    Done { calls: u32 },
}

/// One step: QBUF of buffer 0 (OUT_FENCE, and IN_FENCE with a new pending sw_sync fence if
/// `with_in_fence`) with the `nth` fail point failed; checks the outcome (see the module
/// documentation) and leaves buffer 0 dequeued.
fn sweep_step(
    bufs: &Bufs,
    fail_nth: &FailNth,
    nth: u32,
    with_in_fence: bool,
) -> Result<Step, String> {
    let timeline = Timeline::open()?;
    let in_fence = if with_in_fence {
        Some(timeline.create_fence(1)?)
    } else {
        None
    };
    let (flags, fd) = match &in_fence {
        Some(f) => (FLAG_IN_FENCE | FLAG_OUT_FENCE, f.as_raw_fd()),
        None => (FLAG_OUT_FENCE, 0),
    };
    let state_before = bufs.flags(0)? & STATE_FLAGS;
    let before = fd_count()?;
    let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, 0);
    b.flags = flags;
    b.reserved2 = fd as u32;
    let (r, left) = fail_nth.inject(nth, || bufs.dev.ioctl_once(VIDIOC_QBUF, &mut b))?;
    let injected = left == 0;
    if left > nth {
        return Err(format!("fail-nth reads {left} after it was set to {nth}"));
    }
    match r {
        Err(e) if !injected => Err(format!(
            "QBUF failed with {e} but no fault was injected (fail-nth left at {left})"
        )),
        Err(e) if e.0 != libc::ENOMEM => Err(format!("QBUF returned {e}, want ENOMEM")),
        Err(_) => {
            let after = fd_count()?;
            if after != before {
                return Err(format!("QBUF ENOMEM left {after} open fds, had {before}"));
            }
            let f = bufs.flags(0)?;
            if f & (V4L2_BUF_FLAG_QUEUED | FLAG_IN_FENCE | FLAG_OUT_FENCE) != 0
                || f & STATE_FLAGS != state_before
            {
                return Err(format!(
                    "QBUF ENOMEM changed the buffer: flags {} (before {}), want it not queued \
                     and without fence flags",
                    flags_str(f),
                    flags_str(state_before)
                ));
            }
            if let Some(f) = &in_fence {
                let s = fence_status(f.as_raw_fd(), "in-fence")?;
                if s != 0 {
                    return Err(format!("in-fence after QBUF ENOMEM: {}", status_str(s)));
                }
            }
            Ok(Step::Failed)
        }
        Ok(()) => {
            let out = b.reserved2 as i32;
            if out < 0 || out == fd || out == bufs.dev.as_raw_fd() {
                return Err(format!("QBUF succeeded with fence_fd {out}, want a new fd"));
            }
            // SAFETY: QBUF installed this fd for us; nothing else owns it.
            let out = unsafe { OwnedFd::from_raw_fd(out) };
            check_out_fence_works(bufs, &out, before, &timeline, with_in_fence)?;
            Ok(if injected {
                Step::Absorbed
            } else {
                Step::Done { calls: nth - left }
            })
        }
    }
}

/// After a successful QBUF of buffer 0 with an out-fence (`before` fds before it): exactly one
/// new fd, the buffer QUEUED with its fence flags, the out-fence pending; then the buffer is
/// streamed (with buffer 1, the in-fence signalled on `timeline`): the out-fence signals 1,
/// DQBUF returns buffer 0 without ERROR and without fence flags; STREAMOFF.
fn check_out_fence_works(
    bufs: &Bufs,
    out: &OwnedFd,
    before: usize,
    timeline: &Timeline,
    with_in_fence: bool,
) -> TestResult {
    let after = fd_count()?;
    if after != before + 1 {
        return Err(format!(
            "QBUF succeeded: {after} open fds, had {before} (want exactly one new fd)"
        ));
    }
    let want =
        V4L2_BUF_FLAG_QUEUED | FLAG_OUT_FENCE | if with_in_fence { FLAG_IN_FENCE } else { 0 };
    let f = bufs.flags(0)?;
    if f & STATE_FLAGS != want {
        return Err(format!(
            "QUERYBUF 0 after QBUF: flags {}, want {}",
            flags_str(f),
            flags_str(want)
        ));
    }
    let s = fence_status(out.as_raw_fd(), "out-fence")?;
    if s != 0 {
        return Err(format!(
            "out-fence after QBUF: {}, want pending",
            status_str(s)
        ));
    }
    bufs.qbuf(1, 0, 0)
        .map_err(|e| format!("VIDIOC_QBUF 1: {e}"))?;
    bufs.dev
        .streamon()
        .map_err(|e| format!("VIDIOC_STREAMON: {e}"))?;
    if with_in_fence {
        timeline.inc(1)?;
    }
    let s = syncfile::wait_signalled(out.as_raw_fd(), TIMEOUT, "out-fence of buffer 0")?;
    if s != 1 {
        return Err(format!(
            "out-fence of buffer 0: {}, want signalled (1)",
            status_str(s)
        ));
    }
    let r = bufs
        .dev
        .poll(libc::POLLIN, TIMEOUT.as_millis() as i32)
        .map_err(|e| format!("poll: {e}"))?;
    if r & libc::POLLIN == 0 {
        return Err(format!(
            "no buffer to dequeue although the out-fence signalled (revents {r:#x})"
        ));
    }
    let d = bufs.dev.dqbuf().map_err(|e| format!("VIDIOC_DQBUF: {e}"))?;
    if d.index != 0 || d.flags & (V4L2_BUF_FLAG_ERROR | FLAG_IN_FENCE | FLAG_OUT_FENCE) != 0 {
        return Err(format!(
            "DQBUF returned buffer {} with flags {}, want buffer 0 without ERROR or fence flags",
            d.index,
            flags_str(d.flags)
        ));
    }
    bufs.streamoff()
}

/// The failslab sweep over QBUF of buffer 0 with an out-fence (and an in-fence if
/// `with_in_fence`); see the module documentation.
fn failslab_sweep(ctx: &mut Ctx, name: &str, with_in_fence: bool) -> TestResult {
    let mut log = String::new();
    let r = failslab_sweep_logged(ctx, with_in_fence, &mut log);
    log.push_str(&match &r {
        Ok(summary) => format!("ok: {summary}\n"),
        Err(e) => format!("FAILED: {e}\n"),
    });
    ctx.save_log(&format!("{name}.txt"), &log)?;
    r.map(|_| ())
}

fn failslab_sweep_logged(
    ctx: &Ctx,
    with_in_fence: bool,
    log: &mut String,
) -> Result<String, String> {
    if Path::new(FAIL_FUNCTION).exists() {
        let list = get(FAIL_FUNCTION, "inject")?;
        if !list.is_empty() {
            return Err(format!(
                "fail_function injects {list:?}: its fail point would count in the sweep"
            ));
        }
    }
    let bufs = Bufs::new(ctx, 3)?;
    let _failslab = FailslabForNth::new()?;
    let fail_nth = FailNth::open()?;
    let (mut failed, mut absorbed) = (0, 0);
    for nth in 1..=MAX_STEPS {
        let step = sweep_step(&bufs, &fail_nth, nth, with_in_fence)
            .map_err(|e| format!("step {nth} (fail point {nth} of the QBUF failed): {e}"))?;
        match step {
            Step::Failed => {
                failed += 1;
                log.push_str(&format!("step {nth}: fault injected, QBUF ENOMEM\n"));
            }
            Step::Absorbed => {
                absorbed += 1;
                log.push_str(&format!(
                    "step {nth}: fault injected, QBUF succeeded (absorbed), out-fence works\n"
                ));
            }
            Step::Done { calls } => {
                log.push_str(&format!(
                    "step {nth}: no fault injected ({calls} fail points), QBUF succeeded, \
                     out-fence works\n"
                ));
                if failed == 0 {
                    return Err(format!(
                        "no step failed the QBUF ({absorbed} absorbed faults): the injection \
                         did not reach the fence path"
                    ));
                }
                return Ok(format!(
                    "{nth} steps: {failed} QBUF ENOMEM, {absorbed} absorbed, then {calls} fail \
                     points without a fault"
                ));
            }
        }
    }
    Err(format!(
        "QBUF still reached its {MAX_STEPS}th fail point ({failed} ENOMEM, {absorbed} absorbed)"
    ))
}

/// failslab over QBUF with an out-fence: each fail point of the path fails once.
fn failslab_qbuf_out_fence(ctx: &mut Ctx) -> TestResult {
    failslab_sweep(ctx, "fault_failslab_qbuf_out_fence", false)
}

/// failslab over QBUF with an in-fence and an out-fence.
fn failslab_qbuf_in_out_fence(ctx: &mut Ctx) -> TestResult {
    failslab_sweep(ctx, "fault_failslab_qbuf_in_and_out_fence", true)
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
