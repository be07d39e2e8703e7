//! The commands: turns a parsed command line into work and output. Every command returns a
//! [`Failure`]; `main` reports it once, as one line, and exits with its code.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::butler::{self, ServiceVersion};
use crate::cli::{Cli, Command, TelemetryCommand};
use crate::config::{self, ConfigError, Env, LoadedConfig};
use crate::error::Failure;
use crate::host::{self, RealSyscalls, Roots};
use crate::runtime;
use crate::telemetry::{self, optout};

/// Loads the configuration the command line and environment point at.
fn load_config(cli: &Cli, env: &dyn Env) -> Result<LoadedConfig, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| Path::new(".").to_path_buf());
    let source = config::choose_source(cli.config.as_deref(), env, &cwd);
    config::load(source, env)
}

/// Logs to stderr (stdout carries command output) through the non-blocking writer.
/// `BUTLER_LOG_FORMAT=json` gives one JSON object per line; the level comes from
/// `BUTLER_LOG_LEVEL`, else `RUST_LOG`, else `info`. A log variable that cannot be read is a
/// configuration failure.
pub fn init_logging(env: &dyn Env) -> Result<(), Failure> {
    let settings = crate::logging::Settings::from_env(env)?;
    crate::logging::init(&settings);
    Ok(())
}

/// Runs the command. `env` is shared because `run` hands it to the long-running scheduler.
pub fn dispatch(cli: Cli, shared: &Arc<dyn Env>) -> Result<(), Failure> {
    let env = shared.as_ref();
    let command = cli.command.as_ref().unwrap_or(&Command::Run);
    let roots = Roots::from_env(&cli.root, env)?;
    match command {
        Command::Telemetry(TelemetryCommand::Preview(args)) => {
            let cfg = load_config(&cli, env)?;
            print(&preview(&cfg, &roots, args.compact)?)
        }
        Command::Telemetry(TelemetryCommand::Status(args)) => {
            let cfg = load_config(&cli, env)?;
            print(&status(&cfg, env, args.json)?)
        }
        Command::Host(args) => {
            let facts = host::detect_with(&roots, &RealSyscalls);
            print(&if args.json {
                format!("{}\n", to_json(&facts, false))
            } else {
                host::render_table(&facts)
            })
        }
        Command::Id(args) => {
            let cfg = load_config(&cli, env)?;
            let facts = host::detect_with(&roots, &RealSyscalls);
            let derived = crate::instance_id::derive_with(
                &roots,
                &facts,
                telemetry::id_config(&cfg),
                &RealSyscalls,
            );
            for w in &derived.warnings {
                tracing::warn!("{w}");
            }
            let id = derived.id;
            let mut text = format!("{}\n", id.id);
            if args.explain {
                text += &format!("method: {}\n", id.method);
                for input in &id.inputs {
                    text += &format!("input:  {input}\n");
                }
            }
            print(&text)
        }
        Command::Telemetry(TelemetryCommand::Send) => {
            let cfg = load_config(&cli, env)?;
            print(&send(&cfg, &roots, env)?)
        }
        Command::Sink(args) => crate::sink::run(args.listen, args.out.clone()),
        Command::Run => {
            let cfg = load_config(&cli, env)?;
            crate::agent::run(cfg, Arc::clone(shared), roots)
        }
    }
}

/// Writes a command's output to stdout in one go. A failed write is a [`Failure::Output`]; a
/// reader that went away (`| head`) ends the command quietly.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::Output)
}

fn to_json<T: serde::Serialize>(v: &T, compact: bool) -> String {
    let r = if compact {
        serde_json::to_string(v)
    } else {
        serde_json::to_string_pretty(v)
    };
    r.expect("serializing plain data to JSON cannot fail")
}

/// Asks for `serviceVersion` once, as a cycle would but without waiting for a Butler that is
/// still starting: a person is waiting for the answer.
fn service_version(cfg: &LoadedConfig) -> Result<ServiceVersion, Failure> {
    runtime::block_on(async {
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        let found = butler::service_version(&cfg.butler, &cfg.agent, Duration::ZERO, never).await;
        // Without a stop trigger the lookup always ends with an answer.
        Ok(found.unwrap_or_else(|| ServiceVersion {
            value: butler::UNKNOWN.into(),
            source: butler::Source::Interrupted,
        }))
    })
}

