//! The Butler the agent serves, with the Butler stand-in (`butler-standin/`, answering as
//! Butler's source does): Butler's version in `serviceVersion` and where it came from in
//! `telemetry status`/`preview`; bad settings exit 64; a Butler starting late still gives its
//! version; the `butler` readiness check follows Butler within one period while `/livez` and
//! `/health` never do; the check keeps within Butler's rate limit however often it is probed;
//! the Butler URL is in no event and no log line.

use crate::common;
use crate::common::{NOWHERE, Telemetry};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use butler_standin::{Options, Standin};

/// A stand-in on a free loopback port (no control port: the test holds the handle).
fn standin(opts: Options) -> Standin {
    Standin::start(Options {
        api: Some("127.0.0.1:0".parse().unwrap()),
        control: None,
        ..opts
    })
    .expect("the stand-in starts")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("production.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `butler-agent telemetry status` (telemetry off: status never sends anyway).
fn status(env: &[(&str, &str)], config: Option<&Path>) -> Output {
    let mut cmd = common::agent(Telemetry::Off);
    cmd.args(["telemetry", "status"]).envs(env.iter().copied());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.current_dir(std::env::temp_dir())
        .output()
        .expect("the agent runs")
}

#[test]
fn status_and_preview_say_where_the_version_came_from() {
    let s = standin(Options {
        version: Some("16.0.4".into()),
        ..Options::default()
    });
    let url = s.api_url().unwrap();
    let o = status(&[("BUTLER_API_URL", &url)], None);
    assert!(o.status.success(), "{}", text(&o));
    let expected = format!("serviceVersion: 16.0.4 (Butler's /v4/butlerping at {url})\n");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&expected),
        "{}",
        text(&o)
    );

    // preview: the body carries Butler's version, stderr says where it came from.
    let o = common::agent(Telemetry::Off)
        .args(["telemetry", "preview", "--compact"])
        .env("BUTLER_API_URL", &url)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let body: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(body["properties"]["serviceVersion"], "16.0.4");
    assert_eq!(
        body["properties"]["$lib_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&expected),
        "{}",
        text(&o)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&url));

    // BUTLER_VERSION wins and asks nothing.
    let before = s.stats().api;
    let o = status(
        &[("BUTLER_API_URL", &url), ("BUTLER_VERSION", "15.0.0")],
        None,
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("serviceVersion: 15.0.0 (BUTLER_VERSION)\n"),
        "{}",
        text(&o)
    );
    assert_eq!(s.stats().api, before);

    // The endpoint off: Butler's (fastify's) 404, and the switch to turn on.
    s.set_ping(false);
    let o = status(&[("BUTLER_API_URL", &url)], None);
    let expected = format!(
        "serviceVersion: unknown ({url} answered 404: enable \
         Butler.restServerEndpointsEnable.butlerping)\n"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&expected),
        "{}",
        text(&o)
    );

    // --json: value and source.
    s.set_ping(true);
    let o = common::agent(Telemetry::Off)
        .args(["telemetry", "status", "--json"])
        .env("BUTLER_API_URL", &url)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["serviceVersion"], "16.0.4");
    assert_eq!(
        v["serviceVersionSource"],
        format!("Butler's /v4/butlerping at {url}")
    );
}

