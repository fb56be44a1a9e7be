//! Where things live: the repository's inputs, the content-addressed cache
//! outside the source tree, and the per-run outputs under `target/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository root (the workspace holding `harness/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ has a parent")
        .to_path_buf()
}

pub fn xen_dir() -> PathBuf {
    repo().join("xen")
}

pub fn images_dir() -> PathBuf {
    repo().join("qemu-images")
}

pub fn default_topology() -> PathBuf {
    images_dir().join("topologies/two-node.yaml")
}

pub fn default_scenario() -> PathBuf {
    images_dir().join("scenarios/default.yaml")
}

pub fn snapshots_dir() -> PathBuf {
    repo().join("harness/snapshots")
}

/// Downloads, work trees and build artifacts. `NUMA_HARNESS_CACHE` overrides
/// the default `$XDG_CACHE_HOME/xen-numa-harness` (or `~/.cache/...`).
pub fn cache() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NUMA_HARNESS_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither NUMA_HARNESS_CACHE nor HOME is set")?,
        )
        .join(".cache"),
    };
    Ok(base.join("xen-numa-harness"))
}

/// Console logs and reports of the runs: `target/numa-harness/`.
pub fn output() -> PathBuf {
    repo().join("target/numa-harness")
}

/// A suffix no other writer in this process or another one uses: the
/// process ID and a counter, as boots run on several threads.
fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A name beside `path` for a file that is renamed to `path` once
/// complete, and that [`clear_stale`] removes once its writer is gone.
pub fn temporary(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().context("path has no parent")?;
    let name = path.file_name().context("path has no file name")?.to_string_lossy();
    Ok(dir.join(format!(".{name}.tmp-{}", unique())))
}

/// Writes `contents` to `path` through a temporary file and a rename, so
/// that an interrupted run never leaves a half-written file behind.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = temporary(path)?;
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// A fresh, empty staging directory next to `dest`, to be renamed onto it
/// with [`commit_dir`] once complete.
pub fn staging_dir(dest: &Path) -> Result<PathBuf> {
    let parent = dest.parent().context("path has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{}.partial-{}", dest.file_name().unwrap().to_string_lossy(), unique()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

/// Moves a completed staging directory into place.
pub fn commit_dir(tmp: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(tmp, dest).with_context(|| format!("renaming to {}", dest.display()))
}

/// Removes what killed runs left in `dir`: staging directories and
/// temporary files (see [`write_atomic`] and [`staging_dir`]) whose writer
/// no longer runs. Returns how many went.
pub fn clear_stale(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_writer(&name) else { continue };
        if pid == std::process::id() || crate::process::running(pid) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        gone.with_context(|| format!("removing {}, left by an interrupted run", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

/// The writer's pid in a name made by [`write_atomic`] or [`staging_dir`]:
/// `.<name>.tmp-<pid>-<n>` or `.<name>.partial-<pid>-<n>`.
fn stale_writer(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, suffix) = name.rsplit_once(".tmp-").or_else(|| name.rsplit_once(".partial-"))?;
    let (pid, n) = suffix.split_once('-')?;
    n.parse::<usize>().ok()?;
    pid.parse().ok()
}

/// Every path under `dir` (recursively, without following symlinks) with
/// its size and time of last modification, sorted: equal listings mean
/// nothing under `dir` was written.
pub fn listing(dir: &Path) -> Result<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            let m = p.symlink_metadata().with_context(|| format!("reading {}", p.display()))?;
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.push((p, m.len(), m.modified()?));
        }
    }
    out.sort();
    Ok(out)
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(data))
}

/// Hex SHA-256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accumulates named inputs into one content key.
#[derive(Default)]
pub struct KeyBuilder(Vec<u8>);

impl KeyBuilder {
    pub fn add(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(&(value.len() as u64).to_le_bytes());
        self.0.extend_from_slice(value);
        self
    }

    /// The first 16 hex digits of the SHA-256 of everything added.
    pub fn finish(&self) -> String {
        sha256_hex(&self.0)[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names() {
        assert_eq!(stale_writer(".report.yaml.tmp-4242-3"), Some(4242));
        assert_eq!(stale_writer(".0f3a9c.partial-17-0"), Some(17));
        assert_eq!(stale_writer("report.yaml"), None);
        assert_eq!(stale_writer(".lock"), None);
        assert_eq!(stale_writer(".x.tmp-abc-1"), None);
    }

    /// What a dead writer left goes; a live writer's file and everything
    /// else stay.
    #[test]
    fn clears_only_dead_writers_files() {
        let dir = tempfile::tempdir().unwrap();
        let dead = u32::MAX - 1;
        let live = std::process::id();
        std::fs::create_dir(dir.path().join(format!(".abc.partial-{dead}-0"))).unwrap();
        std::fs::write(dir.path().join(format!(".r.yaml.tmp-{dead}-1")), "").unwrap();
        std::fs::write(dir.path().join(format!(".r.yaml.tmp-{live}-2")), "").unwrap();
        std::fs::write(dir.path().join("r.yaml"), "").unwrap();
        assert_eq!(clear_stale(dir.path()).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [format!(".r.yaml.tmp-{live}-2"), "r.yaml".to_string()]);
    }
}
