//! The `flops` report: MACs, FLOPs (= 2 × MACs) and parameters, backbone and head apart.

use std::fmt::Write;

use reid_model::complexity::Complexity;

fn human(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.3} G", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.3} M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// Human-readable report; `per_layer` adds one row per conv/linear layer.
pub fn render(c: &Complexity, per_layer: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} at {}x{} (batch 1). FLOPs = 2 x MACs.",
        c.arch, c.input[0], c.input[1]
    );
    if per_layer {
        let _ = writeln!(
            s,
            "{:<26} {:>6} {:>6} {:>3} {:>2} {:>9} {:>12} {:>10}",
            "layer", "in", "out", "k", "s", "out_hw", "MACs", "params"
        );
        for l in &c.layers {
            let _ = writeln!(
                s,
                "{:<26} {:>6} {:>6} {:>3} {:>2} {:>9} {:>12} {:>10}",
                l.name,
                l.in_channels,
                l.out_channels,
                l.kernel,
                l.stride,
                format!("{}x{}", l.out_hw[0], l.out_hw[1]),
                l.macs,
                l.params + l.bn_params
            );
        }
    }
    let _ = writeln!(
        s,
        "{:<10} {:>14} {:>12} {:>14}",
        "part", "MACs", "GFLOPs", "params"
    );
    for (name, t) in [
        ("backbone", c.backbone),
        ("head", c.head),
        ("total", c.total),
    ] {
        let _ = writeln!(
            s,
            "{:<10} {:>14} {:>12.3} {:>14}",
            name,
            human(t.macs),
            t.flops() as f64 / 1e9,
            human(t.params)
        );
    }
    s
}

/// Kept width of every prunable conv against the unpruned architecture of the same family.
pub fn render_widths(spec: &reid_model::ArchSpec) -> reid_model::Result<String> {
    let full = reid_model::ArchSpec::resnet_with(
        spec.depth,
        0,
        spec.width_mult,
        spec.last_stride,
        spec.neck,
    )?;
    let original: std::collections::BTreeMap<String, usize> = full
        .prunable_convs()
        .into_iter()
        .map(|p| (p.conv, p.width))
        .collect();
    let mut s = String::from("kept widths of the prunable convs:\n");
    let (mut kept, mut all) = (0, 0);
    for p in spec.prunable_convs() {
        let o = original.get(&p.conv).copied().unwrap_or(p.width);
        kept += p.width;
        all += o;
        let _ = writeln!(
            s,
            "  {:<16} {:>5} / {:<5} {:>5.1}%",
            p.conv,
            p.width,
            o,
            100.0 * p.width as f64 / o as f64
        );
    }
    let _ = writeln!(
        s,
        "  {:<16} {:>5} / {:<5} {:>5.1}%",
        "all",
        kept,
        all,
        100.0 * kept as f64 / all.max(1) as f64
    );
    Ok(s)
}

/// JSON form: `{"backbone": {"macs", "params", "flops"}, "head": ..., "total": ..., "layers": [...]}`.
pub fn to_json(c: &Complexity) -> serde_json::Value {
    let part = |t: reid_model::complexity::Totals| serde_json::json!({"macs": t.macs, "flops": t.flops(), "params": t.params});
    serde_json::json!({
        "arch": c.arch,
        "input": c.input,
        "flops_are": "2 x macs",
        "backbone": part(c.backbone),
        "head": part(c.head),
        "total": part(c.total),
        "layers": c.layers,
    })
}
