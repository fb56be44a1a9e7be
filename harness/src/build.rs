//! Build stage: hypervisor, tools and FLASK policy built in a work tree
//! (the base's own, `work_tree`, at the commit of a build's last patch; or
//! one a contributor's checkout is copied into), and kept as artifacts
//! under a key made from everything that went in.
//!
//! A build whose key already has artifacts does nothing at all. Otherwise
//! make runs in the work tree as an earlier build left it, and rebuilds
//! what changed. Every compiler call goes through ccache, shared by all
//! trees, so the same file built in another tree is compiled once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::checkout::Checkout;
use crate::fetch::{self, XenSource};
use crate::patch::{Flavor, Patch};
use crate::timings::{self, Timing};
use crate::{host, paths};

/// `xen/build.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    pub hypervisor: HypervisorConfig,
    pub tools: ToolsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorConfig {
    /// `CONFIG_FOO=y` lines applied on top of the defconfig.
    pub kconfig: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    pub configure: Vec<String>,
}

impl BuildConfig {
    pub fn load() -> Result<BuildConfig> {
        crate::config::load_yaml(&config_path())
    }
}

/// What a finished build leaves: `xen` (the multiboot ELF QEMU loads),
/// `xen-syms`, `tools/` (the tools installed with DESTDIR) and `xenpolicy`.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub base: String,
    pub flavor: Flavor,
    /// The contributor's checkout built as the patched side, if any.
    pub checkout: Option<PathBuf>,
    pub key: String,
    pub dir: PathBuf,
}

impl Artifacts {
    pub fn xen(&self) -> PathBuf {
        self.dir.join("xen")
    }

    pub fn tools(&self) -> PathBuf {
        self.dir.join("tools")
    }

    /// The FLASK policy: the tree's example policy plus the modules in
    /// `qemu-images/flask/`.
    pub fn xsm_policy(&self) -> PathBuf {
        self.dir.join("xenpolicy")
    }

    /// How runs and messages name this build: `baseline`, `patched`, or
    /// `own` for a contributor's checkout.
    pub fn label(&self) -> &'static str {
        if self.checkout.is_some() {
            "own"
        } else {
            self.flavor.name()
        }
    }

    fn complete(dir: &Path) -> bool {
        dir.join("tools").is_dir() && dir.join("xen").is_file() && dir.join("xenpolicy").is_file()
    }
}

fn config_path() -> PathBuf {
    paths::xen_dir().join("build.yaml")
}

/// Our FLASK policy modules for a base, sorted, with their contents: the
/// `*.te` files in `qemu-images/flask/` and in its subdirectory named after
/// the base (for rules only that base's policy language knows).
fn flask_modules(base: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let common = paths::images_dir().join("flask");
    let mut modules = Vec::new();
    for dir in [common.clone(), common.join(base)] {
        if !dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "te") {
                let name = crate::config::stem(&path)?;
                let body = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                modules.push((name, body));
            }
        }
    }
    modules.sort();
    Ok(modules)
}

/// Everything on the host that goes into a build's output and is not in the
/// repository: the versions of the compilers, binutils, make, Python, the
/// FLASK policy compiler and every Debian package the harness installs
/// (headers and libraries the tools link), and the exact environment make
/// runs in (see [`run_logged`]). Computed once per run.
pub fn toolchain() -> Result<&'static str> {
    static TOOLCHAIN: OnceLock<String> = OnceLock::new();
    if let Some(t) = TOOLCHAIN.get() {
        return Ok(t);
    }
    let mut text = String::new();
    for (program, arg) in [
        ("gcc", "--version"),
        ("aarch64-linux-gnu-gcc", "--version"),
        ("ld", "--version"),
        ("make", "--version"),
        (host::PYTHON, "--version"),
        ("checkpolicy", "-V"),
        ("ocamlfind", "ocamlopt -version"),
    ] {
        let args: Vec<&str> = arg.split(' ').collect();
        let out = duct::cmd(program, &args).stderr_to_stdout().unchecked().read().unwrap_or_else(|e| format!("{e}"));
        text.push_str(&format!("{program}: {}\n", out.lines().next().unwrap_or("")));
    }
    let packages: Vec<&str> = host::packages().collect();
    let format = "${Package} ${Version}\n";
    let versions = duct::cmd("dpkg-query", ["-W", "-f", format].iter().copied().chain(packages.iter().copied()))
        .stderr_null()
        .unchecked()
        .read()
        .context("dpkg-query")?;
    text.push_str(&versions);
    for (k, v) in build_env(Path::new("/TREE")) {
        text.push_str(&format!("env {k}={v}\n"));
    }
    Ok(TOOLCHAIN.get_or_init(|| text))
}

