//! Scenarios: the domains dom0 creates in one boot and what it collects,
//! loaded from YAML and turned into the files dom0's init runs.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::patch::Flavor;
use crate::topology::Topology;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows, for people.
    pub description: String,
    /// Added to Xen's command line for this scenario's boots.
    #[serde(default)]
    pub xen_cmdline: Vec<String>,
    /// Boots Xen with FLASK in this mode (`xsm=flask flask=<mode>`) and the
    /// build's policy: Xen's example policy plus `qemu-images/flask/`.
    pub flask: Option<FlaskMode>,
    /// The builds the scenario runs on (default: both), for scenarios that
    /// need what only the series provides.
    #[serde(default = "all_builds")]
    pub builds: Vec<Flavor>,
    /// Pins dom0's vCPUs (`xl vcpu-pin Domain-0 all ...`) before anything is
    /// created, so that the toolstack's hypercalls run on known CPUs.
    pub dom0_hard_affinity: Option<Affinity>,
    /// The claim that the series changes nothing here: the test fails if
    /// the patched build's report differs from the baseline's.
    #[serde(default)]
    pub patched_matches_baseline: bool,
    /// Test programs dom0 runs before creating the domains; each must exit
    /// 0, and its output lines starting `PASS` or `FAIL` go in the report.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Created paused with `xl create -p`, in order (domain IDs 1, 2, ...).
    #[serde(default)]
    pub domains: Vec<Domain>,
    /// What dom0 collects after creating the domains.
    #[serde(default = "Collect::all")]
    pub collect: Vec<Collect>,
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
}

