//! The instance ID through the real binary: raw inputs never appear in `telemetry preview`,
//! `id` is stable and differs per host, and `id --explain` names inputs, never values.

use crate::common;
use crate::common::{NOWHERE, Telemetry, copy_dir};

use std::path::{Path, PathBuf};
use std::process::Output;

const QRS_HOST: &str = "qrs-private-host.example.internal";
const HOST_MACHINE_ID: &str = "0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a";
const PRODUCT_UUID: &str = "4c4c4544-004a-3510-804b-b4c04f4e3432";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name)
        .join("root")
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("butler-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir is writable");
    d
}

fn config(dir: &Path, state: &Path) -> PathBuf {
    let p = dir.join("production.yaml");
    std::fs::write(
        &p,
        format!(
            "Butler:\n  configQRS:\n    host: {QRS_HOST}\n  butlerAgent:\n    stateDir: {}\n",
            state.display()
        ),
    )
    .expect("temp dir is writable");
    p
}

fn run(root: &Path, cfg: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let out = common::agent(Telemetry::To(NOWHERE))
        .envs(env.iter().copied())
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every MAC and IPv4 address of this machine's interfaces: the Butler-compatible path hashes
/// the real ones even on a fixture root.
fn real_addresses() -> Vec<String> {
    let mut out = Vec::new();
    for a in nix::ifaddrs::getifaddrs()
        .expect("getifaddrs works")
        .flatten_addrs()
    {
        out.push(a);
    }
    out.retain(|s| s != "00:00:00:00:00:00");
    out
}

trait Flatten {
    fn flatten_addrs(self) -> Vec<String>;
}

impl Flatten for nix::ifaddrs::InterfaceAddressIterator {
    fn flatten_addrs(self) -> Vec<String> {
        self.filter_map(|a| a.address)
            .filter_map(|s| {
                if let Some(l) = s.as_link_addr() {
                    l.addr().map(|m| {
                        m.iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(":")
                    })
                } else {
                    s.as_sockaddr_in().map(|v4| v4.ip().to_string())
                }
            })
            .collect()
    }
}

fn assert_no_raw_inputs(text: &str, extra: &[String]) {
    let lower = text.to_lowercase();
    for secret in [QRS_HOST, HOST_MACHINE_ID, PRODUCT_UUID]
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
    {
        assert!(
            !lower.contains(&secret.to_lowercase()),
            "raw input {secret:?} leaked into:\n{text}"
        );
    }
}

#[test]
fn preview_never_contains_raw_inputs() {
    let dir = temp("privacy");
    let state = dir.join("state");
    let cfg = config(&dir, &state);

    // Container path anchored on the host's machine-id (HOST_ROOT).
    let out = run(
        &fixture("docker-host-root"),
        &cfg,
        &[("HOST_ROOT", "/host")],
        &["telemetry", "preview"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("\"distinct_id\""));
    assert_no_raw_inputs(&text, &real_addresses());

    // Container path anchored on the state secret.
    let out = run(
        &fixture("docker-cgroup-v1"),
        &cfg,
        &[],
        &["telemetry", "preview", "--compact"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let secret = std::fs::read_to_string(state.join("instance-secret")).expect("secret created");
    assert_no_raw_inputs(&text, &[secret.trim().to_string()]);

    // Butler-compatible path on a bare-metal tree whose product_uuid is readable.
    let tree = dir.join("bare");
    copy_dir(&fixture("bare-metal"), &tree);
    std::fs::write(
        tree.join("sys/class/dmi/id/product_uuid"),
        format!("{}\n", PRODUCT_UUID.to_uppercase()),
    )
    .expect("temp tree is writable");
    let machine_id = std::fs::read_to_string(tree.join("etc/machine-id")).expect("fixture has one");
    let out = run(&tree, &cfg, &[], &["telemetry", "preview"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut extra = real_addresses();
    extra.push(machine_id.trim().to_string());
    assert_no_raw_inputs(&text, &extra);
    let explain = run(&tree, &cfg, &[], &["id", "--explain"]);
    assert_no_raw_inputs(&String::from_utf8_lossy(&explain.stdout), &extra);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn id_is_stable_and_differs_per_host() {
    let dir = temp("stable");
    let cfg = config(&dir, &dir.join("state"));
    let env = [("HOST_ROOT", "/host")];
    let id = |root: &Path| {
        String::from_utf8_lossy(&run(root, &cfg, &env, &["id"]).stdout)
            .trim()
            .to_string()
    };
    let first = id(&fixture("docker-host-root"));
    assert_eq!(first.len(), 64);
    assert_eq!(
        first,
        id(&fixture("docker-host-root")),
        "same host, same ID"
    );

    let other = dir.join("other-host");
    copy_dir(&fixture("docker-host-root"), &other);
    std::fs::write(
        other.join("host/etc/machine-id"),
        "1e2d3c4b5a69788796a5b4c3d2e1f0a9\n",
    )
    .expect("temp tree is writable");
    assert_ne!(first, id(&other), "another host, another ID");

    let explain = String::from_utf8_lossy(
        &run(
            &fixture("docker-host-root"),
            &cfg,
            &env,
            &["id", "--explain"],
        )
        .stdout,
    )
    .to_string();
    assert!(
        explain.contains("method: container: host machine-id"),
        "{explain}"
    );
    assert!(explain.contains("machine-id from HOST_ROOT"), "{explain}");
    assert!(!explain.contains(HOST_MACHINE_ID), "{explain}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unstable_container_id_warns_once_naming_the_mount() {
    let dir = temp("warn");
    let cfg_path = dir.join("c.yaml");
    std::fs::write(
        &cfg_path,
        format!("Butler:\n  configQRS:\n    host: {QRS_HOST}\n"),
    )
    .expect("writable");
    let out = run(
        &fixture("docker-scratch"),
        &cfg_path,
        &[],
        &["id", "--explain"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("WARN").count(), 1, "{err}");
    assert!(
        err.contains("HOST_ETC") && err.contains("BUTLER_STATE_DIR"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("own values"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An anchor that fails for a fixable reason says so, run as a user other than the owner (as
/// `docker run --user` does): a state directory owned by root names its owner, the user and the
/// fixes; a Docker socket without its group names `--group-add` and how to find the group.
#[test]
fn anchor_failures_say_why_and_how_to_fix() {
    if !nix::unistd::geteuid().is_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("note: needs root and setpriv to run the agent as another user; skipped");
        return;
    }
    const USER: &str = "12345";
    const SOCKET_GID: u32 = 4242;
    let dir = temp("anchor-failures");
    let root = dir.join("root");
    copy_dir(&fixture("docker-fuse-overlayfs"), &root);
    // A socket only root and group 4242 may use.
    let sock_path = root.join("var/run/docker.sock");
    std::fs::create_dir_all(sock_path.parent().expect("has a parent")).expect("writable");
    let _listener = std::os::unix::net::UnixListener::bind(&sock_path).expect("bind a socket");
    std::os::unix::fs::chown(&sock_path, Some(0), Some(SOCKET_GID)).expect("chown as root");
    std::fs::set_permissions(
        &sock_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o660),
    )
    .expect("chmod");
    // A state directory owned by root, mode 0755.
    let state = dir.join("data");
    std::fs::create_dir_all(&state).expect("writable");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let cfg = config(&dir, &state);
    for p in [&dir, &root] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--clear-groups"])
        .arg(common::AGENT)
        .env_clear()
        .envs(common::telemetry_env(Telemetry::Off))
        .arg("--root")
        .arg(&root)
        .arg("--config")
        .arg(&cfg)
        .args(["id", "--explain"])
        .output()
        .expect("setpriv runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("--group-add {SOCKET_GID}")) && stderr.contains("stat -c %g"),
        "socket group advice: {stderr}"
    );
    assert!(
        stderr.contains("is owned by uid 0")
            && stderr.contains(&format!("runs as uid {USER}"))
            && stderr.contains("--user")
            && stderr.contains("chown")
            && stderr.contains("named volume"),
        "state directory advice: {stderr}"
    );
    assert!(stdout.contains("own values"), "{stdout}");
    assert!(
        stdout.contains("--group-add"),
        "--explain names the reason too: {stdout}"
    );
    assert!(!state.join("instance-secret").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tree whose host network (HOST_PROC, HOST_SYS) has its default route on `iface`.
fn host_network_tree(iface: &str, tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("butler-agent-tree-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_dir(&fixture("docker-fuse-overlayfs"), &root);
    let hp = root.join("host/proc/1/net");
    std::fs::create_dir_all(&hp).expect("temp tree is writable");
    std::fs::write(
        hp.join("route"),
        format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             {iface}\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             {iface}\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        ),
    )
    .expect("temp tree is writable");
    std::fs::write(
        hp.join("fib_trie"),
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
         \x20    +-- 192.168.0.0/24 2 0 2\n           |-- 192.168.0.0\n              /24 link UNICAST\n\
         \x20          |-- 192.168.0.17\n              /32 host LOCAL\n",
    )
    .expect("temp tree is writable");
    let hs = root.join("host/sys/class/net").join(iface);
    std::fs::create_dir_all(&hs).expect("temp tree is writable");
    std::fs::write(hs.join("address"), "B8:CA:3A:6E:1F:20\n").expect("temp tree is writable");
    root
}

/// `id --explain` names the interface it read (issue 19), never its addresses; a name that
/// carries the MAC (systemd's `enx…`) is not shown either.
#[test]
fn explain_names_the_interface_never_its_addresses() {
    for (n, (iface, shown)) in [("enp3s0", true), ("enxb8ca3a6e1f20", false)]
        .into_iter()
        .enumerate()
    {
        let root = host_network_tree(iface, &format!("explain-{n}"));
        let out = common::agent(Telemetry::Off)
            .arg("--root")
            .arg(&root)
            .env("HOST_PROC", "/host/proc")
            .env("HOST_SYS", "/host/sys")
            .args(["id", "--explain"])
            .output()
            .expect("the binary runs");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.contains("method: container: the host's network (butler's id on this host)"),
            "{text}"
        );
        if shown {
            assert!(
                text.contains("mac address of the host's default interface enp3s0 ("),
                "{text}"
            );
            assert!(
                text.contains("ipv4 address of the host's default interface enp3s0 ("),
                "{text}"
            );
        } else {
            assert!(!text.contains(iface), "{text}");
            assert!(text.contains("not shown"), "{text}");
        }
        for value in ["b8:ca:3a:6e:1f:20", "b8ca3a6e1f20", "192.168.0.17"] {
            assert!(!text.contains(value), "{value} in:\n{text}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
