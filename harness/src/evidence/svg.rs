//! One picture per topology and scenario: each node a box with its CPUs and
//! memory, in it each domain's memory there and the structures Xen put
//! there; baseline on the left, patched on the right, node beside node.
//!
//! The drawing carries what it shows as attributes (`data-build`,
//! `data-node`, `data-domain`, `data-pages`, `data-object`), so that tests
//! read it back with an XML parser and compare it with the report.

use std::fmt::Write;

use anyhow::Result;

use super::locality::{self, Placed};
use super::Pair;
use crate::report::{Domain, Report};

const MARGIN: u32 = 16;
const PANEL_W: u32 = 470;
const GAP: u32 = 24;
const TOP: u32 = 64;
const NODE_GAP: u32 = 10;
const NODE_HEAD: u32 = 26;
const DOMAIN_HEAD: u32 = 18;
const LINE: u32 = 14;
const NODE_PAD: u32 = 8;
/// Characters of the small font that fit a line of the object lists.
const LINE_CHARS: usize = 66;
const COLOURS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
const REMOTE: &str = "#b00020";
const UNCOUNTED: &str = "#666666";

/// Where a structure is, as the picture marks it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mark {
    /// On a node the domain's node affinity names.
    Local,
    /// On another node.
    Remote,
    /// The domain has no home nodes (affinity `all`, or dom0's automatic).
    Uncounted,
}

/// What one domain has on one node (or, for `node: None`, in the xmalloc
/// pool): its memory there and its structures.
struct Row<'a> {
    domain: &'a Domain,
    colour: &'static str,
    pages: Option<u64>,
    objects: Vec<(String, Mark)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Pages of 4 KiB as people read them.
pub fn memory_text(pages: u64) -> String {
    if pages >= 256 {
        format!("{} MiB", (pages + 128) / 256)
    } else {
        format!("{pages} page{}", if pages == 1 { "" } else { "s" })
    }
}

/// The rows of one node (`Some(n)`) or of the structures on no node
/// (`None`), for one report.
fn rows(report: &Report, node: Option<u32>) -> Result<Vec<Row<'_>>> {
    let mut out = Vec::new();
    for (i, d) in report.domains.iter().enumerate() {
        let home = locality::home_nodes(d)?;
        let objects: Vec<(String, Mark)> = locality::placed(&report.build, d)
            .into_iter()
            .filter(|p: &Placed| p.node == node)
            .map(|p| {
                let mark = match (&home, p.node) {
                    (None, _) => Mark::Uncounted,
                    (Some(h), Some(n)) if h.contains(&n) => Mark::Local,
                    (Some(_), _) => Mark::Remote,
                };
                (p.owner.label(&p.object), mark)
            })
            .collect();
        let pages = node.and_then(|n| d.pages_per_node.as_ref().and_then(|p| p.get(&n).copied())).filter(|&p| p > 0);
        if objects.is_empty() && pages.is_none() {
            continue;
        }
        out.push(Row { domain: d, colour: COLOURS[i % COLOURS.len()], pages, objects });
    }
    Ok(out)
}

/// The object list broken into lines of at most `LINE_CHARS` characters.
fn lines(objects: &[(String, Mark)]) -> Vec<Vec<&(String, Mark)>> {
    let mut out: Vec<Vec<&(String, Mark)>> = Vec::new();
    let mut width = 0;
    for o in objects {
        let w = o.0.len() + 2;
        match out.last_mut() {
            Some(line) if width + w <= LINE_CHARS => {
                line.push(o);
                width += w;
            }
            _ => {
                out.push(vec![o]);
                width = w;
            }
        }
    }
    out
}

fn rows_height(rows: &[Row]) -> u32 {
    rows.iter().map(|r| DOMAIN_HEAD + LINE * lines(&r.objects).len() as u32).sum::<u32>().max(LINE + 4)
}

