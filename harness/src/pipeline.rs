//! The jobs behind each subcommand, composed from the stages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::base::Base;
use crate::boot::{self, Accel, Boot, BootError, Machine};
use crate::build::{self, Artifacts, Change};
use crate::checkout::Checkout;
use crate::config::{yaml_files, Timeouts};
use crate::fetch::{self, Dom0Packages, XenSource};
use crate::flags::{Xtask, XtaskCmd};
use crate::patch::{Flavor, Series};
use crate::report::{self, Booted, Report};
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{console, host, image, paths, series_check, snapshot, source_paths};

pub fn dispatch(flags: Xtask) -> Result<()> {
    let sh = Shell::new()?;
    match flags.subcommand {
        XtaskCmd::Setup(_) => {
            host::ensure(&sh)?;
            eprintln!("setup: every package is installed");
            Ok(())
        }
        XtaskCmd::Fetch(f) => {
            host::ensure(&sh)?;
            let base = Base::chosen(f.base.as_deref())?;
            let source = fetch::xen_source(&sh, &base, fetch::sources_dir(f.xen_sources.as_deref()).as_deref())?;
            let dom0 = fetch::dom0_packages(&sh)?;
            eprintln!("fetch: Xen {} ({}): {} (tree {}, from {})", base.version, base.name, source.tarball.display(), source.tree, source.origin);
            eprintln!("fetch: kernel {} {}", dom0.kernel.package, dom0.kernel.version);
            eprintln!("fetch: busybox {}", dom0.busybox.version);
            Ok(())
        }
        XtaskCmd::Build(b) => {
            let work = Work::new(&sh, Base::chosen(b.base.as_deref())?, b.xen_sources.as_deref(), b.xen_tree.as_deref())?;
            for flavor in flavors(b.build.as_deref())? {
                let a = work.build(flavor)?;
                println!("{}/{}: {}", work.base.name, a.label(), a.dir.display());
            }
            Ok(())
        }
        XtaskCmd::CheckSeries(c) => {
            for base in bases(c.base.as_deref())? {
                let work = Work::new(&sh, base, c.xen_sources.as_deref(), None)?;
                series_check::check(&sh, &work.source, &work.series)?;
            }
            Ok(())
        }
        XtaskCmd::Image(i) => {
            let flavor = Flavor::parse(i.build.as_deref().unwrap_or("patched"))?;
            let work = Work::new(&sh, Base::chosen(i.base.as_deref())?, i.xen_sources.as_deref(), i.xen_tree.as_deref())?;
            let a = work.build(flavor)?;
            println!("{}", image::write_base(&fetch::dom0_packages(&sh)?, &a)?.display());
            Ok(())
        }
        XtaskCmd::Boot(b) => {
            let flavor = Flavor::parse(b.build.as_deref().unwrap_or("patched"))?;
            let topology = Topology::load(&b.topology.unwrap_or_else(paths::default_topology))?;
            let scenario = Scenario::load(&b.scenario.unwrap_or_else(paths::default_scenario), &topology)?;
            let work = Work::new(&sh, Base::chosen(b.base.as_deref())?, b.xen_sources.as_deref(), b.xen_tree.as_deref())?;
            let artifacts = work.build(flavor)?;
            let booter = Booter::new(&sh)?;
            let boot = booter.spec(&artifacts, &topology, &scenario, b.interactive)?;
            if b.print_command {
                boot.prepare()?;
                println!("{}", shell_words(&boot.command()));
                return Ok(());
            }
            if b.interactive {
                return boot.run_interactive();
            }
            let report = booter.run(&boot, &artifacts, b.timeout_scale)?;
            print!("{}", report::table(&[&report]));
            Ok(())
        }
        XtaskCmd::Run(r) => {
            let topology = Topology::load(&r.topology.unwrap_or_else(paths::default_topology))?;
            let scenario = Scenario::load(&r.scenario.unwrap_or_else(paths::default_scenario), &topology)?;
            let work = Work::new(&sh, Base::chosen(r.base.as_deref())?, r.xen_sources.as_deref(), r.xen_tree.as_deref())?;
            main_job(&work, &Booter::new(&sh)?, &topology, &scenario, r.timeout_scale)
        }
        XtaskCmd::Test(t) => {
            unit_tests(&sh)?;
            if t.unit_only {
                return Ok(());
            }
            let mut failed = Vec::new();
            let mut passed = 0;
            let mut booter = None;
            let bases = bases(t.base.as_deref())?;
            let jobs = boot_jobs()?;
            for base in &bases {
                let work = Work::new(&sh, base.clone(), t.xen_sources.as_deref(), None)?;
                eprintln!("test: the patch series of base {} (cargo xtask check-series --base {})", base.name, base.name);
                series_check::check(&sh, &work.source, &work.series)?;
                let booter = match &booter {
                    Some(b) => b,
                    None => booter.insert(Booter::new(&sh)?),
                };
                let (p, f) = boot_tests(&work, booter, jobs, t.timeout_scale)?;
                passed += p;
                failed.extend(f);
            }
            if let (Some(booter), Some(default)) = (&booter, bases.iter().find(|b| b.default)) {
                let (p, f) = source_paths::test(&sh, default, booter, t.xen_sources.as_deref(), t.timeout_scale)?;
                passed += p;
                failed.extend(f);
            }
            println!("\nboot tests: {passed} passed, {} failed", failed.len());
            if !failed.is_empty() {
                bail!("failed: {}\n(review snapshot changes with `cargo insta review`; see README)", failed.join(", "));
            }
            Ok(())
        }
    }
}

