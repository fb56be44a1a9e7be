//! `cargo xtask boot`: one build, one topology and scenario.

use anyhow::Result;
use xshell::Shell;

use super::Work;
use crate::base::Base;
use crate::flags::Boot;
use crate::patch::Flavor;
use crate::runner::Booter;
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{paths, report};

pub fn boot(sh: &Shell, b: Boot) -> Result<()> {
    let topology = Topology::load(&b.topology.unwrap_or_else(paths::default_topology))?;
    let scenario = Scenario::load(&b.scenario.unwrap_or_else(paths::default_scenario), &topology)?;
    // Printing the command installs nothing (it may still build).
    let base = Base::chosen(b.base.as_deref())?;
    let (sources, tree) = (b.xen_sources.as_deref(), b.xen_tree.as_deref());
    let work = if b.print_command { Work::reading(sh, base, sources, tree)? } else { Work::new(sh, base, sources, tree)? };
    let artifacts = work.build(b.build.unwrap_or(Flavor::Patched))?;
    let booter = if b.print_command { Booter::reading(sh)? } else { Booter::new(sh)? };
    let boot = booter.spec(&artifacts, &topology, &scenario, b.interactive)?;
    if b.print_command {
        crate::progress::out(&crate::boot::printable(&boot)?);
        return Ok(());
    }
    let _lock = boot.run_dir.lock()?;
    if b.interactive {
        return crate::boot::boot_interactive(&boot);
    }
    let report = booter.run(&boot, &artifacts, &topology, &scenario, b.timeout_scale)?;
    crate::progress::out(report::table(&[&report]).trim_end());
    Ok(())
}
