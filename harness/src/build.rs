//! Build stage: a git work tree per build (the pinned base with its patches
//! applied by `git am`), hypervisor and tools built in it, and the results
//! kept as artifacts under a key made from everything that went in.
//!
//! A build whose key already has artifacts does nothing at all. Otherwise the
//! build's work tree is reset to the base and patched again: git rewrites only
//! the files that differ, so make recompiles only what the change touched.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::fetch::XenSource;
use crate::patch::{self, Flavor, Series};
use crate::{host, paths};

/// Bump when the way artifacts are made changes, so old ones are not reused.
const RECIPE: &str = "1";

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

/// What a finished build leaves: `xen` (the multiboot ELF QEMU loads),
/// `xen-syms` and `tools/` (the tools installed with DESTDIR).
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub flavor: Flavor,
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
}

fn config_path() -> PathBuf {
    paths::xen_dir().join("build.yaml")
}

/// Our FLASK policy modules (`*.te`), sorted, with their contents.
fn flask_modules() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = paths::images_dir().join("flask");
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "te") {
            let name = crate::config::stem(&path)?;
            modules.push((name, std::fs::read(&path)?));
        }
    }
    modules.sort();
    Ok(modules)
}

/// The content key of a build: base, build configuration and patches.
pub fn key(source: &XenSource, series: &Series, flavor: Flavor) -> Result<String> {
    let config = std::fs::read(config_path())
        .with_context(|| format!("cannot read {}", config_path().display()))?;
    let mut k = paths::KeyBuilder::default();
    k.add("recipe", RECIPE).add("xen", &source.id).add("build.yaml", config);
    for (name, body) in flask_modules()? {
        k.add("flask module", name).add("body", body);
    }
    for p in series.for_flavor(flavor) {
        let body = std::fs::read(&p.path)
            .with_context(|| format!("cannot read patch {}", p.path.display()))?;
        k.add("patch", p.name()).add("body", body);
    }
    Ok(k.finish())
}

pub fn build(sh: &Shell, source: &XenSource, series: &Series, flavor: Flavor) -> Result<Artifacts> {
    let key = key(source, series, flavor)?;
    let dir = paths::cache()?.join("artifacts").join(&key);
    let artifacts = Artifacts { flavor, key: key.clone(), dir: dir.clone() };
    if dir.join("tools").is_dir() && dir.join("xen").is_file() && dir.join("xenpolicy").is_file() {
        eprintln!("build: {flavor}: up to date ({key})");
        return Ok(artifacts);
    }
    let config: BuildConfig = crate::config::load_yaml(&config_path())?;
    let patches = series.for_flavor(flavor);
    let tree = paths::cache()?.join("trees").join(flavor.name());
    // Logs and configuration stamps live beside the tree, not in it, where
    // `git clean` would remove them.
    let logs = paths::cache()?.join("trees").join(format!("{}.state", flavor.name()));
    std::fs::create_dir_all(&logs)?;
    eprintln!(
        "build: {flavor}: {} patch(es) on Xen {}, work tree {}",
        patches.len(),
        source.directory,
        tree.display()
    );

    prepare_tree(sh, source, &tree)?;
    patch::apply(sh, &tree, &patches)?;

    let stage = paths::staging_dir(&dir)?;
    let jobs = jobs();
    let make = |step: &str, args: &[&str]| -> Result<()> { run_logged(&tree, &logs, step, "make", args) };

    configure_hypervisor(&tree, &logs, &config.hypervisor)?;
    make("hypervisor", &["-C", "xen", "-j", &jobs])?;

    configure_tools(&tree, &logs, &config.tools.configure)?;
    make("tools", &["build-tools", "-j", &jobs])?;
    let destdir = format!("DESTDIR={}", stage.join("tools").display());
    make("install-tools", &["install-tools", &destdir])?;

    build_xsm_policy(&tree, &logs, &stage.join("xenpolicy"))?;

    for f in ["xen", "xen-syms"] {
        std::fs::copy(tree.join("xen").join(f), stage.join(f))
            .with_context(|| format!("copying xen/{f} out of {}", tree.display()))?;
    }
    let names: Vec<String> = patches.iter().map(|p| p.name()).collect();
    std::fs::write(
        stage.join("build-info.yaml"),
        format!("flavor: {flavor}\nkey: {key}\nxen: {}\npatches: {:?}\n", source.id, names),
    )?;
    paths::commit_dir(&stage, &dir)?;
    eprintln!("build: {flavor}: done ({key})");
    Ok(artifacts)
}

