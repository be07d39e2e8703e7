//! Process-level suites in one test binary (as ripgrep does): each module drives the real
//! `butler-agent` binary or the library across its public surface. Unit tests live beside their
//! code in `src/`; the container suites are `tests/containers`.

mod common;
mod robust_support;

mod bounded_reads;
mod butler;
mod cli;
mod closed_pipes;
mod config_watch;
mod docs;
mod health_run;
mod host_fixtures;
mod instance_id_cli;
mod never_stall;
mod own_files;
mod privacy;
mod readme;
mod robust_files;
mod robust_host;
mod robust_http;
mod robust_limits;
mod robust_network;
mod sink;
mod sink_connections;
mod sink_limits;
mod stalled_pipes;
mod standalone;
mod unreadable_env;
