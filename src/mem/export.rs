// SPDX-License-Identifier: GPL-2.0

//! A dma-buf exporter for MMAP memory (`VIDIOC_EXPBUF`), as videobuf2-vmalloc's.
//!
//! The dma-buf holds a reference on the [`VmallocBuf`] (its `priv`), dropped by `release`
//! when the last reference to the dma-buf goes: the memory lives as long as any dma-buf fd,
//! attachment or mapping of it does (attachments and mappings hold the dma-buf), whatever the
//! queue does with the buffer meanwhile. The dma-buf holds a reference on the module too
//! (`owner`), so these operations stay loaded while one exists.
//!
//! - `attach` builds the attachment's scatter-gather table of the buffer's pages
//!   (`vmalloc_to_page()`); `map_dma_buf` maps it for the importer's device, once per
//!   direction (it is unmapped at `detach`, or when another direction is asked for);
//! - `vmap` hands out the buffer's kernel address; `mmap` maps the pages into a VMA (which
//!   holds the dma-buf's file, so the dma-buf and its memory outlive it); such a mapping does
//!   not count as a mapping of the V4L2 buffer;
//! - vmalloc memory is cached CPU memory and the importer's mapping is made at `map_dma_buf`
//!   (which does the cache maintenance for its device): there is no `begin_cpu_access` or
//!   `end_cpu_access` to do, as in videobuf2-vmalloc.
//!
//! Implicit synchronization: every dma-buf exported from one buffer's memory shares the
//! memory's reservation object ([`Resv`], `dma_buf_export_info::resv`), and `VIDIOC_QBUF` with
//! an out-fence adds that fence to it as the write fence (`DMA_RESV_USAGE_WRITE`), so that an
//! importer that synchronizes implicitly (a KMS plane without `IN_FENCE_FD`,
//! `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`, `poll()` on the dma-buf) waits for the frame. The fence
//! contract holds: the reservation object is locked and its slot allocated in `VIDIOC_QBUF`, in
//! process context, before the buffer is queued ([`Resv::reserve`]); the fence is added
//! once the QBUF succeeded, and nothing on a signalling path touches the reservation object.
//! The out-fence signals within its bound whatever happens, so the reservation object holds
//! no fence that could stay pending.
//!
//! The other direction: once the memory was exported ([`Resv::share`]), a consumer of a dma-buf
//! may add fences of its own (a read fence with `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`); a QBUF of
//! the buffer then collects those still pending ([`Resv::pending_fences`], which calls
//! [`pending_fences`], as an imported dma-buf's object does) and the buffer waits for them as
//! for an in-fence. Memory never exported holds only rvb2's own fences, and QBUF collects
//! nothing from it (a QBUF with an out-fence still locks it to add that fence).
//!
//! C headers: [`include/linux/dma-buf.h`](srctree/include/linux/dma-buf.h),
//! [`include/linux/dma-resv.h`](srctree/include/linux/dma-resv.h).

use super::{
    vmalloc::VmallocBuf,
    DataDir, //
};
use crate::{
    bindings,
    fence::Fence, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        Ordering, //
    },
};
use kernel::{
    error::{
        from_result,
        to_result, //
    },
    ffi::c_int,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        ArcBorrow, //
    },
    types::Opaque,
};

/// `DMA_NONE`: the attachment's table is not mapped.
const DMA_NONE: bindings::dma_data_direction = bindings::dma_data_direction_DMA_NONE;

/// An exported dma-buf, as `dma_buf_export()` returned it: one reference to its file.
///
/// # Invariants
///
/// `ptr` is a dma-buf this object holds one reference to.
pub(crate) struct DmaBuf {
    ptr: NonNull<bindings::dma_buf>,
}

