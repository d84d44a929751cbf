// SPDX-License-Identifier: GPL-2.0

//! What rvb2 needs of the workqueue beyond the 7.2 kernel crate's [`kernel::workqueue`].
//!
//! rvb2's delayed works are the kernel crate's [`DelayedWork`]s, each created with
//! [`new_delayed_work!`], which gives every initialisation site its own lockdep classes (one for
//! the work, one for its timer): the queue's fence work and rvivid's frame work are not one
//! class to lockdep. The 7.2 crate can queue a delayed work but has no way to cancel one, and a
//! driver must stop its frame work in `stop_streaming`, and the queue its fence work before the
//! module goes. This module adds that, in the crate's terms:
//!
//! - [`cancel_delayed_work_sync`] cancels a delayed work whose [`WorkItem::Pointer`] is an
//!   [`Arc`] and gives back the reference the workqueue held while the work was pending.
//! - [`system_percpu`] returns `system_percpu_wq`, the queue `schedule_delayed_work()` uses:
//!   the crate's [`kernel::workqueue::system`] returns `system_wq`, which 7.2 deprecates (it
//!   warns when a work is first queued on it).
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h).
//!
//! [`new_delayed_work!`]: kernel::workqueue::new_delayed_work
//! [`DelayedWork`]: kernel::workqueue::DelayedWork

use kernel::{
    bindings,
    container_of,
    sync::Arc,
    workqueue::{
        HasDelayedWork,
        Queue,
        Work,
        WorkItem, //
    }, //
};

/// Returns the per-CPU system workqueue (`system_percpu_wq`).
///
/// It is the one `schedule[_delayed]_work()` uses; [`kernel::workqueue::system`] returns its
/// deprecated twin `system_wq`.
pub(crate) fn system_percpu() -> &'static Queue {
    // SAFETY: `system_percpu_wq` is a C global, set up at boot before any module loads and never
    // freed.
    unsafe { Queue::from_raw(bindings::system_percpu_wq) }
}

/// Cancels the delayed work `ID` of `this` and waits for it to finish if it is running.
///
/// When this returns, the work is neither pending nor running, and it does not run again unless
/// it is queued again. If it was pending, the reference on `this` that the workqueue held for it
/// is dropped (it is never the last one: `this` holds another).
///
/// As `cancel_delayed_work_sync()`, this must not be called from the work itself, nor with a
/// lock held that the work takes.
pub(crate) fn cancel_delayed_work_sync<T, const ID: u64>(this: &Arc<T>)
where
    T: HasDelayedWork<T, ID> + WorkItem<ID, Pointer = Arc<T>>,
{
    // The pointer `Arc::into_raw` returns for an `Arc` of this allocation, which is what
    // `<Arc<T> as RawWorkItem<ID>>::__enqueue` hands to the workqueue.
    let ptr = Arc::as_ptr(this).cast_mut();

    // SAFETY: `ptr` points at the `T` that `this` keeps alive.
    let work = unsafe { T::raw_get_work(ptr) };
    // SAFETY: `raw_get_work` returned a pointer to the `Work<T, ID>` field of that `T`, so it is
    // valid and aligned.
    let work = unsafe { Work::raw_get(work) };
    // SAFETY: By the safety requirements of `HasDelayedWork`, the `work_struct` that `HasWork`
    // gives is the `work` field of a `delayed_work`, which lives as long as the `T`.
    let dwork = unsafe { container_of!(work, bindings::delayed_work, work) };

    // SAFETY: `dwork` points at a live `delayed_work`: the `DelayedWork<T, ID>` field that
    // `impl_has_delayed_work!` names, which pin-initialisation (`DelayedWork::new`, the only
    // initialiser) set up with the work function `<Arc<T> as WorkItemPointer<ID>>::run`.
    if !unsafe { bindings::cancel_delayed_work_sync(dwork) } {
        return;
    }

    // SAFETY: `cancel_delayed_work_sync()` returned true: the work was pending and this call took
    // it off the workqueue before its function ran, so that function will not run for this
    // queueing. A work of `T` with `WorkItem::Pointer = Arc<T>` is queued only by
    // `<Arc<T> as RawWorkItem<ID>>::__enqueue` (the `Pin<KBox<T>>` and `ARef<T>` implementations
    // need `Pointer = Self`, and this crate implements `RawWorkItem` for no other pointer to
    // one of its types), which gives the workqueue a reference leaked with
    // `Arc::into_raw` when the `queue_work_on` closure returns true, and the work function,
    // `<Arc<T> as WorkItemPointer<ID>>::run`, takes it back with
    // `Arc::from_raw(T::work_container_of(work))`, which is `ptr` by the invariants of `HasWork`.
    // We take that reference back in its place, once: the work is no longer pending. It is not
    // the last reference, since `this` holds another.
    drop(unsafe { Arc::from_raw(ptr) });
}
