//! The report of a fixture runs folder: exact tables (golden Markdown/CSV under
//! tests/expected), valid figures, results.csv/parquet, skipped bad files, and index.html
//! rendered in headless Chromium with every image loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use reid_report::{write_report, ReportOptions};
use serde_json::json;

fn cmc(r1: f64) -> Vec<f64> {
    (0..50).map(|k| (r1 + 0.02 * k as f64).min(1.0)).collect()
}

fn eval(map: f64, r1: f64) -> serde_json::Value {
    json!({"mAP": map, "rank1": r1, "rank5": (r1 + 0.08).min(1.0), "rank10": (r1 + 0.18).min(1.0),
           "mINP": map * 0.6, "cmc": cmc(r1), "num_valid_queries": 100,
           "ci95": {"rank1": {"lo": r1 - 0.03, "hi": (r1 + 0.025).min(1.0)}}})
}

/// The run in `dir` trained again under `seed`, with these results on both datasets.
fn add_seed(dir: &Path, seed: u64, evals: serde_json::Value) {
    let path = dir.join("metrics.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["seed_evals"][seed.to_string()] = evals;
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

#[allow(clippy::too_many_arguments)]
fn run(
    root: &Path,
    folder: &str,
    scenario: &str,
    criterion: &str,
    level: &str,
    backbone: &str,
    gmacs: f64,
    mparams: f64,
    lat: (f64, f64),
    evals: serde_json::Value,
) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    let m = json!({"experiment": "fx", "scenario": scenario, "criterion": criterion, "level": level,
        "backbone": backbone, "parent": "ab", "macs": (gmacs * 1e9) as u64, "params": (mparams * 1e6) as u64,
        "kept_channel_fraction": 0.5, "latency_ms": {"cpu": {"batch1": lat.0, "batch32": lat.1}},
        "eval": evals, "train": {"epochs": 3, "wall_s": 12.5, "final_loss": 1.25}, "tool_version": "0.1.0"});
    std::fs::write(
        dir.join("metrics.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "name = \"fx\"\ninput = \"256x128\"\nseed = 7\nwidth_mult = 1.0\ndevice = \"cpu\"\n",
    )
    .unwrap();
    dir
}

/// A checkpoint header with `reid.arch` only (no tensors): what the width profile reads (a
/// last-stride-1 ResNet-50: `layer4.0` keeps stride 1).
fn arch_checkpoint(dir: &Path, inner: [usize; 4]) {
    let blocks = [3, 4, 6, 3];
    let stages: Vec<serde_json::Value> = (0..4)
        .map(|s| {
            (0..blocks[s])
                .map(|b| {
                    json!({"widths": [inner[s], inner[s], 256 << s], "stride": if s > 0 && s < 3 && b == 0 {2} else {1},
                           "downsample": b == 0})
                })
                .collect()
        })
        .collect();
    let arch = json!({"depth": 50, "block": "bottleneck", "stem_width": 64, "stages": stages, "last_stride": 1,
                      "neck": "bnneck", "feature_dim": 2048, "num_classes": 751, "width_mult": 1.0});
    let header = json!({"__metadata__": {"reid.arch": arch.to_string()}}).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

fn fixture(root: &Path) {
    let both =
        |a: f64, b: f64, c: f64, d: f64| json!({"market1501": eval(a, b), "synth-b": eval(c, d)});
    let d = run(
        root,
        "baseline/resnet50-full",
        "baseline",
        "resnet50",
        "full",
        "resnet50",
        4.05,
        23.5,
        (40.0, 800.0),
        both(0.70, 0.86, 0.40, 0.50),
    );
    // two more seeds: rank-1 86, 84, 85 on market1501 → 85.00 ± 1.00 (3)
    add_seed(&d, 1, both(0.69, 0.84, 0.41, 0.52));
    add_seed(&d, 2, both(0.70, 0.85, 0.40, 0.51));
    run(
        root,
        "baseline/resnet18-full",
        "baseline",
        "resnet18",
        "full",
        "resnet18",
        1.82,
        11.2,
        (18.0, 330.0),
        both(0.61, 0.80, 0.30, 0.41),
    );
    let d = run(
        root,
        "S1/l1-C1",
        "S1",
        "l1",
        "C1",
        "resnet50",
        2.03,
        11.9,
        (26.0, 450.0),
        both(0.675, 0.845, 0.38, 0.49),
    );
    add_seed(&d, 1, both(0.67, 0.835, 0.38, 0.48));
    arch_checkpoint(&d, [32, 64, 128, 256]);
    let d = run(
        root,
        "S1/taylor-C1",
        "S1",
        "taylor",
        "C1",
        "resnet50",
        2.10,
        12.1,
        (27.0, 470.0),
        both(0.66, 0.84, 0.37, 0.47),
    );
    arch_checkpoint(&d, [40, 60, 120, 250]);
    run(
        root,
        "S1/l1-C2",
        "S1",
        "l1",
        "C2",
        "resnet50",
        1.35,
        8.9,
        (20.0, 320.0),
        both(0.63, 0.82, 0.33, 0.45),
    );
    run(
        root,
        "S2/l1-C1",
        "S2",
        "l1",
        "C1",
        "resnet50",
        2.03,
        11.9,
        (26.5, 455.0),
        both(0.47, 0.69, 0.25, 0.33),
    );
    run(
        root,
        "S3/psfp-C1",
        "S3",
        "psfp",
        "C1",
        "resnet50",
        2.03,
        11.9,
        (25.0, 440.0),
        json!({"market1501": eval(0.66, 0.82)}),
    );
    // a run without latency or a cross-domain evaluation
    let d = root.join("S4/l1-C1");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("metrics.json"),
        json!({"scenario": "S4", "criterion": "l1", "level": "C1", "backbone": "resnet50", "macs": 2030000000u64,
               "params": 11900000, "eval": {"market1501": eval(0.31, 0.55)}})
        .to_string(),
    )
    .unwrap();
    // bad files: reported by path and skipped
    let bad = root.join("S1/entropy-C1");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("metrics.json"), "{\"scenario\": \"S1\", truncated").unwrap();
    let bad = root.join("S2/taylor-C1");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("metrics.json"),
        json!({"scenario": "S2", "criterion": "taylor"}).to_string(),
    )
    .unwrap();
    let bad_model = run(
        root,
        "S3/l1-C1",
        "S3",
        "l1",
        "C1",
        "resnet50",
        2.03,
        11.9,
        (26.0, 452.0),
        json!({"market1501": eval(0.53, 0.72)}),
    );
    std::fs::write(bad_model.join("model.safetensors"), b"\x03").unwrap();
    // the runner's intermediate steps are not runs of the report
    run(
        root,
        "steps/eval-0123",
        "S1",
        "l1",
        "C9",
        "resnet50",
        1.0,
        1.0,
        (1.0, 1.0),
        json!({}),
    );
}

