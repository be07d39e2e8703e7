//! Command-line interface. `run` is the default command.
//!
//! Read with lexopt; the help screens, error messages and exit codes are those of the clap
//! interface this replaced (clap cost 212 KB of the static binary: docs/dependencies.md):
//! help and `--version` on stdout with 0, a usage error on stderr with 2 and a suggestion for a
//! misspelt flag or command.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

/// The parsed command line.
#[derive(Debug)]
pub struct Cli {
    /// Butler's YAML config file (`--config`); `None`: `$BUTLER_CONFIG`, else
    /// `./config/$NODE_ENV.yaml` when it exists, else built-in defaults. An empty path is a
    /// configuration error (exit 64), reported like a bad file.
    pub(crate) config: Option<PathBuf>,
    /// Read host facts (/etc, /proc, /sys, ...) below this directory instead of / (`--root`).
    pub(crate) root: PathBuf,
    pub(crate) command: Option<Command>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Run the agent: health endpoint and scheduled telemetry (the default).
    Run,
    /// Inspect or send the telemetry event.
    Telemetry(TelemetryCommand),
    /// Print what the agent detects about this host, and the rule that decided each fact.
    Host(HostArgs),
    /// Print the anonymous instance ID.
    Id(IdArgs),
    /// Run a minimal PostHog-compatible capture endpoint that prints what it receives.
    Sink(SinkArgs),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TelemetryCommand {
    /// Print the exact JSON body that would be sent. Sends nothing, opens no socket.
    Preview(PreviewArgs),
    /// Print whether telemetry is on and which setting decided it.
    Status(StatusArgs),
    /// Send one event now and print the outcome; exits non-zero on failure.
    Send,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PreviewArgs {
    /// One line instead of pretty-printed JSON.
    pub(crate) compact: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StatusArgs {
    /// Print one JSON object.
    pub(crate) json: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HostArgs {
    /// Print one JSON object.
    pub(crate) json: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IdArgs {
    /// Print which derivation and which inputs were used (names and sources, never values).
    pub(crate) explain: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SinkArgs {
    /// Address to listen on, e.g. 127.0.0.1:18080 or 0.0.0.0:8080.
    pub(crate) listen: std::net::SocketAddr,
    /// Also append each accepted event, one JSON line each, to this file.
    pub(crate) out: Option<PathBuf>,
}

/// A command line that ends before any work: help or the version (exit 0, stdout), or a usage
/// error (exit 2, stderr).
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    /// The whole text, ending in a newline.
    pub text: String,
    /// 0 or 2.
    pub code: i32,
}

impl Cli {
    /// Parses the process's arguments; prints help, the version or a usage error and exits
    /// when the command line asks for no work.
    pub fn parse() -> Cli {
        match Cli::try_parse_from(std::env::args_os()) {
            Ok(cli) => cli,
            Err(exit) => {
                // A closed stdout or stderr loses the text, never the exit code.
                let _ = if exit.code == 0 {
                    std::io::stdout().lock().write_all(exit.text.as_bytes())
                } else {
                    std::io::stderr().lock().write_all(exit.text.as_bytes())
                };
                std::process::exit(exit.code);
            }
        }
    }

    /// Parses `args`, the first being the program's name (as [`std::env::args_os`] gives).
    pub fn try_parse_from<I, T>(args: I) -> Result<Cli, Exit>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut args = args.into_iter().map(Into::into);
        // The program's file name, as clap named it in usage lines.
        let bin = args
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| NAME.to_string());
        Reader {
            parser: lexopt::Parser::from_args(args),
            bin,
        }
        .read()
    }
}

/// The program's name in `--version`.
const NAME: &str = "butler-agent";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A command of the tree; each has its own help screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Run,
    Telemetry,
    Preview,
    Status,
    Send,
    Host,
    Id,
    Sink,
}

/// A flag or option of one command (the global `--config` and `--root` are in every one).
struct Opt {
    long: &'static str,
    value: Option<&'static str>,
    help: &'static str,
}

const CONFIG: Opt = Opt {
    long: "config",
    value: Some("FILE"),
    help: "Butler's YAML config file [default: $BUTLER_CONFIG, else ./config/$NODE_ENV.yaml \
           when it exists, else built-in defaults]. An empty path is a configuration error \
           (exit 64), reported like a bad file",
};
const ROOT: Opt = Opt {
    long: "root",
    value: Some("DIR"),
    help: "Read host facts (/etc, /proc, /sys, ...) below this directory instead of / \
           [default: /]",
};
const COMPACT: Opt = Opt {
    long: "compact",
    value: None,
    help: "One line instead of pretty-printed JSON",
};
const JSON: Opt = Opt {
    long: "json",
    value: None,
    help: "Print one JSON object",
};
const EXPLAIN: Opt = Opt {
    long: "explain",
    value: None,
    help: "Print which derivation and which inputs were used (names and sources, never values)",
};
const LISTEN: Opt = Opt {
    long: "listen",
    value: Some("ADDR"),
    help: "Address to listen on, e.g. 127.0.0.1:18080 or 0.0.0.0:8080",
};
const OUT: Opt = Opt {
    long: "out",
    value: Some("FILE"),
    help: "Also append each accepted event, one JSON line each, to this file",
};
const HELP_ABOUT: &str = "Print this message or the help of the given subcommand(s)";

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Top => "",
            Level::Run => "run",
            Level::Telemetry => "telemetry",
            Level::Preview => "preview",
            Level::Status => "status",
            Level::Send => "send",
            Level::Host => "host",
            Level::Id => "id",
            Level::Sink => "sink",
        }
    }

    /// The words after the program's name, with a trailing space (`telemetry preview `).
    fn path(self) -> String {
        match self {
            Level::Top => String::new(),
            Level::Preview | Level::Status | Level::Send => format!("telemetry {} ", self.name()),
            _ => format!("{} ", self.name()),
        }
    }

    fn about(self) -> &'static str {
        match self {
            Level::Top => {
                "Anonymous telemetry and health agent for Butler (Qlik Sense companion), \
                 Docker-first"
            }
            Level::Run => "Run the agent: health endpoint and scheduled telemetry (the default)",
            Level::Telemetry => "Inspect or send the telemetry event",
            Level::Preview => {
                "Print the exact JSON body that would be sent. Sends nothing, opens no socket"
            }
            Level::Status => "Print whether telemetry is on and which setting decided it",
            Level::Send => "Send one event now and print the outcome; exits non-zero on failure",
            Level::Host => {
                "Print what the agent detects about this host, and the rule that decided each \
                 fact"
            }
            Level::Id => "Print the anonymous instance ID",
            Level::Sink => {
                "Run a minimal PostHog-compatible capture endpoint that prints what it receives"
            }
        }
    }

    fn subcommands(self) -> &'static [Level] {
        match self {
            Level::Top => &[
                Level::Run,
                Level::Telemetry,
                Level::Host,
                Level::Id,
                Level::Sink,
            ],
            Level::Telemetry => &[Level::Preview, Level::Status, Level::Send],
            _ => &[],
        }
    }

    /// The command's options as its help lists them (by name, `--help` and `--version` last).
    fn options(self) -> &'static [Opt] {
        match self {
            Level::Preview => &[COMPACT, CONFIG, ROOT],
            Level::Status | Level::Host => &[CONFIG, JSON, ROOT],
            Level::Id => &[CONFIG, EXPLAIN, ROOT],
            Level::Sink => &[CONFIG, LISTEN, OUT, ROOT],
            _ => &[CONFIG, ROOT],
        }
    }

    fn usage_tail(self) -> &'static str {
        match self {
            Level::Top => "[OPTIONS] [COMMAND]",
            Level::Telemetry => "[OPTIONS] <COMMAND>",
            Level::Sink => "[OPTIONS] --listen <ADDR>",
            _ => "[OPTIONS]",
        }
    }

    fn option(self, long: &str) -> Option<&'static Opt> {
        self.options().iter().find(|o| o.long == long)
    }

    /// Every long flag of the command, for suggestions.
    fn longs(self) -> impl Iterator<Item = &'static str> {
        let version: &[&str] = if self == Level::Top {
            &["version"]
        } else {
            &[]
        };
        self.options()
            .iter()
            .map(|o| o.long)
            .chain(["help"])
            .chain(version.iter().copied())
    }

    fn help(self, bin: &str) -> String {
        let mut text = format!(
            "{}\n\nUsage: {bin} {}{}\n\n",
            self.about(),
            self.path(),
            self.usage_tail()
        );
        let subs = self.subcommands();
        if !subs.is_empty() {
            let width = subs.iter().map(|s| s.name().len()).max().unwrap_or(0);
            text.push_str("Commands:\n");
            for s in subs {
                let _ = writeln!(text, "  {:width$}  {}", s.name(), s.about());
            }
            let _ = writeln!(text, "  {:width$}  {HELP_ABOUT}\n", "help");
        }
        text.push_str("Options:\n");
        for o in self.options() {
            let _ = writeln!(text, "      {:15}  {}", spec(o), o.help);
        }
        text.push_str("  -h, --help           Print help\n");
        if self == Level::Top {
            text.push_str("  -V, --version        Print version\n");
        }
        text
    }

    /// The help of the `help` command below this one.
    fn help_of_help(self, bin: &str) -> String {
        format!(
            "{HELP_ABOUT}\n\nUsage: {bin} {}help [COMMAND]...\n\nArguments:\n  [COMMAND]...  Print \
             help for the subcommand(s)\n",
            self.path()
        )
    }
}

