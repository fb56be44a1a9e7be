//! `cargo xtask test`: the plan of every test, the run's selection of it
//! (filters, shard), and running what was selected: the unit tests, the CI
//! linters, each base's series check, its boots (several at once, results
//! printed in plan order) and the source tests. Only what the selected
//! tests need is installed, fetched, built and booted.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use xshell::Shell;

use super::{bases, Work};
use crate::base::Base;
use crate::build::Artifacts;
use crate::config::yaml_files;
use crate::flags;
use crate::junit::{self, Outcome};
use crate::patch::Flavor;
use crate::boot::RunDir;
use crate::runner::{boot_jobs, in_parallel, time_summary, Booter};
use crate::scenario::{PlanStep, Scenario};
use crate::test_plan::{Kind, Selection, Shard, Test};
use crate::topology::Topology;
use crate::timings::{self, Timing};
use crate::{ci_lint, host, image, paths, progress, snapshot, source_paths};

/// Every test, in the order they run: the harness's own (unit tests, CI
/// linters), then per base its series check and its boots (topologies and
/// scenarios by file name, baseline before patched, each only where the
/// scenario runs on that build), then the source tests of the default base.
/// A scenario runs on the topologies its `topologies` names (all by
/// default). Pairs of topology and scenario that don't fit (a node the
/// topology lacks, vCPUs confined to a node without CPUs) are no tests:
/// they come back apart, each with the reason.
fn plan(bases: &[Base], unit_only: bool) -> Result<(Vec<Test>, Vec<String>)> {
    let mut plan = vec![Test::unit()];
    let mut unfit = Vec::new();
    if unit_only {
        return Ok((plan, unfit));
    }
    plan.push(Test::lint());
    let topologies = yaml_files(&paths::images_dir().join("topologies"))?
        .iter()
        .map(|p| Topology::load(p))
        .collect::<Result<Vec<_>>>()?;
    let scenarios = yaml_files(&paths::images_dir().join("scenarios"))?
        .iter()
        .map(|p| Scenario::load_any(p))
        .collect::<Result<Vec<_>>>()?;
    for scenario in &scenarios {
        for name in scenario.topologies.iter().flatten() {
            if !topologies.iter().any(|t| &t.name == name) {
                bail!(
                    "{}: field `topologies`: no topology {name:?} in {}",
                    scenario.path.display(),
                    paths::images_dir().join("topologies").display()
                );
            }
        }
    }
    for (b, base) in bases.iter().enumerate() {
        plan.push(Test::series(&base.name));
        for topology in &topologies {
            let tpath = &topology.path;
            for scenario in &scenarios {
                let spath = &scenario.path;
                if scenario.made_for(topology).is_err() {
                    continue;
                }
                if let Err(why) = scenario.fits(topology) {
                    if b == 0 {
                        unfit.push(format!("{}/{}: {why}", topology.name, scenario.name));
                    }
                    continue;
                }
                let test_run = scenario.for_test();
                let (host, steps) = (host_part(&test_run), steps_cost(&test_run));
                for flavor in Flavor::ALL.into_iter().filter(|&f| scenario.runs_on(f)) {
                    let t = (topology.name.as_str(), tpath.clone());
                    let s = (scenario.name.as_str(), spath.clone());
                    plan.push(Test::boot(&base.name, t, s, flavor, &host, steps));
                }
            }
        }
    }
    if let Some(default) = bases.iter().find(|b| b.default) {
        plan.push(Test::independence(&default.name));
        plan.extend(source_paths::TESTS.iter().map(|what| Test::source(&default.name, what)));
    }
    Ok((plan, unfit))
}

/// What of a scenario goes into the host it runs on: its additions to
/// Xen's command line (FLASK's included), `-` for none. Scenarios with the
/// same part share their host.
fn host_part(scenario: &Scenario) -> String {
    let mut words: Vec<String> = scenario.xen_cmdline.clone();
    if let Some(mode) = scenario.flask {
        words.extend(mode.xen_cmdline().iter().map(|s| s.to_string()));
    }
    if words.is_empty() {
        "-".into()
    } else {
        words.join(" ")
    }
}

