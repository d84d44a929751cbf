//! Judging the kernel's log: which lines report a problem, and which test's window they are in.
//!
//! The harness writes `rvb2-tests: begin NAME` and `rvb2-tests: end NAME` to `/dev/kmsg` around
//! each test, so every log of the run (the per-test `/dev/kmsg` records, the guest's `dmesg`,
//! the host's copy of the whole serial console) can be split into test windows. A test that
//! deliberately provokes a kernel message that looks like a problem declares it in
//! [`ALLOWED`]; that message is then accepted in that test's window and nowhere else.

/// The marker the harness writes to the kernel log before a test (followed by its name).
pub const BEGIN: &str = "rvb2-tests: begin ";
/// The marker the harness writes to the kernel log after a test (followed by its name).
pub const END: &str = "rvb2-tests: end ";

/// What the harness logs in a test's window when it could not read all of the kernel's
/// records (they were overwritten first, or reading failed): a problem, since what was lost
/// cannot be judged.
pub const LOST: &str = "rvb2-tests: kernel log records lost";

/// Decodes the `\xNN` escapes /dev/kmsg writes for control characters (a newline inside a
/// record is `\x0a`), so that each line of a record is judged on its own.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest
            .get(i + 2..i + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What marks a kernel log line as a problem. Each needle must start a word (so "DEBUG:" is
/// not "BUG:").
const BAD: &[&str] = &[
    // WARN*(), BUG*(), oopses and panics.
    "WARNING:",
    "BUG:",
    "kernel BUG",
    "Oops",
    "Call Trace",
    "general protection",
    "invalid opcode",
    "Unable to handle",
    "Kernel panic",
    "double fault",
    // Memory checkers: KASAN ("BUG: KASAN: ..." as well), UBSAN, DEBUG_OBJECTS, DEBUG_LIST,
    // refcount_t, kmemleak's report lines.
    "KASAN",
    "UBSAN",
    "ODEBUG",
    "list_add corruption",
    "list_del corruption",
    "list corruption",
    "refcount_t:",
    "unreferenced object",
    "Out of memory",
    "oom-kill",
    // lockdep and RCU.
    "possible circular locking",
    "inconsistent lock state",
    "possible recursive locking",
    "suspicious RCU usage",
    "bad unlock balance",
    "held lock freed",
    "lock held when returning to user space",
    "DEBUG_LOCKS_WARN_ON",
    "lockdep",
    "detected stall",
    "self-detected stall",
    "rcu_preempt detected",
    // Hangs and lockups.
    "INFO: task",
    "blocked for more than",
    "soft lockup",
    "hard LOCKUP",
    "Watchdog detected hard LOCKUP",
    // Userspace crashes the kernel logs ("rvb2-tests[12]: segfault at 0 ip ...", "traps: ...").
    "segfault at",
    "traps:",
    // Records the console or the harness lost: what they said cannot be judged.
    "messages dropped",
    "kernel log records lost",
    // KUnit: a failed or skipped case (a skip is not a pass).
    "not ok ",
    "# SKIP",
    // Every warning or error rvb2 itself prints starts with "rvb2: " (its informational lines
    // do not).
    "rvb2:",
];

/// Boot-time lines the debug options or the emulated CPU print on every boot, though they
/// contain a needle. Each is matched as a substring of the message.
const BENIGN: &[&str] = &[
    // CONFIG_PROVE_RCU's boot banner.
    "RCU lockdep checking is enabled",
    // kmemleak's boot banner ("kmemleak: Kernel memory leak detector initialized ...").
    "memory leak detector initialized",
    // x86 CPU-vulnerability notes at boot (arch/x86/kernel/cpu/bugs.c), e.g. "Speculative
    // Return Stack Overflow: WARNING: See .../hw-vuln/srso.html for mitigation options." or
    // "RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable ...": they depend on the
    // CPU model QEMU emulates, not on rvb2.
    "admin-guide/hw-vuln",
    "WARNING: kernel not compiled with MITIGATION_",
    "WARNING: CPU does not support IBPB",
    "mitigation leaves CPU vulnerable",
    "data leaks possible",
    // KASAN's boot banner.
    "KernelAddressSanitizer initialized",
];

/// Kernel messages accepted wherever they appear, because their source is known and
/// deliberate although no test window can bracket it.
///
/// The module's KUnit suite runs at every load of the module (at boot, before the first test,
/// and in each test that reloads it). Its test queue ("kunit-test-queue", `src/queue/kunit.rs`)
/// plays a driver that breaks its contract on purpose (it keeps buffers across STREAMOFF, drops
/// tokens) so that the cases can check how the core recovers; the core warns about it as it
/// would about any driver. No other queue has that name, and the KUnit cases themselves assert
/// the outcome.
const ALLOWED_ANYWHERE: &[&str] = &["rvb2: kunit-test-queue: "];

/// A report accepted as a whole wherever it appears, because it is a known bug of another
/// driver the tests drive, harmless, and not rvb2's: vivid's video threads
/// (`drivers/media/test-drivers/vivid/vivid-kthread-cap.c`, `vivid-kthread-out.c`) check that
/// the next frame is still ahead (`time_is_after_jiffies(cur_jiffies + wait_jiffies)`) and
/// then read `jiffies` again to compute the timeout they pass to
/// `wait_event_interruptible_timeout()`; when the guest's CPU stalls between the two (QEMU TCG
/// on a loaded host), jiffies has moved past the deadline and the timeout is negative, which
/// `schedule_timeout()` reports ("schedule_timeout: wrong timeout value ..." and a stack dump)
/// and treats as 0. The whole report (its first line up to the dump's `</TASK>`) is accepted
/// only if its stack is one of those threads'; any other line in it, or another stack, is
/// judged as usual.
struct KnownReport {
    /// The first line of the report.
    first: &'static str,
    /// A function one of whose frames must be in the stack dump.
    frames: &'static [&'static str],
}

/// The reports accepted as a whole (see [`KnownReport`]).
const KNOWN_REPORTS: &[KnownReport] = &[KnownReport {
    first: "schedule_timeout: wrong timeout value ",
    frames: &["vivid_thread_vid_out+", "vivid_thread_vid_cap+"],
}];

/// The lines a stack dump that follows a report's first line may have (up to `</TASK>`).
fn in_stack_dump(msg: &str) -> bool {
    let m = msg.trim_start();
    m.starts_with("CPU: ")
        || m.starts_with("Tainted: ")
        || m.starts_with("Hardware name: ")
        || m == "Call Trace:"
        || m == "<TASK>"
        || m == "</TASK>"
        || m.starts_with("? ")
        || m.split(['+', ' ']).next().is_some_and(|f| {
            !f.is_empty()
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        }) && m.contains("+0x")
}

/// Whether `msgs` (from a report's first line on) is a whole [`KnownReport`]: its first line,
/// then only stack-dump lines up to `</TASK>`, with a frame of one of its functions. Returns
/// the number of messages it spans.
fn known_report(msgs: &[&str]) -> Option<usize> {
    let first = msgs.first()?;
    let report = KNOWN_REPORTS.iter().find(|r| first.contains(r.first))?;
    let mut framed = false;
    for (i, m) in msgs.iter().enumerate().skip(1) {
        if !in_stack_dump(m) {
            return None;
        }
        framed |= report.frames.iter().any(|f| m.contains(f));
        if m.trim() == "</TASK>" {
            return framed.then_some(i + 1);
        }
    }
    None
}

/// Kernel messages a test provokes on purpose, by test name: accepted in that test's window
/// only. Each entry says why the test provokes it.
pub const ALLOWED: &[(&str, &[&str])] = &[];

/// The messages `test` is allowed to provoke.
pub fn allowed_for(test: &str) -> &'static [&'static str] {
    ALLOWED
        .iter()
        .find(|(name, _)| *name == test)
        .map_or(&[], |(_, a)| a)
}

