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
