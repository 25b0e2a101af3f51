//! Re-ID retrieval metrics with the protocol of torchreid / fast-reid (Market-1501 style):
//! per query, gallery entries with the same pid *and* camera are removed; queries left without a
//! true match are skipped (and counted); gallery pid −1 is junk and never ranked.
//!
//! Ranking is by ascending distance, ties broken by gallery order. Rather than sorting each row,
//! only the ranks of the (few) true matches are needed: each negative is located among the sorted
//! positives by binary search, which is O(G log P) per query instead of O(G log G).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Highest rank reported in the CMC curve (clipped to the gallery size).
pub const DEFAULT_MAX_RANK: usize = 50;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("{what} has {got} entries, expected {expected}")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("the gallery is empty (after dropping junk entries with pid -1)")]
    EmptyGallery,
    #[error("there are no queries")]
    NoQueries,
    #[error("distance[{query}, {gallery}] is {value}: distances must be finite numbers")]
    NotFinite {
        query: usize,
        gallery: usize,
        value: f32,
    },
    #[error("no query has a true match in the gallery (all {0} queries skipped): check pids and camera ids")]
    NoValidQuery(usize),
    #[error("{0}")]
    Other(String),
}

/// Identity and camera of each query and gallery entry.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub q_pids: Vec<i64>,
    pub q_camids: Vec<i64>,
    pub g_pids: Vec<i64>,
    pub g_camids: Vec<i64>,
}

impl Labels {
    pub fn validate(&self) -> Result<(), EvalError> {
        let check = |what, got: usize, expected| {
            if got == expected {
                Ok(())
            } else {
                Err(EvalError::Length {
                    what,
                    got,
                    expected,
                })
            }
        };
        check("q_camids", self.q_camids.len(), self.q_pids.len())?;
        check("g_camids", self.g_camids.len(), self.g_pids.len())?;
        if self.q_pids.is_empty() {
            return Err(EvalError::NoQueries);
        }
        if self.g_pids.iter().all(|&p| p == -1) {
            return Err(EvalError::EmptyGallery);
        }
        Ok(())
    }
}

/// Average precision flavour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApKind {
    /// Non-interpolated: (1/P) Σⱼ j / rⱼ (torchreid, fast-reid).
    #[default]
    Exact,
    /// The trapezoidal AP of the original Market-1501 MATLAB code.
    Market,
}

/// Result of one query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// 1-based rank of the first true match.
    pub first_rank: usize,
    /// 1-based rank of the last (hardest) true match.
    pub last_rank: usize,
    pub num_pos: usize,
    pub ap: f64,
    pub inp: f64,
    /// Gallery indices of its nearest valid entries, nearest first (at most
    /// [`reid_run::ranks::DEFAULT_TOP_K`]; empty when not asked for).
    pub top: Vec<u32>,
}

/// The gallery indices of the `k` entries nearest to one query (distance, then index), leaving
/// out what the protocol ignores: junk (identity −1) and the query's identity under its own
/// camera.
pub fn top_k(
    row: &[f32],
    q_pid: i64,
    q_cam: i64,
    g_pids: &[i64],
    g_cams: &[i64],
    k: usize,
) -> Vec<u32> {
    // a sorted list of at most k (distance, index): one pass, an insertion only when nearer
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (j, (&d, (&p, &c))) in row.iter().zip(g_pids.iter().zip(g_cams)).enumerate() {
        if p == -1 || (p == q_pid && c == q_cam) {
            continue;
        }
        if best.len() == k && best.last().is_some_and(|&(w, _)| d.total_cmp(&w).is_ge()) {
            continue;
        }
        let at = best.partition_point(|&(bd, _)| bd.total_cmp(&d).is_le());
        best.insert(at, (d, j));
        best.truncate(k);
    }
    best.into_iter().map(|(_, j)| j as u32).collect()
}

