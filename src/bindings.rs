// SPDX-License-Identifier: GPL-2.0

//! Bindings that rvb2 generates for itself.
//!
//! The 7.2 `kernel` crate has no V4L2, dma-fence or sync_file abstractions, so the module runs
//! bindgen over `include/rvb2_bindings.h` (see `Kbuild`). Only the abstraction modules of this
//! crate use these items; drivers use the safe types built on top of them.
//!
//! The generated types are distinct from the `kernel::bindings` types of the same C names
//! (`file`, `device`, ...): where a value crosses from one to the other, the abstraction casts
//! the pointer.

#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::ptr_as_ptr,
    clippy::ref_as_ptr,
    clippy::as_underscore,
    clippy::cast_lossless,
    dead_code,
    improper_ctypes,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes
)]

use kernel::ffi;
use pin_init::{MaybeZeroable, Zeroable};

type __kernel_size_t = usize;
type __kernel_ssize_t = isize;
type __kernel_ptrdiff_t = isize;

// SAFETY: `__BindgenBitfieldUnit<Storage>` is a newtype around `Storage`.
unsafe impl<Storage> Zeroable for __BindgenBitfieldUnit<Storage> where Storage: Zeroable {}

include!("bindings_generated.rs");
