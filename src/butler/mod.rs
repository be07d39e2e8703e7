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
//! The rules here are pure; [`probe`] does the HTTP, [`ready`] the readiness check.

pub(crate) mod probe;
pub(crate) mod ready;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::settings::DEFAULT_HEALTH_PORT;
use crate::config::{AgentSettings, ButlerKeys};
use probe::PingError;

/// Butler's version endpoint.
pub(crate) const PING_PATH: &str = "/v4/butlerping";
/// `serviceVersion` when Butler's version cannot be known.
pub(crate) const UNKNOWN: &str = "unknown";
/// Butler's `serverPort` in its template.
pub(crate) const DEFAULT_API_PORT: u16 = 8080;
/// The longest wait for a Butler that is still starting, whatever the retry settings.
pub(crate) const MAX_STARTING_WAIT: Duration = Duration::from_secs(5 * 60);

/// The version rule, `^[0-9A-Za-z.+-]{1,64}$`: what Butler's `package.json` versions look like,
/// and nothing that could carry a name, an address with a port, or markup.
pub(crate) fn is_version(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
}

/// `BUTLER_VERSION`: trimmed, and only when it follows the version rule.
pub(crate) fn check_version(raw: &str) -> Result<String, String> {
    let v = raw.trim();
    if is_version(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{:?} is not a version: expected 1 to 64 letters, digits, dots, plus or minus signs, \
             e.g. 16.0.4",
            v.chars().take(80).collect::<String>()
        ))
    }
}

/// Checks a Butler API URL: `http(s)://host[:port][/path]`, no credentials, no query, not
/// PostHog. Returns it without trailing slashes. The message never repeats the URL (it may hold
/// a password).
pub(crate) fn check_api_url(raw: &str, posthog_host: &str) -> Result<String, String> {
    let text = raw.trim().trim_end_matches('/');
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(
            "not an http:// or https:// URL; give Butler's REST API, e.g. http://butler:8080"
                .into(),
        );
    }
    let url = reqwest::Url::parse(text).map_err(|e| {
        format!("not a valid URL ({e}); give Butler's REST API, e.g. http://butler:8080")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL contains credentials (a name or password before @); Butler's REST API \
             takes none: remove them"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "the URL has a query or fragment; give only Butler's base URL, e.g. \
                    http://butler:8080"
                .into(),
        );
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err("the URL has no host".into());
    };
    let host = host.to_ascii_lowercase();
    // The configured destination: same host and port (a self-hosted PostHog may share a host
    // with Butler on another port).
    let same_as_destination = reqwest::Url::parse(posthog_host).ok().is_some_and(|p| {
        p.host_str().map(str::to_ascii_lowercase).as_deref() == Some(host.as_str())
            && p.port_or_known_default() == url.port_or_known_default()
    });
    if host == "posthog.com" || host.ends_with(".posthog.com") || same_as_destination {
        return Err(
            "the URL points at PostHog, the telemetry destination; it must be Butler's REST API, \
             e.g. http://butler:8080"
                .into(),
        );
    }
    Ok(text.to_string())
}

/// How the Butler API URL was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiFrom {
    /// `BUTLER_API_URL` or `Butler.butlerAgent.butlerApiUrl`.
    Setting,
    /// `Butler.restServerConfig`, both switches on.
    Derived,
}

impl ApiFrom {
    /// The URL's name in logs and `/readyz`, where the URL itself never goes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ApiFrom::Setting => {
                "the Butler API URL (BUTLER_API_URL / Butler.butlerAgent.butlerApiUrl)"
            }
            ApiFrom::Derived => "the Butler API URL derived from Butler.restServerConfig",
        }
    }
}

/// Butler's REST API, where `/v4/butlerping` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Api {
    /// Base URL, no trailing slash.
    pub(crate) url: String,
    pub(crate) from: ApiFrom,
}

/// The Butler API URL: the setting, else derived from Butler's config when the REST server and
/// its ping endpoint are both on. `Err`: why there is none, naming the switch to turn on.
pub(crate) fn api(butler: &ButlerKeys, agent: &AgentSettings) -> Result<Api, String> {
    if let Some(url) = &agent.butler_api_url {
        return Ok(Api {
            url: url.clone(),
            from: ApiFrom::Setting,
        });
    }
    let rest = &butler.rest_server;
    let state = |v: Option<bool>| if v.is_some() { "false" } else { "not set" };
    if rest.enable != Some(true) {
        return Err(format!(
            "Butler's REST API is off in the config: Butler.restServerConfig.enable is {}",
            state(rest.enable)
        ));
    }
    if butler.butlerping != Some(true) {
        return Err(format!(
            "Butler's /v4/butlerping is off in the config: \
             Butler.restServerEndpointsEnable.butlerping is {}",
            state(butler.butlerping)
        ));
    }
    let tls = rest.tls.as_ref().and_then(|t| t.enable) == Some(true);
    Ok(Api {
        url: derive_url(
            tls,
            rest.server_host.as_deref(),
            rest.server_port.map(|p| p.0),
        ),
        from: ApiFrom::Derived,
    })
}

