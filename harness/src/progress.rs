//! What the harness tells the person running it, and how it shows what is
//! running. On a terminal (stderr a TTY, `CI` unset), a status block at
//! the bottom lists every build step and boot under way, with what it is
//! doing and for how long, redrawn every second; the harness's messages
//! scroll above it. Elsewhere (CI, a log file) messages are plain lines,
//! and every minute a line says what is still running.
//!
//! Every message goes through [`say`] (the `say!` macro) or [`out`], so
//! that the status block is never torn by a line written beside it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// One thing under way.
struct Running {
    id: u64,
    what: String,
    doing: String,
    since: Instant,
}

#[derive(Default)]
struct Status {
    running: Vec<Running>,
    /// Lines of the status block now on the terminal.
    drawn: usize,
}

static STATUS: Mutex<Status> = Mutex::new(Status {
    running: Vec::new(),
    drawn: 0,
});
static NEXT: AtomicU64 = AtomicU64::new(1);
static TICKER: Once = Once::new();

/// How often a plain run says what is still running.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// Whether the status block is drawn: stderr is a terminal, the run is not
/// in CI, and `NUMA_HARNESS_PROGRESS` is not `plain`.
fn live() -> bool {
    static LIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LIVE.get_or_init(|| {
        !cfg!(test)
            && std::io::stderr().is_terminal()
            && std::env::var_os("CI").is_none()
            && std::env::var("NUMA_HARNESS_PROGRESS").as_deref() != Ok("plain")
    })
}

/// Writes a message line to stderr, above the status block.
pub fn say(line: &str) {
    let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    let mut err = std::io::stderr().lock();
    erase(&mut err, &mut status);
    let _ = writeln!(err, "{line}");
    draw(&mut err, &mut status);
}

/// Writes a line of the run's results to stdout, the status block kept
/// clear of it.
pub fn out(line: &str) {
    let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    let mut err = std::io::stderr().lock();
    erase(&mut err, &mut status);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    draw(&mut err, &mut status);
}

/// `say!("...", args)`: [`say`] with `format!`'s arguments.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::progress::say(&format!($($arg)*)) };
}

/// Something under way, listed in the status block until dropped.
pub struct Activity {
    id: u64,
}

impl Activity {
    /// Starts listing `what` (e.g. `boot master/two-node/default on patched`).
    pub fn start(what: impl Into<String>) -> Activity {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
        status.running.push(Running {
            id,
            what: what.into(),
            doing: String::new(),
            since: Instant::now(),
        });
        drop(status);
        TICKER.call_once(|| {
            std::thread::spawn(tick);
        });
        redraw();
        Activity { id }
    }

    /// What it is doing now (e.g. `dom0 kernel booting`).
    pub fn doing(&self, doing: impl Into<String>) {
        let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = status.running.iter_mut().find(|r| r.id == self.id) {
            r.doing = doing.into();
        }
        drop(status);
        redraw();
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
        status.running.retain(|r| r.id != self.id);
        drop(status);
        redraw();
    }
}

fn redraw() {
    if !live() {
        return;
    }
    let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    let mut err = std::io::stderr().lock();
    erase(&mut err, &mut status);
    draw(&mut err, &mut status);
}

/// Redraws the block every second on a terminal; elsewhere says every
/// [`HEARTBEAT`] what is still running.
fn tick() {
    let mut last_plain = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if live() {
            redraw();
        } else if last_plain.elapsed() >= HEARTBEAT {
            last_plain = Instant::now();
            let status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
            if status.running.is_empty() {
                continue;
            }
            let list: Vec<String> = status
                .running
                .iter()
                .map(|r| line_of(r, Instant::now()))
                .collect();
            drop(status);
            say(&format!("progress: still running: {}", list.join("; ")));
        }
    }
}

fn line_of(r: &Running, now: Instant) -> String {
    let secs = now.duration_since(r.since).as_secs();
    match r.doing.as_str() {
        "" => format!("{} ({secs} s)", r.what),
        doing => format!("{}: {doing} ({secs} s)", r.what),
    }
}

/// The status block's lines: one per activity, oldest first, cut to the
/// terminal's width.
fn block(running: &[Running], now: Instant, width: usize) -> Vec<String> {
    running
        .iter()
        .map(|r| {
            let line = format!("  ~ {}", line_of(r, now));
            line.chars().take(width.saturating_sub(1)).collect()
        })
        .collect()
}

fn erase(err: &mut impl Write, status: &mut Status) {
    if status.drawn > 0 {
        // Up one line and clear it, once per line drawn.
        let _ = write!(err, "{}", "\x1b[1A\x1b[2K".repeat(status.drawn));
        status.drawn = 0;
    }
}

fn draw(err: &mut impl Write, status: &mut Status) {
    if !live() || status.running.is_empty() {
        let _ = err.flush();
        return;
    }
    let lines = block(&status.running, Instant::now(), terminal_width());
    for line in &lines {
        let _ = writeln!(err, "{line}");
    }
    status.drawn = lines.len();
    let _ = err.flush();
}

fn terminal_width() -> usize {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        size.ws_col as usize
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lines_say_what_and_for_how_long() {
        let now = Instant::now();
        let running = [
            Running {
                id: 1,
                what: "build master/patched".into(),
                doing: "tools".into(),
                since: now - Duration::from_secs(75),
            },
            Running {
                id: 2,
                what: "boot master/two-node/default on baseline".into(),
                doing: String::new(),
                since: now - Duration::from_secs(3),
            },
        ];
        assert_eq!(
            block(&running, now, 200),
            [
                "  ~ build master/patched: tools (75 s)",
                "  ~ boot master/two-node/default on baseline (3 s)"
            ]
        );
        assert_eq!(
            block(&running, now, 20),
            ["  ~ build master/pa", "  ~ boot master/two"]
        );
    }
}
