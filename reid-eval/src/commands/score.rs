//! `reid-eval score`: CMC / mAP / mINP of given features or a given distance matrix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use reid_data::datasets::market1501::parse_name;
use reid_eval::metrics::DEFAULT_MAX_RANK;
use reid_eval::rerank::rerank_distances;
use reid_eval::{evaluate_distmat, ApKind, Labels, Metric};
use reid_model::checkpoint::read_safetensors;

use super::{print_metrics, RerankArgs};

/// Score given features (query and gallery files) or a given distance matrix.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Query features: tensor `features` [N, D], plus `pids` and `camids` tensors or
    /// Market-1501-style file names in the `files` metadata (as `extract` writes them).
    #[arg(long, requires = "gallery", conflicts_with = "distmat")]
    query: Option<PathBuf>,
    /// Gallery features, as --query.
    #[arg(long, requires = "query")]
    gallery: Option<PathBuf>,
    /// A distance matrix file with tensors distmat, q_pids, g_pids, q_camids, g_camids.
    #[arg(long)]
    distmat: Option<PathBuf>,
    /// Distance between features.
    #[arg(long, value_enum, default_value = "euclidean")]
    metric: Metric,
    /// exact (torchreid) or market (the original Market-1501 code's interpolated AP).
    #[arg(long, value_enum, default_value = "exact")]
    ap: ApArg,
    /// Length of the CMC curve (1 to 1000: rank-1 needs a curve of at least one rank).
    #[arg(long, default_value_t = DEFAULT_MAX_RANK as u16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_rank: u16,
    /// Print JSON (fractions in [0, 1]) instead of the table.
    #[arg(long)]
    json: bool,
    /// With --distmat, re-ranking also needs tensors distmat_qq and distmat_gg.
    #[command(flatten)]
    rerank: RerankArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ApArg {
    Exact,
    Market,
}

impl From<ApArg> for ApKind {
    fn from(a: ApArg) -> Self {
        match a {
            ApArg::Exact => ApKind::Exact,
            ApArg::Market => ApKind::Market,
        }
    }
}

fn int_vec(path: &Path, tensors: &HashMap<String, Tensor>, key: &str) -> Result<Vec<i64>> {
    let t = tensors
        .get(key)
        .with_context(|| format!("{}: no tensor '{key}'", path.display()))?;
    if t.dtype().is_float() {
        // identities and cameras are integers: 0.7 must not quietly become 0
        let v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        if let Some((i, x)) = v
            .iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite() || x.fract() != 0.0)
        {
            // shown as stored (an f32 0.7 is not printed as 0.699999988…)
            let shown = if t.dtype() == DType::F64 {
                x.to_string()
            } else {
                (*x as f32).to_string()
            };
            bail!(
                "{}: tensor '{key}' holds {shown} at index {i}: expected integer labels",
                path.display()
            );
        }
    }
    Ok(t.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?)
}

