//! `butler-agent`: parse the command line, set up logging, run, report a failure once, exit
//! with its code.

use std::io::Write;
use std::sync::Arc;

use clap::Parser;

use butler_agent::{app, cli::Cli, config::Env, config::ProcessEnv};

fn main() {
    let cli = Cli::parse();
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    let result = app::init_logging(env.as_ref()).and_then(|()| app::dispatch(cli, &env));
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            if !failure.is_quiet() {
                // A closed or failing stderr loses the line, never the exit code.
                let _ = writeln!(std::io::stderr(), "butler-agent: {failure}");
            }
            failure.exit_code()
        }
    };
    std::process::exit(code);
}
