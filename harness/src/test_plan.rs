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
    /// A way a source reaches a build (upstream git, a contributor's
    /// checkout), built and booted.
    Source { base: String, what: &'static str },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    /// `master/two-node/default/patched`, `master/series`, `unit`, ...
    pub name: String,
    pub kind: Kind,
}

impl Test {
    pub fn unit() -> Test {
        Test { name: "unit".into(), kind: Kind::Unit }
    }

    pub fn lint() -> Test {
        Test { name: "lint".into(), kind: Kind::Lint }
    }

    pub fn series(base: &str) -> Test {
        Test { name: format!("{base}/series"), kind: Kind::Series { base: base.into() } }
    }

    pub fn boot(base: &str, topology: (&str, PathBuf), scenario: (&str, PathBuf), flavor: Flavor) -> Test {
        Test {
            name: format!("{base}/{}/{}/{flavor}", topology.0, scenario.0),
            kind: Kind::Boot { base: base.into(), topology: topology.1, scenario: scenario.1, flavor },
        }
    }

    pub fn source(base: &str, what: &'static str) -> Test {
        Test { name: format!("{base}/source/{what}"), kind: Kind::Source { base: base.into(), what } }
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
        self.filters.is_empty()
            || self.filters.iter().any(|f| if self.exact { name == f } else { name.contains(f.as_str()) })
    }

    /// The tests of `plan` this run takes, in plan order. The shard split
    /// is made after filtering, round robin: shard i of n takes the
    /// selected tests at positions i-1, i-1+n, ..., so each shard gets
    /// boots of every topology and build, and the shards of one filtered
    /// run together take each of its tests exactly once.
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
            Some(s) => matching.into_iter().enumerate().filter(|(i, _)| i % s.count == s.index - 1).map(|(_, t)| t).collect(),
        };
        Ok(Chosen { other_shards: n - run.len(), filtered_out, run })
    }
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
                        plan.push(Test::boot(base, t, s, flavor));
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

        let exact = Selection { filters: vec!["master/series".into(), "master".into()], exact: true, shard: None };
        assert_eq!(names(&exact.choose(plan()).unwrap().run), ["master/series"]);
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
                    let sel = Selection { filters: filters.clone(), exact: false, shard: Some(Shard { index, count }) };
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