fn flavors(arg: Option<&str>) -> Result<Vec<Flavor>> {
    match arg {
        None | Some("all") => Ok(Flavor::ALL.to_vec()),
        Some(name) => Ok(vec![Flavor::parse(name)?]),
    }
}

/// `--base` if given, every shipped base otherwise.
fn bases(arg: Option<&str>) -> Result<Vec<Base>> {
    match arg {
        Some(name) => Ok(vec![Base::load(name)?]),
        None => Base::all(),
    }
}

/// What builds of one base need: its source and series, and the
/// contributor's checkout to build as the patched side, if any.
pub struct Work<'a> {
    pub sh: &'a Shell,
    pub base: Base,
    pub source: XenSource,
    pub series: Series,
    pub checkout: Option<Checkout>,
}

impl<'a> Work<'a> {
    pub fn new(sh: &'a Shell, base: Base, sources: Option<&Path>, xen_tree: Option<&Path>) -> Result<Work<'a>> {
        host::ensure(sh)?;
        let series = Series::load(&base.series_path())?;
        let checkout = xen_tree.map(Checkout::open).transpose()?;
        let source = fetch::xen_source(sh, &base, fetch::sources_dir(sources).as_deref())?;
        Ok(Work { sh, base, source, series, checkout })
    }

    pub fn build(&self, flavor: Flavor) -> Result<Artifacts> {
        let change = match (&self.checkout, flavor) {
            (Some(c), Flavor::Patched) => Change::Checkout(c),
            _ => Change::Patches(self.series.for_flavor(flavor)),
        };
        build::build(self.sh, &self.source, flavor, change)
    }
}

/// What boots need beyond a build: dom0's kernel and busybox, the machine
/// every boot shares and the accelerator.
pub struct Booter {
    pub dom0: Dom0Packages,
    machine: Machine,
    accel: (Accel, String),
}

impl Booter {
    pub fn new(sh: &Shell) -> Result<Booter> {
        host::ensure(sh)?;
        Ok(Booter { dom0: fetch::dom0_packages(sh)?, machine: Machine::load()?, accel: boot::detect_accel()? })
    }

