//! Confidence intervals for re-ID metrics from per-query results, by bootstrap over query
//! identities (queries of one identity are not independent: they share the gallery images they
//! must find, so identities are what is resampled, as a cluster bootstrap). A paired bootstrap
//! over the same identities gives the interval of a difference between two models evaluated on
//! the same queries (pruned − unpruned), much tighter than two separate intervals.
//!
//! Per-query results are stored in the run folder ([`PER_QUERY_FILE`]) so that any interval can
//! be recomputed without the models.

use crate::rng::SplitMix64;
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
    let mut rng = SplitMix64::new(seed);
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

/// Per query identity, in identity order: (sum of `metric` over its queries in `a`, the same in
/// `b`, its number of queries). `a` and `b` must be evaluations of the same queries.
fn paired_clusters(
    a: &PerQuery,
    b: &PerQuery,
    metric: &str,
) -> Result<Vec<(f64, f64, f64)>, String> {
    let unknown = || format!("unknown metric '{metric}'");
    let ca = a.clusters(metric).ok_or_else(unknown)?;
    let cb = b.clusters(metric).ok_or_else(unknown)?;
    Ok(ca
        .iter()
        .map(|(pid, &(sa, n))| (sa, cb[pid].0, n))
        .collect())
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
    let clusters = paired_clusters(a, b, metric)?;
    if clusters.is_empty() || resamples == 0 {
        return Err("no queries".into());
    }
    let mut rng = SplitMix64::new(seed);
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

/// The per-query label of an evaluation repeated under another training seed
/// (`market1501#seed1`): the seed's results sit beside the main run's in `per_query.json`.
pub fn seed_label(label: &str, seed: u64) -> String {
    format!("{label}#seed{seed}")
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let a = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |a, (i, c)| a + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Student's t 0.975-quantile for `df` ≥ 1 degrees of freedom (fractional too, as the
/// Welch–Satterthwaite ones are; `f64::INFINITY`: the normal 1.959964): the density integrated
/// from 0 (Simpson, 2 000 panels) and the point where it reaches 0.475 found by bisection.
pub fn t975(df: f64) -> f64 {
    if !df.is_finite() || df > 1e7 {
        return 1.959_964;
    }
    let v = df.max(1.0);
    let norm =
        (ln_gamma((v + 1.0) / 2.0) - ln_gamma(v / 2.0)).exp() / (v * std::f64::consts::PI).sqrt();
    let pdf = |t: f64| norm * (1.0 + t * t / v).powf(-(v + 1.0) / 2.0);
    let mass = |x: f64| {
        let n = 2000;
        let h = x / n as f64;
        let inner: f64 = (1..n)
            .map(|i| if i % 2 == 1 { 4.0 } else { 2.0 } * pdf(i as f64 * h))
            .sum();
        (pdf(0.0) + pdf(x) + inner) * h / 3.0
    };
    let (mut lo, mut hi) = (1.9, 13.0);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if mass(mid) < 0.475 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The difference `metric(a) − metric(b)` over training seeds and query identities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeedsAndQueries {
    /// Mean over seeds of each seed's difference on all queries.
    pub mean: f64,
    /// 95 % interval for the difference a new experiment (other seeds, other queries of the
    /// same kind) would estimate.
    pub interval: Interval,
    /// Seeds (pairs of evaluations) it rests on.
    pub seeds: usize,
    /// Standard deviation of the per-seed differences.
    pub seed_sd: f64,
}

/// 95 % interval of `metric(a) − metric(b)` from several training seeds, each pair evaluated on
/// the same queries (`pairs[s] = (a under seed s, b under seed s)`), covering both sources of
/// variance:
///
/// - **training**: the per-seed differences d_s vary with the seed; their variance over S seeds
///   gives `v_seed = sd² / S`, known only to S − 1 degrees of freedom;
/// - **queries**: the query identities are a sample too; a paired cluster bootstrap over
///   identities (drawn once per resample for every seed and both models, so the pairing by
///   seed and by query is kept) of the seed-averaged difference gives `v_query`.
///
/// The interval is mean ± t·sqrt(v_seed + v_query), with t Student's 0.975-quantile at the
/// Welch–Satterthwaite degrees of freedom (v_seed + v_query)² / (v_seed² / (S − 1)): with three
/// seeds and a large training variance it is ~4.3 standard errors wide, not 1.96 (a bootstrap
/// over three seeds would under-cover). Checked by simulation (`tests`): ~95 % coverage where
/// a query-only interval covers far less.
pub fn seeds_and_queries(
    pairs: &[(PerQuery, PerQuery)],
    metric: &str,
    resamples: usize,
    seed: u64,
) -> Result<SeedsAndQueries, String> {
    let s = pairs.len();
    if s < 2 {
        return Err(format!(
            "{s} seed(s): at least 2 are needed for a training variance"
        ));
    }
    let first = &pairs[0].0;
    if pairs
        .iter()
        .any(|(a, b)| a.pid != first.pid || b.pid != first.pid)
    {
        return Err("the evaluations are not all of the same queries".into());
    }
    // per seed: the clusters' (sum a − sum b) by identity, in one identity order
    let mut counts: Vec<f64> = Vec::new();
    let mut diffs: Vec<Vec<f64>> = Vec::with_capacity(s);
    for (a, b) in pairs {
        let clusters = paired_clusters(a, b, metric)?;
        if counts.is_empty() {
            counts = clusters.iter().map(|c| c.2).collect();
        }
        diffs.push(clusters.iter().map(|c| c.0 - c.1).collect());
    }
    let total: f64 = counts.iter().sum();
    if counts.is_empty() || total == 0.0 || resamples < 2 {
        return Err("no queries".into());
    }
    let d: Vec<f64> = diffs
        .iter()
        .map(|v| v.iter().sum::<f64>() / total)
        .collect();
    let spread = SeedSpread::of(&d).ok_or("fewer than 2 seeds")?;
    let mut rng = SplitMix64::new(seed);
    let k = counts.len();
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let mut n = 0.0;
        let mut sums = vec![0.0; s];
        for _ in 0..k {
            let c = rng.below(k);
            n += counts[c];
            for (sum, seed_diffs) in sums.iter_mut().zip(&diffs) {
                *sum += seed_diffs[c];
            }
        }
        stats.push(sums.iter().sum::<f64>() / (s as f64 * n));
    }
    let q_mean = stats.iter().sum::<f64>() / resamples as f64;
    let v_query = stats.iter().map(|x| (x - q_mean).powi(2)).sum::<f64>() / (resamples - 1) as f64;
    let v_seed = spread.sd.powi(2) / s as f64;
    let var = v_seed + v_query;
    let df = if v_seed > 0.0 {
        var.powi(2) / (v_seed.powi(2) / (s - 1) as f64)
    } else {
        f64::INFINITY
    };
    let half = t975(df) * var.sqrt();
    Ok(SeedsAndQueries {
        mean: spread.mean,
        interval: Interval {
            lo: spread.mean - half,
            hi: spread.mean + half,
        },
        seeds: s,
        seed_sd: spread.sd,
    })
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
        let mut rng = SplitMix64::new(seed);
        let mut q = PerQuery::default();
        for id in 0..n_ids {
            for _ in 0..per_id {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
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
    fn t_quantiles_match_the_exact_values() {
        // tables (and, for fractional df, the density integrated at higher precision)
        for (df, exact) in [
            (1.0, 12.7062),
            (2.0, 4.3027),
            (2.5, 3.5747),
            (3.0, 3.1824),
            (7.3, 2.3451),
            (25.0, 2.0595),
            (1000.0, 1.9623),
        ] {
            assert!((t975(df) - exact).abs() < 2e-3, "{df}: {}", t975(df));
        }
        assert_eq!(t975(f64::INFINITY), 1.959_964);
        assert_eq!(t975(0.3), t975(1.0));
    }

    /// One simulated experiment: `seeds` trainings of two models whose true rank-1 differs by
    /// `delta`, each seed moving a model's hit probability by N(0, sd_seed), evaluated on
    /// `ids` identities of 2 queries with their own difficulty.
    fn experiment(
        rng: &mut SplitMix64,
        seeds: usize,
        ids: usize,
        delta: f64,
        sd_seed: f64,
    ) -> Vec<(PerQuery, PerQuery)> {
        let uniform = |rng: &mut SplitMix64| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let normal = |rng: &mut SplitMix64| {
            // Box-Muller
            let (u, v) = (uniform(rng).max(1e-12), uniform(rng));
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let difficulty: Vec<f64> = (0..ids).map(|_| 0.35 + 0.4 * uniform(rng)).collect();
        (0..seeds)
            .map(|_| {
                let (ea, eb) = (sd_seed * normal(rng), sd_seed * normal(rng));
                let mut make = |shift: f64| {
                    let mut q = PerQuery::default();
                    for (id, &p) in difficulty.iter().enumerate() {
                        for _ in 0..2 {
                            let hit = uniform(rng) < (p + shift).clamp(0.0, 1.0);
                            q.pid.push(id as i64);
                            q.first_rank.push(if hit { 1 } else { 5 });
                            q.ap.push(if hit { 0.8 } else { 0.2 });
                            q.inp.push(0.3);
                        }
                    }
                    q
                };
                (make(delta + ea), make(eb))
            })
            .collect()
    }

    #[test]
    fn the_seeds_and_queries_interval_covers_the_true_difference() {
        // training variance larger than the query variance, as the default run measured
        let (delta, runs) = (0.02, 300);
        let mut rng = SplitMix64::new(11);
        let (mut covered, mut query_only_covered) = (0, 0);
        for r in 0..runs {
            let pairs = experiment(&mut rng, 3, 150, delta, 0.03);
            let i = seeds_and_queries(&pairs, "rank1", 400, r).unwrap();
            covered += usize::from(i.interval.contains(delta));
            let (a, b) = &pairs[0];
            let q = paired_bootstrap(a, b, "rank1", 400, r).unwrap();
            query_only_covered += usize::from(q.contains(delta));
            assert_eq!(i.seeds, 3);
        }
        let (c, qc) = (
            covered as f64 / runs as f64,
            query_only_covered as f64 / runs as f64,
        );
        eprintln!("coverage over {runs} simulated experiments: {c} (query-only: {qc})");
        assert!((0.92..=0.995).contains(&c), "coverage {c}");
        assert!(qc < 0.85, "a one-seed query-only interval covered {qc}");
        // no training variance: about as wide as the query interval of the seed average
        let mut rng = SplitMix64::new(5);
        let pairs = experiment(&mut rng, 3, 400, 0.0, 0.0);
        let i = seeds_and_queries(&pairs, "rank1", 400, 1).unwrap();
        assert!(i.interval.half_width() < 0.08, "{i:?}");
        // one seed, other queries, an unknown metric: refused
        assert!(seeds_and_queries(&pairs[..1], "rank1", 400, 1).is_err());
        let mut other = pairs.clone();
        other[1].0 = sample(10, 2, 0.5, 1);
        assert!(seeds_and_queries(&other, "rank1", 400, 1).is_err());
        assert!(seeds_and_queries(&pairs, "rank0x", 400, 1).is_err());
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
