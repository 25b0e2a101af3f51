//! `reid-eval`: feature extraction, scoring of features or distance matrices, and a speed bench.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use reid_data::datasets::market1501::parse_name;
use reid_data::{list_images, Preprocess};
use reid_eval::metrics::DEFAULT_MAX_RANK;
use reid_eval::rerank::{rerank_distances, rerank_features, RerankParams};
use reid_eval::{
    evaluate_distmat, evaluate_features, extract_features, load_model_for_inference, report,
    save_features, ApKind, FeatureKind, Labels, Metric, Metrics,
};
use reid_model::checkpoint::read_safetensors;

reid_model::use_fast_allocator!();

#[derive(Parser)]
#[command(
    name = "reid-eval",
    version,
    about = "Re-ID feature extraction and evaluation"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    eval: EvalArgs,
}

/// `reid-eval --checkpoint F --dataset NAME --root DIR`: extract, evaluate, write metrics.json.
#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// A reid-prune checkpoint (or torchvision/timm weights).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Dataset to evaluate on (may differ from the training one: cross-domain).
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    root: Option<PathBuf>,
    /// Network input HEIGHTxWIDTH.
    #[arg(long, default_value = "256x128")]
    input: reid_run::InputSize,
    /// Add the features of the horizontally flipped image.
    #[arg(long)]
    flip: bool,
    #[arg(long, value_enum, default_value = "neck")]
    feature: FeatureKind,
    #[arg(long, value_enum, default_value = "cosine")]
    metric: Metric,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where to write metrics.json (default: beside the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rerank: RerankArgs,
}

/// k-reciprocal re-ranking (Zhong et al. 2017).
#[derive(clap::Args, Debug, Clone, Copy)]
struct RerankArgs {
    /// Re-rank the query × gallery distances (k-reciprocal encoding).
    #[arg(long)]
    rerank: bool,
    #[arg(long, default_value_t = 20)]
    k1: usize,
    #[arg(long, default_value_t = 6)]
    k2: usize,
    #[arg(long, default_value_t = 0.3)]
    lambda: f32,
}

impl RerankArgs {
    fn params(self) -> Option<RerankParams> {
        self.rerank.then_some(RerankParams {
            k1: self.k1,
            k2: self.k2,
            lambda: self.lambda,
        })
    }
}

/// The metrics.json to merge into, if there is one: it must be a valid one (checked before the
/// long extraction, and never silently replaced); otherwise the error names it.
fn existing_metrics(path: &std::path::Path) -> Result<Option<reid_run::RunMetrics>> {
    if !path.exists() {
        return Ok(None);
    }
    let m = reid_run::metrics::read_metrics(path)
        .context("fix or move it (results are merged into it)")?;
    Ok(Some(m))
}

