//! The environment, behind a trait so tests can feed a map instead of mutating the process.
//!
//! A variable is read either as bytes ([`Env::var_os`], for paths, which need not be UTF-8) or
//! as text ([`Env::var`]). Text that is present but not valid UTF-8 is an error naming the
//! variable, never "unset": an opt-out or a destination that silently vanished would turn
//! telemetry on, or send it to the default host.

use std::ffi::{OsStr, OsString};

use super::ConfigError;

/// Read-only access to environment variables.
pub trait Env: Send + Sync {
    /// The variable's raw value, `None` when unset.
    fn var_os(&self, key: &str) -> Option<OsString>;

    /// The variable as text: `Ok(None)` when unset, an error naming it when it is set but not
    /// valid UTF-8.
    fn var(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        self.var_os(key).map(|v| text(key, v)).transpose()
    }
}

/// `value` as text, or the error naming `key`. The value itself is not repeated: it may be a
/// secret, and the terminal could not show it anyway.
pub(crate) fn text(key: &'static str, value: OsString) -> Result<String, ConfigError> {
    value.into_string().map_err(|raw| {
        use std::os::unix::ffi::OsStrExt;
        let valid = std::str::from_utf8(raw.as_bytes())
            .err()
            .map_or(0, |e| e.valid_up_to());
        ConfigError::env(
            key,
            format!(
                "the value is not valid UTF-8 (byte {valid} of {})",
                raw.as_bytes().len()
            ),
        )
        .with_hint("set it as UTF-8 text, or unset it")
    })
}

/// True when `value` is empty or only white space (a variable set to nothing counts as unset).
pub(crate) fn is_blank(value: &OsStr) -> bool {
    value.to_str().is_some_and(|v| v.trim().is_empty())
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var_os(&self, key: &str) -> Option<OsString> {
        std::env::var_os(key)
    }
}

/// A fixed set of variables, for tests (not in the shipped binary).
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct MapEnv(pub(crate) std::collections::BTreeMap<String, OsString>);

#[cfg(test)]
impl MapEnv {
    pub(crate) fn new<const N: usize>(pairs: [(&str, &str); N]) -> Self {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect(),
        )
    }

    /// Adds a variable whose value is raw bytes (not necessarily UTF-8).
    pub(crate) fn with_bytes(mut self, key: &str, value: &[u8]) -> Self {
        use std::os::unix::ffi::OsStrExt;
        self.0
            .insert(key.to_string(), OsStr::from_bytes(value).to_os_string());
        self
    }
}

#[cfg(test)]
impl Env for MapEnv {
    fn var_os(&self, key: &str) -> Option<OsString> {
        self.0.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_an_error_naming_the_variable() {
        let env = MapEnv::default().with_bytes("BUTLER_POSTHOG_HOST", b"http://a\xff");
        let err = env.var("BUTLER_POSTHOG_HOST").unwrap_err().to_string();
        assert!(err.contains("BUTLER_POSTHOG_HOST"), "{err}");
        assert!(err.contains("not valid UTF-8 (byte 8 of 9)"), "{err}");
        assert!(
            !err.contains("http://a"),
            "the value is not repeated: {err}"
        );
    }

    #[test]
    fn unset_and_utf8_values_read_as_before() {
        let env = MapEnv::new([("A", "x é"), ("E", "")]);
        assert_eq!(env.var("A").unwrap().as_deref(), Some("x é"));
        assert_eq!(env.var("E").unwrap().as_deref(), Some(""));
        assert_eq!(env.var("UNSET").unwrap(), None);
    }

    #[test]
    fn bytes_are_kept_for_paths() {
        use std::os::unix::ffi::OsStrExt;
        let env = MapEnv::default().with_bytes("BUTLER_CONFIG", b"/etc/caf\xe9.yaml");
        assert_eq!(
            env.var_os("BUTLER_CONFIG").unwrap().as_bytes(),
            b"/etc/caf\xe9.yaml"
        );
        assert!(!is_blank(OsStr::from_bytes(b"\xff")));
        assert!(is_blank(OsStr::new(" \t")));
    }

    /// The readers of the settings: a path keeps its bytes, text that is not UTF-8 is an
    /// error naming its variable, never the default.
    #[test]
    fn settings_take_paths_as_bytes_and_refuse_unreadable_text() {
        use std::os::unix::ffi::OsStrExt;
        use std::path::Path;

        use crate::config::{AgentSettings, ConfigSource, choose_source};

        let env = MapEnv::default()
            .with_bytes("BUTLER_STATE_DIR", b"/data/st\xe4te")
            .with_bytes("BUTLER_CA_FILE", b"/etc/ca-\xe9.pem")
            .with_bytes("BUTLER_TELEMETRY_AUDIT_LOG", b"/log/a\xff.jsonl");
        let s = AgentSettings::resolve(None, &env).unwrap();
        let bytes =
            |p: &Option<std::path::PathBuf>| p.as_ref().unwrap().as_os_str().as_bytes().to_vec();
        assert_eq!(bytes(&s.state_dir), b"/data/st\xe4te");
        assert_eq!(bytes(&s.ca_file), b"/etc/ca-\xe9.pem");
        assert_eq!(bytes(&s.audit_log), b"/log/a\xff.jsonl");

        for var in [
            "BUTLER_POSTHOG_HOST",
            "BUTLER_POSTHOG_KEY",
            "BUTLER_TELEMETRY_INTERVAL",
            "BUTLER_GEOIP_DISABLE",
            "BUTLER_HEALTH_PORT",
            "BUTLER_SHUTDOWN_GRACE",
        ] {
            let env = MapEnv::default().with_bytes(var, b"\xff");
            let err = AgentSettings::resolve(None, &env).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains("UTF-8"), "{var}: {err}");
        }

        let env = MapEnv::default().with_bytes("BUTLER_CONFIG", b"/etc/b\xfctler.yaml");
        assert_eq!(
            choose_source(None, &env, Path::new("/nonexistent")),
            ConfigSource::EnvVar(OsStr::from_bytes(b"/etc/b\xfctler.yaml").into())
        );
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir(cwd.path().join("config")).unwrap();
        std::fs::write(
            cwd.path()
                .join("config")
                .join(OsStr::from_bytes(b"pr\xf6d.yaml")),
            "Butler: {}\n",
        )
        .unwrap();
        let env = MapEnv::default().with_bytes("NODE_ENV", b"pr\xf6d");
        assert_eq!(
            choose_source(None, &env, cwd.path()),
            ConfigSource::NodeEnv(Path::new("config").join(OsStr::from_bytes(b"pr\xf6d.yaml")))
        );
    }
}
