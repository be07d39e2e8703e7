//! Network faults against the sender, end to end: the real `butler-agent run` sends its first
//! event at once to a local server that fails in one way per case — refused, blackholed, slow
//! (1 byte/s), 500s, 429 with `Retry-After`, TLS with a certificate nobody trusts (and the same
//! server trusted through `BUTLER_CA_FILE`), a proxy that is down. For each: `/health` stays
//! 200 throughout, the number of requests the server saw is what the retry policy allows, one
//! warning is logged for the failed cycle (none when it recovers), nothing panics, memory stays
//! bounded, and SIGTERM ends the agent with exit 0.
//!
//! All cases run at once, each with its own agent and server, so the suite takes as long as
//! its slowest case (about 10 s) rather than their sum.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::capture::{Fault, answer, read_request, recording_server};
use crate::robust_support::{Agent, Prober, RSS_BOUND_KIB, Summary};

const CLASS: &str = "network-faults";
const RETRIES: u32 = 2;
/// How much the resident set may grow over one failed cycle (TLS roots and the HTTP client
/// are built per cycle and dropped after it).
const RSS_GROWTH_BOUND_KIB: u64 = 8 * 1024;
const PROBE_BOUND: Duration = Duration::from_millis(100);

/// What a fault server saw: when each connection came.
type Seen = Arc<Mutex<Vec<Instant>>>;

/// A local server with `fault`; returns its address and the connection log.
fn fault_server(fault: Fault) -> (SocketAddr, Seen) {
    let server = recording_server(fault);
    (server.addr, server.connections)
}

/// A TLS server with a freshly made self-signed certificate for 127.0.0.1 that answers 200;
/// returns its address, the connection log and the certificate's PEM.
fn tls_server() -> (SocketAddr, Seen, String) {
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ServerConfig, ServerConnection, StreamOwned};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("a self-signed certificate is generated");
    let pem = certified.cert.pem();
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("the generated key matches its certificate");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            log.lock().expect("seen lock").push(Instant::now());
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = ServerConnection::new(config) else {
                    return;
                };
                let mut tls = StreamOwned::new(conn, s);
                if read_request(&mut tls).is_some() {
                    answer(&mut tls, Fault::Healthy, 1);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    (addr, seen, pem)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr()
        .expect("bound listener has an address")
        .port()
}

/// A host tree with just an os-release, so the event does not depend on this machine.
fn host_tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).expect("create the host tree");
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\n",
    )
    .expect("write os-release");
    root
}

/// What a case expects.
struct Expect {
    /// Connections the fault server must see (None: not observable, e.g. refused).
    requests: Option<usize>,
    delivered: bool,
    /// Words the one warning must contain.
    warning_words: &'static [&'static str],
}

struct Case {
    name: &'static str,
    /// The destination's server log, if there is a server.
    seen: Option<Seen>,
    env: Vec<(String, String)>,
    expect: Expect,
    /// Minimum pause between two requests (Retry-After).
    min_gap: Option<Duration>,
    /// Send SIGTERM while the first attempt is still in flight.
    stop_in_flight: bool,
}

fn failed(words: &'static [&'static str]) -> Expect {
    Expect {
        requests: Some(RETRIES as usize + 1),
        delivered: false,
        warning_words: words,
    }
}

