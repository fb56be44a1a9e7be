//! Fetch stage: a base's pinned Xen source, the dom0 kernel and busybox,
//! each downloaded once into the cache, verified, and kept by content.
//!
//! Xen's source comes from the first of these that has it: the cache; a
//! local directory of source tarballs (`--xen-sources`, or
//! `NUMA_HARNESS_XEN_SOURCES`), checked against the base's SHA-256; Debian's
//! source package, for a base that names one; upstream git at the pinned
//! commit. Whichever it is, it must unpack to the base's pinned git tree,
//! which is the source's identity in every later cache key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::base::{Base, Tarball};
use crate::{host, paths};

/// A base's Xen source as a tarball in the cache, and its identity.
#[derive(Debug, Clone)]
pub struct XenSource {
    /// The base's name.
    pub base: String,
    pub tarball: PathBuf,
    /// Top-level directory inside the tarball.
    pub directory: String,
    /// The git tree the tarball unpacks to (`upstream.tree` of the base).
    pub tree: String,
    /// Where it came from, for people.
    pub origin: String,
}

/// A Debian binary package unpacked (not installed) into the cache.
pub struct UnpackedDeb {
    pub package: String,
    pub version: String,
    pub sha256: String,
    pub root: PathBuf,
}

/// The dom0 kernel and busybox every image is made of.
pub struct Dom0Packages {
    pub kernel: UnpackedDeb,
    pub busybox: UnpackedDeb,
}

/// The directory of local source tarballs: the flag, else the environment.
pub fn sources_dir(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("NUMA_HARNESS_XEN_SOURCES").map(PathBuf::from))
}

pub fn dom0_packages(sh: &Shell) -> Result<Dom0Packages> {
    Ok(Dom0Packages { kernel: dom0_kernel(sh)?, busybox: unpacked_deb(sh, "busybox-static")? })
}

/// The base's source, fetched into the cache if it is not there yet.
pub fn xen_source(sh: &Shell, base: &Base, sources: Option<&Path>) -> Result<XenSource> {
    let dir = paths::cache()?.join("downloads").join(format!("xen-{}", base.upstream.tree));
    let source = |file: PathBuf, origin: String| XenSource {
        base: base.name.clone(),
        tarball: file,
        directory: base.directory(),
        tree: base.upstream.tree.clone(),
        origin,
    };
    if let Some(file) = cached_file(&dir)? {
        let origin = std::fs::read_to_string(dir.join("origin")).unwrap_or_default();
        return Ok(source(file, origin.trim().to_string()));
    }

    // Each way that did not work, and why: said together if none does.
    let mut tried: Vec<String> = Vec::new();
    if let (Some(t), Some(local)) = (&base.tarball, sources) {
        let file = local.join(&t.name);
        if file.is_file() {
            let origin = format!("{}", file.display());
            let got = copy_verified(&file, t, &dir, &origin)?;
            crate::say!("fetch: Xen {} ({}) from {}", base.version, base.name, file.display());
            return Ok(source(got, origin));
        }
        tried.push(format!("{} is not in {}", t.name, local.display()));
    }
    if let (Some(t), Some(deb)) = (&base.tarball, &base.debian) {
        crate::say!(
            "fetch: Xen {} ({} commit {}) from Debian source package {} {}",
            base.version, base.upstream.branch, &base.upstream.commit[..12], deb.source, deb.version
        );
        let origin = format!("Debian source package {} {}", deb.source, deb.version);
        match download_orig(sh, &deb.source, &deb.version, t, &dir, &origin) {
            Ok(file) => return Ok(source(file, origin)),
            Err(e) => {
                crate::say!("fetch: apt could not provide it: {e:#}");
                tried.push(format!("apt: {e:#}"));
            }
        }
    }
    match git_source(sh, base, &dir) {
        Ok(source) => Ok(source),
        Err(e) => {
            tried.push(format!("git: {e:#}"));
            bail!(
                "cannot get the Xen source of base {} ({}):\n    {}\n\
                 give a directory holding {} with --xen-sources (or NUMA_HARNESS_XEN_SOURCES)",
                base.name,
                base.path.display(),
                tried.join("\n    "),
                base.tarball.as_ref().map_or("a tarball of the pinned commit", |t| t.name.as_str()),
            )
        }
    }
}