/// Whether a kernel message reports a problem.
pub fn is_bad(msg: &str) -> bool {
    if BENIGN.iter().any(|b| msg.contains(b)) {
        return false;
    }
    if let Some(i) = msg.find("kmemleak:") {
        if msg[i + "kmemleak:".len()..].contains("leak") {
            return true;
        }
    }
    BAD.iter().any(|needle| contains_word(msg, needle))
}

/// Whether a message is bad and not one `allowed` accepts.
pub fn is_bad_unless(msg: &str, allowed: &[&str]) -> bool {
    is_bad(msg)
        && !allowed
            .iter()
            .chain(ALLOWED_ANYWHERE)
            .any(|a| msg.contains(a))
}

/// Whether `needle` occurs in `line` not preceded by an ASCII letter or digit.
fn contains_word(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// The kernel message of a console or `dmesg` line: what follows its `[ seconds.micros] `
/// time stamp, wherever that is in the line (a userspace program's output may precede it on
/// the serial console). Lines with no time stamp are not the kernel's.
pub fn kernel_message(line: &str) -> Option<&str> {
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find("] ") {
            let stamp = after[..close].trim_start();
            let mut parts = stamp.splitn(2, '.');
            let (secs, micros) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !secs.is_empty()
                && secs.bytes().all(|b| b.is_ascii_digit())
                && micros.len() == 6
                && micros.bytes().all(|b| b.is_ascii_digit())
            {
                return Some(&after[close + 2..]);
            }
        }
        rest = after;
    }
    None
}

