// SPDX-License-Identifier: GPL-2.0

//! Buffer memory: what the queue core knows of the memory behind a buffer.
//!
//! This is what `struct vb2_mem_ops` is to videobuf2: the queue core ([`crate::queue`]) keeps
//! a [`BufferMem`] per buffer and asks it for its size, whether userspace maps it, to map it
//! into a VMA, and for CPU access to write a frame; it never learns where the pages come from.
//! Three kinds: MMAP memory, zeroed vmalloc allocations charged to the queue
//! ([`MemAccount`], [`vmalloc`]), which can be exported as a dma-buf ([`export`]); USERPTR memory, user pages pinned at QBUF ([`userptr`]); and
//! DMABUF memory, dma-bufs of other exporters imported at QBUF ([`dmabuf`]).
//!
//! # Implicit fences and cache maintenance
//!
//! An imported dma-buf, and MMAP memory once exported, may carry fences of other users in its
//! reservation object (a reader's, added with `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`): at QBUF the
//! queue collects those its driver must wait for ([`BufferMem::implicit_fences`]) and waits
//! for them as for an in-fence, so QBUF never blocks on them. MMAP memory never exported is
//! not looked at ([`BufferMem::shares_resv`]). The driver's CPU access to an import is
//! bracketed by the cache maintenance of the import's own mapping when the [`CpuAccess`] is
//! made and dropped (lock- and allocation-free, on the frame path), not by
//! `dma_buf_begin_cpu_access()` and `dma_buf_end_cpu_access()`, which wait for those fences,
//! take locks and allocate.
//!
//! # Where memory is released
//!
//! Releasing memory may sleep, unpin pages, or take a dma-buf's reservation lock (which is
//! held while waiting for fences): the last reference to a [`BufferMem`] must be dropped in
//! process context with no lock held that a signalling path takes, and outside signalling
//! sections. The queue core arranges that.
//!
//! # CPU access
//!
//! The memory of a buffer is shared with userspace (which maps it) and, through dma-bufs, with
//! other devices: the kernel never makes a Rust reference (`&[u8]`, `&mut [u8]`) to it, whose
//! contents could change under it. A driver writes a frame through a [`CpuAccess`], which
//! copies with raw pointers, the way binder writes to its pages and `CoherentAllocation` to
//! DMA memory. A [`CpuAccess`] is exclusive: a buffer's memory has at most one at a time, so
//! two kernel threads never race writing it (what userspace and devices do with their
//! mappings is outside the Rust abstract machine, as for any memory shared with hardware).
//!
//! # What the memory holds
//!
//! A driver that writes the same picture again and again (a test pattern with a frame counter)
//! need only write what changed since its last frame in that buffer, if nobody else wrote the
//! memory since. [`CpuAccess::content`] returns the tag the last access recorded with
//! [`CpuAccess::set_content`], but only for memory nobody else can write: MMAP memory that was
//! never mapped into userspace nor exported as a dma-buf (both clear the tag for good), never
//! USERPTR memory.

mod dmabuf;
mod export;
mod userptr;
mod vmalloc;

use crate::fence::Fence;
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        AtomicU64,
        Ordering, //
    },
};
use dmabuf::Import;
pub(crate) use dmabuf::{
    DataDir,
    DmaBufRef,
    DmaDevice, //
};
pub(crate) use export::{
    DmaBuf,
    ResvFenceSlot, //
};
use kernel::{
    mm::virt::VmaNew,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
    uaccess::UserPtr, //
};
use userptr::UserPages;
pub(crate) use vmalloc::MemAccount;
use vmalloc::VmallocBuf;

/// The memory of one buffer. Cloning it makes another reference to the same memory, which
/// lives as long as any reference, or mapping, to it.
#[derive(Clone)]
pub(crate) struct BufferMem {
    backing: Backing,
}

/// Where the memory of a buffer comes from.
#[derive(Clone)]
enum Backing {
    /// MMAP: allocated by the queue with `__vmalloc()`.
    Vmalloc(Arc<VmallocBuf>),
    /// USERPTR: user pages pinned at QBUF.
    User(Arc<UserPages>),
    /// DMABUF: a dma-buf imported at QBUF.
    Import(Arc<Import>),
}

impl BufferMem {
    /// Allocates `size` bytes of zeroed MMAP memory (`vb2_vmalloc_alloc()`), charged to
    /// `account` until it is freed, if the account stays within `limit` bytes (`ENOMEM`
    /// otherwise, and when memory is short: never the OOM killer).
    pub(crate) fn alloc_mmap(size: usize, account: &Arc<MemAccount>, limit: usize) -> Result<Self> {
        Ok(Self {
            backing: Backing::Vmalloc(VmallocBuf::new(size, account, limit)?),
        })
    }

