//! The agent that `butler-agent run` runs, top to bottom.
//!
//! 1. Install the SIGTERM/SIGINT handlers (PID 1 ignores SIGTERM without one) and the SIGHUP
//!    one (re-read the config now; never a stop).
//! 2. Bind and start the health server first, so probes get answers (`/readyz` 503) while
//!    start-up work runs. It starts even before the config file is read ([`EarlyHealth`]) on
//!    the address the environment and the defaults give, and is kept when the file does not
//!    say otherwise (reading the file is most of start-up: the YAML parse of Butler's whole
//!    config).
//! 3. Gather host facts and the instance ID on the blocking pool: they read files and may be
//!    slow on odd hosts, and must not stall the health server.
//! 4. Release the readiness latch, log the start-up banner (Butler's lines), start the
//!    telemetry scheduler.
//! 5. Wait for a stop signal; then stop accepting, let health requests in flight finish, give
//!    the telemetry task [`AgentSettings::shutdown_grace`](crate::config::AgentSettings) to
//!    finish a send, and exit 0. A second signal cuts the grace short.
//!
//! It runs on the runtime of [`crate::shutdown::block_on_serving`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AgentSettings, Env, LoadedConfig};
use crate::error::Failure;
use crate::health::{self, Limits, Readiness};
use crate::host::{RealSyscalls, Roots};
use crate::shutdown::{self, Signals, Stop, StopTrigger};
use crate::telemetry::{self, Snapshot, optout, payload, schedule};

/// Runs the agent until a stop signal; `load` reads the config file.
pub(crate) fn run(
    load: impl FnOnce() -> Result<LoadedConfig, Failure>,
    env: Arc<dyn Env>,
    roots: Roots,
) -> Result<(), Failure> {
    shutdown::block_on_serving(async move {
        let (stop, stop_token) = shutdown::stop_channel();
        let readiness = Readiness::new();
        let early = EarlyHealth::start(env.as_ref(), &readiness, &stop_token);
        let config = load()?;
        let started = Started {
            stop,
            stop_token,
            readiness,
            early,
        };
        agent(config, env, roots, started).await
    })
}

/// What [`run`] sets up before the config file is read.
struct Started {
    stop: StopTrigger,
    stop_token: Stop,
    readiness: Readiness,
    early: Option<EarlyHealth>,
}

/// The health server started before the config file is read, on the address the environment
/// and the defaults give (`BUTLER_HEALTH_HOST`, `BUTLER_HEALTH_PORT`, `BUTLER_HEALTH_ENABLE`).
/// Once the file is read the agent keeps it when the file leaves that address as it is, and
/// otherwise stops it (it has answered nobody but start-up probes, for a few milliseconds)
/// and binds where the file says, or not at all.
struct EarlyHealth {
    /// The address asked for (port 0 stays 0 here; `bound` has the one the OS chose).
    asked: SocketAddr,
    bound: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Stops this server alone; dropped unused when it is kept.
    cancel: StopTrigger,
}

impl EarlyHealth {
    /// Binds and serves, or `None` when the environment turns the server off, holds a bad
    /// value (the config load reports it) or the bind fails (the bind after the config load
    /// reports it, if that address is still the one asked for).
    fn start(env: &dyn Env, readiness: &Readiness, stop: &Stop) -> Option<Self> {
        let settings = AgentSettings::resolve(None, env).ok()?;
        if !settings.health_enable {
            return None;
        }
        let asked = SocketAddr::new(settings.health_host, settings.health_port);
        let listener = health::bind(asked).ok()?;
        let bound = listener.local_addr().unwrap_or(asked);
        let (cancel, cancelled) = shutdown::stop_channel();
        let (stop, cancelled) = (stop.wait(), cancelled.wait());
        let task = tokio::spawn(health::serve(
            listener,
            readiness.clone(),
            Limits::default(),
            async move {
                tokio::select! {
                    () = stop => {}
                    () = cancelled => {}
                }
            },
        ));
        Some(EarlyHealth {
            asked,
            bound,
            task,
            cancel,
        })
    }

