//! The real binary, run as a user would: config loading, bad input, exit codes, help.

use crate::common;
use crate::common::{NOWHERE, Telemetry};

use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn template() -> PathBuf {
    fixture("tests/fixtures/butler-production-template.yaml")
}

/// Runs the agent with a clean environment (so the developer's own variables cannot leak in)
/// in a fresh working directory; telemetry, where a command would send, goes nowhere.
fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempdir();
    let mut cmd = common::agent(Telemetry::To(NOWHERE));
    cmd.args(args).current_dir(&dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the agent binary runs");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "butler-agent-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_temp(name: &str, content: &[u8]) -> PathBuf {
    let path = tempdir().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn preview_of_butlers_template_prints_the_event() {
    let t = template();
    let out = agent(
        &["telemetry", "preview", "--config", t.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(event["event"], "telemetry sent");
    let id = event["distinct_id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(
        event["properties"]["feature_influxDbReloadTaskFailure"],
        true
    );
    assert_eq!(event["properties"]["feature_heartbeat"], false);
    // The template's QRS host and other values are never in the event.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("10.11.12.13"));
}

#[test]
fn compact_preview_is_one_line() {
    let out = agent(&["telemetry", "preview", "--compact"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim_end().lines().count(), 1);
    serde_json::from_str::<serde_json::Value>(&text).unwrap();
}

#[test]
fn no_file_at_all_runs_on_defaults_and_node_env_file_is_found() {
    let out = agent(&["telemetry", "status", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["decidedBy"], "default");

    // Butler's convention: ./config/$NODE_ENV.yaml from the working directory.
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/staging.yaml"),
        "Butler:\n  anonTelemetry: false\n",
    )
    .unwrap();
    let out = common::agent(Telemetry::To(NOWHERE))
        .args(["telemetry", "status", "--json"])
        .env("NODE_ENV", "staging")
        .current_dir(&dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["enabled"], false);
    assert_eq!(v["decidedBy"], "config");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn status_json_follows_the_opt_out_precedence() {
    let off = write_temp("off.yaml", b"Butler:\n  anonTelemetry: false\n");
    let on = write_temp("on.yaml", b"Butler:\n  anonTelemetry: true\n");
    type Case<'a> = (&'a Path, &'a [(&'a str, &'a str)], bool, &'a str);
    let cases: &[Case] = &[
        (&on, &[("DO_NOT_TRACK", "1")], false, "DO_NOT_TRACK"),
        (
            &on,
            &[("DO_NOT_TRACK", "1"), ("BUTLER_ANON_TELEMETRY", "true")],
            false,
            "DO_NOT_TRACK",
        ),
        (
            &on,
            &[("BUTLER_ANON_TELEMETRY", "false")],
            false,
            "BUTLER_ANON_TELEMETRY",
        ),
        (
            &off,
            &[("BUTLER_ANON_TELEMETRY", "true")],
            true,
            "BUTLER_ANON_TELEMETRY",
        ),
        (&off, &[], false, "config"),
        (&on, &[], true, "config"),
    ];
    for (file, env, enabled, by) in cases {
        let out = agent(
            &[
                "telemetry",
                "status",
                "--json",
                "--config",
                file.to_str().unwrap(),
            ],
            env,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["enabled"], *enabled, "{env:?}");
        assert_eq!(v["decidedBy"], *by, "{env:?}");
    }
}

/// Each bad input: exit 64, nothing on stdout, one line on stderr naming what the issue says.
#[test]
fn bad_input_gives_one_clear_line_and_exit_64() {
    let bool_yes = write_temp("yes.yaml", b"Butler:\n  anonTelemetry: \"yes\"\n");
    let port = write_temp(
        "port.yaml",
        b"Butler:\n  dockerHealthCheck:\n    port: 70000\n",
    );
    let syntax = write_temp("syntax.yaml", b"Butler:\n  a: [1, 2\n  b: }\n");
    let agent_key = write_temp(
        "agent.yaml",
        b"Butler:\n  butlerAgent:\n    healthPort: 70000\n",
    );
    let mut bomb = String::from("Butler: {}\na: &a [x,x,x,x,x,x,x,x,x]\n");
    for (p, n) in ('a'..='j').zip('b'..='k') {
        bomb.push_str(&format!(
            "{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        ));
    }
    let bomb = write_temp("bomb.yaml", bomb.as_bytes());
    let huge = write_temp("huge.yaml", b"");
    std::fs::File::options()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let dir = tempdir();
    let cases: Vec<(PathBuf, &[&str])> = vec![
        (
            PathBuf::from("/nonexistent/production.yaml"),
            &["/nonexistent/production.yaml", "cannot open"],
        ),
        (
            bool_yes.clone(),
            &["yes.yaml", "line 2", "Butler.anonTelemetry", "true/false"],
        ),
        (
            port,
            &[
                "port.yaml",
                "line 3",
                "Butler.dockerHealthCheck.port",
                "1 to 65535",
            ],
        ),
        (syntax, &["syntax.yaml", "line"]),
        (
            agent_key,
            &["agent.yaml", "Butler.butlerAgent.healthPort", "65535"],
        ),
        (bomb, &["bomb.yaml", "limits"]),
        (huge, &["huge.yaml", "larger than"]),
        (dir, &["directory"]),
    ];
    for (file, expected) in cases {
        for cmd in [
            &["telemetry", "preview"][..],
            &["telemetry", "status"],
            &["run"],
        ] {
            let mut args = cmd.to_vec();
            args.extend(["--config", file.to_str().unwrap()]);
            let out = agent(&args, &[]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
            assert!(out.stdout.is_empty(), "{args:?}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            for word in expected {
                assert!(err.contains(word), "{args:?}: {err:?} lacks {word:?}");
            }
        }
    }
    // Bad environment values name the variable.
    let out = agent(
        &["telemetry", "status"],
        &[("BUTLER_ANON_TELEMETRY", "maybe")],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("BUTLER_ANON_TELEMETRY"));
    let out = agent(
        &["telemetry", "preview"],
        &[("BUTLER_HEALTH_PORT", "99999")],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("BUTLER_HEALTH_PORT"));
}

#[test]
fn help_on_every_command() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["telemetry", "--help"],
        &["telemetry", "preview", "--help"],
        &["telemetry", "status", "--help"],
        &["telemetry", "send", "--help"],
        &["host", "--help"],
        &["id", "--help"],
        &["sink", "--help"],
    ] {
        let out = agent(args, &[]);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}
