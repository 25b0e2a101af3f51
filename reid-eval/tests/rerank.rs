//! k-reciprocal re-ranking against a literal dense implementation of Zhong et al.'s algorithm
//! (full (Q+G)² matrices, full argsort, dense V), on small random cases.

use candle_core::{Device, Tensor};
use reid_eval::distance::{distance_matrix, Metric};
use reid_eval::rerank::{rerank_distances, rerank_features, RerankParams};

/// Clustered features: `ids` identities, `per_id` images each, small noise.
fn features(ids: usize, per_id: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..ids)
        .map(|_| (0..dim).map(|_| next() * 4.0).collect())
        .collect();
    let mut out = Vec::new();
    for _ in 0..per_id {
        for c in &centres {
            out.push(c.iter().map(|x| x + next() * 1.5).collect());
        }
    }
    out
}

fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The algorithm as published, with every matrix dense.
fn reference(all: &[Vec<f32>], nq: usize, p: RerankParams) -> Vec<f32> {
    let n = all.len();
    let ng = n - nq;
    let m: Vec<Vec<f32>> = (0..n)
        .map(|i| (0..n).map(|j| dist(&all[i], &all[j]).powi(2)).collect())
        .collect();
    // original / column max, transposed.
    let cmax: Vec<f32> = (0..n)
        .map(|j| (0..n).map(|i| m[i][j]).fold(0.0, f32::max))
        .collect();
    let r: Vec<Vec<f32>> = (0..n)
        .map(|i| (0..n).map(|j| m[j][i] / cmax[i]).collect())
        .collect();
    let rank: Vec<Vec<usize>> = r
        .iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
            idx
        })
        .collect();
    let krec = |i: usize, k: usize| -> Vec<usize> {
        rank[i][..k + 1]
            .iter()
            .copied()
            .filter(|&f| rank[f][..k + 1].contains(&i))
            .collect()
    };
    let half = (p.k1 as f64 / 2.0).round_ties_even() as usize;
    let mut v = vec![vec![0f32; n]; n];
    for i in 0..n {
        let kr = krec(i, p.k1);
        let mut exp = kr.clone();
        for &c in &kr {
            let ckr = krec(c, half);
            let inter = ckr.iter().filter(|x| kr.contains(x)).count();
            if inter as f64 > 2.0 / 3.0 * ckr.len() as f64 {
                exp.extend(ckr);
            }
        }
        exp.sort();
        exp.dedup();
        let w: Vec<f32> = exp.iter().map(|&j| (-r[i][j]).exp()).collect();
        let sum: f32 = w.iter().sum();
        for (&j, w) in exp.iter().zip(w) {
            v[i][j] = w / sum;
        }
    }
    if p.k2 != 1 {
        let vqe: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|c| rank[i][..p.k2].iter().map(|&j| v[j][c]).sum::<f32>() / p.k2 as f32)
                    .collect()
            })
            .collect();
        v = vqe;
    }
    let mut out = vec![0f32; nq * ng];
    for i in 0..nq {
        for j in 0..ng {
            let g = nq + j;
            let t: f32 = (0..n)
                .filter(|&c| v[i][c] != 0.0 && v[g][c] != 0.0)
                .map(|c| v[i][c].min(v[g][c]))
                .sum();
            let jac = 1.0 - t / (2.0 - t);
            out[i * ng + j] = jac * (1.0 - p.lambda) + r[i][g] * p.lambda;
        }
    }
    out
}

fn tensor(rows: &[Vec<f32>]) -> Tensor {
    let d = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), d), &Device::Cpu).unwrap()
}

fn dense(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f32> {
    distance_matrix(&tensor(a), &tensor(b), Metric::Euclidean)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}");
}

#[test]
fn rerank_equals_the_dense_reference() {
    for (ids, per, nq, params) in [
        (12, 5, 12, RerankParams::default()),
        (
            9,
            4,
            9,
            RerankParams {
                k1: 5,
                k2: 3,
                lambda: 0.5,
            },
        ),
        (
            7,
            3,
            4,
            RerankParams {
                k1: 7,
                k2: 1,
                lambda: 0.1,
            },
        ),
    ] {
        let all = features(ids, per, 16, ids as u64);
        let (q, g) = all.split_at(nq);
        let expected = reference(&all, nq, params);
        let qg = dense(q, g);
        let got =
            rerank_distances(&qg, &dense(q, q), &dense(g, g), q.len(), g.len(), params).unwrap();
        assert_close(&got, &expected, 2e-5, "from distance matrices");
        // Blocks of 7 rows: boundaries inside the query part, across it and in the gallery.
        let got = rerank_features(&tensor(q), &tensor(g), Metric::Euclidean, params, 7).unwrap();
        assert_close(&got, &expected, 1e-4, "from features");
    }
}

