//! Report stage: one boot's results as a typed, normalised report (what the
//! snapshots hold), and reports side by side as a table.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::console::{Step, StepKind};
use crate::parse;
use crate::scenario::Scenario;
use crate::topology::Topology;

/// What was booted: which Xen, and the dom0 it ran.
#[derive(Debug, Clone)]
pub struct Booted {
    /// The base's name (`master`, `stable-4.17`).
    pub base: String,
    /// `baseline` or `patched`.
    pub build: String,
    /// A contributor's checkout built as the patched side.
    pub xen_tree: Option<String>,
    /// The dom0 kernel's Debian package and version.
    pub dom0_kernel: String,
    /// busybox-static's version.
    pub busybox: String,
}

/// Where things landed in one boot. Only what Xen decided is kept: nothing
/// that changes from run to run of the same build (times, current CPUs).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub base: String,
    pub topology: String,
    pub scenario: String,
    /// The scenario's description, for people reading the snapshot.
    pub description: String,
    pub build: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xen_tree: Option<String>,
    pub dom0_kernel: String,
    pub busybox: String,
    pub xen_version: Option<String>,
    /// The nodes as Xen saw them (`xl info -n`).
    pub nodes: Vec<Node>,
    pub domains: Vec<Domain>,
    /// Each check's PASS and FAIL lines, and the GAP lines of what a
    /// backport is known not to place.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, Vec<String>>,
    /// The plan's churn steps: domains created and destroyed over and over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub churn: Vec<Churn>,
    /// The plan's refuse steps, by domain: the error `xl create` gave, and
    /// that it left no domain and every node's free pages as they were.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, Vec<String>>,
    /// The plan's measure steps: domains created and destroyed again and
    /// again, timed, and the memory Xen took for them counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub measure: Vec<Measure>,
}

/// A measure step's result: each domain's rounds, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// Rounds per domain (one more ran first, uncounted).
    pub repeats: u32,
    /// The clock dom0 read: `timer_list` (nanoseconds) or `uptime`
    /// (hundredths of a second).
    pub clock: String,
    pub domains: Vec<MeasuredDomain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeasuredDomain {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: crate::scenario::DomainType,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Each round's `xl create -p` wall time, milliseconds.
    pub create_ms: Vec<f64>,
    /// Each round's `xl destroy` wall time, milliseconds.
    pub destroy_ms: Vec<f64>,
    /// Each round's pages Xen took while the domain existed beyond the
    /// domain's own (its structures, page tables, HAP/shadow pool, ...):
    /// free pages before the creation, minus free pages while it existed,
    /// minus the domain's total pages.
    pub xen_pages: Vec<i64>,
}

/// A churn step's result: every round ran and no domain was left (dom0's
/// init fails the step otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    /// Rounds counted (one more ran first, uncounted).
    pub cycles: u32,
    /// Each round created and destroyed these, in this order.
    pub domains: Vec<String>,
    /// Free pages before the rounds minus after, by node: 0 on every
    /// node, or the report fails (Xen kept or gained memory over them).
    pub pages_lost: BTreeMap<u32, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub node: u32,
    /// The node's CPUs, as a list like `0-1`.
    pub cpus: String,
    pub memory_mib: u64,
    pub free_mib: u64,
    /// Distances from this node to nodes 0, 1, ...
    pub distances: Vec<u32>,
    /// The nodes Xen's heap falls back to, in order, when this node cannot
    /// serve an allocation: printed by the `u` debug key once the series'
    /// nearest-node fallback is in, and checked against `distances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub name: String,
    pub id: u32,
    /// `all`, or the nodes whose memory Xen allocates from for the domain
    /// (`xl list -n`).
    pub node_affinity: Option<String>,
    /// `auto` (Xen derives it from the vCPUs' affinities) or `explicit`
    /// (the toolstack set it): from the instrumented `u` debug key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_affinity_is: Option<String>,
    pub vcpus: Vec<Vcpu>,
    /// Pages of the domain's memory on each node, by node number.
    pub pages_per_node: Option<BTreeMap<u32, u64>>,
    /// The node of each of Xen's own per-domain structures (`?`: none, or
    /// not cheaply locatable), from the instrumented `u` debug key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
    /// The vCPUs (`first-last`) whose structures the instrument did not
    /// list: it lists a bounded number per domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu_objects_not_listed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vcpu {
    pub vcpu: u32,
    /// CPUs the vCPU may run on.
    pub hard_affinity: String,
    /// CPUs the vCPU prefers.
    pub soft_affinity: String,
    /// The node of each of Xen's own per-vCPU structures.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
}

