// SPDX-License-Identifier: GPL-2.0

//! A spinlock that disables local interrupts while held.
//!
//! The 7.2 kernel crate's `SpinLock` does not disable interrupts, so it cannot protect state
//! that is also touched from hard or soft interrupt context. rvb2's buffer states are: a
//! driver may complete a buffer from a timer, and a fence callback may run in any context.
//! This backend plugs an interrupt-disabling spinlock into the kernel crate's generic [`Lock`],
//! so the usual guards and [`kernel::sync::CondVar`] work with it.
//!
//! # Why guards keep no interrupt flags
//!
//! `spin_lock_irqsave()` returns the interrupt state it found, and `spin_unlock_irqrestore()`
//! puts it back: correct only if unlocks come in the reverse order of the locks. A guard is a
//! value a safe caller may drop in any order (`let a = x.lock(); let b = y.lock(); drop(a);`),
//! and with the flags in each guard that order would turn interrupts on while `b` is still
//! held (and a later interrupt handler taking `y` would deadlock on this CPU). So, as the
//! upstream `SpinLockIrq` series does with `local_interrupt_disable()`, the interrupt state is
//! kept per CPU, with a count of the locks held: the first lock disables interrupts and saves
//! their state, the last unlock restores it, whatever the order in between. Interrupts stay
//! disabled while any of these locks is held, so the task cannot migrate and the count and
//! saved state are those of its CPU.
//!
//! This relies on what every spinlock asks anyway: a task does not sleep while it holds one.
//! A task that slept with a guard held (or waited on a [`kernel::sync::CondVar`] of another
//! lock while holding one of these) could move to another CPU and leave both CPUs' counts
//! wrong; nothing in rvb2 does (DQBUF waits on `state` alone), and `CONFIG_DEBUG_ATOMIC_SLEEP`
//! reports it.
//!
//! The lock is a `spinlock_t`; on `PREEMPT_RT`, where that is a sleeping lock, the C helpers do
//! not build (`src/helpers.c` refuses the configuration).
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h).

use crate::bindings;
use kernel::sync::lock::Backend;

/// A spinlock taken with local interrupts disabled; its guards may be dropped in any order.
pub(crate) type IrqSpinLock<T> = kernel::sync::lock::Lock<T, IrqSpinLockBackend>;

/// Creates an [`IrqSpinLock`] initialiser with a lockdep class of its own for this call site.
macro_rules! new_irq_spinlock {
    ($inner:expr, $name:literal) => {
        $crate::sync::IrqSpinLock::new($inner, $name, kernel::static_lock_class!())
    };
}
pub(crate) use new_irq_spinlock;

/// The [`Backend`] of [`IrqSpinLock`]: `spin_lock()`/`spin_unlock()` inside a per-CPU count of
/// interrupt-disabling locks (see the module documentation).
pub(crate) struct IrqSpinLockBackend;

// SAFETY: The lock is a `spinlock_t` that `rvb2_spin_lock_init()` initialises; `lock()` only
// returns once it is held and `unlock()` releases it, so only one guard exists at a time.
// Interrupts are disabled from `lock()` until the last `unlock()` of this CPU's
// interrupt-disabling locks, in whatever order the guards go (`rvb2_irq_spin_lock()` and
// `rvb2_irq_spin_unlock()` count them), so no interrupt handler can spin on a lock its own CPU
// holds.
unsafe impl Backend for IrqSpinLockBackend {
    type State = kernel::bindings::spinlock_t;
    type GuardState = ();

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
        unsafe { bindings::rvb2_irq_spin_lock(ptr.cast()) }
    }

    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        // SAFETY: The caller passes an initialised lock.
        unsafe { bindings::rvb2_irq_spin_trylock(ptr.cast()) }.then_some(())
    }

    unsafe fn unlock(ptr: *mut Self::State, _guard_state: &Self::GuardState) {
        // SAFETY: The caller holds the lock, taken by `lock()` or `try_lock()` on this CPU (the
        // guard is not `Send`, and the task cannot migrate while interrupts are disabled).
        unsafe { bindings::rvb2_irq_spin_unlock(ptr.cast()) }
    }

    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The caller passes an initialised lock.
        unsafe { bindings::rvb2_assert_spin_locked(ptr.cast()) }
    }
}

/// Whether local interrupts are disabled on this CPU (`irqs_disabled()`).
#[cfg_attr(not(CONFIG_KUNIT = "y"), expect(dead_code))]
pub(crate) fn irqs_disabled() -> bool {
    // SAFETY: May be called in any context.
    unsafe { bindings::rvb2_irqs_disabled() }
}
