//! The Butler this agent serves: its version for the event's `serviceVersion`, and its health
//! for the `butler` check of `/readyz`.
//!
//! # Where Butler answers (facts from Butler 16.0.4's source)
//! - `GET /v4/butlerping` answers `{"response":"Butler reporting for duty","butlerVersion":"…"}`
//!   (`butlerVersion` since Butler 6.0). It exists only when both `Butler.restServerConfig.enable`
//!   and `Butler.restServerEndpointsEnable.butlerping` are true (both false in Butler's
//!   template), on `serverHost:serverPort`, over HTTPS when `restServerConfig.tls.enable` is true.
//!   No authentication; a rate limit of 100 calls a minute by default, then 429.
//! - Butler's Docker health endpoint (`Butler.dockerHealthCheck`, port 12398) listens on
//!   loopback only: a sidecar reaches it only in Butler's network namespace (a Kubernetes pod,
//!   compose `network_mode: service:butler`).
//!
//! # The version, in this order
//! `BUTLER_VERSION`; else Butler's answer at the **Butler API URL** ([`api`]: `BUTLER_API_URL` or
//! `Butler.butlerAgent.butlerApiUrl`, else derived from `Butler.restServerConfig` when both
//! switches are on); else `"unknown"`, with the reason ([`ServiceVersion`]). Never the agent's own
//! version: that is `$lib_version`.
//!
//! The Butler URL and host are never sent (the privacy guard knows them, see
//! `telemetry::guard`), and never in a log line: logs and `/readyz` name the setting instead;
//! only the commands a person runs (`telemetry status`, `preview`) print the URL.
//!
//! Where Butler answers (the URL, the readiness target) is read from the config by
//! [`crate::config::butler`], pure; here [`probe`] does the HTTP, [`ready`] the readiness check.

pub(crate) mod probe;
pub(crate) mod ready;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::butler::{Api, NoApi, PING_PATH, api};
use crate::config::{AgentSettings, ButlerKeys};
use probe::PingError;

/// `serviceVersion` when Butler's version cannot be known.
pub(crate) const UNKNOWN: &str = "unknown";
/// The longest wait for a Butler that is still starting, whatever the retry settings.
pub(crate) const MAX_STARTING_WAIT: Duration = Duration::from_secs(5 * 60);

/// Where `serviceVersion` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `BUTLER_VERSION`.
    EnvVar,
    /// Butler's answer.
    Ping(Api),
    /// No Butler API URL: why.
    NoApi(NoApi),
    /// The lookup was stopped before it had an answer.
    Interrupted,
    /// The Butler API URL gave no version: what it answered.
    Failed(Api, PingError),
}

/// The event's `serviceVersion` and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceVersion {
    pub(crate) value: String,
    pub(crate) source: Source,
}

impl ServiceVersion {
    /// `unknown`, or the version.
    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// Where the value came from, in words. `show_url`: name the URL (for the commands a person
    /// runs); otherwise the setting that gave it (for logs).
    pub(crate) fn source_text(&self, show_url: bool) -> String {
        let at = |api: &Api| {
            if show_url {
                api.url.clone()
            } else {
                api.from.name().to_string()
            }
        };
        match &self.source {
            Source::EnvVar => "BUTLER_VERSION".into(),
            Source::Ping(api) => format!("Butler's {PING_PATH} at {}", at(api)),
            Source::NoApi(why) => why.to_string(),
            Source::Interrupted => "the lookup was interrupted".into(),
            Source::Failed(api, e) => format!("{} {e}", at(api)),
        }
    }

    /// `16.0.4 (Butler's /v4/butlerping at http://127.0.0.1:8080)`.
    pub(crate) fn describe(&self, show_url: bool) -> String {
        format!("{} ({})", self.value, self.source_text(show_url))
    }
}

/// How long to wait for a Butler that does not answer yet: the delivery's retry window (the
/// pauses of `max_retries` retries from `base_delay`, doubling, each at most `max_delay`:
/// 2 + 4 + 8 + 16 + 32 s by default), at most [`MAX_STARTING_WAIT`]. Pure.
pub(crate) fn starting_wait(
    base_delay: Duration,
    max_delay: Duration,
    max_retries: u32,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut pause = base_delay;
    for _ in 0..max_retries {
        total = total.saturating_add(pause.min(max_delay));
        if total >= MAX_STARTING_WAIT {
            return MAX_STARTING_WAIT;
        }
        pause = pause.saturating_mul(2);
    }
    total
}

/// Finds `serviceVersion`: `BUTLER_VERSION`, else Butler's answer, else `unknown` with the
/// reason. A Butler that does not answer yet (refused, timed out, 429, 5xx) is asked again
/// within `wait`; `None` when `shutdown` completed first (it must not be polled again then).
pub(crate) async fn service_version(
    butler: &ButlerKeys,
    agent: &AgentSettings,
    wait: Duration,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<ServiceVersion> {
    if let Some(v) = &agent.butler_version {
        return Some(ServiceVersion {
            value: v.clone(),
            source: Source::EnvVar,
        });
    }
    let api = match api(butler, agent) {
        Ok(api) => api,
        Err(why) => {
            return Some(ServiceVersion {
                value: UNKNOWN.into(),
                source: Source::NoApi(why),
            });
        }
    };
    let client = match probe::client(agent) {
        Ok(c) => c,
        Err(e) => {
            return Some(ServiceVersion {
                value: UNKNOWN.into(),
                source: Source::Failed(api, e),
            });
        }
    };
    let until = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_secs(1);
    loop {
        let answer = tokio::select! {
            a = probe::ping(&client, &api.url) => a,
            _ = shutdown.as_mut() => return None,
        };
        let error = match answer {
            Ok(version) => {
                return Some(ServiceVersion {
                    value: version,
                    source: Source::Ping(api),
                });
            }
            Err(e) => e,
        };
        let next = tokio::time::Instant::now() + pause;
        if !error.is_transient() || next > until {
            return Some(ServiceVersion {
                value: UNKNOWN.into(),
                source: Source::Failed(api, error),
            });
        }
        tracing::debug!("Butler did not answer yet ({error}); asking again in {pause:?}");
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.as_mut() => return None,
        }
        pause = (pause * 2).min(Duration::from_secs(8));
    }
}

#[cfg(test)]
mod tests;
