//! `/readyz` follows the config file without a signal (issue 19, item 3): a file that breaks
//! turns it 503 and a fixed one 200 again within the watcher's period, for a file rewritten in
//! place and for a Kubernetes ConfigMap update (kubelet's atomic swap of the `..data` link).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;
use crate::robust_support::Agent;

/// The watcher looks when the kernel reports a change (every 2 s without inotify); the
/// re-read is quick. Bounded well above that for a busy machine, and the time measured is
/// printed.
const FOLLOW_BOUND: Duration = Duration::from_secs(10);

const VALID: &str = "Butler:\n  anonTelemetry: false\n  butlerAgent:\n    interval: 2h\n";
const BROKEN: &str = "Butler:\n  anonTelemetry: \"not a boolean\"\n";

/// Waits until `/readyz` answers `status`; how long that took, or None after the bound.
fn readyz_turns(agent: &Agent, status: u16) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < FOLLOW_BOUND {
        if common::get_status(agent.health, "/readyz") == Ok(status) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn start(config: &Path, cwd: &Path) -> Agent {
    let mut agent = Agent::start(
        &["--config", config.to_str().expect("a UTF-8 path")],
        &[
            ("DO_NOT_TRACK", "1"),
            ("BUTLER_TELEMETRY_START_DELAY", "1h"),
        ],
        cwd,
    );
    agent.wait_log("Telemetry         :", Duration::from_secs(20));
    assert_eq!(
        readyz_turns(&agent, 200).map(|_| ()),
        Some(()),
        "ready at start"
    );
    agent
}

#[test]
fn readyz_follows_a_file_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("production.yaml");
    std::fs::write(&config, VALID).unwrap();
    let mut agent = start(&config, dir.path());
    for round in 0..2 {
        std::fs::write(&config, BROKEN).unwrap();
        let broke = readyz_turns(&agent, 503);
        assert!(
            broke.is_some(),
            "round {round}: still 200 with a broken file"
        );
        std::fs::write(&config, VALID).unwrap();
        let fixed = readyz_turns(&agent, 200);
        assert!(
            fixed.is_some(),
            "round {round}: still 503 with a fixed file"
        );
        eprintln!("round {round}: 503 after {broke:?}, 200 after {fixed:?}");
    }
    // Through the re-read that SIGHUP also does; it warns about the broken file.
    agent.wait_log(
        "the config file changed: re-reading it",
        Duration::from_secs(1),
    );
    agent.wait_log("keeping the last good config", Duration::from_secs(1));
    assert!(agent.panics().is_empty());
    assert_eq!(agent.stop(Duration::from_secs(10)), Some(0));
}

/// kubelet's update of a ConfigMap volume: the new files go into a new timestamped
/// directory, `..data_tmp` points at it and is renamed over `..data`; `config.yaml` is a link
/// to `..data/config.yaml` throughout, and the old directory is removed.
fn kubelet_update(volume: &Path, version: &str, text: &str) {
    let dir = volume.join(format!("..2026_12_03_{version}"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), text).unwrap();
    let old = std::fs::read_link(volume.join("..data")).ok();
    symlink(dir.file_name().unwrap(), volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).unwrap();
    }
}

#[test]
fn readyz_follows_a_configmap_update() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("config");
    std::fs::create_dir(&volume).unwrap();
    kubelet_update(&volume, "00_00_00.1", VALID);
    symlink("..data/config.yaml", volume.join("config.yaml")).unwrap();
    let mut agent = start(&volume.join("config.yaml"), dir.path());

    kubelet_update(&volume, "00_01_00.2", BROKEN);
    let broke = readyz_turns(&agent, 503);
    assert!(broke.is_some(), "still 200 after a broken ConfigMap update");
    kubelet_update(&volume, "00_02_00.3", VALID);
    let fixed = readyz_turns(&agent, 200);
    assert!(fixed.is_some(), "still 503 after a fixed ConfigMap update");
    eprintln!("ConfigMap: 503 after {broke:?}, 200 after {fixed:?}");
    // A new version with a changed setting is re-read and the change named.
    kubelet_update(
        &volume,
        "00_03_00.4",
        &VALID.replace("interval: 2h", "interval: 3h"),
    );
    agent.wait_log(
        "config re-read: changed Butler.butlerAgent.interval",
        FOLLOW_BOUND,
    );
    assert_eq!(readyz_turns(&agent, 200).map(|_| ()), Some(()));
    assert!(agent.panics().is_empty());
    assert_eq!(agent.stop(Duration::from_secs(10)), Some(0));
}
