//! QEMU's command line: the host a boot runs (the topology's NUMA layout,
//! Xen as multiboot kernel, dom0's kernel and image as its modules) and
//! what one run adds to it (the console, the line the scenario arrives on,
//! the QMP socket, a saved state to load).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::accel::Accel;
use crate::paths;

pub const QEMU: &str = "qemu-system-x86_64";

/// `qemu-images/machine.yaml`: what every boot shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub xen_cmdline: Vec<String>,
    pub dom0_cmdline: Vec<String>,
}

impl Machine {
    pub fn load() -> Result<Machine> {
        crate::config::load_yaml(&paths::images_dir().join("machine.yaml"))
    }
}

/// QEMU's instruction counting for boots that time commands in the guest,
/// under TCG: every instruction advances the virtual clock by 2 ns
/// (`shift=1`) and idle time is skipped (`sleep=off`), so a time read in
/// the guest is the work it did, whatever the host's speed and load.
/// TCG's multi-threaded mode cannot count, so such a boot runs its vCPUs
/// on one host thread. Measured: one boot's 20 `xl create -p` rounds
/// within 2% of each other (102.4-104.0 ms), against 593-999 ms in a
/// boot on the host's clock.
pub const INSTRUCTION_CLOCK: &str = "shift=1,sleep=off";

/// A booted host up to the moment dom0 waits for its scenario: everything
/// on QEMU's command line that decides what the machine is. Its files are
/// named by their content (the build's artifacts, the cached dom0 image
/// and kernel), so two hosts with the same command line are the same
/// machine.
#[derive(Debug, Clone)]
pub struct Host {
    /// `-m`, `-smp`, `-numa` and memory backends: the topology.
    pub topology_args: Vec<String>,
    pub xen: PathBuf,
    pub xen_cmdline: Vec<String>,
    pub kernel: PathBuf,
    pub dom0_cmdline: Vec<String>,
    /// dom0's initramfs: the build's base image.
    pub image: PathBuf,
    /// The FLASK policy, a boot module when Xen boots with FLASK.
    pub xsm_policy: Option<PathBuf>,
    pub accel: Accel,
    /// Under TCG, the guest's clock counts instructions
    /// ([`INSTRUCTION_CLOCK`]); no effect under KVM.
    pub counted: bool,
}

/// Where the console goes.
#[derive(Debug, Clone)]
pub enum Console {
    /// QEMU's stdout, read and logged by the harness.
    Watched,
    /// The terminal (with QEMU's monitor on Ctrl-A C), logged to a file.
    Terminal { log: PathBuf },
}

/// What one run of QEMU adds to its host.
#[derive(Debug, Clone)]
pub struct Run {
    pub console: Console,
    /// The pair of FIFOs `<path>.in` and `<path>.out` behind the second
    /// serial port (dom0's ttyS1), on which the scenario arrives; none
    /// for a host that is booted to be saved.
    pub scenario_line: Option<PathBuf>,
    /// QMP's Unix socket.
    pub qmp: Option<PathBuf>,
    /// A saved state (zstd-compressed) to load instead of booting.
    pub incoming: Option<PathBuf>,
}

impl Host {
    /// The host's part of the command line: every argument that decides
    /// what the machine is, none that depends on the run.
    pub fn args(&self) -> Vec<String> {
        let (accel, cpu) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            // SVM lets Xen build PVH and HVM guests; RDRAND spares
            // xenstored minutes of waiting for the entropy pool.
            Accel::Tcg if self.counted => ("tcg", "qemu64,+svm,+npt,+rdrand"),
            Accel::Tcg => ("tcg,thread=multi", "qemu64,+svm,+npt,+rdrand"),
        };
        let mut args = strings(&["-machine", "q35", "-accel", accel, "-cpu", cpu]);
        if self.counted && self.accel == Accel::Tcg {
            args.extend(strings(&["-icount", INSTRUCTION_CLOCK]));
        }
        args.extend(self.topology_args.iter().cloned());
        args.extend(strings(&["-nodefaults", "-display", "none", "-no-reboot"]));
        // dom0's kernel comes first; Xen takes the FLASK policy out of the
        // other modules before it looks for dom0's initrd among the rest.
        let mut modules = vec![
            module(&self.kernel, &self.dom0_cmdline.join(" ")),
            module(&self.image, ""),
        ];
        if let Some(policy) = &self.xsm_policy {
            modules.push(module(policy, ""));
        }
        args.extend([
            "-kernel".into(),
            self.xen.display().to_string(),
            "-append".into(),
            self.xen_cmdline.join(" "),
            "-initrd".into(),
            modules.join(","),
        ]);
        args
    }

    /// The whole command line of one run of this host (program first).
    pub fn command(&self, run: &Run) -> Vec<String> {
        let mut cmd = vec![QEMU.to_string()];
        cmd.extend(self.args());
        let chardev = match &run.console {
            Console::Terminal { log } => format!(
                "stdio,id=con,mux=on,signal=off,logfile={}",
                option_path(log)
            ),
            Console::Watched => "stdio,id=con,signal=off".to_string(),
        };
        cmd.extend(strings(&["-chardev", &chardev, "-serial", "chardev:con"]));
        // The second serial port is dom0's ttyS1 (Xen keeps only com1).
        let line = match &run.scenario_line {
            Some(path) => format!("pipe,id=scenario,path={}", option_path(path)),
            None => "null,id=scenario".to_string(),
        };
        cmd.extend(strings(&["-chardev", &line, "-serial", "chardev:scenario"]));
        match &run.console {
            Console::Terminal { .. } => cmd.extend(strings(&["-mon", "chardev=con,mode=readline"])),
            Console::Watched => cmd.extend(strings(&["-monitor", "none"])),
        }
        if let Some(socket) = &run.qmp {
            cmd.extend([
                "-qmp".into(),
                format!("unix:{},server=on,wait=off", option_path(socket)),
            ]);
        }
        if let Some(state) = &run.incoming {
            cmd.extend([
                "-incoming".into(),
                format!(
                    "exec:zstd -dcq {}",
                    shell_words(&[state.display().to_string()])
                ),
            ]);
        }
        cmd
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A path inside one of QEMU's `key=value,...` options: a comma is
/// written twice.
fn option_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A multiboot module with its arguments. Modules are separated by commas:
/// a comma inside one is written twice.
fn module(path: &Path, args: &str) -> String {
    let module = if args.is_empty() {
        path.display().to_string()
    } else {
        format!("{} {args}", path.display())
    };
    module.replace(',', ",,")
}

/// `qemu-system-x86_64 --version`, asked once.
pub fn version() -> Result<&'static str> {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(v) = VERSION.get() {
        return Ok(v);
    }
    let v = duct::cmd!(QEMU, "--version")
        .read()
        .with_context(|| format!("cannot run {QEMU} --version"))?;
    Ok(VERSION.get_or_init(|| v))
}

