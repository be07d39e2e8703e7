use proptest::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::test_support::Logs;

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
fn span_and_field_filters_are_dropped() {
    let d = directives(Some("[request]=trace,info"));
    assert!(!d.contains("[request]"), "{d}");
    assert!(d.contains("bollard=warn"), "{d}");
    assert!(!directives(Some("butler_agent[x]=debug")).contains("butler_agent"));
}

#[test]
fn bad_directives_fall_back() {
    let _ = user_filter(Some("=,=,[[["));
    let _ = user_filter(Some("nonsense=loud"));
}

#[test]
fn the_cap_is_by_crate_not_by_prefix() {
    assert_eq!(cap_of("bollard"), Some(Level::INFO));
    assert_eq!(cap_of("bollard::docker"), Some(Level::INFO));
    assert_eq!(cap_of("bollardx"), None);
    assert_eq!(cap_of("bol"), None);
    assert_eq!(cap_of("butler_agent::host"), None);
}

/// Emits bollard's events at every level, inside spans with the names and fields the grammar's
/// span and field filters can name, plus an event of the agent's own at `debug`; returns what
/// was written under `filter`.
fn emitted<F>(filter: F) -> String
where
    F: tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    let out = Logs::default();
    let writer = out.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_filter(filter);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("request", x = 1, payload = "p");
        let _outer = outer.enter();
        let inner = tracing::info_span!(target: "bollard::docker", "request", x = 1);
        let _inner = inner.enter();
        tracing::trace!(target: "bollard::docker", x = 1, payload = "p", "ENGINE-ANSWER-trace");
        tracing::debug!(target: "bollard::docker", x = 1, payload = "p", "ENGINE-ANSWER-debug");
        tracing::trace!(target: "bollard", x = 1, "ENGINE-ANSWER-trace-root");
        tracing::debug!(target: "bollard", x = 1, "ENGINE-ANSWER-debug-root");
        tracing::info!(target: "bollard::docker", "bollard-info-line");
        tracing::debug!(target: "othercrate", "other-crate-debug");
        tracing::debug!("own-debug-line");
    });
    out.text()
}

/// The named bypasses of issue 19 and their relatives.
const NAMED: &[&str] = &[
    "bollard=4",
    "bollard=5",
    "bollard:=debug",
    "bollard::=trace",
    "info,bollard=5",
    "bol=trace",
    "b=5",
    "trace",
    "5",
    "TRACE",
    "bollard",
    "bollard=trace",
    "bollard::docker=TRACE",
    "bollard[request]=debug",
    "bollard[{x}]=trace",
    "[request]=trace",
    "[{x}]=trace",
    "[{payload=\"p\"}]=5",
    "[request{x=1}]=trace",
    "bollard[]=trace",
    " bollard = 5 ",
    "off,bollard=trace",
    "debug,bollard=debug,bol=5",
];

#[test]
fn no_named_directive_lets_bollard_log_debug() {
    for d in NAMED {
        let text = emitted(filter(Some(d)));
        assert!(!text.contains("ENGINE-ANSWER"), "{d:?} printed:\n{text}");
    }
}

/// The test can fail: without the cap, the user's filter alone lets these through.
#[test]
fn without_the_cap_these_directives_would_print_bollards_debug() {
    for d in ["bollard=5", "bollard:=debug", "info,bollard=4"] {
        let text = emitted(user_filter(Some(d)));
        assert!(text.contains("ENGINE-ANSWER-debug"), "{d:?}: {text}");
    }
}

#[test]
fn the_cap_keeps_what_it_does_not_cap() {
    let text = emitted(filter(Some("debug,bollard=info")));
    assert!(text.contains("bollard-info-line"), "{text}");
    assert!(text.contains("own-debug-line"), "{text}");
    assert!(text.contains("other-crate-debug"), "{text}");
    let quiet = emitted(filter(Some("info")));
    assert!(!quiet.contains("own-debug-line"), "{quiet}");
    assert!(
        !quiet.contains("bollard-info-line"),
        "bollard is at warn: {quiet}"
    );
}

/// One directive of `EnvFilter`'s grammar: `target[span{field=value}]=level`, each part
/// optional, with the targets, spans and levels that could reach bollard's events.
fn directive() -> impl Strategy<Value = String> {
    let target = prop::sample::select(vec![
        "",
        "b",
        "bo",
        "bol",
        "boll",
        "bollar",
        "bollard",
        "bollard:",
        "bollard::",
        "bollard::d",
        "bollard::docker",
        "bollard::docker::x",
        "Bollard",
        "butler_agent",
        "hyper",
    ]);
    let span = prop::sample::select(vec![
        "",
        "[]",
        "[request]",
        "[{x}]",
        "[{x=1}]",
        "[request{x}]",
        "[request{x=1}]",
        "[{payload}]",
        "[{payload=\"p\"}]",
        "[{payload=p}]",
        "[req]",
    ]);
    let level = prop::sample::select(vec![
        "", "=", "=trace", "=TRACE", "=Trace", "=debug", "=DEBUG", "=5", "=4", "=3", "=2", "=1",
        "=0", "=info", "=warn", "=error", "=off", "=OFF", "=05",
    ]);
    let pad = prop::sample::select(vec!["", " ", "\t"]);
    (target, span, level, pad).prop_map(|(t, s, l, p)| format!("{p}{t}{s}{l}{p}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// Any list of directives, valid or not: bollard's `debug` and `trace` are never written.
    #[test]
    fn no_directive_of_the_grammar_lets_bollard_log_debug(
        list in prop::collection::vec(directive(), 1..5),
        bare in prop::sample::select(vec!["", "trace", "5", "debug", "4", "TRACE"]),
    ) {
        let mut all = list;
        if !bare.is_empty() {
            all.push(bare.to_string());
        }
        let user = all.join(",");
        let text = emitted(filter(Some(&user)));
        prop_assert!(!text.contains("ENGINE-ANSWER"), "{:?} printed:\n{}", user, text);
    }
}