/// The base's source from upstream git, downloaded into `dest`.
pub fn git_source(sh: &Shell, base: &Base, dest: &Path) -> Result<XenSource> {
    crate::say!("fetch: Xen {} ({}) from {} at {}", base.version, base.name, base.upstream.repository, &base.upstream.commit[..12]);
    let origin = format!("git {} {}", base.upstream.repository, base.upstream.commit);
    let tarball = download_git(sh, base, dest, &origin)?;
    Ok(XenSource {
        base: base.name.clone(),
        tarball,
        directory: base.directory(),
        tree: base.upstream.tree.clone(),
        origin,
    })
}

/// The source file in a completed download directory, if there is one.
fn cached_file(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.join("origin").is_file() {
        return Ok(None);
    }
    let file = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n != "origin"));
    Ok(file)
}

/// Copies a local tarball into the cache once its SHA-256 matches the pin.
fn copy_verified(file: &Path, t: &Tarball, dest: &Path, origin: &str) -> Result<PathBuf> {
    let sha = paths::sha256_file(file)?;
    if sha != t.sha256 {
        bail!(
            "{} has sha256 {sha}, but the base pins {}: it is not the pinned Xen source (remove it, or fix --xen-sources)",
            file.display(),
            t.sha256
        );
    }
    let tmp = paths::staging_dir(dest)?;
    std::fs::copy(file, tmp.join(&t.name)).with_context(|| format!("copying {}", file.display()))?;
    std::fs::write(tmp.join("origin"), origin)?;
    paths::commit_dir(&tmp, dest)?;
    Ok(dest.join(&t.name))
}

fn download_orig(sh: &Shell, package: &str, version: &str, t: &Tarball, dest: &Path, origin: &str) -> Result<PathBuf> {
    ensure_deb_src(sh)?;
    let tmp = paths::staging_dir(dest)?;
    let spec = format!("{package}={version}");
    let out = {
        let _cd = sh.push_dir(&tmp);
        cmd!(sh, "apt-get source --download-only {spec}").quiet().ignore_status().output()?
    };
    if !out.status.success() {
        std::fs::remove_dir_all(&tmp)?;
        bail!("`apt-get source --download-only {spec}` failed: {}", apt_said(&out));
    }
    // apt-get source leaves the .dsc and the Debian tarball beside the orig.
    for entry in std::fs::read_dir(&tmp)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| *n != *t.name) {
            std::fs::remove_file(&path)?;
        }
    }
    let got = tmp.join(&t.name);
    let sha = paths::sha256_file(&got).with_context(|| format!("apt-get source left no {}", t.name))?;
    if sha != t.sha256 {
        std::fs::remove_dir_all(&tmp)?;
        bail!("{} has sha256 {sha}, but the base pins {}: the download is not the pinned Xen", t.name, t.sha256);
    }
    std::fs::write(tmp.join("origin"), origin)?;
    paths::commit_dir(&tmp, dest)?;
    Ok(dest.join(&t.name))
}

/// What apt (or any command) said on failure: its error lines, else its
/// last lines.
fn apt_said(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("E:") || l.starts_with("Err:")).collect();
    let pick = if errors.is_empty() { &lines[lines.len().saturating_sub(5)..] } else { &errors[..] };
    if pick.is_empty() {
        format!("{} (no message)", out.status)
    } else {
        pick.join(" / ")
    }
}

