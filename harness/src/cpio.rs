//! A writer for the "newc" cpio format that Linux unpacks as an initramfs.
//! Entries are written sorted, owned by root and dated 0, so the same inputs
//! give the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { mode: u32, data: Data },
    Symlink(String),
}

#[derive(Debug, Clone)]
enum Data {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// An archive being assembled: paths are relative, without a leading `/`.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/').trim_end_matches('/').to_string()
}

impl Archive {
    pub fn dir(&mut self, path: &str) {
        let path = clean(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.entry(path).or_insert(Entry::Dir);
    }

    fn parent_of(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, source: &Path) {
        let path = clean(path);
        self.parent_of(&path);
        self.entries.insert(path, Entry::File { mode, data: Data::Path(source.to_path_buf()) });
    }

    pub fn bytes(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        let path = clean(path);
        self.parent_of(&path);
        self.entries.insert(path, Entry::File { mode, data: Data::Bytes(data.into()) });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = clean(path);
        self.parent_of(&path);
        self.entries.insert(path, Entry::Symlink(target.to_string()));
    }

    /// Adds the tree under `root` at `prefix`, keeping symlinks as symlinks;
    /// `skip` is asked with each path relative to `root`.
    pub fn tree(&mut self, root: &Path, prefix: &str, skip: &dyn Fn(&str) -> bool) -> Result<()> {
        fn walk(a: &mut Archive, root: &Path, dir: &Path, prefix: &str, skip: &dyn Fn(&str) -> bool) -> Result<()> {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if skip(&rel) {
                    continue;
                }
                let dest = format!("{prefix}/{rel}");
                let meta = std::fs::symlink_metadata(&path)?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path)?;
                    a.symlink(&dest, &target.to_string_lossy());
                } else if meta.is_dir() {
                    a.dir(&dest);
                    walk(a, root, &path, prefix, skip)?;
                } else {
                    use std::os::unix::fs::PermissionsExt;
                    a.file(&dest, meta.permissions().mode() & 0o7777, &path);
                }
            }
            Ok(())
        }
        walk(self, root, root, prefix.trim_end_matches('/'), skip)
    }

    /// Paths of regular files, with the file they come from (for inspecting
    /// what the archive will hold, e.g. to find the ELF files in it).
    pub fn files_from_disk(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.entries.iter().filter_map(|(p, e)| match e {
            Entry::File { data: Data::Path(src), .. } => Some((p.as_str(), src.as_path())),
            _ => None,
        })
    }

    pub fn write(&self, out: &mut impl Write) -> Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data): (u32, std::borrow::Cow<[u8]>) = match entry {
                Entry::Dir => (0o040755, (&[][..]).into()),
                Entry::Symlink(target) => (0o120777, target.as_bytes().into()),
                Entry::File { mode, data: Data::Bytes(b) } => (0o100000 | mode, b.as_slice().into()),
                Entry::File { mode, data: Data::Path(p) } => (
                    0o100000 | mode,
                    std::fs::read(p).with_context(|| format!("reading {}", p.display()))?.into(),
                ),
            };
            header(out, ino, mode, data.len(), path)?;
            out.write_all(&data)?;
            pad(out, data.len())?;
        }
        header(out, 0, 0, 0, "TRAILER!!!")?;
        Ok(())
    }
}

fn header(out: &mut impl Write, ino: u32, mode: u32, size: usize, name: &str) -> io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    write!(
        out,
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    )?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + name.len() + 1)
}

fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GNU cpio (the host's, installed by `cargo xtask setup`) lists and
    /// extracts what the writer wrote.
    #[test]
    fn gnu_cpio_reads_it_back() {
        let mut a = Archive::default();
        a.bytes("etc/motd", 0o644, "hello\n");
        a.bytes("/bin/run", 0o755, "#!/bin/sh\n");
        a.symlink("bin/sh", "busybox");
        let mut out = Vec::new();
        a.write(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let listing = duct::cmd!("cpio", "-idv", "--quiet")
            .dir(dir.path())
            .stdin_bytes(out)
            .stderr_to_stdout()
            .read()
            .expect("GNU cpio is needed for this test: run `cargo xtask setup`");
        assert_eq!(listing.lines().collect::<Vec<_>>(), ["bin", "bin/run", "bin/sh", "etc", "etc/motd"]);
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/motd")).unwrap(), "hello\n");
        assert_eq!(std::fs::read_link(dir.path().join("bin/sh")).unwrap(), Path::new("busybox"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bin/run")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
