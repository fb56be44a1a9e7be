//! Parse stage: the output of `xl info -n`, `xl list -n`, `xl vcpu-list` and
//! the `u` debug key, as the result block carries it, into typed values.
//! Each parser names the line it cannot read.

use anyhow::{anyhow, bail, Context, Result};

/// One NUMA node in `xl info -n`'s `numa_info` table.
#[derive(Debug, Clone, PartialEq)]
pub struct NumaInfo {
    pub node: u32,
    pub memsize_mib: u64,
    pub memfree_mib: u64,
    pub distances: Vec<u32>,
}

/// One CPU in `xl info -n`'s `cpu_topology` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuInfo {
    pub cpu: u32,
    pub core: u32,
    pub socket: u32,
    pub node: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct XlInfo {
    pub xen_version: String,
    pub nr_nodes: u32,
    pub nr_cpus: u32,
    pub numa: Vec<NumaInfo>,
    pub cpus: Vec<CpuInfo>,
}

fn numbers<const N: usize>(line: &str) -> Result<[u64; N]> {
    let v: Vec<u64> = line
        .split(|c: char| c == ':' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("expected {N} numbers in {line:?}"))?;
    v.try_into().map_err(|_| anyhow!("expected {N} numbers in {line:?}"))
}

/// `xl info -n`.
pub fn xl_info(lines: &[String]) -> Result<XlInfo> {
    let field = |name: &str| -> Result<String> {
        lines
            .iter()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .with_context(|| format!("`xl info -n` has no {name} line"))
    };
    let parse_num = |name: &str| -> Result<u32> {
        field(name)?.parse().with_context(|| format!("`xl info -n`: {name} is not a number"))
    };
    let major = field("xen_major")?;
    let minor = field("xen_minor")?;
    let extra = field("xen_extra")?;
    let mut info = XlInfo {
        xen_version: format!("{major}.{minor}{extra}"),
        nr_nodes: parse_num("nr_nodes")?,
        nr_cpus: parse_num("nr_cpus")?,
        numa: Vec::new(),
        cpus: Vec::new(),
    };
    let table = |header: &str| -> Result<&[String]> {
        let start = lines
            .iter()
            .position(|l| l.trim_start().starts_with(header))
            .with_context(|| format!("`xl info -n` has no table starting {header:?}"))?;
        let rest = &lines[start + 1..];
        let end = rest.iter().position(|l| !l.trim_start().starts_with(|c: char| c.is_ascii_digit())).unwrap_or(rest.len());
        Ok(&rest[..end])
    };
    for line in table("cpu:    core    socket     node")? {
        let [cpu, core, socket, node] = numbers::<4>(line)?;
        info.cpus.push(CpuInfo { cpu: cpu as u32, core: core as u32, socket: socket as u32, node: node as u32 });
    }
    for line in table("node:    memsize    memfree    distances")? {
        let (head, dists) = line
            .trim()
            .rsplit_once(char::is_whitespace)
            .with_context(|| format!("malformed numa_info line {line:?}"))?;
        let [node, memsize, memfree] = numbers::<3>(head)?;
        let distances = dists
            .split(',')
            .map(|d| d.parse::<u32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("malformed distances in {line:?}"))?;
        info.numa.push(NumaInfo { node: node as u32, memsize_mib: memsize, memfree_mib: memfree, distances });
    }
    if info.numa.len() != info.nr_nodes as usize {
        bail!("`xl info -n` says nr_nodes {} but lists {} nodes", info.nr_nodes, info.numa.len());
    }
    // The cpu_topology table may be shorter than nr_cpus, even empty: xl
    // leaves out CPUs whose core Xen does not know (seen with one core per
    // socket under QEMU). The `u` debug key's CPU lines fill in.
    Ok(info)
}

/// One row of `xl list -n`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub name: String,
    pub id: u32,
    pub mem_mib: u64,
    pub vcpus: u32,
    pub state: String,
    /// As xl prints it: `all`, `none` or a list like `0-1,3`.
    pub node_affinity: String,
}

