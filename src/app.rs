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
    let roots = Roots::from_env(&cli.root, env);
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
                print!("{}", host::render_table(&facts));
            }
            Ok(0)
        }
        Command::Id(args) => {
            let cfg = load_config(&cli, env)?;
            let facts = host::detect(&roots);
            let id = crate::instance_id::derive(&roots, &facts, telemetry::id_config(&cfg));
            println!("{}", id.id);
            if args.explain {
                println!("method: {}", id.method);
                for input in &id.inputs {
                    println!("input:  {input}");
                }
            }
            Ok(0)
        }
        Command::Telemetry(TelemetryCommand::Send) => {
            let cfg = load_config(&cli, env)?;
            send(&cfg, &roots, env)
        }
        Command::Sink(args) => Ok(sink(args)),
        Command::Run => {
            let cfg = load_config(&cli, env)?;
            Ok(crate::run::run(cfg, Arc::clone(shared), roots))
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
        println!("{}", to_json(&v, false));
    } else {
        println!("telemetry:    {}", decision.explain());
        println!("destination:  {destination}");
        println!(
            "interval:     {} (plus up to {}% random offset)",
            humantime::format_duration(cfg.agent.interval),
            (telemetry::schedule::JITTER_FRACTION * 100.0) as u32
        );
        println!("config file:  {}", cfg.source);
        match (&cfg.agent.state_dir, &last) {
            (None, _) => println!("last attempt: not recorded (no state directory set)"),
            (Some(_), None) => println!("last attempt: none yet"),
            (Some(_), Some(l)) => {
                println!("last attempt: {}", l.time);
                println!(
                    "result:       {} ({} {})",
                    l.detail,
                    l.attempts,
                    if l.attempts == 1 { "try" } else { "tries" }
                );
            }
        }
    }
    Ok(0)
}

/// `telemetry send`: one event now, one try, the outcome printed. Exit 0 when delivered or
/// when telemetry is off (nothing is sent then: the user's choice is honoured, not an error);
/// 1 when it could not be delivered or the privacy guard refused it.
fn send(cfg: &LoadedConfig, roots: &Roots, env: &dyn Env) -> Result<i32, ConfigError> {
    use telemetry::{schedule, sender};
    let decision = optout::decide(env, cfg.butler.anon_telemetry)?;
    if !decision.enabled {
        println!("not sent: telemetry is {}", decision.explain());
        return Ok(0);
    }
    let destination = sender::capture_url(&cfg.agent.posthog_host);
    let body = match schedule::prepare(cfg, roots, env) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("butler-agent: {e}");
            return Ok(EXIT_FAILURE);
        }
    };
    if let Err(e) = sender::check_ca_file(&cfg.agent) {
        eprintln!("butler-agent: {e}");
        return Ok(EXIT_CONFIG);
    }
    let transport = match sender::HttpTransport::new(&cfg.agent) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("butler-agent: {e}");
            return Ok(EXIT_FAILURE);
        }
    };
    let Some(rt) = runtime() else {
        return Ok(EXIT_FAILURE);
    };
    let tried = rt.block_on(sender::Transport::send(&transport, &body));
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
    };
    schedule::record(&cfg.agent, &destination, &delivery, &body);
    let uuid = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["uuid"].as_str().map(str::to_string))
        .unwrap_or_default();
    let line = format!("{destination}: {} (event {uuid})", delivery.last.describe());
    if delivery.delivered() {
        println!("{line}");
        Ok(0)
    } else {
        eprintln!("butler-agent: {line}");
        Ok(EXIT_FAILURE)
    }
}

/// `sink`: serve until SIGINT or SIGTERM.
fn sink(args: &crate::cli::SinkArgs) -> i32 {
    if let Some(out) = &args.out
        && let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
    {
        eprintln!(
            "butler-agent: cannot append to --out {}: {e} (check the path and permissions)",
            out.display()
        );
        return EXIT_CONFIG;
    }
    let Some(rt) = runtime() else {
        return EXIT_FAILURE;
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "butler-agent: cannot listen on {}: {e} (is the port in use?)",
                    args.listen
                );
                return EXIT_FAILURE;
            }
        };
        let addr = listener.local_addr().map_or(args.listen, |a| a);
        tracing::info!("sink: listening on http://{addr} (POST /i/v0/e/, GET /health)");
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("sink: stopping");
            let _ = tx.send(true);
        });
        let output = crate::sink::Output {
            stdout: true,
            file: args.out.clone(),
            channel: None,
        };
        match crate::sink::serve(listener, output, rx).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("butler-agent: sink failed: {e}");
                EXIT_FAILURE
            }
        }
    })
}

/// SIGINT (Ctrl-C) or SIGTERM (docker stop).
async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("butler-agent: cannot start the async runtime: {e}");
            None
        }
    }
}
