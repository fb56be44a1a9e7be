//! Bases: the pinned Xen sources the harness builds, one YAML file each in
//! `xen/bases/`, each with its own patch series. Commands take a base by
//! name (the file's stem) or as a path to such a file; without one they use
//! the base marked `default: true`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::paths;

/// `xen/bases/<name>.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// What the base is, for people reading the file.
    #[allow(dead_code)]
    pub description: String,
    /// The base every command uses unless told otherwise; exactly one base
    /// in `xen/bases/` has it.
    #[serde(default)]
    pub default: bool,
    /// Xen's version as people name it (`4.23-unstable`, `4.17.5+72`).
    pub version: String,
    pub upstream: Upstream,
    /// A tarball of exactly `upstream.commit` as `git archive` makes it,
    /// looked for in the directory given with `--xen-sources` (or
    /// `NUMA_HARNESS_XEN_SOURCES`). Optional: without it, and without
    /// `debian`, the source comes from upstream git.
    pub tarball: Option<Tarball>,
    /// The Debian source package whose orig tarball is `tarball`.
    pub debian: Option<DebianSource>,
    /// The patch series for this base, relative to the repository root.
    pub series: PathBuf,
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub repository: String,
    pub branch: String,
    pub commit: String,
    /// The git tree of the source as `git archive <commit>` writes it (with
    /// `export-subst` applied, so not always the commit's own tree). Every
    /// way of getting the source must unpack to exactly this tree; it is the
    /// source's identity in every cache key.
    pub tree: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tarball {
    pub name: String,
    pub sha256: String,
    /// The tarball's top-level directory.
    pub directory: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    pub source: String,
    pub version: String,
}

fn bases_dir() -> PathBuf {
    paths::xen_dir().join("bases")
}

impl Base {
    /// A base by name (`master`, `stable-4.17`) or by path to its file.
    pub fn load(name_or_path: &str) -> Result<Base> {
        let path = if name_or_path.ends_with(".yaml") || name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            let path = bases_dir().join(format!("{name_or_path}.yaml"));
            if !path.is_file() {
                bail!(
                    "no base {name_or_path:?}: the bases are {} (files in {}), or give a path to a base file",
                    Base::names()?.join(", "),
                    bases_dir().display()
                );
            }
            path
        };
        Base::load_file(&path)
    }

    fn load_file(path: &Path) -> Result<Base> {
        let mut b: Base = crate::config::load_yaml(path)?;
        b.name = crate::config::stem(path)?;
        b.path = path.to_path_buf();
        b.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(b)
    }

    fn validate(&self) -> Result<()> {
        let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
        if !hex(&self.upstream.commit, 40) {
            bail!("field `upstream.commit`: {:?} is not a full 40-digit commit ID", self.upstream.commit);
        }
        if !hex(&self.upstream.tree, 40) {
            bail!("field `upstream.tree`: {:?} is not a full 40-digit tree ID", self.upstream.tree);
        }
        if let Some(t) = &self.tarball {
            if !hex(&t.sha256, 64) {
                bail!("field `tarball.sha256`: {:?} is not a SHA-256 in hex", t.sha256);
            }
            if t.directory.is_empty() || t.directory.contains('/') {
                bail!("field `tarball.directory`: {:?} is not a single directory name", t.directory);
            }
        }
        if self.debian.is_some() && self.tarball.is_none() {
            bail!("field `debian`: a Debian source needs `tarball` (its orig tarball)");
        }
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("{:?} is not a usable base name (letters, digits, `-`, `_`, `.`)", self.name);
        }
        Ok(())
    }

    /// The series file, resolved against the repository root.
    pub fn series_path(&self) -> PathBuf {
        paths::repo().join(&self.series)
    }

    /// The names of the shipped bases, sorted.
    pub fn names() -> Result<Vec<String>> {
        let mut names = Vec::new();
        for f in crate::config::yaml_files(&bases_dir())? {
            names.push(crate::config::stem(&f)?);
        }
        Ok(names)
    }

    /// Every shipped base, the default first.
    pub fn all() -> Result<Vec<Base>> {
        let mut bases = Base::names()?.iter().map(|n| Base::load(n)).collect::<Result<Vec<_>>>()?;
        let defaults = bases.iter().filter(|b| b.default).count();
        if defaults != 1 {
            bail!("{} bases in {} are marked `default: true`; exactly one must be", defaults, bases_dir().display());
        }
        bases.sort_by_key(|b| !b.default);
        Ok(bases)
    }

    /// The base every command uses unless given `--base`.
    pub fn default_base() -> Result<Base> {
        Base::all()?.into_iter().next().context("no base in xen/bases/")
    }

    /// `--base` if given, else the default.
    pub fn chosen(arg: Option<&str>) -> Result<Base> {
        match arg {
            Some(name) => Base::load(name),
            None => Base::default_base(),
        }
    }

    /// Where the base's source directory is inside its tarball or archive.
    pub fn directory(&self) -> String {
        match &self.tarball {
            Some(t) => t.directory.clone(),
            None => format!("xen-{}", &self.upstream.commit[..10]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_bases_load_with_one_default() {
        let all = Base::all().unwrap();
        assert!(all.len() >= 2);
        assert!(all[0].default);
        for b in &all {
            assert!(b.series_path().is_file(), "{}: no series {}", b.name, b.series_path().display());
        }
        assert_eq!(Base::default_base().unwrap().name, "master");
    }

    #[test]
    fn unknown_base_lists_the_known_ones() {
        let err = Base::load("stable-4.99").unwrap_err().to_string();
        assert!(err.starts_with("no base \"stable-4.99\": the bases are master, stable-4.17"), "{err}");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.yaml");
        std::fs::write(
            &path,
            "description: x\nversion: '1'\nseries: patches/master/series\n\
             upstream: {repository: file:///r, branch: b, commit: c447b7308b, tree: f766032e22de3e5539055cb690e78790e4fc1a05}\n",
        )
        .unwrap();
        let err = Base::load(path.to_str().unwrap()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: field `upstream.commit`: \"c447b7308b\" is not a full 40-digit commit ID", path.display())
        );
    }
}
