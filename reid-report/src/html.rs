//! `index.html`: every table and figure on one page, viewable from disk (relative links only).

use crate::figures::Figure;
use crate::runs::Problem;
use crate::tables::Table;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
pub fn index_html(
    title: &str,
    runs_dir: &str,
    num_runs: usize,
    tables: &[Table],
    figures: &[Figure],
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
    s += "<nav><h2>Contents</h2>\n<ul>\n";
    for t in tables {
        s += &format!(
            "<li><a href=\"#{}\">{}</a></li>\n",
            esc(&t.slug),
            esc(&t.title)
        );
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
        s += &table_html(t);
    }
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
