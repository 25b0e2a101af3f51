//! Figures (PNG and SVG, plotters): the paper's Fig. 4, latency vs GFLOPs, CMC curves,
//! per-layer kept-width profiles and accuracy vs compression per scenario.
//!
//! Text is laid out (and, in PNG, drawn) with DejaVu Sans embedded in the binary, so no system
//! font or fontconfig is needed; SVG names the `sans-serif` family and leaves drawing to the viewer.

use crate::runs::Run;
use crate::tables::{self, CRITERIA_ORDER};
use plotters::coord::Shift;
use plotters::element::ErrorBar;
use plotters::prelude::*;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

pub(crate) fn register_font() {
    REGISTER.call_once(|| {
        // The embedded file is a valid TTF; a failure here would only lose PNG text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One curve or point set of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// 95 % intervals drawn as error bars: (x, low, high).
    pub bars: Vec<(f64, f64, f64)>,
    pub line: bool,
    /// Colour and marker index (see [`style_index`]).
    pub style: usize,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

#[derive(Clone, Debug)]
pub struct Figure {
    /// File stem under `figures/`.
    pub slug: String,
    pub caption: String,
    pub panels: Vec<Panel>,
    pub cols: usize,
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        let cols = self.cols.max(1) as u32;
        let rows = self.panels.len().div_ceil(self.cols.max(1)) as u32;
        (560 * cols, 420 * rows)
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(90, 90, 90),
];

/// Fixed colour/marker per model so that every figure uses the same legend: the criteria in
/// the paper's order, then the baselines, then anything else.
pub fn style_index(model: &str) -> usize {
    if let Some(i) = CRITERIA_ORDER.iter().position(|c| *c == model) {
        return i;
    }
    match model {
        "resnet50" => 5,
        "resnet34" => 6,
        "resnet18" => 7,
        other => 8 + other.bytes().map(|b| b as usize).sum::<usize>() % 8,
    }
}

/// Draws a series' markers with the shape of its style (one concrete element type per shape,
/// as plotters' series need) and registers its legend entry.
macro_rules! draw_markers {
    ($chart:expr, $points:expr, $name:expr, $e:expr, $shape:expr) => {{
        $chart
            .draw_series($points.iter().map(|&q| EmptyElement::at(q) + $shape))
            .map_err($e)?
            .label($name)
            .legend(move |c| EmptyElement::at(c) + $shape);
    }};
}

/// Data range padded by 8 % (a single value gets a window around it).
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.08
    } else {
        (lo.abs() * 0.1).max(1e-3)
    };
    (lo - pad)..(hi + pad)
}

/// A panel's axis ranges: x over its points, y over its points and error bars.
fn panel_ranges(p: &Panel) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let xs = range(p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)));
    let ys = range(p.series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|q| q.1)
            .chain(s.bars.iter().flat_map(|b| [b.1, b.2]))
    }));
    (xs, ys)
}