/// A list of numbers in xl's range syntax: `0-1,3`.
fn ranges(mut v: Vec<u32>) -> String {
    v.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j { v[i].to_string() } else { format!("{}-{}", v[i], v[j]) });
        i = j + 1;
    }
    out.join(",")
}

/// The instrument names the vCPU's hardware control structure after the
/// CPU's vendor (AMD's VMCB, Intel's VMCS); the report names it the same
/// on both, so that one snapshot holds on any KVM host and under TCG.
fn vendor_neutral(object: &str) -> &str {
    match object {
        "vmcb" | "vmcs" => "vmcb/vmcs",
        other => other,
    }
}

impl Report {
    pub fn new(topology: &Topology, scenario: &Scenario, booted: Booted, steps: &[Step]) -> Result<Report> {
        if let Some(s) = steps.iter().find(|s| s.rc != 0) {
            bail!(
                "scenario step `{} {}` failed (exit status {}):\n    {}",
                s.kind,
                s.name,
                s.rc,
                s.output.join("\n    ")
            );
        }
        let section = |name: &str| steps.iter().find(|s| s.kind == StepKind::Collect && s.name == name).map(|s| &s.output);
        let info = section("xl-info").map(|o| parse::xl_info(o)).transpose().context("parsing `xl info -n`")?;
        let list = section("xl-list").map(|o| parse::xl_list(o)).transpose().context("parsing `xl list -n`")?;
        let vcpus = section("xl-vcpu-list").map(|o| parse::xl_vcpu_list(o)).transpose().context("parsing `xl vcpu-list`")?;
        let dump = section("debug-key-u").map(|o| parse::debug_key_u(o)).transpose().context("parsing the `u` debug key")?;

        let verdicts = |kind: StepKind| -> BTreeMap<String, Vec<String>> {
            steps
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| {
                    let lines = s.output.iter().filter(|l| ["PASS", "FAIL", "GAP"].iter().any(|w| l.starts_with(w)));
                    (s.name.clone(), lines.cloned().collect())
                })
                .collect()
        };
        let mut report = Report {
            base: booted.base,
            topology: topology.name.clone(),
            scenario: scenario.name.clone(),
            description: scenario.description.trim().to_string(),
            build: booted.build,
            xen_tree: booted.xen_tree,
            dom0_kernel: booted.dom0_kernel,
            busybox: booted.busybox,
            xen_version: info.as_ref().map(|i| i.xen_version.clone()),
            nodes: Vec::new(),
            domains: Vec::new(),
            checks: verdicts(StepKind::Check),
            churn: Vec::new(),
            refused: verdicts(StepKind::Refuse),
            measure: Vec::new(),
        };
        for step in steps.iter().filter(|s| s.kind == StepKind::Measure) {
            report.measure.push(measure(scenario, step).with_context(|| format!("measure step {}", step.name))?);
        }
        for step in steps.iter().filter(|s| s.kind == StepKind::Churn) {
            report.churn.push(churn(step).with_context(|| format!("churn step {}", step.name))?);
        }
        // Each CPU's node: from `xl info -n`, or where xl leaves CPUs out
        // (see parse::xl_info), from the `u` debug key.
        let cpu_nodes: Vec<(u32, u32)> = match (&info, &dump) {
            (Some(i), Some(d)) if i.cpus.len() < i.nr_cpus as usize => d.cpu_nodes.clone(),
            (Some(i), _) => i.cpus.iter().map(|c| (c.cpu, c.node)).collect(),
            _ => Vec::new(),
        };
        if let Some(info) = &info {
            for n in &info.numa {
                let cpus = cpu_nodes.iter().filter(|(_, node)| *node == n.node).map(|(c, _)| *c).collect();
                report.nodes.push(Node {
                    node: n.node,
                    cpus: ranges(cpus),
                    memory_mib: n.memsize_mib,
                    free_mib: n.memfree_mib,
                    distances: n.distances.clone(),
                    fallback: None,
                });
            }
        }
        for (node, order) in dump.iter().flat_map(|d| &d.fallback) {
            let Some(n) = report.nodes.iter_mut().find(|n| n.node == *node) else {
                bail!("the `u` debug key gives a fallback order for node {node}, which `xl info -n` does not list");
            };
            n.fallback = Some(order.clone());
        }
        check_fallback_order(&report.nodes)?;

