//! The one failure type of every command. Lower modules return their own typed errors; they
//! become a [`Failure`] where a command gives up, and `main` prints it once and exits with
//! [`Failure::exit_code`]. Nothing below this knows exit numbers.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::random::NoRandom;
use crate::runtime::NoRuntime;
use crate::signals::NoHandlers;
use crate::telemetry::cycle::PrepareError;
use crate::telemetry::sender::SetupError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A bad config file, setting or environment variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `sink --out FILE` cannot be appended to.
    #[error("cannot append to --out {}: {source} (check the path and permissions)", path.display())]
    SinkOut { path: PathBuf, source: io::Error },
    /// The async runtime or the signal handlers could not be set up.
    #[error(transparent)]
    Runtime(#[from] NoRuntime),
    #[error(transparent)]
    Signals(#[from] NoHandlers),
    /// The health port is taken or not allowed.
    #[error(
        "the health server cannot listen on {addr}: {source} (choose another port with \
         BUTLER_HEALTH_PORT or Butler.butlerAgent.healthPort, or turn the server off with \
         BUTLER_HEALTH_ENABLE=false)"
    )]
    HealthBind { addr: SocketAddr, source: io::Error },
    /// The sink's port is taken or not allowed.
    #[error("cannot listen on {addr}: {source} (is the port in use?)")]
    SinkBind { addr: SocketAddr, source: io::Error },
    #[error("sink failed: {0}")]
    Sink(io::Error),
    /// Gathering host facts at start-up ended abnormally.
    #[error("gathering host facts failed: {0}")]
    Gather(String),
    #[error(transparent)]
    NoRandom(#[from] NoRandom),
    /// No event could be built, or the privacy guard refused it.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The CA file setting names an unusable file (checked at start-up).
    #[error("{0}")]
    CaFile(SetupError),
    /// The HTTP client could not be built from the settings.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `telemetry send` tried and did not deliver: the outcome line.
    #[error("{0}")]
    NotDelivered(String),
    /// Standard output could not be written. A closed pipe (`| head`) is not reported.
    #[error("cannot write to standard output: {0}")]
    Output(io::Error),
}

/// Exit code for configuration and usage errors (`EX_USAGE` from sysexits.h).
const EXIT_CONFIG: i32 = 64;
/// Exit code for a runtime failure.
const EXIT_FAILURE: i32 = 1;

impl Failure {
    /// 64 for configuration and usage errors, 1 for runtime failures, 0 for a reader that
    /// went away (stdout closed: the output was not wanted any more, as ripgrep treats it).
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) | Failure::SinkOut { .. } | Failure::CaFile(_) => EXIT_CONFIG,
            Failure::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            _ => EXIT_FAILURE,
        }
    }

    /// Whether the failure is worth a line on stderr (a closed stdout is not).
    pub fn is_quiet(&self) -> bool {
        matches!(self, Failure::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}
