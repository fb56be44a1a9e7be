//! Boot stage: QEMU with the topology's NUMA layout, Xen as its multiboot
//! kernel and dom0 with its initramfs; the serial console captured to a log
//! and watched line by line, so a boot stops at its result block, or as soon
//! as Xen panics, dom0 dies, QEMU exits or a timeout passes, each a distinct
//! error naming the log.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::Timeouts;
use crate::console::{self, Event};
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{image, paths};

pub const QEMU: &str = "qemu-system-x86_64";

/// `qemu-images/machine.yaml`: what every boot shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub xen_cmdline: Vec<String>,
    pub dom0_cmdline: Vec<String>,
}

impl Machine {
    pub fn load() -> Result<Machine> {
        crate::config::load_yaml(&paths::images_dir().join("machine.yaml"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        })
    }
}

/// KVM where it works, TCG otherwise, with the reason. `NUMA_HARNESS_ACCEL`
/// (`kvm` or `tcg`) overrides the probe.
pub fn detect_accel() -> Result<(Accel, String)> {
    match std::env::var("NUMA_HARNESS_ACCEL").as_deref() {
        Ok("kvm") => return Ok((Accel::Kvm, "NUMA_HARNESS_ACCEL=kvm".into())),
        Ok("tcg") => return Ok((Accel::Tcg, "NUMA_HARNESS_ACCEL=tcg".into())),
        Ok(other) => anyhow::bail!("NUMA_HARNESS_ACCEL={other:?}: expected `kvm` or `tcg`"),
        Err(_) => {}
    }
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Ok((Accel::Tcg, "/dev/kvm cannot be opened".into()));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let nested = |module: &str| std::fs::read_to_string(format!("/sys/module/{module}/parameters/nested")).ok();
    if let Err(why) = nested_virtualisation(&cpuinfo, nested("kvm_intel").as_deref(), nested("kvm_amd").as_deref()) {
        return Ok((Accel::Tcg, why));
    }
    // /dev/kvm can exist and still not run a guest (seen: QEMU aborting on
    // an MSR write); only starting a VM tells.
    let probe = duct::cmd!(QEMU, "-accel", "kvm", "-machine", "q35", "-cpu", "host", "-nodefaults", "-display", "none", "-serial", "none", "-monitor", "stdio", "-S")
        .stdin_bytes("quit\n")
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("cannot run {QEMU}"))?;
    if probe.status.success() {
        Ok((Accel::Kvm, "/dev/kvm works".into()))
    } else {
        let why = String::from_utf8_lossy(&probe.stderr);
        let why = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message").to_string();
        Ok((Accel::Tcg, format!("a KVM guest does not start here: {why}")))
    }
}

/// Whether a KVM guest here gets the hardware virtualisation Xen needs to
/// run PVH and HVM domains: the host CPU's VMX or SVM (`/proc/cpuinfo`'s
/// flags), passed on to guests (`kvm_intel`'s or `kvm_amd`'s `nested`
/// parameter, its contents given). A /dev/kvm without them (seen: one of
/// a sandbox's own, with neither flag and no kvm_intel) starts a guest
/// and then cannot run Xen, which stops on a KVM emulation error.
fn nested_virtualisation(cpuinfo: &str, intel_nested: Option<&str>, amd_nested: Option<&str>) -> Result<(), String> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.trim_start().strip_prefix(':')))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let (flag, module, nested) = if flags.contains(&"vmx") {
        ("VMX", "kvm_intel", intel_nested)
    } else if flags.contains(&"svm") {
        ("SVM", "kvm_amd", amd_nested)
    } else {
        return Err("KVM here has no VMX or SVM to give Xen (neither is in /proc/cpuinfo's flags), so Xen could run no PVH domain".into());
    };
    match nested.map(str::trim) {
        Some("Y" | "y" | "1") => Ok(()),
        Some(other) => Err(format!(
            "{module} does not pass {flag} on to guests (/sys/module/{module}/parameters/nested is {other:?}), so Xen could run no PVH domain"
        )),
        None => Err(format!("{module} is not loaded, so KVM here cannot give Xen {flag}")),
    }
}

/// Where one boot's files go: `target/numa-harness/runs/<base>/<build>/
/// <topology>/<scenario>/`, with the console log, the boot's initramfs,
/// QEMU's stderr and the report.
#[derive(Debug, Clone)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(base: &str, build: &str, topology: &str, scenario: &str) -> RunDir {
        RunDir(paths::output().join("runs").join(base).join(build).join(topology).join(scenario))
    }

    /// The directory of one build's boot with a topology and scenario.
    pub fn of(artifacts: &crate::build::Artifacts, topology: &Topology, scenario: &Scenario) -> RunDir {
        RunDir::new(&artifacts.base, artifacts.label(), &topology.name, &scenario.name)
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

    pub fn initrd(&self) -> PathBuf {
        self.0.join("dom0.cpio")
    }

    pub fn qemu_stderr(&self) -> PathBuf {
        self.0.join("qemu-stderr.log")
    }

    pub fn report(&self) -> PathBuf {
        self.0.join("report.yaml")
    }

    /// Holds the directory for this process until the guard is dropped:
    /// two runs sharing a checkout never boot into the same directory at
    /// once (the second waits, and says so).
    pub fn lock(&self) -> Result<crate::lock::Guard> {
        std::fs::create_dir_all(&self.0).with_context(|| format!("creating {}", self.0.display()))?;
        crate::lock::exclusive(&self.0.join(".lock"), "boot directory")
    }
}

