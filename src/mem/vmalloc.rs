// SPDX-License-Identifier: GPL-2.0

//! MMAP buffer memory: zeroed vmalloc allocations that userspace maps with `mmap()`.
//!
//! A [`VmallocBuf`] is reference counted: every mapping (and every dma-buf of it) holds a
//! reference, so the memory outlives the buffer it was allocated for as long as userspace keeps
//! it mapped (orphaned buffers, `V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS`). It also counts its
//! mappings, which the queue reports (`V4L2_BUF_FLAG_MAPPED`).
//!
//! # Bounded, accounted memory
//!
//! The memory is allocated with `__vmalloc()` and `RVB2_GFP_BUFFER`: `GFP_KERNEL_ACCOUNT` charges
//! the pages to the memory cgroup of the process that allocates them (the caller of
//! `VIDIOC_REQBUFS`/`VIDIOC_CREATE_BUFS`), `__GFP_RETRY_MAYFAIL` makes an allocation the system
//! (or the cgroup) cannot satisfy fail with `ENOMEM` instead of invoking the OOM killer, and
//! `__GFP_NOWARN` keeps such a failure, which userspace asked for, out of the kernel log.
//! `vmalloc_user()` takes no flags, so the mapping is made page by page (`vm_insert_page()`, as
//! `remap_vmalloc_range()` does for `VM_USERMAP` areas); the memory is zeroed (`__GFP_ZERO`), so
//! no stale kernel data reaches userspace.
//!
//! Every allocation is charged to a [`MemAccount`] (one per queue) until the memory is freed,
//! whoever holds it last (the queue, a mapping, a dma-buf): the account refuses charges beyond
//! its limit, which bounds what one queue, orphans included, can hold.
//!
//! C header: [`include/linux/vmalloc.h`](srctree/include/linux/vmalloc.h).

use super::export::Resv;
use crate::bindings;
use core::{
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        AtomicU32,
        AtomicUsize,
        Ordering, //
    },
};
use kernel::{
    mm::virt::{flags, VmaNew},
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// The bytes of live memory a queue allocated, against a limit.
///
/// # Invariants
///
/// `bytes` is the sum of the sizes of the existing [`Charge`]s on this account.
pub(crate) struct MemAccount {
    bytes: AtomicUsize,
}

impl MemAccount {
    /// A new account with nothing charged.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                bytes: AtomicUsize::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Charges `size` bytes if the total stays within `limit` (`ENOMEM` otherwise).
    fn charge(this: &Arc<Self>, size: usize, limit: usize) -> Result<Charge> {
        this.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_add(size).filter(|&total| total <= limit)
            })
            .map_err(|_| ENOMEM)?;
        // INVARIANT: `size` was added above; the charge takes it off when dropped.
        Ok(Charge {
            account: this.clone(),
            size,
        })
    }
}

