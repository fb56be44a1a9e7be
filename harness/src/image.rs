//! Image stage: dom0's initramfs. The base image holds busybox, the staged
//! Xen tools and exactly the shared libraries they load, the kernel's Xen
//! modules, the guests' kernel (see `guest_kernel`) and
//! `qemu-images/dom0/init`. Each boot appends a small archive with its
//! scenario (Linux unpacks concatenated archives).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::build::Artifacts;
use crate::cpio::Archive;
use crate::fetch::{Dom0Packages, UnpackedDeb};
use crate::patch::Flavor;
use crate::paths;
use crate::scenario::Scenario;

/// The kernel modules dom0 loads, beyond what Debian builds in.
const MODULES: &[&str] = &["xen-evtchn", "xen-privcmd", "xenfs", "xen-gntdev", "xen-gntalloc"];

/// Parts of the staged tools no one runs in the image.
fn skip_tool(rel: &str) -> bool {
    rel.starts_with("usr/include")
        || rel.starts_with("usr/share")
        || rel.starts_with("usr/lib/python")
        || rel.starts_with("usr/lib/pkgconfig")
        || rel.starts_with("etc/init.d")
        || rel.starts_with("etc/bash_completion.d")
        || rel.ends_with(".a")
        // The OCaml bindings (findlib's directory) are for building
        // programs against, and dom0 runs the C xenstored, not oxenstored.
        || rel.starts_with("usr/local/lib/ocaml")
        || rel.starts_with("usr/lib/ocaml")
        || rel == "usr/sbin/oxenstored"
        || rel == "etc/xen/oxenstored.conf"
}

/// Debian's compressed kernel image (bzImage).
fn bzimage(kernel: &UnpackedDeb) -> Result<PathBuf> {
    let boot = kernel.root.join("boot");
    std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-"))
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))
}

/// The kernel QEMU passes to Xen for dom0: the ELF inside Debian's
/// bzImage, uncompressed once here (cached by the bzImage's content).
/// Under TCG, Xen took about 6 s of every boot to decompress it.
pub fn kernel(kernel: &UnpackedDeb) -> Result<PathBuf> {
    let image = bzimage(kernel)?;
    let bytes = std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
    let out = paths::cache()?.join("images").join(format!("vmlinux-{}", &paths::sha256_hex(&bytes)[..16]));
    if out.exists() {
        return Ok(out);
    }
    let (program, payload) = bzimage_payload(&bytes).with_context(|| format!("{} is not a bzImage this harness can read", image.display()))?;
    let elf = duct::cmd!(program, "-dc")
        .stdin_bytes(payload)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("cannot run {program} to uncompress {}", image.display()))?;
    if !elf.status.success() || !elf.stdout.starts_with(b"\x7fELF") {
        bail!(
            "`{program} -dc` did not give the ELF kernel inside {}: {}",
            image.display(),
            String::from_utf8_lossy(&elf.stderr).trim()
        );
    }
    paths::write_atomic(&out, &elf.stdout)?;
    Ok(out)
}

