use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::config::{ConfigSource, MapEnv};
use crate::host::syscalls::{FakeEngine, FakeSyscalls};
use crate::telemetry::sender::Tried;
use crate::test_support::Logs;

/// Always fails to connect, counting calls.
struct Down<'a>(&'a AtomicU32);

impl Transport for Down<'_> {
    async fn send(&self, _body: &Bytes) -> Tried {
        self.0.fetch_add(1, Ordering::SeqCst);
        Tried {
            attempt: Attempt::Transient {
                status: None,
                reason: "could not connect".into(),
                retry_after: None,
            },
            body_may_have_left: false,
        }
    }
}

fn defaults(env: &MapEnv) -> LoadedConfig {
    LoadedConfig::defaults(env).unwrap()
}

fn inputs(env: &MapEnv, roots: &Roots) -> Inputs {
    Inputs {
        env: Arc::new(env.clone()),
        roots: roots.clone(),
        sys: Arc::new(FakeSyscalls::default()),
        limit: CYCLE_TIME_LIMIT,
    }
}

/// Long offline: the outbox never holds more than one event, every cycle makes a bounded number
/// of tries, and the failure streak is one counter. The outbox is a single slot (an `Option`),
/// so its bound holds by type; a few dozen cycles show that each cycle replaces, never adds.
#[tokio::test(start_paused = true)]
async fn many_failed_cycles_keep_one_pending_event() {
    const CYCLES: u32 = 48;
    let env = MapEnv::new([("BUTLER_TELEMETRY_RETRIES", "2")]);
    let host = tempfile::tempdir().unwrap();
    let roots = Roots::at(host.path());
    let mut runner = Runner::new(defaults(&env));
    let calls = AtomicU32::new(0);
    for n in 1..=CYCLES {
        let outcome = runner
            .cycle(&inputs(&env, &roots), std::future::pending(), |_| {
                Ok(Down(&calls))
            })
            .await;
        assert_eq!(
            outcome,
            CycleOutcome::Sent {
                delivered: false,
                attempts: 3,
                interrupted: false,
                reread: None,
            }
        );
        assert_eq!(runner.outbox.len(), 1, "cycle {n}");
        assert_eq!(runner.streak.failures, u64::from(n));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3 * CYCLES);
}

/// Always fails to connect, like [`Down`], and says so after its first attempt.
struct DownAndTell<'a>(
    &'a AtomicU32,
    std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
);

impl Transport for DownAndTell<'_> {
    async fn send(&self, body: &Bytes) -> Tried {
        let tried = Down(self.0).send(body).await;
        if let Some(tell) = self.1.lock().unwrap().take() {
            let _ = tell.send(());
        }
        tried
    }
}