// SAFETY: A dma-buf reference may be used and dropped from any thread.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// Exports `buf` (`flags`: the access mode of the dma-buf's file, `O_RDONLY`, `O_WRONLY`
    /// or `O_RDWR`).
    pub(super) fn export(buf: &Arc<VmallocBuf>, flags: u32) -> Result<Self> {
        // Importers may write the memory: what the kernel wrote is not known to be there any
        // more (even if the export fails: the flag only costs a full frame).
        buf.content.share();
        let private = Arc::into_raw(buf.clone());
        let info = bindings::dma_buf_export_info {
            exp_name: c"rvivid".as_char_ptr(),
            owner: crate::THIS_MODULE.as_ptr().cast(),
            ops: &DMA_BUF_OPS,
            size: buf.size().next_multiple_of(PAGE_SIZE),
            flags: flags as c_int,
            resv: buf.resv.share(),
            priv_: private.cast_mut().cast(),
        };
        // SAFETY: `info` is a complete export description with our operations. Its reservation
        // object is the memory's, which lives as long as the memory, whose reference the
        // dma-buf holds until its `release`; the dma-buf core finalises only the reservation
        // objects it made itself.
        let ptr = unsafe { bindings::dma_buf_export(&info) };
        match kernel::error::from_err_ptr(ptr).and_then(|p| NonNull::new(p).ok_or(ENOMEM)) {
            // INVARIANT: `dma_buf_export()` returned a new dma-buf with one reference, whose
            // `release` drops the reference on `buf` leaked above.
            Ok(ptr) => Ok(Self { ptr }),
            Err(e) => {
                // SAFETY: The export failed, so nothing else took the reference leaked above.
                drop(unsafe { Arc::from_raw(private) });
                Err(e)
            }
        }
    }

    /// Installs the dma-buf in a new file descriptor of the calling process (`O_CLOEXEC` in
    /// `flags` makes it close-on-exec) and returns it; the descriptor takes this reference.
    pub(crate) fn into_fd(self, flags: u32) -> Result<i32> {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `ptr` is a dma-buf we hold a reference to (type invariant); on success the new
        // fd takes that reference.
        let fd = unsafe { bindings::dma_buf_fd(this.ptr.as_ptr(), flags as c_int) };
        if fd < 0 {
            // SAFETY: The reference is still ours: drop it.
            unsafe { bindings::dma_buf_put(this.ptr.as_ptr()) };
            return Err(Error::from_errno(fd));
        }
        Ok(fd)
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: We hold a reference (type invariant), dropped once here.
        unsafe { bindings::dma_buf_put(self.ptr.as_ptr()) };
    }
}

/// A reservation object (`struct dma_resv`): the fences that implicit synchronization waits
/// for, shared by every dma-buf of one buffer's memory.
///
/// # Invariants
///
/// `inner` was initialised by `dma_resv_init()`, is finalised once, when this is dropped, and
/// is not locked then (a [`ResvFenceSlot`] borrows it). While `shared` is clear, no dma-buf
/// was ever given `inner`: it holds only the fences rvb2 added ([`ResvFenceSlot::add_fence`]).
#[pin_data(PinnedDrop)]
pub(crate) struct Resv {
    #[pin]
    inner: Opaque<bindings::dma_resv>,
    /// Set for good when the object is handed to a dma-buf ([`Resv::share`]): from then on
    /// others (importers, `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`) may add fences to it.
    shared: AtomicBool,
}

// SAFETY: A reservation object is locked internally (its ww_mutex, RCU for readers); any
// thread may use it and finalise it.
unsafe impl Send for Resv {}
// SAFETY: See `Send`: every operation on a shared `Resv` takes its lock or, for readers,
// RCU; `shared` is atomic.
unsafe impl Sync for Resv {}