        // Domains by ID, from whichever sources were collected.
        let mut domains: BTreeMap<u32, Domain> = BTreeMap::new();
        fn entry<'a>(domains: &'a mut BTreeMap<u32, Domain>, id: u32, name: &str) -> &'a mut Domain {
            domains.entry(id).or_insert_with(|| Domain {
                name: name.to_string(),
                id,
                node_affinity: None,
                node_affinity_is: None,
                vcpus: Vec::new(),
                pages_per_node: None,
                objects: BTreeMap::new(),
                vcpu_objects_not_listed: None,
            })
        }
        for l in list.iter().flatten() {
            entry(&mut domains, l.id, &l.name).node_affinity = Some(l.node_affinity.clone());
        }
        for v in vcpus.iter().flatten() {
            entry(&mut domains, v.id, &v.domain).vcpus.push(Vcpu {
                vcpu: v.vcpu,
                hard_affinity: v.hard.clone(),
                soft_affinity: v.soft.clone(),
                objects: BTreeMap::new(),
            });
        }
        for d in dump.iter().flat_map(|d| &d.domains) {
            let name = if d.id == 0 { "Domain-0" } else { "" };
            let dom = entry(&mut domains, d.id, name);
            dom.pages_per_node = Some(d.pages.iter().copied().collect());
            dom.vcpu_objects_not_listed = d.vcpus_not_listed.map(|(first, last)| format!("{first}-{last}"));
            if let Some((nodes, mode)) = &d.node_affinity {
                if dom.node_affinity.is_none() {
                    dom.node_affinity = Some(nodes.clone());
                }
                dom.node_affinity_is = Some(mode.clone());
            }
            for (vcpu, object, node) in &d.objects {
                let objects = match vcpu {
                    None => &mut dom.objects,
                    Some(n) => match dom.vcpus.iter_mut().find(|v| v.vcpu == *n) {
                        Some(v) => &mut v.objects,
                        None => bail!("the `u` debug key names d{}v{n}, which `xl vcpu-list` does not list", d.id),
                    },
                };
                objects.insert(vendor_neutral(object).to_string(), node.clone());
            }
        }
        // The debug key lists every domain, including ones xl did not list
        // (being destroyed, or system domains): keep only named ones.
        report.domains = domains.into_values().filter(|d| !d.name.is_empty()).collect();
        let alive = scenario.alive_at_end();
        for d in &scenario.domains {
            let listed = report.domains.iter().any(|r| r.name == d.name);
            if alive.contains(&d.name) && !listed {
                bail!("domain {} was created but is not in the results", d.name);
            }
            if !alive.contains(&d.name) && listed {
                bail!("domain {} was destroyed by the scenario's plan but is still there", d.name);
            }
        }
        Ok(report)
    }
}

/// A measure step's result, from the lines dom0's init printed: every
/// domain it names, in its order, with as many rounds as it repeats.
fn measure(scenario: &Scenario, step: &Step) -> Result<Measure> {
    let m = parse::measured(&step.output)?;
    let ms = |ns: u64| (ns as f64 / 1e3).round() / 1e3;
    let mut domains = Vec::new();
    for name in step.name.split(',') {
        let d = scenario
            .domains
            .iter()
            .find(|d| d.name == name)
            .with_context(|| format!("the step names domain {name:?}, which the scenario does not define"))?;
        let rounds: Vec<_> = m.rounds.iter().filter(|(n, _)| n == name).map(|(_, r)| r).collect();
        if rounds.len() != m.repeats as usize {
            bail!("{} rounds of {name} were measured, not {}", rounds.len(), m.repeats);
        }
        domains.push(MeasuredDomain {
            name: name.to_string(),
            kind: d.kind,
            vcpus: d.vcpus,
            memory_mib: d.memory_mib,
            create_ms: rounds.iter().map(|r| ms(r.create_ns)).collect(),
            destroy_ms: rounds.iter().map(|r| ms(r.destroy_ns)).collect(),
            xen_pages: rounds.iter().map(|r| r.pages_taken as i64 - r.domain_pages as i64).collect(),
        });
    }
    if let Some((name, _)) = m.rounds.iter().find(|(n, _)| !domains.iter().any(|d| &d.name == n)) {
        bail!("a round of {name}, which the step does not name");
    }
    Ok(Measure { repeats: m.repeats, clock: m.clock, domains })
}