    /// The running server if it listens on `wanted` (None: the health server is off), else
    /// stops it and waits for it to end, so that its stop is not mistaken for the next one's.
    async fn keep_if(
        self,
        wanted: Option<SocketAddr>,
    ) -> Option<(tokio::task::JoinHandle<()>, SocketAddr)> {
        if wanted == Some(self.asked) {
            return Some((self.task, self.bound));
        }
        self.cancel.stop();
        if let Err(e) = self.task.await {
            tracing::error!("health server ended abnormally: {e}");
        }
        None
    }
}

async fn agent(
    config: LoadedConfig,
    env: Arc<dyn Env>,
    roots: Roots,
    started: Started,
) -> Result<(), Failure> {
    let Started {
        stop,
        stop_token,
        readiness,
        early,
    } = started;
    let mut signals = Signals::install()?;
    // SIGHUP re-reads the config; installed now so that one during start-up is kept for the
    // schedule instead of stopping the agent.
    let hangups = schedule::Hangups::install().map_err(Failure::Signals)?;
    let decision = optout::decide(env.as_ref(), config.butler.anon_telemetry)?;
    if decision.enabled {
        telemetry::sender::check_ca_file(&config.agent).map_err(Failure::CaFile)?;
    }

    let health_addr = SocketAddr::new(config.agent.health_host, config.agent.health_port);
    let wanted = config.agent.health_enable.then_some(health_addr);
    let kept = match early {
        Some(early) => early.keep_if(wanted).await,
        None => None,
    };
    let mut health_bound = None;
    let health_task = if let Some((task, bound)) = kept {
        health_bound = Some(bound);
        tracing::info!("health server listening on http://{bound} (/health, /livez, /readyz)");
        Some(task)
    } else if config.agent.health_enable {
        let listener = health::bind(health_addr).map_err(|source| Failure::HealthBind {
            addr: health_addr,
            source,
        })?;
        let bound = listener.local_addr().unwrap_or(health_addr);
        health_bound = Some(bound);
        tracing::info!("health server listening on http://{bound} (/health, /livez, /readyz)");
        Some(tokio::spawn(health::serve(
            listener,
            readiness.clone(),
            Limits::default(),
            stop_token.wait(),
        )))
    } else {
        tracing::info!("health server disabled by configuration");
        None
    };

    let gather = {
        let config = config.clone();
        let roots = roots.clone();
        tokio::task::spawn_blocking(move || telemetry::gather(&config, &roots, &RealSyscalls))
    };
    let snapshot = tokio::select! {
        joined = gather => match joined {
            Ok(snapshot) => snapshot,
            Err(e) => {
                stop.stop();
                drain(health_task, None, config.agent.shutdown_grace, signals.recv()).await;
                return Err(Failure::Gather(e.to_string()));
            }
        },
        sig = signals.recv() => {
            tracing::info!("{sig} received during start-up: stopping");
            stop.stop();
            drain(health_task, None, config.agent.shutdown_grace, signals.recv()).await;
            return Ok(());
        }
    };
    readiness.release();
    for line in banner(&config, &snapshot, &roots, decision.explain(), health_bound) {
        tracing::info!("{line}");
    }

    let scheduler = tokio::spawn(schedule::run(
        schedule::ScheduleContext {
            initial: config.clone(),
            env,
            roots,
            hangups,
            readiness,
            sys: Arc::new(RealSyscalls),
        },
        stop_token.wait(),
    ));

    let sig = signals.recv().await;
    let grace = config.agent.shutdown_grace;
    tracing::info!(
        "{sig} received: stopping (telemetry grace {})",
        humantime::format_duration(grace)
    );
    stop.stop();
    drain(health_task, Some(scheduler), grace, signals.recv()).await;
    Ok(())
}

