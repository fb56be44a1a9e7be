//! One module per subcommand of `cargo xtask`, each composing the stages
//! it needs and nothing more: a command installs packages, fetches or
//! probes KVM only once it is about to build or boot.

mod boot;
mod build;
mod evidence;
mod run;
mod setup;
mod test;

use std::path::Path;

use anyhow::Result;
use xshell::Shell;

use crate::base::Base;
use crate::build::{Artifacts, Job};
use crate::work_tree::WorkTree;
use crate::checkout::Checkout;
use crate::fetch::{self, XenSource};
use crate::flags::{Xtask, XtaskCmd};
use crate::patch::{Flavor, Series};
use crate::{host, lock, paths};

pub fn dispatch(flags: Xtask) -> Result<()> {
    let sh = Shell::new()?;
    // A bad timeout scale (flag or environment) is refused before anything
    // is fetched, built or booted.
    if let Some(scale) = timeout_scale_flag(&flags.subcommand) {
        crate::config::timeout_scale(scale)?;
    }
    match flags.subcommand {
        XtaskCmd::Setup(_) => setup::setup(&sh),
        XtaskCmd::Fetch(f) => setup::fetch(&sh, f),
        XtaskCmd::Build(b) => build::build(&sh, b),
        XtaskCmd::CheckSeries(c) => build::check_series(&sh, c),
        XtaskCmd::Image(i) => build::image(&sh, i),
        XtaskCmd::Boot(b) => boot::boot(&sh, b),
        XtaskCmd::Run(r) => run::run(&sh, r),
        XtaskCmd::Test(t) => test::test(&sh, t),
        XtaskCmd::Evidence(e) => evidence::evidence(&sh, e),
    }
}

/// The `--timeout-scale` of a subcommand that boots, `None` for the others.
fn timeout_scale_flag(cmd: &XtaskCmd) -> Option<Option<f64>> {
    match cmd {
        XtaskCmd::Boot(b) => Some(b.timeout_scale),
        XtaskCmd::Run(r) => Some(r.timeout_scale),
        XtaskCmd::Test(t) => Some(t.timeout_scale),
        XtaskCmd::Evidence(e) => Some(e.timeout_scale),
        _ => None,
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
/// contributor's checkout to build as the patched side, if any. Making one
/// installs what the host lacks and fetches the source.
pub struct Work<'a> {
    pub sh: &'a Shell,
    pub base: Base,
    pub source: XenSource,
    pub series: Series,
    pub checkout: Option<Checkout>,
}

impl<'a> Work<'a> {
    pub fn new(sh: &'a Shell, base: Base, sources: Option<&Path>, xen_tree: Option<&Path>) -> Result<Work<'a>> {
        Work::with_packages(sh, base, sources, xen_tree, host::ensure)
    }

    /// [`Work::new`] for commands that only read: the host's packages
    /// must be there already, nothing is installed.
    pub fn reading(sh: &'a Shell, base: Base, sources: Option<&Path>, xen_tree: Option<&Path>) -> Result<Work<'a>> {
        Work::with_packages(sh, base, sources, xen_tree, host::verify)
    }

    fn with_packages(
        sh: &'a Shell,
        base: Base,
        sources: Option<&Path>,
        xen_tree: Option<&Path>,
        packages: fn(&Shell) -> Result<()>,
    ) -> Result<Work<'a>> {
        packages(sh)?;
        clear_stale()?;
        let series = Series::load(&base.series_path())?;
        let checkout = xen_tree.map(Checkout::open).transpose()?;
        let source = fetch::xen_source(sh, &base, fetch::sources_dir(sources).as_deref())?;
        Ok(Work { sh, base, source, series, checkout })
    }

    /// Builds one flavour, holding the base's work trees meanwhile so that
    /// another run on the same cache waits instead of resetting them.
    /// A contributor's checkout is built in a work tree of its own; the
    /// series' builds in the base's [`WorkTree`], at the commit of their
    /// last patch.
    pub fn build(&self, flavor: Flavor) -> Result<Artifacts> {
        if let (Some(c), Flavor::Patched) = (&self.checkout, flavor) {
            let _lock = self.lock_trees()?;
            return crate::build::build_checkout(&self.source, c);
        }
        let patches = self.series.for_flavor(flavor);
        let job = Job {
            base: &self.source.base,
            source_tree: &self.source.tree,
            flavor,
            checkout: None,
            key: crate::build::key_of_patches(&self.source.base, &self.source.tree, &patches)?,
            what: format!("patches: {:?}", patches.iter().map(|p| p.name()).collect::<Vec<_>>()),
        };
        if let Some(done) = job.done()? {
            return Ok(done);
        }
        let _lock = self.lock_trees()?;
        if let Some(done) = job.done()? {
            return Ok(done);
        }
        let tree = WorkTree::open(self.sh, &self.source, &self.series)?;
        crate::say!("build: {}: {} patch(es) on Xen {}, in {}", job.label(), patches.len(), self.source.tree, tree.path.display());
        tree.checkout(self.sh, patches.len())?;
        job.make(&tree.path, &tree.state.join(flavor.name()))
    }

    /// The series check, under the same lock.
    pub fn check_series(&self) -> Result<()> {
        let _lock = self.lock_trees()?;
        crate::series_check::check(self.sh, &self.source, &self.series)
    }

    fn lock_trees(&self) -> Result<lock::Guard> {
        let trees = paths::cache()?.join("trees");
        lock::exclusive_inherited(&trees.join(format!("{}.lock", self.base.name)), "base's work trees")
    }
}

/// Removes what interrupted runs left in the cache and the runs folder.
fn clear_stale() -> Result<()> {
    let cache = paths::cache()?;
    let mut removed = 0;
    for dir in ["artifacts", "images", "downloads", "debs", "trees", "states", "boots", "timings", "linters", "scratch"] {
        removed += paths::clear_stale(&cache.join(dir))?;
    }
    for base in Base::names()? {
        removed += paths::clear_stale(&cache.join("trees").join(base))?;
    }
    removed += paths::clear_stale(&paths::output())?;
    if removed > 0 {
        crate::say!("cache: removed {removed} temporary file(s) left by interrupted runs");
    }
    Ok(())
}
