// SPDX-License-Identifier: GPL-2.0

//! dma-fence and sync_file abstractions: in-fences rvb2 waits for, out-fences it signals.
//!
//! The shape follows the upstream Rust dma-fence series (a fence context the producer owns,
//! fences allocated ahead so that creating one cannot fail where it must not, a producer-side
//! type that alone can signal, a ref-counted consumer side), plus the sync_file wrapper that
//! series lacks:
//!
//! - [`Fence`] is any `struct dma_fence` (`#[repr(transparent)]` over
//!   [`Opaque<dma_fence>`](Opaque), [`AlwaysRefCounted`]), handed out as [`ARef<Fence>`]: a
//!   fence taken from a sync_file fd, or the consumer side of one of ours.
//! - [`FenceContext`] is a timeline of out-fences (a dma-fence context and its sequence
//!   numbers). [`FenceAllocation::new`] allocates the storage of a fence ahead (it may fail
//!   and sleep); [`FenceContext::new_fence`] then initialises it with the next sequence number
//!   and cannot fail.
//! - [`OutFence`] is the producer side of a fence rvb2 created: only it can signal the fence.
//!   Dropping one that was not signalled signals it with `-ECANCELED`, so no out-fence is ever
//!   left pending (the dma-fence rule that fences signal in finite time).
//! - [`SyncFile`] wraps a fence in a sync_file for userspace, and gets the fence of one.
//! - [`FenceWaiter`] is a pinned callback slot: a registration on a fence that holds the fence
//!   and its owner, and removes itself when unregistered or dropped.
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

use crate::{
    bindings,
    errno::ecanceled,
    sync::{
        new_irq_spinlock,
        IrqSpinLock, //
    }, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};
use kernel::{
    fs::File,
    prelude::*,
    sync::{
        aref::{
            ARef,
            AlwaysRefCounted, //
        },
        atomic::{
            Acquire,
            Atomic,
            Release, //
        },
        Arc,
        ArcBorrow, //
    },
    types::Opaque, //
};

/// A `struct dma_fence`.
///
/// # Invariants
///
/// The fence is initialised and its reference count is not zero while a `&Fence` exists: a
/// `Fence` is only ever reached through an [`ARef<Fence>`] (which owns a reference) or a
/// borrow of one.
#[repr(transparent)]
pub(crate) struct Fence(Opaque<bindings::dma_fence>);

// SAFETY: dma-fences are reference counted and locked internally; any thread may use them, and
// the last reference may be dropped on any thread.
unsafe impl Send for Fence {}
// SAFETY: See `Send`: every operation on a shared fence is thread-safe.
unsafe impl Sync for Fence {}

// SAFETY: `dma_fence_get()`/`dma_fence_put()` keep the fence alive while the count is not zero.
unsafe impl AlwaysRefCounted for Fence {
    fn inc_ref(&self) {
        // SAFETY: The fence is live (type invariant).
        unsafe { bindings::rvb2_dma_fence_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { bindings::rvb2_dma_fence_put(obj.as_ptr().cast()) };
    }
}

impl Fence {
    /// Takes a reference to the fence of the sync_file `fd`. Fails with `EINVAL` if `fd` is
    /// not an open sync_file (see [`SyncFile::fence`]).
    pub(crate) fn from_sync_file(fd: i32) -> Result<ARef<Self>> {
        SyncFile::fence(fd)
    }

    /// Takes over a reference to `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is a live fence, and the caller owns a reference on it, which it gives up.
    pub(crate) unsafe fn from_raw_ref(ptr: NonNull<bindings::dma_fence>) -> ARef<Self> {
        // SAFETY: `Fence` is a transparent wrapper of the fence; the reference is the caller's.
        unsafe { ARef::from_raw(ptr.cast()) }
    }

