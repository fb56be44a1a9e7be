//! Exclusive locks on what a run changes in the shared cache and in the
//! runs folder: a build's work tree, a boot's directory. Two runs on one
//! cache (two terminals, two CI jobs on one runner) then take turns on the
//! same tree instead of resetting it under each other; boots of one run
//! into different directories still go in parallel. The lock is the
//! kernel's (flock), so a killed run never leaves one behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use anyhow::{Context, Result};

/// Held until dropped.
#[derive(Debug)]
pub struct Guard {
    _file: File,
}

/// Locks `path` (created if missing) for this process, waiting, with a
/// message naming `what` and the file, while another run holds it.
pub fn exclusive(path: &Path, what: &str) -> Result<Guard> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!("lock: another run is using this {what}; waiting for {}", path.display());
            file.lock().with_context(|| format!("locking {}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    Ok(Guard { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A second holder waits until the first lets go.
    #[test]
    fn second_holder_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tree.lock");
        let first = exclusive(&path, "tree").unwrap();
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _second = exclusive(&p, "tree").unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the second lock was granted while the first was held");
        drop(first);
        rx.recv_timeout(Duration::from_secs(5)).expect("the second lock after the first was dropped");
        waiter.join().unwrap();
    }
}
