//! `butler-agent`: parse the command line, set up logging, run, report a failure once, exit
//! with its code.

use std::io::Write;

use clap::Parser;

use butler_agent::{app, cli::Cli, config::ProcessEnv};

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let env: std::sync::Arc<dyn butler_agent::config::Env> = std::sync::Arc::new(ProcessEnv);
    if let Err(failure) = app::dispatch(cli, &env) {
        if !failure.is_quiet() {
            // A closed or failing stderr loses the line, never the exit code.
            let _ = writeln!(std::io::stderr(), "butler-agent: {failure}");
        }
        std::process::exit(failure.exit_code());
    }
}

/// Logs go to stderr (stdout carries command output). `BUTLER_LOG_FORMAT=json` gives one JSON
/// object per line; the level comes from `BUTLER_LOG_LEVEL`, else `RUST_LOG`, else `info`.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let user = std::env::var("BUTLER_LOG_LEVEL")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok());
    let filter = butler_agent::logging::filter(user.as_deref());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // A closed or failing stderr drops log lines; the default would report the failed
        // write on that same stderr, which panics.
        .log_internal_errors(false)
        // Colour codes only for a person at a terminal, not in `docker logs` or log shippers.
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var("BUTLER_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        registry.with(layer.json()).init();
    } else {
        registry.with(layer).init();
    }
}
