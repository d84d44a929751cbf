// SPDX-License-Identifier: GPL-2.0

//! DMABUF buffer memory: dma-bufs of other exporters, imported at QBUF (`V4L2_MEMORY_DMABUF`).
//!
//! As videobuf2's `attach_dmabuf`, `map_dmabuf`, `unmap_dmabuf` and `detach_dmabuf`
//! (videobuf2-dma-sg for the attachment, videobuf2-vmalloc for the kernel mapping): an
//! [`Import`] holds a reference to the dma-buf (`dma_buf_get()`), an attachment of the queue's
//! device, mapped `DMA_TO_DEVICE` (`dma_buf_attach()`, `dma_buf_map_attachment_unlocked()`),
//! so the exporter knows its importer and keeps the memory in place, and a kernel mapping
//! (`dma_buf_vmap_unlocked()`) through which the driver's CPU writes the frames, with plain
//! copies ([`super::CpuAccess`]). Each is undone, in reverse, when the last reference to the
//! [`Import`] goes.
//!
//! # CPU access and implicit fences
//!
//! The driver's CPU access to the memory is bracketed by cache maintenance with no lock and no
//! allocation, on the frame path ([`Import::begin_cpu`], [`Import::end_cpu`]):
//! `invalidate_kernel_vmap_range()` before, `flush_kernel_vmap_range()` and
//! `dma_sync_sgtable_for_device()` of our own attachment after, so that what the CPU wrote is in
//! memory before the out-fence signals; not by `dma_buf_begin_cpu_access()`/
//! `dma_buf_end_cpu_access()`: those wait for the dma-buf's implicit fences, and exporters take
//! locks and allocate in them, so they cannot run where an out-fence depends on them. The
//! implicit fences are waited for asynchronously instead, as an in-fence:
//! [`Import::pending_fences`] collects them at QBUF.
//!
//! Our attachment's device never accesses the memory (the CPU does, through the kernel
//! mapping), so it is mapped `DMA_TO_DEVICE` whichever way the data goes: the DMA API then
//! never copies or invalidates towards the CPU, which a bouncing mapping (swiotlb) would do with
//! a stale copy of the exporter's pages, at a sync for the CPU or at unmap. The price: on a
//! system whose DMA is not cache-coherent, an output queue's CPU reads are not preceded by an
//! invalidation of the CPU caches (rvivid has no output queue). Exporters whose memory needs
//! more than cache maintenance for a CPU access (a GPU's memory domains) are not served: that is
//! what `dma_buf_begin_cpu_access()` is for. See `Documentation/display.rst`.
//!
//! # Locking
//!
//! Every other call here may take the dma-buf's reservation lock and allocates: the queue makes
//! them in process context, outside its signalling paths and outside any lock they take (see
//! `Documentation/dma-fence-rules.rst`). Only the copies through the kernel mapping and the
//! cache maintenance around them happen on the frame path.
//!
//! C header: [`include/linux/dma-buf.h`](srctree/include/linux/dma-buf.h).

use super::export::{
    self,
    ResvFenceSlot, //
};
use crate::{
    bindings,
    fence::Fence, //
};
use core::{
    ptr::NonNull,
    sync::atomic::AtomicBool, //
};
use kernel::{
    device::Device,
    error::{
        from_err_ptr,
        to_result, //
    },
    faux,
    ffi::c_int,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
};

/// Which way a queue's data goes between its driver and the buffer memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DataDir {
    /// The driver writes the buffers (a capture queue).
    DeviceWrites,
    /// The driver reads the buffers (an output queue).
    DeviceReads,
}

impl DataDir {
    /// The fences of a dma-buf's reservation object the driver must wait for before it
    /// accesses the memory: a writer waits for every reader and writer
    /// (`DMA_RESV_USAGE_READ`), a reader for the writers (`DMA_RESV_USAGE_WRITE`).
    pub(super) fn wait_usage(self) -> bindings::dma_resv_usage {
        match self {
            DataDir::DeviceWrites => bindings::dma_resv_usage_DMA_RESV_USAGE_READ,
            DataDir::DeviceReads => bindings::dma_resv_usage_DMA_RESV_USAGE_WRITE,
        }
    }
}