/// A re-read asked for before the event goes out (the signal came while Butler was being
/// waited for, or the event built): nothing is sent, not even a first attempt, and the event
/// waits in the outbox. One asked for during a retry pause ends the retries there.
#[tokio::test(start_paused = true)]
async fn a_reread_stops_the_send_before_the_next_attempt() {
    let env = MapEnv::new([("BUTLER_TELEMETRY_RETRIES", "5")]);
    let host = tempfile::tempdir().unwrap();
    let roots = Roots::at(host.path());
    let mut runner = Runner::new(defaults(&env));
    let calls = AtomicU32::new(0);
    let outcome = runner
        .cycle_or_reread(
            &inputs(&env, &roots),
            std::future::pending(),
            std::future::ready(Reread::Signal),
            |_| Ok(Down(&calls)),
        )
        .await;
    assert_eq!(outcome, CycleOutcome::Reread(Reread::Signal));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing sent");
    assert_eq!(runner.outbox.len(), 1);

    let (tell, told) = tokio::sync::oneshot::channel();
    let outcome = runner
        .cycle_or_reread(
            &inputs(&env, &roots),
            std::future::pending(),
            async {
                let _ = told.await;
                Reread::FileChanged
            },
            |_| Ok(DownAndTell(&calls, std::sync::Mutex::new(Some(tell)))),
        )
        .await;
    assert_eq!(
        outcome,
        CycleOutcome::Sent {
            delivered: false,
            attempts: 1,
            interrupted: false,
            reread: Some(Reread::FileChanged),
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt, no retry");
}

#[tokio::test(start_paused = true)]
async fn off_builds_no_client_and_sends_nothing() {
    for env in [
        MapEnv::new([("DO_NOT_TRACK", "1")]),
        MapEnv::new([("BUTLER_ANON_TELEMETRY", "false")]),
        MapEnv::new([("BUTLER_ANON_TELEMETRY", "maybe")]),
    ] {
        let mut runner = Runner::new(defaults(&MapEnv::default()));
        let outcome = runner
            .cycle(
                &inputs(&env, &Roots::at("/nonexistent")),
                std::future::pending(),
                |_| -> Result<Down<'_>, _> {
                    panic!("a client was built although telemetry is off")
                },
            )
            .await;
        assert_eq!(outcome, CycleOutcome::Off);
        assert_eq!(runner.outbox.len(), 0);
    }
}

#[test]
fn invalid_file_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("production.yaml");
    std::fs::write(&file, "Butler:\n  butlerAgent:\n    interval: 2h\n").unwrap();
    let env = MapEnv::default();
    let source = ConfigSource::Flag(file.clone());
    let mut runner = Runner::new(config::load(source.clone(), &env).unwrap());
    std::fs::write(&file, "Butler:\n  anonTelemetry: \"yes\"\n").unwrap();
    runner.reload(&env);
    assert_eq!(runner.config.agent.interval, Duration::from_secs(7200));
    assert!(runner.config_error.is_some());
    runner.reload(&env);
    std::fs::write(&file, "Butler:\n  butlerAgent:\n    interval: 3h\n").unwrap();
    runner.reload(&env);
    assert_eq!(runner.config.agent.interval, Duration::from_secs(3 * 3600));
    assert!(runner.config_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn refused_events_are_never_handed_to_the_transport() {
    let dir = tempfile::tempdir().unwrap();
    // A config value is planted as an endpoint name, which the event copies: the guard must
    // refuse.
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "Butler:\n  someSecret: Plantedix\n  restServerEndpointsEnable:\n    Plantedix: true\n",
    )
    .unwrap();
    let env = MapEnv::new([(
        "BUTLER_STATE_DIR",
        dir.path().join("state").to_str().unwrap(),
    )]);
    let cfg = config::load(ConfigSource::Flag(file), &env).unwrap();
    let mut runner = Runner::new(cfg);
    let outcome = runner
        .cycle(
            &inputs(&env, &Roots::at(dir.path())),
            std::future::pending(),
            |_| -> Result<Down<'_>, _> { panic!("a refused event reached the transport") },
        )
        .await;
    assert_eq!(
        outcome,
        CycleOutcome::Refused(guard::Kind::ConfigValue("Butler.someSecret".into()))
    );
    let last = state::load(&dir.path().join("state")).unwrap().unwrap();
    assert_eq!(last.result, "refused");
    assert!(!last.detail.contains("Plantedix"));
}

/// A host in a container (so the engine ID anchors the instance ID) without a host /etc mount,
/// whose Docker endpoint accepts and never answers (the listener is kept, never accepted), and
/// a state directory below the same temporary directory.
struct SilentDocker {
    _dir: tempfile::TempDir,
    _listener: std::os::unix::net::UnixListener,
    roots: Roots,
    env: MapEnv,
}

fn silent_docker() -> SilentDocker {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("docker.sock")).unwrap();
    let mut roots = Roots::at(dir.path());
    roots.env.container_override = Some("docker".into());
    // Socket paths are read below the root.
    roots.env.docker_host = Some("unix:///docker.sock".into());
    let env = MapEnv::new([(
        "BUTLER_STATE_DIR",
        dir.path().join("state").to_str().unwrap(),
    )]);
    SilentDocker {
        _dir: dir,
        _listener: listener,
        roots,
        env,
    }
}

/// Fake syscalls except for the Docker engine, asked for real: at the silent socket of
/// [`silent_docker`], below the test's root.
fn real_engine_only() -> Arc<FakeSyscalls> {
    Arc::new(FakeSyscalls::default().engine(FakeEngine::Real))
}