/// A churn step's result, from the lines dom0's init printed.
fn churn(step: &Step) -> Result<Churn> {
    let c = parse::churn(&step.output)?;
    let nodes = |v: &[(u32, u64)]| v.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    if nodes(&c.before) != nodes(&c.after) {
        bail!("the free pages before ({:?}) and after ({:?}) name different nodes", c.before, c.after);
    }
    let pages_lost = c.before.iter().zip(&c.after).map(|((n, b), (_, a))| (*n, *b as i64 - *a as i64)).collect();
    let churn = Churn { cycles: c.cycles, domains: c.domains, pages_lost };
    if churn.pages_lost.values().any(|&l| l != 0) {
        bail!(
            "{}; every node's free pages must end where they started, so Xen leaks memory when these domains \
             are destroyed (README, \"Churn\", says how to find what it keeps)",
            churn.summary()
        );
    }
    Ok(churn)
}

impl Churn {
    /// One line for people: what each node kept over the rounds.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self.pages_lost.iter().map(|(n, l)| format!("node {n}: {l}")).collect();
        format!(
            "{} rounds of {}: free pages kept by Xen (before minus after) {}",
            self.cycles,
            self.domains.join(", "),
            nodes.join(", ")
        )
    }
}

/// Checks each node's fallback order, where Xen printed one, against the
/// distances Xen reports: the other nodes with memory, nearest first, the
/// lowest ID on a tie (what the series' page allocator patch promises).
fn check_fallback_order(nodes: &[Node]) -> Result<()> {
    for node in nodes {
        let Some(order) = &node.fallback else { continue };
        let distance = |to: u32| node.distances.get(to as usize).copied().unwrap_or(u32::MAX);
        let mut expected: Vec<u32> =
            nodes.iter().filter(|n| n.node != node.node && n.memory_mib > 0).map(|n| n.node).collect();
        expected.sort_by_key(|&n| (distance(n), n));
        if *order != expected {
            bail!(
                "Xen falls back from node {} to nodes {order:?}, but the distances it reports from that node \
                 ({:?}) put the other nodes with memory in the order {expected:?}",
                node.node,
                node.distances
            );
        }
    }
    Ok(())
}

