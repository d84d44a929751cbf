// SPDX-License-Identifier: GPL-2.0

//! MMAP buffer memory: `vmalloc_user()` allocations that userspace maps with `mmap()`.
//!
//! A [`VmallocBuf`] is reference counted: every mapping holds a reference, so the memory
//! outlives the buffer it was allocated for as long as userspace keeps it mapped. It also
//! counts its mappings, which the queue uses to refuse freeing buffers that are mapped.
//!
//! C header: [`include/linux/vmalloc.h`](srctree/include/linux/vmalloc.h).

use crate::bindings;
use core::{
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        AtomicU32,
        Ordering, //
    },
};
use kernel::{
    mm::virt::{flags, VmaNew},
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// A zeroed, page-aligned `vmalloc_user()` allocation.
///
/// # Invariants
///
/// `ptr` points to `size` bytes allocated by `vmalloc_user()`, owned by this object.
pub(crate) struct VmallocBuf {
    ptr: NonNull<u8>,
    size: usize,
    mapped: AtomicU32,
    /// Claims the contents for the one kernel writer (see [`super::CpuAccess`]).
    pub(super) writer: AtomicBool,
    /// What the kernel last wrote into the memory (see [`super::CpuAccess::content`]).
    pub(super) content: super::ContentTag,
}

// SAFETY: The allocation is plain memory, usable from any thread.
unsafe impl Send for VmallocBuf {}
// SAFETY: Shared access only reads `size` and the atomics; the kernel writes the contents only
// through a `CpuAccess`, of which `writer` allows one at a time.
unsafe impl Sync for VmallocBuf {}

impl VmallocBuf {
    /// Allocates `size` bytes (rounded up to whole pages by `vmalloc_user()`).
    pub(crate) fn new(size: usize) -> Result<Arc<Self>> {
        // SAFETY: `vmalloc_user()` may be called with any size.
        let ptr = unsafe { bindings::rvb2_vmalloc_user(size as kernel::ffi::c_ulong) };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(ENOMEM)?;
        // INVARIANT: `ptr` is a `vmalloc_user()` allocation of `size` bytes.
        Ok(Arc::new(
            Self {
                ptr,
                size,
                mapped: AtomicU32::new(0),
                writer: AtomicBool::new(false),
                content: super::ContentTag::new(),
            },
            GFP_KERNEL,
        )?)
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
        if vma.end() - vma.start() > this.size.next_multiple_of(kernel::page::PAGE_SIZE) {
            return Err(EINVAL);
        }
        // Userspace may write the memory from now on: what the kernel wrote is not known to be
        // there any more (before the mapping exists, so that no fill after it trusts it).
        this.content.share();
        let raw = vma.as_ptr().cast::<bindings::vm_area_struct>();
        // SAFETY: `raw` is a new VMA of the calling `mmap()`, no longer than our allocation,
        // which came from `vmalloc_user()`.
        kernel::error::to_result(unsafe {
            bindings::remap_vmalloc_range(raw, this.ptr.as_ptr().cast(), 0)
        })?;
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
}

impl Drop for VmallocBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `vmalloc_user()` and is freed once (type invariant).
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
