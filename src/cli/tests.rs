//! The help screens, errors and exit codes are clap's, which this parser replaced: each text
//! below is what the clap interface printed for the same command line.

use super::*;

/// `telemetry --help`, and also what bare `telemetry` prints as a usage error (exit 2), as clap did.
const TELEMETRY_HELP: &str = r#"Inspect or send the telemetry event

Usage: butler-agent telemetry [OPTIONS] <COMMAND>

Commands:
  preview  Print the exact JSON body that would be sent. Sends nothing, opens no socket
  status   Print whether telemetry is on and which setting decided it
  send     Send one event now and print the outcome; exits non-zero on failure
  help     Print this message or the help of the given subcommand(s)

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#;

fn parse(args: &[&str]) -> Result<Cli, Exit> {
    Cli::try_parse_from(std::iter::once("/usr/local/bin/butler-agent").chain(args.iter().copied()))
}

fn exit(args: &[&str]) -> Exit {
    parse(args).expect_err("this command line does no work")
}

#[test]
fn help_screens_are_claps() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--help"],
            r#"Anonymous telemetry and health agent for Butler (Qlik Sense companion), Docker-first

Usage: butler-agent [OPTIONS] [COMMAND]

Commands:
  run        Run the agent: health endpoint and scheduled telemetry (the default)
  telemetry  Inspect or send the telemetry event
  host       Print what the agent detects about this host, and the rule that decided each fact
  id         Print the anonymous instance ID
  sink       Run a minimal PostHog-compatible capture endpoint that prints what it receives
  help       Print this message or the help of the given subcommand(s)

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
  -V, --version        Print version
