//! `cargo xtask evidence`: both builds of a base booted with every
//! topology and every scenario that places domains or measures what
//! creating one costs, and the figures a reviewer asks for written under
//! `docs/evidence/` as Markdown and SVG.

use anyhow::{Context, Result};
use xshell::Shell;

use super::Work;
use crate::base::Base;
use crate::config::yaml_files;
use crate::evidence::figures::{self, Figures};
use crate::evidence::{markdown, svg, Header, OwnTimes, Pair};
use crate::flags;
use crate::patch::Flavor;
use crate::boot::RunDir;
use crate::runner::{boot_jobs, in_parallel, time_summary, Booter};
use crate::scenario::{Collect, PlanStep, Scenario};
use crate::topology::Topology;
use crate::timings::{self, Timing};
use crate::paths;

/// The scenarios whose reports say where domains landed: they run on both
/// builds, create domains and collect the `u` debug key, and are not about
/// something else (churn, refusals).
fn places_domains(s: &Scenario) -> bool {
    Flavor::ALL.iter().all(|&f| s.runs_on(f))
        && !s.domains.is_empty()
        && s.collect.contains(&Collect::DebugKeyU)
        && s.steps().iter().all(|step| matches!(step, PlanStep::Create(_) | PlanStep::Destroy(_)))
}

/// The scenarios that measure what creating a domain costs.
fn measures_cost(s: &Scenario) -> bool {
    Flavor::ALL.iter().all(|&f| s.runs_on(f)) && s.steps().iter().any(|step| matches!(step, PlanStep::Measure(_)))
}

/// Every shipped topology with every scenario that `pick` picks and that
/// fits it (and names it, if it names topologies), in file-name order.
fn chosen(pick: fn(&Scenario) -> bool) -> Result<Vec<(Topology, Scenario)>> {
    let images = paths::images_dir();
    let topologies = yaml_files(&images.join("topologies"))?.iter().map(|p| Topology::load(p)).collect::<Result<Vec<_>>>()?;
    let scenarios = yaml_files(&images.join("scenarios"))?.iter().map(|p| Scenario::load_any(p)).collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for t in &topologies {
        for s in scenarios.iter().filter(|s| pick(s)) {
            if s.made_for(t).is_ok() && s.fits(t).is_ok() {
                out.push((t.clone(), Scenario::load(&s.path, t)?));
            }
        }
    }
    Ok(out)
}

fn machine(accel: &(crate::boot::Accel, String)) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (accel, why) = accel;
    format!("{model}, {cores} core(s), QEMU with {accel} ({why})")
}

/// The commands whose latest times the report lists: the README's two
/// (the main job, the tests) and what `bash .ci/run` runs.
const README_COMMANDS: &[&str] = &["cargo xtask", "cargo xtask test", "cargo xtask test --rerun"];

fn harness_commit() -> String {
    duct::cmd!("git", "describe", "--always", "--dirty")
        .dir(paths::repo())
        .stderr_null()
        .read()
        .unwrap_or_else(|_| "unknown (not a git checkout)".into())
}