/// How this module and `checkout.rs` turn a tree into artifacts, as a
/// versioned description. It stands in every build's key for the code
/// that drives the build: bump it with any change to what a build runs,
/// in which environment, or what it keeps. (The files' own text was the
/// key before, so a changed comment rebuilt every base from scratch.)
pub const RECIPE: &str = "build recipe 2: make -C xen after defconfig plus build.yaml's Kconfig lines; \
    ./configure with build.yaml's arguments, make build-tools, make install-tools DESTDIR=; \
    FLASK policy from the tree's modules plus ours; ccache in a clean environment; \
    a checkout's files copied by content into the work tree";

/// The content key of a build: the base's tree, what goes on top of it,
/// the build configuration, our FLASK modules, the host's toolchain and the
/// version of the recipe that drives the build.
fn key(base: &str, source_tree: &str, change: &str) -> Result<String> {
    let config = std::fs::read(config_path()).with_context(|| format!("cannot read {}", config_path().display()))?;
    let mut k = paths::KeyBuilder::default();
    k.add("xen tree", source_tree)
        .add("change", change)
        .add("build.yaml", config)
        .add("toolchain", toolchain()?)
        .add("recipe", RECIPE);
    for (name, body) in flask_modules(base)? {
        k.add("flask module", name).add("body", body);
    }
    Ok(k.finish())
}

fn patches_id(patches: &[&Patch]) -> Result<String> {
    let mut k = paths::KeyBuilder::default();
    for p in patches {
        let body = std::fs::read_to_string(&p.path).with_context(|| format!("cannot read patch {}", p.path.display()))?;
        // Not the patch's number in the series: adding a patch after it
        // leaves what it builds alone.
        k.add("patch", p.name()).add("body", crate::patch::unnumbered(&body));
    }
    Ok(format!("patches {}", k.finish()))
}

/// Builds a contributor's checkout as it stands, as the patched side of
/// its base, in a work tree of its own (`trees/<base>/own-<id>`) into
/// which only the files that differ are copied. (The series' own builds
/// are made in the base's [`WorkTree`](crate::work_tree::WorkTree), see
/// `commands::Work`.)
pub fn build_checkout(source: &XenSource, checkout: &Checkout) -> Result<Artifacts> {
    let trees = paths::cache()?.join("trees").join(&source.base);
    let name = format!("own-{}", checkout.id());
    let tree = trees.join(&name);
    // Logs, stamps and manifests live beside the tree, not in it.
    let state = trees.join(format!("{name}.state"));
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let manifest = state.join("manifest");
    let written = checkout.sync(&tree, &manifest)?;
    crate::say!("build: {}: {written} file(s) copied from {} into {}", source.base, checkout.path.display(), tree.display());
    let id = Checkout::tree_id(&tree, &manifest)?;
    let job = Job {
        base: &source.base,
        source_tree: &source.tree,
        flavor: Flavor::Patched,
        checkout: Some(checkout.path.clone()),
        key: key(&source.base, &id, "checkout as it stands")?,
        what: format!("checkout: {}", checkout.path.display()),
    };
    match job.done()? {
        Some(done) => Ok(done),
        None => job.make(&tree, &state),
    }
}

/// The key of a build of the base's source with `patches` on top.
pub fn key_of_patches(base: &str, source_tree: &str, patches: &[&Patch]) -> Result<String> {
    key(base, source_tree, &patches_id(patches)?)
}

/// One build: what it is and the key its artifacts go under.
pub struct Job<'a> {
    pub base: &'a str,
    /// The git tree of the base's pinned source.
    pub source_tree: &'a str,
    pub flavor: Flavor,
    /// The contributor's checkout built as the patched side, if any.
    pub checkout: Option<PathBuf>,
    pub key: String,
    /// What went on top of the base, for `build-info.yaml`.
    pub what: String,
}

