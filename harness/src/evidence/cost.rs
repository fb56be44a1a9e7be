//! What the series costs, from the reports' measure steps: `xl create -p`
//! and `xl destroy` wall time as medians with the range of the middle 80%
//! of the rounds, patched over baseline as a ratio of medians with its 90%
//! bootstrap interval, and the pages Xen takes per domain and per vCPU
//! beyond the domain's own, patched minus baseline.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::Pair;
use crate::report::MeasuredDomain;

/// The median, the quartiles and the 10th and 90th percentiles of a
/// sample (nearest rank), and its size.
///
/// The spread a report states is the 10th to the 90th percentile, not the
/// interquartile range: a rerun on the same machine moved 4 of 8 medians
/// out of the IQR the report had stated (one boot's rounds vary less than
/// boots do under TCG) and none out of the 10th to 90th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub p10: f64,
    pub p90: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| nearest_rank(&v, q);
        Some(Spread { median: at(0.5), q1: at(0.25), q3: at(0.75), p10: at(0.1), p90: at(0.9), n: v.len() })
    }

    /// `345.0 ms (P10-P90 320.2-390.9)`: tenths, since counted
    /// instructions give rounds within a percent of each other.
    pub fn text(&self) -> String {
        format!("{:.1} ms (P10-P90 {:.1}-{:.1})", self.median, self.p10, self.p90)
    }
}

/// The value at quantile `q` of a sorted, non-empty sample, by nearest rank.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// A ratio of medians, patched over baseline, with the interval that
/// holds 90% of it when each build's rounds are drawn again (bootstrap,
/// 2000 draws of as many rounds as each build had, with replacement).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Bootstrap draws per ratio.
const DRAWS: usize = 2000;

impl Ratio {
    pub fn of(baseline: &[f64], patched: &[f64]) -> Option<Ratio> {
        let median = |v: &[f64]| Spread::of(v).map(|s| s.median);
        let value = median(patched)? / median(baseline)?;
        // A fixed seed: the same rounds give the same interval every time
        // the report is written from them.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % n as u64) as usize
        };
        let mut draws: Vec<f64> = (0..DRAWS)
            .map(|_| {
                let b: Vec<f64> = (0..baseline.len()).map(|_| baseline[next(baseline.len())]).collect();
                let p: Vec<f64> = (0..patched.len()).map(|_| patched[next(patched.len())]).collect();
                median(&p).unwrap() / median(&b).unwrap()
            })
            .collect();
        draws.sort_by(f64::total_cmp);
        Some(Ratio { value, low: nearest_rank(&draws, 0.05), high: nearest_rank(&draws, 0.95) })
    }

    /// `1.070 (0.981-1.160)`.
    pub fn text(&self) -> String {
        format!("{:.3} ({:.3}-{:.3})", self.value, self.low, self.high)
    }

    /// Whether the rounds leave room for no difference at all.
    pub fn is_noise(&self) -> bool {
        self.holds(1.0)
    }

    /// Whether `value` is inside this ratio's interval.
    pub fn holds(&self, value: f64) -> bool {
        (self.low..=self.high).contains(&value)
    }
}

/// The median of Xen's pages per round for one domain.
fn pages(d: &MeasuredDomain) -> Result<i64> {
    let mut v = d.xen_pages.clone();
    v.sort_unstable();
    match v.get(v.len() / 2) {
        Some(&m) => Ok(m),
        None => bail!("domain {} has no measured round", d.name),
    }
}

/// One measured domain on both builds.
#[derive(Debug, Clone)]
pub struct Compared {
    pub topology: String,
    pub name: String,
    pub vcpus: u32,
    /// `xl create -p` and `xl destroy`, baseline then patched.
    pub create: [Spread; 2],
    pub destroy: [Spread; 2],
    /// Patched over baseline.
    pub create_ratio: Ratio,
    pub destroy_ratio: Ratio,
    /// Xen's pages beyond the domain's own, median, baseline then patched.
    pub xen_pages: [i64; 2],
}

/// Every domain of every measure step, matched between the builds.
pub fn compare(pairs: &[Pair]) -> Result<Vec<Compared>> {
    let mut out = Vec::new();
    for p in pairs {
        if p.baseline.measure.len() != p.patched.measure.len() {
            bail!("{}: the builds ran different numbers of measure steps", p.name());
        }
        for (b, q) in p.baseline.measure.iter().zip(&p.patched.measure) {
            for bd in &b.domains {
                let Some(qd) = q.domains.iter().find(|d| d.name == bd.name) else {
                    bail!("{}: {} was measured on the baseline only", p.name(), bd.name);
                };
                let none = || anyhow::anyhow!("{}: no round of {}", p.name(), bd.name);
                let spread = |v: &[f64]| Spread::of(v).ok_or_else(none);
                out.push(Compared {
                    topology: p.baseline.topology.clone(),
                    name: bd.name.clone(),
                    vcpus: bd.vcpus,
                    create: [spread(&bd.create_ms)?, spread(&qd.create_ms)?],
                    destroy: [spread(&bd.destroy_ms)?, spread(&qd.destroy_ms)?],
                    create_ratio: Ratio::of(&bd.create_ms, &qd.create_ms).ok_or_else(none)?,
                    destroy_ratio: Ratio::of(&bd.destroy_ms, &qd.destroy_ms).ok_or_else(none)?,
                    xen_pages: [pages(bd)?, pages(qd)?],
                });
            }
        }
    }
    Ok(out)
}