/// Features and labels of a feature file.
fn load_feature_file(path: &Path) -> Result<(Tensor, Vec<i64>, Vec<i64>)> {
    let f = read_safetensors(path, &Device::Cpu)?;
    let feats = f
        .tensors
        .get("features")
        .with_context(|| {
            format!(
                "{}: no tensor 'features' (write it with `reid-eval extract`)",
                path.display()
            )
        })?
        .clone();
    reid_model::checkpoint::check_finite(path, "features", &feats)?;
    // [N, D] with D ≥ 1: features of no dimensions would score every pair as equal
    match feats.dims() {
        [_, d] if *d > 0 => {}
        dims => bail!(
            "{}: tensor 'features' has shape {dims:?}; expected [N, D] with D ≥ 1 (one feature \
             row per image)",
            path.display()
        ),
    }
    let n = feats.dim(0)?;
    let (pids, cams) = if f.tensors.contains_key("pids") {
        (
            int_vec(path, &f.tensors, "pids")?,
            int_vec(path, &f.tensors, "camids")?,
        )
    } else {
        let names: Vec<String> = match f.metadata.get("files") {
            Some(s) => serde_json::from_str(s).with_context(|| {
                format!("{}: metadata 'files' is not a JSON list", path.display())
            })?,
            None => bail!(
                "{}: no 'pids'/'camids' tensors and no 'files' metadata to read identities from",
                path.display()
            ),
        };
        let mut pids = Vec::with_capacity(names.len());
        let mut cams = Vec::with_capacity(names.len());
        for name in &names {
            let (p, c) = parse_name(name).with_context(|| {
                format!(
                    "{}: file name '{name}' is not of the form PPPP_cC..._.jpg (Market-1501 naming)",
                    path.display()
                )
            })?;
            pids.push(p);
            cams.push(c);
        }
        (pids, cams)
    };
    if pids.len() != n || cams.len() != n {
        bail!(
            "{}: {n} feature rows but {} pids and {} camids",
            path.display(),
            pids.len(),
            cams.len()
        );
    }
    Ok((feats, pids, cams))
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        query,
        gallery,
        distmat,
        metric,
        ap,
        max_rank,
        json,
        rerank,
    } = a;
    let max_rank = usize::from(max_rank);
    let metrics = match (query, gallery, distmat) {
        (Some(q), Some(g), None) => {
            let (qf, q_pids, q_camids) = load_feature_file(&q)?;
            let (gf, g_pids, g_camids) = load_feature_file(&g)?;
            let labels = Labels {
                q_pids,
                q_camids,
                g_pids,
                g_camids,
            };
            reid_eval::evaluate_query_gallery(
                &qf,
                &gf,
                &labels,
                metric,
                rerank.params(),
                max_rank,
                ap.into(),
            )
            .with_context(|| format!("scoring {} against {}", q.display(), g.display()))?
        }
        (None, None, Some(d)) => {
            let f = read_safetensors(&d, &Device::Cpu)?;
            let labels = Labels {
                q_pids: int_vec(&d, &f.tensors, "q_pids")?,
                q_camids: int_vec(&d, &f.tensors, "q_camids")?,
                g_pids: int_vec(&d, &f.tensors, "g_pids")?,
                g_camids: int_vec(&d, &f.tensors, "g_camids")?,
            };
            let dm = f
                .tensors
                .get("distmat")
                .with_context(|| format!("{}: no tensor 'distmat'", d.display()))?;
            let (nq, ng) = dm
                .dims2()
                .with_context(|| format!("{}: distmat must be 2-D", d.display()))?;
            if (nq, ng) != (labels.q_pids.len(), labels.g_pids.len()) {
                bail!(
                    "{}: distmat is {nq}x{ng} but there are {} query and {} gallery pids",
                    d.display(),
                    labels.q_pids.len(),
                    labels.g_pids.len()
                );
            }
            let to_vec = |t: &Tensor| -> Result<Vec<f32>> {
                let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    bail!(
                        "{}: a distance is {} at flat index {i}: expected finite distances",
                        d.display(),
                        v[i]
                    );
                }
                Ok(v)
            };
            let mut flat = to_vec(dm)?;
            if let Some(p) = rerank.params() {
                let get = |k: &str| {
                    f.tensors.get(k).with_context(|| {
                        format!(
                            "{}: --rerank needs tensor '{k}' (query×query and gallery×gallery distances)",
                            d.display()
                        )
                    })
                };
                let (qq, gg) = (to_vec(get("distmat_qq")?)?, to_vec(get("distmat_gg")?)?);
                flat = rerank_distances(&flat, &qq, &gg, nq, ng, p)
                    .with_context(|| format!("re-ranking {}", d.display()))?;
            }
            evaluate_distmat(&flat, &labels, max_rank, ap.into())
                .with_context(|| format!("scoring {}", d.display()))?
                .0
        }
        _ => bail!("give either --query and --gallery, or --distmat"),
    };
    print_metrics(&metrics, json)?;
    Ok(())
}
