//! All runs as one polars DataFrame (one row per run and evaluated dataset), written as
//! `results.csv` and `results.parquet`.

use crate::runs::Run;
use crate::tables::speedup;
use polars::prelude::*;

/// Settings of a run's `config.toml` that the metrics do not repeat, through the contract's type.
pub use reid_run::config::RecordedSettings as RunConfig;

/// Reads `config.toml` beside the metrics; a missing file is `None`, a malformed one an error
/// naming the field.
pub fn read_config(run: &Run) -> Result<Option<RunConfig>, String> {
    let path = run.dir.join(reid_run::metrics::CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read: {e}"))?;
    RunConfig::from_toml(&text).map(Some)
}

/// One row of the results: a run on one of its evaluated datasets (or none).
struct Row<'a> {
    runs: &'a [Run],
    run: &'a Run,
    cfg: &'a RunConfig,
    dataset: Option<&'a String>,
    entry: Option<&'a reid_run::EvalEntry>,
}

impl Row<'_> {
    fn m(&self) -> &reid_run::RunMetrics {
        &self.run.metrics
    }
    /// A cost that depends on the input size: none for an evaluation at another size than the
    /// run's (its MACs and latency are at the run's own size).
    fn at_size<T>(&self, v: Option<T>) -> Option<T> {
        v.filter(|_| self.entry.and_then(|e| e.input).is_none())
    }
    fn train(&self) -> reid_run::TrainSummary {
        self.m().train.clone().unwrap_or_default()
    }
}

/// A column of results.csv: its name and how a row gives its value. Adding a column is one
/// line of [`COLUMNS`].
enum ResultColumn {
    Str(&'static str, fn(&Row) -> Option<String>),
    U64(&'static str, fn(&Row) -> Option<u64>),
    F64(&'static str, fn(&Row) -> Option<f64>),
    I64(&'static str, fn(&Row) -> Option<i64>),
}

/// The columns in file order.
const COLUMNS: &[ResultColumn] = &[
    ResultColumn::Str("run", |r| Some(r.run.id.clone())),
    ResultColumn::Str("experiment", |r| Some(r.m().experiment.clone())),
    ResultColumn::Str("target_dataset", |r| r.m().target_dataset.clone()),
    ResultColumn::Str("scenario", |r| Some(r.m().scenario.clone())),
    ResultColumn::Str("criterion", |r| Some(r.m().criterion.clone())),
    ResultColumn::Str("level", |r| Some(r.m().level.clone())),
    ResultColumn::Str("backbone", |r| Some(r.m().backbone.clone())),
    ResultColumn::Str("dataset", |r| r.dataset.cloned()),
    // an evaluation at another size than the run's is at its own size
    ResultColumn::Str("input", |r| {
        r.entry
            .and_then(|e| e.input)
            .map(|i| i.to_string())
            .or(r.cfg.input.map(|i| i.to_string()))
    }),
    ResultColumn::Str("device", |r| r.cfg.device.map(|d| d.to_string())),
    ResultColumn::U64("macs", |r| r.at_size(Some(r.m().macs))),
    ResultColumn::U64("params", |r| Some(r.m().params)),
    ResultColumn::U64("num_valid_queries", |r| {
        r.entry.and_then(|e| e.num_valid_queries)
    }),
    ResultColumn::U64("epochs", |r| r.train().epochs),
    ResultColumn::F64("gflops", |r| r.at_size(Some(r.run.gflops()))),
    ResultColumn::F64("params_m", |r| Some(r.run.params_m())),
    ResultColumn::F64("kept_channel_fraction", |r| r.m().kept_channel_fraction),
    ResultColumn::F64("latency_b1_ms", |r| r.at_size(r.run.latency(false))),
    ResultColumn::F64("latency_b32_ms", |r| r.at_size(r.run.latency(true))),
    ResultColumn::F64("speedup_b32", |r| r.at_size(speedup(r.runs, r.run))),
    ResultColumn::F64("mAP", |r| r.entry.map(|e| e.map)),
    ResultColumn::F64("rank1", |r| r.entry.map(|e| e.rank1)),
    ResultColumn::F64("rank5", |r| r.entry.and_then(|e| e.rank5)),
    ResultColumn::F64("rank10", |r| r.entry.and_then(|e| e.rank10)),
    ResultColumn::F64("mINP", |r| r.entry.and_then(|e| e.minp)),
    ResultColumn::F64("train_wall_s", |r| r.train().wall_s),
    ResultColumn::F64("final_loss", |r| r.train().final_loss),
    ResultColumn::F64("width_mult", |r| r.cfg.width_mult),
    ResultColumn::F64("rank20", |r| r.entry.and_then(|e| e.cmc.get(19).copied())),
    ResultColumn::F64("rank50", |r| r.entry.and_then(|e| e.cmc.get(49).copied())),
    ResultColumn::I64("seed", |r| r.cfg.seed.and_then(|s| i64::try_from(s).ok())),
];

pub fn results_frame(runs: &[Run], configs: &[Option<RunConfig>]) -> PolarsResult<DataFrame> {
    let configs: Vec<RunConfig> = configs
        .iter()
        .map(|c| c.clone().unwrap_or_default())
        .collect();
    let mut rows = Vec::new();
    for (run, cfg) in runs.iter().zip(&configs) {
        let m = &run.metrics;
        let datasets: Vec<Option<&String>> = if m.eval.is_empty() {
            vec![None]
        } else {
            m.eval.keys().map(Some).collect()
        };
        for dataset in datasets {
            rows.push(Row {
                runs,
                run,
                cfg,
                dataset,
                entry: dataset.and_then(|d| m.eval.get(d)),
            });
        }
    }
    let cols: Vec<Column> = COLUMNS
        .iter()
        .map(|c| match c {
            ResultColumn::Str(n, get) => {
                Column::new((*n).into(), rows.iter().map(get).collect::<Vec<_>>())
            }
            ResultColumn::U64(n, get) => {
                Column::new((*n).into(), rows.iter().map(get).collect::<Vec<_>>())
            }
            ResultColumn::F64(n, get) => {
                Column::new((*n).into(), rows.iter().map(get).collect::<Vec<_>>())
            }
            ResultColumn::I64(n, get) => {
                Column::new((*n).into(), rows.iter().map(get).collect::<Vec<_>>())
            }
        })
        .collect();
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
