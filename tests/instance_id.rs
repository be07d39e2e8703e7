//! The instance ID: vectors computed independently with Python's `hmac`
//! (`tests/fixtures/instance_id/make_vectors.py`), stability, sensitivity to each input, and
//! survival of container re-creation when an anchor is available.

mod common;
use common::copy_dir;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use butler_agent::config::MapEnv;
use butler_agent::host::syscalls::DockerEndpoint;
use butler_agent::host::{self, CpuidVm, Interface, Roots, Syscalls};
use butler_agent::instance_id::{
    self, Anchor, ButlerInputs, IdConfig, InstanceId, METHOD_BUTLER, METHOD_ENGINE_ID,
    METHOD_MACHINE_ID, METHOD_OWN_VALUES, METHOD_STATE_SECRET,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name)
        .join("root")
}

#[test]
fn butler_vectors_match_python() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/instance_id/vectors.json"),
    )
    .expect("vectors are checked in");
    let v: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let cases = v["butler"].as_array().expect("butler vectors");
    assert!(cases.len() >= 8);
    for case in cases {
        let i = &case["inputs"];
        let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
        let inputs = ButlerInputs {
            interface: i["mac"].as_str().map(|m| (m.to_string(), s("ipv4"))),
            qrs_host: s("qrsHost"),
            system_uuid: s("systemUuid"),
            os_serial: s("osSerial"),
            mem_total: i["memTotal"].as_u64(),
            os_release: s("osRelease"),
        };
        assert_eq!(
            instance_id::butler_id(&inputs),
            case["id"].as_str().expect("id"),
            "vector {}",
            case["name"]
        );
    }
    for case in v["container"].as_array().expect("container vectors") {
        let i = &case["inputs"];
        let anchor = i["anchor"].as_str().expect("anchor").to_string();
        let anchor = match i["kind"].as_str() {
            Some("machine-id") => Anchor::HostMachineId(anchor),
            Some("docker-engine-id") => Anchor::EngineId(anchor),
            Some("state-secret") => Anchor::StateSecret(anchor),
            other => panic!("unknown kind {other:?}"),
        };
        assert_eq!(
            instance_id::container_id(&anchor, i["qrsHost"].as_str().expect("qrs")),
            case["id"].as_str().expect("id"),
            "vector {}",
            case["name"]
        );
    }
}

/// Syscalls with fixed answers.
#[derive(Clone)]
struct Fake {
    ifaces: BTreeMap<String, Interface>,
    engine: Result<String, String>,
}

impl Fake {
    fn with(name: &str, mac: &str, ip: [u8; 4]) -> Self {
        let mut ifaces = BTreeMap::new();
        ifaces.insert(
            name.to_string(),
            Interface {
                mac: mac.into(),
                ipv4: Some(Ipv4Addr::from(ip)),
            },
        );
        Fake {
            ifaces,
            engine: Err("no engine".into()),
        }
    }
}

impl Syscalls for Fake {
    fn cpuid(&self) -> Option<CpuidVm> {
        None
    }
    fn interface(&self, name: &str) -> Option<Interface> {
        self.ifaces.get(name).cloned()
    }
    fn first_external_interface(&self) -> Option<String> {
        self.ifaces.keys().next().cloned()
    }
    fn pid(&self) -> u32 {
        4242
    }
    fn docker_engine_id(&self, _: &DockerEndpoint) -> Result<String, String> {
        self.engine.clone()
    }
}

fn derive(roots: &Roots, sys: &Fake, qrs: &str, state: Option<&Path>) -> InstanceId {
    let facts = host::detect_with(roots, sys);
    instance_id::derive_with(
        roots,
        &facts,
        IdConfig {
            qrs_host: Some(qrs),
            state_dir: state,
        },
        sys,
    )
}

#[test]
fn bare_metal_uses_butlers_algorithm_on_the_default_interface() {
    let roots = Roots::at(fixture("bare-metal"));
    let sys = Fake::with("eno1", "b8:ca:3a:6e:1f:20", [192, 168, 0, 17]);
    let id = derive(&roots, &sys, "sense.example.com", None);
    assert_eq!(id.method, METHOD_BUTLER);
    // The fixture's product_uuid is unreadable to non-root in real life, and absent here.
    let expected = instance_id::butler_id(&ButlerInputs {
        interface: Some(("b8:ca:3a:6e:1f:20".into(), "192.168.0.17".into())),
        qrs_host: "sense.example.com".into(),
        ..ButlerInputs::default()
    });
    assert_eq!(id.id, expected);
    assert_eq!(
        id,
        derive(&roots, &sys, "sense.example.com", None),
        "same inputs, same ID"
    );
}

#[test]
fn changing_any_one_input_changes_the_id() {
    let roots = Roots::at(fixture("bare-metal"));
    let sys = Fake::with("eno1", "b8:ca:3a:6e:1f:20", [192, 168, 0, 17]);
    let base = derive(&roots, &sys, "sense.example.com", None).id;
    let other_mac = Fake::with("eno1", "b8:ca:3a:6e:1f:21", [192, 168, 0, 17]);
    let other_ip = Fake::with("eno1", "b8:ca:3a:6e:1f:20", [192, 168, 0, 18]);
    assert_ne!(
        base,
        derive(&roots, &other_mac, "sense.example.com", None).id
    );
    assert_ne!(
        base,
        derive(&roots, &other_ip, "sense.example.com", None).id
    );
    assert_ne!(base, derive(&roots, &sys, "sense2.example.com", None).id);
    // System UUID: the same tree with a readable product_uuid.
    let tmp = copy_tree(&fixture("bare-metal"), "uuid");
    std::fs::write(
        tmp.join("sys/class/dmi/id/product_uuid"),
        "4C4C4544-004A-3510-804B-B4C04F4E3432\n",
    )
    .expect("temp tree is writable");
    let with_uuid = derive(&Roots::at(&tmp), &sys, "sense.example.com", None);
    assert_ne!(base, with_uuid.id);
    let expected = instance_id::butler_id(&ButlerInputs {
        interface: Some(("b8:ca:3a:6e:1f:20".into(), "192.168.0.17".into())),
        qrs_host: "sense.example.com".into(),
        system_uuid: "4c4c4544-004a-3510-804b-b4c04f4e3432".into(),
        ..ButlerInputs::default()
    });
    assert_eq!(
        with_uuid.id, expected,
        "UUID lower-cased as systeminformation does"
    );
    let _ = std::fs::remove_dir_all(tmp);
}

