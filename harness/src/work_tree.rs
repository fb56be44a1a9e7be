//! A base's x86_64 work tree (`trees/<base>/x86_64`): the pinned source
//! with the base's series on top, one commit per patch, kept between runs
//! with everything make left in it. The series check walks its commits,
//! building each; the baseline and patched builds are made in it at the
//! commit of their last patch. So a build costs what the walk has not
//! already compiled, and after a change to one patch only that patch and
//! the ones after it are applied again: the files git rewrites are those
//! that differ, and make rebuilds what depends on them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::build::{self, BASE_TAG};
use crate::fetch::XenSource;
use crate::patch::{self, Patch, Series};
use crate::paths;

/// The file in the tree's state directory that lists the series as it is
/// applied: one line per patch, `<key> <commit>`, the key that of the
/// patches up to it (see [`prefix_keys`]).
const APPLIED: &str = "applied";

pub struct WorkTree {
    pub path: PathBuf,
    /// Logs and stamps, beside the tree where `git clean` cannot reach.
    pub state: PathBuf,
    /// The commit with `n` patches applied is `commits[n]`; `commits[0]`
    /// is the pinned base.
    commits: Vec<String>,
}

/// A key for each prefix of `patches`: the `n`-th holds the first `n + 1`
/// patches' texts (without their place in the series), so two series share
/// the keys of the patches they share from the start.
pub fn prefix_keys(patches: &[&Patch]) -> Result<Vec<String>> {
    let mut key = paths::KeyBuilder::default();
    let mut keys = Vec::new();
    for p in patches {
        let text = std::fs::read_to_string(&p.path)
            .with_context(|| format!("cannot read patch {}", p.path.display()))?;
        key.add("patch", patch::unnumbered(&text));
        keys.push(key.finish());
    }
    Ok(keys)
}

/// Where a base's x86_64 work tree is.
pub fn path(base: &str) -> Result<PathBuf> {
    Ok(paths::cache()?.join("trees").join(base).join("x86_64"))
}

impl WorkTree {
    /// The base's work tree with its whole series applied, HEAD at the
    /// last patch. Unpacked from the source if missing or made from
    /// another source; otherwise only the patches from the first one that
    /// changed since the tree was last patched are applied again.
    pub fn open(sh: &Shell, source: &XenSource, series: &Series) -> Result<WorkTree> {
        let tree = path(&source.base)?;
        let state = tree.with_file_name("x86_64.state");
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let made_afresh = build::prepare_tree(sh, source, &tree)?;
        let patches: Vec<&Patch> = series.patches.iter().collect();
        let keys = prefix_keys(&patches)?;
        let applied = if made_afresh {
            Vec::new()
        } else {
            read_applied(&state.join(APPLIED))
        };
        let kept = applied
            .iter()
            .zip(&keys)
            .take_while(|((key, commit), want)| key == *want && has_commit(sh, &tree, commit))
            .count();
        let back_to = if kept == 0 {
            BASE_TAG.to_string()
        } else {
            applied[kept - 1].1.clone()
        };
        {
            let _cd = sh.push_dir(&tree);
            cmd!(sh, "git am --abort")
                .quiet()
                .ignore_status()
                .ignore_stderr()
                .run()?;
            cmd!(sh, "git checkout -q --detach {back_to}")
                .quiet()
                .run()?;
            cmd!(sh, "git reset -q --hard").quiet().run()?;
            cmd!(sh, "git clean -q -fd").quiet().run()?;
        }
        // Written again below once the rest is applied: until then the
        // tree holds only the prefix kept.
        write_applied(&state.join(APPLIED), &applied[..kept])?;
        if kept < patches.len() {
            crate::say!(
                "build: {}: {} of {} patch(es) applied as before; applying the rest in {}",
                source.base,
                kept,
                patches.len(),
                tree.display()
            );
            patch::apply(sh, &tree, &patches[kept..])?;
        }
        let commits = {
            let _cd = sh.push_dir(&tree);
            let n = patches.len().to_string();
            let range = format!("{BASE_TAG}..HEAD");
            let listed = cmd!(sh, "git rev-list --reverse {range}").quiet().read()?;
            let spec = format!("{BASE_TAG}^{{commit}}");
            let base = cmd!(sh, "git rev-parse {spec}").quiet().read()?;
            let commits: Vec<String> = std::iter::once(base.trim().to_string())
                .chain(listed.lines().map(str::to_string))
                .collect();
            if commits.len() != patches.len() + 1 {
                bail!(
                    "{} has {} commit(s) on its base, not the series' {n}",
                    tree.display(),
                    commits.len() - 1
                );
            }
            commits
        };
        let now: Vec<(String, String)> =
            keys.into_iter().zip(commits[1..].iter().cloned()).collect();
        write_applied(&state.join(APPLIED), &now)?;
        Ok(WorkTree {
            path: tree,
            state,
            commits,
        })
    }

    /// The commit with the first `n` patches applied.
    pub fn commit(&self, n: usize) -> &str {
        &self.commits[n]
    }

    /// Checks out the commit with the first `n` patches applied: git
    /// rewrites only the files that differ from what the tree holds.
    pub fn checkout(&self, sh: &Shell, n: usize) -> Result<()> {
        let commit = self.commit(n);
        let path = &self.path;
        cmd!(sh, "git -C {path} checkout -q --detach {commit}")
            .quiet()
            .run()
            .with_context(|| format!("checking out {commit} in {}", path.display()))
    }
}

fn has_commit(sh: &Shell, tree: &Path, commit: &str) -> bool {
    let spec = format!("{commit}^{{commit}}");
    cmd!(sh, "git -C {tree} cat-file -e {spec}")
        .quiet()
        .ignore_stderr()
        .run()
        .is_ok()
}

fn read_applied(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, c)| (k.to_string(), c.to_string()))
        })
        .collect()
}

fn write_applied(path: &Path, applied: &[(String, String)]) -> Result<()> {
    let text: String = applied.iter().map(|(k, c)| format!("{k} {c}\n")).collect();
    paths::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two series sharing their first patch share its key, and only it.
    #[test]
    fn prefixes_share_keys_while_their_patches_agree() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            Patch {
                path,
                baseline: false,
            }
        };
        let a = write("a.patch", "Subject: [PATCH 1/2] x: a\n\nWhy.\n");
        let b = write("b.patch", "Subject: [PATCH 2/2] x: b\n\nWhy.\n");
        let a3 = write("a3.patch", "Subject: [PATCH 1/3] x: a\n\nWhy.\n");
        let c = write("c.patch", "Subject: [PATCH 2/3] x: c\n\nWhy.\n");
        let one = prefix_keys(&[&a, &b]).unwrap();
        let two = prefix_keys(&[&a3, &c]).unwrap();
        assert_eq!(one[0], two[0], "renumbering a patch keeps its key");
        assert_ne!(one[1], two[1]);
        assert_eq!(prefix_keys(&[&a, &b]).unwrap(), one);
    }
}
