//! The repository stands alone and its tests cannot reach the real PostHog: nothing refers to
//! files outside the repository, every agent a test starts goes through `tests/it/common`
//! (telemetry off or to this machine), which refuses anything else, and no test touches the
//! `latest` image a user builds.

use crate::common;
use crate::common::{NOWHERE, Telemetry, docker_run, is_local};

use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every text file of the repository, except build output, fuzzing corpora and VCS data.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("repository readable")
        .flatten()
    {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if ![".git", "target", "corpus", "artifacts", "coverage"].contains(&name.as_ref()) {
                files(&path, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

#[test]
fn nothing_refers_to_a_folder_beside_the_repository() {
    let outside = concat!("..", "/shared");
    let mut all = Vec::new();
    files(repo(), &mut all);
    assert!(all.len() > 50, "walked the repository: {} files", all.len());
    let hits: Vec<String> = all
        .iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(outside)))
        .map(|p| rel(p))
        .collect();
    assert!(hits.is_empty(), "these files refer to {outside}: {hits:?}");
}

#[test]
fn only_the_common_helper_starts_the_agent_or_its_image() {
    let bin = concat!("CARGO_BIN_EXE_", "butler-agent");
    let latest = concat!("butler-agent", ":latest");
    // `docker(&["run", …])` however it is formatted.
    let docker_run = [
        concat!("docker(&[", "\"run\""),
        concat!("docker_ok(&[", "\"run\""),
    ];
    let mut all = Vec::new();
    files(&repo().join("tests"), &mut all);
    let mut problems = Vec::new();
    // This file names the patterns it looks for.
    for p in all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("standalone.rs"))
    {
        let text = std::fs::read_to_string(p).expect("test source readable");
        let in_common = p.starts_with(repo().join("tests/it/common"));
        let direct = ["Command::new(BIN)", "Command::new(robust_support::BIN)"];
        if !in_common && (text.contains(bin) || direct.iter().any(|d| text.contains(d))) {
            problems.push(format!(
                "{} names the agent binary: start it with common::agent",
                rel(p)
            ));
        }
        let compact: String = text.split_whitespace().collect();
        if !in_common && docker_run.iter().any(|d| compact.contains(d)) {
            problems.push(format!(
                "{} runs a container: use common::docker_run",
                rel(p)
            ));
        }
        if text.contains(latest) {
            problems.push(format!("{} uses {latest}, the user's own tag", rel(p)));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn only_destinations_on_this_machine_count_as_local() {
    for ok in [
        NOWHERE,
        "http://127.0.0.1:18080",
        "http://127.5.6.7",
        "https://localhost:8443/",
        "http://[::1]:8080/i/v0/e/",
        "http://sink:8080",
        "https://capture.butler-agent.invalid",
    ] {
        assert!(is_local(ok), "{ok}");
    }
    for no in [
        "https://eu.i.posthog.com",
        "https://eu.posthog.com",
        "http://127.0.0.1.example.com",
        "http://user@127.0.0.1@eu.i.posthog.com",
        "http://10.0.0.1:8080",
        "http://[2001:db8::1]/",
        "127.0.0.1:8080",
        "",
    ] {
        assert!(!is_local(no), "{no}");
    }
}

#[test]
fn the_helper_refuses_a_remote_destination() {
    let refused = |t: Telemetry| {
        std::panic::catch_unwind(|| {
            let _ = common::agent(t);
        })
        .is_err()
    };
    assert!(refused(Telemetry::To("https://eu.i.posthog.com")));
    assert!(!refused(Telemetry::To(NOWHERE)));
    assert!(!refused(Telemetry::Off));

    // A config file is checked with the agent's own `telemetry status`.
    let dir = tempfile::tempdir().expect("a temp dir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("temp dir writable");
        p
    };
    let default = write("default.yaml", "Butler:\n  anonTelemetry: true\n");
    let local = write(
        "local.yaml",
        "Butler:\n  butlerAgent:\n    posthogHost: http://127.0.0.1:9\n",
    );
    let off = write("off.yaml", "Butler:\n  anonTelemetry: false\n");
    assert!(refused(Telemetry::Config(&default)));
    assert!(!refused(Telemetry::Config(&local)));
    assert!(!refused(Telemetry::Config(&off)));

    // Containers: the same, and no opt-out or destination hidden among the options.
    let run = |t: Telemetry, options: &[&str]| {
        std::panic::catch_unwind(|| docker_run(t, options, "img:test", &["run"]))
    };
    assert!(run(Telemetry::To("https://eu.i.posthog.com"), &[]).is_err());
    assert!(
        run(
            Telemetry::Off,
            &["-e", "BUTLER_POSTHOG_HOST=https://eu.i.posthog.com"]
        )
        .is_err()
    );
    assert!(run(Telemetry::Off, &["--env=BUTLER_ANON_TELEMETRY=true"]).is_err());
    assert_eq!(
        run(Telemetry::To("http://sink:8080"), &["-d"]).expect("a local destination"),
        [
            "run",
            "-d",
            "-e",
            "BUTLER_POSTHOG_HOST=http://sink:8080",
            "img:test",
            "run"
        ]
    );
    assert_eq!(
        run(Telemetry::Off, &[]).expect("off"),
        ["run", "-e", "DO_NOT_TRACK=1", "img:test", "run"]
    );
}

/// The default destination is checked where it is shown, never by sending.
#[test]
fn default_destination_is_shown_by_status_without_sending() {
    let out = common::agent(Telemetry::Off)
        .env_remove("DO_NOT_TRACK")
        .env("BUTLER_ANON_TELEMETRY", "true")
        .args(["telemetry", "status", "--json"])
        .output()
        .expect("the agent runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["destination"], "https://eu.i.posthog.com/i/v0/e/");
}