"#,
        ),
        (
            &["run", "--help"],
            r#"Run the agent: health endpoint and scheduled telemetry (the default)

Usage: butler-agent run [OPTIONS]

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (&["telemetry", "--help"], TELEMETRY_HELP),
        (
            &["telemetry", "preview", "--help"],
            r#"Print the exact JSON body that would be sent. Sends nothing, opens no socket

Usage: butler-agent telemetry preview [OPTIONS]

Options:
      --compact        One line instead of pretty-printed JSON
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (
            &["telemetry", "status", "--help"],
            r#"Print whether telemetry is on and which setting decided it

Usage: butler-agent telemetry status [OPTIONS]

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --json           Print one JSON object
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (
            &["telemetry", "send", "--help"],
            r#"Send one event now and print the outcome; exits non-zero on failure

Usage: butler-agent telemetry send [OPTIONS]

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (
            &["host", "--help"],
            r#"Print what the agent detects about this host, and the rule that decided each fact

Usage: butler-agent host [OPTIONS]

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --json           Print one JSON object
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (
            &["id", "--help"],
            r#"Print the anonymous instance ID

Usage: butler-agent id [OPTIONS]

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --explain        Print which derivation and which inputs were used (names and sources, never values)
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (
            &["sink", "--help"],
            r#"Run a minimal PostHog-compatible capture endpoint that prints what it receives

Usage: butler-agent sink [OPTIONS] --listen <ADDR>

Options:
      --config <FILE>  Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml when it exists, else built-in defaults]. An empty path is a configuration error (exit 64), reported like a bad file
      --listen <ADDR>  Address to listen on, e.g. 127.0.0.1:18080 or 0.0.0.0:8080
      --out <FILE>     Also append each accepted event, one JSON line each, to this file
      --root <DIR>     Read host facts (/etc, /proc, /sys, ...) below this directory instead of / [default: /]
  -h, --help           Print help
"#,
        ),
        (
            &["help", "help"],
            r#"Print this message or the help of the given subcommand(s)

Usage: butler-agent help [COMMAND]...

Arguments:
  [COMMAND]...  Print help for the subcommand(s)
"#,
        ),
        (
            &["telemetry", "help", "help"],
            r#"Print this message or the help of the given subcommand(s)

Usage: butler-agent telemetry help [COMMAND]...

Arguments:
  [COMMAND]...  Print help for the subcommand(s)
"#,
        ),
    ];
    for (args, text) in cases {
        assert_eq!(
            exit(args),
            Exit {
                text: text.to_string(),
                code: 0
            },
            "{args:?}"
        );
        // `-h` is `--help`.
        if let Some(i) = args.iter().position(|a| *a == "--help") {
            let mut short = args.to_vec();
            short[i] = "-h";
            assert_eq!(exit(&short).text, *text, "{short:?}");
        }
    }
}

#[test]
fn usage_errors_are_claps_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["bogus"],
            r#"error: unrecognized subcommand 'bogus'

Usage: butler-agent [OPTIONS] [COMMAND]

For more information, try '--help'.
"#,
        ),
        (
            &["hots"],
            r#"error: unrecognized subcommand 'hots'

  tip: a similar subcommand exists: 'host'

Usage: butler-agent [OPTIONS] [COMMAND]

For more information, try '--help'.
"#,
        ),
        (
            &["--bogus"],
            r#"error: unexpected argument '--bogus' found

Usage: butler-agent [OPTIONS] [COMMAND]

For more information, try '--help'.
"#,
        ),
        (
            &["host", "--js"],
            r#"error: unexpected argument '--js' found

  tip: a similar argument exists: '--json'

Usage: butler-agent host --json

For more information, try '--help'.
"#,
        ),
        (
            &["--conf", "x"],
            r#"error: unexpected argument '--conf' found

  tip: a similar argument exists: '--config'

Usage: butler-agent --config <FILE>

For more information, try '--help'.
"#,
        ),
        (
            &["host", "--json", "--json"],
            r#"error: the argument '--json' cannot be used multiple times

Usage: butler-agent host [OPTIONS]

For more information, try '--help'.
"#,
        ),
        (
            &["host", "--json=1"],
            r#"error: unexpected value '1' for '--json' found; no more were expected

Usage: butler-agent host --json

For more information, try '--help'.
"#,
        ),
        (
            &["sink"],
            r#"error: the following required arguments were not provided:
  --listen <ADDR>

Usage: butler-agent sink --listen <ADDR>

For more information, try '--help'.
"#,
        ),
        (
            &["sink", "--out", "x"],
            r#"error: the following required arguments were not provided:
  --listen <ADDR>

Usage: butler-agent sink --listen <ADDR> --out <FILE>

For more information, try '--help'.
"#,
        ),
        (
            &["sink", "--listen", "nope"],
            r#"error: invalid value 'nope' for '--listen <ADDR>': invalid socket address syntax

For more information, try '--help'.
"#,
        ),
        (
            &["--root="],
            r#"error: a value is required for '--root <DIR>' but none was supplied

For more information, try '--help'.
"#,
        ),
        (
            &["--config"],
            r#"error: a value is required for '--config <FILE>' but none was supplied

For more information, try '--help'.
"#,
        ),
        (
            &["--config", "-x"],
            r#"error: unexpected argument '-x' found

Usage: butler-agent [OPTIONS] [COMMAND]

For more information, try '--help'.
"#,
        ),
        (
            &["--", "run"],
            r#"error: unexpected argument 'run' found

  tip: subcommand 'run' exists; to use it, remove the '--' before it

Usage: butler-agent [OPTIONS] [COMMAND]

For more information, try '--help'.
"#,
        ),
        (
            &["run", "extra"],
            r#"error: unexpected argument 'extra' found

Usage: butler-agent run [OPTIONS]

For more information, try '--help'.
"#,
        ),
        (
            &["telemetry", "prevew"],
            r#"error: unrecognized subcommand 'prevew'

  tip: a similar subcommand exists: 'preview'

Usage: butler-agent telemetry [OPTIONS] <COMMAND>

For more information, try '--help'.
"#,
        ),
        (
            &["help", "telemetry", "bogus"],
            r#"error: unrecognized subcommand 'bogus'

Usage: butler-agent telemetry [OPTIONS] <COMMAND>

For more information, try '--help'.
"#,
        ),
        (&["telemetry"], TELEMETRY_HELP),
        (
            &["run", "-V"],
            r#"error: unexpected argument '-V' found

Usage: butler-agent run [OPTIONS]

For more information, try '--help'.
"#,
        ),
    ];
    for (args, text) in cases {
        assert_eq!(
            exit(args),
            Exit {
                text: text.to_string(),
                code: 2
            },
            "{args:?}"
        );
    }
}

