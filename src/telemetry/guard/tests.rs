use crate::host::syscalls::FakeSyscalls;
use std::path::Path;
use std::time::SystemTime;

use super::*;
use crate::config::{self, ConfigSource, Env, MapEnv};
use crate::host::identifying::{container_ids_in, parse_if_inet6};
use crate::host::{Roots, Syscalls};
use crate::telemetry;

const TEMPLATE: &str = "tests/fixtures/butler-production-template.yaml";
const CONTAINER_ID: &str = "4f3c2b1a09e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A host tree with one planted value of every kind.
fn planted_host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    // The host's /etc is mounted at /host/etc; our own /etc is the container's.
    write(r, "host/etc/hostname", "qlik-prod-node7.corp.example\n");
    write(r, "etc/hostname", "sense-butler-01\n");
    write(r, "proc/sys/kernel/hostname", "sense-butler-01\n");
    write(
        r,
        "host/etc/machine-id",
        "8a2f7c0e5b3d4e6f9a1b2c3d4e5f6a7b\n",
    );
    write(r, "sys/class/net/eth0/address", "02:42:ac:11:00:02\n");
    write(r, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
    write(
        r,
        "proc/net/fib_trie",
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
         +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     \
         |-- 10.20.30.40\n        /32 host LOCAL\n     |-- 10.20.30.255\n        /32 link BROADCAST\n",
    );
    write(
        r,
        "proc/net/if_inet6",
        "00000000000000000000000000000001 01 80 10 80       lo\n\
         fe800000000000000042acfffe110002 02 40 20 80     eth0\n",
    );
    write(
        r,
        "proc/self/mountinfo",
        &format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{CONTAINER_ID}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        ),
    );
    dir
}

fn roots(host: &tempfile::TempDir) -> Roots {
    Roots {
        etc: host.path().join("host/etc"),
        ..Roots::at(host.path())
    }
}

fn template_config(env: &MapEnv) -> LoadedConfig {
    config::load(ConfigSource::Flag(TEMPLATE.into()), env).expect("the template loads")
}

/// What the guard knows after one cycle's gathering on this host, with `HOSTNAME` from `env`.
fn known_on(cfg: &LoadedConfig, roots: &Roots, env: &dyn Env, sys: &dyn Syscalls) -> Known {
    let mut roots = roots.clone();
    roots.env.hostname = env
        .var_os("HOSTNAME")
        .map(|v| v.to_string_lossy().into_owned());
    Known::from(&telemetry::gather(cfg, &roots, sys), cfg)
}

fn event_body(cfg: &LoadedConfig, roots: &Roots) -> Value {
    let snap = telemetry::gather(cfg, roots, &FakeSyscalls::default());
    telemetry::event(cfg, &snap, "16.0.4", SystemTime::now()).expect("random source available")
}

#[test]
fn gathers_every_kind_from_the_host_tree() {
    let host = planted_host();
    let env = MapEnv::new([("HOSTNAME", "butler-agent-pod-xyz")]);
    let cfg = template_config(&env);
    let known = known_on(&cfg, &roots(&host), &env, &FakeSyscalls::default());
    let has = |kind: &Kind, v: &str| {
        known
            .identifiers
            .iter()
            .any(|i| &i.kind == kind && (i.value == v || i.alternates.iter().any(|a| a == v)))
    };
    assert!(has(&Kind::HostName, "qlik-prod-node7.corp.example"));
    assert!(has(&Kind::ContainerHostName, "sense-butler-01"));
    assert!(has(&Kind::HostName, "butler-agent-pod-xyz"));
    assert!(has(&Kind::MachineId, "8a2f7c0e5b3d4e6f9a1b2c3d4e5f6a7b"));
    assert!(has(&Kind::MacAddress, "02:42:ac:11:00:02"));
    assert!(has(&Kind::MacAddress, "0242ac110002"));
    assert!(has(&Kind::IpAddress, "10.20.30.40"));
    assert!(has(&Kind::IpAddress, "fe80::42:acff:fe11:2"));
    assert!(has(&Kind::ContainerId, CONTAINER_ID));
    assert!(has(&Kind::ContainerId, &CONTAINER_ID[..12]));
    assert!(
        has(
            &Kind::ConfigValue("Butler.configQRS.host".into()),
            cfg.butler.qrs_host.as_deref().unwrap()
        ) || has(&Kind::QrsHost, cfg.butler.qrs_host.as_deref().unwrap())
    );
    // Loopback, broadcast and the all-zero MAC identify nothing and are not collected.
    assert!(!has(&Kind::IpAddress, "127.0.0.1"));
    assert!(!has(&Kind::IpAddress, "10.20.30.255"));
    assert!(!has(&Kind::IpAddress, "::1"));
    assert!(!has(&Kind::MacAddress, "00:00:00:00:00:00"));
}

