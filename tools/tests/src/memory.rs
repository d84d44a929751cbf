// SPDX-License-Identifier: GPL-2.0

//! Buffer memory: leaving the device (`VIDIOC_EXPBUF` of MMAP buffers as dma-bufs, USERPTR) and
//! the bound on a queue's memory.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::formats::{set_format, RestoreDefaults};
use crate::frame::{check_color_bars, FrameFormat};
use crate::harness::{Ctx, TestResult};
use crate::v4l2::*;
use crate::{ensure, expect_errno, ok, open_rvivid};

const CAPTURE: u32 = V4L2_BUF_TYPE_VIDEO_CAPTURE;

/// `VIDIOC_EXPBUF` of buffer `index` with `flags`; the dma-buf's fd, owned.
fn expbuf(dev: &Device, type_: u32, index: u32, plane: u32, flags: u32) -> Result<OwnedFd, Errno> {
    let mut e: v4l2_exportbuffer = zeroed();
    e.type_ = type_;
    e.index = index;
    e.plane = plane;
    e.flags = flags;
    dev.ioctl(VIDIOC_EXPBUF, &mut e)?;
    // SAFETY: EXPBUF returned a new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(e.fd) })
}

/// The number of open fds of this process.
fn open_fds() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/fd")
        .map(Iterator::count)
        .map_err(|e| format!("reading /proc/self/fd: {e}"))
}

/// `fcntl(fd, cmd)`.
fn fcntl(fd: &OwnedFd, cmd: libc::c_int) -> Result<libc::c_int, String> {
    // SAFETY: F_GETFD/F_GETFL on an fd we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd) };
    if r < 0 {
        return Err(format!("fcntl({cmd}): {}", Errno::last()));
    }
    Ok(r)
}

