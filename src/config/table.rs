//! The agent's settings described once: each one's key under `Butler.butlerAgent`, its
//! environment variable, its default as the documentation shows it, whether it takes any text,
//! and whether a change needs a restart. [`AgentSettings::resolve`] and its checks name
//! settings from here, the refusal of an unquoted `.inf` at a text key and the config re-read
//! (`telemetry::cycle::changes`) walk [`SETTINGS`], and the tests hold the file's serde keys,
//! [`AgentSettings`]' fields, the actual defaults and the table of `docs/configuration.md` to it.

use super::AgentSettings;

/// One setting of the agent.
#[derive(Debug)]
pub(crate) struct Setting {
    /// The dotted path in the file, `Butler.butlerAgent.<key>`: a static string, so a change
    /// can be named without building one.
    pub(crate) path: &'static str,
    /// The environment variable that overrides the file.
    pub(crate) var: &'static str,
    /// The default, exactly as the documentation's table shows it (the tests hold the table and
    /// the actual default to it).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "documentation, checked by the tests")
    )]
    pub(crate) default: &'static str,
    /// Takes any string (text or a path): there an unquoted `.inf` or `.nan`, a number in YAML
    /// that reaches the tree as a string, is refused as the wrong type.
    pub(crate) text: bool,
    /// Read once at start-up: a change in the file takes effect at the next restart.
    pub(crate) restart: bool,
    /// Whether two resolved settings differ in this one.
    pub(crate) differs: fn(&AgentSettings, &AgentSettings) -> bool,
}

impl Setting {
    /// `Butler.butlerAgent.posthogHost (BUTLER_POSTHOG_HOST)`, as errors name a setting.
    pub(crate) fn named(&self) -> String {
        format!("{} ({})", self.path, self.var)
    }
}