impl Resv {
    /// A new, empty reservation object (in the kernel's `reservation_ww_class`).
    pub(super) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `dma_resv_init()` initialises the object in place and cannot fail; the
            // object is pinned, as its lock needs.
            inner <- Opaque::ffi_init(|p| unsafe { bindings::dma_resv_init(p) }),
            shared: AtomicBool::new(false),
        })
    }

    /// The raw pointer.
    fn as_raw(&self) -> *mut bindings::dma_resv {
        self.inner.get()
    }

    /// The raw pointer, for `dma_buf_export_info::resv`: marks the object as shared with
    /// others, for good (also if the export then fails: it only costs the collection of
    /// [`Resv::pending_fences`] at QBUF).
    fn share(&self) -> *mut bindings::dma_resv {
        // INVARIANT: Set before any dma-buf is given the object.
        self.shared.store(true, Ordering::Release);
        self.as_raw()
    }

    /// Whether the object was ever handed to a dma-buf ([`DmaBuf::export`]), so that others may
    /// have added fences to it. (The queue exports and queues under one mutex, so a QBUF sees
    /// every export made before it.)
    pub(super) fn shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// The fences others added to the object that the driver's access (`dir`) must wait for
    /// and that have not signalled, leaving out those of the fence contexts `skip`, as
    /// [`pending_fences`] says; `None` without touching the object if it was never shared
    /// (it then holds only rvb2's own out-fences). It allocates (`ENOMEM`): process context.
    pub(super) fn pending_fences(&self, dir: DataDir, skip: &[u64]) -> Result<Option<ARef<Fence>>> {
        if !self.shared() {
            return Ok(None);
        }
        // SAFETY: The pointer is to a field of `self`, so not null; the object is initialised
        // and not finalised while `self` is borrowed (type invariant).
        unsafe { pending_fences(NonNull::new_unchecked(self.as_raw()), dir, skip) }
    }

    /// Locks the object (interruptibly: `EINTR`) and reserves a slot for one fence of `dir`'s
    /// usage (`ENOMEM`); the returned slot unlocks it when dropped. It may sleep and allocate:
    /// process context only, outside any signalling section.
    pub(crate) fn reserve(&self, dir: DataDir) -> Result<ResvFenceSlot<'_>> {
        // SAFETY: The pointer is to a field of `self`, so not null; the object is initialised
        // (type invariant) and lives, not finalised, as long as `self` is borrowed, which the
        // slot's lifetime ties it to.
        unsafe { ResvFenceSlot::reserve(NonNull::new_unchecked(self.as_raw()), dir) }
    }
}

/// The fences of the reservation object `resv` that a driver's access to its memory (`dir`) must
/// wait for and that have not signalled: a writer (a capture queue) waits for every reader and
/// writer, a reader (an output queue) for the writers. Those of the fence contexts `skip` (the
/// queue's own out-fences, which its order already waits for) are left out. One fence (several
/// are combined in a `dma_fence_array`), or `None`. It allocates (`ENOMEM`) and takes no lock:
/// process context, before the queue's locks; with the object locked (a [`ResvFenceSlot`] of
/// it) the set cannot change meanwhile. Used for MMAP memory's own object ([`Resv`]) and for an
/// imported dma-buf's.
///
/// # Safety
///
/// `resv` is an initialised reservation object that stays live, and is not finalised, for the
/// call.
pub(super) unsafe fn pending_fences(
    resv: NonNull<bindings::dma_resv>,
    dir: DataDir,
    skip: &[u64],
) -> Result<Option<ARef<Fence>>> {
    let mut fence = core::ptr::null_mut();
    // SAFETY: `resv` is initialised and live (the caller's promise); `skip` is valid for
    // `skip.len()` reads; `fence` is ours to fill. The call takes RCU and references, no lock.
    to_result(unsafe {
        bindings::rvb2_dma_resv_get_pending(
            resv.as_ptr(),
            dir.wait_usage(),
            skip.as_ptr(),
            skip.len() as u32,
            &mut fence,
        )
    })?;
    // SAFETY: A non-null result is a live fence carrying a reference for us.
    Ok(NonNull::new(fence).map(|f| unsafe { Fence::from_raw_ref(f) }))
}

#[pinned_drop]
impl PinnedDrop for Resv {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Initialised, unlocked and finalised only here (type invariants); it drops the
        // references to the fences it holds.
        unsafe { bindings::dma_resv_fini(self.as_raw()) };
    }
}