/// The direction our attachment is mapped for: the "device" never accesses the memory (see the
/// module documentation), and `DMA_TO_DEVICE` is the one direction in which the DMA API never
/// copies a bounce buffer over the exporter's pages.
const DMA_DIR: bindings::dma_data_direction = bindings::dma_data_direction_DMA_TO_DEVICE;

/// The device a queue attaches imported dma-bufs to (`vb2_queue.dev`).
///
/// # Invariants
///
/// The device has a DMA mask.
#[derive(Clone)]
pub(crate) struct DmaDevice(ARef<Device>);

impl DmaDevice {
    /// The faux device `reg`, given a 64-bit DMA mask (a faux device has none; vivid sets one
    /// on its platform device too). Nothing else uses the DMA configuration of a faux device
    /// its registration's owner made.
    pub(crate) fn for_faux(reg: &faux::Registration) -> Result<Self> {
        let dev: &Device = reg.as_ref();
        // SAFETY: `dev` is a live device (the registration holds it); only its owner, the
        // caller, sets up its DMA, here, before anything attaches it.
        to_result(unsafe { bindings::rvb2_dma_coerce_mask_and_coherent(raw_device(dev), 64) })?;
        // INVARIANT: The mask was set above.
        Ok(Self(dev.into()))
    }
}

/// The C device of `dev`.
fn raw_device(dev: &Device) -> *mut bindings::device {
    // `Device` is a transparent wrapper of `struct device`; our bindings name the same type.
    core::ptr::from_ref(dev).cast_mut().cast()
}

/// A reference to a dma-buf, from an fd (`dma_buf_get()`).
///
/// # Invariants
///
/// `ptr` is a dma-buf this object holds one reference to.
pub(crate) struct DmaBufRef {
    ptr: NonNull<bindings::dma_buf>,
}

// SAFETY: A dma-buf reference may be used and dropped from any thread.
unsafe impl Send for DmaBufRef {}
// SAFETY: Shared access only reads the dma-buf's size, address and reservation object pointer,
// which never change.
unsafe impl Sync for DmaBufRef {}

impl DmaBufRef {
    /// The dma-buf of `fd` of the calling process: `EINVAL` for a closed fd or one that is not
    /// a dma-buf, as videobuf2 and the `VIDIOC_QBUF` documentation say.
    pub(crate) fn get(fd: i32) -> Result<Self> {
        // SAFETY: Any fd may be passed; the call takes a reference on success.
        let ptr = unsafe { bindings::dma_buf_get(fd) };
        match from_err_ptr(ptr) {
            // INVARIANT: `dma_buf_get()` took a reference for us.
            Ok(p) => NonNull::new(p).map(|ptr| Self { ptr }).ok_or(EINVAL),
            Err(_) => Err(EINVAL),
        }
    }

    /// The size of the dma-buf in bytes.
    pub(crate) fn size(&self) -> usize {
        // SAFETY: The dma-buf is live (type invariant); its size never changes.
        unsafe { (*self.ptr.as_ptr()).size }
    }

    /// The dma-buf's reservation object (`dma_buf.resv`: the exporter's, or the dma-buf's own),
    /// initialised by `dma_buf_export()`; it lives at least as long as the dma-buf.
    fn resv(&self) -> *mut bindings::dma_resv {
        // SAFETY: The dma-buf is live (type invariant); its `resv` never changes.
        unsafe { (*self.ptr.as_ptr()).resv }
    }

    /// Whether `self` and `other` are the same dma-buf.
    pub(crate) fn same(&self, other: &DmaBufRef) -> bool {
        self.ptr == other.ptr
    }
}