/// `--config <FILE>`, `--json`.
fn spec(o: &Opt) -> String {
    match o.value {
        Some(v) => format!("--{} <{v}>", o.long),
        None => format!("--{}", o.long),
    }
}

/// The candidates like `word`, least like it first (clap's rule: Jaro similarity above 0.7).
fn similar<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut found: Vec<(f64, &str)> = candidates
        .map(|c| (strsim::jaro(word, c), c))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found.into_iter().map(|(_, c)| c).collect()
}

/// What the command line said so far.
#[derive(Default)]
struct Values {
    config: Option<PathBuf>,
    root: Option<PathBuf>,
    compact: bool,
    json: bool,
    explain: bool,
    listen: Option<std::net::SocketAddr>,
    out: Option<PathBuf>,
}

struct Reader {
    parser: lexopt::Parser,
    bin: String,
}

impl Reader {
    fn read(mut self) -> Result<Cli, Exit> {
        let mut level = Level::Top;
        let mut values = Values::default();
        // The options given at this level: each may be given once per level.
        let mut seen: Vec<&'static str> = Vec::new();
        let mut after_dashes = false;
        loop {
            if !after_dashes {
                after_dashes = self
                    .parser
                    .try_raw_args()
                    .is_some_and(|mut raw| raw.next_if(|a| a == "--").is_some());
            }
            let arg = if after_dashes {
                self.parser
                    .try_raw_args()
                    .and_then(|mut raw| raw.next())
                    .map(Token::Value)
            } else {
                match self.parser.next() {
                    Ok(arg) => arg.map(Token::from),
                    // Only a value the last long option cannot take (`--json=1`) ends here.
                    Err(lexopt::Error::UnexpectedValue { option, value }) => {
                        let long = option.trim_start_matches('-');
                        return Err(self.unexpected_value(level, long, &value));
                    }
                    Err(e) => return Err(self.usage_error(level, &e.to_string(), None)),
                }
            };
            let Some(arg) = arg else { break };
            match arg {
                Token::Short('h') => return Err(self.done(level.help(&self.bin))),
                Token::Short('V') if level == Level::Top => {
                    return Err(self.done(format!("{NAME} {VERSION}\n")));
                }
                Token::Short(c) => {
                    return Err(self.unexpected(level, &format!("-{c}"), None));
                }
                Token::Long(long) => {
                    if long == "help" || (long == "version" && level == Level::Top) {
                        if let Some(value) = self.parser.optional_value() {
                            return Err(self.unexpected_value(level, &long, &value));
                        }
                        return Err(self.done(if long == "help" {
                            level.help(&self.bin)
                        } else {
                            format!("{NAME} {VERSION}\n")
                        }));
                    }
                    let Some(opt) = level.option(&long) else {
                        let tip = similar(&long, level.longs()).pop();
                        let usage = tip.map(|t| match level.option(t) {
                            Some(o) => format!("{}{}", level.path(), spec(o)),
                            None => format!("{}--{t}", level.path()),
                        });
                        let tip = tip.map(|t| format!("a similar argument exists: '--{t}'"));
                        return Err(self.error(
                            &format!("unexpected argument '--{long}' found"),
                            tip.as_deref(),
                            usage.as_deref().or(Some(&self.usage(level))),
                        ));
                    };
                    if seen.contains(&opt.long) {
                        return Err(self.usage_error(
                            level,
                            &format!("the argument '{}' cannot be used multiple times", spec(opt)),
                            None,
                        ));
                    }
                    seen.push(opt.long);
                    match opt.value {
                        None => {
                            if let Some(value) = self.parser.optional_value() {
                                return Err(self.unexpected_value(level, opt.long, &value));
                            }
                            match opt.long {
                                "compact" => values.compact = true,
                                "explain" => values.explain = true,
                                _ => values.json = true,
                            }
                        }
                        Some(_) => {
                            let value = self.value(level, opt)?;
                            self.take(opt, value, &mut values)?;
                        }
                    }
                }
                Token::Value(word) => {
                    let text = word.to_string_lossy();
                    let subs = level.subcommands();
                    let found = subs.iter().copied().find(|s| s.name() == text);
                    if after_dashes {
                        return Err(self.after_dashes(level, &text));
                    }
                    match found {
                        Some(sub) => {
                            level = sub;
                            seen.clear();
                        }
                        None if !subs.is_empty() && text == "help" => {
                            return Err(self.help_command(level));
                        }
                        None if !subs.is_empty() => return Err(self.unrecognized(level, &text)),
                        None => {
                            return Err(self.unexpected(level, &text, None));
                        }
                    }
                }
            }
        }
        let command = match level {
            Level::Top => None,
            Level::Run => Some(Command::Run),
            Level::Telemetry => {
                // No subcommand: the help, as an error.
                return Err(Exit {
                    text: level.help(&self.bin),
                    code: 2,
                });
            }
            Level::Preview => Some(Command::Telemetry(TelemetryCommand::Preview(PreviewArgs {
                compact: values.compact,
            }))),
            Level::Status => Some(Command::Telemetry(TelemetryCommand::Status(StatusArgs {
                json: values.json,
            }))),
            Level::Send => Some(Command::Telemetry(TelemetryCommand::Send)),
            Level::Host => Some(Command::Host(HostArgs { json: values.json })),
            Level::Id => Some(Command::Id(IdArgs {
                explain: values.explain,
            })),
            Level::Sink => {
                let Some(listen) = values.listen else {
                    let mut usage = format!("sink {}", spec(&LISTEN));
                    if values.out.is_some() {
                        usage = format!("{usage} {}", spec(&OUT));
                    }
                    return Err(self.error(
                        &format!(
                            "the following required arguments were not provided:\n  {}",
                            spec(&LISTEN)
                        ),
                        None,
                        Some(&usage),
                    ));
                };
                Some(Command::Sink(SinkArgs {
                    listen,
                    out: values.out,
                }))
            }
        };
        Ok(Cli {
            config: values.config,
            root: values.root.unwrap_or_else(|| PathBuf::from("/")),
            command,
        })
    }

