use super::*;

use std::time::Duration;

const TEMPLATE: &str = include_str!("../../tests/fixtures/butler-production-template.yaml");

fn parse(text: &str) -> Result<(Value, ButlerKeys, Option<settings::AgentFile>), ConfigError> {
    parse_str(text, "test.yaml")
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("this input must be refused")
}

#[test]
fn butler_template_loads_and_unknown_keys_are_ignored() {
    let (tree, keys, agent) = parse(TEMPLATE).expect("Butler's own template must load");
    assert_eq!(keys.anon_telemetry, Some(true));
    // Checked strictly, though only reported as a feature.
    let root: FileRoot = serde_json::from_value(tree.clone()).expect("typed keys");
    let health = root.butler.and_then(|b| b.docker_health_check);
    let health = health.expect("the template has dockerHealthCheck");
    assert_eq!(health.enable, Some(false));
    assert_eq!(health.port, Some(settings::Port(12398)));
    assert_eq!(keys.qrs_host.as_deref(), Some("10.11.12.13"));
    assert!(agent.is_none());
    // The lenient tree keeps everything, e.g. for feature flags.
    assert_eq!(
        tree["Butler"]["influxDb"]["reloadTaskFailure"]["enable"],
        true
    );
}

#[test]
fn empty_file_means_defaults() {
    let (tree, keys, agent) = parse("").unwrap();
    assert!(tree.is_null());
    assert_eq!(keys, ButlerKeys::default());
    assert!(agent.is_none());
}

#[test]
fn wrong_type_at_anon_telemetry_names_file_line_key_and_expectation() {
    let e = err("Butler:\n  anonTelemetry: \"yes\"\n");
    assert_eq!(e.origin, Origin::File("test.yaml".into()));
    assert_eq!(e.location, Some((2, 18)));
    assert_eq!(e.key.as_deref(), Some("Butler.anonTelemetry"));
    let msg = e.to_string();
    assert!(msg.contains("true/false"), "{msg}");
    // YAML 1.1 spellings are strings to Butler's parser, so they are refused too.
    let e = err("Butler:\n  anonTelemetry: yes\n");
    assert_eq!(e.key.as_deref(), Some("Butler.anonTelemetry"));
}

#[test]
fn port_out_of_range_is_refused() {
    let e = err("Butler:\n  dockerHealthCheck:\n    enable: true\n    port: 70000\n");
    assert_eq!(e.key.as_deref(), Some("Butler.dockerHealthCheck.port"));
    assert_eq!(e.location.map(|l| l.0), Some(4));
    assert!(e.message.contains("1 to 65535"), "{}", e.message);
    let e = err("Butler:\n  dockerHealthCheck:\n    port: http\n");
    assert_eq!(e.key.as_deref(), Some("Butler.dockerHealthCheck.port"));
    let e = err("Butler:\n  dockerHealthCheck:\n    enable: 1\n");
    assert_eq!(e.key.as_deref(), Some("Butler.dockerHealthCheck.enable"));
}

#[test]
fn qrs_host_must_be_a_string() {
    let e = err("Butler:\n  configQRS:\n    host: [a, b]\n");
    assert_eq!(e.key.as_deref(), Some("Butler.configQRS.host"));
}

#[test]
fn agent_section_is_strict_and_typed() {
    let e = err("Butler:\n  butlerAgent:\n    intervall: 1h\n");
    assert_eq!(e.key.as_deref(), Some("Butler.butlerAgent.intervall"));
    assert!(e.message.contains("unknown field"), "{}", e.message);
    let e = err("Butler:\n  butlerAgent:\n    healthPort: 0\n");
    assert_eq!(e.key.as_deref(), Some("Butler.butlerAgent.healthPort"));
    let e = err("Butler:\n  butlerAgent:\n    interval: soon\n");
    assert_eq!(e.key.as_deref(), Some("Butler.butlerAgent.interval"));
    assert!(e.message.contains("12h"), "{}", e.message);
    let e = err("Butler:\n  butlerAgent:\n    healthHost: not-an-ip\n");
    assert_eq!(e.key.as_deref(), Some("Butler.butlerAgent.healthHost"));
}

#[test]
fn agent_section_values_are_read() {
    let text = "Butler:\n  butlerAgent:\n    interval: 2h\n    requestTimeout: 10\n    \
                healthPort: 12399\n    posthogHost: https://eu.posthog.com/\n    \
                geoipDisable: false\n    stateDir: /data\n";
    let (_, _, agent) = parse(text).unwrap();
    let s = AgentSettings::resolve(agent.as_ref(), &MapEnv::default()).unwrap();
    assert_eq!(s.interval, Duration::from_secs(7200));
    assert_eq!(s.request_timeout, Duration::from_secs(10));
    assert_eq!(s.health_port, 12399);
    assert_eq!(s.posthog_host, "https://eu.i.posthog.com");
    assert!(!s.geoip_disable);
    assert_eq!(s.state_dir.as_deref(), Some(Path::new("/data")));
}

