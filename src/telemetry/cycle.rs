//! One telemetry cycle: re-read the config, decide, build, guard, deliver, record.
//!
//! [`Runner::cycle`] is called by the schedule ([`super::schedule`]), which only decides
//! when. Each cycle:
//! 1. re-reads the config file (a sidecar reports Butler's current features without a
//!    restart); a file that has become invalid keeps the last good config, with one warning,
//!    and every change is logged by key name;
//! 2. decides opt-out again — when off, nothing is built and no socket is opened;
//! 3. asks Butler for its version (`serviceVersion`, see [`crate::butler`]: at most the retry
//!    window for a Butler still starting), builds the event and runs the privacy guard on the
//!    exact bytes to be sent;
//! 4. puts it in the one-slot [`Outbox`] (a newer snapshot replaces an undelivered one: a
//!    snapshot, not a queue, so memory stays flat however long the destination is away);
//! 5. delivers it with bounded retries, then writes the audit log and the state file.
//!
//! # Never on the runtime thread
//! Steps 1 and 3 read files (the config, host facts, the secret), may ask the Docker engine
//! for its ID and scan the body against every known value: blocking or heavy work. They run
//! on tokio's blocking pool, so the health server and the signal handlers on the runtime
//! thread keep answering whatever a cycle does. A cycle whose work has not finished within
//! [`Inputs::limit`] ([`CYCLE_TIME_LIMIT`]) is abandoned with one warning; while that work
//! is still running (a FIFO that never gets a writer, say), later cycles are skipped rather
//! than piling up threads. A stop request ends the wait at once.
//!
//! [`prepare`] and [`record`] are shared with `telemetry send`.

use std::collections::HashSet;
use std::future::Future;
use std::mem::Discriminant;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use super::guard::{self, Finding, Known};
use super::retry::{Attempt, GiveUpReason, RetryPolicy, Streak, StreakLog};
use super::sender::{self, Delivery, SetupError, Transport};
use super::state::LastAttempt;
use super::{audit, optout, state};
use crate::butler::{self, ServiceVersion};
use crate::config::table::SETTINGS;
use crate::config::{self, AgentSettings, ConfigError, Env, LoadedConfig};
use crate::host::{Roots, Syscalls};
use crate::instance_id::Warning;
use crate::random::NoRandom;
use crate::runtime;
use crate::signals::Reread;

/// How long one cycle's blocking work (config, host facts, ID, build, guard) may take before
/// the cycle is abandoned. Normally it takes milliseconds; the Docker engine query alone is
/// bounded to 1.5 s.
pub(crate) const CYCLE_TIME_LIMIT: Duration = Duration::from_secs(30);

/// What a cycle reads besides the config: the environment, the host files, and its time limit.
#[derive(Clone)]
pub(crate) struct Inputs {
    pub env: Arc<dyn Env>,
    pub roots: Roots,
    /// Interface addresses, CPUID, the Docker engine: the real ones only at the edge.
    pub sys: Arc<dyn Syscalls>,
    pub limit: Duration,
}

/// The one event waiting to be delivered, if any. One slot: putting a new event drops the old.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
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
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.slot.is_some())
    }
}

/// What one cycle did, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CycleOutcome {
    /// Telemetry is off: nothing was built or sent.
    Off,
    /// The privacy guard refused the event.
    Refused(guard::Kind),
    /// The cycle's work did not finish within its time limit; it was abandoned.
    Abandoned,
    /// The cycle's work panicked (a bug); the cycle ended, the agent goes on.
    Panicked,
    /// The previous cycle's abandoned work is still running; this cycle did nothing.
    Skipped,
    /// A stop was requested while the cycle's work was running.
    Stopped,
    /// The event could not be built or the client could not be set up.
    Error(String),
    /// A re-read of the config was asked for before the event was sent: nothing was sent.
    Reread(Reread),
    /// A delivery was attempted.
    Sent {
        delivered: bool,
        attempts: u32,
        interrupted: bool,
        /// A re-read of the config was asked for between attempts and ended them.
        reread: Option<Reread>,
    },
}

/// The scheduler's memory between cycles. Every field is bounded: the outbox holds at most
/// one event, the streak is two counters, the error slots one string each.
#[derive(Debug)]
pub(crate) struct Runner {
    /// The last good config.
    pub(crate) config: LoadedConfig,
    pub outbox: Outbox,
    pub(crate) streak: Streak,
    config_error: Option<String>,
    optout_error: Option<String>,
    was_enabled: Option<bool>,
    refusal: Option<guard::Kind>,
    /// Where the last `serviceVersion` came from, so a change is logged once.
    version_state: Option<String>,
    /// Held by the cycle's work on the blocking pool: more than one holder means work of an
    /// abandoned cycle is still running.
    in_flight: Arc<()>,
    /// Whether the current stretch of skipped cycles has been logged.
    skip_logged: bool,
    /// The kinds of instance-ID warning already logged: each is said once per process.
    id_warned: HashSet<Discriminant<Warning>>,
}

