//! Running boots: what every boot of a run shares (dom0's kernel and
//! busybox, the machine, the accelerator), one boot from a build to its
//! report, and many boots at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use xshell::Shell;

use crate::boot::{self, Accel, Attempt, Boot, Machine, RunDir};
use crate::build::Artifacts;
use crate::config::{yaml_files, Timeouts};
use crate::fetch::{self, Dom0Packages};
use crate::patch::Flavor;
use crate::report::{Booted, Report};
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{console, host, image, paths};

/// What boots need beyond a build. Made only by commands that boot.
pub struct Booter {
    pub dom0: Dom0Packages,
    machine: Machine,
    accel: (Accel, String),
    /// Reuse the console of an earlier boot with the same identity
    /// (`cargo xtask test` without `--rerun`).
    pub reuse: bool,
    /// The boots time commands in the guest: under TCG their guest clock
    /// counts instructions ([`boot::INSTRUCTION_CLOCK`]) instead of
    /// following the host's, so that what they time does not depend on the
    /// host's speed or on what else it runs. Their consoles are kept apart
    /// (`<identity>.timed`).
    pub timed: bool,
    /// Boots that ran, and boots whose console was read again, so far.
    booted: AtomicUsize,
    read_again: AtomicUsize,
}

/// The first line of a timeline copied from the cache into a run: the
/// boot's times are those of when it booted, not of this run.
const READ_AGAIN: &str = "read-again";

impl Booter {
    pub fn new(sh: &Shell) -> Result<Booter> {
        Booter::with_packages(sh, host::ensure)
    }

    /// [`Booter::new`] installing nothing (see [`host::verify`]).
    pub fn reading(sh: &Shell) -> Result<Booter> {
        Booter::with_packages(sh, host::verify)
    }

    fn with_packages(sh: &Shell, packages: fn(&Shell) -> Result<()>) -> Result<Booter> {
        packages(sh)?;
        Ok(Booter { dom0: fetch::dom0_packages(sh)?, machine: Machine::load()?, accel: boot::detect_accel()?, reuse: false, timed: false, booted: AtomicUsize::new(0), read_again: AtomicUsize::new(0) })
    }

    /// How many boots ran so far, and how many were read again.
    pub fn counts(&self) -> (usize, usize) {
        (self.booted.load(Ordering::Relaxed), self.read_again.load(Ordering::Relaxed))
    }

    /// The accelerator boots use, and why.
    pub fn accel(&self) -> (Accel, &str) {
        (self.accel.0, &self.accel.1)
    }

