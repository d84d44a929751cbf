// SPDX-License-Identifier: GPL-2.0

//! dma-fence and sync_file abstractions: in-fences rvb2 waits for, out-fences it signals.
//!
//! - [`Fence`] is a reference to any `struct dma_fence`, e.g. one taken from a sync_file fd.
//! - [`OutFence`] is a fence rvb2 creates and must signal; dropping one that was not
//!   signalled signals it with `-ECANCELED`, so no out-fence is ever left pending (the
//!   dma-fence rule that fences signal in finite time).
//! - [`FenceWaiter`] is a callback registered on a fence, which notifies its owner.
//! - [`SignallingSection`] annotates code that out-fences need in order to signal
//!   (`dma_fence_begin_signalling()`), so that lockdep checks it against the cross-driver
//!   rules: no `GFP_KERNEL` allocation, no lock that is held elsewhere around one.
//!
//! Out-fences have no `release` or `wait` operation, so once signalled they no longer refer
//! to this module (`dma_fence_signal()` detaches their ops); the module waits for an RCU
//! grace period before unloading ([`synchronize_rcu_on_unload`]), as `dma-fence.h` asks of fence
//! providers that unload.
//!
//! C headers: [`include/linux/dma-fence.h`](srctree/include/linux/dma-fence.h),
//! [`include/linux/sync_file.h`](srctree/include/linux/sync_file.h).

use crate::bindings;
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{
    fs::File,
    prelude::*,
    sync::{aref::ARef, ArcBorrow},
    types::Opaque, //
};

/// `ECANCELED`, the error of out-fences whose buffer was never processed.
pub(crate) fn ecanceled() -> Error {
    Error::from_errno(-(kernel::bindings::ECANCELED as i32))
}

/// `EDEADLK`, the error of a `VIDIOC_QBUF` whose in-fence waits for an out-fence of its own
/// queue.
pub(crate) fn edeadlk() -> Error {
    Error::from_errno(-(kernel::bindings::EDEADLK as i32))
}

/// A counted reference to a `struct dma_fence`.
///
/// # Invariants
///
/// `ptr` points to a live fence on which this object owns one reference.
pub(crate) struct Fence {
    ptr: NonNull<bindings::dma_fence>,
}

// SAFETY: dma-fences are reference counted and locked internally; any thread may use them.
unsafe impl Send for Fence {}
// SAFETY: See `Send`.
unsafe impl Sync for Fence {}

impl Fence {
    /// Takes a reference to the fence of the sync_file `fd`. Fails with `EINVAL` if `fd` is
    /// not an open sync_file.
    pub(crate) fn from_sync_file(fd: i32) -> Result<Self> {
        if fd < 0 {
            return Err(EINVAL);
        }
        // SAFETY: `sync_file_get_fence()` accepts any fd and returns a new reference or null.
        let ptr = unsafe { bindings::sync_file_get_fence(fd) };
        // INVARIANT: A non-null result carries a reference for us.
        NonNull::new(ptr).map(|ptr| Self { ptr }).ok_or(EINVAL)
    }

    /// Returns the raw pointer.
    pub(crate) fn as_ptr(&self) -> *mut bindings::dma_fence {
        self.ptr.as_ptr()
    }

    /// `dma_fence_get_status()`: 0 while pending, 1 once signalled, a negative errno if it
    /// signalled with an error.
    pub(crate) fn status(&self) -> i32 {
        // SAFETY: The fence is live (type invariant).
        unsafe { bindings::dma_fence_get_status(self.as_ptr()) }
    }

    /// The fence's context.
    pub(crate) fn context(&self) -> u64 {
        // SAFETY: The fence is live; `context` never changes after initialisation.
        unsafe { (*self.as_ptr()).context }
    }

    /// The fence's sequence number.
    pub(crate) fn seqno(&self) -> u64 {
        // SAFETY: The fence is live; `seqno` never changes after initialisation.
        unsafe { (*self.as_ptr()).seqno }
    }

