//! `reid-eval --checkpoint F --dataset NAME --root DIR`: extract, evaluate, merge into metrics.json.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use reid_data::Preprocess;
use reid_eval::{FeatureKind, Metric};

use super::{print_metrics, RerankArgs};

/// `reid-eval --checkpoint F --dataset NAME --root DIR`: extract, evaluate, write metrics.json.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A reid-prune checkpoint (or torchvision/timm weights).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Dataset to evaluate on (may differ from the training one: cross-domain).
    #[arg(long)]
    dataset: Option<String>,
    /// The dataset's folder.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Network input HEIGHTxWIDTH (default: the size the model was trained at, from its
    /// header or the config.toml beside it; 256x128 when neither says). Another size than the
    /// trained one is stored under its own key, `<dataset>@HxW`.
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// Add the features of the horizontally flipped image.
    #[arg(long)]
    flip: bool,
    /// The feature to compare: neck (after BNNeck, the default at test time) or pool.
    #[arg(long, value_enum, default_value = "neck")]
    feature: FeatureKind,
    /// Distance between features.
    #[arg(long, value_enum, default_value = "cosine")]
    metric: Metric,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    device: reid_run::DeviceSpec,
    /// Where to write metrics.json (default: beside the checkpoint, when it is that folder's
    /// model.safetensors; another checkpoint's results are only printed without --out).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON (fractions in [0, 1]) instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rerank: RerankArgs,
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

/// The input size the model at `ck` was trained at: its provenance, else the run config beside
/// it (`input = "HxW"`), else unknown.
pub(crate) fn trained_input(
    ck: &std::path::Path,
    prov: &reid_model::checkpoint::Provenance,
) -> Option<reid_run::InputSize> {
    prov.input.or_else(|| {
        let text =
            std::fs::read_to_string(reid_run::folder_of(ck).join(reid_run::metrics::CONFIG_FILE))
                .ok()?;
        reid_run::config::RecordedSettings::from_toml(&text)
            .ok()?
            .input
    })
}

/// Where the results go, decided before the (long) extraction: a folder's metrics.json belongs
/// to that folder's model, so another checkpoint's results never go into it.
enum Destination {
    /// `metrics.json` (and per_query.json beside it), with what it holds so far.
    File(PathBuf, Option<Box<reid_run::RunMetrics>>),
    /// Printed only: a checkpoint that is not its folder's model, without --out.
    Stdout(String),
}

/// The run config in `folder` (config.toml) as a plain table, when there is a readable one.
fn config_beside(folder: &std::path::Path) -> Option<toml::Table> {
    toml::from_str(&std::fs::read_to_string(folder.join("config.toml")).ok()?).ok()
}

/// The dataset a run folder's config says it trained on (`dataset`, `root`), when it says.
fn trained_data(folder: &std::path::Path) -> Option<(String, PathBuf)> {
    let table = config_beside(folder)?;
    let root = PathBuf::from(table.get("root")?.as_str()?);
    Some((table.get("dataset")?.as_str()?.to_string(), root))
}

