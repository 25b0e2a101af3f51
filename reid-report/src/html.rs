//! `index.html`: every table and figure on one page, viewable from disk (relative links only).

use crate::claims::{MatrixRow, VerdictMatrix};
use crate::figures::Figure;
use crate::runs::Problem;
use crate::tables::Table;
use reid_run::claims::Verdict;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The verdict matrix: a coloured cell per claim and model, Δ rank-1 and its interval in the
/// cell, both models and the verdict on hover.
fn matrix_html(m: &VerdictMatrix) -> String {
    let mut s = format!(
        "<section id=\"verdicts\">\n<h2>{}</h2>\n<p class=\"note\"><span class=\"v holds\">holds</span> \
         <span class=\"v not\">does not hold</span> <span class=\"v inc\">inconclusive at this \
         size</span> — Δ rank-1 in points and its 95 % interval; hover a cell for the two models. \
         <a href=\"tables/verdicts.md\">Markdown</a> · <a href=\"tables/verdicts.csv\">CSV</a> · \
         as a figure: <a href=\"figures/verdicts.svg\">SVG</a> · <a href=\"figures/verdicts.png\">PNG</a></p>\n\
         <table class=\"matrix\">\n<thead><tr><th>claim</th><th>dataset</th>",
        esc(&m.title)
    );
    for c in &m.columns {
        s += &format!("<th>{}</th>", esc(c));
    }
    s += "</tr></thead>\n<tbody>\n";
    for r in &m.rows {
        s += &format!("<tr><td>{}</td><td>{}</td>", esc(&r.claim), esc(&r.dataset));
        for c in &r.cells {
            match c {
                None => s += "<td></td>",
                Some(j) => {
                    let class = match j.verdict {
                        Verdict::Holds => "holds",
                        Verdict::DoesNotHold => "not",
                        Verdict::Inconclusive => "inc",
                        Verdict::Unjudged => "none",
                    };
                    s += &format!(
                        "<td class=\"v {class}\" title=\"{}\">{:+.1}<br><small>{}</small></td>",
                        esc(&format!("{} vs {}: {}", j.a, j.b, MatrixRow::cell_text(j))),
                        100.0 * j.delta,
                        esc(&j.interval_text())
                    );
                }
            }
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table>\n</section>\n";
    s
}

/// The first lost and gained queries of each pruned cell, as ranked lists.
fn changes_html(changes: &[crate::changes::Changes]) -> String {
    if !changes
        .iter()
        .any(|c| !c.pictures.is_empty() || c.note.is_some())
    {
        return String::new();
    }
    let mut s = String::from(
        "<h2 id=\"ranked-lists\">What pruning changed: ranked lists</h2>\n<p class=\"note\">Each \
         picture: a query (grey) and its 10 nearest gallery images, framed green when they show \
         the query's identity and red when not; top row the unpruned model, bottom row the \
         pruned one. Lost: the unpruned model's first image is a match and the pruned one's is \
         not; gained: the reverse.</p>\n",
    );
    for c in changes {
        if c.pictures.is_empty() && c.note.is_none() {
            continue;
        }
        s += &match &c.flips {
            Some(f) => format!(
                "<h3>{} on {}: {} lost, {} gained of {} queries</h3>\n",
                esc(&c.criterion),
                esc(&c.dataset),
                f.lost.len(),
                f.gained.len(),
                c.queries
            ),
            None => format!(
                "<h3>{} on {}: not compared</h3>\n",
                esc(&c.criterion),
                esc(&c.dataset)
            ),
        };
        if let Some(n) = &c.note {
            s += &format!("<p class=\"note\">{}</p>\n", esc(n));
        }
        for p in &c.pictures {
            s += &format!(
                "<figure id=\"{0}\"><img src=\"figures/{0}.png\" alt=\"{1} query {2}\"><figcaption>{1}: query <code>{2}</code>; rows: {3} (unpruned), {4} (pruned)</figcaption></figure>\n",
                esc(&crate::safe_component(&p.slug)),
                p.kind,
                esc(&p.query),
                esc(&c.unpruned),
                esc(&c.cell)
            );
        }
    }
    s
}

fn table_html(t: &Table) -> String {
    let mut s = format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n",
        esc(&t.slug),
        esc(&t.title)
    );
    if let Some(n) = &t.note {
        s += &format!("<p class=\"note\">{}</p>\n", esc(n));
    }
    s += &format!(
        "<p class=\"files\"><a href=\"tables/{0}.md\">Markdown</a> · <a href=\"tables/{0}.csv\">CSV</a></p>\n",
        esc(&t.slug)
    );
    s += "<table>\n<thead><tr>";
    for h in &t.headers {
        s += &format!("<th>{}</th>", esc(h));
    }
    s += "</tr></thead>\n<tbody>\n";
    for row in &t.rows {
        s += "<tr>";
        for (i, c) in row.iter().enumerate() {
            let cls = if i == 0 { "" } else { " class=\"num\"" };
            s += &format!("<td{cls}>{}</td>", esc(c.as_deref().unwrap_or("–")));
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table>\n</section>\n";
    s
}

/// The page. A small script records on `<body>` how many images loaded, so that a headless
/// browser's DOM dump can tell a broken page from a good one.
/// `collapsed`: the slugs of tables shown folded (the claims' detail, below their matrix).
#[allow(clippy::too_many_arguments)]
pub fn index_html(
    title: &str,
    runs_dir: &str,
    num_runs: usize,
    matrix: Option<&VerdictMatrix>,
    tables: &[Table],
    collapsed: &[&str],
    figures: &[Figure],
    changes: &[crate::changes::Changes],
    problems: &[Problem],
) -> String {
    let mut s = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 2em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.5em; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 1em 0 2.5em; }}
figure img {{ max-width: 100%; border: 1px solid #ddd; }}
.note, .files {{ color: #555; font-size: 0.9em; }}
.problems {{ color: #a00; }}
.v {{ text-align: center; font-variant-numeric: tabular-nums; }}
span.v {{ padding: 0 0.4em; }}
.v.holds {{ background: #b8e0b0; }}
.v.not {{ background: #f2b5b0; }}
.v.inc {{ background: #f3e3a6; }}
.v.none {{ background: #e4e4e4; }}
table.matrix td:first-child {{ max-width: 28em; }}
details > summary {{ cursor: pointer; font-weight: bold; margin: 0.5em 0; }}
</style>
</head>
<body data-images-total="0" data-images-loaded="0">
<h1>{t}</h1>
<p>{n} runs from <code>{r}</code>. All results: <a href="results.csv">results.csv</a>, <a href="results.parquet">results.parquet</a>.</p>
"#,
        t = esc(title),
        n = num_runs,
        r = esc(runs_dir)
    );
    if !problems.is_empty() {
        s += "<h2>Skipped files</h2>\n<ul class=\"problems\">\n";
        for p in problems {
            s += &format!("<li>{}</li>\n", esc(&p.to_string()));
        }
        s += "</ul>\n";
    }
    if let Some(m) = matrix {
        s += &matrix_html(m);
    }
    s += "<nav><h2>Contents</h2>\n<ul>\n";
    for t in tables {
        s += &format!(
            "<li><a href=\"#{}\">{}</a></li>\n",
            esc(&t.slug),
            esc(&t.title)
        );
    }
    if changes
        .iter()
        .any(|c| !c.pictures.is_empty() || c.note.is_some())
    {
        s += "<li><a href=\"#ranked-lists\">What pruning changed: ranked lists</a></li>\n";
    }
    for f in figures {
        s += &format!(
            "<li><a href=\"#{}\">{}</a></li>\n",
            esc(&f.slug),
            esc(&f.caption)
        );
    }
    s += "</ul></nav>\n";
    for t in tables {
        if collapsed.contains(&t.slug.as_str()) {
            s += &format!(
                "<details><summary>{} (every comparison)</summary>\n{}</details>\n",
                esc(&t.title),
                table_html(t)
            );
        } else {
            s += &table_html(t);
        }
    }
    s += &changes_html(changes);
    for f in figures {
        s += &format!(
            "<figure id=\"{0}\"><img src=\"figures/{0}.png\" alt=\"{1}\"><figcaption>{1} (<a href=\"figures/{0}.svg\">SVG</a>)</figcaption></figure>\n",
            esc(&f.slug),
            esc(&f.caption)
        );
    }
    s += r#"<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-total", String(imgs.length));
  document.body.setAttribute("data-images-loaded", String(ok));
});
</script>
</body>
</html>
"#;
    s
}
