//! `butler-agent`: parse the command line, set up logging, run, report a failure once, exit
//! with its code.

use std::sync::Arc;
use std::time::Duration;

use butler_agent::{app, cli::Cli, config::Env, config::ProcessEnv, output};

/// How long the process waits, at exit, for queued log lines to be written: a log pipe that
/// nobody reads must not hold up a stop.
const EXIT_FLUSH: Duration = Duration::from_secs(1);

fn main() {
    let cli = Cli::parse();
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    let result = app::init_logging(env.as_ref()).and_then(|()| app::dispatch(cli, &env));
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            if !failure.is_quiet() {
                // A closed or failing stderr loses the line, never the exit code.
                output::eprint_line(&format!("butler-agent: {failure}\n"));
            }
            failure.exit_code()
        }
    };
    output::flush(EXIT_FLUSH);
    std::process::exit(code);
}
