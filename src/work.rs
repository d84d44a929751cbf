// SPDX-License-Identifier: GPL-2.0

//! Delayed work that can be cancelled.
//!
//! The 7.2 kernel crate's `DelayedWork` cannot be cancelled, and a driver must stop its frame
//! work before it stops streaming and before it goes away. [`DelayedWork`] holds a reference
//! (an [`Arc`]) on its owner for as long as it is queued, so the owner cannot be freed under a
//! pending or running work item, and [`DelayedWork::cancel_sync`] takes the work back.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h).

use crate::bindings;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::{prelude::*, sync::Arc, time::Jiffies, types::Opaque};

/// An owner of a [`DelayedWork`].
pub(crate) trait DelayedWorkItem: Send + Sync + Sized + 'static {
    /// Returns the owner's delayed work.
    fn delayed_work(&self) -> &DelayedWork<Self>;

    /// Runs the work, in process context, on the system workqueue.
    fn run(this: Arc<Self>);
}

/// A `struct delayed_work` that runs [`DelayedWorkItem::run`] of its owner.
///
/// # Invariants
///
/// `dw` is initialised. While the work is queued or running, it owns one reference on the
/// [`Arc`] whose address `owner` holds.
#[pin_data]
pub(crate) struct DelayedWork<T: DelayedWorkItem> {
    #[pin]
    dw: Opaque<bindings::delayed_work>,
    owner: AtomicPtr<T>,
}

// SAFETY: The work item is used through the workqueue API, which synchronises internally.
unsafe impl<T: DelayedWorkItem> Send for DelayedWork<T> {}
// SAFETY: See `Send`.
unsafe impl<T: DelayedWorkItem> Sync for DelayedWork<T> {}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// Creates an initialiser of an idle work item.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            dw <- Opaque::ffi_init(|p: *mut bindings::delayed_work| {
                // SAFETY: `p` is valid for writes and not yet used.
                unsafe { bindings::rvb2_init_delayed_work(p, Some(Self::run_raw)) }
            }),
            owner: AtomicPtr::new(core::ptr::null_mut()),
        })
    }

    /// Queues the work of `this` to run after `delay` jiffies, unless it is already queued.
    ///
    /// Returns whether it was queued by this call.
    pub(crate) fn enqueue(this: &Arc<T>, delay: Jiffies) -> bool {
        let work = this.delayed_work();
        let raw = Arc::into_raw(this.clone());
        work.owner.store(raw.cast_mut(), Ordering::Release);
        // SAFETY: `dw` is initialised (type invariant).
        let queued = unsafe { bindings::rvb2_queue_delayed_work(work.dw.get(), delay) };
        if !queued {
            // SAFETY: The reference leaked above was not handed to the workqueue.
            drop(unsafe { Arc::from_raw(raw) });
        }
        // INVARIANT: When queued, the work owns the reference leaked above.
        queued
    }

    /// Cancels the work and waits for it if it is running. The work does not run after this
    /// returns, unless queued again.
    pub(crate) fn cancel_sync(&self) {
        // SAFETY: `dw` is initialised (type invariant).
        if unsafe { bindings::cancel_delayed_work_sync(self.dw.get()) } {
            let owner = self.owner.load(Ordering::Acquire);
            // SAFETY: The work was pending, so it owned a reference on its owner (type
            // invariant), which it can no longer use.
            drop(unsafe { Arc::from_raw(owner) });
        }
    }

    /// The `work_func_t` of the work item.
    ///
    /// # Safety
    ///
    /// Called by the workqueue only, for a work item initialised by [`DelayedWork::new`].
    unsafe extern "C" fn run_raw(work: *mut bindings::work_struct) {
        // SAFETY: `work` is the `work` member of our `delayed_work`.
        let dw = unsafe { bindings::rvb2_to_delayed_work(work) };
        let dw = Opaque::cast_from(dw).cast_mut();
        // SAFETY: `dw` is the `dw` field of a `DelayedWork<T>`.
        let this = unsafe { &*kernel::container_of!(dw, Self, dw) };
        let owner = this.owner.load(Ordering::Acquire);
        // SAFETY: The work owned one reference on its owner while queued (type invariant); it
        // is handed to `run`.
        T::run(unsafe { Arc::from_raw(owner) });
    }
}
