//! The agent's own settings: `Butler.butlerAgent.*` in the file, each overridable by an
//! environment variable (the variable wins, as container users expect).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::butler::DEFAULT_HEALTH_PORT;
use super::table::*;
use super::{ConfigError, Env};

/// PostHog's EU ingestion host, where Butler's data lives.
pub(crate) const DEFAULT_POSTHOG_HOST: &str = "https://eu.i.posthog.com";
/// Butler's public project key (write-only, public by PostHog's design).
pub(crate) const DEFAULT_POSTHOG_KEY: &str = "phc_5cmKiX9OubQjsSfOZuaolWaxo2z7WXqd295eB0uOtTb";
/// Butler sends every 12 hours.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// Shorter intervals would turn a snapshot into a stream.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Butler's client timeout.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounded retries per cycle; the next cycle brings a fresh snapshot anyway.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 5;
/// The most retries a cycle may make: their pauses (doubling from 2 s to at most 5 min) then
/// add up to about 8 hours, within the default 12-hour interval. More would keep resending one
/// stale event for days while no fresh one is built.
pub(crate) const MAX_MAX_RETRIES: u32 = 100;
/// A few seconds, so a crash loop does not flood the destination.
pub(crate) const DEFAULT_START_DELAY: Duration = Duration::from_secs(5);
/// Longest accepted interval, delay, timeout or grace: longer ones are configuration mistakes
/// (and far beyond them, the arithmetic on times would overflow).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// PostHog's capture refuses longer project keys.
pub(crate) const MAX_KEY_CHARS: usize = 64;
/// Below Docker's 10 s stop timeout, so the agent always exits on its own.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Audit log rotation size: a year of events at 2 a day fits many times over.
pub(crate) const DEFAULT_AUDIT_LOG_MAX_BYTES: u64 = 1024 * 1024;

/// `Butler.butlerAgent` as written in the file. Unknown keys are an error here (it is the
/// agent's own section, so a typo should be caught), unlike in Butler's sections.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentFile {
    posthog_host: Option<String>,
    posthog_key: Option<String>,
    interval: Option<DurationValue>,
    request_timeout: Option<DurationValue>,
    max_retries: Option<u32>,
    start_delay: Option<DurationValue>,
    geoip_disable: Option<bool>,
    ca_file: Option<PathBuf>,
    health_enable: Option<bool>,
    health_host: Option<IpAddr>,
    health_port: Option<Port>,
    state_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    audit_log_max_bytes: Option<u64>,
    shutdown_grace: Option<DurationValue>,
    butler_api_url: Option<String>,
    require_butler: Option<bool>,
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .map(Port)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid value {n}: expected a port number from 1 to 65535"
                ))
            })
    }
}

/// A duration written as `12h`, `90s`, `1h 30m`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration like 12h, 90s or 1h 30m, or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| DurationValue(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A value a setting does not accept: what is wrong and what is expected. The setting (file
/// key or variable) is named by the [`ConfigError`] it becomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Rejected(pub(crate) String);

impl From<&str> for Rejected {
    fn from(why: &str) -> Self {
        Rejected(why.to_string())
    }
}

impl From<String> for Rejected {
    fn from(why: String) -> Self {
        Rejected(why)
    }
}

impl From<Rejected> for String {
    fn from(r: Rejected) -> Self {
        r.0
    }
}

/// Parses `12h`, `90s`, `1h 30m` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, Rejected> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        use humantime::DurationError as E;
        // Where it went wrong, not the text itself (a value in the wrong place may be a secret).
        let why = match e {
            E::InvalidCharacter(at) => format!("an unexpected character at {at}"),
            E::NumberExpected(at) => format!("a number expected at {at}"),
            E::UnknownUnit { start, .. } => format!("an unknown unit at {start}"),
            E::NumberOverflow => "a number too large".to_string(),
            E::Empty => "empty".to_string(),
        };
        Rejected(format!(
            "not a duration ({why}); expected e.g. 12h, 90s, 1h 30m or seconds"
        ))
    })
}

/// The agent's settings after the file and the environment are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Capture host, e.g. `https://eu.i.posthog.com` (no path).
    pub(crate) posthog_host: String,
    pub(crate) posthog_key: String,
    pub(crate) interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) start_delay: Duration,
    /// Sets `$geoip_disable` so PostHog does not geolocate the sender's IP.
    pub(crate) geoip_disable: bool,
    /// Extra PEM root certificates for corporate proxies.
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) health_enable: bool,
    pub(crate) health_host: IpAddr,
    pub(crate) health_port: u16,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) audit_log: Option<PathBuf>,
    pub(crate) audit_log_max_bytes: u64,
    pub(crate) shutdown_grace: Duration,
    /// Butler's REST API, e.g. `http://butler:8080`, where `/v4/butlerping` tells Butler's
    /// version; `None`: derived from Butler's own config when possible (see [`crate::butler`]).
    pub(crate) butler_api_url: Option<String>,
    /// `BUTLER_VERSION`: Butler's version as the image or pipeline knows it; wins over asking.
    pub(crate) butler_version: Option<String>,
    /// `/readyz` fails while Butler does not answer.
    pub(crate) require_butler: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            posthog_host: DEFAULT_POSTHOG_HOST.to_string(),
            posthog_key: DEFAULT_POSTHOG_KEY.to_string(),
            interval: DEFAULT_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            start_delay: DEFAULT_START_DELAY,
            geoip_disable: true,
            ca_file: None,
            health_enable: true,
            health_host: IpAddr::from([0, 0, 0, 0]),
            health_port: DEFAULT_HEALTH_PORT,
            state_dir: None,
            audit_log: None,
            audit_log_max_bytes: DEFAULT_AUDIT_LOG_MAX_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            butler_api_url: None,
            butler_version: None,
            require_butler: false,
        }
    }
}