fn expected(name: &str) -> String {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/expected")
    .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn report() -> (tempfile::TempDir, PathBuf, reid_report::ReportSummary) {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    fixture(&runs);
    let out = tmp.path().join("report");
    let s = write_report(&runs, &out, &ReportOptions::default()).unwrap();
    (tmp, out, s)
}

#[test]
fn tables_equal_the_golden_markdown_and_csv() {
    let (_tmp, out, summary) = report();
    assert_eq!(summary.runs, 9);
    for name in [
        "table5.md",
        "table5.csv",
        "table6.md",
        "table6.csv",
        "table7_market1501.md",
        "table7_market1501.csv",
        "table8_synth-b.md",
        "table8_synth-b.csv",
    ] {
        let got = std::fs::read_to_string(out.join("tables").join(name)).unwrap();
        if std::env::var_os("REID_REPORT_BLESS").is_some() {
            // Rewrites the golden files after a deliberate change (review the diff).
            let dir = std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
            )
            .join("tests/expected");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), &got).unwrap();
        }
        assert_eq!(
            got,
            expected(name),
            "tables/{name} differs from tests/expected/{name}"
        );
    }
}

#[test]
fn bad_files_are_reported_by_path_and_skipped() {
    let (_tmp, out, summary) = report();
    let msgs: Vec<String> = summary.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(msgs.iter().any(|m| m.contains("entropy-C1/metrics.json")
        && m.contains("metrics.json of reid-run's format")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("taylor-C1/metrics.json") && m.contains("missing field")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("S3/l1-C1/model.safetensors") && m.contains("header")));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("Skipped files") && html.contains("entropy-C1"));
}

#[test]
fn results_frame_has_one_row_per_run_and_dataset() {
    let (_tmp, out, _) = report();
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "run",
        "scenario",
        "criterion",
        "level",
        "dataset",
        "gflops",
        "mAP",
        "rank1",
        "speedup_b32",
        "seed",
    ] {
        assert!(header.contains(&col), "no column {col} in {header:?}");
    }
    // 6 runs on two datasets, 3 on one.
    assert_eq!(lines.count(), 6 * 2 + 3);
    let pq = std::fs::read(out.join("results.parquet")).unwrap();
    assert!(pq.starts_with(b"PAR1") && pq.ends_with(b"PAR1"));
    let df = polars::prelude::ParquetReader::new(std::io::Cursor::new(pq));
    use polars::prelude::SerReader;
    let df = df.finish().unwrap();
    assert_eq!(df.height(), 15);
    assert_eq!(df.width(), header.len());
}

