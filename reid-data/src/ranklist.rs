//! Ranked lists as pictures (torchreid's `visrank`, fast-reid's `visualize_result`): a query
//! and its nearest gallery images, framed green when they show the query's identity and red
//! when they do not; one row per model, so that two models' lists of one query read together.

use std::path::Path;

use image::{imageops::FilterType, Rgb, RgbImage};
use reid_run::ranks::Ranks;

use crate::{DataError, Result};

/// Each image's size in the picture (width, height: a person crop's 1:2).
pub const CELL: (u32, u32) = (64, 128);
/// Frame width around each image.
const FRAME: u32 = 4;
/// Space between images, and after the query.
const GAP: u32 = 4;
const QUERY_GAP: u32 = 16;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const GREEN: Rgb<u8> = Rgb([34, 160, 60]);
const RED: Rgb<u8> = Rgb([210, 40, 40]);
const GREY: Rgb<u8> = Rgb([120, 120, 120]);

/// One row: a query image and its list (file, whether it shows the query's identity).
pub struct RankRow {
    pub query: String,
    pub list: Vec<(String, bool)>,
}

impl RankRow {
    /// Query `q`'s row of `ranks`, its first `k` images at most.
    pub fn of(ranks: &Ranks, q: usize, k: usize) -> RankRow {
        let query = &ranks.queries[q];
        RankRow {
            query: query.file.clone(),
            list: query
                .top
                .iter()
                .take(k)
                .enumerate()
                .map(|(r, &j)| (ranks.images[j as usize].clone(), ranks.is_match(q, r)))
                .collect(),
        }
    }
}

/// The picture of `rows` (images read under `root`), as PNG bytes. An image that does not
/// decode is an error naming it.
pub fn draw_png(root: &Path, rows: &[RankRow]) -> Result<Vec<u8>> {
    let img = draw(root, rows)?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| DataError::Invalid(format!("encoding a ranked list: {e}")))?;
    Ok(out.into_inner())
}

/// The picture of `rows` (images read under `root`).
pub fn draw(root: &Path, rows: &[RankRow]) -> Result<RgbImage> {
    let (cw, ch) = (CELL.0 + 2 * FRAME, CELL.1 + 2 * FRAME);
    let k = rows.iter().map(|r| r.list.len()).max().unwrap_or(0) as u32;
    let width = cw
        + if k > 0 {
            QUERY_GAP + k * cw + (k - 1) * GAP
        } else {
            0
        };
    let n = rows.len() as u32;
    let height = (n * ch + n.saturating_sub(1) * GAP).max(1);
    let mut img = RgbImage::from_pixel(width, height, WHITE);
    for (i, row) in rows.iter().enumerate() {
        let y = i as u32 * (ch + GAP);
        put(&mut img, root, &row.query, (0, y), GREY)?;
        for (r, (file, hit)) in row.list.iter().enumerate() {
            let x = cw + QUERY_GAP + r as u32 * (cw + GAP);
            put(&mut img, root, file, (x, y), if *hit { GREEN } else { RED })?;
        }
    }
    Ok(img)
}

/// `file` (under `root`) framed in `colour` with its top-left corner at `at`.
fn put(img: &mut RgbImage, root: &Path, file: &str, at: (u32, u32), colour: Rgb<u8>) -> Result<()> {
    let path = root.join(file);
    let photo = image::open(&path)
        .map_err(|e| DataError::file(&path, format!("cannot draw it in a ranked list: {e}")))?
        .resize_exact(CELL.0, CELL.1, FilterType::Triangle)
        .to_rgb8();
    for y in 0..CELL.1 + 2 * FRAME {
        for x in 0..CELL.0 + 2 * FRAME {
            img.put_pixel(at.0 + x, at.1 + y, colour);
        }
    }
    image::imageops::replace(img, &photo, (at.0 + FRAME) as i64, (at.1 + FRAME) as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_say_which_images_show_the_query() {
        let dir = tempfile::tempdir().unwrap();
        for (name, shade) in [("q.png", 10u8), ("a.png", 200), ("b.png", 90)] {
            RgbImage::from_pixel(16, 32, Rgb([shade; 3]))
                .save(dir.path().join(name))
                .unwrap();
        }
        let ranks = Ranks::from_indices(
            |j| (["a.png", "b.png"][j], [7, 8][j]),
            [("q.png".to_string(), 7, vec![1, 0])],
        );
        let row = RankRow::of(&ranks, 0, 10);
        assert_eq!(row.list, [("b.png".into(), false), ("a.png".into(), true)]);
        let img = draw(dir.path(), &[row]).unwrap();
        let cw = CELL.0 + 2 * FRAME;
        let first = cw + QUERY_GAP;
        let second = first + cw + GAP;
        assert_eq!(img.width(), second + cw);
        // frames: query grey, the miss red, the match green; inside, the images themselves
        assert_eq!(*img.get_pixel(0, 0), GREY);
        assert_eq!(*img.get_pixel(first, 0), RED);
        assert_eq!(*img.get_pixel(second, 0), GREEN);
        assert_eq!(*img.get_pixel(FRAME + 5, FRAME + 5), Rgb([10; 3]));
        assert_eq!(*img.get_pixel(first + FRAME + 5, FRAME + 5), Rgb([90; 3]));
        // a missing image is named
        let gone = RankRow {
            query: "gone.jpg".into(),
            list: vec![],
        };
        let e = draw(dir.path(), &[gone]).unwrap_err().to_string();
        assert!(e.contains("gone.jpg") && e.contains("ranked list"), "{e}");
    }
}
