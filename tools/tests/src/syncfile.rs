//! sync_file and sw_sync UAPI (`linux/sync_file.h`, `drivers/dma-buf/sw_sync.c`) and small
//! safe helpers around them, for the fence tests.
//!
//! Struct sizes, field offsets and ioctl numbers are asserted at compile time against what gcc
//! computes on x86_64 from `/usr/include/linux/sync_file.h` (sw_sync has no installed header:
//! its values come from the definitions in `sw_sync.c`, compiled the same way).
//!
//! - [`Timeline`]: one sw_sync timeline (one open of `/sys/kernel/debug/sync/sw_sync`). Its
//!   fences signal when the timeline's value reaches theirs; closing it (dropping the
//!   `Timeline`) signals every fence still pending with `-ENOENT`.
//! - [`file_info`], [`status`], [`merge`], [`wait_signalled`]: `SYNC_IOC_FILE_INFO`,
//!   `SYNC_IOC_MERGE` and `poll()` on any sync_file.

#![allow(non_camel_case_types)]

use std::fmt;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::v4l2::Errno;

/// Where sw_sync lives (debugfs, `CONFIG_SW_SYNC`).
pub const SW_SYNC_PATH: &str = "/sys/kernel/debug/sync/sw_sync";

// ---------------------------------------------------------------------------------------------
// ioctl encoding (asm-generic/ioctl.h), kept local so this module stands alone
// ---------------------------------------------------------------------------------------------

const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

// ---------------------------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------------------------

/// `struct sync_merge_data`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sync_merge_data {
    pub name: [u8; 32],
    pub fd2: i32,
    pub fence: i32,
    pub flags: u32,
    pub pad: u32,
}

/// `struct sync_fence_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sync_fence_info {
    pub obj_name: [u8; 32],
    pub driver_name: [u8; 32],
    pub status: i32,
    pub flags: u32,
    pub timestamp_ns: u64,
}

/// `struct sync_file_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sync_file_info {
    pub name: [u8; 32],
    pub status: i32,
    pub flags: u32,
    pub num_fences: u32,
    pub pad: u32,
    /// A user pointer to `num_fences` `struct sync_fence_info`.
    pub sync_fence_info: u64,
}

/// `struct sw_sync_create_fence_data` (sw_sync.c).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sw_sync_create_fence_data {
    pub value: u32,
    pub name: [u8; 32],
    pub fence: i32,
}

pub const SYNC_IOC_MERGE: u32 = ioc(IOC_READ | IOC_WRITE, b'>', 3, size_of::<sync_merge_data>());
pub const SYNC_IOC_FILE_INFO: u32 = ioc(IOC_READ | IOC_WRITE, b'>', 4, size_of::<sync_file_info>());
pub const SW_SYNC_IOC_CREATE_FENCE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    b'W',
    0,
    size_of::<sw_sync_create_fence_data>(),
);
pub const SW_SYNC_IOC_INC: u32 = ioc(IOC_WRITE, b'W', 1, size_of::<u32>());

// gcc, x86_64, /usr/include/linux/sync_file.h (and sw_sync.c's definitions).
const _: () = assert!(size_of::<sync_merge_data>() == 48);
const _: () = assert!(offset_of!(sync_merge_data, fd2) == 32);
const _: () = assert!(offset_of!(sync_merge_data, fence) == 36);
const _: () = assert!(offset_of!(sync_merge_data, flags) == 40);
const _: () = assert!(size_of::<sync_fence_info>() == 80);
const _: () = assert!(offset_of!(sync_fence_info, status) == 64);
const _: () = assert!(offset_of!(sync_fence_info, timestamp_ns) == 72);
const _: () = assert!(size_of::<sync_file_info>() == 56);
const _: () = assert!(offset_of!(sync_file_info, status) == 32);
const _: () = assert!(offset_of!(sync_file_info, num_fences) == 40);
const _: () = assert!(offset_of!(sync_file_info, sync_fence_info) == 48);
const _: () = assert!(size_of::<sw_sync_create_fence_data>() == 40);
const _: () = assert!(offset_of!(sw_sync_create_fence_data, fence) == 36);
const _: () = assert!(SYNC_IOC_MERGE == 0xc030_3e03);
const _: () = assert!(SYNC_IOC_FILE_INFO == 0xc038_3e04);
const _: () = assert!(SW_SYNC_IOC_CREATE_FENCE == 0xc028_5700);
const _: () = assert!(SW_SYNC_IOC_INC == 0x4004_5701);

// ---------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------

/// A 32-byte, NUL-terminated name field holding (a prefix of) `s`.
pub fn name_field(s: &str) -> [u8; 32] {
    let mut f = [0u8; 32];
    let n = s.len().min(31);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

/// The text of a fixed-size C string field (up to its first NUL, or all of it).
pub fn field_str(field: &[u8]) -> String {
    let n = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..n]).into_owned()
}