/// A locked reservation object with one fence slot reserved, for the out-fence of a buffer
/// whose memory it covers; unlocks it when dropped.
///
/// # Invariants
///
/// `resv` is an initialised reservation object, live and not finalised for `'a`, locked by the
/// task that made this (which it stays on: it is not `Send`), with at least one fence slot
/// reserved until [`ResvFenceSlot::add_fence`] uses it. `usage` is `DMA_RESV_USAGE_WRITE` or
/// `DMA_RESV_USAGE_READ`.
pub(crate) struct ResvFenceSlot<'a> {
    resv: NonNull<bindings::dma_resv>,
    usage: bindings::dma_resv_usage,
    _resv: PhantomData<&'a ()>,
    _not_send: PhantomData<*mut ()>,
}

impl ResvFenceSlot<'_> {
    /// Locks `resv` (interruptibly: `EINTR`) and reserves a slot for one fence (`ENOMEM`),
    /// which [`ResvFenceSlot::add_fence`] adds with the usage of `dir`: a write fence if the
    /// device writes the memory (a capture queue), a read fence if it reads it. It may sleep
    /// and allocate: process context only, outside any signalling section.
    ///
    /// # Safety
    ///
    /// `resv` is an initialised reservation object that stays live, and is not finalised, for
    /// the lifetime of the returned slot.
    pub(super) unsafe fn reserve(resv: NonNull<bindings::dma_resv>, dir: DataDir) -> Result<Self> {
        // SAFETY: `resv` is initialised and live (the caller's promise); no acquire context is
        // used, so the lock cannot fail with `EDEADLK` (only `EINTR`).
        to_result(unsafe { bindings::rvb2_dma_resv_lock_interruptible(resv.as_ptr()) })?;
        // INVARIANT: Locked above, by this task, live for the lifetime (the caller's promise);
        // the slot unlocks it, and its reservation follows.
        let slot = ResvFenceSlot {
            resv,
            usage: match dir {
                DataDir::DeviceWrites => bindings::dma_resv_usage_DMA_RESV_USAGE_WRITE,
                DataDir::DeviceReads => bindings::dma_resv_usage_DMA_RESV_USAGE_READ,
            },
            _resv: PhantomData,
            _not_send: PhantomData,
        };
        // SAFETY: The object is locked by this task (above).
        to_result(unsafe { bindings::dma_resv_reserve_fences(resv.as_ptr(), 1) })?;
        Ok(slot)
    }

    /// Adds `fence` to the object, as its write fence (`DMA_RESV_USAGE_WRITE`) or a read fence:
    /// it replaces a fence of the same context that is not later, or one that signalled; the
    /// object holds its own reference. `fence` must not be a container (`dma_fence_array`,
    /// `dma_fence_chain`), which `dma_resv_add_fence()` warns about: rvb2's out-fences never
    /// are.
    pub(crate) fn add_fence(self, fence: &Fence) {
        // SAFETY: The object is locked with a slot reserved (type invariant), used once (this
        // consumes the slot); the fence is live and referenced again by the object.
        unsafe { bindings::dma_resv_add_fence(self.resv.as_ptr(), fence.as_raw(), self.usage) };
    }
}

impl Drop for ResvFenceSlot<'_> {
    fn drop(&mut self) {
        // SAFETY: Live and locked by this task (type invariant), unlocked once here.
        unsafe { bindings::rvb2_dma_resv_unlock(self.resv.as_ptr()) };
    }
}

/// The operations of our dma-bufs.
static DMA_BUF_OPS: bindings::dma_buf_ops = bindings::dma_buf_ops {
    attach: Some(attach),
    detach: Some(detach),
    map_dma_buf: Some(map_dma_buf),
    unmap_dma_buf: Some(unmap_dma_buf),
    release: Some(release),
    mmap: Some(mmap),
    vmap: Some(vmap),
    ..pin_init::zeroed()
};

