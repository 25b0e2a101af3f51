//! k-reciprocal re-ranking (Zhong et al., CVPR 2017), as torchreid and fast-reid apply it:
//! the metric's distances are squared and divided by each row's maximum (over queries and
//! gallery), k-reciprocal sets are expanded with the ⌊k1/2⌉-reciprocal sets of their members
//! when those overlap by more than 2/3, weighted by exp(−distance), averaged over the k2
//! nearest neighbours (query expansion), and the Jaccard distance of those vectors is blended
//! with the original one: final = (1 − λ)·jaccard + λ·original.
//!
//! Unlike the reference code, nothing of size (Q+G)² is kept: one pass over the pairwise
//! distances (block by block, upper triangle only) keeps each item's k nearest neighbours and
//! its row maximum, the vectors V are sparse rows, and the Jaccard term walks an inverted
//! index. Memory is the Q×G matrix plus O((Q+G)·k1²).

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;

use crate::distance::Metric;
use crate::metrics::EvalError;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RerankParams {
    pub k1: usize,
    pub k2: usize,
    pub lambda: f32,
}

impl Default for RerankParams {
    /// The paper's and every toolbox's setting.
    fn default() -> Self {
        Self {
            k1: 20,
            k2: 6,
            lambda: 0.3,
        }
    }
}

impl RerankParams {
    fn validate(&self, n: usize) -> Result<(), EvalError> {
        if self.k1 == 0 || self.k2 == 0 {
            return Err(EvalError::Other(format!(
                "re-ranking needs k1 >= 1 and k2 >= 1, got k1 = {}, k2 = {}",
                self.k1, self.k2
            )));
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(EvalError::Other(format!(
                "re-ranking lambda must be in [0, 1], got {}",
                self.lambda
            )));
        }
        if n < self.k1.saturating_add(1) {
            return Err(EvalError::Other(format!(
                "re-ranking with k1 = {} needs at least {} queries + gallery images, got {n}",
                self.k1,
                self.k1.saturating_add(1)
            )));
        }
        if n < self.k2 {
            return Err(EvalError::Other(format!(
                "re-ranking with k2 = {} needs at least {} queries + gallery images, got {n}",
                self.k2, self.k2
            )));
        }
        Ok(())
    }
    /// numpy's `around(k1 / 2)`: halves round to even.
    fn half_k1(&self) -> usize {
        let h = self.k1 / 2;
        if self.k1 % 2 == 1 && h % 2 == 1 {
            h + 1
        } else {
            h
        }
    }
}

/// Each item's nearest neighbours (ascending distance, ties by index) and row maximum.
struct Neighbours {
    k: usize,
    /// n × k (distance, index).
    lists: Vec<(f32, u32)>,
    row_max: Vec<f32>,
}

impl Neighbours {
    fn new(n: usize, k: usize) -> Self {
        Self {
            k,
            lists: vec![(f32::INFINITY, u32::MAX); n * k],
            row_max: vec![0.0; n],
        }
    }
    fn row(&self, i: usize) -> &[(f32, u32)] {
        &self.lists[i * self.k..(i + 1) * self.k]
    }
    fn top(&self, i: usize, m: usize) -> impl Iterator<Item = usize> + '_ {
        self.row(i)[..m].iter().map(|&(_, j)| j as usize)
    }
}

/// Inserts (d, j) into a sorted fixed-size list if it belongs there.
#[inline]
fn offer(list: &mut [(f32, u32)], d: f32, j: u32) {
    let k = list.len();
    let last = list[k - 1];
    if !(d < last.0 || (d == last.0 && j < last.1)) {
        return;
    }
    let mut p = k - 1;
    while p > 0 && (list[p - 1].0 > d || (list[p - 1].0 == d && list[p - 1].1 > j)) {
        list[p] = list[p - 1];
        p -= 1;
    }
    list[p] = (d, j);
}

/// Where pairwise distances come from.
trait PairDistance: Sync {
    fn n(&self) -> usize;
    fn dist(&self, i: usize, j: usize) -> f32;
}