pub(crate) const POSTHOG_HOST: Setting = Setting {
    path: "Butler.butlerAgent.posthogHost",
    var: "BUTLER_POSTHOG_HOST",
    default: "`https://eu.i.posthog.com`",
    text: true,
    restart: false,
    differs: |a, b| a.posthog_host != b.posthog_host,
};
pub(crate) const POSTHOG_KEY: Setting = Setting {
    path: "Butler.butlerAgent.posthogKey",
    var: "BUTLER_POSTHOG_KEY",
    default: "Butler's public project key",
    text: true,
    restart: false,
    differs: |a, b| a.posthog_key != b.posthog_key,
};
pub(crate) const INTERVAL: Setting = Setting {
    path: "Butler.butlerAgent.interval",
    var: "BUTLER_TELEMETRY_INTERVAL",
    default: "`12h`",
    text: false,
    restart: false,
    differs: |a, b| a.interval != b.interval,
};
pub(crate) const START_DELAY: Setting = Setting {
    path: "Butler.butlerAgent.startDelay",
    var: "BUTLER_TELEMETRY_START_DELAY",
    default: "`5s`",
    text: false,
    restart: false,
    differs: |a, b| a.start_delay != b.start_delay,
};
pub(crate) const REQUEST_TIMEOUT: Setting = Setting {
    path: "Butler.butlerAgent.requestTimeout",
    var: "BUTLER_TELEMETRY_TIMEOUT",
    default: "`30s`",
    text: false,
    restart: false,
    differs: |a, b| a.request_timeout != b.request_timeout,
};
pub(crate) const MAX_RETRIES: Setting = Setting {
    path: "Butler.butlerAgent.maxRetries",
    var: "BUTLER_TELEMETRY_RETRIES",
    default: "`5`",
    text: false,
    restart: false,
    differs: |a, b| a.max_retries != b.max_retries,
};
pub(crate) const GEOIP_DISABLE: Setting = Setting {
    path: "Butler.butlerAgent.geoipDisable",
    var: "BUTLER_GEOIP_DISABLE",
    default: "`true`",
    text: false,
    restart: false,
    differs: |a, b| a.geoip_disable != b.geoip_disable,
};
pub(crate) const CA_FILE: Setting = Setting {
    path: "Butler.butlerAgent.caFile",
    var: "BUTLER_CA_FILE",
    default: "none",
    text: true,
    restart: false,
    differs: |a, b| a.ca_file != b.ca_file,
};
pub(crate) const HEALTH_ENABLE: Setting = Setting {
    path: "Butler.butlerAgent.healthEnable",
    var: "BUTLER_HEALTH_ENABLE",
    default: "`true`",
    text: false,
    restart: true,
    differs: |a, b| a.health_enable != b.health_enable,
};
pub(crate) const HEALTH_HOST: Setting = Setting {
    path: "Butler.butlerAgent.healthHost",
    var: "BUTLER_HEALTH_HOST",
    default: "`0.0.0.0`",
    text: false,
    restart: true,
    differs: |a, b| a.health_host != b.health_host,
};
pub(crate) const HEALTH_PORT: Setting = Setting {
    path: "Butler.butlerAgent.healthPort",
    var: "BUTLER_HEALTH_PORT",
    default: "`12398`",
    text: false,
    restart: true,
    differs: |a, b| a.health_port != b.health_port,
};
pub(crate) const STATE_DIR: Setting = Setting {
    path: "Butler.butlerAgent.stateDir",
    var: "BUTLER_STATE_DIR",
    default: "none; `/data` in the image",
    text: true,
    restart: false,
    differs: |a, b| a.state_dir != b.state_dir,
};
pub(crate) const AUDIT_LOG: Setting = Setting {
    path: "Butler.butlerAgent.auditLog",
    var: "BUTLER_TELEMETRY_AUDIT_LOG",
    default: "none",
    text: true,
    restart: false,
    differs: |a, b| a.audit_log != b.audit_log,
};
pub(crate) const AUDIT_LOG_MAX_BYTES: Setting = Setting {
    path: "Butler.butlerAgent.auditLogMaxBytes",
    var: "BUTLER_TELEMETRY_AUDIT_LOG_MAX_BYTES",
    default: "`1048576`",
    text: false,
    restart: false,
    differs: |a, b| a.audit_log_max_bytes != b.audit_log_max_bytes,
};
pub(crate) const SHUTDOWN_GRACE: Setting = Setting {
    path: "Butler.butlerAgent.shutdownGrace",
    var: "BUTLER_SHUTDOWN_GRACE",
    default: "`5s`",
    text: false,
    restart: true,
    differs: |a, b| a.shutdown_grace != b.shutdown_grace,
};
pub(crate) const BUTLER_API_URL: Setting = Setting {
    path: "Butler.butlerAgent.butlerApiUrl",
    var: "BUTLER_API_URL",
    default: "derived from `Butler.restServerConfig` when it and \
              `restServerEndpointsEnable.butlerping` are on",
    text: true,
    restart: false,
    differs: |a, b| a.butler_api_url != b.butler_api_url,
};
pub(crate) const REQUIRE_BUTLER: Setting = Setting {
    path: "Butler.butlerAgent.requireButler",
    var: "BUTLER_REQUIRE_BUTLER",
    default: "`false`",
    text: false,
    restart: true,
    differs: |a, b| a.require_butler != b.require_butler,
};

/// Every setting under `Butler.butlerAgent`, in the documentation's order (which is also the
/// order a config re-read names changes in).
pub(crate) const SETTINGS: &[Setting] = &[
    POSTHOG_HOST,
    POSTHOG_KEY,
    INTERVAL,
    START_DELAY,
    REQUEST_TIMEOUT,
    MAX_RETRIES,
    GEOIP_DISABLE,
    CA_FILE,
    HEALTH_ENABLE,
    HEALTH_HOST,
    HEALTH_PORT,
    STATE_DIR,
    AUDIT_LOG,
    AUDIT_LOG_MAX_BYTES,
    SHUTDOWN_GRACE,
    BUTLER_API_URL,
    REQUIRE_BUTLER,
];

#[cfg(test)]
mod tests;
