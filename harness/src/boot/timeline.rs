//! Where a boot's time goes: the points of a boot seen on the console (or
//! reached by the harness: a state saved, a state loaded), when each was
//! first reached, and the phases between them. Written beside each
//! console log as `timeline.txt`.

use std::fmt;
use std::time::Duration;

use crate::console::Event;

/// The file beside a console log with its boot's [`Timeline`].
pub const FILE: &str = "timeline.txt";

/// Points of a boot, in the order they come. A host is booted up to
/// [`Milestone::Saved`]; a run restored from its state starts at
/// [`Milestone::Restored`]; a boot that is not saved (interactive, or
/// timing creation) passes from [`Milestone::AwaitingScenario`] straight
/// to [`Milestone::ScenarioReceived`].
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
    /// dom0 waits for its scenario on its second serial line.
    AwaitingScenario,
    /// The stopped machine's state is in its file.
    Saved,
    /// A saved state is loaded and the machine runs again.
    Restored,
    /// dom0 has the scenario (checked) and starts on it.
    ScenarioReceived,
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
    pub const ALL: [Milestone; 12] = [
        Milestone::XenStarted,
        Milestone::XenBooted,
        Milestone::Dom0Init,
        Milestone::DaemonsStarted,
        Milestone::AwaitingScenario,
        Milestone::Saved,
        Milestone::Restored,
        Milestone::ScenarioReceived,
        Milestone::ScenarioDone,
        Milestone::ResultEnd,
        Milestone::TornDown,
        Milestone::Stopped,
    ];

    /// The milestone a console line marks: the watcher's own events where
    /// it has one for the line, else one of the lines only the timeline
    /// needs.
    pub fn of(line: &str, event: Option<&Event>) -> Option<Milestone> {
        match event {
            Some(Event::XenStarted) => return Some(Milestone::XenStarted),
            Some(Event::Dom0Init) => return Some(Milestone::Dom0Init),
            Some(Event::AwaitingScenario) => return Some(Milestone::AwaitingScenario),
            Some(Event::ScenarioReceived) => return Some(Milestone::ScenarioReceived),
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
            Milestone::AwaitingScenario => "awaiting-scenario",
            Milestone::Saved => "saved",
            Milestone::Restored => "restored",
            Milestone::ScenarioReceived => "scenario-received",
            Milestone::ScenarioDone => "scenario-done",
            Milestone::ResultEnd => "result-printed",
            Milestone::TornDown => "torn-down",
            Milestone::Stopped => "stopped",
        }
    }
}

/// When each milestone was first reached, from QEMU's start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timeline(Vec<(Milestone, Duration)>);

/// The phases a summary names, each between the first of its starts that
/// the boot reached (QEMU's start where none is given) and its end.
const PHASES: &[(&str, &[Milestone], Milestone)] = {
    use Milestone::*;
    &[
        ("QEMU and Xen loading", &[], XenStarted),
        ("Xen booting", &[XenStarted], XenBooted),
        ("dom0 kernel booting", &[XenBooted], Dom0Init),
        ("Xen daemons starting", &[Dom0Init], DaemonsStarted),
        ("host state saved", &[AwaitingScenario], Saved),
        ("host state loaded", &[], Restored),
        (
            "scenario delivered",
            &[Restored, AwaitingScenario],
            ScenarioReceived,
        ),
        ("scenario", &[ScenarioReceived], ScenarioDone),
        ("result block printed", &[ScenarioDone], ResultEnd),
        ("domains destroyed", &[ResultEnd], TornDown),
        ("power-off", &[TornDown], Stopped),
    ]
};

/// Where a phase (by name) comes in a boot: summaries list phases in
/// this order.
pub fn phase_order(name: &str) -> usize {
    PHASES
        .iter()
        .position(|(n, _, _)| *n == name)
        .unwrap_or(PHASES.len())
}

impl Timeline {
    pub fn reach(&mut self, m: Milestone, at: Duration) {
        if !self.0.iter().any(|(seen, _)| *seen == m) {
            self.0.push((m, at));
        }
    }

    pub fn get(&self, m: Milestone) -> Option<Duration> {
        self.0
            .iter()
            .find(|(seen, _)| *seen == m)
            .map(|(_, at)| *at)
    }

    /// The time between consecutive milestones, named for what the boot
    /// did in it; a phase whose ends were not both seen is left out.
    pub fn phases(&self) -> Vec<(&'static str, Duration)> {
        PHASES
            .iter()
            .filter_map(|&(name, from, to)| {
                let start = match from {
                    [] => Duration::ZERO,
                    _ => from.iter().find_map(|&m| self.get(m))?,
                };
                Some((name, self.get(to)?.checked_sub(start)?))
            })
            .collect()
    }

    /// Reads what [`Timeline`]'s `Display` wrote.
    pub fn parse(text: &str) -> Timeline {
        let mut t = Timeline::default();
        for line in text.lines() {
            let Some((name, secs)) = line.split_once(' ') else {
                continue;
            };
            let Some(m) = Milestone::ALL.into_iter().find(|m| m.name() == name) else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A host boot saved once dom0 waits, and a run restored from it,
    /// each with the phases it went through.
    #[test]
    fn phases_of_a_host_and_a_restored_run() {
        let host = Timeline::parse("xen-started 0.2\nxen-booted 4.6\ndom0-init 12.6\ndaemons-started 13.0\nawaiting-scenario 13.1\nsaved 15.0\n");
        let names = |t: &Timeline| {
            t.phases()
                .into_iter()
                .map(|(n, d)| format!("{n} {:.1}", d.as_secs_f64()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&host),
            [
                "QEMU and Xen loading 0.2",
                "Xen booting 4.4",
                "dom0 kernel booting 8.0",
                "Xen daemons starting 0.4",
                "host state saved 1.9"
            ]
        );
        let run = Timeline::parse("restored 1.1\nscenario-received 2.0\nscenario-done 5.5\nresult-printed 5.6\ntorn-down 6.0\nstopped 6.5\n");
        assert_eq!(
            names(&run),
            [
                "host state loaded 1.1",
                "scenario delivered 0.9",
                "scenario 3.5",
                "result block printed 0.1",
                "domains destroyed 0.4",
                "power-off 0.5"
            ]
        );
        assert_eq!(Timeline::parse(&run.to_string()), run);
    }

    /// A boot that is not saved receives its scenario once dom0 waits.
    #[test]
    fn a_full_boot_is_delivered_its_scenario_once_dom0_waits() {
        let t =
            Timeline::parse("xen-started 0.2\nawaiting-scenario 13.1\nscenario-received 13.3\n");
        assert_eq!(t.phases()[1].0, "scenario delivered");
        assert!((t.phases()[1].1.as_secs_f64() - 0.2).abs() < 1e-9);
    }
}
