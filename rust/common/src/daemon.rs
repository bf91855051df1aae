//! How every server process starts and ends: logging, capabilities dropped before any other
//! thread exists, a tokio runtime, and one log line (and exit code) for how it ended.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// The tokio runtime a daemon runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Runtime {
    /// One worker thread per core.
    MultiThread,
    /// Everything on the main thread: for loops whose tasks hand work to each other all the
    /// time, where cross-thread wake-ups would cost more than they bring.
    CurrentThread,
}

/// Starts logging, drops every capability but `keep` (servers keep none), builds the
/// runtime and runs `serve` on it until it returns. Logs the error it returns, if any, and
/// says whether it stopped cleanly in the exit code.
pub fn run<F, E>(runtime: Runtime, keep: &[caps::Capability], serve: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    crate::logging::init("info");
    // Before any other thread starts: each thread has its own capabilities.
    if let Err(e) = crate::caps::drop_all_except(keep) {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let rt = match runtime {
        Runtime::MultiThread => tokio::runtime::Runtime::new(),
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