/// `xl list -n`.
pub fn xl_list(lines: &[String]) -> Result<Vec<ListEntry>> {
    let mut rows = lines.iter().skip_while(|l| !l.starts_with("Name"));
    let header = rows.next().context("`xl list -n` has no header line")?;
    if !header.trim_end().ends_with("NODE Affinity") {
        bail!("`xl list -n` header has no NODE Affinity column: {header:?}");
    }
    rows.filter(|l| !l.trim().is_empty())
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let [name, id, mem, vcpus, state, _time, affinity] = w[..] else {
                bail!("malformed `xl list -n` line {line:?}");
            };
            let num = |s: &str| s.parse::<u64>().with_context(|| format!("malformed `xl list -n` line {line:?}"));
            Ok(ListEntry {
                name: name.into(),
                id: num(id)? as u32,
                mem_mib: num(mem)?,
                vcpus: num(vcpus)? as u32,
                state: state.into(),
                node_affinity: affinity.into(),
            })
        })
        .collect()
}

/// One row of `xl vcpu-list`.
#[derive(Debug, Clone, PartialEq)]
pub struct VcpuEntry {
    pub domain: String,
    pub id: u32,
    pub vcpu: u32,
    pub hard: String,
    pub soft: String,
}

/// `xl vcpu-list`.
pub fn xl_vcpu_list(lines: &[String]) -> Result<Vec<VcpuEntry>> {
    let mut rows = lines.iter().skip_while(|l| !l.starts_with("Name"));
    rows.next().context("`xl vcpu-list` has no header line")?;
    rows.filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || anyhow!("malformed `xl vcpu-list` line {line:?}");
            let (left, soft) = line.rsplit_once(" / ").ok_or_else(bad)?;
            let w: Vec<&str> = left.split_whitespace().collect();
            let [domain, id, vcpu, _cpu, _state, _time, hard] = w[..] else {
                return Err(bad());
            };
            Ok(VcpuEntry {
                domain: domain.into(),
                id: id.parse().map_err(|_| bad())?,
                vcpu: vcpu.parse().map_err(|_| bad())?,
                hard: hard.into(),
                soft: soft.trim().into(),
            })
        })
        .collect()
}

/// What the `u` debug key says of one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainMemory {
    pub id: u32,
    pub total_pages: u64,
    /// Pages on each node, by node number.
    pub pages: Vec<(u32, u64)>,
    /// With the series' instrument (docs/misc/numa-debug-key.pandoc):
    /// the node affinity and whether Xen derives it (`auto`) or the
    /// toolstack set it (`explicit`).
    pub node_affinity: Option<(String, String)>,
    /// With the instrument: the node of each of Xen's own structures,
    /// `(vCPU or None for the domain's, object, node or "?")`, in order.
    pub objects: Vec<(Option<u32>, String, String)>,
    /// With the instrument: the first and last vCPU whose objects it left
    /// out (it lists a bounded number per domain).
    pub vcpus_not_listed: Option<(u32, u32)>,
}

/// A domain's heading in the `u` key's output: its ID and total pages.
fn domain_heading(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("Domain ").or_else(|| line.strip_prefix('d'))?;
    let (id, total) = rest.split_once(" (total: ")?;
    id.chars().all(|c| c.is_ascii_digit()).then_some(())?;
    Some((id, total.strip_suffix("):")?))
}

/// The `u` debug key's output (`dump_numa()`, in xen/arch/x86/numa.c on
/// 4.17, xen/common/numa.c on master).
#[derive(Debug, Clone, PartialEq)]
pub struct NumaDump {
    /// Free pages on each node, by node number.
    pub free_pages: Vec<(u32, u64)>,
    /// Each online CPU's node (`CPU0...1 -> NODE0` lines), by CPU.
    pub cpu_nodes: Vec<(u32, u32)>,
    /// The order in which the heap falls back from each node to the others
    /// (`Fallback from node 1: 2 0`), by node: printed by the series' patch
    /// that makes the fallback follow the distances, absent before it.
    pub fallback: Vec<(u32, Vec<u32>)>,
    pub domains: Vec<DomainMemory>,
}

