//! All runs as one polars DataFrame (one row per run and evaluated dataset), written as
//! `results.csv` and `results.parquet`.

use crate::runs::Run;
use crate::tables::speedup;
use polars::prelude::*;

/// Settings of a run's `config.toml` that the metrics do not repeat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunConfig {
    pub input: Option<String>,
    pub seed: Option<i64>,
    pub width_mult: Option<f64>,
    pub device: Option<String>,
}

/// Reads `config.toml` beside the metrics; a missing file is `None`, a malformed one an error.
pub fn read_config(run: &Run) -> Result<Option<RunConfig>, String> {
    let path = run.dir.join("config.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read: {e}"))?;
    let v: toml::Table = text.parse().map_err(|e| format!("not TOML: {e}"))?;
    Ok(Some(RunConfig {
        input: v.get("input").and_then(|x| x.as_str()).map(String::from),
        seed: v.get("seed").and_then(|x| x.as_integer()),
        width_mult: v
            .get("width_mult")
            .and_then(|x| x.as_float().or_else(|| x.as_integer().map(|i| i as f64))),
        device: v.get("device").and_then(|x| x.as_str()).map(String::from),
    }))
}

pub fn results_frame(runs: &[Run], configs: &[Option<RunConfig>]) -> PolarsResult<DataFrame> {
    let mut s: Vec<Vec<Option<String>>> = vec![Vec::new(); 10];
    let mut f: Vec<Vec<Option<f64>>> = vec![Vec::new(); 16];
    let mut i: Vec<Vec<Option<u64>>> = vec![Vec::new(); 4];
    let mut seeds: Vec<Option<i64>> = Vec::new();
    for (run, cfg) in runs.iter().zip(configs) {
        let m = &run.metrics;
        let datasets: Vec<Option<&String>> = if m.eval.is_empty() {
            vec![None]
        } else {
            m.eval.keys().map(Some).collect()
        };
        for d in datasets {
            let e = d.and_then(|d| m.eval.get(d));
            let cfg = cfg.clone().unwrap_or_default();
            // an evaluation at another size than the run's: its own size, and none of the
            // run's costs that depend on the size
            let other = e.and_then(|e| e.input);
            let at_size = |v: Option<f64>| v.filter(|_| other.is_none());
            for (col, v) in s.iter_mut().zip([
                Some(run.id.clone()),
                Some(m.experiment.clone()),
                m.target_dataset.clone(),
                Some(m.scenario.clone()),
                Some(m.criterion.clone()),
                Some(m.level.clone()),
                Some(m.backbone.clone()),
                d.cloned(),
                other.map(|i| i.to_string()).or(cfg.input.clone()),
                cfg.device.clone(),
            ]) {
                col.push(v);
            }
            let train = m.train.clone().unwrap_or_default();
            for (col, v) in f.iter_mut().zip([
                at_size(Some(run.gflops())),
                Some(run.params_m()),
                m.kept_channel_fraction,
                at_size(run.latency(false)),
                at_size(run.latency(true)),
                at_size(speedup(runs, run)),
                e.map(|e| e.map),
                e.map(|e| e.rank1),
                e.and_then(|e| e.rank5),
                e.and_then(|e| e.rank10),
                e.and_then(|e| e.minp),
                train.wall_s,
                train.final_loss,
                cfg.width_mult,
                e.and_then(|e| e.cmc.get(19).copied()),
                e.and_then(|e| e.cmc.get(49).copied()),
            ]) {
                col.push(v);
            }
            for (col, v) in i.iter_mut().zip([
                Some(m.macs).filter(|_| other.is_none()),
                Some(m.params),
                e.and_then(|e| e.num_valid_queries),
                train.epochs,
            ]) {
                col.push(v);
            }
            seeds.push(cfg.seed);
        }
    }
    let s_names = [
        "run",
        "experiment",
        "target_dataset",
        "scenario",
        "criterion",
        "level",
        "backbone",
        "dataset",
        "input",
        "device",
    ];
    let f_names = [
        "gflops",
        "params_m",
        "kept_channel_fraction",
        "latency_b1_ms",
        "latency_b32_ms",
        "speedup_b32",
        "mAP",
        "rank1",
        "rank5",
        "rank10",
        "mINP",
        "train_wall_s",
        "final_loss",
        "width_mult",
        "rank20",
        "rank50",
    ];
    let i_names = ["macs", "params", "num_valid_queries", "epochs"];
    let mut cols: Vec<Column> = Vec::new();
    for (n, v) in s_names.iter().zip(s) {
        cols.push(Column::new((*n).into(), v));
    }
    for (n, v) in i_names.iter().zip(i) {
        cols.push(Column::new((*n).into(), v));
    }
    for (n, v) in f_names.iter().zip(f) {
        cols.push(Column::new((*n).into(), v));
    }
    cols.push(Column::new("seed".into(), seeds));
    DataFrame::new_infer_height(cols)
}

/// The frame as CSV, every text cell [`crate::tables::csv_safe`] (run and experiment names are
/// the user's: one starting with `=` must not become a formula in a spreadsheet).
pub fn to_csv(df: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    let mut safe = df.clone();
    for c in df.columns() {
        if c.dtype() == &DataType::String {
            let cells: Vec<Option<String>> = c
                .str()?
                .iter()
                .map(|v| v.map(|v| crate::tables::csv_safe(v).into_owned()))
                .collect();
            safe.with_column(Column::new(c.name().clone(), cells))?;
        }
    }
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).finish(&mut safe)?;
    Ok(buf)
}

pub fn to_parquet(df: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(df)?;
    Ok(buf)
}
