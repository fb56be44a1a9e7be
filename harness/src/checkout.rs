//! A contributor's own Xen checkout, built as it stands (uncommitted and
//! untracked files included) without writing into it: its files are
//! copied into a work tree of the harness's own, where the build runs.
//!
//! Only files whose content or mode changed since the last copy are
//! written, so they alone get a new modification time and make rebuilds
//! only what they touch. The copy's identity is the git tree of exactly the
//! copied files, computed in the harness's work tree.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::paths;

pub struct Checkout {
    /// The checkout's top directory, canonical.
    pub path: PathBuf,
}

/// Git as a reader only: no optional locks, so not even an index refresh
/// is written into the checkout.
fn git_read(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = duct::cmd("git", args)
        .dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running git in {}", dir.display()))?;
    if !out.status.success() {
        bail!("`git {}` in {} failed: {}", args.join(" "), dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

impl Checkout {
    pub fn open(path: &Path) -> Result<Checkout> {
        let path = std::fs::canonicalize(path).with_context(|| format!("--xen-tree {}: no such directory", path.display()))?;
        let top = git_read(&path, &["rev-parse", "--show-toplevel"])
            .map_err(|e| anyhow::anyhow!("--xen-tree {}: not a git checkout of Xen ({e:#})", path.display()))?;
        let top = PathBuf::from(String::from_utf8_lossy(&top).trim());
        for needed in ["xen/Makefile", "tools/Makefile", "configure"] {
            if !top.join(needed).is_file() {
                bail!("--xen-tree {}: no {needed}; give the top of a Xen checkout", top.display());
            }
        }
        Ok(Checkout { path: top })
    }

    /// A short, stable name for the checkout, for its work tree and runs.
    pub fn id(&self) -> String {
        paths::sha256_hex(self.path.as_os_str().as_encoded_bytes())[..12].to_string()
    }

    /// The files to build: tracked ones that exist and untracked ones git
    /// does not ignore, sorted.
    pub fn files(&self) -> Result<Vec<String>> {
        let out = git_read(&self.path, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"])?;
        let mut files: BTreeSet<String> = BTreeSet::new();
        for name in out.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8(name.to_vec()).context("a file name in the checkout is not UTF-8")?;
            // A tracked file deleted in the work tree is not built.
            if self.path.join(&name).symlink_metadata().is_ok() {
                files.insert(name);
            }
        }
        Ok(files.into_iter().collect())
    }

    /// Makes `tree`'s copy of the checkout's files current; `manifest` keeps
    /// what the last copy wrote, so files deleted since are removed. Returns
    /// how many files were written.
    pub fn sync(&self, tree: &Path, manifest: &Path) -> Result<usize> {
        let files = self.files()?;
        let previous: BTreeSet<String> = std::fs::read_to_string(manifest)
            .map(|t| t.split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let mut written = 0;
        for rel in &files {
            if copy_if_changed(&self.path.join(rel), &tree.join(rel))? {
                written += 1;
            }
        }
        let now: BTreeSet<&String> = files.iter().collect();
        for gone in previous.iter().filter(|p| !now.contains(p)) {
            let path = tree.join(gone);
            if path.symlink_metadata().is_ok() {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                written += 1;
            }
        }
        paths::write_atomic(manifest, files.join("\0").as_bytes())?;
        Ok(written)
    }

    /// The git tree of exactly the files in `manifest`, as copied into
    /// `tree` (a git repository of the harness's).
    pub fn tree_id(tree: &Path, manifest: &Path) -> Result<String> {
        let list = std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
        if !tree.join(".git").is_dir() {
            run_git(tree, &["init", "-q"], None)?;
        }
        run_git(tree, &["read-tree", "--empty"], None)?;
        run_git(tree, &["update-index", "--add", "-z", "--stdin"], Some(&list))?;
        let out = duct::cmd("git", ["write-tree"]).dir(tree).read().context("git write-tree")?;
        Ok(out.trim().to_string())
    }
}

fn run_git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<()> {
    let mut cmd = duct::cmd("git", args).dir(dir).stdout_null();
    if let Some(input) = stdin {
        cmd = cmd.stdin_bytes(input.to_vec());
    }
    cmd.run().with_context(|| format!("`git {}` in {}", args.join(" "), dir.display()))?;
    Ok(())
}

/// Copies one file or symlink unless `dst` already has its content and
/// mode; returns whether it wrote.
fn copy_if_changed(src: &Path, dst: &Path) -> Result<bool> {
    let meta = src.symlink_metadata().with_context(|| format!("reading {}", src.display()))?;
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let existing = dst.symlink_metadata().ok();
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src)?;
        if existing.as_ref().is_some_and(|m| m.file_type().is_symlink()) && std::fs::read_link(dst)? == target {
            return Ok(false);
        }
        remove_any(dst, existing.as_ref())?;
        std::os::unix::fs::symlink(&target, dst).with_context(|| format!("creating {}", dst.display()))?;
        return Ok(true);
    }
    let content = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    let same_size_and_mode =
        |m: &std::fs::Metadata| m.is_file() && m.len() == content.len() as u64 && m.permissions().mode() & 0o777 == mode;
    if existing.as_ref().is_some_and(same_size_and_mode) && std::fs::read(dst)? == content {
        return Ok(false);
    }
    remove_any(dst, existing.as_ref())?;
    let mut f = std::fs::File::create(dst).with_context(|| format!("writing {}", dst.display()))?;
    f.write_all(&content)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

fn remove_any(path: &Path, meta: Option<&std::fs::Metadata>) -> Result<()> {
    match meta {
        Some(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Some(_) => std::fs::remove_file(path),
        None => return Ok(()),
    }
    .with_context(|| format!("removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::listing;

    fn git(dir: &Path, args: &[&str]) {
        duct::cmd("git", args).dir(dir).stdout_null().run().unwrap();
    }

    #[test]
    fn copies_what_changed_and_never_writes_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let co = dir.path().join("xen");
        for f in ["xen/Makefile", "tools/Makefile", "configure", "xen/common/domain.c", "gone.c"] {
            std::fs::create_dir_all(co.join(f).parent().unwrap()).unwrap();
            std::fs::write(co.join(f), f).unwrap();
        }
        std::fs::write(co.join(".gitignore"), "*.o\n").unwrap();
        git(&co, &["init", "-q"]);
        git(&co, &["add", "-A"]);
        git(&co, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"]);
        // Uncommitted, untracked, ignored and deleted files.
        std::fs::write(co.join("xen/common/domain.c"), "changed").unwrap();
        std::fs::write(co.join("new.c"), "new").unwrap();
        std::fs::write(co.join("built.o"), "object").unwrap();
        std::fs::remove_file(co.join("gone.c")).unwrap();
        std::os::unix::fs::symlink("configure", co.join("link")).unwrap();

        let before = listing(&co).unwrap();
        let c = Checkout::open(&co.join("xen")).unwrap();
        assert_eq!(c.path, std::fs::canonicalize(&co).unwrap());
        let tree = dir.path().join("copy");
        let manifest = dir.path().join("manifest");
        assert_eq!(c.sync(&tree, &manifest).unwrap(), 7);
        assert_eq!(std::fs::read_to_string(tree.join("xen/common/domain.c")).unwrap(), "changed");
        assert!(tree.join("new.c").is_file() && !tree.join("built.o").exists() && !tree.join("gone.c").exists());
        assert_eq!(std::fs::read_link(tree.join("link")).unwrap(), PathBuf::from("configure"));
        let id = Checkout::tree_id(&tree, &manifest).unwrap();

        // Unchanged: nothing written, same identity.
        let mtime = |p: &str| tree.join(p).metadata().unwrap().modified().unwrap();
        let old = mtime("xen/Makefile");
        assert_eq!(c.sync(&tree, &manifest).unwrap(), 0);
        assert_eq!(mtime("xen/Makefile"), old);
        assert_eq!(Checkout::tree_id(&tree, &manifest).unwrap(), id);

        // One edit and one deletion: two writes, another identity.
        std::fs::write(co.join("new.c"), "newer").unwrap();
        std::fs::remove_file(co.join("link")).unwrap();
        assert_eq!(c.sync(&tree, &manifest).unwrap(), 2);
        assert!(tree.join("link").symlink_metadata().is_err());
        assert_ne!(Checkout::tree_id(&tree, &manifest).unwrap(), id);

        // The checkout, .git included, is as the test left it.
        let mut after = listing(&co).unwrap();
        after.retain(|(p, _, _)| !p.ends_with("link") && !p.ends_with("new.c"));
        let mut before = before;
        before.retain(|(p, _, _)| !p.ends_with("link") && !p.ends_with("new.c"));
        assert_eq!(before, after);
    }

    #[test]
    fn not_a_checkout() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let err = Checkout::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no xen/Makefile; give the top of a Xen checkout"), "{err}");
    }
}
