//! `cargo xtask build`, `check-series` and `image`.

use anyhow::Result;
use xshell::Shell;

use super::{bases, Work};
use crate::base::Base;
use crate::flags::{Build, CheckSeries, Image};
use crate::patch::Flavor;
use crate::{fetch, image};

pub fn build(sh: &Shell, b: Build) -> Result<()> {
    let work = Work::new(sh, Base::chosen(b.base.as_deref())?, b.xen_sources.as_deref(), b.xen_tree.as_deref())?;
    let flavors = match b.build {
        Some(f) => vec![f],
        None => Flavor::ALL.to_vec(),
    };
    for flavor in flavors {
        let a = work.build(flavor)?;
        println!("{}/{}: {}", work.base.name, a.label(), a.dir.display());
    }
    Ok(())
}

pub fn check_series(sh: &Shell, c: CheckSeries) -> Result<()> {
    for base in bases(c.base.as_deref())? {
        Work::new(sh, base, c.xen_sources.as_deref(), None)?.check_series()?;
    }
    Ok(())
}

pub fn image(sh: &Shell, i: Image) -> Result<()> {
    let work = Work::new(sh, Base::chosen(i.base.as_deref())?, i.xen_sources.as_deref(), i.xen_tree.as_deref())?;
    let a = work.build(i.build.unwrap_or(Flavor::Patched))?;
    println!("{}", image::write_base(&fetch::dom0_packages(sh)?, &a)?.display());
    Ok(())
}
