// SPDX-License-Identifier: GPL-2.0

//! USERPTR buffer memory: user pages pinned for the device.
//!
//! As videobuf2's frame vector and videobuf2-vmalloc's `get_userptr`: the pages under
//! `addr..addr + len` are pinned with `pin_user_pages_fast(FOLL_LONGTERM)` (for as long as the
//! buffer keeps them), with `FOLL_WRITE` if the device writes them (a capture queue), and
//! mapped in the kernel with `vm_map_ram()` for the driver's CPU access. Dropping the last
//! reference unmaps them and unpins them, marked dirty if the device wrote them. Pinning takes the process's `mmap_lock`: the queue pins under
//! its `ioctl` mutex only, which `mmap()` never takes (see `Documentation/design.rst`).
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).

use super::DataDir;
use crate::bindings;
use core::{
    ptr::NonNull,
    sync::atomic::AtomicBool, //
};
use kernel::{
    ffi::c_int,
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc, //
};

/// Pinned user pages, mapped in the kernel.
///
/// # Invariants
///
/// - `pages` holds `pages.len()` pages pinned by `pin_user_pages_fast()`, owned by this
///   object, which unpins them once.
/// - `vaddr` is their `vm_map_ram()` mapping (`pages.len()` pages), unmapped once by this
///   object.
/// - `offset + len <= pages.len() * PAGE_SIZE`.
pub(crate) struct UserPages {
    pages: KVVec<*mut kernel::bindings::page>,
    vaddr: NonNull<u8>,
    offset: usize,
    len: usize,
    addr: usize,
    /// The device writes the pages: they are unpinned dirty.
    dirty: bool,
    /// Claims the contents for the one kernel writer (see [`super::CpuAccess`]).
    pub(super) writer: AtomicBool,
}

// SAFETY: Pinned pages and their kernel mapping may be used and released from any thread.
unsafe impl Send for UserPages {}
// SAFETY: Shared access only reads the fields and the atomic; the kernel writes the contents
// only through a `CpuAccess`, of which `writer` allows one at a time.
unsafe impl Sync for UserPages {}

/// Unpins `pages`, marking them dirty if `dirty`.
///
/// # Safety
///
/// `pages` must hold pages pinned by `pin_user_pages_fast()`, unpinned by nobody else.
unsafe fn unpin(pages: &mut KVVec<*mut kernel::bindings::page>, dirty: bool) {
    // SAFETY: The caller passes pinned pages; they are unpinned once.
    unsafe {
        kernel::bindings::unpin_user_pages_dirty_lock(pages.as_mut_ptr(), pages.len(), dirty)
    };
    pages.clear();
}

impl UserPages {
    /// Pins the `len` bytes from user address `addr` of the calling process and maps them.
    /// `EFAULT` if a page of the range is not mapped (writable, if the device writes them),
    /// `ENOMEM` without memory, `EINVAL` for an empty range or one that wraps around.
    pub(super) fn pin(addr: usize, len: usize, dir: DataDir) -> Result<Arc<Self>> {
        let dirty = dir == DataDir::DeviceWrites;
        let write = if dirty {
            kernel::bindings::FOLL_WRITE
        } else {
            0
        };
        let end = addr.checked_add(len).ok_or(EINVAL)?;
        if len == 0 || addr == 0 {
            return Err(EINVAL);
        }
        let first = addr & !(PAGE_SIZE - 1);
        let count = (end - first).div_ceil(PAGE_SIZE);
        let count_c = c_int::try_from(count).map_err(|_| EINVAL)?;
        // The page array is as long as userspace says (`v4l2_buffer.length` is a `u32`: up to
        // 8 MiB of pointers for 4 GiB), more than kmalloc gives without a warning: kvmalloc, as
        // videobuf2's frame vector (a range that is not mapped fails at the pinning, EFAULT).
        let mut pages = KVVec::with_capacity(count, GFP_KERNEL)?;
        // SAFETY: `pages` has room for `count` page pointers, which the call fills in.
        let pinned = unsafe {
            kernel::bindings::pin_user_pages_fast(
                first,
                count_c,
                write | kernel::bindings::FOLL_LONGTERM,
                pages.as_mut_ptr(),
            )
        };
        if pinned > 0 {
            // SAFETY: The first `pinned <= count` entries were written.
            unsafe { pages.inc_len(pinned as usize) };
        }
        if pinned != count_c {
            // SAFETY: These pages were just pinned, and nothing else has them.
            unsafe { unpin(&mut pages, false) };
            return Err(if pinned < 0 {
                Error::from_errno(pinned)
            } else {
                EFAULT
            });
        }
        // SAFETY: `pages` holds `count` pinned pages (`vm_map_ram()` only reads the array).
        let vaddr = unsafe { bindings::vm_map_ram(pages.as_mut_ptr().cast(), count as u32, -1) };
        let Some(vaddr) = NonNull::new(vaddr.cast::<u8>()) else {
            // SAFETY: As above.
            unsafe { unpin(&mut pages, false) };
            return Err(ENOMEM);
        };
        // INVARIANT: `count` pages pinned and mapped at `vaddr`; the range starts at `addr -
        // first < PAGE_SIZE` and ends at `end - first <= count * PAGE_SIZE`.
        Ok(Arc::new(
            Self {
                pages,
                vaddr,
                offset: addr - first,
                len,
                addr,
                dirty,
                writer: AtomicBool::new(false),
            },
            GFP_KERNEL,
        )?)
    }

    /// The user address and length the pages were pinned for.
    pub(super) fn user_range(&self) -> (usize, usize) {
        (self.addr, self.len)
    }

    /// The kernel address of the user address `addr` (valid for `len` bytes while `self`
    /// lives).
    pub(super) fn as_ptr(&self) -> NonNull<u8> {
        // SAFETY: `offset` is inside the mapping (type invariant).
        unsafe { self.vaddr.add(self.offset) }
    }

    /// Whether the pages were pinned for writing.
    pub(super) fn writable(&self) -> bool {
        self.dirty
    }

    /// The length in bytes.
    pub(super) fn size(&self) -> usize {
        self.len
    }
}

impl Drop for UserPages {
    fn drop(&mut self) {
        // SAFETY: `vaddr` maps `pages.len()` pages and is unmapped once (type invariant).
        unsafe { bindings::vm_unmap_ram(self.vaddr.as_ptr().cast(), self.pages.len() as u32) };
        // SAFETY: The pages are pinned and ours (type invariant), unpinned once.
        unsafe { unpin(&mut self.pages, self.dirty) };
    }
}
