//! Market-1501 naming: `PPPP_cCsS_FFFFFF_NN.jpg` (pid −1 = junk, 0 = distractor; cameras 1–6).
//! DukeMTMC-reID uses the same pattern (`PPPP_cC_fFFFFFFF.jpg`, cameras 1–8).
use std::ops::RangeInclusive;
use std::path::Path;

use super::{relabel, resolve_root, ReidDataset, Sample};
use crate::error::{DataError, Result};
use crate::transforms::list_images;

/// (pid, camid) from a Market-1501 / DukeMTMC-reID file name, `None` if it does not parse.
pub fn parse_name(file_name: &str) -> Option<(i64, i64)> {
    let (pid, rest) = file_name.split_once('_')?;
    let pid: i64 = pid.parse().ok()?;
    let rest = rest.strip_prefix('c')?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let cam: i64 = digits.parse().ok()?;
    if pid < -1 {
        return None;
    }
    Some((pid, cam))
}

/// Samples of one Market-style split folder; junk (pid −1) dropped.
fn split(dir: &Path, cams: &RangeInclusive<i64>) -> Result<Vec<Sample>> {
    if !dir.is_dir() {
        return Err(DataError::file(dir, "split folder not found"));
    }
    let mut out = Vec::new();
    for path in list_images(dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (pid, cam) = parse_name(&name).ok_or_else(|| {
            DataError::file(
                &path,
                "file name does not parse: expected PPPP_cC... (pid, '_c', camera), e.g. 0002_c1s1_000451_03.jpg",
            )
        })?;
        if !cams.contains(&cam) {
            return Err(DataError::file(
                &path,
                format!("camera {cam} outside {}..={}", cams.start(), cams.end()),
            ));
        }
        if pid == -1 {
            continue; // junk: never trained on, never ranked (the dataset protocol)
        }
        out.push(Sample {
            path,
            pid,
            camid: cam - 1,
        });
    }
    Ok(out)
}

/// Market-1501-style layout (also DukeMTMC-reID and CUHK03-NP): `bounding_box_train`, `query`,
/// `bounding_box_test` under `root` or one of `root/<candidate>`.
pub fn load_market_style(
    name: &str,
    root: &Path,
    candidates: &[&str],
    cams: RangeInclusive<i64>,
) -> Result<ReidDataset> {
    let dir = resolve_root(root, candidates, "bounding_box_train")?;
    let mut train = split(&dir.join("bounding_box_train"), &cams)?;
    relabel(&mut train);
    Ok(ReidDataset {
        name: name.to_string(),
        query: split(&dir.join("query"), &cams)?,
        gallery: split(&dir.join("bounding_box_test"), &cams)?,
        train,
        root: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_market_and_duke_names() {
        assert_eq!(parse_name("0002_c1s1_000451_03.jpg"), Some((2, 1)));
        assert_eq!(parse_name("-1_c3s2_012345_00.jpg"), Some((-1, 3)));
        assert_eq!(parse_name("0000_c6s4_001234_01.jpg"), Some((0, 6)));
        assert_eq!(parse_name("0005_c8_f0051487.jpg"), Some((5, 8)));
        assert_eq!(parse_name("Thumbs.db"), None);
        assert_eq!(parse_name("12_x1.jpg"), None);
    }
}