    /// A fence that signals once both `self` and `other` did, with the error of either
    /// (`dma_fence_unwrap_merge()`: the components of containers are flattened, duplicates and
    /// signalled ones left out; a signalled stub fence if none is left). It allocates
    /// (`ENOMEM`): not on a signalling path.
    pub(crate) fn merge(&self, other: &Fence) -> Result<ARef<Self>> {
        // SAFETY: Both fences are live (type invariant); the merge takes its own references
        // and returns a new reference, or null on failure.
        let ptr = unsafe { bindings::rvb2_dma_fence_unwrap_merge2(self.as_raw(), other.as_raw()) };
        let ptr = NonNull::new(ptr).ok_or(ENOMEM)?;
        // SAFETY: A non-null result is a live fence carrying a reference for us.
        let merged = unsafe { Self::from_raw_ref(ptr) };
        // The merge leaves out components that signalled, with an error too, and its stub has
        // none: a fence that failed by now is the answer alone, so that its error is kept. (One
        // that fails later was pending in the merge, whose array then fails with it.)
        for fence in [self, other] {
            if fence.status() < 0 {
                return Ok(fence.into());
            }
        }
        Ok(merged)
    }

    /// Returns the raw pointer.
    pub(crate) fn as_raw(&self) -> *mut bindings::dma_fence {
        self.0.get()
    }

    /// `dma_fence_get_status()`: 0 while pending, 1 once signalled, a negative errno if it
    /// signalled with an error.
    pub(crate) fn status(&self) -> i32 {
        // SAFETY: The fence is live (type invariant).
        unsafe { bindings::dma_fence_get_status(self.as_raw()) }
    }

    /// Whether the fence signalled (`dma_fence_is_signaled()`).
    pub(crate) fn is_signaled(&self) -> bool {
        // SAFETY: The fence is live (type invariant).
        unsafe { bindings::rvb2_dma_fence_is_signaled(self.as_raw()) }
    }

    /// The fence's context.
    pub(crate) fn context(&self) -> u64 {
        // SAFETY: The fence is live; `context` never changes after initialisation.
        unsafe { (*self.as_raw()).context }
    }

    /// The fence's sequence number.
    #[cfg_attr(not(CONFIG_KUNIT = "y"), expect(dead_code))]
    pub(crate) fn seqno(&self) -> u64 {
        // SAFETY: The fence is live; `seqno` never changes after initialisation.
        unsafe { (*self.as_raw()).seqno }
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
        let mut component = unsafe { bindings::dma_fence_unwrap_first(self.as_raw(), &mut cursor) };
        while let Some(ptr) = NonNull::new(component) {
            // SAFETY: `ptr` is live until the next call (see above); `Fence` is a transparent
            // wrapper of the fence.
            let fence = unsafe { ptr.cast::<Fence>().as_ref() };
            if !fence.is_signaled() {
                f(fence.context());
            }
            // SAFETY: `cursor` was set up by `dma_fence_unwrap_first()` and not yet walked to
            // its end.
            component = unsafe { bindings::dma_fence_unwrap_next(&mut cursor) };
        }
    }
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

/// A timeline of out-fences: a dma-fence context and the sequence numbers used on it.
///
/// Fences of one context must signal in sequence number order (consumers such as
/// `dma_fence_is_later()` and `SYNC_IOC_MERGE` rely on it): the owner signals them so, or uses a
/// context per fence. Only the owner creates fences on it (`&mut self`).
pub(crate) struct FenceContext {
    context: u64,
    seqno: u64,
}

impl FenceContext {
    /// A new context (`dma_fence_context_alloc(1)`). It allocates no memory and may be called
    /// in any context.
    pub(crate) fn new() -> Self {
        Self {
            // SAFETY: May be called from any context.
            context: unsafe { bindings::dma_fence_context_alloc(1) },
            seqno: 0,
        }
    }