    /// The value of an option: joined (`--config=FILE`) or the next word, which must not look
    /// like an option (as clap read it).
    fn value(&mut self, level: Level, opt: &Opt) -> Result<OsString, Exit> {
        if let Some(value) = self.parser.optional_value() {
            return Ok(value);
        }
        let missing = || {
            format!(
                "a value is required for '{}' but none was supplied",
                spec(opt)
            )
        };
        let next = self
            .parser
            .try_raw_args()
            .and_then(|raw| raw.peek().map(|a| a.to_string_lossy().into_owned()));
        match next {
            None => Err(self.value_error(&missing())),
            // As clap read it: the end of options, then the next word.
            Some(next) if next == "--" => {
                let word = self.parser.try_raw_args().and_then(|mut raw| {
                    raw.next();
                    raw.next()
                });
                match word {
                    Some(word) => Err(self.after_dashes(level, &word.to_string_lossy())),
                    None => Err(self.value_error(&missing())),
                }
            }
            Some(next) if next.len() > 1 && next.starts_with('-') => {
                let long = next
                    .strip_prefix("--")
                    .map(|l| l.split('=').next().unwrap_or(l));
                let known = match long {
                    Some(l) => level.longs().any(|k| k == l),
                    None => {
                        next.starts_with("-h") || (level == Level::Top && next.starts_with("-V"))
                    }
                };
                if known {
                    Err(self.value_error(&missing()))
                } else {
                    let shown = match long {
                        Some(l) => format!("--{l}"),
                        None => next.chars().take(2).collect(),
                    };
                    Err(self.unexpected(level, &shown, None))
                }
            }
            Some(_) => self
                .parser
                .value()
                .map_err(|e| self.value_error(&e.to_string())),
        }
    }

