//! A tiny sequential test harness (not libtest): a static list of named test functions, a
//! filter on the command line, one `ok` / `not ok` line per test, a results file and a summary.
//! Each test runs in a process of its own with a timeout, and the kernel log of its window is
//! judged with it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kernlog;

/// A test's outcome: `Err` carries the reason it failed.
pub type TestResult = Result<(), String>;

/// One test: its name and its function.
pub type Test = (&'static str, fn(&mut Ctx) -> TestResult);

/// The name the driver registers its video device under (`/sys/class/video4linux/*/name`).
pub const RVIVID_NAME: &str = "rvivid";

/// Where logs go when `--logs` is not given.
pub const DEFAULT_LOGS: &str = "/tmp/rvb2-tests";

const USAGE: &str = "usage: rvb2-tests [--module PATH] [--logs DIR] [--list] [FILTER...]

Runs rvb2's tests in list order; a FILTER selects the tests whose name contains it (any of
them). Prints `ok - NAME` / `not ok - NAME: REASON` per test and `N passed, N failed` at the
end; appends `PASS NAME` / `FAIL NAME REASON` lines to DIR/results.txt.

  --module PATH  rvivid.ko, for the tests that unload and reload the module
  --logs DIR     where results.txt and the tests' logs go (default /tmp/rvb2-tests)
  --list         print the selected tests' names and exit";

/// What each test gets: the command line's settings and helpers.
pub struct Ctx {
    /// The `--module` path, if given.
    pub module: Option<PathBuf>,
    /// The logs directory (exists once the run starts).
    pub logs: PathBuf,
}

impl Ctx {
    /// The `--module` path, or an error saying it is needed.
    pub fn module(&self) -> Result<&Path, String> {
        let m = self
            .module
            .as_deref()
            .ok_or("this test needs --module PATH (rvivid.ko) and none was given")?;
        if !m.is_file() {
            return Err(format!("--module {}: no such file", m.display()));
        }
        Ok(m)
    }

    /// `/dev/<entry>` for the video4linux device whose `name` is "rvivid".
    pub fn find_rvivid(&self) -> Result<PathBuf, String> {
        let mut seen = Vec::new();
        for entry in v4l_entries()? {
            let name = fs::read_to_string(entry.join("name")).unwrap_or_default();
            let node = entry
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.lines().next() == Some(RVIVID_NAME) {
                return Ok(Path::new("/dev").join(node));
            }
            seen.push(format!("{node}={:?}", name.trim_end()));
        }
        Err(format!(
            "no video4linux device named {RVIVID_NAME:?} (found: {})",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ))
    }

    /// Whether the rvivid device is registered and its /dev node is a character device.
    pub fn rvivid_present(&self) -> bool {
        self.find_rvivid()
            .map(|p| is_char_device(&p))
            .unwrap_or(false)
    }