/// `http(s)://serverHost:serverPort`; a listen-everywhere host (`0.0.0.0`, `::`) or none means
/// this machine, `127.0.0.1`. Pure.
pub(crate) fn derive_url(tls: bool, host: Option<&str>, port: Option<u16>) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = host.map(str::trim).unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = match host {
        "" | "0.0.0.0" | "::" => "127.0.0.1".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("{scheme}://{host}:{}", port.unwrap_or(DEFAULT_API_PORT))
}

/// What the `butler` readiness check asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Butler's Docker health endpoint, `127.0.0.1:<port>/health`.
    Health(u16),
    /// `/v4/butlerping` at the Butler API URL.
    Ping(Api),
}

impl fmt::Display for Target {
    /// Without the URL: this goes to logs and `/readyz`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Health(port) => write!(f, "Butler's health endpoint on 127.0.0.1:{port}"),
            Target::Ping(api) => write!(f, "Butler's {PING_PATH} at {}", api.from.name()),
        }
    }
}

/// What the readiness check asks: the health endpoint when `Butler.dockerHealthCheck` is on,
/// else `/v4/butlerping`. `None` when neither is possible.
pub(crate) fn readiness_target(butler: &ButlerKeys, agent: &AgentSettings) -> Option<Target> {
    let health = &butler.docker_health_check;
    if health.enable == Some(true) {
        return Some(Target::Health(
            health.port.map_or(DEFAULT_HEALTH_PORT, |p| p.0),
        ));
    }
    api(butler, agent).ok().map(Target::Ping)
}

/// The start-up check of `requireButler`: Butler must be reachable one way or the other, and
/// its health port must not be the agent's own (the agent would be asking itself).
pub(crate) fn check_required(butler: &ButlerKeys, agent: &AgentSettings) -> Result<(), String> {
    if !agent.require_butler {
        return Ok(());
    }
    match readiness_target(butler, agent) {
        None => Err(
            "requireButler needs a way to reach Butler, and the config gives none: turn on \
             Butler.dockerHealthCheck.enable (in Butler's network namespace: a Kubernetes pod, \
             compose network_mode: service:butler), or Butler's REST API \
             (Butler.restServerConfig.enable and Butler.restServerEndpointsEnable.butlerping), or \
             set BUTLER_API_URL"
                .into(),
        ),
        Some(Target::Health(port)) if agent.health_enable && port == agent.health_port => {
            Err(format!(
                "Butler's health port (Butler.dockerHealthCheck.port) and the agent's are both \
                 {port}: the agent would be checking itself; give the agent another port with \
                 BUTLER_HEALTH_PORT or Butler.butlerAgent.healthPort (e.g. 12399)"
            ))
        }
        Some(_) => Ok(()),
    }
}

/// Where `serviceVersion` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `BUTLER_VERSION`.
    EnvVar,
    /// Butler's answer.
    Ping(Api),
    /// No Butler API URL: why.
    NoApi(String),
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
            Source::NoApi(why) => why.clone(),
            Source::Failed(api, e) => format!("{} {e}", at(api)),
        }
    }

    /// `16.0.4 (Butler's /v4/butlerping at http://127.0.0.1:8080)`.
    pub(crate) fn describe(&self, show_url: bool) -> String {
        format!("{} ({})", self.value, self.source_text(show_url))
    }
}

/// How long to wait for a Butler that does not answer yet: the delivery's retry window (the
/// pauses of `max_retries` retries: 2 + 4 + 8 + 16 + 32 s by default), at most
/// [`MAX_STARTING_WAIT`]. Pure.
pub(crate) fn starting_wait(policy: &crate::telemetry::retry::RetryPolicy) -> Duration {
    let mut total = Duration::ZERO;
    let mut pause = policy.base_delay;
    for _ in 0..policy.max_retries {
        total = total.saturating_add(pause.min(policy.max_delay));
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