#[test]
fn every_figure_is_a_valid_png_and_svg() {
    let (_tmp, out, _) = report();
    let figs: Vec<PathBuf> = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let stems = |ext: &str| {
        let mut v: Vec<String> = figs
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        stems("png"),
        [
            "accuracy_vs_compression_market1501",
            "accuracy_vs_compression_synth-b",
            "cmc_market1501",
            "cmc_synth-b",
            "fig4_market1501",
            "fig4_synth-b",
            "latency_vs_gflops",
            "verdicts",
            "width_profile_C1",
        ]
    );
    assert_eq!(stems("png"), stems("svg"));
    // the plots (the verdict matrix, a coloured grid, has its own test)
    for p in figs
        .iter()
        .filter(|p| !p.ends_with("verdicts.png") && !p.ends_with("verdicts.svg"))
    {
        if p.extension().unwrap() == "png" {
            let img = image::open(p).unwrap().to_rgb8();
            assert!(img.width() >= 500 && img.height() >= 400);
            // Not blank: some dark pixels (axes, text) and some coloured ones (markers).
            let dark = img.pixels().filter(|q| q.0.iter().all(|&c| c < 80)).count();
            let colour = img
                .pixels()
                .filter(|q| q.0.iter().max().unwrap() - q.0.iter().min().unwrap() > 80)
                .count();
            assert!(
                dark > 500 && colour > 50,
                "{}: dark {dark}, colour {colour}",
                p.display()
            );
        } else {
            let s = std::fs::read_to_string(p).unwrap();
            assert!(
                s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
                "{}",
                p.display()
            );
            assert!(s.contains("<text") && (s.contains("<circle") || s.contains("<polyline")));
        }
    }
    let svg = std::fs::read_to_string(out.join("figures/fig4_market1501.svg")).unwrap();
    for label in ["GFLOPs", "mAP (%)", "rank-1 (%)", "resnet18", "taylor"] {
        assert!(svg.contains(label), "fig4 has no '{label}'");
    }
}

#[test]
fn missing_or_empty_runs_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = write_report(
        &tmp.path().join("nope"),
        &tmp.path().join("r"),
        &ReportOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = write_report(tmp.path(), &tmp.path().join("r"), &ReportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no usable metrics.json"), "{e}");
    // every folder skipped: the error says why, each
    std::fs::create_dir_all(tmp.path().join("bad")).unwrap();
    std::fs::write(tmp.path().join("bad/metrics.json"), "{").unwrap();
    let e = write_report(tmp.path(), &tmp.path().join("r"), &ReportOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("(1 skipped)\n  skipped ")
            && msg.contains(&format!(
                "{}: ",
                tmp.path().join("bad/metrics.json").display()
            )),
        "{msg}"
    );
}

#[test]
fn selectors_that_name_nothing_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    fixture(&runs);
    let out = tmp.path().join("report");
    for (opts, expected) in [
        (
            ReportOptions {
                level: Some("C9".into()),
                ..ReportOptions::default()
            },
            "--level C9: no run has it; the runs have C1",
        ),
        (
            ReportOptions {
                cmc_runs: vec!["S1/nope-C1".into()],
                ..ReportOptions::default()
            },
            "--cmc S1/nope-C1: no run has it",
        ),
    ] {
        let e = write_report(&runs, &out, &opts).unwrap_err().to_string();
        assert!(e.contains(expected), "{e}");
        assert!(!out.exists(), "a refused report wrote {}", out.display());
    }
    // runs with no grid cell have no level to name (the message ended in "the runs have ")
    let single = tmp.path().join("single");
    run(
        &single,
        "mine",
        "",
        "",
        "",
        "resnet50",
        4.0,
        25.0,
        (9.0, 160.0),
        json!({"market1501": eval(0.5, 0.6)}),
    );
    let opts = ReportOptions {
        level: Some("C1".into()),
        ..ReportOptions::default()
    };
    let e = write_report(&single, &out, &opts).unwrap_err().to_string();
    assert!(
        e.ends_with("the runs have no pruning level: none is a cell of a scenario grid (S1–S4); leave --level out"),
        "{e}"
    );
}

