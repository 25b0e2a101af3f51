//! Per-layer sensitivity (`sensitivity.json` of `reid-prune sensitivity`) as a table: each
//! prunable conv's mAP and rank-1 change on held-out identities when it alone is pruned, at
//! each ratio, in points against the unpruned network.

use std::path::Path;

use reid_run::sensitivity::Sensitivity;

use crate::runs::Problem;
use crate::tables::Table;

/// One table per `sensitivity.json` under `root`; unreadable ones are named in `problems`.
pub fn sensitivity_tables(root: &Path, problems: &mut Vec<Problem>) -> Vec<Table> {
    let files = match crate::runs::find_files(root, reid_run::sensitivity::SENSITIVITY_FILE) {
        Ok(f) => f,
        Err(e) => {
            problems.push(Problem {
                path: root.to_path_buf(),
                message: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut tables = Vec::new();
    for file in files {
        match Sensitivity::read(&file) {
            Ok(s) => {
                let id = file
                    .parent()
                    .and_then(|d| d.strip_prefix(root).ok())
                    .map(|d| d.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| ".".into());
                tables.push(table(&id, &s));
            }
            Err(e) => problems.push(Problem {
                path: file.clone(),
                message: e.to_string(),
            }),
        }
    }
    tables
}

/// A layer a row, a column per ratio: Δ mAP and Δ rank-1 in points.
pub fn table(id: &str, s: &Sensitivity) -> Table {
    let mut headers = vec!["layer".to_string(), "width".to_string()];
    for r in &s.config.ratios {
        headers.push(format!("{:.0} % cut: ΔmAP", r * 100.0));
        headers.push(format!("{:.0} % cut: ΔR-1", r * 100.0));
    }
    let rows = s
        .layers
        .iter()
        .map(|l| {
            let mut row = vec![Some(l.conv.clone()), Some(l.width.to_string())];
            for p in &l.points {
                row.push(Some(format!("{:+.1}", 100.0 * (p.map - s.unpruned.map))));
                row.push(Some(format!(
                    "{:+.1}",
                    100.0 * (p.rank1 - s.unpruned.rank1)
                )));
            }
            row
        })
        .collect();
    Table {
        slug: format!("sensitivity_{id}").replace('/', "_"),
        title: format!(
            "Per-layer sensitivity of {} ({}), each layer pruned alone by {}",
            s.config.checkpoint.display(),
            id,
            s.config.criterion
        ),
        note: Some(format!(
            "Evaluated without retraining on {} queries of {} held-out training identities of {} \
             (never its test split; identities the model may have trained on: read the change, \
             not the level). Unpruned: mAP {:.1} %, rank-1 {:.1} %. Changes in points.",
            s.queries,
            s.held_out_ids.len(),
            s.config.dataset,
            100.0 * s.unpruned.map,
            100.0 * s.unpruned.rank1
        )),
        headers,
        rows,
    }
}