/// How a boot that got its result block went.
#[derive(Debug)]
pub enum Attempt {
    /// At the first try.
    First(String),
    /// dom0 stalled the first time (seen now and then under TCG, on
    /// unpatched Xen too); the second try got through. The first console
    /// log is kept.
    AfterStall { text: String, stall: String, stalled_log: PathBuf },
}

/// Everything one boot needs.
pub struct Boot<'a> {
    pub topology: &'a Topology,
    pub scenario: &'a Scenario,
    pub machine: &'a Machine,
    pub xen: PathBuf,
    /// The FLASK policy, a boot module when the scenario asks for FLASK.
    pub xsm_policy: PathBuf,
    pub kernel: PathBuf,
    pub base_image: PathBuf,
    pub run_dir: RunDir,
    pub accel: Accel,
    /// Under TCG, the guest's clock counts instructions (see
    /// [`INSTRUCTION_CLOCK`]); no effect under KVM.
    pub counted: bool,
    pub interactive: bool,
}

/// QEMU's instruction counting for boots that time commands in the guest,
/// under TCG: every instruction advances the virtual clock by 2 ns
/// (`shift=1`) and idle time is skipped (`sleep=off`), so a time read in
/// the guest is the work it did, whatever the host's speed and load.
/// TCG's multi-threaded mode cannot count, so such a boot runs its vCPUs
/// on one host thread. Measured: one boot's 20 `xl create -p` rounds
/// within 2% of each other (102.4-104.0 ms), against 593-999 ms in a
/// boot on the host's clock.
pub const INSTRUCTION_CLOCK: &str = "shift=1,sleep=off";

