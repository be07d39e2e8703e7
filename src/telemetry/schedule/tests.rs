use super::*;

#[test]
fn interval_offset_is_a_few_percent_and_never_negative() {
    let i = Duration::from_secs(12 * 3600);
    assert_eq!(jittered(i, 0.0), i);
    assert!(jittered(i, 0.999) < i + i / 20 + Duration::from_secs(1));
    assert!(jittered(i, 0.5) > i);
    assert_eq!(jittered(i, f64::NAN), i);
}

#[test]
fn a_huge_interval_saturates_instead_of_panicking() {
    assert_eq!(jittered(Duration::MAX, 0.999), Duration::MAX);
    assert!(jittered(Duration::from_secs(u64::MAX / 2), 0.5) >= Duration::from_secs(u64::MAX / 2));
}

/// A schedule on an empty host tree with fake syscalls and no SIGHUP.
fn context(
    initial: LoadedConfig,
    env: crate::config::MapEnv,
    readiness: Readiness,
) -> ScheduleContext {
    ScheduleContext {
        initial,
        env: Arc::new(env),
        roots: Roots::at("/nonexistent"),
        hangups: Hangups::none(),
        readiness,
        sys: Arc::new(crate::host::syscalls::FakeSyscalls::default()),
    }
}

/// A pause far too long to add to the clock is waited as "never", not a panic; a stop still
/// ends it at once.
#[tokio::test(start_paused = true)]
async fn a_huge_start_delay_waits_and_stops_without_panicking() {
    let env = crate::config::MapEnv::new([
        ("DO_NOT_TRACK", "1"),
        ("BUTLER_TELEMETRY_START_DELAY", "18446744073709551615"),
    ]);
    let Ok(config) = LoadedConfig::defaults(&env) else {
        // Refused at load (a range check): nothing reaches the schedule.
        return;
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(context(config, env, Readiness::new()), async {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!task.is_finished());
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the schedule stops at once")
        .expect("the schedule does not panic");
}

/// `/readyz`'s config check follows the file the cycles re-read: failing while it no longer
/// loads (the last good config stays in use), passing again once it is fixed.
#[tokio::test(start_paused = true)]
async fn the_config_check_follows_each_re_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("production.yaml");
    std::fs::write(&file, "Butler:\n  anonTelemetry: false\n").unwrap();
    let env = crate::config::MapEnv::new([
        ("BUTLER_TELEMETRY_START_DELAY", "0"),
        ("BUTLER_TELEMETRY_INTERVAL", "1m"),
    ]);
    let config = crate::config::load(crate::config::ConfigSource::Flag(file.clone()), &env)
        .expect("the first file loads");
    let readiness = Readiness::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(context(config, env, readiness.clone()), async {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert!(readiness.status().config_valid);
    std::fs::write(&file, "Butler:\n  anonTelemetry: \"yes\"\n").unwrap();
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert!(!readiness.status().config_valid);
    std::fs::write(&file, "Butler:\n  anonTelemetry: false\n").unwrap();
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert!(readiness.status().config_valid);
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the schedule stops at once")
        .expect("the schedule does not panic");
}
