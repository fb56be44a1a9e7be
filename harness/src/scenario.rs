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
    /// CPU pools made before anything else: each takes its CPUs out of
    /// Pool-0 and is created with them.
    #[serde(default)]
    pub cpupools: Vec<Cpupool>,
    /// The domains, each created paused with `xl create -p`: in order, or
    /// when `plan` says.
    #[serde(default)]
    pub domains: Vec<Domain>,
    /// The order in which domains are created and destroyed (each domain
    /// created once at least); by default each is created in turn.
    /// Written `- create: NAME`, `- destroy: NAME`,
    /// `- churn: {cycles: N, domains: [NAME, ...]}`,
    /// `- refuse: {domain: NAME, error: WORDS}`,
    /// `- measure: {repeats: N, domains: [NAME, ...]}`.
    #[serde(default, with = "yaml_serde::with::singleton_map_recursive")]
    pub plan: Option<Vec<PlanStep>>,
    /// The topologies (file names) `cargo xtask test` runs the scenario on,
    /// for scenarios sized for them; by default every topology it fits.
    /// `boot` runs it on any topology it fits.
    pub topologies: Option<Vec<String>>,
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
pub struct Cpupool {
    pub name: String,
    /// Its CPUs, as nodes or CPUs.
    pub cpus: Affinity,
}

/// One step of a scenario's `plan`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PlanStep {
    /// `xl create -p` of the domain of this name.
    Create(String),
    /// `xl destroy` of it.
    Destroy(String),
    /// Domains created and destroyed in turn, over and over: every node's
    /// free pages must end as they started.
    Churn(Churn),
    /// `xl create -p` of a domain whose configuration Xen or the toolstack
    /// must refuse: the step fails unless the creation fails with `error`
    /// in its output, and leaves no new domain and every node's free pages
    /// as they were.
    Refuse(Refusal),
    /// Each domain created and destroyed `repeats` times, timing `xl
    /// create -p` and `xl destroy` and counting the pages Xen took beyond
    /// the domain's own while it existed.
    Measure(Measure),
}

/// A `measure` step: for each of `domains` in turn, one round not counted
/// (what Xen sets up once, and the page cache of dom0, do not count), then
/// `repeats` rounds, each from a quiet start: every node's free pages
/// stopped changing and nothing left to scrub.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    pub repeats: u32,
    /// The rounds `cargo xtask test` runs, where only what every round
    /// shows alike is compared (`repeats` by default); `repeats` is for
    /// `cargo xtask evidence`, which states medians and spreads.
    pub test_repeats: Option<u32>,
    pub domains: Vec<String>,
}

/// The most `repeats` a measure step may ask for: a round takes a few
/// seconds under TCG (it waits for quiet memory), and the boot has a
/// time limit.
pub const MAX_MEASURE_REPEATS: u32 = 40;

/// A `refuse` step: the domain to create and the words the error must
/// hold (the node it names, for a placement that cannot be honoured).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub domain: String,
    pub error: String,
}

/// A `churn` step: `cycles` rounds, each creating and destroying every one
/// of `domains` in order (alternate nodes and types there). One round more
/// runs first and is not counted: what Xen keeps once a domain has existed
/// at all (dom0's event channel buckets and maptrack grow) is no leak.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    pub cycles: u32,
    /// The rounds `cargo xtask test` runs (`cycles` by default): as many
    /// as it takes for a page kept per round to show.
    pub test_cycles: Option<u32>,
    pub domains: Vec<String>,
}