/// How waiting for off-thread work ended.
enum Waited<R> {
    Done(R),
    TimedOut,
    Panicked,
    Stopped,
}

impl Runner {
    pub(crate) fn new(config: LoadedConfig) -> Self {
        Runner {
            config,
            outbox: Outbox::default(),
            streak: Streak::default(),
            config_error: None,
            optout_error: None,
            was_enabled: None,
            refusal: None,
            version_state: None,
            in_flight: Arc::new(()),
            skip_logged: false,
            id_warned: HashSet::new(),
        }
    }

    /// Whether the config file loaded on its latest read (else the last good config is used).
    pub(crate) fn config_loads(&self) -> bool {
        self.config_error.is_none()
    }

    /// Whether work of an abandoned cycle still runs on the blocking pool.
    pub(crate) fn still_working(&self) -> bool {
        Arc::strong_count(&self.in_flight) > 1
    }

    /// Re-reads the config file off the serving threads, within the cycle's limit.
    async fn load_off_thread(
        &self,
        inputs: &Inputs,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Waited<Result<LoadedConfig, ConfigError>> {
        let deadline = runtime::after(inputs.limit);
        let source = self.config.source.clone();
        let env = Arc::clone(&inputs.env);
        self.off_thread(deadline, shutdown, move || config::load(source, &*env))
            .await
    }

    /// Runs `work` on the blocking pool and waits for it until `deadline` or until `shutdown`
    /// completes. Work that is given up on runs to its end on its thread, holding
    /// `in_flight`.
    async fn off_thread<R, W>(
        &self,
        deadline: Instant,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
        work: W,
    ) -> Waited<R>
    where
        R: Send + 'static,
        W: FnOnce() -> R + Send + 'static,
    {
        let token = Arc::clone(&self.in_flight);
        let handle = tokio::task::spawn_blocking(move || {
            let _token = token;
            work()
        });
        tokio::select! {
            joined = tokio::time::timeout_at(deadline, handle) => match joined {
                Ok(Ok(r)) => Waited::Done(r),
                // A panic in the cycle's work ends that cycle, never the agent. (Work on the
                // blocking pool is never cancelled, so a join error is a panic.)
                Ok(Err(_)) => Waited::Panicked,
                Err(_) => Waited::TimedOut,
            },
            _ = shutdown => Waited::Stopped,
        }
    }

    /// Re-reads the config off the runtime thread, within `limit`; logs what changed. Returns
    /// false when `shutdown` completed first (it must not be polled again then).
    pub(crate) async fn reload_now(
        &mut self,
        inputs: &Inputs,
        shutdown: impl Future<Output = ()>,
        asked: bool,
    ) -> bool {
        tokio::pin!(shutdown);
        if self.still_working() {
            tracing::warn!(
                "telemetry: cannot re-read the config now: the previous cycle's work is still \
                 running"
            );
            return true;
        }
        match self.load_off_thread(inputs, shutdown.as_mut()).await {
            Waited::Done(loaded) => {
                self.apply(loaded, asked);
                true
            }
            Waited::TimedOut => {
                tracing::warn!(
                    "telemetry: re-reading the config did not finish within {}; keeping the \
                     current one",
                    humantime::format_duration(inputs.limit)
                );
                true
            }
            Waited::Panicked => {
                tracing::error!(
                    "telemetry: re-reading the config panicked (a bug: the panic message is \
                     above); keeping the current one"
                );
                true
            }
            Waited::Stopped => false,
        }
    }

    /// Re-reads the config on this thread; an invalid file keeps the last good one, warning
    /// once per error.
    #[cfg(test)]
    pub(crate) fn reload(&mut self, env: &dyn Env) {
        let loaded = config::load(self.config.source.clone(), env);
        self.apply(loaded, false);
    }

    /// Takes a freshly loaded config (or keeps the last good one), logging what changed;
    /// `always_log` also says so when nothing did (an explicit re-read asked for it).
    fn apply(&mut self, loaded: Result<LoadedConfig, ConfigError>, always_log: bool) {
        match loaded {
            Ok(cfg) => {
                if self.config_error.take().is_some() {
                    tracing::info!("telemetry: the config file is valid again; using it");
                }
                let changed = changes(&self.config, &cfg);
                if !changed.is_empty() {
                    tracing::info!("config re-read: changed {}", changed.join(", "));
                } else if always_log {
                    tracing::info!("config re-read: nothing changed");
                }
                if needs_restart(&self.config, &cfg) {
                    tracing::info!(
                        "config re-read: the health server and the stop grace keep their \
                         start-up settings until a restart"
                    );
                }
                self.config = cfg;
            }
            Err(e) => {
                let text = e.to_string();
                if always_log || self.config_error.as_deref() != Some(text.as_str()) {
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

    /// [`Runner::cycle_or_reread`] with no re-read (the tests' cycles).
    #[cfg(test)]
    pub(crate) async fn cycle<T, F>(
        &mut self,
        inputs: &Inputs,
        shutdown: impl Future<Output = ()>,
        connect: F,
    ) -> CycleOutcome
    where
        T: Transport,
        F: FnOnce(&AgentSettings) -> Result<T, SetupError>,
    {
        self.cycle_or_reread(inputs, shutdown, std::future::pending(), connect)
            .await
    }

    /// One cycle: re-read the config, then, when telemetry is on, build, guard and deliver.
    /// `connect` builds the transport; it is only called when telemetry is on and the event
    /// passed the guard. `shutdown` is polled until it completes, never after. Retries end
    /// when `reread` completes (the schedule passes the next SIGHUP or change of the file):
    /// see [`sender::deliver_or_reread`].
    pub(crate) async fn cycle_or_reread<T, F>(
        &mut self,
        inputs: &Inputs,
        shutdown: impl Future<Output = ()>,
        reread: impl Future<Output = Reread>,
        connect: F,
    ) -> CycleOutcome
    where
        T: Transport,
        F: FnOnce(&AgentSettings) -> Result<T, SetupError>,
    {
        tokio::pin!(shutdown);
        tokio::pin!(reread);
        if self.still_working() {
            if !self.skip_logged {
                tracing::warn!(
                    "telemetry: skipping this cycle: the work of an abandoned one is still \
                     running (a config or host file that never finishes reading?)"
                );
                self.skip_logged = true;
            }
            return CycleOutcome::Skipped;
        }
        self.skip_logged = false;
        match self.load_off_thread(inputs, shutdown.as_mut()).await {
            Waited::Done(loaded) => self.apply(loaded, false),
            Waited::TimedOut => return self.abandoned(inputs.limit, "re-reading the config"),
            Waited::Panicked => return panicked("re-reading the config"),
            Waited::Stopped => return CycleOutcome::Stopped,
        }
        if !self.enabled(&*inputs.env) {
            // Off means off: no event, no client, no socket.
            self.outbox.clear();
            return CycleOutcome::Off;
        }
        let settings = self.config.agent.clone();
        let destination = sender::capture_url(&settings.posthog_host);
        let policy = RetryPolicy::new(settings.max_retries);
        let wait = butler::starting_wait(policy.base_delay, policy.max_delay, policy.max_retries);
        let Some(version) =
            butler::service_version(&self.config.butler, &settings, wait, shutdown.as_mut()).await
        else {
            return CycleOutcome::Stopped;
        };
        self.note_version(&version);
        // The time limit is for the blocking work; the wait for Butler above is bounded apart.
        let deadline = runtime::after(inputs.limit);
        let prepared = {
            let version = version.value;
            let (config, roots, sys) = (
                self.config.clone(),
                inputs.roots.clone(),
                Arc::clone(&inputs.sys),
            );
            self.off_thread(deadline, shutdown.as_mut(), move || {
                prepare(&config, &roots, &*sys, &version)
            })
            .await
        };
        let prepared = match prepared {
            Waited::Done(p) => p,
            Waited::TimedOut => return self.abandoned(inputs.limit, "building the event"),
            Waited::Panicked => return panicked("building the event"),
            Waited::Stopped => return CycleOutcome::Stopped,
        };
        for w in prepared.id_warnings {
            if self.id_warned.insert(std::mem::discriminant(&w)) {
                tracing::warn!("{w}");
            }
        }
        let body = match prepared.body {
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
                let text = e.to_string();
                tracing::warn!("telemetry: {text}");
                save_state(&settings, "error", None, text.clone(), 0, &destination);
                return CycleOutcome::Error(text);
            }
        };
        self.refusal = None;
        self.outbox.put(body);
        // A re-read asked for while the event was being prepared (the wait for Butler can
        // last minutes): the new config may be an opt-out, so nothing goes out before it is
        // read. The event stays in the outbox for the next cycle.
        if let Some(why) = ready_now(reread.as_mut()).await {
            return CycleOutcome::Reread(why);
        }
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
        let delivery =
            sender::deliver_or_reread(&transport, &body, &policy, shutdown.as_mut(), reread).await;
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
        } else if delivery.reread.is_some() {
            tracing::info!(
                "telemetry: retries stopped to re-read the config; the next cycle builds the \
                 event anew from it"
            );
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
            reread: delivery.reread,
        }
    }
}

/// `future`'s output if it is ready now, without waiting for it.
async fn ready_now<F: Future>(mut future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// A cycle whose work panicked: said as such (the panic hook has printed the message), never
/// as a time-out.
fn panicked(step: &str) -> CycleOutcome {
    tracing::error!(
        "telemetry: cycle abandoned: {step} panicked (a bug: the panic message is above); the \
         health endpoint is not affected, the next cycle tries again"
    );
    CycleOutcome::Panicked
}

impl Runner {
    /// Logs where `serviceVersion` comes from when that changed since the last cycle (never
    /// the URL: the setting that gave it).
    fn note_version(&mut self, v: &ServiceVersion) {
        let text = v.describe(false);
        if self.version_state.as_deref() == Some(text.as_str()) {
            return;
        }
        match &v.source {
            butler::Source::Failed(..) => tracing::warn!(
                "telemetry: serviceVersion is {}: {}; it is asked again each cycle",
                v.value(),
                v.source_text(false)
            ),
            _ => tracing::info!("telemetry: serviceVersion {text}"),
        }
        self.version_state = Some(text);
    }

    fn abandoned(&self, limit: Duration, step: &str) -> CycleOutcome {
        tracing::warn!(
            "telemetry: cycle abandoned: {step} did not finish within {}; the health endpoint \
             is not affected, the next cycle tries again",
            humantime::format_duration(limit)
        );
        CycleOutcome::Abandoned
    }
}

/// The keys whose values differ between two configs, by name only (values may be private):
/// Butler's steering keys, every agent setting of [`SETTINGS`] in its order, and the rest of
/// the file as one.
pub(crate) fn changes(old: &LoadedConfig, new: &LoadedConfig) -> Vec<&'static str> {
    let (a, b) = (&old.butler, &new.butler);
    let butler = [
        ("Butler.anonTelemetry", a.anon_telemetry != b.anon_telemetry),
        ("Butler.configQRS.host", a.qrs_host != b.qrs_host),
        (
            "Butler.dockerHealthCheck",
            a.docker_health_check != b.docker_health_check,
        ),
    ];
    let agent = SETTINGS
        .iter()
        .map(|s| (s.path, (s.differs)(&old.agent, &new.agent)));
    let rest = (
        "other values (features, guarded strings)",
        old.tree != new.tree,
    );
    butler
        .into_iter()
        .chain(agent)
        .chain([rest])
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}

/// Whether a setting read once at start-up differs: it keeps its old value until a restart.
fn needs_restart(old: &LoadedConfig, new: &LoadedConfig) -> bool {
    SETTINGS
        .iter()
        .any(|s| s.restart && (s.differs)(&old.agent, &new.agent))
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
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}; nothing was sent")]
    Refused(Finding),
    #[error(transparent)]
    NoRandom(#[from] NoRandom),
}

/// What [`prepare`] made: the body (or why there is none), and what the ID's derivation asks
/// the caller to tell the user (logged by the caller, once).
#[derive(Debug)]
pub struct Prepared {
    pub body: Result<Bytes, PrepareError>,
    pub(crate) id_warnings: Vec<Warning>,
}

/// Gathers the snapshot, builds the event, serializes it once, and runs the privacy guard on
/// those exact bytes against what the snapshot read. `service_version` is Butler's version (or
/// `unknown`), found before: asking Butler is I/O.
pub fn prepare(
    cfg: &LoadedConfig,
    roots: &Roots,
    sys: &dyn Syscalls,
    service_version: &str,
) -> Prepared {
    let snapshot = super::gather(cfg, roots, sys);
    for w in &snapshot.features.warnings {
        tracing::warn!("{w}");
    }
    let body = super::event(cfg, &snapshot, service_version, SystemTime::now())
        .map_err(PrepareError::from)
        .and_then(|event| {
            let text = serde_json::to_string(&event).expect("serializing a JSON value cannot fail");
            guard::check(&text, &Known::from(&snapshot, cfg)).map_err(PrepareError::Refused)?;
            Ok(Bytes::from(text))
        });
    Prepared {
        body,
        id_warnings: snapshot.id_warnings,
    }
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
