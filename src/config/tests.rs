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
    assert_eq!(keys.docker_health_check.enable, Some(false));
    assert_eq!(keys.docker_health_check.port, Some(settings::Port(12398)));
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

/// The URL parser is built without Unicode host-name tables (Cargo.toml: idna_adapter), so a
/// non-ASCII host would only fail at the first send; the config check refuses it at start-up,
/// naming the fix, and the ASCII (Punycode) form works.
#[test]
fn a_non_ascii_capture_host_is_refused_with_its_ascii_form_as_the_fix() {
    use settings::normalize_host;
    let e = normalize_host("https://bücher.example").expect_err("not ASCII");
    assert!(e.0.contains("Punycode") && e.0.contains("xn--"), "{e}");
    assert!(reqwest::Url::parse("https://bücher.example/i/v0/e/").is_err());
    let ascii = normalize_host("https://xn--bcher-kva.example/").expect("ASCII form");
    assert!(reqwest::Url::parse(&format!("{ascii}/i/v0/e/")).is_ok());
    // Only the host must be ASCII.
    assert!(normalize_host("https://h.example/ä").is_ok());
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

#[test]
fn values_butler_loads_at_ignored_keys_load() {
    let extra = [
        "frequency: .inf",
        "jitter: -.Inf",
        "ratio: .nan",
        "huge: 123456789012345678901234567890",
        "tooBig: 1e400",
        "negative: -123456789012345678901234567890",
        "tagged: !Ref some-ref",
        "map: !custom {a: 1}",
        "blob: !!binary aGVsbG8=",
        "when: 2001-12-14t21:59:43.10-05:00",
        "set: !!set {x, y}",
    ]
    .map(|l| format!("        {l}\n"))
    .concat();
    let extra = format!("\n    heartbeat2:\n{extra}");
    // Inserted inside the `Butler:` section of Butler's own template.
    let text = TEMPLATE.replacen("Butler:\n", &format!("Butler:{extra}"), 1);
    assert_ne!(text, TEMPLATE);
    let (tree, keys, _) = parse(&text).expect("a file Butler loads must load");
    assert_eq!(keys.anon_telemetry, Some(true));
    let h = &tree["Butler"]["heartbeat2"];
    assert_eq!(h["frequency"], ".inf");
    assert_eq!(h["ratio"], ".nan");
    assert_eq!(h["tagged"], "some-ref");
    assert!(h["huge"].is_number());
    // Butler's own ignored keys hold such values too.
    let text = TEMPLATE.replace("frequency: every 30 seconds", "frequency: .inf");
    parse(&text).expect(".inf at Butler.heartbeat.frequency");
    // Keys that are not strings, as YAML allows and Butler's parser reads.
    let (tree, keys, _) =
        parse("Butler:\n  anonTelemetry: false\n  ? [a, b]\n  : 1\n  1: x\n  true: y\n  ~: z\n")
            .expect("complex and scalar keys load");
    assert_eq!(keys.anon_telemetry, Some(false));
    assert_eq!(tree["Butler"]["[\"a\",\"b\"]"], 1);
    assert_eq!(tree["Butler"]["1"], "x");
    assert_eq!(tree["Butler"]["true"], "y");
    // And an error in such a file is still located.
    let e = err("Butler:\n  ? [a, b]\n  : 1\n  butlerAgent:\n    posthogHost: 42\n");
    assert_eq!(e.location, Some((5, 18)), "{e}");
}

/// Every key the agent uses, given each wrong type: the error names the line and column of
/// the value, the key path and what was expected.
#[test]
fn every_steering_key_with_every_wrong_type_is_located() {
    let keys: &[(&str, &[&str])] = &[
        ("anonTelemetry", &["Butler"]),
        ("enable", &["Butler", "dockerHealthCheck"]),
        ("port", &["Butler", "dockerHealthCheck"]),
        ("host", &["Butler", "configQRS"]),
        ("posthogHost", &["Butler", "butlerAgent"]),
        ("posthogKey", &["Butler", "butlerAgent"]),
        ("interval", &["Butler", "butlerAgent"]),
        ("requestTimeout", &["Butler", "butlerAgent"]),
        ("maxRetries", &["Butler", "butlerAgent"]),
        ("startDelay", &["Butler", "butlerAgent"]),
        ("geoipDisable", &["Butler", "butlerAgent"]),
        ("caFile", &["Butler", "butlerAgent"]),
        ("healthEnable", &["Butler", "butlerAgent"]),
        ("healthHost", &["Butler", "butlerAgent"]),
        ("healthPort", &["Butler", "butlerAgent"]),
        ("stateDir", &["Butler", "butlerAgent"]),
        ("auditLog", &["Butler", "butlerAgent"]),
        ("auditLogMaxBytes", &["Butler", "butlerAgent"]),
        ("shutdownGrace", &["Butler", "butlerAgent"]),
    ];
    let is_bool =
        |k: &str| ["anonTelemetry", "enable", "geoipDisable", "healthEnable"].contains(&k);
    let is_text = |k: &str| {
        [
            "host",
            "posthogHost",
            "posthogKey",
            "caFile",
            "stateDir",
            "auditLog",
            "healthHost",
        ]
        .contains(&k)
    };
    let is_number = |k: &str| ["port", "maxRetries", "healthPort", "auditLogMaxBytes"].contains(&k);
    for (key, parents) in keys {
        let mut wrong: Vec<&str> = vec!["[1, 2]", "{a: 1}", "!custom {a: 1}"];
        if !is_bool(key) {
            wrong.push("true");
        }
        if is_bool(key) {
            wrong.extend(["42", "\"yes\"", ".inf", "!!int 7"]);
        }
        if is_text(key) {
            wrong.extend(["42", "false", "!!int 7", "4.5", ".inf", "-.Inf", ".NaN"]);
        }
        if is_number(key) {
            wrong.extend(["\"ten\"", "-3", "123456789012345678901234567890", ".nan"]);
        }
        for value in wrong {
            let mut text = String::new();
            for (depth, p) in parents.iter().enumerate() {
                text.push_str(&format!("{}{p}:\n", "  ".repeat(depth)));
            }
            let indent = "  ".repeat(parents.len());
            text.push_str(&format!("{indent}{key}: {value}\n"));
            let path = format!("{}.{key}", parents.join("."));
            let e = match parse(&text) {
                Err(e) => e,
                Ok((_, _, agent)) => AgentSettings::resolve(agent.as_ref(), &MapEnv::default())
                    .map(|_| ())
                    .expect_err(&format!("{path}: {value} must be refused")),
            };
            let line = parents.len() as u64 + 1;
            let col = indent.len() as u64 + key.len() as u64 + 3;
            // The value's place (after its tag, for a tagged collection).
            let (l, c) = e.location.unwrap_or_else(|| panic!("{path}: {value}: {e}"));
            assert_eq!(l, line, "{path}: {value}: {e}");
            assert!(
                c == col || (value.starts_with('!') && c > col),
                "{path}: {value}: {e}"
            );
            assert_eq!(
                e.key.as_deref(),
                Some(path.as_str()),
                "{path}: {value}: {e}"
            );
            assert!(
                ["expected", "invalid", "into"]
                    .iter()
                    .any(|w| e.message.contains(w)),
                "{path}: {value}: {e}"
            );
        }
    }
}

/// A wrong value is named by its key and place, never repeated: a password pasted under the
/// wrong key must not show up in the error, and so in a log.
#[test]
fn a_wrong_value_is_never_repeated_in_the_error() {
    let secret = "s3cret-Passw0rd";
    let keys: &[(&str, &[&str])] = &[
        ("anonTelemetry", &["Butler"]),
        ("port", &["Butler", "dockerHealthCheck"]),
        ("interval", &["Butler", "butlerAgent"]),
        ("maxRetries", &["Butler", "butlerAgent"]),
        ("healthPort", &["Butler", "butlerAgent"]),
        ("shutdownGrace", &["Butler", "butlerAgent"]),
    ];
    for (key, parents) in keys {
        for value in [
            format!("\"{secret}\""),
            secret.to_string(),
            format!("'{secret} \\\" and `{secret}`'"),
            format!("\"12 {secret}\""),
        ] {
            let mut text = String::new();
            for (depth, p) in parents.iter().enumerate() {
                text.push_str(&format!("{}{p}:\n", "  ".repeat(depth)));
            }
            text.push_str(&format!("{}{key}: {value}\n", "  ".repeat(parents.len())));
            let e = match parse(&text) {
                Err(e) => e,
                Ok((_, _, agent)) => AgentSettings::resolve(agent.as_ref(), &MapEnv::default())
                    .map(|_| ())
                    .expect_err(&format!("{key}: {value} must be refused")),
            };
            let shown = e.to_string();
            assert!(shown.contains(key), "{shown}");
            assert!(!shown.contains("s3cret"), "{key}: {value}: {shown}");
        }
    }
    assert_eq!(
        without_text_values(r#"invalid type: string "a\"b", expected x"#),
        "invalid type: a string, expected x"
    );
    assert_eq!(
        without_text_values("unknown variant `zzz`, expected one of `a`, `b`"),
        "unknown variant, expected one of `a`, `b`"
    );
    assert_eq!(without_text_values("string \"unterminated"), "a string");
    assert_eq!(
        without_text_values("invalid value: integer `70000`"),
        "invalid value: integer `70000`"
    );
}

/// Range, format and cross-field errors from the file give the line of the value.
#[test]
fn range_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("posthogHost: eu.posthog.com", "https://"),
        (
            "posthogHost: https://user:pw@eu.i.posthog.com",
            "credentials",
        ),
        ("posthogKey: \"  \"", "empty"),
        ("posthogKey: phx_personal", "personal"),
        ("interval: 30s", "minimum"),
        ("interval: 18446744073709551615", "365 days"),
        ("startDelay: 400d", "365 days"),
        ("shutdownGrace: 18446744073709551615", "365 days"),
        ("requestTimeout: 0", "above zero"),
        ("requestTimeout: 9999999999", "365 days"),
        ("maxRetries: 101", "maximum of 100"),
        ("maxRetries: 4294967295", "maximum of 100"),
    ];
    for (line, expect) in cases {
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!("Butler:\n  x: 1\n  butlerAgent:\n    {line}\n"),
        )
        .unwrap();
        let e = load(ConfigSource::Flag(path.clone()), &MapEnv::default()).expect_err(line);
        assert_eq!(e.location.map(|l| l.0), Some(4), "{line}: {e}");
        assert!(e.message.contains(expect), "{line}: {e}");
        assert!(e.to_string().contains("c.yaml"), "{e}");
        // Secrets are never repeated.
        assert!(!e.to_string().contains("user:pw"), "{e}");
        assert!(!e.to_string().contains("phx_personal"), "{e}");
    }
}

