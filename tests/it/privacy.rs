//! Privacy through the real binary, with telemetry sent to a local capture endpoint only.
//!
//! Logs: every command that may talk to a Docker engine runs against a fake engine on a unix
//! socket whose `/info` carries a planted engine ID, host name, root directory and proxy, with a
//! config holding planted secrets; neither stdout nor the debug and trace logs may contain any
//! of them.
//!
//! The guard: a host named like its distro, and config values equal to the distro's name,
//! deliver; a planted host name or config secret in a free place of the body is refused, and
//! `telemetry preview` says so on stderr while printing the body.

use crate::common;
use crate::common::capture::{Fault, Recorder, recording_server};
use crate::common::{Telemetry, copy_dir};

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

/// A local capture endpoint that accepts everything: its URL and its record.
fn fake_capture() -> (String, Recorder) {
    let server = recording_server(Fault::Healthy);
    (server.url(), server)
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    docker_hits: Arc<AtomicUsize>,
    capture: String,
    capture_hits: Recorder,
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
    assert!(s.capture_hits.requests() >= LEVELS.len());
}

#[test]
fn the_running_agent_logs_nothing_identifying() {
    let s = setup();
    for level in LEVELS {
        let before = s.capture_hits.requests();
        let child = command(&s, level, &["run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.capture_hits.requests() == before && Instant::now() < deadline {
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
            s.capture_hits.requests() > before,
            "{level}: no event reached the sink: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_clean(&format!("{level} run"), &out);
    }
}

/// A Debian host named like its distro (or its codename, or `linux`), whose config holds the
/// distro's name: the event carries those words by design and is delivered.
#[test]
fn hosts_named_like_the_distro_deliver() {
    let (capture, hits) = fake_capture();
    for name in ["debian", "bookworm", "linux", "ubuntu"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/bare-metal/root"),
            &root,
        );
        let distro = if name == "ubuntu" {
            "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\n\
             VERSION_CODENAME=jammy\nID=ubuntu\n"
        } else {
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n"
        };
        std::fs::write(root.join("etc/os-release"), distro).unwrap();
        let _ = std::fs::remove_file(root.join("etc/lsb-release"));
        std::fs::write(root.join("etc/hostname"), format!("{name}\n")).unwrap();
        std::fs::write(root.join("proc/sys/kernel/hostname"), format!("{name}\n")).unwrap();
        let run = |config: &str, args: &[&str]| {
            let path = dir.path().join("c.yaml");
            std::fs::write(&path, config).unwrap();
            common::agent(Telemetry::To(&capture))
                .env("HOSTNAME", name)
                .arg("--root")
                .arg(&root)
                .arg("--config")
                .arg(&path)
                .args(args)
                .output()
                .unwrap()
        };
        let host = run("Butler: {}\n", &["host", "--json"]);
        let facts: serde_json::Value = serde_json::from_slice(&host.stdout).unwrap();
        let distro = facts["distro"].as_str().unwrap().to_string();
        let codename = facts["codename"].as_str().unwrap().to_string();
        // The name is one of the words the event carries by design.
        let words = format!("{distro} {codename}").to_lowercase();
        assert!(words.contains(name), "{distro} {codename}");
        let config = format!(
            "Butler:\n  anonTelemetry: true\n  os: \"{distro}\"\n  osCodename: {codename}\n  \
             server: {name}\n"
        );
        let before = hits.requests();
        let out = run(&config, &["telemetry", "send"]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(hits.requests(), before + 1, "{name}");
        // preview agrees: nothing to say on stderr about a refusal.
        let out = run(&config, &["telemetry", "preview"]);
        assert!(out.status.success());
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{name}"
        );
    }
}

/// A host name or config secret in a free place of the body (an endpoint name copied from the
/// config) is refused: nothing reaches the sink, `send` fails, `preview` prints the body and
/// says why on stderr (kind and key path, never the value).
#[test]
fn a_planted_value_elsewhere_is_refused() {
    let (capture, hits) = fake_capture();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/bare-metal/root"),
        &root,
    );
    std::fs::write(root.join("etc/hostname"), "qlik-node-7\n").unwrap();
    for (config, kind) in [
        (
            "Butler:\n  anonTelemetry: true\n  restServerEndpointsEnable:\n    qlik-node-7: true\n",
            "host name",
        ),
        (
            "Butler:\n  anonTelemetry: true\n  mqttConfig:\n    brokerPassword: s3cret-pass\n  \
             restServerEndpointsEnable:\n    s3cret-pass: true\n",
            "Butler.mqttConfig.brokerPassword",
        ),
    ] {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, config).unwrap();
        let run = |args: &[&str]| {
            common::agent(Telemetry::To(&capture))
                .arg("--root")
                .arg(&root)
                .arg("--config")
                .arg(&path)
                .args(args)
                .output()
                .unwrap()
        };
        let out = run(&["telemetry", "send"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(kind), "{err}");
        assert_eq!(hits.requests(), 0);
        let out = run(&["telemetry", "preview"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success());
        assert!(
            err.contains("would be refused") && err.contains(kind),
            "{err}"
        );
        assert!(
            !err.contains("s3cret-pass") && !err.contains("qlik-node-7"),
            "{err}"
        );
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the body");
        assert_eq!(body["event"], "telemetry sent");
    }
}

/// A `DOCKER_HOST` with credentials and a host name (tcp://, and a scheme the agent does not
/// use): no log line, warning or explanation carries its credentials, and none of the agent's
/// own carries its address either (only its scheme).
#[test]
fn docker_host_credentials_are_never_logged() {
    let s = setup();
    // A port nobody listens on: the engine query fails and its error is logged at debug.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let planted = [
        format!("tcp://dockeruser:secretpass@127.0.0.1:{port}"),
        "ssh://dockeruser:secretpass@docker-host.corp.example".to_string(),
    ];
    for docker_host in &planted {
        for level in LEVELS {
            for args in [
                &["id", "--explain"][..],
                &["telemetry", "preview"],
                &["host"],
            ] {
                let out = command(&s, level, args)
                    .env("DOCKER_HOST", docker_host)
                    .output()
                    .expect("the binary runs");
                assert!(out.status.success(), "{args:?}: {out:?}");
                assert_clean(&format!("{level} {args:?}"), &out);
                // A directive naming the HTTP stack (the third level) opts in to its
                // connection logs, which name the address connected to; never the credentials.
                // As an address names it: five bare digits also turn up by chance in the
                // timestamps and IDs of a trace-level log (a failure seen 2026-12-03).
                let port = format!(":{port}");
                let parts: &[&str] = if level.contains("hyper_util") {
                    &["secretpass", "dockeruser"]
                } else {
                    &["secretpass", "dockeruser", "docker-host.corp", &port]
                };
                for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                    let text = String::from_utf8_lossy(bytes);
                    for part in parts {
                        assert!(
                            !text.contains(part),
                            "{docker_host} {level} {args:?}: {stream} contains {part}:\n{text}"
                        );
                    }
                }
            }
        }
    }
}

