//! The log filter: the user's directives, with dependencies kept quiet so that nothing
//! identifying reaches a log.
//!
//! The HTTP and TLS stacks under the Docker and PostHog requests (hyper, hyper-util, reqwest,
//! rustls, h2 …) log connection details at `debug` and `trace`: they stay at `warn` unless a
//! directive names them (`BUTLER_LOG_LEVEL=debug,reqwest=debug`). bollard, the Docker client,
//! logs the engine's whole `/info` answer at `debug` — the engine ID (an anchor of the instance
//! ID), the Docker host name, its directories and proxies — so its `debug` and `trace` are
//! never enabled, whatever the directive says: it stays at `info` at most.
//!
//! The filter is tracing-subscriber's [`Targets`]: levels per target, no span or field
//! filters. `EnvFilter`, which also matches spans and field values, brings a regular-expression
//! engine (about 0.5 MB of the static binary) and compiles its patterns at start-up; the agent
//! has no spans of its own, so a span or field directive (`target[span]=debug`) selects
//! nothing.

use tracing_subscriber::filter::Targets;

/// Targets kept at `warn` unless a directive names them.
pub(crate) const QUIET_TARGETS: &[&str] = &[
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "h2",
    "tower",
    "want",
    "mio",
    "tokio_util",
    "webpki",
    "bollard",
];

/// Targets whose `debug` and `trace` can carry an identifying value: capped at `info`.
pub(crate) const NEVER_VERBOSE: &[&str] = &["bollard"];

/// The level used without a directive.
pub(crate) const DEFAULT_LEVEL: &str = "info";

/// The directives actually used for the user's (`BUTLER_LOG_LEVEL`, else `RUST_LOG`).
/// Pure, so the rules are unit-tested; [`env_filter`] builds the filter from it.
pub(crate) fn directives(user: Option<&str>) -> String {
    let user = user.map(str::trim).filter(|u| !u.is_empty());
    let mut out: Vec<String> = Vec::new();
    let mut named: Vec<&str> = Vec::new();
    for d in user.unwrap_or(DEFAULT_LEVEL).split(',') {
        let d = d.trim();
        if d.is_empty() {
            continue;
        }
        let (target, level) = match d.rsplit_once('=') {
            Some((t, l)) => (t, Some(l)),
            // `hyper` alone means every level of `hyper`; `debug` alone is a global level.
            None if is_level(d) => ("", Some(d)),
            None => (d, None),
        };
        // A span filter without a target would reach into any crate's events, past the caps
        // below; the agent has no spans of its own, so such a directive is dropped.
        if d.starts_with('[') {
            continue;
        }
        let target = target.split('[').next().unwrap_or_default();
        let krate = target.split("::").next().unwrap_or_default();
        if let Some(q) = QUIET_TARGETS.iter().find(|q| **q == krate) {
            named.push(q);
        }
        if NEVER_VERBOSE.contains(&krate)
            && level.is_none_or(|l| matches!(l.to_ascii_lowercase().as_str(), "debug" | "trace"))
        {
            out.push(format!("{target}=info"));
            continue;
        }
        out.push(d.to_string());
    }
    for q in QUIET_TARGETS {
        if !named.contains(q) {
            out.push(format!("{q}=warn"));
        }
    }
    out.join(",")
}

fn is_level(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "off" | "error" | "warn" | "info" | "debug" | "trace"
    ) || s.parse::<u8>().is_ok()
}

/// The filter for the user's directives; an invalid directive falls back to the default level
/// (with dependencies still kept quiet).
pub fn filter(user: Option<&str>) -> Targets {
    let d = directives(user);
    // `Targets` takes `=` or `x=` quietly; every `target=level` must name both.
    let complete = d.split(',').all(|x| {
        x.rsplit_once('=')
            .is_none_or(|(target, level)| !target.is_empty() && is_level(level))
    });
    complete
        .then(|| d.parse().ok())
        .flatten()
        .unwrap_or_else(|| {
            directives(Some(DEFAULT_LEVEL))
                .parse()
                .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_quiet_by_default() {
        for user in [
            None,
            Some(""),
            Some("debug"),
            Some("trace"),
            Some("butler_agent=trace"),
        ] {
            let d = directives(user);
            for q in QUIET_TARGETS {
                assert!(d.contains(&format!("{q}=warn")), "{user:?}: {d}");
            }
        }
        assert!(directives(None).starts_with("info,"));
    }

    #[test]
    fn an_explicit_directive_enables_a_dependency() {
        let d = directives(Some("info,reqwest=debug,hyper_util::client=trace"));
        assert!(
            d.contains("reqwest=debug") && !d.contains("reqwest=warn"),
            "{d}"
        );
        assert!(d.contains("hyper_util::client=trace"), "{d}");
        assert!(!d.contains("hyper_util=warn"), "{d}");
        // Others stay quiet.
        assert!(d.contains("rustls=warn"), "{d}");
    }

    #[test]
    fn bollard_never_logs_debug() {
        for user in [
            "bollard=debug",
            "bollard=trace",
            "bollard",
            "trace,bollard::docker=TRACE",
            "bollard[request]=debug",
        ] {
            let d = directives(Some(user));
            for directive in d.split(',').filter(|x| x.starts_with("bollard")) {
                let level = directive.rsplit('=').next().unwrap().to_ascii_lowercase();
                assert!(level != "debug" && level != "trace", "{user}: {d}");
            }
            assert!(d.contains("=info"), "{user}: {d}");
            d.parse::<Targets>()
                .unwrap_or_else(|e| panic!("{user}: {d}: {e}"));
        }
        // A quieter level is kept.
        assert!(directives(Some("bollard=error")).contains("bollard=error"));
    }

    #[test]
    fn span_filters_without_a_target_are_dropped() {
        let d = directives(Some("[request]=trace,info"));
        assert!(!d.contains("[request]"), "{d}");
        assert!(d.contains("bollard=warn"), "{d}");
        assert!(directives(Some("butler_agent[x]=debug")).contains("butler_agent[x]=debug"));
    }

    #[test]
    fn bad_directives_fall_back() {
        use tracing::Level;
        for bad in ["=,=,[[[", "nonsense=loud"] {
            let f = filter(Some(bad));
            assert!(f.would_enable("butler_agent", &Level::INFO), "{bad}");
            assert!(!f.would_enable("butler_agent", &Level::DEBUG), "{bad}");
            assert!(!f.would_enable("hyper::proto", &Level::INFO), "{bad}");
        }
    }

    #[test]
    fn the_filter_applies_the_directives() {
        use tracing::Level;
        let f = filter(Some("debug,reqwest=trace,bollard=trace"));
        assert!(f.would_enable("butler_agent::agent", &Level::DEBUG));
        assert!(f.would_enable("reqwest::connect", &Level::TRACE));
        assert!(!f.would_enable("hyper_util::client", &Level::INFO));
        assert!(f.would_enable("hyper_util::client", &Level::WARN));
        assert!(f.would_enable("bollard::docker", &Level::INFO));
        assert!(!f.would_enable("bollard::docker", &Level::DEBUG));
        // A span filter names no target: it enables nothing more.
        let f = filter(Some("info,butler_agent[x]=trace"));
        assert!(!f.would_enable("butler_agent", &Level::DEBUG));
    }
}
