use super::*;

use serde_json::json;

fn flags(butler: Value) -> Features {
    derive(&json!({ "Butler": butler }))
}

fn flat(butler: Value, prop: &str) -> Value {
    flags(butler).flat[prop].clone()
}

/// Builds `{a: {b: {c: value}}}` from "a.b.c".
fn at(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |v, k| json!({ k: v }))
}

#[test]
fn every_table_row_reads_its_key() {
    for s in SIMPLE {
        assert_eq!(
            flat(at(s.key, json!(true)), s.prop),
            json!(true),
            "{}",
            s.prop
        );
        assert_eq!(
            flat(at(s.key, json!(false)), s.prop),
            json!(false),
            "{}",
            s.prop
        );
        // Absent: JSON null, not Butler's string "null".
        assert_eq!(flat(json!({}), s.prop), Value::Null, "{}", s.prop);
        assert_eq!(
            flat(at(s.key, Value::Null), s.prop),
            Value::Null,
            "{}",
            s.prop
        );
    }
}

#[test]
fn value_rows_turn_non_booleans_into_null_with_a_warning() {
    let f = flags(at("scheduler.enable", json!("https://secret.example/")));
    assert_eq!(f.flat["feature_scheduler"], Value::Null);
    assert_eq!(f.warnings.len(), 1);
    assert!(f.warnings[0].contains("Butler.scheduler.enable"));
    // The value itself is never in the warning: it may be a secret.
    assert!(!f.warnings[0].contains("secret"));
    assert_eq!(
        flat(at("mqttConfig.enable", json!(1)), "feature_mqtt"),
        Value::Null
    );
}

#[test]
fn true_only_rows_give_false_for_any_other_present_value() {
    for (key, prop) in [
        ("heartbeat.enable", "feature_heartbeat"),
        ("dockerHealthCheck.enable", "feature_dockerHealthCheck"),
        ("uptimeMonitor.enable", "feature_uptimeMonitor"),
        (
            "uptimeMonitor.storeInInfluxdb.enable",
            "feature_uptimeMonitoStoreInInfluxdb",
        ),
    ] {
        assert_eq!(flat(at(key, json!("yes")), prop), json!(false), "{prop}");
        assert_eq!(flat(at(key, json!(true)), prop), json!(true), "{prop}");
        assert_eq!(flat(json!({}), prop), Value::Null, "{prop}");
    }
}

#[test]
fn typo_keys_are_kept_as_butler_spells_them() {
    let f = flags(json!({}));
    assert!(f.flat.contains_key("feature_uptimeMonitoStoreInInfluxdb"));
    assert!(f.flat.contains_key("feature_uptimeMonitoStoreInNewRelic"));
    assert!(!f.flat.contains_key("feature_uptimeMonitorStoreInInfluxdb"));
}

#[test]
fn webhook_master_switch() {
    let prop = "feature_webhookNotification";
    assert_eq!(
        flat(at("webhookNotification.enable", json!(true)), prop),
        json!(true)
    );
    assert_eq!(
        flat(at("webhookNotification.enable", json!(false)), prop),
        json!(false)
    );
    assert_eq!(flat(json!({}), prop), Value::Null);
    // True-only, like Butler: any other present value is false.
    for v in [
        json!("on"),
        json!("sure"),
        json!(1),
        json!([true]),
        json!(".inf"),
    ] {
        let f = flags(at("webhookNotification.enable", v.clone()));
        assert_eq!(f.flat[prop], json!(false), "{v}");
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("Butler.webhookNotification.enable"))
        );
        // The lists follow the switch: off.
        for (list, _) in WEBHOOK_LISTS {
            assert_eq!(f.flat[*list], json!(false), "{list} with {v}");
        }
    }
}

#[test]
fn webhook_lists_need_the_switch_and_a_non_empty_list() {
    let hook = json!([{ "webhookURL": "https://hooks.example/x" }]);
    for (prop, section) in WEBHOOK_LISTS {
        let cfg = |enable: Value, list: Option<Value>| {
            let mut w = json!({ "enable": enable });
            if let Some(list) = list {
                w[*section] = json!({ "webhooks": list });
            }
            flat(json!({ "webhookNotification": w }), prop)
        };
        assert_eq!(cfg(json!(true), Some(hook.clone())), json!(true), "{prop}");
        assert_eq!(
            cfg(json!(true), Some(json!([]))),
            json!(false),
            "{prop} empty"
        );
        assert_eq!(
            cfg(json!(true), Some(Value::Null)),
            json!(false),
            "{prop} null"
        );
        assert_eq!(cfg(json!(true), None), json!(false), "{prop} absent list");
        assert_eq!(
            cfg(json!(false), Some(hook.clone())),
            json!(false),
            "{prop} off"
        );
        assert_eq!(
            cfg(json!(true), Some(json!("x"))),
            Value::Null,
            "{prop} bad"
        );
        assert_eq!(flat(json!({}), prop), Value::Null, "{prop} absent");
    }
}

