//! Topologies: NUMA nodes with their CPUs, memory and distances, loaded from
//! YAML and turned into QEMU's `-smp`, `-numa` and memory-backend arguments.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// What the topology models, for people reading the file.
    #[allow(dead_code)]
    pub description: String,
    pub nodes: Vec<Node>,
    /// `distances[i][j]`: ACPI SLIT distance from node i to node j (10 on
    /// the diagonal). May be asymmetric.
    pub distances: Vec<Vec<u8>>,
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// How many CPUs the node has; 0 for a memory-only node (a CXL memory
    /// expander, an EPYC NPS node without cores).
    pub cpus: u32,
    /// How much memory; 0 for a node with CPUs and no memory of its own.
    pub memory_mib: u64,
}

/// The least memory a node with memory may have, and the least the whole
/// machine needs: Xen and dom0 (`dom0_mem` in machine.yaml) must fit.
const NODE_MIN_MIB: u64 = 256;
const MACHINE_MIN_MIB: u64 = 1024;
/// What QEMU under TCG is practical for.
const MAX_NODES: usize = 8;
const MAX_CPUS: u32 = 16;
/// A node's memory at most (1 TiB): far more than any machine running this
/// can give QEMU, and small enough that no sum of nodes overflows.
const NODE_MAX_MIB: u64 = 1 << 20;

impl Topology {
    pub fn load(path: &Path) -> Result<Topology> {
        let mut t: Topology = crate::config::load_yaml(path)?;
        t.name = crate::config::safe_stem(path)?;
        t.path = path.to_path_buf();
        t.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(t)
    }

    fn validate(&self) -> Result<()> {
        let n = self.nodes.len();
        if n == 0 {
            bail!("field `nodes`: a topology needs at least one node");
        }
        if n > MAX_NODES {
            bail!("field `nodes`: {n} nodes; QEMU under TCG is only practical up to {MAX_NODES}");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.cpus == 0 && node.memory_mib == 0 {
                bail!("field `nodes[{i}]`: neither CPUs nor memory; a node needs at least one of them");
            }
            if node.cpus > MAX_CPUS {
                bail!("field `nodes[{i}].cpus`: {}; QEMU under TCG is only practical up to {MAX_CPUS} in all", node.cpus);
            }
            if node.memory_mib > NODE_MAX_MIB {
                bail!("field `nodes[{i}].memory_mib`: {} MiB is more than a node can have here ({NODE_MAX_MIB})", node.memory_mib);
            }
            if node.memory_mib != 0 && node.memory_mib < NODE_MIN_MIB {
                bail!(
                    "field `nodes[{i}].memory_mib`: {} MiB is too little for a node (0 for a node without memory, \
                     otherwise at least {NODE_MIN_MIB})",
                    node.memory_mib
                );
            }
        }
        // Xen numbers nodes as it meets them in the SRAT, processor entries
        // first (acpi_numa_init()): the nodes with CPUs in CPU order, then
        // the memory-only ones. Only with the memory-only nodes last are
        // Xen's node IDs those of this file (and of QEMU's -numa nodeid).
        if let Some(first) = self.nodes.iter().position(|n| n.cpus == 0) {
            if let Some(later) = self.nodes[first..].iter().position(|n| n.cpus > 0) {
                bail!(
                    "field `nodes[{first}]`: a memory-only node before nodes[{}], which has CPUs; Xen numbers \
                     the nodes with CPUs first, so its node IDs would not be this file's: put memory-only nodes last",
                    first + later
                );
            }
        }
        // QEMU's ACPI tables give the first 640 KiB of the machine to node 0
        // whatever its memory, so a node 0 without memory would have some.
        if self.nodes[0].memory_mib == 0 {
            bail!(
                "field `nodes[0].memory_mib`: node 0 needs memory (QEMU's SRAT always gives it the machine's \
                 first 640 KiB); put the memory-less node later in the list"
            );
        }
        if self.total_cpus() == 0 {
            bail!("field `nodes`: no node has a CPU; Xen needs at least one");
        }
        if self.total_cpus() > MAX_CPUS {
            bail!("field `nodes`: {} CPUs in all; QEMU under TCG is only practical up to {MAX_CPUS}", self.total_cpus());
        }
        if self.total_memory_mib() < MACHINE_MIN_MIB {
            bail!(
                "field `nodes`: {} MiB in all; Xen and dom0 (dom0_mem in qemu-images/machine.yaml) need at least {MACHINE_MIN_MIB}",
                self.total_memory_mib()
            );
        }
        if self.distances.len() != n {
            bail!("field `distances`: {} rows for {n} nodes; it must be a {n}x{n} matrix", self.distances.len());
        }
        for (i, row) in self.distances.iter().enumerate() {
            if row.len() != n {
                bail!("field `distances[{i}]`: {} entries for {n} nodes", row.len());
            }
            for (j, &d) in row.iter().enumerate() {
                if i == j && d != 10 {
                    bail!("field `distances[{i}][{j}]`: a node's distance to itself is 10 in ACPI's SLIT, not {d}");
                }
                if i != j && !(11..=254).contains(&d) {
                    bail!("field `distances[{i}][{j}]`: {d} is not a remote distance (11 to 254)");
                }
            }
        }
        Ok(())
    }