#[test]
fn the_real_event_from_the_template_passes() {
    let host = planted_host();
    let env = MapEnv::new([("HOSTNAME", "butler-agent-pod-xyz")]);
    let cfg = template_config(&env);
    let roots = roots(&host);
    let known = known_on(&cfg, &roots, &env, &FakeSyscalls::default());
    for _ in 0..20 {
        // Fresh uuid and timestamp each time: a chance match would show up as a flaky failure.
        let body = serde_json::to_string(&event_body(&cfg, &roots)).unwrap();
        check(&body, &known).expect("the genuine event carries nothing identifying");
    }
}

/// Plants each known value into a string field of the genuine event and expects a refusal
/// naming its kind.
#[test]
fn refuses_each_planted_value_and_names_its_kind() {
    let host = planted_host();
    let env = MapEnv::new([("HOSTNAME", "butler-agent-pod-xyz")]);
    let mut cfg = template_config(&env);
    cfg.tree["Butler"]["mqttConfig"]["brokerPassword"] = "s3cr3t-Pa55".into();
    let roots = roots(&host);
    let known = known_on(&cfg, &roots, &env, &FakeSyscalls::default());
    let cases: Vec<(&str, Kind)> = vec![
        ("qlik-prod-node7.corp.example", Kind::HostName),
        ("QLIK-PROD-NODE7.corp.example", Kind::HostName),
        ("sense-butler-01", Kind::ContainerHostName),
        ("8a2f7c0e5b3d4e6f9a1b2c3d4e5f6a7b", Kind::MachineId),
        ("02:42:AC:11:00:02", Kind::MacAddress),
        ("02-42-ac-11-00-02", Kind::MacAddress),
        ("10.20.30.40", Kind::IpAddress),
        ("fe80::42:acff:fe11:2", Kind::IpAddress),
        (CONTAINER_ID, Kind::ContainerId),
        (&CONTAINER_ID[..12], Kind::ContainerId),
        (
            "s3cr3t-Pa55",
            Kind::ConfigValue("Butler.mqttConfig.brokerPassword".into()),
        ),
    ];
    for (planted, kind) in cases {
        let mut ev = event_body(&cfg, &roots);
        ev["properties"]["system_distro"] = format!("Ubuntu ({planted})").into();
        let body = serde_json::to_string(&ev).unwrap();
        let err = check(&body, &known).expect_err(planted);
        assert_eq!(err.kind, kind, "planted {planted}");
        // The message names the kind, never the value.
        assert!(!err.to_string().contains(planted), "{err}");
    }
}

#[test]
fn qrs_host_is_refused_even_when_not_in_the_tree() {
    let mut known = Known::default();
    known.push(Kind::QrsHost, "qrs.internal.example");
    let body = r#"{"event":"telemetry sent","properties":{"x":"qrs.internal.example"}}"#;
    assert_eq!(check(body, &known).unwrap_err().kind, Kind::QrsHost);
}

