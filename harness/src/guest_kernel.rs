//! The kernel the scenarios' domains are created with: a 12 KiB ELF that
//! Xen's domain builder (libxenguest) loads as a 64-bit PV or a PVH kernel,
//! in the way the Xen Test Framework's are made. The scenarios create
//! their domains paused and never run them, so what matters is only that
//! it is a valid kernel for both; its code halts.
//!
//! Debian's bzImage served before, but libxenguest decompresses it in
//! dom0 for every domain, about 7 s each under TCG, and it took 8 MiB of
//! dom0's initramfs.
//!
//! Layout: the ELF header and two program headers (PT_LOAD, PT_NOTE), the
//! Xen ELF notes (docs: xen/include/public/elfnote.h), then at 4 KiB the
//! loaded image, two pages at 1 MiB: the entry point (`hlt; jmp` back) and
//! the hypercall page. Physical and virtual addresses are the same
//! (VIRT_BASE and PADDR_OFFSET 0).

/// Where the image is loaded, and its entry point, physical and virtual.
const LOAD: u64 = 0x10_0000;
/// The loaded image: the entry page and the hypercall page.
const IMAGE_SIZE: u64 = 0x2000;
/// Where the image starts in the file.
const IMAGE_OFFSET: u64 = 0x1000;

// Xen ELF note types (xen/include/public/elfnote.h).
const XEN_ELFNOTE_ENTRY: u32 = 1;
const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
const XEN_ELFNOTE_GUEST_OS: u32 = 6;
const XEN_ELFNOTE_LOADER: u32 = 8;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The path the scenarios' xl configurations name.
pub const PATH: &str = "/boot/numa-harness-guest";

fn note(out: &mut Vec<u8>, kind: u32, desc: &[u8]) {
    let pad4 = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
    out.extend_from_slice(&4u32.to_le_bytes()); // "Xen\0"
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(b"Xen\0");
    out.extend_from_slice(desc);
    pad4(out);
}

fn notes() -> Vec<u8> {
    let mut n = Vec::new();
    note(&mut n, XEN_ELFNOTE_GUEST_OS, b"numa-harness\0");
    note(&mut n, XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0");
    note(&mut n, XEN_ELFNOTE_LOADER, b"generic\0");
    note(&mut n, XEN_ELFNOTE_VIRT_BASE, &0u64.to_le_bytes());
    note(&mut n, XEN_ELFNOTE_PADDR_OFFSET, &0u64.to_le_bytes());
    note(&mut n, XEN_ELFNOTE_ENTRY, &LOAD.to_le_bytes());
    note(&mut n, XEN_ELFNOTE_HYPERCALL_PAGE, &(LOAD + 0x1000).to_le_bytes());
    note(&mut n, XEN_ELFNOTE_PHYS32_ENTRY, &(LOAD as u32).to_le_bytes());
    n
}

/// The kernel's bytes.
pub fn elf() -> Vec<u8> {
    let notes = notes();
    let notes_offset = 64 + 2 * 56u64;
    assert!(notes_offset + notes.len() as u64 <= IMAGE_OFFSET, "the notes fit before the image");
    let mut f = Vec::with_capacity((IMAGE_OFFSET + IMAGE_SIZE) as usize);
    let u16 = |f: &mut Vec<u8>, v: u16| f.extend_from_slice(&v.to_le_bytes());
    let u32 = |f: &mut Vec<u8>, v: u32| f.extend_from_slice(&v.to_le_bytes());
    let u64 = |f: &mut Vec<u8>, v: u64| f.extend_from_slice(&v.to_le_bytes());
    // ELF header: 64-bit, little-endian, executable for x86-64.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    u16(&mut f, 2); // ET_EXEC
    u16(&mut f, 62); // EM_X86_64
    u32(&mut f, 1);
    u64(&mut f, LOAD); // e_entry
    u64(&mut f, 64); // e_phoff
    u64(&mut f, 0); // e_shoff: no sections
    u32(&mut f, 0); // e_flags
    u16(&mut f, 64); // e_ehsize
    u16(&mut f, 56); // e_phentsize
    u16(&mut f, 2); // e_phnum
    u16(&mut f, 64); // e_shentsize
    u16(&mut f, 0); // e_shnum
    u16(&mut f, 0); // e_shstrndx
    // PT_LOAD: the image, read, write, execute.
    u32(&mut f, 1);
    u32(&mut f, 7);
    u64(&mut f, IMAGE_OFFSET);
    u64(&mut f, LOAD);
    u64(&mut f, LOAD);
    u64(&mut f, IMAGE_SIZE);
    u64(&mut f, IMAGE_SIZE);
    u64(&mut f, 0x1000);
    // PT_NOTE: the Xen notes.
    u32(&mut f, 4);
    u32(&mut f, 4);
    u64(&mut f, notes_offset);
    u64(&mut f, 0);
    u64(&mut f, 0);
    u64(&mut f, notes.len() as u64);
    u64(&mut f, notes.len() as u64);
    u64(&mut f, 4);
    f.extend_from_slice(&notes);
    f.resize(IMAGE_OFFSET as usize, 0);
    // The entry point: hlt; jmp back to it.
    f.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
    f.resize((IMAGE_OFFSET + IMAGE_SIZE) as usize, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// binutils reads it as Xen's tools will: an x86-64 executable with one
    /// loadable segment at 1 MiB and the Xen notes.
    #[test]
    fn readelf_sees_a_xen_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest");
        std::fs::write(&path, elf()).unwrap();
        let headers = duct::cmd!("readelf", "-h", "-l", &path).read().unwrap();
        assert!(headers.contains("EXEC (Executable file)"), "{headers}");
        assert!(headers.contains("Advanced Micro Devices X86-64"), "{headers}");
        assert!(headers.contains("Entry point address:               0x100000"), "{headers}");
        let load = headers.lines().find(|l| l.trim_start().starts_with("LOAD")).expect(&headers);
        assert!(load.contains("0x0000000000001000 0x0000000000100000 0x0000000000100000"), "{headers}");
        // This binutils names no Xen note: check owner, size and data.
        let notes = duct::cmd!("readelf", "-n", &path).read().unwrap();
        let data: Vec<&str> = notes.lines().filter_map(|l| l.trim().strip_prefix("description data: ")).collect();
        assert_eq!(notes.matches("\n  Xen ").count(), 8, "{notes}");
        assert_eq!(
            data,
            [
                "6e 75 6d 61 2d 68 61 72 6e 65 73 73 00", // GUEST_OS "numa-harness"
                "78 65 6e 2d 33 2e 30 00",                // XEN_VERSION "xen-3.0"
                "67 65 6e 65 72 69 63 00",                // LOADER "generic"
                "00 00 00 00 00 00 00 00",                // VIRT_BASE 0
                "00 00 00 00 00 00 00 00",                // PADDR_OFFSET 0
                "00 00 10 00 00 00 00 00",                // ENTRY 1 MiB
                "00 10 10 00 00 00 00 00",                // HYPERCALL_PAGE
                "00 00 10 00",                            // PHYS32_ENTRY 1 MiB
            ],
            "{notes}"
        );
        assert!(notes.contains("Unknown note type: (0x00000012)"), "PHYS32_ENTRY is type 18: {notes}");
    }
}