    /// Calls `f` with the context of every fence this one is made of that has not signalled:
    /// the components of a container (a `dma_fence_array`, as `SYNC_IOC_MERGE` makes, or a
    /// `dma_fence_chain`, at any depth), or the fence itself if it is none, as
    /// `dma_fence_unwrap_for_each()` walks them.
    pub(crate) fn for_each_pending_context(&self, mut f: impl FnMut(u64)) {
        let mut cursor = bindings::dma_fence_unwrap::default();
        // SAFETY: The fence is live (type invariant) and `cursor` is valid for writes. The cursor
        // holds a reference on the container it walks, and the container references its
        // components, so every fence it returns is live until the next call; walking to the end
        // (a null return) drops the cursor's reference.
        let mut component = unsafe { bindings::dma_fence_unwrap_first(self.as_ptr(), &mut cursor) };
        while !component.is_null() {
            // SAFETY: `component` is live (see above).
            if !unsafe { bindings::rvb2_dma_fence_is_signaled(component) } {
                // SAFETY: As above; `context` never changes after initialisation.
                f(unsafe { (*component).context });
            }
            // SAFETY: `cursor` was set up by `dma_fence_unwrap_first()` and not yet walked to
            // its end.
            component = unsafe { bindings::dma_fence_unwrap_next(&mut cursor) };
        }
    }
}

impl Clone for Fence {
    fn clone(&self) -> Self {
        // SAFETY: The fence is live; the new reference is owned by the clone.
        unsafe { bindings::rvb2_dma_fence_get(self.as_ptr()) };
        Self { ptr: self.ptr }
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: We own one reference (type invariant).
        unsafe { bindings::rvb2_dma_fence_put(self.as_ptr()) };
    }
}

/// Allocates a new fence context (`dma_fence_context_alloc(1)`).
pub(crate) fn context_alloc() -> u64 {
    // SAFETY: May be called from any context.
    unsafe { bindings::dma_fence_context_alloc(1) }
}

/// `dma_fence_ops::get_driver_name` of out-fences.
///
/// # Safety
///
/// Called by the dma-fence core only.
unsafe extern "C" fn driver_name(_f: *mut bindings::dma_fence) -> *const c_char {
    c"rvb2".as_char_ptr()
}

/// `dma_fence_ops::get_timeline_name` of out-fences.
///
/// # Safety
///
/// Called by the dma-fence core only.
unsafe extern "C" fn timeline_name(_f: *mut bindings::dma_fence) -> *const c_char {
    c"rvb2-queue".as_char_ptr()
}

static OUT_FENCE_OPS: bindings::dma_fence_ops = bindings::dma_fence_ops {
    get_driver_name: Some(driver_name),
    get_timeline_name: Some(timeline_name),
    ..pin_init::zeroed()
};

/// A fence rvb2 created and will signal when its buffer is done.
///
/// # Invariants
///
/// `fence` was initialised with [`OUT_FENCE_OPS`]; it is signalled at the latest when this
/// object is dropped.
pub(crate) struct OutFence {
    fence: Fence,
}

impl OutFence {
    /// Creates an unsignalled fence on `context` with sequence number `seqno`.
    pub(crate) fn new(context: u64, seqno: u64) -> Result<Self> {
        let raw = KBox::new(Opaque::<bindings::dma_fence>::uninit(), GFP_KERNEL)?;
        let ptr = KBox::into_raw(raw).cast::<bindings::dma_fence>();
        // SAFETY: `ptr` is a fresh `kmalloc()` allocation of a `dma_fence`; the fence core
        // frees it with `dma_fence_free()` (`kfree_rcu()`) when its last reference goes. A
        // null lock selects the fence's own inline lock.
        unsafe {
            bindings::dma_fence_init(ptr, &OUT_FENCE_OPS, core::ptr::null_mut(), context, seqno)
        };
        // INVARIANT: `dma_fence_init()` gave us the initial reference.
        Ok(Self {
            fence: Fence {
                // SAFETY: `ptr` came from a `KBox`, so it is not null.
                ptr: unsafe { NonNull::new_unchecked(ptr) },
            },
        })
    }