#[test]
fn overflowing_durations_from_the_environment_name_the_variable() {
    for var in [
        "BUTLER_TELEMETRY_INTERVAL",
        "BUTLER_TELEMETRY_TIMEOUT",
        "BUTLER_TELEMETRY_START_DELAY",
        "BUTLER_SHUTDOWN_GRACE",
    ] {
        for value in ["18446744073709551615", "99999999999999999999s", "366d"] {
            let env = MapEnv::new([(var, value)]);
            let e = AgentSettings::resolve(None, &env).expect_err(var);
            assert_eq!(e.origin, Origin::EnvVar(var), "{var}={value}: {e}");
        }
    }
    // The longest accepted value is fine.
    let env = MapEnv::new([("BUTLER_TELEMETRY_INTERVAL", "365d")]);
    assert!(AgentSettings::resolve(None, &env).is_ok());
}

#[test]
fn posthog_key_rules() {
    use settings::check_key;
    assert_eq!(check_key("  phc_abc \n").unwrap(), "phc_abc");
    assert_eq!(check_key(DEFAULT_POSTHOG_KEY).unwrap(), DEFAULT_POSTHOG_KEY);
    assert!(check_key(&"a".repeat(64)).is_ok());
    for (bad, why) in [
        ("", "empty"),
        (" \t ", "empty"),
        (&"a".repeat(65) as &str, "at most 64"),
        ("phc_ключ", "non-ASCII"),
        ("phc_a\0b", "NUL"),
        ("phx_personalkey", "personal"),
    ] {
        let m = check_key(bad).expect_err(bad).to_string();
        assert!(m.contains(why), "{bad:?}: {m}");
    }
    // From the environment, the variable is named; the trimmed key is what is used.
    let env = MapEnv::new([("BUTLER_POSTHOG_KEY", "phx_x")]);
    let e = AgentSettings::resolve(None, &env).unwrap_err();
    assert!(e.to_string().contains("BUTLER_POSTHOG_KEY"), "{e}");
    let env = MapEnv::new([("BUTLER_POSTHOG_KEY", " phc_padded ")]);
    assert_eq!(
        AgentSettings::resolve(None, &env).unwrap().posthog_key,
        "phc_padded"
    );
}

