//! The telemetry schedule: when cycles run. One shortly after start, then one every interval
//! (plus a small random offset); SIGHUP re-reads the config at once.
//!
//! [`run`] is a background task of `butler-agent run`: it never delays start-up or the health
//! endpoint, logs its own failures instead of returning them, and stops when its shutdown
//! trigger completes. What a cycle does is [`super::cycle`]'s business.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::cycle::{CYCLE_TIME_LIMIT, CycleOutcome, Inputs, Runner};
use super::sender::{self, HttpTransport};
use crate::config::{Env, LoadedConfig};
use crate::health::Readiness;
use crate::host::{Roots, Syscalls};
use crate::runtime;
use crate::signals::{Hangups, Reread};

/// The random offset added to each interval, as a fraction of it: a fleet started together
/// spreads over 5 % of the interval (36 minutes at 12 h) instead of sending in the same second.
/// Only ever added, so no interval is shorter than configured.
pub(crate) const JITTER_FRACTION: f64 = 0.05;

/// What the scheduler needs from the `run` command.
pub(crate) struct ScheduleContext {
    /// The config as loaded at start: the last good one until a cycle reads a newer one (from
    /// the same source).
    pub initial: LoadedConfig,
    pub env: Arc<dyn Env>,
    pub roots: Roots,
    /// SIGHUP or a change of the config file: re-read the config now.
    pub hangups: Hangups,
    /// Interface addresses, CPUID, the Docker engine (the real ones only at the edge).
    pub sys: Arc<dyn Syscalls>,
    /// Told after every config read whether the file loaded (`/readyz`'s config check).
    pub readiness: Readiness,
}

/// Runs the schedule until `shutdown` completes.
pub(crate) async fn run(ctx: ScheduleContext, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let ScheduleContext {
        initial,
        env,
        roots,
        mut hangups,
        readiness,
        sys,
    } = ctx;
    let inputs = Inputs {
        env,
        roots,
        sys,
        limit: CYCLE_TIME_LIMIT,
    };
    let mut runner = Runner::new(initial);
    let start_delay = runner.config.agent.start_delay;
    tracing::debug!(
        delay = %humantime::format_duration(start_delay),
        "telemetry: first event after the start delay"
    );
    let mut pause = start_delay;
    loop {
        // The pause, during which SIGHUP re-reads the config; a stop ends it.
        let due = runtime::after(pause);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                _ = shutdown.as_mut() => return,
                why = hangups.recv() => {
                    if !reread(&mut runner, &inputs, shutdown.as_mut(), &readiness, why).await {
                        return;
                    }
                }
            }
        }
        // SIGHUP or a change of the file also ends a delivery's retries (an opt-out written
        // meanwhile is obeyed before the next attempt, not after the last).
        let outcome = runner
            .cycle_or_reread(
                &inputs,
                shutdown.as_mut(),
                hangups.recv(),
                HttpTransport::new,
            )
            .await;
        readiness.set_config_valid(runner.config_loads());
        // A cycle that saw the trigger complete: it must not be polled again.
        if matches!(
            outcome,
            CycleOutcome::Stopped
                | CycleOutcome::Sent {
                    interrupted: true,
                    ..
                }
        ) {
            return;
        }
        pause = jittered(runner.config.agent.interval, sender::random_unit());
        // A re-read asked for during the cycle ended its retries (the next cycle comes an
        // interval later, as after retries that ran out: a file that keeps changing must not
        // turn their back-off into one attempt per change), or came before anything was sent
        // (the event is built again from the config as it now is, after the start delay; a
        // cycle that finds telemetry off sends nothing).
        let (asked, nothing_sent) = match outcome {
            CycleOutcome::Sent {
                reread: Some(why), ..
            } => (Some(why), false),
            CycleOutcome::Reread(why) => (Some(why), true),
            _ => (None, false),
        };
        if let Some(why) = asked {
            if !reread(&mut runner, &inputs, shutdown.as_mut(), &readiness, why).await {
                return;
            }
            if nothing_sent {
                pause = runner.config.agent.start_delay;
            }
        }
    }
}

/// Re-reads the config now, as SIGHUP or a change of the file asks; `false` when a stop came
/// during the re-read (the caller returns).
async fn reread(
    runner: &mut Runner,
    inputs: &Inputs,
    shutdown: impl Future<Output = ()>,
    readiness: &Readiness,
    why: Reread,
) -> bool {
    match why {
        Reread::Signal => tracing::info!("SIGHUP received: re-reading the config"),
        Reread::FileChanged => tracing::info!("the config file changed: re-reading it"),
    }
    // SIGHUP asks: its outcome is always logged. A change of the file is logged as a cycle's
    // re-read is (what changed; an error once).
    let asked = why == Reread::Signal;
    let reloaded = runner.reload_now(inputs, shutdown, asked).await;
    readiness.set_config_valid(runner.config_loads());
    reloaded
}

/// `interval` plus a random offset of up to [`JITTER_FRACTION`]; `unit` is in `[0, 1)`.
/// Saturates instead of overflowing, whatever the interval.
pub(crate) fn jittered(interval: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let offset = Duration::try_from_secs_f64(interval.as_secs_f64() * JITTER_FRACTION * unit)
        .unwrap_or(Duration::ZERO);
    interval.saturating_add(offset)
}

#[cfg(test)]
mod tests;