/// Extra pages the series costs: per domain (the measured domain with the
/// fewest vCPUs, patched minus baseline) and per vCPU (the slope between
/// the fewest and the most vCPUs of the same topology, patched minus
/// baseline). `None` where the measurements cannot say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extra {
    pub per_domain: i64,
    pub per_vcpu: Option<f64>,
    /// Xen's pages per vCPU on the baseline, for scale.
    pub baseline_per_vcpu: Option<f64>,
}

pub fn extra(compared: &[Compared]) -> Option<Extra> {
    let fewest = compared.iter().min_by_key(|c| c.vcpus)?;
    let most = compared.iter().filter(|c| c.topology == fewest.topology).max_by_key(|c| c.vcpus)?;
    let slope = |i: usize| {
        (most.vcpus > fewest.vcpus)
            .then(|| (most.xen_pages[i] - fewest.xen_pages[i]) as f64 / (most.vcpus - fewest.vcpus) as f64)
    };
    Some(Extra {
        per_domain: fewest.xen_pages[1] - fewest.xen_pages[0],
        per_vcpu: slope(1).zip(slope(0)).map(|(p, b)| p - b),
        baseline_per_vcpu: slope(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_a_sample() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.q1, s.q3, s.p10, s.p90, s.n), (3.0, 2.0, 4.0, 1.0, 5.0, 5));
        assert_eq!(s.text(), "3.0 ms (P10-P90 1.0-5.0)");
        // Twenty rounds: the 10th and 90th percentiles are the 3rd and the
        // 18th of them (ranks 1.9 and 17.1 from 0, rounded).
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Spread::of(&twenty).unwrap();
        assert_eq!((s.p10, s.q1, s.median, s.q3, s.p90), (3.0, 6.0, 11.0, 15.0, 18.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn ratio_of_medians_with_its_interval() {
        // The same rounds on both builds: exactly 1, and an interval
        // around it that is no wider than the rounds' own spread.
        let rounds: Vec<f64> = (0..20).map(|i| 700.0 + 10.0 * f64::from(i)).collect();
        let same = Ratio::of(&rounds, &rounds).unwrap();
        assert_eq!(same.value, 1.0);
        assert!(same.low < 1.0 && same.high > 1.0 && same.is_noise(), "{same:?}");
        assert!(same.low > 0.85 && same.high < 1.15, "{same:?}");
        assert_eq!(Ratio::of(&rounds, &rounds), Some(same), "the interval is the same every time");
        // Patched a quarter slower in every round: outside the noise.
        let slower: Vec<f64> = rounds.iter().map(|r| r * 1.25).collect();
        let r = Ratio::of(&rounds, &slower).unwrap();
        assert_eq!(r.value, 1.25);
        assert!(!r.is_noise() && r.holds(1.25) && !r.holds(1.0), "{r:?}");
        assert_eq!(Ratio { value: 1.07, low: 0.981, high: 1.16 }.text(), "1.070 (0.981-1.160)");
        assert_eq!(Ratio::of(&[], &rounds), None);
    }

    fn compared(vcpus: u32, pages: [i64; 2]) -> Compared {
        let s = Spread::of(&[100.0]).unwrap();
        let r = Ratio::of(&[100.0], &[100.0]).unwrap();
        Compared {
            topology: "t".into(),
            name: format!("d{vcpus}"),
            vcpus,
            create: [s; 2],
            destroy: [s; 2],
            create_ratio: r,
            destroy_ratio: r,
            xen_pages: pages,
        }
    }

    #[test]
    fn extra_pages_per_domain_and_per_vcpu() {
        // 1 vCPU: 352 pages on both; 4 vCPUs: 1154 baseline, 1160 patched.
        let e = extra(&[compared(1, [352, 352]), compared(4, [1154, 1160])]).unwrap();
        assert_eq!(e, Extra { per_domain: 0, per_vcpu: Some(2.0), baseline_per_vcpu: Some(802.0 / 3.0) });
        let one = extra(&[compared(1, [350, 353])]).unwrap();
        assert_eq!((one.per_domain, one.per_vcpu), (3, None));
        assert_eq!(extra(&[]), None);
    }
}