impl AgentSettings {
    /// Combines defaults, the file's section and the environment (highest precedence).
    pub(crate) fn resolve(file: Option<&AgentFile>, env: &dyn Env) -> Result<Self, ConfigError> {
        let f = file.cloned().unwrap_or_default();
        let d = AgentSettings::default();
        let s = AgentSettings {
            posthog_host: env_or(env, POSTHOG_HOST.var, f.posthog_host, d.posthog_host, ok)?,
            posthog_key: env_or(env, POSTHOG_KEY.var, f.posthog_key, d.posthog_key, ok)?,
            interval: env_or(
                env,
                INTERVAL.var,
                f.interval.map(|v| v.0),
                d.interval,
                parse_duration,
            )?,
            request_timeout: env_or(
                env,
                REQUEST_TIMEOUT.var,
                f.request_timeout.map(|v| v.0),
                d.request_timeout,
                parse_duration,
            )?,
            max_retries: env_or(
                env,
                MAX_RETRIES.var,
                f.max_retries,
                d.max_retries,
                parse_num,
            )?,
            start_delay: env_or(
                env,
                START_DELAY.var,
                f.start_delay.map(|v| v.0),
                d.start_delay,
                parse_duration,
            )?,
            geoip_disable: env_or(
                env,
                GEOIP_DISABLE.var,
                f.geoip_disable,
                d.geoip_disable,
                parse_bool,
            )?,
            ca_file: env_opt(env, CA_FILE.var, f.ca_file),
            health_enable: env_or(
                env,
                HEALTH_ENABLE.var,
                f.health_enable,
                d.health_enable,
                parse_bool,
            )?,
            health_host: env_or(
                env,
                HEALTH_HOST.var,
                f.health_host,
                d.health_host,
                parse_num,
            )?,
            health_port: env_or(
                env,
                HEALTH_PORT.var,
                f.health_port.map(|p| p.0),
                d.health_port,
                parse_num,
            )?,
            state_dir: env_opt(env, STATE_DIR.var, f.state_dir),
            audit_log: env_opt(env, AUDIT_LOG.var, f.audit_log),
            audit_log_max_bytes: env_or(
                env,
                AUDIT_LOG_MAX_BYTES.var,
                f.audit_log_max_bytes,
                d.audit_log_max_bytes,
                parse_num,
            )?,
            shutdown_grace: env_or(
                env,
                SHUTDOWN_GRACE.var,
                f.shutdown_grace.map(|v| v.0),
                d.shutdown_grace,
                parse_duration,
            )?,
            butler_api_url: env_or(
                env,
                BUTLER_API_URL.var,
                f.butler_api_url.map(Some),
                None,
                |v| Ok(Some(v.to_string())),
            )?,
            butler_version: env_or(env, "BUTLER_VERSION", None, None, |v| {
                super::butler::check_version(v)
                    .map(Some)
                    .map_err(|e| Rejected(e.to_string()))
            })?,
            require_butler: env_or(
                env,
                REQUIRE_BUTLER.var,
                f.require_butler,
                d.require_butler,
                parse_bool,
            )?,
        };
        s.validate(env)
    }