fn preview(cfg: &LoadedConfig, roots: &Roots, compact: bool) -> Result<String, Failure> {
    let version = service_version(cfg)?;
    // Beside the body, not in it: stdout stays the exact body. A closed stderr loses the line.
    let _ = writeln!(
        std::io::stderr(),
        "serviceVersion: {}",
        version.describe(true)
    );
    let snapshot = telemetry::gather(cfg, roots, &RealSyscalls);
    for w in &snapshot.features.warnings {
        tracing::warn!("{w}");
    }
    for w in &snapshot.id_warnings {
        tracing::warn!("{w}");
    }
    let body = telemetry::event(cfg, &snapshot, version.value(), SystemTime::now())?;
    // The guard sees the bytes a send would serialize; the body is printed either way.
    let text = serde_json::to_string(&body).unwrap_or_default();
    let known = telemetry::guard::Known::from(&snapshot, cfg);
    if let Err(finding) = telemetry::guard::check(&text, &known) {
        eprintln!(
            "butler-agent: a send would be refused: the privacy guard found {} in this event",
            finding.kind
        );
    }
    Ok(format!("{}\n", to_json(&body, compact)))
}

fn status(cfg: &LoadedConfig, env: &dyn Env, json: bool) -> Result<String, Failure> {
    let decision = optout::decide(env, cfg.butler.anon_telemetry)?;
    let version = service_version(cfg)?;
    let destination = telemetry::sender::capture_url(&cfg.agent.posthog_host);
    let last = match &cfg.agent.state_dir {
        Some(dir) => telemetry::state::load(dir).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        }),
        None => None,
    };
    if json {
        let mut v = serde_json::to_value(decision).expect("plain data");
        v["destination"] = destination.into();
        v["intervalSeconds"] = cfg.agent.interval.as_secs().into();
        v["configFile"] = cfg.source.to_string().into();
        v["stateDir"] = cfg
            .agent
            .state_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .into();
        v["lastAttempt"] = serde_json::to_value(&last).expect("plain data");
        v["serviceVersion"] = version.value().into();
        v["serviceVersionSource"] = version.source_text(true).into();
        return Ok(format!("{}\n", to_json(&v, false)));
    }
    let mut out = format!(
        "telemetry:    {}\ndestination:  {destination}\n\
         interval:     {} (plus up to {}% random offset)\nconfig file:  {}\n\
         serviceVersion: {}\n",
        decision.explain(),
        humantime::format_duration(cfg.agent.interval),
        (telemetry::schedule::JITTER_FRACTION * 100.0) as u32,
        cfg.source,
        version.describe(true),
    );
    out += &match (&cfg.agent.state_dir, &last) {
        (None, _) => "last attempt: not recorded (no state directory set)\n".to_string(),
        (Some(_), None) => "last attempt: none yet\n".to_string(),
        (Some(_), Some(l)) => format!(
            "last attempt: {}\nresult:       {} ({} {})\n",
            l.time,
            l.detail,
            l.attempts,
            if l.attempts == 1 { "try" } else { "tries" }
        ),
    };
    Ok(out)
}

/// `telemetry send`: one event now, one try, the outcome printed. Succeeds when delivered or
/// when telemetry is off (nothing is sent then: the user's choice is honoured, not an error);
/// fails when it could not be delivered or the privacy guard refused it.
fn send(cfg: &LoadedConfig, roots: &Roots, env: &dyn Env) -> Result<String, Failure> {
    use telemetry::{cycle, sender};
    let decision = optout::decide(env, cfg.butler.anon_telemetry)?;
    if !decision.enabled {
        return Ok(format!("not sent: telemetry is {}\n", decision.explain()));
    }
    let destination = sender::capture_url(&cfg.agent.posthog_host);
    let version = service_version(cfg)?;
    let prepared = cycle::prepare(cfg, roots, &RealSyscalls, version.value());
    for w in &prepared.id_warnings {
        tracing::warn!("{w}");
    }
    let body = prepared.body?;
    sender::check_ca_file(&cfg.agent).map_err(Failure::CaFile)?;
    let transport = sender::HttpTransport::new(&cfg.agent)?;
    let tried = runtime::block_on::<_, Failure>(async {
        Ok(sender::Transport::send(&transport, &body).await)
    })?;
    let delivery = sender::Delivery {
        sent: if tried.body_may_have_left {
            vec![(SystemTime::now(), tried.attempt.clone())]
        } else {
            Vec::new()
        },
        last: tried.attempt,
        attempts: 1,
        gave_up: None,
        interrupted: false,
        reread: None,
    };
    cycle::record(&cfg.agent, &destination, &delivery, &body);
    let uuid = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["uuid"].as_str().map(str::to_string))
        .unwrap_or_default();
    let line = format!("{destination}: {} (event {uuid})", delivery.last.describe());
    if delivery.delivered() {
        Ok(format!("{line}\n"))
    } else {
        Err(Failure::NotDelivered(line))
    }
}