struct DenseDistances<'a> {
    nq: usize,
    qg: &'a [f32],
    qq: &'a [f32],
    gg: &'a [f32],
    ng: usize,
}

impl PairDistance for DenseDistances<'_> {
    fn n(&self) -> usize {
        self.nq + self.ng
    }
    fn dist(&self, i: usize, j: usize) -> f32 {
        let (nq, ng) = (self.nq, self.ng);
        match (i < nq, j < nq) {
            (true, true) => self.qq[i * nq + j],
            (true, false) => self.qg[i * ng + j - nq],
            (false, true) => self.qg[j * ng + i - nq],
            (false, false) => self.gg[(i - nq) * ng + j - nq],
        }
    }
}

struct FeatureDistances {
    feats: Vec<f32>,
    sq_norms: Vec<f32>,
    dim: usize,
    metric: Metric,
}

impl PairDistance for FeatureDistances {
    fn n(&self) -> usize {
        self.sq_norms.len()
    }
    fn dist(&self, i: usize, j: usize) -> f32 {
        let a = &self.feats[i * self.dim..(i + 1) * self.dim];
        let b = &self.feats[j * self.dim..(j + 1) * self.dim];
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        match self.metric {
            Metric::Euclidean => (self.sq_norms[i] + self.sq_norms[j] - 2.0 * dot).max(0.0),
            Metric::Cosine => 1.0 - dot,
        }
    }
}

/// Re-ranked Q×G distances from dense Q×G, Q×Q and G×G distance matrices (row-major).
pub fn rerank_distances(
    qg: &[f32],
    qq: &[f32],
    gg: &[f32],
    nq: usize,
    ng: usize,
    params: RerankParams,
) -> Result<Vec<f32>, EvalError> {
    for (what, got, expected) in [
        ("distmat", qg.len(), nq * ng),
        ("distmat_qq", qq.len(), nq * nq),
        ("distmat_gg", gg.len(), ng * ng),
    ] {
        if got != expected {
            return Err(EvalError::Length {
                what,
                got,
                expected,
            });
        }
    }
    if let Some(p) = [qg, qq, gg]
        .iter()
        .flat_map(|m| m.iter())
        .position(|v| !v.is_finite())
    {
        return Err(EvalError::Other(format!(
            "distance matrices hold a non-finite value (at flat index {p} of distmat, distmat_qq, distmat_gg)"
        )));
    }
    params.validate(nq + ng)?;
    let src = DenseDistances { nq, qg, qq, gg, ng };
    let n = nq + ng;
    let k = (params.k1 + 1).max(params.k2);
    let mut nb = Neighbours::new(n, k);
    nb.lists
        .par_chunks_mut(k)
        .zip(nb.row_max.par_iter_mut())
        .enumerate()
        .for_each(|(i, (list, max))| {
            for j in 0..n {
                let d = src.dist(i, j);
                *max = max.max(d);
                offer(list, d, j as u32);
            }
        });
    Ok(finish(&src, &nb, qg.to_vec(), nq, ng, params))
}

