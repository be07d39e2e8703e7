//! The instance ID: vectors computed independently with Python's `hmac`
//! (`tests/fixtures/instance_id/make_vectors.py`), stability, sensitivity to each input, and
//! survival of container re-creation when an anchor is available.

use super::*;

#[test]
fn placeholders_are_empty() {
    assert_eq!(clean_default("default string"), "");
    assert_eq!(
        clean_default("4c4c4544-004a-3510-804b-b4c04f4e3432"),
        "4c4c4544-004a-3510-804b-b4c04f4e3432"
    );
}

#[test]
fn racing_threads_agree_on_one_secret() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().expect("a temp dir");
        let state = dir.path().join("state");
        let barrier = std::sync::Barrier::new(12);
        let secrets: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..12)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        keep_secret(&state)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic").expect("a secret"))
                .collect()
        });
        let on_disk = std::fs::read_to_string(state.join(SECRET_FILE)).expect("written");
        assert!(secrets.iter().all(|s| s == on_disk.trim()), "{secrets:?}");
        // Losers leave no temporary file behind.
        assert_eq!(std::fs::read_dir(&state).expect("exists").count(), 1);
    }
}

#[test]
fn state_secret_is_made_once() {
    let dir = std::env::temp_dir().join(format!("butler-agent-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let a = keep_secret(&dir).expect("a temp dir is writable");
    let b = keep_secret(&dir).expect("the secret exists now");
    assert_eq!(a, b);
    assert_eq!(a.len(), 64);
    std::fs::write(dir.join(SECRET_FILE), "garbage").expect("a temp dir is writable");
    let err = keep_secret(&dir).unwrap_err().to_string();
    assert!(err.contains("not 64 hex digits"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

use crate::test_support::copy_dir;

use std::path::{Path, PathBuf};

use crate::config::MapEnv;
use crate::host::syscalls::FakeSyscalls;
use crate::host::{self, Roots};
use crate::instance_id::{
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

type Fake = FakeSyscalls;

/// Syscalls that know one interface.
fn with(name: &str, mac: &str, ip: [u8; 4]) -> Fake {
    FakeSyscalls::default().interface(name, mac, ip)
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
    .id
}

#[test]
fn bare_metal_uses_butlers_algorithm_on_the_default_interface() {
    let roots = Roots::at(fixture("bare-metal"));
    let sys = with("eno1", "b8:ca:3a:6e:1f:20", [192, 168, 0, 17]);
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
    let sys = with("eno1", "b8:ca:3a:6e:1f:20", [192, 168, 0, 17]);
    let base = derive(&roots, &sys, "sense.example.com", None).id;
    let other_mac = with("eno1", "b8:ca:3a:6e:1f:21", [192, 168, 0, 17]);
    let other_ip = with("eno1", "b8:ca:3a:6e:1f:20", [192, 168, 0, 18]);
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
        with("eth0", "02:42:ac:11:00:02", [172, 17, 0, 2]),
        with("eth0", "02:42:ac:11:00:07", [172, 17, 0, 7]),
    )
}

#[test]
fn container_keeps_its_id_with_the_host_machine_id() {
    let env = MapEnv::new([("HOST_ROOT", "/host")]);
    let roots = Roots::from_env(fixture("docker-host-root"), &env).unwrap();
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
    // Without the mount, the container's own values decide: the same container (a restart,
    // even with a new IP) keeps its ID; a re-created one (a new container ID) gets a new one.
    let bare = Roots::at(fixture("docker-host-root"));
    let own_a = derive(&bare, &a, "sense.example.com", None);
    let own_b = derive(&bare, &b, "sense.example.com", None);
    assert_eq!(own_a.method, METHOD_OWN_VALUES);
    assert_eq!(own_a.id, own_b.id, "a restart keeps the ID");
    let other = recreated_tree(&fixture("docker-host-root"), "recreated");
    let own_c = derive(&Roots::at(&other), &a, "sense.example.com", None);
    assert_ne!(own_a.id, own_c.id, "re-creation changes the ID");
    let _ = std::fs::remove_dir_all(other);
}

/// A copy of a container tree as if the container had been re-created: every occurrence of
/// its container ID (cgroup, mountinfo) replaced by another.
fn recreated_tree(from: &Path, tag: &str) -> PathBuf {
    let to = copy_tree(from, tag);
    for f in ["proc/self/cgroup", "proc/self/mountinfo"] {
        let p = to.join(f);
        if let Ok(t) = std::fs::read_to_string(&p) {
            let t = t
                .replace("/docker/", "/docker/f")
                .replace("/containers/", "/containers/f");
            std::fs::write(&p, t).expect("temp tree is writable");
        }
    }
    to
}

/// The first container on every Docker host gets the same MAC and IP (Docker derives the MAC
/// from the IP): without an anchor, two such containers must still differ, by their own
/// container identity and by the host's boot ID.
#[test]
fn no_two_containers_share_an_id_without_an_anchor() {
    let same_net = with("eth0", "02:42:ac:11:00:02", [172, 17, 0, 2]);
    let a = copy_tree(&fixture("docker-fuse-overlayfs"), "first");
    let b = recreated_tree(&fixture("docker-fuse-overlayfs"), "second");
    let id_a = derive(&Roots::at(&a), &same_net, "sense.example.com", None);
    let id_b = derive(&Roots::at(&b), &same_net, "sense.example.com", None);
    assert_eq!(id_a.method, METHOD_OWN_VALUES);
    assert_ne!(id_a.id, id_b.id, "two containers, one host");
    // Same container ID on another host (another boot ID): still different.
    std::fs::write(
        b.join("proc/sys/kernel/random/boot_id"),
        "0b8f1e5c-6a0d-4f6e-9a51-2f7c3d1e9b40\n",
    )
    .expect("temp tree is writable");
    let c = copy_tree(&fixture("docker-fuse-overlayfs"), "otherhost");
    std::fs::write(
        c.join("proc/sys/kernel/random/boot_id"),
        "0b8f1e5c-6a0d-4f6e-9a51-2f7c3d1e9b40\n",
    )
    .expect("temp tree is writable");
    let id_c = derive(&Roots::at(&c), &same_net, "sense.example.com", None);
    assert_ne!(id_a.id, id_c.id, "one container ID, two hosts");
    // Networkless containers (ctr, podman --network none, lxc-execute) differ too.
    let none = FakeSyscalls::default();
    let ids: Vec<String> = ["containerd-ctr", "podman-rootful", "lxc-execute"]
        .iter()
        .map(|n| derive(&Roots::at(fixture(n)), &none, "sense.example.com", None))
        .inspect(|id| assert_eq!(id.method, METHOD_OWN_VALUES, "{:?}", id.inputs))
        .map(|id| id.id)
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // The explanation names sources, never values.
    let text = id_a.inputs.join("\n");
    assert!(text.contains("container identity: cgroup path"), "{text}");
    assert!(text.contains("boot ID"), "{text}");
    assert!(
        !text.contains("354d9dea"),
        "no container ID in the explanation: {text}"
    );
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A bridge container with the host's /proc and /sys mounted gets exactly the ID Butler (and
/// the agent) computes on that host: the same MAC, IPv4, QRS host and system UUID.
#[test]
fn host_network_through_host_proc_and_sys_gives_the_hosts_butler_id() {
    let root = copy_tree(&fixture("docker-fuse-overlayfs"), "hostnet");
    let hp = root.join("host/proc/1/net");
    std::fs::create_dir_all(&hp).expect("temp tree is writable");
    std::fs::write(
        hp.join("route"),
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
         enp3s0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
         enp3s0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
    )
    .expect("temp tree is writable");
    std::fs::write(
        hp.join("fib_trie"),
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
         \x20    +-- 172.17.0.0/16 2 0 2\n           |-- 172.17.0.1\n              /32 host LOCAL\n\
         \x20    +-- 192.168.0.0/24 2 0 2\n           |-- 192.168.0.0\n              /24 link UNICAST\n\
         \x20          |-- 192.168.0.17\n              /32 host LOCAL\n",
    )
    .expect("temp tree is writable");
    let hs = root.join("host/sys/class/net/enp3s0");
    std::fs::create_dir_all(&hs).expect("temp tree is writable");
    std::fs::write(hs.join("address"), "B8:CA:3A:6E:1F:20\n").expect("temp tree is writable");
    let dmi = root.join("host/sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).expect("temp tree is writable");
    std::fs::write(
        dmi.join("product_uuid"),
        "4C4C4544-004A-3510-804B-B4C04F4E3432\n",
    )
    .expect("temp tree is writable");

    let env = MapEnv::new([("HOST_PROC", "/host/proc"), ("HOST_SYS", "/host/sys")]);
    let roots = Roots::from_env(&root, &env).unwrap();
    let (a, b) = recreated();
    let first = derive(&roots, &a, "sense.example.com", None);
    assert_eq!(
        first.method,
        instance_id::METHOD_HOST_NETWORK,
        "{:?}",
        first.inputs
    );
    let expected = instance_id::butler_id(&ButlerInputs {
        interface: Some(("b8:ca:3a:6e:1f:20".into(), "192.168.0.17".into())),
        qrs_host: "sense.example.com".into(),
        system_uuid: "4c4c4544-004a-3510-804b-b4c04f4e3432".into(),
        ..ButlerInputs::default()
    });
    assert_eq!(first.id, expected, "Butler's ID of the host");
    assert_eq!(
        first.id,
        derive(&roots, &b, "sense.example.com", None).id,
        "survives re-creation"
    );
    let text = first.inputs.join("\n");
    for value in ["b8:ca", "192.168", "4c4c4544"] {
        assert!(!text.contains(value), "{value} in the explanation: {text}");
    }
    // The interface is named (issue 19), its addresses never.
    assert!(text.contains("default interface enp3s0 ("), "{text}");
    // HOST_ROOT alone gives both mounts.
    let env = MapEnv::new([("HOST_ROOT", "/host")]);
    assert_eq!(
        derive(
            &Roots::from_env(&root, &env).unwrap(),
            &a,
            "sense.example.com",
            None
        )
        .id,
        expected
    );
    // Only one of the two: not used.
    let env = MapEnv::new([("HOST_PROC", "/host/proc")]);
    let one = derive(
        &Roots::from_env(&root, &env).unwrap(),
        &a,
        "sense.example.com",
        None,
    );
    assert_ne!(one.method, instance_id::METHOD_HOST_NETWORK);
    assert!(
        one.inputs[0].contains("host network: host /proc and /sys not both mounted"),
        "{:?}",
        one.inputs
    );
    // An unreadable fib_trie is not "no IPv4": the next anchor, with the reason.
    let fib = root.join("host/proc/1/net/fib_trie");
    let fib_text = std::fs::read(&fib).expect("written above");
    std::fs::remove_file(&fib).expect("temp tree is writable");
    let env = MapEnv::new([("HOST_ROOT", "/host")]);
    let no_fib = derive(
        &Roots::from_env(&root, &env).unwrap(),
        &a,
        "sense.example.com",
        None,
    );
    assert_ne!(no_fib.method, instance_id::METHOD_HOST_NETWORK);
    assert!(
        no_fib.inputs[0].contains("fib_trie unreadable"),
        "{:?}",
        no_fib.inputs
    );
    std::fs::write(&fib, fib_text).expect("temp tree is writable");
    // A host MAC file that is not a MAC: the next anchor, with the reason.
    std::fs::write(hs.join("address"), "garbage\n").expect("temp tree is writable");
    let env = MapEnv::new([("HOST_ROOT", "/host")]);
    let bad = derive(
        &Roots::from_env(&root, &env).unwrap(),
        &a,
        "sense.example.com",
        None,
    );
    assert_ne!(bad.method, instance_id::METHOD_HOST_NETWORK);
    assert!(bad.inputs[0].contains("no MAC address"), "{:?}", bad.inputs);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn container_keeps_its_id_with_the_engine_id() {
    let env = MapEnv::new([("DOCKER_HOST", "unix:///var/run/docker.sock")]);
    let roots = Roots::from_env(fixture("docker-cgroup-v1"), &env).unwrap();
    let (a, b) = recreated();
    let (a, b) = (
        a.engine_id("6Q6H:K2MO:FE4F:TIGP"),
        b.engine_id("6Q6H:K2MO:FE4F:TIGP"),
    );
    let first = derive(&roots, &a, "sense.example.com", None);
    assert_eq!(first.method, METHOD_ENGINE_ID);
    assert_eq!(first.id, derive(&roots, &b, "sense.example.com", None).id);
    let other_host = b.clone().engine_id("ZZZZ:K2MO:FE4F:TIGP");
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
    use crate::host::RealSyscalls;
    use std::io::Write;
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
        // libtest captures `eprintln!` of a passing test; a direct write to stderr is shown,
        // so the skip is visible in every run.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: real_engine_id_matches_docker_info: no Docker engine answers `docker info` \
             at {} (set BUTLER_REQUIRE_DOCKER=1 to make this a failure)",
            sock.display()
        );
        return;
    };
    let got = RealSyscalls
        .docker_engine_id(&DockerEndpoint::Unix(sock.to_path_buf()))
        .expect("the engine answers /info");
    assert_eq!(got, expected);
}

mod interface_label {
    use super::*;

    #[test]
    fn common_names_are_shown() {
        for name in [
            "eth0",
            "ens3",
            "enp0s31f6",
            "wlp2s0",
            "eth0.100",
            "bond0",
            "docker0",
            "vlan@eth0",
        ] {
            assert_eq!(interface_label(name), name);
        }
    }

    #[test]
    fn names_that_could_carry_an_address_are_not() {
        for name in [
            "enx0123456789ab",
            "enxa0cec8d1e2f3",
            "br-3f2a1b4c5d6e",
            "10.1.2.3",
            "br10.1.2",
            "eth\u{1b}[31m",
            "name with space",
            "",
            "abcdefghijklmnopq",
        ] {
            let shown = interface_label(name);
            assert!(
                !shown.contains(name) || name.is_empty(),
                "{name:?}: {shown}"
            );
            assert!(shown.contains("not shown"), "{name:?}: {shown}");
        }
    }
}
