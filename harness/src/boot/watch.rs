//! The serial console, watched line by line: every line logged, and each
//! one judged for what it says about the boot, so that a boot stops as
//! soon as Xen panics, dom0 dies, QEMU exits or a stage's timeout passes,
//! each a distinct error naming the console log; or goes on to its goal
//! (dom0 waiting for its scenario, for a host that is then saved; the
//! machine powered off after its result block, for a run).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::timeline::{self, Milestone, Timeline};
use crate::config::Timeouts;
use crate::console::{self, Event};

/// How a boot failed. Each names the console log to read.
#[derive(Debug)]
pub enum BootError {
    /// The boot could not even be set up (files, QEMU not startable).
    Setup(anyhow::Error),
    /// QEMU exited before the result block.
    QemuExited {
        status: String,
        stage: Stage,
        stderr: String,
        log: PathBuf,
    },
    /// Xen panicked.
    XenPanic { message: Vec<String>, log: PathBuf },
    /// dom0's kernel panicked, Xen saw dom0 crash, or dom0's init gave up.
    Dom0Died { line: String, log: PathBuf },
    /// Nothing decisive before the stage's timeout (power-off included:
    /// a machine that does not stop after its result block is an error).
    Timeout {
        stage: Stage,
        after: Duration,
        log: PathBuf,
        stderr: String,
    },
    /// After the result block, dom0 could not destroy the domains it
    /// created, or did not say it had.
    Teardown { line: String, log: PathBuf },
    /// QEMU could not load a saved host, or the loaded machine would not
    /// run: the saved state is bad.
    Resume {
        state: PathBuf,
        why: String,
        log: PathBuf,
    },
}

impl BootError {
    /// Whether trying the same boot again may well get through: dom0
    /// stalled (seen now and then under TCG, on unpatched Xen too), or the
    /// machine went silent after Xen started.
    pub fn is_stall(&self) -> bool {
        match self {
            BootError::Dom0Died { line, .. } => {
                line.contains("stall") || line.contains("soft lockup")
            }
            BootError::Timeout { stage, .. } => *stage >= Stage::Dom0 && *stage < Stage::Done,
            _ => false,
        }
    }

    /// Whether the boot stopped before dom0's kernel ran: what a guest
    /// KVM cannot run looks like.
    pub fn before_dom0(&self) -> bool {
        match self {
            BootError::QemuExited { stage, .. } => *stage <= Stage::Xen,
            BootError::XenPanic { .. } => true,
            BootError::Timeout { stage, .. } => *stage <= Stage::Xen,
            _ => false,
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Setup(e) => write!(f, "cannot start the boot: {e:#}"),
            BootError::QemuExited {
                status,
                stage,
                stderr,
                log,
            } => {
                write!(
                    f,
                    "QEMU exited ({status}) {}; console log: {}",
                    stage.exited(),
                    log.display()
                )?;
                if !stderr.trim().is_empty() {
                    write!(
                        f,
                        "\nQEMU said:\n    {}",
                        stderr.trim().replace('\n', "\n    ")
                    )?;
                }
                Ok(())
            }
            BootError::XenPanic { message, log } => write!(
                f,
                "Xen panicked:\n    {}\nconsole log: {}",
                message.join("\n    "),
                log.display()
            ),
            BootError::Dom0Died { line, log } => write!(
                f,
                "dom0 died before its result block: {line}\nconsole log: {}",
                log.display()
            ),
            BootError::Resume { state, why, log } => {
                write!(
                    f,
                    "cannot resume the saved host {}: {why}\nconsole log: {}",
                    state.display(),
                    log.display()
                )
            }
            BootError::Teardown { line, log } => {
                write!(f, "the scenario's domains were not all destroyed after the result block: {line}\nconsole log: {}", log.display())
            }
            BootError::Timeout {
                stage,
                after,
                log,
                stderr,
            } => {
                write!(
                    f,
                    "timed out after {} s {}; console log: {}",
                    after.as_secs(),
                    stage.waiting_for(),
                    log.display()
                )?;
                if !stderr.trim().is_empty() {
                    write!(
                        f,
                        "\nQEMU said:\n    {}",
                        stderr.trim().replace('\n', "\n    ")
                    )?;
                }
                if stderr.contains("KVM internal error") {
                    // QEMU stops the guest and waits: only the timeout ends it.
                    write!(
                        f,
                        "\n(KVM here cannot run this Xen: run with NUMA_HARNESS_ACCEL=tcg)"
                    )
                } else {
                    write!(f, "\n(raise every timeout with --timeout-scale or NUMA_HARNESS_TIMEOUT_SCALE)")
                }
            }
        }
    }
}

