//! Command-line interface (clap derive). `run` is the default command.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

/// Anonymous telemetry and health endpoint for Butler, the Qlik Sense companion.
#[derive(Debug, Parser)]
#[command(name = "butler-agent", version, about, long_about = None)]
pub struct Cli {
    /// Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it
    /// exists, else built-in defaults].
    /// An empty path is a configuration error (exit 64), reported like a bad file.
    #[arg(long, global = true, value_name = "FILE",
          value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub(crate) config: Option<PathBuf>,

    /// Read host facts (/etc, /proc, /sys, ...) below this directory instead of /.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub(crate) root: PathBuf,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent: health endpoint and scheduled telemetry (the default).
    Run,
    /// Inspect or send the telemetry event.
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
    /// Print what the agent detects about this host, and the rule that decided each fact.
    Host(HostArgs),
    /// Print the anonymous instance ID.
    Id(IdArgs),
    /// Run a minimal PostHog-compatible capture endpoint that prints what it receives.
    Sink(SinkArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TelemetryCommand {
    /// Print the exact JSON body that would be sent. Sends nothing, opens no socket.
    Preview(PreviewArgs),
    /// Print whether telemetry is on and which setting decided it.
    Status(StatusArgs),
    /// Send one event now and print the outcome; exits non-zero on failure.
    Send,
}

#[derive(Debug, Args)]
pub(crate) struct PreviewArgs {
    /// One line instead of pretty-printed JSON.
    #[arg(long)]
    pub(crate) compact: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct HostArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// Print which derivation and which inputs were used (names and sources, never values).
    #[arg(long)]
    pub(crate) explain: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SinkArgs {
    /// Address to listen on, e.g. 127.0.0.1:18080 or 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: std::net::SocketAddr,
    /// Also append each accepted event, one JSON line each, to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}