/// Reports side by side: one column per report, one row per fact.
pub fn table(reports: &[&Report]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut set = |label: String, col: usize, value: String| {
        let i = match rows.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                rows.push((label, vec![String::new(); reports.len()]));
                rows.len() - 1
            }
        };
        rows[i].1[col] = value;
    };
    for (c, r) in reports.iter().enumerate() {
        set("Xen".into(), c, r.xen_version.clone().unwrap_or_default());
        for n in &r.nodes {
            set(format!("node {}: CPUs", n.node), c, n.cpus.clone());
            set(format!("node {}: memory, free (MiB)", n.node), c, format!("{}, {}", n.memory_mib, n.free_mib));
            set(
                format!("node {}: distances", n.node),
                c,
                n.distances.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
            );
        }
        for (name, lines) in &r.checks {
            let passed = lines.iter().filter(|l| l.starts_with("PASS")).count();
            set(format!("check {name}"), c, format!("{passed} of {} passed", lines.len()));
        }
        for d in &r.domains {
            let who = format!("{} (d{})", d.name, d.id);
            let mut affinity = d.node_affinity.clone().unwrap_or_else(|| "?".into());
            if let Some(is) = &d.node_affinity_is {
                affinity = format!("{affinity} ({is})");
            }
            set(format!("{who}: node affinity"), c, affinity);
            let objects = |o: &BTreeMap<String, String>| {
                o.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
            };
            if !d.objects.is_empty() {
                set(format!("{who}: objects' nodes"), c, objects(&d.objects));
            }
            if let Some(p) = &d.pages_per_node {
                let v: Vec<String> = p.iter().map(|(n, pages)| format!("{n}:{pages}")).collect();
                set(format!("{who}: pages per node"), c, v.join(" "));
            }
            for v in &d.vcpus {
                set(
                    format!("{who}: vCPU {} hard / soft", v.vcpu),
                    c,
                    format!("{} / {}", v.hard_affinity, v.soft_affinity),
                );
                if !v.objects.is_empty() {
                    set(format!("{who}: vCPU {} objects' nodes", v.vcpu), c, objects(&v.objects));
                }
            }
        }
    }
    let header: Vec<String> = reports
        .iter()
        .map(|r| match &r.xen_tree {
            Some(tree) => format!("{} ({tree})", r.build),
            None => r.build.clone(),
        })
        .collect();
    let w0 = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(8);
    let widths: Vec<usize> = (0..reports.len())
        .map(|c| rows.iter().map(|(_, v)| v[c].len()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    if let Some(r) = reports.first() {
        out.push_str(&format!(
            "base {}, topology {}, scenario {}\n{}\n\n",
            r.base, r.topology, r.scenario, r.description
        ));
    }
    let line = |label: &str, values: &[String]| {
        let mut s = format!("{label:<w0$}");
        for (v, w) in values.iter().zip(&widths) {
            s.push_str(&format!("  {v:<w$}"));
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line("", &header));
    out.push_str(&line(&"-".repeat(w0), &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()));
    for (label, values) in &rows {
        out.push_str(&line(label, values));
    }
    out
}

/// The main job's YAML: the reports of one topology and scenario, by build.
pub fn comparison_yaml(reports: &[&Report]) -> Result<String> {
    let by_build: BTreeMap<&str, &Report> = reports.iter().map(|r| (r.build.as_str(), *r)).collect();
    Ok(yaml_serde::to_string(&by_build)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{console, paths};

    fn booted(build: &str) -> Booted {
        Booted {
            base: "stable-4.17".into(),
            build: build.into(),
            xen_tree: None,
            dom0_kernel: "linux-image-6.1.0-56-amd64 6.1.192-2".into(),
            busybox: "1:1.35.0-4+deb12u1+b1".into(),
        }
    }

    fn report(topology: &str, fixture: &str) -> Report {
        let t = Topology::load(&paths::images_dir().join(format!("topologies/{topology}.yaml"))).unwrap();
        let s = Scenario::load(&paths::default_scenario(), &t).unwrap();
        let text = std::fs::read_to_string(paths::repo().join("harness/tests/fixtures").join(fixture)).unwrap();
        Report::new(&t, &s, booted("baseline"), &console::result_block(&text).unwrap()).unwrap()
    }

    /// With one core per socket, `xl info -n` lists no CPU (Xen does not
    /// know their cores); the node's CPUs come from the `u` debug key.
    #[test]
    fn four_node_cpus_from_debug_key() {
        let r = report("four-node", "four-node-default-4.17.console.log");
        let cpus: Vec<&str> = r.nodes.iter().map(|n| n.cpus.as_str()).collect();
        assert_eq!(cpus, ["0", "1", "2", "3"]);
        assert_eq!(r.nodes[3].distances, [29, 23, 17, 10]);
        // Without the series, libxl's placement never sees that the
        // domain may only run on node 1: it picks nodes 0 and 2.
        let d1 = &r.domains[1];
        assert_eq!((d1.name.as_str(), d1.node_affinity.as_deref()), ("pinned-node1", Some("0,2")));
        assert_eq!(d1.pages_per_node.as_ref().unwrap().values().copied().collect::<Vec<_>>(), [25600, 0, 25600, 0]);
        assert_eq!((d1.vcpus[0].hard_affinity.as_str(), d1.vcpus[0].soft_affinity.as_str()), ("1", "0,2"));
    }

    #[test]
    fn two_node_table() {
        let r = report("two-node", "two-node-default-4.17.console.log");
        let t = table(&[&r]);
        // The value of the row labelled `label` (columns are padded to the
        // longest label).
        let row = |label: &str| {
            t.lines().find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with("  ")).map(str::trim)).unwrap_or_else(|| panic!("no row {label:?} in\n{t}"))
        };
        assert_eq!(row("pinned-node1 (d1): node affinity"), "0 (explicit)");
        assert_eq!(row("pinned-node1 (d1): vCPU 1 hard / soft"), "2-3 / 0-1");
        assert_eq!(row("pinned-node1 (d1): pages per node"), "0:51200 1:0");
        assert_eq!(row("node 1: CPUs"), "2-3");
    }

    /// A failed scenario step is an error carrying xl's message, not a
    /// report with a domain missing.
    #[test]
    fn failed_step_is_an_error() {
        let t = Topology::load(&paths::default_topology()).unwrap();
        let s = Scenario::load(&paths::default_scenario(), &t).unwrap();
        let steps = [console::Step {
            kind: console::StepKind::Create,
            name: "pinned-node1".into(),
            rc: 3,
            output: vec!["libxl: error: cannot allocate".into()],
        }];
        let err = Report::new(&t, &s, booted("patched"), &steps).unwrap_err().to_string();
        assert_eq!(err, "scenario step `create pinned-node1` failed (exit status 3):\n    libxl: error: cannot allocate");
    }

    /// The domains in the results must be exactly those the plan leaves:
    /// one it destroyed and that is still listed is an error (a leak), as
    /// is one it created and that is not.
    #[test]
    fn plan_decides_which_domains_must_be_there() {
        let t = Topology::load(&paths::default_topology()).unwrap();
        let s: Scenario = crate::config::parse_yaml(
            "description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100}\n\
             - {name: b, type: pv, vcpus: 1, memory_mib: 100}\nplan: [{create: a}, {destroy: a}, {create: b}]\n\
             collect: [xl-list]\n",
        )
        .unwrap();
        let list = |names: &[(&str, u32)]| {
            let mut out = vec!["Name                                        ID   Mem VCPUs\tState\tTime(s)\tNODE Affinity".to_string()];
            out.extend(names.iter().map(|(n, id)| format!("{n:<40}{id:>6}   100     1     --p---       0.0 all")));
            [console::Step { kind: console::StepKind::Collect, name: "xl-list".into(), rc: 0, output: out }]
        };
        assert!(Report::new(&t, &s, booted("patched"), &list(&[("Domain-0", 0), ("b", 2)])).is_ok());
        let err = Report::new(&t, &s, booted("patched"), &list(&[("Domain-0", 0), ("a", 1), ("b", 2)])).unwrap_err();
        assert_eq!(err.to_string(), "domain a was destroyed by the scenario's plan but is still there");
        let err = Report::new(&t, &s, booted("patched"), &list(&[("Domain-0", 0)])).unwrap_err();
        assert_eq!(err.to_string(), "domain b was created but is not in the results");
    }

    #[test]
    fn ranges_like_xl() {
        assert_eq!(ranges(vec![3, 0, 1]), "0-1,3");
        assert_eq!(ranges(vec![2]), "2");
        assert_eq!(ranges(vec![]), "");
    }

    /// The fallback order is checked against the distances: nearest
    /// first, the lowest ID on a tie, nodes without memory left out.
    #[test]
    fn fallback_order_follows_the_distances() {
        // unequal-nodes: a ring whose node 3 has a CPU and no memory.
        let dist = [[10, 32, 16, 21], [32, 10, 21, 16], [16, 21, 10, 32], [21, 16, 32, 10]];
        let node = |n: u32, memory_mib: u64, fallback: &[u32]| Node {
            node: n,
            cpus: String::new(),
            memory_mib,
            free_mib: 0,
            distances: dist[n as usize].to_vec(),
            fallback: Some(fallback.to_vec()),
        };
        let mut nodes =
            vec![node(0, 1024, &[2, 1]), node(1, 768, &[2, 0]), node(2, 768, &[0, 1]), node(3, 0, &[1, 0, 2])];
        check_fallback_order(&nodes).unwrap();
        // By ID, as Xen did before the series' patch: refused, naming why.
        nodes[0].fallback = Some(vec![1, 2]);
        assert_eq!(
            check_fallback_order(&nodes).unwrap_err().to_string(),
            "Xen falls back from node 0 to nodes [1, 2], but the distances it reports from that node \
             ([10, 32, 16, 21]) put the other nodes with memory in the order [2, 1]"
        );
        // A tie goes to the lower ID; nodes without an order are not checked.
        let tie = |n: u32, fallback: Option<Vec<u32>>| Node { fallback, distances: vec![10, 20, 20], ..node(n, 512, &[]) };
        check_fallback_order(&[tie(0, Some(vec![1, 2])), tie(1, None), tie(2, None)]).unwrap();
        assert!(check_fallback_order(&[tie(0, Some(vec![2, 1])), tie(1, None), tie(2, None)]).is_err());
    }

    /// A churn step's numbers: what each node kept, by node, which must be nothing.
    #[test]
    fn churn_fails_on_any_page_kept_or_gained() {
        let step = |after0: u64| Step {
            kind: StepKind::Churn,
            name: "a,b".into(),
            rc: 0,
            output: ["cycles 5", "domains a b", "seconds 33", "before NODE0 157840", "before NODE1 228868"]
                .iter()
                .map(|l| l.to_string())
                .chain([format!("after NODE0 {after0}"), "after NODE1 228868".to_string()])
                .collect(),
        };
        let c = churn(&step(157840)).unwrap();
        assert_eq!((c.cycles, c.domains.len(), c.pages_lost.clone().into_iter().collect::<Vec<_>>()), (5, 2, vec![(0, 0), (1, 0)]));
        assert_eq!(c.summary(), "5 rounds of a, b: free pages kept by Xen (before minus after) node 0: 0, node 1: 0");
        let leak = churn(&step(157831)).unwrap_err().to_string();
        assert!(leak.starts_with("5 rounds of a, b: free pages kept by Xen (before minus after) node 0: 9, node 1: 0;"), "{leak}");
        assert!(churn(&step(157841)).unwrap_err().to_string().contains("node 0: -1,"));
        let mut other = step(1);
        other.output[6] = "after NODE2 1".into();
        assert!(churn(&other).unwrap_err().to_string().contains("name different nodes"));
    }

    /// A measure step from a real boot (master, patched, two-node): each
    /// domain's rounds in order, Xen's pages beyond the domain's own the
    /// same in every round, and a step that lost a round is refused.
    #[test]
    fn measure_step_from_a_real_boot() {
        let text = include_str!("../tests/fixtures/two-node-creation-cost-master-patched.console.log");
        let images = crate::paths::images_dir();
        let t = Topology::load(&images.join("topologies/two-node.yaml")).unwrap();
        let s = Scenario::load(&images.join("scenarios/creation-cost.yaml"), &t).unwrap();
        let steps = crate::console::result_block(text).unwrap();
        let r = Report::new(&t, &s, booted("patched"), &steps).unwrap();
        let [m] = &r.measure[..] else { panic!("one measure step: {:?}", r.measure) };
        assert_eq!((m.repeats, m.clock.as_str()), (20, "timer_list"));
        let names: Vec<_> = m.domains.iter().map(|d| (d.name.as_str(), d.vcpus, d.create_ms.len(), d.destroy_ms.len())).collect();
        assert_eq!(names, [("cost-pvh-1vcpu", 1, 20, 20), ("cost-pvh-4vcpus", 4, 20, 20)]);
        // Under TCG `xl create -p` of a small PVH domain takes a few hundred ms.
        assert!(m.domains.iter().flat_map(|d| &d.create_ms).all(|&ms| (100.0..2000.0).contains(&ms)));
        // 352 pages beyond the domain's 64 MiB for one vCPU, 1154 for four:
        // libxl sizes the HAP pool at 1 MiB per vCPU (256 pages), and Xen
        // adds each vCPU's own structures.
        assert!(m.domains[0].xen_pages.iter().all(|&p| p == 352), "{:?}", m.domains[0].xen_pages);
        assert!(m.domains[1].xen_pages.iter().all(|&p| p == 1154), "{:?}", m.domains[1].xen_pages);

        let mut short = steps.clone();
        let step = short.iter_mut().find(|s| s.kind == StepKind::Measure).unwrap();
        let last = step.output.iter().rposition(|l| l.starts_with("round cost-pvh-4vcpus ")).unwrap();
        step.output.remove(last);
        let e = format!("{:#}", Report::new(&t, &s, booted("patched"), &short).unwrap_err());
        assert!(e.contains("19 rounds of cost-pvh-4vcpus were measured, not 20"), "{e}");
        let mut bad = steps.clone();
        let step = bad.iter_mut().find(|s| s.kind == StepKind::Measure).unwrap();
        step.output[1] = "clock sundial".into();
        let e = format!("{:#}", Report::new(&t, &s, booted("patched"), &bad).unwrap_err());
        assert!(e.contains("malformed measure step line \"clock sundial\""), "{e}");
    }
}
