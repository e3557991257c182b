//! Logging setup: structured logs (JSON in production, pretty in a terminal), filtered by
//! `RUST_LOG` (default `info`). API keys never reach a log line: they are not fields of any
//! span and [`crate::service::auth::ApiKey`]'s `Debug` hides the secret.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests start several servers) keeps the first subscriber.
    drop(result);
}