/// VIDIOC_EXPBUF: the documented errors (bad type, index, plane, flags, MMAP-less queue,
/// another file's queue), `O_CLOEXEC` and the access mode honoured (a read-only dma-buf cannot
/// be mapped writable), a captured frame read through the dma-buf's own mapping equal to the
/// V4L2 mapping's, and the memory outliving REQBUFS(0), REMOVE_BUFS and the close of the
/// device while a dma-buf holds it. No fd is left behind (kmemleak is checked at the end of
/// the run).
pub fn expbuf_dmabuf(ctx: &mut Ctx) -> TestResult {
    let fds_before = open_fds()?;
    {
        let dev = open_rvivid(ctx)?;
        let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
        let fmt = FrameFormat::from_pix(f.pix());
        let rdwr = (libc::O_CLOEXEC | libc::O_RDWR) as u32;
        expect_errno(
            "VIDIOC_EXPBUF without buffers",
            expbuf(&dev, CAPTURE, 0, 0, rdwr),
            libc::EINVAL,
        )?;
        let rb = ok("VIDIOC_REQBUFS(3)", dev.reqbufs(3))?;
        ensure(rb.count == 3, || format!("REQBUFS(3) gave {}", rb.count))?;
        for (what, type_, index, plane, flags) in [
            ("type VIDEO_OUTPUT", V4L2_BUF_TYPE_VIDEO_OUTPUT, 0, 0, rdwr),
            ("index 3 of 3", CAPTURE, 3, 0, rdwr),
            ("index 1000", CAPTURE, 1000, 0, rdwr),
            ("plane 1", CAPTURE, 0, 1, rdwr),
            (
                "flags O_NONBLOCK",
                CAPTURE,
                0,
                0,
                rdwr | libc::O_NONBLOCK as u32,
            ),
        ] {
            expect_errno(
                format!("VIDIOC_EXPBUF {what}"),
                expbuf(&dev, type_, index, plane, flags),
                libc::EINVAL,
            )?;
        }
        {
            let other = open_rvivid(ctx)?;
            expect_errno(
                "VIDIOC_EXPBUF from a file that does not own the queue",
                expbuf(&other, CAPTURE, 0, 0, rdwr),
                libc::EBUSY,
            )?;
        }

        // Buffer 0 read-write and close-on-exec, buffer 1 read-only and inheritable.
        let d0 = ok(
            "VIDIOC_EXPBUF 0 O_RDWR|O_CLOEXEC",
            expbuf(&dev, CAPTURE, 0, 0, rdwr),
        )?;
        let d1 = ok(
            "VIDIOC_EXPBUF 1 O_RDONLY",
            expbuf(&dev, CAPTURE, 1, 0, libc::O_RDONLY as u32),
        )?;
        ensure(fcntl(&d0, libc::F_GETFD)? & libc::FD_CLOEXEC != 0, || {
            "EXPBUF with O_CLOEXEC: the fd is not close-on-exec".into()
        })?;
        ensure(fcntl(&d1, libc::F_GETFD)? & libc::FD_CLOEXEC == 0, || {
            "EXPBUF without O_CLOEXEC: the fd is close-on-exec".into()
        })?;
        ensure(
            fcntl(&d0, libc::F_GETFL)? & libc::O_ACCMODE == libc::O_RDWR,
            || "EXPBUF O_RDWR: the dma-buf is not read-write".into(),
        )?;
        ensure(
            fcntl(&d1, libc::F_GETFL)? & libc::O_ACCMODE == libc::O_RDONLY,
            || "EXPBUF O_RDONLY: the dma-buf is not read-only".into(),
        )?;
        let len = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?.length as usize;
        expect_errno(
            "mmap(PROT_WRITE, MAP_SHARED) of a read-only dma-buf",
            Mapping::shared(&d1, 0, len),
            libc::EACCES,
        )?;
        let ro = ok(
            "mmap(PROT_READ) of the read-only dma-buf",
            Mapping::new(&d1, 0, len, libc::PROT_READ, libc::MAP_SHARED),
        )?;
        drop(ro);

        // Capture into buffers 0 and 1 and read the frames through the dma-bufs.
        let dm0 = ok("mmap of dma-buf 0", Mapping::shared(&d0, 0, len))?;
        let dm1 = ok(
            "mmap(PROT_READ) of dma-buf 1",
            Mapping::new(&d1, 0, len, libc::PROT_READ, libc::MAP_SHARED),
        )?;
        let mut v4l2_maps = Vec::new();
        for i in 0..2 {
            let b = ok(format!("VIDIOC_QUERYBUF {i}"), dev.querybuf(i))?;
            v4l2_maps.push(ok(
                format!("mmap of buffer {i}"),
                Mapping::shared(&dev, b.offset(), len),
            )?);
            ok(format!("VIDIOC_QBUF {i}"), dev.qbuf(i))?;
        }
        ok("VIDIOC_STREAMON", dev.streamon())?;
        for _ in 0..2 {
            let b = dqbuf_good(&dev)?;
            let used = b.bytesused as usize;
            let via_dmabuf = if b.index == 0 { &dm0 } else { &dm1 };
            let via_v4l2 = &v4l2_maps[b.index as usize];
            ensure(
                via_dmabuf.bytes()[..used] == via_v4l2.bytes()[..used],
                || {
                    format!(
                        "buffer {}: the dma-buf mapping differs from the V4L2 one",
                        b.index
                    )
                },
            )?;
            check_color_bars(&via_dmabuf.bytes()[..used], &fmt)
                .map_err(|e| format!("buffer {} read through its dma-buf: {e}", b.index))?;
        }
        ok("VIDIOC_STREAMOFF", dev.streamoff())?;
        let frame0 = dm0.bytes().to_vec();

        // REQBUFS(0) while the dma-bufs are held (their V4L2 mappings gone): the buffers are
        // freed, the dma-bufs keep the memory.
        drop(v4l2_maps);
        ok(
            "VIDIOC_REQBUFS(0) while two buffers are exported",
            dev.reqbufs(0),
        )?;
        expect_errno(
            "VIDIOC_QUERYBUF 0 after REQBUFS(0)",
            dev.querybuf(0),
            libc::EINVAL,
        )?;
        ensure(dm0.bytes() == &frame0[..], || {
            "dma-buf 0 lost its contents after REQBUFS(0)".into()
        })?;
        let remapped = ok(
            "mmap of dma-buf 0 after REQBUFS(0)",
            Mapping::shared(&d0, 0, len),
        )?;
        ensure(remapped.bytes() == &frame0[..], || {
            "a new mapping of dma-buf 0 after REQBUFS(0) differs".into()
        })?;
        drop((remapped, dm0, dm1, d0, d1));

        // REMOVE_BUFS, then the device's close, while a dma-buf is held.
        ok("VIDIOC_REQBUFS(2)", dev.reqbufs(2))?;
        let d = ok("VIDIOC_EXPBUF 1", expbuf(&dev, CAPTURE, 1, 0, rdwr))?;
        ok(
            "VIDIOC_REMOVE_BUFS 1 while exported",
            dev.remove_bufs(1, 1, CAPTURE),
        )?;
        let d0 = ok("VIDIOC_EXPBUF 0", expbuf(&dev, CAPTURE, 0, 0, rdwr))?;
        drop(dev);
        for (what, fd) in [("1 (removed)", &d), ("0 (device closed)", &d0)] {
            let mut m = ok(
                format!("mmap of dma-buf {what}"),
                Mapping::shared(fd, 0, len),
            )?;
            m.bytes_mut()[len - 1] = 0x5a;
            ensure(m.bytes()[len - 1] == 0x5a, || {
                format!("dma-buf {what} is not writable")
            })?;
        }
    }
    let fds_after = open_fds()?;
    ensure(fds_after == fds_before, || {
        format!("{fds_before} fds open before, {fds_after} after")
    })
}

