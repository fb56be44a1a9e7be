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
    // pages went is in pages_per_node, which is compared exactly.
    settings.add_redaction(".nodes[].free_mib", "[varies]");
    // insta reports a mismatch by panicking after printing its diff; turn
    // that into an error so the other runs still get checked.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_yaml_snapshot!(name.as_str(), report));
    }));
    panic::set_hook(hook);
    outcome.map_err(|_| {
        anyhow!(
            "the report differs from harness/snapshots/{name}.snap (diff above); \
             if the change is right, accept it with `cargo insta review`"
        )
    })
}