    /// Pins the `len` bytes at user address `addr` of the calling process
    /// (`vb2_vmalloc_get_userptr()`): `EFAULT` if a page of them is not mapped (writable, if
    /// the device writes them, `dir`), `EINVAL` for an empty or wrapping range, `ENOMEM`. Takes
    /// the process's `mmap_lock`.
    pub(crate) fn pin_user(addr: usize, len: usize, dir: DataDir) -> Result<Self> {
        Ok(Self {
            backing: Backing::User(UserPages::pin(addr, len, dir)?),
        })
    }

    /// Whether this is user memory pinned for `addr` and `len`.
    pub(crate) fn is_user(&self, addr: usize, len: usize) -> bool {
        match &self.backing {
            Backing::User(u) => u.user_range() == (addr, len),
            _ => false,
        }
    }

    /// Imports the first `len` bytes of `dmabuf` (`vb2_dma_sg_attach_dmabuf()` and
    /// `map_dmabuf()`): attaches `dev` and maps the dma-buf for `dir`, and maps it in the
    /// kernel. `EINVAL` if the dma-buf is smaller than `len` or its memory is I/O memory,
    /// `EFAULT` if the exporter cannot map it in the kernel, or what the exporter returns.
    pub(crate) fn import(
        dmabuf: DmaBufRef,
        len: usize,
        dev: Option<&DmaDevice>,
        dir: DataDir,
    ) -> Result<Self> {
        Ok(Self {
            backing: Backing::Import(Import::new(dmabuf, len, dev, dir)?),
        })
    }

    /// Whether this imports `len` bytes of `dmabuf`.
    pub(crate) fn imports(&self, dmabuf: &DmaBufRef, len: usize) -> bool {
        match &self.backing {
            Backing::Import(i) => i.imports(dmabuf, len),
            _ => false,
        }
    }

    /// Whether the memory's reservation object may hold fences of others
    /// ([`BufferMem::implicit_fences`]): an imported dma-buf's always, MMAP memory's once it
    /// was exported (`VIDIOC_EXPBUF`, for good), USERPTR memory's never (it has none). Reads
    /// one flag, never the reservation object.
    pub(crate) fn shares_resv(&self) -> bool {
        match &self.backing {
            Backing::Vmalloc(v) => v.resv.shared(),
            Backing::Import(_) => true,
            Backing::User(_) => false,
        }
    }

    /// The fences of others in the memory's reservation object that the driver's access
    /// (`dir`) must wait for and that have not signalled, as one fence, leaving out those of
    /// the fence contexts `skip` (see `export::pending_fences`): for an imported dma-buf and
    /// for MMAP memory that was exported; `None` for other memory, whose reservation object (if
    /// any) is not looked at. It allocates (`ENOMEM`): process context, no lock a signalling
    /// path takes held.
    pub(crate) fn implicit_fences(
        &self,
        dir: DataDir,
        skip: &[u64],
    ) -> Result<Option<ARef<Fence>>> {
        match &self.backing {
            Backing::Vmalloc(v) => v.resv.pending_fences(dir, skip),
            Backing::Import(i) => i.pending_fences(dir, skip),
            Backing::User(_) => Ok(None),
        }
    }

    /// Whether userspace maps the memory (through the queue's `mmap()`).
    pub(crate) fn mapped(&self) -> bool {
        match &self.backing {
            Backing::Vmalloc(v) => v.mapped() > 0,
            _ => false,
        }
    }

