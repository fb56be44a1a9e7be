//! Snapshot stage: each report compared with its insta YAML snapshot under
//! harness/snapshots/, named `<topology>__<scenario>__<build>.snap`.
//!
//! insta prints the diff on a mismatch. Outside CI it also writes the new
//! report beside the snapshot as `.snap.new`, for `cargo insta review` (or
//! run with `INSTA_UPDATE=always` to accept every change, then read the git
//! diff). With `CI` set it never writes anything.

use std::panic::{self, AssertUnwindSafe};

use anyhow::{anyhow, Result};

use crate::paths;
use crate::report::Report;

/// dom0's pages per node (dom0 comes first): non-zero counts become
/// `[some]`, so which nodes hold dom0's memory is still compared.
fn redact_dom0_pages(report: &mut serde_yaml::Value) {
    let counts = report
        .get_mut("domains")
        .and_then(|d| d.get_mut(0))
        .filter(|d| d.get("id").and_then(serde_yaml::Value::as_u64) == Some(0))
        .and_then(|d| d.get_mut("pages_per_node"))
        .and_then(serde_yaml::Value::as_mapping_mut);
    for (_, pages) in counts.into_iter().flatten() {
        if pages.as_u64() != Some(0) {
            *pages = "[some]".into();
        }
    }
}

pub fn name(report: &Report) -> String {
    format!("{}__{}__{}", report.topology, report.scenario, report.build)
}

pub fn check(report: &Report) -> Result<()> {
    let name = name(report);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(paths::snapshots_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_info(&format!(
        "Xen NUMA harness: topology {}, scenario {}, build {}",
        report.topology, report.scenario, report.build
    ));
    // Free memory moves by a few hundred pages from boot to boot of the
    // same build (dom0's allocations at run time); where the domains' own
    // pages went is in pages_per_node, which is compared exactly for the
    // domains dom0 creates.
    settings.add_redaction(".nodes[].free_mib", "[varies]");
    // dom0 gets its memory at boot, around what Xen and its boot modules
    // occupy: the split over nodes moves by a few pages with the size of
    // dom0's kernel and initramfs (the same tools built in another
    // directory are enough). Which nodes hold some of it is still compared;
    // the series changes where dom0's structures go (`objects`), not where
    // its memory goes.
    let mut value = serde_yaml::to_value(report)?;
    redact_dom0_pages(&mut value);
    // insta reports a mismatch by panicking after printing its diff; turn
    // that into an error so the other runs still get checked.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_yaml_snapshot!(name.as_str(), value));
    }));
    panic::set_hook(hook);
    outcome.map_err(|_| {
        anyhow!(
            "the report differs from harness/snapshots/{name}.snap (diff above); \
             if the change is right, accept it with `cargo insta review`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dom0s_non_zero_page_counts_are_redacted() {
        let mut report: serde_yaml::Value = serde_yaml::from_str(
            "domains:\n\
             - {name: Domain-0, id: 0, pages_per_node: {0: 16384, 1: 0, 2: 5019}}\n\
             - {name: d1, id: 1, pages_per_node: {0: 51200, 1: 0}}\n",
        )
        .unwrap();
        redact_dom0_pages(&mut report);
        let want: serde_yaml::Value = serde_yaml::from_str(
            "domains:\n\
             - {name: Domain-0, id: 0, pages_per_node: {0: '[some]', 1: 0, 2: '[some]'}}\n\
             - {name: d1, id: 1, pages_per_node: {0: 51200, 1: 0}}\n",
        )
        .unwrap();
        assert_eq!(report, want);
    }
}
