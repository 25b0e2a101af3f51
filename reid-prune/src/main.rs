//! `reid-prune`: the command-line entry point.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use reid_model::complexity::{complexity, parse_hw};
use reid_model::{load_checkpoint, ArchSpec, Neck};
use reid_prune::flops;

reid_model::use_fast_allocator!();

#[derive(Parser)]
#[command(
    name = "reid-prune",
    version,
    about = "Prune ResNet re-ID models and reproduce the paper's tables"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: the default experiment on the synthetic benchmark.
    #[command(flatten)]
    default: DefaultArgs,
}

#[derive(clap::Args, Debug)]
struct DefaultArgs {
    /// The same grid with fewer images and epochs (about 5 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Where the data and run folders go (default runs/default, or runs/quick with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Decoded + augmented training images per second (P×K batches, prefetching loader).
    Bench {
        #[arg(long, default_value = "market1501")]
        dataset: String,
        #[arg(long)]
        root: PathBuf,
        /// Network input HEIGHTxWIDTH.
        #[arg(long, default_value = "256x128")]
        input: reid_run::InputSize,
        /// Batches to time.
        #[arg(long, default_value_t = 40)]
        batches: usize,
    },
    /// Images, identities and cameras per split of a dataset.
    Stats {
        /// market1501, dukemtmc-reid, cuhk03-np[-labeled|-detected], msmt17 or imagefolder.
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        root: PathBuf,
        /// Decode every image; fail on the first corrupt one.
        #[arg(long)]
        verify: bool,
        /// With --verify: count corrupt images as skipped instead of failing.
        #[arg(long, requires = "verify")]
        skip_bad_images: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LayoutArg {
    Market,
    Imagefolder,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// A TOML run config (every field optional; see `config.toml` in any run folder).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum)]
    task: Option<reid_model::train::Task>,
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    root: Option<PathBuf>,
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    width_mult: Option<f64>,
    /// HEIGHTxWIDTH
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    #[arg(long)]
    epochs: Option<usize>,
    /// PxK identities x images per batch (re-ID).
    #[arg(long)]
    batch_pk: Option<reid_run::PkBatch>,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu or cuda:N
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    out: Option<PathBuf>,
    /// ImageNet weights: hub id (timm/resnet50.tv_in1k) or .safetensors path.
    #[arg(long)]
    pretrained: Option<String>,
    /// Start from a reid-prune checkpoint.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue from the run folder's last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Add the center loss on the pooled feature with this weight (Bag of Tricks: 0.0005).
    #[arg(long)]
    center_loss: Option<f64>,
    /// Train the head only (BNNeck and classifier); the backbone's learning rate is 0.
    #[arg(long)]
    freeze_backbone: bool,
    /// With --resume: continue although the config differs from the run folder's config.toml
    /// (refused otherwise, naming the changed fields).
    #[arg(long)]
    allow_config_change: bool,
    /// Checkpoint inside an epoch when this many seconds passed since the last checkpoint
    /// (default 300): a crash in a long epoch loses minutes, not the epoch.
    #[arg(long)]
    checkpoint_interval: Option<f64>,
}

#[derive(clap::Args, Debug)]
struct PruneArgs {
    /// A reid-prune checkpoint, or torchvision/timm weights with --arch.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    arch: Option<String>,
    /// The pruning method: a criterion (cut, then retrain) or a training-time method.
    #[arg(long, value_parser = method_values())]
    criterion: String,
    /// Fraction of the target to remove, in (0, 1): 0.5 halves the FLOPs.
    #[arg(long, default_value_t = 0.5)]
    level: f64,
    #[arg(long, value_enum, default_value = "flops")]
    target: reid_prune::strategy::TargetKind,
    #[arg(long, value_enum, default_value = "layerwise")]
    allocation: reid_prune::strategy::Allocation,
    /// Minimum kept fraction of each layer's width.
    #[arg(long, default_value_t = 1.0 / 16.0)]
    floor: f64,
    /// Also prune the residual streams (each stage's block outputs with its downsample and
    /// every reader), not only the convs inside the blocks.
    #[arg(long)]
    residual_groups: bool,
    #[arg(long, default_value = "256x128")]
    input: reid_run::InputSize,
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    root: Option<PathBuf>,
    /// A batch file (tensors x, labels) for data-driven criteria.
    #[arg(long)]
    batch: Option<PathBuf>,
    /// Iterative pruning: remove the level in steps of this size (e.g. 0.05).
    #[arg(long)]
    step: Option<f64>,
    #[arg(long, default_value_t = 0)]
    retrain_epochs: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment grid (scenarios x criteria x levels, with baselines) from a TOML file.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// List an experiment grid's steps (key, parents, state) without running anything.
    Plan {
        #[arg(long)]
        config: PathBuf,
        /// One JSON object a step, one per line, instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Prune a model's filters for real (prune once or iteratively) and write a run folder.
    Prune(PruneArgs),
    /// Per-channel importance scores of the prunable convs.
    Scores {
        /// A reid-prune checkpoint or torchvision/timm weights.
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        arch: Option<String>,
        /// A criterion, or a training-time method (its ranking criterion is scored).
        #[arg(long, value_parser = method_values())]
        criterion: String,
        /// Only this conv (e.g. layer3.2.conv2).
        #[arg(long)]
        layer: Option<String>,
        /// Tensors x (and labels) for data-driven criteria.
        #[arg(long)]
        batch: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Train a re-ID model (or a source classifier) and write a run folder.
    Train(TrainArgs),
    /// Generate a synthetic re-ID domain as real JPEG files (Market-1501 layout or imagefolder).
    Synth {
        #[arg(long)]
        out: PathBuf,
        /// Domain name: domains differ in palettes and camera styles (e.g. source, target, target-b).
        #[arg(long, default_value = "target")]
        domain: String,
        #[arg(long, default_value_t = 100)]
        ids: usize,
        #[arg(long, default_value_t = 6)]
        cams: usize,
        /// Images per identity and camera.
        #[arg(long, default_value_t = 4)]
        per_cam: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "market")]
        layout: LayoutArg,
        /// Image HEIGHTxWIDTH.
        #[arg(long, default_value = "256x128")]
        size: String,
        /// 0 (easy) to 1 (hard): look-alike identities, occlusion, pose, noise.
        #[arg(long, default_value_t = 0.5)]
        difficulty: f32,
        /// Also write a sample grid (identities x cameras) to this PNG.
        #[arg(long)]
        grid: Option<PathBuf>,
    },
    /// Dataset utilities.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// MACs, FLOPs and parameters of an architecture or checkpoint, per layer and in total.
    Flops {
        /// resnet18, resnet34, resnet50, resnet101 or resnet152.
        #[arg(long, default_value = "resnet50", conflicts_with = "checkpoint")]
        arch: String,
        /// A reid-prune checkpoint (its architecture is read from the file).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Input HEIGHTxWIDTH.
        #[arg(long, default_value = "256x128")]
        input: reid_run::InputSize,
        /// Width multiplier for --arch.
        #[arg(long, default_value_t = 1.0)]
        width_mult: f64,
        /// Classifier outputs for --arch (0 = feature extractor only).
        #[arg(long, default_value_t = 0)]
        num_classes: usize,
        /// Last stride for --arch (1 or 2).
        #[arg(long, default_value_t = 1)]
        last_stride: usize,
        /// Print one row per layer.
        #[arg(long)]
        layers: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    reid_model::process::default_sigpipe();
    reid_model::alloc::configure();
    let cli = Cli::parse();
    match cli.command {
        None => {
            let out = cli.default.out.unwrap_or_else(|| {
                PathBuf::from(if cli.default.quick {
                    "runs/quick"
                } else {
                    "runs/default"
                })
            });
            let cfg = reid_prune::default_run::default_experiment(&out, cli.default.quick)?;
            run_experiment(cfg)
        }
        Some(Command::Run { config }) => {
            let cfg: reid_prune::scenario::ExperimentConfig =
                reid_prune::config_file::read_toml(&config, "experiment config")?;
            run_experiment(cfg)
        }
        Some(Command::Plan { config, json }) => {
            let cfg: reid_prune::scenario::ExperimentConfig =
                reid_prune::config_file::read_toml(&config, "experiment config")?;
            plan_experiment(cfg, json)
        }
        Some(Command::Prune(a)) => {
            let cfg = reid_prune::prune_run::PruneConfig {
                checkpoint: a.checkpoint,
                arch: a.arch,
                criterion: a.criterion,
                level: a.level,
                target: a.target,
                allocation: a.allocation,
                floor: a.floor,
                residual_groups: a.residual_groups,
                input: a.input,
                dataset: a.dataset,
                root: a.root,
                batch: a.batch,
                step: a.step,
                retrain_epochs: a.retrain_epochs,
                device: a.device,
                seed: a.seed,
                out: a.out,
                ..Default::default()
            };
            let o = reid_prune::prune_run::run_prune(&cfg, true)?;
            println!(
                "backbone GFLOPs {:.3} -> {:.3} ({:.1}%), params {:.2} M -> {:.2} M, {:.1}% of prunable channels kept",
                2.0 * o.macs_before as f64 / 1e9,
                2.0 * o.macs_after as f64 / 1e9,
                100.0 * o.macs_after as f64 / o.macs_before as f64,
                o.params_before as f64 / 1e6,
                o.params_after as f64 / 1e6,
                100.0 * o.kept_channel_fraction
            );
            println!("pruned model: {}", o.model.display());
            Ok(())
        }
        Some(Command::Scores {
            weights,
            arch,
            criterion,
            layer,
            batch,
            json,
        }) => {
            let (net, _) =
                reid_prune::prune_run::load_any(&weights, arch.as_deref(), &Device::Cpu)?;
            let net = net.inference_copy()?;
            let mut layers = net.prunable_convs();
            if let Some(l) = &layer {
                layers.retain(|p| &p.conv == l);
                anyhow::ensure!(
                    !layers.is_empty(),
                    "unknown layer '{l}': give a prunable conv such as layer1.0.conv1"
                );
            }
            let method = reid_prune::method::method(&criterion)?;
            let crit = (method.criterion().build)(0);
            if method.ranks_by != method.name {
                eprintln!(
                    "{criterion} acts while retraining; these are the scores it ranks channels by: {}",
                    method.ranks_by
                );
            }
            let data = match &batch {
                Some(b) => {
                    let f = reid_model::checkpoint::read_safetensors(b, &Device::Cpu)?;
                    let x = f
                        .tensors
                        .get("x")
                        .with_context(|| format!("{}: no tensor 'x'", b.display()))?
                        .clone();
                    Some(reid_prune::criterion::ScoreData {
                        batches: vec![(x, f.tensors.get("labels").cloned())],
                    })
                }
                None => None,
            };
            if crit.needs_data() && data.is_none() {
                anyhow::bail!("criterion '{criterion}' needs data: give --batch B.safetensors (tensors x and labels)");
            }
            let scores = crit.scores(&net, &layers, data.as_ref())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "criterion": criterion, "scored_by": method.ranks_by, "layers": scores })
                );
            } else {
                for (l, s) in &scores {
                    let order = reid_prune::criterion::rank_ascending(s);
                    println!(
                        "{l}: {} channels, least important first: {:?}",
                        s.len(),
                        &order[..order.len().min(8)]
                    );
                }
            }
            Ok(())
        }
        Some(Command::Train(args)) => train(args),
        Some(Command::Synth {
            out,
            domain,
            ids,
            cams,
            per_cam,
            seed,
            layout,
            size,
            difficulty,
            grid,
        }) => {
            let (h, w) = parse_hw(&size)?;
            let cfg = reid_data::synth::SynthConfig {
                domain,
                ids,
                cams,
                per_cam,
                seed,
                height: h as u32,
                width: w as u32,
                difficulty,
                layout: match layout {
                    LayoutArg::Market => reid_data::synth::SynthLayout::Market,
                    LayoutArg::Imagefolder => reid_data::synth::SynthLayout::ImageFolder,
                },
            };
            cfg.validate()?;
            let pb = indicatif::ProgressBar::new(0);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "synth {msg} [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}",
                )?
                .progress_chars("=> "),
            );
            pb.set_message(cfg.domain.clone());
            let start = std::time::Instant::now();
            let total = reid_data::synth::planned_images(&cfg);
            pb.set_length(total as u64);
            let summary = reid_data::synth::generate(&cfg, &out, |n| pb.inc(n as u64))
                .with_context(|| format!("generating into {}", out.display()))?;
            pb.finish_and_clear();
            println!(
                "{} images of {} identities ({:?} layout, domain '{}') in {:.1} s -> {}",
                summary.images,
                summary.ids,
                cfg.layout,
                cfg.domain,
                start.elapsed().as_secs_f64(),
                out.display()
            );
            if let Some(g) = grid {
                reid_data::synth::sample_grid(&cfg, 6.min(cfg.ids))?
                    .save(&g)
                    .with_context(|| format!("writing {}", g.display()))?;
                println!("sample grid -> {}", g.display());
            }
            Ok(())
        }
        Some(Command::Data {
            command:
                DataCommand::Bench {
                    dataset,
                    root,
                    input,
                    batches,
                },
        }) => {
            use reid_data::loader::{epoch_batches, Augment, Prefetcher, Sampling};
            let (h, w) = input.hw();
            let ds = reid_data::datasets::load(&dataset, &root)?;
            let train = std::sync::Arc::new(ds.train);
            let mut plan = epoch_batches(&train, Sampling::IdentityPk { p: 16, k: 4 }, 0, 0)?;
            plan.truncate(batches);
            let n: usize = plan.iter().map(Vec::len).sum();
            let start = std::time::Instant::now();
            let pre = reid_data::Preprocess::imagenet(h, w);
            for b in Prefetcher::start(train, plan, 0, pre, Augment::default(), 0, 0, 4) {
                b?;
            }
            let s = start.elapsed().as_secs_f64();
            println!(
                "{n} images decoded + augmented (flip, pad+crop, erasing) at {h}x{w} in {s:.2} s: {:.0} images/s ({} threads)",
                n as f64 / s,
                rayon::current_num_threads()
            );
            Ok(())
        }
        Some(Command::Data {
            command:
                DataCommand::Stats {
                    dataset,
                    root,
                    verify,
                    skip_bad_images,
                    json,
                },
        }) => {
            let mut ds = reid_data::datasets::load(&dataset, &root)?;
            let st = reid_data::datasets::stats(&mut ds, verify, skip_bad_images)?;
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                println!("{} at {}", ds.name, ds.root.display());
                println!("{:<8} {:>8} {:>6} {:>6}", "split", "images", "ids", "cams");
                for (name, s) in [
                    ("train", st.train),
                    ("query", st.query),
                    ("gallery", st.gallery),
                ] {
                    println!("{:<8} {:>8} {:>6} {:>6}", name, s.images, s.ids, s.cams);
                }
                if verify {
                    println!("skipped (corrupt): {}", st.skipped);
                }
            }
            Ok(())
        }
        Some(Command::Flops {
            arch,
            checkpoint,
            input,
            width_mult,
            num_classes,
            last_stride,
            layers,
            json,
        }) => {
            let (h, w) = input.hw();
            let spec = match &checkpoint {
                Some(p) => load_checkpoint(p, &Device::Cpu, false)
                    .with_context(|| format!("reading checkpoint {}", p.display()))?
                    .net
                    .spec()
                    .clone(),
                None => {
                    let depth = ArchSpec::from_name(&arch, 0)?.depth;
                    ArchSpec::resnet_with(
                        depth,
                        num_classes,
                        width_mult,
                        last_stride,
                        Neck::BnNeck,
                    )?
                }
            };
            let c = complexity(&spec, h, w)?;
            if checkpoint.is_some() && !json {
                print!("{}", flops::render_widths(&spec)?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&flops::to_json(&c))?);
            } else {
                print!("{}", flops::render(&c, layers));
            }
            Ok(())
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    use reid_prune::training::{run_training, RunConfig};
    let mut cfg: RunConfig = match &a.config {
        Some(p) => reid_prune::config_file::read_toml(p, "run config")?,
        None => RunConfig::default(),
    };
    if let Some(v) = a.task {
        cfg.train.task = v;
    }
    if let (Some(init), Some(arch)) = (&a.init, &a.arch) {
        // an explicit --arch must agree with the checkpoint it starts from
        let held = reid_model::checkpoint::read_arch_spec(init)
            .with_context(|| format!("--init {}", init.display()))?;
        let want = reid_model::ArchSpec::from_name(arch, 0)?;
        if want.depth != held.depth {
            anyhow::bail!(
                "--arch {arch} given, but --init {} holds a {}",
                init.display(),
                held.name()
            );
        }
    }
    macro_rules! set {
        ($($f:ident => $field:expr),*) => { $(if let Some(v) = a.$f { $field = v; })* };
    }
    set!(dataset => cfg.dataset, root => cfg.root, arch => cfg.arch, width_mult => cfg.width_mult,
         input => cfg.input, epochs => cfg.train.epochs, batch_pk => cfg.batch_pk, seed => cfg.seed,
         device => cfg.device, out => cfg.out, center_loss => cfg.train.center_loss_weight,
         checkpoint_interval => cfg.checkpoint_interval_s);
    if a.freeze_backbone {
        cfg.train.backbone_lr_mult = 0.0;
    }
    cfg.allow_config_change = a.allow_config_change;
    if a.pretrained.is_some() {
        cfg.pretrained = a.pretrained;
    }
    if a.init.is_some() {
        cfg.init_checkpoint = a.init;
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        ctrlc::set_handler(move || {
            eprintln!(
                "\ninterrupt: saving a checkpoint at the end of this batch (Ctrl-C again to kill)"
            );
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })?;
    }
    let outcome = run_training(&cfg, a.resume, interrupt, true)?;
    if !outcome.completed {
        println!(
            "stopped; checkpoint in {} (continue with --resume)",
            cfg.out.display()
        );
        return Ok(());
    }
    println!(
        "trained {} epochs in {:.1} s; final loss {:.4}",
        outcome.epochs, outcome.wall_s, outcome.final_loss
    );
    if let Some(m) = &outcome.metrics {
        print!("{}", reid_eval::report::table(m));
    }
    println!("run folder: {}", cfg.out.display());
    Ok(())
}