/// The compressed kernel inside a bzImage (its setup header's
/// payload_offset and payload_length, without the 4-byte size the build
/// appends), and the program that uncompresses it, by its magic.
fn bzimage_payload(bytes: &[u8]) -> Result<(&'static str, &[u8])> {
    let u32_at = |at: usize| -> Result<usize> {
        let b = bytes.get(at..at + 4).context("too short for a setup header")?;
        Ok(u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if bytes.get(0x202..0x206) != Some(b"HdrS") {
        bail!("no `HdrS` setup header");
    }
    let setup_sectors = match bytes[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sectors + 1) * 512 + u32_at(0x248)?;
    let length = u32_at(0x24c)?;
    let payload = bytes
        .get(start..start + length)
        .and_then(|p| p.get(..p.len().checked_sub(4)?))
        .context("its payload lies outside the file")?;
    let program = if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        bail!("its payload is compressed in a way this harness does not know (magic {:02x?})", &payload[..payload.len().min(6)]);
    };
    Ok((program, payload))
}

/// Where dom0 finds the OCaml test program (qemu-images/dom0/ocaml), in
/// the patched build's image.
pub const OCAML_PROGRAM: &str = "usr/bin/xenctrl-numa-create";

/// The versions of the creation record the OCaml program can fill, as the
/// bindings have had it: with the altp2m and vmtrace fields (master), and
/// without them (4.17). Each is tried in turn.
const CREATE_CONFIGS: &[&str] = &["create_config_altp2m.ml", "create_config_plain.ml"];

/// The OCaml test program, compiled natively against the build's own
/// Xenctrl bindings (staged under usr/local/lib/ocaml), as xenopsd is
/// built: its executable.
fn ocaml_program(tools: &Path) -> Result<Vec<u8>> {
    let sources = paths::images_dir().join("dom0/ocaml");
    let findlib = tools.join("usr/local/lib/ocaml");
    let version = std::fs::read_dir(&findlib)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path())
        .with_context(|| format!("the build has no OCaml bindings under {}: it must be configured with --enable-ocamltools", findlib.display()))?;
    let dir = tempfile::tempdir()?;
    let lib = tools.join("usr/lib");
    let mut errors = Vec::new();
    for config in CREATE_CONFIGS {
        std::fs::copy(sources.join("xenctrl_numa_create.ml"), dir.path().join("xenctrl_numa_create.ml"))?;
        std::fs::copy(sources.join(config), dir.path().join("create_config.ml"))?;
        let out = duct::cmd!(
            "ocamlfind", "ocamlopt", "-package", "xenctrl,unix", "-linkpkg",
            "-ccopt", format!("-L{}", lib.display()),
            "-ccopt", format!("-Wl,-rpath-link,{}", lib.display()),
            "create_config.ml", "xenctrl_numa_create.ml", "-o", "xenctrl-numa-create"
        )
        .dir(dir.path())
        .env("OCAMLPATH", &version)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running ocamlfind (Debian's ocaml-findlib)")?;
        if out.status.success() {
            return Ok(std::fs::read(dir.path().join("xenctrl-numa-create"))?);
        }
        errors.push(format!("with {config}:\n{}", String::from_utf8_lossy(&out.stdout).trim_end()));
    }
    bail!(
        "the OCaml test program (qemu-images/dom0/ocaml) does not compile against this build's Xenctrl bindings \
         ({}):\n{}",
        version.display(),
        errors.join("\n")
    )
}

/// The base image for a build, as an archive ready to be written.
pub fn base(sources: &Dom0Packages, artifacts: &Artifacts) -> Result<Archive> {
    let mut a = Archive::default();
    for d in ["dev", "proc", "sys", "tmp", "run", "root", "mnt", "etc", "var"] {
        a.dir(d);
    }
    a.file("init", 0o755, &paths::images_dir().join("dom0/init"));
    a.file("bin/busybox", 0o755, &sources.busybox.root.join("bin/busybox"));

    let tools = artifacts.tools();
    a.tree(&tools, "", &skip_tool)?;
    // The baseline's bindings have no node affinity to give.
    if artifacts.flavor != Flavor::Baseline {
        a.bytes(OCAML_PROGRAM, 0o755, ocaml_program(&tools)?);
    }
    for lib in shared_libraries(&a, &tools)? {
        // Copied under the name the loader asks for, whatever symlink the
        // host has there.
        a.file(&lib.to_string_lossy(), 0o755, &std::fs::canonicalize(&lib)?);
    }

    a.bytes(crate::guest_kernel::PATH.trim_start_matches('/'), 0o644, crate::guest_kernel::elf());
    let (order, files) = modules(&sources.kernel)?;
    for (name, path) in files {
        a.file(&format!("lib/modules/xen/{name}.ko"), 0o644, &path);
    }
    a.bytes("lib/modules/xen/load-order", 0o644, order.join("\n") + "\n");
    a.bytes(
        "etc/numa-harness-image",
        0o644,
        format!(
            "base: {}\nbuild: {} {}\nkernel: {} {}\nbusybox: {}\n",
            artifacts.base, artifacts.label(), artifacts.key, sources.kernel.package, sources.kernel.version, sources.busybox.version
        ),
    );
    Ok(a)
}

/// The shared libraries from the host that the archive's ELF files load
/// (through `ldd`, with the staged libraries first), plus libgcc_s, which
/// glibc loads at run time when xl cancels a thread.
fn shared_libraries(a: &Archive, tools: &Path) -> Result<BTreeSet<PathBuf>> {
    let elves: Vec<&Path> = a
        .files_from_disk()
        .filter(|(_, src)| is_elf(src))
        .map(|(_, src)| src)
        .collect();
    let out = duct::cmd("ldd", &elves)
        .env("LD_LIBRARY_PATH", tools.join("usr/lib"))
        .stderr_to_stdout()
        .unchecked()
        .read()
        .context("running ldd on the staged tools")?;
    let mut libs = parse_ldd(&out, tools)?;
    let gcc_s = ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("libgcc_s.so.1 not found on the host (package libgcc-s1)")?;
    libs.insert(gcc_s);
    Ok(libs)
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// Host libraries named in `ldd` output; those under `staged` are already in
/// the image. A library ldd cannot find is an error naming it.
fn parse_ldd(out: &str, staged: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    let mut file = "";
    for line in out.lines() {
        if !line.starts_with(char::is_whitespace) {
            file = line.trim_end_matches(':');
            continue;
        }
        let line = line.trim();
        if line.ends_with("not found") {
            bail!("{file} needs {line} (ldd)");
        }
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next().unwrap_or(""),
            None => line.split(" (").next().unwrap_or(""),
        };
        if path.starts_with('/') && !Path::new(path).starts_with(staged) {
            libs.insert(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// The Xen modules and the order to load them in (dependencies first, from
/// each module's `depends=` in its .modinfo).
fn modules(kernel: &UnpackedDeb) -> Result<(Vec<String>, BTreeMap<String, PathBuf>)> {
    let base = kernel.root.join("lib/modules");
    let release = std::fs::read_dir(&base)
        .with_context(|| format!("reading {}", base.display()))?
        .filter_map(|e| e.ok())
        .next()
        .with_context(|| format!("no kernel release under {}", base.display()))?
        .path();
    let xen = release.join("kernel/drivers/xen");
    let mut files = BTreeMap::new();
    let mut deps = BTreeMap::new();
    let mut todo: Vec<String> = MODULES.iter().map(|m| m.to_string()).collect();
    while let Some(name) = todo.pop() {
        if files.contains_key(&name) {
            continue;
        }
        let path = [xen.join(format!("{name}.ko")), xen.join(format!("{name}/{name}.ko"))]
            .into_iter()
            .find(|p| p.exists())
            .with_context(|| format!("kernel module {name} not found under {}", xen.display()))?;
        let d = modinfo_depends(&std::fs::read(&path)?);
        todo.extend(d.iter().cloned());
        deps.insert(name.clone(), d);
        files.insert(name, path);
    }
    let mut order = Vec::new();
    fn visit(m: &str, deps: &BTreeMap<String, Vec<String>>, order: &mut Vec<String>) {
        if order.iter().any(|o| o == m) {
            return;
        }
        for d in &deps[m] {
            visit(d, deps, order);
        }
        order.push(m.to_string());
    }
    for m in MODULES {
        visit(m, &deps, &mut order);
    }
    Ok((order, files))
}

/// The `depends=` list from a module's .modinfo strings.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The per-boot archive: the scenario's files under /scenario.
pub fn scenario(scenario: &Scenario) -> Archive {
    let mut a = Archive::default();
    for (path, contents) in scenario.dom0_files() {
        a.bytes(&format!("scenario/{path}"), 0o644, contents);
    }
    a
}

/// Writes the base image for a build once (cached under its build key and
/// the inputs' identity), and returns its path.
pub fn write_base(sources: &Dom0Packages, artifacts: &Artifacts) -> Result<PathBuf> {
    let mut key = paths::KeyBuilder::default();
    key.add("build", &artifacts.key)
        .add("kernel", &sources.kernel.sha256)
        .add("busybox", &sources.busybox.sha256)
        .add("init", std::fs::read(paths::images_dir().join("dom0/init"))?)
        .add("image.rs", include_str!("image.rs"))
        .add("guest_kernel.rs", include_str!("guest_kernel.rs"))
        .add("cpio.rs", include_str!("cpio.rs"));
    if artifacts.flavor != Flavor::Baseline {
        for file in ["xenctrl_numa_create.ml"].iter().chain(CREATE_CONFIGS) {
            key.add(file, std::fs::read(paths::images_dir().join("dom0/ocaml").join(file))?);
        }
    }
    let path = paths::cache()?.join("images").join(format!("{}.cpio", key.finish()));
    if path.exists() {
        return Ok(path);
    }
    let archive = base(sources, artifacts)?;
    let mut bytes = Vec::new();
    archive.write(&mut bytes)?;
    paths::write_atomic(&path, &bytes)?;
    crate::say!("image: {} ({} MiB)", path.display(), bytes.len() >> 20);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let out = "/s/usr/sbin/xl:\n\
            \tlinux-vdso.so.1 (0x00007ffc)\n\
            \tlibxenlight.so.4.17 => /s/usr/lib/libxenlight.so.4.17 (0x00007f)\n\
            \tlibyajl.so.2 => /lib/x86_64-linux-gnu/libyajl.so.2 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse_ldd(out, Path::new("/s")).unwrap();
        assert_eq!(
            libs.into_iter().collect::<Vec<_>>(),
            [PathBuf::from("/lib/x86_64-linux-gnu/libyajl.so.2"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
        let err = parse_ldd("/s/usr/sbin/xl:\n\tlibfoo.so.1 => not found\n", Path::new("/s")).unwrap_err();
        assert_eq!(err.to_string(), "/s/usr/sbin/xl needs libfoo.so.1 => not found (ldd)");
    }

    #[test]
    fn bzimage_payload_by_header() {
        let mut image = vec![0u8; 0x1000];
        image[0x1f1] = 2; // setup sectors: the payload area starts at 3 * 512
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&12u32.to_le_bytes());
        let start = 3 * 512 + 0x10;
        image[start..start + 12].copy_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 0xaa, 0xbb, 0xcc, 0xdd]);
        let (program, payload) = bzimage_payload(&image).unwrap();
        assert_eq!((program, payload), ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2][..]));
        image[start] = 0x42;
        assert!(bzimage_payload(&image).unwrap_err().to_string().contains("does not know"));
        assert_eq!(bzimage_payload(&image[..0x100]).unwrap_err().to_string(), "no `HdrS` setup header");
    }

    #[test]
    fn modinfo() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=xen-privcmd,foo\0name=xenfs\0";
        assert_eq!(modinfo_depends(ko), ["xen-privcmd", "foo"]);
        assert!(modinfo_depends(b"depends=\0").is_empty());
    }
}
