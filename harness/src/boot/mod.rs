//! Boot stage. A host (QEMU with the topology's NUMA layout, Xen as its
//! multiboot kernel, dom0 with the build's image) is booted once, up to
//! the moment dom0's init waits for a scenario, and its stopped state
//! saved; each scenario then runs on a copy of that machine restored from
//! the saved state, and arrives on dom0's second serial line. So a
//! scenario costs what its own steps cost, and every scenario starts from
//! the very same machine whichever others ran before it.
//!
//! Boots that time creation (their guest clock counts instructions) and
//! interactive ones boot whole, the scenario delivered the same way as
//! soon as dom0 asks for it.
//!
//! The serial console is captured to a log and watched line by line
//! ([`watch`]), so a boot stops at its result block, or as soon as Xen
//! panics, dom0 dies, QEMU exits or a timeout passes, each a distinct
//! error naming the log.

pub mod accel;
pub mod qemu;
pub mod qmp;
pub mod saved;
pub mod timeline;
pub mod watch;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub use accel::Accel;
pub use qemu::{Host, Machine, INSTRUCTION_CLOCK};
pub use watch::BootError;

use crate::config::Timeouts;
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{image, paths};
use qemu::{Console, Run};
use qmp::Qmp;
use timeline::Milestone;
use watch::{Goal, Stage, Watcher};

/// Where one boot's files go: `target/numa-harness/runs/<base>/<build>/
/// <topology>/<scenario>/`, with the console log, QEMU's stderr, the
/// timeline, the report, and a copy of the console of the host's boot.
#[derive(Debug, Clone)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(base: &str, build: &str, topology: &str, scenario: &str) -> RunDir {
        RunDir(
            paths::output()
                .join("runs")
                .join(base)
                .join(build)
                .join(topology)
                .join(scenario),
        )
    }

    /// The directory of one build's boot with a topology and scenario.
    pub fn of(
        artifacts: &crate::build::Artifacts,
        topology: &Topology,
        scenario: &Scenario,
    ) -> RunDir {
        RunDir::new(
            &artifacts.base,
            artifacts.label(),
            &topology.name,
            &scenario.name,
        )
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn console_log(&self) -> PathBuf {
        self.0.join("console.log")
    }

    /// The console log of a first attempt that stalled.
    pub fn stalled_log(&self) -> PathBuf {
        self.0.join("console.stalled.log")
    }

    /// The console of the boot of the host the run was restored from.
    pub fn host_console_log(&self) -> PathBuf {
        self.0.join("host.console.log")
    }

    pub fn qemu_stderr(&self) -> PathBuf {
        self.0.join("qemu-stderr.log")
    }

    pub fn report(&self) -> PathBuf {
        self.0.join("report.yaml")
    }

    /// Removes the report an earlier run left, which would otherwise sit
    /// beside a failed run's console as if it were its own.
    pub fn forget_report(&self) -> Result<()> {
        let report = self.report();
        match std::fs::remove_file(&report) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)
                .with_context(|| format!("removing the earlier run's report {}", report.display())),
            _ => Ok(()),
        }
    }

    pub fn timeline(&self) -> PathBuf {
        self.0.join(timeline::FILE)
    }

    /// The FIFOs `scenario.in` and `scenario.out` behind dom0's ttyS1.
    pub fn scenario_line(&self) -> PathBuf {
        self.0.join("scenario")
    }

    /// The scenario as dom0 receives it, for a command printed to be run
    /// by hand.
    pub fn delivery(&self) -> PathBuf {
        self.0.join("scenario.delivery")
    }

    /// Holds the directory for this process until the guard is dropped:
    /// two runs sharing a checkout never boot into the same directory at
    /// once (the second waits, and says so).
    pub fn lock(&self) -> Result<crate::lock::Guard> {
        std::fs::create_dir_all(&self.0)
            .with_context(|| format!("creating {}", self.0.display()))?;
        crate::lock::exclusive(&self.0.join(".lock"), "boot directory")
    }
}

/// A scenario as dom0 receives it on ttyS1: one line
/// `numa-harness scenario <bytes> <sha256>`, then that many bytes, a cpio
/// archive of the scenario's files (`qemu-images/dom0/init` unpacks it
/// under /scenario once the bytes match the hash).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery(Vec<u8>);

