use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::config::MapEnv;
use crate::telemetry::sender::Tried;

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

#[test]
fn interval_offset_is_a_few_percent_and_never_negative() {
    let i = Duration::from_secs(12 * 3600);
    assert_eq!(jittered(i, 0.0), i);
    assert!(jittered(i, 0.999) < i + i / 20 + Duration::from_secs(1));
    assert!(jittered(i, 0.5) > i);
    assert_eq!(jittered(i, f64::NAN), i);
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
            .cycle(&env, &roots, std::future::pending(), |_| Ok(Down(&calls)))
            .await;
        assert_eq!(
            outcome,
            CycleOutcome::Sent {
                delivered: false,
                attempts: 3,
                interrupted: false
            }
        );
        assert_eq!(runner.outbox.len(), 1, "cycle {n}");
        assert_eq!(runner.streak.failures, u64::from(n));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3 * CYCLES);
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
                &env,
                &Roots::at("/nonexistent"),
                std::future::pending(),
                |_| -> Result<Down<'_>, _> {
                    panic!("a client was built although telemetry is off")
                },
            )
            .await;
        assert_eq!(outcome, CycleOutcome::Off);
        assert!(runner.outbox.is_empty());
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
    runner.reload(&source, &env);
    assert_eq!(runner.config.agent.interval, Duration::from_secs(7200));
    assert!(runner.config_error.is_some());
    runner.reload(&source, &env);
    std::fs::write(&file, "Butler:\n  butlerAgent:\n    interval: 3h\n").unwrap();
    runner.reload(&source, &env);
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
            &env,
            &Roots::at(dir.path()),
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
