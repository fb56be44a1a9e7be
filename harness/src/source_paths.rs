//! The ways a Xen source reaches a build, tested for real by `cargo xtask
//! test` on the default base: each is built and booted, and its report
//! must equal the stored snapshot of the build it stands for.
//!
//! - Upstream git: a repository made here from the base's tarball, with one
//!   commit on top that marks Xen's version, fetched over file:// by commit
//!   like upstream would be. What comes through git is what this tests, so
//!   only its hypervisor is built (with the baseline's patches), and booted
//!   with the tarball's baseline tools: it must report what the tarball's
//!   baseline does, under the marked version.
//! - A contributor's checkout: the base with its whole series applied as
//!   uncommitted changes (`git apply`, new files untracked). Built with
//!   `--xen-tree`, it must report what the patched build does, and the
//!   checkout must be left exactly as it was.
//!
//! Their scratch files and the git test's work tree are removed afterwards.
//! The checkout's work tree stays in the cache, as a contributor's does:
//! the checkout is made at the same place every time, so the next run
//! copies nothing into it and finds its build by content, as any build's
//! (a cold run builds it; a warm one checks the copy, the report and the
//! checkout left alone).

use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::base::{Base, Upstream};
use crate::build::{self, Artifacts};
use crate::checkout::Checkout;
use crate::fetch::{self, XenSource};
use crate::patch::{Flavor, Patch, Series};
use crate::runner::Booter;
use crate::scenario::Scenario;
use crate::topology::Topology;
use crate::{lock, paths, snapshot};

/// What the git test appends to Xen's version, to tell its build apart.
const MARK: &str = "-from-git";

/// The tests, by the name they run under (`<base>/source/<name>`).
pub const TESTS: [&str; 2] = ["upstream-git", "own-tree"];

/// Runs the test `what` (one of [`TESTS`]) on `base`. Its scratch space is
/// the cache's, locked for the test: another run waits.
///
/// `baseline` is the tarball's baseline build of the base, whose tools the
/// git test boots its hypervisor with.
pub fn test(sh: &Shell, base: &Base, baseline: &Artifacts, booter: &Booter, sources: Option<&Path>, scale: Option<f64>, what: &str) -> Result<()> {
    let source = fetch::xen_source(sh, base, fetch::sources_dir(sources).as_deref())?;
    let series = Series::load(&base.series_path())?;
    let scratch = paths::cache()?.join("scratch/source-paths");
    let _lock = lock::exclusive(&scratch.with_extension("lock"), "scratch space of the source tests")?;
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let topology = Topology::load(&paths::default_topology())?;
    let scenario = Scenario::load(&paths::default_scenario(), &topology)?;
    let outcome = match what {
        "upstream-git" => git_source(sh, base, &source, &series, baseline, booter, &scratch, &topology, &scenario, scale),
        "own-tree" => own_tree(sh, base, &source, &series, booter, &scratch, &topology, &scenario, scale),
        _ => bail!("no source test {what:?}; there are {TESTS:?}"),
    };
    std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    outcome
}

#[allow(clippy::too_many_arguments)]
fn git_source(
    sh: &Shell,
    base: &Base,
    source: &XenSource,
    series: &Series,
    baseline: &Artifacts,
    booter: &Booter,
    scratch: &Path,
    topology: &Topology,
    scenario: &Scenario,
    scale: Option<f64>,
) -> Result<()> {
    let repo = fetch::import(sh, &source.tarball, &source.directory, scratch, "Xen, as upstream")?;
    let makefile = repo.join("xen/Makefile");
    let text = std::fs::read_to_string(&makefile).with_context(|| format!("reading {}", makefile.display()))?;
    let vendor = "$(XEN_VENDORVERSION)";
    if !text.lines().any(|l| l.starts_with("export XEN_EXTRAVERSION ?=") && l.ends_with(vendor)) {
        bail!("{} sets XEN_EXTRAVERSION in a way this test does not know", makefile.display());
    }
    std::fs::write(&makefile, text.replacen(&format!("{vendor}\n"), &format!("{MARK}{vendor}\n"), 1))?;
    cmd!(sh, "git -C {repo} -c user.name=t -c user.email=t@localhost commit -q -a -m {MARK}").quiet().run()?;
    let commit = cmd!(sh, "git -C {repo} rev-parse HEAD").quiet().read()?;
    const HEAD_TREE: &str = "HEAD^{tree}";
    let tree = cmd!(sh, "git -C {repo} rev-parse {HEAD_TREE}").quiet().read()?;

    let from_git = Base {
        description: format!("{} from a repository made by the test", base.name),
        default: false,
        version: format!("{}{MARK}", base.version),
        upstream: Upstream {
            repository: format!("file://{}", repo.display()),
            branch: "test".into(),
            commit: commit.trim().into(),
            tree: tree.trim().into(),
        },
        tarball: None,
        debian: None,
        series: base.series.clone(),
        name: format!("{}{MARK}", base.name),
        path: base.path.clone(),
    };
    let downloads = scratch.join("download");
    let fetched = fetch::git_source(sh, &from_git, &downloads)?;
    let trees = paths::cache()?.join("trees").join(&from_git.name);
    let outcome = (|| {
        let artifacts = hypervisor_with_tools(sh, &fetched, &series.for_flavor(Flavor::Baseline), baseline, &trees, scratch)?;
        let mut report = booter.report(&artifacts, topology, scenario, scale)?;
        let version = report.xen_version.clone().unwrap_or_default();
        let Some(plain) = version.strip_suffix(MARK) else {
            bail!("Xen built from the git repository reports version {version:?}, not one ending {MARK:?}: it is not that build");
        };
        report.xen_version = Some(plain.to_string());
        report.base = base.name.clone();
        let expected = snapshot::stored(&base.name, &snapshot::name(&report))?;
        snapshot::same(&report, &expected, "the tarball's baseline snapshot")
    })();
    remove(&trees)?;
    outcome
}