impl Boot<'_> {
    fn console_log(&self) -> PathBuf {
        self.run_dir.console_log()
    }

    fn initrd(&self) -> PathBuf {
        self.run_dir.initrd()
    }

    /// Writes the boot's initramfs (base image + scenario).
    pub fn prepare(&self) -> Result<()> {
        let dir = self.run_dir.path();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut bytes = std::fs::read(&self.base_image)
            .with_context(|| format!("reading {}", self.base_image.display()))?;
        image::scenario(self.scenario).write(&mut bytes)?;
        paths::write_atomic(&self.initrd(), &bytes)
    }

    /// Everything that decides what this boot prints, as a key: the QEMU
    /// command line (whose files are named by their content: the build's
    /// artifacts, the base image, the uncompressed kernel), the scenario's
    /// part of the initramfs, QEMU's version and the accelerator. Two boots
    /// with the same identity run the same machine on the same inputs.
    pub fn identity(&self) -> Result<String> {
        let mut key = paths::KeyBuilder::default();
        key.add("command", self.command().join("\0"));
        let mut scenario = Vec::new();
        image::scenario(self.scenario).write(&mut scenario)?;
        key.add("scenario archive", scenario).add("qemu", qemu_version()?).add("accel", self.accel.to_string());
        Ok(key.finish())
    }

    /// The QEMU command line as one shell-quoted line.
    pub fn shell_command(&self) -> String {
        shell_words(&self.command())
    }

    /// The QEMU command line (program first).
    pub fn command(&self) -> Vec<String> {
        let mut xen_cmdline = self.machine.xen_cmdline.clone();
        xen_cmdline.extend(self.scenario.xen_cmdline.iter().cloned());
        if let Some(mode) = self.scenario.flask {
            xen_cmdline.extend(mode.xen_cmdline().iter().map(|s| s.to_string()));
        }
        let mut dom0_cmdline = self.machine.dom0_cmdline.clone();
        if self.interactive {
            dom0_cmdline.push("numa_harness.shell".into());
        }
        let (accel, cpu) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            // SVM lets Xen build PVH and HVM guests; RDRAND spares
            // xenstored minutes of waiting for the entropy pool.
            Accel::Tcg if self.counted => ("tcg", "qemu64,+svm,+npt,+rdrand"),
            Accel::Tcg => ("tcg,thread=multi", "qemu64,+svm,+npt,+rdrand"),
        };
        let chardev = if self.interactive {
            format!("stdio,id=con,mux=on,signal=off,logfile={}", self.console_log().display())
        } else {
            "stdio,id=con,signal=off".to_string()
        };
        // Multiboot modules are separated by commas: a comma inside one is
        // written twice.
        let module = |path: &Path, args: &str| {
            let module = if args.is_empty() { path.display().to_string() } else { format!("{} {args}", path.display()) };
            module.replace(',', ",,")
        };
        let mut cmd: Vec<String> = [QEMU, "-machine", "q35", "-accel", accel, "-cpu", cpu]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.counted && self.accel == Accel::Tcg {
            cmd.extend(["-icount".into(), INSTRUCTION_CLOCK.into()]);
        }
        cmd.extend(self.topology.qemu_args());
        cmd.extend(
            [
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-chardev",
                &chardev,
                "-serial",
                "chardev:con",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        if self.interactive {
            cmd.extend(["-mon".into(), "chardev=con,mode=readline".into()]);
        } else {
            cmd.extend(["-monitor".into(), "none".into()]);
        }
        // dom0's kernel comes first; Xen takes the FLASK policy out of the
        // other modules before it looks for dom0's initrd among the rest.
        let mut modules = vec![module(&self.kernel, &dom0_cmdline.join(" ")), module(&self.initrd(), "")];
        if self.scenario.flask.is_some() {
            modules.push(module(&self.xsm_policy, ""));
        }
        cmd.extend([
            "-kernel".into(),
            self.xen.display().to_string(),
            "-append".into(),
            xen_cmdline.join(" "),
            "-initrd".into(),
            modules.join(","),
        ]);
        cmd
    }

    /// Boots with the console on this terminal (dom0 shell after the
    /// scenario), logging it too.
    pub fn run_interactive(&self) -> Result<()> {
        self.prepare()?;
        let cmd = self.command();
        crate::say!("boot: interactive; Ctrl-A X quits QEMU, Ctrl-A C its monitor; log: {}", self.console_log().display());
        duct::cmd(&cmd[0], &cmd[1..]).unchecked().run()?;
        Ok(())
    }

    /// Boots and watches the console; returns its text once the result
    /// block is complete.
    pub fn run(&self, timeouts: &Timeouts) -> Result<String, BootError> {
        self.prepare().map_err(BootError::Setup)?;
        let cmd = self.command();
        let stderr = self.run_dir.qemu_stderr();
        let expr = duct::cmd(&cmd[0], &cmd[1..]).stderr_path(&stderr);
        let result = watch(crate::process::supervised(expr), timeouts, &self.console_log(), &stderr);
        // The boot's initramfs is as large as dom0's kernel and tools, and
        // made again from the cache by the next boot: only the logs stay.
        let _ = std::fs::remove_file(self.initrd());
        result
    }

    /// [`Boot::run`], once more if dom0 stalled or the machine hung
    /// during the scenario the first time.
    pub fn run_retrying_stall(&self, timeouts: &Timeouts) -> Result<Attempt, BootError> {
        let first = match self.run(timeouts) {
            Ok(text) => return Ok(Attempt::First(text)),
            Err(BootError::Dom0Died { line, log }) if line.contains("stall") || line.contains("soft lockup") => (line, log),
            Err(BootError::Timeout { stage, after, log, .. }) if stage == Stage::Dom0.waiting_for() => {
                (format!("no result block {} s after Xen started; Xen's state is at the end of its console", after.as_secs()), log)
            }
            Err(e) => return Err(e),
        };
        let (line, log) = first;
        let stalled_log = self.run_dir.stalled_log();
        std::fs::rename(&log, &stalled_log)
            .with_context(|| format!("renaming {} to {}", log.display(), stalled_log.display()))
            .map_err(BootError::Setup)?;
        crate::say!("boot: dom0 stalled ({line}); booting once more (first console: {})", stalled_log.display());
        let text = self.run(timeouts)?;
        Ok(Attempt::AfterStall { text, stall: line, stalled_log })
    }
}

/// `qemu-system-x86_64 --version`, asked once.
fn qemu_version() -> Result<&'static str> {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(v) = VERSION.get() {
        return Ok(v);
    }
    let v = duct::cmd!(QEMU, "--version").read().with_context(|| format!("cannot run {QEMU} --version"))?;
    Ok(VERSION.get_or_init(|| v))
}

