//! Reading the serial console: what each line tells about the boot, and the
//! result block dom0's init prints (format described in
//! qemu-images/dom0/init).

use anyhow::{bail, Result};

pub const RESULT_BEGIN: &str = "==== numa-harness result begin ====";
const RESULT_END: &str = "==== numa-harness result end: ";
const TEARDOWN: &str = "numa-harness: teardown: ";
/// What init says once it waits for its scenario on ttyS1.
pub const AWAITING_SCENARIO: &str = "numa-harness: waiting for a scenario";
const SCENARIO_RECEIVED: &str = "numa-harness: scenario received";

/// What a console line says about the boot's progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Xen is running (its banner).
    XenStarted,
    /// dom0 Linux reached the harness's init.
    Dom0Init,
    /// dom0's daemons run and init waits for its scenario: the moment a
    /// host is saved.
    AwaitingScenario,
    /// init has its scenario (whole, checked) and starts on it.
    ScenarioReceived,
    /// Xen panicked: the machine is gone.
    XenPanic,
    /// dom0 crashed or its init gave up, with the line that said so.
    Dom0Died(String),
    /// dom0 shut down or halted: its power-off after the result block,
    /// a death before it.
    Dom0Stopped(String),
    /// The result block begins.
    ResultBegin,
    /// The result block is complete.
    ResultEnd,
    /// After the block, init destroyed the scenario's domains; how many
    /// `xl destroy` calls failed.
    Teardown { failed: usize },
}

/// Whether a line is the result block's own (a step heading or an output
/// line): what scenario steps printed, never a message about the boot.
pub fn is_block_line(line: &str) -> bool {
    line.starts_with("### ") || (line.starts_with('|') && line[1..].split_once('|').is_some_and(|(n, _)| n.parse::<usize>().is_ok()))
}

/// Classifies one console line (without its line ending).
pub fn event(line: &str) -> Option<Event> {
    let line = line.trim_end();
    if line == RESULT_BEGIN {
        Some(Event::ResultBegin)
    } else if let Some(rest) = line.strip_prefix(TEARDOWN) {
        let failed = rest.split(", ").nth(1).and_then(|f| f.strip_suffix(" failed")).and_then(|n| n.parse().ok());
        // A line we cannot read counts as a failed teardown.
        Some(Event::Teardown { failed: failed.unwrap_or(usize::MAX) })
    } else if line.contains("(XEN) Hardware Dom0 halted") || line.contains("(XEN) Hardware Dom0 shutdown") {
        Some(Event::Dom0Stopped(strip_prefix(line).to_string()))
    } else if line.contains("(XEN) Xen version ") {
        Some(Event::XenStarted)
    } else if line.contains("numa-harness: dom0 init started") {
        Some(Event::Dom0Init)
    } else if line.contains(AWAITING_SCENARIO) {
        Some(Event::AwaitingScenario)
    } else if line.contains(SCENARIO_RECEIVED) {
        Some(Event::ScenarioReceived)
    } else if line.contains("(XEN) Panic on CPU") {
        Some(Event::XenPanic)
    } else if line.contains("Kernel panic - not syncing")
        || line.contains("(XEN) Hardware Dom0 crashed")
        || line.contains("numa-harness: init failed")
        || line.contains("rcu: INFO: rcu_preempt detected stalls")
        || line.contains("watchdog: BUG: soft lockup")
    {
        Some(Event::Dom0Died(strip_prefix(line).to_string()))
    } else if line.starts_with(RESULT_END) {
        Some(Event::ResultEnd)
    } else {
        None
    }
}

fn strip_prefix(line: &str) -> &str {
    line.trim()
}

