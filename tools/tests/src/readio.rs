// SPDX-License-Identifier: GPL-2.0

//! Read I/O (`V4L2_CAP_READWRITE`): `read()` as videobuf2's file I/O emulation (`vb2_read()`).
//! The first `read()` (or a `poll()` for input) starts streaming into internal MMAP buffers;
//! each `read()` returns at most one frame; the streaming ioctls are `EBUSY` meanwhile; the
//! owner's close stops it. GStreamer's `io-mode=rw` runs in `clients.rs`.

use std::time::Instant;

use crate::formats::{set_format, RestoreDefaults};
use crate::frame::{check_color_bars, FrameFormat};
use crate::harness::{Ctx, TestResult};
use crate::v4l2::*;
use crate::{ensure, expect_errno, ok, open_rvivid};

const CAPTURE: u32 = V4L2_BUF_TYPE_VIDEO_CAPTURE;

/// How long a blocking `poll()` may wait for a frame (TCG, debug kernel).
const FRAME_TIMEOUT_MS: i32 = 5000;

/// Reads one whole frame with one `read()` of `buf` (larger than a frame) and checks its size
/// and colour bars.
fn read_frame(dev: &Device, buf: &mut [u8], fmt: &FrameFormat, what: &str) -> TestResult {
    let size = fmt.sizeimage as usize;
    let n = ok(
        format!("read() of {} bytes ({what})", buf.len()),
        dev.read(buf),
    )?;
    ensure(n == size, || {
        format!(
            "read() of {} bytes ({what}) returned {n}, want one frame of {size}",
            buf.len()
        )
    })?;
    check_color_bars(&buf[..size], fmt).map_err(|e| format!("{what}: {e}"))
}

/// The index and sequence number of the one read I/O buffer that is neither queued nor done
/// (the one `read()` is in the middle of), from QUERYBUF of each.
fn buffer_being_read(dev: &Device) -> Result<(u32, u32), String> {
    let mut out = Vec::new();
    for i in 0..32 {
        match dev.querybuf(i) {
            Ok(b) if b.flags & (V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE) == 0 => {
                out.push((i, b.sequence))
            }
            Ok(_) => {}
            Err(e) if e.0 == libc::EINVAL => break,
            Err(e) => return Err(format!("VIDIOC_QUERYBUF {i}: {e}")),
        }
    }
    match out[..] {
        [one] => Ok(one),
        _ => Err(format!(
            "want exactly one buffer out of the queue while a frame is half read, got {out:?}"
        )),
    }
}

/// `read()` without streaming ioctls: each `read()` of twice a frame returns exactly one whole
/// frame with the colour bars; a partial `read()` returns what was asked and the next one the
/// rest of that frame (its buffer, the one QUERYBUF shows out of the queue, keeps its sequence
/// number meanwhile; the next frame's is higher); a `read()` of 0 bytes returns 0; a `read()`
/// into an unmapped address fails with EFAULT and consumes nothing (the next `read()` returns a
/// whole frame). Read I/O uses 3 MMAP buffers (rvivid needs 2 queued), which QUERYBUF shows
/// and G_PARM reports (`readbuffers`).
pub fn read_io_frames(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let fmt = set_format(&dev, V4L2_PIX_FMT_YUYV, 320, 240)?;
    let size = fmt.sizeimage as usize;
    let mut buf = vec![0u8; 2 * size];
    for n in 0..4 {
        read_frame(&dev, &mut buf, &fmt, &format!("frame {n}"))?;
    }
    let b = ok("VIDIOC_QUERYBUF 2 during read I/O", dev.querybuf(2))?;
    ensure(
        b.memory == V4L2_MEMORY_MMAP && b.length as usize >= size,
        || format!("read I/O buffer 2: {b:?}"),
    )?;
    expect_errno(
        "VIDIOC_QUERYBUF 3 during read I/O (3 buffers)",
        dev.querybuf(3),
        libc::EINVAL,
    )?;
    let p = ok("VIDIOC_G_PARM", crate::formats::g_parm(&dev))?;
    ensure(p.capture().readbuffers == 3, || {
        format!(
            "VIDIOC_G_PARM: readbuffers {}, want the 3 buffers read I/O uses",
            p.capture().readbuffers
        )
    })?;

    // Partial reads.
    let mut last_seq = None;
    for part in [1000, 4, size - 1] {
        buf.fill(0);
        let n = ok(
            format!("read() of {part} bytes"),
            dev.read(&mut buf[..part]),
        )?;
        ensure(n == part, || format!("read() of {part} bytes returned {n}"))?;
        let (index, seq) = buffer_being_read(&dev)?;
        if let Some(prev) = last_seq {
            ensure(seq > prev, || {
                format!("the frame read after sequence {prev} has sequence {seq}")
            })?;
        }
        last_seq = Some(seq);
        let rest = ok(
            format!("read() of the rest after {part} bytes"),
            dev.read(&mut buf[part..]),
        )?;
        ensure(rest == size - part, || {
            format!(
                "after a read() of {part} bytes the next returned {rest}, want the rest of \
                 the frame ({})",
                size - part
            )
        })?;
        check_color_bars(&buf[..size], &fmt)
            .map_err(|e| format!("frame read as {part} + {rest} bytes: {e}"))?;
        let b = ok(format!("VIDIOC_QUERYBUF {index}"), dev.querybuf(index))?;
        // Queued again, and maybe filled by the driver since (DONE).
        ensure(
            b.flags & (V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE) != 0,
            || {
                format!(
                    "buffer {index}, read to its end, is not queued again: flags {:#x}",
                    b.flags
                )
            },
        )?;
    }
    let n = ok("read() of 0 bytes", dev.read(&mut buf[..0]))?;
    ensure(n == 0, || format!("read() of 0 bytes returned {n}"))?;

    // A bad address consumes nothing.
    expect_errno(
        "read() into an unmapped address",
        dev.read_raw(page_size(), size),
        libc::EFAULT,
    )?;
    read_frame(&dev, &mut buf, &fmt, "after the EFAULT")
}