    pub fn total_cpus(&self) -> u32 {
        self.nodes.iter().map(|n| n.cpus).sum()
    }

    pub fn total_memory_mib(&self) -> u64 {
        self.nodes.iter().map(|n| n.memory_mib).sum()
    }

    /// The CPUs of node `i`, as QEMU numbers them: node after node. Empty
    /// for a memory-only node.
    pub fn node_cpus(&self, i: usize) -> std::ops::Range<u32> {
        let start: u32 = self.nodes[..i].iter().map(|n| n.cpus).sum();
        start..start + self.nodes[i].cpus
    }

    /// QEMU's `-smp`: one socket per node where every node with CPUs has
    /// as many (a socket's cores are `-smp`'s `cores`, the same for every
    /// socket); otherwise one socket per CPU, so that no socket spans two
    /// nodes.
    fn smp(&self) -> String {
        let mut counts = self.nodes.iter().map(|n| n.cpus).filter(|&c| c > 0);
        let first = counts.next().unwrap_or(1);
        let total = self.total_cpus();
        if counts.all(|c| c == first) {
            format!("{total},sockets={},cores={first},threads=1", total / first)
        } else {
            format!("{total},sockets={total},cores=1,threads=1")
        }
    }

    /// QEMU arguments for the machine's memory, CPUs and NUMA layout. A node
    /// without memory has no memory backend; one without CPUs no `cpus=`.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = vec!["-m".into(), format!("{}M", self.total_memory_mib()), "-smp".into(), self.smp()];
        for (i, node) in self.nodes.iter().enumerate() {
            let mut numa = format!("node,nodeid={i}");
            let cpus = self.node_cpus(i);
            if !cpus.is_empty() {
                numa.push_str(&format!(",cpus={}-{}", cpus.start, cpus.end - 1));
            }
            if node.memory_mib > 0 {
                args.push("-object".into());
                args.push(format!("memory-backend-ram,id=mem{i},size={}M", node.memory_mib));
                numa.push_str(&format!(",memdev=mem{i}"));
            }
            args.push("-numa".into());
            args.push(numa);
        }
        for (i, row) in self.distances.iter().enumerate() {
            for (j, d) in row.iter().enumerate() {
                if i != j {
                    args.push("-numa".into());
                    args.push(format!("dist,src={i},dst={j},val={d}"));
                }
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Topology> {
        let t: Topology = crate::config::parse_yaml(text).map_err(|e| anyhow::anyhow!(e))?;
        t.validate()?;
        Ok(t)
    }

    #[test]
    fn shipped_topologies_load() {
        for name in ["two-node", "four-node", "memory-only-node", "unequal-nodes"] {
            let path = crate::paths::images_dir().join(format!("topologies/{name}.yaml"));
            let t = Topology::load(&path).unwrap();
            assert_eq!(t.name, name);
        }
    }

    #[test]
    fn qemu_args_for_two_nodes() {
        let t = parse("description: x\nnodes:\n- {cpus: 2, memory_mib: 1024}\n- {cpus: 2, memory_mib: 1024}\ndistances: [[10, 20], [21, 10]]\n").unwrap();
        assert_eq!(
            t.qemu_args().join(" "),
            "-m 2048M -smp 4,sockets=2,cores=2,threads=1 \
             -object memory-backend-ram,id=mem0,size=1024M -numa node,nodeid=0,cpus=0-1,memdev=mem0 \
             -object memory-backend-ram,id=mem1,size=1024M -numa node,nodeid=1,cpus=2-3,memdev=mem1 \
             -numa dist,src=0,dst=1,val=20 -numa dist,src=1,dst=0,val=21"
        );
    }

    /// Unequal nodes, a memory-only node and a node without memory: one
    /// socket per CPU, each node's CPUs numbered after the previous node's,
    /// no `cpus=` for the memory-only node and no backend for the other.
    #[test]
    fn qemu_args_for_unequal_nodes() {
        let t = parse(
            "description: x\nnodes:\n- {cpus: 2, memory_mib: 1024}\n- {cpus: 1, memory_mib: 0}\n\
             - {cpus: 3, memory_mib: 768}\n- {cpus: 0, memory_mib: 512}\n\
             distances: [[10, 20, 30, 40], [20, 10, 20, 30], [30, 20, 10, 20], [40, 30, 20, 10]]\n",
        )
        .unwrap();
        assert_eq!(t.total_cpus(), 6);
        assert_eq!([t.node_cpus(0), t.node_cpus(1), t.node_cpus(2), t.node_cpus(3)], [0..2, 2..3, 3..6, 6..6]);
        let args = t.qemu_args().join(" ");
        assert_eq!(
            args.split(" -numa dist").next().unwrap(),
            "-m 2304M -smp 6,sockets=6,cores=1,threads=1 \
             -object memory-backend-ram,id=mem0,size=1024M -numa node,nodeid=0,cpus=0-1,memdev=mem0 \
             -numa node,nodeid=1,cpus=2-2 \
             -object memory-backend-ram,id=mem2,size=768M -numa node,nodeid=2,cpus=3-5,memdev=mem2 \
             -object memory-backend-ram,id=mem3,size=512M -numa node,nodeid=3,memdev=mem3"
        );
        assert_eq!(args.matches("-numa dist,").count(), 12);
    }

    /// Equal nodes with a memory-only one after them keep one socket per
    /// node with CPUs.
    #[test]
    fn qemu_smp_for_equal_nodes_and_a_memory_only_one() {
        let t = parse(
            "description: x\nnodes:\n- {cpus: 2, memory_mib: 1024}\n- {cpus: 2, memory_mib: 512}\n- {cpus: 0, memory_mib: 512}\n\
             distances: [[10, 20, 30], [20, 10, 20], [30, 20, 10]]\n",
        )
        .unwrap();
        let args = t.qemu_args();
        assert_eq!(args[3], "4,sockets=2,cores=2,threads=1");
        assert!(args.contains(&"node,nodeid=1,cpus=2-3,memdev=mem1".to_string()), "{args:?}");
        assert!(args.contains(&"node,nodeid=2,memdev=mem2".to_string()), "{args:?}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let two = "nodes:\n- {cpus: 2, memory_mib: 1024}\n- {cpus: 2, memory_mib: 1024}\n";
        assert!(err(&format!("description: x\n{two}distances: [[10, 20]]\n")).starts_with("field `distances`: 1 rows for 2 nodes"));
        // Sums that would overflow are refused per node, before summing.
        let huge = "nodes:\n- {cpus: 4294967295, memory_mib: 1024}\n- {cpus: 1, memory_mib: 1024}\n";
        assert!(err(&format!("description: x\n{huge}distances: [[10, 20], [20, 10]]\n")).starts_with("field `nodes[0].cpus`: 4294967295"));
        let huge = "nodes:\n- {cpus: 1, memory_mib: 18446744073709551615}\n- {cpus: 1, memory_mib: 1024}\n";
        assert!(err(&format!("description: x\n{huge}distances: [[10, 20], [20, 10]]\n")).starts_with("field `nodes[0].memory_mib`: 18446744073709551615 MiB"));
        assert!(err(&format!("description: x\n{two}distances: [[10, 20], [20, 11]]\n")).starts_with("field `distances[1][1]`"));
        assert!(err(&format!("description: x\n{two}distances: [[10, 5], [20, 10]]\n")).starts_with("field `distances[0][1]`: 5 is not"));
        let nodes = |list: &str| err(&format!("description: x\nnodes: [{list}]\ndistances: [[10, 20], [20, 10]]\n"));
        assert!(nodes("{cpus: 0, memory_mib: 1024}, {cpus: 0, memory_mib: 0}").starts_with("field `nodes[1]`: neither CPUs nor memory"));
        assert!(nodes("{cpus: 0, memory_mib: 1024}, {cpus: 0, memory_mib: 1024}").starts_with("field `nodes`: no node has a CPU"));
        assert!(nodes("{cpus: 0, memory_mib: 1024}, {cpus: 2, memory_mib: 1024}")
            .starts_with("field `nodes[0]`: a memory-only node before nodes[1], which has CPUs; Xen numbers"));
        assert!(nodes("{cpus: 2, memory_mib: 0}, {cpus: 2, memory_mib: 1024}").starts_with("field `nodes[0].memory_mib`: node 0 needs memory"));
        assert!(nodes("{cpus: 2, memory_mib: 1024}, {cpus: 2, memory_mib: 100}").starts_with("field `nodes[1].memory_mib`: 100 MiB is too little"));
        assert!(nodes("{cpus: 2, memory_mib: 512}, {cpus: 2, memory_mib: 256}").starts_with("field `nodes`: 768 MiB in all"));
        assert!(nodes("{cpus: 9, memory_mib: 1024}, {cpus: 8, memory_mib: 1024}").starts_with("field `nodes`: 17 CPUs in all"));
        assert!(err("description: x\nnodes:\n- {cpu: 2, memory_mib: 1024}\ndistances: [[10]]\n").starts_with("field `nodes[0]`: unknown field `cpu`, expected `cpus` or `memory_mib` at line 3"), "{}", err("description: x\nnodes:\n- {cpu: 2, memory_mib: 1024}\ndistances: [[10]]\n"));
    }

    #[test]
    fn load_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, "description: x\nnodes: []\ndistances: []\n").unwrap();
        let err = Topology::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: field `nodes`", path.display())), "{err}");
    }
}
