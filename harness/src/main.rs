//! `cargo xtask`: the Xen NUMA placement harness.
//!
//! The stages, one module each, in the order a run goes through them:
//! host (set-up) -> fetch -> patch -> build -> image -> boot (console) ->
//! parse -> report -> snapshot. Bases (pinned Xen sources) are data files in
//! xen/bases/, topologies and scenarios in qemu-images/, each loaded by the
//! module of the same name; a contributor's own checkout comes in through
//! `checkout`, and `source_paths` tests the ways a source arrives.

mod base;
mod boot;
mod build;
mod checkout;
mod config;
mod console;
mod cpio;
mod fetch;
mod flags;
mod host;
mod image;
mod parse;
mod patch;
mod paths;
mod pipeline;
mod report;
mod scenario;
mod series_check;
mod snapshot;
mod source_paths;
mod topology;

use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = match flags::Xtask::from_env() {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match pipeline::dispatch(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
