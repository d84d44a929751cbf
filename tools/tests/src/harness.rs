//! A tiny sequential test harness (not libtest): a static list of named test functions, a
//! filter on the command line, one `ok` / `not ok` line per test, a results file and a summary.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// The whole program: parses the command line, runs the selected tests of `tests` in order and
/// returns the process exit code (0 all passed, 1 some failed, 2 usage error).
pub fn run_main(tests: &[Test]) -> i32 {
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
    for (name, f) in selected {
        let result = run_one(&mut ctx, *f);
        let (line, record) = match result {
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
}