/// Arguments as one line a POSIX shell splits back into them.
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            topology_args: strings(&["-m", "2048M", "-smp", "4,sockets=2,cores=2,threads=1"]),
            xen: "/c/artifacts/k/xen".into(),
            xen_cmdline: strings(&["console=com1", "dom0_nodes=1"]),
            kernel: "/c/images/vmlinux-ab".into(),
            dom0_cmdline: strings(&["console=hvc0", "quiet"]),
            image: "/c/images/cd.cpio".into(),
            xsm_policy: None,
            accel: Accel::Tcg,
            counted: false,
        }
    }

    /// The host boot (saved once dom0 waits), a run restored from its
    /// state, and an interactive boot with FLASK, each as QEMU gets it.
    #[test]
    fn command_lines() {
        let h = host();
        let save = Run {
            console: Console::Watched,
            scenario_line: None,
            qmp: Some("/tmp/q/qmp".into()),
            incoming: None,
        };
        assert_eq!(
            shell_words(&h.command(&save)),
            "qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu qemu64,+svm,+npt,+rdrand -m 2048M \
             -smp 4,sockets=2,cores=2,threads=1 -nodefaults -display none -no-reboot -kernel /c/artifacts/k/xen \
             -append 'console=com1 dom0_nodes=1' -initrd '/c/images/vmlinux-ab console=hvc0 quiet,/c/images/cd.cpio' \
             -chardev stdio,id=con,signal=off -serial chardev:con -chardev null,id=scenario -serial chardev:scenario \
             -monitor none -qmp unix:/tmp/q/qmp,server=on,wait=off"
        );
        let restore = Run {
            console: Console::Watched,
            scenario_line: Some("/r/scenario".into()),
            qmp: Some("/tmp/q/qmp".into()),
            incoming: Some("/c/states/k.zst".into()),
        };
        let line = shell_words(&h.command(&restore));
        assert!(line.ends_with(
            "-chardev pipe,id=scenario,path=/r/scenario -serial chardev:scenario -monitor none \
             -qmp unix:/tmp/q/qmp,server=on,wait=off -incoming 'exec:zstd -dcq /c/states/k.zst'"
        ), "{line}");
        let flask = Host {
            xsm_policy: Some("/c/artifacts/k/xenpolicy".into()),
            counted: true,
            ..host()
        };
        let interactive = Run {
            console: Console::Terminal {
                log: "/r/console.log".into(),
            },
            scenario_line: Some("/r/s".into()),
            qmp: None,
            incoming: None,
        };
        let line = shell_words(&flask.command(&interactive));
        assert!(
            line.contains(
                " -accel tcg -cpu qemu64,+svm,+npt,+rdrand -icount shift=1,sleep=off -m "
            ),
            "{line}"
        );
        assert!(line.contains("-initrd '/c/images/vmlinux-ab console=hvc0 quiet,/c/images/cd.cpio,/c/artifacts/k/xenpolicy'"), "{line}");
        assert!(line.ends_with("-chardev stdio,id=con,mux=on,signal=off,logfile=/r/console.log -serial chardev:con \
             -chardev pipe,id=scenario,path=/r/s -serial chardev:scenario -mon chardev=con,mode=readline"), "{line}");
        assert_eq!(
            h.args(),
            h.args(),
            "the host's part is the same whatever the run"
        );
    }

    #[test]
    fn commas_in_module_paths_are_doubled() {
        assert_eq!(module(Path::new("/a,b/k"), "x=1,2"), "/a,,b/k x=1,,2");
    }

    #[test]
    fn shell_words_round_trip() {
        let args: Vec<String> = ["qemu", "-append", "a b", "it's", "", "x=1,y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = shell_words(&args);
        assert_eq!(line, "qemu -append 'a b' 'it'\\''s' '' x=1,y");
        let back = duct::cmd!(
            "sh",
            "-c",
            format!("for a in {line}; do printf '%s\\n' \"$a\"; done")
        )
        .read()
        .unwrap();
        assert_eq!(
            back.lines().collect::<Vec<_>>(),
            ["qemu", "-append", "a b", "it's", "", "x=1,y"]
        );
    }
}
