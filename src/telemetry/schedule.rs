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

/// The random offset added to each interval, as a fraction of it: a fleet started together
/// spreads over 5 % of the interval (36 minutes at 12 h) instead of sending in the same second.
/// Only ever added, so no interval is shorter than configured.
pub(crate) const JITTER_FRACTION: f64 = 0.05;

/// What the scheduler needs from the `run` command.
pub struct ScheduleContext {
    /// The config as loaded at start: the last good one until a cycle reads a newer one (from
    /// the same source).
    pub initial: LoadedConfig,
    pub env: Arc<dyn Env>,
    pub roots: Roots,
    /// SIGHUP: re-read the config now.
    pub hangups: Hangups,
    /// Interface addresses, CPUID, the Docker engine (the real ones only at the edge).
    pub sys: Arc<dyn Syscalls>,
    /// Told after every config read whether the file loaded (`/readyz`'s config check).
    pub readiness: Readiness,
}

/// Runs the schedule until `shutdown` completes.
pub async fn run(ctx: ScheduleContext, shutdown: impl Future<Output = ()>) {
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
        let due = tokio::time::Instant::now()
            .checked_add(pause)
            .unwrap_or_else(far_future);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                _ = shutdown.as_mut() => return,
                why = hangups.recv() => {
                    match why {
                        Reread::Signal => {
                            tracing::info!("SIGHUP received: re-reading the config");
                        }
                        Reread::FileChanged => {
                            tracing::info!("the config file changed: re-reading it");
                        }
                    }
                    // SIGHUP asks: its outcome is always logged. A change of the file is
                    // logged as a cycle's re-read is (what changed; an error once).
                    let asked = why == Reread::Signal;
                    let reloaded = runner.reload_now(&inputs, shutdown.as_mut(), asked).await;
                    readiness.set_config_valid(runner.config_loads());
                    if !reloaded {
                        return;
                    }
                }
            }
        }
        let outcome = runner
            .cycle(&inputs, shutdown.as_mut(), HttpTransport::new)
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
    }
}

/// A time so far ahead it never comes (about 30 years), for a pause too long to add.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
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

/// Why the config is re-read out of turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reread {
    /// SIGHUP.
    Signal,
    /// The config file's watcher saw it change (see `crate::agent`).
    FileChanged,
}

/// SIGHUP deliveries, installed at start so that a SIGHUP never stops the agent (its default
/// action would), and the config file's changes once [`Hangups::watch`] is given them.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
    changes: Option<tokio::sync::mpsc::Receiver<()>>,
}

impl Hangups {
    /// Installs the SIGHUP handler. Needs a running tokio runtime with I/O enabled.
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Hangups {
                signal: Some(signal(SignalKind::hangup())?),
                changes: None,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Hangups { changes: None })
        }
    }

    /// No SIGHUP handling (tests that drive the schedule themselves).
    pub fn none() -> Self {
        Hangups {
            #[cfg(unix)]
            signal: None,
            changes: None,
        }
    }

    /// Also re-read when `changes` yields (the config file changed).
    pub(crate) fn watch(mut self, changes: tokio::sync::mpsc::Receiver<()>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Waits for the next SIGHUP or change; never completes without either.
    pub(crate) async fn recv(&mut self) -> Reread {
        #[cfg(unix)]
        let sighup = &mut self.signal;
        let changes = &mut self.changes;
        let signal = async {
            #[cfg(unix)]
            if let Some(s) = sighup {
                if s.recv().await.is_some() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        let changed = async {
            if let Some(c) = changes {
                if c.recv().await.is_some() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = signal => Reread::Signal,
            () = changed => Reread::FileChanged,
        }
    }
}

#[cfg(test)]
mod tests;
