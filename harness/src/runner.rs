//! Running boots: what every boot of a run shares (dom0's kernel and
//! busybox, the machine, the accelerator), one boot from a build to its
//! report (its host restored from a saved state, or booted whole), and
//! many boots at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use xshell::Shell;

use crate::boot::saved::{self, Made, Saved};
use crate::boot::timeline;
use crate::boot::{self, Accel, Boot, BootError, Delivery, Host, Machine, RunDir};
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
    /// KVM or TCG, and why: probed with the first Xen booted, and TCG
    /// from then on if a boot under KVM stops before dom0 starts.
    accel: Mutex<Option<(Accel, String)>>,
    /// Reuse the console of an earlier boot with the same identity
    /// (`cargo xtask test` without `--rerun`).
    pub reuse: bool,
    /// The boots time commands in the guest: under TCG their guest clock
    /// counts instructions ([`boot::INSTRUCTION_CLOCK`]) instead of
    /// following the host's, so that what they time does not depend on the
    /// host's speed or on what else it runs. They boot whole (no saved
    /// host), and their consoles are kept apart (`<identity>.timed`).
    pub timed: bool,
    /// Boots that ran, boots whose console was read again, and hosts
    /// booted and saved, so far.
    booted: AtomicUsize,
    read_again: AtomicUsize,
    hosts_saved: AtomicUsize,
    /// The timelines of the hosts this run booted and saved.
    host_timelines: Mutex<Vec<PathBuf>>,
}

/// The first line of a timeline copied from the cache into a run: the
/// boot's times are those of when it booted, not of this run.
const READ_AGAIN: &str = "read-again";

/// How a run gets its machine; part of a boot's identity.
const RESTORED: &str = "restored from its saved host";
const WHOLE: &str = "booted whole";