/// Names read from metrics.json become file names: a hostile dataset key or level cannot place a
/// file outside the report folder, and a planted symlink at a temp name is not followed.
#[test]
fn hostile_names_in_metrics_stay_inside_the_report_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("a/b/runs");
    let mut evals = serde_json::Map::new();
    evals.insert("../../../../escaped".into(), eval(0.5, 0.6));
    run(
        &runs,
        "S1/l1-C1",
        "S1",
        "l1",
        "../../../../lvl",
        "resnet50",
        2.0,
        12.0,
        (5.0, 50.0),
        serde_json::Value::Object(evals.clone()),
    );
    run(
        &runs,
        "baseline",
        "baseline",
        "resnet50",
        "full",
        "resnet50",
        4.1,
        23.5,
        (8.0, 90.0),
        serde_json::Value::Object(evals),
    );
    let out = tmp.path().join("a/b/report");
    std::fs::create_dir_all(&out).unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, out.join(".index.html.tmp")).unwrap();
    write_report(&runs, &out, &ReportOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    // every file written is under `out`; nothing new appeared above it
    let mut above: Vec<String> = Vec::new();
    for dir in [tmp.path(), &tmp.path().join("a"), &tmp.path().join("a/b")] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            above.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    above.sort();
    assert_eq!(
        above,
        ["a", "b", "report", "runs", "victim.txt"],
        "{above:?}"
    );
    assert!(out.join("index.html").is_file());
}

fn chromium() -> PathBuf {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("no Chromium found: .ci/run installs Debian's `chromium` (apt-get install chromium)");
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        "--virtual-time-budget=5000",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn index_html_renders_in_headless_chromium_with_every_image() {
    let (tmp, out, _) = report();
    let url = format!("file://{}", out.join("index.html").display());
    let dom = headless(&tmp.path().join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let attr = |name: &str| -> usize {
        let key = format!("{name}=\"");
        let at = dom_text
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in the DOM"))
            + key.len();
        dom_text[at..].split('"').next().unwrap().parse().unwrap()
    };
    assert_eq!(attr("data-images-total"), 8, "one <img> per figure");
    assert_eq!(attr("data-images-loaded"), 8, "every figure loaded");
    assert!(dom_text.contains("<table>") && dom_text.contains("Table 7"));

    let shot = tmp.path().join("shot.png");
    let s = headless(&tmp.path().join("profile-shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,2000")
        .arg(&url)
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (1280, 2000));
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        non_white > 10_000,
        "screenshot looks blank ({non_white} non-white pixels)"
    );
}

/// An experiment with several targets: each target's grid has its own runs of every cell; a
/// table row gathers them, each dataset's cells from the run evaluated on it.
#[test]
fn several_targets_fill_one_row_per_model() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    for (t, other, base) in [
        ("market1501", "dukemtmc-reid", 0.70),
        ("dukemtmc-reid", "market1501", 0.60),
    ] {
        let evals = |m: f64| json!({ t: eval(m, m + 0.1), format!("{other}-cross"): eval(m / 3.0, m / 2.0) });
        for (folder, sc, cr, lv, bb, g, lat) in [
            (
                "baseline/resnet50-full",
                "baseline",
                "resnet50",
                "full",
                "resnet50",
                4.0,
                800.0,
            ),
            (
                "baseline/resnet18-full",
                "baseline",
                "resnet18",
                "full",
                "resnet18",
                1.8,
                330.0,
            ),
            ("S1/l1-C1", "S1", "l1", "C1", "resnet50", 2.0, 400.0),
        ] {
            let d = run(
                &root.join(t),
                folder,
                sc,
                cr,
                lv,
                bb,
                g,
                10.0,
                (10.0, lat),
                evals(base - g / 100.0),
            );
            // each grid is its own experiment
            let p = d.join("metrics.json");
            let mut m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            m["experiment"] = json!(format!("paper-{t}"));
            std::fs::write(&p, m.to_string()).unwrap();
        }
    }
    let out = tmp.path().join("report");
    let s = write_report(&root, &out, &ReportOptions::default()).unwrap();
    assert_eq!(s.runs, 6);
    let t5 = std::fs::read_to_string(out.join("tables/table5.csv")).unwrap();
    let lines: Vec<&str> = t5.lines().collect();
    assert_eq!(lines.len(), 1 + 3, "one row per model:\n{t5}");
    // cells with a comma (the intervals) are quoted
    let fields = |line: &str| -> Vec<String> {
        let mut out = vec![String::new()];
        let mut quoted = false;
        for ch in line.chars() {
            match ch {
                '"' => quoted = !quoted,
                ',' if !quoted => out.push(String::new()),
                c => out.last_mut().unwrap().push(c),
            }
        }
        out
    };
    let header = fields(lines[0]);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let l1 = fields(lines[3]);
    assert_eq!(l1[0], "l1");
    // market from the market grid (0.70 - 0.02), duke from the duke grid (0.60 - 0.02)
    assert_eq!(l1[col("market1501 mAP")], "68.00");
    assert_eq!(l1[col("dukemtmc-reid mAP")], "58.00");
    assert_eq!(l1[col("dukemtmc-reid paper R-1")], "75.00");
    // cross-domain results are their own columns, with no paper reference
    assert_eq!(l1[col("market1501-cross mAP")], "19.33");
    assert!(!header.iter().any(|h| h == "market1501-cross paper mAP"));
    // speed-up against the same grid's unpruned ResNet-50: 800 / 400
    assert_eq!(l1[col("Speed-up b32 (×)")], "2.00");
}

