// SPDX-License-Identifier: GPL-2.0

//! Module parameters that root can read and change at run time, in
//! `/sys/module/rvivid/parameters/`.
//!
//! The 7.2 kernel crate's `module!` parameters are set once, at load, and do not appear in sysfs
//! (`rust/kernel/module_param.rs`: `perm: 0`, a `SetOnce` value). rvb2's bounds (on fences, on a
//! queue's memory) must be readable, and adjustable while the module is loaded, so this module
//! declares its parameters as
//! `module_param_cb()` does in C: a `struct kernel_param` in the module's `__param` section, with
//! `perm` 0644, and `set`/`get` operations of its own that keep the value in an atomic, parse it
//! with `kstrtouint()` and refuse values out of range (`-EINVAL`, as
//! `param_set_uint_minmax()`). `modinfo` describes it (`parm`, `parmtype`).
//!
//! The module loader applies `insmod rvivid.ko fence_timeout_ms=N`; sysfs writes go through
//! `param_attr_store()`, which holds `kernel_param_lock()` around `set`. Readers in the module
//! just load the atomic: a value is only ever replaced whole.
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h).

use kernel::{
    bindings,
    module_param::KernelParam,
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    }, //
};

/// An `unsigned int` module parameter with a range.
///
/// # Invariants
///
/// `min <= value <= max` (`value` starts at a default in range, and `set` stores only values in
/// range).
pub(crate) struct UintParam {
    value: Atomic<u32>,
    min: u32,
    max: u32,
}

impl UintParam {
    /// A parameter worth `default` until set, which accepts `min..=max`.
    const fn new(default: u32, min: u32, max: u32) -> Self {
        assert!(min <= default && default <= max);
        // INVARIANT: Checked above (at compile time: this is only used to initialise statics).
        Self {
            value: Atomic::new(default),
            min,
            max,
        }
    }

    /// The current value.
    pub(crate) fn get(&self) -> u32 {
        self.value.load(Relaxed)
    }

    /// Sets the value, as a write to the sysfs file does (`EINVAL` out of range).
    pub(crate) fn set(&self, value: u32) -> Result {
        if value < self.min || value > self.max {
            return Err(EINVAL);
        }
        // INVARIANT: `value` is in range.
        self.value.store(value, Relaxed);
        Ok(())
    }
}

/// `kernel_param_ops::set` of a [`UintParam`]: parses `val` (decimal, octal with `0`, hex with
/// `0x`; a trailing newline is allowed) and stores it if it is in range.
///
/// # Safety
///
/// `kp` points to a `kernel_param` whose `arg` is a `&'static UintParam` (as [`uint_param!`]
/// declares it); `val` is null or a NUL-terminated string valid for the call.
unsafe extern "C" fn set_uint(val: *const c_char, kp: *const bindings::kernel_param) -> c_int {
    if val.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: The caller passes a `kernel_param` whose `arg` is a `UintParam` that lives forever.
    let param = unsafe { &*(*kp).__bindgen_anon_1.arg.cast::<UintParam>() };
    let mut value = 0;
    // SAFETY: `val` is a NUL-terminated string (caller's promise) and `value` is valid for writes.
    let ret = unsafe { bindings::kstrtouint(val, 0, &mut value) };
    if ret != 0 {
        return ret;
    }
    match param.set(value) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// A `core::fmt::Write` sink into a byte buffer, which truncates.
struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `kernel_param_ops::get` of a [`UintParam`]: writes the value and a newline, as
/// `param_get_uint()` does.
///
/// # Safety
///
/// `kp` points to a `kernel_param` whose `arg` is a `&'static UintParam`; `buffer` is valid for
/// writes of `PAGE_SIZE` bytes (sysfs gives a page).
unsafe extern "C" fn get_uint(buffer: *mut c_char, kp: *const bindings::kernel_param) -> c_int {
    // SAFETY: The caller passes a `kernel_param` whose `arg` is a `UintParam` that lives forever.
    let param = unsafe { &*(*kp).__bindgen_anon_1.arg.cast::<UintParam>() };
    // Twelve bytes hold any `u32` and a newline; sysfs gives a whole page.
    // SAFETY: `buffer` is valid for writes of `PAGE_SIZE` bytes (caller's promise), and nothing
    // else accesses it during the call.
    let buf = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), 12) };
    let mut w = ByteWriter { buf, len: 0 };
    let _ = core::fmt::write(&mut w, format_args!("{}\n", param.get()));
    w.len as c_int
}

/// The operations of every [`UintParam`].
static UINT_PARAM_OPS: bindings::kernel_param_ops = bindings::kernel_param_ops {
    flags: 0,
    set: Some(set_uint),
    get: Some(get_uint),
    free: None,
};

/// Copies a string into a byte array of exactly its length (for `.modinfo` entries).
const fn modinfo<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Declares `$static`, a [`UintParam`] named `$name` in sysfs and on the `insmod` command line,
/// with its `modinfo` description.
macro_rules! uint_param {
    (
        $(#[$attr:meta])*
        $static:ident: $name:literal,
        default: $default:expr,
        min: $min:expr,
        max: $max:expr,
        description: $desc:literal $(,)?
    ) => {
        $(#[$attr])*
        pub(crate) static $static: UintParam = UintParam::new($default, $min, $max);

        const _: () = {
            #[link_section = "__param"]
            #[used(compiler)]
            static PARAM: KernelParam = KernelParam::new(bindings::kernel_param {
                name: kernel::str::as_char_ptr_in_const_context(kernel::c_str!($name)),
                // The module's `struct module`, set up by the module loader; it outlives the
                // parameter's sysfs entry.
                mod_: &raw mut bindings::__this_module,
                ops: &UINT_PARAM_OPS,
                // Readable by all, writable by root.
                perm: 0o644,
                level: -1,
                flags: 0,
                __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                    arg: core::ptr::from_ref(&$static).cast_mut().cast(),
                },
            });

            const PARMTYPE: &str = concat!("parmtype=", $name, ":uint\0");
            const PARM: &str = concat!("parm=", $name, ":", $desc, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO_PARMTYPE: [u8; PARMTYPE.len()] = modinfo(PARMTYPE);
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO_PARM: [u8; PARM.len()] = modinfo(PARM);
        };
    };
}

uint_param! {
    /// `fence_timeout_ms`: every buffer queued with a fence is completed within this many
    /// milliseconds of its `VIDIOC_QBUF`, its out-fence signalled (see
    /// [`crate::queue::QueueOps::fence_timeout_ms`] and `Documentation/dma-fence-rules.rst`).
    FENCE_TIMEOUT_MS: "fence_timeout_ms",
    default: crate::queue::FENCE_TIMEOUT_DEFAULT_MS,
    min: crate::queue::FENCE_TIMEOUT_MIN_MS,
    max: crate::queue::FENCE_TIMEOUT_MAX_MS,
    description: "Bound on fenced buffers, from QBUF to completion, in ms (1..60000, default 5000)",
}

uint_param! {
    /// `max_queue_mem_mb`: the most MMAP memory one queue may hold, orphans included, in MiB
    /// (see [`crate::queue::QueueOps::max_memory`]). Taking effect at the next allocation.
    MAX_QUEUE_MEM_MB: "max_queue_mem_mb",
    default: crate::queue::MAX_MEMORY_DEFAULT_MB,
    min: 1,
    max: crate::queue::MAX_MEMORY_MAX_MB,
    description: "Bound on the buffer memory of one queue, orphans included, in MiB (1..4096, default 256)",
}
