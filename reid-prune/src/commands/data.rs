//! `reid-prune data`: dataset statistics and loader speed.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Decoded + augmented training images per second (P×K batches, prefetching loader).
    Bench {
        /// Dataset name.
        #[arg(long, default_value = "market1501")]
        dataset: String,
        /// The dataset's folder.
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
        /// The dataset's folder.
        #[arg(long)]
        root: PathBuf,
        /// Decode every image; fail on the first corrupt one.
        #[arg(long)]
        verify: bool,
        /// With --verify: count corrupt images as skipped instead of failing.
        #[arg(long, requires = "verify")]
        skip_bad_images: bool,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Bench {
            dataset,
            root,
            input,
            batches,
        } => {
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
        Command::Stats {
            dataset,
            root,
            verify,
            skip_bad_images,
            json,
        } => {
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
    }
}
