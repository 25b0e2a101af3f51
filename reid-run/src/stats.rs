//! Confidence intervals for re-ID metrics from per-query results, by bootstrap over query
//! identities (queries of one identity are not independent: they share the gallery images they
//! must find, so identities are what is resampled, as a cluster bootstrap). A paired bootstrap
//! over the same identities gives the interval of a difference between two models evaluated on
//! the same queries (pruned − unpruned), much tighter than two separate intervals.
//!
//! Per-query results are stored in the run folder ([`PER_QUERY_FILE`]) so that any interval can
//! be recomputed without the models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file of a run folder holding [`PerQuery`] results by evaluation label.
pub const PER_QUERY_FILE: &str = "per_query.json";

/// Default number of bootstrap resamples.
pub const RESAMPLES: usize = 2000;

/// The valid queries of one evaluation, in the order they were evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerQuery {
    /// Identity of each query.
    pub pid: Vec<i64>,
    /// Average precision of each query.
    pub ap: Vec<f64>,
    /// Rank (1-based) of each query's first true match.
    pub first_rank: Vec<u32>,
    /// Inverse negative penalty of each query (mINP's term).
    pub inp: Vec<f64>,
}

/// A metric by name (`mAP`, `rank1`, `rank5`, `mINP`) from one query's results.
fn metric_value(metric: &str, q: &PerQuery, i: usize) -> Option<f64> {
    Some(match metric {
        "mAP" => q.ap[i],
        "mINP" => q.inp[i],
        _ => {
            let k: u32 = metric.strip_prefix("rank")?.parse().ok()?;
            f64::from(u8::from(q.first_rank[i] <= k))
        }
    })
}

impl PerQuery {
    pub fn len(&self) -> usize {
        self.pid.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pid.is_empty()
    }

    /// All vectors of one length, every value in range.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.pid.len();
        if self.ap.len() != n || self.first_rank.len() != n || self.inp.len() != n {
            return Err(format!(
                "per-query vectors of different lengths (pid {n}, ap {}, first_rank {}, inp {})",
                self.ap.len(),
                self.first_rank.len(),
                self.inp.len()
            ));
        }
        if let Some(v) = self
            .ap
            .iter()
            .chain(&self.inp)
            .find(|v| !(0.0..=1.0).contains(*v))
        {
            return Err(format!("per-query value {v} is not in [0, 1]"));
        }
        if self.first_rank.contains(&0) {
            return Err("a first-match rank of 0 (ranks start at 1)".into());
        }
        Ok(())
    }

    /// The metric's value over all queries (the mean of its per-query terms).
    pub fn mean(&self, metric: &str) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let mut s = 0.0;
        for i in 0..n {
            s += metric_value(metric, self, i)?;
        }
        Some(s / n as f64)
    }

    /// Per identity (in pid order): the metric's sum over its queries and their count.
    fn clusters(&self, metric: &str) -> Option<BTreeMap<i64, (f64, f64)>> {
        let mut m: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
        for i in 0..self.len() {
            let e = m.entry(self.pid[i]).or_default();
            e.0 += metric_value(metric, self, i)?;
            e.1 += 1.0;
        }
        Some(m)
    }
}

/// A 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// A value over training seeds: mean, sample standard deviation (n − 1) and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeedSpread {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

impl SeedSpread {
    /// None for fewer than two values (no spread to show).
    pub fn of(values: &[f64]) -> Option<SeedSpread> {
        let n = values.len();
        if n < 2 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some(SeedSpread {
            mean,
            sd: var.sqrt(),
            n,
        })
    }
}

/// SplitMix64: seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        // Lemire's multiply-shift: unbiased enough for n ≪ 2^64
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

/// The 2.5 % and 97.5 % percentiles of `v` (sorted in place).
fn percentile_interval(v: &mut [f64]) -> Interval {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| {
        let x = p * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x - x.floor());
        v[i] + f * (v[(i + 1).min(v.len() - 1)] - v[i])
    };
    Interval {
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// 95 % bootstrap interval of `metric` over query identities (`resamples` draws, `seed`).
/// `None` for an unknown metric or no queries.
pub fn bootstrap(q: &PerQuery, metric: &str, resamples: usize, seed: u64) -> Option<Interval> {
    let clusters: Vec<(f64, f64)> = q.clusters(metric)?.into_values().collect();
    if clusters.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = Rng(seed);
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut s, mut n) = (0.0, 0.0);
        for _ in 0..clusters.len() {
            let c = clusters[rng.below(clusters.len())];
            s += c.0;
            n += c.1;
        }
        stats.push(s / n);
    }
    Some(percentile_interval(&mut stats))
}

