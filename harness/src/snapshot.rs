//! Snapshot stage: each report compared with its insta YAML snapshot,
//! `harness/snapshots/<base>/<topology>__<scenario>__<build>.snap`. This
//! module owns what a snapshot holds (the normalised report) and every
//! comparison of reports: with their snapshots, with one another.
//!
//! insta prints the diff on a mismatch. Outside CI it also writes the new
//! report beside the snapshot as `.snap.new`, for `cargo insta review` (or
//! run with `INSTA_UPDATE=always` to accept every change, then read the git
//! diff). With `CI` set it never writes anything.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use yaml_serde::Value;

use crate::paths;
use crate::report::Report;

/// The report as a snapshot holds it. Only what Xen decided is compared:
/// - free memory moves by a few hundred pages from boot to boot of the same
///   build (dom0's allocations at run time); where the domains' own pages
///   went is in pages_per_node, compared exactly for the domains dom0
///   creates;
/// - dom0 gets its memory at boot, around what Xen and its boot modules
///   occupy: the split over nodes moves by a few pages with the size of
///   dom0's kernel and initramfs (the same tools built in another directory
///   are enough). Which nodes hold some of it is still compared;
/// - the dom0 kernel's and busybox's versions are Debian's current ones, not
///   pinned: they are in the snapshot's header (its `info`), so a changed
///   snapshot can be traced to them, but do not fail it;
/// - objects Xen takes from its shared xmalloc() pool when it is given no
///   node (see [`POOL_OBJECTS`]) are on whichever node the pool's page
///   came from, which depends on what was freed before: the same boot
///   twice swapped a vCPU's `fpu` and `sched_unit` between nodes 0 and 1.
///   Their node is compared only where the series gives one.
pub fn normalized(report: &Report) -> Result<Value> {
    let mut value = yaml_serde::to_value(report).context("serialising the report")?;
    let map = value.as_mapping_mut().context("a report serialises to a mapping")?;
    map.shift_remove("dom0_kernel");
    map.shift_remove("busybox");
    if let Some(nodes) = map.get_mut("nodes").and_then(Value::as_sequence_mut) {
        for node in nodes {
            if let Some(free) = node.get_mut("free_mib") {
                *free = "[varies]".into();
            }
        }
    }
    redact_dom0_pages(&mut value);
    redact_pool_objects(&mut value, &report.build);
    redact_measurements(&mut value);
    Ok(value)
}

/// A measure step's wall times differ from run to run; they are kept in
/// the report (`cargo xtask evidence` sets them out with their spread) but
/// not in the snapshot. Xen's pages per round are the same round after
/// round; the snapshot keeps their median.
fn redact_measurements(report: &mut Value) {
    let Some(steps) = report.get_mut("measure").and_then(Value::as_sequence_mut) else { return };
    for domain in steps.iter_mut().filter_map(|s| s.get_mut("domains")).filter_map(Value::as_sequence_mut).flatten() {
        let Some(map) = domain.as_mapping_mut() else { continue };
        for key in ["create_ms", "destroy_ms"] {
            if map.contains_key(key) {
                map.insert(key.into(), "[varies]".into());
            }
        }
        if let Some(pages) = map.shift_remove("xen_pages").and_then(|v| v.as_sequence().cloned()) {
            let mut v: Vec<i64> = pages.iter().filter_map(Value::as_i64).collect();
            v.sort_unstable();
            if let Some(m) = v.get(v.len() / 2) {
                map.insert("xen_pages_median".into(), (*m).into());
            }
        }
    }
}

/// Objects smaller than a page that both bases allocate with xmalloc() or
/// xvmalloc(): the scheduling unit, the FPU (XSAVE) state and struct
/// grant_table. The series allocates them as whole pages on the domain's
/// node, but only for a domain created with an explicit node affinity.
const POOL_OBJECTS: &[&str] = &["sched_unit", "fpu", "grant_table"];

/// Whether the object comes from the xmalloc pool, so that the node the
/// instrument gives is that of whichever pool page it was carved from,
/// which changes from boot to boot: one of [`POOL_OBJECTS`], on the
/// baseline build or of a domain whose node affinity is not explicit.
pub fn from_xmalloc_pool(build: &str, explicit: bool, object: &str) -> bool {
    (build == "baseline" || !explicit) && POOL_OBJECTS.contains(&object)
}

