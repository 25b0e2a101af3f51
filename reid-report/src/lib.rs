//! reid-report: reads run folders (`metrics.json`, `config.toml`, `per_query.json`,
//! `ranks.json`, the `reid.arch` of `model.safetensors`) and writes the paper's tables and
//! figures, the claims' verdict matrix and what pruning changed query by query (ranked lists
//! drawn by `reid-data`). No tensor library: run folders are the only interface (their format
//! and types: the `reid-run` crate).

pub mod changes;
pub mod claims;
pub mod figures;
pub mod frame;
pub mod html;
pub mod matrix_figure;
pub mod paper;
pub mod runs;
pub mod sensitivity;
pub mod tables;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Runs(#[from] runs::RunsError),
    /// Every run folder was skipped: why, each (the same lines a report lists when some remain).
    #[error("no usable metrics.json under {0} ({n} skipped){list}", n = .1.len(), list = skipped_list(.1))]
    NoRuns(PathBuf, Vec<runs::Problem>),
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
    /// A selector (`--level`, `--cmc`) that names nothing in the runs.
    #[error("{flag} {value}: no run has it; the runs have {known}")]
    Selector {
        flag: &'static str,
        value: String,
        known: String,
    },
}

#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Level of Tables 5 and 6 and of the default CMC curves; `None` = the first level found.
    pub level: Option<String>,
    /// Run ids (folders relative to the runs root) for the CMC figure; empty = default choice.
    pub cmc_runs: Vec<String>,
    pub title: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            level: None,
            cmc_runs: Vec::new(),
            title: "reid-prune report".into(),
        }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct ReportSummary {
    pub runs: usize,
    pub problems: Vec<runs::Problem>,
    pub files: Vec<PathBuf>,
}

/// [`reid_run::write_atomic`], with the report's error.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    reid_run::write_atomic(path, bytes).map_err(|e| ReportError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One path component made safe: names in reports come from run folders' metrics (dataset keys,
/// levels), so anything but letters, digits, '-', '_' and '.' becomes '_', and no component is
/// empty or starts with '.' (no "..", no hidden files).
pub fn safe_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

fn skipped_list(problems: &[runs::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  skipped {p}"))
        .collect()
}

/// The files a report wrote in its `--out`, one path relative to it a line: the next report
/// into the folder removes those it does not write again (a table or figure of a dataset no
/// longer in the runs), and nothing else.
pub const MANIFEST: &str = ".report-files";

/// Whether `line` of a [`MANIFEST`] names a file of the kinds a report writes: `index.html`,
/// `results.csv`/`.parquet`, `tables.md`, `tables/<slug>.md`/`.csv`, `figures/<slug>.svg`/`.png`.
/// Anything else (a user's file, `..`, an absolute path, a deeper path) is never removed.
fn report_file_name(line: &str) -> bool {
    let safe = |c: &str| !c.is_empty() && safe_component(c) == c;
    let ext = |c: &str, exts: &[&str]| {
        c.rsplit_once('.')
            .is_some_and(|(stem, e)| !stem.is_empty() && exts.contains(&e))
    };
    match line.split('/').collect::<Vec<_>>()[..] {
        [f] => ["index.html", "results.csv", "results.parquet", "tables.md"].contains(&f),
        ["tables", f] => safe(f) && ext(f, &["md", "csv"]),
        ["figures", f] => safe(f) && ext(f, &["svg", "png"]),
        _ => false,
    }
}

/// Remove what the earlier report listed in [`MANIFEST`] and this one did not write, then list
/// this one's. Only names a report writes ([`report_file_name`]) are removed, and only as
/// plain files in `out` itself or in its own `tables/` and `figures/` folders (not through a
/// symbolic link to a folder elsewhere).
fn remove_earlier_files(out: &Path, files: &[PathBuf]) -> Result<(), ReportError> {
    let manifest = out.join(MANIFEST);
    if let Ok(old) = std::fs::read_to_string(&manifest) {
        for line in old.lines().filter(|l| report_file_name(l)) {
            let p = line.split('/').fold(out.to_path_buf(), |p, c| p.join(c));
            let real_folder = p.parent().is_some_and(|d| {
                d == out || std::fs::symlink_metadata(d).is_ok_and(|m| m.file_type().is_dir())
            });
            let plain_file = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file());
            if real_folder && plain_file && !files.contains(&p) {
                std::fs::remove_file(&p).map_err(|e| ReportError::Write {
                    path: p.clone(),
                    message: format!("cannot remove the earlier report's file: {e}"),
                })?;
            }
        }
    }
    let list: String = files
        .iter()
        .filter_map(|p| p.strip_prefix(out).ok())
        .map(|r| {
            r.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
                + "\n"
        })
        .collect();
    write_atomic(&manifest, list.as_bytes())
}

