//! A scenario's report does not depend on which others ran before it:
//! tested by `cargo xtask test` on the default base, for real. The default
//! scenario on the default topology, booted whole on the patched build
//! (the scenario alone on a machine of its own), is compared with the same
//! scenario restored from the saved host after another scenario (one that
//! fills a node) ran on that host. The two reports must be the same, as
//! snapshots compare them. Like every boot of the test command, the three
//! runs are read again from the cache when nothing they depend on changed
//! (`--rerun` runs them).

use anyhow::{Context, Result};

use crate::boot::RunDir;
use crate::build::Artifacts;
use crate::runner::Booter;
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{paths, snapshot};

/// The test's name under its base: `<base>/independence`.
pub const NAME: &str = "independence";

/// The scenario that runs on the saved host before the compared one.
const BEFORE: &str = "node-full.yaml";

/// Runs the test on `patched`, the default base's patched build.
pub fn test(booter: &Booter, patched: &Artifacts, scale: Option<f64>) -> Result<()> {
    let topology = Topology::load(&paths::default_topology())?;
    let compared = Scenario::load(&paths::default_scenario(), &topology)?.for_test();
    let before = Scenario::load(
        &paths::images_dir().join("scenarios").join(BEFORE),
        &topology,
    )?
    .for_test();
    let dir = |name: &str| {
        RunDir::new(
            &patched.base,
            patched.label(),
            &topology.name,
            &format!("{NAME}/{name}"),
        )
    };
    let run = |scenario: &Scenario, name: &str, whole: bool| -> Result<crate::report::Report> {
        let mut boot = booter.spec(patched, &topology, scenario, false)?;
        boot.run_dir = dir(name);
        boot.whole = whole;
        let _lock = boot.run_dir.lock()?;
        booter.run(&boot, patched, &topology, scenario, scale)
    };
    let alone = run(&compared, &format!("{}-alone", compared.name), true)?;
    run(&before, &before.name, false)
        .with_context(|| format!("the scenario run first, {}", before.name))?;
    let after = run(
        &compared,
        &format!("{}-after-{}", compared.name, before.name),
        false,
    )?;
    snapshot::same(
        &after,
        &snapshot::normalized(&alone)?,
        &format!(
            "the same scenario booted alone ({})",
            dir(&format!("{}-alone", compared.name)).report().display()
        ),
    )
    .with_context(|| {
        format!(
            "{} restored after {} ran on its host",
            compared.name, before.name
        )
    })
}