impl Drop for DmaBufRef {
    fn drop(&mut self) {
        // SAFETY: We hold a reference (type invariant), dropped once here. The last `fput()`
        // releases the dma-buf later, from a task work or a work item.
        unsafe { bindings::dma_buf_put(self.ptr.as_ptr()) };
    }
}

/// An attachment of a device to a dma-buf, mapped for [`DMA_DIR`].
///
/// # Invariants
///
/// `attach` is an attachment of `dev` to a dma-buf that outlives this object (the [`Import`]
/// drops this first); `sgt` is its mapping for [`DMA_DIR`], unmapped and detached once, here.
struct Attachment {
    attach: NonNull<bindings::dma_buf_attachment>,
    sgt: NonNull<bindings::sg_table>,
    /// `attach->dev`, which the dma-buf core does not hold.
    dev: ARef<Device>,
}

impl Attachment {
    /// Attaches `dev` to `dmabuf` and maps it for [`DMA_DIR`].
    fn new(dmabuf: &DmaBufRef, dev: &DmaDevice) -> Result<Self> {
        // SAFETY: `dmabuf` is live; `dev` is a live device with a DMA mask (type invariant of
        // `DmaDevice`), which `dev` keeps until the detach.
        let attach = unsafe { bindings::dma_buf_attach(dmabuf.ptr.as_ptr(), raw_device(&dev.0)) };
        let attach = NonNull::new(from_err_ptr(attach)?).ok_or(ENOMEM)?;
        // SAFETY: `attach` is a new attachment, not mapped; the reservation lock is not held.
        let sgt = unsafe { bindings::dma_buf_map_attachment_unlocked(attach.as_ptr(), DMA_DIR) };
        match from_err_ptr(sgt).and_then(|s| NonNull::new(s).ok_or(ENOMEM)) {
            // INVARIANT: Attached and mapped for `DMA_DIR`.
            Ok(sgt) => Ok(Self {
                attach,
                sgt,
                dev: dev.0.clone(),
            }),
            Err(e) => {
                // SAFETY: The attachment is ours and not mapped.
                unsafe { bindings::dma_buf_detach(dmabuf.ptr.as_ptr(), attach.as_ptr()) };
                Err(e)
            }
        }
    }
}

impl Attachment {
    /// Writes what the CPU wrote back to memory for the device (`dma_sync_sgtable_for_device()`
    /// of our mapping). No lock, no allocation: any context.
    fn sync_for_device(&self) {
        // SAFETY: `sgt` is the attachment's live mapping for `DMA_DIR` on `dev` (type
        // invariant).
        unsafe {
            bindings::rvb2_dma_sync_sgtable_for_device(
                raw_device(&self.dev),
                self.sgt.as_ptr(),
                DMA_DIR as c_int,
            )
        };
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // SAFETY: `sgt` is the attachment's mapping for `DMA_DIR` (type invariant), unmapped once;
        // the reservation lock is not held (the queue drops memory with no lock held).
        unsafe {
            bindings::dma_buf_unmap_attachment_unlocked(
                self.attach.as_ptr(),
                self.sgt.as_ptr(),
                DMA_DIR,
            )
        };
        // SAFETY: The attachment is ours and unmapped; its dma-buf is live (type invariant).
        unsafe { bindings::dma_buf_detach((*self.attach.as_ptr()).dmabuf, self.attach.as_ptr()) };
    }
}

/// A kernel mapping of a dma-buf (`dma_buf_vmap_unlocked()`).
///
/// # Invariants
///
/// `vaddr` maps the whole of the dma-buf `dmabuf`, in system memory, until this object is
/// dropped (the [`Import`] drops it before its dma-buf reference).
struct Vmap {
    dmabuf: NonNull<bindings::dma_buf>,
    vaddr: NonNull<u8>,
}

