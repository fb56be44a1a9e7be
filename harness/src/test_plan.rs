//! What `cargo xtask test` runs: every test by name, in a fixed order, and
//! the selection a run makes of them: name filters in the style of `cargo
//! test`, and shards (`--shard i/n`) that split the selection across
//! machines so that the shards together run each test exactly once.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Result};

use crate::patch::Flavor;

/// One test, by what it exercises.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The harness's own unit tests (`cargo test`).
    Unit,
    /// The CI files in `ci/`, through actionlint, zizmor and
    /// check-jsonschema.
    Lint,
    /// A base's patch series: form, `git am`, every patch building.
    Series { base: String },
    /// One build of a base booted with one topology and scenario, its
    /// report compared with its snapshot.
    Boot { base: String, topology: PathBuf, scenario: PathBuf, flavor: Flavor },
    /// A scenario's report is the same whichever scenarios ran before it
    /// on its saved host (see `independence`).
    Independence { base: String },
    /// A way a source reaches a build (upstream git, a contributor's
    /// checkout), built and booted.
    Source { base: String, what: &'static str },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    /// `master/two-node/default/patched`, `master/series`, `unit`, ...
    pub name: String,
    pub kind: Kind,
    /// What the test costs, in seconds of a 2-core machine under TCG
    /// (estimated, see [`Cost`]): shards are balanced by it.
    pub cost: u32,
    /// Tests that share a machine: boots of one host (base, build,
    /// topology and Xen command line), which a shard boots once for all
    /// of them. A shard takes a group whole.
    pub group: Option<String>,
}

/// What tests cost, measured on this project's 2-core machines under TCG
/// with warm builds (the README's "How long it takes"), rounded: the shards
/// are balanced by these, and a group of boots adds the boot of its host.
pub struct Cost;

impl Cost {
    /// The harness's unit tests, compiled.
    pub const UNIT: u32 = 60;
    pub const LINT: u32 = 20;
    /// A series check with nothing cached (both builds made on the way).
    pub const SERIES: u32 = 1500;
    /// A scenario restored from its saved host: loading, the scenario's
    /// steps, the report, teardown.
    pub const RESTORED: u32 = 8;
    /// Booting a host and saving it, once per group.
    pub const HOST: u32 = 16;
    /// The source tests: a build of their own, and a boot.
    pub const SOURCE: u32 = 240;
    pub const INDEPENDENCE: u32 = 45;
}

impl Test {
    pub fn unit() -> Test {
        Test { name: "unit".into(), kind: Kind::Unit, cost: Cost::UNIT, group: None }
    }

    pub fn lint() -> Test {
        Test { name: "lint".into(), kind: Kind::Lint, cost: Cost::LINT, group: None }
    }

    pub fn series(base: &str) -> Test {
        Test { name: format!("{base}/series"), kind: Kind::Series { base: base.into() }, cost: Cost::SERIES, group: None }
    }

    /// A boot of `flavor` with a topology and a scenario; `host` names
    /// what of the scenario goes into the host it runs on (its additions
    /// to Xen's command line), and `steps` what its own steps cost beyond
    /// [`Cost::RESTORED`].
    pub fn boot(base: &str, topology: (&str, PathBuf), scenario: (&str, PathBuf), flavor: Flavor, host: &str, steps: u32) -> Test {
        Test {
            name: format!("{base}/{}/{}/{flavor}", topology.0, scenario.0),
            group: Some(format!("{base}/{flavor}/{}/{host}", topology.0)),
            kind: Kind::Boot { base: base.into(), topology: topology.1, scenario: scenario.1, flavor },
            cost: Cost::RESTORED + steps,
        }
    }

    pub fn independence(base: &str) -> Test {
        Test {
            name: format!("{base}/{}", crate::independence::NAME),
            kind: Kind::Independence { base: base.into() },
            cost: Cost::INDEPENDENCE,
            group: None,
        }
    }

