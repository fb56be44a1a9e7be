//! The evidence report as Markdown: a header naming how it was made, the
//! headline figures, the figures per topology, scenario and domain, and
//! each pair's picture.

use std::fmt::Write;

use anyhow::Result;

use super::locality::{self, DomainLocality};
use super::{Header, Pair, Share};

/// `1` or `0-1,3` for a list of nodes.
fn node_list(nodes: &[u32]) -> String {
    nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
}

fn share_of(l: Option<&DomainLocality>) -> String {
    match l {
        Some(l) => Share { local: l.local, listed: l.listed() }.text(),
        None => "not counted".into(),
    }
}

/// The totals over every pair, baseline and patched.
pub fn totals(pairs: &[Pair]) -> Result<[Share; 2]> {
    let mut t = [Share::default(); 2];
    for p in pairs {
        for (i, r) in p.reports().iter().enumerate() {
            t[i] = t[i].add(Share::of(r)?);
        }
    }
    Ok(t)
}

/// The whole document; `pictures` is the folder of the SVG files, relative
/// to the document.
pub fn document(header: &Header, pairs: &[Pair], pictures: &str) -> Result<String> {
    let mut md = String::new();
    let totals = totals(pairs)?;
    writeln!(md, "# Evidence: where a new domain's Xen structures land ({})\n", header.base).unwrap();
    writeln!(md, "Written by `{}`; regenerate it rather than edit it.\n", header.command).unwrap();
    writeln!(md, "- base: {}, Xen {}", header.base, header.xen_commit).unwrap();
    writeln!(md, "- harness: {}", header.harness_commit).unwrap();
    writeln!(md, "- machine: {}", header.machine).unwrap();
    writeln!(md, "- {} topology and scenario pairs, each booted on the baseline and the patched build\n", pairs.len()).unwrap();

    md.push_str("## Headline\n\n");
    md.push_str("| | baseline | patched |\n| --- | --- | --- |\n");
    writeln!(md, "| structures on the domain's own nodes, every counted domain | {} | {} |\n", totals[0].text(), totals[1].text()).unwrap();
    md.push_str(
        "A domain is counted when its node affinity (`xl list -n`) names some \
         nodes, not all; dom0 only when that affinity was given at boot \
         (`dom0_nodes=`). Its structures are those the instrumented `u` debug \
         key lists: the domain's own (struct domain, shared_info, grant table, \
         event channels) and each listed vCPU's (struct vcpu, scheduling unit, \
         FPU/XSAVE area, VMCB/VMCS, ...). A structure counts as local when it \
         is on one of the nodes the domain's node affinity names; one on no \
         page of its own (a small object in Xen's xmalloc pool, on whatever \
         node that pool's page came from) counts as not local.\n\n",
    );

    md.push_str("## By topology, scenario and domain\n\n");
    md.push_str("| topology | scenario | domain | its nodes | baseline | patched |\n| --- | --- | --- | --- | --- | --- |\n");
    for p in pairs {
        let sides = [locality::of_report(&p.baseline)?, locality::of_report(&p.patched)?];
        let mut names: Vec<&str> = sides.iter().flatten().map(|l| l.domain.as_str()).collect();
        names.dedup();
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(*n));
        for name in names {
            let [b, q] = [&sides[0], &sides[1]].map(|s| s.iter().find(|l| l.domain == name));
            let nodes = b.or(q).map(|l| node_list(&l.nodes)).unwrap_or_default();
            writeln!(
                md,
                "| {} | {} | {name} | {nodes} | {} | {} |",
                p.baseline.topology,
                p.baseline.scenario,
                share_of(b),
                share_of(q)
            )
            .unwrap();
        }
    }
    md.push('\n');

    md.push_str("## Pictures\n\n");
    md.push_str(
        "Each node is a box with its CPUs and memory; in it, each domain's \
         memory on the node and the structures Xen allocated there. Baseline \
         on the left, patched on the right.\n\n",
    );
    for p in pairs {
        writeln!(md, "### {} / {}\n", p.baseline.topology, p.baseline.scenario).unwrap();
        writeln!(md, "{}\n", p.baseline.description).unwrap();
        writeln!(md, "![{}]({pictures}/{})\n", p.name(), p.svg_file()).unwrap();
    }
    Ok(md)
}