/// Ranks (1-based, within the valid gallery) of the true matches of one query, in rank order.
/// `row` holds this query's distance to every gallery entry. `None` when no true match remains.
pub fn positive_ranks(
    row: &[f32],
    q_pid: i64,
    q_cam: i64,
    g_pids: &[i64],
    g_cams: &[i64],
    q_index: usize,
) -> Result<Option<Vec<usize>>, EvalError> {
    // Sorted keys (distance, gallery index) of the true matches.
    let mut pos: Vec<(f32, usize)> = Vec::new();
    for (j, (&d, (&p, &c))) in row.iter().zip(g_pids.iter().zip(g_cams)).enumerate() {
        if !d.is_finite() {
            return Err(EvalError::NotFinite {
                query: q_index,
                gallery: j,
                value: d,
            });
        }
        if p == q_pid && c != q_cam {
            pos.push((d, j));
        }
    }
    if pos.is_empty() {
        return Ok(None);
    }
    pos.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // before[k] = number of valid negatives ranked between positive k−1 and positive k.
    let mut before = vec![0usize; pos.len() + 1];
    for (j, (&d, (&p, &c))) in row.iter().zip(g_pids.iter().zip(g_cams)).enumerate() {
        let junk = p == -1 || (p == q_pid && c == q_cam);
        if junk || p == q_pid {
            continue;
        }
        // number of positives ranked ahead of this negative
        let k = pos.partition_point(|&(pd, pj)| pd < d || (pd == d && pj < j));
        before[k] += 1;
    }
    let mut ranks = Vec::with_capacity(pos.len());
    let mut negatives = 0;
    for (i, count) in before.iter().take(pos.len()).enumerate() {
        negatives += count;
        ranks.push(i + 1 + negatives);
    }
    Ok(Some(ranks))
}

/// AP and INP from the 1-based ranks of the true matches.
pub fn query_result(ranks: &[usize], ap_kind: ApKind) -> QueryResult {
    let p = ranks.len() as f64;
    let ap = match ap_kind {
        ApKind::Exact => {
            ranks
                .iter()
                .enumerate()
                .map(|(i, &r)| (i + 1) as f64 / r as f64)
                .sum::<f64>()
                / p
        }
        ApKind::Market => {
            let mut prev = 1.0;
            let mut ap = 0.0;
            for (i, &r) in ranks.iter().enumerate() {
                let precision = (i + 1) as f64 / r as f64;
                ap += (prev + precision) / 2.0 / p;
                prev = precision;
            }
            ap
        }
    };
    let last = *ranks.last().unwrap_or(&1);
    QueryResult {
        first_rank: ranks[0],
        last_rank: last,
        num_pos: ranks.len(),
        ap,
        inp: p / last as f64,
        top: Vec::new(),
    }
}

/// Aggregate metrics over the valid queries (fractions in [0, 1]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(rename = "mINP")]
    pub minp: f64,
    /// cmc[k−1] = fraction of valid queries whose first true match ranks ≤ k.
    pub cmc: Vec<f64>,
    pub num_valid_queries: usize,
    pub num_queries: usize,
    /// The valid queries' own results, for confidence intervals ([`reid_run::stats`]).
    #[serde(skip)]
    pub per_query: reid_run::stats::PerQuery,
    /// The index of each valid query among all queries (the order of `per_query`).
    #[serde(skip)]
    pub valid_queries: Vec<usize>,
    /// Each valid query's nearest gallery indices ([`QueryResult::top`]).
    #[serde(skip)]
    pub top: Vec<Vec<u32>>,
}

impl Metrics {
    /// This result as a run folder's `eval` entry (metrics.json), with 95 % bootstrap
    /// intervals over query identities (seeded: the same results give the same intervals).
    pub fn eval_entry(&self) -> reid_run::EvalEntry {
        use reid_run::stats::{bootstrap, RESAMPLES};
        let ci95 = ["mAP", "rank1", "rank5", "mINP"]
            .into_iter()
            .filter_map(|m| Some((m.to_string(), bootstrap(&self.per_query, m, RESAMPLES, 0)?)))
            .collect();
        reid_run::EvalEntry {
            map: self.map,
            rank1: self.rank(1),
            rank5: Some(self.rank(5)),
            rank10: Some(self.rank(10)),
            minp: Some(self.minp),
            cmc: self.cmc.clone(),
            num_valid_queries: Some(self.num_valid_queries as u64),
            ci95,
            input: None,
        }
    }

    pub fn rank(&self, k: usize) -> f64 {
        if k == 0 || self.cmc.is_empty() {
            return 0.0;
        }
        self.cmc[(k - 1).min(self.cmc.len() - 1)]
    }