    pub fn spec<'b>(
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
            run_dir: RunDir::of(artifacts, topology, scenario),
            accel: self.accel.0,
            counted: self.timed,
            interactive,
        })
    }

    /// Boots, parses the console into a report and writes it next to the log.
    /// With `reuse`, a boot whose identity (see [`Boot::identity`]) booted
    /// before to its end is not booted again: its console log, kept in the
    /// cache (`boots/<identity>.console.log`, `<identity>.timed.console.log`
    /// for a [timed](Booter::timed) boot), is parsed anew instead.
    pub fn run(&self, boot: &Boot, artifacts: &Artifacts, scale: Option<f64>) -> Result<Report> {
        let run_dir = &boot.run_dir;
        let identity = boot.identity()?;
        let kept_as = self.kept_as(boot)?;
        let kept = paths::cache()?.join("boots").join(format!("{kept_as}.console.log"));
        let kept_timeline = kept.with_file_name(format!("{kept_as}.{}", boot::TIMELINE));
        let timeline = run_dir.path().join(boot::TIMELINE);
        if self.reuse && kept.exists() {
            let text = std::fs::read_to_string(&kept).with_context(|| format!("reading {}", kept.display()))?;
            paths::write_atomic(&run_dir.console_log(), text.as_bytes())?;
            // The times of when it booted, marked as read again; none for
            // a console kept before the harness kept timelines with it.
            match std::fs::read_to_string(&kept_timeline) {
                Ok(t) => paths::write_atomic(&timeline, format!("{READ_AGAIN} {identity}\n{t}").as_bytes())?,
                Err(_) => {
                    let _ = std::fs::remove_file(&timeline);
                }
            }
            self.read_again.fetch_add(1, Ordering::Relaxed);
            crate::say!(
                "boot: {}/{}/{} on {}: the same boot ran before ({identity}); its console is read again (--rerun boots it)",
                artifacts.base,
                boot.topology.name,
                boot.scenario.name,
                artifacts.label()
            );
            return self.report_from(boot, artifacts, &text);
        }
        crate::say!(
            "boot: {}/{}/{} on {} with {} ({}); console: {}",
            artifacts.base,
            boot.topology.name,
            boot.scenario.name,
            artifacts.label(),
            self.accel.0,
            self.accel.1,
            run_dir.console_log().display()
        );
        let timeouts = Timeouts::new(boot.accel == Accel::Kvm, scale)?;
        let start = Instant::now();
        let text = match boot.run_retrying_stall(&timeouts)? {
            Attempt::First(text) => text,
            Attempt::AfterStall { text, stall, stalled_log } => {
                crate::say!("boot: dom0 stalled ({stall}) and was booted once more; first console: {}", stalled_log.display());
                text
            }
        };
        let report = self.report_from(boot, artifacts, &text)?;
        // Kept only once the boot ended well and its console made a report.
        if let Ok(t) = std::fs::read_to_string(&timeline) {
            paths::write_atomic(&kept_timeline, t.as_bytes())?;
        }
        paths::write_atomic(&kept, text.as_bytes())?;
        self.booted.fetch_add(1, Ordering::Relaxed);
        crate::say!("boot: done in {} s", start.elapsed().as_secs());
        Ok(report)
    }

    /// The report in a boot's console text, also written beside its log.
    fn report_from(&self, boot: &Boot, artifacts: &Artifacts, text: &str) -> Result<Report> {
        let run_dir = &boot.run_dir;
        let steps = console::result_block(text)
            .with_context(|| format!("console log {}", run_dir.console_log().display()))?;
        let booted = Booted {
            base: artifacts.base.clone(),
            build: artifacts.flavor.name().into(),
            xen_tree: artifacts.checkout.as_ref().map(|p| p.display().to_string()),
            dom0_kernel: format!("{} {}", self.dom0.kernel.package, self.dom0.kernel.version),
            busybox: self.dom0.busybox.version.clone(),
        };
        let report = Report::new(boot.topology, boot.scenario, booted, &steps)
            .with_context(|| format!("reading the results in {}", run_dir.console_log().display()))?;
        for c in &report.churn {
            crate::say!("churn: {} {}: {}", artifacts.label(), boot.topology.name, c.summary());
        }
        paths::write_atomic(&run_dir.report(), yaml_serde::to_string(&report)?.as_bytes())?;
        Ok(report)
    }

    /// The name a boot's console is kept under in the cache.
    fn kept_as(&self, boot: &Boot) -> Result<String> {
        let identity = boot.identity()?;
        Ok(if self.timed { format!("{identity}.timed") } else { identity })
    }

    /// Whether the cache keeps the console of a boot that would be the
    /// same as this one.
    pub fn has_kept(&self, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario) -> Result<bool> {
        let boot = self.spec(artifacts, topology, scenario, false)?;
        Ok(paths::cache()?.join("boots").join(format!("{}.console.log", self.kept_as(&boot)?)).exists())
    }

    /// Boots one build with one topology and scenario.
    pub fn report(&self, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<Report> {
        let boot = self.spec(artifacts, topology, scenario, false)?;
        let _lock = boot.run_dir.lock()?;
        self.run(&boot, artifacts, scale)
    }

    /// Boots each build once per distinct artifact, `jobs` at a time: when
    /// the series is empty (or all baseline), both builds are the same Xen
    /// and one boot serves both.
    pub fn reports(
        &self,
        builds: &[Artifacts],
        topology: &Topology,
        scenario: &Scenario,
        jobs: usize,
        scale: Option<f64>,
    ) -> Vec<(Flavor, Result<Report>)> {
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        let distinct: Vec<usize> = (0..builds.len()).filter(|&i| *first.entry(&builds[i].key).or_insert(i) == i).collect();
        let mut booted = Vec::new();
        in_parallel(jobs, distinct.len(), |i| self.report(&builds[distinct[i]], topology, scenario, scale), |r| booted.push(r));
        builds
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let j = distinct.iter().position(|&d| d == first[a.key.as_str()]).expect("every key has a first build");
                let r = match &booted[j] {
                    Ok(r) if distinct[j] != i => {
                        crate::say!("boot: {} is the same build as {} ({}): reusing its boot", a.flavor, r.build, a.key);
                        let mut r = r.clone();
                        r.build = a.flavor.name().into();
                        Ok(r)
                    }
                    Ok(r) => Ok(r.clone()),
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                };
                (a.flavor, r)
            })
            .collect()
    }
}

