// SPDX-License-Identifier: GPL-2.0

//! A registered V4L2 video device node and the ioctl trampolines that reach its driver.

use crate::bindings;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    device,
    error::to_result,
    prelude::*,
    str::CStr,
    types::Opaque,
    ThisModule, //
};

/// The driver side of a video device node.
///
/// The V4L2 core calls these for the ioctls it dispatches with `video_ioctl2()`; an ioctl whose
/// method the driver does not implement is answered with `ENOTTY` by the core.
#[vtable]
pub(crate) trait VideoOps: Send + Sync + Sized + 'static {
    /// `VIDIOC_QUERYCAP`: fills the driver, card and bus names. The core fills the version
    /// and the capabilities from the node's device capabilities.
    fn querycap(&self, cap: &mut Capability) -> Result;
}

/// The argument of `VIDIOC_QUERYCAP`.
#[repr(transparent)]
pub(crate) struct Capability(bindings::v4l2_capability);

/// Copies `src` into a fixed-size C string field, truncating and always NUL-terminating it,
/// as `strscpy()` does.
fn copy_cstr(dst: &mut [u8], src: &CStr) {
    let bytes = src.to_bytes();
    let n = bytes.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&bytes[..n]);
    dst[n..].fill(0);
}

impl Capability {
    /// Sets the driver name.
    pub(crate) fn set_driver(&mut self, name: &CStr) {
        copy_cstr(&mut self.0.driver, name);
    }

    /// Sets the card (device) name.
    pub(crate) fn set_card(&mut self, name: &CStr) {
        copy_cstr(&mut self.0.card, name);
    }

    /// Sets the bus information, e.g. `platform:rvivid-0`.
    pub(crate) fn set_bus_info(&mut self, info: &CStr) {
        copy_cstr(&mut self.0.bus_info, info);
    }
}

/// The C structures of one device node and the driver's data, in one allocation.
///
/// # Invariants
///
/// Once registered, the allocation is owned by the reference count of `v4l2_dev`: it is freed
/// by [`Node::release`] when the last reference goes, which is after the video node's own
/// release (the node holds a reference on `v4l2_dev` for as long as it exists).
#[pin_data]
struct Node<T: VideoOps> {
    #[pin]
    v4l2_dev: Opaque<bindings::v4l2_device>,
    #[pin]
    vdev: Opaque<bindings::video_device>,
    #[pin]
    data: T,
}

impl<T: VideoOps> Node<T> {
    const FOPS: bindings::v4l2_file_operations = bindings::v4l2_file_operations {
        open: Some(bindings::v4l2_fh_open),
        release: Some(bindings::v4l2_fh_release),
        unlocked_ioctl: Some(bindings::video_ioctl2),
        ..pin_init::zeroed()
    };

    const IOCTL_OPS: bindings::v4l2_ioctl_ops = bindings::v4l2_ioctl_ops {
        vidioc_querycap: Some(Self::querycap),
        ..pin_init::zeroed()
    };

    /// Returns the node a file of the video device belongs to.
    ///
    /// # Safety
    ///
    /// `file` must be an open file of a video device registered by [`Registration::new`] with
    /// this `T`.
    unsafe fn from_file<'a>(file: *mut bindings::file) -> &'a Self {
        // SAFETY: `file` is an open file of a registered video device, as the caller promises.
        let vdev = unsafe { bindings::video_devdata(file) };
        let vdev = Opaque::cast_from(vdev).cast_mut();
        // SAFETY: Every video device registered with this `T` is the `vdev` field of a
        // `Node<T>`, which lives as long as the device has open files (type invariant).
        unsafe { &*kernel::container_of!(vdev, Self, vdev) }
    }