impl std::error::Error for BootError {}

/// Where a boot is, for timeouts and for saying how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// QEMU runs; Xen has not printed its banner.
    Starting,
    /// Xen runs; dom0's init has not announced itself.
    Xen,
    /// dom0's init runs; it does not wait for its scenario yet.
    Dom0,
    /// dom0 waits for its scenario (a run restored from a saved host
    /// starts here).
    Waiting,
    /// dom0 runs the scenario; the result block has not ended.
    Scenario,
    /// The result block ended; the machine has not powered off.
    Done,
}

impl Stage {
    fn waiting_for(self) -> &'static str {
        match self {
            Stage::Starting => "before Xen printed its banner (did Xen load?)",
            Stage::Xen => "after Xen started, before dom0's init announced itself",
            Stage::Dom0 => "after dom0's init started, before it waited for its scenario",
            Stage::Waiting => "while dom0 waited for its scenario",
            Stage::Scenario => "after dom0 received its scenario, before its result block ended",
            Stage::Done => "after the result block, waiting for power-off",
        }
    }

    /// How a QEMU that exits in this stage is described.
    fn exited(self) -> &'static str {
        match self {
            Stage::Starting => "before Xen printed its banner",
            Stage::Xen => "after Xen started, before dom0's init",
            _ => "before the result block ended",
        }
    }

    /// How long the stage may last, from the moment given by
    /// [`Watcher::deadline`].
    fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Stage::Starting => t.xen_banner,
            Stage::Xen => t.dom0_init,
            Stage::Dom0 => t.daemons,
            Stage::Waiting => t.delivery,
            Stage::Scenario => t.result,
            Stage::Done => t.poweroff,
        }
    }
}

/// What ends a watch well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// dom0 waits for its scenario; QEMU is left running (to be saved).
    AwaitingScenario,
    /// The result block is complete, the domains destroyed and QEMU gone.
    PowerOff,
}

/// What a hung machine is sent on its console before it is stopped: three
/// Ctrl-A switch the serial input from dom0 to Xen, then Xen's debug keys
/// `0` (dom0's vCPUs, where they are), `d` (every CPU's registers and
/// stack), `q` (every domain's vCPUs and their state) and `r` (the
/// scheduler's run queues).
pub const XEN_STATE_KEYS: &str = "\x01\x01\x010dqr";

enum Msg {
    Line(String),
    Eof,
}

/// A machine's console as it runs: QEMU (or a stand-in in tests) with its
/// stdout as the serial console and a pipe as its input.
pub struct Watcher {
    handle: Arc<duct::ReaderHandle>,
    lines: mpsc::Receiver<Msg>,
    keys: os_pipe::PipeWriter,
    file: File,
    log: PathBuf,
    stderr: PathBuf,
    text: String,
    timeline: Timeline,
    start: Instant,
    stage: Stage,
    /// When the current stage began.
    since: Instant,
    in_block: bool,
    torn_down: bool,
    asked_xen: bool,
    /// The boot in the run's status, with the milestone it reached.
    activity: crate::progress::Activity,
}