fn cases(work: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name, seen, host: String, extra: Vec<(&str, String)>, expect, min_gap| {
        let mut env = vec![("BUTLER_POSTHOG_HOST".to_string(), host)];
        env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        cases.push(Case {
            name,
            seen,
            env,
            expect,
            min_gap,
            stop_in_flight: false,
        });
    };
    let (a, seen) = fault_server(Fault::Healthy);
    add(
        "healthy destination (control)",
        Some(seen),
        format!("http://{a}"),
        vec![],
        Expect {
            requests: Some(1),
            delivered: true,
            warning_words: &[],
        },
        None,
    );
    let down = closed_port();
    add(
        "destination down (refused)",
        None,
        format!("http://127.0.0.1:{down}"),
        vec![],
        Expect {
            requests: None,
            ..failed(&[
                "could not connect",
                "3 attempts",
                "health endpoint are not affected",
            ])
        },
        None,
    );
    let (a, seen) = fault_server(Fault::Blackhole);
    add(
        "blackholed (accepts, never answers)",
        Some(seen),
        format!("http://{a}"),
        vec![],
        failed(&["timed out", "3 attempts"]),
        None,
    );
    let (a, seen) = fault_server(Fault::Slow);
    add(
        "slow (1 byte/s)",
        Some(seen),
        format!("http://{a}"),
        vec![],
        failed(&["timed out", "3 attempts"]),
        None,
    );
    let (a, seen) = fault_server(Fault::ServerError);
    add(
        "500 on every request",
        Some(seen),
        format!("http://{a}"),
        vec![],
        failed(&["HTTP 500", "3 attempts"]),
        None,
    );
    let (a, seen) = fault_server(Fault::RateLimited);
    add(
        "429 with Retry-After, then 200",
        Some(seen),
        format!("http://{a}"),
        vec![],
        Expect {
            requests: Some(3),
            delivered: true,
            warning_words: &[],
        },
        Some(Duration::from_millis(950)),
    );
    let (a, seen, pem) = tls_server();
    add(
        "TLS with an untrusted certificate",
        Some(seen),
        format!("https://{a}"),
        vec![],
        failed(&["certificate", "BUTLER_CA_FILE"]),
        None,
    );
    let (a, seen, pem_trusted) = tls_server();
    let ca = work.join("trusted-ca.pem");
    std::fs::write(&ca, pem_trusted).expect("write the CA file");
    add(
        "TLS trusted through BUTLER_CA_FILE",
        Some(seen),
        format!("https://{a}"),
        vec![("BUTLER_CA_FILE", ca.display().to_string())],
        Expect {
            requests: Some(1),
            delivered: true,
            warning_words: &[],
        },
        None,
    );
    // The untrusted server's certificate is not the trusted one: a CA file for another
    // certificate does not make it trusted.
    let other = work.join("other-ca.pem");
    std::fs::write(&other, pem).expect("write the other CA file");
    let (a, seen, _) = tls_server();
    add(
        "TLS with a CA file for another certificate",
        Some(seen),
        format!("https://{a}"),
        vec![("BUTLER_CA_FILE", other.display().to_string())],
        failed(&["certificate"]),
        None,
    );
    let (a, seen) = fault_server(Fault::Healthy);
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    add(
        "proxy down",
        Some(seen),
        format!("http://{a}"),
        vec![("HTTP_PROXY", proxy.clone()), ("HTTPS_PROXY", proxy)],
        Expect {
            requests: Some(0),
            ..failed(&["could not connect", "proxy"])
        },
        None,
    );
    let (a, seen) = fault_server(Fault::Blackhole);
    cases.push(Case {
        name: "SIGTERM during a blackholed attempt",
        seen: Some(seen),
        env: vec![
            ("BUTLER_POSTHOG_HOST".into(), format!("http://{a}")),
            ("BUTLER_TELEMETRY_TIMEOUT".into(), "30s".into()),
        ],
        expect: Expect {
            requests: Some(1),
            delivered: false,
            warning_words: &[],
        },
        min_gap: None,
        stop_in_flight: true,
    });
    cases
}

