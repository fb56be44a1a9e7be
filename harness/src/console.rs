//! Reading the serial console: what each line tells about the boot, and the
//! result block dom0's init prints (format described in
//! qemu-images/dom0/init).

use anyhow::{bail, Result};

pub const RESULT_BEGIN: &str = "==== numa-harness result begin ====";
const RESULT_END: &str = "==== numa-harness result end: ";

/// What a console line says about the boot's progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Xen is running (its banner).
    XenStarted,
    /// dom0 Linux reached the harness's init.
    Dom0Init,
    /// Xen panicked: the machine is gone.
    XenPanic,
    /// dom0 crashed or its init gave up, with the line that said so.
    Dom0Died(String),
    /// The result block is complete.
    ResultEnd,
}

/// Classifies one console line (without its line ending).
pub fn event(line: &str) -> Option<Event> {
    let line = line.trim_end();
    if line.contains("(XEN) Xen version ") {
        Some(Event::XenStarted)
    } else if line.contains("numa-harness: dom0 init started") {
        Some(Event::Dom0Init)
    } else if line.contains("(XEN) Panic on CPU") {
        Some(Event::XenPanic)
    } else if line.contains("Kernel panic - not syncing")
        || line.contains("(XEN) Hardware Dom0 crashed")
        || line.contains("(XEN) Hardware Dom0 halted")
        || line.contains("(XEN) Hardware Dom0 shutdown")
        || line.contains("numa-harness: init failed")
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

/// One step of the scenario as the result block reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `create` or `collect`.
    pub kind: String,
    pub name: String,
    pub rc: i32,
    pub output: Vec<String>,
}

/// The steps in the console's result block. Lines that are not part of the
/// block (kernel or Xen messages printed meanwhile) are skipped.
pub fn result_block(console: &str) -> Result<Vec<Step>> {
    let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
    if !lines.any(|l| l == RESULT_BEGIN) {
        bail!("the console has no result block (no line {RESULT_BEGIN:?})");
    }
    let mut steps: Vec<Step> = Vec::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix(RESULT_END) {
            let failed: usize = rest
                .trim_end_matches(" failed ====")
                .parse()
                .map_err(|_| anyhow::anyhow!("malformed result end line {line:?}"))?;
            let counted = steps.iter().filter(|s| s.rc != 0).count();
            if failed != counted {
                bail!("the result block says {failed} steps failed, but holds {counted} failed steps: lines were lost");
            }
            return Ok(steps);
        }
        if let Some(head) = line.strip_prefix("### ") {
            let mut words = head.split_whitespace();
            let (Some(kind), Some(name), Some(rc)) = (words.next(), words.next(), words.next()) else {
                bail!("malformed step line {line:?}");
            };
            let rc = rc
                .strip_prefix("rc=")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("malformed step line {line:?}"))?;
            steps.push(Step { kind: kind.into(), name: name.into(), rc, output: Vec::new() });
        } else if let Some(out) = line.strip_prefix("| ").or(if line == "|" { Some("") } else { None }) {
            match steps.last_mut() {
                Some(step) => step.output.push(out.to_string()),
                None => bail!("output line before the first step: {line:?}"),
            }
        }
    }
    bail!("the result block is not complete (no line starting {RESULT_END:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events() {
        assert_eq!(event("(XEN) Xen version 4.17.5 (root@) (gcc) debug=n Mon"), Some(Event::XenStarted));
        assert_eq!(event("(XEN) Panic on CPU 0:\r"), Some(Event::XenPanic));
        assert_eq!(
            event("[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"),
            Some(Event::Dom0Died("[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100".into()))
        );
        assert_eq!(event("numa-harness: init failed: xenstored").map(|_| ()), Some(()));
        assert_eq!(event("(XEN) d1v0 some message"), None);
    }

    #[test]
    fn block_with_noise() {
        let console = "boot noise\r\n==== numa-harness result begin ====\r\n### create a rc=0\r\n\
            ### collect xl-list rc=0\r\n| Name ID\r\n(XEN) interleaved\r\n| Domain-0 0\r\n|\r\n\
            ### collect xl-info rc=1\r\n| oops\r\n==== numa-harness result end: 1 failed ====\r\n";
        let steps = result_block(console).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].output, ["Name ID", "Domain-0 0", ""]);
        assert_eq!(steps[2].rc, 1);
    }

    #[test]
    fn incomplete_block() {
        assert!(result_block("no block\n").unwrap_err().to_string().contains("no result block"));
        let err = result_block("==== numa-harness result begin ====\n### create a rc=0\n").unwrap_err();
        assert!(err.to_string().contains("not complete"), "{err}");
        let err = result_block("==== numa-harness result begin ====\n### create a rc=0\n==== numa-harness result end: 1 failed ====\n").unwrap_err();
        assert!(err.to_string().contains("lines were lost"), "{err}");
    }
}