#[allow(clippy::too_many_arguments)]
fn own_tree(
    sh: &Shell,
    base: &Base,
    source: &XenSource,
    series: &Series,
    booter: &Booter,
    scratch: &Path,
    topology: &Topology,
    scenario: &Scenario,
    scale: Option<f64>,
) -> Result<()> {
    let top = fetch::import(sh, &source.tarball, &source.directory, &scratch.join("checkout"), "Xen, as checked out")?;
    for p in series.for_flavor(Flavor::Patched) {
        let file = &p.path;
        cmd!(sh, "git -C {top} apply {file}").quiet().run().with_context(|| format!("git apply {}", p.name()))?;
    }
    let before = paths::listing(&top)?;
    let checkout = Checkout::open(&top)?;
    let outcome = (|| {
        let artifacts = build::build_checkout(source, &checkout)?;
        let mut report = booter.report(&artifacts, topology, scenario, scale)?;
        if report.xen_tree.as_deref() != Some(&*checkout.path.to_string_lossy()) {
            bail!("the report names checkout {:?}, not {}", report.xen_tree, checkout.path.display());
        }
        report.xen_tree = None;
        let expected = snapshot::stored(&base.name, &snapshot::name(&report))?;
        snapshot::same(&report, &expected, "the patched build's snapshot")?;
        if paths::listing(&top)? != before {
            bail!("building {} wrote into it", top.display());
        }
        Ok(())
    })();
    outcome
}

/// Builds only the hypervisor of `source` with `patches` on top (in
/// `trees/baseline`), and puts it beside `tools`' tools and FLASK policy
/// in an artifacts directory under `scratch`: what comes through git is
/// the hypervisor's version; its tools are the tarball's.
fn hypervisor_with_tools(sh: &Shell, source: &XenSource, patches: &[&Patch], tools: &Artifacts, trees: &Path, scratch: &Path) -> Result<Artifacts> {
    let tree = trees.join("baseline");
    let logs = trees.join("baseline.state");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    build::prepare_tree(sh, source, &tree)?;
    build::reset_to_base(sh, &tree)?;
    crate::patch::apply(sh, &tree, patches)?;
    build::configure_hypervisor(&tree, &logs, &build::BuildConfig::load()?.hypervisor)?;
    let jobs = build::jobs();
    build::run_logged(&tree, &logs, "hypervisor", "make", &["-C", "xen", "-j", &jobs])?;
    let dir = scratch.join("artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in ["xen", "xen-syms"] {
        std::fs::copy(tree.join("xen").join(f), dir.join(f)).with_context(|| format!("copying xen/{f} out of {}", tree.display()))?;
    }
    std::fs::copy(tools.xsm_policy(), dir.join("xenpolicy")).with_context(|| format!("copying {}", tools.xsm_policy().display()))?;
    let (from, to) = (tools.tools(), dir.join("tools"));
    cmd!(sh, "cp -a {from} {to}").quiet().run()?;
    let mut key = paths::KeyBuilder::default();
    key.add("hypervisor", paths::sha256_file(&dir.join("xen"))?).add("tools of", &tools.key);
    Ok(Artifacts { base: source.base.clone(), flavor: Flavor::Baseline, checkout: None, key: key.finish(), dir })
}

fn remove(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
