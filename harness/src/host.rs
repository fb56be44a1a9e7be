//! Host set-up: every host tool and Debian package the later stages need.
//! Missing packages are installed with apt when running as root; otherwise
//! the one command that would install them is printed.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// Debian packages, with the stage that needs them.
const PACKAGES: &[(&str, &[&str])] = &[
    (
        "build Xen (hypervisor and tools)",
        &[
            "build-essential",
            "bison",
            "flex",
            "python3-dev",
            "libyajl-dev",
            "uuid-dev",
            "zlib1g-dev",
            "libzstd-dev",
            "liblzma-dev",
            "libncurses-dev",
            "libaio-dev",
            "pkg-config",
            "acpica-tools",
            "libext2fs-dev",
            "libglib2.0-dev",
            "libpixman-1-dev",
        ],
    ),
    ("fetch and patch", &["git", "xz-utils", "dpkg"]),
    ("compile each file once for every tree", &["ccache"]),
    ("check the initramfs writer (unit tests)", &["cpio"]),
    (
        "check the series (arm64 hypervisor, OCaml bindings)",
        &["gcc-aarch64-linux-gnu", "ocaml-nox", "ocaml-findlib"],
    ),
    ("build the FLASK policy", &["checkpolicy", "m4"]),
    ("boot", &["qemu-system-x86"]),
];

/// Packages the harness needs that go into no build: their versions are
/// not part of any build's key (see `build::toolchain`).
const OTHER_PACKAGES: &[(&str, &[&str])] = &[
    ("lint the CI files (a Python virtual environment)", &["python3-venv"]),
    ("save and restore booted hosts (compressed)", &["zstd"]),
];

/// The packages that go into builds (headers, libraries, compilers): the
/// build key holds their versions.
pub fn packages() -> impl Iterator<Item = &'static str> {
    PACKAGES.iter().flat_map(|(_, pkgs)| pkgs.iter().copied())
}

fn every_package() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    PACKAGES.iter().chain(OTHER_PACKAGES).copied()
}

fn installed(sh: &Shell, package: &str) -> bool {
    let format = "-f=${Status}";
    cmd!(sh, "dpkg-query -W {format} {package}")
        .quiet()
        .ignore_stderr()
        .read()
        .map(|status| status.trim() == "install ok installed")
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
}

/// Makes sure every package is present; installs the missing ones as root.
pub fn ensure(sh: &Shell) -> Result<()> {
    check(sh, true)
}

/// Checks that every package is present, installing nothing: for commands
/// that only read, e.g. `boot --print-command`. Missing packages are an
/// error with the command that installs them.
pub fn verify(sh: &Shell) -> Result<()> {
    check(sh, false)
}

fn check(sh: &Shell, install: bool) -> Result<()> {
    if cmd!(sh, "dpkg-query --version").quiet().ignore_stdout().run().is_err() {
        bail!("this harness needs a Debian (12, bookworm) host: dpkg-query is not available");
    }
    let missing: Vec<&str> = every_package().flat_map(|(_, p)| p.iter().copied()).filter(|p| !installed(sh, p)).collect();
    if missing.is_empty() {
        return if install { ccache_links(sh) } else { Ok(()) };
    }
    for (stage, pkgs) in every_package() {
        let here: Vec<&str> = pkgs.iter().copied().filter(|p| missing.contains(p)).collect();
        if !here.is_empty() {
            crate::say!("setup: missing to {stage}: {}", here.join(" "));
        }
    }
    if !install || !is_root() {
        bail!(
            "missing Debian packages; install them with:\n    {}apt-get update && {}apt-get install -y --no-install-recommends {}\n(or run `cargo xtask setup` as root)",
            if is_root() { "" } else { "sudo " },
            if is_root() { "" } else { "sudo " },
            missing.join(" ")
        );
    }
    crate::say!("setup: installing {} package(s) with apt-get", missing.len());
    apt_update(sh)?;
    let to_install = missing.clone();
    cmd!(sh, "apt-get install -y --no-install-recommends {to_install...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(sh, p)).collect();
    if !still.is_empty() {
        bail!("apt-get did not install: {}", still.join(" "));
    }
    ccache_links(sh)
}

/// ccache's compiler links (/usr/lib/ccache) cover the compilers installed
/// when it was; the arm64 cross compiler may have come later.
fn ccache_links(sh: &Shell) -> Result<()> {
    if std::path::Path::new("/usr/lib/ccache/aarch64-linux-gnu-gcc").exists() {
        return Ok(());
    }
    if !is_root() {
        bail!("/usr/lib/ccache has no aarch64-linux-gnu-gcc link: run `sudo update-ccache-symlinks`");
    }
    cmd!(sh, "update-ccache-symlinks").quiet().run()?;
    Ok(())
}

pub fn apt_update(sh: &Shell) -> Result<()> {
    cmd!(sh, "apt-get update -q")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .map_err(|e| anyhow::anyhow!("apt-get update failed: {e}\n(check the machine's apt sources)"))
}

/// Debian's own Python 3: the one on PATH may be a build without Debian's
/// modules, which Xen's configure and build scripts need.
pub const PYTHON: &str = "/usr/bin/python3";
