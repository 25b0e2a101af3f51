//! `reid-eval bench`: distance + CMC + mAP + mINP (and re-ranking) speed at Market-1501 scale.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use reid_eval::metrics::DEFAULT_MAX_RANK;
use reid_eval::rerank::{rerank_features, RerankParams};
use reid_eval::{evaluate_distmat, evaluate_features, ApKind, Labels, Metric};

/// Time distance + CMC + mAP + mINP on random features at Market-1501 scale.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Query features.
    #[arg(long, default_value_t = 3368)]
    queries: usize,
    /// Gallery features.
    #[arg(long, default_value_t = 15913)]
    gallery: usize,
    /// Feature dimension.
    #[arg(long, default_value_t = 2048)]
    dim: usize,
    /// Identities the features cluster around.
    #[arg(long, default_value_t = 751)]
    ids: usize,
    /// Also time k-reciprocal re-ranking (k1 20, k2 6, λ 0.3) at this scale.
    #[arg(long)]
    rerank: bool,
    /// Only the blockwise evaluation (bounded memory), e.g. at MSMT17 scale:
    /// `bench --queries 11659 --gallery 82161 --ids 3060 --blockwise-only`.
    #[arg(long)]
    blockwise_only: bool,
}

/// Deterministic pseudo-random features with identity structure (for the bench): one centre
/// per identity, plus noise; cameras at random.
fn bench_features(centres: &Tensor, n: usize, seed: u64) -> Result<(Tensor, Vec<i64>, Vec<i64>)> {
    let (ids, dim) = centres.dims2()?;
    let mut rng = reid_model::init::SplitMix64::new(seed);
    let pids: Vec<i64> = (0..n).map(|i| (i % ids) as i64 + 1).collect();
    let cams: Vec<i64> = (0..n).map(|_| (rng.next_u64() % 6) as i64 + 1).collect();
    let idx = Tensor::from_vec(
        pids.iter().map(|&p| (p - 1) as u32).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )?;
    let noise: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32 * 1.5).collect();
    let noise = Tensor::from_vec(noise, (n, dim), &Device::Cpu)?;
    Ok(((centres.index_select(&idx, 0)? + noise)?, pids, cams))
}

/// Every count at least 1, and the features (with the full distance matrix unless
/// blockwise) within this machine's memory: refused before anything is allocated.
fn check_sizes(
    queries: usize,
    gallery: usize,
    dim: usize,
    ids: usize,
    blockwise_only: bool,
) -> Result<()> {
    for (flag, v) in [
        ("--queries", queries),
        ("--gallery", gallery),
        ("--dim", dim),
        ("--ids", ids),
    ] {
        if v == 0 {
            anyhow::bail!("{flag} 0: expected at least 1");
        }
    }
    // features and their noise, the identity centres, and the distance matrix
    let floats = (queries as u128 + gallery as u128) * dim as u128 * 2
        + ids as u128 * dim as u128
        + if blockwise_only {
            0
        } else {
            queries as u128 * gallery as u128
        };
    let need = floats.saturating_mul(4);
    if let Some(have) = reid_model::complexity::machine_memory() {
        if need > have as u128 {
            anyhow::bail!(
                "--queries {queries} --gallery {gallery} --dim {dim} --ids {ids} need at least \
                 {:.1} GB (estimated{}) and this machine has {:.1} GB: use smaller sizes{}",
                need as f64 / 1e9,
                if blockwise_only {
                    ""
                } else {
                    ", with the full distance matrix"
                },
                have as f64 / 1e9,
                if blockwise_only {
                    ""
                } else {
                    " or --blockwise-only"
                }
            );
        }
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        queries,
        gallery,
        dim,
        ids,
        rerank,
        blockwise_only,
    } = a;
    check_sizes(queries, gallery, dim, ids, blockwise_only)?;
    let mut rng = reid_model::init::SplitMix64::new(0);
    let centres: Vec<f32> = (0..ids * dim).map(|_| rng.normal() as f32 * 0.5).collect();
    let centres = Tensor::from_vec(centres, (ids, dim), &Device::Cpu)?;
    let (qf, q_pids, q_camids) = bench_features(&centres, queries, 1)?;
    let (gf, g_pids, g_camids) = bench_features(&centres, gallery, 2)?;
    let labels = Labels {
        q_pids,
        q_camids,
        g_pids,
        g_camids,
    };
    let threads = candle_core::utils::get_num_threads();
    if blockwise_only {
        let t = Instant::now();
        let m = evaluate_features(
            &qf,
            &gf,
            &labels,
            Metric::Cosine,
            DEFAULT_MAX_RANK,
            ApKind::Exact,
            512,
        )?;
        println!(
            "{queries} x {gallery} x {dim} Cosine ({threads} threads), blockwise: {:.2} s; peak RSS {:.2} GiB \
             (features included); mAP {:.3} R-1 {:.3}",
            t.elapsed().as_secs_f64(),
            reid_process::status_mb("VmHWM:") / 1024.0,
            m.map,
            m.rank(1)
        );
        return Ok(());
    }
    for metric in [Metric::Euclidean, Metric::Cosine] {
        let t = Instant::now();
        let dist = reid_eval::distance_matrix(&qf, &gf, metric)?;
        let t_dist = t.elapsed().as_secs_f64();
        let flat: Vec<f32> = dist.flatten_all()?.to_vec1()?;
        let t = Instant::now();
        let (m, _) = evaluate_distmat(&flat, &labels, DEFAULT_MAX_RANK, ApKind::Exact)?;
        let t_metrics = t.elapsed().as_secs_f64();
        let t = Instant::now();
        evaluate_features(
            &qf,
            &gf,
            &labels,
            metric,
            DEFAULT_MAX_RANK,
            ApKind::Exact,
            512,
        )?;
        let t_all = t.elapsed().as_secs_f64();
        println!(
            "{queries} x {gallery} x {dim} {metric:?} ({threads} threads): distances {t_dist:.3} s \
             ({:.0} GFLOP/s), CMC + mAP + mINP {t_metrics:.3} s, blockwise end to end {t_all:.3} s; \
             mAP {:.3} R-1 {:.3}",
            2.0 * (queries * gallery * dim) as f64 / t_dist / 1e9,
            m.map,
            m.rank(1)
        );
    }
    if rerank {
        let t = Instant::now();
        let dist = rerank_features(&qf, &gf, Metric::Euclidean, RerankParams::default(), 1024)?;
        let t_rr = t.elapsed().as_secs_f64();
        let (m, _) = evaluate_distmat(&dist, &labels, DEFAULT_MAX_RANK, ApKind::Exact)?;
        println!(
            "re-ranking {queries} x {gallery} x {dim} Euclidean ({threads} threads): {t_rr:.2} s \
             (pairwise distances of all {} images included); peak RSS {:.2} GiB; mAP {:.3} R-1 {:.3}",
            queries + gallery,
            reid_process::status_mb("VmHWM:") / 1024.0,
            m.map,
            m.rank(1)
        );
    }
    Ok(())
}