    /// Combine per-query results (None = skipped query) of the queries with identities `q_pids`.
    pub fn from_queries(
        results: &[Option<QueryResult>],
        q_pids: &[i64],
        max_rank: usize,
    ) -> Result<Self, EvalError> {
        let valid: Vec<&QueryResult> = results.iter().flatten().collect();
        if valid.is_empty() {
            return Err(EvalError::NoValidQuery(results.len()));
        }
        let n = valid.len() as f64;
        let mut hits = vec![0usize; max_rank + 1];
        for q in &valid {
            if q.first_rank <= max_rank {
                hits[q.first_rank] += 1;
            }
        }
        let mut cmc = Vec::with_capacity(max_rank);
        let mut acc = 0;
        for h in hits.iter().skip(1) {
            acc += h;
            cmc.push(acc as f64 / n);
        }
        let mut per_query = reid_run::stats::PerQuery::default();
        let (mut valid_queries, mut top) = (Vec::new(), Vec::new());
        for (i, (r, &pid)) in results.iter().zip(q_pids).enumerate() {
            if let Some(q) = r {
                valid_queries.push(i);
                top.push(q.top.clone());
                per_query.pid.push(pid);
                per_query.ap.push(q.ap);
                per_query
                    .first_rank
                    .push(q.first_rank.min(u32::MAX as usize) as u32);
                per_query.inp.push(q.inp);
            }
        }
        Ok(Metrics {
            map: valid.iter().map(|q| q.ap).sum::<f64>() / n,
            minp: valid.iter().map(|q| q.inp).sum::<f64>() / n,
            cmc,
            num_valid_queries: valid.len(),
            num_queries: results.len(),
            per_query,
            valid_queries,
            top,
        })
    }
}

/// Effective CMC length: `max_rank` clipped to the number of non-junk gallery entries.
pub fn effective_max_rank(g_pids: &[i64], max_rank: usize) -> usize {
    max_rank.min(g_pids.iter().filter(|&&p| p != -1).count())
}

/// Evaluate a dense query × gallery distance matrix (row-major, `labels` give its sizes).
pub fn evaluate_distmat(
    distmat: &[f32],
    labels: &Labels,
    max_rank: usize,
    ap_kind: ApKind,
) -> Result<(Metrics, Vec<Option<QueryResult>>), EvalError> {
    labels.validate()?;
    let (nq, ng) = (labels.q_pids.len(), labels.g_pids.len());
    if distmat.len() != nq * ng {
        return Err(EvalError::Length {
            what: "distmat",
            got: distmat.len(),
            expected: nq * ng,
        });
    }
    let per_query = evaluate_rows(distmat, 0, labels, ap_kind)?;
    let metrics = Metrics::from_queries(
        &per_query,
        &labels.q_pids,
        effective_max_rank(&labels.g_pids, max_rank),
    )?;
    Ok((metrics, per_query))
}

