//! Series check: the patch series as upstream review would take it. Each
//! patch's form (subject, message, style of the lines it adds, no
//! Signed-off-by), the cover letter, and that the series applies to the
//! pinned base with `git am` and that every patch, applied in turn, builds:
//! the x86_64 and the arm64 hypervisor where it touches them, and the tools
//! (with the OCaml bindings that xenopsd uses) where it touches those. A
//! patch that touches neither is built as the one before it was.
//!
//! It also refuses a series that sets XEN_DOMCTL_INTERFACE_VERSION to a
//! value an upstream release used (`xen/domctl-interface-versions.yaml`):
//! that release's libxenctrl would pass the patched hypervisor's version
//! check with another layout of the domctl structs.
//!
//! The walk happens in the base's x86_64 work tree (`work_tree`), the one
//! the baseline and patched builds are made in, configured as they are
//! (`xen/build.yaml`): at the commit of each build's last patch the walk
//! makes that build, if the cache lacks it, from what it has just
//! compiled.
//!
//! A patch that passed is remembered under a key made from everything the
//! result depends on: the base's tree, every patch up to it (but not its
//! number in the series), xen/build.yaml, the host's toolchain and the
//! check's recipe version (`series/<base>/<key>.ok` in the cache); an
//! unchanged series is not rebuilt.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use std::path::{Path, PathBuf};

use crate::build::{run_logged, BuildConfig, Job};
use crate::fetch::XenSource;
use crate::patch::{self, Flavor, Patch, Series};
use crate::work_tree::WorkTree;
use crate::{build, paths};

pub const COVER_LETTER: &str = "0000-cover-letter.patch";

/// One problem in a patch's form.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub patch: String,
    pub what: String,
}

/// The header fields and message of a `git format-patch` file.
struct Mail<'a> {
    subject: String,
    body: Vec<&'a str>,
    diff: Vec<&'a str>,
}

fn parse_mail(text: &str) -> Mail<'_> {
    let mut lines = text.lines();
    let mut subject = String::new();
    let mut in_subject = false;
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if let Some(s) = line.strip_prefix("Subject: ") {
            subject = s.to_string();
            in_subject = true;
        } else if in_subject && line.starts_with(' ') {
            subject.push_str(line);
        } else {
            in_subject = false;
        }
    }
    let rest: Vec<&str> = lines.collect();
    let end = rest.iter().position(|l| *l == "---").unwrap_or(rest.len());
    Mail { subject, body: rest[..end].to_vec(), diff: rest[end..].to_vec() }
}

/// `[PATCH 03/11] xen/domain: do a thing` -> `xen/domain: do a thing`.
fn strip_tag(subject: &str) -> &str {
    match subject.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map(|(_, s)| s).unwrap_or(subject),
        None => subject,
    }
}

/// Checks one patch's form; returns what is wrong.
pub fn check_form(name: &str, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut bad = |what: String| out.push(Finding { patch: name.to_string(), what });
    let mail = parse_mail(text);
    let subject = strip_tag(&mail.subject);
    if subject.is_empty() {
        bad("no Subject".into());
    }
    if subject.chars().count() > 80 {
        bad(format!("subject is {} characters (at most 80)", subject.chars().count()));
    }
    match subject.split_once(": ") {
        Some((component, what))
            if !component.is_empty()
                && component.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
                && !what.trim().is_empty() => {}
        _ => bad(format!("subject {subject:?} is not `component: what` (e.g. `xen/domain: ...`)")),
    }
    if text.lines().any(|l| l.starts_with("Signed-off-by:")) {
        bad("carries a Signed-off-by line: the person posting the series certifies the DCO".into());
    }
    if mail.body.iter().all(|l| l.trim().is_empty()) {
        bad("has no commit message saying why".into());
    }
    for (i, line) in mail.body.iter().enumerate() {
        // A long unbreakable token (a URL, a path) may stand alone, and
        // trailers such as Fixes: are never wrapped.
        let trailer = ["Fixes: ", "Link: "].iter().any(|t| line.starts_with(t));
        if line.chars().count() > 75 && line.trim().contains(' ') && !trailer {
            bad(format!("message line {} is {} columns (wrap at 75): {line:?}", i + 1, line.chars().count()));
        }
    }
    let mut file = String::new();
    for line in &mail.diff {
        if let Some(f) = line.strip_prefix("+++ b/") {
            file = f.to_string();
            continue;
        }
        let Some(added) = line.strip_prefix('+') else { continue };
        if line.starts_with("+++") {
            continue;
        }
        let c_source = file.ends_with(".c") || file.ends_with(".h");
        if added.ends_with(' ') || added.ends_with('\t') {
            bad(format!("{file}: trailing whitespace in {added:?}"));
        }
        // Xen's CODING_STYLE: 4 spaces, no tabs, lines under 80 columns.
        // (tools/ocaml keeps its own, tab-indented style.)
        if c_source && !file.starts_with("tools/ocaml/") {
            if added.contains('\t') {
                bad(format!("{file}: tab in {added:?} (CODING_STYLE: indent with spaces)"));
            }
            if added.chars().count() >= 80 {
                bad(format!("{file}: {} columns in {added:?} (CODING_STYLE: under 80)", added.chars().count()));
            }
        }
    }
    out
}