#[test]
fn lambda_one_is_the_normalised_squared_distance() {
    let all = features(6, 4, 8, 3);
    let (q, g) = all.split_at(6);
    let p = RerankParams {
        k1: 4,
        k2: 2,
        lambda: 1.0,
    };
    let got = rerank_features(&tensor(q), &tensor(g), Metric::Euclidean, p, 64).unwrap();
    for i in 0..q.len() {
        let max = all.iter().map(|x| dist(&q[i], x)).fold(0f32, f32::max);
        for j in 0..g.len() {
            let want = (dist(&q[i], &g[j]) / max).powi(2);
            assert!((got[i * g.len() + j] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn rerank_separates_identities_better_than_the_original_distance() {
    let all = features(10, 6, 12, 11);
    let (q, g) = all.split_at(10);
    let qg = dense(q, g);
    let rr = rerank_features(
        &tensor(q),
        &tensor(g),
        Metric::Euclidean,
        RerankParams::default(),
        16,
    )
    .unwrap();
    // Same-identity pairs (index mod 10) must on average be closer after re-ranking relative to
    // different-identity pairs: the separation ratio improves.
    let sep = |m: &[f32]| {
        let (mut same, mut ns, mut diff, mut nd) = (0f64, 0, 0f64, 0);
        for i in 0..q.len() {
            for j in 0..g.len() {
                let v = m[i * g.len() + j] as f64;
                if j % 10 == i {
                    same += v;
                    ns += 1;
                } else {
                    diff += v;
                    nd += 1;
                }
            }
        }
        (same / ns as f64) / (diff / nd as f64)
    };
    assert!(
        sep(&rr) < sep(&qg),
        "re-ranked {} vs original {}",
        sep(&rr),
        sep(&qg)
    );
}

#[test]
fn bad_inputs_are_refused_clearly() {
    let p = RerankParams::default();
    let e = rerank_distances(&[0.0; 8], &[0.0; 4], &[0.0; 9], 2, 4, p).unwrap_err();
    assert!(e.to_string().contains("distmat_gg"), "{e}");
    let e = rerank_distances(&[f32::NAN; 6], &[0.0; 4], &[0.0; 9], 2, 3, p).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    let e = rerank_distances(&[0.0; 6], &[0.0; 4], &[0.0; 9], 2, 3, p).unwrap_err();
    assert!(e.to_string().contains("at least 21"), "{e}");
    let all = features(3, 2, 4, 1);
    let e = rerank_features(
        &tensor(&all[..2]),
        &tensor(&all[2..]),
        Metric::Euclidean,
        RerankParams {
            k1: 2,
            k2: 2,
            lambda: 1.5,
        },
        8,
    )
    .unwrap_err();
    assert!(e.to_string().contains("lambda"), "{e}");
}

/// torchreid 0.2.5's own re-ranking of a stored case (made by bench/rerank_reference.py): the
/// same matrix, so the same ranking and metrics.
#[test]
fn rerank_equals_torchreid_on_a_stored_case() {
    let path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/data/rerank_torchreid.safetensors");
    let f = reid_model::checkpoint::read_safetensors(&path, &Device::Cpu).unwrap();
    let flat = |k: &str| -> Vec<f32> { f.tensors[k].flatten_all().unwrap().to_vec1().unwrap() };
    let (nq, ng) = f.tensors["distmat"].dims2().unwrap();
    let got = rerank_distances(
        &flat("distmat"),
        &flat("distmat_qq"),
        &flat("distmat_gg"),
        nq,
        ng,
        RerankParams::default(),
    )
    .unwrap();
    let want = flat("reranked");
    assert_close(&got, &want, 1e-5, "torchreid re_ranking");
    // and re-ranking changes this case: it is not the original distance
    let orig = flat("distmat");
    assert!(got.iter().zip(&orig).any(|(a, b)| (a - b).abs() > 0.1));
}
