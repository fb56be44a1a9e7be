//! The evidence report as Markdown: a header naming how it was made, the
//! headline figures, the figures per topology, scenario and domain, and
//! each pair's picture.

use std::fmt::Write;

use anyhow::Result;

use super::cost::{self, Compared, Ratio};
use super::figures::Reproduction;
use super::locality::{self, DomainLocality};
use super::{Header, OwnTimes, Pair, Share};

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

fn nodes_of(l: Option<&DomainLocality>) -> String {
    l.map(|l| node_list(&l.nodes)).unwrap_or_else(|| "-".into())
}

/// `4 pages (16 KiB)`.
fn pages_text(pages: f64) -> String {
    let kib = pages * 4.0;
    if pages.fract() == 0.0 {
        format!("{pages:.0} pages ({kib:.0} KiB)")
    } else {
        format!("{pages:.2} pages ({kib:.1} KiB)")
    }
}

/// Whether a ratio of medians is noise: its interval holds 1.
fn noise(r: &Ratio) -> &'static str {
    if r.is_noise() {
        "within the noise"
    } else {
        "outside the noise"
    }
}

/// The times, as the comparison with an earlier report names them.
const TIMES: &str = "medians of the rounds";

/// What this run reproduced of the report it replaced.
fn reproduction(md: &mut String, r: Option<&Reproduction>, base: &str) {
    md.push_str("## Against the report it replaced\n\n");
    let Some(r) = r else {
        writeln!(md, "There were no earlier figures (`docs/evidence/{base}.yaml`) to compare with.\n").unwrap();
        return;
    };
    writeln!(
        md,
        "This run booted {} of its boots and read {} again from the cache (a console read again gives its figures again by \
         construction; `--rerun` boots every one). Against the figures of the report it replaced (harness {}, kept in \
         `docs/evidence/{base}.yaml`):\n",
        r.booted, r.read_again, r.before
    )
    .unwrap();
    let listed = |changes: &[String]| match changes.len() {
        0 => "every one the same".to_string(),
        n => format!("{n} differ: {}", changes.join("; ")),
    };
    writeln!(md, "- placement, {} counted domains on both builds: {}", r.placements, listed(&r.placement_changes)).unwrap();
    writeln!(md, "- Xen's pages per measured domain, {} medians: {}", r.pages, listed(&r.page_changes)).unwrap();
    let ratios: Vec<String> = r
        .ratios
        .iter()
        .filter(|t| !t.inside())
        .map(|t| format!("{} {:.3}, before {}", t.what, t.now, t.before.text()))
        .collect();
    match (r.ratios.len(), ratios.len()) {
        (0, _) => md.push_str("- ratios of medians: the report it replaced stated no interval for them\n"),
        (n, 0) => writeln!(md, "- ratios of medians, patched over baseline: all {n} inside the 90% interval the report stated").unwrap(),
        (n, k) => writeln!(
            md,
            "- ratios of medians, patched over baseline: {} of {n} inside the 90% interval the report stated; outside: {}",
            n - k,
            ratios.join("; ")
        )
        .unwrap(),
    }
    let outside: Vec<String> = r
        .times
        .iter()
        .filter(|t| !t.inside())
        .map(|t| {
            let (lo, hi, name) = t.before.stated();
            format!("{} {:.1} ms, before {:.1} ms ({name} {lo:.1}-{hi:.1})", t.what, t.now, t.before.median)
        })
        .collect();
    let inside = r.times.len() - outside.len();
    match outside.len() {
        0 => writeln!(md, "- {TIMES}: all {} inside the spread the report stated\n", r.times.len()).unwrap(),
        _ => writeln!(
            md,
            "- {TIMES}: {inside} of {} inside the spread the report stated; outside: {}\n",
            r.times.len(),
            outside.join("; ")
        )
        .unwrap(),
    }
}