    /// Maps the memory into `vma`, for the `mmap()` file operation (`EINVAL` if this memory
    /// cannot be mapped so, or the VMA is not shared and readable, or longer than the memory).
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        match &self.backing {
            Backing::Vmalloc(v) => VmallocBuf::mmap(v, vma),
            _ => Err(EINVAL),
        }
    }

    /// Exports the memory as a new dma-buf (`VIDIOC_EXPBUF`) whose file has the access mode
    /// `flags` (`O_RDONLY`, `O_WRONLY` or `O_RDWR`); the memory lives as long as the dma-buf.
    pub(crate) fn export(&self, flags: u32) -> Result<DmaBuf> {
        match &self.backing {
            Backing::Vmalloc(v) => DmaBuf::export(v, flags),
            _ => Err(EINVAL),
        }
    }

    /// Locks the reservation object that implicit synchronization sees for this memory and
    /// reserves a slot in it for the out-fence of the buffer, for [`ResvFenceSlot::add_fence`]
    /// (a write fence if the device writes the memory, `dir`): for MMAP memory the one its
    /// dma-bufs share, for an imported dma-buf the dma-buf's own (the exporter's); `None` for
    /// USERPTR memory, which has none. It allocates and may sleep: process context, with no lock
    /// a signalling path takes held (`EINTR` if a signal came while it waited for the lock,
    /// `ENOMEM`).
    pub(crate) fn reserve_fence(&self, dir: DataDir) -> Result<Option<ResvFenceSlot<'_>>> {
        match &self.backing {
            Backing::Vmalloc(v) => v.resv.reserve(dir).map(Some),
            Backing::Import(i) => i.reserve_fence(dir).map(Some),
            Backing::User(_) => Ok(None),
        }
    }

    /// CPU access to the first `len` bytes of the memory (at most its size), or `None` while
    /// another [`CpuAccess`] to it exists.
    pub(crate) fn cpu_access(&self, len: usize) -> Option<CpuAccess<'_>> {
        let (ptr, size, writer, writable, content, import) = match &self.backing {
            Backing::Vmalloc(v) => (
                v.as_ptr(),
                v.size(),
                &v.writer,
                true,
                Some(&v.content),
                None,
            ),
            Backing::User(u) => (u.as_ptr(), u.size(), &u.writer, u.writable(), None, None),
            Backing::Import(i) => (
                i.as_ptr(),
                i.size(),
                &i.writer,
                i.writable(),
                None,
                Some(&**i),
            ),
        };
        writer
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        if let Some(i) = import {
            i.begin_cpu();
        }
        // INVARIANT: `ptr` is valid for `size` bytes while `self` lives, which the lifetime
        // ties the access to; `writer` was clear and is set until the access is dropped.
        Some(CpuAccess {
            ptr,
            len: len.min(size),
            writable,
            writer,
            content,
            import,
            _mem: PhantomData,
        })
    }
}

/// The tag of what the kernel last wrote into a memory that only the kernel writes (see the
/// module documentation), or nothing once the memory is shared.
pub(crate) struct ContentTag {
    /// The tag; 0 for none.
    tag: AtomicU64,
    /// Set for good once userspace or another device may write the memory.
    shared: AtomicBool,
}

impl ContentTag {
    /// No tag, not shared.
    pub(crate) const fn new() -> Self {
        Self {
            tag: AtomicU64::new(0),
            shared: AtomicBool::new(false),
        }
    }

    /// Someone else may write the memory from now on: no tag is reported any more.
    pub(crate) fn share(&self) {
        self.shared.store(true, Ordering::Release);
        self.tag.store(0, Ordering::Release);
    }

    /// The tag, if the memory is not shared.
    fn get(&self) -> Option<u64> {
        if self.shared.load(Ordering::Acquire) {
            return None;
        }
        match self.tag.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Records `tag` (or none).
    fn set(&self, tag: Option<u64>) {
        self.tag.store(tag.unwrap_or(0), Ordering::Release);
    }
}

/// Exclusive CPU access to the memory of a buffer, for the kernel to write (or read) its
/// contents with copies, never through references (see the module documentation).
///
/// # Invariants
///
/// - `ptr` is valid for reads of `len` bytes for `'a`, and for writes if `writable` (memory
///   the device only reads, such as user pages pinned without `FOLL_WRITE`, which may be the
///   shared zero page, is not).
/// - `writer` was set when this was created and is cleared when it is dropped: no other
///   `CpuAccess` to the memory exists meanwhile.
/// - The kernel makes no reference to those bytes.
/// - If `import` is set, its CPU access was begun (`Import::begin_cpu()`) when this was
///   created, and is ended (`Import::end_cpu()`) when it is dropped.
pub(crate) struct CpuAccess<'a> {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    writer: &'a AtomicBool,
    /// The memory's content tag (none for USERPTR memory).
    content: Option<&'a ContentTag>,
    /// An imported dma-buf, whose CPU access is bracketed by cache maintenance.
    import: Option<&'a Import>,
    _mem: PhantomData<&'a BufferMem>,
}