/// Replaces the node of [`POOL_OBJECTS`] by `[xmalloc pool]` where it comes
/// from the pool: on the baseline build, and for domains whose node
/// affinity is not explicit.
fn redact_pool_objects(report: &mut Value, build: &str) {
    let Some(domains) = report.get_mut("domains").and_then(Value::as_sequence_mut) else {
        return;
    };
    for domain in domains {
        let explicit = domain.get("node_affinity_is").and_then(Value::as_str) == Some("explicit");
        if let Some(objects) = domain.get_mut("objects") {
            redact_pool_nodes(objects, build, explicit);
        }
        let vcpus = domain.get_mut("vcpus").and_then(Value::as_sequence_mut);
        for objects in vcpus.into_iter().flatten().filter_map(|v| v.get_mut("objects")) {
            redact_pool_nodes(objects, build, explicit);
        }
    }
}

fn redact_pool_nodes(objects: &mut Value, build: &str, explicit: bool) {
    for (name, node) in objects.as_mapping_mut().into_iter().flatten() {
        if name.as_str().is_some_and(|n| from_xmalloc_pool(build, explicit, n)) {
            *node = "[xmalloc pool]".into();
        }
    }
}

/// dom0's pages per node (dom0 comes first): non-zero counts become
/// `[some]`, so which nodes hold dom0's memory is still compared.
fn redact_dom0_pages(report: &mut Value) {
    let counts = report
        .get_mut("domains")
        .and_then(|d| d.get_mut(0))
        .filter(|d| d.get("id").and_then(Value::as_u64) == Some(0))
        .and_then(|d| d.get_mut("pages_per_node"))
        .and_then(Value::as_mapping_mut);
    for (_, pages) in counts.into_iter().flatten() {
        if pages.as_u64() != Some(0) {
            *pages = "[some]".into();
        }
    }
}

/// The snapshot's name, without directory and `.snap`.
pub fn name(report: &Report) -> String {
    format!("{}__{}__{}", report.topology, report.scenario, report.build)
}

fn dir(base: &str) -> PathBuf {
    paths::snapshots_dir().join(base)
}

/// Compares a report with its snapshot through insta.
pub fn check(report: &Report) -> Result<()> {
    let name = name(report);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir(&report.base));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_info(&format!(
        "Xen NUMA harness: base {}, topology {}, scenario {}, build {}; dom0 kernel {}, busybox {}",
        report.base, report.topology, report.scenario, report.build, report.dom0_kernel, report.busybox
    ));
    let value = normalized(report)?;
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
            "the report differs from harness/snapshots/{}/{name}.snap (diff above); \
             if the change is right, accept it with `cargo insta review`",
            report.base
        )
    })
}