/// Fetches the pinned commit from upstream git (only that commit), writes
/// it as `git archive` does and checks it unpacks to the pinned tree.
fn download_git(sh: &Shell, base: &Base, dest: &Path, origin: &str) -> Result<PathBuf> {
    let tmp = paths::staging_dir(dest)?;
    let result = (|| -> Result<String> {
        let repo = &base.upstream.repository;
        let commit = &base.upstream.commit;
        let git_dir = tmp.join("repo.git");
        cmd!(sh, "git init -q --bare {git_dir}").quiet().run()?;
        let out = cmd!(sh, "git --git-dir={git_dir} fetch -q --depth 1 {repo} {commit}").quiet().ignore_status().output()?;
        if !out.status.success() {
            bail!("`git fetch {repo} {commit}` failed: {}", apt_said(&out));
        }
        let got = cmd!(sh, "git --git-dir={git_dir} rev-parse FETCH_HEAD").quiet().read()?;
        if got.trim() != *commit {
            bail!("{repo} gave commit {} for {commit}", got.trim());
        }
        let name = format!("git-{}.tar", &commit[..12]);
        let file = tmp.join(&name);
        let prefix = format!("{}/", base.directory());
        cmd!(sh, "git --git-dir={git_dir} archive --format=tar --prefix={prefix} -o {file} {commit}").quiet().run()?;
        std::fs::remove_dir_all(&git_dir)?;
        let tree = tarball_tree(sh, &file, &base.directory())?;
        if tree != base.upstream.tree {
            bail!(
                "commit {commit} of {repo} archives to git tree {tree}, but the base pins tree {}",
                base.upstream.tree
            );
        }
        std::fs::write(tmp.join("origin"), origin)?;
        Ok(name)
    })();
    match result {
        Ok(name) => {
            paths::commit_dir(&tmp, dest)?;
            Ok(dest.join(name))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// The git tree a tarball's top-level directory holds, as `import` makes it.
pub fn tarball_tree(sh: &Shell, tarball: &Path, directory: &str) -> Result<String> {
    const HEAD_TREE: &str = "HEAD^{tree}";
    let tmp = tempfile::tempdir()?;
    let top = import(sh, tarball, directory, tmp.path(), "tree check")?;
    let tree = cmd!(sh, "git -C {top} rev-parse {HEAD_TREE}").quiet().read()?;
    Ok(tree.trim().to_string())
}

/// Unpacks `tarball` under `into` and commits its top-level directory as
/// the first commit of a new git repository (every file, ignored or not);
/// returns that directory.
pub fn import(sh: &Shell, tarball: &Path, directory: &str, into: &Path, message: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    cmd!(sh, "tar -xf {tarball} -C {into}").quiet().run().with_context(|| format!("unpacking {}", tarball.display()))?;
    let top = into.join(directory);
    if !top.is_dir() {
        bail!("{} has no top-level directory {directory}", tarball.display());
    }
    let _cd = sh.push_dir(&top);
    cmd!(sh, "git init -q").quiet().run()?;
    cmd!(sh, "git add -A -f").quiet().run()?;
    cmd!(sh, "git -c user.name=numa-harness -c user.email=numa-harness@localhost commit -q --no-verify -m {message}")
        .quiet()
        .run()?;
    Ok(top)
}

const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/xen-numa-harness-src.sources";

/// `apt-get source` needs deb-src entries; Debian's cloud images ship only
/// `deb` ones. Adds deb-src entries for the machine's own configured Debian
/// mirror, and says so.
fn ensure_deb_src(sh: &Shell) -> Result<()> {
    let have = cmd!(sh, "apt-get indextargets --format $(IDENTIFIER)")
        .quiet()
        .read()
        .unwrap_or_default();
    if have.lines().any(|l| l.trim() == "Sources") {
        return Ok(());
    }
    let (uri, suite, signed_by) = debian_mirror()?;
    if !host::is_root() {
        bail!(
            "apt has no deb-src entries, which `apt-get source` needs; as root, add them for {uri} {suite} main, \
             or run this command as root and it will"
        );
    }
    let mut text = format!(
        "# Added by the Xen NUMA harness (cargo xtask fetch): source packages\n\
         # from this machine's own Debian mirror.\n\
         Types: deb-src\nURIs: {uri}\nSuites: {suite}\nComponents: main\n"
    );
    if let Some(key) = signed_by {
        text.push_str(&format!("Signed-By: {key}\n"));
    }
    std::fs::write(DEB_SRC_FILE, text).with_context(|| format!("writing {DEB_SRC_FILE}"))?;
    crate::say!("fetch: added deb-src entries for {uri} {suite} main to {DEB_SRC_FILE}");
    host::apt_update(sh)
}

/// The first `deb` entry for Debian's main archive among the machine's apt
/// sources (deb822 `.sources` files and one-line `.list` files).
fn debian_mirror() -> Result<(String, String, Option<String>)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let name = file.to_string_lossy();
        let found = if name.ends_with(".sources") {
            parse_deb822_mirror(&text)
        } else if name.ends_with(".list") {
            parse_one_line_mirror(&text)
        } else {
            None
        };
        if let Some(found) = found {
            return Ok(found);
        }
    }
    bail!("no `deb` entry for a Debian bookworm mirror in /etc/apt/sources.list{{,.d/*}}: cannot add deb-src")
}

fn parse_deb822_mirror(text: &str) -> Option<(String, String, Option<String>)> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let types = field("Types:")?;
        let uris = field("URIs:")?;
        let suites = field("Suites:")?;
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == "bookworm")
            && !uris.contains("security")
        {
            let uri = uris.split_whitespace().next()?.to_string();
            return Some((uri, "bookworm".into(), field("Signed-By:")));
        }
    }
    None
}

