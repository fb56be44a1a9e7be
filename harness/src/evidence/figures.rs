//! The report's figures kept for the next run: every placement figure and
//! every measured time, written beside the Markdown as
//! `docs/evidence/<base>.yaml`. A run that writes the report again reads
//! the figures it replaces and says what it reproduced: each placement
//! figure exactly, each median inside the spread the earlier report stated
//! (its 10th to 90th percentile; the interquartile range for a report
//! written before the harness kept percentiles).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::cost::{Compared, Ratio, Spread};
use super::locality::{self, DomainLocality};
use super::Pair;

/// One build's locality figure for a counted domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    /// The nodes its node affinity names.
    pub nodes: Vec<u32>,
    pub local: u32,
    pub listed: u32,
}

impl Side {
    fn of(l: &DomainLocality) -> Side {
        Side { nodes: l.nodes.clone(), local: l.local, listed: l.listed() }
    }
}

/// A counted domain's figures on both builds; `None` where that build did
/// not count it (its node affinity was all nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub topology: String,
    pub scenario: String,
    pub domain: String,
    pub baseline: Option<Side>,
    pub patched: Option<Side>,
}

impl Placement {
    fn name(&self) -> String {
        format!("{}/{} {}", self.topology, self.scenario, self.domain)
    }
}

/// A wall time as the report states it, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Time {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    /// The 10th and 90th percentiles; absent from figures written before
    /// the report stated them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    pub rounds: usize,
}

impl Time {
    /// The spread the report stated, as its bounds and its name.
    pub fn stated(&self) -> (f64, f64, &'static str) {
        match (self.p10, self.p90) {
            (Some(lo), Some(hi)) => (lo, hi, "P10-P90"),
            _ => (self.q1, self.q3, "IQR"),
        }
    }
}

impl From<Spread> for Time {
    fn from(s: Spread) -> Time {
        Time { median: s.median, q1: s.q1, q3: s.q3, p10: Some(s.p10), p90: Some(s.p90), rounds: s.n }
    }
}

/// A measured domain's figures: baseline then patched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub topology: String,
    pub domain: String,
    pub vcpus: u32,
    pub create: [Time; 2],
    pub destroy: [Time; 2],
    /// Patched over baseline; absent from figures written before the
    /// report stated their intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_ratio: Option<Ratio>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_ratio: Option<Ratio>,
    pub xen_pages: [i64; 2],
}

/// Every figure of one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The harness commit that wrote them.
    pub harness: String,
    pub placement: Vec<Placement>,
    pub cost: Vec<Cost>,
}

impl Figures {
    pub fn of(harness: &str, pairs: &[Pair], compared: &[Compared]) -> Result<Figures> {
        let mut placement = Vec::new();
        for p in pairs {
            let [b, q] = [locality::of_report(&p.baseline)?, locality::of_report(&p.patched)?];
            let mut names: Vec<&str> = Vec::new();
            for l in b.iter().chain(&q) {
                if !names.contains(&l.domain.as_str()) {
                    names.push(&l.domain);
                }
            }
            for name in names {
                let side = |s: &[DomainLocality]| s.iter().find(|l| l.domain == name).map(Side::of);
                placement.push(Placement {
                    topology: p.baseline.topology.clone(),
                    scenario: p.baseline.scenario.clone(),
                    domain: name.into(),
                    baseline: side(&b),
                    patched: side(&q),
                });
            }
        }
        let cost = compared
            .iter()
            .map(|c| Cost {
                topology: c.topology.clone(),
                domain: c.name.clone(),
                vcpus: c.vcpus,
                create: c.create.map(Time::from),
                destroy: c.destroy.map(Time::from),
                create_ratio: Some(c.create_ratio),
                destroy_ratio: Some(c.destroy_ratio),
                xen_pages: c.xen_pages,
            })
            .collect();
        Ok(Figures { harness: harness.into(), placement, cost })
    }
}

/// One median of this run against the earlier report's statement of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Retimed {
    /// `xl create -p of cost-pvh-1vcpu (two-node), baseline`.
    pub what: String,
    pub now: f64,
    pub before: Time,
}