/// `size` bytes charged to `account`, until dropped.
struct Charge {
    account: Arc<MemAccount>,
    size: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.bytes.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// A zeroed, page-aligned vmalloc allocation.
///
/// # Invariants
///
/// `ptr` points to `size` bytes (rounded up to whole pages) allocated by `__vmalloc()`, zeroed
/// and owned by this object.
#[pin_data(PinnedDrop)]
pub(crate) struct VmallocBuf {
    ptr: NonNull<u8>,
    size: usize,
    mapped: AtomicU32,
    /// Claims the contents for the one kernel writer (see [`super::CpuAccess`]).
    pub(super) writer: AtomicBool,
    /// Held until the memory is freed (dropped after `PinnedDrop::drop` freed it).
    _charge: Charge,
    /// The reservation object of every dma-buf exported from this memory: it carries the
    /// pending out-fence of the buffer as its write fence (implicit synchronization).
    #[pin]
    pub(super) resv: Resv,
    /// What the kernel last wrote into the memory (see [`super::CpuAccess::content`]).
    pub(super) content: super::ContentTag,
}

// SAFETY: The allocation is plain memory, usable from any thread.
unsafe impl Send for VmallocBuf {}
// SAFETY: Shared access only reads `size` and the atomics; the kernel writes the contents only
// through a `CpuAccess`, of which `writer` allows one at a time.
unsafe impl Sync for VmallocBuf {}

impl VmallocBuf {
    /// Allocates `size` bytes (rounded up to whole pages), charged to `account` if it stays
    /// within `limit` bytes; `ENOMEM` if it does not, or if the memory (or the caller's memory
    /// cgroup) cannot provide them without the OOM killer.
    pub(crate) fn new(size: usize, account: &Arc<MemAccount>, limit: usize) -> Result<Arc<Self>> {
        let pages = size.checked_next_multiple_of(PAGE_SIZE).ok_or(ENOMEM)?;
        if pages == 0 {
            return Err(EINVAL);
        }
        let charge = MemAccount::charge(account, pages, limit)?;
        // The memory is allocated inside the initialiser, once the `Arc` is, so that nothing
        // is left to free if the `Arc` cannot be allocated; the fields after it cannot fail.
        // On failure the charge is dropped.
        Arc::pin_init(
            try_pin_init!(Self {
                ptr: {
                    // SAFETY: `__vmalloc()` may be called with any size and these flags (all in
                    // `GFP_VMALLOC_SUPPORTED`).
                    let ptr = unsafe {
                        bindings::rvb2___vmalloc(
                            pages as kernel::ffi::c_ulong,
                            bindings::RVB2_GFP_BUFFER,
                        )
                    };
                    // INVARIANT: `ptr` is a zeroed `__vmalloc()` allocation of `size` bytes
                    // (rounded up).
                    NonNull::new(ptr.cast::<u8>()).ok_or(ENOMEM)?
                },
                size,
                mapped: AtomicU32::new(0),
                writer: AtomicBool::new(false),
                _charge: charge,
                resv <- Resv::new(),
                content: super::ContentTag::new(),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Returns how many mappings of this memory exist.
    pub(crate) fn mapped(&self) -> u32 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Returns the start of the memory (valid for `size` bytes while `self` lives).
    pub(crate) fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Returns the size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Maps the memory into `vma` (from the start of the buffer), for the `mmap()` file
    /// operation. The mapping must be shared and readable, and not longer than the buffer.
    pub(crate) fn mmap(this: &Arc<Self>, vma: &VmaNew) -> Result {
        let vm_flags = vma.flags();
        if vm_flags & flags::SHARED == 0 || vm_flags & flags::READ == 0 {
            return Err(EINVAL);
        }
        // Userspace may write the memory from now on: what the kernel wrote is not known to be
        // there any more (before the mapping exists, so that no fill after it trusts it).
        this.content.share();
        this.insert_pages(vma, 0)?;
        let raw = vma.as_ptr().cast::<bindings::vm_area_struct>();
        let private = Arc::into_raw(this.clone());
        this.mapped.fetch_add(1, Ordering::Relaxed);
        // SAFETY: We own the new VMA during `mmap()`; the VMA keeps the reference leaked above
        // until `vm_close()`.
        unsafe {
            (*raw).vm_private_data = private.cast_mut().cast();
            (*raw).vm_ops = &VM_OPS;
        }
        Ok(())
    }

    /// Inserts the pages of the memory from page `pgoff` on into the new VMA `vma`, which must
    /// fit (`EINVAL` otherwise), as `remap_vmalloc_range()` does: the VMA does not grow
    /// (`VM_DONTEXPAND`) nor go into core dumps (`VM_DONTDUMP`). The caller keeps the memory
    /// alive as long as the VMA (the VMA holds a reference on it).
    pub(super) fn insert_pages(&self, vma: &VmaNew, pgoff: usize) -> Result {
        let pages = self.size.div_ceil(PAGE_SIZE);
        let len = vma.end() - vma.start();
        let count = len / PAGE_SIZE;
        match pgoff.checked_add(count) {
            Some(end) if end <= pages && len % PAGE_SIZE == 0 => {}
            _ => return Err(EINVAL),
        }
        let mixed = vma.set_mixedmap();
        for i in 0..count {
            // SAFETY: Page `pgoff + i` is inside the allocation (checked above).
            let page = unsafe {
                bindings::vmalloc_to_page(self.ptr.as_ptr().add((pgoff + i) * PAGE_SIZE).cast())
            };
            let page = NonNull::new(page.cast::<kernel::bindings::page>()).ok_or(EINVAL)?;
            // SAFETY: `page` is a page of the allocation, which lives while `self` does, so for
            // this borrow; the cast is between two bindings of `struct page`.
            let page = unsafe { BorrowedPage::from_raw(page) };
            // The page is inserted with a reference of its own, as `remap_vmalloc_range()` does.
            mixed.vm_insert_page(vma.start() + i * PAGE_SIZE, &page)?;
        }
        vma.set_dontexpand();
        vma.set_dontdump();
        Ok(())
    }
}

#[pinned_drop]
impl PinnedDrop for VmallocBuf {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `ptr` came from `__vmalloc()` and is freed once (type invariant).
        unsafe { bindings::vfree(self.ptr.as_ptr().cast()) };
    }
}

/// The VMA operations of a mapping: each VMA (including copies made by `fork()` or splits)
/// holds a reference on the memory and counts as a mapping.
static VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
    open: Some(vm_open),
    close: Some(vm_close),
    ..pin_init::zeroed()
};

/// Returns the memory a VMA of ours maps.
///
/// # Safety
///
/// `vma` must be a VMA set up by [`VmallocBuf::mmap`] (or copied from one).
unsafe fn vma_buf<'a>(vma: *mut bindings::vm_area_struct) -> ArcBorrow<'a, VmallocBuf> {
    // SAFETY: `vm_private_data` holds a reference on the memory (see `VmallocBuf::mmap`).
    unsafe { ArcBorrow::from_raw((*vma).vm_private_data.cast::<VmallocBuf>()) }
}

/// `vm_operations_struct::open`: a copy of a mapping was made.
///
/// # Safety
///
/// Called by the memory manager only, for a VMA of ours.
unsafe extern "C" fn vm_open(vma: *mut bindings::vm_area_struct) {
    // SAFETY: This is a copy of one of our VMAs.
    let buf: Arc<VmallocBuf> = unsafe { vma_buf(vma) }.into();
    buf.mapped.fetch_add(1, Ordering::Relaxed);
    // The copy holds its own reference, released by `vm_close()`.
    let _ = Arc::into_raw(buf);
}

/// `vm_operations_struct::close`: a mapping went away.
///
/// # Safety
///
/// Called by the memory manager only, for a VMA of ours, once.
unsafe extern "C" fn vm_close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: The VMA holds one reference, released here.
    let buf = unsafe { Arc::from_raw((*vma).vm_private_data.cast::<VmallocBuf>()) };
    buf.mapped.fetch_sub(1, Ordering::Relaxed);
}