/// A full disk (a small tmpfs in a private mount namespace, where the machine allows it): the
/// report fails naming the file and the cause, and leaves no half-written figure or temp file.
#[test]
fn a_full_disk_is_a_clear_error_that_leaves_no_half_file() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    fixture(&runs);
    let disk = tmp.path().join("disk");
    let script = format!(
        "'{bin}' --runs '{runs}' --out '{d}/report'; echo \"exit=$?\"\n\
         find '{d}' -name '.*.tmp-*'; echo listed",
        d = disk.display(),
        bin = env!("CARGO_BIN_EXE_reid-report"),
        runs = runs.display(),
    );
    let Some(out) = reid_run::testing::in_small_tmpfs(&disk, "64k", &script) else {
        return;
    };
    let (failed, listed) = reid_run::testing::exit_and_listing(&out);
    assert!(failed, "the report fitted in 64 kB:\n{out}");
    assert!(
        out.contains("No space left") && out.contains(&*disk.to_string_lossy()),
        "the error names neither the cause nor the file:\n{out}"
    );
    assert!(!listed.contains(".tmp-"), "temporary files left:\n{out}");
}

/// A run folder's `deploy.json` (ONNX Runtime latency, from `bench/onnx_check.py --runs`) adds
/// that runtime's latency and speed-up beside ours; a broken one is a skipped file.
#[test]
fn deployment_runtime_latency_is_shown_beside_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    fixture(&runs);
    let deploy = |folder: &str, b32: f64| {
        let model = runs.join(folder).join("model.safetensors");
        if !model.is_file() {
            arch_checkpoint(&runs.join(folder), [64, 128, 256, 512]);
        }
        let sha = reid_run::file_sha256(&model).unwrap();
        let text = json!({"onnxruntime-cpu": {"runtime": "onnxruntime 1.32.0", "input": "256x128",
            "model_sha256": sha,
            "threads": 2, "latency_ms": {"batch1": b32 / 10.0, "batch32": b32}, "max_rel_diff": 4e-7}});
        std::fs::write(runs.join(folder).join("deploy.json"), text.to_string()).unwrap();
    };
    deploy("baseline/resnet50-full", 300.0);
    deploy("S1/l1-C1", 120.0);
    std::fs::write(
        runs.join("S2/l1-C1/deploy.json"),
        "{\"onnxruntime-cpu\": {}}",
    )
    .unwrap();
    // measured, then the folder's model was replaced (a later grid run): not shown
    deploy("S1/taylor-C1", 100.0);
    arch_checkpoint(&runs.join("S1/taylor-C1"), [48, 60, 120, 250]);
    let out = tmp.path().join("report");
    let s = write_report(&runs, &out, &ReportOptions::default()).unwrap();
    let msgs: Vec<String> = s.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("S2/l1-C1/deploy.json") && m.contains("missing field")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("S1/taylor-C1/deploy.json") && m.contains("another model")),
        "{msgs:#?}"
    );
    let csv = std::fs::read_to_string(out.join("tables/table5.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim_matches('"') == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (ms, up) = (
        col("onnxruntime-cpu b32 (ms)"),
        col("onnxruntime-cpu speed-up b32 (×)"),
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let row = |model: &str| rows.iter().find(|r| r[0] == model).unwrap();
    assert_eq!(row("l1")[ms], "120.00");
    assert_eq!(row("l1")[up], "2.50", "300 ms over 120 ms");
    assert_eq!(row("resnet50")[up], "1.00");
    assert_eq!(row("taylor")[ms], "", "a stale deploy.json: an empty cell");
    // Our own speed-up is still ours: 800 ms over 450 ms.
    assert_eq!(row("l1")[col("Speed-up b32 (×)")], "1.78");
}

/// A grid rewrites the cells of its current config on every run; a cell whose config.toml
/// differs from its experiment's experiment.toml is left from an earlier config (a criterion
/// since removed) and is skipped with a note naming the fields, while a single-step run kept in
/// the same folder is not judged against the experiment.
#[test]
fn cells_left_from_an_earlier_config_of_the_grid_are_skipped_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let e = || json!({"market1501": eval(0.5, 0.6)});
    let kept = run(
        root,
        "exp/S1/l1-C1",
        "S1",
        "l1",
        "C1",
        "resnet50",
        2.0,
        12.0,
        (5.0, 90.0),
        e(),
    );
    // a grid on GPU 0
    let config = std::fs::read_to_string(kept.join("config.toml"))
        .unwrap()
        .replace("device = \"cpu\"", "device = \"cuda:0\"");
    std::fs::write(kept.join("config.toml"), &config).unwrap();
    std::fs::write(root.join("exp/experiment.toml"), &config).unwrap();
    let old = run(
        root,
        "exp/S1/psfp-C1",
        "S1",
        "psfp",
        "C1",
        "resnet50",
        2.0,
        12.0,
        (5.0, 90.0),
        e(),
    );
    std::fs::write(
        old.join("config.toml"),
        config.replace("seed = 7", "seed = 3") + "criteria = [\"l1\", \"psfp\"]\n",
    )
    .unwrap();
    let single = run(
        root,
        "exp/mine",
        "",
        "",
        "",
        "resnet50",
        4.0,
        25.0,
        (9.0, 160.0),
        e(),
    );
    std::fs::write(single.join("config.toml"), "epochs = 3\n").unwrap();
    // written by a worker on another GPU, with another checkpoint interval, naming the folder
    // otherwise: the same computation, kept
    let worker = run(
        root,
        "exp/S1/taylor-C1",
        "S1",
        "taylor",
        "C1",
        "resnet50",
        2.0,
        12.0,
        (5.0, 90.0),
        e(),
    );
    let mut table: toml::Table = config.parse().unwrap();
    table.insert("device".into(), "cuda:1".into());
    table.insert("checkpoint_interval_s".into(), 60.0.into());
    table.insert("out".into(), "./elsewhere/../exp".into());
    std::fs::write(worker.join("config.toml"), toml::to_string(&table).unwrap()).unwrap();
    // an unrelated experiment above is never compared with the cells below it
    std::fs::write(root.join("experiment.toml"), "seed = 99\n").unwrap();
    let loose = run(
        root,
        "other/S1/l1-C1",
        "S1",
        "l1",
        "C1",
        "resnet50",
        2.0,
        12.0,
        (5.0, 90.0),
        e(),
    );
    std::fs::write(loose.join("config.toml"), &config).unwrap();

    let (runs, problems) = reid_report::runs::load_runs(root).unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "exp/S1/l1-C1",
            "exp/S1/taylor-C1",
            "exp/mine",
            "other/S1/l1-C1"
        ]
    );
    // `--runs .` inside the scenario's folder: the experiment is found all the same
    let out = root.join("report-of-S1");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_reid-report"))
        .current_dir(root.join("exp/S1"))
        .args(["--runs", ".", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.contains("taylor") && !csv.contains("psfp"), "{csv}");
    // a report on the scenario's folder alone is still about the experiment's cells
    let (sub, sub_problems) = reid_report::runs::load_runs(&root.join("exp/S1")).unwrap();
    let sub_ids: Vec<&str> = sub.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(sub_ids, ["l1-C1", "taylor-C1"]);
    assert_eq!(sub_problems.len(), 1, "{sub_problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, old.join("config.toml"));
    assert!(
        problems[0].message.contains("left from an earlier config")
            && problems[0].message.contains("in: criteria, seed)"),
        "{}",
        problems[0].message
    );
}

/// An evaluation at another input size than the run's (`reid-eval --input`, entry
/// `<dataset>@HxW`) is shown at its own size, without the run's GFLOPs, MACs, latency and
/// speed-up, which were measured at the run's size.
#[test]
fn an_evaluation_at_another_size_is_not_given_the_runs_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut other = eval(0.3, 0.4);
    other["input"] = json!("128x64");
    run(
        root,
        "exp/S1/l1-C1",
        "S1",
        "l1",
        "C1",
        "resnet50",
        2.0,
        12.0,
        (5.0, 90.0),
        json!({"market1501": eval(0.5, 0.6), "market1501@128x64": other}),
    );
    let (runs, problems) = reid_report::runs::load_runs(root).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let configs: Vec<_> = runs
        .iter()
        .map(|r| reid_report::frame::read_config(r).unwrap())
        .collect();
    let df = reid_report::frame::results_frame(&runs, &configs).unwrap();
    let col = |name: &str| df.column(name).unwrap().as_materialized_series().clone();
    let datasets = col("dataset");
    let row = |d: &str| {
        (0..df.height())
            .find(|&i| datasets.str().unwrap().get(i) == Some(d))
            .unwrap()
    };
    let (own, at) = (row("market1501"), row("market1501@128x64"));
    let input = col("input");
    assert_eq!(input.str().unwrap().get(own), Some("256x128"));
    assert_eq!(input.str().unwrap().get(at), Some("128x64"));
    for c in ["gflops", "latency_b32_ms"] {
        assert!(col(c).f64().unwrap().get(own).is_some(), "{c}");
        assert_eq!(col(c).f64().unwrap().get(at), None, "{c}");
    }
    assert_eq!(col("macs").u64().unwrap().get(at), None);
    assert_eq!(col("params").u64().unwrap().get(at), Some(12_000_000));
    let tables = reid_report::tables::tables789(&runs, &reid_report::paper::PaperResults::load());
    let t = tables
        .iter()
        .find(|t| t.slug.ends_with("market1501@128x64"))
        .unwrap();
    let gflops = t.headers.iter().position(|h| h == "GFLOPs").unwrap();
    let params = t.headers.iter().position(|h| h == "Params (M)").unwrap();
    assert_eq!(t.rows[0][gflops], None);
    assert_eq!(t.rows[0][params].as_deref(), Some("12.00"));
}