/// One problem found in a log: the test window it is in (if any) and the line.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub test: Option<String>,
    pub line: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.test {
            Some(t) => write!(f, "[in {t}] {}", self.line.trim()),
            None => write!(f, "[outside the tests] {}", self.line.trim()),
        }
    }
}

/// Scans kernel messages in order, following the test windows the markers open and close,
/// and returns the problems not allowed in the window they are in.
pub fn scan<'a>(messages: impl IntoIterator<Item = &'a str>) -> Vec<Problem> {
    let messages: Vec<&str> = messages.into_iter().collect();
    let mut window: Option<&str> = None;
    let mut problems = Vec::new();
    let mut skip = 0;
    for (i, &msg) in messages.iter().enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if let Some(n) = known_report(&messages[i..]) {
            skip = n - 1;
            continue;
        }
        if let Some(i) = msg.find(BEGIN) {
            window = Some(msg[i + BEGIN.len()..].trim());
            continue;
        }
        if msg.contains(END) {
            window = None;
            continue;
        }
        let allowed = window.map_or(&[][..], allowed_for);
        if is_bad_unless(msg, allowed) {
            problems.push(Problem {
                test: window.map(str::to_string),
                line: msg.to_string(),
            });
        }
    }
    problems
}

/// Scans a console or `dmesg` text: its kernel lines only (see [`kernel_message`]).
pub fn scan_text(text: &str) -> Vec<Problem> {
    scan(text.lines().filter_map(kernel_message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines() {
        for bad in [
            "WARNING: CPU: 0 PID: 1 at drivers/foo.c:1 bar+0x1/0x2",
            "BUG: KASAN: use-after-free in foo+0x1/0x2",
            "Call Trace:",
            "WARNING: possible circular locking dependency detected",
            "kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
            "INFO: lockdep is turned off.",
            "Oops: general protection fault, probably for non-canonical address",
            "UBSAN: shift-out-of-bounds in foo.c:1:2",
            "ODEBUG: free active (active state 0) object: 000000 object type: work_struct",
            "list_add corruption. prev->next should be next (ffff), but was ffff.",
            "refcount_t: underflow; use-after-free.",
            "rvb2-tests[123]: segfault at 0 ip 000055 sp 00007f error 4 in rvb2-tests",
            "traps: rvb2-tests[12] trap invalid opcode ip:55 sp:7f error:0",
            "rcu: INFO: rcu_preempt self-detected stall on CPU",
            "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:12]",
            "INFO: task kworker/0:1:12 blocked for more than 60 seconds.",
            "    not ok 3 dqbuf_waits",
            "    ok 4 foo # SKIP no reason",
            "rvivid: rvb2: rvivid-capture: buffer 3 dropped by the driver",
        ] {
            assert!(is_bad(bad), "{bad}");
            assert!(is_bad_unless(bad, &[]), "{bad}");
        }
        for ok in [
            "rcu: \tRCU lockdep checking is enabled.",
            "kmemleak: Kernel memory leak detector initialized (mem pool available: 15)",
            "kmemleak: Automatic memory scanning thread started",
            "... MAX_LOCKDEP_SUBCLASSES:  8",
            "foo: DEBUG: something",
            "rvivid: registered /dev/video0",
            "    ok 3 dqbuf_waits",
            "rvb2-tests: begin querycap_fields",
            "Speculative Return Stack Overflow: WARNING: See https://kernel.org/doc/html/latest/admin-guide/hw-vuln/srso.html for mitigation options.",
            "RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!",
            "KernelAddressSanitizer initialized (generic)",
        ] {
            assert!(!is_bad(ok), "{ok}");
        }
    }

    #[test]
    fn known_reports_whole_only() {
        let vivid = [
            "schedule_timeout: wrong timeout value fffffffffffffffc",
            "CPU: 0 UID: 0 PID: 140 Comm: vivid-000-vid-o Tainted: G           O     N  7.2.13 #1 PREEMPTLAZY  ",
            "Tainted: [O]=OOT_MODULE, [N]=TEST",
            "Call Trace:",
            " <TASK>",
            " dump_stack_lvl+0x67/0x90",
            " schedule_timeout+0x111/0x1c0",
            " vivid_thread_vid_out+0x1051/0x17f0 [vivid]",
            " ? wake_bit_function+0x120/0x120",
            " kthread+0x308/0x3e0",
            " ret_from_fork_asm+0x11/0x20",
            " </TASK>",
        ];
        assert_eq!(known_report(&vivid), Some(vivid.len()));
        let mut after = vivid.to_vec();
        after.push("Call Trace:");
        assert_eq!(scan(after.iter().copied()).len(), 1);
        assert!(scan(vivid.iter().copied()).is_empty());
        // Another thread's stack, a report cut short, or another line inside: judged as usual.
        let other: Vec<&str> = vivid
            .iter()
            .map(|l| {
                if l.contains("vivid_thread") {
                    " foo_thread+0x1/0x2"
                } else {
                    l
                }
            })
            .collect();
        assert_eq!(known_report(&other), None);
        assert_eq!(scan(other.iter().copied()).len(), 1);
        assert_eq!(known_report(&vivid[..vivid.len() - 1]), None);
        let mut inside = vivid.to_vec();
        inside.insert(5, "BUG: KASAN: use-after-free in foo+0x1/0x2");
        assert_eq!(known_report(&inside), None);
        assert_eq!(scan(inside.iter().copied()).len(), 2);
    }

    #[test]
    fn kmsg_escapes() {
        assert_eq!(unescape("a\\x0aWARNING: b"), "a\nWARNING: b");
        assert_eq!(unescape("tab\\x09x \\xzz \\x"), "tab\tx \\xzz \\x");
        assert!(unescape("foo\\x0aBUG: x").lines().any(is_bad));
        assert!(is_bad(LOST));
        assert!(is_bad("** 12 printk messages dropped **"));
    }

    #[test]
    fn kernel_lines_only() {
        assert_eq!(
            kernel_message("[   12.345678] WARNING: x"),
            Some("WARNING: x")
        );
        assert_eq!(kernel_message("[12.345678] a"), Some("a"));
        assert_eq!(
            kernel_message("ok - foo[    1.000001] rvivid: x"),
            Some("rvivid: x")
        );
        assert_eq!(kernel_message("not ok - foo: WARNING: bar"), None);
        assert_eq!(kernel_message("[1.2] x"), None);
        assert_eq!(kernel_message("[abc] x"), None);
    }

    #[test]
    fn windows() {
        let log = [
            "[    1.000000] rvb2-tests: begin a",
            "[    1.100000] WARNING: in a",
            "[    1.200000] rvb2-tests: end a",
            "not ok - a: WARNING: userspace output is not the kernel's",
            "[    2.000000] BUG: outside",
        ]
        .join("\n");
        let p = scan_text(&log);
        assert_eq!(
            p,
            vec![
                Problem {
                    test: Some("a".into()),
                    line: "WARNING: in a".into()
                },
                Problem {
                    test: None,
                    line: "BUG: outside".into()
                }
            ]
        );
    }

    #[test]
    fn allowed_only_in_its_window() {
        // Every entry names a test and gives at least one message.
        for (name, msgs) in ALLOWED {
            assert!(!name.is_empty() && !msgs.is_empty());
        }
        assert!(allowed_for("no such test").is_empty());
        assert!(is_bad_unless("rvivid: rvb2: x", &[]));
        assert!(!is_bad_unless("rvivid: rvb2: x", &["rvb2: x"]));
        let kunit =
            "rvivid: rvb2: kunit-test-queue: stop_streaming left 1 buffer(s) with the driver";
        assert!(is_bad(kunit) && !is_bad_unless(kunit, &[]));
    }
}
