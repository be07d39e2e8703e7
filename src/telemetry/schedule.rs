//! The telemetry schedule: one event shortly after start, then one every interval.
//!
//! [`run`] is a background task of `butler-agent run`: it never delays start-up or the health
//! endpoint, logs its own failures instead of returning them, and stops when its shutdown
//! trigger completes. Each cycle:
//! 1. re-reads the config file (a sidecar reports Butler's current features without a
//!    restart); a file that has become invalid keeps the last good config, with one warning;
//! 2. decides opt-out again — when off, nothing is built and no socket is opened;
//! 3. builds the event and runs the privacy guard on the exact bytes to be sent;
//! 4. puts it in the one-slot [`Outbox`] (a newer snapshot replaces an undelivered one: a
//!    snapshot, not a queue, so memory stays flat however long the destination is away);
//! 5. delivers it with bounded retries, then writes the audit log and the state file.
//!
//! [`prepare`] and [`record`] are shared with `telemetry send`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::guard::{self, Finding};
use super::retry::{Attempt, GiveUpReason, RetryPolicy, Streak, StreakLog};
use super::sender::{self, Delivery, HttpTransport, SetupError, Transport};
use super::state::LastAttempt;
use super::{audit, optout, state};
use crate::config::{self, AgentSettings, ConfigSource, Env, LoadedConfig};
use crate::host::Roots;

/// The random offset added to each interval, as a fraction of it: a fleet started together
/// spreads over 5 % of the interval (36 minutes at 12 h) instead of sending in the same second.
/// Only ever added, so no interval is shorter than configured.
pub(crate) const JITTER_FRACTION: f64 = 0.05;

/// What the scheduler needs from the `run` command.
pub struct ScheduleContext {
    /// Where the config came from; re-read each cycle.
    pub source: ConfigSource,
    /// The config as loaded at start: the last good one until a cycle reads a newer one.
    pub initial: LoadedConfig,
    pub env: Arc<dyn Env>,
    pub roots: Roots,
}

/// Runs the schedule until `shutdown` completes.
pub async fn run(ctx: ScheduleContext, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut runner = Runner::new(ctx.initial);
    let start_delay = runner.config.agent.start_delay;
    tracing::debug!(
        delay = %humantime::format_duration(start_delay),
        "telemetry: first event after the start delay"
    );
    if sleep_or_shutdown(start_delay, shutdown.as_mut()).await {
        return;
    }
    loop {
        runner.reload(&ctx.source, &*ctx.env);
        let outcome = runner
            .cycle(&*ctx.env, &ctx.roots, shutdown.as_mut(), HttpTransport::new)
            .await;
        // An interrupted delivery saw the trigger complete: it must not be polled again.
        if matches!(
            outcome,
            CycleOutcome::Sent {
                interrupted: true,
                ..
            }
        ) {
            return;
        }
        let pause = jittered(runner.config.agent.interval, sender::random_unit());
        if sleep_or_shutdown(pause, shutdown.as_mut()).await {
            return;
        }
    }
}

/// `interval` plus a random offset of up to [`JITTER_FRACTION`]; `unit` is in `[0, 1)`.
pub(crate) fn jittered(interval: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    interval + interval.mul_f64(JITTER_FRACTION * unit)
}

/// Sleeps; returns true when shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: impl Future<Output = ()>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown => true,
    }
}

/// The one event waiting to be delivered, if any. One slot: putting a new event drops the old.
#[derive(Debug, Default)]
pub struct Outbox {
    slot: Option<Bytes>,
}

impl Outbox {
    /// Puts the newest snapshot in, dropping an undelivered older one.
    pub(crate) fn put(&mut self, body: Bytes) {
        if self.slot.replace(body).is_some() {
            tracing::debug!("telemetry: a newer snapshot replaces the undelivered one");
        }
    }
    pub(crate) fn peek(&self) -> Option<&Bytes> {
        self.slot.as_ref()
    }
    pub(crate) fn clear(&mut self) {
        self.slot = None;
    }
    /// 0 or 1.
    pub fn len(&self) -> usize {
        usize::from(self.slot.is_some())
    }
    pub fn is_empty(&self) -> bool {
        self.slot.is_none()
    }
}

