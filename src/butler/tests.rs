use super::*;
use crate::config::butler::*;

use std::time::Duration;

use butler_standin::{Fault, Options, Standin};

use crate::config::{self, ConfigSource, MapEnv, settings};
use crate::telemetry::retry::RetryPolicy;

/// The Butler keys and agent settings of a config text, with `env`.
fn load(yaml: &str, env: &MapEnv) -> Result<config::LoadedConfig, config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("production.yaml");
    std::fs::write(&path, yaml).unwrap();
    config::load(ConfigSource::Flag(path), env)
}

fn rest(host: &str, tls: bool, ping: bool) -> String {
    format!(
        "Butler:\n  restServerConfig:\n    enable: true\n    serverHost: {host}\n    \
         serverPort: 8181\n    tls:\n      enable: {tls}\n  restServerEndpointsEnable:\n    \
         butlerping: {ping}\n"
    )
}

#[test]
fn the_version_rule() {
    for ok in ["16.0.4", "6.0.0-rc.1+build.5", "v16", "1", &"9".repeat(64)] {
        assert!(is_version(ok), "{ok}");
    }
    for bad in [
        "",
        &"9".repeat(65),
        "16.0.4 ",
        "16_0",
        "<b>16</b>",
        "16.0.4\n",
        "butler:8080",
        "16.0.4/x",
        "ünicode",
    ] {
        assert!(!is_version(bad), "{bad:?}");
    }
    assert_eq!(check_version(" 16.0.4 ").unwrap(), "16.0.4");
    assert!(
        check_version("latest build")
            .unwrap_err()
            .to_string()
            .contains("not a version")
    );
}

#[test]
fn api_urls_are_checked() {
    let ph = settings::DEFAULT_POSTHOG_HOST;
    assert_eq!(
        check_api_url("http://butler:8080/", ph).unwrap(),
        "http://butler:8080"
    );
    assert_eq!(
        check_api_url(" https://10.0.0.5:8443/butler ", ph).unwrap(),
        "https://10.0.0.5:8443/butler"
    );
    let e = check_api_url("ftp://butler", ph).unwrap_err().to_string();
    assert!(e.contains("http://"), "{e}");
    let e = check_api_url("butler:8080", ph).unwrap_err().to_string();
    assert!(e.contains("http://"), "{e}");
    let e = check_api_url("http://admin:s3cret@butler:8080", ph)
        .unwrap_err()
        .to_string();
    assert!(e.contains("credentials") && !e.contains("s3cret"), "{e}");
    let e = check_api_url("http://butler:8080/?x=1", ph)
        .unwrap_err()
        .to_string();
    assert!(e.contains("query"), "{e}");
    for posthog in [
        "https://eu.i.posthog.com",
        "https://EU.posthog.com/",
        "https://posthog.com",
    ] {
        let e = check_api_url(posthog, ph).unwrap_err().to_string();
        assert!(e.contains("PostHog"), "{posthog}: {e}");
    }
    // A self-hosted PostHog (the configured destination) too.
    let e = check_api_url("http://ph.example.org:8000", "http://ph.example.org:8000")
        .unwrap_err()
        .to_string();
    assert!(e.contains("PostHog"), "{e}");
    // The same host on another port is not the destination.
    assert!(check_api_url("http://ph.example.org:8080", "http://ph.example.org:8000").is_ok());
}