/// Where the boots in `dirs` spent their time: for each phase of a boot
/// (see [`boot::Timeline::phases`]), the median and the longest, one line
/// each. A boot read again from the cache counts with the times of when it
/// booted; one without a timeline (its console was kept before the harness
/// kept timelines with consoles) is left out. `None` when no boot has one.
pub fn time_summary(dirs: &[RunDir]) -> Option<String> {
    let texts: Vec<String> = dirs.iter().filter_map(|d| std::fs::read_to_string(d.path().join(boot::TIMELINE)).ok()).collect();
    summary_of(&texts)
}

/// [`time_summary`] of the timelines' texts.
fn summary_of(texts: &[String]) -> Option<String> {
    let timelines: Vec<boot::Timeline> = texts.iter().map(|t| boot::Timeline::parse(t)).collect();
    let mut phases: Vec<(&str, Vec<f64>)> = Vec::new();
    for t in &timelines {
        for (name, d) in t.phases() {
            match phases.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(d.as_secs_f64()),
                None => phases.push((name, vec![d.as_secs_f64()])),
            }
        }
    }
    if timelines.is_empty() {
        return None;
    }
    let again = texts.iter().filter(|t| t.starts_with(READ_AGAIN)).count();
    let mut out = match again {
        0 => format!("where {} boot(s) spent their time (median / longest, seconds):\n", timelines.len()),
        n => format!(
            "where {} boot(s) spent their time (median / longest, seconds; {n} of them read again from the cache, with the times of when they booted):\n",
            timelines.len()
        ),
    };
    for (name, mut v) in phases {
        v.sort_by(f64::total_cmp);
        out.push_str(&format!("    {name:<24} {:>6.1} / {:>6.1}\n", v[v.len() / 2], v[v.len() - 1]));
    }
    Some(out)
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

/// How many boots run at once: `requested` (`--jobs`), else
/// `NUMA_HARNESS_JOBS`, else one per CPU, as many as the machine's memory
/// holds with the largest topology's guest memory each (QEMU reserves it)
/// and a quarter of the memory to spare.
pub fn boot_jobs(requested: Option<usize>) -> Result<usize> {
    if let Some(n) = requested {
        anyhow::ensure!(n > 0, "--jobs 0: at least one boot must run at a time");
        return Ok(n);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two boots' timelines as the harness wrote them (master, two-socket
    /// server), one of them read again from the cache: both count, the
    /// one read again is said to be.
    #[test]
    fn boot_times_with_one_read_again() {
        let ran = "xen-started 0.1\nxen-booted 4.3\ndom0-init 8.1\ndaemons-started 8.4\nscenario-done 9.6\nresult-printed 9.7\ntorn-down 9.7\nstopped 10.8\n";
        let kept = "xen-started 0.2\nxen-booted 4.6\ndom0-init 8.6\ndaemons-started 8.9\nscenario-done 9.6\nresult-printed 9.7\ntorn-down 9.7\nstopped 10.1\n";
        let again = format!("{READ_AGAIN} 0123456789abcdef\n{kept}");
        let s = summary_of(&[ran.to_string(), again]).unwrap();
        assert!(s.starts_with("where 2 boot(s) spent their time (median / longest, seconds; 1 of them read again from the cache"), "{s}");
        // The median of two is the larger here (index len / 2).
        assert!(s.contains("    Xen booting                 4.4 /    4.4\n"), "{s}");
        assert!(s.contains("    dom0 kernel booting         4.0 /    4.0\n"), "{s}");
        assert!(s.contains("    scenario                    1.2 /    1.2\n"), "{s}");
        assert_eq!(summary_of(&[]), None);
        let fresh = summary_of(&[ran.to_string()]).unwrap();
        assert!(fresh.starts_with("where 1 boot(s) spent their time (median / longest, seconds):\n"), "{fresh}");
    }
}