/// 95 % paired bootstrap interval of `metric(a) − metric(b)` for two evaluations of the same
/// queries (same identities, same order): identities are resampled once for both.
pub fn paired_bootstrap(
    a: &PerQuery,
    b: &PerQuery,
    metric: &str,
    resamples: usize,
    seed: u64,
) -> Result<Interval, String> {
    if a.pid != b.pid {
        return Err(format!(
            "the two evaluations are not of the same queries ({} and {} queries, or another order)",
            a.len(),
            b.len()
        ));
    }
    let ca = a
        .clusters(metric)
        .ok_or(format!("unknown metric '{metric}'"))?;
    let cb = b
        .clusters(metric)
        .ok_or(format!("unknown metric '{metric}'"))?;
    let clusters: Vec<(f64, f64, f64)> = ca
        .iter()
        .map(|(pid, &(sa, n))| (sa, cb[pid].0, n))
        .collect();
    if clusters.is_empty() || resamples == 0 {
        return Err("no queries".into());
    }
    let mut rng = Rng(seed);
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut sa, mut sb, mut n) = (0.0, 0.0, 0.0);
        for _ in 0..clusters.len() {
            let c = clusters[rng.below(clusters.len())];
            sa += c.0;
            sb += c.1;
            n += c.2;
        }
        stats.push((sa - sb) / n);
    }
    Ok(percentile_interval(&mut stats))
}

#[cfg(test)]
mod seed_spread_tests {
    use super::SeedSpread;

    #[test]
    fn sample_sd_of_known_values() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, sample variance 32/7
        let s = SeedSpread::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert!((s.mean - 5.0).abs() < 1e-12);
        assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(SeedSpread::of(&[0.5, 0.5, 0.5]).unwrap().sd, 0.0);
        assert!(SeedSpread::of(&[0.5]).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n_ids: usize, per_id: usize, p_hit: f64, seed: u64) -> PerQuery {
        let mut rng = Rng(seed);
        let mut q = PerQuery::default();
        for id in 0..n_ids {
            for _ in 0..per_id {
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                let hit = u < p_hit;
                q.pid.push(id as i64);
                q.first_rank
                    .push(if hit { 1 } else { 2 + (rng.below(20) as u32) });
                q.ap.push(if hit { 0.5 + 0.5 * u } else { 0.3 * u });
                q.inp.push(if hit { 0.4 } else { 0.1 });
            }
        }
        q
    }

    #[test]
    fn intervals_hold_the_estimate_shrink_with_more_queries_and_are_seeded() {
        let small = sample(50, 2, 0.7, 1);
        let big = sample(2000, 2, 0.7, 1);
        for metric in ["mAP", "rank1", "rank5", "mINP"] {
            let (s, b) = (
                bootstrap(&small, metric, RESAMPLES, 3).unwrap(),
                bootstrap(&big, metric, RESAMPLES, 3).unwrap(),
            );
            assert!(s.contains(small.mean(metric).unwrap()), "{metric} {s:?}");
            assert!(b.contains(big.mean(metric).unwrap()), "{metric} {b:?}");
            if metric != "mINP" && metric != "rank5" {
                // ~ 1/sqrt(n): 40× the identities, about a sixth of the width
                assert!(
                    b.half_width() < s.half_width() / 3.0,
                    "{metric} {s:?} {b:?}"
                );
            }
            assert_eq!(s, bootstrap(&small, metric, RESAMPLES, 3).unwrap());
        }
        // rank-1 of 100 queries at p = 0.7: a binomial half-width near 1.96·sqrt(.21/100) ≈ 0.09
        let hw = bootstrap(&small, "rank1", RESAMPLES, 3)
            .unwrap()
            .half_width();
        assert!((0.05..0.14).contains(&hw), "{hw}");
        assert!(bootstrap(&small, "rank0x", 10, 1).is_none());
    }

    #[test]
    fn paired_differences_are_tighter_than_separate_intervals() {
        let a = sample(500, 2, 0.7, 5);
        // b: the same queries, a few of them flipped from hit to miss
        let mut b = a.clone();
        for i in (0..b.len()).step_by(25) {
            b.first_rank[i] = 3;
        }
        let d = paired_bootstrap(&a, &b, "rank1", RESAMPLES, 9).unwrap();
        let diff = a.mean("rank1").unwrap() - b.mean("rank1").unwrap();
        assert!(d.contains(diff), "{d:?} {diff}");
        let sep = bootstrap(&a, "rank1", RESAMPLES, 9).unwrap().half_width();
        assert!(
            d.half_width() < sep / 2.0,
            "paired {d:?} vs separate ±{sep}"
        );
        assert!(d.lo >= 0.0, "b only lost hits: {d:?}");
        // other queries: refused
        let other = sample(10, 2, 0.5, 1);
        assert!(paired_bootstrap(&a, &other, "rank1", 10, 1).is_err());
    }
}