#[test]
fn environment_overrides_the_file() {
    let text = "Butler:\n  butlerAgent:\n    healthPort: 12399\n    interval: 2h\n";
    let (_, _, agent) = parse(text).unwrap();
    let env = MapEnv::new([
        ("BUTLER_HEALTH_PORT", "13000"),
        ("BUTLER_TELEMETRY_INTERVAL", "90m"),
        ("BUTLER_POSTHOG_HOST", "http://127.0.0.1:18080"),
        ("BUTLER_STATE_DIR", "/state"),
    ]);
    let s = AgentSettings::resolve(agent.as_ref(), &env).unwrap();
    assert_eq!(s.health_port, 13000);
    assert_eq!(s.interval, Duration::from_secs(90 * 60));
    assert_eq!(s.posthog_host, "http://127.0.0.1:18080");
    assert_eq!(s.state_dir.as_deref(), Some(Path::new("/state")));
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (var, value) in [
        ("BUTLER_HEALTH_PORT", "70000"),
        ("BUTLER_TELEMETRY_INTERVAL", "often"),
        ("BUTLER_GEOIP_DISABLE", "perhaps"),
        ("BUTLER_HEALTH_HOST", "localhost:1"),
    ] {
        let env = MapEnv::new([(var, value)]);
        let e = AgentSettings::resolve(None, &env).expect_err(var);
        assert!(e.to_string().contains(var), "{e}");
    }
}

#[test]
fn interval_below_one_minute_is_refused() {
    let env = MapEnv::new([("BUTLER_TELEMETRY_INTERVAL", "59s")]);
    let e = AgentSettings::resolve(None, &env).unwrap_err();
    assert!(e.to_string().contains("minimum of 1 minute"), "{e}");
    let env = MapEnv::new([("BUTLER_TELEMETRY_INTERVAL", "1m")]);
    assert!(AgentSettings::resolve(None, &env).is_ok());
}

#[test]
fn capture_host_is_checked_and_rewritten() {
    use settings::normalize_host;
    assert_eq!(
        normalize_host("https://eu.posthog.com").unwrap(),
        "https://eu.i.posthog.com"
    );
    assert_eq!(
        normalize_host("https://app.posthog.com/").unwrap(),
        "https://us.i.posthog.com"
    );
    assert_eq!(
        normalize_host("http://127.0.0.1:18080/").unwrap(),
        "http://127.0.0.1:18080"
    );
    assert!(normalize_host("eu.posthog.com").is_err());
    assert!(normalize_host("https://").is_err());
}

#[test]
fn invalid_yaml_gives_a_location() {
    let e = err("Butler:\n  a: [1, 2\n");
    assert!(e.location.is_some(), "{e}");
    assert!(e.key.is_none(), "a syntax error names no key: {e}");
}

#[test]
fn a_file_without_butler_root_is_refused() {
    let e = err("Qlik:\n  anonTelemetry: true\n");
    assert!(e.message.contains("Butler"), "{e}");
}

#[test]
fn alias_bomb_is_refused_quickly() {
    let mut text =
        String::from("Butler:\n  x: 1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let mut prev = 'a';
    for n in 'b'..='k' {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{n}: &{n} [{refs}]\n"));
        prev = n;
    }
    let e = err(&text);
    assert!(e.message.contains("limits"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("Butler:\n  x: {}{}\n", "[".repeat(500), "]".repeat(500));
    let e = err(&text);
    assert!(e.location.is_some(), "{e}");
}

#[test]
fn source_precedence_flag_env_nodeenv_defaults() {
    let dir = std::env::temp_dir().join(format!("butler-agent-cfg-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let flag = Path::new("/x/flag.yaml");
    let env = MapEnv::new([("BUTLER_CONFIG", "/x/env.yaml")]);
    assert_eq!(
        choose_source(Some(flag), &env, &dir),
        ConfigSource::Flag(flag.into())
    );
    assert_eq!(
        choose_source(None, &env, &dir),
        ConfigSource::EnvVar("/x/env.yaml".into())
    );
    // No production.yaml yet: defaults.
    assert_eq!(
        choose_source(None, &MapEnv::default(), &dir),
        ConfigSource::Defaults
    );
    std::fs::write(dir.join("config/production.yaml"), "Butler: {}\n").unwrap();
    std::fs::write(dir.join("config/staging.yaml"), "Butler: {}\n").unwrap();
    assert_eq!(
        choose_source(None, &MapEnv::default(), &dir),
        ConfigSource::NodeEnv("config/production.yaml".into())
    );
    assert_eq!(
        choose_source(None, &MapEnv::new([("NODE_ENV", "staging")]), &dir),
        ConfigSource::NodeEnv("config/staging.yaml".into())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_refuses_missing_directory_huge_and_non_utf8_files() {
    let dir = std::env::temp_dir().join(format!("butler-agent-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = MapEnv::default();

    let e = load(ConfigSource::Flag(dir.join("missing.yaml")), &env).unwrap_err();
    assert!(e.to_string().contains("missing.yaml"), "{e}");
    assert!(e.to_string().contains("cannot open"), "{e}");

    let e = load(ConfigSource::Flag(dir.clone()), &env).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");

    let huge = dir.join("huge.yaml");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(MAX_CONFIG_BYTES + 10).unwrap();
    let e = load(ConfigSource::Flag(huge), &env).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");

    let bin = dir.join("bin.yaml");
    std::fs::write(&bin, b"Butler:\n  x: \xff\xfe\n").unwrap();
    let e = load(ConfigSource::Flag(bin), &env).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn settings_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("butler-agent-set-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("short.yaml");
    std::fs::write(&path, "Butler:\n  butlerAgent:\n    interval: 5s\n").unwrap();
    let e = load(ConfigSource::Flag(path.clone()), &MapEnv::default()).unwrap_err();
    assert_eq!(e.origin, Origin::File(path.display().to_string().into()));
    assert_eq!(
        e.key.as_deref(),
        Some("Butler.butlerAgent.interval (BUTLER_TELEMETRY_INTERVAL)")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