fn parse_one_line_mirror(text: &str) -> Option<(String, String, Option<String>)> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
        (words.next()? == "deb").then_some(())?;
        let uri = words.next()?;
        let suite = words.next()?;
        (suite == "bookworm" && !uri.contains("security"))
            .then(|| (uri.to_string(), suite.to_string(), None))
    })
}

/// Debian's dom0-capable kernel: the package `linux-image-amd64` depends on
/// today (the smaller cloud flavour has no dom0 support).
fn dom0_kernel(sh: &Shell) -> Result<UnpackedDeb> {
    let meta = apt_show(sh, "linux-image-amd64")?;
    let depends = field(&meta, "Depends").context("linux-image-amd64 has no Depends")?;
    let image = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
        .with_context(|| format!("linux-image-amd64 depends on no kernel image: {depends}"))?
        .to_string();
    unpacked_deb(sh, &image)
}

fn apt_show(sh: &Shell, package: &str) -> Result<String> {
    let show = |sh: &Shell| {
        cmd!(sh, "apt-cache show --no-all-versions {package}")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()
            .filter(|s| !s.trim().is_empty())
    };
    if let Some(meta) = show(sh) {
        return Ok(meta);
    }
    if host::is_root() {
        host::apt_update(sh)?;
        if let Some(meta) = show(sh) {
            return Ok(meta);
        }
    }
    bail!("apt knows no package {package}: run `apt-get update` (as root) and check the apt sources")
}

fn field(meta: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}: ");
    meta.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// Downloads a binary package with apt (which verifies it against the signed