#[test]
fn commands_flags_and_global_options_anywhere() {
    let cli = parse(&[]).unwrap();
    assert_eq!(
        (cli.config, cli.root, cli.command),
        (None, PathBuf::from("/"), None)
    );
    let cli = parse(&["--config", "a.yaml", "run", "--root=/host"]).unwrap();
    assert_eq!(cli.config, Some(PathBuf::from("a.yaml")));
    assert_eq!(cli.root, PathBuf::from("/host"));
    assert_eq!(cli.command, Some(Command::Run));
    // An empty config path is the config check's to refuse (exit 64), not a usage error.
    assert_eq!(parse(&["--config="]).unwrap().config, Some(PathBuf::new()));
    // A global option once per command level, as clap counted them.
    let cli = parse(&[
        "--config",
        "a",
        "telemetry",
        "--config",
        "b",
        "status",
        "--json",
    ])
    .unwrap();
    assert_eq!(cli.config, Some(PathBuf::from("b")));
    assert_eq!(
        cli.command,
        Some(Command::Telemetry(TelemetryCommand::Status(StatusArgs {
            json: true
        })))
    );
    let cases: &[(&[&str], Command)] = &[
        (
            &["telemetry", "preview"],
            Command::Telemetry(TelemetryCommand::Preview(PreviewArgs { compact: false })),
        ),
        (
            &["telemetry", "preview", "--compact"],
            Command::Telemetry(TelemetryCommand::Preview(PreviewArgs { compact: true })),
        ),
        (
            &["telemetry", "send"],
            Command::Telemetry(TelemetryCommand::Send),
        ),
        (&["host", "--json"], Command::Host(HostArgs { json: true })),
        (&["id"], Command::Id(IdArgs { explain: false })),
        (&["id", "--explain"], Command::Id(IdArgs { explain: true })),
        (
            &["sink", "--listen", "127.0.0.1:18080", "--out=/tmp/e.jsonl"],
            Command::Sink(SinkArgs {
                listen: "127.0.0.1:18080".parse().unwrap(),
                out: Some(PathBuf::from("/tmp/e.jsonl")),
            }),
        ),
        (
            &["sink", "--listen=[::1]:8080"],
            Command::Sink(SinkArgs {
                listen: "[::1]:8080".parse().unwrap(),
                out: None,
            }),
        ),
    ];
    for (args, command) in cases {
        assert_eq!(
            parse(args).unwrap().command.as_ref(),
            Some(command),
            "{args:?}"
        );
    }
}

/// Help wins over what follows it, not over an error before it.
#[test]
fn help_ends_the_reading_where_it_stands() {
    assert_eq!(exit(&["host", "--help", "--bogus"]).code, 0);
    assert_eq!(exit(&["--bogus", "--help"]).code, 2);
    assert_eq!(exit(&["sink", "--help", "--listen", "nope"]).code, 0);
    assert_eq!(exit(&["sink", "--listen", "nope", "--help"]).code, 2);
    assert!(exit(&["-hV"]).text.starts_with("Anonymous"));
    let version = Exit {
        text: format!("butler-agent {}\n", env!("CARGO_PKG_VERSION")),
        code: 0,
    };
    assert_eq!(exit(&["--version"]), version);
    assert_eq!(exit(&["-V", "run"]), version);
    assert_eq!(
        exit(&["-Vh"]).text,
        format!("butler-agent {}\n", env!("CARGO_PKG_VERSION"))
    );
}