/// The content of a stored snapshot, without insta's header.
pub fn stored(base: &str, name: &str) -> Result<Value> {
    let path = dir(base).join(format!("{name}.snap"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading snapshot {}", path.display()))?;
    // insta's file: "---", header lines, "---", then the content.
    let content = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(_, content)| content)
        .with_context(|| format!("{} is not an insta snapshot (no header)", path.display()))?;
    yaml_serde::from_str(content).with_context(|| format!("parsing {}", path.display()))
}

/// For a scenario that claims the series changes nothing: checks that the
/// patched `report` equals the baseline's stored snapshot, both taken as
/// the baseline's are (so pool objects are compared on neither side), for
/// the scenario's domains. dom0 is left out: how its memory splits over
/// the nodes moves by a few pages with any change to Xen's own footprint
/// at boot, series or not.
pub fn check_same_as_baseline(report: &Report) -> Result<()> {
    let mut as_baseline = report.clone();
    as_baseline.build = "baseline".into();
    as_baseline.domains.retain(|d| d.id != 0);
    // Only the series' instrument prints the fallback order (and the
    // report checks it against the distances).
    for node in &mut as_baseline.nodes {
        node.fallback = None;
    }
    let mut expected = stored(&report.base, &name(&as_baseline))?;
    if let Some(domains) = expected.get_mut("domains").and_then(Value::as_sequence_mut) {
        domains.retain(|d| d.get("id").and_then(Value::as_u64) != Some(0));
    }
    same(&as_baseline, &expected, "the baseline's snapshot")
        .map_err(|e| anyhow!("the scenario claims the series changes nothing, but {e:#}"))
}

/// Checks that `report`, normalised, equals `expected`; the error shows the
/// lines that differ, in the order of the YAML, and names what each side is.
pub fn same(report: &Report, expected: &Value, expected_is: &str) -> Result<()> {
    let got = normalized(report)?;
    if got == *expected {
        return Ok(());
    }
    let (a, b) = (yaml_serde::to_string(expected)?, yaml_serde::to_string(&got)?);
    if a.trim().is_empty() || b.trim().is_empty() {
        bail!("cannot compare with {expected_is}: one side serialised to nothing");
    }
    let diff = similar::TextDiff::from_lines(&a, &b);
    let lines: Vec<String> = diff
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .map(|c| format!("{}{}", if c.tag() == similar::ChangeTag::Delete { '-' } else { '+' }, c.value().trim_end()))
        .collect();
    bail!("the report differs from {expected_is} (- {expected_is}, + this report):\n    {}", lines.join("\n    "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dom0s_non_zero_page_counts_are_redacted() {
        let mut report: Value = yaml_serde::from_str(
            "domains:\n\
             - {name: Domain-0, id: 0, pages_per_node: {0: 16384, 1: 0, 2: 5019}}\n\
             - {name: d1, id: 1, pages_per_node: {0: 51200, 1: 0}}\n",
        )
        .unwrap();
        redact_dom0_pages(&mut report);
        let want: Value = yaml_serde::from_str(
            "domains:\n\
             - {name: Domain-0, id: 0, pages_per_node: {0: '[some]', 1: 0, 2: '[some]'}}\n\
             - {name: d1, id: 1, pages_per_node: {0: 51200, 1: 0}}\n",
        )
        .unwrap();
        assert_eq!(report, want);
    }

    #[test]
    fn pool_objects_are_compared_only_where_the_series_places_them() {
        let report = |affinity: &str| -> Value {
            yaml_serde::from_str(&format!(
                "domains:\n\
                 - name: d1\n  node_affinity_is: {affinity}\n  \
                 vcpus: [{{vcpu: 0, objects: {{vcpu: '1', sched_unit: '0', fpu: '1'}}}}]\n  \
                 objects: {{domain: '1', grant_table: '0'}}\n"
            ))
            .unwrap()
        };
        let pooled: Value = yaml_serde::from_str(
            "domains:\n\
             - name: d1\n  node_affinity_is: auto\n  \
             vcpus: [{vcpu: 0, objects: {vcpu: '1', sched_unit: '[xmalloc pool]', fpu: '[xmalloc pool]'}}]\n  \
             objects: {domain: '1', grant_table: '[xmalloc pool]'}\n",
        )
        .unwrap();
        let mut auto = report("auto");
        redact_pool_objects(&mut auto, "patched");
        assert_eq!(auto, pooled);
        // The series places them for an explicit affinity: compared as is.
        let mut explicit = report("explicit");
        redact_pool_objects(&mut explicit, "patched");
        assert_eq!(explicit, report("explicit"));
        // Without the series, never.
        redact_pool_objects(&mut explicit, "baseline");
        assert_eq!(explicit.get("domains").and_then(|d| d.get(0)).and_then(|d| d.get("objects")), pooled.get("domains").and_then(|d| d.get(0)).and_then(|d| d.get("objects")));
    }

    fn report(build: &str, cpus: &str, dom0_pages: u64) -> Report {
        use crate::report::{Domain, Node};
        let domain = |id: u32, pages: u64| Domain {
            name: format!("d{id}"),
            id,
            node_affinity: None,
            node_affinity_is: None,
            vcpus: Vec::new(),
            pages_per_node: Some([(0, pages)].into_iter().collect()),
            objects: Default::default(),
            vcpu_objects_not_listed: None,
        };
        Report {
            base: "b".into(),
            topology: "t".into(),
            scenario: "s".into(),
            description: "d".into(),
            build: build.into(),
            xen_tree: None,
            dom0_kernel: "k".into(),
            busybox: "b".into(),
            xen_version: None,
            nodes: vec![Node { node: 0, cpus: cpus.into(), memory_mib: 1024, free_mib: 500, distances: vec![10], fallback: None }],
            domains: vec![domain(0, dom0_pages), domain(1, 100)],
            checks: Default::default(),
            churn: Vec::new(),
            refused: Default::default(),
            measure: Vec::new(),
        }
    }

    /// `same` compares structure, names both sides, and shows what differs.
    #[test]
    fn same_compares_values() {
        let expected = normalized(&report("baseline", "0-1", 7)).unwrap();
        same(&report("baseline", "0-1", 9), &expected, "x").unwrap();
        let err = same(&report("baseline", "0", 7), &expected, "the baseline's snapshot").unwrap_err().to_string();
        assert!(err.starts_with("the report differs from the baseline's snapshot (- the baseline's snapshot, + this report):"), "{err}");
        assert!(err.ends_with("\n    -  cpus: 0-1\n    +  cpus: '0'"), "{err}");
        assert!(same(&report("baseline", "0-1", 7), &Value::Null, "x").is_err());
    }

    #[test]
    fn stored_snapshots_parse() {
        let v = stored("stable-4.17", "two-node__default__baseline").unwrap();
        assert_eq!(v.get("scenario").and_then(Value::as_str), Some("default"));
        assert!(stored("stable-4.17", "no-such").unwrap_err().to_string().starts_with("reading snapshot"));
    }
}