#[test]
fn the_url_is_derived_from_butlers_config_when_both_switches_are_on() {
    let env = MapEnv::default();
    let cfg = load(&rest("0.0.0.0", false, true), &env).unwrap();
    let derived = api(&cfg.butler, &cfg.agent).unwrap();
    assert_eq!(derived.url, "http://127.0.0.1:8181");
    assert_eq!(derived.from, ApiFrom::Derived);
    let cfg = load(&rest("\"::\"", true, true), &env).unwrap();
    assert_eq!(
        api_of(&cfg).unwrap(),
        "https://127.0.0.1:8181",
        "tls.enable gives https"
    );
    let cfg = load(&rest("butler.example.internal", false, true), &env).unwrap();
    assert_eq!(api_of(&cfg).unwrap(), "http://butler.example.internal:8181");
    let cfg = load(&rest("\"::1\"", false, true), &env).unwrap();
    assert_eq!(api_of(&cfg).unwrap(), "http://[::1]:8181");
    assert_eq!(derive_url(false, None, None), "http://127.0.0.1:8080");

    // Either switch off: no URL, and the reason names the switch.
    let cfg = load(&rest("0.0.0.0", false, false), &env).unwrap();
    assert_eq!(
        api_of(&cfg).unwrap_err(),
        "Butler's /v4/butlerping is off in the config: \
         Butler.restServerEndpointsEnable.butlerping is false"
    );
    let cfg = load(
        "Butler:\n  restServerConfig:\n    enable: false\n  restServerEndpointsEnable:\n    \
         butlerping: true\n",
        &env,
    )
    .unwrap();
    assert_eq!(
        api_of(&cfg).unwrap_err(),
        "Butler's REST API is off in the config: Butler.restServerConfig.enable is false"
    );
    let cfg = config::LoadedConfig::defaults(&env).unwrap();
    assert!(api_of(&cfg).unwrap_err().contains("is not set"));

    // The setting wins over the config, from the environment or the file.
    let env = MapEnv::new([("BUTLER_API_URL", "http://butler:8080")]);
    let cfg = load(&rest("0.0.0.0", false, false), &env).unwrap();
    let a = api(&cfg.butler, &cfg.agent).unwrap();
    assert_eq!(
        (a.url.as_str(), a.from),
        ("http://butler:8080", ApiFrom::Setting)
    );
    let cfg = load(
        "Butler:\n  butlerAgent:\n    butlerApiUrl: http://butler:9090/\n",
        &MapEnv::default(),
    )
    .unwrap();
    assert_eq!(api_of(&cfg).unwrap(), "http://butler:9090");
}

fn api_of(cfg: &config::LoadedConfig) -> Result<String, String> {
    api(&cfg.butler, &cfg.agent)
        .map(|a| a.url)
        .map_err(|e| e.to_string())
}