pub fn write_report(
    runs_dir: &Path,
    out: &Path,
    opts: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let (runs, mut problems) = runs::load_runs(runs_dir)?;
    if runs.is_empty() {
        return Err(ReportError::NoRuns(runs_dir.to_path_buf(), problems));
    }
    // selectors that name nothing are refused before anything is written (a report without the
    // asked-for level or curve would look complete)
    let levels = tables::levels(&runs);
    if let Some(l) = &opts.level {
        if !levels.contains(l) {
            return Err(ReportError::Selector {
                flag: "--level",
                value: l.clone(),
                known: if levels.is_empty() {
                    "no pruning level: none is a cell of a scenario grid (S1–S4); leave --level out"
                        .into()
                } else {
                    levels.join(", ")
                },
            });
        }
    }
    if let Some(c) = opts
        .cmc_runs
        .iter()
        .find(|c| !runs.iter().any(|r| &r.id == *c))
    {
        let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        ids.truncate(8);
        return Err(ReportError::Selector {
            flag: "--cmc",
            value: c.clone(),
            known: format!("run ids such as {}", ids.join(", ")),
        });
    }
    // one report writes a folder at a time: two into one `--out` left a mix of both
    let _lock =
        reid_run::lock::claim_folder(out, "reid-report").map_err(|e| ReportError::Write {
            path: out.to_path_buf(),
            message: e.message(),
        })?;
    let mut files = Vec::new();
    let mut put = |rel: &str, bytes: &[u8]| -> Result<(), ReportError> {
        // every component sanitised: nothing lands outside `out`
        let p = rel
            .split('/')
            .fold(out.to_path_buf(), |p, c| p.join(safe_component(c)));
        write_atomic(&p, bytes)?;
        files.push(p);
        Ok(())
    };

    let configs: Vec<Option<frame::RunConfig>> = runs
        .iter()
        .map(|r| {
            frame::read_config(r).unwrap_or_else(|message| {
                problems.push(runs::Problem {
                    path: r.dir.join(reid_run::metrics::CONFIG_FILE),
                    message,
                });
                None
            })
        })
        .collect();
    let polars_err = |e: polars::prelude::PolarsError| ReportError::Write {
        path: out.join("results.*"),
        message: e.to_string(),
    };
    let mut df = frame::results_frame(&runs, &configs).map_err(polars_err)?;
    put("results.csv", &frame::to_csv(&mut df).map_err(polars_err)?)?;
    put(
        "results.parquet",
        &frame::to_parquet(&mut df).map_err(polars_err)?,
    )?;

    let level = opts
        .level
        .clone()
        .or_else(|| tables::levels(&runs).into_iter().next())
        .unwrap_or_else(|| "C1".into());
    let paper = paper::PaperResults::load();
    let mut tables = tables::all_tables(&runs, &paper, &level);
    // the claims open the report, the benchmark's own checks after them
    if let Some(b) = claims::benchmark_table(&runs) {
        tables.insert(0, b);
    }
    if let Some(c) = claims::claims_table(&runs, &level) {
        tables.insert(0, c);
    }
    // what pruning changed, query by query: after the claims, before the paper's tables
    let changes = changes::pruning_changes(&runs, &level, &mut problems);
    if let Some(t) = changes::changes_table(&changes, &level) {
        let at = tables
            .iter()
            .take_while(|t| ["claims", "benchmark"].contains(&t.slug.as_str()))
            .count();
        tables.insert(at, t);
    }
    // per-layer sensitivity records found beside the runs, after the paper's tables
    tables.extend(sensitivity::sensitivity_tables(runs_dir, &mut problems));
    // slugs name files and anchors: made safe once here, so files and links agree
    for t in &mut tables {
        t.slug = safe_component(&t.slug);
    }
    let matrix = claims::verdict_matrix(&runs, &level);
    let mut all_md = format!("# {}\n\n", opts.title);
    if let Some(m) = &matrix {
        let t = m.as_table();
        put(&format!("tables/{}.md", t.slug), t.to_markdown().as_bytes())?;
        put(&format!("tables/{}.csv", t.slug), t.to_csv().as_bytes())?;
        all_md += &t.to_markdown();
        all_md += "\n";
    }
    for t in &tables {
        put(&format!("tables/{}.md", t.slug), t.to_markdown().as_bytes())?;
        put(&format!("tables/{}.csv", t.slug), t.to_csv().as_bytes())?;
        all_md += &t.to_markdown();
        all_md += "\n";
    }
    put("tables.md", all_md.as_bytes())?;

    let mut figures = figures::all_figures(&runs, &level, &opts.cmc_runs);
    for f in &mut figures {
        f.slug = safe_component(&f.slug);
    }
    for f in &figures {
        let fig_err = |message: String| ReportError::Write {
            path: out.join("figures").join(&f.slug),
            message,
        };
        put(
            &format!("figures/{}.svg", f.slug),
            figures::render_svg(f).map_err(fig_err)?.as_bytes(),
        )?;
        put(
            &format!("figures/{}.png", f.slug),
            &figures::render_png(f).map_err(fig_err)?,
        )?;
    }
    for c in &changes {
        for p in &c.pictures {
            put(&format!("figures/{}.png", safe_component(&p.slug)), &p.png)?;
        }
    }
    if let Some(m) = &matrix {
        // the matrix as a figure for papers, beside the report's other figures
        let fig_err = |message: String| ReportError::Write {
            path: out.join("figures").join("verdicts"),
            message,
        };
        put(
            "figures/verdicts.svg",
            matrix_figure::render_svg(m).map_err(fig_err)?.as_bytes(),
        )?;
        put(
            "figures/verdicts.png",
            &matrix_figure::render_png(m).map_err(fig_err)?,
        )?;
    }
    let page = html::index_html(
        &opts.title,
        &runs_dir.display().to_string(),
        runs.len(),
        matrix.as_ref(),
        &tables,
        // the claims' every comparison, folded below their matrix
        if matrix.is_some() { &["claims"] } else { &[] },
        &figures,
        &changes,
        &problems,
    );
    put("index.html", page.as_bytes())?;
    remove_earlier_files(out, &files)?;
    Ok(ReportSummary {
        runs: runs.len(),
        problems,
        files,
    })
}