/// The Butler API URL (from the environment, so in no config value) and its host are known: a
/// Butler answering with its own host name as its version cannot put it in the event.
#[test]
fn the_butler_api_url_and_host_are_known_and_refused_even_as_the_version() {
    let host = planted_host();
    let env = MapEnv::new([("BUTLER_API_URL", "http://butler-prod-7.corp.example:8080")]);
    let cfg = template_config(&env);
    let roots = roots(&host);
    let known = known_on(&cfg, &roots, &env, &FakeSyscalls::default());
    let mut ev = event_body(&cfg, &roots);
    ev["properties"]["serviceVersion"] = "butler-prod-7.corp.example".into();
    let body = serde_json::to_string(&ev).unwrap();
    assert_eq!(check(&body, &known).unwrap_err().kind, Kind::ButlerApi);
    // The genuine event with Butler's version passes.
    let body = serde_json::to_string(&event_body(&cfg, &roots)).unwrap();
    check(&body, &known).expect("a version is no leak");
    // A loopback Butler identifies nothing: only the whole URL is looked for.
    let mut k = Known::default();
    k.push_butler_api("http://127.0.0.1:8080");
    assert_eq!(
        k.identifiers
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>(),
        ["http://127.0.0.1:8080"]
    );
}

#[test]
fn hex_identifiers_are_found_inside_the_id_fields() {
    // An ID derivation that leaked the machine-id into distinct_id must be caught, although
    // the ID fields are blanked for short values.
    let mut known = Known::default();
    let mid = "8a2f7c0e5b3d4e6f9a1b2c3d4e5f6a7b";
    known.push(Kind::MachineId, mid);
    let body = format!(r#"{{"distinct_id":"{mid}{mid}","properties":{{}}}}"#);
    assert_eq!(check(&body, &known).unwrap_err().kind, Kind::MachineId);
}

#[test]
fn exemption_rule() {
    let mut known = Known {
        fixed_words: fixed_words("phc_testkey_0123456789"),
        ..Known::default()
    };
    let word = |k: &mut Known, v: &str| k.push(Kind::ConfigValue(format!("Butler.{v}")), v);
    // Fixed vocabulary values, keys of the event, booleans, short strings, the project key.
    for v in [
        "butler",
        "Linux",
        "telemetry sent",
        "butler-agent",
        "true",
        "false",
        "null",
        "system",
        "enabledFeatures",
        "feature",
        "x64",
        "en",
        "phc_testkey_0123456789",
    ] {
        word(&mut known, v);
    }
    // A 4-digit year and a hex word would match the timestamp and uuid by chance: blanked.
    word(&mut known, "2026");
    word(&mut known, "beef");
    let body = serde_json::json!({
        "api_key": "phc_testkey_0123456789",
        "event": "telemetry sent",
        "distinct_id": "ab".repeat(32),
        "uuid": "019b6f4e-beef-7000-8000-2026beef2026",
        "timestamp": "2026-05-01T12:00:00.000Z",
        "properties": {
            "service": "butler",
            "system_platform": "linux",
            "system_arch": "x64",
            "$lib": "butler-agent",
            "system_isRunningInDocker": true,
            "telemetry_json": {"system": {"id": "ab".repeat(32)}, "enabledFeatures": {"feature": {"x": null}}},
            "feature_x": false
        }
    })
    .to_string();
    check(&body, &known).expect("no exempt value blocks the event");

    // But the same short-ish value in a free-text field is found.
    let leaky = body.replace("\"linux\"", "\"build 2026\"");
    assert_eq!(
        check(&leaky, &known).unwrap_err().kind,
        Kind::ConfigValue("Butler.2026".into())
    );
}

#[test]
fn json_escaped_values_are_found() {
    let mut known = Known::default();
    known.push(Kind::ConfigValue("Butler.pw".into()), "pa\"ss\\word");
    let body = serde_json::json!({"properties": {"x": "pa\"ss\\word"}}).to_string();
    assert!(check(&body, &known).is_err());
}

#[test]
fn parsers() {
    assert_eq!(
        parse_if_inet6("20010db8000000000000000000000001 02 40 00 80 eth0\nshort 1\n"),
        vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]
    );
    let cg = format!("0::/system.slice/docker-{CONTAINER_ID}.scope\n");
    assert_eq!(
        container_ids_in(&cg).into_iter().collect::<Vec<_>>(),
        vec![CONTAINER_ID.to_string()]
    );
    // 63 or 65 hex digits are not container IDs.
    assert!(container_ids_in(&"a".repeat(63)).is_empty());
    assert!(container_ids_in(&"a".repeat(65)).is_empty());
}

