// SPDX-License-Identifier: GPL-2.0

//! A registered V4L2 video capture node: its `v4l2_device`, `video_device`, control handler,
//! file operations and the ioctl trampolines that reach the driver and the queue.

use super::{
    buffer,
    types::*, //
};
use crate::{
    bindings,
    queue::{
        FileId,
        Queue,
        QueueOps, //
    },
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};
use kernel::{
    container_of, device,
    error::{
        to_result,
        VTABLE_DEFAULT_ERROR, //
    },
    fs::{
        file::flags::O_NONBLOCK,
        File, //
    },
    mm::virt::VmaNew,
    prelude::*,
    str::CStr,
    sync::{
        poll::PollTable,
        Arc, //
    },
    types::Opaque,
    uaccess::UserPtr,
    ThisModule,
};

/// The driver side of a video capture node.
///
/// The V4L2 core calls these for the ioctls it dispatches with `video_ioctl2()`, after its
/// own checks (argument copying, buffer type against the node's capabilities, priority).
/// The buffer ioctls go to the driver's queue, [`VideoOps::queue`], through the V4L2 shim.
///
/// Only [`VideoOps::queue`] and [`VideoOps::querycap`] are required. The node's
/// `v4l2_ioctl_ops` has an entry for an optional operation only if the driver implements it
/// (the `HAS_*` constants `#[vtable]` generates), so that the V4L2 core answers `ENOTTY` for
/// the others, as it does for a C driver that leaves them `NULL`. The format operations are
/// those of a single-planar capture node (`vidioc_*_fmt_vid_cap`).
#[vtable]
pub(crate) trait VideoOps: Send + Sync + Sized + 'static {
    /// The driver side of the node's buffer queue.
    type Queue: QueueOps;

    /// The node's buffer queue.
    fn queue(&self) -> &Arc<Queue<Self::Queue>>;

    /// `VIDIOC_QUERYCAP`: fills the driver, card and bus names.
    fn querycap(&self, cap: &mut Capability) -> Result;

    /// `VIDIOC_ENUM_FMT`: the pixel format at `index` (the core adds its description).
    fn enum_fmt(&self, _index: u32) -> Result<FourCc> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_G_FMT`.
    fn g_fmt(&self) -> PixFormat {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_TRY_FMT`: adjusts `f` to what the device can do.
    fn try_fmt(&self, _f: &mut PixFormat) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_S_FMT`: adjusts `f` and makes it current.
    fn s_fmt(&self, _f: &mut PixFormat) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_ENUM_FRAMESIZES`.
    fn enum_framesizes(&self, _index: u32, _pixelformat: FourCc) -> Result<FrameSizes> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_ENUM_FRAMEINTERVALS`: the discrete interval at `index`.
    fn enum_frameintervals(
        &self,
        _index: u32,
        _pixelformat: FourCc,
        _width: u32,
        _height: u32,
    ) -> Result<Fract> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_G_PARM`: the time per frame.
    fn g_parm(&self) -> Fract {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_S_PARM`: sets the time per frame nearest to `timeperframe`; returns it. A
    /// driver may refuse a change it cannot make now (e.g. `EBUSY` while streaming).
    fn s_parm(&self, _timeperframe: Fract) -> Result<Fract> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_ENUMINPUT`.
    fn enum_input(&self, _index: u32) -> Result<Input> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_G_INPUT`.
    fn g_input(&self) -> u32 {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `VIDIOC_S_INPUT`.
    fn s_input(&self, _index: u32) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// The controls the node offers, created at registration. A node without it has no
    /// control handler, and no control or event ioctl.
    fn controls(&self) -> &'static [Control] {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Sets control `id` to `value` (called by the control framework with its lock held).
    fn s_ctrl(&self, _id: ControlId, _value: i32) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// An open file of a video node: the V4L2 core's per-file state (`struct v4l2_fh`: priority,
/// events) and the file's identity as a user of the node's queue.
///
/// It is created by the node's `open()` and freed by its `release()`; every ioctl and file
/// operation in between gets it from the file's private data.
///
/// # Invariants
///
/// `fh` was initialised by `v4l2_fh_init()` for a node registered with this `T`, and added to
/// its file by `v4l2_fh_add()` (which points the file's private data at it).
#[pin_data]
pub(crate) struct OpenFile<T: VideoOps> {
    #[pin]
    fh: Opaque<bindings::v4l2_fh>,
    id: FileId,
    _t: PhantomData<T>,
}

impl<T: VideoOps> OpenFile<T> {
    /// The file's identity as a user of the node's queue.
    pub(crate) fn id(&self) -> FileId {
        self.id
    }

    /// The number of buffers `read()` uses on the file's node (`readbuffers` of
    /// `VIDIOC_G_PARM`): those of the queue's read I/O if the node offers `read()`
    /// (`V4L2_CAP_READWRITE`), else 0.
    fn readbuffers(&self) -> u32 {
        // SAFETY: `fh` was initialised for our live node (type invariant), which its `vdev`
        // points to while the file is open; `device_caps` never changes after registration.
        let caps = unsafe { (*(*self.fh.get()).vdev).device_caps };
        if caps & bindings::V4L2_CAP_READWRITE != 0 {
            Queue::<T::Queue>::read_buffers()
        } else {
            0
        }
    }

    /// Returns the open file object of `file`.
    ///
    /// # Safety
    ///
    /// `file` must be a file opened by [`Node::open_file`] of a node of this `T` and not yet
    /// released, and stay so for `'a`.
    unsafe fn from_file<'a>(file: *mut bindings::file) -> &'a Self {
        // SAFETY: As the caller promises; the object lives until `release()` frees it, after
        // the file's last operation.
        unsafe { &*Self::as_ptr(file) }
    }

    /// Returns a pointer to the open file object of `file`.
    ///
    /// # Safety
    ///
    /// `file` must be a file opened by [`Node::open_file`] of a node of this `T` and not yet
    /// released.
    unsafe fn as_ptr(file: *mut bindings::file) -> *mut Self {
        // SAFETY: The file is open, so `v4l2_fh_add()` pointed its private data at our `fh`
        // (type invariant), and only `release()` changes it.
        let fh = unsafe { (*file).private_data }.cast::<bindings::v4l2_fh>();
        let fh = Opaque::cast_from(fh).cast_mut();
        // SAFETY: `fh` is the `fh` field of an `OpenFile<T>` (see above).
        unsafe { container_of!(fh, Self, fh) }
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
    ctrls: Opaque<bindings::v4l2_ctrl_handler>,
    /// The menu entries of menu controls, which the control framework points into.
    menus: KVec<*const c_char>,
    #[pin]
    data: T,
}

/// Converts a driver result to the return value of a C callback.
fn ret(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

impl<T: VideoOps> Node<T> {
    const FOPS: bindings::v4l2_file_operations = bindings::v4l2_file_operations {
        open: Some(Self::open_file),
        release: Some(Self::release_file),
        read: Some(Self::read),
        poll: Some(Self::poll),
        mmap: Some(Self::mmap),
        unlocked_ioctl: Some(bindings::video_ioctl2),
        ..pin_init::zeroed()
    };

    const IOCTL_OPS: bindings::v4l2_ioctl_ops = bindings::v4l2_ioctl_ops {
        vidioc_querycap: Some(Self::querycap),
        vidioc_enum_fmt_vid_cap: if T::HAS_ENUM_FMT {
            Some(Self::enum_fmt)
        } else {
            None
        },
        vidioc_g_fmt_vid_cap: if T::HAS_G_FMT {
            Some(Self::g_fmt)
        } else {
            None
        },
        vidioc_s_fmt_vid_cap: if T::HAS_S_FMT {
            Some(Self::s_fmt)
        } else {
            None
        },
        vidioc_try_fmt_vid_cap: if T::HAS_TRY_FMT {
            Some(Self::try_fmt)
        } else {
            None
        },
        vidioc_enum_framesizes: if T::HAS_ENUM_FRAMESIZES {
            Some(Self::enum_framesizes)
        } else {
            None
        },
        vidioc_enum_frameintervals: if T::HAS_ENUM_FRAMEINTERVALS {
            Some(Self::enum_frameintervals)
        } else {
            None
        },
        vidioc_g_parm: if T::HAS_G_PARM {
            Some(Self::g_parm)
        } else {
            None
        },
        vidioc_s_parm: if T::HAS_S_PARM {
            Some(Self::s_parm)
        } else {
            None
        },
        vidioc_enum_input: if T::HAS_ENUM_INPUT {
            Some(Self::enum_input)
        } else {
            None
        },
        vidioc_g_input: if T::HAS_G_INPUT {
            Some(Self::g_input)
        } else {
            None
        },
        vidioc_s_input: if T::HAS_S_INPUT {
            Some(Self::s_input)
        } else {
            None
        },
        vidioc_reqbufs: Some(Self::reqbufs),
        vidioc_create_bufs: Some(Self::create_bufs),
        vidioc_querybuf: Some(Self::querybuf),
        vidioc_prepare_buf: Some(Self::prepare_buf),
        vidioc_qbuf: Some(Self::qbuf),
        vidioc_dqbuf: Some(Self::dqbuf),
        vidioc_streamon: Some(Self::streamon),
        vidioc_streamoff: Some(Self::streamoff),
        vidioc_remove_bufs: Some(Self::remove_bufs),
        vidioc_expbuf: Some(Self::expbuf),
        // The control ioctls (`VIDIOC_QUERYCTRL`...) need no entry: the V4L2 core handles them
        // with the node's control handler, which only a node with controls has.
        vidioc_log_status: if T::HAS_CONTROLS {
            Some(bindings::v4l2_ctrl_log_status)
        } else {
            None
        },
        vidioc_subscribe_event: if T::HAS_CONTROLS {
            Some(bindings::v4l2_ctrl_subscribe_event)
        } else {
            None
        },
        vidioc_unsubscribe_event: if T::HAS_CONTROLS {
            Some(bindings::v4l2_event_unsubscribe)
        } else {
            None
        },
        ..pin_init::zeroed()
    };

    const CTRL_OPS: bindings::v4l2_ctrl_ops = bindings::v4l2_ctrl_ops {
        s_ctrl: if T::HAS_S_CTRL {
            Some(Self::s_ctrl)
        } else {
            None
        },
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
        unsafe { &*container_of!(vdev, Self, vdev) }
    }

    /// Runs `f` on the driver data of `file`'s node and the file's open file object.
    ///
    /// # Safety
    ///
    /// `file` must be an open file of our node, opened by [`Node::open_file`], for the duration
    /// of the call.
    unsafe fn call(file: *mut bindings::file, f: impl FnOnce(&T, &OpenFile<T>) -> Result) -> c_int {
        // SAFETY: As promised by the caller.
        let (node, open) = unsafe { (Self::from_file(file), OpenFile::from_file(file)) };
        ret(f(&node.data, open))
    }

    /// `open` of the file operations: creates the file's [`OpenFile`], as `v4l2_fh_open()`
    /// does its `struct v4l2_fh`.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, for a file being opened on our node.
    unsafe extern "C" fn open_file(file: *mut bindings::file) -> c_int {
        // SAFETY: `file` is being opened on our node, which the V4L2 core keeps registered and
        // alive for the call.
        let vdev = unsafe { bindings::video_devdata(file) };
        let open = KBox::pin_init(
            pin_init!(OpenFile::<T> {
                fh <- Opaque::ffi_init(move |fh: *mut bindings::v4l2_fh| {
                    // SAFETY: `fh` is valid for writes and all-zeroes is what `v4l2_fh_init()`
                    // expects (`v4l2_fh_open()` allocates it zeroed); `vdev` is our live node.
                    unsafe {
                        fh.write_bytes(0, 1);
                        bindings::v4l2_fh_init(fh, vdev);
                    }
                }),
                id: FileId::new(),
                _t: PhantomData,
            }),
            GFP_KERNEL,
        );
        let open = match open {
            Ok(open) => open,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: The object is not moved out of its allocation: `release_file()` frees it
        // through the pointer.
        let open = KBox::into_raw(unsafe { Pin::into_inner_unchecked(open) });
        // INVARIANT: `fh` is initialised for our node and added to `file` here, which points
        // the file's private data at it.
        // SAFETY: `open` is valid and `fh` initialised; `file` is being opened.
        unsafe { bindings::v4l2_fh_add((*open).fh.get(), file) };
        0
    }

    /// `release` of the file operations: the queue's owner gives it up, as in
    /// `vb2_fop_release()`, and the file's [`OpenFile`] goes, as in `v4l2_fh_release()`.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, for an open file of our node.
    unsafe extern "C" fn release_file(file: *mut bindings::file) -> c_int {
        // SAFETY: `file` is an open file of our node, opened by `open_file()`.
        let (node, open) = unsafe { (Self::from_file(file), OpenFile::<T>::as_ptr(file)) };
        // SAFETY: `open` is valid until it is freed below.
        let (id, fh) = unsafe { ((*open).id, (*open).fh.get()) };
        node.data.queue().release(id);
        // SAFETY: `fh` was initialised and added to `file` by `open_file()`. This is the file's
        // last operation: nothing uses the object after it, which came from `KBox::into_raw()`
        // there.
        unsafe {
            bindings::v4l2_fh_del(fh, file);
            bindings::v4l2_fh_exit(fh);
            drop(KBox::from_raw(open));
        }
        0
    }

    /// `poll` of the file operations: queue events and control events.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, for an open file of our node.
    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        wait: *mut bindings::poll_table_struct,
    ) -> bindings::__poll_t {
        // SAFETY: `file` is an open file of our node.
        let node = unsafe { Self::from_file(file) };
        let requested = if wait.is_null() {
            !0
        } else {
            // SAFETY: A non-null `wait` is a valid poll table (`poll_requested_events()`).
            unsafe { (*wait)._key }
        };
        // SAFETY: The V4L2 core passes a live file and poll table for the duration of the
        // call; the casts are between two bindings of the same C types.
        let (f, table) = unsafe {
            (
                File::from_raw_file(file.cast()),
                PollTable::from_raw(wait.cast()),
            )
        };
        // SAFETY: `file` is an open file of our node, opened by `open_file()`.
        let open = unsafe { OpenFile::<T>::from_file(file) };
        let mask = Queue::poll(
            node.data.queue(),
            open.id(),
            node.reads(),
            f,
            &table,
            requested,
        );
        // SAFETY: `file` was opened by `open_file()`, so its private data is a `v4l2_fh`; this
        // adds its events (EPOLLPRI).
        mask | unsafe { bindings::v4l2_ctrl_poll(file, wait) }
    }

    /// Whether the node offers `read()` I/O (`V4L2_CAP_READWRITE` in its capabilities).
    fn reads(&self) -> bool {
        // SAFETY: `device_caps` is set before the node is registered and never changed after.
        let caps = unsafe { (*self.vdev.get()).device_caps };
        caps & bindings::V4L2_CAP_READWRITE != 0
    }

    /// `read` of the file operations: read I/O on the node's queue (`vb2_fop_read()`), for a
    /// node that offers it (`EINVAL` otherwise, as the V4L2 core answers a node without
    /// `read`).
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, for an open file of our node, with a user buffer of `len`
    /// bytes.
    unsafe extern "C" fn read(
        file: *mut bindings::file,
        buf: *mut c_char,
        len: usize,
        _ppos: *mut bindings::loff_t,
    ) -> isize {
        // SAFETY: `file` is an open file of our node, opened by `open_file()`.
        let (node, open) = unsafe { (Self::from_file(file), OpenFile::<T>::from_file(file)) };
        if !node.reads() {
            return EINVAL.to_errno() as isize;
        }
        // SAFETY: The V4L2 core passes a live file; the cast is between two bindings of
        // `struct file`.
        let nonblocking = unsafe { File::from_raw_file(file.cast()) }.flags() & O_NONBLOCK != 0;
        let dst = UserPtr::from_ptr(buf.cast());
        // A read never returns more than `isize::MAX` bytes.
        let len = len.min(isize::MAX as usize);
        let r = Queue::read(
            node.data.queue(),
            open.id(),
            nonblocking,
            len,
            |mem, offset, count| mem.copy_to_user(offset, count, dst),
        );
        match r {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// `mmap` of the file operations.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, for an open file of our node and a new VMA.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: `file` is an open file of our node.
        let node = unsafe { Self::from_file(file) };
        // SAFETY: `vma` is the new VMA of this `mmap()` call; the cast is between two bindings
        // of `struct vm_area_struct`.
        let (pgoff, vma) = unsafe {
            (
                bindings::rvb2_vma_pgoff(vma) as usize,
                VmaNew::from_raw(vma.cast()),
            )
        };
        ret(node.data.queue().mmap(pgoff, vma))
    }
}

/// Lets `op` adjust the single-planar format of a `VIDIOC_TRY_FMT`/`VIDIOC_S_FMT` argument.
fn update_pix(a: &mut bindings::v4l2_format, op: impl FnOnce(&mut PixFormat) -> Result) -> Result {
    // SAFETY: The core checked that the type is a video capture one, whose member of the
    // union is `pix`; every bit pattern is a valid `v4l2_pix_format`.
    let pix = unsafe { &mut a.fmt.pix };
    let mut f = PixFormat::from_raw(pix);
    op(&mut f)?;
    f.to_raw(pix);
    Ok(())
}

/// Fills the capture parameters of a `VIDIOC_G_PARM`/`VIDIOC_S_PARM` argument.
fn set_parm(a: &mut bindings::v4l2_streamparm, tpf: Fract, readbuffers: u32) {
    a.parm.capture = bindings::v4l2_captureparm {
        capability: bindings::V4L2_CAP_TIMEPERFRAME,
        readbuffers,
        timeperframe: bindings::v4l2_fract {
            numerator: tpf.numerator,
            denominator: tpf.denominator,
        },
        ..Default::default()
    };
}

/// Declares ioctl trampolines: `name(arg type) |data, open file, arg| body`.
///
/// Each is an `unsafe extern "C" fn(file, priv, arg) -> c_int` for `v4l2_ioctl_ops`, called
/// by the V4L2 core only, for an open file of our node and with its kernel copy of the ioctl
/// argument, valid and exclusive for the duration of the call.
macro_rules! ioctls {
    ($($name:ident($arg:ty) |$d:ident, $f:ident, $a:ident| $body:block)*) => {
        impl<T: VideoOps> Node<T> {
            $(
                /// An ioctl trampoline; see [`ioctls`].
                ///
                /// # Safety
                ///
                /// Called by the V4L2 core only, with an open file of our node and its ioctl
                /// argument.
                unsafe extern "C" fn $name(
                    file: *mut bindings::file,
                    _priv: *mut c_void,
                    arg: *mut $arg,
                ) -> c_int {
                    fn body<T: VideoOps>(
                        $d: &T,
                        $f: &OpenFile<T>,
                        $a: &mut $arg,
                    ) -> Result $body

                    // SAFETY: The V4L2 core passes its own copy of the argument, valid and
                    // exclusive for this call.
                    let arg = unsafe { &mut *arg };
                    // SAFETY: `file` is an open file of our node.
                    unsafe { Self::call(file, |d, f| body(d, f, arg)) }
                }
            )*
        }
    };
}

ioctls! {
    querycap(bindings::v4l2_capability) |d, _f, a| {
        // SAFETY: `Capability` is a transparent wrapper around `v4l2_capability`.
        d.querycap(unsafe { &mut *core::ptr::from_mut(a).cast::<Capability>() })
    }
    enum_fmt(bindings::v4l2_fmtdesc) |d, _f, a| {
        a.pixelformat = d.enum_fmt(a.index)?.as_raw();
        a.flags = 0;
        Ok(())
    }
    g_fmt(bindings::v4l2_format) |d, _f, a| {
        // SAFETY: The core checked the type is a video capture one, whose member is `pix`.
        d.g_fmt().to_raw(unsafe { &mut a.fmt.pix });
        Ok(())
    }
    try_fmt(bindings::v4l2_format) |d, _f, a| {
        update_pix(a, |f| d.try_fmt(f))
    }
    s_fmt(bindings::v4l2_format) |d, _f, a| {
        update_pix(a, |f| d.s_fmt(f))
    }
    enum_framesizes(bindings::v4l2_frmsizeenum) |d, _f, a| {
        match d.enum_framesizes(a.index, FourCc::from_raw(a.pixel_format))? {
            FrameSizes::Stepwise { min_width, max_width, step_width, min_height, max_height, step_height } => {
                a.type_ = bindings::v4l2_frmsizetypes_V4L2_FRMSIZE_TYPE_STEPWISE;
                a.__bindgen_anon_1.stepwise = bindings::v4l2_frmsize_stepwise {
                    min_width, max_width, step_width, min_height, max_height, step_height,
                };
            }
        }
        a.reserved = [0; 2];
        Ok(())
    }
    enum_frameintervals(bindings::v4l2_frmivalenum) |d, _f, a| {
        let pixelformat = FourCc::from_raw(a.pixel_format);
        let ival = d.enum_frameintervals(a.index, pixelformat, a.width, a.height)?;
        a.type_ = bindings::v4l2_frmivaltypes_V4L2_FRMIVAL_TYPE_DISCRETE;
        a.__bindgen_anon_1.discrete = bindings::v4l2_fract {
            numerator: ival.numerator,
            denominator: ival.denominator,
        };
        a.reserved = [0; 2];
        Ok(())
    }
    g_parm(bindings::v4l2_streamparm) |d, f, a| {
        if a.type_ != bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE {
            return Err(EINVAL);
        }
        set_parm(a, d.g_parm(), f.readbuffers());
        Ok(())
    }
    s_parm(bindings::v4l2_streamparm) |d, f, a| {
        if a.type_ != bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE {
            return Err(EINVAL);
        }
        // SAFETY: The type is video capture, whose member is `capture`.
        let want = unsafe { a.parm.capture.timeperframe };
        let tpf = d.s_parm(Fract {
            numerator: want.numerator,
            denominator: want.denominator,
        })?;
        set_parm(a, tpf, f.readbuffers());
        Ok(())
    }
    enum_input(bindings::v4l2_input) |d, _f, a| {
        let input = d.enum_input(a.index)?;
        let index = a.index;
        *a = bindings::v4l2_input { index, type_: input.kind, ..Default::default() };
        copy_cstr(&mut a.name, input.name);
        Ok(())
    }
    g_input(c_uint) |d, _f, a| {
        *a = d.g_input();
        Ok(())
    }
    reqbufs(bindings::v4l2_requestbuffers) |d, f, a| {
        buffer::reqbufs(d.queue(), f.id(), a)
    }
    create_bufs(bindings::v4l2_create_buffers) |d, f, a| {
        buffer::create_bufs(d.queue(), f.id(), a)
    }
    querybuf(bindings::v4l2_buffer) |d, _f, a| {
        buffer::querybuf(d.queue(), a)
    }
    prepare_buf(bindings::v4l2_buffer) |d, f, a| {
        buffer::prepare_buf(d.queue(), f.id(), a)
    }
    qbuf(bindings::v4l2_buffer) |d, f, a| {
        buffer::qbuf(d.queue(), f.id(), a)
    }
    remove_bufs(bindings::v4l2_remove_buffers) |d, f, a| {
        buffer::remove_bufs(d.queue(), f.id(), a)
    }
    expbuf(bindings::v4l2_exportbuffer) |d, f, a| {
        buffer::expbuf(d.queue(), f.id(), a)
    }
}

impl<T: VideoOps> Node<T> {
    /// `vidioc_dqbuf`.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, with an open file of our node and its ioctl argument.
    unsafe extern "C" fn dqbuf(
        file: *mut bindings::file,
        _priv: *mut c_void,
        arg: *mut bindings::v4l2_buffer,
    ) -> c_int {
        // SAFETY: `file` is a live file for the duration of the call, with no `fdget_pos()`
        // region on this thread (an ioctl); the cast is between two bindings of `struct file`.
        let nonblocking = unsafe { File::from_raw_file(file.cast()) }.flags() & O_NONBLOCK != 0;
        // SAFETY: The V4L2 core passes its own copy of the argument.
        let b = unsafe { &mut *arg };
        // SAFETY: `file` is an open file of our node.
        unsafe {
            Self::call(file, |d, f| {
                buffer::dqbuf(d.queue(), f.id(), nonblocking, b)
            })
        }
    }

    /// `vidioc_s_input`.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, with an open file of our node.
    unsafe extern "C" fn s_input(
        file: *mut bindings::file,
        _priv: *mut c_void,
        index: c_uint,
    ) -> c_int {
        // SAFETY: `file` is an open file of our node.
        unsafe { Self::call(file, |d, _| d.s_input(index)) }
    }

    /// `vidioc_streamon`.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, with an open file of our node.
    unsafe extern "C" fn streamon(
        file: *mut bindings::file,
        _priv: *mut c_void,
        kind: bindings::v4l2_buf_type,
    ) -> c_int {
        // SAFETY: `file` is an open file of our node.
        unsafe { Self::call(file, |d, f| buffer::streamon(d.queue(), f.id(), kind)) }
    }

    /// `vidioc_streamoff`.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only, with an open file of our node.
    unsafe extern "C" fn streamoff(
        file: *mut bindings::file,
        _priv: *mut c_void,
        kind: bindings::v4l2_buf_type,
    ) -> c_int {
        // SAFETY: `file` is an open file of our node.
        unsafe { Self::call(file, |d, f| buffer::streamoff(d.queue(), f.id(), kind)) }
    }

    /// `s_ctrl` of the control operations.
    ///
    /// # Safety
    ///
    /// Called by the control framework only, for a control of our node's handler.
    unsafe extern "C" fn s_ctrl(ctrl: *mut bindings::v4l2_ctrl) -> c_int {
        // SAFETY: `ctrl` is a live control of one of our handlers.
        let (hdl, id, val) = unsafe { ((*ctrl).handler, (*ctrl).id, (*ctrl).val) };
        let hdl = Opaque::cast_from(hdl).cast_mut();
        // SAFETY: Our handlers are the `ctrls` field of a live `Node<T>`.
        let node = unsafe { &*container_of!(hdl, Self, ctrls) };
        ret(node.data.s_ctrl(ControlId::from_raw(id), val))
    }

    /// Called by the V4L2 core when the last reference to `v4l2_dev` goes: frees the node.
    ///
    /// # Safety
    ///
    /// Called by the V4L2 core only.
    unsafe extern "C" fn release(v4l2_dev: *mut bindings::v4l2_device) {
        let v4l2_dev = Opaque::cast_from(v4l2_dev).cast_mut();
        // SAFETY: `v4l2_dev` is the `v4l2_dev` field of a `Node<T>` leaked by
        // `Registration::new`; this is the last reference to it.
        let node = unsafe { container_of!(v4l2_dev, Self, v4l2_dev) };
        // SAFETY: The handler was zeroed or initialised; nothing uses it any more.
        unsafe { bindings::v4l2_ctrl_handler_free((*node).ctrls.get()) };
        // SAFETY: The allocation came from `KBox::into_raw` in `Registration::new` and nothing
        // uses it any more (type invariant).
        drop(unsafe { KBox::from_raw(node) });
    }

    /// Creates the driver's controls on the node's handler.
    ///
    /// # Safety
    ///
    /// `node` must be a valid node that is not registered yet.
    unsafe fn add_controls(node: *mut Self) -> Result {
        // SAFETY: `node` is valid and not shared yet.
        let (hdl, controls, menus) = unsafe {
            (
                (*node).ctrls.get(),
                (*node).data.controls(),
                &mut (*node).menus,
            )
        };
        let n_menu = controls.iter().fold(0usize, |n, c| match c.kind {
            ControlKind::StdMenu { items, .. } => n.saturating_add(items.len()),
            _ => n,
        });
        // The control framework keeps pointers into `menus`: it must never reallocate.
        *menus = KVec::with_capacity(n_menu, GFP_KERNEL)?;
        // The handler's lock gets a lockdep class of its own, as `v4l2_ctrl_handler_init()`
        // gives one per call site.
        let key = kernel::static_lock_class!();
        // SAFETY: `hdl` is zeroed and not shared yet; `key` is static and the name a static
        // C string. The key's type is the kernel crate's binding of the same C type.
        to_result(unsafe {
            bindings::v4l2_ctrl_handler_init_class(
                hdl,
                controls.len() as u32,
                key.as_ptr().cast(),
                c"rvb2_ctrl_handler_lock".as_char_ptr().cast(),
            )
        })?;
        let ops = &Self::CTRL_OPS;
        for c in controls {
            let id = c.id.as_raw();
            match c.kind {
                ControlKind::Std {
                    min,
                    max,
                    step,
                    def,
                } => {
                    // SAFETY: `hdl` is initialised; `ops` is static.
                    unsafe { bindings::v4l2_ctrl_new_std(hdl, ops, id, min, max, step, def) };
                }
                ControlKind::StdMenu { items, def } => {
                    let start = menus.len();
                    for item in items {
                        menus.push(item.as_char_ptr(), GFP_KERNEL)?;
                    }
                    // The entries pushed above, which `menus` keeps where they are for as long
                    // as the node lives (it never reallocates, see above).
                    let entries = menus[start..].as_ptr();
                    let max = u8::try_from(items.len().saturating_sub(1)).map_err(|_| EINVAL)?;
                    // SAFETY: `hdl` is initialised; `ops` is static and `entries` points to
                    // `max + 1` names that live as long as the node, as the handler does.
                    unsafe {
                        bindings::v4l2_ctrl_new_std_menu_items(hdl, ops, id, max, 0, def, entries)
                    };
                }
                ControlKind::Integer {
                    name,
                    min,
                    max,
                    def,
                } => {
                    // SAFETY: `hdl` is initialised, for a node of this `T`.
                    unsafe { Self::new_custom(hdl, id, name, CtrlType::Integer, min, max, def) };
                }
                ControlKind::Boolean { name, def } => {
                    let def = i64::from(def);
                    // SAFETY: `hdl` is initialised, for a node of this `T`.
                    unsafe { Self::new_custom(hdl, id, name, CtrlType::Boolean, 0, 1, def) };
                }
            }
        }
        // SAFETY: `hdl` is initialised.
        to_result(unsafe { (*hdl).error })
    }

    /// Adds a driver-specific control.
    ///
    /// # Safety
    ///
    /// `hdl` must be an initialised handler of a node of this `T`.
    unsafe fn new_custom(
        hdl: *mut bindings::v4l2_ctrl_handler,
        id: u32,
        name: &'static CStr,
        kind: CtrlType,
        min: i64,
        max: i64,
        def: i64,
    ) {
        let cfg = bindings::v4l2_ctrl_config {
            ops: &Self::CTRL_OPS,
            id,
            name: name.as_char_ptr(),
            type_: match kind {
                CtrlType::Integer => bindings::v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER,
                CtrlType::Boolean => bindings::v4l2_ctrl_type_V4L2_CTRL_TYPE_BOOLEAN,
            },
            min,
            max,
            step: 1,
            def,
            // Writing the same value again acts again (e.g. re-arms an error injection).
            flags: bindings::V4L2_CTRL_FLAG_EXECUTE_ON_WRITE,
            ..Default::default()
        };
        // SAFETY: `hdl` is initialised; `cfg` is only read during the call.
        unsafe { bindings::v4l2_ctrl_new_custom(hdl, &cfg, core::ptr::null_mut()) };
    }
}

/// The types of driver-specific control.
enum CtrlType {
    Integer,
    Boolean,
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
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: VideoOps> {
    node: NonNull<Node<T>>,
    _p: PhantomData<T>,
}

// SAFETY: The registration only hands out `&T`, and `T: Send + Sync`; the C structures are
// used under the V4L2 core's own locking.
unsafe impl<T: VideoOps> Send for Registration<T> {}
// SAFETY: See `Send`.
unsafe impl<T: VideoOps> Sync for Registration<T> {}

// SAFETY: `menus` only holds pointers to `'static` strings.
unsafe impl<T: VideoOps> Send for Node<T> {}
// SAFETY: See `Send`; the C structures are used under the V4L2 core's locking.
unsafe impl<T: VideoOps> Sync for Node<T> {}

impl<T: VideoOps> Registration<T> {
    /// Registers a `v4l2_device` on `parent` and a video node named `name` on it, with the
    /// capabilities `caps` and the driver's controls.
    ///
    /// `parent` need only live until the registration is initialised: the `v4l2_device` takes
    /// a reference on it.
    pub(crate) fn new<'a>(
        parent: &'a device::Device,
        name: &'a CStr,
        caps: DeviceCaps,
        data: impl PinInit<T, Error> + 'a,
        module: &'static ThisModule,
    ) -> impl PinInit<Self, Error> + 'a {
        try_pin_init!(Self {
            node: Self::register(parent, name, caps, data, module)?,
            _p: PhantomData,
        }? Error)
    }

    /// Allocates and registers the node; returns it with the initial reference of its
    /// `v4l2_device`.
    fn register(
        parent: &device::Device,
        name: &CStr,
        caps: DeviceCaps,
        data: impl PinInit<T, Error>,
        module: &'static ThisModule,
    ) -> Result<NonNull<Node<T>>> {
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
                ctrls <- Opaque::ffi_init(|p: *mut bindings::v4l2_ctrl_handler| {
                    // SAFETY: `p` is valid for writes; the handler is initialised later.
                    unsafe { p.write_bytes(0, 1) };
                }),
                menus: KVec::new(),
                data <- data,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The node is not moved out of its allocation: from here on it is handled
        // through a raw pointer and freed by `Node::release` or below.
        let node = KBox::into_raw(unsafe { Pin::into_inner_unchecked(node) });
        // SAFETY: `node` is valid; the fields are not aliased yet.
        let (v4l2_dev, vdev, ctrls) = unsafe {
            (
                (*node).v4l2_dev.get(),
                (*node).vdev.get(),
                (*node).ctrls.get(),
            )
        };

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
        // `Node`), and dropping its last reference frees the node and its controls.
        unsafe { (*v4l2_dev).release = Some(Node::<T>::release) };

        let r = if T::HAS_CONTROLS {
            // SAFETY: The node is valid and not registered yet.
            unsafe { Node::add_controls(node) }
        } else {
            Ok(())
        }
        .and_then(|()| {
            // SAFETY: `vdev` is ours to fill until it is registered, and nothing else refers to
            // it.
            let v = unsafe { &mut *vdev };
            copy_cstr(&mut v.name, name);
            v.v4l2_dev = v4l2_dev;
            v.fops = &Node::<T>::FOPS;
            v.ioctl_ops = &Node::<T>::IOCTL_OPS;
            if T::HAS_CONTROLS {
                v.ctrl_handler = ctrls;
            }
            v.release = Some(bindings::video_device_release_empty);
            v.vfl_dir = if caps.contains(DeviceCap::VideoM2m) {
                bindings::vfl_devnode_direction_VFL_DIR_M2M
            } else if caps.contains(DeviceCap::VideoOutput) {
                bindings::vfl_devnode_direction_VFL_DIR_TX
            } else {
                bindings::vfl_devnode_direction_VFL_DIR_RX
            };
            v.device_caps = caps.into();
            // SAFETY: `vdev` is fully set up; `module` is this module, which owns the fops.
            to_result(unsafe {
                bindings::__video_register_device(
                    vdev,
                    bindings::vfl_devnode_type_VFL_TYPE_VIDEO,
                    -1,
                    1,
                    module.as_ptr().cast(),
                )
            })
        });
        if let Err(e) = r {
            // SAFETY: The node was not registered, so `v4l2_dev` holds the only reference;
            // dropping it frees the node through `Node::release`.
            unsafe {
                bindings::v4l2_device_unregister(v4l2_dev);
                bindings::v4l2_device_put(v4l2_dev);
            }
            return Err(e);
        }
        // INVARIANT: Both are registered and we hold the initial reference.
        // SAFETY: `node` came from `KBox::into_raw`, so it is not null.
        Ok(unsafe { NonNull::new_unchecked(node) })
    }
}

#[pinned_drop]
impl<T: VideoOps> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        let node = self.node.as_ptr();
        // SAFETY: Both structures are registered and we hold a reference (type invariant); the
        // last `v4l2_device_put()` frees the node, after which it is not touched again.
        unsafe {
            bindings::video_unregister_device((*node).vdev.get());
            let v4l2_dev = (*node).v4l2_dev.get();
            bindings::v4l2_device_unregister(v4l2_dev);
            bindings::v4l2_device_put(v4l2_dev);
        }
    }
}