fn all_builds() -> Vec<Flavor> {
    Flavor::ALL.to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlaskMode {
    Enforcing,
    Permissive,
}

impl FlaskMode {
    /// Xen's command line for this mode.
    pub fn xen_cmdline(self) -> [&'static str; 2] {
        match self {
            FlaskMode::Enforcing => ["xsm=flask", "flask=enforcing"],
            FlaskMode::Permissive => ["xsm=flask", "flask=permissive"],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// The program and its arguments, as dom0 runs it.
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DomainType,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// xl's `cpus`: where the vCPUs may run.
    pub hard_affinity: Option<Affinity>,
    /// xl's `cpus_soft`: where the vCPUs prefer to run.
    pub soft_affinity: Option<Affinity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Paravirtualised.
    Pv,
    /// HVM without device model; needs no QEMU in dom0.
    Pvh,
}

/// A set of host CPUs, given as whole NUMA nodes (`nodes: [1]`) or as CPUs
/// (`cpus: [2, 3]`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub nodes: Option<Vec<u32>>,
    pub cpus: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Collect {
    /// `xl info -n`: nodes, their CPUs, memory and distances.
    XlInfo,
    /// `xl list -n`: domains and their node affinity.
    XlList,
    /// `xl vcpu-list`: each vCPU's hard and soft affinity.
    XlVcpuList,
    /// The `u` debug key through `xl debug-keys u` and `xl dmesg`: pages per
    /// node for each domain.
    DebugKeyU,
}

impl Collect {
    fn all() -> Vec<Collect> {
        vec![Collect::XlInfo, Collect::XlList, Collect::XlVcpuList, Collect::DebugKeyU]
    }

    /// The section name in the result block and the command dom0 runs.
    pub fn section(self) -> (&'static str, &'static str) {
        match self {
            Collect::XlInfo => ("xl-info", "xl info -n"),
            Collect::XlList => ("xl-list", "xl list -n"),
            Collect::XlVcpuList => ("xl-vcpu-list", "xl vcpu-list"),
            Collect::DebugKeyU => ("debug-key-u", "debug_key u"),
        }
    }
}

impl Scenario {
    pub fn load(path: &Path, topology: &Topology) -> Result<Scenario> {
        let mut s: Scenario = crate::config::load_yaml(path)?;
        s.name = crate::config::stem(path)?;
        s.path = path.to_path_buf();
        s.validate(topology).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(s)
    }

    fn validate(&self, topology: &Topology) -> Result<()> {
        if self.patched_matches_baseline && !Flavor::ALL.iter().all(|f| self.builds.contains(f)) {
            bail!("field `patched_matches_baseline`: needs both builds in `builds`");
        }
        if self.builds.is_empty() {
            bail!("field `builds`: no build to run on; leave it out to run on both");
        }
        for (i, c) in self.checks.iter().enumerate() {
            if !is_name(&c.name) {
                bail!("field `checks[{i}].name`: {:?} is not a name (letters, digits and `-`)", c.name);
            }
            if c.command.is_empty() {
                bail!("field `checks[{i}].command`: empty");
            }
            if let Some(w) = c.command.iter().find(|w| w.chars().any(|ch| "'\"\\$`;&|<> \n".contains(ch))) {
                bail!("field `checks[{i}].command`: {w:?}: words may not hold spaces or shell characters");
            }
        }
        if let Some(a) = &self.dom0_hard_affinity {
            validate_affinity(a, topology, "dom0_hard_affinity")?;
        }
        let mut seen = BTreeMap::new();
        for (i, d) in self.domains.iter().enumerate() {
            let at = |f: &str| format!("field `domains[{i}].{f}`");
            if !is_name(&d.name) {
                bail!("{}: {:?} is not a domain name (letters, digits and `-`)", at("name"), d.name);
            }
            if let Some(j) = seen.insert(d.name.clone(), i) {
                bail!("{}: {:?} is also the name of domains[{j}]", at("name"), d.name);
            }
            if d.vcpus == 0 {
                bail!("{}: a domain needs at least one vCPU", at("vcpus"));
            }
            if d.memory_mib == 0 {
                bail!("{}: a domain needs memory", at("memory_mib"));
            }
            for (field, aff) in [("hard_affinity", &d.hard_affinity), ("soft_affinity", &d.soft_affinity)] {
                if let Some(aff) = aff {
                    validate_affinity(aff, topology, &format!("domains[{i}].{field}"))?;
                }
            }
        }
        if self.collect.is_empty() {
            bail!("field `collect`: nothing to collect; list at least one of xl-info, xl-list, xl-vcpu-list, debug-key-u");
        }
        Ok(())
    }

    pub fn runs_on(&self, flavor: Flavor) -> bool {
        self.builds.contains(&flavor)
    }

    /// The files dom0's init runs: `plan.sh` (the steps, calling the
    /// functions `create` and `collect` that init defines) and one xl
    /// configuration per domain under `domains/`.
    pub fn dom0_files(&self) -> Vec<(String, String)> {
        let mut files = Vec::new();
        let mut plan = format!("# Generated by the harness from scenario {}.\n", self.name);
        if let Some(a) = &self.dom0_hard_affinity {
            writeln!(plan, "pin_dom0 {}", a.xl()).unwrap();
        }
        for c in &self.checks {
            writeln!(plan, "check {} {}", c.name, c.command.join(" ")).unwrap();
        }
        for d in &self.domains {
            files.push((format!("domains/{}.cfg", d.name), d.xl_config()));
            writeln!(plan, "create {}", d.name).unwrap();
        }
        for c in &self.collect {
            let (section, command) = c.section();
            writeln!(plan, "collect {section} {command}").unwrap();
        }
        files.push(("plan.sh".into(), plan));
        files
    }
}

impl Domain {
    fn xl_config(&self) -> String {
        let kind = match self.kind {
            DomainType::Pv => "pv",
            DomainType::Pvh => "pvh",
        };
        let mut cfg = format!(
            "name = \"{}\"\ntype = \"{kind}\"\nkernel = \"{}\"\n\
             memory = {}\nvcpus = {}\n",
            self.name,
            crate::guest_kernel::PATH,
            self.memory_mib,
            self.vcpus
        );
        if let Some(a) = &self.hard_affinity {
            writeln!(cfg, "cpus = \"{}\"", a.xl()).unwrap();
        }
        if let Some(a) = &self.soft_affinity {
            writeln!(cfg, "cpus_soft = \"{}\"", a.xl()).unwrap();
        }
        cfg
    }
}

/// Domain and check names: they become file names and words in dom0's
/// shell script.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// One affinity's nodes or CPUs exist in the topology; `field` is its path.
fn validate_affinity(aff: &Affinity, topology: &Topology, field: &str) -> Result<()> {
    let at = |f: &str| format!("field `{field}{f}`");
    match (&aff.nodes, &aff.cpus) {
        (Some(nodes), None) => {
            if nodes.is_empty() {
                bail!("{}: an empty node list", at(""));
            }
            if let Some(n) = nodes.iter().find(|&&n| n as usize >= topology.nodes.len()) {
                bail!(
                    "{}: node {n}, but topology {} has only nodes 0-{}",
                    at(".nodes"),
                    topology.name,
                    topology.nodes.len() - 1
                );
            }
        }
        (None, Some(cpus)) => {
            if cpus.is_empty() {
                bail!("{}: an empty CPU list", at(""));
            }
            if let Some(c) = cpus.iter().find(|&&c| c >= topology.total_cpus()) {
                bail!(
                    "{}: CPU {c}, but topology {} has only CPUs 0-{}",
                    at(".cpus"),
                    topology.name,
                    topology.total_cpus() - 1
                );
            }
        }
        _ => bail!("{}: give either `nodes` or `cpus`", at("")),
    }
    Ok(())
}

impl Affinity {
    /// xl's CPU list syntax: `node:1,node:2` or `2,3`.
    fn xl(&self) -> String {
        let list: Vec<String> = match (&self.nodes, &self.cpus) {
            (Some(nodes), _) => nodes.iter().map(|n| format!("node:{n}")).collect(),
            (None, cpus) => cpus.iter().flatten().map(|c| c.to_string()).collect(),
        };
        list.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths;

    fn two_node() -> Topology {
        Topology::load(&paths::images_dir().join("topologies/two-node.yaml")).unwrap()
    }

    fn parse(text: &str) -> Result<Scenario> {
        let s: Scenario = crate::config::parse_yaml(text).map_err(|e| anyhow::anyhow!(e))?;
        s.validate(&two_node())?;
        Ok(s)
    }

    #[test]
    fn shipped_scenarios_load_on_every_topology() {
        for t in ["two-node", "four-node"] {
            let topology = Topology::load(&paths::images_dir().join(format!("topologies/{t}.yaml"))).unwrap();
            for entry in std::fs::read_dir(paths::images_dir().join("scenarios")).unwrap() {
                Scenario::load(&entry.unwrap().path(), &topology).unwrap();
            }
        }
    }

    #[test]
    fn dom0_files() {
        let s = parse(
            "description: x\ndomains:\n- {name: a, type: pv, vcpus: 2, memory_mib: 200, \
             hard_affinity: {nodes: [1]}, soft_affinity: {cpus: [0, 1]}}\ncollect: [xl-list, debug-key-u]\n",
        )
        .unwrap();
        let files = s.dom0_files();
        assert_eq!(files[0].0, "domains/a.cfg");
        assert_eq!(
            files[0].1,
            "name = \"a\"\ntype = \"pv\"\nkernel = \"/boot/numa-harness-guest\"\n\
             memory = 200\nvcpus = 2\ncpus = \"node:1\"\ncpus_soft = \"0,1\"\n"
        );
        assert_eq!(files[1].1.lines().skip(1).collect::<Vec<_>>(), ["create a", "collect xl-list xl list -n", "collect debug-key-u debug_key u"]);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert_eq!(
            err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 200, hard_affinity: {nodes: [2]}}\n"),
            "field `domains[0].hard_affinity.nodes`: node 2, but topology two-node has only nodes 0-1"
        );
        assert!(err("description: x\ndomains:\n- {name: a, type: hvm, vcpus: 1, memory_mib: 200}\n")
            .starts_with("field `domains[0].type`: unknown variant `hvm`, expected `pv` or `pvh`"));
        assert!(err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 200}\n- {name: a, type: pv, vcpus: 1, memory_mib: 200}\n")
            .starts_with("field `domains[1].name`: \"a\" is also"));
        assert_eq!(
            err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 200, soft_affinity: {nodes: [0], cpus: [1]}}\n"),
            "field `domains[0].soft_affinity`: give either `nodes` or `cpus`"
        );
        assert!(err("description: x\ncollect: [xl-dmesg]\n").starts_with("field `collect[0]`: unknown variant `xl-dmesg`"));
        assert!(err("description: x\ndomain: []\n").starts_with("unknown field `domain`"), "{}", err("description: x\ndomain: []\n"));
    }
}