/// A container is re-created: new MAC, new IP.
fn recreated() -> (Fake, Fake) {
    (
        Fake::with("eth0", "02:42:ac:11:00:02", [172, 17, 0, 2]),
        Fake::with("eth0", "02:42:ac:11:00:07", [172, 17, 0, 7]),
    )
}

#[test]
fn container_keeps_its_id_with_the_host_machine_id() {
    let env = MapEnv::new([("HOST_ROOT", "/host")]);
    let roots = Roots::from_env(fixture("docker-host-root"), &env);
    let (a, b) = recreated();
    let first = derive(&roots, &a, "sense.example.com", None);
    let second = derive(&roots, &b, "sense.example.com", None);
    assert_eq!(first.method, METHOD_MACHINE_ID);
    assert_eq!(first.id, second.id, "survives re-creation");
    assert_eq!(
        first.id,
        instance_id::container_id(
            &Anchor::HostMachineId("0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a".into()),
            "sense.example.com"
        )
    );
    assert!(
        first
            .inputs
            .iter()
            .any(|i| i.contains("machine-id from HOST_ROOT"))
    );
    assert_ne!(first.id, derive(&roots, &a, "sense2.example.com", None).id);
    // Without the mount, the container's own values decide, and they change.
    let bare = Roots::at(fixture("docker-host-root"));
    let own_a = derive(&bare, &a, "sense.example.com", None);
    let own_b = derive(&bare, &b, "sense.example.com", None);
    assert_eq!(own_a.method, METHOD_OWN_VALUES);
    assert_ne!(own_a.id, own_b.id);
}

#[test]
fn container_keeps_its_id_with_the_engine_id() {
    let env = MapEnv::new([("DOCKER_HOST", "unix:///var/run/docker.sock")]);
    let roots = Roots::from_env(fixture("docker-cgroup-v1"), &env);
    let (mut a, mut b) = recreated();
    a.engine = Ok("6Q6H:K2MO:FE4F:TIGP".into());
    b.engine = a.engine.clone();
    let first = derive(&roots, &a, "sense.example.com", None);
    assert_eq!(first.method, METHOD_ENGINE_ID);
    assert_eq!(first.id, derive(&roots, &b, "sense.example.com", None).id);
    let mut other_host = b.clone();
    other_host.engine = Ok("ZZZZ:K2MO:FE4F:TIGP".into());
    assert_ne!(
        first.id,
        derive(&roots, &other_host, "sense.example.com", None).id
    );
}

#[test]
fn container_keeps_its_id_with_the_state_volume() {
    let roots = Roots::at(fixture("docker-cgroup-v1"));
    let state = std::env::temp_dir().join(format!("butler-agent-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (a, b) = recreated();
    let first = derive(&roots, &a, "sense.example.com", Some(&state));
    assert_eq!(first.method, METHOD_STATE_SECRET);
    assert!(state.join(instance_id::SECRET_FILE).is_file());
    assert_eq!(
        first.id,
        derive(&roots, &b, "sense.example.com", Some(&state)).id
    );
    // A fresh volume is a new instance.
    let fresh = state.with_extension("fresh");
    let _ = std::fs::remove_dir_all(&fresh);
    assert_ne!(
        first.id,
        derive(&roots, &b, "sense.example.com", Some(&fresh)).id
    );
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&fresh);
}

#[test]
fn ids_are_64_lowercase_hex_in_every_path() {
    let (a, _) = recreated();
    for name in [
        "bare-metal",
        "docker-cgroup-v1",
        "docker-scratch",
        "wsl2",
        "lxc",
    ] {
        let id = derive(&Roots::at(fixture(name)), &a, "x", None).id;
        assert!(
            id.len() == 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{name}: {id}"
        );
    }
}

fn copy_tree(from: &Path, tag: &str) -> PathBuf {
    let to = std::env::temp_dir().join(format!("butler-agent-tree-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    copy_dir(from, &to);
    to
}

#[test]
fn real_engine_id_matches_docker_info() {
    use butler_agent::host::RealSyscalls;
    let missing = DockerEndpoint::Unix("/nonexistent/docker.sock".into());
    assert!(RealSyscalls.docker_engine_id(&missing).is_err());
    let sock = Path::new(instance_id::DOCKER_SOCKET);
    let cli = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ID}}"])
        .output();
    let Some(expected) = cli
        .ok()
        .filter(|o| o.status.success() && sock.exists())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    else {
        assert!(
            std::env::var("BUTLER_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "BUTLER_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`"
        );
        eprintln!("note: no reachable Docker engine; engine-ID comparison skipped");
        return;
    };
    let got = RealSyscalls
        .docker_engine_id(&DockerEndpoint::Unix(sock.to_path_buf()))
        .expect("the engine answers /info");
    assert_eq!(got, expected);
}