/// A report into the folder of an earlier one leaves nothing of it that it does not write
/// again (here the second dataset's table and figures), and nothing it did not write is removed.
#[test]
fn a_report_replaces_the_earlier_reports_files_only() {
    let (tmp, out, _) = report();
    assert!(out.join("tables/table8_synth-b.md").is_file());
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    // the same runs without their second dataset
    let runs = tmp.path().join("one");
    run(
        &runs,
        "S1/l1-C1",
        "S1",
        "l1",
        "C1",
        "resnet50",
        2.0,
        12.0,
        (5.0, 90.0),
        json!({"market1501": eval(0.5, 0.6)}),
    );
    let s = write_report(&runs, &out, &ReportOptions::default()).unwrap();
    assert!(!out.join("tables/table8_synth-b.md").exists());
    assert!(!out.join("tables/table8_synth-b.csv").exists());
    let figs: Vec<String> = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!figs.iter().any(|f| f.contains("synth-b")), "{figs:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    let listed = std::fs::read_to_string(out.join(reid_report::MANIFEST)).unwrap();
    assert_eq!(listed.lines().count(), s.files.len());
    assert!(listed.lines().all(|l| out.join(l).is_file()), "{listed}");

    // A tampered manifest removes nothing that is not a report's file in the folder itself:
    // not a user's file it names, not one through a symbolic link to a folder elsewhere.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("thesis.png"), "keep").unwrap();
    let linked = tmp.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("figures")).unwrap();
    std::fs::write(linked.join("notes.md"), "keep").unwrap();
    std::fs::write(
        linked.join(reid_report::MANIFEST),
        "figures/thesis.png\nnotes.md\n../elsewhere/thesis.png\n",
    )
    .unwrap();
    // its figures cannot be written through the link either way: what matters is what stays
    let _ = write_report(&runs, &linked, &ReportOptions::default());
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("thesis.png")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::read_to_string(linked.join("notes.md")).unwrap(),
        "keep"
    );
}

