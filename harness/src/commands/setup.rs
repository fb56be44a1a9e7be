//! `cargo xtask setup` and `cargo xtask fetch`.

use anyhow::Result;
use xshell::Shell;

use crate::base::Base;
use crate::flags::Fetch;
use crate::{fetch, host};

pub fn setup(sh: &Shell) -> Result<()> {
    host::ensure(sh)?;
    crate::say!("setup: every package is installed");
    Ok(())
}

pub fn fetch(sh: &Shell, f: Fetch) -> Result<()> {
    host::ensure(sh)?;
    let base = Base::chosen(f.base.as_deref())?;
    let source = fetch::xen_source(sh, &base, fetch::sources_dir(f.xen_sources.as_deref()).as_deref())?;
    let dom0 = fetch::dom0_packages(sh)?;
    crate::say!("fetch: Xen {} ({}): {} (tree {}, from {})", base.version, base.name, source.tarball.display(), source.tree, source.origin);
    crate::say!("fetch: kernel {} {}", dom0.kernel.package, dom0.kernel.version);
    crate::say!("fetch: busybox {}", dom0.busybox.version);
    Ok(())
}
