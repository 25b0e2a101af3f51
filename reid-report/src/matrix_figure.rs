//! The verdict matrix as a picture for papers (`figures/verdicts.svg` / `.png`): the grid that
//! opens the report — a row per claim and dataset, a column per judged model, each cell coloured
//! by its verdict with Δ rank-1 and its 95 % interval in points.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use reid_run::claims::Verdict;

use crate::claims::VerdictMatrix;
use crate::figures::{png_of, svg_of};

/// The colours of the report page's matrix (`index.html`), so both read alike.
pub fn verdict_colour(v: Verdict) -> RGBColor {
    match v {
        Verdict::Holds => RGBColor(0xb8, 0xe0, 0xb0),
        Verdict::DoesNotHold => RGBColor(0xf2, 0xb5, 0xb0),
        Verdict::Inconclusive => RGBColor(0xf3, 0xe3, 0xa6),
        Verdict::Unjudged => RGBColor(0xe4, 0xe4, 0xe4),
    }
}

const FONT: (&str, u32) = ("sans-serif", 14);
const PAD: u32 = 10;
const ROW: u32 = 44;
const HEAD: u32 = 30;
/// Title, legend and [`EXPLAIN`] above the grid.
const TOP: u32 = 86;
const EXPLAIN: &str =
    "Each cell: Δ rank-1 of the model against the claim's reference, in points, and its 95 % interval.";

/// Column widths (claim, dataset, then each model) from the widest text each holds.
struct Layout {
    widths: Vec<u32>,
    /// What the title and the lines above the grid need.
    min_width: u32,
}

impl Layout {
    fn of(m: &VerdictMatrix) -> Layout {
        crate::figures::register_font();
        let width = |s: &str| -> u32 {
            let font: FontDesc = FONT.into_font();
            font.box_size(s).map_or(8 * s.len() as u32, |(w, _)| w) + 2 * PAD
        };
        let widest = |header: &str, cells: &mut dyn Iterator<Item = String>| -> u32 {
            cells.map(|c| width(&c)).fold(width(header), u32::max)
        };
        let mut widths = vec![
            widest("claim", &mut m.rows.iter().map(|r| r.claim.clone())),
            widest("dataset", &mut m.rows.iter().map(|r| r.dataset.clone())),
        ];
        for (i, c) in m.columns.iter().enumerate() {
            let mut cells = m
                .rows
                .iter()
                .filter_map(|r| r.cells.get(i).cloned().flatten())
                .map(|j| j.interval_text());
            widths.push(widest(c, &mut cells).max(90));
        }
        let min_width = [m.title.as_str(), EXPLAIN]
            .into_iter()
            .map(width)
            .fold(520, u32::max)
            + 2 * PAD;
        Layout { widths, min_width }
    }

    fn size(&self, rows: usize) -> (u32, u32) {
        let w: u32 = self.widths.iter().sum::<u32>() + 2 * PAD;
        (w.max(self.min_width), TOP + HEAD + ROW * rows as u32 + PAD)
    }

    /// Left edge of column `i`.
    fn x(&self, i: usize) -> i32 {
        (PAD + self.widths[..i].iter().sum::<u32>()) as i32
    }
}

fn draw_matrix<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    m: &VerdictMatrix,
    lay: &Layout,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let font = FONT.into_font();
    let bold = (FONT.0, FONT.1 + 3).into_font().style(FontStyle::Bold);
    let left = Pos::new(HPos::Left, VPos::Center);
    let centre = Pos::new(HPos::Center, VPos::Center);
    let p = PAD as i32;
    root.draw(&Text::new(m.title.clone(), (p, 16), bold.clone()))
        .map_err(e)?;
    // the legend: a swatch and its verdict
    let mut x = p;
    for v in [
        Verdict::Holds,
        Verdict::DoesNotHold,
        Verdict::Inconclusive,
        Verdict::Unjudged,
    ] {
        root.draw(&Rectangle::new(
            [(x, 40), (x + 14, 54)],
            verdict_colour(v).filled(),
        ))
        .map_err(e)?;
        let label = match v {
            Verdict::Unjudged => "not judged",
            other => other.text(),
        };
        root.draw(&Text::new(
            label.to_string(),
            (x + 20, 47),
            TextStyle::from(font.clone()).pos(left),
        ))
        .map_err(e)?;
        x += 20 + font.box_size(label).map_or(80, |(w, _)| w as i32) + 18;
    }
    root.draw(&Text::new(
        EXPLAIN,
        (p, 70),
        TextStyle::from(font.clone()).pos(left),
    ))
    .map_err(e)?;
    let grid_top = TOP as i32;
    let right = lay.x(lay.widths.len());
    let line = RGBColor(0xcc, 0xcc, 0xcc);
    // header row
    root.draw(&Rectangle::new(
        [(p, grid_top), (right, grid_top + HEAD as i32)],
        RGBColor(0xf0, 0xf0, 0xf0).filled(),
    ))
    .map_err(e)?;
    let headers = ["claim", "dataset"]
        .into_iter()
        .map(str::to_string)
        .chain(m.columns.iter().cloned());
    for (i, h) in headers.enumerate() {
        let (x0, anchor) = if i < 2 {
            (lay.x(i) + p, left)
        } else {
            (lay.x(i) + lay.widths[i] as i32 / 2, centre)
        };
        root.draw(&Text::new(
            h,
            (x0, grid_top + HEAD as i32 / 2),
            TextStyle::from(font.clone()).pos(anchor),
        ))
        .map_err(e)?;
    }
    for (r, row) in m.rows.iter().enumerate() {
        let y0 = grid_top + (HEAD + ROW * r as u32) as i32;
        let mid = y0 + ROW as i32 / 2;
        for (i, text) in [&row.claim, &row.dataset].into_iter().enumerate() {
            root.draw(&Text::new(
                text.clone(),
                (lay.x(i) + p, mid),
                TextStyle::from(font.clone()).pos(left),
            ))
            .map_err(e)?;
        }
        for (c, cell) in row.cells.iter().enumerate() {
            let Some(j) = cell else { continue };
            let (x0, x1) = (lay.x(c + 2), lay.x(c + 3));
            root.draw(&Rectangle::new(
                [(x0 + 1, y0 + 1), (x1 - 1, y0 + ROW as i32 - 1)],
                verdict_colour(j.verdict).filled(),
            ))
            .map_err(e)?;
            let cx = (x0 + x1) / 2;
            root.draw(&Text::new(
                format!("{:+.1}", 100.0 * j.delta),
                (cx, mid - 9),
                TextStyle::from(font.clone()).pos(centre),
            ))
            .map_err(e)?;
            root.draw(&Text::new(
                j.interval_text(),
                (cx, mid + 10),
                TextStyle::from((FONT.0, FONT.1 - 2).into_font()).pos(centre),
            ))
            .map_err(e)?;
        }
        root.draw(&PathElement::new(
            vec![(p, y0 + ROW as i32), (right, y0 + ROW as i32)],
            line,
        ))
        .map_err(e)?;
    }
    root.present().map_err(e)
}

pub fn render_svg(m: &VerdictMatrix) -> Result<String, String> {
    let lay = Layout::of(m);
    svg_of(lay.size(m.rows.len()), |root| draw_matrix(root, m, &lay))
}

pub fn render_png(m: &VerdictMatrix) -> Result<Vec<u8>, String> {
    let lay = Layout::of(m);
    png_of(lay.size(m.rows.len()), |root| draw_matrix(root, m, &lay))
}