/// The report opens with the verdict matrix: a claim a row, the judged model a column, each
/// cell coloured by its verdict with Δ rank-1 and its interval, the detailed claims table folded
/// below; the same matrix as Markdown and CSV.
#[test]
fn the_report_opens_with_the_verdict_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // 200 query identities; `misses` of them lose their first-rank match
    let cell = |folder: &str,
                scenario: &str,
                criterion: &str,
                level: &str,
                backbone: &str,
                misses: usize| {
        let r1 = 1.0 - misses as f64 / 200.0;
        let dir = run(
            &runs,
            folder,
            scenario,
            criterion,
            level,
            backbone,
            2.0,
            12.0,
            (5.0, 90.0),
            json!({"market1501": eval(0.8, r1)}),
        );
        let q = reid_run::stats::PerQuery {
            pid: (0..200).collect(),
            ap: vec![0.8; 200],
            first_rank: (0..200).map(|i| if i < misses { 3 } else { 1 }).collect(),
            inp: vec![0.5; 200],
        };
        reid_run::RunFolder::new(&dir)
            .write_per_query("market1501", &q)
            .unwrap();
    };
    cell(
        "baseline/resnet50-full",
        "baseline",
        "",
        "full",
        "resnet50",
        10,
    );
    cell("S1/l1-C1", "S1", "l1", "C1", "resnet50", 10);
    cell("S1/taylor-C1", "S1", "taylor", "C1", "resnet50", 50);
    cell("S2/l1-C1", "S2", "l1", "C1", "resnet50", 12);
    let out = tmp.path().join("report");
    write_report(&runs, &out, &ReportOptions::default()).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let matrix = html.find("<section id=\"verdicts\">").expect("no matrix");
    assert!(
        matrix < html.find("<nav>").unwrap(),
        "the matrix is not first"
    );
    let cells = |class: &str| html.matches(&format!("<td class=\"v {class}\"")).count();
    // S1: l1 ties the unpruned model (holds), taylor loses 20 points (does not hold); S2 l1
    // loses 1 point, its interval holds the bound (inconclusive); (5) L1 beats taylor (holds)
    assert_eq!(
        (cells("holds"), cells("not"), cells("inc")),
        (2, 1, 1),
        "{html}"
    );
    assert!(html.contains("<details><summary>The paper's claims at C1, judged"));
    let md = std::fs::read_to_string(out.join("tables/verdicts.md")).unwrap();
    assert!(md.contains("| claim | dataset | l1 | taylor |"), "{md}");
    assert!(md.contains("does not hold -20.0"), "{md}");
    assert!(out.join("tables/verdicts.csv").is_file());
    // the same matrix as a figure: a swatch of each verdict's colour per cell (and one in the
    // legend), every model's column and every cell's numbers
    let svg = std::fs::read_to_string(out.join("figures/verdicts.svg")).unwrap();
    let swatches = |rgb: (u8, u8, u8)| {
        let hex = format!("#{:02X}{:02X}{:02X}", rgb.0, rgb.1, rgb.2);
        svg.matches(&format!("fill=\"{hex}\"")).count()
            + svg
                .matches(&format!("fill=\"{}\"", hex.to_lowercase()))
                .count()
    };
    assert_eq!(
        (
            swatches((0xb8, 0xe0, 0xb0)),
            swatches((0xf2, 0xb5, 0xb0)),
            swatches((0xf3, 0xe3, 0xa6))
        ),
        (2 + 1, 1 + 1, 1 + 1),
        "{svg}"
    );
    for text in ["l1", "taylor", "-20.0", "+0.0"] {
        assert!(
            svg.contains(&format!(">\n{text}\n<")),
            "{text} not in the figure"
        );
    }
    let png = image::open(out.join("figures/verdicts.png")).unwrap();
    assert!(png.width() >= 520 && png.height() > 100);
    assert!(html.contains("href=\"figures/verdicts.svg\""));
}

