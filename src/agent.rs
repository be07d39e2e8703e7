//! The agent that `butler-agent run` runs, top to bottom.
//!
//! 1. Install the SIGTERM/SIGINT handlers (PID 1 ignores SIGTERM without one) and the SIGHUP
//!    one (re-read the config now; never a stop).
//! 2. Bind and start the health server first, so probes get answers (`/readyz` 503) while
//!    start-up work runs.
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

use crate::config::{Env, LoadedConfig};
use crate::error::Failure;
use crate::health::{self, Limits, Readiness};
use crate::host::{RealSyscalls, Roots};
use crate::shutdown::{self, Signals};
use crate::telemetry::{self, Snapshot, optout, payload, schedule};

/// Runs the agent until a stop signal.
pub(crate) fn run(config: LoadedConfig, env: Arc<dyn Env>, roots: Roots) -> Result<(), Failure> {
    shutdown::block_on_serving(agent(config, env, roots))
}

async fn agent(config: LoadedConfig, env: Arc<dyn Env>, roots: Roots) -> Result<(), Failure> {
    let mut signals = Signals::install()?;
    // SIGHUP re-reads the config; installed now so that one during start-up is kept for the
    // schedule instead of stopping the agent.
    let hangups = schedule::Hangups::install().map_err(Failure::Signals)?;
    let decision = optout::decide(env.as_ref(), config.butler.anon_telemetry)?;
    if decision.enabled {
        telemetry::sender::check_ca_file(&config.agent).map_err(Failure::CaFile)?;
    }
    let (stop, stop_token) = shutdown::stop_channel();
    let readiness = Readiness::new();

    let health_addr = SocketAddr::new(config.agent.health_host, config.agent.health_port);
    let mut health_bound = None;
    let health_task = if config.agent.health_enable {
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