/// The cycle's work runs off the runtime thread: while it waits on a silent Docker engine,
/// the runtime keeps running other tasks; past the limit the cycle is abandoned, and the next
/// one is skipped while the abandoned work still runs, instead of starting more threads.
#[tokio::test]
async fn a_stuck_cycle_is_abandoned_and_never_blocks_the_runtime() {
    let docker = silent_docker();
    let mut runner = Runner::new(defaults(&docker.env));
    let inputs = Inputs {
        limit: Duration::from_millis(300),
        sys: real_engine_only(),
        ..inputs(&docker.env, &docker.roots)
    };
    // A ticker on the same (current-thread) runtime: it must keep ticking during the cycle.
    let ticks = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&ticks);
    let ticker = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let started = std::time::Instant::now();
    let outcome = runner
        .cycle(
            &inputs,
            std::future::pending(),
            |_| -> Result<Down<'_>, _> { panic!("an abandoned cycle builds no client") },
        )
        .await;
    let took = started.elapsed();
    assert_eq!(outcome, CycleOutcome::Abandoned);
    assert!(
        took < Duration::from_millis(1200),
        "abandoned after {took:?}"
    );
    assert!(
        ticks.load(Ordering::SeqCst) >= 10,
        "the runtime ran other tasks meanwhile ({} ticks in {took:?})",
        ticks.load(Ordering::SeqCst)
    );
    assert!(runner.still_working(), "the Docker query is still waiting");
    let outcome = runner
        .cycle(
            &inputs,
            std::future::pending(),
            |_| -> Result<Down<'_>, _> { panic!("a skipped cycle builds no client") },
        )
        .await;
    assert_eq!(outcome, CycleOutcome::Skipped);
    // The engine query gives up after its own timeout; then cycles run again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runner.still_working() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!runner.still_working(), "the abandoned work ends");
    ticker.abort();
}

/// A stop request ends the wait for the cycle's work at once.
#[tokio::test]
async fn a_stop_ends_a_cycle_waiting_on_its_work() {
    let docker = silent_docker();
    let mut runner = Runner::new(defaults(&docker.env));
    let started = std::time::Instant::now();
    let outcome = runner
        .cycle(
            &Inputs {
                sys: real_engine_only(),
                ..inputs(&docker.env, &docker.roots)
            },
            tokio::time::sleep(Duration::from_millis(100)),
            |_| -> Result<Down<'_>, _> { panic!("a stopped cycle builds no client") },
        )
        .await;
    assert_eq!(outcome, CycleOutcome::Stopped);
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[test]
fn changes_name_the_keys_never_the_values() {
    let env = MapEnv::default();
    let old = defaults(&env);
    let mut new = old.clone();
    assert!(changes(&old, &new).is_empty());
    new.agent.interval = Duration::from_secs(7200);
    new.agent.posthog_key = "phc_secret_value".into();
    new.agent.health_port = 1;
    let changed = changes(&old, &new);
    assert_eq!(
        changed,
        [
            "Butler.butlerAgent.posthogKey",
            "Butler.butlerAgent.interval",
            "Butler.butlerAgent.healthPort"
        ]
    );
    assert!(changed.iter().all(|k| !k.contains("phc_secret_value")));
}

#[test]
fn only_settings_read_at_start_up_need_a_restart() {
    let env = MapEnv::default();
    let old = defaults(&env);
    let mut new = old.clone();
    new.agent.interval = Duration::from_secs(7200);
    new.agent.posthog_key = "phc_other".into();
    new.agent.audit_log = Some("/tmp/audit.jsonl".into());
    assert!(!needs_restart(&old, &new));
    new.agent.health_port = 1;
    assert!(needs_restart(&old, &new));
    let mut new = old.clone();
    new.agent.shutdown_grace = Duration::from_secs(1);
    assert!(needs_restart(&old, &new));
}

#[tokio::test]
async fn reload_now_takes_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("production.yaml");
    std::fs::write(&file, "Butler:\n  butlerAgent:\n    interval: 2h\n").unwrap();
    let env = MapEnv::default();
    let mut runner = Runner::new(config::load(ConfigSource::Flag(file.clone()), &env).unwrap());
    std::fs::write(&file, "Butler:\n  butlerAgent:\n    interval: 3h\n").unwrap();
    let inputs = inputs(&env, &Roots::at("/nonexistent"));
    assert!(
        runner
            .reload_now(&inputs, std::future::pending(), true)
            .await
    );
    assert_eq!(runner.config.agent.interval, Duration::from_secs(3 * 3600));
}