/// Waits for the health server and the scheduler to end, at most `grace`, or until
/// `interrupt` (the next stop signal) completes, and logs which of these happened.
async fn drain(
    health: Option<tokio::task::JoinHandle<()>>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    interrupt: impl std::future::Future<Output = &'static str>,
) {
    let both = async {
        if let Some(h) = health {
            if let Err(e) = h.await {
                tracing::error!("health server ended abnormally: {e}");
            }
        }
        if let Some(s) = scheduler {
            if let Err(e) = s.await {
                tracing::error!("telemetry scheduler ended abnormally: {e}");
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(grace, both) => match r {
            Ok(()) => tracing::info!("stopped"),
            Err(_) => tracing::warn!(
                "stopped: in-flight work did not finish within {}; exiting anyway",
                humantime::format_duration(grace)
            ),
        },
        sig = interrupt => tracing::warn!("stopped at once: second {sig}"),
    }
}

/// The start-up banner, one log line each, in Butler's order and wording where they overlap.
fn banner(
    config: &LoadedConfig,
    snapshot: &Snapshot,
    roots: &Roots,
    telemetry: &str,
    health: Option<SocketAddr>,
) -> Vec<String> {
    let h = &snapshot.host;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory =
        total_memory_bytes(&roots.proc).map_or_else(|| "unknown".to_string(), |b| b.to_string());
    let docker = match &h.container_runtime {
        Some(rt) if h.is_running_in_docker => format!("true ({rt})"),
        Some(rt) => format!("false (container runtime: {rt})"),
        None => h.is_running_in_docker.to_string(),
    };
    let health = health.map_or_else(
        || "disabled".to_string(),
        |a| format!("http://{a} (/health, /livez, /readyz)"),
    );
    let level = tracing::level_filters::LevelFilter::current().to_string();
    let rule = "--------------------------------------".to_string();
    vec![
        rule.clone(),
        "Starting butler-agent".into(),
        format!("Log level         : {}", level.to_lowercase()),
        format!("App version       : {}", env!("CARGO_PKG_VERSION")),
        format!("Instance ID       : {}", snapshot.id.id),
        format!("Running in Docker : {docker}"),
        String::new(),
        format!("Runtime version   : {}", payload::RUNTIME_VERSION),
        format!("Architecture      : {}", h.arch),
        format!("Platform          : {}", h.platform),
        format!("Release           : {}", h.release),
        format!("Distro            : {}", h.distro),
        format!("Codename          : {}", h.codename),
        format!("Virtual           : {}", h.is_virtual),
        format!("CPUs              : {cpus}"),
        format!("Total memory      : {memory}"),
        String::new(),
        format!("Config file       : {}", config.source),
        format!("Health server     : {health}"),
        format!("Telemetry         : {telemetry}"),
        rule,
    ]
}

/// `MemTotal` from `<proc>/meminfo`, in bytes (Node's `os.totalmem()`, which Butler logs).
fn total_memory_bytes(proc: &Path) -> Option<u64> {
    let meminfo = crate::host::read_text(&proc.join("meminfo"))?;
    crate::instance_id::mem_total_bytes(&meminfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_gives_up_on_a_stuck_telemetry_task_after_the_grace() {
        let stuck = tokio::spawn(std::future::pending::<()>());
        let grace = Duration::from_millis(50);
        tokio::time::timeout(
            Duration::from_secs(5),
            drain(None, Some(stuck), grace, std::future::pending()),
        )
        .await
        .expect("drain returns once the grace is over, not when the task ends");
    }

    #[tokio::test]
    async fn drain_returns_as_soon_as_the_work_is_done() {
        let done = tokio::spawn(async {});
        tokio::time::timeout(
            Duration::from_secs(5),
            drain(
                None,
                Some(done),
                Duration::from_secs(3600),
                std::future::pending(),
            ),
        )
        .await
        .expect("a finished task does not wait for the grace");
    }
}
