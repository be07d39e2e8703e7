//! Image:   scripts/build-standin-image --tag butler-standin:mytest  (FROM scratch, /butler-standin)
//! Run:     butler-standin serve [--health-port 12398] [--butler-version 16.0.4] (API on 0.0.0.0:8080)
//! Control: butler-standin silent | answer | stats | fault KIND | version V | ping on|off | stop
//!          (talks to the running one over 127.0.0.1:12390, so in a pod:
//!          `kubectl exec POD -c butler -- /butler-standin silent`; no shell needed)
//!
//! `butler-standin --help` lists every option. What it answers, and from which lines of Butler's
//! source, is in lib.rs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use butler_standin::{COMMANDS, DEFAULT_CONTROL, Fault, Options, Standin, control};

const USAGE: &str = "\
usage: butler-standin [serve] [OPTIONS]      run the stand-in
       butler-standin COMMAND [--control ADDR]  tell a running one what to do

Serve options (defaults are Butler 16.0.4 in Docker with both REST switches on):
  --butler-version V     butlerVersion in the ping answer (default 16.0.4)
  --no-butler-version    answer as a Butler older than 6.0 (no butlerVersion)
  --api ADDR             REST API listen address (default 0.0.0.0:8080)
  --no-api               REST server off (restServerConfig.enable: false)
  --no-ping              /v4/butlerping off (restServerEndpointsEnable.butlerping: false): 404
  --health-port PORT     Docker health endpoint on 127.0.0.1:PORT (default off; Butler's is 12398)
  --control ADDR         loopback control port (default 127.0.0.1:12390)
  --startup-delay SECS   answer nothing for this long after start
  --rate-limit N         /v4/butlerping calls a minute before 429 (default 100; 0: none)
  --fault KIND           answer badly: none, html, error, huge, slow, redirect, hang

Commands: silent | answer | stats | reset | fault KIND | version V|none | ping on|off | stop
  silent closes the API and health ports (connections refused); answer opens them again.

Exit codes: 0 done, 1 the running stand-in did not answer or refused, 64 bad arguments.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("butler-standin: {e}\n\n{USAGE}");
            ExitCode::from(64)
        }
        Err(Failure::Run(e)) => {
            eprintln!("butler-standin: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Run(String),
}

fn run(args: &[String]) -> Result<(), Failure> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let (first, rest) = match args.split_first() {
        Some((f, rest)) if !f.starts_with("--") => (f.as_str(), rest),
        _ => ("serve", args),
    };
    match first {
        "serve" => serve(parse_serve(rest).map_err(Failure::Usage)?),
        "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "fault" | "version" | "ping" => {
            let (value, rest) = rest
                .split_first()
                .ok_or_else(|| Failure::Usage(format!("{first} needs a value")))?;
            if first == "fault" {
                value.parse::<Fault>().map_err(Failure::Usage)?;
            }
            send(&format!("{first} {value}"), rest)
        }
        "silent" | "answer" | "stats" | "reset" | "stop" => send(first, rest),
        other => Err(Failure::Usage(format!(
            "unknown command {other:?} (serve, or {COMMANDS})"
        ))),
    }
}

fn send(command: &str, rest: &[String]) -> Result<(), Failure> {
    let at = match rest {
        [] => DEFAULT_CONTROL,
        [flag, addr] if flag == "--control" => addr
            .parse()
            .map_err(|_| Failure::Usage(format!("--control {addr:?}: not an IP:PORT")))?,
        _ => return Err(Failure::Usage(format!("unexpected arguments {rest:?}"))),
    };
    let answer = control(at, command)
        .map_err(|e| Failure::Run(format!("no stand-in answered on {at}: {e}")))?;
    println!("{answer}");
    if answer.starts_with("error") {
        return Err(Failure::Run(format!("{command:?} refused")));
    }
    Ok(())
}

fn parse_serve(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--butler-version" => o.version = Some(value()?.to_string()),
            "--no-butler-version" => o.version = None,
            "--api" => o.api = Some(addr(flag, value()?)?),
            "--no-api" => o.api = None,
            "--no-ping" => o.ping = false,
            "--health-port" => {
                let v = value()?;
                o.health_port = Some(v.parse().map_err(|_| format!("{flag} {v:?}: not a port"))?)
            }
            "--control" => o.control = Some(addr(flag, value()?)?),
            "--startup-delay" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
                    .ok_or_else(|| format!("{flag} {v:?}: not a number of seconds"))?;
                o.startup_delay = Duration::from_secs_f64(secs);
            }
            "--rate-limit" => {
                let v = value()?;
                o.rate_limit = v
                    .parse()
                    .map_err(|_| format!("{flag} {v:?}: not a count"))?
            }
            "--fault" => o.fault = value()?.parse()?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{flag} {v:?}: not an IP:PORT (names are not resolved)"))
}

fn serve(opts: Options) -> Result<(), Failure> {
    let describe = format!(
        "version {}, ping {}, fault {}, rate limit {}/min, start-up delay {:?}",
        opts.version.as_deref().unwrap_or("none (Butler < 6)"),
        if opts.ping { "on" } else { "off (404)" },
        opts.fault,
        opts.rate_limit,
        opts.startup_delay
    );
    let s = Standin::start(opts).map_err(|e| Failure::Run(format!("cannot listen: {e}")))?;
    stop_on_signals();
    let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    println!(
        "butler-standin: api {} health {} control {}; {describe}",
        show(s.api_addr()),
        show(s.health_addr()),
        show(s.control_addr())
    );
    while !s.stop_requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// PID 1 in a container ignores SIGTERM without a handler, so `docker stop` and a pod's deletion
/// would wait out their grace period: exit at once on SIGTERM or SIGINT. std links the C library
/// already; these two functions are all that is needed of it.
fn stop_on_signals() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn exit_now(_: i32) {
        // Only async-signal-safe calls here.
        unsafe { _exit(0) }
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    unsafe {
        signal(SIGINT, exit_now);
        signal(SIGTERM, exit_now);
    }
}