/// While read I/O is active the streaming ioctls and `mmap()` are EBUSY (`vb2_fileio_is_active()`),
/// so are S_FMT and another fd's `read()` and REQBUFS; QUERYBUF works. The owner's close stops
/// it: another fd can then REQBUFS; with buffers allocated for streaming, `read()` is EBUSY (as
/// v4l2-compliance checks); after REQBUFS(0) that fd reads frames.
pub fn read_io_excludes_streaming(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let dev = open_rvivid(ctx)?;
    let other = open_rvivid(ctx)?;
    let f = ok("VIDIOC_G_FMT", dev.g_fmt())?;
    let fmt = FrameFormat::from_pix(f.pix());
    let mut buf = vec![0u8; fmt.sizeimage as usize + 1];
    read_frame(&dev, &mut buf, &fmt, "the first read")?;
    let b0 = ok("VIDIOC_QUERYBUF 0 during read I/O", dev.querybuf(0))?;

    expect_errno("VIDIOC_REQBUFS(4)", dev.reqbufs(4), libc::EBUSY)?;
    expect_errno("VIDIOC_REQBUFS(0)", dev.reqbufs(0), libc::EBUSY)?;
    expect_errno(
        "VIDIOC_CREATE_BUFS(1)",
        dev.create_bufs(1, V4L2_MEMORY_MMAP, &f),
        libc::EBUSY,
    )?;
    expect_errno(
        "VIDIOC_CREATE_BUFS(0)",
        dev.create_bufs(0, V4L2_MEMORY_MMAP, &f),
        libc::EBUSY,
    )?;
    expect_errno("VIDIOC_QBUF 0", dev.qbuf(0), libc::EBUSY)?;
    expect_errno("VIDIOC_PREPARE_BUF 0", dev.prepare_buf(0), libc::EBUSY)?;
    expect_errno("VIDIOC_DQBUF", dev.dqbuf(), libc::EBUSY)?;
    expect_errno("VIDIOC_STREAMON", dev.streamon(), libc::EBUSY)?;
    expect_errno("VIDIOC_STREAMOFF", dev.streamoff(), libc::EBUSY)?;
    expect_errno(
        "VIDIOC_REMOVE_BUFS 0..1",
        dev.remove_bufs(0, 1, CAPTURE),
        libc::EBUSY,
    )?;
    let mut e: v4l2_exportbuffer = zeroed();
    e.type_ = CAPTURE;
    e.flags = libc::O_RDWR as u32;
    expect_errno(
        "VIDIOC_EXPBUF 0",
        dev.ioctl(VIDIOC_EXPBUF, &mut e),
        libc::EBUSY,
    )?;
    expect_errno(
        "mmap of buffer 0",
        Mapping::shared(&dev, b0.offset(), b0.length as usize),
        libc::EBUSY,
    )?;
    expect_errno(
        "VIDIOC_S_FMT",
        dev.set_pix(false, V4L2_PIX_FMT_GREY, 320, 240, V4L2_FIELD_NONE),
        libc::EBUSY,
    )?;
    expect_errno("read() from another fd", other.read(&mut buf), libc::EBUSY)?;
    expect_errno(
        "VIDIOC_REQBUFS(2) from another fd",
        other.reqbufs(2),
        libc::EBUSY,
    )?;
    // Still reading.
    read_frame(&dev, &mut buf, &fmt, "after the refused ioctls")?;

    drop(dev);
    let rb = ok(
        "VIDIOC_REQBUFS(2) after the reader closed",
        other.reqbufs(2),
    )?;
    ensure(rb.count >= 2, || {
        format!("VIDIOC_REQBUFS(2) gave {}", rb.count)
    })?;
    expect_errno(
        "read() with buffers allocated for streaming",
        other.read(&mut buf),
        libc::EBUSY,
    )?;
    ok("VIDIOC_REQBUFS(0)", other.reqbufs(0))?;
    read_frame(&other, &mut buf, &fmt, "the other fd, after REQBUFS(0)")
}