impl Vmap {
    /// Maps `dmabuf` in the kernel: `EFAULT` if the exporter cannot (as videobuf2-vmalloc),
    /// `EINVAL` if its memory is I/O memory, which plain copies must not touch.
    fn new(dmabuf: &DmaBufRef) -> Result<Self> {
        let mut map: bindings::iosys_map = pin_init::zeroed();
        // SAFETY: `dmabuf` is live; `map` is ours to fill; the reservation lock is not held.
        if unsafe { bindings::dma_buf_vmap_unlocked(dmabuf.ptr.as_ptr(), &mut map) } != 0 {
            return Err(EFAULT);
        }
        // SAFETY: `vaddr` is the member the exporter filled for system memory, and a pointer
        // either way.
        let vaddr = unsafe { map.__bindgen_anon_1.vaddr };
        match NonNull::new(vaddr.cast::<u8>()) {
            // INVARIANT: A system-memory mapping of the whole dma-buf.
            Some(vaddr) if !map.is_iomem => Ok(Self {
                dmabuf: dmabuf.ptr,
                vaddr,
            }),
            _ => {
                // SAFETY: `map` is the mapping just made, unmapped once.
                unsafe { bindings::dma_buf_vunmap_unlocked(dmabuf.ptr.as_ptr(), &mut map) };
                Err(if map.is_iomem { EINVAL } else { EFAULT })
            }
        }
    }
}

impl Drop for Vmap {
    fn drop(&mut self) {
        let mut map = bindings::iosys_map {
            __bindgen_anon_1: bindings::iosys_map__bindgen_ty_1 {
                vaddr: self.vaddr.as_ptr().cast(),
            },
            is_iomem: false,
        };
        // SAFETY: `vaddr` is our mapping of the live `dmabuf` (type invariant), unmapped once;
        // the reservation lock is not held.
        unsafe { bindings::dma_buf_vunmap_unlocked(self.dmabuf.as_ptr(), &mut map) };
    }
}

/// A dma-buf imported as the memory of one buffer: attached, mapped, and mapped in the kernel.
///
/// # Invariants
///
/// `vmap` maps the whole dma-buf, of at least `len` bytes. The fields are dropped in their
/// order: the kernel mapping, the attachment, then the dma-buf reference.
pub(crate) struct Import {
    vmap: Vmap,
    attachment: Option<Attachment>,
    dmabuf: DmaBufRef,
    len: usize,
    dir: DataDir,
    /// Claims the contents for the one kernel writer (see [`super::CpuAccess`]).
    pub(super) writer: AtomicBool,
}

// SAFETY: The references, attachment and mapping may be used and released from any thread.
unsafe impl Send for Import {}
// SAFETY: Shared access only reads the fields and the atomic; the kernel writes the contents
// only through a `CpuAccess`, of which `writer` allows one at a time.
unsafe impl Sync for Import {}

impl Import {
    /// Imports the first `len` bytes of `dmabuf` (`EINVAL` if it is smaller, or `len` is 0),
    /// for a driver that writes or reads it (`dir`): attaches `dev` (if any) and maps it
    /// (`DMA_TO_DEVICE`), and maps it in the kernel.
    pub(super) fn new(
        dmabuf: DmaBufRef,
        len: usize,
        dev: Option<&DmaDevice>,
        dir: DataDir,
    ) -> Result<Arc<Self>> {
        if len == 0 || len > dmabuf.size() {
            return Err(EINVAL);
        }
        let attachment = dev.map(|d| Attachment::new(&dmabuf, d)).transpose()?;
        let vmap = Vmap::new(&dmabuf)?;
        // INVARIANT: `vmap` maps the whole dma-buf, which has at least `len` bytes; the fields
        // are declared in the order they must be undone.
        Ok(Arc::new(
            Self {
                vmap,
                attachment,
                dmabuf,
                len,
                dir,
                writer: AtomicBool::new(false),
            },
            GFP_KERNEL,
        )?)
    }

    /// Whether this imports `len` bytes of `dmabuf`.
    pub(super) fn imports(&self, dmabuf: &DmaBufRef, len: usize) -> bool {
        self.dmabuf.same(dmabuf) && self.len == len
    }

