//! The printed metrics table and the `--json` form.

use crate::metrics::Metrics;

/// `mAP  R-1  R-5  R-10  mINP  valid queries`, in percent.
pub fn table(m: &Metrics) -> String {
    let e = m.eval_entry();
    let ci = |name: &str| {
        e.ci95
            .get(name)
            .map(|i| format!("±{:.2}", 100.0 * i.half_width()))
            .unwrap_or_default()
    };
    format!(
        "{:>7} {:>7} {:>7} {:>7} {:>7} {:>15}\n{:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>15}\n{:>7} {:>7} {:>7} {:>7} {:>7} {:>15}\n",
        "mAP",
        "R-1",
        "R-5",
        "R-10",
        "mINP",
        "valid queries",
        100.0 * m.map,
        100.0 * m.rank(1),
        100.0 * m.rank(5),
        100.0 * m.rank(10),
        100.0 * m.minp,
        format!("{}/{}", m.num_valid_queries, m.num_queries),
        ci("mAP"),
        ci("rank1"),
        ci("rank5"),
        "",
        ci("mINP"),
        "95% CI (ids)",
    )
}

/// `{"mAP", "mINP", "cmc", "num_valid_queries", "num_queries"}` with fractions in [0, 1].
pub fn json(m: &Metrics) -> serde_json::Value {
    serde_json::json!({
        "mAP": m.map,
        "mINP": m.minp,
        "cmc": m.cmc,
        "num_valid_queries": m.num_valid_queries,
        "num_queries": m.num_queries,
    })
}