/// The filter grammar's other ways to name bollard (numeric levels, a `:` or a prefix of the
/// name, span and field filters, bare levels): its `debug` line with the engine's answer is
/// never printed (issue 19). The unit tests in `src/logging` go through the grammar; these
/// are the shapes seen to get through before, on the real binary and the real bollard.
#[test]
fn no_log_directive_lets_bollard_print_the_engines_answer() {
    let s = setup();
    for level in [
        "bollard=4",
        "bollard=5",
        "bollard:=debug",
        "bollard::=trace",
        "info,bollard=5",
        "bol=trace",
        "b=5",
        "5",
        "bollard[{x}]=trace",
        "bollard[]=5",
        "[{x}]=trace",
        "trace,bollard::docker=5",
    ] {
        let before = s.docker_hits.load(Ordering::SeqCst);
        let out = command(&s, level, &["id", "--explain"])
            .output()
            .expect("the binary runs");
        assert!(out.status.success(), "{level}: {out:?}");
        assert_clean(level, &out);
        assert!(
            s.docker_hits.load(Ordering::SeqCst) > before,
            "{level}: the fake engine was asked"
        );
    }
}

/// No log line names a client's address, even at `trace`: the health server (and the sink,
/// which shares its connection handling) sees probes, monitors and strangers, and their
/// addresses are the IPs the agent promises never to record. Each client's own port is
/// unique to its connection, so a log line that names the client (`IP:port`) shows it.
#[test]
fn no_log_line_names_a_client_address() {
    use std::net::TcpStream;
    let mut agent = crate::robust_support::Agent::start(
        &[],
        &[("DO_NOT_TRACK", "1"), ("BUTLER_LOG_LEVEL", "trace")],
        &std::env::temp_dir(),
    );
    let mut ports = Vec::new();
    // Connections that are answered, idle, cut mid-request and left at the deadline.
    for request in [
        &b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /livez HT",
        b"",
    ] {
        let mut c = TcpStream::connect(agent.health).expect("the health server accepts");
        ports.push(c.local_addr().expect("a local address").port());
        c.write_all(request).expect("the request is written");
        c.set_read_timeout(Some(Duration::from_millis(300))).ok();
        let _ = c.read(&mut [0u8; 512]);
    }
    // More connections than there are slots, from another loopback address: the server must
    // make room (an eviction, logged at debug) without naming the address.
    let crowd: Vec<TcpStream> = (0..70)
        .map(|_| {
            let c = common::connect_from([127, 0, 0, 2], agent.health);
            let mut w = &c;
            w.write_all(b"GET /health HTTP/1.1\r\n")
                .expect("half a request");
            c
        })
        .collect();
    // Leave the idle ones to be closed by the server, then stop.
    std::thread::sleep(Duration::from_millis(500));
    drop(crowd);
    assert!(
        agent.stop(Duration::from_secs(5)).is_some(),
        "the agent stops"
    );
    let log = agent.log().join("\n");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is verbose: {log}"
    );
    for port in ports {
        assert!(
            !log.contains(&format!(":{port}")),
            "a log line names the client 127.0.0.1:{port}:\n{log}"
        );
    }
    assert!(
        log.contains("to make room"),
        "the crowd made the server evict: {log}"
    );
    assert!(
        !log.contains("127.0.0.2"),
        "a log line names the client 127.0.0.2:\n{log}"
    );
}