/// Parses the `u` key's output out of `xl dmesg` (or console) lines: from
/// the last "'u' pressed" line on.
pub fn debug_key_u(lines: &[String]) -> Result<NumaDump> {
    let body = |l: &String| -> String {
        let l = l.trim_end();
        l.strip_prefix("(XEN) ").unwrap_or(l).to_string()
    };
    let start = lines
        .iter()
        .rposition(|l| l.contains("'u' pressed -> dumping numa info"))
        .context("no \"'u' pressed -> dumping numa info\" line: the debug key's output is missing")?;
    let mut dump = NumaDump { free_pages: Vec::new(), cpu_nodes: Vec::new(), fallback: Vec::new(), domains: Vec::new() };
    let mut in_domains = false;
    for line in lines[start + 1..].iter().map(body) {
        let bad = || anyhow!("malformed `u` debug key line {line:?}");
        if let Some(rest) = line.strip_prefix("NODE") {
            // NODE0 start->0 size->262144 free->123
            let (node, rest) = rest.split_once(' ').ok_or_else(bad)?;
            let free = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("free->"))
                .ok_or_else(bad)?;
            dump.free_pages.push((node.parse().map_err(|_| bad())?, free.parse().map_err(|_| bad())?));
        } else if let (false, Some(rest)) = (in_domains, line.strip_prefix("CPU")) {
            // CPU0...1 -> NODE0, or CPU2 -> NODE1
            let (cpus, node) = rest.split_once(" -> NODE").ok_or_else(bad)?;
            let node: u32 = node.trim().parse().map_err(|_| bad())?;
            let (first, last) = cpus.split_once("...").unwrap_or((cpus, cpus));
            let (first, last): (u32, u32) =
                (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
            dump.cpu_nodes.extend((first..=last).map(|c| (c, node)));
        } else if let (false, Some(rest)) = (in_domains, line.strip_prefix("Fallback from node ")) {
            // Fallback from node 1: 3 2 0 (or nothing after the colon)
            let (node, order) = rest.split_once(':').ok_or_else(bad)?;
            let order = order.split_whitespace().map(|n| n.parse().map_err(|_| bad())).collect::<Result<_>>()?;
            dump.fallback.push((node.parse().map_err(|_| bad())?, order));
        } else if line.starts_with("Memory location of each domain:") {
            in_domains = true;
        } else if let (true, Some((id, total))) = (in_domains, domain_heading(&line)) {
            // "Domain 1 (total: 51200):" (4.17) or "d1 (total: 51200):"
            dump.domains.push(DomainMemory {
                id: id.parse().map_err(|_| bad())?,
                total_pages: total.parse().map_err(|_| bad())?,
                pages: Vec::new(),
                node_affinity: None,
                objects: Vec::new(),
                vcpus_not_listed: None,
            });
        } else if let (true, Some(rest)) = (in_domains, line.trim_start().strip_prefix("Node affinity: ")) {
            // "    Node affinity: 0-1 (auto)"
            let (nodes, mode) = rest.split_once(" (").ok_or_else(bad)?;
            let mode = mode.strip_suffix(')').filter(|m| *m == "auto" || *m == "explicit").ok_or_else(bad)?;
            let d = dump.domains.last_mut().ok_or_else(bad)?;
            d.node_affinity = Some((nodes.to_string(), mode.to_string()));
        } else if let (true, Some(rest)) = (in_domains, line.trim_start().strip_prefix("Objects d")) {
            // "    Objects d1: domain:0 shared_info:?", "    Objects d1v0: vcpu:1 ...",
            // "    Objects d1v16-d1v31: not listed" (or "d1v16-31")
            let (owner, list) = rest.split_once(": ").ok_or_else(bad)?;
            let d = dump.domains.last_mut().ok_or_else(bad)?;
            let (dom, vcpus) = owner.split_once('v').map_or((owner, None), |(d, v)| (d, Some(v)));
            if dom.parse::<u32>().ok() != Some(d.id) {
                bail!("`u` debug key line {line:?} is about another domain than d{}", d.id);
            }
            if list == "not listed" {
                // "16-d1v31" or "16-31": the vCPU IDs left out.
                let (first, last) = vcpus.and_then(|v| v.split_once('-')).ok_or_else(bad)?;
                let prefix = format!("d{}v", d.id);
                let last = last.strip_prefix(&prefix).unwrap_or(last);
                let (first, last): (u32, u32) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
                d.vcpus_not_listed = Some((first, last));
                continue;
            }
            let vcpu = vcpus.map(|v| v.parse::<u32>().map_err(|_| bad())).transpose()?;
            for item in list.split_whitespace() {
                let (object, node) = item.split_once(':').ok_or_else(bad)?;
                let name_ok = !object.is_empty()
                    && object.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !name_ok || (node != "?" && node.parse::<u32>().is_err()) {
                    return Err(bad());
                }
                d.objects.push((vcpu, object.to_string(), node.to_string()));
            }
        } else if let (true, Some(rest)) = (in_domains, line.trim_start().strip_prefix("Node ")) {
            // "    Node 1: 51200"
            let (node, pages) = rest.split_once(": ").ok_or_else(bad)?;
            let d = dump.domains.last_mut().ok_or_else(bad)?;
            d.pages.push((node.parse().map_err(|_| bad())?, pages.trim().parse().map_err(|_| bad())?));
        }
    }
    if dump.free_pages.is_empty() {
        bail!("the `u` debug key's output lists no NODE line");
    }
    Ok(dump)
}