impl Delivery {
    pub fn of(scenario: &Scenario) -> Result<Delivery> {
        let mut archive = Vec::new();
        image::scenario(scenario).write(&mut archive)?;
        let mut bytes = format!(
            "numa-harness scenario {} {}\n",
            archive.len(),
            paths::sha256_hex(&archive)
        )
        .into_bytes();
        bytes.extend(archive);
        Ok(Delivery(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One scenario on one host.
#[derive(Debug, Clone)]
pub struct Boot {
    pub host: Host,
    /// Names the boot in messages: `master/two-node/default on patched`.
    pub name: String,
    pub delivery: Delivery,
    pub run_dir: RunDir,
    /// Booted whole rather than restored from its saved host.
    pub whole: bool,
}

/// The FIFO pair behind dom0's ttyS1, held open (read and write) by the
/// harness for the whole run: what is written stays in the FIFO until
/// QEMU reads it, whenever QEMU opens its end.
struct ScenarioLine {
    path: PathBuf,
    input: File,
}

impl ScenarioLine {
    fn make(path: &Path) -> Result<ScenarioLine> {
        make_fifos(path)?;
        // Read and write: opening does not wait for QEMU, and the bytes
        // written stay in the FIFO as long as this end is open.
        let input = fifo_end(path, "in");
        let input = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&input)
            .with_context(|| format!("opening {}", input.display()))?;
        Ok(ScenarioLine {
            path: path.to_path_buf(),
            input,
        })
    }

    fn send(&mut self, delivery: &Delivery) -> Result<()> {
        self.input
            .write_all(delivery.bytes())
            .with_context(|| format!("writing the scenario into {}.in", self.path.display()))
    }
}

impl Drop for ScenarioLine {
    fn drop(&mut self) {
        for end in ["in", "out"] {
            let _ = std::fs::remove_file(fifo_end(&self.path, end));
        }
    }
}

/// Makes the FIFOs `<path>.in` and `<path>.out`, anew.
fn make_fifos(path: &Path) -> Result<()> {
    for fifo in [fifo_end(path, "in"), fifo_end(path, "out")] {
        match std::fs::remove_file(&fifo) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", fifo.display())),
        }
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
            .context("a path with a NUL byte")?;
        // SAFETY: mkfifo with a valid C string.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("making the FIFO {}", fifo.display()));
        }
    }
    Ok(())
}

fn fifo_end(path: &Path, end: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{end}"));
    PathBuf::from(name)
}

/// A socket path short enough for a Unix socket (108 bytes), wherever the
/// run directory is: in a temporary directory removed with it.
fn qmp_socket() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("numa-harness-qmp")
        .tempdir()
        .context("making a directory for QEMU's QMP socket")?;
    let socket = dir.path().join("qmp");
    Ok((dir, socket))
}

/// QEMU's stderr so far, for an error about the machine.
fn said(stderr: &Path) -> String {
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    match text.trim() {
        "" => String::new(),
        t => format!("\nQEMU said:\n    {}", t.replace('\n', "\n    ")),
    }
}

fn machine_error(what: &str, e: anyhow::Error, log: &Path, stderr: &Path) -> BootError {
    BootError::Setup(anyhow::anyhow!(
        "{what}: {e:#}; console log: {}{}",
        log.display(),
        said(stderr)
    ))
}

/// Starts QEMU for `host` as `run` asks, supervised, its stderr to `stderr`,
/// and watches its console into `log` from `stage` on; `what` names it in the
/// run's status.
fn start_watched(
    host: &Host,
    run: &Run,
    log: &Path,
    stderr: &Path,
    stage: Stage,
    what: &str,
) -> Result<Watcher, BootError> {
    let cmd = host.command(run);
    let expr = crate::process::supervised(duct::cmd(&cmd[0], &cmd[1..]).stderr_path(stderr));
    Watcher::start(expr, log, stderr, stage, what)
}