/// `poll()` with read I/O: on a fresh non-blocking fd a `read()` starts streaming and returns
/// EAGAIN (or a frame, if one came already); `poll(POLLIN)` then reports a frame within the
/// timeout and the next non-blocking `read()` returns it whole. A `poll(POLLIN)` on a fresh fd
/// starts streaming too (as `vb2_poll()`), so a client that polls before it reads gets frames;
/// after a partial `read()` the rest of the frame counts as input at once.
pub fn read_io_poll(ctx: &mut Ctx) -> TestResult {
    let _restore = RestoreDefaults::new(ctx)?;
    let node = ctx.find_rvivid()?;
    let fmt = {
        let dev = open_rvivid(ctx)?;
        FrameFormat::from_pix(ok("VIDIOC_G_FMT", dev.g_fmt())?.pix())
    };
    let size = fmt.sizeimage as usize;
    let mut buf = vec![0u8; size];
    let poll_in = libc::POLLIN | libc::POLLRDNORM;
    {
        let dev = ok("open O_NONBLOCK", Device::open_nonblock(&node))?;
        match dev.read(&mut buf) {
            Ok(n) if n == size => {}
            Ok(n) => return Err(format!("the first non-blocking read() returned {n} bytes")),
            Err(e) if e.0 == libc::EAGAIN => {}
            Err(e) => return Err(format!("the first non-blocking read(): {e}")),
        }
        let r = ok("poll(POLLIN)", dev.poll(poll_in, FRAME_TIMEOUT_MS))?;
        ensure(r & libc::POLLIN != 0, || {
            format!("poll(POLLIN) during read I/O: revents {r:#x}, want POLLIN")
        })?;
        read_frame(&dev, &mut buf, &fmt, "non-blocking, after poll")?;
    }
    let dev = ok("open", Device::open(&node))?;
    let start = Instant::now();
    let r = ok(
        "poll(POLLIN) on a fresh fd",
        dev.poll(poll_in, FRAME_TIMEOUT_MS),
    )?;
    ensure(r & libc::POLLIN != 0 && r & libc::POLLERR == 0, || {
        format!(
            "poll(POLLIN) on a fresh fd: revents {r:#x} after {:?}, want POLLIN (poll starts \
             read I/O)",
            start.elapsed()
        )
    })?;
    expect_errno(
        "VIDIOC_REQBUFS(2) after poll started read I/O",
        dev.reqbufs(2),
        libc::EBUSY,
    )?;
    let n = ok("read() of 100 bytes", dev.read(&mut buf[..100]))?;
    ensure(n == 100, || format!("read() of 100 bytes returned {n}"))?;
    let r = ok("poll(POLLIN, 0) after a partial read", dev.poll(poll_in, 0))?;
    ensure(r & libc::POLLIN != 0, || {
        format!("poll after a partial read(): revents {r:#x}, want POLLIN (the rest is there)")
    })?;
    let n = ok("read() of the rest", dev.read(&mut buf[100..]))?;
    ensure(n == size - 100, || {
        format!("read() of the rest returned {n}, want {}", size - 100)
    })?;
    check_color_bars(&buf, &fmt)
}