/// `VIDIOC_DQBUF` once poll() says a buffer is done (within 5 s); it must not be an ERROR one.
fn dqbuf_good(dev: &Device) -> Result<v4l2_buffer, String> {
    let revents = ok("poll", dev.poll(libc::POLLIN, 5000))?;
    ensure(revents & libc::POLLIN != 0, || {
        format!("no frame within 5 s (revents {revents:#x})")
    })?;
    let b = ok("VIDIOC_DQBUF", dev.dqbuf())?;
    ensure(b.flags & V4L2_BUF_FLAG_ERROR == 0, || {
        format!("buffer {} completed with ERROR", b.index)
    })?;
    Ok(b)
}

/// The `/dev` node of the first video4linux device whose name is `name`.
pub fn find_node(name: &str) -> Result<String, String> {
    let dir = std::fs::read_dir("/sys/class/video4linux")
        .map_err(|e| format!("reading /sys/class/video4linux: {e}"))?;
    let mut nodes: Vec<String> = dir
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("name"))
                .is_ok_and(|n| n.lines().next() == Some(name))
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .next()
        .ok_or_else(|| format!("no video4linux device named {name:?}"))
}

/// vivid, loaded (one instance) until dropped.
pub struct Vivid<'c>(&'c Ctx);

impl<'c> Vivid<'c> {
    /// Loads vivid with one instance.
    pub fn load(ctx: &'c Ctx) -> Result<Self, String> {
        let out = ctx.run("modprobe", &["vivid", "n_devs=1"])?;
        ensure(out.status.success(), || {
            format!(
                "modprobe vivid failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        Ok(Vivid(ctx))
    }

    /// The node of vivid's video capture device.
    pub fn capture_node(&self) -> Result<String, String> {
        find_node("vivid-000-vid-cap")
    }
}

impl Drop for Vivid<'_> {
    fn drop(&mut self) {
        let _ = self.0.run("modprobe", &["-r", "vivid"]);
    }
}

/// vivid (loaded for the test) captures into rvivid's buffers: `v4l2-ctl --stream-dmabuf
/// --export-device` makes rvivid export its MMAP buffers (VIDIOC_EXPBUF) and queues them as
/// DMABUF buffers of vivid's capture queue, which attaches, maps and vmaps them to write its
/// colour bars. The frames, read back through the dma-bufs, must be whole and show the bars.
pub fn vivid_imports_expbuf(ctx: &mut Ctx) -> TestResult {
    stream_dmabuf_with_vivid(ctx, Importer::Vivid)
}

/// rvivid captures into vivid's buffers: `v4l2-ctl -d RVIVID --stream-dmabuf --export-device
/// VIVID` makes vivid export its MMAP buffers and queues them as DMABUF buffers of rvivid,
/// which imports them (attach, map, vmap) and writes its colour bars into them. The frames,
/// read back through vivid's mappings, must be whole and show the bars.
pub fn v4l2_ctl_stream_dmabuf_from_vivid(ctx: &mut Ctx) -> TestResult {
    stream_dmabuf_with_vivid(ctx, Importer::Rvivid)
}

/// Which of the two drivers imports the other's buffers in [`stream_dmabuf_with_vivid`].
#[derive(Clone, Copy, PartialEq)]
enum Importer {
    Vivid,
    Rvivid,
}

/// vivid loaded beside rvivid, both at YUYV 640x480 (vivid without its text overlay,
/// osd_text_mode 2), `importer` capturing 8 frames with `v4l2-ctl --stream-dmabuf` into
/// buffers the other exports; every frame must be whole and show the colour bars.
fn stream_dmabuf_with_vivid(ctx: &mut Ctx, importer: Importer) -> TestResult {
    const FRAMES: u64 = 8;
    let vivid_mod = Vivid::load(ctx)?;
    let vivid = vivid_mod.capture_node()?;
    let rvivid = ctx.find_rvivid()?.to_string_lossy().into_owned();
    let fmt = FrameFormat::packed(V4L2_PIX_FMT_YUYV, 640, 480).ok_or("no YUYV 640x480")?;
    // The exporter's buffers must be large enough for the importer's format.
    let set_fmt = "--set-fmt-video=width=640,height=480,pixelformat=YUYV";
    ctx.run_ok("v4l2-ctl", &["-d", &rvivid, set_fmt])?;
    ctx.run_ok(
        "v4l2-ctl",
        &["-d", &vivid, set_fmt, "-c", "osd_text_mode=2"],
    )?;
    let (capture, exporter, file, who) = match importer {
        Importer::Vivid => (&vivid, &rvivid, "rvb2-vivid-dmabuf.raw", "vivid"),
        Importer::Rvivid => (&rvivid, &vivid, "rvb2-rvivid-imports.raw", "rvivid"),
    };
    let (file_s, data) = v4l2_ctl_stream_to_file(
        ctx,
        file,
        &[
            "-d",
            capture,
            "--stream-dmabuf",
            "--export-device",
            exporter,
        ],
        FRAMES,
    )?;
    let size = u64::from(fmt.sizeimage);
    ensure(data.len() as u64 == FRAMES * size, || {
        format!(
            "{file_s} has {} bytes, want {FRAMES} frames of {size}",
            data.len()
        )
    })?;
    for (i, frame) in data.chunks_exact(size as usize).enumerate() {
        check_color_bars(frame, &fmt).map_err(|e| format!("{who}'s frame {i}: {e}"))?;
    }
    Ok(())
}

/// An anonymous private mapping (user memory for USERPTR buffers); unmapped on drop.
struct UserMem {
    ptr: *mut u8,
    len: usize,
}

impl UserMem {
    /// `len` bytes (rounded up to pages) of zeroed memory with protection `prot`.
    fn new(len: usize, prot: libc::c_int) -> Result<Self, String> {
        let len = len.next_multiple_of(page_size());
        // SAFETY: a fresh anonymous mapping chosen by the kernel; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of {len} anonymous bytes: {}", Errno::last()));
        }
        Ok(UserMem { ptr: p.cast(), len })
    }

    fn addr(&self) -> libc::c_ulong {
        self.ptr as libc::c_ulong
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` stays mapped until drop; u8 has no invalid values.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for UserMem {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// `VIDIOC_QBUF` of USERPTR buffer `index` at `addr`, `length` bytes.
fn qbuf_user(
    dev: &Device,
    index: u32,
    addr: libc::c_ulong,
    length: u32,
) -> Result<v4l2_buffer, Errno> {
    let mut b = v4l2_buffer::new(CAPTURE, V4L2_MEMORY_USERPTR, index);
    b.m.userptr = addr;
    b.length = length;
    dev.ioctl(VIDIOC_QBUF, &mut b)?;
    Ok(b)
}

/// USERPTR: REQBUFS reports SUPPORTS_USERPTR and gives buffers without memory (QUERYBUF:
/// USERPTR, userptr 0, length sizeimage); QBUF with a length below sizeimage is EINVAL, with
/// an unmapped or read-only range EFAULT (a length of nearly 4 GiB from a mapped address too,
/// with no kernel warning), and leaves the buffer dequeued; frames captured into page-aligned
/// and unaligned user memory show the bars; a buffer queued again at another
/// address fills the new memory; QUERYBUF reports the address; REQBUFS(0) unpins (kmemleak and
/// the log are checked at the end of the run); a CREATE_BUFS buffer made for twice the frame
/// refuses a frame's worth of memory.
pub fn userptr_capture(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let fmt = FrameFormat::from_pix(f.pix());
    let size = fmt.sizeimage;
    let rb = ok(
        "VIDIOC_REQBUFS(4) USERPTR",
        dev.reqbufs_with(4, CAPTURE, V4L2_MEMORY_USERPTR),
    )?;
    ensure(rb.capabilities & V4L2_BUF_CAP_SUPPORTS_USERPTR != 0, || {
        format!(
            "REQBUFS: capabilities {:#x} lack SUPPORTS_USERPTR",
            rb.capabilities
        )
    })?;
    ensure(rb.count == 4, || {
        format!("REQBUFS(4) USERPTR gave {}", rb.count)
    })?;
    let q = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    ensure(
        q.memory == V4L2_MEMORY_USERPTR && q.userptr() == 0 && q.length == size,
        || format!("QUERYBUF 0 before any QBUF: {q:?}"),
    )?;

    let good = UserMem::new(size as usize, libc::PROT_READ | libc::PROT_WRITE)?;
    expect_errno(
        "VIDIOC_QBUF 0 USERPTR length sizeimage - 1",
        qbuf_user(&dev, 0, good.addr(), size - 1),
        libc::EINVAL,
    )?;
    let gone = UserMem::new(size as usize, libc::PROT_READ | libc::PROT_WRITE)?;
    let gone_addr = gone.addr();
    drop(gone);
    expect_errno(
        "VIDIOC_QBUF 0 USERPTR at an unmapped address",
        qbuf_user(&dev, 0, gone_addr, size),
        libc::EFAULT,
    )?;
    // A length near 4 GiB from a mapped address: the range beyond the mapping is not mapped
    // (EFAULT), and the page array for it (8 MiB) is no reason for a kernel warning (the log
    // is checked at the end of the run).
    expect_errno(
        "VIDIOC_QBUF 0 USERPTR with a length of 4 GiB - 4 KiB",
        qbuf_user(&dev, 0, good.addr(), 0xffff_f000),
        libc::EFAULT,
    )?;
    let read_only = UserMem::new(size as usize, libc::PROT_READ)?;
    expect_errno(
        "VIDIOC_QBUF 0 USERPTR into read-only memory",
        qbuf_user(&dev, 0, read_only.addr(), size),
        libc::EFAULT,
    )?;
    let q = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    ensure(q.flags & V4L2_BUF_FLAG_QUEUED == 0, || {
        format!("buffer 0 queued by a failed QBUF: {q:?}")
    })?;

    // Buffer 3 is unaligned: 100 bytes into a larger mapping.
    let mems = (0..5)
        .map(|_| UserMem::new(size as usize + 4096, libc::PROT_READ | libc::PROT_WRITE))
        .collect::<Result<Vec<_>, _>>()?;
    let addr_of = |i: usize| mems[i].addr() + if i == 3 { 100 } else { 0 };
    for i in 0..4u32 {
        ok(
            format!("VIDIOC_QBUF {i} USERPTR"),
            qbuf_user(&dev, i, addr_of(i as usize), size),
        )?;
    }
    ok("VIDIOC_STREAMON", dev.streamon())?;
    let mut requeued = false;
    let mut seen = 0;
    while seen < 6 {
        let b = dqbuf_good(&dev)?;
        let i = b.index as usize;
        // Buffer 0 goes to the fifth memory after its first frame.
        let mem = if b.index == 0 && requeued { 4 } else { i };
        let want = addr_of(mem);
        ensure(b.userptr() == want && b.length == size, || {
            format!(
                "DQBUF {i}: userptr {:#x} length {}, want {want:#x} {size}",
                b.userptr(),
                b.length
            )
        })?;
        let off = (want - mems[mem].addr()) as usize;
        check_color_bars(&mems[mem].bytes()[off..off + b.bytesused as usize], &fmt)
            .map_err(|e| format!("buffer {i} (user memory {mem}): {e}"))?;
        seen += 1;
        let next = if b.index == 0 {
            requeued = true;
            addr_of(4)
        } else {
            want
        };
        ok(
            format!("VIDIOC_QBUF {i} USERPTR again"),
            qbuf_user(&dev, b.index, next, size),
        )?;
    }
    ok("VIDIOC_STREAMOFF", dev.streamoff())?;
    ok(
        "VIDIOC_REQBUFS(0) USERPTR",
        dev.reqbufs_with(0, CAPTURE, V4L2_MEMORY_USERPTR),
    )?;
    drop(mems);

    // A CREATE_BUFS buffer made for twice the frame needs twice the frame of user memory.
    let mut big = f;
    big.pix_mut().sizeimage = 2 * size;
    let cb = ok(
        "VIDIOC_CREATE_BUFS 1 USERPTR of twice sizeimage",
        dev.create_bufs(1, V4L2_MEMORY_USERPTR, &big),
    )?;
    let mem = UserMem::new(2 * size as usize, libc::PROT_READ | libc::PROT_WRITE)?;
    expect_errno(
        "VIDIOC_QBUF of the CREATE_BUFS buffer with sizeimage bytes",
        qbuf_user(&dev, cb.index, mem.addr(), size),
        libc::EINVAL,
    )?;
    ok(
        "VIDIOC_QBUF of the CREATE_BUFS buffer with twice sizeimage",
        qbuf_user(&dev, cb.index, mem.addr(), 2 * size),
    )?;
    ok(
        "VIDIOC_REQBUFS(0) USERPTR",
        dev.reqbufs_with(0, CAPTURE, V4L2_MEMORY_USERPTR),
    )?;
    drop(mem);
    Ok(())
}

/// `v4l2-ctl --stream-user` captures frames with USERPTR buffers; the last shows the bars.
pub fn v4l2_ctl_stream_user(ctx: &mut Ctx) -> TestResult {
    const FRAMES: u64 = 10;
    let node = ctx.find_rvivid()?.to_string_lossy().into_owned();
    let fmt = FrameFormat::packed(V4L2_PIX_FMT_YUYV, 640, 480).ok_or("no YUYV 640x480")?;
    let (file_s, data) = v4l2_ctl_stream_to_file(
        ctx,
        "rvb2-stream-user.raw",
        &[
            "-d",
            &node,
            "--set-fmt-video=width=640,height=480,pixelformat=YUYV",
            "--stream-user",
        ],
        FRAMES,
    )?;
    let size = fmt.sizeimage as usize;
    ensure(data.len() as u64 == FRAMES * size as u64, || {
        format!(
            "{file_s} has {} bytes, want {FRAMES} frames of {size}",
            data.len()
        )
    })?;
    check_color_bars(&data[data.len() - size..], &fmt).map_err(|e| format!("last frame: {e}"))
}

/// Runs `v4l2-ctl` with `args` plus `--stream-count=frames --stream-to=FILE` (FILE named `name`
/// in the temporary directory); fails if it fails. Returns FILE's path and what it captured
/// (the file is removed).
fn v4l2_ctl_stream_to_file(
    ctx: &Ctx,
    name: &str,
    args: &[&str],
    frames: u64,
) -> Result<(String, Vec<u8>), String> {
    let file = std::env::temp_dir().join(name);
    let file_s = file.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&file);
    let count = format!("--stream-count={frames}");
    let to = format!("--stream-to={file_s}");
    let mut all = args.to_vec();
    all.extend([&*count, &*to]);
    let out = ctx.run("v4l2-ctl", &all)?;
    let data = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    ensure(out.status.success(), || {
        format!(
            "`{}` failed ({}): {}",
            crate::harness::command_line("v4l2-ctl", &all),
            out.status,
            crate::harness::first_lines(&String::from_utf8_lossy(&out.stderr), 5)
        )
    })?;
    Ok((file_s, data))
}

// ---------------------------------------------------------------------------------------------
// The bound on a queue's memory
// ---------------------------------------------------------------------------------------------

/// The module parameter bounding a queue's MMAP memory, orphans included, in MiB.
const MEM_BOUND_PARAM: &str = "/sys/module/rvivid/parameters/max_queue_mem_mb";

/// Its default.
const MEM_BOUND_DEFAULT_MB: u64 = 256;

/// Sets `max_queue_mem_mb` for a test and restores the default when dropped.
struct MemBound;

impl MemBound {
    fn set(mb: u64) -> Result<Self, String> {
        std::fs::write(MEM_BOUND_PARAM, format!("{mb}\n"))
            .map_err(|e| format!("writing {mb} to {MEM_BOUND_PARAM}: {e}"))?;
        Ok(MemBound)
    }
}

impl Drop for MemBound {
    fn drop(&mut self) {
        let _ = std::fs::write(MEM_BOUND_PARAM, format!("{MEM_BOUND_DEFAULT_MB}\n"));
    }
}

/// The bytes a buffer of `size` takes (whole pages).
fn in_pages(size: u32) -> u64 {
    let page = page_size() as u64;
    u64::from(size).div_ceil(page) * page
}

/// The per-queue memory bound (`max_queue_mem_mb`, 256 MiB by default, readable in sysfs):
/// with a 4 MiB bound, REQBUFS(32) of 640x480 YUYV buffers allocates only the 6 that fit and
/// CREATE_BUFS beyond them is ENOMEM, after which the queue still streams colour bars; an
/// orphaned buffer (freed by REQBUFS(0) while mapped) still counts against the bound until
/// its munmap, after which its memory is back (REQBUFS(32) gets one buffer fewer while the
/// orphan is mapped, all 6 again after munmap). Out-of-range values of the parameter are
/// refused.
pub fn queue_memory_limit(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let default = std::fs::read_to_string(MEM_BOUND_PARAM)
        .map_err(|e| format!("reading {MEM_BOUND_PARAM}: {e}"))?;
    ensure(default.trim() == MEM_BOUND_DEFAULT_MB.to_string(), || {
        format!("{MEM_BOUND_PARAM} is {default:?}, want {MEM_BOUND_DEFAULT_MB}")
    })?;
    for bad in ["0", "4097", "-1", "x"] {
        ensure(std::fs::write(MEM_BOUND_PARAM, bad).is_err(), || {
            format!("writing {bad:?} to {MEM_BOUND_PARAM} succeeded, want EINVAL")
        })?;
    }
    let fmt = set_format(&dev, V4L2_PIX_FMT_YUYV, 640, 480)?;
    let bound_mb = 4;
    let _bound = MemBound::set(bound_mb)?;
    let fit = ((bound_mb << 20) / in_pages(fmt.sizeimage)) as u32;
    ensure(fit == 6, || {
        format!("{} buffers fit in {bound_mb} MiB, this test wants 6", fit)
    })?;

    let rb = ok("VIDIOC_REQBUFS(32) with a 4 MiB bound", dev.reqbufs(32))?;
    ensure(rb.count == fit, || {
        format!(
            "VIDIOC_REQBUFS(32) with a 4 MiB bound gave {} buffers, want {fit}",
            rb.count
        )
    })?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    expect_errno(
        "VIDIOC_CREATE_BUFS(1) beyond the bound",
        dev.create_bufs(1, V4L2_MEMORY_MMAP, &f),
        libc::ENOMEM,
    )?;
    ensure(dev.querybuf(fit).is_err(), || {
        format!("buffer {fit} exists after the refused CREATE_BUFS")
    })?;
    // The queue still streams.
    {
        let mut q = crate::streaming::Queue::request(&dev, fit)?;
        q.map_all()?;
        q.queue_all()?;
        q.streamon()?;
        let b = q.next_buffer(Duration::from_secs(5))?;
        check_color_bars(q.data(&b)?, &fmt).map_err(|e| format!("after the ENOMEM: {e}"))?;
        q.streamoff()?;
    }

    // An orphan counts until munmap.
    let rb = ok("VIDIOC_REQBUFS(1)", dev.reqbufs(1))?;
    ensure(rb.count >= 1, || "VIDIOC_REQBUFS(1) gave none".into())?;
    let b0 = ok("VIDIOC_QUERYBUF 0", dev.querybuf(0))?;
    let orphan = ok(
        "mmap of buffer 0",
        Mapping::shared(&dev, b0.offset(), b0.length as usize),
    )?;
    ok("VIDIOC_REQBUFS(0) while buffer 0 is mapped", dev.reqbufs(0))?;
    let rb = ok(
        "VIDIOC_REQBUFS(32) while an orphan is mapped",
        dev.reqbufs(32),
    )?;
    ensure(rb.count == fit - 1, || {
        format!(
            "VIDIOC_REQBUFS(32) while an orphan is mapped gave {} buffers, want {} (the orphan \
             counts against the bound)",
            rb.count,
            fit - 1
        )
    })?;
    ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    drop(orphan);
    let rb = ok(
        "VIDIOC_REQBUFS(32) after munmap of the orphan",
        dev.reqbufs(32),
    )?;
    ensure(rb.count == fit, || {
        format!(
            "VIDIOC_REQBUFS(32) after munmap of the orphan gave {} buffers, want {fit} (its \
             memory should be freed)",
            rb.count
        )
    })?;
    ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    Ok(())
}

/// CREATE_BUFS of one huge buffer fails with ENOMEM, quietly, instead of exhausting memory
/// (two 1 GiB CREATE_BUFS used to get the OOM killer going in the 2 GiB guest): 1 GiB, twice,
/// is beyond the default bound; 3 GiB with the bound raised to its 4 GiB maximum gets past it
/// to the allocator, which refuses more than the guest's memory (`__GFP_NOWARN`: no allocation
/// failure report in the kernel log, which the harness checks). The queue stays usable: it
/// has no buffer, and REQBUFS(4) and CREATE_BUFS of a normal size work afterwards.
pub fn create_bufs_beyond_memory_bound(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let mut huge = f;
    huge.pix_mut().sizeimage = 1 << 30;
    for n in 1..=2 {
        expect_errno(
            format!("VIDIOC_CREATE_BUFS #{n} of one 1 GiB buffer"),
            dev.create_bufs(1, V4L2_MEMORY_MMAP, &huge),
            libc::ENOMEM,
        )?;
    }
    {
        let _bound = MemBound::set(4096)?;
        huge.pix_mut().sizeimage = 3 << 30;
        expect_errno(
            "VIDIOC_CREATE_BUFS of one 3 GiB buffer (bound 4 GiB, guest 2 GiB)",
            dev.create_bufs(1, V4L2_MEMORY_MMAP, &huge),
            libc::ENOMEM,
        )?;
    }
    expect_errno(
        "VIDIOC_QUERYBUF 0 after the refused CREATE_BUFS",
        dev.querybuf(0),
        libc::EINVAL,
    )?;
    let cb = ok(
        "VIDIOC_CREATE_BUFS(2) of the format's size",
        dev.create_bufs(2, V4L2_MEMORY_MMAP, &f),
    )?;
    ensure(cb.index == 0 && cb.count == 2, || {
        format!(
            "VIDIOC_CREATE_BUFS(2): index {} count {}",
            cb.index, cb.count
        )
    })?;
    ok("VIDIOC_REQBUFS(0)", dev.reqbufs(0))?;
    let mut q = crate::streaming::Queue::request(&dev, 4)?;
    q.map_all()
}
