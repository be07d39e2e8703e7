//! The container suites in one test binary with a harness of its own (libtest-mimic): each test
//! decides at run time whether its engine answers, and is reported as ignored (not passed) when
//! none does. `docker`: the real image in Docker; `runtimes`: the same image in Podman and ctr.

#[path = "../it/common/mod.rs"]
mod common;
mod docker;
mod runtimes;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = docker::trials();
    trials.extend(runtimes::trials());
    let conclusion = libtest_mimic::run(&args, trials);
    docker::remove_built_image();
    runtimes::remove_images();
    conclusion.exit();
}
