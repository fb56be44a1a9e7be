//! Fetch stage: the pinned Xen source, the dom0 kernel and busybox, each
//! downloaded once into the cache, verified, and kept by content.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::{host, paths};

/// `xen/base.yaml`: the pinned base.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub version: String,
    pub upstream: Upstream,
    pub debian: DebianSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub repository: String,
    pub branch: String,
    pub commit: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    pub source: String,
    pub version: String,
    pub orig: String,
    pub sha256: String,
    pub directory: String,
}

impl Base {
    pub fn load() -> Result<Base> {
        crate::config::load_yaml(&paths::xen_dir().join("base.yaml"))
    }
}

/// The Xen source as a tarball, and what identifies its content.
pub struct XenSource {
    pub tarball: PathBuf,
    /// Top-level directory inside the tarball.
    pub directory: String,
    /// `sha256:<hex>` of the Debian orig tarball, or `git:<commit>`.
    pub id: String,
}

/// A Debian binary package unpacked (not installed) into the cache.
pub struct UnpackedDeb {
    pub package: String,
    pub version: String,
    pub sha256: String,
    pub root: PathBuf,
}

pub struct Sources {
    pub xen: XenSource,
    pub kernel: UnpackedDeb,
    pub busybox: UnpackedDeb,
}

pub fn fetch(sh: &Shell) -> Result<Sources> {
    let base = Base::load()?;
    let xen = xen_source(sh, &base)?;
    let kernel = dom0_kernel(sh)?;
    let busybox = unpacked_deb(sh, "busybox-static")?;
    Ok(Sources { xen, kernel, busybox })
}

fn xen_source(sh: &Shell, base: &Base) -> Result<XenSource> {
    let deb = &base.debian;
    let dir = paths::cache()?.join("downloads").join(&deb.sha256);
    let tarball = dir.join(&deb.orig);
    let source = XenSource {
        tarball: tarball.clone(),
        directory: deb.directory.clone(),
        id: format!("sha256:{}", deb.sha256),
    };
    if tarball.exists() {
        return Ok(source);
    }
    let git_tar = paths::cache()?
        .join("downloads")
        .join(format!("git-{}.tar", base.upstream.commit));
    if git_tar.exists() {
        return Ok(XenSource {
            tarball: git_tar,
            directory: deb.directory.clone(),
            id: format!("git:{}", base.upstream.commit),
        });
    }

    eprintln!(
        "fetch: Xen {} ({} commit {}) from Debian source package {} {}",
        base.version, base.upstream.branch, &base.upstream.commit[..12], deb.source, deb.version
    );
    match download_orig(sh, deb, &dir) {
        Ok(()) => Ok(source),
        Err(apt_err) => {
            eprintln!("fetch: apt could not provide it ({apt_err:#}); trying upstream git");
            download_git(sh, base, &git_tar).with_context(|| {
                format!(
                    "neither apt ({apt_err:#}) nor upstream git could provide Xen {}",
                    base.version
                )
            })?;
            Ok(XenSource {
                tarball: git_tar,
                directory: deb.directory.clone(),
                id: format!("git:{}", base.upstream.commit),
            })
        }
    }
}

fn download_orig(sh: &Shell, deb: &DebianSource, dest_dir: &Path) -> Result<()> {
    ensure_deb_src(sh)?;
    let tmp = paths::staging_dir(dest_dir)?;
    let spec = format!("{}={}", deb.source, deb.version);
    {
        let _cd = sh.push_dir(&tmp);
        cmd!(sh, "apt-get source --download-only {spec}")
            .quiet()
            .ignore_stderr()
            .ignore_stdout()
            .run()
            .with_context(|| format!("apt-get source --download-only {spec} failed"))?;
    }
    let got = tmp.join(&deb.orig);
    let sha = paths::sha256_file(&got)?;
    if sha != deb.sha256 {
        std::fs::remove_dir_all(&tmp)?;
        bail!(
            "{} has sha256 {sha}, but xen/base.yaml pins {}: the download is not the pinned Xen",
            deb.orig,
            deb.sha256
        );
    }
    paths::commit_dir(&tmp, dest_dir)
}

fn download_git(sh: &Shell, base: &Base, dest: &Path) -> Result<()> {
    let tmp = paths::staging_dir(&dest.with_extension("git"))?;
    let repo = &base.upstream.repository;
    let commit = &base.upstream.commit;
    let prefix = format!("{}/", base.debian.directory);
    let _cd = sh.push_dir(&tmp);
    cmd!(sh, "git init -q").quiet().run()?;
    cmd!(sh, "git fetch -q --depth 1 {repo} {commit}").quiet().run()?;
    let got = cmd!(sh, "git rev-parse FETCH_HEAD").read()?;
    if got.trim() != *commit {
        bail!("{repo} gave {got} for {commit}");
    }
    let part = dest.with_extension("tar.partial");
    cmd!(sh, "git archive --format=tar --prefix={prefix} -o {part} FETCH_HEAD").quiet().run()?;
    std::fs::rename(&part, dest)?;
    drop(_cd);
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
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
    eprintln!("fetch: added deb-src entries for {uri} {suite} main to {DEB_SRC_FILE}");
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
    eprintln!("fetch: {package} {version}");
    let tmp = paths::staging_dir(&dest)?;
    let spec = format!("{package}={version}");
    {
        let _cd = sh.push_dir(&tmp);
        cmd!(sh, "apt-get download -q {spec}")
            .quiet()
            .ignore_stderr()
            .ignore_stdout()
            .run()
            .with_context(|| format!("apt-get download {spec} failed"))?;
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
        let text = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
                    Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        let (uri, suite, key) = parse_deb822_mirror(text).unwrap();
        assert_eq!(uri, "http://deb.debian.org/debian");
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
    fn pinned_base_parses() {
        let base = Base::load().unwrap();
        assert_eq!(base.upstream.commit.len(), 40);
        assert_eq!(base.debian.sha256.len(), 64);
    }
}