impl Watcher {
    /// Starts `expr`, logging its console to `log`, the machine in `stage`
    /// (a restored one is already past its boot); `what` names it in the
    /// run's status.
    pub fn start(
        expr: duct::Expression,
        log: &Path,
        stderr: &Path,
        stage: Stage,
        what: &str,
    ) -> Result<Watcher, BootError> {
        let file = File::create(log)
            .with_context(|| format!("creating {}", log.display()))
            .map_err(BootError::Setup)?;
        // The console's input: where a machine hangs, Xen is asked for its
        // state through it (see XEN_STATE_KEYS).
        let (console_in, keys) = os_pipe::pipe()
            .context("cannot make a pipe for the console's input")
            .map_err(BootError::Setup)?;
        let handle = Arc::new(
            expr.stdin_file(console_in)
                .unchecked()
                .reader()
                .context("cannot start QEMU")
                .map_err(BootError::Setup)?,
        );
        let (tx, lines) = mpsc::channel();
        let reader = Arc::clone(&handle);
        // Ends when the console pipe closes; never waited for, since a
        // process QEMU left behind could hold the pipe open.
        std::thread::spawn(move || {
            let mut r = BufReader::new(&*reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        if tx.send(Msg::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Eof);
        });
        let now = Instant::now();
        Ok(Watcher {
            handle,
            lines,
            keys,
            file,
            log: log.to_path_buf(),
            stderr: stderr.to_path_buf(),
            text: String::new(),
            timeline: Timeline::default(),
            start: now,
            stage,
            since: now,
            in_block: false,
            torn_down: false,
            asked_xen: false,
            activity: crate::progress::Activity::start(what),
        })
    }

    /// Marks a milestone the harness reached (a state saved or loaded).
    pub fn reach(&mut self, m: Milestone) {
        self.timeline.reach(m, self.start.elapsed());
        self.activity.doing(m.name());
    }

    /// Moves to `stage` (from the harness's side: the machine restored).
    pub fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.since = Instant::now();
    }

    fn advance(&mut self, stage: Stage) {
        if stage > self.stage {
            self.enter(stage);
        }
    }

    /// The moment the current stage's timeout counts from: QEMU's start
    /// for Xen's banner and dom0's init, the stage's start after that.
    fn deadline(&self, timeouts: &Timeouts) -> Instant {
        let from = match self.stage {
            Stage::Starting | Stage::Xen => self.start,
            _ => self.since,
        };
        from + self.stage.timeout(timeouts)
    }

