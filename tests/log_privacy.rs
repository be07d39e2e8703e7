//! Nothing identifying in any log, at any level: every command that may talk to a Docker
//! engine runs against a fake engine on a unix socket whose `/info` carries a planted engine ID,
//! host name, root directory and proxy, with a config holding planted secrets; neither stdout
//! nor the debug and trace logs may contain any of them. Telemetry goes to a local sink only.

mod common;
use common::{Telemetry, copy_dir};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ENGINE_ID: &str = "PLNT:ENGN:ID42:ZQXW:VUTS:RQPO:NMLK:JIHG:FEDC:BA98:7654:3210";
const DOCKER_NAME: &str = "planted-docker-hostname";
const DOCKER_ROOT: &str = "/planted/docker-root-dir";
const DOCKER_PROXY: &str = "http://planted-proxy.example:3128";
const CONFIG_SECRET: &str = "planted-mqtt-password-x7";
const QRS_HOST: &str = "planted-qrs.example.internal";

/// A fake Docker engine: answers every request with a `/info` body, counts requests.
fn fake_docker(sock: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(sock).expect("bind the fake Docker socket");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let body = format!(
                r#"{{"ID":"{ENGINE_ID}","Name":"{DOCKER_NAME}","DockerRootDir":"{DOCKER_ROOT}","HttpProxy":"{DOCKER_PROXY}","ServerVersion":"20.10.24","OperatingSystem":"Debian GNU/Linux 12 (bookworm)"}}"#
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut stream = reader.into_inner();
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    hits
}

/// A local capture endpoint that accepts everything.
fn fake_capture() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let mut len = 0usize;
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Content-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"Ok\"}";
            let _ = reader.into_inner().write_all(answer.as_bytes());
        }
    });
    (format!("http://{addr}"), hits)
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    docker_hits: Arc<AtomicUsize>,
    capture: String,
    capture_hits: Arc<AtomicUsize>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/docker-cgroup-v1/root"),
        &root,
    );
    let docker_hits = fake_docker(&root.join("docker.sock"));
    let (capture, capture_hits) = fake_capture();
    let config = dir.path().join("production.yaml");
    std::fs::write(
        &config,
        format!(
            "Butler:\n  anonTelemetry: true\n  configQRS:\n    host: {QRS_HOST}\n  \
             mqttConfig:\n    enable: true\n    brokerPassword: {CONFIG_SECRET}\n  \
             butlerAgent:\n    stateDir: {}\n    startDelay: 0s\n    healthEnable: false\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        root,
        config,
        docker_hits,
        capture,
        capture_hits,
    }
}

fn command(s: &Setup, level: &str, args: &[&str]) -> Command {
    let mut c = common::agent(Telemetry::To(&s.capture));
    c.env("BUTLER_LOG_LEVEL", level)
        .env("DOCKER_HOST", "unix:///docker.sock")
        .arg("--root")
        .arg(&s.root)
        .arg("--config")
        .arg(&s.config)
        .args(args);
    c
}

fn assert_clean(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for planted in [
            ENGINE_ID,
            DOCKER_NAME,
            DOCKER_ROOT,
            DOCKER_PROXY,
            CONFIG_SECRET,
            QRS_HOST,
        ] {
            assert!(
                !text.contains(planted),
                "{what}: {stream} contains {planted}:\n{text}"
            );
        }
    }
}

const LEVELS: &[&str] = &[
    "debug",
    "trace",
    // Explicit directives for every dependency: bollard still never logs the engine's answer.
    "trace,bollard=trace,hyper=trace,hyper_util=trace,reqwest=trace,h2=trace,rustls=trace",
];

#[test]
fn one_shot_commands_log_nothing_identifying() {
    let s = setup();
    let commands: &[&[&str]] = &[
        &["host"],
        &["host", "--json"],
        &["id"],
        &["id", "--explain"],
        &["telemetry", "preview"],
        &["telemetry", "status"],
        &["telemetry", "status", "--json"],
        &["telemetry", "send"],
    ];
    for level in LEVELS {
        for args in commands {
            let out = command(&s, level, args).output().expect("the binary runs");
            assert!(out.status.success(), "{args:?}: {out:?}");
            assert_clean(&format!("{level} {args:?}"), &out);
        }
    }
    // The fake engine was asked, so its answer did pass through the logged code.
    assert!(s.docker_hits.load(Ordering::SeqCst) > 0);
    assert!(s.capture_hits.load(Ordering::SeqCst) >= LEVELS.len());
}

#[test]
fn the_running_agent_logs_nothing_identifying() {
    let s = setup();
    for level in LEVELS {
        let before = s.capture_hits.load(Ordering::SeqCst);
        let child = command(&s, level, &["run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.capture_hits.load(Ordering::SeqCst) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            s.capture_hits.load(Ordering::SeqCst) > before,
            "{level}: no event reached the sink: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_clean(&format!("{level} run"), &out);
    }
}