/// `host` explains each fact by the rule that decided it; a rule that read a cgroup path names
/// the marker it found, never the path (it holds the container's ID), and an override shows
/// the name that is sent, not the text that was set. Trees: the real Docker one
/// (`docker-fuse-overlayfs`) with `/.dockerenv` and the mountinfo markers taken away, so the
/// cgroup rule decides; the same with containerd's `/<namespace>/<container>` form.
#[test]
fn host_rules_never_show_a_container_id_or_an_override_text() {
    const ID: &str = "354d9dea057e008098483db310eecdd83a65e3a225c23c4093a437305befb646";
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts/docker-fuse-overlayfs/root");
    let cases: [(&str, &str, Option<&str>, &str); 3] = [
        ("cgroup", "/docker/", None, "docker"),
        ("containerd", "/default/", None, "containerd"),
        (
            "override",
            "/docker/",
            Some("db01.corp-secret.example"),
            "container-other",
        ),
    ];
    for (name, prefix, runtime, expected) in cases {
        let root = dir.path().join(name);
        copy_dir(&fixture, &root);
        std::fs::remove_file(root.join(".dockerenv")).expect("the fixture has /.dockerenv");
        let cgroup = root.join("proc/self/cgroup");
        let text = std::fs::read_to_string(&cgroup).expect("cgroup");
        assert!(
            text.contains(ID),
            "the fixture's cgroup names the container"
        );
        std::fs::write(&cgroup, text.replace("/docker/", prefix)).expect("write");
        let mountinfo = root.join("proc/self/mountinfo");
        let text = std::fs::read_to_string(&mountinfo).expect("mountinfo");
        let kept: String = text
            .lines()
            .filter(|l| !l.contains("docker"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&mountinfo, kept).expect("write");
        for args in [&["host"][..], &["host", "--json"]] {
            let mut c = common::agent(Telemetry::Off);
            c.arg("--root").arg(&root).args(args);
            if let Some(r) = runtime {
                c.env("BUTLER_CONTAINER_RUNTIME", r);
            }
            let out = c.output().expect("the binary runs");
            assert!(out.status.success(), "{name} {args:?}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(text.contains(expected), "{name} {args:?}: {text}");
            for secret in [&ID[..12], "db01", "corp-secret"] {
                assert!(
                    !text.contains(secret),
                    "{name} {args:?} shows {secret}: {text}"
                );
            }
        }
    }
}
