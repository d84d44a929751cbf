//! rvb2's userspace test suite for the rvivid V4L2 capture driver.
//!
//! It runs as root inside the QEMU guest, against the loaded `rvivid.ko`: `tools/vm` boots the
//! guest and `make check` builds this crate on the host (`cargo build --release`) and runs
//! `target/release/rvb2-tests` there; `make check TESTS=name` runs only the tests whose name
//! contains `name`. By hand, in the guest:
//!
//! ```text
//! rvb2-tests [--module PATH] [--logs DIR] [--list] [FILTER...]
//! ```
//!
//! Tests run in the order of [`TESTS`]; each prints `ok - NAME` or `not ok - NAME: REASON`,
//! appends `PASS NAME` / `FAIL NAME REASON` to `DIR/results.txt`, and the run ends with
//! `N passed, N failed` (exit status 1 if any failed).

mod bench;
mod clients;
mod display;
mod dmabuf;
mod faults;
mod fences;
mod formats;
mod frame;
mod harness;
mod kernlog;
mod memory;
mod readio;
mod streaming;
mod syncfile;
mod v4l2;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use harness::{first_lines, is_char_device, wait_until, Ctx, Test, TestResult};
use v4l2::*;

/// Every test, in the order they run. Add new tests anywhere before `dmesg_clean`, which checks
/// the kernel log for what all the others may have provoked and so must stay last.
static TESTS: &[Test] = &[
    ("device_node_present", device_node_present),
    ("querycap_fields", querycap_fields),
    ("v4l2_ctl_all", v4l2_ctl_all),
    ("insmod_rmmod_cycle", insmod_rmmod_cycle),
    // Formats, parameters, inputs, controls (formats.rs).
    ("enum_fmt_lists_formats", formats::enum_fmt_lists_formats),
    ("g_fmt_default", formats::g_fmt_default),
    (
        "try_fmt_clamps_and_rounds",
        formats::try_fmt_clamps_and_rounds,
    ),
    ("s_fmt_round_trip", formats::s_fmt_round_trip),
    ("s_fmt_busy_with_buffers", formats::s_fmt_busy_with_buffers),
    (
        "enum_framesizes_stepwise",
        formats::enum_framesizes_stepwise,
    ),
    (
        "enum_frameintervals_discrete",
        formats::enum_frameintervals_discrete,
    ),
    ("g_s_parm_timeperframe", formats::g_s_parm_timeperframe),
    (
        "frame_rates_follow_frame_size",
        formats::frame_rates_follow_frame_size,
    ),
    ("inputs_enum_g_s", formats::inputs_enum_g_s),
    ("controls_query", formats::controls_query),
    ("controls_set_get", formats::controls_set_get),
    ("controls_out_of_range", formats::controls_out_of_range),
    ("test_pattern_menu", formats::test_pattern_menu),
    // Buffers and streaming (streaming.rs).
    ("reqbufs_basics", streaming::reqbufs_basics),
    ("querybuf_fields", streaming::querybuf_fields),
    (
        "create_bufs_count_and_sizes",
        streaming::create_bufs_count_and_sizes,
    ),
    (
        "create_bufs_while_dqbuf_waits",
        streaming::create_bufs_while_dqbuf_waits,
    ),
    ("prepare_buf_then_qbuf", streaming::prepare_buf_then_qbuf),
    ("qbuf_errors", streaming::qbuf_errors),
    (
        "dqbuf_not_streaming_and_nonblock",
        streaming::dqbuf_not_streaming_and_nonblock,
    ),
    (
        "streamon_streamoff_rules",
        streaming::streamon_streamoff_rules,
    ),
    ("mmap_flags_and_offsets", streaming::mmap_flags_and_offsets),
    (
        "reqbufs_orphans_mapped_buffers",
        streaming::reqbufs_orphans_mapped_buffers,
    ),
    ("capture_frames", streaming::capture_frames),
    ("capture_each_format", streaming::capture_each_format),
    ("v4l2_ctl_stream", streaming::v4l2_ctl_stream),
    ("poll_states", streaming::poll_states),
    ("queue_ownership", streaming::queue_ownership),
    ("close_while_streaming", streaming::close_while_streaming),
    (
        "dqbuf_interrupted_by_signal",
        streaming::dqbuf_interrupted_by_signal,
    ),
    ("inject_buffer_error", streaming::inject_buffer_error),
    (
        "inject_start_streaming_failure",
        streaming::inject_start_streaming_failure,
    ),
    (
        "inject_start_failure_on_qbuf",
        streaming::inject_start_failure_on_qbuf,
    ),
    ("remove_bufs", streaming::remove_bufs),
    // Buffer memory leaving the device (memory.rs).
    ("expbuf_dmabuf", memory::expbuf_dmabuf),
    ("vivid_imports_expbuf", memory::vivid_imports_expbuf),
    ("userptr_capture", memory::userptr_capture),
    ("v4l2_ctl_stream_user", memory::v4l2_ctl_stream_user),
    // DMABUF import (dmabuf.rs).
    (
        "dmabuf_import_heap_udmabuf",
        dmabuf::dmabuf_import_heap_udmabuf,
    ),
    ("dmabuf_import_errors", dmabuf::dmabuf_import_errors),
    (
        "v4l2_ctl_stream_dmabuf_from_vivid",
        memory::v4l2_ctl_stream_dmabuf_from_vivid,
    ),
    ("queue_memory_limit", memory::queue_memory_limit),
    (
        "create_bufs_beyond_memory_bound",
        memory::create_bufs_beyond_memory_bound,
    ),
    // Read I/O (readio.rs).
    ("read_io_frames", readio::read_io_frames),
    (
        "read_io_excludes_streaming",
        readio::read_io_excludes_streaming,
    ),
    ("read_io_poll", readio::read_io_poll),
    (
        "sequence_restarts_after_restream",
        streaming::sequence_restarts_after_restream,
    ),
    // Timing: the guest's clock, sequence numbers and timestamps, drops (streaming.rs).
    (
        "guest_clock_microsecond",
        streaming::guest_clock_microsecond,
    ),
    (
        "timestamps_follow_frame_interval",
        streaming::timestamps_follow_frame_interval,
    ),
    (
        "querybuf_after_dqbuf_keeps_fields",
        streaming::querybuf_after_dqbuf_keeps_fields,
    ),
    (
        "drops_show_as_sequence_gaps",
        streaming::drops_show_as_sequence_gaps,
    ),
    (
        "hold_control_drops_show_as_sequence_gaps",
        streaming::hold_control_drops_show_as_sequence_gaps,
    ),
    // Real clients (clients.rs).
    ("gst_v4l2src_each_format", clients::gst_v4l2src_each_format),
    ("gst_caps_negotiation", clients::gst_caps_negotiation),
    ("gst_pngenc_color_bars", clients::gst_pngenc_color_bars),
    (
        "gst_reports_held_frames_as_lost",
        clients::gst_reports_held_frames_as_lost,
    ),
    (
        "gst_v4l2src_imports_into_v4l2sink",
        clients::gst_v4l2src_imports_into_v4l2sink,
    ),
    ("ffmpeg_list_formats", clients::ffmpeg_list_formats),
    ("ffmpeg_raw_frames", clients::ffmpeg_raw_frames),
    (
        "v4l2_ctl_each_memory_type",
        clients::v4l2_ctl_each_memory_type,
    ),
    (
        "fast_rates_hold_without_spurious_drops",
        streaming::fast_rates_hold_without_spurious_drops,
    ),
    ("v4l2_compliance", v4l2_compliance),
    // Must stay last.
    ("dmesg_clean", dmesg_clean),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--scan-log" {
        std::process::exit(scan_log(&args[2]));
    }
    if args.len() >= 2 && args[1] == "--bench-load" {
        if let Err(e) = bench::load(&args[2..]) {
            eprintln!("rvb2-tests --bench-load: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.len() >= 2 && args[1] == "--bench" {
        if let Err(e) = bench::run(&args[2..]) {
            eprintln!("rvb2-tests --bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    std::process::exit(harness::run_main(&all_tests(), &RUN_CONFIG));
}

/// Tests that may run longer than [`harness::DEFAULT_TIMEOUT`], in seconds: about five times
/// what they took on the KASAN kernel under TCG (v4l2-compliance 62 s, dmesg_clean's two
/// kmemleak scans of the guest's memory 30 s).
static RUN_CONFIG: harness::RunConfig = harness::RunConfig {
    timeouts: &[
        ("v4l2_compliance", 300),
        ("dmesg_clean", 300),
        ("gst_v4l2src_each_format", 600),
        ("gst_caps_negotiation", 300),
        ("gst_pngenc_color_bars", 300),
        ("gst_reports_held_frames_as_lost", 300),
        ("gst_v4l2src_imports_into_v4l2sink", 300),
        ("ffmpeg_list_formats", 300),
        ("ffmpeg_raw_frames", 900),
        ("v4l2_ctl_each_memory_type", 300),
        ("vkms_pipeline_fenced_crc", 300),
    ],
};

/// Every test, in the order they run: [`TESTS`] with the fence, fault-injection and display
/// tests before its last one, `dmesg_clean`.
fn all_tests() -> Vec<Test> {
    let (last, rest) = TESTS.split_last().expect("TESTS is not empty");
    let mut v: Vec<Test> = rest.to_vec();
    v.extend_from_slice(fences::FENCE_TESTS);
    v.extend_from_slice(faults::FAULT_TESTS);
    v.extend_from_slice(display::DISPLAY_TESTS);
    v.push(*last);
    v
}

/// `rvb2-tests --scan-log FILE`: prints the problems a kernel log (e.g. the guest's whole
/// console, kept by `make check`) reports outside what each test window allows (see
/// [`kernlog`]); exits 1 if there are any, 2 if the file cannot be read.
fn scan_log(path: &str) -> i32 {
    let log = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("rvb2-tests: {path}: {e}");
            return 2;
        }
    };
    let problems = kernlog::scan_text(&log);
    for p in &problems {
        println!("{p}");
    }
    i32::from(!problems.is_empty())
}

/// Fails with `msg` unless `cond` holds.
fn ensure(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// Opens the rvivid node (blocking).
fn open_rvivid(ctx: &Ctx) -> Result<Device, String> {
    let node = ctx.find_rvivid()?;
    Device::open(&node).map_err(|e| format!("open {}: {e}", node.display()))
}

/// The value of a call that must succeed, or an error naming the call and its errno.
fn ok<T>(what: impl std::fmt::Display, r: Result<T, Errno>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Fails unless `r` is the error `want` (named, with the errno got, in the message).
fn expect_errno<T>(what: impl std::fmt::Display, r: Result<T, Errno>, want: i32) -> TestResult {
    match r {
        Err(e) if e.0 == want => Ok(()),
        Err(e) => Err(format!("{what}: got {e}, want {}", errno_name(want))),
        Ok(_) => Err(format!("{what}: succeeded, want {}", errno_name(want))),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The rvivid video device is registered and its /dev node is a character device.
fn device_node_present(ctx: &mut Ctx) -> TestResult {
    let node = ctx.find_rvivid()?;
    let meta = std::fs::metadata(&node).map_err(|e| format!("{}: {e}", node.display()))?;
    ensure(is_char_device(&node), || {
        format!(
            "{} is not a character device ({:?})",
            node.display(),
            meta.file_type()
        )
    })
}

/// VIDIOC_QUERYCAP reports rvivid's driver, card, bus_info, version and capabilities.
fn querycap_fields(ctx: &mut Ctx) -> TestResult {
    let dev = open_rvivid(ctx)?;
    let cap = dev
        .querycap()
        .map_err(|e| format!("VIDIOC_QUERYCAP: {e}"))?;

    let fields: [(&str, &[u8], &str); 3] = [
        ("driver", &cap.driver, "rvivid"),
        ("card", &cap.card, "rvivid"),
        ("bus_info", &cap.bus_info, "platform:rvivid-0"),
    ];
    for (what, field, want) in fields {
        match c_str(field) {
            None => return Err(format!("{what} is not NUL-terminated: {field:?}")),
            Some(s) if s != want.as_bytes() => {
                return Err(format!(
                    "{what} is {:?}, want {want:?}",
                    String::from_utf8_lossy(s)
                ))
            }
            Some(_) => {}
        }
    }

    ensure(cap.version != 0, || "version is 0".into())?;
    let want = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING | V4L2_CAP_READWRITE;
    ensure(cap.device_caps & want == want, || {
        format!(
            "device_caps {:#010x} lacks VIDEO_CAPTURE|STREAMING|READWRITE ({want:#010x})",
            cap.device_caps
        )
    })?;
    ensure(
        cap.capabilities & cap.device_caps == cap.device_caps,
        || {
            format!(
                "capabilities {:#010x} do not include device_caps {:#010x}",
                cap.capabilities, cap.device_caps
            )
        },
    )?;
    ensure(cap.capabilities & V4L2_CAP_DEVICE_CAPS != 0, || {
        format!(
            "capabilities {:#010x} lack V4L2_CAP_DEVICE_CAPS",
            cap.capabilities
        )
    })
}

/// The number of tests `v4l2-compliance -e VIVID -s -f` (v4l-utils 1.32) runs on rvivid with
/// read() I/O and every memory type (DMABUF with vivid as the exporter): fewer means some
/// stopped running.
const COMPLIANCE_TESTS: u32 = 111;

/// The streaming tests of `v4l2-compliance -s` that must run and pass (not "OK (Not
/// Supported)", not "Cannot test"): every memory type, DMABUF with vivid as the exporter.
const COMPLIANCE_STREAMING: &[&str] = &[
    "test MMAP (select, REQBUFS): OK",
    "test MMAP (select, CREATE_BUFS): OK",
    "test USERPTR (no poll): OK",
    "test USERPTR (select): OK",
    "test DMABUF (no poll): OK",
    "test DMABUF (select): OK",
];

/// `v4l2-compliance -d NODE -e VIVID -s -f` (vivid loaded for the test, exporting the
/// dma-bufs the DMABUF tests import) reports no failure and no warning over at least
/// [`COMPLIANCE_TESTS`] tests, and ran the streaming tests of every memory type
/// ([`COMPLIANCE_STREAMING`]); its output is kept in v4l2-compliance.txt.
fn v4l2_compliance(ctx: &mut Ctx) -> TestResult {
    let node = ctx.find_rvivid()?;
    let node = node.to_string_lossy();
    let vivid_mod = memory::Vivid::load(ctx)?;
    let vivid = vivid_mod.capture_node()?;
    // The exported buffers must hold rvivid's frames (640x480 YUYV when the streaming tests
    // run); vivid starts smaller.
    ctx.run_ok(
        "v4l2-ctl",
        &[
            "-d",
            &vivid,
            "--set-fmt-video=width=640,height=480,pixelformat=YUYV",
        ],
    )?;
    let args = ["-d", &*node, "-e", &*vivid, "-s", "-f"];
    let out = ctx.run("v4l2-compliance", &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ctx.save_log(
        "v4l2-compliance.txt",
        format!(
            "$ {}\n{stdout}\n--- stderr ---\n{stderr}\n--- {} ---\n",
            harness::command_line("v4l2-compliance", &args),
            out.status
        ),
    )?;
    // "Total for rvivid device /dev/video0: 95, Succeeded: 95, Failed: 0, Warnings: 0"
    let total = stdout
        .lines()
        .find(|l| l.starts_with("Total for "))
        .ok_or_else(|| format!("no \"Total for\" line ({})", out.status))?;
    let field = |name: &str| -> Option<u32> {
        let rest = &total[total.find(name)? + name.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let (ok_count, failed, warnings) = (field("Succeeded:"), field("Failed:"), field("Warnings:"));
    ensure(
        failed == Some(0) && warnings == Some(0) && ok_count >= Some(COMPLIANCE_TESTS),
        || format!("{total} (want 0 failed, 0 warnings, >= {COMPLIANCE_TESTS} succeeded)"),
    )?;
    // The streaming tests' results follow their progress lines after a carriage return.
    for want in COMPLIANCE_STREAMING {
        ensure(
            stdout.split(['\n', '\r']).any(|l| l.trim() == *want),
            || format!("no line \"{want}\" in the output (see v4l2-compliance.txt)"),
        )?;
    }
    ensure(out.status.success(), || {
        format!("v4l2-compliance exited with {}", out.status)
    })
}

/// `v4l2-ctl -d NODE --all` succeeds and shows rvivid's driver name (saved to v4l2-ctl-all.txt).
fn v4l2_ctl_all(ctx: &mut Ctx) -> TestResult {
    let node = ctx.find_rvivid()?;
    let node = node.to_string_lossy();
    let args = ["-d", &*node, "--all"];
    let out = ctx.run("v4l2-ctl", &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ctx.save_log(
        "v4l2-ctl-all.txt",
        format!(
            "$ {}\n{stdout}\n--- stderr ---\n{stderr}\n--- {} ---\n",
            harness::command_line("v4l2-ctl", &args),
            out.status
        ),
    )?;
    ensure(out.status.success(), || {
        format!(
            "v4l2-ctl --all failed ({}): {}",
            out.status,
            first_lines(&stderr, 5)
        )
    })?;
    ensure(stdout.contains("Driver name"), || {
        "no \"Driver name\" in v4l2-ctl --all output".into()
    })?;
    ensure(stdout.contains(harness::RVIVID_NAME), || {
        "no \"rvivid\" in v4l2-ctl --all output".into()
    })
}

/// Twice: rmmod rvivid removes the device node, insmod brings back a working one.
fn insmod_rmmod_cycle(ctx: &mut Ctx) -> TestResult {
    let module = ctx.module()?.to_path_buf();
    let result = (|| {
        for round in 1..=2 {
            ctx.run_ok("rmmod", &["rvivid"])
                .map_err(|e| format!("round {round}: {e}"))?;
            if !wait_until(Duration::from_secs(2), || ctx.find_rvivid().is_err()) {
                return Err(format!(
                    "round {round}: the rvivid video device is still there 2 s after rmmod"
                ));
            }
            ctx.run_ok("insmod", &[&*module.to_string_lossy()])
                .map_err(|e| format!("round {round}: {e}"))?;
            if !wait_until(Duration::from_secs(5), || ctx.rvivid_present()) {
                return Err(format!(
                    "round {round}: no rvivid device node 5 s after insmod ({})",
                    ctx.find_rvivid().err().unwrap_or_default()
                ));
            }
            let dev = open_rvivid(ctx).map_err(|e| format!("round {round}: {e}"))?;
            let cap = dev
                .querycap()
                .map_err(|e| format!("round {round}: VIDIOC_QUERYCAP after reload: {e}"))?;
            ensure(c_str(&cap.driver) == Some(b"rvivid"), || {
                format!(
                    "round {round}: driver {:?} after reload",
                    c_str_lossy(&cap.driver)
                )
            })?;
        }
        Ok(())
    })();

    // Leave the module loaded for the tests that follow, whatever happened.
    match (result, ensure_loaded(ctx, &module)) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(e2)) => Err(format!("{e}; and then {e2}")),
    }
}

/// Loads `module` if rvivid is not loaded (best effort, for failure paths).
fn ensure_loaded(ctx: &Ctx, module: &Path) -> TestResult {
    if Path::new("/sys/module/rvivid").exists() {
        return Ok(());
    }
    ctx.run_ok("insmod", &[&*module.to_string_lossy()])
        .map_err(|e| format!("could not load rvivid back: {e}"))?;
    wait_until(Duration::from_secs(5), || ctx.rvivid_present());
    Ok(())
}

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";

/// kmemleak reports only objects older than this (`MSECS_MIN_AGE` in mm/kmemleak.c).
const KMEMLEAK_MIN_AGE: Duration = Duration::from_secs(5);

/// No kmemleak report, and no problem in the kernel log outside what each test window allows
/// (saved to kmemleak.txt and dmesg.txt). Must stay the last test.
fn dmesg_clean(ctx: &mut Ctx) -> TestResult {
    let mut problems = Vec::new();
    if let Err(e) = check_kmemleak(ctx) {
        problems.push(e);
    }

    let out = ctx.run("dmesg", &[])?;
    let log = String::from_utf8_lossy(&out.stdout);
    ctx.save_log("dmesg.txt", &*log)?;
    if !out.status.success() {
        problems.push(format!(
            "dmesg failed ({}): {}",
            out.status,
            first_lines(&String::from_utf8_lossy(&out.stderr), 3)
        ));
    }
    let bad = kernlog::scan_text(&log);
    if !bad.is_empty() {
        let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
        problems.push(format!(
            "{} problem line(s) in the kernel log (see dmesg.txt): {}",
            bad.len(),
            first_lines(&lines.join("\n"), 5)
        ));
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Fails if kmemleak is missing (the test kernel has it: its absence means it is off or
/// disabled itself) or lists anything. The objects the last tests allocated must first be
/// older than kmemleak's minimum age, or the scan skips them: that is the one wait here. Two
/// scans, so that an object only referenced from a CPU's registers during the first one is
/// seen referenced.
fn check_kmemleak(ctx: &Ctx) -> TestResult {
    if !Path::new(KMEMLEAK).exists() {
        return Err(format!(
            "kmemleak: {KMEMLEAK} does not exist (the test kernel has CONFIG_DEBUG_KMEMLEAK)"
        ));
    }
    std::thread::sleep(KMEMLEAK_MIN_AGE + Duration::from_secs(1));
    for _ in 0..2 {
        OpenOptions::new()
            .write(true)
            .open(KMEMLEAK)
            .and_then(|mut f| f.write_all(b"scan"))
            .map_err(|e| format!("kmemleak: writing \"scan\" to {KMEMLEAK}: {e}"))?;
    }
    let report = std::fs::read_to_string(KMEMLEAK)
        .map_err(|e| format!("kmemleak: reading {KMEMLEAK}: {e}"))?;
    ctx.save_log("kmemleak.txt", &report)?;
    ensure(report.trim().is_empty(), || {
        format!(
            "kmemleak reports leaks (see kmemleak.txt): {}",
            first_lines(&report, 6)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_list() {
        let all = all_tests();
        assert_eq!(all.last().map(|t| t.0), Some("dmesg_clean"));
        let mut names: Vec<&str> = all.iter().map(|t| t.0).collect();
        assert!(names
            .iter()
            .all(|n| !n.is_empty() && !n.contains(char::is_whitespace)));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate test names");
    }

    #[test]
    fn tables_name_real_tests() {
        let all = all_tests();
        let known = |n: &str| all.iter().any(|t| t.0 == n);
        for (name, _) in RUN_CONFIG.timeouts {
            assert!(known(name), "RUN_CONFIG.timeouts names no test: {name}");
        }
        for (name, _) in kernlog::ALLOWED {
            assert!(known(name), "kernlog::ALLOWED names no test: {name}");
        }
    }
}
