//! Logging: the user's filter, with dependencies kept quiet so that nothing identifying reaches
//! a log, written through a writer that never blocks (see [`crate::output`]).
//!
//! The HTTP and TLS stacks under the Docker and PostHog requests (hyper, hyper-util, reqwest,
//! rustls, h2 …) log connection details at `debug` and `trace`: they stay at `warn` unless a
//! directive names them (`BUTLER_LOG_LEVEL=debug,reqwest=debug`). bollard, the Docker client,
//! logs the engine's whole `/info` answer at `debug` — the engine ID (an anchor of the instance
//! ID), the Docker host name, its directories and proxies — so its `debug` and `trace` are
//! never enabled, whatever the directive says: it stays at `info` at most.
//!
//! That last rule is not a rewrite of the user's directives (a filter grammar has numeric
//! levels, target prefixes, span and field filters: a rewrite misses some). It is a second
//! filter, [`cap`], that every event must also pass, and that looks only at the event's own
//! target and level: no directive reaches it.
//!
//! The user's filter is tracing-subscriber's [`Targets`] (`target=level` lists and a bare
//! level, as `RUST_LOG` is usually written). A span or field directive (`target[span]=debug`)
//! selects nothing: the agent has no spans of its own.

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterExt, FilterFn, Targets};
use tracing_subscriber::layer::{Filter, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, Env};

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

/// Crates whose `debug` and `trace` can carry an identifying value, with the most verbose
/// level they may ever log at, whatever the directives say.
pub(crate) const CAPS: &[(&str, Level)] = &[("bollard", Level::INFO)];

/// The level used without a directive.
pub(crate) const DEFAULT_LEVEL: &str = "info";

/// The most verbose level an event of `target` may have, if it is capped: the crate itself
/// and every module below it (`bollard`, `bollard::docker`), not a crate that merely shares
/// the prefix (`bollardx`).
pub(crate) fn cap_of(target: &str) -> Option<Level> {
    CAPS.iter().find_map(|(krate, level)| {
        let below = target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
        below.then_some(*level)
    })
}

/// Whether an event or span passes the caps. Pure: it sees only the metadata (for a `log`
/// record, tracing-log hands the filter the record's own target).
pub(crate) fn within_caps(meta: &Metadata<'_>) -> bool {
    // `Level`'s order: ERROR < WARN < INFO < DEBUG < TRACE is "more verbose is greater".
    cap_of(meta.target()).is_none_or(|cap| *meta.level() <= cap)
}

/// The hard filter: [`within_caps`], whatever the user's directives.
pub(crate) fn cap<S>() -> impl Filter<S> + Clone + use<S> {
    FilterFn::new(within_caps).with_max_level_hint(LevelFilter::TRACE)
}

/// The user's directives (`BUTLER_LOG_LEVEL`, else `RUST_LOG`), with the quiet targets added.
/// Pure, so the rules are unit-tested; [`user_filter`] builds the filter from it.
pub(crate) fn directives(user: Option<&str>) -> String {
    let user = user.map(str::trim).filter(|u| !u.is_empty());
    let mut out: Vec<String> = Vec::new();
    let mut named: Vec<&str> = Vec::new();
    for d in user.unwrap_or(DEFAULT_LEVEL).split(',') {
        let d = d.trim();
        if d.is_empty() {
            continue;
        }
        // A span or field filter selects nothing here: `Targets` has no such filters, and the
        // agent has no spans of its own. (Kept, a filter without a target would also reach into
        // any crate's events, past the quiet defaults below.)
        if d.contains('[') || d.contains('{') {
            continue;
        }
        let target = d.rsplit_once('=').map_or(d, |(t, _)| t);
        let krate = target.split(['[', ':']).next().unwrap_or_default();
        if let Some(q) = QUIET_TARGETS.iter().find(|q| **q == krate) {
            named.push(q);
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

/// The user's filter: tracing-subscriber's [`Targets`], levels per target (`EnvFilter`, which
/// also matches spans and field values, brings a regular-expression engine of about 0.2 MiB
/// to the static binary; the agent has no spans of its own). An invalid directive falls back
/// to the default level, with dependencies still kept quiet.
pub(crate) fn user_filter(user: Option<&str>) -> Targets {
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
                .unwrap_or_else(|_| Targets::new().with_default(Level::INFO))
        })
}

fn is_level(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "off" | "error" | "warn" | "info" | "debug" | "trace"
    ) || s.parse::<u8>().is_ok_and(|n| n <= 5)
}

/// The whole filter: the user's directives and the caps, both of which an event must pass.
pub fn filter<S>(user: Option<&str>) -> impl Filter<S> + use<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    user_filter(user).and(cap())
}

/// The log settings, read from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `BUTLER_LOG_LEVEL`, else `RUST_LOG`.
    pub directives: Option<String>,
    /// `BUTLER_LOG_FORMAT=json`.
    pub json: bool,
}

impl Settings {
    /// Reads the settings; a variable that is set but not valid UTF-8 is an error naming it
    /// (a filter read as "unset" would log at a level nobody asked for).
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let directives = match env.var("BUTLER_LOG_LEVEL")? {
            Some(v) => Some(v),
            None => env.var("RUST_LOG")?,
        };
        let json = env
            .var("BUTLER_LOG_FORMAT")?
            .is_some_and(|f| f.eq_ignore_ascii_case("json"));
        Ok(Settings { directives, json })
    }
}

/// Installs the process's logger: stderr through the non-blocking [`crate::output`] writer,
/// text or JSON, filtered by [`filter`]. Colour codes only for a person at a terminal.
pub fn init(settings: &Settings) {
    use std::io::IsTerminal;
    let writer = crate::output::Stderr;
    let ansi = std::io::stderr().is_terminal();
    // A closed or failing stderr drops log lines (the writer never fails a write).
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .log_internal_errors(false)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry();
    let result = if settings.json {
        registry
            .with(
                layer
                    .json()
                    .with_filter(filter(settings.directives.as_deref())),
            )
            .try_init()
    } else {
        registry
            .with(layer.with_filter(filter(settings.directives.as_deref())))
            .try_init()
    };
    // Only a second call fails; the first logger stays.
    let _ = result;
}

#[cfg(test)]
mod tests;