impl Job<'_> {
    fn artifacts(&self) -> Result<Artifacts> {
        Ok(Artifacts {
            base: self.base.to_string(),
            flavor: self.flavor,
            checkout: self.checkout.clone(),
            key: self.key.clone(),
            dir: paths::cache()?.join("artifacts").join(&self.key),
        })
    }

    /// `base/baseline`, `base/patched` or `base/own`.
    pub fn label(&self) -> String {
        let label = if self.checkout.is_some() { "own" } else { self.flavor.name() };
        format!("{}/{label}", self.base)
    }

    /// The artifacts, if the cache has them complete.
    pub fn done(&self) -> Result<Option<Artifacts>> {
        let artifacts = self.artifacts()?;
        if Artifacts::complete(&artifacts.dir) {
            crate::say!("build: {}: up to date ({})", self.label(), self.key);
            return Ok(Some(artifacts));
        }
        Ok(None)
    }

    /// Builds hypervisor, tools and FLASK policy in `tree`, which holds
    /// the source to build (with whatever an earlier build left there:
    /// make rebuilds what changed), and keeps them as the job's artifacts.
    /// Logs go into `logs`.
    pub fn make(&self, tree: &Path, logs: &Path) -> Result<Artifacts> {
        let artifacts = self.artifacts()?;
        let (dir, label) = (&artifacts.dir, self.label());
        let config = BuildConfig::load()?;
        let started = std::time::Instant::now();
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let stage = paths::staging_dir(dir)?;
        let jobs = jobs();
        // Whether make starts from an earlier build's objects: a build's time
        // means little without it.
        let warm = tree.join("xen/xen-syms").exists();
        let mut steps = Vec::new();
        let mut step = |name: &str, work: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            let start = std::time::Instant::now();
            work()?;
            steps.push(format!("{name} {:.0} s", start.elapsed().as_secs_f64()));
            Ok(())
        };
        let make = |step: &str, args: &[&str]| -> Result<()> { run_logged(tree, logs, step, "make", args) };

        step("hypervisor", &mut || {
            configure_hypervisor(tree, logs, &config.hypervisor)?;
            make("hypervisor", &["-C", "xen", "-j", &jobs])
        })?;
        let destdir = format!("DESTDIR={}", stage.join("tools").display());
        step("tools", &mut || {
            configure_tools(tree, logs, &config.tools.configure)?;
            make("tools", &["build-tools", "-j", &jobs])?;
            make("install-tools", &["install-tools", &destdir])
        })?;
        step("FLASK policy", &mut || build_xsm_policy(self.base, tree, logs, &stage.join("xenpolicy")))?;

        for f in ["xen", "xen-syms"] {
            std::fs::copy(tree.join("xen").join(f), stage.join(f)).with_context(|| format!("copying xen/{f} out of {}", tree.display()))?;
        }
        std::fs::write(
            stage.join("build-info.yaml"),
            format!("base: {}\nbuild: {}\nkey: {}\nxen tree: {}\n{}\n", self.base, artifacts.label(), self.key, self.source_tree, self.what),
        )?;
        let how = match warm {
            true => "make from an earlier build's objects",
            false => "make from a clean work tree",
        };
        let timing = Timing::new(&label, started.elapsed().as_secs_f64(), format!("{how}, {jobs} make jobs; {}", steps.join(", ")), true);
        timing.write(&stage.join(timings::BUILD_TIME))?;
        paths::commit_dir(&stage, dir)?;
        crate::say!("build: {label}: done in {} ({})", timing.wall(), self.key);
        Ok(artifacts)
    }
}

/// The tag on a work tree's pristine base commit.
pub const BASE_TAG: &str = "numa-harness-base";

/// Makes `tree` a git work tree of the base's source, tagged
/// [`BASE_TAG`], unless it is one already, as it stands (build outputs,
/// and whatever commit is checked out). A tree made from another source
/// (its base commit holds another git tree) is made again from this one.
/// Returns whether the tree was made afresh.
pub fn prepare_tree(sh: &Shell, source: &XenSource, tree: &Path) -> Result<bool> {
    if tree.join(".git").is_dir() {
        let spec = format!("{BASE_TAG}^{{tree}}");
        let made_from = cmd!(sh, "git -C {tree} rev-parse -q --verify {spec}").quiet().ignore_stderr().read().unwrap_or_default();
        if made_from.trim() == source.tree {
            return Ok(false);
        }
        crate::say!(
            "build: {} was made from another source (tree {}); making it again from {}",
            tree.display(),
            if made_from.trim().is_empty() { "unknown" } else { made_from.trim() },
            source.tree
        );
    }
    crate::say!("build: unpacking {} into {}", source.tarball.display(), tree.display());
    let tmp = paths::staging_dir(tree)?;
    let top = fetch::import(sh, &source.tarball, &source.directory, &tmp, &format!("Xen {} (pristine base)", source.tree))?;
    const HEAD_TREE: &str = "HEAD^{tree}";
    let got = cmd!(sh, "git -C {top} rev-parse {HEAD_TREE}").quiet().read()?;
    if got.trim() != source.tree {
        bail!(
            "{} unpacks to git tree {}, but base {} pins {}: it is not the pinned source (delete it from the cache)",
            source.tarball.display(),
            got.trim(),
            source.base,
            source.tree
        );
    }
    cmd!(sh, "git -C {top} tag {BASE_TAG}").quiet().run()?;
    paths::commit_dir(&top, tree)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(true)
}