    /// The fence, for others to wait on.
    pub(crate) fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Wraps the fence in a new sync_file; the returned file holds its own reference on it.
    pub(crate) fn sync_file(&self) -> Result<ARef<File>> {
        // SAFETY: The fence is live.
        let sf = unsafe { bindings::rvb2_sync_file_create(self.fence.as_ptr()) };
        if sf.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `sync_file_create()` returned a sync_file whose file holds the only
        // reference, which we take over (dropping it releases the sync_file and its fence
        // reference). The cast is between two bindings of `struct file`.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked((*sf).file.cast::<File>())) })
    }

    /// Signals the fence, with `error` if the buffer failed or was cancelled.
    pub(crate) fn signal(self, error: Option<Error>) {
        if let Some(e) = error {
            // SAFETY: The fence is live and not yet signalled (type invariant).
            unsafe { bindings::rvb2_dma_fence_set_error(self.fence.as_ptr(), e.to_errno()) };
        }
        // SAFETY: The fence is live. `drop()` below then sees it signalled.
        unsafe { bindings::dma_fence_signal(self.fence.as_ptr()) };
    }
}

impl Drop for OutFence {
    fn drop(&mut self) {
        // SAFETY: The fence is live.
        if unsafe { bindings::rvb2_dma_fence_is_signaled(self.fence.as_ptr()) } {
            return;
        }
        // INVARIANT: Never leave a fence unsignalled.
        // SAFETY: The fence is live and not signalled.
        unsafe {
            bindings::rvb2_dma_fence_set_error(self.fence.as_ptr(), ecanceled().to_errno());
            bindings::dma_fence_signal(self.fence.as_ptr());
        }
    }
}

/// A dma-fence signalling critical section, from [`SignallingSection::begin`] until the guard
/// is dropped (`dma_fence_begin_signalling()` / `dma_fence_end_signalling()`).
///
/// Everything an out-fence needs in order to signal runs in one: the driver's completion of a
/// buffer, the queue's fence and deadline works, the cancel of STREAMOFF, REQBUFS and close.
/// Other drivers may wait for a fence from memory reclaim or with their locks held, so lockdep
/// (primed at boot with `fs_reclaim` before `dma_fence_map`) reports any `GFP_KERNEL`
/// allocation in a section, and any lock taken in one that is held elsewhere around such an
/// allocation. Sections nest; in atomic context (a spinlock held, an interrupt) beginning one
/// annotates nothing, so a section must begin before the locks it covers. Without
/// `CONFIG_LOCKDEP` it costs nothing.
///
/// The annotation is per task, so the guard stays on the thread that made it.
pub(crate) struct SignallingSection {
    cookie: bool,
    _not_send: PhantomData<*mut ()>,
}

impl SignallingSection {
    /// Begins a section.
    #[must_use = "the section ends when the guard is dropped"]
    pub(crate) fn begin() -> Self {
        Self {
            // SAFETY: May be called in any context.
            cookie: unsafe { bindings::rvb2_dma_fence_begin_signalling() },
            _not_send: PhantomData,
        }
    }
}

impl Drop for SignallingSection {
    fn drop(&mut self) {
        // SAFETY: `cookie` came from `dma_fence_begin_signalling()` on this task (the guard is
        // not `Send`). Only a `false` cookie releases the annotation, and at most one live guard
        // of a task has one (a section begun inside another gets `true`), so the annotation is
        // released once, by the task that holds it.
        unsafe { bindings::rvb2_dma_fence_end_signalling(self.cookie) };
    }
}