#[test]
fn capture_host_credentials_are_refused() {
    use settings::normalize_host;
    for host in [
        "https://user:pass@eu.i.posthog.com",
        "https://user@eu.i.posthog.com/",
        "http://a:b@127.0.0.1:18080",
    ] {
        let m = normalize_host(host).expect_err(host).to_string();
        assert!(m.contains("credentials") && !m.contains("user:"), "{m}");
    }
    // An `@` after the host is not a credential.
    assert!(normalize_host("https://eu.i.posthog.com/x@y").is_ok());
}

#[test]
fn a_quoted_inf_is_a_string() {
    let (_, _, agent) = parse("Butler:\n  butlerAgent:\n    stateDir: \".inf\"\n").unwrap();
    let s = AgentSettings::resolve(agent.as_ref(), &MapEnv::default()).unwrap();
    assert_eq!(s.state_dir.as_deref(), Some(Path::new(".inf")));
}

#[test]
fn an_empty_config_path_is_a_config_error() {
    let e = load(ConfigSource::Flag(PathBuf::new()), &MapEnv::default()).unwrap_err();
    assert!(e.to_string().contains("--config"), "{e}");
    assert!(e.message.contains("empty"), "{e}");
}

/// As the test above, for every setting and `BUTLER_VERSION`, from the environment and from the
/// file, with host names, addresses and credentials as the wrong values: none is repeated. (A
/// capture host with credentials and no scheme was quoted whole until 2026-12-03, as was any
/// wrong number, address or boolean from the environment.) The message names the setting and,
/// for the file, the line and column.
#[test]
fn no_setting_repeats_a_wrong_value_from_the_environment_or_the_file() {
    const SECRETS: [&str; 4] = ["hunter2", "db01", "corp-secret", "10.11.12.13"];
    let values = [
        "ftp://admin:hunter2@db01.corp-secret.example",
        "admin:hunter2@db01.corp-secret.example",
        "https://db01.corp-secrët.example",
        "https:// db01 corp-secret",
        "db01.corp-secret.example",
        "10.11.12.13:hunter2",
        "hunter2 corp-secret",
        "-1 db01",
    ];
    let vars = table::SETTINGS
        .iter()
        .map(|s| (s.var, s.path.rsplit('.').next().unwrap_or(s.path)))
        .chain([("BUTLER_VERSION", "")]);
    let mut refused = 0;
    for (var, key) in vars {
        for value in values {
            let env = MapEnv::new([(var, value)]);
            if let Err(e) = AgentSettings::resolve(None, &env) {
                refused += 1;
                let text = e.to_string();
                assert!(text.contains(var), "{var}: {text}");
                for secret in SECRETS {
                    assert!(!text.contains(secret), "{var}={value:?} repeated: {text}");
                }
            }
            if key.is_empty() {
                continue;
            }
            let file = format!("Butler:\n  butlerAgent:\n    {key}: {value:?}\n");
            let resolved = parse(&file)
                .and_then(|(_, _, agent)| AgentSettings::resolve(agent.as_ref(), &MapEnv::new([])));
            if let Err(e) = resolved {
                refused += 1;
                let text = e.to_string();
                for secret in SECRETS {
                    assert!(!text.contains(secret), "{key}: {value:?} repeated: {text}");
                }
            }
        }
    }
    // Most settings refuse most of these (paths and the project key take any text).
    assert!(
        refused > 100,
        "only {refused} refusals: the test no longer reaches the checks"
    );
}