/// The harness's own times: the builds, the README's commands, the boots.
fn own_times(md: &mut String, times: &OwnTimes) {
    md.push_str("## The harness's own times\n\n");
    md.push_str(
        "Each as it was measured on the machine above when it last ran, kept by the harness \
         (a build's beside its artifacts, a command's in the cache, a boot's with its console), \
         so a report made from cached boots has them too. Wall times.\n\n",
    );
    md.push_str("| build | wall time | finished (UTC) | how |\n| --- | --- | --- | --- |\n");
    for (label, t) in &times.builds {
        match t {
            Some(t) => writeln!(md, "| {label} | {} | {} | {} |", t.wall(), t.finished, t.detail).unwrap(),
            None => writeln!(md, "| {label} | not kept | | built before the harness kept build times |").unwrap(),
        }
    }
    md.push('\n');
    if times.commands.is_empty() {
        md.push_str("No run of the README's commands was timed on this machine yet.\n\n");
    } else {
        md.push_str("| command | wall time | finished (UTC) | what it did |\n| --- | --- | --- | --- |\n");
        for t in &times.commands {
            let failed = if t.ok { "" } else { " (it failed)" };
            writeln!(md, "| `{}` | {} | {} | {}{failed} |", t.what, t.wall(), t.finished, t.detail).unwrap();
        }
        md.push('\n');
    }
    match &times.boots {
        Some(t) => writeln!(md, "The boots of this report, on the machine above:\n\n```\n{t}```\n").unwrap(),
        None => md.push_str(
            "No boot of this report has its times: their consoles were kept before the harness kept \
             timelines with them; `--rerun` boots them all again and times them.\n\n",
        ),
    }
}