/// What a plan's `churn` step printed (`churn_loop` in dom0's init).
#[derive(Debug, Clone, PartialEq)]
pub struct Churn {
    pub cycles: u32,
    pub domains: Vec<String>,
    /// Every node's free pages before the counted rounds and after them
    /// (once settled), by node.
    pub before: Vec<(u32, u64)>,
    pub after: Vec<(u32, u64)>,
}

pub fn churn(lines: &[String]) -> Result<Churn> {
    let mut c = Churn { cycles: 0, domains: Vec::new(), before: Vec::new(), after: Vec::new() };
    for line in lines {
        let bad = || anyhow!("malformed churn step line {line:?}");
        let (word, rest) = line.split_once(' ').ok_or_else(bad)?;
        match word {
            "cycles" => c.cycles = rest.parse().map_err(|_| bad())?,
            "domains" => c.domains = rest.split_whitespace().map(str::to_string).collect(),
            "before" | "after" => {
                // before NODE0 123456
                let (node, pages) = rest.strip_prefix("NODE").and_then(|r| r.split_once(' ')).ok_or_else(bad)?;
                let entry = (node.parse().map_err(|_| bad())?, pages.parse().map_err(|_| bad())?);
                if word == "before" { &mut c.before } else { &mut c.after }.push(entry);
            }
            "seconds" => {}
            _ => return Err(bad()),
        }
    }
    if c.cycles == 0 || c.domains.is_empty() || c.before.is_empty() || c.after.is_empty() {
        bail!("the churn step's output lacks its cycles, domains or free pages: {lines:?}");
    }
    Ok(c)
}

/// One round of a plan's `measure` step (`measure_loop` in dom0's init).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredRound {
    /// `xl create -p`'s wall time.
    pub create_ns: u64,
    /// `xl destroy`'s wall time.
    pub destroy_ns: u64,
    /// Free pages, all nodes together, before the creation minus while
    /// the domain existed.
    pub pages_taken: u64,
    /// The domain's own pages (the `u` key's `total`).
    pub domain_pages: u64,
}

/// What a plan's `measure` step printed: the clock it read, and each
/// domain's rounds in the order they ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub repeats: u32,
    /// `timer_list` (nanoseconds) or `uptime` (hundredths of a second).
    pub clock: String,
    pub rounds: Vec<(String, MeasuredRound)>,
}

