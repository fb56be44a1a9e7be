//! The jobs behind each subcommand, composed from the stages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::boot::{self, Accel, Boot, BootError, Machine};
use crate::build::{self, Artifacts};
use crate::config::Timeouts;
use crate::fetch::{self, Sources};
use crate::flags::{Xtask, XtaskCmd};
use crate::patch::{Flavor, Series};
use crate::report::{self, Report};
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{console, host, image, paths, series_check, snapshot};

pub fn dispatch(flags: Xtask) -> Result<()> {
    let sh = Shell::new()?;
    match flags.subcommand {
        XtaskCmd::Setup(_) => {
            host::ensure(&sh)?;
            eprintln!("setup: every package is installed");
            Ok(())
        }
        XtaskCmd::Fetch(_) => {
            let p = Pipeline::new(&sh)?;
            eprintln!("fetch: Xen source {}", p.sources.xen.tarball.display());
            eprintln!("fetch: kernel {} {}", p.sources.kernel.package, p.sources.kernel.version);
            eprintln!("fetch: busybox {}", p.sources.busybox.version);
            Ok(())
        }
        XtaskCmd::Build(b) => {
            let p = Pipeline::new(&sh)?;
            for flavor in flavors(b.build.as_deref())? {
                let a = p.build(flavor)?;
                println!("{flavor}: {}", a.dir.display());
            }
            Ok(())
        }
        XtaskCmd::CheckSeries(_) => {
            let p = Pipeline::new(&sh)?;
            series_check::check(&sh, &p.sources.xen, &p.series)
        }
        XtaskCmd::Image(i) => {
            let p = Pipeline::new(&sh)?;
            let flavor = Flavor::parse(i.build.as_deref().unwrap_or("patched"))?;
            let a = p.build(flavor)?;
            println!("{}", image::write_base(&p.sources, &a)?.display());
            Ok(())
        }
        XtaskCmd::Boot(b) => {
            let flavor = Flavor::parse(b.build.as_deref().unwrap_or("patched"))?;
            let topology = Topology::load(&b.topology.unwrap_or_else(paths::default_topology))?;
            let scenario = Scenario::load(&b.scenario.unwrap_or_else(paths::default_scenario), &topology)?;
            let p = Pipeline::new(&sh)?;
            let artifacts = p.build(flavor)?;
            let boot = p.boot_spec(&artifacts, &topology, &scenario, b.interactive)?;
            if b.print_command {
                boot.prepare()?;
                println!("{}", shell_words(&boot.command()));
                return Ok(());
            }
            if b.interactive {
                return boot.run_interactive();
            }
            let report = p.run_boot(&boot, &artifacts, b.timeout_scale)?;
            print!("{}", report::table(&[&report]));
            Ok(())
        }
        XtaskCmd::Run(r) => {
            let topology = Topology::load(&r.topology.unwrap_or_else(paths::default_topology))?;
            let scenario = Scenario::load(&r.scenario.unwrap_or_else(paths::default_scenario), &topology)?;
            let p = Pipeline::new(&sh)?;
            main_job(&p, &topology, &scenario, r.timeout_scale)
        }
        XtaskCmd::Test(t) => {
            unit_tests(&sh)?;
            if t.unit_only {
                return Ok(());
            }
            let p = Pipeline::new(&sh)?;
            eprintln!("test: the patch series (cargo xtask check-series)");
            series_check::check(&sh, &p.sources.xen, &p.series)?;
            boot_tests(&p, t.timeout_scale)
        }
    }
}

fn flavors(arg: Option<&str>) -> Result<Vec<Flavor>> {
    match arg {
        None | Some("all") => Ok(Flavor::ALL.to_vec()),
        Some(name) => Ok(vec![Flavor::parse(name)?]),
    }
}

/// What every job past set-up shares: the fetched sources and the series.
pub struct Pipeline<'a> {
    sh: &'a Shell,
    sources: Sources,
    series: Series,
    machine: Machine,
    accel: (Accel, String),
}