/// The cost section: every measured domain's times on both builds, their
/// ratio, and the extra memory.
fn cost_section(md: &mut String, compared: &[Compared], cost_pairs: &[Pair], clock: &str) {
    md.push_str("## Cost

");
    if compared.is_empty() {
        md.push_str("No scenario measured creation cost.

");
        return;
    }
    for p in cost_pairs {
        writeln!(md, "{} / {}: {}
", p.baseline.topology, p.baseline.scenario, p.baseline.description).unwrap();
    }
    md.push_str(
        "These boots ran last, the scenario's baseline and patched boot side \
         by side, with no other boot beside them. Their clock is ",
    );
    md.push_str(clock);
    md.push_str(
        ". Time in dom0 (the kernel's monotonic clock) around \
         each command, as the median of the rounds with their 10th to 90th \
         percentile (P10-P90). A ratio is patched median over baseline \
         median, with the interval that holds 90% of it when each build's \
         rounds are drawn again (bootstrap); \"within the noise\" when that \
         interval holds 1. A rerun is held to the ratios' intervals and to the \
         medians' P10-P90. Xen's pages \
         are those it took beyond the domain's own pages while the domain \
         existed (free pages before, minus free pages during, minus the \
         domain's total), the median of the rounds.\n\n",
    );
    md.push_str(
        "| topology | domain | vCPUs | rounds | `xl create -p` baseline | patched | ratio | `xl destroy` baseline | patched | ratio | Xen's pages baseline | patched |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in compared {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {}, {} | {} | {} | {}, {} | {} | {} |",
            c.topology,
            c.name,
            c.vcpus,
            c.create[1].n,
            c.create[0].text(),
            c.create[1].text(),
            c.create_ratio.text(),
            noise(&c.create_ratio),
            c.destroy[0].text(),
            c.destroy[1].text(),
            c.destroy_ratio.text(),
            noise(&c.destroy_ratio),
            c.xen_pages[0],
            c.xen_pages[1]
        )
        .unwrap();
    }
    md.push('\n');
    if let Some(e) = cost::extra(compared) {
        writeln!(md, "- extra Xen memory per domain (fewest vCPUs, patched minus baseline): {}", pages_text(e.per_domain as f64)).unwrap();
        if let (Some(v), Some(b)) = (e.per_vcpu, e.baseline_per_vcpu) {
            writeln!(
                md,
                "- extra Xen memory per vCPU (slope between the fewest and the most vCPUs, patched minus baseline): {}; \
                 the baseline's own per vCPU, for scale: {} (mostly the HAP pool libxl sizes by vCPU)",
                pages_text(v),
                pages_text(b)
            )
            .unwrap();
        }
        md.push('\n');
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
pub fn document(
    header: &Header,
    pairs: &[Pair],
    cost_pairs: &[Pair],
    reproduced: Option<&Reproduction>,
    times: &OwnTimes,
    pictures: &str,
) -> Result<String> {
    let mut md = String::new();
    let totals = totals(pairs)?;
    let compared = cost::compare(cost_pairs)?;
    writeln!(md, "# Evidence: where a new domain's Xen structures land ({})\n", header.base).unwrap();
    writeln!(md, "Written by `{}`; regenerate it rather than edit it.\n", header.command).unwrap();
    writeln!(md, "- base: {}, Xen {}", header.base, header.xen_commit).unwrap();
    writeln!(md, "- harness: {}", header.harness_commit).unwrap();
    writeln!(md, "- machine: {}", header.machine).unwrap();
    writeln!(md, "- {} topology and scenario pairs, each booted on the baseline and the patched build\n", pairs.len()).unwrap();

    md.push_str("## Headline\n\n");
    md.push_str("| | baseline | patched |\n| --- | --- | --- |\n");
    writeln!(md, "| structures on the domain's own nodes, every counted domain | {} | {} |", totals[0].text(), totals[1].text()).unwrap();
    for c in &compared {
        writeln!(
            md,
            "| `xl create -p` of {} ({} vCPU(s)), median | {:.1} ms | {:.1} ms ({:.3}x, 90% interval {:.3}-{:.3}, {}) |",
            c.name,
            c.vcpus,
            c.create[0].median,
            c.create[1].median,
            c.create_ratio.value,
            c.create_ratio.low,
            c.create_ratio.high,
            noise(&c.create_ratio)
        )
        .unwrap();
    }
    if let Some(e) = cost::extra(&compared) {
        writeln!(md, "| extra Xen memory per domain | | {} |", pages_text(e.per_domain as f64)).unwrap();
        if let Some(v) = e.per_vcpu {
            writeln!(md, "| extra Xen memory per vCPU | | {} |", pages_text(v)).unwrap();
        }
    }
    md.push('\n');
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

    let mut short = Vec::new();
    for p in pairs {
        for l in locality::of_report(&p.patched)? {
            if l.local < l.listed() {
                short.push(format!("{} ({}, {})", l.domain, p.name(), Share { local: l.local, listed: l.listed() }.text()));
            }
        }
    }
    if short.is_empty() {
        md.push_str("With the series every counted domain has all its listed structures on its own nodes.\n\n");
    } else {
        writeln!(md, "With the series, the domains with structures elsewhere: {}.\n", short.join("; ")).unwrap();
    }

    md.push_str("## By topology, scenario and domain\n\n");
    md.push_str(
        "| topology | scenario | domain | baseline: its nodes | local | patched: its nodes | local |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for p in pairs {
        let sides = [locality::of_report(&p.baseline)?, locality::of_report(&p.patched)?];
        let mut names: Vec<&str> = sides.iter().flatten().map(|l| l.domain.as_str()).collect();
        names.dedup();
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(*n));
        for name in names {
            let [b, q] = [&sides[0], &sides[1]].map(|s| s.iter().find(|l| l.domain == name));
            writeln!(
                md,
                "| {} | {} | {name} | {} | {} | {} | {} |",
                p.baseline.topology,
                p.baseline.scenario,
                nodes_of(b),
                share_of(b),
                nodes_of(q),
                share_of(q)
            )
            .unwrap();
        }
    }
    md.push('\n');

    cost_section(&mut md, &compared, cost_pairs, &header.clock);

    reproduction(&mut md, reproduced, &header.base);
    own_times(&mut md, times);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::tests::{pair, pair_of};
    use crate::timings::Timing;

    /// The document from real boots: its figures are the reports', not
    /// typed in, and the cost of the captured creation-cost boots.
    #[test]
    fn document_from_captured_boots() {
        let placing = [pair("two-node-node1-from-node0-master")];
        let costing = [pair_of("two-node-creation-cost-master", "creation-cost")];
        let header = Header {
            command: "cargo xtask evidence".into(),
            base: "master".into(),
            xen_commit: "c447b7308b (4.23-unstable)".into(),
            harness_commit: "0123abc".into(),
            machine: "a test".into(),
            clock: "a counter of a test".into(),
        };
        let times = OwnTimes {
            builds: vec![
                ("master/baseline".into(), None),
                ("master/patched".into(), Some(Timing::new("master/patched", 246.0, "make from a clean work tree, 2 make jobs; hypervisor 47 s", true))),
            ],
            commands: vec![Timing::new("cargo xtask test", 61.0, "138 tests, 1 failed", false)],
            boots: None,
        };
        let md = document(&header, &placing, &costing, None, &times, "master").unwrap();
        let [b, p] = totals(&placing).unwrap();
        assert!(md.contains(&format!("| structures on the domain's own nodes, every counted domain | {} | {} |", b.text(), p.text())));
        assert!(md.contains("| two-node | node1-from-node0 | pv-node1 | 1 | 0 of 8 (0%) | 1 | 8 of 8 (100%) |"), "{md}");
        assert!(md.contains("With the series every counted domain has all its listed structures on its own nodes."));
        // 349 and 1146 pages on the baseline, 352 and 1154 patched: 3 more
        // per domain (grant table, vCPU 0's scheduling unit and FPU area
        // as pages of their own), 5/3 more per vCPU.
        assert!(md.contains("| extra Xen memory per domain | | 3 pages (12 KiB) |"), "{md}");
        assert!(md.contains("| extra Xen memory per vCPU | | 1.67 pages (6.7 KiB) |"), "{md}");
        let c = &cost::compare(&costing).unwrap()[0];
        assert_eq!((c.name.as_str(), c.xen_pages), ("cost-pvh-1vcpu", [349, 352]));
        let row = format!("| `xl create -p` of cost-pvh-1vcpu (1 vCPU(s)), median | {:.1} ms | {:.1} ms", c.create[0].median, c.create[1].median);
        assert!(md.contains(&row), "{md}");
        assert!(md.contains("side by side, with no other boot beside them. Their clock is a counter of a test. Time in dom0"), "{md}");
        assert!(!md.contains("![two-node/creation-cost]") && md.contains("![two-node/node1-from-node0](master/two-node__node1-from-node0.svg)"));
        assert!(md.contains("| master/baseline | not kept | | built before the harness kept build times |"), "{md}");
        assert!(md.contains("| master/patched | 4 min 6 s | "), "{md}");
        assert!(md.contains("| `cargo xtask test` | 1 min 1 s | ") && md.contains("| 138 tests, 1 failed (it failed) |"), "{md}");
        assert!(md.contains("No boot of this report has its times"));
        assert!(md.contains("There were no earlier figures (`docs/evidence/master.yaml`) to compare with."));
        // Against itself, with one median moved out of its range.
        let figures = crate::evidence::figures::Figures::of("0123abc", &placing, &cost::compare(&costing).unwrap()).unwrap();
        let mut moved = figures.clone();
        moved.cost[0].destroy[0].median = 1000.0;
        let mut r = crate::evidence::figures::reproduce(&figures, &moved);
        (r.booted, r.read_again) = (3, 1);
        let md = document(&header, &placing, &costing, Some(&r), &times, "master").unwrap();
        assert!(md.contains("This run booted 3 of its boots and read 1 again from the cache"), "{md}");
        assert!(md.contains("- placement, 2 counted domains on both builds: every one the same\n"), "{md}");
        assert!(md.contains("- Xen's pages per measured domain, 4 medians: every one the same\n"), "{md}");
        let b = figures.cost[0].destroy[0];
        let line = format!(
            "- {TIMES}: 7 of 8 inside the spread the report stated; outside: `xl destroy` of cost-pvh-1vcpu (two-node), baseline 1000.0 ms, before {:.1} ms (P10-P90 {:.1}-{:.1})\n",
            b.median,
            b.p10.unwrap(),
            b.p90.unwrap()
        );
        assert!(md.contains(&line), "{md}");
        assert!(md.contains("- ratios of medians, patched over baseline: all 4 inside the 90% interval the report stated\n"), "{md}");
        let c = &cost::compare(&costing).unwrap()[0];
        let row = format!("| {}, {} |", c.create_ratio.text(), noise(&c.create_ratio));
        assert!(md.contains(&row), "{md}");
    }

    /// The README's headline figures are those of the report in docs/: a
    /// regenerated report that changes one fails here until the README
    /// follows.
    #[test]
    fn readme_headline_is_the_reports() {
        let repo = crate::paths::repo();
        let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
        let doc = std::fs::read_to_string(repo.join("docs/evidence/master.md")).unwrap();
        let section = readme.split("\n## Evidence\n").nth(1).unwrap().split("\n## ").next().unwrap();
        let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| --")).skip(1).collect();
        assert!(rows.len() >= 5, "{rows:?}");
        for row in rows {
            for cell in row.split('|').skip(2).map(str::trim).filter(|c| !c.is_empty()) {
                for figure in cell.split(" (").map(|f| f.trim_end_matches(')')) {
                    assert!(doc.contains(figure), "README's {figure:?} ({row}) is not in docs/evidence/master.md");
                }
            }
        }
    }
}