impl Retimed {
    pub fn inside(&self) -> bool {
        let (lo, hi, _) = self.before.stated();
        (lo..=hi).contains(&self.now)
    }
}

/// One ratio of this run against the earlier report's interval for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reratioed {
    /// `xl create -p of cost-pvh-1vcpu (two-node)`.
    pub what: String,
    pub now: f64,
    pub before: Ratio,
}

impl Reratioed {
    pub fn inside(&self) -> bool {
        self.before.holds(self.now)
    }
}

/// What this run reproduced of the figures it replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Reproduction {
    /// The harness commit of the earlier figures.
    pub before: String,
    /// Placement figures compared, and those that differ (with how).
    pub placements: usize,
    pub placement_changes: Vec<String>,
    /// Xen's pages compared, and those that differ.
    pub pages: usize,
    pub page_changes: Vec<String>,
    /// Every ratio, against the earlier report's interval (none when that
    /// report stated none).
    pub ratios: Vec<Reratioed>,
    /// Every median, against the earlier report's spread.
    pub times: Vec<Retimed>,
    /// This run's boots that ran, and those read again from the cache.
    pub booted: usize,
    pub read_again: usize,
}

fn side_text(s: &Option<Side>) -> String {
    match s {
        Some(s) => format!("nodes {:?}, {} of {} local", s.nodes, s.local, s.listed),
        None => "not counted".into(),
    }
}

