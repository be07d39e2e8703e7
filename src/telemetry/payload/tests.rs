use super::*;

use std::collections::BTreeMap;

use crate::config::{self, ConfigSource, MapEnv};
use crate::telemetry::features;

const SEED: &str = include_str!("../../../tests/fixtures/seed-telemetry-example.json");
const ALL_ENABLED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/config/all-enabled.yaml"
);

fn host() -> HostFacts {
    HostFacts {
        platform: "linux".into(),
        arch: "x64".into(),
        distro: "Ubuntu".into(),
        codename: "jammy".into(),
        release: "22.04.4 LTS".into(),
        kernel: "6.8.0".into(),
        is_virtual: true,
        hypervisor: Some("kvm".into()),
        is_running_in_docker: false,
        container_runtime: None,
        kubernetes: false,
        wsl: false,
        rules: BTreeMap::new(),
    }
}

const ID: &str = "d7864884fcd5534377febd1dad8a3db87ba0a3e63d365fa9a587775abcc781ac";

fn event_for(tree: &Value) -> Value {
    let features = features::derive(tree);
    let host = host();
    build(
        EventInput {
            api_key: "phc_test",
            instance_id: ID,
            host: &host,
            features: &features,
            geoip_disable: true,
            service_version: "16.0.4",
        },
        Uuid::nil(),
        UNIX_EPOCH + Duration::from_millis(1_764_028_800_123),
    )
}

fn all_enabled_event() -> Value {
    let cfg = config::load(ConfigSource::Flag(ALL_ENABLED.into()), &MapEnv::default())
        .expect("the all-enabled fixture loads");
    event_for(&cfg.tree)
}

/// Same keys at every level, and the same JSON type at every leaf.
fn assert_same_shape(ours: &Value, seed: &Value, path: &str) {
    match (ours, seed) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            let mut sa = ka.clone();
            let mut sb = kb.clone();
            sa.sort();
            sb.sort();
            assert_eq!(sa, sb, "key sets differ at {path}");
            for (k, v) in b {
                assert_same_shape(&a[k], v, &format!("{path}.{k}"));
            }
        }
        (Value::Bool(_), Value::Bool(_)) | (Value::String(_), Value::String(_)) => {}
        (a, b) => panic!("type differs at {path}: ours {a}, seed {b}"),
    }
}

#[test]
fn golden_all_enabled_matches_the_seed_key_for_key_and_type_for_type() {
    let seed: Value = serde_json::from_str(SEED).unwrap();
    let event = all_enabled_event();
    let mut props = event["properties"].clone();
    for k in [
        "$lib",
        "$lib_version",
        "$process_person_profile",
        "$geoip_disable",
    ] {
        assert!(
            props.as_object_mut().unwrap().remove(k).is_some(),
            "{k} missing"
        );
    }
    assert_same_shape(&props, &seed, "properties");
}

#[test]
fn golden_all_enabled_feature_values_equal_the_seed() {
    let seed: Value = serde_json::from_str(SEED).unwrap();
    let event = all_enabled_event();
    let props = &event["properties"];
    for (k, v) in seed.as_object().unwrap() {
        if k.starts_with("feature_") {
            assert_eq!(&props[k], v, "{k}");
        }
    }
    assert_eq!(
        props["telemetry_json"]["enabledFeatures"],
        seed["telemetry_json"]["enabledFeatures"]
    );
}

#[test]
fn envelope_fields() {
    let event = all_enabled_event();
    assert_eq!(event["api_key"], "phc_test");
    assert_eq!(event["event"], "telemetry sent");
    assert_eq!(event["distinct_id"], ID);
    assert_eq!(event["uuid"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(event["timestamp"], "2025-11-25T00:00:00.123Z");
    let p = &event["properties"];
    assert_eq!(p["service"], "butler");
    // Butler's version, never the agent's own (that is `$lib_version`).
    assert_eq!(p["serviceVersion"], "16.0.4");
    assert_eq!(p["$lib_version"], VERSION);
    assert_eq!(p["system_id"], ID);
    assert_eq!(p["telemetry_json"]["system"]["id"], ID);
    assert!(
        p["system_nodeVersion"]
            .as_str()
            .unwrap()
            .starts_with("rustc ")
    );
    assert_eq!(p["$lib"], "butler-agent");
    assert_eq!(p["$process_person_profile"], false);
    assert_eq!(p["$geoip_disable"], true);
    assert_eq!(p["system_release"], "22.04.4 LTS");
    assert_eq!(p["telemetry_json"]["system"]["virtual"], true);
}

#[test]
fn config_secrets_never_reach_the_event() {
    let text = serde_json::to_string(&all_enabled_event()).unwrap();
    for secret in [
        "qrs.sense.example.internal",
        "hooks.example.internal",
        "monitoring.example.internal",
        "mqtt.example.internal",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
}

#[test]
fn uuid_is_v7_and_time_ordered() {
    let now = SystemTime::now();
    let a = new_uuid(now).unwrap();
    let b = new_uuid(now + Duration::from_millis(2)).unwrap();
    assert_eq!(a.get_version_num(), 7);
    assert!(a < b);
    assert_ne!(a, new_uuid(now).unwrap());
}