    /// `vidioc_querycap` of the ioctl ops.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, with an open file of our node and its ioctl argument.
    unsafe extern "C" fn querycap(
        file: *mut bindings::file,
        _priv: *mut c_void,
        cap: *mut bindings::v4l2_capability,
    ) -> c_int {
        // SAFETY: The V4L2 core calls this for an open file of our node.
        let node = unsafe { Self::from_file(file) };
        // SAFETY: `cap` points to the kernel copy of the ioctl argument, valid and exclusive
        // for the duration of the call; `Capability` is a transparent wrapper around it.
        let cap = unsafe { &mut *cap.cast::<Capability>() };
        match node.data.querycap(cap) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// `release` of the `v4l2_device`: frees the node.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, when the last reference to `v4l2_dev` goes.
    unsafe extern "C" fn release(v4l2_dev: *mut bindings::v4l2_device) {
        let v4l2_dev = Opaque::cast_from(v4l2_dev).cast_mut();
        // SAFETY: `v4l2_dev` is the `v4l2_dev` field of a `Node<T>` leaked by
        // `Registration::new`; this is the last reference to it.
        let node = unsafe { kernel::container_of!(v4l2_dev, Self, v4l2_dev) };
        // SAFETY: The allocation came from `KBox::into_raw` in `Registration::new` and nothing
        // uses it any more (type invariant).
        drop(unsafe { KBox::from_raw(node) });
    }
}

/// A registered video capture node, with its `v4l2_device`.
///
/// Dropping it unregisters both; the driver data `T` lives on until the last open file of the
/// node is closed.
///
/// # Invariants
///
/// `node` points to a registered `Node<T>` on which this registration holds the initial
/// reference of `v4l2_dev`.
pub(crate) struct Registration<T: VideoOps> {
    node: NonNull<Node<T>>,
    _p: PhantomData<T>,
}

// SAFETY: The registration only hands out `&T`, and `T: Send + Sync`; the C structures are
// used under the V4L2 core's own locking.
unsafe impl<T: VideoOps> Send for Registration<T> {}
// SAFETY: See `Send`.
unsafe impl<T: VideoOps> Sync for Registration<T> {}

impl<T: VideoOps> Registration<T> {
    /// Registers a `v4l2_device` on `parent` and a video capture node named `name` on it.
    pub(crate) fn new(
        parent: &device::Device,
        name: &CStr,
        device_caps: u32,
        data: impl PinInit<T, Error>,
        module: &'static ThisModule,
    ) -> Result<Self> {
        let node = KBox::pin_init(
            try_pin_init!(Node::<T> {
                v4l2_dev <- Opaque::ffi_init(|p: *mut bindings::v4l2_device| {
                    // SAFETY: `p` is valid for writes; all-zeroes is a valid `v4l2_device`.
                    unsafe { p.write_bytes(0, 1) };
                }),
                vdev <- Opaque::ffi_init(|p: *mut bindings::video_device| {
                    // SAFETY: `p` is valid for writes; all-zeroes is a valid `video_device`.
                    unsafe { p.write_bytes(0, 1) };
                }),
                data <- data,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The node is not moved out of its allocation: from here on it is handled
        // through a raw pointer and freed by `Node::release` or below.
        let node = KBox::into_raw(unsafe { Pin::into_inner_unchecked(node) });
        // SAFETY: `node` is valid; the fields are not aliased yet.
        let (v4l2_dev, vdev) = unsafe { ((*node).v4l2_dev.get(), (*node).vdev.get()) };

        // `device::Device` is a transparent wrapper around `struct device`; the cast is between
        // the kernel crate's and our bindings of that same C type.
        let parent = core::ptr::from_ref(parent)
            .cast_mut()
            .cast::<bindings::device>();
        // SAFETY: `parent` is a live device, `v4l2_dev` is zeroed.
        let ret = unsafe { bindings::v4l2_device_register(parent, v4l2_dev) };
        if let Err(e) = to_result(ret) {
            // SAFETY: Registration failed, so nothing else refers to the node.
            drop(unsafe { KBox::from_raw(node) });
            return Err(e);
        }
        // SAFETY: `v4l2_dev` is registered; from here it owns the node (type invariant of
        // `Node`). `vdev` is ours to fill until it is registered.
        unsafe {
            (*v4l2_dev).release = Some(Node::<T>::release);
            let v = &mut *vdev;
            copy_cstr(
                core::slice::from_raw_parts_mut(v.name.as_mut_ptr().cast(), v.name.len()),
                name,
            );
            v.v4l2_dev = v4l2_dev;
            v.fops = &Node::<T>::FOPS;
            v.ioctl_ops = &Node::<T>::IOCTL_OPS;
            v.release = Some(bindings::video_device_release_empty);
            v.vfl_dir = bindings::vfl_devnode_direction_VFL_DIR_RX;
            v.device_caps = device_caps;
        }
        // SAFETY: `vdev` is fully set up; `module` is this module, which owns the fops.
        let ret = unsafe {
            bindings::__video_register_device(
                vdev,
                bindings::vfl_devnode_type_VFL_TYPE_VIDEO,
                -1,
                1,
                module.as_ptr().cast(),
            )
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: The node was not registered, so `v4l2_dev` holds the only reference;
            // dropping it frees the node through `Node::release`.
            unsafe {
                bindings::v4l2_device_unregister(v4l2_dev);
                bindings::v4l2_device_put(v4l2_dev);
            }
            return Err(e);
        }
        // INVARIANT: Both are registered and we hold the initial reference.
        Ok(Self {
            // SAFETY: `node` came from `KBox::into_raw`, so it is not null.
            node: unsafe { NonNull::new_unchecked(node) },
            _p: PhantomData,
        })
    }
}

impl<T: VideoOps> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: Both structures are registered and we hold a reference (type invariant); the
        // last `v4l2_device_put()` frees the node, after which it is not touched again.
        unsafe {
            let node = self.node.as_ptr();
            bindings::video_unregister_device((*node).vdev.get());
            let v4l2_dev = (*node).v4l2_dev.get();
            bindings::v4l2_device_unregister(v4l2_dev);
            bindings::v4l2_device_put(v4l2_dev);
        }
    }
}