/// Draws the rows at `y` (the first row's top), inside a node box.
fn draw_rows(svg: &mut String, rows: &[Row], mut y: u32) {
    if rows.is_empty() {
        writeln!(svg, r##"<text x="12" y="{}" font-size="11" fill="#888">nothing of a domain here</text>"##, y + 12).unwrap();
        return;
    }
    for r in rows {
        let d = r.domain;
        let pages_attr = r.pages.map(|p| format!(r#" data-pages="{p}""#)).unwrap_or_default();
        writeln!(svg, r#"<g class="domain" data-domain="{}"{pages_attr}>"#, escape(&d.name)).unwrap();
        writeln!(svg, r#"<rect x="12" y="{}" width="10" height="10" fill="{}"/>"#, y + 4, r.colour).unwrap();
        let memory = r.pages.map(|p| format!(" · {} of its memory", memory_text(p))).unwrap_or_default();
        writeln!(
            svg,
            r#"<text x="28" y="{}" font-size="12"><tspan font-weight="bold">{}</tspan> (domain {}){}</text>"#,
            y + 13,
            escape(&d.name),
            d.id,
            escape(&memory)
        )
        .unwrap();
        y += DOMAIN_HEAD;
        for line in lines(&r.objects) {
            write!(svg, r#"<text x="28" y="{}" font-size="11">"#, y + 10).unwrap();
            for (i, (label, mark)) in line.iter().enumerate() {
                if i > 0 {
                    svg.push_str(", ");
                }
                let style = match mark {
                    Mark::Local => String::new(),
                    Mark::Remote => format!(r#" fill="{REMOTE}" font-weight="bold""#),
                    Mark::Uncounted => format!(r#" fill="{UNCOUNTED}""#),
                };
                write!(svg, r#"<tspan class="object" data-object="{0}"{style}>{0}</tspan>"#, escape(label)).unwrap();
            }
            svg.push_str("</text>\n");
            y += LINE;
        }
        svg.push_str("</g>\n");
    }
}

/// The node's line: its number, CPUs and memory.
fn node_heading(report: &Report, node: u32) -> String {
    match report.nodes.iter().find(|n| n.node == node) {
        Some(n) => {
            let cpus = if n.cpus.is_empty() { "no CPU".to_string() } else { format!("CPUs {}", n.cpus) };
            let memory = if n.memory_mib == 0 { "no memory".to_string() } else { format!("{} MiB", n.memory_mib) };
            format!("node {node} · {cpus} · {memory}")
        }
        None => format!("node {node}"),
    }
}

/// The picture of a pair, as SVG text.
pub fn draw(pair: &Pair) -> Result<String> {
    let reports = pair.reports();
    let mut nodes: Vec<u32> = reports.iter().flat_map(|r| r.nodes.iter().map(|n| n.node)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    // Each band (a node, then the structures on no node) as tall as the
    // taller of its two sides, so that the sides line up.
    let mut bands: Vec<(Option<u32>, [Vec<Row>; 2], u32)> = Vec::new();
    for band in nodes.iter().map(|&n| Some(n)).chain([None]) {
        let sides = [rows(reports[0], band)?, rows(reports[1], band)?];
        if band.is_none() && sides.iter().all(|s| s.is_empty()) {
            continue;
        }
        let height = NODE_HEAD + sides.iter().map(|s| rows_height(s)).max().unwrap_or(0) + NODE_PAD;
        bands.push((band, sides, height));
    }
    let legend_y = TOP + bands.iter().map(|b| b.2 + NODE_GAP).sum::<u32>() + 8;
    let width = 2 * MARGIN + 2 * PANEL_W + GAP;
    let height = legend_y + 40;

    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Verdana, sans-serif">"#
    )
    .unwrap();
    let title = format!("{}: {} / {}", pair.baseline.base, pair.baseline.topology, pair.baseline.scenario);
    writeln!(svg, "<title>{}</title>", escape(&title)).unwrap();
    writeln!(svg, r#"<rect width="{width}" height="{height}" fill="white"/>"#).unwrap();
    writeln!(svg, r#"<text x="{MARGIN}" y="26" font-size="16" font-weight="bold">{}</text>"#, escape(&title)).unwrap();
    for (side, report) in reports.iter().enumerate() {
        let x = MARGIN + side as u32 * (PANEL_W + GAP);
        let heading = match report.build.as_str() {
            "patched" => "patched: with the series",
            _ => "baseline: without the series",
        };
        writeln!(svg, r#"<g class="build" data-build="{}" transform="translate({x},0)">"#, escape(&report.build)).unwrap();
        writeln!(svg, r#"<text x="0" y="52" font-size="14" font-weight="bold">{heading}</text>"#).unwrap();
        let mut y = TOP;
        for (band, sides, h) in &bands {
            let (id, label, fill) = match band {
                Some(n) => (n.to_string(), node_heading(report, *n), "#f4f6fa"),
                None => ("none".to_string(), "on no page of their own (Xen's xmalloc pool)".to_string(), "#fbf7ee"),
            };
            writeln!(svg, r#"<g class="node" data-node="{id}" transform="translate(0,{y})">"#).unwrap();
            writeln!(svg, r##"<rect x="0" y="0" width="{PANEL_W}" height="{h}" rx="6" fill="{fill}" stroke="#8a94a6"/>"##).unwrap();
            writeln!(svg, r#"<text x="10" y="18" font-size="13" font-weight="bold">{}</text>"#, escape(&label)).unwrap();
            draw_rows(&mut svg, &sides[side], NODE_HEAD);
            svg.push_str("</g>\n");
            y += h + NODE_GAP;
        }
        svg.push_str("</g>\n");
    }
    writeln!(
        svg,
        r#"<text x="{MARGIN}" y="{}" font-size="11">Structures in black are on a node the domain's node affinity names; <tspan fill="{REMOTE}" font-weight="bold">in red, on another node</tspan>; <tspan fill="{UNCOUNTED}">in grey, of a domain without a node of its own</tspan>.</text>"#,
        legend_y + 4
    )
    .unwrap();
    writeln!(
        svg,
        r#"<text x="{MARGIN}" y="{}" font-size="11">Memory: the domain's own pages on the node, from the instrumented 'u' debug key.</text>"#,
        legend_y + 20
    )
    .unwrap();
    svg.push_str("</svg>\n");
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::evidence::tests::pair;

    /// (build, node or `none`, domain, object label) for every structure
    /// the picture draws, read back with an XML parser.
    fn drawn(svg: &str) -> (BTreeSet<(String, String, String, String)>, BTreeSet<(String, String, String, u64)>) {
        let doc = roxmltree::Document::parse(svg).expect("the picture is well-formed XML");
        let up = |n: roxmltree::Node, class: &str, attr: &str| -> String {
            n.ancestors()
                .find(|a| a.attribute("class") == Some(class))
                .and_then(|a| a.attribute(attr))
                .unwrap_or_else(|| panic!("no {class} around {n:?}"))
                .to_string()
        };
        let mut objects = BTreeSet::new();
        let mut pages = BTreeSet::new();
        for n in doc.descendants().filter(|n| n.is_element()) {
            if n.attribute("class") == Some("object") {
                let label = n.attribute("data-object").unwrap().to_string();
                assert_eq!(n.text(), Some(label.as_str()), "the object is drawn as it is named");
                objects.insert((up(n, "build", "data-build"), up(n, "node", "data-node"), up(n, "domain", "data-domain"), label));
            }
            if let Some(p) = n.attribute("data-pages") {
                pages.insert((up(n, "build", "data-build"), up(n, "node", "data-node"), n.attribute("data-domain").unwrap().to_string(), p.parse().unwrap()));
            }
        }
        (objects, pages)
    }

    /// Every structure of every domain appears once, on the node the report
    /// gives it (or with those on no node), and every domain's memory on
    /// each node where it has some.
    #[test]
    fn the_picture_shows_each_report() {
        let pair = pair("two-node-node1-from-node0-master");
        let svg = draw(&pair).unwrap();
        let (objects, pages) = drawn(&svg);
        let mut want_objects = BTreeSet::new();
        let mut want_pages = BTreeSet::new();
        for r in pair.reports() {
            for d in &r.domains {
                for p in locality::placed(&r.build, d) {
                    let node = p.node.map_or("none".to_string(), |n| n.to_string());
                    want_objects.insert((r.build.clone(), node, d.name.clone(), p.owner.label(&p.object)));
                }
                for (n, p) in d.pages_per_node.iter().flatten().filter(|(_, &p)| p > 0) {
                    want_pages.insert((r.build.clone(), n.to_string(), d.name.clone(), *p));
                }
            }
        }
        assert_eq!(objects, want_objects);
        assert_eq!(pages, want_pages);
        // What the fixture shows: without the series pv-node1's struct domain
        // is on node 0, the toolstack's; with it, on node 1.
        assert!(objects.contains(&("baseline".into(), "0".into(), "pv-node1".into(), "domain".into())));
        assert!(objects.contains(&("patched".into(), "1".into(), "pv-node1".into(), "domain".into())));
        assert!(objects.contains(&("baseline".into(), "none".into(), "pv-node1".into(), "vCPU 0: sched_unit".into())));
    }

    /// A structure off the domain's nodes is drawn in red, one on them not.
    #[test]
    fn remote_structures_are_marked() {
        let pair = pair("two-node-node1-from-node0-master");
        let svg = draw(&pair).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let mut red = 0;
        for n in doc.descendants().filter(|n| n.attribute("class") == Some("object")) {
            let domain = n.ancestors().find_map(|a| a.attribute("data-domain")).unwrap();
            let node = n.ancestors().find_map(|a| a.attribute("data-node")).unwrap();
            let is_red = n.attribute("fill") == Some(REMOTE);
            if domain != "Domain-0" && node != "none" {
                assert_eq!(is_red, node != "1", "{domain} {:?} on node {node}", n.text());
            }
            red += is_red as u32;
        }
        assert!(red > 0, "the baseline has pv-node1's structures on node 0");
    }

    #[test]
    fn memory_as_people_read_it() {
        assert_eq!(memory_text(38400), "150 MiB");
        assert_eq!(memory_text(1), "1 page");
        assert_eq!(memory_text(15), "15 pages");
    }
}