/// What one boot printed and how it got there.
struct Console {
    text: String,
    /// The saved host it was restored from.
    host: Option<Saved>,
}

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
        Ok(Booter {
            dom0: fetch::dom0_packages(sh)?,
            machine: Machine::load()?,
            accel: Mutex::new(None),
            reuse: false,
            timed: false,
            booted: AtomicUsize::new(0),
            read_again: AtomicUsize::new(0),
            hosts_saved: AtomicUsize::new(0),
            host_timelines: Mutex::new(Vec::new()),
        })
    }

    /// How many boots ran so far, and how many were read again.
    pub fn counts(&self) -> (usize, usize) {
        (self.booted.load(Ordering::Relaxed), self.read_again.load(Ordering::Relaxed))
    }

    /// How many hosts were booted and saved so far.
    pub fn hosts_saved(&self) -> usize {
        self.hosts_saved.load(Ordering::Relaxed)
    }

    /// The timelines of the hosts booted and saved so far.
    pub fn host_timelines(&self) -> Vec<PathBuf> {
        self.host_timelines.lock().expect("not poisoned").clone()
    }

    /// The accelerator boots use, and why; probed with `xen` the first
    /// time.
    pub fn accel(&self, xen: &Path) -> Result<(Accel, String)> {
        let mut accel = self.accel.lock().expect("not poisoned");
        if accel.is_none() {
            let detected = boot::accel::detect(xen)?;
            crate::say!("boot: QEMU runs with {} ({})", detected.0, detected.1);
            *accel = Some(detected);
        }
        Ok(accel.clone().expect("set above"))
    }

    /// KVM let a boot down before dom0 started: TCG for this boot and
    /// every later one, and the run says so.
    fn fall_back_to_tcg(&self, err: &BootError) {
        let first = err.to_string().lines().next().unwrap_or("").to_string();
        crate::say!("boot: a boot under KVM stopped before dom0 started ({first}); trying it once more under TCG, and TCG from now on");
        *self.accel.lock().expect("not poisoned") = Some((Accel::Tcg, format!("a boot under KVM stopped before dom0 started: {first}")));
    }

    /// The boot of one build with one topology and scenario.
    pub fn spec(&self, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, interactive: bool) -> Result<Boot> {
        let mut xen_cmdline = self.machine.xen_cmdline.clone();
        xen_cmdline.extend(scenario.xen_cmdline.iter().cloned());
        if let Some(mode) = scenario.flask {
            xen_cmdline.extend(mode.xen_cmdline().iter().map(|s| s.to_string()));
        }
        let mut dom0_cmdline = self.machine.dom0_cmdline.clone();
        if interactive {
            dom0_cmdline.push("numa_harness.shell".into());
        }
        let host = Host {
            topology_args: topology.qemu_args(),
            xen: artifacts.xen(),
            xen_cmdline,
            kernel: image::kernel(&self.dom0.kernel)?,
            dom0_cmdline,
            image: image::write_base(&self.dom0, artifacts)?,
            xsm_policy: scenario.flask.map(|_| artifacts.xsm_policy()),
            accel: self.accel(&artifacts.xen())?.0,
            counted: self.timed,
        };
        Ok(Boot {
            host,
            name: format!("{}/{}/{} on {}", artifacts.base, topology.name, scenario.name, artifacts.label()),
            delivery: Delivery::of(scenario)?,
            run_dir: RunDir::of(artifacts, topology, scenario),
            whole: self.timed || interactive,
        })
    }

    /// Everything that decides what a boot prints, as a key: its host (see
    /// [`saved::key`]), the scenario as dom0 receives it, and whether it
    /// is restored from its saved host or booted whole. Two boots with the
    /// same identity run the same machine on the same inputs.
    fn identity(boot: &Boot) -> Result<String> {
        let mut key = paths::KeyBuilder::default();
        key.add("host", saved::key(&boot.host)?)
            .add("delivery", boot.delivery.bytes())
            .add("how", if boot.whole { WHOLE } else { RESTORED });
        Ok(key.finish())
    }

    /// The name a boot's console is kept under in the cache.
    fn kept_as(&self, boot: &Boot) -> Result<String> {
        let identity = Booter::identity(boot)?;
        Ok(if self.timed { format!("{identity}.timed") } else { identity })
    }

    fn kept(&self, boot: &Boot) -> Result<PathBuf> {
        Ok(paths::cache()?.join("boots").join(format!("{}.console.log", self.kept_as(boot)?)))
    }

    /// Whether the cache keeps the console of a boot that would be the
    /// same as this one.
    pub fn has_kept(&self, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario) -> Result<bool> {
        let boot = self.spec(artifacts, topology, scenario, false)?;
        Ok(self.kept(&boot)?.exists())
    }

    /// Runs a boot, parses the console into a report and writes it next to
    /// the log. With `reuse`, a boot whose identity (see
    /// [`Booter::identity`]) ran before to its end is not run again: its
    /// console log, kept in the cache (`boots/<identity>.console.log`,
    /// `<identity>.timed.console.log` for a [timed](Booter::timed) boot),
    /// is parsed anew instead.
    pub fn run(&self, boot: &Boot, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<Report> {
        boot.run_dir.forget_report()?;
        let kept = self.kept(boot)?;
        if self.reuse && kept.exists() {
            return self.read_again(boot, artifacts, topology, scenario, &kept);
        }
        let (boot, console, report) = self.fresh(boot, artifacts, topology, scenario, scale)?;
        // Kept only once the boot ended well and its console made a report.
        let kept = self.kept(&boot)?;
        if let Ok(t) = std::fs::read_to_string(boot.run_dir.timeline()) {
            paths::write_atomic(&kept.with_file_name(format!("{}.{}", self.kept_as(&boot)?, timeline::FILE)), t.as_bytes())?;
        }
        paths::write_atomic(&kept, console.as_bytes())?;
        Ok(report)
    }

    /// Runs a boot for real, whatever the cache keeps, and returns it (as
    /// run: under TCG if KVM let it down), its console and its report.
    fn fresh(&self, boot: &Boot, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<(Boot, String, Report)> {
        let start = Instant::now();
        let (boot, console) = match self.console(boot, scale) {
            Err(e) if boot.host.accel == Accel::Kvm && e.before_dom0() => {
                self.fall_back_to_tcg(&e);
                let boot = Boot { host: Host { accel: Accel::Tcg, ..boot.host.clone() }, ..boot.clone() };
                let console = self.console(&boot, scale)?;
                (boot, console)
            }
            other => (boot.clone(), other?),
        };
        let report = self.report_from(&boot, artifacts, topology, scenario, &console.text)?;
        if let Some(host) = &console.host {
            std::fs::copy(&host.console, boot.run_dir.host_console_log())
                .with_context(|| format!("copying {} into {}", host.console.display(), boot.run_dir.path().display()))?;
        }
        self.booted.fetch_add(1, Ordering::Relaxed);
        crate::say!("boot: {} done in {:.0} s", boot.name, start.elapsed().as_secs_f64());
        Ok((boot, console.text, report))
    }

    /// The console of a boot that the cache kept, parsed anew.
    fn read_again(&self, boot: &Boot, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, kept: &Path) -> Result<Report> {
        let run_dir = &boot.run_dir;
        let text = std::fs::read_to_string(kept).with_context(|| format!("reading {}", kept.display()))?;
        paths::write_atomic(&run_dir.console_log(), text.as_bytes())?;
        // The times of when it booted, marked as read again; none for a
        // console kept before the harness kept timelines with it.
        let kept_timeline = kept.with_file_name(format!("{}.{}", self.kept_as(boot)?, timeline::FILE));
        match std::fs::read_to_string(&kept_timeline) {
            Ok(t) => paths::write_atomic(&run_dir.timeline(), format!("{READ_AGAIN} {}\n{t}", Booter::identity(boot)?).as_bytes())?,
            Err(_) => {
                let _ = std::fs::remove_file(run_dir.timeline());
            }
        }
        self.read_again.fetch_add(1, Ordering::Relaxed);
        crate::say!("boot: {}: the same boot ran before; its console is read again (--rerun runs it)", boot.name);
        self.report_from(boot, artifacts, topology, scenario, &text)
    }

    /// Runs one boot for its console: restored from its saved host (booted
    /// and saved first if the cache has none), or, for a timed boot,
    /// booted whole. A run whose dom0 stalled or whose machine hung is run
    /// once more, its first console kept as `console.stalled.log`.
    fn console(&self, boot: &Boot, scale: Option<f64>) -> Result<Console, BootError> {
        let timeouts = Timeouts::new(boot.host.accel == Accel::Kvm, scale).map_err(BootError::Setup)?;
        crate::say!(
            "boot: {} with {}{}; console: {}",
            boot.name,
            boot.host.accel,
            if boot.whole { ", booted whole" } else { ", restored from its saved host" },
            boot.run_dir.console_log().display()
        );
        let mut host = None;
        let mut once = || -> Result<String, BootError> {
            if boot.whole {
                return boot::boot_whole(boot, &timeouts);
            }
            let saved = self.saved_host(boot, &timeouts)?;
            match boot::restore(boot, &saved.state, &timeouts) {
                Err(BootError::Resume { why, .. }) => {
                    // A state QEMU cannot load is made again, once.
                    crate::say!("boot: {}: QEMU could not resume its saved host: {why}", boot.name);
                    saved::forget(&saved);
                    let saved = host.insert(self.saved_host(boot, &timeouts)?);
                    boot::restore(boot, &saved.state, &timeouts)
                }
                outcome => {
                    host = Some(saved);
                    outcome
                }
            }
        };
        let text = match once() {
            Err(e) if e.is_stall() => {
                let (log, stalled) = (boot.run_dir.console_log(), boot.run_dir.stalled_log());
                std::fs::rename(&log, &stalled)
                    .with_context(|| format!("renaming {} to {}", log.display(), stalled.display()))
                    .map_err(BootError::Setup)?;
                crate::say!("boot: {}: {e}\nboot: running it once more (first console: {})", boot.name, stalled.display());
                once()?
            }
            other => other?,
        };
        Ok(Console { text, host })
    }

    /// The saved state of the boot's host, booted and saved first if the
    /// cache has none.
    fn saved_host(&self, boot: &Boot, timeouts: &Timeouts) -> Result<Saved, BootError> {
        let key = saved::key(&boot.host).map_err(BootError::Setup)?;
        let dir = paths::output().join("hosts").join(&key);
        let (saved, made) = saved::get(&boot.host, &boot.name, &dir, timeouts)?;
        if made == Made::Booted {
            self.hosts_saved.fetch_add(1, Ordering::Relaxed);
            self.host_timelines.lock().expect("not poisoned").push(saved.timeline.clone());
            crate::say!("boot: host {} (for {}) booted and saved: {}", saved.key, boot.name, saved.state.display());
        }
        Ok(saved)
    }

    /// The report in a boot's console text, also written beside its log.
    fn report_from(&self, boot: &Boot, artifacts: &Artifacts, boot_topology: &Topology, boot_scenario: &Scenario, text: &str) -> Result<Report> {
        let run_dir = &boot.run_dir;
        let steps = console::result_block(text).with_context(|| format!("console log {}", run_dir.console_log().display()))?;
        let booted = Booted {
            base: artifacts.base.clone(),
            build: artifacts.flavor.name().into(),
            xen_tree: artifacts.checkout.as_ref().map(|p| p.display().to_string()),
            dom0_kernel: format!("{} {}", self.dom0.kernel.package, self.dom0.kernel.version),
            busybox: self.dom0.busybox.version.clone(),
        };
        let report = Report::new(boot_topology, boot_scenario, booted, &steps)
            .with_context(|| format!("reading the results in {}", run_dir.console_log().display()))?;
        for c in &report.churn {
            crate::say!("churn: {} {}: {}", artifacts.label(), boot_topology.name, c.summary());
        }
        paths::write_atomic(&run_dir.report(), yaml_serde::to_string(&report)?.as_bytes())?;
        Ok(report)
    }

    /// Boots one build with one topology and scenario.
    pub fn report(&self, artifacts: &Artifacts, topology: &Topology, scenario: &Scenario, scale: Option<f64>) -> Result<Report> {
        let boot = self.spec(artifacts, topology, scenario, false)?;
        let _lock = boot.run_dir.lock()?;
        self.run(&boot, artifacts, topology, scenario, scale)
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

/// Where boots spent their time, from their timeline files (runs', and
/// those of the hosts booted and saved): for each phase of a boot (see
/// [`boot::timeline::Timeline::phases`]), the median and the longest, one
/// line each. A boot read again from the cache counts with the times of
/// when it booted; one without a timeline (its console was kept before the
/// harness kept timelines with consoles) is left out. `None` when no boot
/// has one.
pub fn time_summary(timelines: &[PathBuf]) -> Option<String> {
    let texts: Vec<String> = timelines.iter().filter_map(|t| std::fs::read_to_string(t).ok()).collect();
    summary_of(&texts)
}

/// [`time_summary`] of the timelines' texts.
fn summary_of(texts: &[String]) -> Option<String> {
    let timelines: Vec<timeline::Timeline> = texts.iter().map(|t| timeline::Timeline::parse(t)).collect();
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
    phases.sort_by_key(|(name, _)| timeline::phase_order(name));
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

    /// A host booted and saved, a run restored from it and one read again
    /// from the cache: all count, each phase from the timelines that have
    /// it, and the one read again is said to be.
    #[test]
    fn boot_times_with_one_read_again() {
        let host = "xen-started 0.1\nxen-booted 4.3\ndom0-init 12.1\ndaemons-started 12.4\nawaiting-scenario 12.5\nsaved 14.6\nstopped 14.9\n";
        let ran = "restored 1.2\nscenario-received 2.3\nscenario-done 5.5\nresult-printed 5.6\ntorn-down 6.0\nstopped 6.4\n";
        let kept = "restored 1.0\nscenario-received 2.0\nscenario-done 3.2\nresult-printed 3.3\ntorn-down 3.6\nstopped 4.1\n";
        let again = format!("{READ_AGAIN} 0123456789abcdef\n{kept}");
        let s = summary_of(&[host.to_string(), ran.to_string(), again]).unwrap();
        assert!(s.starts_with("where 3 boot(s) spent their time (median / longest, seconds; 1 of them read again from the cache"), "{s}");
        assert!(s.contains("    Xen booting                 4.2 /    4.2\n"), "{s}");
        assert!(s.contains("    host state saved            2.1 /    2.1\n"), "{s}");
        // The median of two is the larger here (index len / 2).
        assert!(s.contains("    host state loaded           1.2 /    1.2\n"), "{s}");
        assert!(s.contains("    scenario                    3.2 /    3.2\n"), "{s}");
        assert_eq!(summary_of(&[]), None);
        let fresh = summary_of(&[ran.to_string()]).unwrap();
        assert!(fresh.starts_with("where 1 boot(s) spent their time (median / longest, seconds):\n"), "{fresh}");
    }
}