/// A `sensitivity.json` beside the runs becomes a table of each layer's change at each ratio
/// (in points against the unpruned network); an unreadable one is named and skipped.
#[test]
fn sensitivity_records_become_tables_and_bad_ones_are_named() {
    use reid_run::sensitivity::{LayerSensitivity, Point, Sensitivity, SensitivityConfig};
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    fixture(&runs);
    let point = |ratio: f64, kept: usize, rank1: f64, map: f64| Point {
        ratio,
        kept,
        rank1,
        map,
    };
    let s = Sensitivity {
        config: SensitivityConfig {
            checkpoint: "runs/r50/model.safetensors".into(),
            dataset: "market1501".into(),
            root: "/data/market".into(),
            criterion: "l1".into(),
            ratios: vec![0.25, 0.5],
            held_out: 0.2,
            input: reid_run::InputSize::new(256, 128),
            seed: 0,
        },
        held_out_ids: vec![1, 2, 3],
        queries: 9,
        unpruned: point(0.0, 0, 0.9, 0.8),
        layers: vec![LayerSensitivity {
            conv: "layer1.0.conv1".into(),
            width: 64,
            points: vec![point(0.25, 48, 0.9, 0.79), point(0.5, 32, 0.8, 0.7)],
        }],
    };
    let dir = runs.join("sens");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sensitivity.json"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    let bad = runs.join("bad-sens");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("sensitivity.json"), "{\"config\": 3}").unwrap();
    let out = tmp.path().join("report");
    let summary = write_report(&runs, &out, &ReportOptions::default()).unwrap();
    let csv = std::fs::read_to_string(out.join("tables/sensitivity_sens.csv")).unwrap();
    assert!(
        csv.contains("layer1.0.conv1,64,-1.0,+0.0,-10.0,-10.0"),
        "{csv}"
    );
    assert!(summary
        .problems
        .iter()
        .any(|p| p.path == bad.join("sensitivity.json")));
}
