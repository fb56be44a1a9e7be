//! Evidence: the figures a reviewer of the series asks for, measured on
//! both builds of a base, as a Markdown report with one picture per
//! topology and scenario (`cargo xtask evidence`, written under `docs/`).
//! Every figure comes from the typed reports the snapshots hold.

pub mod cost;
pub mod figures;
pub mod locality;
pub mod markdown;
pub mod svg;

use anyhow::{bail, Result};

use crate::report::Report;
use crate::timings::Timing;

/// One topology and scenario, booted on both builds.
#[derive(Debug, Clone)]
pub struct Pair {
    pub baseline: Report,
    pub patched: Report,
}

impl Pair {
    pub fn new(baseline: Report, patched: Report) -> Result<Pair> {
        if baseline.build != "baseline" || patched.build != "patched" {
            bail!("a pair is a baseline and a patched report, not {} and {}", baseline.build, patched.build);
        }
        if (&baseline.topology, &baseline.scenario) != (&patched.topology, &patched.scenario) {
            bail!(
                "the reports are of {}/{} and {}/{}, not one topology and scenario",
                baseline.topology,
                baseline.scenario,
                patched.topology,
                patched.scenario
            );
        }
        Ok(Pair { baseline, patched })
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.baseline.topology, self.baseline.scenario)
    }

    /// The picture's file name.
    pub fn svg_file(&self) -> String {
        format!("{}__{}.svg", self.baseline.topology, self.baseline.scenario)
    }

    pub fn reports(&self) -> [&Report; 2] {
        [&self.baseline, &self.patched]
    }
}

/// Who made the report, with what, where.
#[derive(Debug, Clone)]
pub struct Header {
    /// The command that regenerates it.
    pub command: String,
    pub base: String,
    /// The base's pinned Xen commit.
    pub xen_commit: String,
    /// The harness's own commit (`git describe --always --dirty`).
    pub harness_commit: String,
    /// CPU model, cores, accelerator.
    pub machine: String,
    /// What the clock of the boots that time commands counts.
    pub clock: String,
}

/// The harness's own times the report lists, each kept when it was
/// measured (see [`crate::timings`]).
#[derive(Debug, Clone, Default)]
pub struct OwnTimes {
    /// The two builds the report's boots ran on; `None` for one built
    /// before the harness kept build times.
    pub builds: Vec<(String, Option<Timing>)>,
    /// The latest run on this machine of each command the README names.
    pub commands: Vec<Timing>,
    /// Where the report's boots spent their time
    /// ([`crate::runner::time_summary`]).
    pub boots: Option<String>,
}

/// Counted structures over several domains: on the home nodes, and listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    pub local: u32,
    pub listed: u32,
}

impl Share {
    pub fn of(report: &Report) -> Result<Share> {
        let mut s = Share::default();
        for d in locality::of_report(report)? {
            s.local += d.local;
            s.listed += d.listed();
        }
        Ok(s)
    }

    pub fn add(self, other: Share) -> Share {
        Share { local: self.local + other.local, listed: self.listed + other.listed }
    }

    /// `12 of 15 (80%)`, or `none listed`.
    pub fn text(self) -> String {
        if self.listed == 0 {
            return "none listed".into();
        }
        format!("{} of {} ({}%)", self.local, self.listed, (self.local * 100 + self.listed / 2) / self.listed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::Booted;
    use crate::scenario::Scenario;
    use crate::topology::Topology;
    use crate::{console, paths};

    /// A pair from the captured consoles `<name>-baseline.console.log` and
    /// `<name>-patched.console.log` of two-node/node1-from-node0.
    /// (`pair_of` for another scenario.)
    pub fn pair(name: &str) -> Pair {
        pair_of(name, "node1-from-node0")
    }

    /// The same for another scenario on two-node.
    pub fn pair_of(name: &str, scenario: &str) -> Pair {
        let t = Topology::load(&paths::images_dir().join("topologies/two-node.yaml")).unwrap();
        let s = Scenario::load(&paths::images_dir().join(format!("scenarios/{scenario}.yaml")), &t).unwrap();
        let [b, p] = ["baseline", "patched"].map(|build| {
            let path = paths::repo().join("harness/tests/fixtures").join(format!("{name}-{build}.console.log"));
            let text = std::fs::read_to_string(&path).unwrap();
            let booted = Booted {
                base: "master".into(),
                build: build.into(),
                xen_tree: None,
                dom0_kernel: "linux-image-6.1.0-57-amd64 6.1.192-3".into(),
                busybox: "1:1.35.0-4+deb12u1+b1".into(),
            };
            Report::new(&t, &s, booted, &console::result_block(&text).unwrap()).unwrap()
        });
        Pair::new(b, p).unwrap()
    }

    /// The shares the captured boots give: pv-node1 and pvh-node1 confined
    /// to node 1 by a toolstack on node 0.
    #[test]
    fn shares_of_the_captured_boots() {
        let pair = pair("two-node-node1-from-node0-master");
        let [b, p] = pair.reports().map(|r| locality::of_report(r).unwrap());
        let names: Vec<&str> = b.iter().map(|l| l.domain.as_str()).collect();
        assert_eq!(names, ["pv-node1", "pvh-node1"], "dom0's node affinity is automatic: not counted");
        // Without the series nothing: struct domain, shared_info, the grant
        // table's frames, the event channels and struct vcpu on node 0, the
        // small objects in the xmalloc pool...
        assert_eq!((b[0].local, b[0].remote, b[0].unplaced), (0, 5, 3));
        // ... with it, every listed structure.
        assert_eq!((p[0].local, p[0].remote, p[0].unplaced), (8, 0, 0));
        assert_eq!(Share::of(&pair.patched).unwrap(), Share { local: 19, listed: 19 });
        assert_eq!(Share { local: 2, listed: 3 }.text(), "2 of 3 (67%)");
        assert_eq!(Share::default().text(), "none listed");
    }

    #[test]
    fn a_pair_is_one_scenario_on_both_builds() {
        let p = pair("two-node-node1-from-node0-master");
        let e = Pair::new(p.patched.clone(), p.baseline.clone()).unwrap_err().to_string();
        assert_eq!(e, "a pair is a baseline and a patched report, not patched and baseline");
        let mut other = p.patched.clone();
        other.scenario = "default".into();
        let e = Pair::new(p.baseline.clone(), other).unwrap_err().to_string();
        assert_eq!(e, "the reports are of two-node/node1-from-node0 and two-node/default, not one topology and scenario");
    }
}