/// index), checks it against the index's SHA256 and unpacks it with
/// `dpkg-deb -x`. Cached per package version.
fn unpacked_deb(sh: &Shell, package: &str) -> Result<UnpackedDeb> {
    let meta = apt_show(sh, package)?;
    let version = field(&meta, "Version").with_context(|| format!("{package}: no Version"))?;
    let sha256 = field(&meta, "SHA256").with_context(|| format!("{package}: no SHA256"))?;
    let dest = paths::cache()?.join("debs").join(format!("{package}_{}", version.replace(':', "%3a")));
    let deb = UnpackedDeb { package: package.into(), version: version.clone(), sha256: sha256.clone(), root: dest.join("root") };
    if dest.join("root").exists() {
        return Ok(deb);
    }
    crate::say!("fetch: {package} {version}");
    let tmp = paths::staging_dir(&dest)?;
    let spec = format!("{package}={version}");
    let out = {
        let _cd = sh.push_dir(&tmp);
        cmd!(sh, "apt-get download -q {spec}").quiet().ignore_status().output()?
    };
    if !out.status.success() {
        std::fs::remove_dir_all(&tmp)?;
        bail!("`apt-get download {spec}` failed: {}", apt_said(&out));
    }
    let file = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {spec} left no .deb"))?;
    let got = paths::sha256_file(&file)?;
    if got != sha256 {
        bail!("{} has sha256 {got}, apt's index says {sha256}", file.display());
    }
    let root = tmp.join("root");
    cmd!(sh, "dpkg-deb -x {file} {root}").quiet().run()?;
    std::fs::remove_file(&file)?;
    paths::commit_dir(&tmp, &dest)?;
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mirror_in_deb822_sources() {
        let text = "Types: deb\nURIs: http://mirror.example.org/debian\nSuites: bookworm bookworm-updates\n\
                    Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://mirror.example.org/debian-security\nSuites: bookworm-security\n";
        let (uri, suite, key) = parse_deb822_mirror(text).unwrap();
        assert_eq!(uri, "http://mirror.example.org/debian");
        assert_eq!(suite, "bookworm");
        assert_eq!(key.as_deref(), Some("/usr/share/keyrings/debian-archive-keyring.gpg"));
    }

    #[test]
    fn finds_mirror_in_one_line_list() {
        let text = "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n";
        let (uri, suite, _) = parse_one_line_mirror(text).unwrap();
        assert_eq!((uri.as_str(), suite.as_str()), ("http://mirror.example/debian", "bookworm"));
        assert!(parse_one_line_mirror("deb http://x/debian-security bookworm-security main").is_none());
    }

    #[test]
    fn apt_errors_are_kept() {
        let out = std::process::Command::new("sh")
            .args(["-c", "echo 'Reading package lists...'; echo 'E: Unable to find a source package for xen' >&2; exit 100"])
            .output()
            .unwrap();
        assert_eq!(apt_said(&out), "E: Unable to find a source package for xen");
    }

    /// The git path for real: a repository made here, fetched over file://
    /// by commit, archived and checked against the tree it must give.
    #[test]
    fn git_source_is_fetched_and_checked() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("upstream");
        std::fs::create_dir_all(repo.join("xen")).unwrap();
        std::fs::write(repo.join("xen/Makefile"), "all:\n").unwrap();
        std::fs::write(repo.join("README"), "Xen\n").unwrap();
        let commit = {
            let _cd = sh.push_dir(&repo);
            cmd!(sh, "git init -q").run().unwrap();
            cmd!(sh, "git add -A").run().unwrap();
            cmd!(sh, "git -c user.name=t -c user.email=t@t commit -q -m upstream").run().unwrap();
            cmd!(sh, "git rev-parse HEAD").read().unwrap()
        };
        let spec = "HEAD^{tree}";
        let tree = cmd!(sh, "git -C {repo} rev-parse {spec}").read().unwrap();
        let base = |tree: &str| Base {
            description: String::new(),
            default: false,
            version: "test".into(),
            upstream: crate::base::Upstream {
                repository: format!("file://{}", repo.display()),
                branch: "main".into(),
                commit: commit.clone(),
                tree: tree.into(),
            },
            tarball: None,
            debian: None,
            series: PathBuf::new(),
            name: "git-test".into(),
            path: PathBuf::from("git-test.yaml"),
        };
        let dest = dir.path().join("download");
        let file = download_git(&sh, &base(&tree), &dest, "git").unwrap();
        assert_eq!(tarball_tree(&sh, &file, &base(&tree).directory()).unwrap(), tree);
        assert!(dest.join("origin").is_file());

        let wrong = "0".repeat(40);
        let err = download_git(&sh, &base(&wrong), &dir.path().join("wrong"), "git").unwrap_err().to_string();
        assert!(err.ends_with(&format!("archives to git tree {tree}, but the base pins tree {wrong}")), "{err}");
        assert!(!dir.path().join("wrong").exists(), "a failed download left {}", dir.path().join("wrong").display());
    }
}