/// A host named like its distro, with config values equal to the distro's words: the event
/// carries those words by design and is not refused.
#[test]
fn hosts_named_like_the_distro_are_not_leaks() {
    let empty = tempfile::tempdir().unwrap();
    let facts = crate::host::HostFacts {
        distro: "Debian GNU/Linux 12 (bookworm)".into(),
        codename: "bookworm".into(),
        release: "12".into(),
        ..crate::host::detect_with(&Roots::at(empty.path()), &FakeSyscalls::default())
    };
    for name in [
        "debian",
        "bookworm",
        "linux",
        "ubuntu",
        "Debian GNU/Linux 12 (bookworm)",
    ] {
        let mut known = Known {
            fixed_words: fixed_words("phc_testkey_0123456789"),
            ..Known::default()
        };
        known.allow_facts(&facts);
        known.push(Kind::HostName, name);
        known.push(
            Kind::ConfigValue("Butler.os".into()),
            "Debian GNU/Linux 12 (bookworm)",
        );
        let body = serde_json::json!({
            "api_key": "phc_testkey_0123456789",
            "event": "telemetry sent",
            "properties": {
                "system_distro": facts.distro,
                "system_codename": facts.codename,
                "system_release": "12",
                "system_platform": "linux",
                "telemetry_json": {"system": {"distro": facts.distro, "codename": "bookworm"}},
            }
        });
        check(&body.to_string(), &known).expect(name);
        // The same name anywhere else is still a leak.
        let mut leaky = body.clone();
        leaky["properties"]["feature_x"] = format!("at {name}").into();
        assert!(check(&leaky.to_string(), &known).is_err(), "{name}");
        // And a by-design field holding something other than the fact is scanned.
        let mut forged = body.clone();
        forged["properties"]["system_codename"] = format!("{name}-2").into();
        assert!(check(&forged.to_string(), &known).is_err(), "{name}");
    }
}

/// Endpoint names are copied from the config: a planted value among them is found.
#[test]
fn endpoint_names_are_scanned() {
    let mut known = Known::default();
    known.push(Kind::HostName, "qlik-prod-node7");
    let body = serde_json::json!({"properties": {"telemetry_json": {"enabledFeatures":
        {"feature": {"apiEnabledEndpoints": {"qlik-prod-node7": true}}}}}});
    assert_eq!(
        check(&body.to_string(), &known).unwrap_err().kind,
        Kind::HostName
    );
    // Keys written by the agent are not.
    let body = serde_json::json!({"properties": {"qlik-prod-node7": true}});
    check(&body.to_string(), &known).expect("agent-written key");
}

/// A body that is not JSON is scanned as one text.
#[test]
fn a_body_that_is_not_json_is_scanned_whole() {
    let mut known = Known::default();
    known.push(Kind::HostName, "qlik-prod-node7");
    assert!(check("{not json qlik-prod-node7", &known).is_err());
    assert!(check("{not json", &known).is_ok());
}

/// Many known values, many of them sharing prefixes: all are found, each with its own kind.
#[test]
fn many_values_are_each_found() {
    let mut known = Known::default();
    for i in 0..2000 {
        known.push(
            Kind::ConfigValue(format!("Butler.k{i}")),
            format!("secret-{i}"),
        );
    }
    // Pushing the same value again keeps the first kind.
    known.push(Kind::HostName, "secret-7");
    assert_eq!(known.identifiers.len(), 2000);
    for i in [0, 7, 999, 1999] {
        let body = serde_json::json!({"properties": {"x": format!("v secret-{i}")}});
        assert!(check(&body.to_string(), &known).is_err(), "{i}");
    }
    let body = serde_json::json!({"properties": {"x": "secret-"}});
    check(&body.to_string(), &known).expect("a prefix of values is not a value");
}