/// What one cycle did, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CycleOutcome {
    /// Telemetry is off: nothing was built or sent.
    Off,
    /// The privacy guard refused the event.
    Refused(guard::Kind),
    /// The event could not be built or the client could not be set up.
    Error(String),
    /// A delivery was attempted.
    Sent {
        delivered: bool,
        attempts: u32,
        interrupted: bool,
    },
}

/// The scheduler's memory between cycles. Every field is bounded: the outbox holds at most
/// one event, the streak is two counters, the error slots one string each.
#[derive(Debug)]
pub struct Runner {
    /// The last good config.
    pub(crate) config: LoadedConfig,
    pub outbox: Outbox,
    pub(crate) streak: Streak,
    config_error: Option<String>,
    optout_error: Option<String>,
    was_enabled: Option<bool>,
    refusal: Option<guard::Kind>,
}

impl Runner {
    pub fn new(config: LoadedConfig) -> Self {
        Runner {
            config,
            outbox: Outbox::default(),
            streak: Streak::default(),
            config_error: None,
            optout_error: None,
            was_enabled: None,
            refusal: None,
        }
    }

    /// Re-reads the config; an invalid file keeps the last good one, warning once per error.
    pub(crate) fn reload(&mut self, source: &ConfigSource, env: &dyn Env) {
        match config::load(source.clone(), env) {
            Ok(cfg) => {
                if self.config_error.take().is_some() {
                    tracing::info!("telemetry: the config file is valid again; using it");
                }
                self.config = cfg;
            }
            Err(e) => {
                let text = e.to_string();
                if self.config_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(
                        "telemetry: keeping the last good config; the file is now invalid: {text}"
                    );
                    self.config_error = Some(text);
                }
            }
        }
    }

    /// Whether telemetry is on now. A malformed `BUTLER_ANON_TELEMETRY` counts as off: the
    /// user tried to say something, and sending is the irreversible choice.
    fn enabled(&mut self, env: &dyn Env) -> bool {
        let enabled = match optout::decide(env, self.config.butler.anon_telemetry) {
            Ok(d) => {
                self.optout_error = None;
                if self.was_enabled != Some(d.enabled) {
                    tracing::info!("telemetry {}", d.explain());
                }
                d.enabled
            }
            Err(e) => {
                let text = e.to_string();
                if self.optout_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!("telemetry: off until this is fixed: {text}");
                    self.optout_error = Some(text);
                }
                false
            }
        };
        self.was_enabled = Some(enabled);
        enabled
    }

    /// One cycle with the current config. `connect` builds the transport; it is only called
    /// when telemetry is on and the event passed the guard.
    pub async fn cycle<T, F>(
        &mut self,
        env: &dyn Env,
        roots: &Roots,
        shutdown: impl Future<Output = ()>,
        connect: F,
    ) -> CycleOutcome
    where
        T: Transport,
        F: FnOnce(&AgentSettings) -> Result<T, SetupError>,
    {
        if !self.enabled(env) {
            // Off means off: no event, no client, no socket.
            self.outbox.clear();
            return CycleOutcome::Off;
        }
        let settings = self.config.agent.clone();
        let destination = sender::capture_url(&settings.posthog_host);
        let body = match prepare(&self.config, roots, env) {
            Ok(body) => body,
            Err(PrepareError::Refused(finding)) => {
                if self.refusal.as_ref() != Some(&finding.kind) {
                    tracing::error!("telemetry: {finding}; nothing was sent");
                    self.refusal = Some(finding.kind.clone());
                }
                self.outbox.clear();
                save_state(
                    &settings,
                    "refused",
                    None,
                    finding.to_string(),
                    0,
                    &destination,
                );
                return CycleOutcome::Refused(finding.kind);
            }
            Err(PrepareError::NoRandom(e)) => {
                let text = format!("no random source for the event's UUID: {e}");
                tracing::warn!("telemetry: {text}");
                save_state(&settings, "error", None, text.clone(), 0, &destination);
                return CycleOutcome::Error(text);
            }
        };
        self.refusal = None;
        self.outbox.put(body);
        let transport = match connect(&settings) {
            Ok(t) => t,
            Err(e) => {
                if self.streak.failed(true).is_some() {
                    tracing::warn!("telemetry: cannot send: {e}");
                }
                save_state(&settings, "error", None, e.to_string(), 0, &destination);
                return CycleOutcome::Error(e.to_string());
            }
        };
        let body = self
            .outbox
            .peek()
            .cloned()
            .expect("the outbox was filled just above");
        let policy = RetryPolicy::new(settings.max_retries);
        let delivery = sender::deliver(&transport, &body, &policy, shutdown).await;
        drop(transport);
        record(&settings, &destination, &delivery, &body);
        if delivery.delivered() {
            self.outbox.clear();
            match self.streak.delivered() {
                Some(StreakLog::Recovered { failed_cycles }) => tracing::info!(
                    "telemetry: delivered again to {destination} after {failed_cycles} failed cycle(s)"
                ),
                _ => tracing::info!("telemetry: {} to {destination}", delivery.last.describe()),
            }
        } else if !delivery.interrupted {
            let rejected = delivery.gave_up == Some(GiveUpReason::Rejected);
            if self.streak.failed(rejected).is_some() {
                tracing::warn!(
                    "telemetry: could not deliver to {destination}: {} ({}); the next cycle \
                     tries again with a fresh snapshot. Butler and the health endpoint are not \
                     affected",
                    delivery.last.describe(),
                    give_up_words(&delivery),
                );
            }
        }
        CycleOutcome::Sent {
            delivered: delivery.delivered(),
            attempts: delivery.attempts,
            interrupted: delivery.interrupted,
        }
    }
}

