// SPDX-License-Identifier: GPL-2.0

//! rvivid: a virtual V4L2 capture device on top of rvb2, a videobuf2-style queue core in Rust.
//!
//! The module holds three layers, kept apart as videobuf2-core, videobuf2-v4l2 and vivid are:
//! the safe abstractions over the C APIs it uses ([`v4l2`]), and the `rvivid` driver, which
//! has no `unsafe` code.

use kernel::prelude::*;

mod bindings;
mod driver;
mod errno;
mod fence;
mod mem;
mod param;
mod queue;
mod sync;
mod time;
mod tpg;
mod v4l2;
mod work;

module! {
    type: driver::RvividModule,
    name: "rvivid",
    authors: ["rvb2 developers"],
    description: "Virtual V4L2 capture device with an explicit-synchronization queue core",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
}