/// Resets a work tree to the pristine base with nothing applied, keeping
/// untracked build outputs (git ignores them) so make can reuse them.
pub fn reset_to_base(sh: &Shell, tree: &Path) -> Result<()> {
    let _cd = sh.push_dir(tree);
    cmd!(sh, "git am --abort").quiet().ignore_status().ignore_stderr().run()?;
    cmd!(sh, "git reset -q --hard {BASE_TAG}").quiet().run()?;
    cmd!(sh, "git clean -q -fd").quiet().run()?;
    Ok(())
}

/// defconfig plus `kconfig` lines; redone only when they change, so that an
/// unchanged configuration does not trigger a rebuild. The series check
/// configures its x86_64 tree the same way, so that ccache serves the
/// builds what it compiled (and the other way round).
pub fn configure_hypervisor(tree: &Path, logs: &Path, config: &HypervisorConfig) -> Result<()> {
    let stamp = logs.join("kconfig.stamp");
    let want = config.kconfig.join("\n");
    let stamped = format!("{want}\n{}", toolchain()?);
    if tree.join("xen/.config").exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(stamped.as_str()) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&stamp);
    run_logged(tree, logs, "hypervisor-config", "make", &["-C", "xen", "defconfig"])?;
    if !config.kconfig.is_empty() {
        use std::io::Write;
        let dot_config = tree.join("xen/.config");
        let mut f = std::fs::OpenOptions::new().append(true).open(&dot_config)?;
        writeln!(f, "{want}")?;
        drop(f);
        run_logged(tree, logs, "hypervisor-config", "make", &["-C", "xen", "olddefconfig"])?;
        let result = std::fs::read_to_string(&dot_config)?;
        let missing = kconfig_not_applied(&config.kconfig, &result);
        if !missing.is_empty() {
            bail!(
                "{}: Kconfig did not keep {} (a dependency missing, or a symbol that does not exist in this Xen); see {}",
                config_path().display(),
                missing.join(", "),
                dot_config.display()
            );
        }
    }
    std::fs::write(stamp, stamped)?;
    Ok(())
}

/// The `kconfig` lines that the resulting `.config` does not carry:
/// `CONFIG_FOO=n` is kept as `# CONFIG_FOO is not set` (or no line at all).
fn kconfig_not_applied(wanted: &[String], dot_config: &str) -> Vec<String> {
    wanted
        .iter()
        .filter(|line| match line.split_once('=') {
            Some((symbol, "n")) => dot_config.lines().any(|l| l.starts_with(&format!("{symbol}="))),
            _ => !dot_config.lines().any(|l| l == line.as_str()),
        })
        .cloned()
        .collect()
}

/// Builds the FLASK policy with Xen's own policy makefile, from the tree's
/// example modules plus ours (`qemu-images/flask/*.te`, enabled in a copy
/// of `modules.conf`): the tree itself is left as patched.
fn build_xsm_policy(base: &str, tree: &Path, logs: &Path, out: &Path) -> Result<()> {
    let policy = tree.join("tools/flask/policy");
    let modules = logs.join("flask-modules");
    let build_dir = logs.join("flask-build");
    for dir in [&modules, &build_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    for entry in std::fs::read_dir(policy.join("modules"))? {
        let path = entry?.path();
        std::fs::copy(&path, modules.join(path.file_name().unwrap()))?;
    }
    let mut conf = std::fs::read_to_string(modules.join("modules.conf"))?;
    conf.push_str("\n# Added by the NUMA harness from qemu-images/flask/.\n");
    for (name, body) in flask_modules(base)? {
        std::fs::write(modules.join(format!("{name}.te")), body)?;
        conf.push_str(&format!("{name} = on\n"));
    }
    std::fs::write(modules.join("modules.conf"), conf)?;
    let build_dir_arg = format!("FLASK_BUILD_DIR={}", build_dir.display());
    let moddir_arg = format!("MODDIR={}", modules.display());
    run_logged(&policy, logs, "xsm-policy", "make", &[&build_dir_arg, &moddir_arg])?;
    let built: Vec<PathBuf> = std::fs::read_dir(&build_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("xenpolicy-")))
        .collect();
    match built.as_slice() {
        [one] => std::fs::copy(one, out).map(|_| ()).with_context(|| format!("copying {}", one.display())),
        _ => bail!("the policy build left {} xenpolicy-* files in {}", built.len(), build_dir.display()),
    }
}

