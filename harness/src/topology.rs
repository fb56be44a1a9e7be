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
    /// CPUs (QEMU cores) of this node's socket.
    pub cpus: u32,
    pub memory_mib: u64,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology> {
        let mut t: Topology = crate::config::load_yaml(path)?;
        t.name = crate::config::stem(path)?;
        t.path = path.to_path_buf();
        t.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(t)
    }

    fn validate(&self) -> Result<()> {
        let n = self.nodes.len();
        if n == 0 {
            bail!("field `nodes`: a topology needs at least one node");
        }
        if n > 8 {
            bail!("field `nodes`: {n} nodes; QEMU under TCG is only practical up to 8");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.cpus == 0 {
                bail!("field `nodes[{i}].cpus`: a node needs at least one CPU (memory-only nodes are not modelled)");
            }
            if node.cpus != self.nodes[0].cpus {
                bail!(
                    "field `nodes[{i}].cpus`: {} CPUs, but nodes[0] has {}: every node is one QEMU socket, \
                     so all nodes need the same number of CPUs",
                    node.cpus,
                    self.nodes[0].cpus
                );
            }
            if node.memory_mib < 256 {
                bail!("field `nodes[{i}].memory_mib`: {} MiB is too little for a node (at least 256)", node.memory_mib);
            }
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

    /// The CPUs of node `i`, as QEMU numbers them (socket after socket).
    pub fn node_cpus(&self, i: usize) -> std::ops::Range<u32> {
        let per = self.nodes[0].cpus;
        (i as u32 * per)..((i as u32 + 1) * per)
    }

    /// QEMU arguments for the machine's memory, CPUs and NUMA layout.
    pub fn qemu_args(&self) -> Vec<String> {
        let n = self.nodes.len();
        let mut args = vec![
            "-m".into(),
            format!("{}M", self.total_memory_mib()),
            "-smp".into(),
            format!("{},sockets={n},cores={},threads=1", self.total_cpus(), self.nodes[0].cpus),
        ];
        for (i, node) in self.nodes.iter().enumerate() {
            let cpus = self.node_cpus(i);
            args.push("-object".into());
            args.push(format!("memory-backend-ram,id=mem{i},size={}M", node.memory_mib));
            args.push("-numa".into());
            args.push(format!("node,nodeid={i},cpus={}-{},memdev=mem{i}", cpus.start, cpus.end - 1));
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
        for name in ["two-node", "four-node"] {
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

    #[test]
    fn errors_name_the_field() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let two = "nodes:\n- {cpus: 2, memory_mib: 1024}\n- {cpus: 2, memory_mib: 1024}\n";
        assert!(err(&format!("description: x\n{two}distances: [[10, 20]]\n")).starts_with("field `distances`: 1 rows for 2 nodes"));
        assert!(err(&format!("description: x\n{two}distances: [[10, 20], [20, 11]]\n")).starts_with("field `distances[1][1]`"));
        assert!(err(&format!("description: x\n{two}distances: [[10, 5], [20, 10]]\n")).starts_with("field `distances[0][1]`: 5 is not"));
        assert!(err("description: x\nnodes:\n- {cpus: 2, memory_mib: 1024}\n- {cpus: 1, memory_mib: 1024}\ndistances: [[10,20],[20,10]]\n").starts_with("field `nodes[1].cpus`"));
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