/// Re-ranked Q×G distances from query and gallery features ([Q, D] and [G, D]).
pub fn rerank_features(
    qf: &Tensor,
    gf: &Tensor,
    metric: Metric,
    params: RerankParams,
    block_rows: usize,
) -> Result<Vec<f32>, EvalError> {
    let cerr = |e: candle_core::Error| EvalError::Other(format!("re-ranking distances: {e}"));
    let (nq, dq) = qf.dims2().map_err(cerr)?;
    let (ng, dg) = gf.dims2().map_err(cerr)?;
    if dq != dg {
        return Err(EvalError::Other(format!(
            "query features have dimension {dq}, gallery features {dg}"
        )));
    }
    let n = nq + ng;
    params.validate(n)?;
    let all = Tensor::cat(&[qf, gf], 0)
        .and_then(|t| t.to_device(&Device::Cpu))
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(cerr)?;
    let all = match metric {
        Metric::Cosine => {
            let norm = all
                .sqr()
                .and_then(|s| s.sum_keepdim(D::Minus1))
                .and_then(|s| s.sqrt())
                .and_then(|s| s.clamp(1e-12, f64::MAX))
                .map_err(cerr)?;
            all.broadcast_div(&norm).map_err(cerr)?
        }
        Metric::Euclidean => all,
    }
    .contiguous()
    .map_err(cerr)?;
    let feats: Vec<f32> = all.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
    if feats.iter().any(|v| !v.is_finite()) {
        return Err(EvalError::Other(
            "features hold NaN or infinite values".into(),
        ));
    }
    let sq_norms: Vec<f32> = feats
        .chunks(dq.max(1))
        .map(|r| r.iter().map(|x| x * x).sum())
        .collect();
    let src = FeatureDistances {
        feats,
        sq_norms,
        dim: dq,
        metric,
    };
    let k = (params.k1 + 1).max(params.k2);
    let mut nb = Neighbours::new(n, k);
    let mut qg = vec![0f32; nq * ng];
    let block_rows = block_rows.max(1);
    let mut s = 0;
    while s < n {
        let b = block_rows.min(n - s);
        let w = n - s;
        // Rows s..s+b against columns s..n: the upper triangle and the diagonal block.
        let rows = all.narrow(0, s, b).map_err(cerr)?;
        let cols = all.narrow(0, s, w).map_err(cerr)?;
        let prod = rows
            .matmul(&cols.t().map_err(cerr)?)
            .and_then(|p| p.flatten_all())
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(cerr)?;
        let mut block = prod;
        block.par_chunks_mut(w).enumerate().for_each(|(a, row)| {
            let r = s + a;
            for (t, v) in row.iter_mut().enumerate() {
                let c = s + t;
                *v = match metric {
                    Metric::Euclidean => (src.sq_norms[r] + src.sq_norms[c] - 2.0 * *v).max(0.0),
                    Metric::Cosine => 1.0 - *v,
                };
            }
        });
        // Row side: each block row sees every column at or right of its diagonal.
        nb.lists[s * k..(s + b) * k]
            .par_chunks_mut(k)
            .zip(nb.row_max[s..s + b].par_iter_mut())
            .enumerate()
            .for_each(|(a, (list, max))| {
                for (t, &d) in block[a * w..(a + 1) * w].iter().enumerate().skip(a) {
                    *max = max.max(d);
                    offer(list, d, (s + t) as u32);
                }
            });
        // Query rows keep their gallery distances (columns nq..n) for the final blend.
        for a in 0..b.min(nq.saturating_sub(s)) {
            let r = s + a;
            let from = a * w + (nq - s);
            qg[r * ng..(r + 1) * ng].copy_from_slice(&block[from..from + ng]);
        }
        // Column side: a column right of the diagonal gets the block rows above it. Chunks of
        // columns walk the block row by row, for locality.
        const CHUNK: usize = 256;
        nb.lists[s * k..]
            .par_chunks_mut(k * CHUNK)
            .zip(nb.row_max[s..].par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(ci, (lists, maxes))| {
                let t0 = ci * CHUNK;
                for a in 0..b.min(t0 + maxes.len()) {
                    let row = &block[a * w..(a + 1) * w];
                    for (u, max) in maxes.iter_mut().enumerate() {
                        let t = t0 + u;
                        if t <= a {
                            continue;
                        }
                        let d = row[t];
                        *max = max.max(d);
                        offer(&mut lists[u * k..(u + 1) * k], d, (s + a) as u32);
                    }
                }
            });
        s += b;
    }
    Ok(finish(&src, &nb, qg, nq, ng, params))
}