/// Boots `host` until dom0 waits for its scenario, then writes the
/// stopped machine's state, zstd-compressed, to `state`. The console log,
/// QEMU's stderr and the timeline go into `dir`; `what` names the boot
/// in the run's status.
pub fn save(
    host: &Host,
    what: &str,
    dir: &Path,
    state: &Path,
    timeouts: &Timeouts,
) -> Result<(), BootError> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(BootError::Setup)?;
    let (_socket_dir, socket) = qmp_socket().map_err(BootError::Setup)?;
    let run = Run {
        console: Console::Watched,
        scenario_line: None,
        qmp: Some(socket.clone()),
        incoming: None,
    };
    let (log, stderr) = (dir.join("console.log"), dir.join("qemu-stderr.log"));
    let mut w = start_watched(host, &run, &log, &stderr, Stage::Starting, what)?;
    let outcome = w.until(Goal::AwaitingScenario, timeouts).and_then(|()| {
        let uri = format!(
            "exec:zstd -1 -q -f -o {}",
            qemu::shell_words(&[state.display().to_string()])
        );
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(10))
            .map_err(|e| machine_error("cannot reach QEMU's QMP socket", e, &log, &stderr))?;
        qmp.execute("stop", serde_json::json!({}))
            .and_then(|_| qmp.save(&uri, Duration::from_secs(120)))
            .map_err(|e| machine_error("cannot save the booted host", e, &log, &stderr))?;
        w.reach(Milestone::Saved);
        // QEMU exits at once; the console closes with it.
        let _ = qmp.execute("quit", serde_json::json!({}));
        w.wait_for_exit(Duration::from_secs(5));
        Ok(())
    });
    w.finish();
    outcome
}

/// Loads `host`'s saved `state`, sends dom0 its scenario and watches the
/// run to its power-off; returns the console's text (only what the
/// restored machine printed).
pub fn restore(boot: &Boot, state: &Path, timeouts: &Timeouts) -> Result<String, BootError> {
    let run_dir = &boot.run_dir;
    std::fs::create_dir_all(run_dir.path())
        .with_context(|| format!("creating {}", run_dir.path().display()))
        .map_err(BootError::Setup)?;
    let mut line = ScenarioLine::make(&run_dir.scenario_line()).map_err(BootError::Setup)?;
    let (_socket_dir, socket) = qmp_socket().map_err(BootError::Setup)?;
    let run = Run {
        console: Console::Watched,
        scenario_line: Some(run_dir.scenario_line()),
        qmp: Some(socket.clone()),
        incoming: Some(state.to_path_buf()),
    };
    let (log, stderr) = (run_dir.console_log(), run_dir.qemu_stderr());
    let mut w = start_watched(
        &boot.host,
        &run,
        &log,
        &stderr,
        Stage::Waiting,
        &format!("run {}", boot.name),
    )?;
    let resumed = (|| -> Result<()> {
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(10))?;
        let now = qmp.wait_while("inmigrate", timeouts.delivery)?;
        anyhow::ensure!(
            now == "paused",
            "QEMU is {now} after loading the state, not paused"
        );
        // Only now: bytes QEMU took before the load would have gone to a
        // serial port the saved state then replaced.
        line.send(&boot.delivery)?;
        qmp.execute("cont", serde_json::json!({}))?;
        Ok(())
    })();
    if let Err(e) = resumed {
        w.finish();
        let why = format!("{e:#}{}", said(&stderr));
        return Err(BootError::Resume {
            state: state.to_path_buf(),
            why,
            log,
        });
    }
    w.reach(Milestone::Restored);
    w.enter(Stage::Waiting);
    let outcome = w.until(Goal::PowerOff, timeouts);
    let text = w.finish();
    drop(line);
    outcome.map(|()| text)
}

/// Boots `host` whole, dom0 given its scenario as soon as it asks, and
/// watches the boot to its power-off; returns the console's text. (Not
/// before it asks: dom0's serial driver empties the port when it sets it
/// up, and what QEMU had passed on by then would be lost.)
pub fn boot_whole(boot: &Boot, timeouts: &Timeouts) -> Result<String, BootError> {
    let run_dir = &boot.run_dir;
    std::fs::create_dir_all(run_dir.path())
        .with_context(|| format!("creating {}", run_dir.path().display()))
        .map_err(BootError::Setup)?;
    let mut line = ScenarioLine::make(&run_dir.scenario_line()).map_err(BootError::Setup)?;
    let run = Run {
        console: Console::Watched,
        scenario_line: Some(run_dir.scenario_line()),
        qmp: None,
        incoming: None,
    };
    let (log, stderr) = (run_dir.console_log(), run_dir.qemu_stderr());
    let mut w = start_watched(
        &boot.host,
        &run,
        &log,
        &stderr,
        Stage::Starting,
        &format!("boot {}", boot.name),
    )?;
    let outcome = w
        .until(Goal::AwaitingScenario, timeouts)
        .and_then(|()| line.send(&boot.delivery).map_err(BootError::Setup))
        .and_then(|()| w.until(Goal::PowerOff, timeouts));
    let text = w.finish();
    drop(line);
    outcome.map(|()| text)
}