/// Arguments as one line a POSIX shell splits back into them.
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a boot failed. Each names the console log to read.
#[derive(Debug)]
pub enum BootError {
    /// The boot could not even be set up (files, QEMU not startable).
    Setup(anyhow::Error),
    /// QEMU exited before the result block.
    QemuExited { status: String, stage: &'static str, stderr: String, log: PathBuf },
    /// Xen panicked.
    XenPanic { message: Vec<String>, log: PathBuf },
    /// dom0's kernel panicked, Xen saw dom0 crash, or dom0's init gave up.
    Dom0Died { line: String, log: PathBuf },
    /// Nothing decisive before the stage's timeout (power-off included:
    /// a machine that does not stop after its result block is an error).
    Timeout { stage: &'static str, after: Duration, log: PathBuf, stderr: String },
    /// After the result block, dom0 could not destroy the domains it
    /// created, or did not say it had.
    Teardown { line: String, log: PathBuf },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Setup(e) => write!(f, "cannot start the boot: {e:#}"),
            BootError::QemuExited { status, stage, stderr, log } => {
                write!(f, "QEMU exited ({status}) {stage}; console log: {}", log.display())?;
                if !stderr.trim().is_empty() {
                    write!(f, "\nQEMU said:\n    {}", stderr.trim().replace('\n', "\n    "))?;
                }
                Ok(())
            }
            BootError::XenPanic { message, log } => write!(
                f,
                "Xen panicked:\n    {}\nconsole log: {}",
                message.join("\n    "),
                log.display()
            ),
            BootError::Dom0Died { line, log } => {
                write!(f, "dom0 died before its result block: {line}\nconsole log: {}", log.display())
            }
            BootError::Teardown { line, log } => {
                write!(f, "the scenario's domains were not all destroyed after the result block: {line}\nconsole log: {}", log.display())
            }
            BootError::Timeout { stage, after, log, stderr } => {
                write!(f, "timed out after {} s {stage}; console log: {}", after.as_secs(), log.display())?;
                if !stderr.trim().is_empty() {
                    write!(f, "\nQEMU said:\n    {}", stderr.trim().replace('\n', "\n    "))?;
                }
                if stderr.contains("KVM internal error") {
                    // QEMU stops the guest and waits: only the timeout ends it.
                    write!(f, "\n(KVM here cannot run this Xen: run with NUMA_HARNESS_ACCEL=tcg)")
                } else {
                    write!(f, "\n(raise every timeout with --timeout-scale or NUMA_HARNESS_TIMEOUT_SCALE)")
                }
            }
        }
    }
}

impl std::error::Error for BootError {}

enum Msg {
    Line(String),
    Eof,
}

/// Where a boot is, for timeouts and for saying how far it got.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    Starting,
    Xen,
    Dom0,
    Done,
}

impl Stage {
    fn waiting_for(self) -> &'static str {
        match self {
            Stage::Starting => "before Xen printed its banner (did Xen load?)",
            Stage::Xen => "after Xen started, before dom0's init announced itself",
            Stage::Dom0 => "after dom0's init started, before its result block ended",
            Stage::Done => "after the result block, waiting for power-off",
        }
    }
}

/// What a hung machine is sent on its console before it is stopped: three
/// Ctrl-A switch the serial input from dom0 to Xen, then Xen's debug keys
/// `0` (dom0's vCPUs, where they are), `d` (every CPU's registers and
/// stack), `q` (every domain's vCPUs and their state) and `r` (the
/// scheduler's run queues).
pub const XEN_STATE_KEYS: &str = "\x01\x01\x010dqr";

