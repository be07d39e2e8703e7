//! Where Butler answers, from its config and the agent's settings: the Butler API URL, the
//! target of the `butler` readiness check, and the checks of the settings that name them. Pure
//! rules, no I/O: asking Butler is [`crate::butler`]'s business, which uses these; they live
//! with the config so that loading a config never depends on the code that asks Butler.

use std::fmt;

use super::{AgentSettings, ButlerKeys};

/// Butler's version endpoint.
pub(crate) const PING_PATH: &str = "/v4/butlerping";
/// Butler's `serverPort` in its template.
pub(crate) const DEFAULT_API_PORT: u16 = 8080;
/// Butler's well-known health port (`Butler.dockerHealthCheck.port` in its template).
pub(crate) const DEFAULT_HEALTH_PORT: u16 = 12398;

/// The version rule, `^[0-9A-Za-z.+-]{1,64}$`: what Butler's `package.json` versions look like,
/// and nothing that could carry a name, an address with a port, or markup.
pub(crate) fn is_version(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
}

/// `BUTLER_VERSION`: trimmed, and only when it follows the version rule.
pub(crate) fn check_version(raw: &str) -> Result<String, NotAVersion> {
    let v = raw.trim();
    if is_version(v) {
        Ok(v.to_string())
    } else {
        Err(NotAVersion)
    }
}

/// `BUTLER_VERSION` does not follow the version rule. The value is not repeated: a message
/// names the setting, never what it holds (a wrong value may be a host name or a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the value is not a version: expected 1 to 64 letters, digits, dots, plus or minus signs, \
     e.g. 16.0.4"
)]
pub(crate) struct NotAVersion;

/// Checks a Butler API URL: `http(s)://host[:port][/path]`, no credentials, no query, not
/// PostHog. Returns it without trailing slashes. The error never repeats the URL (it may hold a
/// password).
pub(crate) fn check_api_url(raw: &str, posthog_host: &str) -> Result<String, BadApiUrl> {
    let text = raw.trim().trim_end_matches('/');
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(BadApiUrl::NotHttp);
    }
    let url = reqwest::Url::parse(text).map_err(|e| BadApiUrl::Invalid(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadApiUrl::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BadApiUrl::QueryOrFragment);
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(BadApiUrl::NoHost);
    };
    let host = host.to_ascii_lowercase();
    // The configured destination: same host and port (a self-hosted PostHog may share a host
    // with Butler on another port).
    let same_as_destination = reqwest::Url::parse(posthog_host).ok().is_some_and(|p| {
        p.host_str().map(str::to_ascii_lowercase).as_deref() == Some(host.as_str())
            && p.port_or_known_default() == url.port_or_known_default()
    });
    if host == "posthog.com" || host.ends_with(".posthog.com") || same_as_destination {
        return Err(BadApiUrl::PostHog);
    }
    Ok(text.to_string())
}

/// Why a Butler API URL is refused; none of the messages repeats the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadApiUrl {
    #[error("not an http:// or https:// URL; give Butler's REST API, e.g. http://butler:8080")]
    NotHttp,
    #[error("not a valid URL ({0}); give Butler's REST API, e.g. http://butler:8080")]
    Invalid(String),
    #[error(
        "the URL contains credentials (a name or password before @); Butler's REST API takes \
         none: remove them"
    )]
    Credentials,
    #[error(
        "the URL has a query or fragment; give only Butler's base URL, e.g. http://butler:8080"
    )]
    QueryOrFragment,
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "the URL points at PostHog, the telemetry destination; it must be Butler's REST API, \
         e.g. http://butler:8080"
    )]
    PostHog,
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
pub(crate) fn api(butler: &ButlerKeys, agent: &AgentSettings) -> Result<Api, NoApi> {
    if let Some(url) = &agent.butler_api_url {
        return Ok(Api {
            url: url.clone(),
            from: ApiFrom::Setting,
        });
    }
    let rest = &butler.rest_server;
    if rest.enable != Some(true) {
        return Err(NoApi::RestServerOff(Switch::from(rest.enable)));
    }
    if butler.butlerping != Some(true) {
        return Err(NoApi::PingOff(Switch::from(butler.butlerping)));
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

/// Why Butler's config gives no API URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NoApi {
    #[error("Butler's REST API is off in the config: Butler.restServerConfig.enable is {0}")]
    RestServerOff(Switch),
    #[error(
        "Butler's /v4/butlerping is off in the config: \
         Butler.restServerEndpointsEnable.butlerping is {0}"
    )]
    PingOff(Switch),
}

/// A switch of Butler's config that is not on: `false`, or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    False,
    NotSet,
}

impl From<Option<bool>> for Switch {
    fn from(v: Option<bool>) -> Self {
        if v.is_some() {
            Switch::False
        } else {
            Switch::NotSet
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Switch::False => "false",
            Switch::NotSet => "not set",
        })
    }
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
pub(crate) fn check_required(
    butler: &ButlerKeys,
    agent: &AgentSettings,
) -> Result<(), Unreachable> {
    if !agent.require_butler {
        return Ok(());
    }
    match readiness_target(butler, agent) {
        None => Err(Unreachable::NoWay),
        Some(Target::Health(port)) if agent.health_enable && port == agent.health_port => {
            Err(Unreachable::OwnPort(port))
        }
        Some(_) => Ok(()),
    }
}

/// Why `requireButler` cannot be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unreachable {
    #[error(
        "requireButler needs a way to reach Butler, and the config gives none: turn on \
         Butler.dockerHealthCheck.enable (in Butler's network namespace: a Kubernetes pod, \
         compose network_mode: service:butler), or Butler's REST API \
         (Butler.restServerConfig.enable and Butler.restServerEndpointsEnable.butlerping), or \
         set BUTLER_API_URL"
    )]
    NoWay,
    #[error(
        "Butler's health port (Butler.dockerHealthCheck.port) and the agent's are both {0}: the \
         agent would be checking itself; give the agent another port with BUTLER_HEALTH_PORT or \
         Butler.butlerAgent.healthPort (e.g. 12399)"
    )]
    OwnPort(u16),
}