/// Runs Xen's ./configure with `args`; redone only when they change (the
/// stamp lives in `state`, beside the tree).
pub fn configure_tools(tree: &Path, state: &Path, args: &[String]) -> Result<()> {
    let stamp = state.join("configure.stamp");
    let want = format!("{}\n{}", args.join("\n"), toolchain()?);
    if tree.join("config.status").exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let mut all = vec![format!("PYTHON={}", host::PYTHON)];
    all.extend(args.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let configure = tree.join("configure");
    run_logged(tree, state, "configure", &configure.to_string_lossy(), &all)?;
    std::fs::write(stamp, want)?;
    Ok(())
}

/// How many jobs make runs: one per CPU.
pub fn jobs() -> String {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string()
}

/// The whole environment a build step runs in: nothing from the caller's
/// (a CFLAGS or a `debug=y` there would change the output without changing
/// the build's key), Debian's Python, and ccache in front of every
/// compiler, with paths inside `tree` hashed relative to it so that the
/// same file in another tree is a hit.
fn build_env(tree: &Path) -> Vec<(&'static str, String)> {
    let ccache = paths::cache().map(|c| c.join("ccache")).unwrap_or_else(|_| PathBuf::from("/tmp/ccache"));
    vec![
        ("PATH", "/usr/lib/ccache:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME", std::env::var("HOME").unwrap_or_else(|_| "/root".into())),
        ("LANG", "C.UTF-8".into()),
        ("LC_ALL", "C.UTF-8".into()),
        ("PYTHON", host::PYTHON.into()),
        ("CCACHE_DIR", ccache.display().to_string()),
        ("CCACHE_BASEDIR", tree.display().to_string()),
        ("CCACHE_NOHASHDIR", "true".into()),
        ("CCACHE_MAXSIZE", "8G".into()),
    ]
}

/// Names a build step's place for the run's status: the base and the
/// build or patch its logs are for (`master/patched`, `master/05`).
fn where_(tree: &Path, logs: &Path) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let base = tree.parent().map(name).unwrap_or_default();
    let logs = name(logs);
    let place = logs.strip_suffix(".state").map_or(logs.clone(), |t| t.to_string());
    format!("{base}/{place}")
}

/// Runs one build step with its output in `<logs>/<step>.log`; on failure
/// the error shows the log's tail and names it.
pub fn run_logged(tree: &Path, logs: &Path, step: &str, program: &str, args: &[&str]) -> Result<()> {
    let log = logs.join(format!("{step}.log"));
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    crate::say!("build:   {step}: {program} {} (log: {})", args.join(" "), log.display());
    let _activity = crate::progress::Activity::start(format!("build {}: {step}", where_(tree, logs)));
    let mut cmd = duct::cmd(program, args).dir(tree).full_env(build_env(tree));
    cmd = cmd.stdout_file(file.try_clone()?).stderr_file(file).stdin_null().unchecked();
    let status = cmd.run().with_context(|| format!("cannot run {program} in {}", tree.display()))?.status;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n    ");
        bail!("build step `{step}` failed ({status}); last lines of {}:\n    {tail}", log.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kconfig_lines_that_did_not_stick() {
        let dot_config = "CONFIG_XSM=y\nCONFIG_XSM_FLASK=y\n# CONFIG_XSM_FLASK_POLICY is not set\nCONFIG_HVM=y\n";
        let wanted = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(
            kconfig_not_applied(&wanted(&["CONFIG_XSM=y", "CONFIG_XSM_FLASK_POLICY=n", "CONFIG_XSM_SILO=n"]), dot_config),
            Vec::<String>::new()
        );
        assert_eq!(
            kconfig_not_applied(&wanted(&["CONFIG_HVM=n", "CONFIG_NO_SUCH=y", "CONFIG_XSM_FLASK=y"]), dot_config),
            ["CONFIG_HVM=n", "CONFIG_NO_SUCH=y"]
        );
    }
}