    /// Initialises the fence `storage` was allocated for, with the next sequence number of this
    /// context. It neither allocates nor fails, so it may run where failing is not an option
    /// (under a lock a signalling path takes).
    pub(crate) fn new_fence(&mut self, storage: FenceAllocation) -> OutFence {
        self.seqno += 1;
        let ptr = KBox::into_raw(storage.0).cast::<bindings::dma_fence>();
        // SAFETY: `ptr` is a `kmalloc()` allocation of a `dma_fence` nothing else refers to
        // (`Opaque` is a transparent wrapper); the fence core frees it with `dma_fence_free()`
        // (`kfree_rcu()`) when its last reference goes. A null lock selects the fence's own
        // inline lock.
        unsafe {
            bindings::dma_fence_init(
                ptr,
                &OUT_FENCE_OPS,
                core::ptr::null_mut(),
                self.context,
                self.seqno,
            )
        };
        // INVARIANT: The fence was just initialised with `OUT_FENCE_OPS` and is not signalled.
        OutFence {
            // SAFETY: `dma_fence_init()` gave us the initial reference; `ptr` came from a `KBox`,
            // so it is not null.
            fence: unsafe { Fence::from_raw_ref(NonNull::new_unchecked(ptr)) },
        }
    }
}

/// The storage of an out-fence, allocated ahead so that creating the fence
/// ([`FenceContext::new_fence`]) cannot fail (the upstream series' `DriverFenceAllocation`).
pub(crate) struct FenceAllocation(KBox<Opaque<bindings::dma_fence>>);

impl FenceAllocation {
    /// Allocates the storage of one fence (`GFP_KERNEL`: not on a signalling path).
    pub(crate) fn new() -> Result<Self> {
        Ok(Self(KBox::new(Opaque::uninit(), GFP_KERNEL)?))
    }
}

/// The producer side of a fence rvb2 created: the only handle that can signal it.
///
/// # Invariants
///
/// `fence` was initialised with [`OUT_FENCE_OPS`] by [`FenceContext::new_fence`], and is not
/// signalled while this object exists but by [`OutFence::signal`], which consumes it; dropping
/// the object signals the fence if it is still pending.
pub(crate) struct OutFence {
    fence: ARef<Fence>,
}

impl OutFence {
    /// The fence, for others to wait on (a consumer reference: `ARef::from(out.fence())`).
    pub(crate) fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Wraps the fence in a new sync_file and returns its file, which holds its own reference
    /// on the fence (see [`SyncFile::new`]).
    pub(crate) fn sync_file(&self) -> Result<ARef<File>> {
        SyncFile::new(&self.fence).map(SyncFile::into_file)
    }

    /// Signals the fence, with `error` if the buffer failed or was cancelled.
    pub(crate) fn signal(self, error: Option<Error>) {
        self.signal_with(error);
    }

    fn signal_with(&self, error: Option<Error>) {
        if let Some(e) = error {
            // SAFETY: The fence is live and not yet signalled (type invariant).
            unsafe { bindings::rvb2_dma_fence_set_error(self.fence.as_raw(), e.to_errno()) };
        }
        // SAFETY: The fence is live. It was not signalled (type invariant); the caller consumes
        // or drops `self`, so it is signalled once.
        unsafe { bindings::dma_fence_signal(self.fence.as_raw()) };
    }
}

impl Drop for OutFence {
    fn drop(&mut self) {
        // INVARIANT: Never leave a fence unsignalled. `signal()` consumed its object after
        // signalling, so a signalled fence is one `signal()` handled.
        if !self.fence.is_signaled() {
            self.signal_with(Some(ecanceled()));
        }
    }
}

/// A sync_file: a file that hands a fence to userspace (`include/linux/sync_file.h`).
///
/// # Invariants
///
/// `file` is the file of a sync_file.
pub(crate) struct SyncFile {
    file: ARef<File>,
}

impl SyncFile {
    /// Creates a sync_file for `fence`; it holds its own reference on the fence.
    pub(crate) fn new(fence: &Fence) -> Result<Self> {
        // SAFETY: The fence is live; `sync_file_create()` takes its own reference.
        let sf = unsafe { bindings::rvb2_sync_file_create(fence.as_raw()) };
        if sf.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `sync_file_create()` returned a sync_file whose file holds the only
        // reference, which we take over (dropping it releases the sync_file and its fence
        // reference). The cast is between two bindings of `struct file`.
        let file = unsafe { ARef::from_raw(NonNull::new_unchecked((*sf).file.cast::<File>())) };
        // INVARIANT: `file` is the sync_file's.
        Ok(Self { file })
    }