/// Checks the cover letter's form.
pub fn check_cover_letter(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut bad = |what: &str| out.push(Finding { patch: COVER_LETTER.into(), what: what.into() });
    if text.contains("*** SUBJECT HERE ***") || text.contains("*** BLURB HERE ***") {
        bad("still has git format-patch's placeholders");
    }
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !words.contains("Developer's Certificate of Origin") && !words.contains("DCO") {
        bad("does not say who certifies the DCO");
    }
    if text.lines().any(|l| l.starts_with("Signed-off-by:")) {
        bad("carries a Signed-off-by line");
    }
    out
}

/// `xen/domctl-interface-versions.yaml`: the XEN_DOMCTL_INTERFACE_VERSION
/// of each upstream release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceVersions {
    /// What the file is; for its readers only.
    #[allow(dead_code)]
    pub description: String,
    pub releases: Vec<ReleaseVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseVersion {
    /// `MAJOR.MINOR`, e.g. `4.18`.
    pub release: String,
    /// Its value in the release's xen/include/public/domctl.h.
    pub version: u32,
}

/// The table's path in the repository, as findings name it.
const INTERFACE_VERSIONS: &str = "xen/domctl-interface-versions.yaml";

impl InterfaceVersions {
    pub fn load() -> Result<InterfaceVersions> {
        Self::load_from(&paths::repo().join(INTERFACE_VERSIONS))
    }

    fn load_from(path: &Path) -> Result<InterfaceVersions> {
        let table: InterfaceVersions = crate::config::load_yaml(path)?;
        table.validate().map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(table)
    }

    /// Every release is `MAJOR.MINOR` and listed once.
    fn validate(&self) -> Result<(), String> {
        if self.releases.is_empty() {
            return Err("field `releases`: empty".into());
        }
        for (i, r) in self.releases.iter().enumerate() {
            let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !r.release.split_once('.').is_some_and(|(major, minor)| numeric(major) && numeric(minor)) {
                return Err(format!("field `releases[{i}].release`: {:?} is not MAJOR.MINOR (e.g. \"4.18\")", r.release));
            }
            if let Some(j) = self.releases[..i].iter().position(|o| o.release == r.release) {
                return Err(format!("field `releases[{i}].release`: {} is listed already as releases[{j}]", r.release));
            }
        }
        Ok(())
    }

    /// The releases that used `version`.
    fn releases_of(&self, version: u32) -> Vec<&str> {
        self.releases.iter().filter(|r| r.version == version).map(|r| r.release.as_str()).collect()
    }
}

const DOMCTL_H: &str = "xen/include/public/domctl.h";

/// The value of `#define XEN_DOMCTL_INTERFACE_VERSION <value>` (spaces and
/// tabs anywhere between the tokens), or None for any other line.
fn interface_version_define(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("define")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let mut words = rest.split_whitespace();
    if words.next()? != "XEN_DOMCTL_INTERFACE_VERSION" {
        return None;
    }
    words.next()
}