fn evaluate_checkpoint(a: EvalArgs) -> Result<()> {
    let (Some(ck), Some(name), Some(root)) = (a.checkpoint, a.dataset, a.root) else {
        bail!("give --checkpoint, --dataset and --root (or a subcommand: extract, score, bench; see --help)");
    };
    let device = reid_model::device::parse_device(&a.device)?;
    let (h, w) = a.input.hw();
    let net = load_model_for_inference(&ck, None, 2, &device)
        .with_context(|| format!("loading {}", ck.display()))?;
    let ds = reid_data::datasets::load(&name, &root)?;
    let pre = Preprocess::imagenet(h, w);
    let opts = reid_eval::EvalOptions {
        feature: a.feature,
        flip: a.flip,
        metric: a.metric,
        rerank: a.rerank.params(),
    };
    // An existing metrics.json is merged into, so it must be one we can merge into: checked
    // before the (long) extraction, and never silently replaced.
    let out = a.out.unwrap_or_else(|| ck.with_file_name("metrics.json"));
    let existing = existing_metrics(&out)?;
    let m = reid_eval::evaluate_dataset(&net, &ds, &pre, opts, true)?;
    // Re-ranked results sit beside the plain ones, under their own key.
    let key = if a.rerank.rerank {
        format!("{}+rerank", ds.name)
    } else {
        ds.name.clone()
    };
    let mut doc = match existing {
        Some(doc) => doc,
        None => {
            // a new run folder's metrics: the model's complexity at this input
            let c = reid_model::complexity::complexity(net.spec(), h, w)?;
            reid_run::RunMetrics {
                backbone: net.spec().name(),
                macs: c.backbone.macs,
                params: c.backbone.params,
                tool_version: Some(env!("CARGO_PKG_VERSION").into()),
                ..Default::default()
            }
        }
    };
    doc.eval.insert(key.clone(), m.eval_entry());
    reid_run::metrics::write_metrics(&out, &doc)?;
    // per-query results beside it: any interval can be recomputed without the model
    let folder = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    reid_run::RunFolder::new(folder).write_per_query(&key, &m.per_query)?;
    print_metrics(&m, a.json)?;
    if !a.json {
        println!("metrics -> {}", out.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Extract one feature per image of a folder into a safetensors file.
    Extract {
        /// Weights: a reid-prune checkpoint, or torchvision/timm ResNet weights (.safetensors).
        #[arg(long)]
        weights: PathBuf,
        /// Expected architecture (checked against the file), e.g. resnet50.
        #[arg(long)]
        arch: Option<String>,
        /// Folder of images (sorted by file name).
        #[arg(long)]
        images: PathBuf,
        /// Output file (tensor `features`, N × D f32; file names in the metadata).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "pool")]
        feature: FeatureKind,
        /// Network input HEIGHTxWIDTH; other image sizes are resized.
        #[arg(long, default_value = "256x128")]
        input: reid_run::InputSize,
        /// Last stride of plain ImageNet weights (their files do not record it).
        #[arg(long, default_value_t = 2)]
        last_stride: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// cpu or cuda:N
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Score given features (query and gallery files) or a given distance matrix.
    Score {
        /// Query features: tensor `features` [N, D], plus `pids` and `camids` tensors or
        /// Market-1501-style file names in the `files` metadata (as `extract` writes them).
        #[arg(long, requires = "gallery", conflicts_with = "distmat")]
        query: Option<PathBuf>,
        #[arg(long, requires = "query")]
        gallery: Option<PathBuf>,
        /// A distance matrix file with tensors distmat, q_pids, g_pids, q_camids, g_camids.
        #[arg(long)]
        distmat: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "euclidean")]
        metric: Metric,
        /// exact (torchreid) or market (the original Market-1501 code's interpolated AP).
        #[arg(long, value_enum, default_value = "exact")]
        ap: ApArg,
        #[arg(long, default_value_t = DEFAULT_MAX_RANK)]
        max_rank: usize,
        /// Print JSON (fractions in [0, 1]) instead of the table.
        #[arg(long)]
        json: bool,
        /// With --distmat, re-ranking also needs tensors distmat_qq and distmat_gg.
        #[command(flatten)]
        rerank: RerankArgs,
    },
    /// Time distance + CMC + mAP + mINP on random features at Market-1501 scale.
    Bench {
        #[arg(long, default_value_t = 3368)]
        queries: usize,
        #[arg(long, default_value_t = 15913)]
        gallery: usize,
        #[arg(long, default_value_t = 2048)]
        dim: usize,
        #[arg(long, default_value_t = 751)]
        ids: usize,
        /// Also time k-reciprocal re-ranking (k1 20, k2 6, λ 0.3) at this scale.
        #[arg(long)]
        rerank: bool,
        /// Only the blockwise evaluation (bounded memory), e.g. at MSMT17 scale:
        /// `bench --queries 11659 --gallery 82161 --ids 3060 --blockwise-only`.
        #[arg(long)]
        blockwise_only: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ApArg {
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

fn print_metrics(m: &Metrics, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(&report::json(m))?);
    } else {
        print!("{}", report::table(m));
    }
    Ok(())
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

/// Peak resident memory of this process (Linux), for the bench's memory figure.
fn peak_rss_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / (1024.0 * 1024.0))
}

fn main() -> Result<()> {
    reid_model::process::default_sigpipe();
    reid_model::alloc::configure();
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        return evaluate_checkpoint(cli.eval);
    };
    match command {
        Command::Extract {
            weights,
            arch,
            images,
            out,
            feature,
            input,
            last_stride,
            batch_size,
            device,
        } => {
            let device = reid_model::device::parse_device(&device)?;
            let (h, w) = input.hw();
            let net = load_model_for_inference(&weights, arch.as_deref(), last_stride, &device)
                .with_context(|| format!("loading weights {}", weights.display()))?;
            let paths = list_images(&images)?;
            anyhow::ensure!(
                !paths.is_empty(),
                "{}: no images found (jpg, png, bmp, webp)",
                images.display()
            );
            let feats = extract_features(
                &net,
                &paths,
                &Preprocess::imagenet(h, w),
                batch_size,
                feature,
                true,
            )?;
            let names: Vec<String> = paths
                .iter()
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect();
            save_features(&out, &feats, &names, feature)?;
            println!(
                "{} features of dim {} ({:?}, {}) -> {}",
                names.len(),
                feats.dim(1)?,
                feature,
                net.spec().name(),
                out.display()
            );
        }
        Command::Score {
            query,
            gallery,
            distmat,
            metric,
            ap,
            max_rank,
            json,
            rerank,
        } => {
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
        }
        Command::Bench {
            queries,
            gallery,
            dim,
            ids,
            rerank,
            blockwise_only,
        } => {
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
                    peak_rss_gib().unwrap_or(f64::NAN),
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
                let dist =
                    rerank_features(&qf, &gf, Metric::Euclidean, RerankParams::default(), 1024)?;
                let t_rr = t.elapsed().as_secs_f64();
                let (m, _) = evaluate_distmat(&dist, &labels, DEFAULT_MAX_RANK, ApKind::Exact)?;
                println!(
                    "re-ranking {queries} x {gallery} x {dim} Euclidean ({threads} threads): {t_rr:.2} s \
                     (pairwise distances of all {} images included); peak RSS {:.2} GiB; mAP {:.3} R-1 {:.3}",
                    queries + gallery,
                    peak_rss_gib().unwrap_or(f64::NAN),
                    m.map,
                    m.rank(1)
                );
            }
        }
    }
    Ok(())
}
