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
//! - [`mod_delayed_work`] queues a delayed work or moves its timer if it is already pending
//!   (`mod_delayed_work()`): the crate's [`Queue::enqueue_delayed`] leaves a pending work's time
//!   alone, and the queue's deadline work must be able to run earlier than it was armed for.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h).
//!
//! [`new_delayed_work!`]: kernel::workqueue::new_delayed_work
//! [`DelayedWork`]: kernel::workqueue::DelayedWork

use kernel::{
    bindings,
    container_of,
    sync::Arc,
    time::Jiffies,
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
    // `<Arc<T> as RawWorkItem<ID>>::__enqueue` and [`mod_delayed_work`] hand to the workqueue.
    let ptr = Arc::as_ptr(this).cast_mut();
    let dwork = raw_delayed_work::<T, ID>(this);

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
    // `Arc::into_raw` when the `queue_work_on` closure returns true, or by [`mod_delayed_work`],
    // which leaks one the same way unless the work was pending already (and so held one): a
    // pending work holds exactly one such reference. The work function,
    // `<Arc<T> as WorkItemPointer<ID>>::run`, takes it back with
    // `Arc::from_raw(T::work_container_of(work))`, which is `ptr` by the invariants of `HasWork`.
    // We take that reference back in its place, once: the work is no longer pending. It is not
    // the last reference, since `this` holds another.
    drop(unsafe { Arc::from_raw(ptr) });
}

/// The `delayed_work` of the delayed work `ID` of `this`.
fn raw_delayed_work<T, const ID: u64>(this: &Arc<T>) -> *mut bindings::delayed_work
where
    T: HasDelayedWork<T, ID> + WorkItem<ID, Pointer = Arc<T>>,
{
    let ptr = Arc::as_ptr(this).cast_mut();
    // SAFETY: `ptr` points at the `T` that `this` keeps alive.
    let work = unsafe { T::raw_get_work(ptr) };
    // SAFETY: `raw_get_work` returned a pointer to the `Work<T, ID>` field of that `T`, so it is
    // valid and aligned.
    let work = unsafe { Work::raw_get(work) };
    // SAFETY: By the safety requirements of `HasDelayedWork`, the `work_struct` that `HasWork`
    // gives is the `work` field of a `delayed_work`, which lives as long as the `T`.
    unsafe { container_of!(work, bindings::delayed_work, work) }
}

/// Queues the delayed work `ID` of `this` on `queue` to run after `delay`, or, if it is already
/// pending, moves its timer to that time (`mod_delayed_work()`): earlier or later.
///
/// It does not sleep and may be called in any context, with any lock held (it takes the
/// workqueue's and the timer's raw spinlocks, with interrupts disabled).
///
/// It must not race with [`cancel_delayed_work_sync`] of the same work: while a cancel runs,
/// the work is disabled and `mod_delayed_work_on()` queues nothing, so the reference this
/// function hands over would leak (never freed; not unsound). rvb2 arms its works only while
/// the queue is in use, and cancels them only when it is not.
pub(crate) fn mod_delayed_work<T, const ID: u64>(queue: &Queue, this: &Arc<T>, delay: Jiffies)
where
    T: HasDelayedWork<T, ID> + WorkItem<ID, Pointer = Arc<T>>,
{
    let dwork = raw_delayed_work::<T, ID>(this);
    // The reference the workqueue holds while the work is pending, which the work function takes
    // back (see below). Leaked first: once queued, the work may run at once.
    let ptr = Arc::into_raw(this.clone()).cast_mut();
    // `Queue` is a `#[repr(transparent)]` wrapper of an `Opaque<workqueue_struct>`, itself a
    // transparent wrapper: `Queue::from_raw` makes the reverse cast.
    let wq = core::ptr::from_ref(queue)
        .cast::<bindings::workqueue_struct>()
        .cast_mut();
    // SAFETY: `wq` is the live workqueue `queue` wraps; `dwork` points at a live `delayed_work`,
    // initialised by `DelayedWork::new` with the work function `<Arc<T> as
    // WorkItemPointer<ID>>::run`, which lives as long as `this`'s allocation, kept alive by the
    // reference leaked above until the work function runs.
    let was_pending = unsafe {
        bindings::mod_delayed_work_on(
            bindings::wq_misc_consts_WORK_CPU_UNBOUND as kernel::ffi::c_int,
            wq,
            dwork,
            delay,
        )
    };
    if was_pending {
        // SAFETY: The work was already pending, so the workqueue already held the reference its
        // one run takes back (`<Arc<T> as RawWorkItem<ID>>::__enqueue` leaked it, or an earlier
        // call of this function); this call only moved its timer, and the work is still queued
        // once. The reference leaked above is not needed: take it back, once. It is not the last
        // one: `this` holds another.
        drop(unsafe { Arc::from_raw(ptr) });
    }
}
