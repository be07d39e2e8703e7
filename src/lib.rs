//! butler-agent: anonymous telemetry and a health endpoint for Butler, the Qlik Sense companion.
//!
//! # Layout
//! - [`config`]: Butler's YAML file, the agent's own settings, the environment.
//! - [`butler`]: the Butler the agent serves: its version (`serviceVersion`) and its health
//!   (`/readyz`'s `butler` check).
//! - [`files`]: bounded, non-blocking reads; the agent's own files (0600/0700, atomic,
//!   never through a symbolic link).
//! - [`host`]: where the agent runs (OS, VM, container), read below one root path.
//! - [`instance_id`]: the anonymous, stable instance ID.
//! - [`telemetry`]: feature flags, the event, the opt-out decision, and delivery (privacy
//!   guard, sender with retries, schedule, audit log, state file).
//! - [`sink`]: a minimal PostHog-compatible capture endpoint, for tests and inspection.
//! - [`health`]: the health server (`/health`, `/livez`, `/readyz`).
//! - [`http`]: what the outgoing HTTP clients share (User-Agent, CA file, error chains).
//! - [`connections`]: the connection limits the health server and the sink share.
//! - [`agent`]: the long-running agent (`butler-agent run`) and its start-up banner.
//! - [`random`]: the operating system's random source.
//! - [`runtime`]: the tokio runtimes and the one "now plus a duration" on their clock.
//! - [`signals`]: SIGTERM and SIGINT (stop), SIGHUP (re-read the config), installed together.
//! - [`shutdown`]: the stop token every server and loop takes.
//! - [`cli`] and [`app`]: the command line and the commands.
//! - [`error`]: the one failure type of every command, and its exit code.
//! - [`logging`]: the log filter, which keeps dependencies' logs quiet.
//! - [`output`]: log lines and the sink's events, written without ever blocking.

pub(crate) mod agent;
pub mod app;
pub(crate) mod butler;
pub mod cli;
pub mod config;
pub(crate) mod connections;
pub(crate) mod error;
pub(crate) mod files;
pub mod health;
pub mod host;
pub(crate) mod http;
pub(crate) mod instance_id;
pub mod logging;
pub mod output;
pub mod random;
pub(crate) mod runtime;
pub(crate) mod shutdown;
pub(crate) mod signals;
pub mod sink;
pub mod telemetry;

#[cfg(test)]
mod test_support;