    pub fn source(base: &str, what: &'static str) -> Test {
        Test { name: format!("{base}/source/{what}"), kind: Kind::Source { base: base.into(), what }, cost: Cost::SOURCE, group: None }
    }
}

/// `--shard i/n`: the `index`-th (from 1) of `count` parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?} is not a shard: write i/n with 1 <= i <= n, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Which tests a run takes.
#[derive(Debug, Default)]
pub struct Selection {
    /// A test runs if its name contains one of these (equals one, with
    /// `exact`); no filter takes every test.
    pub filters: Vec<String>,
    pub exact: bool,
    /// A test whose name contains one of these (equals one, with `exact`)
    /// does not run, whatever the filters say.
    pub skip: Vec<String>,
    pub shard: Option<Shard>,
}

/// The tests a run takes, and what it leaves out and why.
#[derive(Debug)]
pub struct Chosen {
    pub run: Vec<Test>,
    pub filtered_out: usize,
    pub other_shards: usize,
}

impl Selection {
    fn matches(&self, name: &str) -> bool {
        let hit = |f: &String| if self.exact { name == f } else { name.contains(f.as_str()) };
        (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skip.iter().any(hit)
    }

    /// The tests of `plan` this run takes, in plan order. The shard split
    /// is made after filtering, by cost: the boots of one host stay
    /// together, and each group of tests (or test on its own) goes, the
    /// costliest first, to the shard with the least so far (the lowest
    /// index on a tie). The split depends only on the selected tests, so
    /// the shards of one filtered run together take each of its tests
    /// exactly once.
    pub fn choose(&self, plan: Vec<Test>) -> Result<Chosen> {
        let total = plan.len();
        let matching: Vec<Test> = plan.into_iter().filter(|t| self.matches(&t.name)).collect();
        if matching.is_empty() && !self.filters.is_empty() {
            bail!(
                "no test name {} {}; `cargo xtask test --list` prints them all",
                if self.exact { "equals" } else { "contains" },
                self.filters.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
            );
        }
        let filtered_out = total - matching.len();
        let n = matching.len();
        let run: Vec<Test> = match self.shard {
            None => matching,
            Some(s) => {
                let shard_of = balance(&matching, s.count);
                matching.into_iter().zip(shard_of).filter(|(_, of)| *of == s.index - 1).map(|(t, _)| t).collect()
            }
        };
        Ok(Chosen { other_shards: n - run.len(), filtered_out, run })
    }
}

/// The shard (from 0) of each test: groups (a test without a group is
/// one of its own) in order of cost, the costliest first, each to the
/// shard with the least cost so far.
fn balance(tests: &[Test], shards: usize) -> Vec<usize> {
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    let mut by_name: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (i, t) in tests.iter().enumerate() {
        match t.group.as_deref() {
            Some(g) => {
                let at = *by_name.entry(g).or_insert_with(|| {
                    groups.push((Cost::HOST, Vec::new()));
                    groups.len() - 1
                });
                groups[at].0 += t.cost;
                groups[at].1.push(i);
            }
            None => groups.push((t.cost, vec![i])),
        }
    }
    // Stable: equal costs keep plan order.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(groups[g].0));
    let mut load = vec![0u64; shards];
    let mut shard_of = vec![0; tests.len()];
    for g in order {
        let least = (0..shards).min_by_key(|&s| (load[s], s)).expect("at least one shard");
        load[least] += u64::from(groups[g].0);
        for &i in &groups[g].1 {
            shard_of[i] = least;
        }
    }
    shard_of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<Test> {
        let mut plan = vec![Test::unit(), Test::lint()];
        for base in ["master", "stable-4.17"] {
            plan.push(Test::series(base));
            for topology in ["four-node", "two-node"] {
                for scenario in ["default", "dom0-nodes1", "flask-enforcing"] {
                    for flavor in Flavor::ALL {
                        let t = (topology, PathBuf::from(format!("{topology}.yaml")));
                        let s = (scenario, PathBuf::from(format!("{scenario}.yaml")));
                        plan.push(Test::boot(base, t, s, flavor, "-", 1));
                    }
                }
            }
        }
        plan.push(Test::source("master", "upstream-git"));
        plan
    }

    fn names(tests: &[Test]) -> Vec<&str> {
        tests.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn shard_parses() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "1/0", "1", "a/b", "1/2/3"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("is not a shard: write i/n"), "{bad}: {err}");
        }
    }

    #[test]
    fn filters_take_parts_of_names() {
        let sel = Selection { filters: vec!["default".into()], ..Default::default() };
        let chosen = sel.choose(plan()).unwrap();
        assert_eq!(chosen.run.len(), 8);
        assert!(chosen.run.iter().all(|t| matches!(t.kind, Kind::Boot { .. }) && t.name.contains("/default/")));
        assert_eq!(chosen.filtered_out, plan().len() - 8);

        let sel = Selection { filters: vec!["master/two-node/".into(), "unit".into()], ..Default::default() };
        assert_eq!(names(&sel.choose(plan()).unwrap().run)[..2], ["unit", "master/two-node/default/baseline"]);

        let exact = Selection { filters: vec!["master/series".into(), "master".into()], exact: true, ..Default::default() };
        assert_eq!(names(&exact.choose(plan()).unwrap().run), ["master/series"]);
    }

    #[test]
    fn skipped_tests_do_not_run() {
        let sel = Selection { filters: vec!["master/".into()], skip: vec!["/series".into(), "four-node".into()], ..Default::default() };
        let names = names(&sel.choose(plan()).unwrap().run).iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(names.iter().all(|n| n.starts_with("master/two-node/") || n.starts_with("master/source/")), "{names:?}");
        assert_eq!(names.len(), 7);
    }

    /// The boots of one host land on one shard, and the shards' costs are
    /// as even as the groups allow.
    #[test]
    fn shards_keep_hosts_together_and_balance_cost() {
        let plan = plan();
        for count in 1..=4 {
            let mut loads = Vec::new();
            for index in 1..=count {
                let run = Selection { shard: Some(Shard { index, count }), ..Default::default() }.choose(plan.clone()).unwrap().run;
                for t in &run {
                    if let Some(g) = &t.group {
                        assert!(run.iter().filter(|o| o.group.as_ref() == Some(g)).count() == plan.iter().filter(|o| o.group.as_ref() == Some(g)).count(), "{g} split");
                    }
                }
                loads.push(run.iter().map(|t| t.cost).sum::<u32>());
            }
            // The two series checks dominate: each takes a shard of its own once there are two.
            if count >= 2 {
                assert!(loads.iter().filter(|&&l| l >= Cost::SERIES).count() == 2.min(count), "{loads:?}");
            }
        }
    }

    #[test]
    fn a_filter_that_matches_nothing_is_an_error() {
        let sel = Selection { filters: vec!["tree-node".into()], ..Default::default() };
        assert_eq!(
            sel.choose(plan()).unwrap_err().to_string(),
            "no test name contains `tree-node`; `cargo xtask test --list` prints them all"
        );
    }

    /// Shards of a run, merged, are the run: every test once, none twice.
    #[test]
    fn shards_partition_the_run() {
        for filters in [vec![], vec!["two-node".to_string()]] {
            let whole = Selection { filters: filters.clone(), ..Default::default() }.choose(plan()).unwrap().run;
            for count in 1..=7 {
                let mut merged = Vec::new();
                for index in 1..=count {
                    let sel = Selection { filters: filters.clone(), shard: Some(Shard { index, count }), ..Default::default() };
                    let chosen = sel.choose(plan()).unwrap();
                    assert_eq!(chosen.run.len() + chosen.other_shards, whole.len());
                    merged.extend(chosen.run);
                }
                assert_eq!(merged.len(), whole.len(), "{count} shards");
                let mut merged = names(&merged);
                let mut want = names(&whole);
                merged.sort();
                want.sort();
                assert_eq!(merged, want, "{count} shards");
            }
        }
    }
}