    fn log_line(&mut self, line: &str) {
        let _ = writeln!(self.file, "{line}");
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// Reads the console until `goal`, or until the boot fails.
    pub fn until(&mut self, goal: Goal, timeouts: &Timeouts) -> Result<(), BootError> {
        // After a failure, keep reading briefly for what explains it.
        let mut dying: Option<(Instant, BootError)> = None;
        loop {
            let deadline = dying
                .as_ref()
                .map_or_else(|| self.deadline(timeouts), |(until, _)| *until);
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Msg::Line(line)) => {
                    self.log_line(&line);
                    if let Some((_, err)) = &mut dying {
                        add_panic_line(err, &line);
                        continue;
                    }
                    match self.judge(&line) {
                        Verdict::Goes => {}
                        Verdict::Reached(g) if g == goal => return Ok(()),
                        Verdict::Reached(_) => {}
                        Verdict::Fails(err, grace) => dying = Some((Instant::now() + grace, err)),
                    }
                }
                Ok(Msg::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit();
                    if let Some((_, err)) = dying {
                        return Err(err);
                    }
                    return self.ended(goal, status);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some((_, err)) = dying {
                        return Err(err);
                    }
                    let err = BootError::Timeout {
                        stage: self.stage,
                        after: self.start.elapsed(),
                        log: self.log.clone(),
                        stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    };
                    // Once Xen runs, a hang leaves the log silent: before
                    // stopping, Xen prints what its CPUs, dom0 and the
                    // scheduler are doing, for the log's reader.
                    if self.stage >= Stage::Xen && self.stage < Stage::Done && !self.asked_xen {
                        self.asked_xen = true;
                        self.log_line(&format!("numa-harness: timed out; asking Xen for its state (debug keys {XEN_STATE_KEYS:?})"));
                        if self.keys.write_all(XEN_STATE_KEYS.as_bytes()).is_ok() {
                            dying = Some((Instant::now() + Duration::from_secs(20), err));
                            continue;
                        }
                    }
                    return Err(err);
                }
            }
        }
    }

    /// What one console line means for the boot.
    fn judge(&mut self, line: &str) -> Verdict {
        // What the scenario's steps printed is theirs: a check may well
        // print "Kernel panic" without anything dying.
        let event = if self.in_block && console::is_block_line(line) {
            None
        } else {
            console::event(line)
        };
        if let Some(milestone) = Milestone::of(line, event.as_ref()) {
            self.reach(milestone);
        }
        let second = Duration::from_secs(1);
        match event {
            Some(Event::XenStarted) => self.advance(Stage::Xen),
            Some(Event::Dom0Init) => self.advance(Stage::Dom0),
            Some(Event::AwaitingScenario) => {
                self.advance(Stage::Waiting);
                return Verdict::Reached(Goal::AwaitingScenario);
            }
            Some(Event::ScenarioReceived) => self.advance(Stage::Scenario),
            Some(Event::ResultBegin) => self.in_block = true,
            Some(Event::ResultEnd) => {
                self.in_block = false;
                self.advance(Stage::Done);
            }
            Some(Event::Teardown { failed: 0 }) if self.stage == Stage::Done => {
                self.torn_down = true
            }
            Some(Event::Teardown { .. }) if self.stage == Stage::Done => {
                return Verdict::Fails(
                    BootError::Teardown {
                        line: line.trim().to_string(),
                        log: self.log.clone(),
                    },
                    second,
                )
            }
            Some(Event::XenPanic) => {
                return Verdict::Fails(
                    BootError::XenPanic {
                        message: Vec::new(),
                        log: self.log.clone(),
                    },
                    2 * second,
                )
            }
            // dom0 shutting down is its power-off after the block, a death
            // before it; a crash is a death at any time.
            Some(Event::Dom0Stopped(what)) if self.stage < Stage::Done => {
                return Verdict::Fails(
                    BootError::Dom0Died {
                        line: what,
                        log: self.log.clone(),
                    },
                    second,
                )
            }
            Some(Event::Dom0Died(what)) => {
                return Verdict::Fails(
                    BootError::Dom0Died {
                        line: what,
                        log: self.log.clone(),
                    },
                    second,
                )
            }
            _ => {}
        }
        Verdict::Goes
    }

    /// The console closed (QEMU exited): the goal if it was the power-off
    /// after a complete block and teardown, else how far the boot got.
    fn ended(&self, goal: Goal, status: String) -> Result<(), BootError> {
        if self.stage == Stage::Done && goal == Goal::PowerOff {
            if self.torn_down {
                return Ok(());
            }
            return Err(BootError::Teardown {
                line: "dom0 powered off without reporting that it destroyed its domains".into(),
                log: self.log.clone(),
            });
        }
        Err(BootError::QemuExited {
            status,
            stage: self.stage,
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            log: self.log.clone(),
        })
    }

    fn wait_exit(&self) -> String {
        for _ in 0..50 {
            match self.handle.try_wait() {
                Ok(Some(out)) => return describe(&out.status),
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return format!("unknown status: {e}"),
            }
        }
        "closed its console but did not exit".into()
    }

    /// Waits up to `patience` for QEMU to exit by itself (after QMP's
    /// `quit`), logging what it still prints.
    pub fn wait_for_exit(&mut self, patience: Duration) {
        let until = Instant::now() + patience;
        while let Ok(Msg::Line(line)) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            self.log_line(&line);
        }
    }

    /// Stops QEMU whatever it is doing, writes the timeline beside the
    /// log and returns the console's text.
    pub fn finish(mut self) -> String {
        let _ = self.handle.kill();
        self.timeline
            .reach(Milestone::Stopped, self.start.elapsed());
        let _ = std::fs::write(
            self.log.with_file_name(timeline::FILE),
            self.timeline.to_string(),
        );
        std::mem::take(&mut self.text)
    }
}