fn parse_hex(value: &str) -> Option<u32> {
    let digits = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// Refuses a series whose XEN_DOMCTL_INTERFACE_VERSION is one an upstream
/// release used. `patches` are the series' (name, text) in order; what
/// counts is the last line across the series that adds the define to
/// domctl.h. A series that never sets it does not change the version.
pub fn check_interface_version(patches: &[(&str, &str)], table: &InterfaceVersions) -> Vec<Finding> {
    // (patch, value added, value that line replaced in that patch)
    let mut last: Option<(&str, &str, Option<&str>)> = None;
    for &(name, text) in patches {
        let mut file = "";
        let mut removed = None;
        for line in parse_mail(text).diff {
            if line.starts_with("diff --git ") {
                file = "";
            } else if let Some(f) = line.strip_prefix("+++ ") {
                file = f.strip_prefix("b/").unwrap_or(f);
            } else if line.starts_with("--- ") {
                // the old side's name; `+++` follows
            } else if file != DOMCTL_H {
                continue;
            } else if let Some(value) = line.strip_prefix('-').and_then(interface_version_define) {
                removed = Some(value);
            } else if let Some(value) = line.strip_prefix('+').and_then(interface_version_define) {
                last = Some((name, value, removed));
            }
        }
    }
    let Some((patch, value, replaced)) = last else { return Vec::new() };
    let finding = |what: String| vec![Finding { patch: patch.to_string(), what }];
    let Some(version) = parse_hex(value) else {
        return finding(format!(
            "{DOMCTL_H}: XEN_DOMCTL_INTERFACE_VERSION is set to {value:?}, not a hex number: \
             cannot check it against the releases' versions ({INTERFACE_VERSIONS})"
        ));
    };
    let releases = table.releases_of(version);
    if releases.is_empty() {
        return Vec::new();
    }
    let keep = match replaced.and_then(parse_hex) {
        Some(base) => format!("keep the base's value ({base:#010x})"),
        None => "keep the base's value".to_string(),
    };
    finding(format!(
        "{DOMCTL_H}: XEN_DOMCTL_INTERFACE_VERSION {version:#010x} is the one Xen {} used ({INTERFACE_VERSIONS}), so that \
         release's libxenctrl would pass this hypervisor's version check with another layout of the \
         domctl structs; choose a value no release used or, on a stable branch, {keep} and make the \
         change compatible (e.g. with a creation flag an unpatched hypervisor refuses)",
        releases.join(", ")
    ))
}

/// The files a patch changes (both sides of each diff, without /dev/null).
fn files_touched(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("+++ b/").or_else(|| l.strip_prefix("--- a/")))
        .collect()
}

/// What of the tree a patch can change the build of. The hypervisor is
/// built from `xen/` and the top-level make fragments; the tools from
/// `tools/`, the same fragments and the public headers, which they copy.
#[derive(Debug, PartialEq)]
struct Affects {
    hypervisor: bool,
    tools: bool,
}

fn affects(text: &str) -> Affects {
    let files = files_touched(text);
    let common = |f: &str| f == "Config.mk" || f.starts_with("config/") || f.starts_with("m4/") || f == "configure";
    Affects {
        hypervisor: files.iter().any(|f| f.starts_with("xen/") || common(f)),
        tools: files.iter().any(|f| f.starts_with("tools/") || f.starts_with("xen/include/public/") || common(f)),
    }
}

const ARM64: &[&str] = &["XEN_TARGET_ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"];

/// The version of how [`build_each`] builds a patch; part of every patch's
/// memo instead of the code's text (see `build::RECIPE`). Bump it with any
/// change to what is built, how, or when a patch counts as built.
const RECIPE: &str = "series check 3: in the base's x86_64 work tree, walking the series' commits: \
    x86_64 hypervisor configured as the builds are (build.yaml's Kconfig), \
    arm64 hypervisor with its defconfig beside it, tools with build.yaml's configure; \
    the hypervisors only for patches touching xen/ or the make fragments, the tools only for \
    patches touching tools/, the public headers or the make fragments";

