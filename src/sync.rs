// SPDX-License-Identifier: GPL-2.0

//! A spinlock that disables local interrupts while held.
//!
//! The 7.2 kernel crate's `SpinLock` does not disable interrupts, so it cannot protect state
//! that is also touched from hard or soft interrupt context. rvb2's buffer states are: a
//! driver may complete a buffer from a timer, and a fence callback may run in any context.
//! This backend plugs `spin_lock_irqsave()` into the kernel crate's generic [`Lock`], so the
//! usual guards and [`kernel::sync::CondVar`] work with it.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h).

use crate::bindings;
use kernel::{ffi::c_ulong, sync::lock::Backend};

/// A spinlock taken with local interrupts disabled.
pub(crate) type IrqSpinLock<T> = kernel::sync::lock::Lock<T, IrqSpinLockBackend>;

/// Creates an [`IrqSpinLock`] initialiser with a lockdep class of its own for this call site.
macro_rules! new_irq_spinlock {
    ($inner:expr, $name:literal) => {
        $crate::sync::IrqSpinLock::new($inner, $name, kernel::static_lock_class!())
    };
}
pub(crate) use new_irq_spinlock;

/// The [`Backend`] of [`IrqSpinLock`]: `spin_lock_irqsave()`/`spin_unlock_irqrestore()`.
pub(crate) struct IrqSpinLockBackend;

// SAFETY: The lock is a `spinlock_t` that `rvb2_spin_lock_init()` initialises; `lock()` only
// returns once it is held and `unlock()` releases it with the flags `lock()` saved, so only one
// guard exists at a time.
unsafe impl Backend for IrqSpinLockBackend {
    type State = kernel::bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut kernel::bindings::lock_class_key,
    ) {
        // SAFETY: The caller passes a valid, unused lock and a static name and key; the casts
        // are between the kernel crate's and our bindings of the same C types.
        unsafe { bindings::rvb2_spin_lock_init(ptr.cast(), name, key.cast()) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The caller passes an initialised lock.
        unsafe { bindings::rvb2_spin_lock_irqsave(ptr.cast()) }
    }

    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        let mut flags = 0;
        // SAFETY: The caller passes an initialised lock; `flags` is valid for writes.
        unsafe { bindings::rvb2_spin_trylock_irqsave(ptr.cast(), &mut flags) }.then_some(flags)
    }

    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        // SAFETY: The caller holds the lock, taken by `lock()` which returned `guard_state`.
        unsafe { bindings::rvb2_spin_unlock_irqrestore(ptr.cast(), *guard_state) }
    }

    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The caller passes an initialised lock.
        unsafe { bindings::rvb2_assert_spin_locked(ptr.cast()) }
    }
}