/// This run's figures against the earlier ones.
pub fn reproduce(before: &Figures, now: &Figures) -> Reproduction {
    let mut placement_changes = Vec::new();
    for p in &now.placement {
        match before.placement.iter().find(|b| (&b.topology, &b.scenario, &b.domain) == (&p.topology, &p.scenario, &p.domain)) {
            None => placement_changes.push(format!("{}: new", p.name())),
            Some(b) => {
                for (build, was, is) in [("baseline", &b.baseline, &p.baseline), ("patched", &b.patched, &p.patched)] {
                    if was != is {
                        placement_changes.push(format!("{} on {build}: {} before, {} now", p.name(), side_text(was), side_text(is)));
                    }
                }
            }
        }
    }
    for b in &before.placement {
        if !now.placement.iter().any(|p| (&b.topology, &b.scenario, &b.domain) == (&p.topology, &p.scenario, &p.domain)) {
            placement_changes.push(format!("{}: gone", b.name()));
        }
    }
    let (mut pages, mut page_changes, mut times, mut ratios) = (0, Vec::new(), Vec::new(), Vec::new());
    for c in &now.cost {
        let Some(b) = before.cost.iter().find(|b| (&b.topology, &b.domain) == (&c.topology, &c.domain)) else {
            page_changes.push(format!("{} ({}): new", c.domain, c.topology));
            continue;
        };
        for (command, was, is) in [("xl create -p", b.create_ratio, c.create_ratio), ("xl destroy", b.destroy_ratio, c.destroy_ratio)] {
            if let (Some(was), Some(is)) = (was, is) {
                ratios.push(Reratioed { what: format!("`{command}` of {} ({})", c.domain, c.topology), now: is.value, before: was });
            }
        }
        for (i, build) in ["baseline", "patched"].into_iter().enumerate() {
            pages += 1;
            if b.xen_pages[i] != c.xen_pages[i] {
                page_changes.push(format!(
                    "Xen's pages of {} ({}) on {build}: {} before, {} now",
                    c.domain, c.topology, b.xen_pages[i], c.xen_pages[i]
                ));
            }
            for (command, was, is) in [("xl create -p", &b.create, &c.create), ("xl destroy", &b.destroy, &c.destroy)] {
                times.push(Retimed {
                    what: format!("`{command}` of {} ({}), {build}", c.domain, c.topology),
                    now: is[i].median,
                    before: was[i],
                });
            }
        }
    }
    Reproduction {
        before: before.harness.clone(),
        placements: now.placement.len(),
        placement_changes,
        pages,
        page_changes,
        ratios,
        times,
        booted: 0,
        read_again: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::cost;
    use crate::evidence::tests::{pair, pair_of};

    fn captured() -> Figures {
        let placing = [pair("two-node-node1-from-node0-master")];
        let compared = cost::compare(&[pair_of("two-node-creation-cost-master", "creation-cost")]).unwrap();
        Figures::of("0123abc", &placing, &compared).unwrap()
    }

    /// The figures of the captured boots read back as written, and
    /// reproduce themselves.
    #[test]
    fn figures_of_captured_boots_reproduce_themselves() {
        let f = captured();
        let names: Vec<String> = f.placement.iter().map(Placement::name).collect();
        assert_eq!(names, ["two-node/node1-from-node0 pv-node1", "two-node/node1-from-node0 pvh-node1"]);
        assert_eq!(f.placement[0].patched, Some(Side { nodes: vec![1], local: 8, listed: 8 }));
        assert_eq!(f.cost[0].xen_pages, [349, 352]);
        assert_eq!(f.cost[0].create[0].rounds, 20);
        let back: Figures = yaml_serde::from_str(&yaml_serde::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        let r = reproduce(&back, &f);
        assert_eq!((r.placements, r.placement_changes.len(), r.pages, r.page_changes.len()), (2, 0, 4, 0));
        assert_eq!((r.times.len(), r.ratios.len()), (8, 4));
        assert!(r.times.iter().all(Retimed::inside) && r.ratios.iter().all(Reratioed::inside));
    }

    /// A figure that moved is named, with what it was and what it is; a
    /// median outside the earlier spread is not inside.
    #[test]
    fn what_did_not_reproduce_is_named() {
        let before = captured();
        let mut now = before.clone();
        now.placement[0].patched.as_mut().unwrap().local = 7;
        now.placement.pop();
        now.cost[1].xen_pages[1] += 1;
        now.cost[0].create[1].median = before.cost[0].create[1].p90.unwrap() + 1.0;
        // Inside the IQR's bounds is inside the P10-P90 too.
        now.cost[0].destroy[0].median = before.cost[0].destroy[0].q3;
        let r = reproduce(&before, &now);
        assert_eq!(
            r.placement_changes,
            [
                "two-node/node1-from-node0 pv-node1 on patched: nodes [1], 8 of 8 local before, nodes [1], 7 of 8 local now",
                "two-node/node1-from-node0 pvh-node1: gone",
            ]
        );
        assert_eq!(r.page_changes, ["Xen's pages of cost-pvh-4vcpus (two-node) on patched: 1154 before, 1155 now"]);
        let outside: Vec<&str> = r.times.iter().filter(|t| !t.inside()).map(|t| t.what.as_str()).collect();
        assert_eq!(outside, ["`xl create -p` of cost-pvh-1vcpu (two-node), patched"]);
        assert!(r.ratios.iter().all(Reratioed::inside), "the ratios were not moved");
        let mut moved = before.clone();
        let was = before.cost[1].destroy_ratio.unwrap();
        moved.cost[1].destroy_ratio = Some(Ratio { value: was.high + 0.01, ..was });
        let outside: Vec<String> = reproduce(&before, &moved).ratios.iter().filter(|t| !t.inside()).map(|t| t.what.clone()).collect();
        assert_eq!(outside, ["`xl destroy` of cost-pvh-4vcpus (two-node)"]);
        // Figures that stated no interval leave no ratio to compare.
        let mut old = before.clone();
        old.cost.iter_mut().for_each(|c| (c.create_ratio, c.destroy_ratio) = (None, None));
        assert!(reproduce(&old, &before).ratios.is_empty());
    }

    /// Figures written before the report kept percentiles read back, and
    /// their medians are held to the interquartile range they stated.
    #[test]
    fn figures_without_percentiles_are_held_to_their_iqr() {
        let t: Time = yaml_serde::from_str("median: 824.0\nq1: 693.0\nq3: 893.0\nrounds: 20\n").unwrap();
        assert_eq!(t.stated(), (693.0, 893.0, "IQR"));
        let r = |now| Retimed { what: String::new(), now, before: t };
        assert!(r(893.0).inside() && !r(900.0).inside());
        let kept = Time { p10: Some(600.0), p90: Some(950.0), ..t };
        assert!(Retimed { what: String::new(), now: 900.0, before: kept }.inside());
        assert!(yaml_serde::to_string(&t).unwrap().lines().all(|l| !l.starts_with("p10")));
    }
}