/// The whole check of one base's series. Prints a line per patch; fails
/// naming every problem. On its way it makes the baseline and patched
/// builds, at the commit of their last patch, if the cache lacks them.
pub fn check(sh: &Shell, source: &XenSource, series: &Series) -> Result<()> {
    let mut findings = Vec::new();
    let cover = series.dir.join(COVER_LETTER);
    if series.patches.is_empty() {
        crate::say!("series: {}: empty, nothing to check", source.base);
        return Ok(());
    }
    match std::fs::read_to_string(&cover) {
        Ok(text) => findings.extend(check_cover_letter(&text)),
        Err(_) => findings.push(Finding { patch: COVER_LETTER.into(), what: "missing".into() }),
    }
    let texts = series
        .patches
        .iter()
        .map(|p| std::fs::read_to_string(&p.path).with_context(|| format!("cannot read patch {}", p.path.display())))
        .collect::<Result<Vec<String>>>()?;
    let names: Vec<String> = series.patches.iter().map(|p| p.name()).collect();
    let named: Vec<(&str, &str)> = names.iter().zip(&texts).map(|(n, t)| (n.as_str(), t.as_str())).collect();
    for &(name, text) in &named {
        findings.extend(check_form(name, text));
    }
    findings.extend(check_interface_version(&named, &InterfaceVersions::load()?));
    if !findings.is_empty() {
        let list: Vec<String> = findings.iter().map(|f| format!("{}: {}", f.patch, f.what)).collect();
        bail!("the series needs fixing:\n    {}", list.join("\n    "));
    }
    crate::say!("series: {}: {} patches and the cover letter are well formed", source.base, series.patches.len());
    build_each(sh, source, series, &texts)
}

/// The memo of each patch: a key of everything that decides whether it
/// builds (the source, the configuration, the toolchain, the recipes and
/// the patches up to it), kept under `series/<base>/<key>.ok` once it
/// built.
fn memos(source: &XenSource, texts: &[String]) -> Result<Vec<PathBuf>> {
    let config: BuildConfig = BuildConfig::load()?;
    let dir = paths::cache()?.join("series").join(&source.base);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut key = paths::KeyBuilder::default();
    key.add("xen tree", &source.tree)
        .add("kconfig", config.hypervisor.kconfig.join("\n"))
        .add("configure", config.tools.configure.join("\n"))
        .add("toolchain", build::toolchain()?)
        .add("recipe", RECIPE)
        .add("build recipe", build::RECIPE);
    let mut memos = Vec::new();
    for text in texts {
        key.add("patch", patch::unnumbered(text));
        memos.push(dir.join(format!("{}.ok", key.finish())));
    }
    Ok(memos)
}

/// The builds of the base (baseline, patched) the cache lacks, each with
/// the number of patches it is built on; one build where both are the
/// same.
fn missing_builds<'a>(source: &'a XenSource, series: &Series) -> Result<Vec<(usize, Job<'a>)>> {
    let mut builds: Vec<(usize, Job)> = Vec::new();
    for flavor in Flavor::ALL {
        let patches = series.for_flavor(flavor);
        let job = Job {
            base: &source.base,
            source_tree: &source.tree,
            flavor,
            checkout: None,
            key: build::key_of_patches(&source.base, &source.tree, &patches)?,
            what: format!("patches: {:?}", patches.iter().map(|p| p.name()).collect::<Vec<_>>()),
        };
        if builds.iter().any(|(_, b)| b.key == job.key) || job.done()?.is_some() {
            continue;
        }
        builds.push((patches.len(), job));
    }
    Ok(builds)
}