    /// A word after `--`: no command takes one.
    fn after_dashes(&self, level: Level, word: &str) -> Exit {
        let subs = level.subcommands();
        match subs.iter().find(|s| s.name() == word) {
            Some(sub) => self.unexpected(
                level,
                word,
                Some(&format!(
                    "subcommand '{}' exists; to use it, remove the '--' before it",
                    sub.name()
                )),
            ),
            None if subs.is_empty() => self.unexpected(level, word, None),
            None => self.unrecognized(level, word),
        }
    }

    fn take(&self, opt: &Opt, value: OsString, values: &mut Values) -> Result<(), Exit> {
        match opt.long {
            "config" => values.config = Some(value.into()),
            "listen" => {
                let text = value.to_string_lossy();
                let addr = text.parse().map_err(|e| {
                    self.value_error(&format!("invalid value '{text}' for '{}': {e}", spec(opt)))
                })?;
                values.listen = Some(addr);
            }
            long => {
                if value.is_empty() {
                    return Err(self.value_error(&format!(
                        "a value is required for '{}' but none was supplied",
                        spec(opt)
                    )));
                }
                if long == "root" {
                    values.root = Some(value.into());
                } else {
                    values.out = Some(value.into());
                }
            }
        }
        Ok(())
    }

    /// `help [COMMAND]...`: the help of the command named, from `level` down.
    fn help_command(&mut self, mut level: Level) -> Exit {
        let words: Vec<String> = self
            .parser
            .try_raw_args()
            .map(|raw| {
                raw.as_slice()
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for word in words {
            match level.subcommands().iter().find(|s| s.name() == word) {
                Some(sub) => level = *sub,
                None if word == "help" && !level.subcommands().is_empty() => {
                    return self.done(level.help_of_help(&self.bin));
                }
                None => {
                    return self.error(
                        &format!("unrecognized subcommand '{word}'"),
                        None,
                        Some(&self.usage(level)),
                    );
                }
            }
        }
        self.done(level.help(&self.bin))
    }

    fn done(&self, text: String) -> Exit {
        Exit { text, code: 0 }
    }

    fn usage(&self, level: Level) -> String {
        format!("{}{}", level.path(), level.usage_tail())
    }

    fn unrecognized(&self, level: Level, word: &str) -> Exit {
        let names = level.subcommands().iter().map(|s| s.name()).chain(["help"]);
        let tip = match similar(word, names).as_slice() {
            [] => None,
            [one] => Some(format!("a similar subcommand exists: '{one}'")),
            many => Some(format!(
                "some similar subcommands exist: {}",
                many.iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        self.usage_error(
            level,
            &format!("unrecognized subcommand '{word}'"),
            tip.as_deref(),
        )
    }

    fn unexpected(&self, level: Level, arg: &str, tip: Option<&str>) -> Exit {
        self.usage_error(level, &format!("unexpected argument '{arg}' found"), tip)
    }

    fn unexpected_value(&self, level: Level, long: &str, value: &OsString) -> Exit {
        self.error(
            &format!(
                "unexpected value '{}' for '--{long}' found; no more were expected",
                value.to_string_lossy()
            ),
            None,
            Some(&format!("{}--{long}", level.path())),
        )
    }

    fn usage_error(&self, level: Level, message: &str, tip: Option<&str>) -> Exit {
        self.error(message, tip, Some(&self.usage(level)))
    }

    /// An error about a value: no usage line.
    fn value_error(&self, message: &str) -> Exit {
        self.error(message, None, None)
    }

    fn error(&self, message: &str, tip: Option<&str>, usage: Option<&str>) -> Exit {
        let mut text = format!("error: {message}\n\n");
        if let Some(tip) = tip {
            let _ = write!(text, "  tip: {tip}\n\n");
        }
        if let Some(usage) = usage {
            let _ = write!(text, "Usage: {} {usage}\n\n", self.bin);
        }
        text.push_str("For more information, try '--help'.\n");
        Exit { text, code: 2 }
    }
}

/// One word of the command line, owned (lexopt's borrows the parser).
enum Token {
    Short(char),
    Long(String),
    Value(OsString),
}

impl From<lexopt::Arg<'_>> for Token {
    fn from(arg: lexopt::Arg<'_>) -> Token {
        match arg {
            lexopt::Arg::Short(c) => Token::Short(c),
            lexopt::Arg::Long(l) => Token::Long(l.to_string()),
            lexopt::Arg::Value(v) => Token::Value(v),
        }
    }
}

#[cfg(test)]
mod tests;