/// The prefilter (first four bytes of each spelling) never hides a match: values found at the
/// start, middle and end of a field, in other case, non-ASCII, escaped, and in a non-JSON body.
#[test]
fn the_prefilter_never_hides_a_match() {
    let mut known = Known::default();
    for i in 0..500 {
        known.push(
            Kind::ConfigValue(format!("Butler.k{i}")),
            format!("filler-{i}"),
        );
    }
    let values = ["ÄÖÜ-Gasse", "node-Seven", "q\"uote\\d", "tab\there", "abcd"];
    for (i, v) in values.iter().enumerate() {
        known.push(Kind::ConfigValue(format!("Butler.v{i}")), *v);
    }
    for v in values {
        for text in [
            v.to_string(),
            format!("x {v}"),
            format!("{v} y"),
            v.to_uppercase(),
        ] {
            let body = serde_json::json!({"properties": {"x": text}}).to_string();
            assert!(check(&body, &known).is_err(), "{text:?}");
            let raw = format!("not json {}", body);
            assert!(check(&raw, &known).is_err(), "raw {text:?}");
        }
    }
    let body = serde_json::json!({"properties": {"x": "abc", "y": "node-Seve"}}).to_string();
    check(&body, &known).expect("no value occurs");
}

/// A container with the host's /proc and /sys mounted, its own network, a boot ID, a
/// container identity, a state secret and a Docker engine that answered: every input of the
/// instance ID, on any of its paths, is known to the guard.
fn id_inputs_host() -> (tempfile::TempDir, Roots) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
    write(
        r,
        "host/proc/1/net/route",
        &format!(
            "{HEADER}eno1\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eno1\t000200C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        ),
    );
    write(
        r,
        "host/proc/1/net/fib_trie",
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.0.2.77\n        /32 host LOCAL\n",
    );
    write(r, "host/sys/class/net/eno1/address", "3C:EC:EF:12:34:56\n");
    write(r, "host/proc/meminfo", "MemTotal:       16318412 kB\n");
    write(
        r,
        "host/var/lib/dbus/machine-id",
        "0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6\n",
    );
    // The container's own network.
    write(r, "sys/class/net/eth0/address", "02:42:ac:11:00:05\n");
    write(
        r,
        "proc/net/fib_trie",
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 172.17.0.5\n        /32 host LOCAL\n",
    );
    write(
        r,
        "proc/sys/kernel/random/boot_id",
        "5c0f3a2e-9d41-4b7a-8e6f-1a2b3c4d5e6f\n",
    );
    write(r, "proc/self/cgroup", "0::/lxc.payload.butler-web-3\n");
    write(
        r,
        "proc/self/mountinfo",
        "1 0 0:1 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/srv/ovl/upper-7f3e/diff,workdir=/w\n\
         2 1 8:1 /srv/run/ctr-9a8b7c/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n",
    );
    write(
        r,
        "state/instance-secret",
        &format!("{}\n", "5e".repeat(32)),
    );
    let roots = Roots {
        etc: r.join("host/etc"),
        etc_origin: host::Origin::HostVar("HOST_ETC"),
        proc: r.join("host/proc"),
        sys: r.join("host/sys"),
        proc_origin: host::Origin::HostVar("HOST_PROC"),
        sys_origin: host::Origin::HostVar("HOST_SYS"),
        ..Roots::at(r)
    };
    (dir, roots)
}

#[test]
fn every_instance_id_input_is_known_and_refused() {
    let (dir, roots) = id_inputs_host();
    let env = MapEnv::new([("HOSTNAME", "butler-agent-pod-xyz")]);
    let mut cfg = template_config(&env);
    cfg.agent.state_dir = Some(dir.path().join("state"));

    // The host-network anchor really uses the planted MAC and IPv4.
    let seen = host::identifying::Identifying::read(&roots, &FakeSyscalls::default());
    let h = seen.host_iface.expect("the host's interface");
    assert_eq!(
        (h.mac.as_str(), h.ipv4.as_str()),
        ("3c:ec:ef:12:34:56", "192.0.2.77")
    );

    let known = known_on(&cfg, &roots, &env, &FakeSyscalls::default());
    let secret = "5e".repeat(32);
    let cases: Vec<(&str, Kind)> = vec![
        ("3c:ec:ef:12:34:56", Kind::MacAddress),
        ("3C:EC:EF:12:34:56", Kind::MacAddress),
        ("3c-ec-ef-12-34-56", Kind::MacAddress),
        ("3CECEF123456", Kind::MacAddress),
        ("192.0.2.77", Kind::IpAddress),
        ("02:42:AC:11:00:05", Kind::MacAddress),
        ("0242ac110005", Kind::MacAddress),
        ("172.17.0.5", Kind::IpAddress),
        ("5c0f3a2e-9d41-4b7a-8e6f-1a2b3c4d5e6f", Kind::BootId),
        ("5C0F3A2E9D414B7A8E6F1A2B3C4D5E6F", Kind::BootId),
        ("/lxc.payload.butler-web-3", Kind::ContainerIdentity),
        ("/srv/run/ctr-9a8b7c/hostname", Kind::ContainerIdentity),
        ("/srv/ovl/upper-7f3e/diff", Kind::ContainerIdentity),
        (&secret, Kind::InstanceSecret),
        ("0D1E2F3A4B5C6D7E8F90A1B2C3D4E5F6", Kind::MachineId),
        ("16710053888", Kind::TotalMemory),
    ];
    let genuine = event_body(&cfg, &roots);
    check(&genuine.to_string(), &known).expect("the genuine event passes");
    for (planted, kind) in cases {
        // A free place of the body: not a by-design field.
        let mut ev = genuine.clone();
        ev["properties"]["telemetry_json"]["note"] = format!("seen {planted} here").into();
        let body = serde_json::to_string(&ev).unwrap();
        let err = check(&body, &known).expect_err(planted);
        assert_eq!(err.kind, kind, "planted {planted}");
        let text = err.to_string();
        assert!(
            !text.to_lowercase().contains(&planted.to_lowercase()),
            "{text}"
        );
    }
}

