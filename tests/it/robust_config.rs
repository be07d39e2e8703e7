//! Robustness of the config loader and feature derivation: arbitrary and mutated input never
//! panics, and every refusal is a `ConfigError` with a message. Bounded: a fixed number of cases
//! per property, seeded from Butler's real template.

use butler_agent::config::parse_str;
use butler_agent::telemetry::features;
use proptest::prelude::*;

const TEMPLATE: &str = include_str!("../fixtures/butler-production-template.yaml");
const ALL_ENABLED: &str = include_str!("../fixtures/config/all-enabled.yaml");

fn check(text: &str) {
    match parse_str(text, "fuzz.yaml") {
        Ok((tree, _, _)) => {
            // Whatever parsed must also derive flags without panicking, and only booleans or
            // nulls may come out of it.
            let f = features::derive(&tree);
            assert!(f.flat.values().all(|v| v.is_boolean() || v.is_null()));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Line-level mutations of a real config: drop, duplicate, swap or corrupt lines.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = base.lines().collect();
    let n = lines.len();
    prop::collection::vec((0..n, 0u8..6, any::<u8>(), ".{0,12}"), 1..8).prop_map(move |edits| {
        let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        for (i, op, byte, junk) in edits {
            let i = i % out.len().max(1);
            if out.is_empty() {
                break;
            }
            match op {
                0 => {
                    out.remove(i);
                }
                1 => {
                    let l = out[i].clone();
                    out.insert(i, l);
                }
                2 => {
                    let j = (i + byte as usize) % out.len();
                    out.swap(i, j);
                }
                3 => out[i].push_str(&junk),
                4 => {
                    let cut = out[i].len().min(byte as usize);
                    let cut = (0..=cut)
                        .rev()
                        .find(|c| out[i].is_char_boundary(*c))
                        .unwrap_or(0);
                    out[i].truncate(cut);
                }
                _ => out[i] = format!("{}{}", " ".repeat(byte as usize % 9), out[i].trim_start()),
            }
        }
        out.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn yaml_shaped_noise_never_panics(text in "(Butler:\n)?([ \t]{0,6}[a-zA-Z&*!|>\\[\\]{}:,'\"#-]{0,12}( [a-z0-9*&]{0,8})?\n){0,30}") {
        check(&text);
    }

    #[test]
    fn mutated_template_never_panics(text in mutated(TEMPLATE)) {
        check(&text);
    }

    #[test]
    fn mutated_all_enabled_never_panics(text in mutated(ALL_ENABLED)) {
        check(&text);
    }
}

/// Inputs that once needed care, kept as regression cases.
#[test]
fn regressions() {
    for text in [
        "",
        "\u{feff}",
        "---\n---\n",
        "Butler: ~\n",
        "Butler: [1, 2]\n",
        "Butler:\n  anonTelemetry: !!binary aGVsbG8=\n",
        "Butler:\n  <<: *nope\n",
        "Butler: &a\n  x: *a\n",
        "? [a]\n: b\n",
        "Butler:\n  restServerEndpointsEnable: 12\n",
        "Butler:\n  webhookNotification:\n    enable: true\n    reloadTaskFailure: 3\n",
    ] {
        check(text);
    }
}