#[test]
fn bad_settings_are_configuration_errors_naming_the_setting() {
    let e = load(
        "Butler: {}\n",
        &MapEnv::new([("BUTLER_VERSION", "16.0 beta")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("BUTLER_VERSION"), "{e}");
    let e = load(
        "Butler: {}\n",
        &MapEnv::new([("BUTLER_API_URL", "https://eu.i.posthog.com")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("BUTLER_API_URL"), "{e}");
    // From the file: the file, the line and the key.
    let e = load(
        "Butler:\n  butlerAgent:\n    butlerApiUrl: \"http://u:p@butler:8080\"\n",
        &MapEnv::default(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("line 3") && text.contains("Butler.butlerAgent.butlerApiUrl"),
        "{text}"
    );
    assert!(!text.contains("u:p@"), "{text}");
}

#[test]
fn require_butler_needs_a_way_to_reach_butler() {
    let env = MapEnv::new([("BUTLER_REQUIRE_BUTLER", "1")]);
    let e = config::LoadedConfig::defaults(&env).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("BUTLER_REQUIRE_BUTLER")
            && text.contains("Butler.dockerHealthCheck.enable")
            && text.contains("Butler.restServerConfig.enable"),
        "{text}"
    );
    // From the file: located at the key.
    let e = load(
        "Butler:\n  butlerAgent:\n    requireButler: true\n",
        &MapEnv::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("line 3"), "{e}");
    // The health port, or an API URL, is a way.
    let health = "Butler:\n  dockerHealthCheck:\n    enable: true\n    port: 12398\n  \
                  butlerAgent:\n    requireButler: true\n    healthPort: 12399\n";
    let cfg = load(health, &MapEnv::default()).unwrap();
    assert_eq!(
        readiness_target(&cfg.butler, &cfg.agent),
        Some(Target::Health(12398))
    );
    let cfg = load(
        "Butler: {}\n",
        &env.clone_with("BUTLER_API_URL", "http://butler:8080"),
    )
    .unwrap();
    assert!(matches!(
        readiness_target(&cfg.butler, &cfg.agent),
        Some(Target::Ping(_))
    ));
    // Butler's health port being the agent's own: the agent would ask itself.
    let e = load(
        "Butler:\n  dockerHealthCheck:\n    enable: true\n  butlerAgent:\n    requireButler: true\n",
        &MapEnv::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("checking itself"), "{e}");
}

trait With {
    fn clone_with(&self, k: &str, v: &str) -> MapEnv;
}
impl With for MapEnv {
    fn clone_with(&self, k: &str, v: &str) -> MapEnv {
        let mut m = self.clone();
        m.0.insert(k.into(), v.into());
        m
    }
}

#[test]
fn the_starting_wait_is_the_retry_window_and_bounded() {
    let starting_wait = |p: &RetryPolicy| starting_wait(p.base_delay, p.max_delay, p.max_retries);
    assert_eq!(starting_wait(&RetryPolicy::new(0)), Duration::ZERO);
    assert_eq!(
        starting_wait(&RetryPolicy::new(5)),
        Duration::from_secs(2 + 4 + 8 + 16 + 32)
    );
    assert_eq!(
        starting_wait(&RetryPolicy::new(u32::MAX)),
        MAX_STARTING_WAIT
    );
}

#[test]
fn ping_answers_are_read_strictly() {
    use probe::{PingError, version_in};
    assert_eq!(
        version_in(br#"{"response":"Butler reporting for duty","butlerVersion":"16.0.4"}"#),
        Ok("16.0.4".into())
    );
    assert_eq!(
        version_in(br#"{"response":"Butler reporting for duty"}"#),
        Err(PingError::NoVersion)
    );
    assert_eq!(version_in(br#"{"status":"ok"}"#), Err(PingError::NotButler));
    assert_eq!(version_in(b"<html></html>"), Err(PingError::NotJson));
    for bad in [r#""butler-prod:8080""#, "16", "null", r#""""#] {
        let body = format!(r#"{{"response":"Butler reporting for duty","butlerVersion":{bad}}}"#);
        assert_eq!(
            version_in(body.as_bytes()),
            Err(PingError::BadVersion),
            "{bad}"
        );
    }
}

/// A stand-in on loopback, no control port.
fn standin(opts: Options) -> Standin {
    Standin::start(Options {
        api: Some("127.0.0.1:0".parse().unwrap()),
        control: None,
        ..opts
    })
    .expect("the stand-in starts")
}

fn settings_for(url: &str) -> AgentSettings {
    AgentSettings {
        butler_api_url: Some(url.into()),
        ..AgentSettings::default()
    }
}

fn lookup(url: &str, wait: Duration) -> ServiceVersion {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        service_version(&ButlerKeys::default(), &settings_for(url), wait, never)
            .await
            .expect("no stop was requested")
    })
}

#[test]
fn the_version_comes_from_butler_and_every_bad_answer_is_unknown_with_a_reason() {
    let s = standin(Options {
        version: Some("15.2.1".into()),
        ..Options::default()
    });
    let url = s.api_url().unwrap();
    let v = lookup(&url, Duration::ZERO);
    assert_eq!(v.value(), "15.2.1");
    assert_eq!(
        v.describe(true),
        format!("15.2.1 (Butler's /v4/butlerping at {url})")
    );
    // Logs name the setting, never the URL.
    assert!(!v.describe(false).contains(&url), "{}", v.describe(false));

    /// A name, how to make the stand-in answer badly, and words the reason must have.
    type Case = (&'static str, Box<dyn Fn(&Standin)>, &'static str);
    let cases: [Case; 8] = [
        (
            "html",
            Box::new(|s| s.set_fault(Fault::Html)),
            "not Butler's JSON",
        ),
        (
            "error",
            Box::new(|s| s.set_fault(Fault::Error)),
            "answered HTTP 500",
        ),
        (
            "huge",
            Box::new(|s| s.set_fault(Fault::Huge)),
            "more than 64 KiB",
        ),
        ("slow", Box::new(|s| s.set_fault(Fault::Slow)), "within 2 s"),
        (
            "redirect",
            Box::new(|s| s.set_fault(Fault::Redirect)),
            "redirect",
        ),
        (
            "off",
            Box::new(|s| s.set_ping(false)),
            "answered 404: enable",
        ),
        ("butler 5", Box::new(|s| s.set_version(None)), "before 6.0"),
        (
            "bad version",
            Box::new(|s| s.set_version(Some("<script>"))),
            "not a version",
        ),
    ];
    for (name, setup, words) in cases {
        let s = standin(Options::default());
        setup(&s);
        let started = std::time::Instant::now();
        let v = lookup(&s.api_url().unwrap(), Duration::ZERO);
        assert_eq!(v.value(), UNKNOWN, "{name}");
        let text = v.describe(true);
        assert!(text.contains(words), "{name}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_rate_limited_butler_is_unknown_without_waiting() {
    let s = standin(Options {
        rate_limit: 1,
        ..Options::default()
    });
    let url = s.api_url().unwrap();
    assert_eq!(lookup(&url, Duration::ZERO).value(), "16.0.4");
    let v = lookup(&url, Duration::ZERO);
    assert_eq!(v.value(), UNKNOWN);
    assert!(v.describe(true).contains("429"), "{}", v.describe(true));
}

#[test]
fn a_butler_still_starting_is_waited_for_within_the_window() {
    let s = standin(Options {
        startup_delay: Duration::from_millis(1500),
        ..Options::default()
    });
    let v = lookup(&s.api_url().unwrap(), Duration::from_secs(10));
    assert_eq!(v.value(), "16.0.4", "{}", v.describe(true));
    // Without a window, the same Butler is unknown.
    let s = standin(Options {
        startup_delay: Duration::from_secs(30),
        ..Options::default()
    });
    let v = lookup(&s.api_url().unwrap(), Duration::ZERO);
    assert_eq!(v.value(), UNKNOWN);
    assert!(
        v.describe(true).contains("did not answer"),
        "{}",
        v.describe(true)
    );
}

#[test]
fn butler_version_wins_and_asks_nothing() {
    let s = standin(Options::default());
    let settings = AgentSettings {
        butler_version: Some("14.1.0".into()),
        ..settings_for(&s.api_url().unwrap())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let v = rt.block_on(async {
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        service_version(&ButlerKeys::default(), &settings, Duration::ZERO, never)
            .await
            .unwrap()
    });
    assert_eq!(v.describe(true), "14.1.0 (BUTLER_VERSION)");
    assert_eq!(s.stats().api, 0);
}

#[test]
fn a_stop_ends_the_wait_at_once() {
    let s = standin(Options {
        startup_delay: Duration::from_secs(60),
        ..Options::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let v = rt.block_on(async {
        let stop = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(stop);
        service_version(
            &ButlerKeys::default(),
            &settings_for(&s.api_url().unwrap()),
            Duration::from_secs(60),
            stop,
        )
        .await
    });
    assert!(v.is_none());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn the_readiness_check_follows_butler_and_its_messages_name_no_url() {
    let s = standin(Options {
        health_port: Some(0),
        ..Options::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = probe::client(&AgentSettings::default()).unwrap();
    let url = s.api_url().unwrap();
    let ping = Target::Ping(Api {
        url: url.clone(),
        from: ApiFrom::Setting,
    });
    let health = Target::Health(s.health_addr().unwrap().port());
    assert_eq!(rt.block_on(ready::check_once(&client, &ping)), Ok(()));
    assert_eq!(rt.block_on(ready::check_once(&client, &health)), Ok(()));
    // A Butler before 6.0 is up, only its version is missing.
    s.set_version(None);
    assert_eq!(rt.block_on(ready::check_once(&client, &ping)), Ok(()));
    s.silence();
    std::thread::sleep(Duration::from_millis(200));
    for target in [&ping, &health] {
        let why = rt
            .block_on(ready::check_once(&client, target))
            .unwrap_err()
            .to_string();
        assert!(why.contains("did not answer"), "{why}");
        assert!(!why.contains(&url), "{why}");
    }
}
