//! Nothing a telemetry cycle does stalls the agent: while a cycle works through a config with
//! 40,000 strings, reads a config path that has become a FIFO, or waits on a Docker engine
//! that never answers, `/health` keeps answering and SIGTERM ends the agent in under a second.
//! SIGHUP re-reads the config and never stops it, and ends a delivery's retries so that an
//! opt-out written meanwhile is obeyed at once. Every agent here has telemetry off or sends to
//! a local `butler-agent sink` or recording server.

use crate::robust_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Telemetry;
use crate::common::capture::{Fault, recording_server};
use crate::robust_support::{Agent, Prober};

/// The slowest probe tolerated while a cycle works on the other core of a loaded machine.
const PROBE_BOUND: Duration = Duration::from_millis(300);
const PROBE_EVERY: Duration = Duration::from_millis(20);
const STOP_BOUND: Duration = Duration::from_secs(1);

/// A running `butler-agent sink` on a loopback port; killed on drop.
struct Sink {
    child: Child,
    url: String,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sink() -> Sink {
    let mut child = robust_support::common::agent(robust_support::common::Telemetry::Off)
        .args(["sink", "--listen", "127.0.0.1:0"])
        .env("BUTLER_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sink starts");
    let addr = robust_support::common::sink_address(&mut child);
    Sink {
        child,
        url: format!("http://{addr}"),
    }
}

/// Probes `/health` for `window` while the agent works, then sends SIGTERM; panics with the
/// log when a probe failed or was slow, or the stop took a second or more.
fn probes_hold_then_stop_quickly(mut agent: Agent, window: Duration, case: &str) {
    let prober = Prober::start(agent.health, PROBE_EVERY);
    std::thread::sleep(window);
    let report = prober.finish();
    let started = Instant::now();
    let code = agent.stop(Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!(
        "{case}: {} probes, median {:?}, max {:?}; SIGTERM → exit {code:?} in {took:?}",
        report.total,
        report.median(),
        report.max()
    );
    let log = agent.log().join("\n");
    assert!(agent.panics().is_empty(), "{case}: panicked:\n{log}");
    assert_eq!(
        report.problem(PROBE_BOUND),
        None,
        "{case}: /health stalled:\n{log}"
    );
    assert_eq!(code, Some(0), "{case}: exit code:\n{log}");
    assert!(took < STOP_BOUND, "{case}: SIGTERM took {took:?}:\n{log}");
}

fn write_config(path: &Path, strings: usize) {
    let mut text = String::from("Butler:\n  anonTelemetry: true\n  manyValues:\n");
    for i in 0..strings {
        text.push_str(&format!("    key{i}: some-config-value-{i:06}\n"));
    }
    std::fs::write(path, text).expect("write the config");
}

#[test]
fn health_and_stop_during_a_cycle_over_40k_config_strings() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("big.yaml");
    write_config(&config, 40_000);
    let sink = sink();
    let agent = Agent::start(
        &["--config", config.to_str().expect("UTF-8 path")],
        &[
            ("BUTLER_POSTHOG_HOST", &sink.url),
            ("BUTLER_TELEMETRY_START_DELAY", "0s"),
        ],
        dir.path(),
    );
    probes_hold_then_stop_quickly(agent, Duration::from_secs(3), "40k config strings");
}

#[test]
fn health_and_stop_while_the_config_path_is_a_fifo() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("production.yaml");
    write_config(&config, 1);
    let mut agent = Agent::start(
        &["--config", config.to_str().expect("UTF-8 path")],
        &[
            ("DO_NOT_TRACK", "1"),
            ("BUTLER_TELEMETRY_START_DELAY", "1s"),
        ],
        dir.path(),
    );
    agent.wait_log("Telemetry         :", Duration::from_secs(10));
    // Replaced by a FIFO nobody writes to: opening it for reading waits for a writer.
    std::fs::remove_file(&config).expect("remove the config");
    let made = Command::new("mkfifo")
        .arg(&config)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", config.display());
    probes_hold_then_stop_quickly(agent, Duration::from_secs(3), "config path is a FIFO");
}

#[test]
fn health_and_stop_while_docker_never_answers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("docker.sock");
    // Accepts (the kernel completes connections into the backlog) and never replies.
    let _silent = std::os::unix::net::UnixListener::bind(&socket).expect("bind a unix socket");
    let sink = sink();
    let docker_host = format!("unix://{}", socket.display());
    let agent = Agent::start(
        &[],
        &[
            ("BUTLER_POSTHOG_HOST", &sink.url),
            ("BUTLER_TELEMETRY_START_DELAY", "0s"),
            // In a container, so the engine ID is asked for the instance ID.
            ("BUTLER_CONTAINER_RUNTIME", "docker"),
            ("DOCKER_HOST", &docker_host),
        ],
        dir.path(),
    );
    probes_hold_then_stop_quickly(agent, Duration::from_secs(3), "silent Docker engine");
}