/// Where a panel's legend box hides the fewest points and error-bar ends (lines between points
/// are not counted): a corner, else the middle of an edge. The box takes about a third of the
/// width and a line per series of the height (measured on the 560×420 panels); ties keep the
/// earlier place, the lower right first.
fn legend_position(
    p: &Panel,
    xs: &std::ops::Range<f64>,
    ys: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    let (w, h) = (0.34, (0.07 * p.series.len() as f64 + 0.06).min(0.95));
    // each point and bar end in panel fractions, (0, 0) at the lower left
    let frac = |x: f64, y: f64| {
        (
            (x - xs.start) / (xs.end - xs.start),
            (y - ys.start) / (ys.end - ys.start),
        )
    };
    let marks: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|s| {
            let ends = s.bars.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]);
            s.points.iter().copied().chain(ends)
        })
        .map(|(x, y)| frac(x, y))
        .collect();
    // where the box lies along one axis: 0 at the start, 1 in the middle, 2 at the end
    let within = |f: f64, size: f64, at: u8| match at {
        0 => f <= size,
        1 => (f - 0.5).abs() <= size / 2.0,
        _ => f >= 1.0 - size,
    };
    let hidden = |x: u8, y: u8| {
        marks
            .iter()
            .filter(|&&(fx, fy)| within(fx, w, x) && within(fy, h, y))
            .count()
    };
    use SeriesLabelPosition::*;
    // corners first, then the edges' middles
    [
        (LowerRight, hidden(2, 0)),
        (UpperRight, hidden(2, 2)),
        (LowerLeft, hidden(0, 0)),
        (UpperLeft, hidden(0, 2)),
        (UpperMiddle, hidden(1, 2)),
        (LowerMiddle, hidden(1, 0)),
        (MiddleRight, hidden(2, 1)),
        (MiddleLeft, hidden(0, 1)),
    ]
    .into_iter()
    // the first of the least hidden: min_by_key keeps the first of equal keys
    .min_by_key(|&(_, n)| n)
    .map_or(LowerRight, |(pos, _)| pos)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (xs, ys) = panel_ranges(p);
    let legend = legend_position(p, &xs, &ys);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(xs, ys)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    for s in &p.series {
        let color = PALETTE[s.style % PALETTE.len()];
        if s.line && s.points.len() > 1 {
            chart
                .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
                .map_err(e)?;
        }
        if !s.bars.is_empty() {
            chart
                .draw_series(s.bars.iter().map(|&(x, lo, hi)| {
                    ErrorBar::new_vertical(x, lo, (lo + hi) / 2.0, hi, color.stroke_width(1), 8)
                }))
                .map_err(e)?;
        }
        let filled = color.filled();
        let hollow = ShapeStyle::from(color).stroke_width(2);
        let name = s.name.clone();
        match s.style % 8 {
            0 => draw_markers!(chart, s.points, name, e, Circle::new((0, 0), 5, filled)),
            1 => draw_markers!(
                chart,
                s.points,
                name,
                e,
                TriangleMarker::new((0, 0), 7, filled)
            ),
            2 => draw_markers!(
                chart,
                s.points,
                name,
                e,
                Rectangle::new([(-5, -5), (5, 5)], filled)
            ),
            3 => draw_markers!(chart, s.points, name, e, Cross::new((0, 0), 6, hollow)),
            4 => draw_markers!(chart, s.points, name, e, Circle::new((0, 0), 6, hollow)),
            5 => draw_markers!(
                chart,
                s.points,
                name,
                e,
                Rectangle::new([(-6, -6), (6, 6)], hollow)
            ),
            6 => draw_markers!(
                chart,
                s.points,
                name,
                e,
                TriangleMarker::new((0, 0), 8, hollow)
            ),
            _ => draw_markers!(chart, s.points, name, e, Circle::new((0, 0), 3, filled)),
        }
    }
    if !p.series.is_empty() {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(150, 150, 150))
            .position(legend)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> Result<(), String> {
    // Both backends lay text out with the embedded font's metrics.
    register_font();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let cols = fig.cols.max(1);
    let rows = fig.panels.len().div_ceil(cols);
    let areas = root.split_evenly((rows.max(1), cols));
    for (area, panel) in areas.iter().zip(&fig.panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(|e| e.to_string())
}

pub fn render_svg(fig: &Figure) -> Result<String, String> {
    svg_of(fig.size(), |root| draw(root, fig))
}

pub fn render_png(fig: &Figure) -> Result<Vec<u8>, String> {
    png_of(fig.size(), |root| draw(root, fig))
}

/// An SVG of `size` drawn by `draw`.
pub(crate) fn svg_of(
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut s = String::new();
    draw(SVGBackend::with_string(&mut s, size).into_drawing_area())?;
    Ok(s)
}

/// A PNG of `size` drawn by `draw` (text in the embedded font).
pub(crate) fn png_of(
    (w, h): (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area())?;
    let img = image::RgbImage::from_raw(w, h, buf).ok_or("bitmap size mismatch")?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

fn pct(v: f64) -> f64 {
    v * 100.0
}

/// A run's rank-1 95 % interval on `dataset` in %, when it has one.
fn rank1_interval(r: &Run, dataset: &str) -> Option<(f64, f64)> {
    let i = r.metrics.eval.get(dataset)?.ci95.get("rank1")?;
    Some((pct(i.lo), pct(i.hi)))
}

/// No error bars.
fn no_bar(_: &Run) -> Option<(f64, f64)> {
    None
}

/// Points of the runs selected by `keep`, one series per model name; `bar` gives a point's
/// interval (low, high) on the y axis, drawn as an error bar.
fn series_by_model<'a>(
    runs: impl Iterator<Item = &'a Run>,
    point: impl Fn(&Run) -> Option<(f64, f64)>,
    bar: impl Fn(&Run) -> Option<(f64, f64)>,
    line: bool,
) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in runs {
        let Some(p) = point(r) else { continue };
        let b = bar(r).map(|(lo, hi)| (p.0, lo, hi));
        let name = r.model_name();
        let s = match out.iter().position(|s| s.name == name) {
            Some(i) => &mut out[i],
            None => {
                out.push(Series {
                    style: style_index(&name),
                    name,
                    points: Vec::new(),
                    bars: Vec::new(),
                    line,
                });
                out.last_mut().expect("just pushed")
            }
        };
        s.points.push(p);
        s.bars.extend(b);
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out.sort_by_key(|s| (s.style, s.name.clone()));
    out
}

/// Every figure the runs support; `cmc_runs` picks the CMC curves (default: baselines and
/// Scenario 1 at `level`).
pub fn all_figures(runs: &[Run], level: &str, cmc_runs: &[String]) -> Vec<Figure> {
    let mut figs = Vec::new();
    let s1_and_baselines = || {
        runs.iter()
            .filter(|r| r.is_baseline() || r.metrics.scenario == "S1")
    };
    for d in tables::datasets(runs) {
        let eval = |r: &Run| r.metrics.eval.get(&d).cloned();
        figs.push(Figure {
            slug: format!("fig4_{d}"),
            caption: format!(
                "Fig. 4 on {d}: mAP vs GFLOPs and rank-1 vs parameters (baselines and Scenario 1; bars: 95 % intervals)"
            ),
            cols: 2,
            panels: vec![
                Panel {
                    title: format!("{d}: mAP vs GFLOPs"),
                    x_label: "GFLOPs (2 × multiply-adds, 10^9)".into(),
                    y_label: "mAP (%)".into(),
                    series: series_by_model(
                        s1_and_baselines(),
                        |r| eval(r).map(|e| (r.gflops(), pct(e.map))),
                        no_bar,
                        false,
                    ),
                },
                Panel {
                    title: format!("{d}: rank-1 vs parameters"),
                    x_label: "parameters (millions)".into(),
                    y_label: "rank-1 (%)".into(),
                    series: series_by_model(
                        s1_and_baselines(),
                        |r| eval(r).map(|e| (r.params_m(), pct(e.rank1))),
                        |r| rank1_interval(r, &d),
                        false,
                    ),
                },
            ],
        });
        let mut panels = Vec::new();
        for s in tables::scenarios(runs) {
            let mut series = series_by_model(
                runs.iter().filter(|r| r.metrics.scenario == s),
                |r| eval(r).map(|e| (r.gflops(), pct(e.rank1))),
                |r| rank1_interval(r, &d),
                true,
            );
            // Every curve starts at the unpruned model it was pruned from.
            for sr in &mut series {
                let backbone = runs
                    .iter()
                    .find(|r| r.metrics.scenario == s && r.model_name() == sr.name)
                    .map(|r| r.metrics.backbone.clone());
                if let Some(base) = runs.iter().find(|b| {
                    b.is_baseline()
                        && Some(&b.metrics.backbone) == backbone.as_ref()
                        && b.metrics.eval.contains_key(&d)
                }) {
                    if let Some(e) = eval(base) {
                        sr.points.push((base.gflops(), pct(e.rank1)));
                    }
                }
            }
            series.extend(series_by_model(
                runs.iter().filter(|r| r.is_baseline()),
                |r| eval(r).map(|e| (r.gflops(), pct(e.rank1))),
                |r| rank1_interval(r, &d),
                false,
            ));
            panels.push(Panel {
                title: format!("{s} on {d}"),
                x_label: "GFLOPs (2 × multiply-adds, 10^9)".into(),
                y_label: "rank-1 (%)".into(),
                series,
            });
        }
        if !panels.is_empty() {
            figs.push(Figure {
                slug: format!("accuracy_vs_compression_{d}"),
                caption: format!(
                    "Rank-1 vs GFLOPs on {d} per scenario: each criterion's curve runs from the unpruned model through its compression levels; baselines as points; bars: 95 % intervals"
                ),
                cols: 2,
                panels,
            });
        }
        let chosen: Vec<&Run> = if cmc_runs.is_empty() {
            tables::baselines(runs)
                .into_iter()
                .filter_map(|b| {
                    let m = &b.metrics;
                    tables::find_on(runs, &m.scenario, &m.criterion, &m.level, &d)
                })
                .chain(
                    tables::criteria(runs)
                        .iter()
                        .filter_map(|c| tables::find_on(runs, "S1", c, level, &d)),
                )
                .collect()
        } else {
            runs.iter().filter(|r| cmc_runs.contains(&r.id)).collect()
        };
        let series: Vec<Series> = chosen
            .iter()
            .filter_map(|r| {
                let e = eval(r)?;
                let name = if cmc_runs.is_empty() {
                    r.model_name()
                } else {
                    r.id.clone()
                };
                Some(Series {
                    style: style_index(&r.model_name()),
                    name,
                    points: e
                        .cmc
                        .iter()
                        .take(20)
                        .enumerate()
                        .map(|(k, v)| ((k + 1) as f64, pct(*v)))
                        .collect(),
                    bars: Vec::new(),
                    line: true,
                })
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if !series.is_empty() {
            figs.push(Figure {
                slug: format!("cmc_{d}"),
                caption: format!("CMC curves on {d} (ranks 1–20)"),
                cols: 1,
                panels: vec![Panel {
                    title: format!("CMC on {d}"),
                    x_label: "rank".into(),
                    y_label: "matching rate (%)".into(),
                    series,
                }],
            });
        }
    }
    let with_latency: Vec<&Run> = runs.iter().filter(|r| r.latency(true).is_some()).collect();
    if !with_latency.is_empty() {
        let panel = |batch32: bool| Panel {
            title: format!("latency at batch {}", if batch32 { 32 } else { 1 }),
            x_label: "GFLOPs (2 × multiply-adds, 10^9)".into(),
            y_label: "latency (ms per batch)".into(),
            series: series_by_model(
                with_latency.iter().copied(),
                |r| r.latency(batch32).map(|l| (r.gflops(), l)),
                no_bar,
                false,
            ),
        };
        figs.push(Figure {
            slug: "latency_vs_gflops".into(),
            caption: "Measured latency vs GFLOPs, every model of every scenario".into(),
            cols: 2,
            panels: vec![panel(false), panel(true)],
        });
    }
    for l in tables::levels(runs) {
        let series: Vec<Series> = tables::criteria(runs)
            .iter()
            .filter_map(|c| tables::find(runs, "S1", c, &l))
            .filter_map(|r| {
                let w = r.widths.as_ref()?;
                Some(Series {
                    name: r.model_name(),
                    style: style_index(&r.model_name()),
                    points: w
                        .iter()
                        .enumerate()
                        .map(|(i, lw)| {
                            ((i + 1) as f64, 100.0 * lw.kept as f64 / lw.original as f64)
                        })
                        .collect(),
                    bars: Vec::new(),
                    line: true,
                })
            })
            .collect();
        if !series.is_empty() {
            figs.push(Figure {
                slug: format!("width_profile_{l}"),
                caption: format!(
                    "Kept width per prunable conv (Scenario 1, {l}), from layer1.0.conv1 to the last block"
                ),
                cols: 1,
                panels: vec![Panel {
                    title: format!("kept channels per layer, S1 {l}"),
                    x_label: "prunable conv (network order)".into(),
                    y_label: "kept channels (% of unpruned)".into(),
                    series,
                }],
            });
        }
    }
    figs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(bars: Vec<(f64, f64, f64)>) -> Figure {
        Figure {
            slug: "t".into(),
            caption: "t".into(),
            cols: 1,
            panels: vec![Panel {
                title: "t".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series: vec![Series {
                    name: "l1".into(),
                    points: vec![(1.0, 50.0), (2.0, 60.0)],
                    bars,
                    line: false,
                    style: 0,
                }],
            }],
        }
    }

    #[test]
    fn intervals_are_drawn_as_error_bars_inside_the_axes() {
        let plain = render_svg(&figure(vec![])).unwrap();
        // an interval reaching beyond every point widens the y axis to show it whole
        let barred = render_svg(&figure(vec![(1.0, 40.0, 58.0), (2.0, 55.0, 71.0)])).unwrap();
        let lines = |svg: &str| svg.matches("<polyline").count() + svg.matches("<line").count();
        // each bar: a vertical stroke and two caps
        assert!(
            lines(&barred) >= lines(&plain) + 6,
            "{} vs {}",
            lines(&barred),
            lines(&plain)
        );
        let ticks = |svg: &str| -> Vec<f64> {
            svg.lines()
                .filter_map(|l| l.trim().parse::<f64>().ok())
                .collect()
        };
        let top = |svg: &str| ticks(svg).into_iter().fold(f64::MIN, f64::max);
        assert!(top(&barred) >= 70.0, "{:?}", ticks(&barred));
        assert!(top(&plain) < 70.0, "{:?}", ticks(&plain));
    }

    #[test]
    fn the_legend_goes_where_it_hides_the_fewest_points() {
        let panel = |points: Vec<(f64, f64)>| Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            // a series a point, so that the legend is as tall as in the report's figures
            series: points
                .into_iter()
                .enumerate()
                .map(|(i, q)| Series {
                    name: format!("s{i}"),
                    points: vec![q],
                    bars: vec![],
                    line: false,
                    style: i,
                })
                .collect(),
        };
        let corner = |p: &Panel| {
            let (xs, ys) = panel_ranges(p);
            legend_position(p, &xs, &ys)
        };
        // Fig. 4's case: the unpruned model at the right edge, low, and the pruned ones at the left
        let fig4 = panel(vec![
            (0.011, 15.0),
            (0.017, 19.0),
            (0.017, 21.0),
            (0.033, 16.0),
        ]);
        assert_eq!(corner(&fig4), SeriesLabelPosition::UpperRight);
        // nothing in the lower right: the usual place
        let rising = panel(vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]);
        assert_eq!(corner(&rising), SeriesLabelPosition::LowerRight);
        // every corner taken but the upper left
        let taken = panel(vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.5)]);
        assert_eq!(corner(&taken), SeriesLabelPosition::UpperLeft);
        // all four corners taken, the top's middle free
        let ring = panel(vec![
            (0.0, 0.0),
            (1.0, 0.0),
            (1.0, 1.0),
            (0.0, 1.0),
            (0.5, 0.0),
        ]);
        assert_eq!(corner(&ring), SeriesLabelPosition::UpperMiddle);
    }
}