/// Runs one case; returns its problems (empty when it passed) and a one-line account.
fn run_case(case: &Case, work: &Path) -> (Vec<String>, String) {
    let dir = work.join(case.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    std::fs::create_dir_all(&dir).expect("create the case directory");
    let root = host_tree(&dir);
    let state = dir.join("state");
    let root_arg = format!("--root={}", root.display());
    let state_arg = state.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("BUTLER_TELEMETRY_START_DELAY", "0s"),
        ("BUTLER_TELEMETRY_TIMEOUT", "1s"),
        ("BUTLER_SHUTDOWN_GRACE", "2s"),
        ("BUTLER_STATE_DIR", &state_arg),
    ];
    let retries = RETRIES.to_string();
    env.push(("BUTLER_TELEMETRY_RETRIES", &retries));
    for (k, v) in &case.env {
        env.retain(|(existing, _)| existing != k);
        env.push((k, v));
    }
    let mut agent = Agent::start(&[&root_arg], &env, &dir);
    let mut problems = Vec::new();
    let prober = Prober::start(agent.health, Duration::from_millis(100));
    agent.wait_log("Telemetry         : on", Duration::from_secs(10));
    let rss_start = agent.rss_kib();

    let started = Instant::now();
    if case.stop_in_flight {
        // Wait for the attempt to reach the server, then stop while it hangs.
        while case
            .seen
            .as_ref()
            .is_some_and(|s| s.lock().expect("seen lock").is_empty())
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        let outcome = if case.expect.delivered {
            "telemetry: delivered"
        } else {
            "could not deliver"
        };
        agent.wait_log(outcome, Duration::from_secs(30));
        // Room for a request that should not come.
        std::thread::sleep(Duration::from_millis(300));
    }
    let rss_end = agent.rss_kib();
    let report = prober.finish();
    if let Some(p) = report.problem(PROBE_BOUND) {
        problems.push(format!("/health: {p}"));
    }

    let seen: Vec<Instant> = case
        .seen
        .as_ref()
        .map(|s| s.lock().expect("seen lock").clone())
        .unwrap_or_default();
    if let Some(n) = case.expect.requests {
        if seen.len() != n {
            problems.push(format!("server saw {} requests, expected {n}", seen.len()));
        }
    }
    if let Some(gap) = case.min_gap {
        for w in seen.windows(2) {
            if w[1] - w[0] < gap {
                problems.push(format!(
                    "retried after {:?}, before Retry-After",
                    w[1] - w[0]
                ));
            }
        }
    }
    let warnings = agent.messages("WARN");
    let expected_warnings = usize::from(!case.expect.warning_words.is_empty());
    if warnings.len() != expected_warnings {
        problems.push(format!(
            "{} warnings, expected {expected_warnings}: {warnings:?}",
            warnings.len()
        ));
    }
    if let Some(w) = warnings.first() {
        for word in case.expect.warning_words {
            if !w.contains(word) {
                problems.push(format!("the warning does not say {word:?}: {w}"));
            }
        }
    }
    if rss_end > RSS_BOUND_KIB || rss_end > rss_start + RSS_GROWTH_BOUND_KIB {
        problems.push(format!("VmRSS {rss_start} → {rss_end} KiB"));
    }

    let stopping = Instant::now();
    let code = agent.stop(Duration::from_secs(10));
    let stop_took = stopping.elapsed();
    if code != Some(0) {
        problems.push(format!("exit {code:?} after SIGTERM"));
    }
    // Grace 2 s: a hanging attempt must not hold the exit up longer.
    if stop_took > Duration::from_secs(4) {
        problems.push(format!("took {stop_took:?} to stop"));
    }
    let panics = agent.panics();
    if !panics.is_empty() {
        problems.push(format!("panicked: {panics:?}"));
    }
    let account = format!(
        "{}: {} requests, warnings {:?}, probes {} (max {:?}), VmRSS {rss_start} → {rss_end} KiB, stop {stop_took:?}",
        case.name,
        seen.len(),
        warnings,
        report.total,
        report.max()
    );
    if !problems.is_empty() {
        problems.push(format!("log:\n{}", agent.log().join("\n")));
    }
    (problems, account)
}

#[test]
fn network_faults_end_to_end() {
    let mut summary = Summary::new(CLASS, "network_faults_end_to_end");
    let work = tempfile::tempdir().expect("a temp dir");
    let cases = cases(work.path());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| s.spawn(|| run_case(case, work.path())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (vec!["the case panicked".into()], String::new()))
            })
            .collect()
    });
    for (case, (problems, account)) in cases.iter().zip(results) {
        eprintln!("{account}");
        summary.case(
            case.name,
            (!problems.is_empty()).then(|| problems.join("\n")),
        );
    }
    summary.assert_all_passed();
}
