//! KVM or TCG: KVM only where a guest really runs Xen under it, TCG
//! otherwise, with the reason either way.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::qemu::QEMU;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        })
    }
}

/// KVM where it works, TCG otherwise, with the reason. `NUMA_HARNESS_ACCEL`
/// (`kvm` or `tcg`) overrides the probe. KVM counts as working only once
/// `xen` (the hypervisor the boots will run) printed its banner under it:
/// a /dev/kvm can open, and start a guest, and still stop Xen in its first
/// second (seen: a KVM emulation error on a host without VMX).
pub fn detect(xen: &Path) -> Result<(Accel, String)> {
    match std::env::var("NUMA_HARNESS_ACCEL").as_deref() {
        Ok("kvm") => return Ok((Accel::Kvm, "NUMA_HARNESS_ACCEL=kvm".into())),
        Ok("tcg") => return Ok((Accel::Tcg, "NUMA_HARNESS_ACCEL=tcg".into())),
        Ok(other) => anyhow::bail!("NUMA_HARNESS_ACCEL={other:?}: expected `kvm` or `tcg`"),
        Err(_) => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok((Accel::Tcg, "/dev/kvm cannot be opened".into()));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let nested = |module: &str| {
        std::fs::read_to_string(format!("/sys/module/{module}/parameters/nested")).ok()
    };
    if let Err(why) = nested_virtualisation(
        &cpuinfo,
        nested("kvm_intel").as_deref(),
        nested("kvm_amd").as_deref(),
    ) {
        return Ok((Accel::Tcg, why));
    }
    match xen_banner_under_kvm(xen, Duration::from_secs(30))? {
        Ok(()) => Ok((Accel::Kvm, "Xen printed its banner under KVM here".into())),
        Err(why) => Ok((
            Accel::Tcg,
            format!("Xen does not start under KVM here: {why}"),
        )),
    }
}

/// Boots `xen` alone under KVM (no dom0: it panics after its banner, which
/// is all this needs) and waits up to `patience` for its banner on the
/// serial line. `Err` says what happened instead.
fn xen_banner_under_kvm(xen: &Path, patience: Duration) -> Result<Result<(), String>> {
    let xen = xen.display().to_string();
    let expr = duct::cmd!(
        QEMU,
        "-accel",
        "kvm",
        "-machine",
        "q35",
        "-cpu",
        "host",
        "-m",
        "512M",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-kernel",
        xen,
        "-append",
        "console=com1 noreboot"
    )
    .stdin_null()
    .stderr_to_stdout()
    .unchecked();
    let handle = crate::process::supervised(expr)
        .reader()
        .with_context(|| format!("cannot run {QEMU}"))?;
    let until = Instant::now() + patience;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::sync::Arc::new(handle);
    let lines = std::sync::Arc::clone(&reader);
    std::thread::spawn(move || {
        for line in BufReader::new(&*lines).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut said = Vec::new();
    let outcome = loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("(XEN) Xen version ") => break Ok(()),
            // QEMU stops the guest and waits: nothing more will come.
            Ok(line) if line.contains("KVM internal error") => {
                break Err(format!("QEMU said: {}", line.trim()))
            }
            Ok(line) => {
                if said.len() < 5 && !line.trim().is_empty() {
                    said.push(line.trim().to_string());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!(
                    "no banner within {} s{}",
                    patience.as_secs(),
                    quoted(&said)
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(format!("QEMU exited before Xen's banner{}", quoted(&said)))
            }
        }
    };
    let _ = reader.kill();
    Ok(outcome)
}

fn quoted(lines: &[String]) -> String {
    match lines.first() {
        Some(first) => format!(" (QEMU said: {first})"),
        None => String::new(),
    }
}

/// Whether a KVM guest here gets the hardware virtualisation Xen needs to
/// run PVH and HVM domains: the host CPU's VMX or SVM (`/proc/cpuinfo`'s
/// flags), passed on to guests (`kvm_intel`'s or `kvm_amd`'s `nested`
/// parameter, its contents given). A /dev/kvm without them (seen: one of
/// a sandbox's own, with neither flag and no kvm_intel) starts a guest
/// and then cannot run Xen, which stops on a KVM emulation error.
pub fn nested_virtualisation(
    cpuinfo: &str,
    intel_nested: Option<&str>,
    amd_nested: Option<&str>,
) -> Result<(), String> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("flags")
                .and_then(|r| r.trim_start().strip_prefix(':'))
        })
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let (flag, module, nested) = if flags.contains(&"vmx") {
        ("VMX", "kvm_intel", intel_nested)
    } else if flags.contains(&"svm") {
        ("SVM", "kvm_amd", amd_nested)
    } else {
        return Err("KVM here has no VMX or SVM to give Xen (neither is in /proc/cpuinfo's flags), so Xen could run no PVH domain".into());
    };
    match nested.map(str::trim) {
        Some("Y" | "y" | "1") => Ok(()),
        Some(other) => Err(format!(
            "{module} does not pass {flag} on to guests (/sys/module/{module}/parameters/nested is {other:?}), so Xen could run no PVH domain"
        )),
        None => Err(format!("{module} is not loaded, so KVM here cannot give Xen {flag}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's /proc/cpuinfo (its first CPU), read with KVM's
    /// `kvm_pvm` module loaded and neither kvm_intel nor kvm_amd: a
    /// /dev/kvm that starts a guest but gives it no VMX.
    const PVM_CPUINFO: &str = include_str!("../../tests/fixtures/kvm-pvm-host.cpuinfo");

    /// The probe itself, on this machine's KVM, with a Xen from the cache:
    /// `cargo test -p xtask probe_boots_xen -- --ignored --nocapture` (it
    /// prints what it found; on the project's machines, whose KVM gives
    /// guests no VMX, Xen does not get to its banner).
    #[test]
    #[ignore]
    fn probe_boots_xen() {
        let artifacts = crate::paths::cache().unwrap().join("artifacts");
        let xen = std::fs::read_dir(&artifacts)
            .unwrap()
            .map(|e| e.unwrap().path().join("xen"))
            .find(|x| x.exists())
            .expect("a build in the cache");
        let got = xen_banner_under_kvm(&xen, Duration::from_secs(30)).unwrap();
        eprintln!("{}: {got:?}", xen.display());
    }

    #[test]
    fn kvm_without_vmx_or_svm_is_not_used() {
        let err = nested_virtualisation(PVM_CPUINFO, None, None).unwrap_err();
        assert!(err.starts_with("KVM here has no VMX or SVM"), "{err}");
    }

    #[test]
    fn kvm_is_used_only_where_it_passes_vmx_or_svm_on() {
        // The same CPU as if it had VMX (or SVM), by its flags.
        let with = |flag: &str| {
            PVM_CPUINFO.replacen("flags\t\t: fpu", &format!("flags\t\t: fpu {flag}"), 1)
        };
        let vmx = with("vmx");
        assert_eq!(nested_virtualisation(&vmx, Some("Y\n"), None), Ok(()));
        assert_eq!(
            nested_virtualisation(&with("svm"), None, Some("1\n")),
            Ok(())
        );
        let err = nested_virtualisation(&vmx, Some("N\n"), None).unwrap_err();
        assert!(
            err.contains("/sys/module/kvm_intel/parameters/nested is \"N\""),
            "{err}"
        );
        let err = nested_virtualisation(&vmx, None, Some("1\n")).unwrap_err();
        assert_eq!(
            err,
            "kvm_intel is not loaded, so KVM here cannot give Xen VMX"
        );
    }
}