impl<'a> Pipeline<'a> {
    fn new(sh: &'a Shell) -> Result<Pipeline<'a>> {
        host::ensure(sh)?;
        let series = Series::load(&paths::patches_dir().join("series"))?;
        let machine = Machine::load()?;
        let sources = fetch::fetch(sh)?;
        let accel = boot::detect_accel()?;
        Ok(Pipeline { sh, sources, series, machine, accel })
    }

    fn build(&self, flavor: Flavor) -> Result<Artifacts> {
        build::build(self.sh, &self.sources.xen, &self.series, flavor)
    }

    fn boot_spec<'b>(
        &'b self,
        artifacts: &Artifacts,
        topology: &'b Topology,
        scenario: &'b Scenario,
        interactive: bool,
    ) -> Result<Boot<'b>> {
        let base_image = image::write_base(&self.sources, artifacts)?;
        Ok(Boot {
            topology,
            scenario,
            machine: &self.machine,
            xen: artifacts.xen(),
            xsm_policy: artifacts.xsm_policy(),
            kernel: image::kernel(&self.sources.kernel)?,
            base_image,
            run_dir: paths::output()
                .join("runs")
                .join(artifacts.flavor.name())
                .join(&topology.name)
                .join(&scenario.name),
            accel: self.accel.0,
            interactive,
        })
    }

    /// Boots, parses the console into a report and writes it next to the log.
    fn run_boot(&self, boot: &Boot, artifacts: &Artifacts, scale: Option<f64>) -> Result<Report> {
        let timeouts = Timeouts::new(boot.accel == Accel::Kvm, scale)?;
        eprintln!(
            "boot: {}/{} on {} with {} ({}); console: {}",
            boot.topology.name,
            boot.scenario.name,
            artifacts.flavor,
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
                std::fs::rename(&log, &kept)?;
                eprintln!("boot: dom0 stalled ({line}); booting once more (first console: {})", kept.display());
                boot.run(&timeouts)?
            }
            other => other?,
        };
        let steps = console::result_block(&text)
            .with_context(|| format!("console log {}", boot.console_log().display()))?;
        let report = Report::new(boot.topology, boot.scenario, artifacts.flavor, &steps)
            .with_context(|| format!("reading the results in {}", boot.console_log().display()))?;
        paths::write_atomic(&boot.run_dir.join("report.yaml"), serde_yaml::to_string(&report)?.as_bytes())?;
        eprintln!("boot: done in {} s", start.elapsed().as_secs());
        Ok(report)
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
            let r = self
                .boot_spec(a, topology, scenario, false)
                .and_then(|b| self.run_boot(&b, a, scale));
            if let Ok(r) = &r {
                done.insert(a.key.clone(), r.clone());
            }
            out.push((a.flavor, r));
        }
        out
    }
}

/// The main job: both builds, one topology and scenario, side by side.
fn main_job(p: &Pipeline, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<()> {
    let builds = Flavor::ALL
        .iter()
        .filter(|&&f| scenario.runs_on(f))
        .map(|&f| p.build(f))
        .collect::<Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for (_, r) in p.reports(&builds, topology, scenario, scale) {
        reports.push(r?);
    }
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

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every scenario on every topology on both builds, each report compared
/// with its snapshot.
fn boot_tests(p: &Pipeline, scale: Option<f64>) -> Result<()> {
    let builds = Flavor::ALL.iter().map(|&f| p.build(f)).collect::<Result<Vec<_>>>()?;
    let mut passed = 0;
    let mut failed = Vec::new();
    for tpath in yaml_files(&paths::images_dir().join("topologies"))? {
        let topology = Topology::load(&tpath)?;
        for spath in yaml_files(&paths::images_dir().join("scenarios"))? {
            let scenario = Scenario::load(&spath, &topology)?;
            let here: Vec<Artifacts> = builds.iter().filter(|a| scenario.runs_on(a.flavor)).cloned().collect();
            let mut reports = p.reports(&here, &topology, &scenario, scale);
            if scenario.patched_matches_baseline {
                reports = same_as_baseline(reports);
            }
            for (flavor, report) in reports {
                let name = format!("{}/{}/{}", topology.name, scenario.name, flavor);
                let outcome = report.and_then(|r| snapshot::check(&r));
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
        }
    }
    println!("\nboot tests: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("failed: {}\n(review snapshot changes with `cargo insta review`; see README)", failed.join(", "));
    }
    Ok(())
}

/// Turns the patched report into an error where it differs from the
/// baseline's for the scenario's domains. dom0 is left out: how its memory
/// splits over the nodes moves by a few pages with any change to Xen's own
/// footprint at boot, series or not.
fn same_as_baseline(mut reports: Vec<(Flavor, Result<Report>)>) -> Vec<(Flavor, Result<Report>)> {
    // Compared as the snapshots are: without the build's name and the
    // free memory, which moves from boot to boot.
    let yaml = |r: &Report| {
        let mut r = r.clone();
        r.build = String::new();
        r.domains.retain(|d| d.id != 0);
        for n in &mut r.nodes {
            n.free_mib = 0;
        }
        serde_yaml::to_string(&r).unwrap_or_default()
    };
    let baseline = match reports.iter().find(|(f, _)| *f == Flavor::Baseline) {
        Some((_, Ok(r))) => yaml(r),
        _ => return reports,
    };
    for (flavor, report) in reports.iter_mut() {
        if *flavor == Flavor::Patched {
            if let Ok(r) = report {
                let patched = yaml(r);
                if patched != baseline {
                    let diff: Vec<String> = similar_lines(&baseline, &patched);
                    *report = Err(anyhow::anyhow!(
                        "the scenario claims the series changes nothing, but the patched report differs from the baseline's:\n    {}",
                        diff.join("\n    ")
                    ));
                }
            }
        }
    }
    reports
}

/// The lines of `a` and `b` that differ, marked `-` and `+`.
fn similar_lines(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                if let Some(x) = x {
                    out.push(format!("-{x}"));
                }
                if let Some(y) = y {
                    out.push(format!("+{y}"));
                }
            }
        }
    }
    out
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
            topology: "t".into(),
            scenario: "s".into(),
            description: "d".into(),
            build: build.into(),
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