/// Runs `expr` (QEMU, or a stand-in in tests) with its stdout as the serial
/// console and a pipe as its input: logs every line to `log` and decides, line by line, whether the
/// boot succeeded, failed, or goes on.
pub fn watch(expr: duct::Expression, timeouts: &Timeouts, log: &Path, stderr: &Path) -> Result<String, BootError> {
    let mut file = std::fs::File::create(log)
        .with_context(|| format!("creating {}", log.display()))
        .map_err(BootError::Setup)?;
    // The console's input: where a machine hangs, Xen is asked for its
    // state through it (see XEN_STATE_KEYS).
    let (console_in, mut console_keys) = os_pipe::pipe()
        .context("cannot make a pipe for the console's input")
        .map_err(BootError::Setup)?;
    let handle = Arc::new(
        expr.stdin_file(console_in)
            .unchecked()
            .reader()
            .with_context(|| "cannot start QEMU".to_string())
            .map_err(BootError::Setup)?,
    );
    let (tx, rx) = mpsc::channel();
    let reader = {
        let handle = Arc::clone(&handle);
        std::thread::spawn(move || {
            let mut r = BufReader::new(&*handle);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                        if tx.send(Msg::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Eof);
        })
    };

    let start = Instant::now();
    let mut timeline = Timeline::default();
    let log_path = log.to_path_buf();
    // The boot in the run's status: its run directory, and the milestone
    // it reached.
    let dir = log.parent().and_then(|d| d.strip_prefix(paths::output().join("runs")).ok()).unwrap_or(log);
    let activity = crate::progress::Activity::start(format!("boot {}", dir.display()));
    let mut text = String::new();
    let mut stage = Stage::Starting;
    let mut done_at = None;
    let mut in_block = false;
    let mut torn_down = false;
    // After a panic, keep reading briefly for its message, then stop.
    let mut dying: Option<(Instant, BootError)> = None;
    let mut asked_xen = false;

    let result = loop {
        let deadline = if let Some((until, _)) = &dying {
            *until
        } else {
            match stage {
                Stage::Starting => start + timeouts.xen_banner,
                Stage::Xen => start + timeouts.dom0_init,
                Stage::Dom0 => start + timeouts.result,
                Stage::Done => done_at.unwrap() + timeouts.poweroff,
            }
        };
        let msg = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        match msg {
            Ok(Msg::Line(line)) => {
                let _ = writeln!(file, "{line}");
                text.push_str(&line);
                text.push('\n');
                if let Some((_, err)) = &mut dying {
                    if let BootError::XenPanic { message, .. } = err {
                        let body = line.trim_start_matches("(XEN) ").trim();
                        if !body.is_empty() && !body.starts_with("****") && !body.starts_with("Reboot") && message.len() < 8 {
                            message.push(body.to_string());
                        }
                    }
                    continue;
                }
                // What the scenario's steps printed is theirs: a check may
                // well print "Kernel panic" without anything dying.
                let event = if in_block && console::is_block_line(&line) { None } else { console::event(&line) };
                if let Some(milestone) = Milestone::of(&line, event.as_ref()) {
                    timeline.reach(milestone, start.elapsed());
                    activity.doing(milestone.name());
                }
                match event {
                    Some(Event::XenStarted) if stage < Stage::Xen => stage = Stage::Xen,
                    Some(Event::Dom0Init) if stage < Stage::Dom0 => stage = Stage::Dom0,
                    Some(Event::ResultBegin) => in_block = true,
                    Some(Event::ResultEnd) => {
                        in_block = false;
                        stage = Stage::Done;
                        done_at = Some(Instant::now());
                    }
                    Some(Event::Teardown { failed: 0 }) if stage == Stage::Done => torn_down = true,
                    Some(Event::Teardown { .. }) if stage == Stage::Done => {
                        let err = BootError::Teardown { line: line.trim().to_string(), log: log_path.clone() };
                        dying = Some((Instant::now() + Duration::from_secs(1), err));
                    }
                    Some(Event::XenPanic) => {
                        let err = BootError::XenPanic { message: Vec::new(), log: log_path.clone() };
                        dying = Some((Instant::now() + Duration::from_secs(2), err));
                    }
                    // dom0 shutting down is its power-off after the block,
                    // a death before it; a crash is a death at any time.
                    Some(Event::Dom0Stopped(what)) if stage < Stage::Done => {
                        let err = BootError::Dom0Died { line: what, log: log_path.clone() };
                        dying = Some((Instant::now() + Duration::from_secs(1), err));
                    }
                    Some(Event::Dom0Died(what)) => {
                        let err = BootError::Dom0Died { line: what, log: log_path.clone() };
                        dying = Some((Instant::now() + Duration::from_secs(1), err));
                    }
                    _ => {}
                }
            }
            Ok(Msg::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_exit(&handle);
                if let Some((_, err)) = dying {
                    break Err(err);
                }
                if stage == Stage::Done && torn_down {
                    break Ok(());
                }
                if stage == Stage::Done {
                    break Err(BootError::Teardown {
                        line: "dom0 powered off without reporting that it destroyed its domains".into(),
                        log: log_path.clone(),
                    });
                }
                let stage_text = match stage {
                    Stage::Starting => "before Xen printed its banner",
                    Stage::Xen => "after Xen started, before dom0's init",
                    _ => "before the result block ended",
                };
                break Err(BootError::QemuExited {
                    status,
                    stage: stage_text,
                    stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
                    log: log_path.clone(),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some((_, err)) = dying {
                    break Err(err);
                }
                let err = BootError::Timeout {
                    stage: stage.waiting_for(),
                    after: start.elapsed(),
                    log: log_path.clone(),
                    stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
                };
                // Once Xen runs, a hang leaves the log silent: before
                // stopping, Xen prints what its CPUs, dom0 and the
                // scheduler are doing, for the log's reader.
                if stage >= Stage::Xen && stage < Stage::Done && !asked_xen {
                    asked_xen = true;
                    let _ = writeln!(file, "numa-harness: timed out; asking Xen for its state (debug keys {XEN_STATE_KEYS:?})");
                    if console_keys.write_all(XEN_STATE_KEYS.as_bytes()).is_ok() {
                        dying = Some((Instant::now() + Duration::from_secs(20), err));
                        continue;
                    }
                }
                break Err(err);
            }
        }
    };
    // Whatever happened, QEMU does not outlive the boot. The reader thread
    // ends when the console pipe closes; it is not waited for, since a
    // process QEMU left behind could hold the pipe open.
    let _ = handle.kill();
    drop(rx);
    drop(reader);
    timeline.reach(Milestone::Stopped, start.elapsed());
    let _ = std::fs::write(log.with_file_name(TIMELINE), timeline.to_string());
    result.map(|()| text)
}

/// The file beside the console log with the boot's [`Timeline`].
pub const TIMELINE: &str = "timeline.txt";

/// Points of a boot seen on the console, in the order they come: where a
/// boot's time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Milestone {
    /// Xen's banner.
    XenStarted,
    /// Xen hands the console to dom0: Xen's own boot is over.
    XenBooted,
    /// dom0's kernel started the harness's init.
    Dom0Init,
    /// xenstored, xen-init-dom0 and xenconsoled are up.
    DaemonsStarted,
    /// The scenario's steps are done.
    ScenarioDone,
    /// The result block was printed.
    ResultEnd,
    /// The scenario's domains are destroyed.
    TornDown,
    /// QEMU is gone.
    Stopped,
}

impl Milestone {
    pub const ALL: [Milestone; 8] = [
        Milestone::XenStarted,
        Milestone::XenBooted,
        Milestone::Dom0Init,
        Milestone::DaemonsStarted,
        Milestone::ScenarioDone,
        Milestone::ResultEnd,
        Milestone::TornDown,
        Milestone::Stopped,
    ];

    /// The milestone a console line marks: the watcher's own events where
    /// it has one for the line, else one of the lines only the timeline
    /// needs.
    fn of(line: &str, event: Option<&Event>) -> Option<Milestone> {
        match event {
            Some(Event::XenStarted) => return Some(Milestone::XenStarted),
            Some(Event::Dom0Init) => return Some(Milestone::Dom0Init),
            Some(Event::ResultEnd) => return Some(Milestone::ResultEnd),
            Some(Event::Teardown { .. }) => return Some(Milestone::TornDown),
            _ => {}
        }
        if line.contains("(XEN) *** Serial input to DOM0") {
            Some(Milestone::XenBooted)
        } else if line.contains("numa-harness: xen daemons started") {
            Some(Milestone::DaemonsStarted)
        } else if line.contains("numa-harness: scenario done") {
            Some(Milestone::ScenarioDone)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Milestone::XenStarted => "xen-started",
            Milestone::XenBooted => "xen-booted",
            Milestone::Dom0Init => "dom0-init",
            Milestone::DaemonsStarted => "daemons-started",
            Milestone::ScenarioDone => "scenario-done",
            Milestone::ResultEnd => "result-printed",
            Milestone::TornDown => "torn-down",
            Milestone::Stopped => "stopped",
        }
    }
}

/// When each milestone was first reached, from QEMU's start.
#[derive(Debug, Default, PartialEq)]
pub struct Timeline(Vec<(Milestone, Duration)>);

impl Timeline {
    fn reach(&mut self, m: Milestone, at: Duration) {
        if !self.0.iter().any(|(seen, _)| *seen == m) {
            self.0.push((m, at));
        }
    }

    pub fn get(&self, m: Milestone) -> Option<Duration> {
        self.0.iter().find(|(seen, _)| *seen == m).map(|(_, at)| *at)
    }

    /// The time between consecutive milestones, named for what the boot
    /// did in it; a phase whose ends were not both seen is left out.
    pub fn phases(&self) -> Vec<(&'static str, Duration)> {
        use Milestone::*;
        let spans = [
            ("QEMU and Xen loading", None, XenStarted),
            ("Xen booting", Some(XenStarted), XenBooted),
            ("dom0 kernel booting", Some(XenBooted), Dom0Init),
            ("Xen daemons starting", Some(Dom0Init), DaemonsStarted),
            ("scenario", Some(DaemonsStarted), ScenarioDone),
            ("result block printed", Some(ScenarioDone), ResultEnd),
            ("domains destroyed", Some(ResultEnd), TornDown),
            ("power-off", Some(TornDown), Stopped),
        ];
        spans
            .into_iter()
            .filter_map(|(name, from, to)| {
                let from = match from {
                    Some(m) => self.get(m)?,
                    None => Duration::ZERO,
                };
                Some((name, self.get(to)?.checked_sub(from)?))
            })
            .collect()
    }

    /// Reads what [`Timeline`]'s `Display` wrote.
    pub fn parse(text: &str) -> Timeline {
        let mut t = Timeline::default();
        for line in text.lines() {
            let Some((name, secs)) = line.split_once(' ') else { continue };
            let Some(m) = Milestone::ALL.into_iter().find(|m| m.name() == name) else { continue };
            if let Ok(secs) = secs.trim().parse::<f64>() {
                t.reach(m, Duration::from_secs_f64(secs));
            }
        }
        t
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (m, at) in &self.0 {
            writeln!(f, "{} {:.1}", m.name(), at.as_secs_f64())?;
        }
        Ok(())
    }
}

fn wait_exit(handle: &duct::ReaderHandle) -> String {
    for _ in 0..50 {
        match handle.try_wait() {
            Ok(Some(out)) => return describe(&out.status),
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return format!("unknown status: {e}"),
        }
    }
    "closed its console but did not exit".into()
}

fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(secs: u64) -> Timeouts {
        let d = Duration::from_secs(secs);
        Timeouts { xen_banner: d, dom0_init: d, result: d, poweroff: d }
    }

    /// Runs a shell script as the "machine" whose stdout is the console.
    fn run(script: &str, secs: u64) -> (Result<String, BootError>, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let stderr = dir.path().join("stderr.log");
        let r = watch(
            duct::cmd!("sh", "-c", script).stderr_path(&stderr),
            &timeouts(secs),
            &dir.path().join("console.log"),
            &stderr,
        );
        (r, start.elapsed())
    }

    const XEN: &str = "printf '(XEN) Xen version 4.17.5 (root@) debug=n\\r\\n'";
    const INIT: &str = "echo 'numa-harness: dom0 init started'";
    const BLOCK: &str = "echo '==== numa-harness result begin ===='; echo '### collect x rc=0 lines=1'; echo '|1| y'; \
                         echo '==== numa-harness result end: 1 steps, 0 failed ===='";
    const TEARDOWN: &str = "echo 'numa-harness: teardown: 1 destroyed, 0 failed'; \
                            echo '(XEN) Hardware Dom0 shutdown: rebooting machine'";

    #[test]
    fn complete_boot() {
        let (r, _) = run(&format!("{XEN}; {INIT}; {BLOCK}; {TEARDOWN}"), 10);
        let text = r.unwrap();
        assert_eq!(console::result_block(&text).unwrap()[0].output, ["y"]);
    }

    /// The milestones a boot passed, written beside its console log and
    /// read back.
    #[test]
    fn timeline() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let script = format!("{XEN}; sleep 0.3; {INIT}; {BLOCK}; {TEARDOWN}");
        watch(duct::cmd!("sh", "-c", script).stderr_path(&stderr), &timeouts(10), &dir.path().join("console.log"), &stderr)
            .unwrap();
        let t = Timeline::parse(&std::fs::read_to_string(dir.path().join(TIMELINE)).unwrap());
        let at = |m| t.get(m).unwrap_or_else(|| panic!("{m:?} missing from {t}"));
        assert!(at(Milestone::Dom0Init) >= at(Milestone::XenStarted) + Duration::from_millis(250), "{t}");
        assert!(at(Milestone::ResultEnd) <= at(Milestone::TornDown) && at(Milestone::TornDown) <= at(Milestone::Stopped), "{t}");
        assert_eq!(t.get(Milestone::DaemonsStarted), None, "{t}");
        let phases: Vec<&str> = t.phases().into_iter().map(|(name, _)| name).collect();
        assert_eq!(phases, ["QEMU and Xen loading", "domains destroyed", "power-off"], "{t}");
    }

    /// A check's output that looks like a panic is the check's, not the
    /// machine's.
    #[test]
    fn panic_words_inside_the_block_are_output() {
        let block = "echo '==== numa-harness result begin ===='; echo '### check x rc=0 lines=2'; \
                     echo '|1| Kernel panic - not syncing: quoted by a check'; echo '|2| (XEN) Panic on CPU 0:'; \
                     echo '==== numa-harness result end: 1 steps, 0 failed ===='";
        let (r, _) = run(&format!("{XEN}; {INIT}; {block}; {TEARDOWN}"), 10);
        assert_eq!(console::result_block(&r.unwrap()).unwrap()[0].output[0], "Kernel panic - not syncing: quoted by a check");
    }

    #[test]
    fn failed_teardown_is_an_error() {
        let teardown = "echo 'numa-harness: teardown: 1 destroyed, 1 failed'; sleep 100";
        let (r, took) = run(&format!("{XEN}; {INIT}; {BLOCK}; {teardown}"), 60);
        let err = r.unwrap_err().to_string();
        assert!(err.starts_with("the scenario's domains were not all destroyed after the result block: numa-harness: teardown: 1 destroyed, 1 failed"), "{err}");
        assert!(took < Duration::from_secs(10));
        let (r, _) = run(&format!("{XEN}; {INIT}; {BLOCK}"), 10);
        assert!(r.unwrap_err().to_string().contains("dom0 powered off without reporting that it destroyed its domains"));
    }

    #[test]
    fn dom0_dying_after_the_block_is_an_error() {
        let (r, took) = run(&format!("{XEN}; {INIT}; {BLOCK}; echo '[ 9.0] Kernel panic - not syncing: oops'; sleep 100"), 60);
        assert!(matches!(r, Err(BootError::Dom0Died { .. })));
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn no_power_off_is_an_error() {
        let (r, _) = run(&format!("{XEN}; {INIT}; {BLOCK}; echo 'numa-harness: teardown: 1 destroyed, 0 failed'; sleep 100"), 1);
        let err = r.unwrap_err().to_string();
        assert!(err.starts_with("timed out after 1 s after the result block, waiting for power-off"), "{err}");
    }

    /// A guest killed before its result block is reported as such, at once.
    #[test]
    fn killed_guest() {
        let (r, took) = run(&format!("{XEN}; {INIT}; kill -9 $$"), 60);
        let err = r.unwrap_err();
        assert!(matches!(err, BootError::QemuExited { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("QEMU exited (killed by signal 9) before the result block ended; console log: "), "{msg}");
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn xen_panic_stops_at_once() {
        let (r, took) = run(
            &format!(
                "{XEN}; echo '(XEN) ****************************************'; echo '(XEN) Panic on CPU 0:'; \
                 echo '(XEN) Could not construct domain 0'; echo '(XEN) ****************************************'; sleep 100"
            ),
            60,
        );
        let err = r.unwrap_err();
        assert!(matches!(err, BootError::XenPanic { .. }), "{err}");
        assert!(err.to_string().contains("Could not construct domain 0"), "{err}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn dom0_panic_stops_at_once() {
        let (r, took) = run(&format!("{XEN}; echo '[ 2.0] Kernel panic - not syncing: VFS'; sleep 100"), 60);
        assert!(matches!(r, Err(BootError::Dom0Died { .. })));
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn silent_machine_times_out() {
        let (r, _) = run(&format!("{XEN}; sleep 100"), 1);
        let err = r.unwrap_err();
        assert!(err.to_string().starts_with("timed out after 1 s after Xen started, before dom0's init"), "{err}");
    }

    /// A machine silent after Xen started is asked for Xen's state on its
    /// console before it is stopped, and what it printed is logged.
    #[test]
    fn hung_machine_is_asked_for_xen_state() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let log = dir.path().join("console.log");
        let script = format!("{XEN}; {INIT}; keys=$(head -c 7 | tr '\\001' A); echo \"(XEN) got $keys\"; sleep 100");
        let start = Instant::now();
        let r = watch(duct::cmd!("sh", "-c", script).stderr_path(&stderr), &timeouts(1), &log, &stderr);
        let err = r.unwrap_err();
        assert!(matches!(err, BootError::Timeout { stage, .. } if stage == Stage::Dom0.waiting_for()), "{err}");
        assert!(start.elapsed() < Duration::from_secs(40));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("numa-harness: timed out; asking Xen for its state"), "{text}");
        assert!(text.contains("(XEN) got AAA0dqr"), "{text}");
    }

    #[test]
    fn shell_words_round_trip() {
        let args: Vec<String> = ["qemu", "-append", "a b", "it's", "", "x=1,y"].iter().map(|s| s.to_string()).collect();
        let line = shell_words(&args);
        assert_eq!(line, "qemu -append 'a b' 'it'\\''s' '' x=1,y");
        let back = duct::cmd!("sh", "-c", format!("for a in {line}; do printf '%s\\n' \"$a\"; done")).read().unwrap();
        assert_eq!(back.lines().collect::<Vec<_>>(), ["qemu", "-append", "a b", "it's", "", "x=1,y"]);
    }

    #[test]
    fn xen_never_loads() {
        let (r, _) = run("echo 'qemu: could not load kernel' >&2; exit 1", 10);
        let err = r.unwrap_err().to_string();
        assert!(err.starts_with("QEMU exited (exit status 1) before Xen printed its banner"), "{err}");
        assert!(err.ends_with("QEMU said:\n    qemu: could not load kernel"), "{err}");
    }

    /// This machine's /proc/cpuinfo (its first CPU), read with KVM's
    /// `kvm_pvm` module loaded and neither kvm_intel nor kvm_amd: a
    /// /dev/kvm that starts a guest but gives it no VMX.
    const PVM_CPUINFO: &str = include_str!("../tests/fixtures/kvm-pvm-host.cpuinfo");

    #[test]
    fn kvm_without_vmx_or_svm_is_not_used() {
        let err = nested_virtualisation(PVM_CPUINFO, None, None).unwrap_err();
        assert!(err.starts_with("KVM here has no VMX or SVM"), "{err}");
    }

    #[test]
    fn kvm_is_used_only_where_it_passes_vmx_or_svm_on() {
        // The same CPU as if it had VMX (or SVM), by its flags.
        let with = |flag: &str| PVM_CPUINFO.replacen("flags\t\t: fpu", &format!("flags\t\t: fpu {flag}"), 1);
        let vmx = with("vmx");
        assert_eq!(nested_virtualisation(&vmx, Some("Y\n"), None), Ok(()));
        assert_eq!(nested_virtualisation(&with("svm"), None, Some("1\n")), Ok(()));
        let err = nested_virtualisation(&vmx, Some("N\n"), None).unwrap_err();
        assert!(err.contains("/sys/module/kvm_intel/parameters/nested is \"N\""), "{err}");
        let err = nested_virtualisation(&vmx, None, Some("1\n")).unwrap_err();
        assert_eq!(err, "kvm_intel is not loaded, so KVM here cannot give Xen VMX");
    }

    /// QEMU's stderr from a KVM boot of master's Xen on that machine: the
    /// guest stops on an instruction KVM cannot emulate and QEMU waits.
    #[test]
    fn a_kvm_emulation_error_says_to_use_tcg() {
        let err = BootError::Timeout {
            stage: Stage::Starting.waiting_for(),
            after: Duration::from_secs(20),
            log: PathBuf::from("console.log"),
            stderr: include_str!("../tests/fixtures/kvm-pvm-xen-boot.qemu-stderr.log").into(),
        }
        .to_string();
        assert!(err.contains("\n    KVM internal error. Suberror: 1\n"), "{err}");
        assert!(err.ends_with("(KVM here cannot run this Xen: run with NUMA_HARNESS_ACCEL=tcg)"), "{err}");
    }
}