/// The most `cycles` a churn step may ask for: each round of a few domains
/// takes seconds under TCG, and the boot has a time limit.
pub const MAX_CHURN_CYCLES: u32 = 50;

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
    /// xl's `pool`: one of `cpupools`, or Pool-0 (the default).
    pub pool: Option<String>,
    /// Further lines for the domain's xl configuration, as written there
    /// (e.g. `vnuma = [...]`, or `cpus = ["2", "3"]`, whose per-vCPU form
    /// turns libxl's automatic placement off).
    #[serde(default)]
    pub xl: Vec<String>,
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
    /// A scenario to run on `topology`: well formed, and every node and CPU
    /// it names there (see [`Scenario::fits`]).
    pub fn load(path: &Path, topology: &Topology) -> Result<Scenario> {
        let s = Scenario::load_any(path)?;
        if let Err(why) = s.fits(topology) {
            bail!("{}: does not fit topology {} ({}): {why}", path.display(), topology.name, topology.path.display());
        }
        Ok(s)
    }

    /// A well-formed scenario, whatever topology it is for.
    pub fn load_any(path: &Path) -> Result<Scenario> {
        let mut s: Scenario = crate::config::load_yaml(path)?;
        s.name = crate::config::safe_stem(path)?;
        s.path = path.to_path_buf();
        s.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(s)
    }

    /// Whether the scenario can run on `topology`: the nodes and CPUs it
    /// names exist there, and the nodes it confines vCPUs to (dom0's or a
    /// domain's hard affinity) have CPUs. The `Err` says what is missing,
    /// naming the field; `cargo xtask test` skips the pair with it.
    pub fn fits(&self, topology: &Topology) -> Result<(), String> {
        if let Some(a) = &self.dom0_hard_affinity {
            a.fits(topology, "dom0_hard_affinity", true)?;
        }
        let mut pooled = std::collections::BTreeSet::new();
        for (i, p) in self.cpupools.iter().enumerate() {
            p.cpus.fits(topology, &format!("cpupools[{i}].cpus"), true)?;
            let cpus = p.cpus.cpu_set(topology);
            if let Some(c) = cpus.intersection(&pooled).next() {
                return Err(format!("field `cpupools[{i}].cpus`: CPU {c} is in an earlier pool too"));
            }
            pooled.extend(cpus);
        }
        let pool0: Vec<u32> = (0..topology.total_cpus()).filter(|c| !pooled.contains(c)).collect();
        if pool0.is_empty() {
            return Err("field `cpupools`: they leave Pool-0, where dom0 runs, no CPU".into());
        }
        if let Some(a) = &self.dom0_hard_affinity {
            if !a.cpu_set(topology).iter().any(|c| pool0.contains(c)) {
                return Err("field `dom0_hard_affinity`: none of its CPUs is left in Pool-0, where dom0 runs".into());
            }
        }
        for (i, d) in self.domains.iter().enumerate() {
            for (field, aff, runs_there) in
                [("hard_affinity", &d.hard_affinity, true), ("soft_affinity", &d.soft_affinity, false)]
            {
                if let Some(aff) = aff {
                    aff.fits(topology, &format!("domains[{i}].{field}"), runs_there)?;
                }
            }
            let pool_cpus: std::collections::BTreeSet<u32> = match self.cpupools.iter().find(|p| Some(&p.name) == d.pool.as_ref()) {
                Some(p) => p.cpus.cpu_set(topology),
                None => pool0.iter().copied().collect(),
            };
            if let Some(hard) = &d.hard_affinity {
                if hard.cpu_set(topology).is_disjoint(&pool_cpus) {
                    return Err(format!(
                        "field `domains[{i}].hard_affinity`: no CPU of it is in the domain's cpupool ({})",
                        d.pool.as_deref().unwrap_or("Pool-0")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `cargo xtask test` runs the scenario on `topology` (if it
    /// fits): its `topologies`, if it names them.
    pub fn made_for(&self, topology: &Topology) -> Result<(), String> {
        match &self.topologies {
            Some(names) if !names.contains(&topology.name) => Err(format!("field `topologies`: made for {} only", names.join(", "))),
            _ => Ok(()),
        }
    }

    /// The domains that exist after the last step of the plan.
    pub fn alive_at_end(&self) -> std::collections::BTreeSet<String> {
        let mut alive = std::collections::BTreeSet::new();
        for step in self.steps() {
            match step {
                PlanStep::Create(name) => alive.insert(name),
                PlanStep::Destroy(name) => alive.remove(&name),
                PlanStep::Churn(_) | PlanStep::Refuse(_) | PlanStep::Measure(_) => false,
            };
        }
        alive
    }

    /// The plan's steps: `plan`, or each domain created in turn.
    /// The scenario as `cargo xtask test` runs it: each churn and measure
    /// step with the rounds its snapshot needs (`test_cycles`,
    /// `test_repeats`) rather than those `cargo xtask evidence` takes.
    pub fn for_test(&self) -> Scenario {
        let mut s = self.clone();
        for step in s.plan.iter_mut().flatten() {
            match step {
                PlanStep::Churn(c) => c.cycles = c.test_cycles.unwrap_or(c.cycles),
                PlanStep::Measure(m) => m.repeats = m.test_repeats.unwrap_or(m.repeats),
                PlanStep::Create(_) | PlanStep::Destroy(_) | PlanStep::Refuse(_) => {}
            }
        }
        s
    }

    pub fn steps(&self) -> Vec<PlanStep> {
        match &self.plan {
            Some(plan) => plan.clone(),
            None => self.domains.iter().map(|d| PlanStep::Create(d.name.clone())).collect(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.patched_matches_baseline && !Flavor::ALL.iter().all(|f| self.builds.contains(f)) {
            bail!("field `patched_matches_baseline`: needs both builds in `builds`");
        }
        if self.builds.is_empty() {
            bail!("field `builds`: no build to run on; leave it out to run on both");
        }
        for (i, c) in self.checks.iter().enumerate() {
            if !is_name(&c.name) {
                bail!("field `checks[{i}].name`: {:?} is not a name ({NAME_RULE})", c.name);
            }
            if c.command.is_empty() {
                bail!("field `checks[{i}].command`: empty");
            }
            if let Some((j, w)) = c.command.iter().enumerate().find(|(j, w)| !is_plain_word(w, *j == 0)) {
                bail!(
                    "field `checks[{i}].command[{j}]`: {w:?}: dom0's shell runs the words as they stand, so each \
                     holds only letters, digits and `_./,:=+@%^-` (no `=` in the first)"
                );
            }
        }
        if let Some(a) = &self.dom0_hard_affinity {
            a.validate("dom0_hard_affinity")?;
        }
        let mut seen = BTreeMap::new();
        for (i, d) in self.domains.iter().enumerate() {
            let at = |f: &str| format!("field `domains[{i}].{f}`");
            if !is_name(&d.name) {
                bail!("{}: {:?} is not a domain name ({NAME_RULE})", at("name"), d.name);
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
                    aff.validate(&format!("domains[{i}].{field}"))?;
                }
            }
        }
        let mut pools = BTreeMap::new();
        for (i, p) in self.cpupools.iter().enumerate() {
            if !is_name(&p.name) || p.name == "Pool-0" {
                bail!("field `cpupools[{i}].name`: {:?} is not a name for a new pool ({NAME_RULE}; not Pool-0)", p.name);
            }
            if let Some(j) = pools.insert(p.name.clone(), i) {
                bail!("field `cpupools[{i}].name`: {:?} is also the name of cpupools[{j}]", p.name);
            }
            p.cpus.validate(&format!("cpupools[{i}].cpus"))?;
        }
        for (i, d) in self.domains.iter().enumerate() {
            if let Some(pool) = &d.pool {
                if pool != "Pool-0" && !pools.contains_key(pool) {
                    bail!("field `domains[{i}].pool`: no cpupool {pool:?} in `cpupools` (nor Pool-0)");
                }
            }
            for (j, line) in d.xl.iter().enumerate() {
                if line.trim().is_empty() || line.contains('\n') {
                    bail!("field `domains[{i}].xl[{j}]`: one line of xl configuration, not empty");
                }
            }
        }
        if let Some(plan) = &self.plan {
            let mut alive = BTreeMap::new();
            for (i, step) in plan.iter().enumerate() {
                let (name, creating) = match step {
                    PlanStep::Create(n) => (n, true),
                    PlanStep::Destroy(n) => (n, false),
                    PlanStep::Churn(c) => {
                        if c.cycles == 0 || c.cycles > MAX_CHURN_CYCLES {
                            bail!("field `plan[{i}].churn.cycles`: {} is not between 1 and {MAX_CHURN_CYCLES}", c.cycles);
                        }
                        if let Some(t) = c.test_cycles.filter(|&t| t == 0 || t > c.cycles) {
                            bail!("field `plan[{i}].churn.test_cycles`: {t} is not between 1 and `cycles` ({})", c.cycles);
                        }
                        if c.domains.is_empty() {
                            bail!("field `plan[{i}].churn.domains`: empty; name the domains to create and destroy");
                        }
                        for name in &c.domains {
                            if !seen.contains_key(name) {
                                bail!("field `plan[{i}].churn.domains`: no domain {name:?} in `domains`");
                            }
                            if alive.get(name) == Some(&true) {
                                bail!("field `plan[{i}].churn.domains`: {name:?} exists at this point of the plan");
                            }
                            // Created at least once: the churn does.
                            alive.entry(name.clone()).or_insert(false);
                        }
                        continue;
                    }
                    PlanStep::Measure(m) => {
                        if m.repeats == 0 || m.repeats > MAX_MEASURE_REPEATS {
                            bail!("field `plan[{i}].measure.repeats`: {} is not between 1 and {MAX_MEASURE_REPEATS}", m.repeats);
                        }
                        if let Some(t) = m.test_repeats.filter(|&t| t == 0 || t > m.repeats) {
                            bail!("field `plan[{i}].measure.test_repeats`: {t} is not between 1 and `repeats` ({})", m.repeats);
                        }
                        if m.domains.is_empty() {
                            bail!("field `plan[{i}].measure.domains`: empty; name the domains to measure");
                        }
                        for name in &m.domains {
                            if !seen.contains_key(name) {
                                bail!("field `plan[{i}].measure.domains`: no domain {name:?} in `domains`");
                            }
                            if alive.get(name) == Some(&true) {
                                bail!("field `plan[{i}].measure.domains`: {name:?} exists at this point of the plan");
                            }
                            alive.entry(name.clone()).or_insert(false);
                        }
                        continue;
                    }
                    PlanStep::Refuse(r) => {
                        if !seen.contains_key(&r.domain) {
                            bail!("field `plan[{i}].refuse.domain`: no domain {:?} in `domains`", r.domain);
                        }
                        if alive.get(&r.domain) == Some(&true) {
                            bail!("field `plan[{i}].refuse.domain`: {:?} exists at this point of the plan", r.domain);
                        }
                        if r.error.trim().is_empty() || r.error.chars().any(|c| c == '\n' || c == '\'') {
                            bail!(
                                "field `plan[{i}].refuse.error`: {:?}: give the words the error must hold, on one line, without `'`",
                                r.error
                            );
                        }
                        alive.entry(r.domain.clone()).or_insert(false);
                        continue;
                    }
                };
                if !seen.contains_key(name) {
                    bail!("field `plan[{i}]`: no domain {name:?} in `domains`");
                }
                let was = alive.insert(name.clone(), creating).unwrap_or(false);
                if creating && was {
                    bail!("field `plan[{i}]`: {name:?} is created again before it is destroyed");
                }
                if !creating && !was {
                    bail!("field `plan[{i}]`: {name:?} is destroyed before it is created");
                }
            }
            if let Some(d) = self.domains.iter().find(|d| !alive.contains_key(&d.name)) {
                bail!("field `plan`: domain {:?} is never created", d.name);
            }
        }
        if self.collect.is_empty() {
            bail!("field `collect`: nothing to collect; list at least one of xl-info, xl-list, xl-vcpu-list, debug-key-u");
        }
        if self.collect.contains(&Collect::DebugKeyU) && !self.collect.contains(&Collect::XlVcpuList) {
            // The report files each vCPU's structures under the vCPU.
            bail!("field `collect`: debug-key-u lists vCPUs' structures, which need xl-vcpu-list too");
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
        for p in &self.cpupools {
            writeln!(plan, "cpupool {} {}", p.name, p.cpus.xl()).unwrap();
        }
        for c in &self.checks {
            writeln!(plan, "check {} {}", c.name, c.command.join(" ")).unwrap();
        }
        for d in &self.domains {
            files.push((format!("domains/{}.cfg", d.name), d.xl_config()));
        }
        for step in self.steps() {
            match step {
                PlanStep::Create(name) => writeln!(plan, "create {name}").unwrap(),
                PlanStep::Destroy(name) => writeln!(plan, "destroy {name}").unwrap(),
                PlanStep::Churn(c) => writeln!(plan, "churn {} {}", c.cycles, c.domains.join(" ")).unwrap(),
                PlanStep::Refuse(r) => writeln!(plan, "refuse {} '{}'", r.domain, r.error).unwrap(),
                PlanStep::Measure(m) => writeln!(plan, "measure {} {}", m.repeats, m.domains.join(" ")).unwrap(),
            }
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
        if let Some(pool) = &self.pool {
            writeln!(cfg, "pool = \"{pool}\"").unwrap();
        }
        for line in &self.xl {
            writeln!(cfg, "{line}").unwrap();
        }
        cfg
    }
}

/// Domain and check names: they become file names and words in dom0's
/// shell script.
/// What [`is_name`] asks for, as error messages say it.
const NAME_RULE: &str = "letters, digits and `-`, not all digits, not starting with `-`";

/// A name for a domain, a cpupool or a check: letters, digits and `-`, not
/// all digits (xl would take it for an ID) and not starting with `-` (xl
/// would take it for an option).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.chars().all(|c| c.is_ascii_digit())
}

/// A word of a check's command, which dom0's shell runs as it stands: only
/// characters no shell gives a meaning to, and no assignment for a first
/// word.
fn is_plain_word(word: &str, first: bool) -> bool {
    !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "_./,:=+@%^-".contains(c))
        && !(first && word.contains('='))
}

impl Affinity {
    /// Exactly one of `nodes` and `cpus`, not empty; `field` is its path.
    fn validate(&self, field: &str) -> Result<()> {
        match (&self.nodes, &self.cpus) {
            (Some(list), None) | (None, Some(list)) if list.is_empty() => {
                let what = if self.nodes.is_some() { "node" } else { "CPU" };
                bail!("field `{field}`: an empty {what} list")
            }
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => bail!("field `{field}`: give either `nodes` or `cpus`"),
        }
    }

    /// The nodes or CPUs exist in `topology`; if vCPUs are confined to
    /// them (`runs_there`), they include a CPU.
    fn fits(&self, topology: &Topology, field: &str, runs_there: bool) -> Result<(), String> {
        let last_node = topology.nodes.len() - 1;
        if let Some(nodes) = &self.nodes {
            if let Some(n) = nodes.iter().find(|&&n| n as usize > last_node) {
                return Err(format!("field `{field}.nodes`: node {n}, but topology {} has only nodes 0-{last_node}", topology.name));
            }
            if runs_there && nodes.iter().all(|&n| topology.nodes[n as usize].cpus == 0) {
                let list: Vec<String> = nodes.iter().map(u32::to_string).collect();
                return Err(format!(
                    "field `{field}.nodes`: node(s) {} of topology {} have no CPU for the vCPUs to run on",
                    list.join(", "),
                    topology.name
                ));
            }
        }
        if let Some(cpus) = &self.cpus {
            let total = topology.total_cpus();
            if let Some(c) = cpus.iter().find(|&&c| c >= total) {
                return Err(format!("field `{field}.cpus`: CPU {c}, but topology {} has only CPUs 0-{}", topology.name, total - 1));
            }
        }
        Ok(())
    }

    /// The host CPUs it names.
    pub fn cpu_set(&self, topology: &Topology) -> std::collections::BTreeSet<u32> {
        match (&self.nodes, &self.cpus) {
            (Some(nodes), _) => nodes
                .iter()
                .filter(|&&n| (n as usize) < topology.nodes.len())
                .flat_map(|&n| topology.node_cpus(n as usize))
                .collect(),
            (None, cpus) => cpus.iter().flatten().copied().collect(),
        }
    }

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
        s.validate()?;
        s.fits(&two_node()).map_err(|e| anyhow::anyhow!(e))?;
        Ok(s)
    }

    /// Names xl would read as a domain ID or an option, and check words a
    /// shell would interpret, are refused before anything runs; the file
    /// name of a scenario or topology has to be safe as a path and a shell
    /// word.
    #[test]
    fn names_and_words_dom0_cannot_misread() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        let domain = |name: &str| err(&format!("description: x\ndomains:\n- {{name: {name}, type: pv, vcpus: 1, memory_mib: 100}}\n"));
        let rule = "letters, digits and `-`, not all digits, not starting with `-`";
        assert_eq!(domain("'2'"), format!("field `domains[0].name`: \"2\" is not a domain name ({rule})"));
        assert_eq!(domain("-h"), format!("field `domains[0].name`: \"-h\" is not a domain name ({rule})"));
        assert!(parse("description: x\ndomains:\n- {name: 2nd, type: pv, vcpus: 1, memory_mib: 100}\n").is_ok());
        assert_eq!(
            err("description: x\ncpupools: [{name: '1', cpus: {nodes: [1]}}]\n"),
            format!("field `cpupools[0].name`: \"1\" is not a name for a new pool ({rule}; not Pool-0)")
        );
        let check = |words: &str| err(&format!("description: x\nchecks: [{{name: c, command: [{words}]}}]\n"));
        for (words, at, word) in [
            ("\"a(b\"", 0, "a(b"),
            ("tool, \"a\\tb\"", 1, "a\tb"),
            ("tool, \"x#y\"", 1, "x#y"),
            ("tool, \"*\"", 1, "*"),
            ("\"A=1\", tool", 0, "A=1"),
            ("tool, \"\"", 1, ""),
        ] {
            assert!(check(words).starts_with(&format!("field `checks[0].command[{at}]`: {word:?}: dom0's shell")), "{}", check(words));
        }
        assert!(parse("description: x\nchecks: [{name: c, command: [t, -l, \"system_u:system_r:domU_t\", --x=1]}]\n").is_ok());
        let dir = tempfile::tempdir().unwrap();
        for bad in ["a\nb.yaml", "a b.yaml", "-x.yaml", ".x.yaml", "a;b.yaml"] {
            let path = dir.path().join(bad);
            std::fs::write(&path, "description: x\n").unwrap();
            let e = Scenario::load_any(&path).unwrap_err().to_string();
            assert!(e.contains("is used in paths and in dom0's shell"), "{bad:?}: {e}");
        }
        let path = dir.path().join("ok_1.2-x.yaml");
        std::fs::write(&path, "description: x\n").unwrap();
        assert_eq!(Scenario::load_any(&path).unwrap().name, "ok_1.2-x");
    }

    /// Every shipped scenario fits every shipped topology it is made for
    /// (all of them unless it names some), and runs on at least one.
    #[test]
    fn shipped_scenarios_load_on_every_topology_they_are_made_for() {
        let dir = |d: &str| std::fs::read_dir(paths::images_dir().join(d)).unwrap().map(|e| e.unwrap().path());
        let topologies: Vec<Topology> = dir("topologies").map(|p| Topology::load(&p).unwrap()).collect();
        for path in dir("scenarios") {
            let scenario = Scenario::load_any(&path).unwrap();
            let made_for: Vec<&Topology> = topologies.iter().filter(|t| scenario.made_for(t).is_ok()).collect();
            assert!(!made_for.is_empty(), "{} is made for no shipped topology", path.display());
            for topology in made_for {
                Scenario::load(&path, topology).unwrap();
            }
        }
    }

    /// Whether a scenario fits a topology: nodes and CPUs that exist, and
    /// vCPUs confined only where there are CPUs. A soft affinity may name a
    /// memory-only node (libxl then has no CPU to prefer there, which is
    /// the domain's business, not a misfit).
    #[test]
    fn fits_topologies_of_any_shape() {
        let topology = |nodes: &str, distances: &str| {
            let t: Topology =
                crate::config::parse_yaml(&format!("description: x\nnodes: [{nodes}]\ndistances: {distances}\n")).unwrap();
            Topology { name: "t".into(), ..t }
        };
        let one = topology("{cpus: 1, memory_mib: 1024}", "[[10]]");
        let memory_only_1 = topology("{cpus: 2, memory_mib: 1024}, {cpus: 0, memory_mib: 512}", "[[10, 20], [20, 10]]");
        let scenario = |domain: &str| {
            let s: Scenario = crate::config::parse_yaml(&format!(
                "description: x\ndomains:\n- {{name: a, type: pv, vcpus: 1, memory_mib: 100{domain}}}\n"
            ))
            .unwrap();
            s.validate().unwrap();
            s
        };
        let hard1 = scenario(", hard_affinity: {nodes: [1]}");
        assert_eq!(hard1.fits(&one).unwrap_err(), "field `domains[0].hard_affinity.nodes`: node 1, but topology t has only nodes 0-0");
        assert_eq!(
            hard1.fits(&memory_only_1).unwrap_err(),
            "field `domains[0].hard_affinity.nodes`: node(s) 1 of topology t have no CPU for the vCPUs to run on"
        );
        assert_eq!(scenario(", hard_affinity: {nodes: [0, 1]}").fits(&memory_only_1), Ok(()));
        assert_eq!(scenario(", soft_affinity: {nodes: [1]}").fits(&memory_only_1), Ok(()));
        assert_eq!(
            scenario(", soft_affinity: {cpus: [2]}").fits(&memory_only_1).unwrap_err(),
            "field `domains[0].soft_affinity.cpus`: CPU 2, but topology t has only CPUs 0-1"
        );
        let dom0: Scenario = crate::config::parse_yaml("description: x\ndom0_hard_affinity: {nodes: [1]}\n").unwrap();
        assert!(dom0.fits(&memory_only_1).unwrap_err().starts_with("field `dom0_hard_affinity.nodes`: node(s) 1"));
    }

    #[test]
    fn dom0_files() {
        let s = parse(
            "description: x\ndomains:\n- {name: a, type: pv, vcpus: 2, memory_mib: 200, \
             hard_affinity: {nodes: [1]}, soft_affinity: {cpus: [0, 1]}}\ncollect: [xl-list, xl-vcpu-list, debug-key-u]\n",
        )
        .unwrap();
        let files = s.dom0_files();
        assert_eq!(files[0].0, "domains/a.cfg");
        assert_eq!(
            files[0].1,
            "name = \"a\"\ntype = \"pv\"\nkernel = \"/boot/numa-harness-guest\"\n\
             memory = 200\nvcpus = 2\ncpus = \"node:1\"\ncpus_soft = \"0,1\"\n"
        );
        assert_eq!(files[1].1.lines().skip(1).collect::<Vec<_>>(), ["create a", "collect xl-list xl list -n", "collect xl-vcpu-list xl vcpu-list", "collect debug-key-u debug_key u"]);
    }

    /// Cpupools, a pool and extra xl lines per domain, and a plan that
    /// destroys one domain and creates another after it.
    #[test]
    fn dom0_files_with_pools_and_a_plan() {
        let s = parse(
            "description: x\ncpupools:\n- {name: node1, cpus: {nodes: [1]}}\n\
             domains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100, pool: node1, xl: ['cpus = [\"2\", \"3\"]']}\n\
             - {name: b, type: pvh, vcpus: 1, memory_mib: 100}\n\
             plan: [{create: a}, {destroy: a}, {create: b}, {create: a}]\ncollect: [xl-list]\n",
        )
        .unwrap();
        let files = s.dom0_files();
        assert_eq!(
            files[0].1,
            "name = \"a\"\ntype = \"pv\"\nkernel = \"/boot/numa-harness-guest\"\n\
             memory = 100\nvcpus = 1\npool = \"node1\"\ncpus = [\"2\", \"3\"]\n"
        );
        assert_eq!(s.alive_at_end().into_iter().collect::<Vec<_>>(), ["a", "b"]);
        let churned = parse(
            "description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100}\n\
             - {name: b, type: pvh, vcpus: 1, memory_mib: 100}\n\
             plan:\n- churn: {cycles: 3, domains: [a, b]}\n- create: b\ncollect: [xl-list]\n",
        )
        .unwrap();
        assert_eq!(churned.alive_at_end().into_iter().collect::<Vec<_>>(), ["b"]);
        let churn_files = churned.dom0_files();
        let churn_plan = &churn_files.last().unwrap().1;
        assert_eq!(churn_plan.lines().skip(1).collect::<Vec<_>>(), ["churn 3 a b", "create b", "collect xl-list xl list -n"]);
        let refused = parse(
            "description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100}\n\
             - {name: b, type: pv, vcpus: 1, memory_mib: 100, xl: ['vnuma = [\"pnode=8,size=100,vcpus=0\"]']}\n\
             plan:\n- create: a\n- refuse: {domain: b, error: Invalid pnode 8}\ncollect: [xl-list]\n",
        )
        .unwrap();
        assert_eq!(refused.alive_at_end().into_iter().collect::<Vec<_>>(), ["a"]);
        let refused_files = refused.dom0_files();
        assert_eq!(
            refused_files.last().unwrap().1.lines().skip(1).collect::<Vec<_>>(),
            ["create a", "refuse b 'Invalid pnode 8'", "collect xl-list xl list -n"]
        );
        let measured = parse(
            "description: x\ndomains:\n- {name: a, type: pvh, vcpus: 1, memory_mib: 100}\n\
             - {name: b, type: pvh, vcpus: 4, memory_mib: 100}\n\
             plan:\n- measure: {repeats: 20, domains: [a, b]}\ncollect: [xl-list]\n",
        )
        .unwrap();
        assert!(measured.alive_at_end().is_empty());
        assert_eq!(
            measured.dom0_files().last().unwrap().1.lines().skip(1).collect::<Vec<_>>(),
            ["measure 20 a b", "collect xl-list xl list -n"]
        );
        let plan = &files.last().unwrap().1;
        assert_eq!(
            plan.lines().skip(1).collect::<Vec<_>>(),
            ["cpupool node1 node:1", "create a", "destroy a", "create b", "create a", "collect xl-list xl list -n"]
        );
    }

    /// `cargo xtask test` runs the rounds a step gives it, evidence all of
    /// them; a test count above the step's own is refused.
    #[test]
    fn test_rounds() {
        let two = "domains:\n- {name: a, type: pvh, vcpus: 1, memory_mib: 100}\n- {name: b, type: pvh, vcpus: 4, memory_mib: 100}\n";
        let s = parse(&format!(
            "description: x\n{two}plan:\n- measure: {{repeats: 20, test_repeats: 3, domains: [a]}}\n- churn: {{cycles: 5, test_cycles: 2, domains: [a, b]}}\ncollect: [xl-list]\n"
        ))
        .unwrap();
        let plan = |s: &Scenario| s.dom0_files().last().unwrap().1.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(plan(&s), ["measure 20 a", "churn 5 a b", "collect xl-list xl list -n"]);
        assert_eq!(plan(&s.for_test()), ["measure 3 a", "churn 2 a b", "collect xl-list xl list -n"]);
        let same = parse(&format!("description: x\n{two}plan:\n- churn: {{cycles: 5, domains: [a, b]}}\ncollect: [xl-list]\n")).unwrap();
        assert_eq!(plan(&same.for_test()), ["churn 5 a b", "collect xl-list xl list -n"]);
        let err = parse(&format!("description: x\n{two}plan:\n- churn: {{cycles: 5, test_cycles: 6, domains: [a, b]}}\n")).unwrap_err();
        assert_eq!(err.to_string(), "field `plan[0].churn.test_cycles`: 6 is not between 1 and `cycles` (5)");
        let err = parse(&format!("description: x\n{two}plan:\n- measure: {{repeats: 2, test_repeats: 0, domains: [a, b]}}\n")).unwrap_err();
        assert_eq!(err.to_string(), "field `plan[0].measure.test_repeats`: 0 is not between 1 and `repeats` (2)");
    }

    #[test]
    fn plans_and_pools_are_checked() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        let two = "domains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100}\n- {name: b, type: pv, vcpus: 1, memory_mib: 100}\n";
        assert_eq!(err(&format!("description: x\n{two}plan: [{{create: a}}, {{create: a}}]\n")), "field `plan[1]`: \"a\" is created again before it is destroyed");
        assert_eq!(err(&format!("description: x\n{two}plan: [{{destroy: a}}]\n")), "field `plan[0]`: \"a\" is destroyed before it is created");
        assert_eq!(err(&format!("description: x\n{two}plan: [{{create: c}}]\n")), "field `plan[0]`: no domain \"c\" in `domains`");
        assert_eq!(err(&format!("description: x\n{two}plan: [{{create: a}}]\n")), "field `plan`: domain \"b\" is never created");
        assert!(err(&format!("description: x\n{two}plan: [{{start: a}}]\n")).starts_with("field `plan[0]`: unknown variant `start`"));
        let churn = |c: &str| err(&format!("description: x\n{two}plan: [{{churn: {c}}}]\n"));
        assert_eq!(churn("{cycles: 0, domains: [a, b]}"), "field `plan[0].churn.cycles`: 0 is not between 1 and 50");
        assert_eq!(churn("{cycles: 51, domains: [a, b]}"), "field `plan[0].churn.cycles`: 51 is not between 1 and 50");
        assert_eq!(churn("{cycles: 2, domains: []}"), "field `plan[0].churn.domains`: empty; name the domains to create and destroy");
        assert_eq!(churn("{cycles: 2, domains: [a, c]}"), "field `plan[0].churn.domains`: no domain \"c\" in `domains`");
        assert_eq!(churn("{cycles: 2, domains: [a]}"), "field `plan`: domain \"b\" is never created");
        assert!(churn("{cycles: 2}").starts_with("field `plan[0].churn`: missing field `domains`"), "{}", churn("{cycles: 2}"));
        assert_eq!(
            err(&format!("description: x\n{two}plan: [{{create: a}}, {{churn: {{cycles: 1, domains: [b, a]}}}}]\n")),
            "field `plan[1].churn.domains`: \"a\" exists at this point of the plan"
        );
        assert_eq!(
            err("description: x\ncollect: [xl-list, debug-key-u]\n"),
            "field `collect`: debug-key-u lists vCPUs' structures, which need xl-vcpu-list too"
        );
        let refuse = |r: &str| err(&format!("description: x\n{two}plan: [{{create: a}}, {{refuse: {r}}}]\n"));
        assert_eq!(refuse("{domain: c, error: x}"), "field `plan[1].refuse.domain`: no domain \"c\" in `domains`");
        assert_eq!(refuse("{domain: a, error: x}"), "field `plan[1].refuse.domain`: \"a\" exists at this point of the plan");
        assert_eq!(
            refuse("{domain: b, error: \"it's\"}"),
            "field `plan[1].refuse.error`: \"it's\": give the words the error must hold, on one line, without `'`"
        );
        let measure = |m: &str| err(&format!("description: x\n{two}plan: [{{create: a}}, {{measure: {m}}}]\n"));
        assert_eq!(measure("{repeats: 0, domains: [b]}"), "field `plan[1].measure.repeats`: 0 is not between 1 and 40");
        assert_eq!(measure("{repeats: 41, domains: [b]}"), "field `plan[1].measure.repeats`: 41 is not between 1 and 40");
        assert_eq!(measure("{repeats: 2, domains: []}"), "field `plan[1].measure.domains`: empty; name the domains to measure");
        assert_eq!(measure("{repeats: 2, domains: [c]}"), "field `plan[1].measure.domains`: no domain \"c\" in `domains`");
        assert_eq!(measure("{repeats: 2, domains: [a]}"), "field `plan[1].measure.domains`: \"a\" exists at this point of the plan");
        assert!(refuse("{domain: b}").starts_with("field `plan[1].refuse`: missing field `error`"), "{}", refuse("{domain: b}"));
        assert_eq!(
            err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100, pool: p}\n"),
            "field `domains[0].pool`: no cpupool \"p\" in `cpupools` (nor Pool-0)"
        );
        assert_eq!(
            err("description: x\ncpupools: [{name: Pool-0, cpus: {nodes: [1]}}]\n"),
            "field `cpupools[0].name`: \"Pool-0\" is not a name for a new pool (letters, digits and `-`, not all \
             digits, not starting with `-`; not Pool-0)"
        );
        assert_eq!(
            err("description: x\ncpupools: [{name: all, cpus: {nodes: [0, 1]}}]\n"),
            "field `cpupools`: they leave Pool-0, where dom0 runs, no CPU"
        );
        assert_eq!(
            err("description: x\ndom0_hard_affinity: {nodes: [1]}\ncpupools: [{name: p, cpus: {nodes: [1]}}]\n"),
            "field `dom0_hard_affinity`: none of its CPUs is left in Pool-0, where dom0 runs"
        );
        assert_eq!(
            err("description: x\ncpupools: [{name: p, cpus: {cpus: [3]}}, {name: q, cpus: {nodes: [1]}}]\n"),
            "field `cpupools[1].cpus`: CPU 3 is in an earlier pool too"
        );
        assert_eq!(
            err("description: x\ncpupools: [{name: p, cpus: {nodes: [1]}}]\n\
                 domains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100, pool: p, hard_affinity: {nodes: [0]}}\n"),
            "field `domains[0].hard_affinity`: no CPU of it is in the domain's cpupool (p)"
        );
        assert_eq!(
            err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 100, xl: ['']}\n"),
            "field `domains[0].xl[0]`: one line of xl configuration, not empty"
        );
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
            err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 200, hard_affinity: {cpus: []}}\n"),
            "field `domains[0].hard_affinity`: an empty CPU list"
        );
        assert_eq!(
            err("description: x\ndomains:\n- {name: a, type: pv, vcpus: 1, memory_mib: 200, soft_affinity: {nodes: [0], cpus: [1]}}\n"),
            "field `domains[0].soft_affinity`: give either `nodes` or `cpus`"
        );
        assert!(err("description: x\ncollect: [xl-dmesg]\n").starts_with("field `collect[0]`: unknown variant `xl-dmesg`"));
        assert!(err("description: x\ndomain: []\n").starts_with("unknown field `domain`"), "{}", err("description: x\ndomain: []\n"));
    }
}