    fn spec<'b>(
        &'b self,
        artifacts: &Artifacts,
        topology: &'b Topology,
        scenario: &'b Scenario,
        interactive: bool,
    ) -> Result<Boot<'b>> {
        let base_image = image::write_base(&self.dom0, artifacts)?;
        Ok(Boot {
            topology,
            scenario,
            machine: &self.machine,
            xen: artifacts.xen(),
            xsm_policy: artifacts.xsm_policy(),
            kernel: image::kernel(&self.dom0.kernel)?,
            base_image,
            run_dir: paths::output()
                .join("runs")
                .join(&artifacts.base)
                .join(artifacts.label())
                .join(&topology.name)
                .join(&scenario.name),
            accel: self.accel.0,
            interactive,
        })
    }

    /// Boots, parses the console into a report and writes it next to the log.
    fn run(&self, boot: &Boot, artifacts: &Artifacts, scale: Option<f64>) -> Result<Report> {
        let timeouts = Timeouts::new(boot.accel == Accel::Kvm, scale)?;
        eprintln!(
            "boot: {}/{}/{} on {} with {} ({}); console: {}",
            artifacts.base,
            boot.topology.name,
            boot.scenario.name,
            artifacts.label(),
            self.accel.0,
            self.accel.1,
            boot.console_log().display()
        );
        let start = Instant::now();
        let text = match boot.run(&timeouts) {
            // Seen now and then under TCG, on unpatched Xen too: dom0 Linux
            // stalls during boot. Try once more, keeping the first log.
            Err(BootError::Dom0Died { line, log }) if line.contains("stall") || line.contains("soft lockup") => {
                let kept = log.with_extension("stalled.log");
                std::fs::rename(&log, &kept).with_context(|| format!("renaming {}", log.display()))?;
                eprintln!("boot: dom0 stalled ({line}); booting once more (first console: {})", kept.display());
                boot.run(&timeouts)?
            }
            other => other?,
        };
        let steps = console::result_block(&text)
            .with_context(|| format!("console log {}", boot.console_log().display()))?;
        let booted = Booted {
            base: artifacts.base.clone(),
            build: artifacts.flavor.name().into(),
            xen_tree: artifacts.checkout.as_ref().map(|p| p.display().to_string()),
            dom0_kernel: format!("{} {}", self.dom0.kernel.package, self.dom0.kernel.version),
            busybox: self.dom0.busybox.version.clone(),
        };
        let report = Report::new(boot.topology, boot.scenario, booted, &steps)
            .with_context(|| format!("reading the results in {}", boot.console_log().display()))?;
        paths::write_atomic(&boot.run_dir.join("report.yaml"), yaml_serde::to_string(&report)?.as_bytes())?;
        eprintln!("boot: done in {} s", start.elapsed().as_secs());
        Ok(report)
    }

    /// Boots one build with one topology and scenario.
    pub fn report(&self, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<Report> {
        let boot = self.spec(artifacts, topology, scenario, false)?;
        self.run(&boot, artifacts, scale)
    }

    /// Boots each build once per distinct artifact: when the series is empty
    /// (or all baseline), both builds are the same Xen and one boot serves.
    fn reports(
        &self,
        builds: &[Artifacts],
        topology: &Topology,
        scenario: &Scenario,
        scale: Option<f64>,
    ) -> Vec<(Flavor, Result<Report>)> {
        let mut done: BTreeMap<String, Report> = BTreeMap::new();
        let mut out = Vec::new();
        for a in builds {
            if let Some(r) = done.get(&a.key) {
                eprintln!("boot: {} is the same build as {} ({}): reusing its boot", a.flavor, r.build, a.key);
                let mut r = r.clone();
                r.build = a.flavor.name().into();
                out.push((a.flavor, Ok(r)));
                continue;
            }
            let r = self.report(a, topology, scenario, scale);
            if let Ok(r) = &r {
                done.insert(a.key.clone(), r.clone());
            }
            out.push((a.flavor, r));
        }
        out
    }
}