/// Returns the memory of one of our dma-bufs.
///
/// # Safety
///
/// `dmabuf` must be a live dma-buf exported by [`DmaBuf::export`].
unsafe fn dmabuf_mem<'a>(dmabuf: *mut bindings::dma_buf) -> ArcBorrow<'a, VmallocBuf> {
    // SAFETY: `priv` holds a reference on the memory until `release` (see `DmaBuf::export`).
    unsafe { ArcBorrow::from_raw((*dmabuf).priv_.cast::<VmallocBuf>()) }
}

/// The exporter's state of one attachment (its `priv`).
///
/// # Invariants
///
/// `sgt` is an allocated table of the buffer's pages; `dir` is `DMA_NONE` or the direction it
/// is mapped for on the attachment's device.
struct Attachment {
    sgt: bindings::sg_table,
    dir: bindings::dma_data_direction,
}

/// `dma_buf_ops::attach`: builds the table of the buffer's pages for a new importer.
///
/// # Safety
///
/// Called by the dma-buf core only, for one of our dma-bufs and a new attachment.
unsafe extern "C" fn attach(
    dmabuf: *mut bindings::dma_buf,
    attachment: *mut bindings::dma_buf_attachment,
) -> c_int {
    from_result(|| {
        // SAFETY: `dmabuf` is one of ours, live for the call.
        let mem = unsafe { dmabuf_mem(dmabuf) };
        let pages = mem.size().div_ceil(PAGE_SIZE);
        let mut a = KBox::new(
            Attachment {
                sgt: pin_init::zeroed(),
                dir: DMA_NONE,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `a.sgt` is a zeroed table to allocate.
        to_result(unsafe {
            bindings::sg_alloc_table(&mut a.sgt, pages as u32, kernel::bindings::GFP_KERNEL)
        })?;
        let mut sg = a.sgt.sgl;
        for i in 0..pages {
            // SAFETY: Page `i` is inside the vmalloc allocation, which lives while the
            // dma-buf does.
            let page = unsafe {
                bindings::vmalloc_to_page(mem.as_ptr().as_ptr().add(i * PAGE_SIZE).cast())
            };
            // SAFETY: `sg` is entry `i` of a table of `pages` entries (walked with `sg_next()`).
            unsafe { bindings::rvb2_sg_set_page(sg, page, PAGE_SIZE as u32, 0) };
            // SAFETY: As above; the last call returns null, which is not used.
            sg = unsafe { bindings::rvb2_sg_next(sg) };
        }
        // SAFETY: `attachment` is the new attachment; its `priv` is ours until `detach`.
        unsafe { (*attachment).priv_ = KBox::into_raw(a).cast() };
        Ok(0)
    })
}

/// `dma_buf_ops::detach`: unmaps and frees the attachment's table.
///
/// # Safety
///
/// Called by the dma-buf core only, once, for an attachment `attach` succeeded for.
unsafe extern "C" fn detach(
    _dmabuf: *mut bindings::dma_buf,
    attachment: *mut bindings::dma_buf_attachment,
) {
    // SAFETY: `priv` is the box `attach` leaked, taken back once here.
    let mut a = unsafe { KBox::from_raw((*attachment).priv_.cast::<Attachment>()) };
    if a.dir != DMA_NONE {
        // SAFETY: The table is mapped for `dir` on the attachment's device (type invariant).
        unsafe { bindings::rvb2_dma_unmap_sgtable((*attachment).dev, &mut a.sgt, a.dir as c_int) };
    }
    // SAFETY: The table was allocated by `sg_alloc_table()` and is freed once.
    unsafe { bindings::sg_free_table(&mut a.sgt) };
}

/// `dma_buf_ops::map_dma_buf`: maps the attachment's table for its device (once per
/// direction, as videobuf2-vmalloc).
///
/// # Safety
///
/// Called by the dma-buf core only, for an attachment `attach` succeeded for, with the
/// dma-buf's reservation lock held (`dma_buf_map_attachment()` asserts it), which serialises
/// the maps of all its attachments.
unsafe extern "C" fn map_dma_buf(
    attachment: *mut bindings::dma_buf_attachment,
    dir: bindings::dma_data_direction,
) -> *mut bindings::sg_table {
    // SAFETY: `priv` is our attachment state, live until `detach`; the reservation lock makes
    // this the only reference to it (`unmap_dma_buf` and `detach` do not touch it meanwhile).
    let a = unsafe { &mut *(*attachment).priv_.cast::<Attachment>() };
    if a.dir == dir {
        return &mut a.sgt;
    }
    // SAFETY: `dev` is the importer's device, live while the attachment is.
    let dev = unsafe { (*attachment).dev };
    if a.dir != DMA_NONE {
        // SAFETY: Mapped for `a.dir` on `dev` (type invariant).
        unsafe { bindings::rvb2_dma_unmap_sgtable(dev, &mut a.sgt, a.dir as c_int) };
        a.dir = DMA_NONE;
    }
    // SAFETY: The table is allocated and not mapped.
    let ret = unsafe { bindings::dma_map_sgtable(dev, &mut a.sgt, dir, 0) };
    if ret != 0 {
        return Error::from_errno(ret).to_ptr();
    }
    a.dir = dir;
    &mut a.sgt
}

/// `dma_buf_ops::unmap_dma_buf`: nothing to do, the mapping is kept until `detach` (as in
/// videobuf2-vmalloc).
///
/// # Safety
///
/// Called by the dma-buf core only.
unsafe extern "C" fn unmap_dma_buf(
    _attachment: *mut bindings::dma_buf_attachment,
    _sgt: *mut bindings::sg_table,
    _dir: bindings::dma_data_direction,
) {
}

/// `dma_buf_ops::release`: the last reference to the dma-buf went; drops its reference on the
/// memory.
///
/// # Safety
///
/// Called by the dma-buf core only, once, for one of our dma-bufs.
unsafe extern "C" fn release(dmabuf: *mut bindings::dma_buf) {
    // SAFETY: `priv` holds the reference `DmaBuf::export` leaked, released once here.
    drop(unsafe { Arc::from_raw((*dmabuf).priv_.cast::<VmallocBuf>()) });
}

/// `dma_buf_ops::vmap`: the memory is mapped in the kernel already.
///
/// # Safety
///
/// Called by the dma-buf core only, for one of our dma-bufs, with a map to fill.
unsafe extern "C" fn vmap(dmabuf: *mut bindings::dma_buf, map: *mut bindings::iosys_map) -> c_int {
    // SAFETY: `dmabuf` is one of ours, live for the call.
    let mem = unsafe { dmabuf_mem(dmabuf) };
    // SAFETY: `map` is the caller's map to fill; the address stays valid while the dma-buf
    // (which holds the memory) lives, which the caller keeps until `vunmap`.
    unsafe {
        (*map).__bindgen_anon_1.vaddr = mem.as_ptr().as_ptr().cast();
        (*map).is_iomem = false;
    }
    0
}

/// `dma_buf_ops::mmap`: maps the memory into a VMA of the dma-buf's file.
///
/// # Safety
///
/// Called by the dma-buf core only, for one of our dma-bufs and a new VMA it checked fits.
unsafe extern "C" fn mmap(
    dmabuf: *mut bindings::dma_buf,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: `dmabuf` is one of ours, live for the call.
    let mem = unsafe { dmabuf_mem(dmabuf) };
    // SAFETY: `vma` is the new VMA of this `mmap()`, being set up for the call; the cast is
    // between two bindings of `struct vm_area_struct`.
    let (new, pgoff) = unsafe {
        (
            kernel::mm::virt::VmaNew::from_raw(vma.cast()),
            bindings::rvb2_vma_pgoff(vma) as usize,
        )
    };
    // The VMA holds the dma-buf's file, so the memory outlives it.
    match mem.insert_pages(new, pgoff) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}