/// The pruning methods of the registry, with their descriptions, as the CLI's values.
fn method_values() -> clap::builder::PossibleValuesParser {
    reid_prune::method::methods()
        .into_iter()
        .map(|m| clap::builder::PossibleValue::new(m.name).help(m.about))
        .collect::<Vec<_>>()
        .into()
}

fn plan_experiment(all: reid_prune::scenario::ExperimentConfig, json: bool) -> Result<()> {
    use reid_prune::scenario::{Runner, StepState};
    all.validate()
        .with_context(|| format!("experiment '{}'", all.name))?;
    let shared_steps = all.out.join("steps");
    let mut seen = std::collections::HashSet::new();
    let mut steps = Vec::new();
    for cfg in all.per_target() {
        let plan = Runner::new(cfg)?
            .with_steps_dir(shared_steps.clone())
            .plan()?;
        steps.extend(plan.into_iter().filter(|s| seen.insert(s.name.clone())));
    }
    let mut out = std::io::stdout().lock();
    for s in &steps {
        if json {
            writeln!(out, "{}", serde_json::to_string(s)?)?;
        } else {
            writeln!(
                out,
                "{:<8} {:<25} {:<32} {}",
                format!("{:?}", s.state).to_lowercase(),
                s.name,
                s.what,
                s.parents.join(" ")
            )?;
        }
    }
    if !json {
        let n = |st: StepState| steps.iter().filter(|s| s.state == st).count();
        writeln!(
            out,
            "{} steps: {} done, {} started, {} pending (folders under {})",
            steps.len(),
            n(StepState::Done),
            n(StepState::Started),
            n(StepState::Pending),
            shared_steps.display()
        )?;
    }
    Ok(())
}

