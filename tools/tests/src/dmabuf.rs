// SPDX-License-Identifier: GPL-2.0

//! DMABUF import (`V4L2_MEMORY_DMABUF`): rvivid capturing into dma-bufs of other exporters —
//! the system dma-heap, udmabuf (memfd pages) and vivid's EXPBUF — with the frames checked
//! through the exporters' own mappings, the documented errors, and every reference the queue
//! took (dma-buf file references, attachments) observed gone afterwards in the dma-buf core's
//! own accounting (`/sys/kernel/debug/dma_buf/bufinfo`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::frame::{check_color_bars, FrameFormat};
use crate::harness::{Ctx, TestResult};
use crate::v4l2::*;
use crate::{ensure, expect_errno, ok, open_rvivid};

const CAPTURE: u32 = V4L2_BUF_TYPE_VIDEO_CAPTURE;

/// The name the dma-buf core lists for rvivid's attachments (its faux device).
const RVIVID_DEVICE: &str = "rvivid-0";

/// `struct dma_heap_allocation_data`.
#[repr(C)]
#[derive(Default)]
struct DmaHeapAllocationData {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC`.
const DMA_HEAP_IOCTL_ALLOC: u32 = iowr::<DmaHeapAllocationData>(b'H', 0);

/// `struct udmabuf_create`.
#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// `UDMABUF_CREATE`.
const UDMABUF_CREATE: u32 = iow::<UdmabufCreate>(b'u', 0x42);
/// `UDMABUF_FLAGS_CLOEXEC`.
const UDMABUF_FLAGS_CLOEXEC: u32 = 1;

/// `ioctl(fd, req, arg)`, returning its non-negative result.
fn raw_ioctl<T>(fd: RawFd, req: u32, arg: &mut T) -> Result<libc::c_int, Errno> {
    // SAFETY: `arg` is the argument structure `req` takes, valid for the call.
    let r = unsafe { libc::ioctl(fd, req as _, std::ptr::from_mut(arg)) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// A new dma-buf of `len` bytes from the system dma-heap (`/dev/dma_heap/system`).
pub fn heap_alloc(len: usize) -> Result<OwnedFd, String> {
    let heap = std::fs::File::open("/dev/dma_heap/system")
        .map_err(|e| format!("open /dev/dma_heap/system: {e}"))?;
    let mut data = DmaHeapAllocationData {
        len: len as u64,
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        ..Default::default()
    };
    raw_ioctl(heap.as_raw_fd(), DMA_HEAP_IOCTL_ALLOC, &mut data)
        .map_err(|e| format!("DMA_HEAP_IOCTL_ALLOC of {len} bytes: {e}"))?;
    // SAFETY: the heap installed this fd for us.
    Ok(unsafe { OwnedFd::from_raw_fd(data.fd as RawFd) })
}

/// A memfd named `name` that allows sealing, of `len` bytes (`len` a whole number of pages).
pub fn sealable_memfd(name: &std::ffi::CStr, len: usize) -> Result<OwnedFd, String> {
    // SAFETY: a NUL-terminated name and valid flags.
    let memfd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC) };
    if memfd < 0 {
        return Err(format!("memfd_create: {}", Errno::last()));
    }
    // SAFETY: memfd_create returned a new fd we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    // SAFETY: plain calls on our fd.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } < 0 {
        return Err(format!("ftruncate of a memfd to {len}: {}", Errno::last()));
    }
    Ok(memfd)
}

/// A memfd of `len` bytes (whole pages) and a udmabuf of its pages: (memfd, dma-buf).
pub fn udmabuf_alloc(len: usize) -> Result<(OwnedFd, OwnedFd), String> {
    let len = len.next_multiple_of(page_size());
    let memfd = sealable_memfd(c"rvb2-udmabuf", len)?;
    // SAFETY: a plain call on our fd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } < 0 {
        return Err(format!("F_SEAL_SHRINK on the memfd: {}", Errno::last()));
    }
    let dev = std::fs::File::open("/dev/udmabuf").map_err(|e| format!("open /dev/udmabuf: {e}"))?;
    let mut create = UdmabufCreate {
        memfd: memfd.as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size: len as u64,
    };
    let fd = raw_ioctl(dev.as_raw_fd(), UDMABUF_CREATE, &mut create)
        .map_err(|e| format!("UDMABUF_CREATE of {len} bytes: {e}"))?;
    // SAFETY: UDMABUF_CREATE returned a new fd we own.
    Ok((memfd, unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What the dma-buf core says of one dma-buf: its file's reference count and the devices
/// attached to it.
#[derive(Debug, PartialEq, Eq)]
pub struct BufInfo {
    pub count: u64,
    pub attached: Vec<String>,
}

/// The dma-buf core's entry (`/sys/kernel/debug/dma_buf/bufinfo`) for the dma-buf `fd`.
pub fn bufinfo(fd: &impl AsRawFd) -> Result<BufInfo, String> {
    // SAFETY: fstat on a valid fd into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(format!("fstat of a dma-buf: {}", Errno::last()));
    }
    let text = std::fs::read_to_string("/sys/kernel/debug/dma_buf/bufinfo")
        .map_err(|e| format!("reading /sys/kernel/debug/dma_buf/bufinfo: {e}"))?;
    parse_bufinfo(&text, st.st_ino)
        .ok_or_else(|| format!("no dma-buf with inode {} in bufinfo", st.st_ino))
}

/// The entry of inode `ino` in the text of `bufinfo`.
fn parse_bufinfo(text: &str, ino: u64) -> Option<BufInfo> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        // size flags mode count exp_name ino name
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 7 || f[5].trim().parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let count = f[3].trim().parse().ok()?;
        let mut attached = Vec::new();
        let mut in_devices = false;
        for l in lines.by_ref() {
            if l.starts_with("Total ") {
                break;
            }
            if l.trim() == "Attached Devices:" {
                in_devices = true;
            } else if in_devices {
                attached.push(l.trim().to_string());
            }
        }
        return Some(BufInfo { count, attached });
    }
    None
}

/// Checks that only our own `refs` references (our fd, our mappings of it) refer to the
/// dma-buf `fd`, and nothing is attached to it.
pub fn expect_released(what: &str, fd: &impl AsRawFd, refs: u64) -> TestResult {
    let info = bufinfo(fd)?;
    ensure(info.count == refs && info.attached.is_empty(), || {
        format!("{what}: the dma-buf has {info:?}, want our {refs} reference(s) and no attachment")
    })
}

/// Checks that rvivid holds the dma-buf `fd` (one more file reference than our `refs`) through
/// one attachment.
fn expect_imported(what: &str, fd: &impl AsRawFd, refs: u64) -> TestResult {
    let info = bufinfo(fd)?;
    ensure(
        info.count == refs + 1 && info.attached == [RVIVID_DEVICE],
        || {
            format!(
                "{what}: the dma-buf has {info:?}, want {} references and one {RVIVID_DEVICE} \
                 attachment",
                refs + 1
            )
        },
    )
}

/// A DMABUF capture buffer descriptor for `index` with dma-buf `fd` and `length`.
fn dmabuf_buffer(index: u32, fd: RawFd, length: u32) -> v4l2_buffer {
    let mut b = v4l2_buffer::new(CAPTURE, V4L2_MEMORY_DMABUF, index);
    b.m.fd = fd;
    b.length = length;
    b
}

/// `VIDIOC_QBUF` of DMABUF buffer `index` with dma-buf `fd`, `length` bytes (0: all of it).
fn qbuf_dmabuf(dev: &Device, index: u32, fd: RawFd, length: u32) -> Result<v4l2_buffer, Errno> {
    let mut b = dmabuf_buffer(index, fd, length);
    dev.ioctl(VIDIOC_QBUF, &mut b)?;
    Ok(b)
}

/// `VIDIOC_PREPARE_BUF` of DMABUF buffer `index`.
fn prepare_dmabuf(dev: &Device, index: u32, fd: RawFd, length: u32) -> Result<v4l2_buffer, Errno> {
    let mut b = dmabuf_buffer(index, fd, length);
    dev.ioctl(VIDIOC_PREPARE_BUF, &mut b)?;
    Ok(b)
}

/// `VIDIOC_QUERYBUF` of DMABUF buffer `index`.
fn querybuf_dmabuf(dev: &Device, index: u32) -> Result<v4l2_buffer, Errno> {
    let mut b = dmabuf_buffer(index, 0, 0);
    dev.ioctl(VIDIOC_QUERYBUF, &mut b)?;
    Ok(b)
}

/// `VIDIOC_DQBUF` of a DMABUF buffer, after waiting for one with poll().
fn dqbuf_dmabuf(dev: &Device) -> Result<v4l2_buffer, String> {
    let revents = ok("poll", dev.poll(libc::POLLIN, 5000))?;
    ensure(revents & libc::POLLIN != 0, || {
        format!("no frame within 5 s (revents {revents:#x})")
    })?;
    let mut b = dmabuf_buffer(0, 0, 0);
    ok("VIDIOC_DQBUF", dev.ioctl(VIDIOC_DQBUF, &mut b))?;
    ensure(b.flags & V4L2_BUF_FLAG_ERROR == 0, || {
        format!("buffer {} completed with ERROR", b.index)
    })?;
    Ok(b)
}

/// The number of open fds of this process.
fn open_fds() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/fd")
        .map(Iterator::count)
        .map_err(|e| format!("reading /proc/self/fd: {e}"))
}

/// One memory to capture into: a dma-buf, and a mapping to read it through (the dma-buf's own
/// for the heap, the memfd's for udmabuf).
struct Target {
    what: String,
    /// Our references to the dma-buf: its fd, and our mapping of it (the heap's).
    refs: u64,
    dmabuf: OwnedFd,
    _memfd: Option<OwnedFd>,
    map: Mapping,
}

impl Target {
    fn heap(i: usize, len: usize) -> Result<Self, String> {
        let dmabuf = heap_alloc(len)?;
        let map = ok(
            format!("mmap of heap dma-buf {i}"),
            Mapping::shared(&dmabuf, 0, len),
        )?;
        Ok(Target {
            what: format!("heap dma-buf {i}"),
            refs: 2,
            dmabuf,
            _memfd: None,
            map,
        })
    }

    fn udmabuf(i: usize, len: usize) -> Result<Self, String> {
        let (memfd, dmabuf) = udmabuf_alloc(len)?;
        let map = ok(
            format!("mmap of udmabuf {i}'s memfd"),
            Mapping::shared(&memfd, 0, len),
        )?;
        Ok(Target {
            what: format!("udmabuf {i}"),
            refs: 1,
            dmabuf,
            _memfd: Some(memfd),
            map,
        })
    }
}

/// rvivid captures into dma-bufs of the system heap and of udmabuf: REQBUFS(DMABUF) reports
/// SUPPORTS_DMABUF, QUERYBUF shows no fd before QBUF; each imported dma-buf is attached to
/// rvivid's device and referenced once more; DQBUF reports the fd and length QBUF gave; the
/// frames, read through the heap's mapping and the memfd, show the colour bars; queueing the
/// same dma-buf again keeps one attachment, another dma-buf for the same index releases the
/// old one at once; STREAMOFF and REQBUFS(0) release them all; no fd is left behind.
pub fn dmabuf_import_heap_udmabuf(ctx: &mut Ctx) -> TestResult {
    let fds_before = open_fds()?;
    {
        let dev = open_rvivid(ctx)?;
        let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
        let fmt = FrameFormat::from_pix(f.pix());
        let size = fmt.sizeimage;
        let len = (size as usize).next_multiple_of(page_size());
        let rb = ok(
            "VIDIOC_REQBUFS(4) DMABUF",
            dev.reqbufs_with(4, CAPTURE, V4L2_MEMORY_DMABUF),
        )?;
        ensure(rb.capabilities & V4L2_BUF_CAP_SUPPORTS_DMABUF != 0, || {
            format!(
                "REQBUFS: capabilities {:#x} lack SUPPORTS_DMABUF",
                rb.capabilities
            )
        })?;
        ensure(rb.count == 4, || {
            format!("REQBUFS(4) DMABUF gave {}", rb.count)
        })?;
        let q = ok("VIDIOC_QUERYBUF 0", querybuf_dmabuf(&dev, 0))?;
        ensure(
            q.memory == V4L2_MEMORY_DMABUF && q.fd() == 0 && q.length == size,
            || format!("QUERYBUF 0 before any QBUF: {q:?}"),
        )?;

        // Buffers 0 and 1 from the heap, 2 and 3 from udmabuf; a fifth (heap) replaces 0.
        let targets = vec![
            Target::heap(0, len)?,
            Target::heap(1, len)?,
            Target::udmabuf(2, len)?,
            Target::udmabuf(3, len)?,
            Target::heap(4, len)?,
        ];
        for (i, t) in targets.iter().take(4).enumerate() {
            // Buffer 1 passes length 0: the whole dma-buf.
            let length = if i == 1 { 0 } else { size };
            let b = ok(
                format!("VIDIOC_QBUF {i} DMABUF ({})", t.what),
                qbuf_dmabuf(&dev, i as u32, t.dmabuf.as_raw_fd(), length),
            )?;
            let want_len = if i == 1 { len as u32 } else { size };
            ensure(
                b.fd() == t.dmabuf.as_raw_fd()
                    && b.length == want_len
                    && b.flags & V4L2_BUF_FLAG_QUEUED != 0,
                || format!("QBUF {i} returned {b:?}"),
            )?;
            expect_imported(&format!("{} after QBUF", t.what), &t.dmabuf, t.refs)?;
        }
        ok("VIDIOC_STREAMON", dev.streamon())?;
        let mut replaced = false;
        for _ in 0..8 {
            let b = dqbuf_dmabuf(&dev)?;
            let i = b.index as usize;
            let t = if i == 0 && replaced { 4 } else { i };
            let target = &targets[t];
            ensure(b.fd() == target.dmabuf.as_raw_fd(), || {
                format!(
                    "DQBUF {i}: fd {}, want {} ({})",
                    b.fd(),
                    target.dmabuf.as_raw_fd(),
                    target.what
                )
            })?;
            check_color_bars(&target.map.bytes()[..b.bytesused as usize], &fmt)
                .map_err(|e| format!("buffer {i} ({}): {e}", target.what))?;
            // Buffer 0 goes to the fifth dma-buf after its first frame; the others come back
            // with the same one.
            let next = if i == 0 { 4 } else { t };
            ok(
                format!("VIDIOC_QBUF {i} DMABUF again ({})", targets[next].what),
                qbuf_dmabuf(&dev, b.index, targets[next].dmabuf.as_raw_fd(), size),
            )?;
            if i == 0 && !replaced {
                replaced = true;
                expect_released(
                    "heap dma-buf 0 once buffer 0 was queued with another",
                    &targets[0].dmabuf,
                    targets[0].refs,
                )?;
            }
            expect_imported(
                &format!("{} queued again", targets[next].what),
                &targets[next].dmabuf,
                targets[next].refs,
            )?;
        }
        ensure(replaced, || "buffer 0 never came back in 8 frames".into())?;
        ok("VIDIOC_STREAMOFF", dev.streamoff())?;
        let q = ok("VIDIOC_QUERYBUF 0", querybuf_dmabuf(&dev, 0))?;
        ensure(q.fd() == targets[4].dmabuf.as_raw_fd(), || {
            format!(
                "QUERYBUF 0 after STREAMOFF: fd {}, want the fifth dma-buf's",
                q.fd()
            )
        })?;
        ok(
            "VIDIOC_REQBUFS(0) DMABUF",
            dev.reqbufs_with(0, CAPTURE, V4L2_MEMORY_DMABUF),
        )?;
        for t in &targets {
            expect_released(&format!("{} after REQBUFS(0)", t.what), &t.dmabuf, t.refs)?;
        }
    }
    let fds_after = open_fds()?;
    ensure(fds_after == fds_before, || {
        format!("{fds_before} fds open before, {fds_after} after")
    })
}

/// DMABUF errors, each leaving the buffer dequeued and holding nothing: a closed fd, -1, a
/// pipe and a memfd (not dma-bufs) are EINVAL (as videobuf2 and the QBUF documentation say);
/// a dma-buf smaller than the frame is EINVAL whether the length is 0 or the frame's; a length
/// below the frame's is EINVAL, and so is one above the dma-buf's size; a CREATE_BUFS buffer
/// made for twice the frame refuses a dma-buf of one frame. PREPARE_BUF imports as QBUF does,
/// and the QBUF of a prepared buffer keeps that dma-buf whatever fd it passes. Closing the
/// device while imported buffers stream releases them. No fd is left behind.
pub fn dmabuf_import_errors(ctx: &mut Ctx) -> TestResult {
    let fds_before = open_fds()?;
    {
        let dev = open_rvivid(ctx)?;
        let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
        let size = f.pix().sizeimage;
        let len = (size as usize).next_multiple_of(page_size());
        ok(
            "VIDIOC_REQBUFS(2) DMABUF",
            dev.reqbufs_with(2, CAPTURE, V4L2_MEMORY_DMABUF),
        )?;
        let good = heap_alloc(len)?;
        let small = heap_alloc(4096)?;
        let mut pipe = [0; 2];
        // SAFETY: `pipe` has room for two fds.
        ensure(unsafe { libc::pipe(pipe.as_mut_ptr()) } == 0, || {
            format!("pipe: {}", Errno::last())
        })?;
        // SAFETY: pipe() returned two new fds we own.
        let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        // SAFETY: a NUL-terminated name.
        let memfd = unsafe { libc::memfd_create(c"rvb2-not-a-dmabuf".as_ptr(), libc::MFD_CLOEXEC) };
        ensure(memfd >= 0, || format!("memfd_create: {}", Errno::last()))?;
        // SAFETY: memfd_create returned a new fd we own.
        let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
        // SAFETY: as above.
        unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) };
        // Closed at once; no fd is made after it until the cases ran.
        let closed = heap_alloc(len)?.as_raw_fd();

        let cases: [(&str, RawFd, u32); 9] = [
            ("a closed fd", closed, size),
            ("fd -1", -1, size),
            ("a pipe", pr.as_raw_fd(), size),
            ("a memfd", memfd.as_raw_fd(), size),
            ("a dma-buf of 4096 bytes, length 0", small.as_raw_fd(), 0),
            (
                "a dma-buf of 4096 bytes, length sizeimage",
                small.as_raw_fd(),
                size,
            ),
            ("length sizeimage - 1", good.as_raw_fd(), size - 1),
            (
                "length above the dma-buf's size",
                good.as_raw_fd(),
                len as u32 + 1,
            ),
            ("the video device's fd", dev.as_raw_fd(), size),
        ];
        for (what, fd, length) in cases {
            expect_errno(
                format!("VIDIOC_QBUF 0 DMABUF with {what}"),
                qbuf_dmabuf(&dev, 0, fd, length),
                libc::EINVAL,
            )?;
            expect_errno(
                format!("VIDIOC_PREPARE_BUF 0 DMABUF with {what}"),
                prepare_dmabuf(&dev, 0, fd, length),
                libc::EINVAL,
            )?;
            let q = ok("VIDIOC_QUERYBUF 0", querybuf_dmabuf(&dev, 0))?;
            ensure(
                q.flags & (V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_PREPARED) == 0,
                || format!("buffer 0 after a failed QBUF with {what}: {q:?}"),
            )?;
        }
        expect_released("the small dma-buf after the failed QBUFs", &small, 1)?;
        expect_released("the good dma-buf after the failed QBUFs", &good, 1)?;

        // CREATE_BUFS for twice the frame: a dma-buf of one frame is too small for it.
        let mut big = f;
        big.pix_mut().sizeimage = 2 * size;
        let cb = ok(
            "VIDIOC_CREATE_BUFS 1 DMABUF of twice sizeimage",
            dev.create_bufs(1, V4L2_MEMORY_DMABUF, &big),
        )?;
        ensure(cb.capabilities & V4L2_BUF_CAP_SUPPORTS_DMABUF != 0, || {
            format!(
                "CREATE_BUFS: capabilities {:#x} lack SUPPORTS_DMABUF",
                cb.capabilities
            )
        })?;
        expect_errno(
            "VIDIOC_QBUF of the CREATE_BUFS buffer with a one-frame dma-buf",
            qbuf_dmabuf(&dev, cb.index, good.as_raw_fd(), size),
            libc::EINVAL,
        )?;
        ok(
            "VIDIOC_REMOVE_BUFS of the CREATE_BUFS buffer",
            dev.remove_bufs(cb.index, 1, CAPTURE),
        )?;

        // PREPARE_BUF imports; the QBUF of the prepared buffer keeps it (fd -1, length 0, as
        // v4l2-compliance queues it).
        let p = ok(
            "VIDIOC_PREPARE_BUF 0 DMABUF",
            prepare_dmabuf(&dev, 0, good.as_raw_fd(), size),
        )?;
        ensure(
            p.flags & V4L2_BUF_FLAG_PREPARED != 0 && p.fd() == good.as_raw_fd(),
            || format!("PREPARE_BUF 0 returned {p:?}"),
        )?;
        expect_imported("the dma-buf after PREPARE_BUF", &good, 1)?;
        let b = ok(
            "VIDIOC_QBUF 0 (prepared) with fd -1, length 0",
            qbuf_dmabuf(&dev, 0, -1, 0),
        )?;
        ensure(b.fd() == good.as_raw_fd() && b.length == size, || {
            format!("QBUF of the prepared buffer returned {b:?}")
        })?;
        let other = heap_alloc(len)?;
        ok(
            "VIDIOC_QBUF 1 DMABUF",
            qbuf_dmabuf(&dev, 1, other.as_raw_fd(), size),
        )?;
        ok("VIDIOC_STREAMON", dev.streamon())?;
        let _ = dqbuf_dmabuf(&dev)?;
        // Closed while streaming, with one buffer queued at least.
        drop(dev);
        expect_released("the prepared dma-buf after close", &good, 1)?;
        expect_released("the second dma-buf after close", &other, 1)?;
        drop((pw, pr));
    }
    let fds_after = open_fds()?;
    ensure(fds_after == fds_before, || {
        format!("{fds_before} fds open before, {fds_after} after")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bufinfo() {
        let text = "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n\
                    00614400\t00000002\t000e001f\t00000002\tsystem\t00000012\t<none>\n\
                    \tAttached Devices:\n\trvivid-0\nTotal 1 devices attached\n\n\
                    00004096\t00000002\t000e001f\t00000001\tudmabuf\t00000013\t<none>\n\
                    \tAttached Devices:\nTotal 0 devices attached\n\n\nTotal 2 objects, 618496 bytes\n";
        assert_eq!(
            parse_bufinfo(text, 12),
            Some(BufInfo {
                count: 2,
                attached: vec!["rvivid-0".into()]
            })
        );
        assert_eq!(
            parse_bufinfo(text, 13),
            Some(BufInfo {
                count: 1,
                attached: vec![]
            })
        );
        assert_eq!(parse_bufinfo(text, 14), None);
    }
}
