//! MSMT17: `list_{train,query,gallery}.txt` with lines `<relative path> <pid>`; images under
//! `train/` and `test/` (v1) or `mask_train_v2/` and `mask_test_v2/` (v2). The camera is the third
//! `_`-separated field of the file name (1–15).

use std::path::Path;

use super::{relabel, resolve_root, ReidDataset, Sample};
use crate::error::{DataError, Result};

fn parse_list(list: &Path, image_dir: &Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| DataError::file(list, format!("cannot read the list file: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            DataError::file(
                list,
                format!(
                    "line {}: '{line}': {why} (expected '<dir>/<pid>_<n>_<camera>_<...>.jpg <pid>')",
                    i + 1
                ),
            )
        };
        let (rel, pid) = line.rsplit_once(' ').ok_or_else(|| bad("no pid"))?;
        let pid: i64 = pid.trim().parse().map_err(|_| bad("pid is not a number"))?;
        let file = Path::new(rel)
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| bad("no file name"))?;
        let cam: i64 = file
            .split('_')
            .nth(2)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no camera field"))?;
        let path = image_dir.join(rel);
        if !path.is_file() {
            return Err(DataError::file(
                &path,
                format!("listed in {} line {} but missing", list.display(), i + 1),
            ));
        }
        out.push(Sample {
            path,
            pid,
            camid: cam - 1,
        });
    }
    Ok(out)
}

pub fn load(root: &Path) -> Result<ReidDataset> {
    let dir = resolve_root(
        root,
        &[
            "MSMT17_V1",
            "MSMT17_V2",
            "msmt17",
            "msmt17/MSMT17_V1",
            "msmt17/MSMT17_V2",
        ],
        "list_train.txt",
    )?;
    let (train_dir, test_dir) = if dir.join("mask_train_v2").is_dir() {
        (dir.join("mask_train_v2"), dir.join("mask_test_v2"))
    } else {
        (dir.join("train"), dir.join("test"))
    };
    for d in [&train_dir, &test_dir] {
        if !d.is_dir() {
            return Err(DataError::file(d, "MSMT17 image folder not found (train/ and test/, or mask_train_v2/ and mask_test_v2/)"));
        }
    }
    let mut train = parse_list(&dir.join("list_train.txt"), &train_dir)?;
    relabel(&mut train);
    Ok(ReidDataset {
        name: "msmt17".into(),
        query: parse_list(&dir.join("list_query.txt"), &test_dir)?,
        gallery: parse_list(&dir.join("list_gallery.txt"), &test_dir)?,
        train,
        root: dir,
    })
}