    /// Range, format and cross-field checks. An error names the environment variable when the
    /// value came from it, else the file's key (the loader adds the file, line and column).
    fn validate(mut self, env: &dyn Env) -> Result<Self, ConfigError> {
        let bad = |setting: &Setting, msg: String| {
            let (key, var) = (Some(setting.named()), setting.var);
            if env.var_os(var).is_some_and(|v| !super::env::is_blank(&v)) {
                ConfigError {
                    key,
                    ..ConfigError::env(var, msg)
                }
            } else {
                ConfigError {
                    origin: super::Origin::Settings,
                    location: None,
                    key,
                    message: msg,
                    hint: None,
                }
            }
        };
        self.posthog_host =
            normalize_host(&self.posthog_host).map_err(|m| bad(&POSTHOG_HOST, m.into()))?;
        self.posthog_key = check_key(&self.posthog_key).map_err(|m| bad(&POSTHOG_KEY, m.into()))?;
        if self.interval < MIN_INTERVAL {
            return Err(bad(
                &INTERVAL,
                format!(
                    "{} is below the minimum of 1 minute",
                    humantime::format_duration(self.interval)
                ),
            ));
        }
        if self.max_retries > MAX_MAX_RETRIES {
            return Err(bad(
                &MAX_RETRIES,
                format!(
                    "{} retries is more than the maximum of {MAX_MAX_RETRIES} (about 8 hours of \
                     pauses); the next cycle sends a fresh event anyway",
                    self.max_retries
                ),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(bad(
                &REQUEST_TIMEOUT,
                "the request timeout must be above zero".into(),
            ));
        }
        if let Some(url) = &self.butler_api_url {
            self.butler_api_url = Some(
                super::butler::check_api_url(url, &self.posthog_host)
                    .map_err(|e| bad(&BUTLER_API_URL, e.to_string()))?,
            );
        }
        for (setting, value) in [
            (&INTERVAL, self.interval),
            (&REQUEST_TIMEOUT, self.request_timeout),
            (&START_DELAY, self.start_delay),
            (&SHUTDOWN_GRACE, self.shutdown_grace),
        ] {
            if value > MAX_DURATION {
                return Err(bad(
                    setting,
                    format!(
                        "{} seconds is longer than the maximum of 365 days",
                        value.as_secs()
                    ),
                ));
            }
        }
        Ok(self)
    }
}

/// PostHog's capture rules for a project key (it answers 401 to any other): trimmed, not
/// empty, at most 64 characters, ASCII without NUL, and not a personal API key (`phx_`), which
/// must never leave the machine. The message never repeats the key.
pub(crate) fn check_key(raw: &str) -> Result<String, Rejected> {
    let key = raw.trim();
    let chars = key.chars().count();
    if key.is_empty() {
        Err("the project key is empty; remove the setting to use Butler's key".into())
    } else if chars > MAX_KEY_CHARS {
        Err(Rejected(format!(
            "the project key is {chars} characters long; PostHog accepts at most {MAX_KEY_CHARS}"
        )))
    } else if !key.is_ascii() {
        Err("the project key contains a non-ASCII character; PostHog refuses it".into())
    } else if key.contains('\0') {
        Err("the project key contains a NUL character; PostHog refuses it".into())
    } else if key.starts_with("phx_") {
        Err(
            "this is a personal API key (phx_...), which must never be sent; use the \
             project API key (phc_...) from the PostHog project settings"
                .into(),
        )
    } else {
        Ok(key.to_string())
    }
}

/// Checks a capture host and rewrites PostHog's app hosts to their ingestion hosts, as
/// PostHog's own clients do (`eu.posthog.com` → `eu.i.posthog.com`).
pub(crate) fn normalize_host(raw: &str) -> Result<String, Rejected> {
    let host = raw.trim().trim_end_matches('/');
    let rest = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .ok_or("the capture host must start with https:// or http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        // Not repeated in the message: the part before `@` is a password.
        return Err(
            "the capture host contains credentials (a name or password before @); remove \
             them: PostHog's capture needs none, and they would show wherever the destination \
             is shown"
                .into(),
        );
    }
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err("the capture host has no host name, or contains white space".into());
    }
    if !authority.is_ascii() {
        // The HTTP client is built without Unicode domain-name tables (Cargo.toml: idna_adapter).
        return Err(
            "the capture host's name is not ASCII; write it in its ASCII (Punycode) \
             form, e.g. xn--bcher-kva.example for bücher.example"
                .into(),
        );
    }
    let scheme = &host[..host.len() - rest.len()];
    let rewritten = match rest {
        "eu.posthog.com" => "eu.i.posthog.com",
        "app.posthog.com" | "us.posthog.com" => "us.i.posthog.com",
        other => other,
    };
    Ok(format!("{scheme}{rewritten}"))
}

fn ok(s: &str) -> Result<String, Rejected> {
    Ok(s.to_string())
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, Rejected>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .map_err(|e| Rejected(format!("the value is not valid: {e}")))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) for environment variables.
pub(crate) fn parse_bool(s: &str) -> Result<bool, Rejected> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("the value is not a boolean; expected true or false".into()),
    }
}

fn env_or<T>(
    env: &dyn Env,
    var: &'static str,
    file: Option<T>,
    default: T,
    parse: impl Fn(&str) -> Result<T, Rejected>,
) -> Result<T, ConfigError> {
    match env.var(var)?.filter(|v| !v.trim().is_empty()) {
        Some(v) => parse(&v).map_err(|m| ConfigError::env(var, m)),
        None => Ok(file.unwrap_or(default)),
    }
}

/// A path setting: the variable's bytes as they are (a path need not be UTF-8), else the
/// file's.
fn env_opt(env: &dyn Env, var: &str, file: Option<PathBuf>) -> Option<PathBuf> {
    env.var_os(var)
        .filter(|v| !super::env::is_blank(v))
        .map(PathBuf::from)
        .or(file)
}
