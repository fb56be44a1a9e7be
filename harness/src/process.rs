//! Nothing the harness starts outlives it. QEMU is started with the
//! kernel's parent-death signal, so it dies with the thread that started it
//! even if the harness is killed with SIGKILL; SIGINT, SIGTERM and SIGHUP
//! make the harness stop every process below it (make and the compilers
//! too, whatever started them) before it exits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// `expr`, started so that it receives SIGKILL when the thread that
/// started it ends (PR_SET_PDEATHSIG). Boots start QEMU on a thread that
/// lives until QEMU is gone, so this only fires when the harness dies.
pub fn supervised(expr: duct::Expression) -> duct::Expression {
    expr.before_spawn(|cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    })
}

/// On SIGINT, SIGTERM or SIGHUP: stop every descendant (SIGTERM, then
/// SIGKILL to what is left after two seconds) and exit as the signal
/// would have it (128 + its number). Call once, early in `main`.
pub fn stop_descendants_on_signal() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let pids = descendants(std::process::id());
            if !pids.is_empty() {
                crate::say!("\nharness: signal {signal}: stopping {} process(es) it started", pids.len());
            }
            stop(&pids);
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

fn stop(pids: &BTreeSet<u32>) {
    for &pid in pids {
        // SAFETY: kill() with a pid read from /proc; at worst the process is gone.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purpose: it holds nothing but its entry.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_some_and(|(state, _)| state != 'Z'),
        Err(_) => false,
    }
}

/// Every process below `root`, from /proc.
pub fn descendants(root: u32) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((_, ppid)) = parse_stat(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if out.insert(c) {
                todo.push(c);
            }
        }
    }
    out
}

/// State and parent pid from `/proc/<pid>/stat`; the command name in
/// parentheses may itself hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether a process with this pid runs (for stale temporary files).
pub fn running(pid: u32) -> bool {
    alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("1234 (make) S 1200 1234 1200 0 -1"), Some(('S', 1200)));
        assert_eq!(parse_stat("77 (a (b) c) R 5 77 5"), Some(('R', 5)));
        assert_eq!(parse_stat("garbage"), None);
    }

    /// A grandchild is found and stopped.
    #[test]
    fn finds_and_stops_grandchildren() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 60 & wait"]).spawn().unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let mut found = BTreeSet::new();
        while Instant::now() < until && found.len() < 2 {
            found = descendants(child.id());
            found.insert(child.id());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(found.len(), 2, "sh and its sleep: {found:?}");
        stop(&found);
        child.wait().unwrap();
        assert!(found.iter().all(|&p| !alive(p)), "{found:?}");
    }

    /// The parent-death signal reaches QEMU's stand-in when the thread
    /// that started it ends without stopping it.
    #[test]
    fn dies_with_its_starter() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let handle = supervised(duct::cmd!("sleep", "60")).start().unwrap();
            tx.send(*handle.pids().first().unwrap()).unwrap();
            std::mem::forget(handle);
        })
        .join()
        .unwrap();
        let pid = rx.recv().unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "sleep {pid} outlived the thread that started it");
    }
}
