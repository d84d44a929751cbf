//! `rvb2-tests --bench NODE`: figures, not assertions (`make bench` runs it in the guest).
//!
//! - the cost of QBUF with and without fences (QBUF, then STREAMOFF to take the buffer
//!   back, so the driver never fills it): what explicit synchronization adds per buffer;
//! - the frame rate rvivid achieves per format at 640x480 and 1920x1080 (the test pattern
//!   generator under QEMU TCG), against the 30 fps asked for;
//! - the memory 32 buffers of 1920x1080 YUYV take (VmallocUsed from /proc/meminfo).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::syncfile::Timeline;
use crate::v4l2::*;

const FLAG_IN_FENCE: u32 = 0x0020_0000;
const FLAG_OUT_FENCE: u32 = 0x0040_0000;

fn reqbufs(dev: &Device, count: u32) -> Result<u32, String> {
    dev.reqbufs(count)
        .map(|rb| rb.count)
        .map_err(|e| format!("VIDIOC_REQBUFS({count}): {e}"))
}

fn set_fmt(dev: &Device, fourcc: u32, w: u32, h: u32) -> Result<(), String> {
    let mut f = v4l2_format::new(V4L2_BUF_TYPE_VIDEO_CAPTURE);
    let p = f.pix_mut();
    p.width = w;
    p.height = h;
    p.pixelformat = fourcc;
    dev.ioctl(VIDIOC_S_FMT, &mut f)
        .map_err(|e| format!("VIDIOC_S_FMT: {e}"))
}

/// Mean microseconds of QBUF (plus its fences) and STREAMOFF over `n` rounds of 3 buffers.
fn qbuf_cost(dev: &Device, n: u32, flags: u32, timeline: &Timeline) -> Result<f64, String> {
    let start = Instant::now();
    for _ in 0..n {
        for i in 0..3 {
            let in_fence = if flags & FLAG_IN_FENCE != 0 {
                Some(timeline.create_fence(u32::MAX)?)
            } else {
                None
            };
            let mut b = v4l2_buffer::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_MEMORY_MMAP, i);
            b.flags = flags;
            b.reserved2 = in_fence.as_ref().map_or(0, |f| f.as_raw_fd()) as u32;
            dev.ioctl(VIDIOC_QBUF, &mut b)
                .map_err(|e| format!("VIDIOC_QBUF: {e}"))?;
            if flags & FLAG_OUT_FENCE != 0 {
                // SAFETY: the fd QBUF installed for us.
                unsafe { libc::close(b.reserved2 as i32) };
            }
        }
        dev.streamoff()
            .map_err(|e| format!("VIDIOC_STREAMOFF: {e}"))?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(n * 3))
}

/// Frames per second over `secs` seconds of streaming.
fn fps(dev: &Device, fourcc: u32, w: u32, h: u32, secs: u64) -> Result<f64, String> {
    set_fmt(dev, fourcc, w, h)?;
    let n = reqbufs(dev, 4)?;
    for i in 0..n {
        dev.qbuf(i).map_err(|e| format!("VIDIOC_QBUF: {e}"))?;
    }
    dev.streamon()
        .map_err(|e| format!("VIDIOC_STREAMON: {e}"))?;
    let start = Instant::now();
    let mut frames = 0u32;
    while start.elapsed() < Duration::from_secs(secs) {
        let mut b = dev.dqbuf().map_err(|e| format!("VIDIOC_DQBUF: {e}"))?;
        frames += 1;
        dev.ioctl(VIDIOC_QBUF, &mut b)
            .map_err(|e| format!("VIDIOC_QBUF: {e}"))?;
    }
    let rate = f64::from(frames) / start.elapsed().as_secs_f64();
    dev.streamoff()
        .map_err(|e| format!("VIDIOC_STREAMOFF: {e}"))?;
    reqbufs(dev, 0)?;
    Ok(rate)
}

fn vmalloc_used_kib() -> Result<u64, String> {
    let m = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
    m.lines()
        .find_map(|l| l.strip_prefix("VmallocUsed:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmallocUsed in /proc/meminfo".into())
}

/// Runs the benchmarks on `node` and prints their figures.
pub fn run(node: &str) -> Result<(), String> {
    let dev = Device::open(node).map_err(|e| format!("open {node}: {e}"))?;
    let timeline = Timeline::open()?;

    reqbufs(&dev, 3)?;
    println!("QBUF + STREAMOFF, mean per buffer (3 buffers, 300 rounds):");
    for (name, flags) in [
        ("no fence", 0),
        ("out-fence", FLAG_OUT_FENCE),
        ("in-fence", FLAG_IN_FENCE),
        ("in- and out-fence", FLAG_IN_FENCE | FLAG_OUT_FENCE),
    ] {
        let us = qbuf_cost(&dev, 300, flags, &timeline)?;
        println!("  {name:<18} {us:8.1} us");
    }
    reqbufs(&dev, 0)?;

    println!("frame rate achieved (30 fps asked, 3 s each):");
    for (name, fourcc) in [
        ("YUYV", V4L2_PIX_FMT_YUYV),
        ("RGB24", V4L2_PIX_FMT_RGB24),
        ("NV12", V4L2_PIX_FMT_NV12),
        ("GREY", V4L2_PIX_FMT_GREY),
    ] {
        for (w, h) in [(640, 480), (1920, 1080)] {
            let rate = fps(&dev, fourcc, w, h, 3)?;
            println!("  {name:<5} {w:>4}x{h:<4} {rate:6.1} fps");
        }
    }

    set_fmt(&dev, V4L2_PIX_FMT_YUYV, 1920, 1080)?;
    let before = vmalloc_used_kib()?;
    let n = reqbufs(&dev, 32)?;
    let after = vmalloc_used_kib()?;
    reqbufs(&dev, 0)?;
    set_fmt(&dev, V4L2_PIX_FMT_YUYV, 640, 480)?;
    println!(
        "memory: {n} buffers of 1920x1080 YUYV ({} KiB each): VmallocUsed +{} KiB",
        1920 * 1080 * 2 / 1024,
        after.saturating_sub(before)
    );
    Ok(())
}