/// What a [`FenceWaiter`] tells its owner when the fence it waits for signals.
pub(crate) trait FenceNotify: Send + Sync + Sized + 'static {
    /// The fence signalled. Called in any context (possibly hard interrupt, with the fence's
    /// lock held): it must not sleep and should only kick a work item.
    fn fence_signalled(this: ArcBorrow<'_, Self>);
}

/// A callback registration on a fence, owned by a `T` it notifies.
///
/// # Invariants
///
/// While a callback is registered, `owner` is the address of a live `Arc<T>` allocation that
/// stays alive until the callback ran or [`FenceWaiter::remove`] returned.
pub(crate) struct FenceWaiter<T: FenceNotify> {
    cb: Opaque<bindings::dma_fence_cb>,
    owner: AtomicPtr<T>,
}

// SAFETY: The callback storage is only touched by the fence core under the fence's lock.
unsafe impl<T: FenceNotify> Send for FenceWaiter<T> {}
// SAFETY: See `Send`.
unsafe impl<T: FenceNotify> Sync for FenceWaiter<T> {}

impl<T: FenceNotify> FenceWaiter<T> {
    /// Unused callback storage.
    pub(crate) const fn new() -> Self {
        Self {
            cb: Opaque::zeroed(),
            owner: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Notifies `owner` when `fence` signals. Returns `false` (and registers nothing) if the
    /// fence has already signalled.
    ///
    /// # Safety
    ///
    /// The storage must not have a callback registered, and must stay at this address, and
    /// `owner` alive, until the callback ran or [`FenceWaiter::remove`] returned.
    pub(crate) unsafe fn add(&self, fence: &Fence, owner: ArcBorrow<'_, T>) -> Result<bool> {
        let owner: &T = &owner;
        self.owner
            .store(core::ptr::from_ref(owner).cast_mut(), Ordering::Release);
        // INVARIANT: The caller keeps the owner alive while the callback is registered.
        // SAFETY: The fence is live; the storage is unused and stays put (caller's promise).
        let ret = unsafe {
            bindings::dma_fence_add_callback(fence.as_ptr(), self.cb.get(), Some(Self::func))
        };
        match ret {
            0 => Ok(true),
            r if r == ENOENT.to_errno() => Ok(false),
            r => Err(Error::from_errno(r)),
        }
    }

    /// Removes the callback from `fence` if it has not run. Either way, it is not running
    /// when this returns (the fence core runs callbacks under the fence's lock, which this
    /// takes). Returns whether it was removed before running.
    pub(crate) fn remove(&self, fence: &Fence) -> bool {
        // SAFETY: The fence is live; removing a callback that ran or was never added to this
        // fence is allowed (the storage's list entry is then empty).
        unsafe { bindings::dma_fence_remove_callback(fence.as_ptr(), self.cb.get()) }
    }

    /// The `dma_fence_func_t` of the registration.
    ///
    /// # Safety
    ///
    /// Called by the fence core only, for a callback added by [`FenceWaiter::add`].
    unsafe extern "C" fn func(_fence: *mut bindings::dma_fence, cb: *mut bindings::dma_fence_cb) {
        let cb = Opaque::cast_from(cb).cast_mut();
        // SAFETY: `cb` is the `cb` field of a `FenceWaiter<T>`.
        let this = unsafe { &*kernel::container_of!(cb, Self, cb) };
        let owner = this.owner.load(Ordering::Acquire);
        // SAFETY: The owner is a live `Arc<T>` allocation while the callback is registered
        // (type invariant).
        T::fence_signalled(unsafe { ArcBorrow::from_raw(owner) });
    }
}

/// Waits for an RCU grace period, so that no fence callback or fence operation of this module
/// runs any more (`dma-fence.h`: fence providers wait for one before unloading).
pub(crate) fn synchronize_rcu_on_unload() {
    // SAFETY: Called from process context, at module unload.
    unsafe { kernel::bindings::synchronize_rcu() };
}
