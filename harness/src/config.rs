//! Loading the harness's YAML data files with errors that name the file and
//! the field, and the settings that are set in exactly one place.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

/// Parses a YAML file; an error names the file, the field path and the line.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Parses YAML text; the error says which field is wrong and where.
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    // yaml_serde's message starts with the field's path where it has one
    // ("nodes[1].cpus: invalid type: ...") and ends with line and column.
    yaml_serde::from_str(text).map_err(|e| {
        let msg = e.to_string();
        match msg.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => format!("field `{path}`: {rest}"),
            _ => msg,
        }
    })
}

/// The largest `--timeout-scale`: the longest timeout (600 s) becomes most
/// of a week.
const MAX_TIMEOUT_SCALE: f64 = 1000.0;

/// Every boot timeout, in one place. `--timeout-scale` or the environment
/// variable `NUMA_HARNESS_TIMEOUT_SCALE` multiplies them all (e.g. `3` on a
/// slow runner).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From QEMU's start to Xen's first line on the serial console.
    pub xen_banner: Duration,
    /// From QEMU's start to dom0's init announcing itself.
    pub dom0_init: Duration,
    /// From dom0's init to its waiting for the scenario (the Xen daemons
    /// started).
    pub daemons: Duration,
    /// From dom0 waiting (or the machine restored) to dom0 having its
    /// scenario.
    pub delivery: Duration,
    /// From dom0 having its scenario to the end of the result block.
    pub result: Duration,
    /// From the result block's end to QEMU's exit after power-off.
    pub poweroff: Duration,
}

/// The factor every timeout is multiplied by: `--timeout-scale` if given,
/// else `NUMA_HARNESS_TIMEOUT_SCALE`, else 1; refused unless above 0 and at
/// most [`MAX_TIMEOUT_SCALE`].
pub fn timeout_scale(flag: Option<f64>) -> Result<f64> {
    let scale = match flag {
        Some(s) => s,
        None => match std::env::var("NUMA_HARNESS_TIMEOUT_SCALE") {
            Ok(v) => v
                .parse()
                .map_err(|_| anyhow!("NUMA_HARNESS_TIMEOUT_SCALE={v:?} is not a number (e.g. 2 or 0.5)"))?,
            Err(_) => 1.0,
        },
    };
    if !(scale > 0.0 && scale <= MAX_TIMEOUT_SCALE) {
        return Err(anyhow!(
            "timeout scale must be a number above 0 and at most {MAX_TIMEOUT_SCALE} (the longest timeout \
             then being about a week), not {scale:?}"
        ));
    }
    Ok(scale)
}

impl Timeouts {
    /// Under TCG everything is emulated, so a boot is slower by an order of
    /// magnitude than under KVM; the limits are set for TCG on 2 cores with
    /// room to spare, and tightened for KVM.
    pub fn new(kvm: bool, scale: Option<f64>) -> Result<Timeouts> {
        let scale = timeout_scale(scale)?;
        let (banner, init, daemons, delivery, result) = if kvm { (20, 60, 60, 30, 180) } else { (60, 240, 120, 60, 600) };
        let s = |secs: u64| Duration::from_secs_f64(secs as f64 * scale);
        Ok(Timeouts {
            xen_banner: s(banner),
            dom0_init: s(init),
            daemons: s(daemons),
            delivery: s(delivery),
            result: s(result),
            poweroff: s(30),
        })
    }
}

/// The `*.yaml` files in a directory, sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// A data file's name without directory and `.yaml`: how runs, reports and
/// snapshots refer to it.
pub fn stem(path: &Path) -> Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

/// The name of a data file whose name goes into paths and into the shell
/// script dom0 runs (a scenario, a topology): its file name without the
/// extension, refused unless it is safe as both, i.e. ASCII letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit.
pub fn safe_stem(path: &Path) -> Result<String> {
    let name = stem(path)?;
    let safe = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !safe {
        bail!(
            "{}: the file name {name:?} is used in paths and in dom0's shell: rename the file to ASCII letters, \
             digits, `.`, `_` and `-`, starting with a letter or digit",
            path.display()
        );
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn yaml_error_names_the_field_and_line() {
        let err = parse_yaml::<Outer>("items:\n  - count: 1\n  - count: many\n").unwrap_err();
        assert_eq!(err, "field `items[1].count`: invalid type: string \"many\", expected u32 at line 3 column 12");
    }

    #[test]
    fn timeouts_scale() {
        let t = Timeouts::new(false, Some(2.0)).unwrap();
        assert_eq!(t.result, Duration::from_secs(1200));
        assert!(Timeouts::new(false, Some(0.0)).is_err());
        assert!(Timeouts::new(false, Some(f64::NAN)).is_err());
        assert!(Timeouts::new(false, Some(1000.0)).is_ok());
        let err = Timeouts::new(false, Some(1e300)).unwrap_err().to_string();
        assert!(err.starts_with("timeout scale must be a number above 0 and at most 1000 (") && err.ends_with("not 1e300"), "{err}");
    }
}
