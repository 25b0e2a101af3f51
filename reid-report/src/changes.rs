//! What pruning changed: for each pruned cell of Scenario 1 at the report's level, the queries
//! of its target that the unpruned model of its experiment answers at rank 1 and it does not
//! (lost), and the reverse (gained), from the two cells' `per_query.json`; the first few of
//! each drawn as ranked lists (unpruned row above, pruned below) from their `ranks.json` and the
//! target's images.

use reid_data::ranklist::{draw_png, RankRow};
use reid_run::ranks::{flips, Flips, DEFAULT_TOP_K};
use reid_run::{RunFolder, Scenario};

use crate::runs::Run;
use crate::tables::Table;

/// Queries drawn of each kind (lost, gained) a cell.
pub const PICTURES_EACH: usize = 3;

/// One pruned cell against its unpruned model, on its target.
pub struct Changes {
    pub experiment: String,
    pub dataset: String,
    pub criterion: String,
    /// Run ids of the pruned cell and of the unpruned model.
    pub cell: String,
    pub unpruned: String,
    /// Queries both were evaluated on.
    pub queries: usize,
    /// The rank-1 flips; `None` when the two evaluations could not be compared (see `note`).
    pub flips: Option<Flips>,
    pub pictures: Vec<Picture>,
    /// Why some or all pictures are missing.
    pub note: Option<String>,
}

/// A query's ranked lists under both models.
pub struct Picture {
    /// File stem under `figures/`.
    pub slug: String,
    /// `lost` or `gained`.
    pub kind: &'static str,
    /// The query image, relative to the target's folder.
    pub query: String,
    pub png: Vec<u8>,
}

/// Every S1 cell at `level` with per-query results beside its experiment's unpruned model's. A
/// `per_query.json` that cannot be read is named in `problems` and its row says so.
pub fn pruning_changes(
    runs: &[Run],
    level: &str,
    problems: &mut Vec<crate::runs::Problem>,
) -> Vec<Changes> {
    let mut out = Vec::new();
    for cell in runs
        .iter()
        .filter(|r| r.scenario() == Some(Scenario::S1) && r.metrics.level == level)
    {
        let m = &cell.metrics;
        let Some(unpruned) = runs.iter().find(|r| {
            r.is_baseline()
                && r.metrics.experiment == m.experiment
                && r.metrics.backbone == m.backbone
        }) else {
            continue;
        };
        let Some(target) = cell_target(cell) else {
            continue;
        };
        let label = target.label().to_string();
        let mut c = Changes {
            experiment: m.experiment.clone(),
            dataset: label.clone(),
            criterion: m.criterion.clone(),
            cell: cell.id.clone(),
            unpruned: unpruned.id.clone(),
            queries: 0,
            flips: None,
            pictures: Vec::new(),
            note: None,
        };
        let mut per_query = |r: &Run| match RunFolder::new(&r.dir).read_per_query() {
            Ok(mut all) => all.remove(&label),
            Err(e) => {
                problems.push(crate::runs::Problem {
                    path: r.dir.join(reid_run::stats::PER_QUERY_FILE),
                    message: e.to_string(),
                });
                c.note = Some(format!("not compared: {}", e));
                None
            }
        };
        let (a, b) = (per_query(unpruned), per_query(cell));
        let (Some(a), Some(b)) = (a, b) else {
            if c.note.is_some() {
                out.push(c);
            }
            continue;
        };
        c.queries = a.len();
        match flips(&a, &b) {
            Ok(f) => c.flips = Some(f),
            Err(e) => {
                c.note = Some(format!("not compared: {e}"));
                out.push(c);
                continue;
            }
        }
        if let Err(why) = draw(
            &mut c,
            (unpruned, &a),
            (cell, &b),
            &label,
            target.root.as_deref(),
        ) {
            c.note = Some(format!("pictures left out: {why}"));
        }
        out.push(c);
    }
    out
}