/// What a step of dom0's init did (its `record` calls in
/// qemu-images/dom0/init).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// dom0's own set-up, e.g. pinning its vCPUs.
    Dom0,
    /// A cpupool made for the scenario.
    Cpupool,
    /// `xl create` of one of the scenario's domains.
    Create,
    /// `xl destroy` of one, in the scenario's plan.
    Destroy,
    /// Domains created and destroyed over and over (a plan's `churn`).
    Churn,
    /// `xl create` of a domain that must be refused (a plan's `refuse`).
    Refuse,
    /// Domains created and destroyed again and again, timed and their
    /// memory counted (a plan's `measure`).
    Measure,
    /// A test program that must exit 0.
    Check,
    /// Output the report is made from (`xl info -n`, the `u` key, ...).
    Collect,
}

impl StepKind {
    fn parse(word: &str) -> Option<StepKind> {
        Some(match word {
            "dom0" => StepKind::Dom0,
            "cpupool" => StepKind::Cpupool,
            "create" => StepKind::Create,
            "destroy" => StepKind::Destroy,
            "churn" => StepKind::Churn,
            "refuse" => StepKind::Refuse,
            "measure" => StepKind::Measure,
            "check" => StepKind::Check,
            "collect" => StepKind::Collect,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Dom0 => "dom0",
            StepKind::Cpupool => "cpupool",
            StepKind::Create => "create",
            StepKind::Destroy => "destroy",
            StepKind::Churn => "churn",
            StepKind::Refuse => "refuse",
            StepKind::Measure => "measure",
            StepKind::Check => "check",
            StepKind::Collect => "collect",
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of the scenario as the result block reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub name: String,
    pub rc: i32,
    pub output: Vec<String>,
}

/// A step while its numbered lines are gathered.
struct Partial {
    step: Step,
    lines: usize,
    got: std::collections::BTreeMap<usize, String>,
}

impl Partial {
    /// Checks that every numbered line arrived; a line the console repeated
    /// counts once.
    fn finish(self) -> Result<Step> {
        let Partial { mut step, lines, got } = self;
        if let Some(n) = (1..=lines).find(|n| !got.contains_key(n)) {
            bail!(
                "the console lost line {n} of {lines} of step `{} {}`",
                step.kind,
                step.name
            );
        }
        if got.len() != lines {
            bail!("step `{} {}` has more lines than the {lines} it announced", step.kind, step.name);
        }
        step.output = got.into_values().collect();
        Ok(step)
    }
}

/// Xen shares the serial line: a message of its own (seen: "(XEN) uart
/// interrupt taking more than 4ms, switched to polling") can land inside any
/// line of the result block and runs to its end. The block's own lines hold
/// "(XEN) " only where an output line's text starts with it (a line of `xl
/// dmesg`), so such a line ends where the message begins.
fn without_xen_message(line: &str) -> &str {
    if !line.starts_with(['|', '#', '=']) {
        return line;
    }
    // Where an output line's text starts: past "|N| ".
    let text = line.strip_prefix('|').and_then(|r| r.split_once('|')).map_or(0, |(n, _)| n.len() + 3);
    match line.get(text + 1..).and_then(|t| t.find("(XEN) ")) {
        Some(i) => &line[..text + 1 + i],
        None => line,
    }
}

/// The steps in the console's result block. Lines that are not part of the
/// block (kernel or Xen messages printed meanwhile) are skipped.
pub fn result_block(console: &str) -> Result<Vec<Step>> {
    let mut lines = console.lines().map(|l| without_xen_message(l.trim_end_matches('\r')));
    if !lines.any(|l| l == RESULT_BEGIN) {
        bail!("the console has no result block (no line {RESULT_BEGIN:?})");
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut current: Option<Partial> = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix(RESULT_END) {
            if let Some(p) = current.take() {
                steps.push(p.finish()?);
            }
            let malformed = || anyhow::anyhow!("malformed result end line {line:?} (want `<S> steps, <N> failed ====`)");
            let (total, failed) = rest.strip_suffix(" failed ====").and_then(|r| r.split_once(" steps, ")).ok_or_else(malformed)?;
            let (total, failed): (usize, usize) = (total.parse().map_err(|_| malformed())?, failed.parse().map_err(|_| malformed())?);
            if total != steps.len() {
                bail!("the result block says it has {total} steps, but holds {}: steps were lost", steps.len());
            }
            let counted = steps.iter().filter(|s| s.rc != 0).count();
            if failed != counted {
                bail!("the result block says {failed} steps failed, but holds {counted} failed steps: lines were lost");
            }
            return Ok(steps);
        }
        if let Some(head) = line.strip_prefix("### ") {
            let bad = || anyhow::anyhow!("malformed step line {line:?}");
            let w: Vec<&str> = head.split_whitespace().collect();
            let [kind, name, rc, count] = w[..] else { return Err(bad()) };
            let kind = StepKind::parse(kind).ok_or_else(|| anyhow::anyhow!("unknown step kind in {line:?} (dom0, cpupool, create, destroy, check or collect)"))?;
            let rc = rc.strip_prefix("rc=").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let count = count.strip_prefix("lines=").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            if current.as_ref().is_some_and(|p| p.step.kind == kind && p.step.name == name) {
                // The console repeated the step's heading.
                continue;
            }
            if let Some(p) = current.take() {
                steps.push(p.finish()?);
            }
            current = Some(Partial {
                step: Step { kind, name: name.into(), rc, output: Vec::new() },
                lines: count,
                got: Default::default(),
            });
        } else if let Some(rest) = line.strip_prefix('|') {
            let Some((n, text)) = rest.split_once('|').and_then(|(n, t)| Some((n.parse::<usize>().ok()?, t))) else {
                continue;
            };
            let text = text.strip_prefix(' ').unwrap_or(text).to_string();
            let Some(p) = current.as_mut() else {
                bail!("output line before the first step: {line:?}");
            };
            match p.got.get(&n) {
                Some(seen) if *seen != text => bail!(
                    "line {n} of step `{} {}` arrived twice, differently: {seen:?} and {text:?}",
                    p.step.kind,
                    p.step.name
                ),
                _ => {
                    p.got.insert(n, text);
                }
            }
        }
    }
    bail!("the result block is not complete (no line starting {RESULT_END:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From a real boot (master, unequal-nodes, default): Xen's serial
    /// driver wrote its message into a line of `xl vcpu-list`.
    #[test]
    fn xen_message_inside_a_block_line() {
        let console = "==== numa-harness result begin ====\n### collect xl-vcpu-list rc=0 lines=2\n\
            |1| (XEN) not cut at the start\n\
            |2| unpinned 2 0 - --p 0.0 all / 0-1(XEN) uart interrupt taking more than 4ms, switched to polling\n\
            ==== numa-harness result end: 1 steps, 0 failed ====\n";
        let steps = result_block(console).unwrap();
        assert_eq!(steps[0].output, ["(XEN) not cut at the start", "unpinned 2 0 - --p 0.0 all / 0-1"]);
    }

    /// From a real boot (master, baseline, two-node, creation-cost): the
    /// same message landed in a step's heading, which must still parse.
    #[test]
    fn xen_message_inside_a_step_line() {
        let console = "==== numa-harness result begin ====(XEN) uart interrupt taking more than 4ms, switched to polling\n\
            ### dom0 vcpu-pin rc=0 lines=0(XEN) uart interrupt taking more than 4ms, switched to polling\n\
            ### collect xl-info rc=0 lines=1\n|1| nr_nodes : 2\n\
            ==== numa-harness result end: 2 steps, 0 failed ====(XEN) uart interrupt taking more than 4ms, switched to polling\n";
        let steps = result_block(console).unwrap();
        assert_eq!((steps[0].kind, steps[0].name.as_str(), steps[0].rc), (StepKind::Dom0, "vcpu-pin", 0));
        assert_eq!(steps[1].output, ["nr_nodes : 2"]);
    }

    #[test]
    fn events() {
        assert_eq!(event("(XEN) Xen version 4.17.5 (root@) (gcc) debug=n Mon"), Some(Event::XenStarted));
        assert_eq!(event("(XEN) Panic on CPU 0:\r"), Some(Event::XenPanic));
        assert_eq!(
            event("[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"),
            Some(Event::Dom0Died("[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100".into()))
        );
        assert_eq!(event("numa-harness: init failed: xenstored").map(|_| ()), Some(()));
        // A stalled dom0 never gets to its result block: stop at once.
        assert!(matches!(event("[   32.6] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"), Some(Event::Dom0Died(_))));
        assert_eq!(event("(XEN) d1v0 some message"), None);
        assert_eq!(event("numa-harness: teardown: 2 destroyed, 0 failed"), Some(Event::Teardown { failed: 0 }));
        assert_eq!(event("numa-harness: teardown: 1 destroyed, 1 failed"), Some(Event::Teardown { failed: 1 }));
        assert_eq!(event("numa-harness: teardown: garbled"), Some(Event::Teardown { failed: usize::MAX }));
        assert!(matches!(event("(XEN) Hardware Dom0 shutdown: rebooting machine"), Some(Event::Dom0Stopped(_))));
        assert!(is_block_line("|12| Kernel panic - not syncing: printed by a check"));
        assert!(is_block_line("### check x rc=0 lines=1"));
        assert!(!is_block_line("|x| not numbered"));
        assert!(!is_block_line("[ 3.1] Kernel panic - not syncing: VFS"));
    }

    #[test]
    fn block_with_noise_and_repeats() {
        let console = "boot noise\r\n==== numa-harness result begin ====\r\n### create a rc=0 lines=0\r\n\
            ### collect xl-list rc=0 lines=3\r\n|1| Name ID\r\n(XEN) interleaved\r\n|1| Name ID\r\n|2| Domain-0 0\r\n|3| \r\n\
            ### collect xl-info rc=1 lines=1\r\n### collect xl-info rc=1 lines=1\r\n|1| oops\r\n\
            ==== numa-harness result end: 3 steps, 1 failed ====\r\n";
        let steps = result_block(console).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].output, ["Name ID", "Domain-0 0", ""]);
        assert_eq!(steps[2].rc, 1);
        assert_eq!(steps[2].output, ["oops"]);
    }

    #[test]
    fn lost_and_garbled_lines() {
        let block = |body: &str| format!("{RESULT_BEGIN}\n{body}\n==== numa-harness result end: 1 steps, 0 failed ====\n");
        let err = result_block(&block("### collect x rc=0 lines=3\n|1| a\n|3| c")).unwrap_err();
        assert_eq!(err.to_string(), "the console lost line 2 of 3 of step `collect x`");
        let err = result_block(&block("### collect x rc=0 lines=1\n|1| a\n|1| b")).unwrap_err();
        assert!(err.to_string().starts_with("line 1 of step `collect x` arrived twice, differently"), "{err}");
        let err = result_block(&block("### collect x rc=0\n")).unwrap_err();
        assert!(err.to_string().starts_with("malformed step line"), "{err}");
        let err = result_block(&block("### colect x rc=0 lines=0\n")).unwrap_err();
        assert!(err.to_string().starts_with("unknown step kind in \"### colect x rc=0 lines=0\""), "{err}");
    }

    #[test]
    fn incomplete_block() {
        assert!(result_block("no block\n").unwrap_err().to_string().contains("no result block"));
        let err = result_block("==== numa-harness result begin ====\n### create a rc=0 lines=0\n").unwrap_err();
        assert!(err.to_string().contains("not complete"), "{err}");
        let err = result_block("==== numa-harness result begin ====\n### create a rc=0 lines=0\n==== numa-harness result end: 1 steps, 1 failed ====\n").unwrap_err();
        assert!(err.to_string().contains("lines were lost"), "{err}");
        let err = result_block("==== numa-harness result begin ====\n### create a rc=0 lines=0\n==== numa-harness result end: 2 steps, 0 failed ====\n").unwrap_err();
        assert_eq!(err.to_string(), "the result block says it has 2 steps, but holds 1: steps were lost");
        let err = result_block("==== numa-harness result begin ====\n==== numa-harness result end: 0 failed ====\n").unwrap_err();
        assert!(err.to_string().starts_with("malformed result end line"), "{err}");
    }
}