/// What a line means for the boot.
enum Verdict {
    Goes,
    Reached(Goal),
    /// Failed; read on for this long for what explains it.
    Fails(BootError, Duration),
}

/// After a panic, the lines that say why (up to 8, without the frame).
fn add_panic_line(err: &mut BootError, line: &str) {
    if let BootError::XenPanic { message, .. } = err {
        let body = line.trim_start_matches("(XEN) ").trim();
        if !body.is_empty()
            && !body.starts_with("****")
            && !body.starts_with("Reboot")
            && message.len() < 8
        {
            message.push(body.to_string());
        }
    }
}

fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Watches `expr` from its start to its power-off: a whole boot whose
/// scenario is delivered without the harness's help.
#[cfg(test)]
pub fn watch(
    expr: duct::Expression,
    timeouts: &Timeouts,
    log: &Path,
    stderr: &Path,
) -> Result<String, BootError> {
    let mut w = Watcher::start(expr, log, stderr, Stage::Starting, "boot")?;
    let outcome = w.until(Goal::PowerOff, timeouts);
    let text = w.finish();
    outcome.map(|()| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(secs: u64) -> Timeouts {
        let d = Duration::from_secs(secs);
        Timeouts {
            xen_banner: d,
            dom0_init: d,
            daemons: d,
            delivery: d,
            result: d,
            poweroff: d,
        }
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
    const WAIT: &str =
        "echo 'numa-harness: xen daemons started'; echo 'numa-harness: waiting for a scenario'; \
                        echo 'numa-harness: scenario received: x'";
    const BLOCK: &str = "echo '==== numa-harness result begin ===='; echo '### collect x rc=0 lines=1'; echo '|1| y'; \
                         echo '==== numa-harness result end: 1 steps, 0 failed ===='";
    const TEARDOWN: &str = "echo 'numa-harness: teardown: 1 destroyed, 0 failed'; \
                            echo '(XEN) Hardware Dom0 shutdown: rebooting machine'";

    #[test]
    fn complete_boot() {
        let (r, _) = run(&format!("{XEN}; {INIT}; {WAIT}; {BLOCK}; {TEARDOWN}"), 10);
        let text = r.unwrap();
        assert_eq!(console::result_block(&text).unwrap()[0].output, ["y"]);
    }

    /// The milestones a boot passed, written beside its console log and
    /// read back.
    #[test]
    fn timeline() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let script = format!("{XEN}; sleep 0.3; {INIT}; {WAIT}; {BLOCK}; {TEARDOWN}");
        watch(
            duct::cmd!("sh", "-c", script).stderr_path(&stderr),
            &timeouts(10),
            &dir.path().join("console.log"),
            &stderr,
        )
        .unwrap();
        let t = Timeline::parse(&std::fs::read_to_string(dir.path().join(timeline::FILE)).unwrap());
        let at = |m| t.get(m).unwrap_or_else(|| panic!("{m:?} missing from {t}"));
        assert!(
            at(Milestone::Dom0Init) >= at(Milestone::XenStarted) + Duration::from_millis(250),
            "{t}"
        );
        assert!(
            at(Milestone::ResultEnd) <= at(Milestone::TornDown)
                && at(Milestone::TornDown) <= at(Milestone::Stopped),
            "{t}"
        );
        assert!(
            at(Milestone::AwaitingScenario) <= at(Milestone::ScenarioReceived),
            "{t}"
        );
        assert_eq!(t.get(Milestone::XenBooted), None, "{t}");
        let phases: Vec<&str> = t.phases().into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            phases,
            [
                "QEMU and Xen loading",
                "Xen daemons starting",
                "scenario delivered",
                "domains destroyed",
                "power-off"
            ],
            "{t}"
        );
    }

    /// A host's watch ends, QEMU still running, once dom0 waits for its
    /// scenario; the rest of the run is watched from there.
    #[test]
    fn a_host_is_watched_until_dom0_waits() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let script = format!("{XEN}; {INIT}; echo 'numa-harness: waiting for a scenario'; read go; {WAIT}; {BLOCK}; {TEARDOWN}");
        let mut w = Watcher::start(
            duct::cmd!("sh", "-c", script).stderr_path(&stderr),
            &dir.path().join("console.log"),
            &stderr,
            Stage::Starting,
            "boot",
        )
        .unwrap();
        let start = Instant::now();
        w.until(Goal::AwaitingScenario, &timeouts(10)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(w.stage, Stage::Waiting);
        writeln!(w.keys, "go").unwrap();
        w.until(Goal::PowerOff, &timeouts(10)).unwrap();
        let text = w.finish();
        assert!(
            text.contains("numa-harness: teardown: 1 destroyed, 0 failed"),
            "{text}"
        );
    }

    /// A restored run that never gets its scenario times out in the stage
    /// that says so.
    #[test]
    fn a_scenario_that_never_arrives_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let mut w = Watcher::start(
            duct::cmd!("sh", "-c", "sleep 100").stderr_path(&stderr),
            &dir.path().join("console.log"),
            &stderr,
            Stage::Waiting,
            "boot",
        )
        .unwrap();
        let err = w.until(Goal::PowerOff, &timeouts(1)).unwrap_err();
        w.finish();
        assert!(
            err.to_string()
                .starts_with("timed out after 1 s while dom0 waited for its scenario"),
            "{err}"
        );
    }

    /// A check's output that looks like a panic is the check's, not the
    /// machine's.
    #[test]
    fn panic_words_inside_the_block_are_output() {
        let block = "echo '==== numa-harness result begin ===='; echo '### check x rc=0 lines=2'; \
                     echo '|1| Kernel panic - not syncing: quoted by a check'; echo '|2| (XEN) Panic on CPU 0:'; \
                     echo '==== numa-harness result end: 1 steps, 0 failed ===='";
        let (r, _) = run(&format!("{XEN}; {INIT}; {WAIT}; {block}; {TEARDOWN}"), 10);
        assert_eq!(
            console::result_block(&r.unwrap()).unwrap()[0].output[0],
            "Kernel panic - not syncing: quoted by a check"
        );
    }

    #[test]
    fn failed_teardown_is_an_error() {
        let teardown = "echo 'numa-harness: teardown: 1 destroyed, 1 failed'; sleep 100";
        let (r, took) = run(&format!("{XEN}; {INIT}; {WAIT}; {BLOCK}; {teardown}"), 60);
        let err = r.unwrap_err().to_string();
        assert!(err.starts_with("the scenario's domains were not all destroyed after the result block: numa-harness: teardown: 1 destroyed, 1 failed"), "{err}");
        assert!(took < Duration::from_secs(10));
        let (r, _) = run(&format!("{XEN}; {INIT}; {WAIT}; {BLOCK}"), 10);
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("dom0 powered off without reporting that it destroyed its domains"));
    }

    #[test]
    fn dom0_dying_after_the_block_is_an_error() {
        let (r, took) = run(&format!("{XEN}; {INIT}; {WAIT}; {BLOCK}; echo '[ 9.0] Kernel panic - not syncing: oops'; sleep 100"), 60);
        assert!(matches!(r, Err(BootError::Dom0Died { .. })));
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn no_power_off_is_an_error() {
        let (r, _) = run(&format!("{XEN}; {INIT}; {WAIT}; {BLOCK}; echo 'numa-harness: teardown: 1 destroyed, 0 failed'; sleep 100"), 1);
        let err = r.unwrap_err().to_string();
        assert!(
            err.starts_with("timed out after 1 s after the result block, waiting for power-off"),
            "{err}"
        );
    }

    /// A guest killed before its result block is reported as such, at once.
    #[test]
    fn killed_guest() {
        let (r, took) = run(&format!("{XEN}; {INIT}; kill -9 $$"), 60);
        let err = r.unwrap_err();
        assert!(matches!(err, BootError::QemuExited { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "QEMU exited (killed by signal 9) before the result block ended; console log: "
            ),
            "{msg}"
        );
        assert!(took < Duration::from_secs(10));
        assert!(!err.before_dom0());
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
        assert!(
            err.to_string().contains("Could not construct domain 0"),
            "{err}"
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(err.before_dom0());
    }

    #[test]
    fn dom0_panic_stops_at_once() {
        let (r, took) = run(
            &format!("{XEN}; echo '[ 2.0] Kernel panic - not syncing: VFS'; sleep 100"),
            60,
        );
        assert!(matches!(r, Err(BootError::Dom0Died { .. })));
        assert!(took < Duration::from_secs(10));
    }

    #[test]
    fn silent_machine_times_out() {
        let (r, _) = run(&format!("{XEN}; sleep 100"), 1);
        let err = r.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("timed out after 1 s after Xen started, before dom0's init"),
            "{err}"
        );
        assert!(err.before_dom0() && !err.is_stall());
    }

    /// A machine silent after Xen started is asked for Xen's state on its
    /// console before it is stopped, and what it printed is logged.
    #[test]
    fn hung_machine_is_asked_for_xen_state() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let log = dir.path().join("console.log");
        let script = format!("{XEN}; {INIT}; {WAIT}; keys=$(head -c 7 | tr '\\001' A); echo \"(XEN) got $keys\"; sleep 100");
        let start = Instant::now();
        let r = watch(
            duct::cmd!("sh", "-c", script).stderr_path(&stderr),
            &timeouts(1),
            &log,
            &stderr,
        );
        let err = r.unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Timeout {
                    stage: Stage::Scenario,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_stall());
        assert!(start.elapsed() < Duration::from_secs(40));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("numa-harness: timed out; asking Xen for its state"),
            "{text}"
        );
        assert!(text.contains("(XEN) got AAA0dqr"), "{text}");
    }

    #[test]
    fn xen_never_loads() {
        let (r, _) = run("echo 'qemu: could not load kernel' >&2; exit 1", 10);
        let err = r.unwrap_err();
        assert!(err.before_dom0());
        let err = err.to_string();
        assert!(
            err.starts_with("QEMU exited (exit status 1) before Xen printed its banner"),
            "{err}"
        );
        assert!(
            err.ends_with("QEMU said:\n    qemu: could not load kernel"),
            "{err}"
        );
    }

    /// QEMU's stderr from a KVM boot of master's Xen on a machine whose
    /// KVM gives guests no VMX: the guest stops on an instruction KVM
    /// cannot emulate and QEMU waits.
    #[test]
    fn a_kvm_emulation_error_says_to_use_tcg() {
        let err = BootError::Timeout {
            stage: Stage::Starting,
            after: Duration::from_secs(20),
            log: PathBuf::from("console.log"),
            stderr: include_str!("../../tests/fixtures/kvm-pvm-xen-boot.qemu-stderr.log").into(),
        };
        assert!(err.before_dom0());
        let err = err.to_string();
        assert!(
            err.contains("\n    KVM internal error. Suberror: 1\n"),
            "{err}"
        );
        assert!(
            err.ends_with("(KVM here cannot run this Xen: run with NUMA_HARNESS_ACCEL=tcg)"),
            "{err}"
        );
    }
}