    /// The file, to install in a file descriptor.
    pub(crate) fn into_file(self) -> ARef<File> {
        self.file
    }

    /// Takes a reference to the fence of the sync_file `fd`. Fails with `EINVAL` if `fd` is
    /// not an open sync_file.
    pub(crate) fn fence(fd: i32) -> Result<ARef<Fence>> {
        if fd < 0 {
            return Err(EINVAL);
        }
        // SAFETY: `sync_file_get_fence()` accepts any fd and returns a new reference or null.
        let ptr = unsafe { bindings::sync_file_get_fence(fd) };
        let ptr = NonNull::new(ptr).ok_or(EINVAL)?;
        // SAFETY: A non-null result is a live fence carrying a reference for us.
        Ok(unsafe { Fence::from_raw_ref(ptr) })
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
    /// lock held): it must not sleep, must not touch the waiter (unregistering it from here
    /// would wait for this very call), and should only kick a work item.
    fn fence_signalled(this: ArcBorrow<'_, Self>);
}

/// What a registered [`FenceWaiter`] holds: the fence its callback is on, and its owner.
struct Registration<T> {
    fence: ARef<Fence>,
    owner: Arc<T>,
}

/// A callback slot that notifies an owner `T` when a fence signals
/// (`dma_fence_add_callback()`), reusable: [`FenceWaiter::register`] registers it on a fence,
/// [`FenceWaiter::unregister`] or dropping the waiter removes it.
///
/// A registration holds a reference on its fence and one on its owner, so the callback can
/// never find either gone; an owner that contains its own waiters (as the queue does) is kept
/// alive by them until it unregisters them. The callback allocates nothing and takes no lock
/// but the workqueue's (through the owner's [`FenceNotify`]): it is IRQ-safe.
///
/// # Invariants
///
/// - A `FenceWaiter` is only ever created pinned ([`FenceWaiter::new`] is a [`PinInit`]), so
///   `cb` never moves.
/// - `cb` is on no fence's callback list while `registration` is `None`; while it is `Some`,
///   `cb` is on the list of its fence or on none (the callback ran, or was never added).
/// - While `cb` is on a callback list or its function runs, `owner` is the address of the
///   `T` that `registration`'s owner keeps alive.
#[pin_data(PinnedDrop)]
pub(crate) struct FenceWaiter<T: FenceNotify> {
    #[pin]
    cb: Opaque<bindings::dma_fence_cb>,
    owner: Atomic<*mut T>,
    #[pin]
    registration: IrqSpinLock<Option<Registration<T>>>,
}

// SAFETY: `cb` is only touched by the fence core under the fence's lock and by the methods
// below under `registration`'s lock; the rest is `Send`.
unsafe impl<T: FenceNotify> Send for FenceWaiter<T> {}
// SAFETY: See `Send`: every method takes `&self` and synchronises through those locks.
unsafe impl<T: FenceNotify> Sync for FenceWaiter<T> {}

impl<T: FenceNotify> FenceWaiter<T> {
    /// An unregistered waiter.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            cb: Opaque::zeroed(),
            owner: Atomic::new(core::ptr::null_mut()),
            registration <- new_irq_spinlock!(None, c"rvb2_fence_waiter"),
        })
    }

