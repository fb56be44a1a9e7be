//! `cargo xtask` (`run`), the main job: both builds of a base, one topology
//! and scenario, the reports side by side.

use anyhow::Result;
use xshell::Shell;

use super::Work;
use crate::base::Base;
use crate::flags::Run;
use crate::patch::Flavor;
use crate::report::{self, Report};
use crate::runner::{boot_jobs, Booter};
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::timings::{self, Timing};
use crate::paths;

pub fn run(sh: &Shell, r: Run) -> Result<()> {
    let topology = Topology::load(&r.topology.unwrap_or_else(paths::default_topology))?;
    let scenario = Scenario::load(&r.scenario.unwrap_or_else(paths::default_scenario), &topology)?;
    let started = std::time::Instant::now();
    let work = Work::new(sh, Base::chosen(r.base.as_deref())?, r.xen_sources.as_deref(), r.xen_tree.as_deref())?;
    let builds = Flavor::ALL
        .iter()
        .filter(|&&f| scenario.runs_on(f))
        .map(|&f| work.build(f))
        .collect::<Result<Vec<_>>>()?;
    let booter = Booter::new(sh)?;
    let reports = booter
        .reports(&builds, &topology, &scenario, boot_jobs(None)?, r.timeout_scale)
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Report> = reports.iter().collect();
    crate::progress::out(report::table(&refs).trim_end());
    let path = paths::output().join("report.yaml");
    paths::write_atomic(&path, report::comparison_yaml(&refs)?.as_bytes())?;
    crate::progress::out(&format!("\nreport: {}", path.display()));
    let (booted, read_again) = booter.counts();
    Timing::new(
        timings::command_line(),
        started.elapsed().as_secs_f64(),
        format!("{} builds; {booted} boots ran, {read_again} read again from the cache", builds.len()),
        true,
    )
    .record_command()?;
    Ok(())
}