#[test]
fn new_relic_either_or() {
    for (prop, section) in NEW_RELIC {
        let cfg = |event: Option<Value>, log: Option<Value>| {
            let mut d = json!({});
            if let Some(e) = event {
                d["event"] = json!({ "enable": e });
            }
            if let Some(l) = log {
                d["log"] = json!({ "enable": l });
            }
            let path = format!("incidentTool.newRelic.{section}.destination");
            flat(at(&path, d), prop)
        };
        let (t, f) = (Some(json!(true)), Some(json!(false)));
        assert_eq!(cfg(t.clone(), f.clone()), json!(true), "{prop} event");
        assert_eq!(cfg(f.clone(), t.clone()), json!(true), "{prop} log");
        assert_eq!(cfg(t.clone(), t.clone()), json!(true), "{prop} both");
        assert_eq!(cfg(f.clone(), f.clone()), json!(false), "{prop} neither");
        assert_eq!(cfg(f.clone(), None), json!(false), "{prop} one false");
        assert_eq!(cfg(None, None), Value::Null, "{prop} absent");
        assert_eq!(
            cfg(Some(json!("x")), t.clone()),
            json!(true),
            "{prop} bad+true"
        );
        // "Either is true": a non-boolean is not true.
        assert_eq!(
            cfg(Some(json!("x")), f.clone()),
            json!(false),
            "{prop} bad+false"
        );
        assert_eq!(cfg(Some(json!("x")), None), json!(false), "{prop} bad");
    }
}

#[test]
fn api_endpoints_copy_only_boolean_leaves() {
    let f = flags(json!({ "restServerEndpointsEnable": {
        "butlerping": true,
        "fileCopy": "yes",
        "newRelic": { "postNewRelicEvent": false, "token": "s3cr3t-token" },
        "scheduler": { "getSchedule": true, "list": [1, 2] },
        "empty": null
    }}));
    assert_eq!(
        f.nested["apiEnabledEndpoints"],
        json!({
            "butlerping": true,
            "newRelic": { "postNewRelicEvent": false },
            "scheduler": { "getSchedule": true }
        })
    );
    assert_eq!(f.warnings.len(), 3, "{:?}", f.warnings);
    assert!(!format!("{f:?}").contains("s3cr3t"));
}

#[test]
fn nested_mirrors_flat() {
    let f = flags(json!({
        "qlikSenseCloud": { "enable": true },
        "scriptLog": { "storeOnDisk": { "qsCloud": { "appReloadFailure": { "enable": true } } } },
        "uptimeMonitor": { "storeNewRelic": { "enable": false } }
    }));
    assert_eq!(f.nested["qlikSenseCloud"]["enabled"], json!(true));
    assert_eq!(
        f.nested["scriptLogStoreOnDisk"]["qsCloud"]["appReloadFailure"],
        json!(true)
    );
    assert_eq!(f.nested["uptimeMonitor_storeInNewRelic"], json!(false));
    for (name, prop) in NESTED {
        assert_eq!(f.nested[*name], f.flat[*prop], "{name}");
    }
}

#[test]
fn no_config_at_all_gives_nulls_not_errors() {
    let f = derive(&Value::Null);
    assert!(f.flat.values().all(Value::is_null));
    assert!(f.warnings.is_empty());
}

/// Every feature key given each non-boolean value, against the reference table's rule for that
/// key: true-only keys give `false`, copied keys give `null`, and each names the key in a
/// warning without the value.
#[test]
fn every_feature_key_with_a_non_boolean_follows_its_rule() {
    let true_only = [
        "heartbeat.enable",
        "dockerHealthCheck.enable",
        "uptimeMonitor.enable",
        "uptimeMonitor.storeInInfluxdb.enable",
    ];
    let odd = [
        json!("sure"),
        json!("true"),
        json!(1),
        json!(0),
        json!(2.5),
        json!(".inf"),
        json!(".nan"),
        json!([true]),
        json!({"enable": true}),
        json!("secret-value-xyz"),
    ];
    for s in SIMPLE {
        let expected = if true_only.contains(&s.key) {
            json!(false)
        } else {
            Value::Null
        };
        assert_eq!(
            s.rule == Rule::TrueOnly,
            true_only.contains(&s.key),
            "{}",
            s.key
        );
        for v in &odd {
            let f = flags(at(s.key, v.clone()));
            assert_eq!(f.flat[s.prop], expected, "{} = {v}", s.key);
            let needle = format!("Butler.{}", s.key);
            assert!(
                f.warnings.iter().any(|w| w.contains(&needle)),
                "{} = {v}: {:?}",
                s.key,
                f.warnings
            );
            assert!(f.warnings.iter().all(|w| !w.contains("secret")));
        }
    }
    // The composite rows.
    for v in &odd {
        let f = flags(at("webhookNotification.enable", v.clone()));
        assert_eq!(f.flat["feature_webhookNotification"], json!(false), "{v}");
        for (prop, section) in NEW_RELIC {
            let path = format!("incidentTool.newRelic.{section}.destination.event.enable");
            assert_eq!(flat(at(&path, v.clone()), prop), json!(false), "{prop} {v}");
        }
    }
}

// Robustness of the config loader and feature derivation: arbitrary and mutated input never
// panics, and every refusal is a `ConfigError` with a message. Bounded: a fixed number of cases
// per property, seeded from Butler's real template.

use crate::config::parse_str;
use crate::telemetry::features;
use proptest::prelude::*;

const TEMPLATE: &str = include_str!("../../../tests/fixtures/butler-production-template.yaml");
const ALL_ENABLED: &str = include_str!("../../../tests/fixtures/config/all-enabled.yaml");

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