/// A fence status for messages: "pending", "signalled" or "error -ECANCELED (-125)".
pub fn status_str(status: i32) -> String {
    match status {
        0 => "pending".to_string(),
        1 => "signalled".to_string(),
        s if s < 0 => format!("error -{} ({s})", crate::v4l2::errno_name(-s)),
        s => format!("status {s}"),
    }
}

// ---------------------------------------------------------------------------------------------
// System calls
// ---------------------------------------------------------------------------------------------

/// `ioctl(fd, req, arg)`, retried on EINTR. `req` must take a `T`.
pub fn ioctl<T>(fd: RawFd, req: u32, arg: &mut T) -> Result<(), Errno> {
    loop {
        // SAFETY: `arg` is a live, exclusively borrowed `T` for the call; every request used
        // with this function encodes `size_of::<T>()`, so the kernel stays within it.
        let r = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg as *mut T) };
        if r >= 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// `poll()` one fd for `events` for up to `timeout_ms`; returns its `revents` (0 on timeout).
pub fn poll_fd(fd: RawFd, events: i16, timeout_ms: i32) -> Result<i16, Errno> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = Errno::last();
        if e.0 == libc::EINTR {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(if r == 0 { 0 } else { p.revents })
}

/// One fence of a sync_file, as `SYNC_IOC_FILE_INFO` reports it.
#[derive(Clone, Debug)]
pub struct FenceInfo {
    /// The timeline name (`obj_name`); "detached-timeline" once signalled.
    pub obj_name: String,
    /// The driver name; "detached-driver" once signalled.
    pub driver_name: String,
    /// 0 pending, 1 signalled, < 0 signalled with that error.
    pub status: i32,
    /// The signal time (CLOCK_MONOTONIC ns), 0 while pending.
    pub timestamp_ns: u64,
}

/// What `SYNC_IOC_FILE_INFO` reports of a sync_file.
#[derive(Clone, Debug)]
pub struct SyncFileInfo {
    pub name: String,
    /// The overall status (with `num_fences == 0`: `dma_fence_get_status()`).
    pub status: i32,
    pub fences: Vec<FenceInfo>,
}

impl fmt::Display for SyncFileInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sync_file {:?} {} with {} fence(s)",
            self.name,
            status_str(self.status),
            self.fences.len()
        )?;
        for x in &self.fences {
            write!(
                f,
                " [{}/{} {} ts {}]",
                x.driver_name,
                x.obj_name,
                status_str(x.status),
                x.timestamp_ns
            )?;
        }
        Ok(())
    }
}

/// `SYNC_IOC_FILE_INFO` with `num_fences == 0`: the overall status of sync_file `fd`
/// (0 pending, 1 signalled, < 0 error).
pub fn status(fd: RawFd) -> Result<i32, Errno> {
    // SAFETY: plain-old-data struct, all-zero is valid.
    let mut info: sync_file_info = unsafe { std::mem::zeroed() };
    ioctl(fd, SYNC_IOC_FILE_INFO, &mut info)?;
    Ok(info.status)
}

/// `SYNC_IOC_FILE_INFO`: the sync_file `fd`, its overall status and every fence in it.
pub fn file_info(fd: RawFd) -> Result<SyncFileInfo, Errno> {
    // SAFETY: plain-old-data struct, all-zero is valid.
    let mut info: sync_file_info = unsafe { std::mem::zeroed() };
    ioctl(fd, SYNC_IOC_FILE_INFO, &mut info)?;
    let overall = info.status;
    let n = info.num_fences as usize;
    let mut fences = Vec::new();
    if n > 0 {
        // SAFETY: plain-old-data struct, all-zero is valid.
        let mut raw: Vec<sync_fence_info> = vec![unsafe { std::mem::zeroed() }; n];
        // SAFETY: as above.
        let mut info2: sync_file_info = unsafe { std::mem::zeroed() };
        info2.num_fences = n as u32;
        info2.sync_fence_info = raw.as_mut_ptr() as u64;
        // The kernel writes at most `n` entries into `raw` (it fails with EINVAL if the
        // sync_file has more), which lives until after the call.
        ioctl(fd, SYNC_IOC_FILE_INFO, &mut info2)?;
        let got = (info2.num_fences as usize).min(n);
        fences = raw[..got]
            .iter()
            .map(|r| FenceInfo {
                obj_name: field_str(&r.obj_name),
                driver_name: field_str(&r.driver_name),
                status: r.status,
                timestamp_ns: r.timestamp_ns,
            })
            .collect();
    }
    Ok(SyncFileInfo {
        name: field_str(&info.name),
        status: overall,
        fences,
    })
}

/// `SYNC_IOC_MERGE`: a new sync_file (O_CLOEXEC) that signals when both `a` and `b` did.
pub fn merge(name: &str, a: RawFd, b: RawFd) -> Result<OwnedFd, Errno> {
    let mut d = sync_merge_data {
        name: name_field(name),
        fd2: b,
        fence: -1,
        flags: 0,
        pad: 0,
    };
    ioctl(a, SYNC_IOC_MERGE, &mut d)?;
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(d.fence) })
}