pub fn evidence(sh: &Shell, e: flags::Evidence) -> Result<()> {
    let base = Base::chosen(e.base.as_deref())?;
    let placing = chosen(places_domains)?;
    let chosen: Vec<_> = placing.iter().cloned().chain(chosen(measures_cost)?).collect();
    let work = Work::new(sh, base.clone(), e.xen_sources.as_deref(), None)?;
    let builds = [work.build(Flavor::Baseline)?, work.build(Flavor::Patched)?];
    let mut booter = Booter::new(sh)?;
    booter.reuse = !e.rerun;
    crate::say!("evidence: {} topology and scenario pairs, each on both builds", chosen.len());

    let jobs = boot_jobs(e.jobs)?;
    let mut reports = Vec::new();
    in_parallel(
        jobs,
        2 * placing.len(),
        |i| {
            let (t, s) = &placing[i / 2];
            booter.report(&builds[i % 2], t, s, e.timeout_scale)
        },
        |r| reports.push(r),
    );
    // The boots that time `xl create` and `xl destroy` run last, the two
    // builds' boots of a scenario side by side and nothing else. Under TCG
    // their clock counts instructions: on the host's clock a guest's speed
    // followed the whole machine's load (the same boot, alone, 18% slower
    // than half an hour before). Under KVM the clock is the host's, and
    // two boots that run together at least see the same moments; so both
    // are booted again unless both were kept.
    booter.timed = true;
    for (t, s) in &chosen[placing.len()..] {
        let kept = builds.iter().map(|b| booter.has_kept(b, t, s)).collect::<Result<Vec<_>>>()?;
        booter.reuse = !e.rerun && kept.iter().all(|&k| k);
        in_parallel(2, builds.len(), |i| booter.report(&builds[i], t, s, e.timeout_scale), |r| reports.push(r));
    }
    let mut pairs = Vec::new();
    let mut reports = reports.into_iter();
    for _ in &chosen {
        let (b, p) = (reports.next().expect("two per pair")?, reports.next().expect("two per pair")?);
        pairs.push(Pair::new(b, p)?);
    }
    let cost_pairs = pairs.split_off(placing.len());
    let run_dirs: Vec<RunDir> =
        chosen.iter().flat_map(|(t, s)| builds.iter().map(move |b| RunDir::of(b, t, s))).collect();
    let times = OwnTimes {
        builds: builds
            .iter()
            .map(|b| (format!("{}/{}", base.name, b.label()), Timing::read(&b.dir.join(timings::BUILD_TIME))))
            .collect(),
        commands: timings::latest_commands(README_COMMANDS)?,
        boots: time_summary(&run_dirs.iter().map(RunDir::timeline).chain(booter.host_timelines()).collect::<Vec<_>>()),
    };

    let accel = booter.accel(&builds[0].xen())?;
    let header = Header {
        command: match base.default {
            true => "cargo xtask evidence".into(),
            false => format!("cargo xtask evidence --base {}", base.name),
        },
        base: base.name.clone(),
        xen_commit: format!("{} ({})", &base.upstream.commit[..10.min(base.upstream.commit.len())], base.version),
        harness_commit: harness_commit(),
        machine: machine(&accel),
        clock: match accel.0 {
            crate::boot::Accel::Tcg => format!(
                "QEMU's instruction counter (TCG with `-icount {}`): dom0's clock advances 2 ns for each instruction the \
                 guest executes and skips idle time, so these times are the guest's work, the same on any host under any \
                 load, and not a real CPU's milliseconds",
                crate::boot::INSTRUCTION_CLOCK
            ),
            crate::boot::Accel::Kvm => "the host's: wall time under KVM, on the machine above".into(),
        },
    };
    let docs = paths::repo().join("docs").join("evidence");
    let pictures = docs.join(&base.name);
    let staging = paths::staging_dir(&pictures)?;
    for p in &pairs {
        let path = staging.join(p.svg_file());
        std::fs::write(&path, svg::draw(p)?).with_context(|| format!("writing {}", path.display()))?;
    }
    paths::commit_dir(&staging, &pictures)?;
    let compared = crate::evidence::cost::compare(&cost_pairs)?;
    let figures = Figures::of(&header.harness_commit, &pairs, &compared)?;
    let kept = docs.join(format!("{}.yaml", base.name));
    let reproduced = match std::fs::read_to_string(&kept) {
        Ok(text) => {
            let before: Figures = yaml_serde::from_str(&text)
                .with_context(|| format!("{}: not the figures of an earlier report; remove it to start afresh", kept.display()))?;
            let mut r = figures::reproduce(&before, &figures);
            (r.booted, r.read_again) = booter.counts();
            Some(r)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", kept.display())),
    };
    let document = docs.join(format!("{}.md", base.name));
    paths::write_atomic(
        &document,
        markdown::document(&header, &pairs, &cost_pairs, reproduced.as_ref(), &times, &base.name)?.as_bytes(),
    )?;
    paths::write_atomic(&kept, yaml_serde::to_string(&figures)?.as_bytes())?;
    if let Some(r) = &reproduced {
        let outside = r.times.iter().filter(|t| !t.inside()).count();
        let ratios = r.ratios.iter().filter(|t| !t.inside()).count();
        println!(
            "evidence: against the report it replaced: {} placement and {} page figure(s) differ, {ratios} of {} ratios outside the interval it stated ({outside} of {} medians outside their P10-P90)",
            r.placement_changes.len(),
            r.page_changes.len(),
            r.ratios.len(),
            r.times.len()
        );
    }
    let totals = markdown::totals(&pairs)?;
    println!(
        "evidence: structures on the domain's own nodes: baseline {}, patched {}",
        totals[0].text(),
        totals[1].text()
    );
    for c in &compared {
        println!(
            "evidence: xl create -p of {} ({} vCPUs): baseline {}, patched {}, ratio {}",
            c.name,
            c.vcpus,
            c.create[0].text(),
            c.create[1].text(),
            c.create_ratio.text()
        );
    }
    println!("evidence: {} and {} pictures in {}", document.display(), pairs.len(), pictures.display());
    Ok(())
}
