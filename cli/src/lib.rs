//! Process set-up shared by the project's binaries (`span-marker` here, `span-marker-bench` in
//! the `bench` crate): logging, the allocator, standard output and error, and how errors (and
//! bugs) end the process.
//!
//! Standard output and standard error may fail (a full disk: `> /dev/full`; a closed
//! descriptor): the binaries never print with `println!`/`eprintln!`, which panic then (and a
//! panic while reporting a panic aborts). Output is written with `writeln!` and its error
//! returned; messages and log records go through [`note!`] and [`Stderr`], which remember a
//! failed write so that the process still ends with a failure code ([`run`]).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// `eprintln!` that cannot panic: a message on standard error through [`Stderr`].
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let line = ::std::format!("{}\n", ::std::format_args!($($arg)*));
        let _ = $crate::Stderr.write_all(line.as_bytes());
    }};
}

/// Prepares the process: log records at `warn` and above (or as `RUST_LOG` says) go to
/// standard error (coloured only on a terminal, and never with `NO_COLOR` set), freed tensor
/// memory stays in the process
/// ([`span_marker::device::tune_host_allocator`]), and a closed standard output
/// (`span-marker predict ... | head`) ends the process quietly, as it ends other command-line
/// tools, instead of making every later print fail.
pub fn init() {
    let _ = STARTED.set(std::time::Instant::now());
    #[cfg(unix)]
    // SAFETY: resets one signal's disposition to the default at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // Ballista's client logs a failed job's error in its debug form (the command
                // reports it readably), and its scheduler an error about metrics display on
                // every job that runs fine.
                "warn,ballista_core::execution_plans::distributed_query=off,ballista_scheduler::display=off"
                    .into()
            }),
        )
        .with_ansi(colours_on_stderr())
        .with_writer(|| Stderr)
        // A record that cannot be written is remembered by `Stderr`, not reported on the
        // stream that just failed.
        .log_internal_errors(false)
        .init();
    span_marker::device::tune_host_allocator();
    report_bugs_as_errors();
}

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Seconds since [`init`] (the start of `main`); 0 when it was not called.
pub fn seconds_since_start() -> f64 {
    STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// Undoes [`init`]'s default handling of `SIGPIPE` for commands that talk over sockets (the
/// cluster programs and clients): there a peer that hangs up must be an error on that
/// connection, not the silent end of the process.
pub fn ignore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: sets one signal's disposition to "ignore"; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Exit code of a run stopped by a bug (`EX_SOFTWARE`).
const INTERNAL_ERROR: u8 = 70;

/// Replaces Rust's panic report (a thread name, a source location and a hint about
/// backtraces) with an error message that says what happened and what to do. A last line of
/// defence: every failure the program knows of is an ordinary error, so this appears only for
/// bugs, here or in a library (such as a reader panicking on a corrupt file).
fn report_bugs_as_errors() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|at| format!(" at {}:{}", at.file(), at.line()))
            .unwrap_or_default();
        note!(
            "error: internal error: {message}{location}\n  this is a bug in span-marker or in \
             a library it uses: please report it with the command that caused it"
        );
    }));
}

/// Runs a command and turns its outcome into the process's exit code: success, a failure
/// after printing the error and its causes, or `70` after an internal error (a bug). Output
/// that could not be written (standard output on a full disk, standard error closed) fails
/// the run too.
pub fn run(command: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // What is still buffered must reach standard output before the run counts as done.
        command().and_then(|()| Ok(stdout().flush()?))
    })) {
        Ok(result) => exit_code(result),
        Err(_) => ExitCode::from(INTERNAL_ERROR),
    };
    if STDERR_FAILED.load(Ordering::Relaxed) && code == ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    code
}