    /// The kernel address of the memory (valid for [`Import::size`] bytes while `self` lives).
    pub(super) fn as_ptr(&self) -> NonNull<u8> {
        self.vmap.vaddr
    }

    /// The length in bytes.
    pub(super) fn size(&self) -> usize {
        self.len
    }

    /// Whether the driver writes the memory (a capture queue's).
    pub(super) fn writable(&self) -> bool {
        self.dir == DataDir::DeviceWrites
    }

    /// Begins the driver's CPU access: the cache maintenance of the kernel mapping that gives
    /// the memory to the CPU. Lock- and allocation-free (on a signalling path). Every fence the access must wait for has signalled: the queue waits for them
    /// ([`Import::pending_fences`]) before it gives the buffer to the driver.
    pub(super) fn begin_cpu(&self) {
        // SAFETY: The kernel mapping covers the whole dma-buf (type invariant), of which the
        // range is a prefix (`vmap_len()`); the call only does cache maintenance on it.
        unsafe {
            bindings::rvb2_invalidate_kernel_vmap_range(
                self.vmap.vaddr.as_ptr().cast(),
                self.vmap_len(),
            )
        };
    }

    /// Ends the driver's CPU access: writes what the CPU wrote back through the kernel mapping
    /// and our mapping, so that the memory holds it before the out-fence signals. Lock- and
    /// allocation-free (on a signalling path).
    pub(super) fn end_cpu(&self) {
        // SAFETY: As in `begin_cpu()`.
        unsafe {
            bindings::rvb2_flush_kernel_vmap_range(self.vmap.vaddr.as_ptr().cast(), self.vmap_len())
        };
        if let Some(a) = self.attachment.as_ref() {
            a.sync_for_device();
        }
    }

    /// The length of the kernel mapping's cache maintenance: the dma-buf's size, at most
    /// `INT_MAX` (the maintenance functions take an `int`; a frame is far smaller).
    fn vmap_len(&self) -> c_int {
        c_int::try_from(self.dmabuf.size()).unwrap_or(c_int::MAX)
    }

    /// The fences of the dma-buf's reservation object (the exporter's, which every importer
    /// sees) that the driver's access (`dir`) must wait for and that have not signalled,
    /// leaving out those of the fence contexts `skip`, as
    /// [`export::pending_fences`] says (`ENOMEM`).
    pub(super) fn pending_fences(&self, dir: DataDir, skip: &[u64]) -> Result<Option<ARef<Fence>>> {
        let resv = NonNull::new(self.dmabuf.resv()).ok_or(EINVAL)?;
        // SAFETY: `resv` is the dma-buf's reservation object, initialised by `dma_buf_export()`
        // and finalised (if it is the dma-buf's own) only when the dma-buf is released, after
        // the last reference, of which `self.dmabuf` holds one for the call; an exporter's own
        // object outlives its dma-bufs.
        unsafe { export::pending_fences(resv, dir, skip) }
    }

    /// Locks the dma-buf's reservation object (`dma_buf.resv`, the exporter's, which every
    /// importer sees) and reserves a slot in it for the out-fence of the buffer, as
    /// [`Resv::reserve`](super::export::Resv::reserve) does for MMAP memory (`EINTR`, `ENOMEM`).
    pub(super) fn reserve_fence(&self, dir: DataDir) -> Result<ResvFenceSlot<'_>> {
        let resv = NonNull::new(self.dmabuf.resv()).ok_or(EINVAL)?;
        // SAFETY: `resv` is the dma-buf's reservation object, initialised by
        // `dma_buf_export()` and finalised (if it is the dma-buf's own) only when the dma-buf is
        // released, after the last reference, of which `self.dmabuf` holds one while `self` is
        // borrowed; an exporter's own object outlives its dma-bufs.
        unsafe { ResvFenceSlot::reserve(resv, dir) }
    }
}
