//! Process set-up shared by the project's binaries (`span-marker` here, `span-marker-bench` in
//! the `bench` crate): logging, the allocator, standard output, and how errors (and bugs) end
//! the process.

use std::process::ExitCode;

/// Prepares the process: log records at `warn` and above (or as `RUST_LOG` says) go to
/// standard error, freed tensor memory stays in the process
/// ([`span_marker::device::tune_host_allocator`]), and a closed standard output
/// (`span-marker predict ... | head`) ends the process quietly, as it ends other command-line
/// tools, instead of making every later print fail.
pub fn init() {
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
        .with_writer(std::io::stderr)
        .init();
    span_marker::device::tune_host_allocator();
    report_bugs_as_errors();
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
        eprintln!(
            "error: internal error: {message}{location}\n  this is a bug in span-marker or in \
             a library it uses: please report it with the command that caused it"
        );
    }));
}

/// Runs a command and turns its outcome into the process's exit code: success, a failure
/// after printing the error and its causes, or `70` after an internal error (a bug).
pub fn run(command: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(command)) {
        Ok(result) => exit_code(result),
        Err(_) => ExitCode::from(INTERNAL_ERROR),
    }
}

/// The exit code of a run: success, or failure after printing the error and its causes.
fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    // Standard output closed by its reader (`... | head`) where SIGPIPE is ignored: the
    // reader has what it wanted.
    if error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return ExitCode::SUCCESS;
    }
    let mut shown = error.to_string();
    eprintln!("error: {shown}");
    let mut source = error.source();
    while let Some(cause) = source {
        // Wrappers (DataFusion's `External error: ...`) repeat their cause: say it once.
        let text = cause.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        shown = text;
        source = cause.source();
    }
    ExitCode::FAILURE
}