#[test]
fn the_url_comes_from_butlers_config_when_both_switches_are_on() {
    let s = standin(Options {
        version: Some("16.1.0".into()),
        ..Options::default()
    });
    let port = s.api_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let on = write_config(
        dir.path(),
        &format!(
            "Butler:\n  anonTelemetry: false\n  restServerConfig:\n    enable: true\n    \
             serverHost: 0.0.0.0\n    serverPort: {port}\n  restServerEndpointsEnable:\n    \
             butlerping: true\n"
        ),
    );
    let o = status(&[], Some(&on));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "serviceVersion: 16.1.0 (Butler's /v4/butlerping at http://127.0.0.1:{port})\n"
        )),
        "{}",
        text(&o)
    );
    let off = write_config(
        dir.path(),
        "Butler:\n  anonTelemetry: false\n  restServerConfig:\n    enable: false\n",
    );
    let o = status(&[], Some(&off));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "serviceVersion: unknown (Butler's REST API is off in the config: \
             Butler.restServerConfig.enable is false)\n"
        ),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_butler_settings_exit_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    /// Environment, config file, words the error must have.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a [&'a str]);
    let cases: [Case; 7] = [
        (
            &[("BUTLER_API_URL", "butler:8080")],
            None,
            &["BUTLER_API_URL", "http://"],
        ),
        (
            &[("BUTLER_API_URL", "http://admin:hunter2@butler:8080")],
            None,
            &["BUTLER_API_URL", "credentials"],
        ),
        (
            &[("BUTLER_API_URL", "https://eu.i.posthog.com")],
            None,
            &["BUTLER_API_URL", "PostHog"],
        ),
        (
            &[("BUTLER_VERSION", "16.0.4; rm -rf")],
            None,
            &["BUTLER_VERSION", "not a version"],
        ),
        (
            &[("BUTLER_REQUIRE_BUTLER", "1")],
            None,
            &[
                "BUTLER_REQUIRE_BUTLER",
                "Butler.dockerHealthCheck.enable",
                "Butler.restServerConfig.enable",
            ],
        ),
        (
            &[],
            Some("Butler:\n  butlerAgent:\n    butlerApiUrl: ftp://butler\n"),
            &[
                "production.yaml",
                "line 3",
                "Butler.butlerAgent.butlerApiUrl",
            ],
        ),
        (
            &[],
            Some("Butler:\n  butlerAgent:\n    requireButler: true\n"),
            &["production.yaml", "line 3", "requireButler"],
        ),
    ];
    for (env, yaml, words) in cases {
        let config = yaml.map(|y| write_config(dir.path(), y));
        for command in [&["telemetry", "status"][..], &["run"][..]] {
            let mut cmd = common::agent(Telemetry::Off);
            cmd.args(command).envs(env.iter().copied());
            if let Some(c) = &config {
                cmd.arg("--config").arg(c);
            }
            let o = cmd.current_dir(dir.path()).output().unwrap();
            assert_eq!(o.status.code(), Some(64), "{env:?} {yaml:?}: {}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            for w in words {
                assert!(err.contains(w), "{env:?} {yaml:?}: no {w:?} in {err}");
            }
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}

/// A running agent, its stderr lines collected.
struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    health: Option<SocketAddr>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(telemetry: Telemetry, env: &[(&str, &str)], config: Option<&Path>) -> Agent {
        let mut cmd = common::agent(telemetry);
        cmd.arg("run")
            .env("BUTLER_HEALTH_HOST", "127.0.0.1")
            .env("BUTLER_HEALTH_PORT", "0")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("the agent starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("health server listening on http://").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(addr);
                }
                keep.lock().unwrap().push(line);
            }
        });
        let health = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .and_then(|a| a.parse().ok());
        Agent {
            child,
            lines,
            health,
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn get(&self, path: &str) -> (u16, String) {
        let addr = self.health.expect("the health server listens");
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let answer = common::http_exchange(addr, request.as_bytes(), false, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let code = common::status_code(&answer).unwrap();
        let text = String::from_utf8_lossy(&answer);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (code, body)
    }

    /// Waits until `/readyz` answers `code`; the time it took.
    fn readyz_turns(&self, code: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.get("/readyz").0 == code {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "/readyz did not turn {code} within {limit:?}: {}\n{}",
                self.get("/readyz?verbose").1,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One period of the check (5 s) plus the check's own time (at most 2 s) plus slack.
const FOLLOW: Duration = Duration::from_secs(9);

#[test]
fn readyz_follows_butler_within_one_period_and_livez_never_does() {
    let s = standin(Options::default());
    let url = s.api_url().unwrap();
    let agent = Agent::start(
        Telemetry::Off,
        &[("BUTLER_REQUIRE_BUTLER", "1"), ("BUTLER_API_URL", &url)],
        None,
    );
    agent.readyz_turns(200, FOLLOW);
    let (_, verbose) = agent.get("/readyz?verbose");
    assert!(verbose.contains("[+]butler ok\n"), "{verbose}");

    // Probed ten times a second for 12 s: Butler sees one request per period.
    s.reset();
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(12) {
        assert_eq!(agent.get("/readyz").0, 200);
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let asked = s.stats().api;
    assert!(probes > 60, "{probes} probes");
    assert!(
        asked <= 4,
        "{asked} requests reached Butler in 12 s of {probes} probes: more than 20 a minute"
    );

    // Butler stops: /readyz fails within one period, naming the check but not the URL;
    // /livez and /health stay 200.
    s.silence();
    let took = agent.readyz_turns(503, FOLLOW);
    let (code, verbose) = agent.get("/readyz?verbose");
    assert_eq!(code, 503);
    assert!(
        verbose.contains("[-]butler failed: Butler's /v4/butlerping at the Butler API URL"),
        "{verbose}"
    );
    assert!(!verbose.contains(&url), "{verbose}");
    for _ in 0..20 {
        assert_eq!(agent.get("/livez").0, 200);
        assert_eq!(agent.get("/health").0, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Back: /readyz passes again within one period.
    s.answer();
    agent.readyz_turns(200, FOLLOW);
    assert!(took <= FOLLOW);

    // One warning for the outage, one line for the return; the URL in no line.
    let log = agent.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("butler check"))
        .count();
    assert_eq!(warnings, 1, "{log}");
    assert!(!log.contains(&url), "{log}");
    assert!(
        !log.contains(&s.api_addr().unwrap().port().to_string()),
        "{log}"
    );
}

#[test]
fn readyz_asks_butlers_health_endpoint_when_it_is_enabled() {
    let s = standin(Options {
        health_port: Some(0),
        ..Options::default()
    });
    let port = s.health_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "Butler:\n  anonTelemetry: false\n  dockerHealthCheck:\n    enable: true\n    \
             port: {port}\n  butlerAgent:\n    requireButler: true\n"
        ),
    );
    let agent = Agent::start(Telemetry::Off, &[], Some(&config));
    agent.readyz_turns(200, FOLLOW);
    assert!(s.stats().health >= 1);
    assert_eq!(s.stats().api, 0, "the health endpoint, not the REST API");
    s.silence();
    agent.readyz_turns(503, FOLLOW);
    let (_, verbose) = agent.get("/readyz?verbose");
    assert!(
        verbose.contains(&format!(
            "[-]butler failed: Butler's health endpoint on 127.0.0.1:{port} did not answer"
        )),
        "{verbose}"
    );
    assert_eq!(agent.get("/livez").0, 200);
    s.answer();
    agent.readyz_turns(200, FOLLOW);
}

/// A sink writing the events it accepts to a file.
struct Sink {
    child: Child,
    addr: String,
    out: std::path::PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sink(dir: &Path) -> Sink {
    let out = dir.join("events.jsonl");
    let mut child = common::agent(Telemetry::Off)
        .args(["sink", "--listen", "127.0.0.1:0", "--out"])
        .arg(&out)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::sink_address(&mut child);
    Sink { child, addr, out }
}

fn first_event(sink: &Sink, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&sink.out)
            && let Some(line) = text.lines().next()
        {
            return serde_json::from_str(line).unwrap();
        }
        assert!(started.elapsed() < limit, "no event within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Butler answers 8 s after the agent starts, past the first cycle (1 s): the first event
/// still carries its version, and nothing in the event or the log names the Butler URL.
#[test]
fn a_butler_starting_late_still_gives_the_first_event_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start_sink(dir.path());
    let s = standin(Options {
        version: Some("16.0.4".into()),
        startup_delay: Duration::from_secs(8),
        ..Options::default()
    });
    // A name, not an address, so the check below cannot pass by chance.
    let url = format!("http://localhost:{}", s.api_addr().unwrap().port());
    let dest = format!("http://{}", sink.addr);
    let agent = Agent::start(
        Telemetry::To(&dest),
        &[
            ("BUTLER_API_URL", &url),
            ("BUTLER_TELEMETRY_START_DELAY", "1s"),
        ],
        None,
    );
    let started = Instant::now();
    let event = first_event(&sink, Duration::from_secs(60));
    assert_eq!(event["properties"]["serviceVersion"], "16.0.4");
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "sent before Butler answered"
    );
    let raw = std::fs::read_to_string(&sink.out).unwrap();
    assert!(!raw.contains("localhost"), "{raw}");
    let log = agent.log();
    assert!(log.contains("serviceVersion 16.0.4"), "{log}");
    assert!(!log.contains(&url) && !log.contains("localhost"), "{log}");
}

#[test]
fn an_unreachable_butler_makes_the_event_say_unknown_never_the_agents_version() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start_sink(dir.path());
    let dest = format!("http://{}", sink.addr);
    // Nothing listens on the discard port; no retries, so no wait.
    let _agent = Agent::start(
        Telemetry::To(&dest),
        &[
            ("BUTLER_API_URL", NOWHERE),
            ("BUTLER_TELEMETRY_START_DELAY", "0s"),
            ("BUTLER_TELEMETRY_RETRIES", "0"),
        ],
        None,
    );
    let event = first_event(&sink, Duration::from_secs(20));
    assert_eq!(event["properties"]["serviceVersion"], "unknown");
    assert_eq!(
        event["properties"]["$lib_version"],
        env!("CARGO_PKG_VERSION")
    );
}
