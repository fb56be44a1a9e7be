//! Locality: of the structures the instrument lists for a domain, how many
//! are on the nodes its node affinity names, from the same typed report the
//! snapshots hold.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::report::{Domain, Report};
use crate::snapshot;

/// Whose structure an object is: the domain's as a whole, or one vCPU's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Owner {
    Domain,
    Vcpu(u32),
}

impl Owner {
    /// `vcpu` for the domain's own, `vCPU 1: vcpu` for a vCPU's.
    pub fn label(self, object: &str) -> String {
        match self {
            Owner::Domain => object.to_string(),
            Owner::Vcpu(v) => format!("vCPU {v}: {object}"),
        }
    }
}

/// One listed structure and where the instrument found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    pub owner: Owner,
    pub object: String,
    /// `None`: not on a page of its own (a small object in Xen's xmalloc
    /// pool, whose node is that of whichever pool page it came from and
    /// changes from boot to boot; see [`snapshot::from_xmalloc_pool`]), or
    /// not located by the instrument (`?`).
    pub node: Option<u32>,
}

/// A counted domain's locality.
#[derive(Debug, Clone, Serialize)]
pub struct DomainLocality {
    pub domain: String,
    /// The nodes its node affinity names.
    pub nodes: Vec<u32>,
    /// Listed structures on one of `nodes`.
    pub local: u32,
    /// On another node.
    pub remote: u32,
    /// On no node of their own (see [`Placed::node`]).
    pub unplaced: u32,
}

impl DomainLocality {
    pub fn listed(&self) -> u32 {
        self.local + self.remote + self.unplaced
    }
}

/// The nodes in a list in xl's syntax (`0-1,3`); `None` for `all`.
pub fn nodes_of(list: &str) -> Result<Option<Vec<u32>>> {
    if list == "all" {
        return Ok(None);
    }
    let mut nodes = BTreeSet::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
            bail!("{list:?} is not a list of nodes like `0-1,3`");
        };
        if a > b {
            bail!("{list:?} is not a list of nodes like `0-1,3`");
        }
        nodes.extend(a..=b);
    }
    Ok(Some(nodes.into_iter().collect()))
}

/// Every structure the instrument listed for the domain of a report of
/// `build`, the domain's own first, then each listed vCPU's.
pub fn placed(build: &str, domain: &Domain) -> Vec<Placed> {
    let explicit = domain.node_affinity_is.as_deref() == Some("explicit");
    let node = |o: &str, v: &String| match snapshot::from_xmalloc_pool(build, explicit, o) {
        true => None,
        false => v.parse::<u32>().ok(),
    };
    let own = domain.objects.iter().map(|(o, v)| Placed { owner: Owner::Domain, object: o.clone(), node: node(o, v) });
    let vcpus = domain.vcpus.iter().flat_map(|c| {
        c.objects.iter().map(move |(o, v)| Placed { owner: Owner::Vcpu(c.vcpu), object: o.clone(), node: node(o, v) })
    });
    own.chain(vcpus).collect()
}

/// The nodes a domain's structures belong on, if it is counted: a domain
/// whose node affinity names some nodes, not all. dom0 counts only when its
/// node affinity is explicit (`dom0_nodes=`): a pin made after boot gives it
/// an automatic node affinity long after its structures were allocated.
pub fn home_nodes(domain: &Domain) -> Result<Option<Vec<u32>>> {
    if domain.id == 0 && domain.node_affinity_is.as_deref() != Some("explicit") {
        return Ok(None);
    }
    match &domain.node_affinity {
        Some(list) => nodes_of(list),
        None => Ok(None),
    }
}

/// The locality of every counted domain of the report that has listed
/// structures.
pub fn of_report(report: &Report) -> Result<Vec<DomainLocality>> {
    let mut out = Vec::new();
    for d in &report.domains {
        let Some(nodes) = home_nodes(d)? else { continue };
        let placed = placed(&report.build, d);
        if placed.is_empty() {
            continue;
        }
        let mut l = DomainLocality { domain: d.name.clone(), nodes, local: 0, remote: 0, unplaced: 0 };
        for p in &placed {
            match p.node {
                Some(n) if l.nodes.contains(&n) => l.local += 1,
                Some(_) => l.remote += 1,
                None => l.unplaced += 1,
            }
        }
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(nodes_of("all").unwrap(), None);
        assert_eq!(nodes_of("1").unwrap(), Some(vec![1]));
        assert_eq!(nodes_of("0-1,3").unwrap(), Some(vec![0, 1, 3]));
        assert!(nodes_of("1-0").is_err());
        assert!(nodes_of("x").is_err());
    }
}