/// Makes `tree` a git work tree of the pristine base with nothing applied,
/// keeping untracked build outputs (git ignores them) so make can reuse them.
pub fn prepare_tree(sh: &Shell, source: &XenSource, tree: &Path) -> Result<()> {
    const BASE_TAG: &str = "numa-harness-base";
    let git_id = ["-c", "user.name=numa-harness", "-c", "user.email=numa-harness@localhost"];
    if !tree.join(".git").is_dir()
        || cmd!(sh, "git -C {tree} rev-parse -q --verify {BASE_TAG}").quiet().ignore_stdout().run().is_err()
    {
        eprintln!("build: unpacking {} into {}", source.tarball.display(), tree.display());
        let tmp = paths::staging_dir(tree)?;
        let tarball = &source.tarball;
        cmd!(sh, "tar -xf {tarball} -C {tmp}").quiet().run()?;
        let top = tmp.join(&source.directory);
        if !top.is_dir() {
            bail!("{} has no top-level directory {}", tarball.display(), source.directory);
        }
        let _cd = sh.push_dir(&top);
        cmd!(sh, "git init -q").quiet().run()?;
        cmd!(sh, "git add -A -f").quiet().run()?;
        let msg = format!("Xen {} (pristine base)", source.id);
        cmd!(sh, "git {git_id...} commit -q --no-verify -m {msg}").quiet().run()?;
        cmd!(sh, "git tag {BASE_TAG}").quiet().run()?;
        drop(_cd);
        paths::commit_dir(&top, tree)?;
        std::fs::remove_dir_all(&tmp)?;
        return Ok(());
    }
    let _cd = sh.push_dir(tree);
    cmd!(sh, "git am --abort").quiet().ignore_status().ignore_stderr().run()?;
    cmd!(sh, "git reset -q --hard {BASE_TAG}").quiet().run()?;
    cmd!(sh, "git clean -q -fd").quiet().run()?;
    Ok(())
}

/// defconfig plus `kconfig` lines; redone only when they change, so that an
/// unchanged configuration does not trigger a rebuild.
fn configure_hypervisor(tree: &Path, logs: &Path, config: &HypervisorConfig) -> Result<()> {
    let stamp = logs.join("kconfig.stamp");
    let want = config.kconfig.join("\n");
    if tree.join("xen/.config").exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
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
    std::fs::write(stamp, want)?;
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
fn build_xsm_policy(tree: &Path, logs: &Path, out: &Path) -> Result<()> {
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
    for (name, body) in flask_modules()? {
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
    let want = args.join("\n");
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

/// Runs one build step with its output in `<logs>/<step>.log`; on failure
/// the error shows the log's tail and names it.
pub fn run_logged(tree: &Path, logs: &Path, step: &str, program: &str, args: &[&str]) -> Result<()> {
    let log = logs.join(format!("{step}.log"));
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    eprintln!("build:   {step}: {program} {} (log: {})", args.join(" "), log.display());
    let path = format!("/usr/sbin:/usr/bin:/sbin:/bin:{}", std::env::var("PATH").unwrap_or_default());
    let status = duct::cmd(program, args)
        .dir(tree)
        .env("PATH", path)
        .env("PYTHON", host::PYTHON)
        .stdout_file(file.try_clone()?)
        .stderr_file(file)
        .stdin_null()
        .unchecked()
        .run()
        .with_context(|| format!("cannot run {program} in {}", tree.display()))?
        .status;
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