fn destination(
    ck: &std::path::Path,
    out: Option<PathBuf>,
    backbone: &str,
    params: u64,
    data: (&str, &std::path::Path),
) -> Result<Destination> {
    let explicit = out.is_some();
    let out = out.unwrap_or_else(|| ck.with_file_name("metrics.json"));
    let folder = reid_run::folder_of(&out);
    if out.is_dir() {
        bail!(
            "--out {}: is a folder; expected the metrics file to write, e.g. {}",
            out.display(),
            out.join("metrics.json").display()
        );
    }
    let model = folder.join("model.safetensors");
    if !explicit && ck.file_name().is_some_and(|n| n != "model.safetensors") && !model.is_file() {
        // a loose checkpoint: its folder is no run of it
        return Ok(Destination::Stdout(format!(
            "{} is not a run folder's model.safetensors: results printed only (give --out to \
             keep them)",
            ck.display()
        )));
    }
    if model.is_file() {
        let same = reid_run::file_sha256(&model)
            .with_context(|| format!("reading {}", model.display()))?
            == reid_run::file_sha256(ck).with_context(|| format!("reading {}", ck.display()))?;
        if !same {
            let why = format!(
                "{} is not {} (another model): its results do not belong in {}",
                ck.display(),
                model.display(),
                out.display()
            );
            if explicit {
                bail!("{why}; give --out in another folder");
            }
            return Ok(Destination::Stdout(format!(
                "{why}; printed only (give --out in another folder to keep them)"
            )));
        }
    }
    // an unfinished training (interrupted, resumable): its metrics.json is written when it
    // ends, and one written now would mark the folder as a finished run
    let state = folder.join("trainer_state.safetensors");
    if model.is_file() && state.is_file() && !folder.join("metrics.json").is_file() {
        let why = format!(
            "{} holds an unfinished training ({} but no metrics.json yet): its results are not \
             recorded there; finish it with `reid-prune train --resume`",
            folder.display(),
            state.display()
        );
        if explicit {
            bail!("{why}, or give --out in another folder");
        }
        return Ok(Destination::Stdout(format!("{why}; printed only")));
    }
    let existing = existing_metrics(&out)?;
    // the run's own dataset name on other data: its entry would describe other images
    if let Some((name, root)) = trained_data(folder) {
        let same = |a: &std::path::Path, b: &std::path::Path| {
            a.canonicalize()
                .ok()
                .zip(b.canonicalize().ok())
                .is_some_and(|(a, b)| a == b)
        };
        // By content where the run recorded it: config.toml's root is as the run was given it
        // (relative to where it started), so comparing paths from here can take other images
        // for the run's own. Runs from before that record compare the paths.
        let recorded = existing
            .as_ref()
            .and_then(|m| m.data.get(reid_run::metrics::TRAIN_DATA));
        let other_data = name == data.0
            && match recorded {
                Some(fp) => {
                    let given = reid_data::datasets::load(data.0, data.1)
                        .and_then(|ds| reid_data::datasets::fingerprint(&ds))
                        .with_context(|| format!("reading --root {}", data.1.display()))?;
                    &given != fp
                }
                None => !same(&root, data.1),
            };
        if other_data {
            let why = format!(
                "--root {} is not the data the run in {} was trained on (its config.toml: \
                 dataset = \"{name}\", root = {}{}): its \"{name}\" entry would describe \
                 other images",
                data.1.display(),
                folder.display(),
                root.display(),
                if recorded.is_some() {
                    "; its metrics.json records the listed images' fingerprint, and these differ"
                } else {
                    ""
                }
            );
            if explicit {
                bail!("{why}; give --out in another folder");
            }
            return Ok(Destination::Stdout(format!("{why}; printed only")));
        }
    }
    if let Some(m) = &existing {
        // a file of another model's results (by content, where it records one)
        if let Some(recorded) = m.model_sha256.as_deref().filter(|_| !model.is_file()) {
            let this =
                reid_run::file_sha256(ck).with_context(|| format!("reading {}", ck.display()))?;
            if recorded != this {
                bail!(
                    "{} holds the results of another model (sha256 {}…), and {} is not it \
                     (sha256 {}…): results of two models do not go into one file; give --out \
                     elsewhere",
                    out.display(),
                    &recorded[..recorded.len().min(12)],
                    ck.display(),
                    &this[..this.len().min(12)]
                );
            }
        }
        // parameters, not MACs: they do not depend on the input size, which may be unknown
        if m.backbone != backbone || m.params != params {
            bail!(
                "{} describes a {} of {} parameters, and {} is a {backbone} of {params}: \
                 results of another model do not go into it; give --out elsewhere",
                out.display(),
                m.backbone,
                m.params,
                ck.display()
            );
        }
    }
    Ok(Destination::File(out, existing.map(Box::new)))
}