pub fn measured(lines: &[String]) -> Result<Measured> {
    let mut m = Measured { repeats: 0, clock: String::new(), rounds: Vec::new() };
    for line in lines {
        let bad = || anyhow!("malformed measure step line {line:?}");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["repeats", n] => m.repeats = n.parse().map_err(|_| bad())?,
            ["clock", c @ ("timer_list" | "uptime")] => m.clock = c.to_string(),
            ["round", name, numbers @ ..] if numbers.len() == 4 => {
                let n: Vec<u64> = numbers.iter().map(|w| w.parse()).collect::<Result<_, _>>().map_err(|_| bad())?;
                let round = MeasuredRound { create_ns: n[0], destroy_ns: n[1], pages_taken: n[2], domain_pages: n[3] };
                m.rounds.push((name.to_string(), round));
            }
            _ => return Err(bad()),
        }
    }
    if m.repeats == 0 || m.clock.is_empty() || m.rounds.is_empty() {
        bail!("the measure step's output lacks its repeats, clock or rounds: {lines:?}");
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console;

    /// A real console log: stable-4.17's baseline (Xen 4.17.5 with the
    /// instrument) on the two-node topology, default scenario.
    const TWO_NODE: &str = include_str!("../tests/fixtures/two-node-default-4.17.console.log");

    /// A real console log of Xen 4.17.5 as Debian ships it, without the
    /// instrument, from the harness's first runs (its result block ends in
    /// the older form, so its sections are read without the block parser).
    const STOCK_TWO_NODE: &str = include_str!("../tests/fixtures/two-node-default-4.17-stock.console.log");

    /// A step's output lines, read straight off the console.
    fn raw_section(console: &str, name: &str) -> Vec<String> {
        let heading = format!("### collect {name} ");
        console
            .lines()
            .skip_while(|l| !l.starts_with(&heading))
            .skip(1)
            .take_while(|l| !l.starts_with("### ") && !l.starts_with("===="))
            .filter_map(|l| l.strip_prefix('|')?.split_once("| ").map(|(_, text)| text.to_string()))
            .collect()
    }

    fn section(console: &str, name: &str) -> Vec<String> {
        console::result_block(console)
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no section {name}"))
            .output
    }

    #[test]
    fn xl_info_from_real_console() {
        let info = xl_info(&section(TWO_NODE, "xl-info")).unwrap();
        assert_eq!(info.xen_version, "4.17.5");
        assert_eq!((info.nr_nodes, info.nr_cpus), (2, 4));
        assert_eq!(info.cpus[2], CpuInfo { cpu: 2, core: 0, socket: 1, node: 1 });
        assert_eq!(
            info.numa,
            [
                NumaInfo { node: 0, memsize_mib: 1024, memfree_mib: 518, distances: vec![10, 20] },
                NumaInfo { node: 1, memsize_mib: 1023, memfree_mib: 592, distances: vec![20, 10] },
            ]
        );
    }

    #[test]
    fn xl_list_from_real_console() {
        let list = xl_list(&section(TWO_NODE, "xl-list")).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[1],
            ListEntry {
                name: "pinned-node1".into(),
                id: 1,
                mem_mib: 200,
                vcpus: 1,
                state: "--p---".into(),
                node_affinity: "0".into()
            }
        );
        // dom0 runs on node 1's CPUs only, and Xen derives its affinity.
        assert_eq!(list[0].node_affinity, "1");
    }

    #[test]
    fn xl_vcpu_list_from_real_console() {
        let vcpus = xl_vcpu_list(&section(TWO_NODE, "xl-vcpu-list")).unwrap();
        assert_eq!(vcpus.len(), 5);
        // vCPU 1 of a paused PV domain is offline: its CPU column is "-".
        assert_eq!(
            vcpus[2],
            VcpuEntry { domain: "pinned-node1".into(), id: 1, vcpu: 1, hard: "2-3".into(), soft: "0-1".into() }
        );
        assert_eq!((vcpus[3].hard.as_str(), vcpus[3].soft.as_str()), ("all", "0-1"));
        assert_eq!((vcpus[0].hard.as_str(), vcpus[0].soft.as_str()), ("2-3", "all"));
    }

    /// Unpatched Xen prints no node affinity and no objects.
    fn mem(id: u32, total_pages: u64, pages: &[(u32, u64)]) -> DomainMemory {
        DomainMemory { id, total_pages, pages: pages.to_vec(), node_affinity: None, objects: Vec::new(), vcpus_not_listed: None }
    }

    #[test]
    fn debug_key_u_from_real_console() {
        let dump = debug_key_u(&section(TWO_NODE, "debug-key-u")).unwrap();
        assert_eq!(dump.free_pages, [(0, 132741), (1, 151592)]);
        assert_eq!(dump.cpu_nodes, [(0, 0), (1, 0), (2, 1), (3, 1)]);
        type Summary = (u32, u64, Vec<(u32, u64)>, Option<(String, String)>);
        let summary: Vec<Summary> =
            dump.domains.iter().map(|d| (d.id, d.total_pages, d.pages.clone(), d.node_affinity.clone())).collect();
        let auto = |n: &str| Some((n.to_string(), "auto".to_string()));
        let explicit = |n: &str| Some((n.to_string(), "explicit".to_string()));
        assert_eq!(
            summary,
            [
                (0, 131072, vec![(0, 25816), (1, 105256)], auto("1")),
                (1, 51200, vec![(0, 51200), (1, 0)], explicit("0")),
                (2, 51200, vec![(0, 51200), (1, 0)], explicit("0")),
            ]
        );
        // Without the series, the toolstack's node (1) holds them all.
        let objects: Vec<(Option<u32>, &str, &str)> =
            dump.domains[1].objects.iter().map(|(v, name, node)| (*v, name.as_str(), node.as_str())).collect();
        assert_eq!(objects[0], (None, "domain", "1"));
        assert_eq!(objects[5..], [(Some(0), "vcpu", "1"), (Some(0), "sched_unit", "1"), (Some(0), "fpu", "1"), (Some(1), "vcpu", "1"), (Some(1), "sched_unit", "1"), (Some(1), "fpu", "1")]);
    }

    /// Xen as shipped prints no node affinity and no objects.
    #[test]
    fn debug_key_u_from_stock_xen() {
        let dump = debug_key_u(&raw_section(STOCK_TWO_NODE, "debug-key-u")).unwrap();
        assert_eq!(dump.free_pages, [(0, 132660), (1, 151687)]);
        assert_eq!(dump.cpu_nodes, [(0, 0), (1, 0), (2, 1), (3, 1)]);
        assert_eq!(
            dump.domains,
            [
                mem(0, 131072, &[(0, 25864), (1, 105208)]),
                mem(1, 51200, &[(0, 51200), (1, 0)]),
                mem(2, 51200, &[(0, 51200), (1, 0)]),
            ]
        );
    }

    /// A real console log: patched master, where Xen's serial driver
    /// printed "uart interrupt taking more than 4ms" into the middle of the
    /// `u` key's line for dom0's pages on node 1 (console::result_block
    /// cuts it off).
    const MASTER_UART_MESSAGE: &str = include_str!("../tests/fixtures/two-node-numa-placement-off-master-uart-message.console.log");

    #[test]
    fn debug_key_u_with_a_message_inside_a_line() {
        let steps = crate::console::result_block(MASTER_UART_MESSAGE).unwrap();
        let u = steps.iter().find(|s| s.name == "debug-key-u").unwrap();
        // The result block's reader cut the message off the key's line.
        assert!(u.output.iter().any(|l| l == "(XEN)     Node 1: 27451"), "{:?}", u.output);
        let dump = debug_key_u(&u.output).unwrap();
        let dom0 = dump.domains.iter().find(|d| d.id == 0).unwrap();
        assert_eq!(dom0.pages, [(0, 103621), (1, 27451)]);
        assert_eq!(dom0.node_affinity, Some(("1".to_string(), "auto".to_string())));
    }

    /// A real console log: patched master on the two-socket-server
    /// topology (node 1 wholly above 4 GiB), node1-from-node0 scenario.
    const MASTER_ABOVE_4G: &str = include_str!("../tests/fixtures/two-socket-server-node1-from-node0-master.console.log");

    #[test]
    fn instrument_from_real_master_console() {
        let info = xl_info(&section(MASTER_ABOVE_4G, "xl-info")).unwrap();
        assert_eq!(info.xen_version, "4.23-unstable");
        let dump = debug_key_u(&section(MASTER_ABOVE_4G, "debug-key-u")).unwrap();
        assert_eq!(dump.free_pages, [(0, 419110), (1, 149918)]);
        assert_eq!(dump.cpu_nodes, [(0, 0), (1, 0), (2, 1), (3, 1)]);
        let ids: Vec<u32> = dump.domains.iter().map(|d| d.id).collect();
        assert_eq!(ids, [0, 1, 2]);
        let pvh = &dump.domains[2];
        assert_eq!((pvh.total_pages, pvh.pages.as_slice()), (38415, &[(0, 0), (1, 38415)][..]));
        assert_eq!(pvh.node_affinity, Some(("1".into(), "explicit".into())));
        let objects: Vec<(Option<u32>, &str, &str)> =
            pvh.objects.iter().map(|(v, name, node)| (*v, name.as_str(), node.as_str())).collect();
        assert_eq!(
            objects,
            [
                (None, "domain", "1"),
                (None, "shared_info", "1"),
                (None, "evtchn", "1"),
                (None, "grant_table", "1"),
                (None, "gnttab_shared", "1"),
                (Some(0), "vcpu", "1"),
                (Some(0), "sched_unit", "1"),
                (Some(0), "fpu", "1"),
                (Some(0), "vmcb", "1"),
                (Some(0), "msr_bitmap", "1"),
                (Some(0), "vlapic", "1"),
            ]
        );
        assert_eq!(dump.domains[0].node_affinity, Some(("0".into(), "auto".into())));
        assert_eq!(pvh.vcpus_not_listed, None);
    }

    /// The series' instrument, as docs/misc/numa-debug-key.pandoc gives
    /// it, after master's `%pd` domain headings.
    #[test]
    fn instrument_lines() {
        let lines: Vec<String> = [
            "(XEN) 'u' pressed -> dumping numa info (now = 1)",
            "(XEN) NODE0 start->0 size->262144 free->100",
            "(XEN) CPU0 -> NODE0",
            "(XEN) Fallback from node 0:",
            "(XEN) Memory location of each domain:",
            "(XEN) d1 (total: 38400):",
            "(XEN)     Node 0: 0",
            "(XEN)     Node 1: 38400",
            "(XEN)     Node affinity: 1 (explicit)",
            "(XEN)     Objects d1: domain:1 shared_info:1 evtchn:?",
            "(XEN)     Objects d1v0: vcpu:1 sched_unit:0 vmcb:1",
            "(XEN)     Objects d1v16-d1v19: not listed",
        ]
        .iter()
        .map(|l| l.to_string())
        .collect();
        let dump = debug_key_u(&lines).unwrap();
        // One node: nothing to fall back to.
        assert_eq!(dump.fallback, [(0, vec![])]);
        let d = &dump.domains[0];
        assert_eq!((d.id, d.total_pages, d.pages.as_slice()), (1, 38400, &[(0, 0), (1, 38400)][..]));
        assert_eq!(d.node_affinity, Some(("1".into(), "explicit".into())));
        let o = |v: Option<u32>, name: &str, node: &str| (v, name.to_string(), node.to_string());
        assert_eq!(
            d.objects,
            [o(None, "domain", "1"), o(None, "shared_info", "1"), o(None, "evtchn", "?"), o(Some(0), "vcpu", "1"), o(Some(0), "sched_unit", "0"), o(Some(0), "vmcb", "1")]
        );
        assert_eq!(d.vcpus_not_listed, Some((16, 19)));
        // master prints the range's end without repeating the domain.
        let mut short = lines.clone();
        short[11] = "(XEN)     Objects d1v16-19: not listed".into();
        assert_eq!(debug_key_u(&short).unwrap().domains[0].vcpus_not_listed, Some((16, 19)));
        let mut wrong = lines.clone();
        wrong[9] = "(XEN)     Objects d2: domain:1".into();
        assert!(debug_key_u(&wrong).unwrap_err().to_string().contains("is about another domain than d1"));
        wrong[9] = "(XEN)     Objects d1: domain:x".into();
        assert!(debug_key_u(&wrong).unwrap_err().to_string().starts_with("malformed `u` debug key line"));
    }

    /// dom0's churn step, as init printed it (run under busybox with an
    /// `xl` that loses a page on every destroy).
    #[test]
    fn churn_step() {
        let lines: Vec<String> = "cycles 2\ndomains leaky other\nseconds 0\n\
                                  before NODE0 999\nbefore NODE1 500\nafter NODE0 997\nafter NODE1 500"
            .lines()
            .map(str::to_string)
            .collect();
        let c = churn(&lines).unwrap();
        assert_eq!((c.cycles, c.domains.as_slice()), (2, &["leaky".to_string(), "other".to_string()][..]));
        assert_eq!((c.before.as_slice(), c.after.as_slice()), (&[(0, 999), (1, 500)][..], &[(0, 997), (1, 500)][..]));
        let mut bad = lines.clone();
        bad[3] = "before NODEx 1".into();
        assert_eq!(churn(&bad).unwrap_err().to_string(), "malformed churn step line \"before NODEx 1\"");
        assert!(churn(&lines[..2]).unwrap_err().to_string().starts_with("the churn step's output lacks"));
    }

    #[test]
    fn malformed_lines_are_named() {
        let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let err = xl_list(&lines(&["Name ID Mem VCPUs State Time(s) NODE Affinity", "Domain-0 x 512 4 r----- 1.0 all"]))
            .unwrap_err();
        assert_eq!(err.to_string(), "malformed `xl list -n` line \"Domain-0 x 512 4 r----- 1.0 all\"");
        let err = xl_list(&lines(&["Name ID Mem VCPUs State Time(s)"])).unwrap_err();
        assert!(err.to_string().contains("no NODE Affinity column"), "{err}");
        let err = debug_key_u(&lines(&["(XEN) 'u' pressed -> dumping numa info (now = 1)", "(XEN) NODE0 start->0 size->1"]))
            .unwrap_err();
        assert_eq!(err.to_string(), "malformed `u` debug key line \"NODE0 start->0 size->1\"");
        assert!(debug_key_u(&lines(&["nothing"])).unwrap_err().to_string().contains("output is missing"));
    }
}