/// The addresses the ID reads through the syscalls (not from files) are known to the guard:
/// the fake's, never this machine's.
#[test]
fn knows_the_addresses_the_syscalls_give() {
    let empty = tempfile::tempdir().unwrap();
    let env = MapEnv::default();
    let cfg = LoadedConfig::defaults(&env).unwrap();
    let sys = FakeSyscalls::default().interface("eth7", "02:42:ac:11:00:77", [10, 9, 8, 7]);
    let has = |known: &Known, kind: &Kind, v: &str| {
        known
            .identifiers
            .iter()
            .any(|i| &i.kind == kind && i.value == v)
    };
    let roots = Roots::at(empty.path());
    let known = known_on(&cfg, &roots, &env, &sys);
    assert!(has(&known, &Kind::MacAddress, "02:42:ac:11:00:77"));
    assert!(
        known
            .identifiers
            .iter()
            .any(|i| i.value.contains("10.9.8.7"))
    );
    let without = known_on(&cfg, &roots, &env, &FakeSyscalls::default());
    assert!(!has(&without, &Kind::MacAddress, "02:42:ac:11:00:77"));
}

/// The Docker engine's ID, when the ID's derivation asked the engine, is known to the guard
/// (the derivation hands it over; nothing remembers it elsewhere).
#[test]
fn knows_the_engine_id_the_id_read() {
    const ENGINE: &str = "QZXW:PLNT:GRD1:ENGN:7K3M:ABCD:EFGH:IJKL:MNOP:QRST:UVWX:YZ12";
    let dir = tempfile::tempdir().unwrap();
    let env = MapEnv::default();
    let cfg = LoadedConfig::defaults(&env).unwrap();
    let mut roots = Roots::at(dir.path());
    roots.env.container_override = Some("docker".into());
    roots.env.docker_host = Some("tcp://127.0.0.1:1".into());
    let sys = FakeSyscalls::default().engine_id(ENGINE);
    let snapshot = telemetry::gather(&cfg, &roots, &sys);
    assert_eq!(snapshot.id.method, crate::instance_id::METHOD_ENGINE_ID);
    let known = Known::from(&snapshot, &cfg);
    let mut ev = telemetry::event(&cfg, &snapshot, "16.0.4", SystemTime::now()).unwrap();
    check(&ev.to_string(), &known).expect("the genuine event passes");
    ev["properties"]["telemetry_json"]["note"] = format!("engine {ENGINE}").into();
    let err = check(&ev.to_string(), &known).expect_err("the engine ID is refused");
    assert_eq!(err.kind, Kind::DockerEngineId);
    // Without the engine, nothing knows its ID.
    let without = Known::from(
        &telemetry::gather(&cfg, &roots, &FakeSyscalls::default()),
        &cfg,
    );
    assert!(check(&ev.to_string(), &without).is_ok());
}
