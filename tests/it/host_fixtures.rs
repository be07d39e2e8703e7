//! `butler-agent host --json` on each fixture tree in `tests/fixtures/hosts/` (see its README)
//! gives the expected facts, run as a real process with a cleared environment plus the
//! variables the case needs (its `env` file), so nothing leaks in from the machine running
//! the tests. Also compares the real machine with `systemd-detect-virt` where it is installed.

use crate::common;
use crate::common::Telemetry;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const FACT_KEYS: &[&str] = &[
    "platform",
    "arch",
    "distro",
    "codename",
    "release",
    "kernel",
    "virtual",
    "hypervisor",
    "isRunningInDocker",
    "containerRuntime",
    "kubernetes",
    "wsl",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts")
}

fn case_env(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn host_json(root: &Path, env: &[(String, String)]) -> Value {
    let out = common::agent(Telemetry::Off)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--root")
        .arg(root)
        .args(["host", "--json"])
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "host --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("host --json prints JSON")
}

#[test]
fn every_fixture_gives_its_expected_facts() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixture directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 11,
        "one fixture per environment in the issue"
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("expected.json")).expect("readable"),
        )
        .expect("expected.json is JSON");
        let got = host_json(&dir.join("root"), &case_env(dir));
        for key in FACT_KEYS {
            if got[key] != expected[key] {
                failures.push(format!(
                    "{name}: {key} = {} but expected {} (rule: {})",
                    got[key], expected[key], got["rules"][key]
                ));
            }
            let rule = got["rules"][key].as_str().unwrap_or("");
            if rule.is_empty() {
                failures.push(format!("{name}: no rule for {key}"));
            }
        }
        // Types other checks rely on.
        for key in [
            "platform", "arch", "distro", "codename", "release", "kernel",
        ] {
            assert!(got[key].is_string(), "{name}: {key} is a string");
        }
        for key in ["virtual", "isRunningInDocker", "kubernetes", "wsl"] {
            assert!(got[key].is_boolean(), "{name}: {key} is a boolean");
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn container_override_wins_and_none_means_none() {
    let root = fixtures().join("docker-cgroup-v1/root");
    let env = |v: &str| vec![("BUTLER_CONTAINER_RUNTIME".to_string(), v.to_string())];
    let got = host_json(&root, &env("none"));
    assert_eq!(got["isRunningInDocker"], false);
    assert_eq!(got["containerRuntime"], Value::Null);
    let got = host_json(&root, &env("podman"));
    assert_eq!(got["containerRuntime"], "podman");
    assert!(
        got["rules"]["containerRuntime"]
            .as_str()
            .is_some_and(|r| r.contains("BUTLER_CONTAINER_RUNTIME"))
    );
}

#[test]
fn a_missing_root_is_unknown_not_an_error() {
    let got = host_json(Path::new("/nonexistent/butler-agent-root"), &[]);
    assert_eq!(got["distro"], "unknown");
    assert_eq!(got["kernel"], "unknown");
    assert_eq!(got["isRunningInDocker"], false);
}

#[test]
fn readable_table_names_the_rule_beside_each_fact() {
    let out = common::agent(Telemetry::Off)
        .arg("--root")
        .arg(fixtures().join("aws-metal/root"))
        .arg("host")
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("virtual"))
        .expect("a virtual line");
    assert!(line.contains("false") && line.contains(".metal"), "{line}");
    assert_eq!(text.lines().count(), FACT_KEYS.len());
}

/// `systemd-detect-virt`'s name for what we found, for comparison.
fn systemd_container_name(facts: &Value) -> String {
    if facts["wsl"] == true {
        return "wsl".into();
    }
    facts["containerRuntime"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

#[test]
fn the_real_machine_agrees_with_systemd_detect_virt() {
    let run = |arg: &str| {
        Command::new("systemd-detect-virt")
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let (Some(container), Some(vm)) = (run("--container"), run("--vm")) else {
        assert!(
            std::env::var("BUTLER_REQUIRE_DETECT_VIRT").as_deref() != Ok("1"),
            "BUTLER_REQUIRE_DETECT_VIRT=1 but systemd-detect-virt is not installed"
        );
        eprintln!(
            "skipped: the_real_machine_agrees_with_systemd_detect_virt: systemd-detect-virt is \
             not installed (set BUTLER_REQUIRE_DETECT_VIRT=1 to make this a failure)"
        );
        return;
    };
    let facts = host_json(Path::new("/"), &[]);
    let ours = systemd_container_name(&facts);
    // systemd has more container names than we report; ours folds the rest into container-other.
    let theirs = match container.as_str() {
        "lxc-libvirt" => "lxc".to_string(),
        "docker" | "podman" | "lxc" | "systemd-nspawn" | "wsl" | "none" => container.clone(),
        _ => "container-other".to_string(),
    };
    let rule = facts["rules"]["containerRuntime"].as_str().unwrap_or("");
    // The one known divergence: systemd believes any /.dockerenv; the agent ignores one that no
    // container evidence backs (a host whose root file system came from a container image).
    let theirs = if theirs == "docker" && rule.contains("stale") {
        assert_eq!(facts["isRunningInDocker"], false);
        "none".to_string()
    } else {
        theirs
    };
    assert_eq!(
        ours, theirs,
        "container: systemd-detect-virt says {container}; rule: {}",
        facts["rules"]["containerRuntime"]
    );
    let our_vm = facts["hypervisor"].as_str().unwrap_or("none");
    assert_eq!(our_vm, vm, "vm: rule: {}", facts["rules"]["hypervisor"]);
    assert_eq!(facts["virtual"], vm != "none");
}