/// The main job: both builds, one topology and scenario, side by side.
fn main_job(work: &Work, booter: &Booter, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<()> {
    let builds = Flavor::ALL
        .iter()
        .filter(|&&f| scenario.runs_on(f))
        .map(|&f| work.build(f))
        .collect::<Result<Vec<_>>>()?;
    let distinct = builds.iter().map(|a| &a.key).collect::<BTreeSet<_>>().len() == builds.len();
    let mut results = Vec::new();
    if distinct {
        // Two different Xens: boot them side by side, as the tests do.
        in_parallel(boot_jobs()?, builds.len(), |i| booter.report(&builds[i], topology, scenario, scale), |r| {
            results.push(r)
        });
    } else {
        results.extend(booter.reports(&builds, topology, scenario, scale).into_iter().map(|(_, r)| r));
    }
    let reports = results.into_iter().collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Report> = reports.iter().collect();
    print!("{}", report::table(&refs));
    let path = paths::output().join("report.yaml");
    paths::write_atomic(&path, report::comparison_yaml(&refs)?.as_bytes())?;
    println!("\nreport: {}", path.display());
    Ok(())
}

fn unit_tests(sh: &Shell) -> Result<()> {
    host::ensure(sh)?;
    eprintln!("test: the harness's own tests (cargo test)");
    let status = duct::cmd!("cargo", "test", "--quiet", "--package", "xtask")
        .dir(paths::repo())
        .unchecked()
        .run()?
        .status;
    if !status.success() {
        bail!("the harness's unit tests failed");
    }
    Ok(())
}

/// Every scenario on every topology on both builds of one base, each report
/// compared with its snapshot, `jobs` boots at a time. Prints one line per
/// boot in a stable order; returns how many passed and the names of those
/// that failed.
fn boot_tests(work: &Work, booter: &Booter, jobs: usize, scale: Option<f64>) -> Result<(usize, Vec<String>)> {
    let builds = Flavor::ALL.iter().map(|&f| work.build(f)).collect::<Result<Vec<_>>>()?;
    for a in &builds {
        // Made once here rather than by the first boots at the same time.
        image::write_base(&booter.dom0, a)?;
    }
    let mut plan = Vec::new();
    for tpath in yaml_files(&paths::images_dir().join("topologies"))? {
        let topology = Topology::load(&tpath)?;
        for spath in yaml_files(&paths::images_dir().join("scenarios"))? {
            let scenario = Scenario::load(&spath, &topology)?;
            plan.push((topology.clone(), scenario));
        }
    }
    let mut passed = 0;
    let mut failed = Vec::new();
    let base = &work.base.name;
    in_parallel(jobs, plan.len(), |i| {
        let (topology, scenario) = &plan[i];
        let here: Vec<Artifacts> = builds.iter().filter(|a| scenario.runs_on(a.flavor)).cloned().collect();
        let mut reports = booter.reports(&here, topology, scenario, scale);
        if scenario.patched_matches_baseline {
            reports = same_as_baseline(reports);
        }
        reports
            .into_iter()
            .map(|(flavor, report)| {
                let name = format!("{base}/{}/{}/{flavor}", topology.name, scenario.name);
                (name, report.and_then(|r| snapshot::check(&r)))
            })
            .collect::<Vec<_>>()
    }, |outcomes| {
        for (name, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    println!("test {name} ... ok");
                    passed += 1;
                }
                Err(e) => {
                    println!("test {name} ... FAILED\n{e:#}");
                    failed.push(name);
                }
            }
        }
    });
    Ok((passed, failed))
}

/// Runs `work(0..count)` on up to `jobs` threads and hands each result to
/// `done` in index order, as soon as it and every one before it are in.
pub fn in_parallel<T: Send>(jobs: usize, count: usize, work: impl Fn(usize) -> T + Sync, mut done: impl FnMut(T)) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, count.max(1)) {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || tx.send((i, work(i))).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0;
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&want) {
                done(result);
                want += 1;
            }
        }
    });
}