pub fn run(a: Args) -> Result<()> {
    let (Some(ck), Some(name), Some(root)) = (a.checkpoint, a.dataset, a.root) else {
        bail!("give --checkpoint, --dataset and --root (or a subcommand: extract, score, bench; see --help)");
    };
    let device = reid_model::device::open_device(a.device)?;
    let loaded = reid_model::load_weights(&ck, &reid_model::LoadOptions::inference(2), &device)
        .with_context(|| format!("loading {}", ck.display()))?;
    let net = loaded.net;
    let trained = trained_input(&ck, &loaded.provenance);
    let input = a
        .input
        .or(trained)
        .unwrap_or(reid_run::InputSize::new(256, 128));
    let (h, w) = input.hw();
    // the record's complexity is the model's at the size it was trained at
    let (th, tw) = trained.unwrap_or(input).hw();
    let c = reid_model::complexity::complexity(net.spec(), th, tw)?;
    // batches of 64 images: refused before extraction when they cannot fit
    reid_model::complexity::check_fits(
        &reid_model::complexity::complexity(net.spec(), h, w)?,
        64,
        false,
    )
    .with_context(|| format!("--input {input}"))?;
    let dest = destination(
        &ck,
        a.out,
        &net.spec().name(),
        c.backbone.params,
        (name.as_str(), root.as_path()),
    )?;
    // one writer a run folder while this one writes into it
    let _lock = match &dest {
        Destination::File(out, _) => Some(reid_run::lock::claim_folder(
            reid_run::folder_of(out),
            "reid-eval",
        )?),
        Destination::Stdout(_) => None,
    };
    let ds = reid_data::datasets::load(&name, &root)?;
    let pre = Preprocess::imagenet(h, w);
    let opts = reid_eval::EvalOptions {
        feature: a.feature,
        flip: a.flip,
        metric: a.metric,
        rerank: a.rerank.params(),
    };
    let m = reid_eval::evaluate_dataset(&net, &ds, &pre, opts, true)?;
    let (out, existing) = match dest {
        Destination::File(out, existing) => (out, existing),
        Destination::Stdout(why) => {
            eprintln!("{why}");
            print_metrics(&m, a.json)?;
            return Ok(());
        }
    };
    // Re-ranked results sit beside the plain ones, and results at another size than the
    // trained one under their own key: the trained size's entry is never replaced by them.
    // every option that changes the numbers is part of the entry's name, so an evaluation
    // under other options never replaces the default one
    let mut key = ds.name.clone();
    let mut entry = m.eval_entry();
    if trained.is_some_and(|t| t != input) {
        key = format!("{key}@{input}");
        entry.input = Some(input);
    }
    if a.flip {
        key += "+flip";
    }
    if a.feature != FeatureKind::Neck {
        key += &format!("+{}", format!("{:?}", a.feature).to_lowercase());
    }
    if a.metric != Metric::Cosine {
        key += &format!("+{}", format!("{:?}", a.metric).to_lowercase());
    }
    if let Some(r) = a.rerank.params() {
        key += "+rerank";
        if r != reid_eval::rerank::RerankParams::default() {
            key += &format!("(k1={},k2={},lambda={})", r.k1, r.k2, r.lambda);
        }
    }
    let mut doc = match existing {
        Some(doc) => *doc,
        None => reid_run::RunMetrics {
            backbone: net.spec().name(),
            macs: c.backbone.macs,
            params: c.backbone.params,
            tool_version: Some(env!("CARGO_PKG_VERSION").into()),
            // a file outside the model's own run folder names the model it describes
            model_sha256: (!reid_run::folder_of(&out)
                .join("model.safetensors")
                .is_file())
            .then(|| reid_run::file_sha256(&ck))
            .transpose()
            .with_context(|| format!("reading {}", ck.display()))?,
            ..Default::default()
        },
    };
    doc.eval.insert(key.clone(), entry);
    reid_run::metrics::write_metrics(&out, &doc)?;
    // per-query results beside it: any interval can be recomputed without the model
    let folder = reid_run::folder_of(&out);
    // ... only beside a folder's metrics.json: the folder's per_query.json goes with that file,
    // and results written elsewhere must not change it
    if out.file_name().is_some_and(|n| n == "metrics.json") {
        let run = reid_run::RunFolder::new(folder);
        run.write_per_query(&key, &m.per_query)?;
        run.write_ranks(&key, &reid_eval::dataset_eval::ranks_of(&m, &ds))?;
    } else {
        eprintln!(
            "per-query results and ranked lists not stored: they go beside a metrics.json (--out {} has another \
             name)",
            out.display()
        );
    }
    print_metrics(&m, a.json)?;
    if !a.json {
        println!("metrics -> {}", out.display());
    }
    Ok(())
}
