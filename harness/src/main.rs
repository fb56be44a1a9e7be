//! `cargo xtask`: the Xen NUMA placement harness.
//!
//! `commands` holds one module per subcommand; each composes the stages it
//! needs. The stages, one module each, in the order a run goes through them:
//! host (set-up) -> fetch -> patch -> build -> image -> boot (console) ->
//! parse -> report -> snapshot. Bases (pinned Xen sources) are data files in
//! xen/bases/, topologies and scenarios in qemu-images/, each loaded by the
//! module of the same name; a contributor's own checkout comes in through
//! `checkout`. `runner` runs boots (many at once); `test_plan` names and
//! selects the tests, `junit` writes their results for CI, `source_paths`
//! tests the ways a source arrives, `series_check` the series itself and
//! `ci_lint` the CI files. `lock` and `process` keep two runs, and a killed
//! one, from harming each other or leaving processes behind.

mod base;
mod boot;
mod build;
mod checkout;
mod ci_lint;
mod commands;
mod config;
mod console;
mod cpio;
mod evidence;
mod fetch;
mod guest_kernel;
mod flags;
mod host;
mod image;
mod independence;
mod junit;
mod lock;
mod parse;
mod patch;
mod paths;
mod process;
mod progress;
mod report;
mod runner;
mod scenario;
mod series_check;
mod snapshot;
mod source_paths;
mod test_plan;
mod timings;
mod topology;
mod work_tree;

use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = match flags::Xtask::from_env() {
        Ok(flags) => flags,
        // Asked for: the help goes to stdout, and that is success.
        Err(e) if e.is_help() => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            crate::say!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = process::stop_descendants_on_signal() {
        crate::say!("error: cannot handle signals: {e:#}");
        return ExitCode::FAILURE;
    }
    match commands::dispatch(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::say!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
