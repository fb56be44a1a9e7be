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
    lock(path, what, false)
}

/// [`exclusive`], and the processes started while it is held hold it too
/// (they inherit the locked file): a make still running after the harness
/// was killed with SIGKILL keeps the next run off its tree until it ends.
pub fn exclusive_inherited(path: &Path, what: &str) -> Result<Guard> {
    lock(path, what, true)
}

fn lock(path: &Path, what: &str, inherited: bool) -> Result<Guard> {
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
            crate::say!("lock: another run is using this {what}; waiting for {}", path.display());
            file.lock().with_context(|| format!("locking {}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    if inherited {
        use std::os::fd::AsRawFd;
        // SAFETY: F_SETFD on a descriptor this function owns.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("letting children hold {}", path.display()));
        }
    }
    Ok(Guard { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process started under an inherited lock holds it after the
    /// guard is gone.
    #[test]
    fn children_hold_an_inherited_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree.lock");
        let guard = exclusive_inherited(&path, "tree").unwrap();
        let mut child = std::process::Command::new("sleep").arg("1").spawn().unwrap();
        drop(guard);
        let probe = OpenOptions::new().write(true).open(&path).unwrap();
        assert!(matches!(probe.try_lock(), Err(TryLockError::WouldBlock)), "the child should still hold the lock");
        child.wait().unwrap();
        probe.try_lock().expect("free once the child is gone");
    }
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