fn give_up_words(d: &Delivery) -> String {
    match d.gave_up {
        Some(GiveUpReason::Rejected) => "not retried".into(),
        Some(GiveUpReason::RetriesExhausted) => format!("{} attempts", d.attempts),
        Some(GiveUpReason::RetryAfterTooLong) => {
            "the destination asked to wait past the next cycle".into()
        }
        None => format!("{} attempts", d.attempts),
    }
}

/// Why no body could be prepared.
#[derive(Debug)]
pub enum PrepareError {
    Refused(Finding),
    NoRandom(getrandom::Error),
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Refused(finding) => write!(f, "{finding}; nothing was sent"),
            PrepareError::NoRandom(e) => write!(f, "no random source for the event's UUID: {e}"),
        }
    }
}

impl std::error::Error for PrepareError {}

/// Builds the event, serializes it once, and runs the privacy guard on those exact bytes.
pub fn prepare(cfg: &LoadedConfig, roots: &Roots, env: &dyn Env) -> Result<Bytes, PrepareError> {
    let snapshot = super::gather(cfg, roots);
    for w in &snapshot.features.warnings {
        tracing::warn!("{w}");
    }
    let event = super::event(cfg, &snapshot, SystemTime::now()).map_err(PrepareError::NoRandom)?;
    let text = serde_json::to_string(&event).expect("serializing a JSON value cannot fail");
    guard::inspect(&text, cfg, roots, env, &snapshot.host).map_err(PrepareError::Refused)?;
    Ok(Bytes::from(text))
}

/// Writes the audit lines for every try whose body may have left, and the state file.
pub(crate) fn record(settings: &AgentSettings, destination: &str, d: &Delivery, body: &[u8]) {
    if let Some(path) = &settings.audit_log {
        for (time, attempt) in &d.sent {
            let line = audit::line(*time, destination, attempt, body);
            if let Err(e) = audit::append(path, settings.audit_log_max_bytes, &line) {
                tracing::warn!(
                    "telemetry: cannot write the audit log {}: {e}",
                    path.display()
                );
            }
        }
    }
    let result = match &d.last {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Rejected { .. } => "rejected",
        Attempt::Transient { .. } => "failed",
    };
    save_state(
        settings,
        result,
        d.last.status(),
        d.last.describe(),
        d.attempts,
        destination,
    );
}

fn save_state(
    settings: &AgentSettings,
    result: &str,
    status: Option<u16>,
    detail: String,
    attempts: u32,
    destination: &str,
) {
    let Some(dir) = &settings.state_dir else {
        return;
    };
    let last = LastAttempt::new(
        SystemTime::now(),
        result,
        status,
        detail,
        attempts,
        destination,
    );
    if let Err(e) = state::save(dir, &last) {
        tracing::warn!(
            "telemetry: cannot write the state file in {}: {e}",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests;
