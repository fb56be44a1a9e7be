//! The harness's own times, kept when they are measured so that a later
//! `cargo xtask evidence` reports them without measuring again: a build's
//! beside its artifacts ([`BUILD_TIME`]), the latest run of each command
//! line in the cache (`timings/command--<command line>.yaml`). A boot's
//! times stay with its console (see [`crate::runner`]).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths;

/// One measured run of a build or a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// `master/patched`, or the command line as typed.
    pub what: String,
    pub seconds: f64,
    /// When it ended, UTC (`2026-12-06 13:05`).
    pub finished: String,
    /// What the run did, in a few words: the steps of a build, the tests
    /// and boots of a command.
    pub detail: String,
    /// Whether it succeeded (a failed test run still took its time).
    pub ok: bool,
}

/// The file in a build's artifacts that holds how long it took.
pub const BUILD_TIME: &str = "build-time.yaml";

fn dir() -> Result<PathBuf> {
    Ok(paths::cache()?.join("timings"))
}

/// A file name for `what`: letters and digits kept, runs of anything else
/// one `-`.
fn file_name(what: &str) -> String {
    let mut name = String::from("command--");
    for c in what.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    format!("{}.yaml", name.trim_end_matches('-'))
}

impl Timing {
    pub fn new(what: impl Into<String>, seconds: f64, detail: impl Into<String>, ok: bool) -> Timing {
        Timing { what: what.into(), seconds, finished: utc(SystemTime::now()), detail: detail.into(), ok }
    }

    /// Keeps this timing as the latest run of its command line.
    pub fn record_command(&self) -> Result<()> {
        let path = dir()?.join(file_name(&self.what));
        std::fs::create_dir_all(dir()?)?;
        paths::write_atomic(&path, yaml_serde::to_string(self)?.as_bytes())
    }

    /// Writes this timing to `path` (a build's [`BUILD_TIME`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, yaml_serde::to_string(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// The timing in `path`; `None` where there is none (a build made
    /// before the harness kept build times) or it does not read as one.
    pub fn read(path: &Path) -> Option<Timing> {
        yaml_serde::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// The wall time as a reader takes it in: `47 s`, `3 min 5 s`.
    pub fn wall(&self) -> String {
        let s = self.seconds.round() as u64;
        match s {
            0..=59 => format!("{s} s"),
            _ => format!("{} min {} s", s / 60, s % 60),
        }
    }
}

/// The latest run of each of `commands` recorded on this machine, in
/// that order; a command never recorded is left out.
pub fn latest_commands(commands: &[&str]) -> Result<Vec<Timing>> {
    let dir = dir()?;
    Ok(commands.iter().filter_map(|c| Timing::read(&dir.join(file_name(c)))).collect())
}

/// The command line this process was started with, as a contributor
/// typed it: `cargo xtask test --rerun`.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.is_empty() {
        true => "cargo xtask".into(),
        false => format!("cargo xtask {}", args.join(" ")),
    }
}

/// `2026-12-06 13:05` for a time, in UTC.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's algorithm, which counts in 400-year eras from 0000-03-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00");
        // A leap day, and the day after a century that is no leap year.
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(4_107_542_400)), "2100-03-01 00:00");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_796_561_100 + 59)), "2026-12-06 12:45");
    }

    #[test]
    fn file_names_keep_the_command() {
        assert_eq!(file_name("cargo xtask test --rerun"), "command--cargo-xtask-test-rerun.yaml");
        assert_eq!(file_name("cargo xtask test --base stable-4.17 two-node/"), "command--cargo-xtask-test-base-stable-4.17-two-node.yaml");
        assert_eq!(file_name("cargo xtask"), "command--cargo-xtask.yaml");
    }

    #[test]
    fn wall_times() {
        let t = |s| Timing { what: "x".into(), seconds: s, finished: String::new(), detail: String::new(), ok: true };
        assert_eq!(t(46.6).wall(), "47 s");
        assert_eq!(t(185.0).wall(), "3 min 5 s");
    }

    #[test]
    fn a_record_reads_back() {
        let t = Timing::new("master/baseline", 231.4, "hypervisor 46 s, tools 140 s", true);
        let back: Timing = yaml_serde::from_str(&yaml_serde::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
