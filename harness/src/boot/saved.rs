//! Saved hosts in the cache: `states/<key>.zst`, the stopped machine of a
//! host booted until dom0 waited for its scenario, with the console of
//! that boot (`<key>.console.log`) and its timeline beside it. The key is
//! the host's whole command line (its files named by their content),
//! QEMU's version and the recipe below, so a state is made once for every
//! build, topology and Xen command line, and used by every scenario that
//! runs on that host.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::qemu::{self, Host};
use super::watch::BootError;
use super::{save, timeline};
use crate::config::Timeouts;
use crate::{lock, paths};

/// How a host is booted and saved, as a versioned description; part of
/// every state's key. Bump it with any change to how a state is made.
pub const RECIPE: &str = "saved host 1: booted until dom0's init waits for its scenario on ttyS1, \
    stopped (QMP stop) and migrated to `exec:zstd -1`";

/// A host's saved state and what its boot printed.
#[derive(Debug, Clone)]
pub struct Saved {
    pub key: String,
    /// The zstd-compressed state, as QEMU's `-incoming` takes it.
    pub state: PathBuf,
    pub console: PathBuf,
    pub timeline: PathBuf,
}

/// A host's key: its command line, QEMU's version and [`RECIPE`].
pub fn key(host: &Host) -> anyhow::Result<String> {
    let mut k = paths::KeyBuilder::default();
    k.add("qemu arguments", host.args().join("\0"))
        .add("qemu", qemu::version()?)
        .add("recipe", RECIPE);
    Ok(k.finish())
}

fn states() -> anyhow::Result<PathBuf> {
    Ok(paths::cache()?.join("states"))
}

impl Saved {
    fn at(key: &str) -> anyhow::Result<Saved> {
        let dir = states()?;
        Ok(Saved {
            key: key.to_string(),
            state: dir.join(format!("{key}.zst")),
            console: dir.join(format!("{key}.console.log")),
            timeline: dir.join(format!("{key}.{}", timeline::FILE)),
        })
    }
}

/// Checks a state file's compressed frames end to end (`zstd -t`): a state
/// cut short is never kept.
fn check(state: &Path) -> anyhow::Result<()> {
    let out = duct::cmd!("zstd", "-tq", state)
        .stderr_capture()
        .unchecked()
        .run()
        .context("running zstd -t")?;
    anyhow::ensure!(
        out.status.success(),
        "the saved state {} is damaged: {}",
        state.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Removes a saved host from the cache (one QEMU could not load), so that
/// the next use boots and saves it again.
pub fn forget(saved: &Saved) {
    crate::say!(
        "boot: removing the saved host {} from the cache",
        saved.state.display()
    );
    for f in [&saved.state, &saved.console, &saved.timeline] {
        let _ = std::fs::remove_file(f);
    }
}

/// What [`get`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// The cache had the state.
    Cached,
    /// It was booted and saved now.
    Booted,
}

/// The saved state of `host`, booted and saved first if the cache has
/// none (`dir` then gets the boot's console log, QEMU's stderr and the
/// timeline; a first boot whose dom0 stalled is kept there as
/// `console.stalled.log`); `what` says what it is for, in the run's
/// status. Another thread or run making the same state
/// meanwhile is waited for.
pub fn get(
    host: &Host,
    what: &str,
    dir: &Path,
    timeouts: &Timeouts,
) -> Result<(Saved, Made), BootError> {
    let key = key(host).map_err(BootError::Setup)?;
    let saved = Saved::at(&key).map_err(BootError::Setup)?;
    if saved.state.exists() {
        return Ok((saved, Made::Cached));
    }
    let lock_file = saved.state.with_extension("lock");
    let _lock = lock::exclusive(&lock_file, "saved host").map_err(BootError::Setup)?;
    if saved.state.exists() {
        return Ok((saved, Made::Cached));
    }
    let tmp = paths::temporary(&saved.state).map_err(BootError::Setup)?;
    let what = format!("host {key} ({what})");
    let outcome = match save(host, &what, dir, &tmp, timeouts) {
        Err(e) if e.is_stall() => {
            let (log, stalled) = (dir.join("console.log"), dir.join("console.stalled.log"));
            let _ = std::fs::rename(&log, &stalled);
            crate::say!("boot: dom0 stalled while its host booted; booting it once more (first console: {})", stalled.display());
            save(host, &what, dir, &tmp, timeouts)
        }
        other => other,
    };
    if let Err(e) = outcome.and_then(|()| check(&tmp).map_err(BootError::Setup)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let keep = || -> anyhow::Result<()> {
        let console = std::fs::read(dir.join("console.log"))
            .with_context(|| format!("reading {}", dir.join("console.log").display()))?;
        paths::write_atomic(&saved.console, &console)?;
        if let Ok(t) = std::fs::read(dir.join(timeline::FILE)) {
            paths::write_atomic(&saved.timeline, &t)?;
        }
        // Last: the state's name says the entry is complete.
        std::fs::rename(&tmp, &saved.state)
            .with_context(|| format!("renaming {} to {}", tmp.display(), saved.state.display()))
    };
    keep().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        BootError::Setup(e)
    })?;
    Ok((saved, Made::Booted))
}