/// From neighbour lists and raw Q×G distances to the re-ranked Q×G distances (in place).
fn finish(
    src: &dyn PairDistance,
    nb: &Neighbours,
    mut qg: Vec<f32>,
    nq: usize,
    ng: usize,
    p: RerankParams,
) -> Vec<f32> {
    let n = src.n();
    let k1 = p.k1;
    let hk = p.half_k1();
    // Normalised "original distance": d² / max_j d(i, j)².
    let scale: Vec<f32> = nb
        .row_max
        .iter()
        .map(|m| if *m > 0.0 { 1.0 / (m * m) } else { 0.0 })
        .collect();
    let reciprocal = |i: usize, m: usize| -> Vec<usize> {
        nb.top(i, m + 1)
            .filter(|&f| nb.top(f, m + 1).any(|b| b == i))
            .collect()
    };
    // Sparse V: for each item, the expanded k-reciprocal set weighted by exp(−distance).
    let v: Vec<Vec<(u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let kr = reciprocal(i, k1);
            let mut expanded = kr.clone();
            for &c in &kr {
                let ckr = reciprocal(c, hk);
                let common = ckr.iter().filter(|x| kr.contains(x)).count();
                if common as f64 > 2.0 / 3.0 * ckr.len() as f64 {
                    expanded.extend(ckr);
                }
            }
            expanded.sort_unstable();
            expanded.dedup();
            let w: Vec<f32> = expanded
                .iter()
                .map(|&j| {
                    let d = src.dist(i, j);
                    (-(d * d * scale[i])).exp()
                })
                .collect();
            let sum: f32 = w.iter().sum();
            expanded
                .iter()
                .zip(w)
                .map(|(&j, w)| (j as u32, w / sum))
                .collect()
        })
        .collect();
    // Query expansion: average V over each item's k2 nearest neighbours.
    let v: Vec<Vec<(u32, f32)>> = if p.k2 > 1 {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut all: Vec<(u32, f32)> =
                    nb.top(i, p.k2).flat_map(|j| v[j].iter().copied()).collect();
                all.sort_unstable_by_key(|e| e.0);
                let mut out: Vec<(u32, f32)> = Vec::with_capacity(all.len());
                for (j, w) in all {
                    match out.last_mut() {
                        Some(last) if last.0 == j => last.1 += w,
                        _ => out.push((j, w)),
                    }
                }
                for e in &mut out {
                    e.1 /= p.k2 as f32;
                }
                out
            })
            .collect()
    } else {
        v
    };
    // Inverted index over gallery rows only: the Jaccard term is needed for query × gallery.
    let mut inv: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    for (r, row) in v.iter().enumerate().skip(nq) {
        for &(c, w) in row {
            inv[c as usize].push((r as u32, w));
        }
    }
    let lambda = p.lambda;
    qg.par_chunks_mut(ng.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let mut common = vec![0f32; ng];
            for &(c, wi) in &v[i] {
                for &(r, wr) in &inv[c as usize] {
                    common[r as usize - nq] += wi.min(wr);
                }
            }
            for (j, d) in row.iter_mut().enumerate() {
                let jac = 1.0 - common[j] / (2.0 - common[j]);
                let orig = *d * *d * scale[i];
                *d = jac * (1.0 - lambda) + orig * lambda;
            }
        });
    qg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_k1_rounds_like_numpy() {
        let h = |k1| {
            RerankParams {
                k1,
                k2: 1,
                lambda: 0.3,
            }
            .half_k1()
        };
        // numpy.around: 10.0 -> 10, 2.5 -> 2, 3.5 -> 4, 0.5 -> 0.
        assert_eq!((h(20), h(5), h(7), h(1), h(3)), (10, 2, 4, 0, 2));
    }

    #[test]
    fn offer_keeps_the_k_smallest_with_ties_by_index() {
        let mut l = vec![(f32::INFINITY, u32::MAX); 3];
        for (d, j) in [(0.5, 4), (0.2, 9), (0.5, 1), (0.9, 2), (0.2, 3), (0.5, 0)] {
            offer(&mut l, d, j);
        }
        assert_eq!(l, vec![(0.2, 3), (0.2, 9), (0.5, 0)]);
    }
}
