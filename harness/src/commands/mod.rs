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
use crate::build::{Artifacts, Change};
use crate::checkout::Checkout;
use crate::fetch::{self, XenSource};
use crate::flags::{Xtask, XtaskCmd};
use crate::patch::{Flavor, Series};
use crate::{host, lock, paths};

pub fn dispatch(flags: Xtask) -> Result<()> {
    let sh = Shell::new()?;
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
    pub fn build(&self, flavor: Flavor) -> Result<Artifacts> {
        let change = match (&self.checkout, flavor) {
            (Some(c), Flavor::Patched) => Change::Checkout(c),
            _ => Change::Patches(self.series.for_flavor(flavor)),
        };
        let _lock = self.lock_trees()?;
        crate::build::build(self.sh, &self.source, flavor, change)
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
    for dir in ["artifacts", "images", "downloads", "debs", "trees"] {
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