/// Parses the command line as [`clap::Parser::parse`] does, except that a help or version text
/// (or a usage error) that cannot be written ends the process with a failure code rather than
/// success.
pub fn parse_args<P: clap::Parser>() -> Result<P, ExitCode> {
    P::try_parse().map_err(|error| {
        let (stream, closed) = if error.use_stderr() {
            ("standard error", &STDERR_FAILED)
        } else {
            ("standard output", &STDOUT_CLOSED)
        };
        let closed = closed.load(Ordering::Relaxed);
        let written = error
            .print()
            .and_then(|()| std::io::stdout().flush())
            .and_then(|()| std::io::stderr().flush())
            .and_then(|()| match closed {
                true => Err(std::io::Error::other("it is closed")),
                false => Ok(()),
            });
        match written {
            Ok(()) => ExitCode::from(error.exit_code().clamp(0, 255) as u8),
            Err(e) => {
                note!("error: cannot write to {stream}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Standard output as the binaries write to it: locked, and a failed write says it was
/// standard output that failed (`cannot write to standard output: No space left on device`).
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// See [`stdout`].
pub struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    fn failed(e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_READER_GONE.store(true, Ordering::Relaxed);
        }
        std::io::Error::new(e.kind(), format!("cannot write to standard output: {e}"))
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "cannot write to standard output: it is closed",
            ));
        }
        self.0.write(buf).map_err(Self::failed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::failed)
    }
}

/// Set when the process started with standard output closed (`>&-`). Rust's runtime puts
/// `/dev/null` there before `main`, so that what is written vanishes without an error:
/// [`Stdout`] reports it instead.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Records which standard streams the process started with closed, before `main`: each binary
/// calls this once at its top level. (Only on Linux, where the constructor is listed in
/// `.init_array`; elsewhere a closed stream reads as `/dev/null`, as Rust's runtime leaves it.)
#[macro_export]
macro_rules! record_closed_streams_at_start {
    () => {
        /// Runs before Rust's runtime replaces closed standard streams with `/dev/null`.
        #[cfg(target_os = "linux")]
        #[used]
        #[link_section = ".init_array"]
        static RECORD_CLOSED_STREAMS: extern "C" fn() = $crate::record_closed_streams;
    };
}

/// Records which standard streams the process started with closed. It must run before Rust's
/// runtime opens `/dev/null` in their place: see [`record_closed_streams_at_start!`].
pub extern "C" fn record_closed_streams() {
    #[cfg(unix)]
    for (fd, closed) in [(1, &STDOUT_CLOSED), (2, &STDERR_FAILED)] {
        // SAFETY: fcntl(F_GETFD) only reads a descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed.store(true, Ordering::Relaxed);
        }
    }
}

/// Set once standard output's reader went away (a broken pipe).
static STDOUT_READER_GONE: AtomicBool = AtomicBool::new(false);

/// Set once a write to standard error failed.
static STDERR_FAILED: AtomicBool = AtomicBool::new(false);

/// Standard error as the binaries write to it (log records, messages): a failed write is
/// remembered (the run then ends with a failure code, see [`run`]) and otherwise ignored,
/// since there is nowhere left to report it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            STDERR_FAILED.store(true, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if std::io::stderr().flush().is_err() {
            STDERR_FAILED.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Whether log records on standard error get colours: only on a terminal, and not when
/// `NO_COLOR` is set (<https://no-color.org>).
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The exit code of a run: success, or failure after printing the error and its causes.
fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    // Standard output closed by its reader (`... | head`) where SIGPIPE is ignored: the
    // reader has what it wanted. (A broken pipe elsewhere, a socket, is an error.)
    if STDOUT_READER_GONE.load(Ordering::Relaxed)
        && error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return ExitCode::SUCCESS;
    }
    let mut shown = error.to_string();
    note!("error: {shown}");
    let mut source = error.source();
    while let Some(cause) = source {
        // Wrappers (DataFusion's `External error: ...`) repeat their cause: say it once.
        let text = cause.to_string();
        if !shown.contains(&text) {
            note!("  caused by: {text}");
        }
        shown = text;
        source = cause.source();
    }
    ExitCode::FAILURE
}