fn run_experiment(all: reid_prune::scenario::ExperimentConfig) -> Result<()> {
    all.validate()
        .with_context(|| format!("experiment '{}'", all.name))?;
    // every target's data before the first grid runs, not after it
    all.check_inputs()
        .with_context(|| format!("experiment '{}'", all.name))?;
    let grids = all.per_target();
    let shared_steps = all.out.join("steps");
    for cfg in grids {
        let start = std::time::Instant::now();
        let cross = cfg.cross.as_ref().map(|c| c.label().to_string());
        let mut runner =
            reid_prune::scenario::Runner::new(cfg.clone())?.with_steps_dir(shared_steps.clone());
        let cells = runner.run()?;
        let table = reid_prune::scenario::render_table(&cells, cross.as_deref());
        reid_model::checkpoint::write_atomic(&cfg.out.join("summary.txt"), table.as_bytes())?;
        println!(
            "\n{} on {} ({}), mAP and R-1 in %{}; speed-up = measured batch-32 latency of the first row / this row:",
            cfg.name,
            cfg.target.label(),
            cfg.input,
            cross
                .as_deref()
                .map(|c| format!(", cross-domain R-1 on {c}"))
                .unwrap_or_default()
        );
        print!("{table}");
        println!(
            "\n{} steps run, {} reused, {:.0} s. Run folders: {}/<scenario>/<criterion>-<level>/ (summary.txt there too)",
            runner.steps_run,
            runner.steps_reused,
            start.elapsed().as_secs_f64(),
            cfg.out.display()
        );
    }
    Ok(())
}