/// Polls sync_file `fd` until it signals (POLLIN, also on error) or `timeout` passes; returns
/// its status then, or an error naming `what` if it is still pending.
pub fn wait_signalled(fd: RawFd, timeout: Duration, what: &str) -> Result<i32, String> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let ms = left.as_millis().min(200) as i32;
        let rev = poll_fd(fd, libc::POLLIN, ms).map_err(|e| format!("poll({what}): {e}"))?;
        if rev & libc::POLLIN != 0 {
            let s = status(fd).map_err(|e| format!("SYNC_IOC_FILE_INFO({what}): {e}"))?;
            if s == 0 {
                return Err(format!("{what}: poll() gave POLLIN but the status is 0"));
            }
            return Ok(s);
        }
        if rev & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(format!("poll({what}): revents {rev:#x}"));
        }
        if start.elapsed() >= timeout {
            let s = status(fd).map(status_str).unwrap_or_else(|e| e.to_string());
            return Err(format!(
                "{what}: not signalled after {} ms ({s})",
                timeout.as_millis()
            ));
        }
    }
}

/// One sw_sync timeline; dropping it closes it, which signals its pending fences with
/// `-ENOENT`.
#[derive(Debug)]
pub struct Timeline {
    fd: OwnedFd,
}

impl Timeline {
    /// Opens a new timeline (value 0).
    pub fn open() -> Result<Self, String> {
        let path = std::ffi::CString::new(SW_SYNC_PATH).map_err(|e| e.to_string())?;
        // SAFETY: a valid NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = Errno::last();
            return Err(format!(
                "open {SW_SYNC_PATH}: {e} (sw_sync needs CONFIG_SW_SYNC, debugfs mounted at \
                 /sys/kernel/debug and root)"
            ));
        }
        // SAFETY: a new fd we own.
        Ok(Timeline {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// A new sync_file that signals when the timeline reaches `value` (already signalled if
    /// it is there).
    pub fn create_fence(&self, value: u32) -> Result<OwnedFd, String> {
        let mut d = sw_sync_create_fence_data {
            value,
            name: name_field(&format!("rvb2-test-{value}")),
            fence: -1,
        };
        ioctl(self.fd.as_raw_fd(), SW_SYNC_IOC_CREATE_FENCE, &mut d)
            .map_err(|e| format!("SW_SYNC_IOC_CREATE_FENCE({value}): {e}"))?;
        // SAFETY: on success the kernel installed a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(d.fence) })
    }

    /// Advances the timeline by `n`, signalling the fences it reaches.
    pub fn inc(&self, n: u32) -> Result<(), String> {
        let mut v = n;
        ioctl(self.fd.as_raw_fd(), SW_SYNC_IOC_INC, &mut v)
            .map_err(|e| format!("SW_SYNC_IOC_INC({n}): {e}"))
    }

    /// Closes the timeline: its pending fences signal with `-ENOENT`.
    pub fn close(self) {
        drop(self);
    }
}

impl AsRawFd for Timeline {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Serialises the unit tests that open fds, so that one test's fd counts are not disturbed
/// by another running in parallel.
#[cfg(test)]
pub static FD_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(field_str(&name_field("abc")), "abc");
        let long = "x".repeat(40);
        let f = name_field(&long);
        assert_eq!(f[31], 0);
        assert_eq!(field_str(&f), "x".repeat(31));
        assert_eq!(field_str(b"no-nul"), "no-nul");
    }

    #[test]
    fn statuses() {
        assert_eq!(status_str(0), "pending");
        assert_eq!(status_str(1), "signalled");
        assert_eq!(status_str(-libc::ECANCELED), "error -ECANCELED (-125)");
        assert_eq!(status_str(-libc::EIO), "error -EIO (-5)");
    }

    #[test]
    fn ioctl_numbers() {
        assert_eq!(SYNC_IOC_MERGE, 0xc030_3e03);
        assert_eq!(SYNC_IOC_FILE_INFO, 0xc038_3e04);
        assert_eq!(SW_SYNC_IOC_CREATE_FENCE, 0xc028_5700);
        assert_eq!(SW_SYNC_IOC_INC, 0x4004_5701);
    }

    #[test]
    fn file_info_on_non_sync_file_fails() {
        let _serial = FD_TEST_LOCK.lock();
        // A pipe is no sync_file: the ioctl must fail (ENOTTY), not touch memory.
        let mut fds = [0; 2];
        // SAFETY: valid array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: new fds we own.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        assert!(status(a.as_raw_fd()).is_err());
        assert!(file_info(a.as_raw_fd()).is_err());
        assert!(merge("m", a.as_raw_fd(), b.as_raw_fd()).is_err());
    }
}
