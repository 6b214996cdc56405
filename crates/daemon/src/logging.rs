//! Logging to stderr, text or JSON. The configured level is the floor;
//! `RUST_LOG` directives refine it (e.g. `RUST_LOG=crius=trace,h2=warn`).

use crate::config::{LogFormat, LogLevel};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Whether `init` has run, so fatal errors go to the log rather than raw stderr.
pub fn initialised() -> bool {
    INITIALISED.load(Ordering::Relaxed)
}

/// Transport crates log every HTTP/2 frame at debug; they stay at info unless
/// `RUST_LOG` names them.
const QUIET_DEPS: &[&str] = &[
    "h2=info",
    "sled=info",
    "hyper=info",
    "hyper_util=info",
    "tower=info",
    "tonic=info",
];

/// Builds the filter: `level` for everything, then each `RUST_LOG` directive.
/// Invalid directives are reported and ignored rather than failing start-up.
pub fn filter(level: LogLevel, rust_log: Option<&str>) -> (EnvFilter, Vec<String>) {
    let mut base = vec![level.as_str()];
    if matches!(level, LogLevel::Debug | LogLevel::Trace) {
        base.extend(QUIET_DEPS);
    }
    let mut filter = EnvFilter::new(base.join(","));
    let mut bad = Vec::new();
    for directive in rust_log
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        match directive.parse() {
            Ok(d) => filter = filter.add_directive(d),
            Err(_) => bad.push(directive.to_string()),
        }
    }
    (filter, bad)
}

pub fn init(level: LogLevel, format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, bad) = filter(level, rust_log.as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    INITIALISED.store(true, Ordering::Relaxed);
    for d in bad {
        tracing::warn!(directive = %d, "ignoring invalid RUST_LOG directive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_refines_level() {
        let (f, bad) = filter(LogLevel::Warn, Some("crius=debug, ,not a directive=="));
        assert_eq!(bad, vec!["not a directive==".to_string()]);
        let s = f.to_string();
        assert!(s.contains("warn") && s.contains("crius=debug"), "{s}");
        let (f, bad) = filter(LogLevel::Info, None);
        assert!(bad.is_empty());
        assert_eq!(f.to_string(), "info");
        let (f, _) = filter(LogLevel::Debug, Some("h2=trace"));
        let s = f.to_string();
        assert!(s.contains("h2=trace") && !s.contains("h2=info"), "{s}");
    }
}