    /// Notifies `owner` when `fence` signals. Returns `Ok(false)` (and registers nothing) if
    /// the fence has already signalled, `EBUSY` if the waiter is registered already.
    ///
    /// It does not sleep or allocate; `fence` and `owner` are referenced again, so the caller
    /// keeps its own references.
    pub(crate) fn register(&self, fence: &Fence, owner: &Arc<T>) -> Result<bool> {
        let mut registration = self.registration.lock();
        if registration.is_some() {
            return Err(EBUSY);
        }
        let new = Registration {
            fence: fence.into(),
            owner: owner.clone(),
        };
        // INVARIANT: `owner` is `new.owner`'s `T`, which lives as long as `new`: in the
        // registration if the callback is added, or until this function returns if not.
        self.owner
            .store(Arc::as_ptr(&new.owner).cast_mut(), Release);
        // SAFETY: The fence is live. `cb` is on no list (`registration` is `None`, type
        // invariant) and is pinned; once added, it stays until `unregister()` or `drop()` takes
        // it off its fence, which they do with this registration's fence.
        let ret = unsafe {
            bindings::dma_fence_add_callback(fence.as_raw(), self.cb.get(), Some(Self::func))
        };
        match ret {
            0 => {
                // INVARIANT: `cb` is on `fence`'s list, and `registration` names that fence.
                *registration = Some(new);
                Ok(true)
            }
            // Signalled already: `cb` was not added.
            r if r == ENOENT.to_errno() => Ok(false),
            r => Err(Error::from_errno(r)),
        }
    }

    /// Removes the callback if it is registered and has not run. Either way, the callback is
    /// not running when this returns (the fence core runs callbacks under the fence's lock,
    /// which this takes), and the waiter can be registered again.
    ///
    /// It drops the registration's references on the fence and on the owner; the latter is
    /// never the last (whoever reaches this waiter holds its owner), so the owner is not freed
    /// here. It does not sleep.
    pub(crate) fn unregister(&self) {
        let mut guard = self.registration.lock();
        let registration = guard.take();
        if let Some(r) = &registration {
            // SAFETY: `r` is the registration of `cb`, so `cb` was added to `r.fence` (type
            // invariant).
            unsafe { Self::remove(&self.cb, &r.fence) };
        }
        // INVARIANT: `cb` is on no list now.
        drop(guard);
        drop(registration);
    }

    /// Takes `cb` off `fence`'s callback list if it is still on it.
    ///
    /// # Safety
    ///
    /// `cb` must have been added to `fence` by `dma_fence_add_callback()` (a zeroed entry that
    /// was never added is not an empty list entry, and removing it would dereference null).
    unsafe fn remove(cb: &Opaque<bindings::dma_fence_cb>, fence: &Fence) {
        // SAFETY: The fence is live. `cb` was added to it (the caller's promise), so its list
        // entry is initialised: still on the fence's list, or emptied by the signalling, which
        // removes each callback with `list_del_init()` before running it.
        unsafe { bindings::dma_fence_remove_callback(fence.as_raw(), cb.get()) };
    }

    /// The `dma_fence_func_t` of the registration.
    ///
    /// # Safety
    ///
    /// Called by the fence core only, for a callback added by [`FenceWaiter::register`].
    unsafe extern "C" fn func(_fence: *mut bindings::dma_fence, cb: *mut bindings::dma_fence_cb) {
        let cb = Opaque::cast_from(cb);
        // SAFETY: `cb` is the `cb` field of a `FenceWaiter<T>`, which is live: it is on a
        // callback list, and the waiter takes it off before it goes.
        let this = unsafe { &*kernel::container_of!(cb, Self, cb) };
        let owner = this.owner.load(Acquire);
        // SAFETY: While the callback runs, `owner` is a `T` that the registration's `Arc` keeps
        // alive (type invariant).
        T::fence_signalled(unsafe { ArcBorrow::from_raw(owner) });
    }
}

#[pinned_drop]
impl<T: FenceNotify> PinnedDrop for FenceWaiter<T> {
    fn drop(self: Pin<&mut Self>) {
        self.unregister();
    }
}

/// Waits for an RCU grace period, so that no fence callback or fence operation of this module
/// runs any more (`dma-fence.h`: fence providers wait for one before unloading).
pub(crate) fn synchronize_rcu_on_unload() {
    // SAFETY: Called from process context, at module unload.
    unsafe { kernel::bindings::synchronize_rcu() };
}