/// How many boots run at once: `NUMA_HARNESS_JOBS`, else one per CPU, as
/// many as the machine's memory holds with the largest topology's guest
/// memory each (QEMU reserves it) and a quarter of the memory to spare.
pub fn boot_jobs() -> Result<usize> {
    if let Ok(v) = std::env::var("NUMA_HARNESS_JOBS") {
        return v.parse::<usize>().ok().filter(|&n| n > 0).with_context(|| format!("NUMA_HARNESS_JOBS={v:?} is not a positive number"));
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let largest = yaml_files(&paths::images_dir().join("topologies"))?
        .iter()
        .map(|p| Topology::load(p).map(|t| t.total_memory_mib()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(1024);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(u64::MAX, |kib| kib / 1024);
    let by_memory = (available_mib * 3 / 4 / largest.max(1)).max(1) as usize;
    Ok(cpus.min(by_memory))
}

/// Turns the patched report into an error where it differs from the
/// baseline's for the scenario's domains. dom0 is left out: how its memory
/// splits over the nodes moves by a few pages with any change to Xen's own
/// footprint at boot, series or not.
fn same_as_baseline(mut reports: Vec<(Flavor, Result<Report>)>) -> Vec<(Flavor, Result<Report>)> {
    let without_dom0 = |r: &Report| {
        let mut r = r.clone();
        r.domains.retain(|d| d.id != 0);
        r
    };
    let expected = match reports.iter().find(|(f, _)| *f == Flavor::Baseline) {
        Some((_, Ok(r))) => {
            let mut b = without_dom0(r);
            b.build = Flavor::Patched.name().into();
            snapshot::normalized(&b)
        }
        _ => return reports,
    };
    for (flavor, report) in reports.iter_mut() {
        if *flavor != Flavor::Patched {
            continue;
        }
        if let Ok(r) = report {
            let outcome = expected.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|expected| {
                snapshot::same(&without_dom0(r), expected, "the baseline's report")
                    .map_err(|e| anyhow::anyhow!("the scenario claims the series changes nothing, but {e:#}"))
            });
            if let Err(e) = outcome {
                *report = Err(e);
            }
        }
    }
    reports
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Node;

    fn report(build: &str, free: u64, cpus: &str) -> Report {
        Report {
            base: "b".into(),
            topology: "t".into(),
            scenario: "s".into(),
            description: "d".into(),
            build: build.into(),
            xen_tree: None,
            dom0_kernel: "k".into(),
            busybox: "b".into(),
            xen_version: None,
            nodes: vec![Node { node: 0, cpus: cpus.into(), memory_mib: 1024, free_mib: free, distances: vec![10] }],
            domains: Vec::new(),
            checks: Default::default(),
        }
    }

    fn with_domain(mut r: Report, id: u32, pages: u64) -> Report {
        r.domains.push(crate::report::Domain {
            name: format!("d{id}"),
            id,
            node_affinity: None,
            node_affinity_is: None,
            vcpus: Vec::new(),
            pages_per_node: Some([(0, pages)].into_iter().collect()),
            objects: Default::default(),
            vcpu_objects_not_listed: None,
        });
        r
    }

    /// dom0's page split may move; a scenario domain's may not.
    #[test]
    fn only_the_scenario_domains_must_match() {
        let check = |b: Report, p: Report| {
            let out = same_as_baseline(vec![(Flavor::Baseline, Ok(b)), (Flavor::Patched, Ok(p))]);
            out[1].1.is_ok()
        };
        let base = || report("baseline", 500, "0-1");
        let patched = || report("patched", 500, "0-1");
        assert!(check(with_domain(base(), 0, 100), with_domain(patched(), 0, 104)));
        assert!(!check(with_domain(base(), 1, 100), with_domain(patched(), 1, 104)));
    }

    #[test]
    fn patched_must_match_baseline() {
        let same = same_as_baseline(vec![
            (Flavor::Baseline, Ok(report("baseline", 500, "0-1"))),
            (Flavor::Patched, Ok(report("patched", 498, "0-1"))),
        ]);
        assert!(same.iter().all(|(_, r)| r.is_ok()), "free memory and the build's name do not count");
        let differ = same_as_baseline(vec![
            (Flavor::Baseline, Ok(report("baseline", 500, "0-1"))),
            (Flavor::Patched, Ok(report("patched", 500, "0"))),
        ]);
        let err = differ[1].1.as_ref().unwrap_err().to_string();
        assert!(err.ends_with("\n    -  cpus: 0-1\n    +  cpus: '0'"), "{err}");
    }
}