/// What a scenario's own steps cost beyond a plain restored run, in
/// seconds under TCG on 2 cores (measured: a round of `measure` about 7.5
/// s, a domain created and destroyed in `churn` about 2 s, a check program
/// about 15 s).
fn steps_cost(scenario: &Scenario) -> u32 {
    let steps: u32 = scenario
        .steps()
        .iter()
        .map(|step| match step {
            PlanStep::Create(_) | PlanStep::Destroy(_) => 1,
            PlanStep::Refuse(_) => 3,
            PlanStep::Churn(c) => (c.cycles + 1) * c.domains.len() as u32 * 2,
            PlanStep::Measure(m) => (m.repeats + 1) * m.domains.len() as u32 * 15 / 2,
        })
        .sum();
    steps + 15 * scenario.checks.len() as u32
}

pub fn test(sh: &Shell, t: flags::Test) -> Result<()> {
    let bases = bases(t.base.as_deref())?;
    let selection = Selection { filters: t.filter.clone(), exact: t.exact, skip: t.skip.clone(), shard: t.shard };
    let (plan, unfit) = plan(&bases, t.unit_only)?;
    let chosen = selection.choose(plan)?;
    let unfit_note = match unfit.len() {
        0 => String::new(),
        n => format!("; {n} pair(s) of topology and scenario don't fit, so are no tests:\n    {}", unfit.join("\n    ")),
    };
    let skipped = match (chosen.filtered_out, chosen.other_shards) {
        (0, 0) => String::new(),
        (f, 0) => format!(" ({f} left out by the filters)"),
        (0, s) => format!(" ({s} on other shards)"),
        (f, s) => format!(" ({f} left out by the filters, {s} on other shards)"),
    };
    if t.list {
        for test in &chosen.run {
            progress::out(&test.name);
        }
        crate::say!("{} test(s){skipped}{unfit_note}", chosen.run.len());
        return Ok(());
    }
    crate::say!("test: {} test(s){skipped}{unfit_note}", chosen.run.len());

    let started = Instant::now();
    let results = Results { outcomes: Vec::new(), junit: t.junit.clone(), shard: t.shard };
    let mut run = Run { sh, flags: &t, booter: None, results };
    if let Err(e) = run.go(&bases, &chosen.run) {
        // Every test the run did not get to fails with the reason, so
        // that the JUnit report says what happened to each.
        let left: Vec<&Test> = chosen.run.iter().filter(|t| !run.results.outcomes.iter().any(|o| o.name == t.name)).collect();
        for test in left {
            run.results.record(&test.name, Err(anyhow::anyhow!("not run: the run stopped: {e:#}")), Duration::ZERO);
        }
    }
    let (booted, read_again) = run.booter.as_ref().map(Booter::counts).unwrap_or_default();
    let hosts = run.booter.as_ref().map(Booter::hosts_saved).unwrap_or_default();
    let outcomes = run.results.outcomes;
    let failures = outcomes.iter().filter(|o| o.failure.is_some()).count();
    Timing::new(
        timings::command_line(),
        started.elapsed().as_secs_f64(),
        format!("{} tests, {failures} failed; {booted} boots ran ({hosts} hosts booted and saved), {read_again} read again from the cache", outcomes.len()),
        failures == 0,
    )
    .record_command()?;

    if let Some(path) = &t.junit {
        junit::write(path, &outcomes, t.shard)?;
        crate::say!("test: JUnit report {}", path.display());
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.failure.is_some()).map(|o| o.name.as_str()).collect();
    progress::out(&format!("\ntest result: {} passed, {} failed{skipped}", outcomes.len() - failed.len(), failed.len()));
    if !unfit.is_empty() {
        progress::out(&format!("not run, the scenario does not fit the topology: {} pair(s), listed at the start", unfit.len()));
    }
    if !failed.is_empty() {
        bail!(
            "failed: {}\n(review snapshot changes with `cargo insta review`; see README)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// One run of selected tests, collecting their outcomes.
struct Run<'a> {
    sh: &'a Shell,
    flags: &'a flags::Test,
    booter: Option<Booter>,
    results: Results,
}

/// The outcomes of a run so far: each printed as it comes, and the JUnit
/// report (`--junit`) written again after each, so that a run stopped
/// half-way still reports what it did.
struct Results {
    outcomes: Vec<Outcome>,
    junit: Option<std::path::PathBuf>,
    shard: Option<Shard>,
}

impl Results {
    /// Prints a test's result line (with the error and the command that
    /// runs the test alone, if it failed) and keeps its outcome.
    fn record(&mut self, name: &str, outcome: Result<()>, time: Duration) {
        match &outcome {
            Ok(()) => progress::out(&format!("test {name} ... ok")),
            Err(e) => progress::out(&format!("test {name} ... FAILED\n{e:#}\n(alone: cargo xtask test --exact {name})")),
        }
        self.outcomes.push(Outcome { name: name.into(), failure: outcome.err().map(|e| format!("{e:#}")), time });
        if let Some(path) = &self.junit {
            if let Err(e) = junit::write(path, &self.outcomes, self.shard) {
                crate::say!("test: {e:#}");
            }
        }
    }
}

impl Run<'_> {
    fn go(&mut self, bases: &[Base], tests: &[Test]) -> Result<()> {
        // The unit tests run tools the harness installs (GNU cpio reads
        // back the archives it writes); only `--unit-only` promises to
        // install nothing, and then says what is missing.
        if !self.flags.unit_only && tests.iter().any(|t| matches!(t.kind, Kind::Unit)) {
            host::ensure(self.sh)?;
        }
        for test in tests.iter().filter(|t| matches!(t.kind, Kind::Unit | Kind::Lint)) {
            let start = Instant::now();
            let outcome = match test.kind {
                Kind::Unit => unit_tests(),
                _ => ci_lint::check(self.sh),
            };
            self.record(&test.name, outcome, start.elapsed());
        }
        for base in bases {
            let mine: Vec<&Test> = tests.iter().filter(|t| is_of_base(t, &base.name) && matches!(t.kind, Kind::Series { .. } | Kind::Boot { .. })).collect();
            if mine.is_empty() {
                continue;
            }
            let work = Work::new(self.sh, base.clone(), self.flags.xen_sources.as_deref(), None)?;
            for test in mine.iter().filter(|t| matches!(t.kind, Kind::Series { .. })) {
                crate::say!("test: the patch series of base {} (cargo xtask check-series --base {})", base.name, base.name);
                let start = Instant::now();
                let outcome = work.check_series();
                self.record(&test.name, outcome, start.elapsed());
            }
            let boots: Vec<&Test> = mine.into_iter().filter(|t| matches!(t.kind, Kind::Boot { .. })).collect();
            if !boots.is_empty() {
                self.boots(&work, &boots)?;
            }
        }
        for test in tests {
            let Kind::Independence { base } = &test.kind else { continue };
            let base = bases.iter().find(|b| &b.name == base).expect("planned from these bases");
            let start = Instant::now();
            let (sh, flags) = (self.sh, self.flags);
            let outcome = Work::new(sh, base.clone(), flags.xen_sources.as_deref(), None)
                .and_then(|work| work.build(Flavor::Patched))
                .and_then(|patched| crate::independence::test(self.booter()?, &patched, flags.timeout_scale));
            self.record(&test.name, outcome, start.elapsed());
        }
        for test in tests {
            let Kind::Source { base, what } = &test.kind else { continue };
            let base = bases.iter().find(|b| &b.name == base).expect("planned from these bases");
            let start = Instant::now();
            let (sh, flags) = (self.sh, self.flags);
            let outcome = Work::new(sh, base.clone(), flags.xen_sources.as_deref(), None)
                .and_then(|work| work.build(Flavor::Baseline))
                .and_then(|baseline| {
                    let booter = self.booter()?;
                    source_paths::test(sh, base, &baseline, booter, flags.xen_sources.as_deref(), flags.timeout_scale, what)
                });
            self.record(&test.name, outcome, start.elapsed());
        }
        Ok(())
    }

    fn booter(&mut self) -> Result<&Booter> {
        if self.booter.is_none() {
            let mut booter = Booter::new(self.sh)?;
            booter.reuse = !self.flags.rerun;
            self.booter = Some(booter);
        }
        Ok(self.booter.as_ref().unwrap())
    }

    fn record(&mut self, name: &str, outcome: Result<()>, time: Duration) {
        self.results.record(name, outcome, time);
    }

    /// The boots of one base: the builds they need, then `jobs` boots at
    /// a time, each report compared with its snapshot.
    fn boots(&mut self, work: &Work, boots: &[&Test]) -> Result<()> {
        let mut builds: Vec<Artifacts> = Vec::new();
        for flavor in Flavor::ALL {
            if boots.iter().any(|t| matches!(&t.kind, Kind::Boot { flavor: f, .. } if *f == flavor)) {
                builds.push(work.build(flavor)?);
            }
        }
        let jobs = boot_jobs(self.flags.jobs)?;
        let scale = self.flags.timeout_scale;
        self.booter()?;
        let booter = self.booter.as_ref().expect("made above");
        let results = &mut self.results;
        for a in &builds {
            // Made once here rather than by the first boots at the same time.
            image::write_base(&booter.dom0, a)?;
        }
        let mut run_dirs = Vec::new();
        let mut next = boots.iter();
        in_parallel(jobs, boots.len(), |i| {
            let Kind::Boot { topology, scenario, flavor, .. } = &boots[i].kind else { unreachable!("only boots") };
            let start = Instant::now();
            // The boot's directory, once topology and scenario are loaded.
            let mut run_dir = None;
            let outcome = (|| {
                let topology = Topology::load(topology)?;
                let scenario = Scenario::load(scenario, &topology)?.for_test();
                let artifacts = builds.iter().find(|a| a.flavor == *flavor).expect("built above");
                run_dir = Some(RunDir::of(artifacts, &topology, &scenario));
                let report = booter.report(artifacts, &topology, &scenario, scale)?;
                snapshot::check(&report)?;
                if scenario.patched_matches_baseline && *flavor == Flavor::Patched {
                    snapshot::check_same_as_baseline(&report)?;
                }
                Ok(())
            })();
            (outcome, start.elapsed(), run_dir)
        }, |(outcome, time, run_dir)| {
            let test = next.next().expect("one result per boot");
            results.record(&test.name, outcome, time);
            run_dirs.extend(run_dir);
        });
        let mut timelines: Vec<std::path::PathBuf> = run_dirs.iter().map(RunDir::timeline).collect();
        timelines.extend(booter.host_timelines());
        if let Some(summary) = time_summary(&timelines) {
            crate::say!("test: {}", summary.trim_end());
        }
        Ok(())
    }
}

fn is_of_base(test: &Test, base: &str) -> bool {
    match &test.kind {
        Kind::Series { base: b } | Kind::Boot { base: b, .. } | Kind::Independence { base: b } | Kind::Source { base: b, .. } => b == base,
        Kind::Unit | Kind::Lint => false,
    }
}

/// The harness's own tests, `cargo test` on this crate. Some read back
/// what the harness writes with the tools it installs (GNU cpio).
fn unit_tests() -> Result<()> {
    crate::say!("test: the harness's own tests (cargo test)");
    let status = duct::cmd!("cargo", "test", "--quiet", "--package", "xtask")
        .dir(paths::repo())
        .unchecked()
        .run()?
        .status;
    if !status.success() {
        bail!("the harness's unit tests failed (their output is above)");
    }
    Ok(())
}