    /// Runs `cmd args...`, capturing its output. Only a failure to start it is an error; the
    /// exit status is the caller's to check (see [`Ctx::run_ok`]).
    pub fn run(&self, cmd: &str, args: &[&str]) -> Result<Output, String> {
        Command::new(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {cmd}: {e}"))
    }

    /// Runs `cmd args...` and requires exit status 0; returns its stdout. The error names the
    /// command, its status and the start of its stderr.
    pub fn run_ok(&self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let out = self.run(cmd, args)?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                command_line(cmd, args),
                out.status,
                first_lines(&String::from_utf8_lossy(&out.stderr), 5)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `contents` to `LOGS/name`.
    pub fn save_log(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<(), String> {
        let path = self.logs.join(name);
        fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// The entries of /sys/class/video4linux, sorted.
fn v4l_entries() -> Result<Vec<PathBuf>, String> {
    let dir = Path::new("/sys/class/video4linux");
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        // No V4L2 device at all (or no videodev): an empty class.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Whether `path` exists and is a character device.
pub fn is_char_device(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cmd arg arg ...` for messages.
pub fn command_line(cmd: &str, args: &[&str]) -> String {
    std::iter::once(cmd)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first `n` non-empty lines of `text`, joined with " | " (for one-line reasons).
pub fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let mut s = lines
        .iter()
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join(" | ");
    if lines.len() > n {
        s.push_str(&format!(" | ... ({} more lines)", lines.len() - n));
    }
    s
}

/// Makes `text` a single line (reasons go on one line of stdout and of results.txt).
fn one_line(text: &str) -> String {
    let s = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if s.is_empty() {
        "(no reason given)".to_string()
    } else {
        s
    }
}

/// The message and location of the last panic, recorded by the hook `run_main` installs.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs one test, turning a panic into a failure.
fn run_one(ctx: &mut Ctx, f: fn(&mut Ctx) -> TestResult) -> TestResult {
    if let Ok(mut p) = LAST_PANIC.lock() {
        *p = None;
    }
    match panic::catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        Ok(r) => r,
        Err(payload) => {
            let recorded = LAST_PANIC.lock().map(|mut p| p.take()).unwrap_or(None);
            Err(recorded.unwrap_or_else(|| format!("panicked: {}", panic_message(&*payload))))
        }
    }
}

struct Args {
    module: Option<PathBuf>,
    logs: PathBuf,
    list: bool,
    filters: Vec<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        module: None,
        logs: PathBuf::from(DEFAULT_LOGS),
        list: false,
        filters: Vec::new(),
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--module" => a.module = Some(it.next().ok_or("--module needs a PATH")?.into()),
            "--logs" => a.logs = it.next().ok_or("--logs needs a DIR")?.into(),
            "--list" => a.list = true,
            "-h" | "--help" => return Err(String::new()),
            "--" => a.filters.extend(it.by_ref()),
            s if s.starts_with("--module=") => a.module = Some(s["--module=".len()..].into()),
            s if s.starts_with("--logs=") => a.logs = s["--logs=".len()..].into(),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => a.filters.push(arg),
        }
    }
    Ok(a)
}

/// How long a test may run unless [`RunConfig::timeouts`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What the harness needs to know of the suite besides its tests.
pub struct RunConfig {
    /// Tests that may run longer than [`DEFAULT_TIMEOUT`], with their limit in seconds.
    pub timeouts: &'static [(&'static str, u64)],
}

impl RunConfig {
    fn timeout(&self, name: &str) -> Duration {
        self.timeouts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(DEFAULT_TIMEOUT, |(_, s)| Duration::from_secs(*s))
    }
}

/// The whole program: parses the command line, runs the selected tests of `tests` in order and
/// returns the process exit code (0 all passed, 1 some failed, 2 usage error).
///
/// Each test runs in a child process of its own (see [`run_isolated`]): a test that crashes,
/// is killed or hangs past its timeout fails by name and the run goes on. Around each test
/// the harness marks the kernel log (see [`kernlog`]) and fails the test if the kernel
/// reported a problem during it that the test did not declare.
pub fn run_main(tests: &[Test], config: &RunConfig) -> i32 {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("rvb2-tests: {e}\n{USAGE}");
            return 2;
        }
    };

    let selected: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| {
            args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();

    if args.list {
        for (name, _) in &selected {
            println!("{name}");
        }
        return 0;
    }
    if selected.is_empty() {
        eprintln!(
            "rvb2-tests: no test matches {:?} (see --list)",
            args.filters
        );
        return 2;
    }

    if let Err(e) = fs::create_dir_all(&args.logs) {
        eprintln!("rvb2-tests: cannot create {}: {e}", args.logs.display());
        return 2;
    }
    let results_path = args.logs.join("results.txt");
    let mut results = match OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rvb2-tests: cannot open {}: {e}", results_path.display());
            return 2;
        }
    };
    let mut kmsg = match Kmsg::open() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("rvb2-tests: {e}");
            return 2;
        }
    };

    // Panics are reported as test failures, with their location, not on stderr.
    panic::set_hook(Box::new(|info| {
        let msg = panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut p) = LAST_PANIC.lock() {
            *p = Some(format!("panicked{at}: {msg}"));
        }
    }));

    let mut ctx = Ctx {
        module: args.module,
        logs: args.logs,
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut stuck: Option<String> = None;
    for (name, f) in selected {
        let outcome = if let Some(s) = &stuck {
            Outcome {
                result: Err(format!("not run: {s} could not be stopped")),
                stuck: false,
            }
        } else {
            let started = Instant::now();
            kmsg.drain();
            kmsg.mark(kernlog::BEGIN, name);
            let mut outcome = run_isolated(&mut ctx, *f, config.timeout(name));
            kmsg.mark(kernlog::END, name);
            let problems = kmsg.problems();
            if !problems.is_empty() {
                let report = problems
                    .iter()
                    .map(|p| p.line.trim())
                    .collect::<Vec<_>>()
                    .join("\n");
                let _ = ctx.save_log(&format!("kernel-{name}.txt"), &report);
                let msg = format!(
                    "the kernel reported {} problem line(s) (kernel-{name}.txt): {}",
                    problems.len(),
                    first_lines(&report, 3)
                );
                outcome.result = match outcome.result {
                    Ok(()) => Err(msg),
                    Err(e) => Err(format!("{e}; and {msg}")),
                };
            }
            if outcome.stuck {
                stuck = Some(name.to_string());
            }
            let secs = started.elapsed().as_secs_f64();
            if let Err(e) = append_timing(&ctx.logs, name, secs) {
                eprintln!("rvb2-tests: {e}");
            }
            outcome
        };
        let (line, record) = match outcome.result {
            Ok(()) => {
                passed += 1;
                (format!("ok - {name}"), format!("PASS {name}\n"))
            }
            Err(reason) => {
                failed += 1;
                let reason = one_line(&reason);
                (
                    format!("not ok - {name}: {reason}"),
                    format!("FAIL {name} {reason}\n"),
                )
            }
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
        if let Err(e) = results.write_all(record.as_bytes()) {
            eprintln!("rvb2-tests: cannot write {}: {e}", results_path.display());
        }
    }
    let _ = panic::take_hook();

    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        1
    } else {
        0
    }
}

/// Appends `name seconds` to `LOGS/timings.txt`.
fn append_timing(logs: &Path, name: &str, secs: f64) -> Result<(), String> {
    let path = logs.join("timings.txt");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{name} {secs:.2}"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// What running one test in its own process gave.
struct Outcome {
    result: TestResult,
    /// The test's process could not be killed (it is stuck in the kernel): the run stops.
    stuck: bool,
}

impl Outcome {
    /// A failure, with the test's process gone.
    fn fail(reason: String) -> Self {
        Self {
            result: Err(reason),
            stuck: false,
        }
    }
}

/// Runs `f` in a child process (its own process group) and waits for its result, at most
/// `timeout`.
///
/// The child sends its result through a pipe and exits. A child that dies without a result
/// (a signal, `exit()` from within the test) fails the test, naming the signal or status; one
/// that outlives `timeout` is killed with its process group and fails the test as hung. If it
/// cannot be killed within 10 s (it is stuck in the kernel), the outcome says so and the run
/// stops there, since what follows would run against a device in an unknown state.
fn run_isolated(ctx: &mut Ctx, f: fn(&mut Ctx) -> TestResult, timeout: Duration) -> Outcome {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two `c_int`s.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Outcome::fail(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    let (rd, wr) = (fds[0], fds[1]);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: The harness's process is single-threaded (tests run in children only), so the
    // child may go on running Rust code after fork().
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: Both are pipe ends this function opened.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Outcome::fail(format!("fork: {e}"));
    }
    if pid == 0 {
        // The child: its own process group, so that a timeout kills what it started too.
        // SAFETY: Plain system calls on the child's own state and on pipe ends it owns.
        unsafe {
            libc::setpgid(0, 0);
            libc::close(rd);
        }
        let msg = match run_one(ctx, f) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("fail {e}"),
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let mut pipe = pipe_file(wr);
        let _ = pipe.write_all(msg.as_bytes());
        drop(pipe);
        // SAFETY: Ends the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: `wr` is the parent's copy of the write end, which it does not use. setpgid()
    // in both processes, so that the group exists whichever runs first.
    unsafe {
        libc::close(wr);
        libc::setpgid(pid, pid);
    }
    let mut pipe = pipe_file(rd);
    let mut msg = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut pfd = libc::pollfd {
            fd: rd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            timed_out = true;
            break;
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match std::io::Read::read(&mut pipe, &mut buf) {
            Ok(0) => break,
            Ok(k) => msg.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    drop(pipe);
    if timed_out {
        // SAFETY: Signals the child's process group, which this function created.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        return match wait_child(pid, Duration::from_secs(10), false) {
            Some(_) => Outcome::fail(format!(
                "hung: still running after its {} s timeout (killed)",
                timeout.as_secs()
            )),
            None => Outcome {
                result: Err(format!(
                    "hung: still running after its {} s timeout, and SIGKILL did not end it \
                     within 10 s (stuck in the kernel)",
                    timeout.as_secs()
                )),
                stuck: true,
            },
        };
    }
    // The pipe closed: the child exited (or is about to), or it closed the pipe itself.
    // Whatever the test started and left behind goes with it: signalled while the child is
    // not reaped yet, so the group's id cannot have been reused.
    if let Some(status) = wait_child(pid, Duration::from_secs(10), true) {
        return judge(status, &msg);
    }
    // SAFETY: As above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let stuck = wait_child(pid, Duration::from_secs(10), false).is_none();
    Outcome {
        result: Err("the test process did not exit after sending its result".into()),
        stuck,
    }
}

/// The outcome of a test whose process ended with wait status `status`, having sent `msg`.
fn judge(status: libc::c_int, msg: &[u8]) -> Outcome {
    let msg = String::from_utf8_lossy(msg);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        return Outcome::fail(format!(
            "the test process was killed by signal {sig} ({})",
            signal_name(sig)
        ));
    }
    let code = libc::WEXITSTATUS(status);
    match msg.split_once(' ').map_or((&*msg, ""), |(a, b)| (a, b)) {
        ("ok", _) if code == 0 => Outcome {
            result: Ok(()),
            stuck: false,
        },
        ("fail", reason) if code == 0 => Outcome::fail(reason.to_string()),
        _ => Outcome::fail(format!(
            "the test process exited with status {code} without a result"
        )),
    }
}

/// A `File` over a pipe end this module owns (closed when dropped).
fn pipe_file(fd: libc::c_int) -> fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is an open pipe end that the caller owns and hands over.
    unsafe { fs::File::from_raw_fd(fd) }
}

/// Waits for child `pid` at most `timeout`; returns its wait status, or `None` if it did not
/// end in time. With `kill_group`, its process group is killed once the child has ended but
/// before it is reaped (what the test started and left behind goes with it).
fn wait_child(pid: libc::pid_t, timeout: Duration, kill_group: bool) -> Option<libc::c_int> {
    let deadline = Instant::now() + timeout;
    let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
    loop {
        // WNOWAIT: the child stays a zombie, so its pid and group id stay taken.
        // SAFETY: `info` is valid for writes.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid() filled `info` (or left it zeroed: si_pid 0).
        let ended = r == 0 && unsafe { info.si_pid() } == pid;
        if ended {
            break;
        }
        if r != 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Waiting for the child to end, with a timeout: a pidfd would tell at once, but this
        // also works where pidfd_open() does not.
        std::thread::sleep(Duration::from_millis(5));
    }
    if kill_group {
        // SAFETY: The group is the child's own (setpgid() above); the child is a zombie, so
        // its id is not reused. ESRCH (an empty group) is fine.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is valid for writes.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// A zeroed `siginfo_t`, for waitid().
fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: `siginfo_t` is a plain C struct for which all-zero bytes are valid.
    unsafe { core::mem::zeroed() }
}

/// The name of signal `sig`.
fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "another signal",
    }
}

/// The kernel log as `/dev/kmsg` gives it, record by record, for one test's window.
struct Kmsg {
    file: fs::File,
}

impl Kmsg {
    fn open() -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")
            .map_err(|e| format!("cannot open /dev/kmsg: {e}"))?;
        Ok(Self { file })
    }

    /// Reads the records not read yet; returns their messages (with the `\xNN` escapes
    /// /dev/kmsg writes for control characters decoded). If records were lost (overwritten
    /// before they were read) or the log could not be read, that is said as a message of its
    /// own, which the scanner judges as a problem.
    fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match std::io::Read::read(&mut self.file, &mut buf) {
                Ok(0) => break,
                // "prio,seq,time,flags;message\n" then continuation lines " KEY=value".
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let first = rec.lines().next().unwrap_or("");
                    if let Some((_, text)) = first.split_once(';') {
                        out.extend(kernlog::unescape(text).lines().map(str::to_string));
                    }
                }
                // Records overwritten before we read them: go on from the oldest left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    out.push(kernlog::LOST.to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    out.push(format!("{} ({e})", kernlog::LOST));
                    break;
                }
            }
        }
        out
    }

    /// Skips what the kernel logged so far.
    fn drain(&mut self) {
        self.read_new();
    }

    /// Writes `marker name` to the kernel log (at KERN_INFO).
    fn mark(&mut self, marker: &str, name: &str) {
        let _ = self
            .file
            .write_all(format!("<6>{marker}{name}\n").as_bytes());
    }

    /// The problems the kernel reported since [`Kmsg::drain`]: the records read are the
    /// test's window, between its markers, judged as every log is ([`kernlog::scan`]).
    fn problems(&mut self) -> Vec<kernlog::Problem> {
        kernlog::scan(self.read_new().iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let a = parse_args(
            ["--module", "m.ko", "--logs=/x", "a", "b"]
                .iter()
                .map(|s| s.to_string()),
        )
        .unwrap();
        assert_eq!(a.module, Some(PathBuf::from("m.ko")));
        assert_eq!(a.logs, PathBuf::from("/x"));
        assert_eq!(a.filters, ["a", "b"]);
        assert!(parse_args(["--bogus".to_string()].into_iter()).is_err());
        assert!(parse_args(["--logs".to_string()].into_iter()).is_err());
    }

    #[test]
    fn one_line_reasons() {
        assert_eq!(one_line("a\n\n  b  \n"), "a | b");
        assert_eq!(one_line("\n"), "(no reason given)");
        assert_eq!(first_lines("1\n2\n3\n", 2), "1 | 2 | ... (1 more lines)");
    }

    #[test]
    fn panics_become_failures() {
        let mut ctx = Ctx {
            module: None,
            logs: PathBuf::from("/nonexistent"),
        };
        let r = run_one(&mut ctx, |_| panic!("boom"));
        assert!(r.unwrap_err().contains("boom"));
    }

    /// Runs `f` as the harness runs a test. (fork() from libtest's threads: run these with
    /// `--test-threads=1`, as `make check` does, so that no other thread holds a lock the
    /// child needs.)
    fn isolated(f: fn(&mut Ctx) -> TestResult, timeout: Duration) -> Outcome {
        let mut ctx = Ctx {
            module: None,
            logs: PathBuf::from("/nonexistent"),
        };
        run_isolated(&mut ctx, f, timeout)
    }

    #[test]
    fn isolated_results() {
        let t = Duration::from_secs(20);
        assert_eq!(isolated(|_| Ok(()), t).result, Ok(()));
        assert_eq!(
            isolated(|_| Err("nope".into()), t).result,
            Err("nope".into())
        );
        let r = isolated(|_| panic!("boom"), t).result.unwrap_err();
        assert!(r.contains("boom"), "{r}");
    }

    #[test]
    fn isolated_crashes_are_named() {
        let t = Duration::from_secs(20);
        let r = isolated(
            |_| {
                // Rust's own SIGSEGV handler only catches stack overflows; a crash is the
                // default action.
                // SAFETY: Resetting and raising a signal in the test's own process.
                unsafe {
                    libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                    libc::raise(libc::SIGSEGV);
                }
                Ok(())
            },
            t,
        );
        assert_eq!(
            r.result,
            Err("the test process was killed by signal 11 (SIGSEGV)".into())
        );
        let r = isolated(|_| std::process::abort(), t);
        assert_eq!(
            r.result,
            Err("the test process was killed by signal 6 (SIGABRT)".into())
        );
        let r = isolated(|_| std::process::exit(3), t);
        assert_eq!(
            r.result,
            Err("the test process exited with status 3 without a result".into())
        );
    }

    #[test]
    fn isolated_hang_times_out() {
        let r = isolated(
            |_| {
                std::thread::sleep(Duration::from_secs(60));
                Ok(())
            },
            Duration::from_millis(300),
        );
        assert!(!r.stuck);
        let e = r.result.unwrap_err();
        assert!(
            e.starts_with("hung: still running after its 0 s timeout"),
            "{e}"
        );
    }
}