#[test]
fn sighup_rereads_the_config_and_never_stops_the_agent() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("production.yaml");
    std::fs::write(&config, "Butler:\n  butlerAgent:\n    interval: 2h\n").expect("write");
    let mut agent = Agent::start(
        &["--config", config.to_str().expect("UTF-8 path")],
        &[
            ("DO_NOT_TRACK", "1"),
            ("BUTLER_TELEMETRY_START_DELAY", "1h"),
        ],
        dir.path(),
    );
    agent.wait_log("Telemetry         :", Duration::from_secs(10));
    let pid = agent.pid;
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("send SIGHUP")
    };
    std::fs::write(&config, "Butler:\n  butlerAgent:\n    interval: 3h\n").expect("rewrite");
    hup();
    agent.wait_log(
        "config re-read: changed Butler.butlerAgent.interval",
        Duration::from_secs(10),
    );
    hup();
    agent.wait_log("config re-read: nothing changed", Duration::from_secs(10));
    std::fs::write(&config, "Butler:\n  anonTelemetry: \"yes\"\n").expect("break the file");
    hup();
    agent.wait_log("keeping the last good config", Duration::from_secs(10));
    assert!(agent.running(), "SIGHUP does not stop the agent");
    assert!(matches!(
        robust_support::probe(agent.health, Duration::from_secs(2)),
        Ok((200, _))
    ));
    let started = Instant::now();
    assert_eq!(agent.stop(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < STOP_BOUND);
    assert!(agent.panics().is_empty());
}

/// PostHog answers 503 with `Retry-After: 8`; after the first attempt the user turns telemetry
/// off in the file, and sends SIGHUP or not (the agent watches the file: a Kubernetes
/// ConfigMap update sends no signal). The retry that was 8 s away never comes: the re-read ends
/// the retries and reads the opt-out. (Before, the agent sent the event again at every
/// `Retry-After` until its retries ran out: up to 5 × 30 minutes after the opt-out.) With
/// `Fault::Blackhole` the opt-out comes while the attempt is still waiting for an answer
/// (`env` shortens the request timeout): no retry follows it either.
fn opt_out_during_retries(fault: Fault, signal: bool, env: &[(&str, &str)]) {
    let recorder = recording_server(fault);
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("production.yaml");
    std::fs::write(&config, "Butler:\n  anonTelemetry: true\n").expect("write");
    let url = recorder.url();
    let mut agent = Agent::start_with(
        Telemetry::To(&url),
        &["--config", config.to_str().expect("UTF-8 path")],
        &[&[("BUTLER_TELEMETRY_START_DELAY", "0s")], env].concat(),
        dir.path(),
    );
    let started = Instant::now();
    while recorder.requests() == 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(recorder.requests(), 1, "the first attempt arrives");
    let first = Instant::now();
    std::fs::write(&config, "Butler:\n  anonTelemetry: false\n").expect("opt out");
    if signal {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("send SIGHUP");
    }
    // The watcher looks every 2 s; SIGHUP is at once.
    agent.wait_log(
        "retries stopped to re-read the config",
        Duration::from_secs(6),
    );
    let reread = agent.wait_log("config re-read: changed", Duration::from_secs(3));
    assert!(reread.contains("anonTelemetry"), "{reread}");
    // Past the retry that was due: 8 s after the first attempt by `Retry-After`, or the 2 s
    // time-out plus at most 2 s of back-off when nothing answers.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(first.elapsed()));
    assert_eq!(
        recorder.requests(),
        1,
        "nothing is sent after the opt-out; log: {:?}",
        agent.log()
    );
    assert!(agent.running());
    assert_eq!(agent.stop(Duration::from_secs(10)), Some(0));
    assert!(agent.panics().is_empty());
}

#[test]
fn an_opt_out_and_sighup_during_retries_stop_them_at_once() {
    opt_out_during_retries(Fault::Unavailable, true, &[]);
}

#[test]
fn an_opt_out_written_to_the_watched_file_during_retries_stops_them() {
    opt_out_during_retries(Fault::Unavailable, false, &[]);
}

/// The destination never answers: the opt-out and SIGHUP arrive while the first attempt waits
/// (2 s request timeout); the retry that would follow its time-out (1–2 s later) never comes.
#[test]
fn an_opt_out_during_an_unanswered_attempt_stops_the_retries_after_it() {
    opt_out_during_retries(
        Fault::Blackhole,
        true,
        &[("BUTLER_TELEMETRY_TIMEOUT", "2s")],
    );
}
