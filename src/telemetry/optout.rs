//! Whether telemetry is on, and which setting decided it.
//!
//! Precedence, highest first: `DO_NOT_TRACK` (the consoledonottrack.com convention: any value
//! but empty, `0` or `false` opts out) > `BUTLER_ANON_TELEMETRY=true|false` >
//! `Butler.anonTelemetry` in the config > default on (Butler's default).

use serde::Serialize;

use crate::config::settings::parse_bool;
use crate::config::{ConfigError, Env};

/// Which source decided; serialized as `telemetry status --json` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum DecidedBy {
    #[serde(rename = "DO_NOT_TRACK")]
    DoNotTrack,
    #[serde(rename = "BUTLER_ANON_TELEMETRY")]
    EnvVar,
    #[serde(rename = "config")]
    Config,
    #[serde(rename = "default")]
    Default,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Decision {
    pub(crate) enabled: bool,
    pub(crate) decided_by: DecidedBy,
}

impl Decision {
    /// One line for people: what and why.
    pub(crate) fn explain(&self) -> &'static str {
        match (self.enabled, self.decided_by) {
            (false, DecidedBy::DoNotTrack) => "off: DO_NOT_TRACK is set",
            (true, DecidedBy::DoNotTrack) => "on: DO_NOT_TRACK", // not produced; kept total
            (false, DecidedBy::EnvVar) => "off: BUTLER_ANON_TELEMETRY=false",
            (true, DecidedBy::EnvVar) => "on: BUTLER_ANON_TELEMETRY=true",
            (false, DecidedBy::Config) => "off: Butler.anonTelemetry is false in the config file",
            (true, DecidedBy::Config) => "on: Butler.anonTelemetry is true in the config file",
            (_, DecidedBy::Default) => "on: no setting opts out (Butler's default)",
        }
    }
}

/// `DO_NOT_TRACK` is set to something that means "yes": any value but empty, `0` or `false`,
/// including one that is not valid UTF-8 (it is none of those three, and an opt-out that
/// cannot be read must never turn telemetry on).
fn do_not_track(env: &dyn Env) -> bool {
    env.var_os("DO_NOT_TRACK")
        .is_some_and(|v| match v.to_str() {
            Some(v) => {
                let v = v.trim().to_ascii_lowercase();
                !(v.is_empty() || v == "0" || v == "false")
            }
            None => true,
        })
}

/// Decides. A malformed `BUTLER_ANON_TELEMETRY` is a configuration error: guessing either way
/// would be wrong.
pub(crate) fn decide(env: &dyn Env, config_value: Option<bool>) -> Result<Decision, ConfigError> {
    if do_not_track(env) {
        return Ok(Decision {
            enabled: false,
            decided_by: DecidedBy::DoNotTrack,
        });
    }
    if let Some(v) = env
        .var("BUTLER_ANON_TELEMETRY")?
        .filter(|v| !v.trim().is_empty())
    {
        let enabled = parse_bool(&v).map_err(|m| ConfigError::env("BUTLER_ANON_TELEMETRY", m))?;
        return Ok(Decision {
            enabled,
            decided_by: DecidedBy::EnvVar,
        });
    }
    Ok(match config_value {
        Some(enabled) => Decision {
            enabled,
            decided_by: DecidedBy::Config,
        },
        None => Decision {
            enabled: true,
            decided_by: DecidedBy::Default,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;

    /// Every combination of the four sources: DO_NOT_TRACK (unset/1), BUTLER_ANON_TELEMETRY
    /// (unset/true/false), config (absent/true/false).
    #[test]
    fn precedence_every_combination() {
        for dnt in [None, Some("1")] {
            for envvar in [None, Some("true"), Some("false")] {
                for cfg in [None, Some(true), Some(false)] {
                    let mut env = MapEnv::default();
                    if let Some(d) = dnt {
                        env.0.insert("DO_NOT_TRACK".into(), d.into());
                    }
                    if let Some(e) = envvar {
                        env.0.insert("BUTLER_ANON_TELEMETRY".into(), e.into());
                    }
                    let d = decide(&env, cfg).unwrap();
                    let expected = if dnt.is_some() {
                        (false, DecidedBy::DoNotTrack)
                    } else if let Some(e) = envvar {
                        (e == "true", DecidedBy::EnvVar)
                    } else if let Some(c) = cfg {
                        (c, DecidedBy::Config)
                    } else {
                        (true, DecidedBy::Default)
                    };
                    assert_eq!(
                        (d.enabled, d.decided_by),
                        expected,
                        "dnt={dnt:?} env={envvar:?} cfg={cfg:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn do_not_track_zero_or_false_does_not_opt_out() {
        for v in ["0", "false", ""] {
            let env = MapEnv::new([("DO_NOT_TRACK", v)]);
            assert!(decide(&env, None).unwrap().enabled, "DO_NOT_TRACK={v:?}");
        }
        let env = MapEnv::new([("DO_NOT_TRACK", "true")]);
        assert!(!decide(&env, None).unwrap().enabled);
    }

    #[test]
    fn bad_env_value_is_an_error_naming_the_variable() {
        let env = MapEnv::new([("BUTLER_ANON_TELEMETRY", "maybe")]);
        let err = decide(&env, Some(true)).unwrap_err();
        assert!(err.to_string().contains("BUTLER_ANON_TELEMETRY"), "{err}");
        // The value is not repeated (any text may be set there).
        assert!(!err.to_string().contains("maybe"), "{err}");
    }

    #[test]
    fn an_unreadable_do_not_track_opts_out() {
        for raw in [&b"\xff"[..], b"1\xe9", b"fals\xe9", b"\xc3"] {
            let env = MapEnv::default()
                .with_bytes("DO_NOT_TRACK", raw)
                .with_bytes("BUTLER_ANON_TELEMETRY", b"true");
            let d = decide(&env, Some(true)).unwrap();
            assert_eq!((d.enabled, d.decided_by), (false, DecidedBy::DoNotTrack));
        }
    }

    #[test]
    fn an_unreadable_butler_anon_telemetry_is_an_error_never_on() {
        for cfg in [None, Some(true), Some(false)] {
            let env = MapEnv::default().with_bytes("BUTLER_ANON_TELEMETRY", b"fals\xe9");
            let err = decide(&env, cfg).unwrap_err().to_string();
            assert!(err.contains("BUTLER_ANON_TELEMETRY"), "{err}");
            assert!(err.contains("UTF-8"), "{err}");
        }
        // DO_NOT_TRACK still wins: the opt-out needs no other variable to be readable.
        let env = MapEnv::new([("DO_NOT_TRACK", "1")]).with_bytes("BUTLER_ANON_TELEMETRY", b"\xff");
        assert!(!decide(&env, None).unwrap().enabled);
    }

    #[test]
    fn json_shape() {
        let d = decide(&MapEnv::default(), Some(false)).unwrap();
        assert_eq!(
            serde_json::to_value(d).unwrap(),
            serde_json::json!({"enabled": false, "decidedBy": "config"})
        );
    }
}