/// Takes every event, keeping its body.
struct Keep<'a>(&'a std::sync::Mutex<Vec<Bytes>>);

impl Transport for Keep<'_> {
    async fn send(&self, body: &Bytes) -> Tried {
        self.0.lock().unwrap().push(body.clone());
        Tried {
            attempt: Attempt::Delivered { status: 200 },
            body_may_have_left: true,
        }
    }
}

/// Each cycle asks Butler: its version while it answers, `unknown` while it is away, its
/// version again when it is back. Never the agent's own version.
#[tokio::test]
async fn each_event_carries_the_version_butler_gives_in_that_cycle() {
    use butler_standin::{Options, Standin};
    let standin = Standin::start(Options {
        version: Some("15.9.0".into()),
        api: Some("127.0.0.1:0".parse().unwrap()),
        control: None,
        ..Options::default()
    })
    .unwrap();
    let url = standin.api_url().unwrap();
    let env = MapEnv::new([
        ("BUTLER_API_URL", url.as_str()),
        ("BUTLER_TELEMETRY_RETRIES", "0"),
    ]);
    let host = tempfile::tempdir().unwrap();
    let roots = Roots::at(host.path());
    let mut runner = Runner::new(defaults(&env));
    let bodies = std::sync::Mutex::new(Vec::new());
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::INFO);
    let mut versions = Vec::new();
    for away in [false, true, true, true, false, false] {
        if away {
            standin.silence();
        } else {
            standin.answer();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        runner
            .cycle(&inputs(&env, &roots), std::future::pending(), |_| {
                Ok(Keep(&bodies))
            })
            .await;
        let last = bodies.lock().unwrap().last().cloned().unwrap();
        let event: serde_json::Value = serde_json::from_slice(&last).unwrap();
        versions.push(event["properties"]["serviceVersion"].clone());
        assert!(!String::from_utf8_lossy(&last).contains(&url));
    }
    assert_eq!(
        versions,
        [
            "15.9.0", "unknown", "unknown", "unknown", "15.9.0", "15.9.0"
        ]
    );
    // One line per change of state, not one per cycle; never the URL.
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("serviceVersion"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("WARN") && lines[1].contains("did not answer"),
        "{text}"
    );
    assert!(!text.contains(&url), "{text}");
}

/// A panic in the cycle's work ends that cycle at once and is reported as a panic, not as work
/// that did not finish within the time limit; the next cycle runs.
#[tokio::test]
async fn a_panic_in_the_cycle_is_reported_as_a_panic() {
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::INFO);
    let dir = tempfile::tempdir().unwrap();
    let mut roots = Roots::at(dir.path());
    // In a container, no host mounts: the engine is asked, and its fake query panics.
    roots.env.container_override = Some("docker".into());
    roots.env.docker_host = Some("tcp://127.0.0.1:1".into());
    let env = MapEnv::default();
    let mut runner = Runner::new(defaults(&env));
    let inputs = Inputs {
        sys: Arc::new(FakeSyscalls::default().engine(FakeEngine::Panics)),
        ..inputs(&env, &roots)
    };
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let outcome = runner
            .cycle(
                &inputs,
                std::future::pending(),
                |_| -> Result<Down<'_>, _> { panic!("a panicked cycle builds no client") },
            )
            .await;
        assert_eq!(outcome, CycleOutcome::Panicked);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reported at once"
    );
    assert!(!runner.still_working());
    let text = logs.text();
    assert!(text.contains("building the event panicked"), "{text}");
    assert!(!text.contains("did not finish"), "{text}");
}