/// Per-query results of consecutive rows `[first, first + rows)` of a distance matrix.
pub fn evaluate_rows(
    rows: &[f32],
    first: usize,
    labels: &Labels,
    ap_kind: ApKind,
) -> Result<Vec<Option<QueryResult>>, EvalError> {
    let ng = labels.g_pids.len();
    rows.par_chunks(ng)
        .enumerate()
        .map(|(i, row)| {
            let q = first + i;
            Ok(positive_ranks(
                row,
                labels.q_pids[q],
                labels.q_camids[q],
                &labels.g_pids,
                &labels.g_camids,
                q,
            )?
            .map(|r| QueryResult {
                top: top_k(
                    row,
                    labels.q_pids[q],
                    labels.q_camids[q],
                    &labels.g_pids,
                    &labels.g_camids,
                    reid_run::ranks::DEFAULT_TOP_K,
                ),
                ..query_result(&r, ap_kind)
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: full stable sort of the row.
    fn ranks_by_sort(row: &[f32], qp: i64, qc: i64, gp: &[i64], gc: &[i64]) -> Option<Vec<usize>> {
        let mut idx: Vec<usize> = (0..row.len())
            .filter(|&j| gp[j] != -1 && !(gp[j] == qp && gc[j] == qc))
            .collect();
        idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
        let r: Vec<usize> = idx
            .iter()
            .enumerate()
            .filter(|(_, &j)| gp[j] == qp)
            .map(|(i, _)| i + 1)
            .collect();
        (!r.is_empty()).then_some(r)
    }

    #[test]
    fn binary_search_ranks_equal_full_sort_with_ties() {
        let mut s = 12345u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200 {
            let g = 1 + (next() % 40) as usize;
            // few distinct distances → many exact ties
            let row: Vec<f32> = (0..g).map(|_| (next() % 6) as f32).collect();
            let gp: Vec<i64> = (0..g).map(|_| (next() % 5) as i64 - 1).collect();
            let gc: Vec<i64> = (0..g).map(|_| (next() % 3) as i64).collect();
            let (qp, qc) = ((next() % 4) as i64, (next() % 3) as i64);
            let got = positive_ranks(&row, qp, qc, &gp, &gc, 0).unwrap();
            assert_eq!(got, ranks_by_sort(&row, qp, qc, &gp, &gc));
            // the ranked list is the head of the same stable sort of the valid entries, and a
            // true match's place in it is its rank
            let mut valid: Vec<usize> = (0..g)
                .filter(|&j| gp[j] != -1 && !(gp[j] == qp && gc[j] == qc))
                .collect();
            valid.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
            let k = 1 + (next() % 6) as usize;
            let top = top_k(&row, qp, qc, &gp, &gc, k);
            let want: Vec<u32> = valid.iter().take(k).map(|&j| j as u32).collect();
            assert_eq!(top, want);
            if let (Some(r), Some(&first)) = (
                &got,
                top.iter().position(|&j| gp[j as usize] == qp).as_ref(),
            ) {
                assert_eq!(r[0], first + 1);
            }
        }
    }

    #[test]
    fn perfect_ranking_gives_one() {
        // every query's true matches are its nearest entries
        let labels = Labels {
            q_pids: vec![1, 2],
            q_camids: vec![0, 0],
            g_pids: vec![1, 1, 2, 3],
            g_camids: vec![1, 2, 1, 1],
        };
        let d = vec![0.1, 0.2, 0.9, 0.8, 0.9, 0.8, 0.1, 0.5];
        let (m, _) = evaluate_distmat(&d, &labels, 50, ApKind::Exact).unwrap();
        assert_eq!((m.map, m.rank(1), m.minp), (1.0, 1.0, 1.0));
        assert_eq!(m.cmc.len(), 4);
    }

    #[test]
    fn gallery_permutation_leaves_metrics_unchanged() {
        let labels = Labels {
            q_pids: vec![1, 2, 3],
            q_camids: vec![0, 1, 0],
            g_pids: vec![1, 2, 3, 1, 2, 0, -1, 3],
            g_camids: vec![1, 0, 1, 2, 2, 1, 1, 0],
        };
        let d: Vec<f32> = (0..24).map(|i| ((i * 37) % 23) as f32 * 0.1).collect();
        let (a, _) = evaluate_distmat(&d, &labels, 50, ApKind::Exact).unwrap();
        let perm = [7, 2, 5, 0, 6, 1, 3, 4];
        let pl = Labels {
            g_pids: perm.iter().map(|&j| labels.g_pids[j]).collect(),
            g_camids: perm.iter().map(|&j| labels.g_camids[j]).collect(),
            ..labels.clone()
        };
        let pd: Vec<f32> = (0..3)
            .flat_map(|q| perm.iter().map(move |&j| (q, j)))
            .map(|(q, j)| d[q * 8 + j])
            .collect();
        let (mut b, _) = evaluate_distmat(&pd, &pl, 50, ApKind::Exact).unwrap();
        // the lists name the same images (ties apart: these distances have none)
        for t in &mut b.top {
            for j in t.iter_mut() {
                *j = perm[*j as usize] as u32;
            }
        }
        assert_eq!(a, b);
    }

    #[test]
    fn ties_are_broken_in_gallery_order() {
        let labels = Labels {
            q_pids: vec![1],
            q_camids: vec![0],
            g_pids: vec![2, 1],
            g_camids: vec![1, 1],
        };
        // equal distances: the negative (index 0) ranks first
        let (m, per) = evaluate_distmat(&[0.5, 0.5], &labels, 50, ApKind::Exact).unwrap();
        assert_eq!(per[0].as_ref().unwrap().first_rank, 2);
        assert_eq!(m.rank(1), 0.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let labels = Labels {
            q_pids: vec![1],
            q_camids: vec![0, 1],
            g_pids: vec![1],
            g_camids: vec![1],
        };
        assert!(matches!(
            evaluate_distmat(&[0.0], &labels, 50, ApKind::Exact),
            Err(EvalError::Length { .. })
        ));
        let labels = Labels {
            q_camids: vec![0],
            ..labels
        };
        let e = evaluate_distmat(&[f32::NAN], &labels, 50, ApKind::Exact).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        let junk = Labels {
            g_pids: vec![-1],
            ..labels.clone()
        };
        assert_eq!(
            evaluate_distmat(&[0.0], &junk, 50, ApKind::Exact).unwrap_err(),
            EvalError::EmptyGallery
        );
        assert!(evaluate_distmat(&[0.0, 1.0], &labels, 50, ApKind::Exact).is_err());
    }

    #[test]
    fn market_ap_is_trapezoidal() {
        // positives at ranks 1 and 3: precisions 1, 2/3
        let q = query_result(&[1, 3], ApKind::Market);
        let want = 0.5 * (1.0 + 1.0) / 2.0 + 0.5 * (1.0 + 2.0 / 3.0) / 2.0;
        assert!((q.ap - want).abs() < 1e-15);
        let e = query_result(&[1, 3], ApKind::Exact);
        assert!((e.ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        assert!((e.inp - 2.0 / 3.0).abs() < 1e-15);
    }
}
