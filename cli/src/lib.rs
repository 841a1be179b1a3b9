//! Process set-up shared by the project's binaries (`span-marker` here, `span-marker-bench` in
//! the `bench` crate): logging, the allocator, standard output, and how errors end the process.

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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    span_marker::device::tune_host_allocator();
}

/// The exit code of a run: success, or failure after printing the error and its causes.
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::FAILURE
}
