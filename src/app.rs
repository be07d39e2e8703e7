//! The edge: turns a parsed command line into work and an exit code. Errors reach the user
//! once, here, as one line.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cli::{Cli, Command, TelemetryCommand};
use crate::config::{self, ConfigError, EXIT_CONFIG, Env, LoadedConfig};
use crate::host::{self, Roots};
use crate::telemetry::{self, optout};

/// Exit code for a runtime failure (e.g. `telemetry send` could not deliver).
pub const EXIT_FAILURE: i32 = 1;

/// Loads the configuration the command line and environment point at.
pub fn load_config(cli: &Cli, env: &dyn Env) -> Result<LoadedConfig, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| Path::new(".").to_path_buf());
    let source = config::choose_source(cli.config.as_deref(), env, &cwd);
    config::load(source, env)
}

/// Runs the command; returns the process exit code. `env` is shared because `run` hands it to
/// the long-running scheduler.
pub fn run(cli: Cli, env: Arc<dyn Env>) -> i32 {
    match dispatch(cli, &env) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("butler-agent: {e}");
            EXIT_CONFIG
        }
    }
}

fn dispatch(cli: Cli, shared: &Arc<dyn Env>) -> Result<i32, ConfigError> {
    let env = shared.as_ref();
    let command = cli.command.as_ref().unwrap_or(&Command::Run);
    let roots = Roots::at(&cli.root);
    match command {
        Command::Telemetry(TelemetryCommand::Preview(args)) => {
            let cfg = load_config(&cli, env)?;
            preview(&cfg, &roots, args.compact)
        }
        Command::Telemetry(TelemetryCommand::Status(args)) => {
            let cfg = load_config(&cli, env)?;
            status(&cfg, env, args.json)
        }
        Command::Host(args) => {
            let facts = host::detect(&roots);
            if args.json {
                println!("{}", to_json(&facts, false));
            } else {
                for (k, v) in serde_json::to_value(&facts)
                    .unwrap_or_default()
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    println!("{k:<20} {v}");
                }
            }
            Ok(0)
        }
        Command::Id(args) => {
            let cfg = load_config(&cli, env)?;
            let id = crate::instance_id::derive(&roots, cfg.butler.qrs_host.as_deref());
            println!("{}", id.id);
            if args.explain {
                println!("method: {}", id.method);
                for input in &id.inputs {
                    println!("input:  {input}");
                }
            }
            Ok(0)
        }
        Command::Run => {
            let cfg = load_config(&cli, env)?;
            Ok(crate::run::run(cfg, Arc::clone(shared), roots))
        }
        Command::Telemetry(TelemetryCommand::Send) | Command::Sink(_) => {
            if !matches!(command, Command::Sink(_)) {
                load_config(&cli, env)?;
            }
            eprintln!("butler-agent: this command is not built yet");
            Ok(EXIT_FAILURE)
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T, compact: bool) -> String {
    let r = if compact {
        serde_json::to_string(v)
    } else {
        serde_json::to_string_pretty(v)
    };
    r.expect("serializing plain data to JSON cannot fail")
}

fn preview(cfg: &LoadedConfig, roots: &Roots, compact: bool) -> Result<i32, ConfigError> {
    let snapshot = telemetry::gather(cfg, roots);
    for w in &snapshot.features.warnings {
        tracing::warn!("{w}");
    }
    match telemetry::event(cfg, &snapshot, SystemTime::now()) {
        Ok(body) => {
            println!("{}", to_json(&body, compact));
            Ok(0)
        }
        Err(e) => {
            eprintln!("butler-agent: no random source for the event's UUID: {e}");
            Ok(EXIT_FAILURE)
        }
    }
}

fn status(cfg: &LoadedConfig, env: &dyn Env, json: bool) -> Result<i32, ConfigError> {
    let decision = optout::decide(env, cfg.butler.anon_telemetry)?;
    let destination = format!("{}/i/v0/e/", cfg.agent.posthog_host);
    if json {
        let mut v = serde_json::to_value(decision).expect("plain data");
        v["destination"] = destination.into();
        v["intervalSeconds"] = cfg.agent.interval.as_secs().into();
        v["configFile"] = cfg.source.to_string().into();
        println!("{}", to_json(&v, false));
    } else {
        println!("telemetry:   {}", decision.explain());
        println!("destination: {destination}");
        println!(
            "interval:    {}",
            humantime::format_duration(cfg.agent.interval)
        );
        println!("config file: {}", cfg.source);
    }
    Ok(0)
}