/// Boots `host` whole with the console on this terminal (a dom0 shell
/// after the scenario when dom0's command line asks for it), logging it
/// too; the scenario is sent once the log shows dom0 waiting for it.
pub fn boot_interactive(boot: &Boot) -> Result<()> {
    let run_dir = &boot.run_dir;
    std::fs::create_dir_all(run_dir.path())
        .with_context(|| format!("creating {}", run_dir.path().display()))?;
    let mut line = ScenarioLine::make(&run_dir.scenario_line())?;
    let log = run_dir.console_log();
    let _ = std::fs::remove_file(&log);
    let run = Run {
        console: Console::Terminal { log: log.clone() },
        scenario_line: Some(run_dir.scenario_line()),
        qmp: None,
        incoming: None,
    };
    let cmd = boot.host.command(&run);
    crate::say!(
        "boot: interactive; Ctrl-A X quits QEMU, Ctrl-A C its monitor; log: {}",
        log.display()
    );
    let qemu = duct::cmd(&cmd[0], &cmd[1..]).unchecked().start()?;
    let delivery = boot.delivery.clone();
    let sender = std::thread::spawn(move || -> Result<()> {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(crate::console::AWAITING_SCENARIO) {
                return line.send(&delivery);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    qemu.wait()?;
    if sender.is_finished() {
        sender.join().expect("the scenario's sender panicked")?;
    }
    Ok(())
}

/// The command line of a whole boot, for a person to run, with the
/// scenario written beside it and the FIFOs it goes through made: the
/// command, then how to deliver the scenario.
pub fn printable(boot: &Boot) -> Result<String> {
    let run_dir = &boot.run_dir;
    paths::write_atomic(&run_dir.delivery(), boot.delivery.bytes())?;
    make_fifos(&run_dir.scenario_line())?;
    let run = Run {
        console: Console::Watched,
        scenario_line: Some(run_dir.scenario_line()),
        qmp: None,
        incoming: None,
    };
    Ok(format!(
        "{}\n# dom0 waits for its scenario on its second serial line; from another shell, once dom0 has printed\n# `{}`:\n# cat {} > {}",
        qemu::shell_words(&boot.host.command(&run)),
        crate::console::AWAITING_SCENARIO,
        run_dir.delivery().display(),
        fifo_end(&run_dir.scenario_line(), "in").display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run starts without the report of the one before: if it fails, no
    /// report sits beside its console.
    #[test]
    fn an_earlier_report_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir(dir.path().join("run"));
        run_dir.forget_report().unwrap();
        std::fs::create_dir_all(run_dir.path()).unwrap();
        std::fs::write(run_dir.report(), "base: master\n").unwrap();
        run_dir.forget_report().unwrap();
        assert!(!run_dir.report().exists());
    }

    /// What dom0's init reads: the header's byte count and hash are those
    /// of the archive after it, which holds the scenario's files.
    #[test]
    fn a_delivery_is_its_header_and_the_archive() {
        let topology = crate::topology::Topology::load(&paths::default_topology()).unwrap();
        let scenario = Scenario::load(&paths::default_scenario(), &topology).unwrap();
        let d = Delivery::of(&scenario).unwrap();
        let newline = d.bytes().iter().position(|&b| b == b'\n').unwrap();
        let header = std::str::from_utf8(&d.bytes()[..newline]).unwrap();
        let archive = &d.bytes()[newline + 1..];
        let words: Vec<&str> = header.split(' ').collect();
        assert_eq!(words[..2], ["numa-harness", "scenario"]);
        assert_eq!(words[2], archive.len().to_string());
        assert_eq!(words[3], paths::sha256_hex(archive));
        let listing = duct::cmd!("cpio", "-t", "--quiet")
            .stdin_bytes(archive)
            .read()
            .unwrap();
        assert!(
            listing.lines().any(|l| l == "scenario/plan.sh"),
            "{listing}"
        );
    }

    /// What is written before anyone reads stays in the FIFO, and the
    /// pair is gone with the line.
    #[test]
    fn the_scenario_waits_in_its_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scenario");
        let mut line = ScenarioLine::make(&path).unwrap();
        line.send(&Delivery(b"numa-harness scenario 0 x\n".to_vec()))
            .unwrap();
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(fifo_end(&path, "in"))
            .unwrap();
        let mut got = [0u8; 26];
        std::io::Read::read_exact(&mut reader, &mut got).unwrap();
        assert_eq!(&got, b"numa-harness scenario 0 x\n");
        drop(line);
        assert!(!fifo_end(&path, "in").exists() && !fifo_end(&path, "out").exists());
    }
}
