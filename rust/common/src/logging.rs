//! Structured logging with `tracing`, filtered by `EGGS_LOG` (e.g. `EGGS_LOG=debug`).

/// Installs a stderr subscriber; `default` is used when `EGGS_LOG` is unset.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EGGS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
