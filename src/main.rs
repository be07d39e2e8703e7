//! `butler-agent`: parse the command line, set up logging, run, exit with the code.

use clap::Parser;

use butler_agent::{app, cli::Cli, config::ProcessEnv};

fn main() {
    let cli = Cli::parse();
    init_tracing();
    std::process::exit(app::run(cli, std::sync::Arc::new(ProcessEnv)));
}

/// Logs go to stderr (stdout carries command output). `BUTLER_LOG_FORMAT=json` gives one JSON
/// object per line; the level comes from `BUTLER_LOG_LEVEL`, else `RUST_LOG`, else `info`.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BUTLER_LOG_LEVEL")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in `docker logs` or log shippers.
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("BUTLER_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