/// The target a grid cell's `config.toml` names.
fn cell_target(cell: &Run) -> Option<reid_run::config::RecordedData> {
    let text = std::fs::read_to_string(cell.dir.join(reid_run::metrics::CONFIG_FILE)).ok()?;
    reid_run::config::RecordedExperiment::from_toml(&text)
        .ok()?
        .target
}

/// The first lost and gained queries of `c` as pictures, from each model's ranked lists when
/// they are of the same evaluation as its per-query results. A picture that cannot be drawn (an
/// image gone) is left out and the next one tried; the first such error is returned.
fn draw(
    c: &mut Changes,
    (unpruned, a_queries): (&Run, &reid_run::stats::PerQuery),
    (cell, b_queries): (&Run, &reid_run::stats::PerQuery),
    label: &str,
    root: Option<&std::path::Path>,
) -> Result<(), String> {
    let root = root.ok_or("the cell's config.toml names no target folder")?;
    let ranks = |r: &Run, q: &reid_run::stats::PerQuery| {
        let ranks = RunFolder::new(&r.dir)
            .read_ranks()
            .map_err(|e| e.to_string())?
            .remove(label)
            .ok_or_else(|| format!("{} has no ranked lists (ranks.json) of {label}", r.id))?;
        reid_run::ranks::check_against(&ranks, q)
            .map_err(|e| format!("{}: ranks.json is not of its per_query.json: {e}", r.id))?;
        Ok::<_, String>(ranks)
    };
    let (a, b) = (ranks(unpruned, a_queries)?, ranks(cell, b_queries)?);
    let Some(flips) = &c.flips else {
        return Ok(());
    };
    let stem = crate::safe_component(&c.cell.replace('/', "-"));
    let mut first_error = None;
    for (kind, queries) in [("lost", &flips.lost), ("gained", &flips.gained)] {
        let mut n = 0;
        for &q in queries {
            if n == PICTURES_EACH {
                break;
            }
            let rows = [
                RankRow::of(&a, q, DEFAULT_TOP_K),
                RankRow::of(&b, q, DEFAULT_TOP_K),
            ];
            match draw_png(root, &rows) {
                Ok(png) => {
                    n += 1;
                    c.pictures.push(Picture {
                        slug: format!("ranks-{stem}-{kind}-{n}"),
                        kind,
                        query: a.queries[q].file.clone(),
                        png,
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The counts as a table (one row a cell).
pub fn changes_table(changes: &[Changes], level: &str) -> Option<Table> {
    if changes.is_empty() {
        return None;
    }
    let several = changes
        .iter()
        .any(|c| c.experiment != changes[0].experiment);
    Some(Table {
        slug: "pruning-changes".into(),
        title: format!("What pruning changed: Scenario 1 at {level} against the unpruned model"),
        note: Some(
            "Per query of the target: lost = the unpruned model finds a true match at rank 1 and \
             the pruned one does not; gained = the reverse. Net = (gained − lost) / queries, the \
             change of rank-1 in points."
                .into(),
        ),
        headers: [
            "dataset",
            "criterion",
            "queries",
            "lost",
            "gained",
            "net Δ rank-1",
        ]
        .map(String::from)
        .to_vec(),
        rows: changes
            .iter()
            .map(|c| {
                let dataset = if several {
                    format!("{}: {}", c.experiment, c.dataset)
                } else {
                    c.dataset.clone()
                };
                let counts = match &c.flips {
                    Some(f) => {
                        let net = 100.0 * (f.gained.len() as f64 - f.lost.len() as f64)
                            / c.queries.max(1) as f64;
                        [
                            Some(f.lost.len().to_string()),
                            Some(f.gained.len().to_string()),
                            Some(format!("{net:+.1}")),
                        ]
                    }
                    // never zeros for what was not compared
                    None => [Some("not compared".into()), None, None],
                };
                let [lost, gained, net] = counts;
                vec![
                    Some(dataset),
                    Some(c.criterion.clone()),
                    Some(c.queries.to_string()),
                    lost,
                    gained,
                    net,
                ]
            })
            .collect(),
    })
}