impl CpuAccess<'_> {
    /// The size of the accessible memory in bytes.
    pub(crate) fn size(&self) -> usize {
        self.len
    }

    /// Checks that `len` bytes from `offset` are inside the memory, and writable (`EPERM` for
    /// memory the device only reads).
    fn check_write(&self, offset: usize, len: usize) -> Result {
        if !self.writable {
            return Err(EPERM);
        }
        self.check(offset, len)
    }

    /// Checks that `len` bytes from `offset` are inside the memory.
    fn check(&self, offset: usize, len: usize) -> Result {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ERANGE),
        }
    }

    /// Writes `src` at `offset` (`ERANGE`, writing nothing, if it does not fit; `EPERM` if the
    /// memory is not writable).
    pub(crate) fn write(&mut self, offset: usize, src: &[u8]) -> Result {
        self.check_write(offset, src.len())?;
        // SAFETY: `offset + src.len() <= len` and the memory is writable (checked above), so
        // the destination is inside the memory, valid for writes (type invariant). `src` is a reference, which cannot point
        // into the memory (the kernel makes none to it), so the two do not overlap. No other
        // kernel thread writes the memory meanwhile (this access is exclusive).
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    /// Sets the `len` bytes from `offset` to `byte` (`ERANGE`, writing nothing, if they do not
    /// fit; `EPERM` if the memory is not writable).
    pub(crate) fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result {
        self.check_write(offset, len)?;
        // SAFETY: The range is inside the memory (checked above), valid for writes and written
        // by no other kernel thread meanwhile (type invariants).
        unsafe { core::ptr::write_bytes(self.ptr.as_ptr().add(offset), byte, len) };
        Ok(())
    }

    /// What the memory holds: the tag the last access recorded with
    /// [`CpuAccess::set_content`], if nobody but the kernel can have written the memory since
    /// (MMAP memory never mapped into userspace nor exported; never USERPTR memory).
    pub(crate) fn content(&self) -> Option<u64> {
        self.content.and_then(ContentTag::get)
    }

    /// Records what the memory holds now (`tag`, not 0), or that it is not known (`None`: do
    /// so before a write that may not complete).
    pub(crate) fn set_content(&mut self, tag: Option<u64>) {
        if let Some(c) = self.content {
            c.set(tag);
        }
    }

    /// Copies the `len` bytes at `src` to `dst`; the ranges may overlap (`ERANGE`, writing
    /// nothing, if either does not fit; `EPERM` if the memory is not writable).
    pub(crate) fn copy_within(&mut self, src: usize, dst: usize, len: usize) -> Result {
        self.check(src, len)?;
        self.check_write(dst, len)?;
        let base = self.ptr.as_ptr();
        if src.abs_diff(dst) >= len {
            // `memcpy()` rather than `memmove()`: under QEMU's TCG, x86's `memmove()` copies
            // byte by byte (`rep movsb`, with ERMS) where `memcpy()` moves words
            // (Documentation/bench.rst).
            // SAFETY: Both ranges are inside the memory (checked above), valid for reads and
            // writes and accessed by no other kernel thread meanwhile (type invariants); they
            // are `len` or more bytes apart, so they do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(base.add(src), base.add(dst), len) };
        } else {
            // SAFETY: As above; `ptr::copy` allows the ranges to overlap.
            unsafe { core::ptr::copy(base.add(src), base.add(dst), len) };
        }
        Ok(())
    }

    /// Reads `dst.len()` bytes at `offset` into `dst` (`ERANGE`, reading nothing, if they do
    /// not fit).
    #[cfg_attr(not(CONFIG_KUNIT = "y"), expect(dead_code))]
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        self.check(offset, dst.len())?;
        // SAFETY: The source is inside the memory (checked above) and valid for reads (type
        // invariant); `dst` is a reference, so not inside the memory.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }
}

impl CpuAccess<'_> {
    /// Copies the `len` bytes at `offset` to the user address `dst` of the calling process
    /// (`ERANGE` if they are not inside the memory, `EFAULT` if `dst` is not writable for
    /// `len` bytes: part of it may have been written then). May fault and sleep.
    pub(crate) fn copy_to_user(&self, offset: usize, len: usize, dst: UserPtr) -> Result {
        self.check(offset, len)?;
        // SAFETY: The source is inside the memory (checked above) and valid for reads (type
        // invariant); `copy_to_user()` checks the user range itself.
        let left = unsafe {
            kernel::bindings::copy_to_user(
                dst.as_mut_ptr(),
                self.ptr.as_ptr().add(offset).cast_const().cast(),
                len as kernel::ffi::c_ulong,
            )
        };
        if left != 0 {
            return Err(EFAULT);
        }
        Ok(())
    }
}

impl Drop for CpuAccess<'_> {
    fn drop(&mut self) {
        // What the CPU wrote reaches the memory before the buffer is completed.
        if let Some(i) = self.import {
            i.end_cpu();
        }
        // Publishes the writes to the next access.
        self.writer.store(false, Ordering::Release);
    }
}

// SAFETY: The access is plain memory plus a reference to an atomic: it may be used from, and
// dropped on, any thread.
unsafe impl Send for CpuAccess<'_> {}