/// Builds every patch of the series in turn, in two work trees that walk
/// the series' commits: the base's x86_64 work tree (hypervisor configured
/// as the builds are, and the tools) and an arm64 one (hypervisor), side
/// by side; and, at the commit of their last patch, the builds the cache
/// lacks. `texts` are the patches' contents, as [`check`] read them.
fn build_each(sh: &Shell, source: &XenSource, series: &Series, texts: &[String]) -> Result<()> {
    let memos = memos(source, texts)?;
    let builds = missing_builds(source, series)?;
    if builds.is_empty() && memos.iter().all(|m| m.exists()) {
        crate::say!("series: {}: every patch already built at this content", source.base);
        return Ok(());
    }
    let config: BuildConfig = BuildConfig::load()?;
    let wt = WorkTree::open(sh, source, series)?;
    let (x86, state) = (&wt.path, &wt.state);
    let arm = x86.with_file_name("arm64");
    if arm.exists() && cmd!(sh, "git -C {arm} rev-parse -q HEAD").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        // Its repository was made anew: the old worktree is no more.
        std::fs::remove_dir_all(&arm).with_context(|| format!("removing {}", arm.display()))?;
    }
    if !arm.join(".git").exists() {
        let _cd = sh.push_dir(x86);
        let _ = cmd!(sh, "git worktree prune").quiet().run();
        cmd!(sh, "git worktree add -q --detach {arm} HEAD").quiet().run()?;
    }
    let jobs = build::jobs();
    let make_builds = |n: usize| -> Result<()> {
        for (_, job) in builds.iter().filter(|(at, _)| *at == n) {
            wt.checkout(sh, n)?;
            job.make(x86, &state.join(job.flavor.name()))?;
        }
        Ok(())
    };
    // A build on the base alone (a series without baseline patches).
    make_builds(0)?;
    let all: Vec<&Patch> = series.patches.iter().collect();
    for (i, p) in all.iter().enumerate() {
        let n = i + 1;
        if memos[i].exists() {
            crate::say!("series: {} ... built before", p.name());
            make_builds(n)?;
            continue;
        }
        let logs = state.join(format!("{n:02}"));
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let commit = wt.commit(n);
        for tree in [x86, &arm] {
            cmd!(sh, "git -C {tree} checkout -q --detach {commit}").quiet().run()?;
        }
        let affects = affects(&texts[i]);
        // Only what the patch can change is built: the rest of the tree is
        // the previous commit's, which passed (its memo is a prefix of
        // this one's key). make, working from the tree as an earlier run
        // left it, rebuilds whatever the checkout changed.
        let step = |what: &str| format!("{} ({what})", p.name());
        let mut did = Vec::new();
        std::thread::scope(|s| -> Result<()> {
            let arm64 = affects.hypervisor.then(|| {
                s.spawn(|| -> Result<()> {
                    if !arm.join("xen/.config").exists() {
                        let mut args = vec!["-C", "xen", "defconfig"];
                        args.extend(ARM64);
                        run_logged(&arm, &logs, "arm64-config", "make", &args)?;
                    }
                    let mut args = vec!["-C", "xen", "-j", &jobs];
                    args.extend(ARM64);
                    run_logged(&arm, &logs, "arm64", "make", &args).with_context(|| step("arm64 hypervisor"))
                })
            });
            if affects.hypervisor {
                build::configure_hypervisor(x86, state, &config.hypervisor)?;
                run_logged(x86, &logs, "x86_64", "make", &["-C", "xen", "-j", &jobs]).with_context(|| step("x86_64 hypervisor"))?;
                did.push("x86_64");
            }
            if affects.tools {
                build::configure_tools(x86, state, &config.tools.configure)?;
                run_logged(x86, &logs, "tools", "make", &["build-tools", "-j", &jobs]).with_context(|| step("tools"))?;
                did.push("tools with OCaml bindings");
            }
            if let Some(arm64) = arm64 {
                arm64.join().expect("the arm64 build panicked")?;
                did.push("arm64");
            }
            Ok(())
        })?;
        let what = if did.is_empty() { "nothing to build (applies)".to_string() } else { format!("builds: {}", did.join(", ")) };
        std::fs::write(&memos[i], &what).with_context(|| format!("writing {}", memos[i].display()))?;
        crate::say!("series: {} ... {what}", p.name());
        make_builds(n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "From 0123 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nDate: Tue, 24 Nov 2026 03:43:24 +0000\n\
        Subject: [PATCH 01/11] x86/numa: report node of domain and vCPU objects in\n the 'u' debug key\n\n\
        Why it matters.\n---\n xen/arch/x86/numa.c | 1 +\n\n\
        diff --git a/xen/arch/x86/numa.c b/xen/arch/x86/numa.c\n--- a/xen/arch/x86/numa.c\n+++ b/xen/arch/x86/numa.c\n\
        @@ -1 +1,2 @@\n int a;\n+    int b;\n";

    #[test]
    fn well_formed_patch() {
        assert_eq!(check_form("0001.patch", GOOD), []);
        assert_eq!(affects(GOOD), Affects { hypervisor: true, tools: false });
    }

    #[test]
    fn what_a_patch_affects() {
        let touching = |files: &[&str]| {
            let diffs: String = files.iter().map(|f| format!("--- a/{f}\n+++ b/{f}\n@@ -1 +1 @@\n-a\n+b\n")).collect();
            affects(&format!("Subject: x: y\n\nWhy.\n---\n{diffs}"))
        };
        let both = Affects { hypervisor: true, tools: true };
        assert_eq!(touching(&["tools/libs/light/libxl_dom.c"]), Affects { hypervisor: false, tools: true });
        assert_eq!(touching(&["xen/include/public/domctl.h", "tools/ocaml/libs/xc/xenctrl.ml"]), both);
        assert_eq!(touching(&["xen/include/public/domctl.h"]), both);
        assert_eq!(touching(&["xen/common/domain.c"]), Affects { hypervisor: true, tools: false });
        assert_eq!(touching(&["CHANGELOG.md"]), Affects { hypervisor: false, tools: false });
        assert_eq!(touching(&["docs/misc/xen-command-line.pandoc"]), Affects { hypervisor: false, tools: false });
        assert_eq!(touching(&["Config.mk"]), both);
        // A new file: its `--- a/` side is /dev/null.
        let new_file = "--- /dev/null\n+++ b/tools/tests/numa/Makefile\n@@ -0,0 +1 @@\n+all:\n";
        assert_eq!(affects(new_file), Affects { hypervisor: false, tools: true });
    }

    #[test]
    fn findings_name_the_problem() {
        let what = |text: &str| check_form("p", text).into_iter().map(|f| f.what).collect::<Vec<_>>();
        let signed = GOOD.replace("Why it matters.\n", "Why it matters.\n\nSigned-off-by: A <a@b>\n");
        assert_eq!(what(&signed), ["carries a Signed-off-by line: the person posting the series certifies the DCO"]);
        let subject = GOOD.replace("x86/numa: report", "Report");
        assert!(what(&subject)[0].contains("is not `component: what`"), "{:?}", what(&subject));
        let tab = GOOD.replace("+    int b;", "+\tint b;");
        assert_eq!(what(&tab), ["xen/arch/x86/numa.c: tab in \"\\tint b;\" (CODING_STYLE: indent with spaces)"]);
        let long = GOOD.replace("Why it matters.", &"word ".repeat(16));
        assert!(what(&long)[0].starts_with("message line 1 is 80 columns"), "{:?}", what(&long));
        let fixes = GOOD.replace("Why it matters.\n", "Why it matters.\n\nFixes: 0123456789ab (\"libxl: a subject long enough to need more than seventy-five\")\n");
        assert_eq!(what(&fixes), Vec::<String>::new());
        let empty = GOOD.replace("Why it matters.\n", "");
        assert_eq!(what(&empty), ["has no commit message saying why"]);
    }

    /// A patch in `git format-patch` shape that changes domctl.h's
    /// interface version from `from` to `to`.
    fn bump(from: &str, to: &str) -> String {
        format!(
            "From 0123 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nDate: Tue, 24 Nov 2026 03:43:24 +0000\n\
             Subject: [PATCH 05/11] xen/domctl: bump the interface version\n\n\
             The layout changes.\n---\n xen/include/public/domctl.h | 2 +-\n\n\
             diff --git a/xen/include/public/domctl.h b/xen/include/public/domctl.h\n\
             --- a/xen/include/public/domctl.h\n+++ b/xen/include/public/domctl.h\n\
             @@ -21,7 +21,7 @@\n  * Stable ops are NOT covered by XEN_DOMCTL_INTERFACE_VERSION!\n  */\n\
             -#define XEN_DOMCTL_INTERFACE_VERSION {from}\n+#define XEN_DOMCTL_INTERFACE_VERSION{to}\n\
             \n /*\n  * NB. xen_domctl.domain is an IN/OUT parameter for this operation.\n-- \n2.39.5\n"
        )
    }

    fn table() -> InterfaceVersions {
        crate::config::parse_yaml(
            "description: d\nreleases:\n  - {release: \"4.17\", version: 0x00000015}\n\
             \x20 - {release: \"4.18\", version: 0x00000016}\n  - {release: \"4.19\", version: 0x00000017}\n\
             \x20 - {release: \"4.20\", version: 0x00000017}\n",
        )
        .unwrap()
    }

    #[test]
    fn interface_version_of_a_release_is_refused() {
        let patch = bump("0x00000015", " 0x00000016");
        let found = check_interface_version(&[("0001.patch", GOOD), ("0005.patch", &patch)], &table());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].patch, "0005.patch");
        let what = &found[0].what;
        assert!(
            what.starts_with("xen/include/public/domctl.h: XEN_DOMCTL_INTERFACE_VERSION 0x00000016 is the one Xen 4.18 used"),
            "{what}"
        );
        assert!(what.contains("keep the base's value (0x00000015)"), "{what}");
        // Tabs between the tokens; every release that used it is named.
        let tabs = bump("0x00000016", "\t 0x00000017");
        let what = &check_interface_version(&[("p", &tabs)], &table())[0].what;
        assert!(what.contains("0x00000017 is the one Xen 4.19, 4.20 used"), "{what}");
    }

    #[test]
    fn fresh_interface_version_passes() {
        assert_eq!(check_interface_version(&[("p", &bump("0x00000018", " 0x00000019"))], &table()), []);
    }

    #[test]
    fn series_not_setting_the_interface_version_passes() {
        assert_eq!(check_interface_version(&[("a", GOOD), ("b", GOOD)], &table()), []);
        // The define added to another file is not domctl.h's.
        let elsewhere = bump("0x00000015", " 0x00000016").replace("xen/include/public/domctl.h", "tools/include/x.h");
        assert_eq!(check_interface_version(&[("p", &elsewhere)], &table()), []);
    }

    #[test]
    fn last_interface_version_wins() {
        let (first, then) = (bump("0x00000015", " 0x00000016"), bump("0x00000016", " 0x00000019"));
        assert_eq!(check_interface_version(&[("a", &first), ("b", &then)], &table()), []);
        let back = check_interface_version(&[("b", &then), ("a", &first)], &table());
        assert_eq!(back.iter().map(|f| f.patch.as_str()).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn interface_version_that_is_not_hex() {
        let what = &check_interface_version(&[("p", &bump("0x00000015", " NEXT_VERSION"))], &table())[0].what;
        assert!(what.contains("set to \"NEXT_VERSION\", not a hex number"), "{what}");
    }

    #[test]
    fn interface_versions_file_loads() {
        let table = InterfaceVersions::load().unwrap();
        assert_eq!(table.releases_of(0x15), ["4.17"]);
        assert_eq!(table.releases_of(0x16), ["4.18"]);
    }

    #[test]
    fn interface_versions_file_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("versions.yaml");
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            format!("{:#}", InterfaceVersions::load_from(&path).unwrap_err())
        };
        let file = path.display().to_string();
        let one = "description: d\nreleases:\n  - {release: \"4.17\", version: 0x15}\n";
        assert_eq!(
            err(&format!("{one}  - {{release: \"4.17\", version: 0x16}}\n")),
            format!("{file}: field `releases[1].release`: 4.17 is listed already as releases[0]")
        );
        assert_eq!(
            err(&one.replace("\"4.17\"", "4.17.1")),
            format!("{file}: field `releases[0].release`: \"4.17.1\" is not MAJOR.MINOR (e.g. \"4.18\")")
        );
        let bad = err(&one.replace("0x15", "0x1G"));
        assert!(bad.starts_with(&format!("{file}: field `releases[0].version`: ")), "{bad}");
    }

    #[test]
    fn cover_letter() {
        assert_eq!(check_cover_letter("Subject: [PATCH 00/11] *** SUBJECT HERE ***\n\n*** BLURB HERE ***\n").len(), 2);
        assert!(check_cover_letter("Subject: x\n\nThe poster certifies the Developer's Certificate of\nOrigin.\n").is_empty());
    }
}
