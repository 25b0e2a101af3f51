//! `reid-eval ranks`: the queries it calls lost and gained are those the two models' own
//! evaluations (`per_query.json`) disagree on at rank 1, each drawn as a picture; a folder
//! that holds something is refused before anything is evaluated.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::Device;
use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_model::checkpoint::{save_checkpoint, Provenance};
use reid_model::{ArchSpec, Neck, ReidNet};

/// A run folder holding a tiny random model (seed `seed`), trained (its header says) at 64×32.
fn run_folder(dir: &Path, seed: u64) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let spec = ArchSpec::resnet_with(18, 6, 0.125, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &Device::Cpu, seed).unwrap();
    let mut prov = Provenance::new();
    prov.input = Some(reid_run::InputSize::new(64, 32));
    let ck = dir.join("model.safetensors");
    save_checkpoint(&net, &ck, &prov).unwrap();
    ck
}

fn reid_eval(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reid-eval"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn lost_and_gained_queries_are_the_rank1_flips_of_the_two_evaluations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    generate(
        &SynthConfig {
            domain: "target".into(),
            ids: 12,
            cams: 3,
            per_cam: 2,
            seed: 4,
            height: 64,
            width: 32,
            difficulty: 0.5,
            layout: SynthLayout::Market,
            extra_test_ids: 0,
            distractors: 0,
        },
        &root,
        |_| {},
    )
    .unwrap();
    let (a, b) = (
        run_folder(&tmp.path().join("a"), 1),
        run_folder(&tmp.path().join("b"), 2),
    );
    // each model's own evaluation, written beside it
    let data = ["--dataset", "market1501", "--root"].map(std::ffi::OsStr::new);
    for ck in [&a, &b] {
        ok(reid_eval(
            &[
                &["--checkpoint".as_ref(), ck.as_os_str()],
                &data[..],
                &[root.as_os_str()],
            ]
            .concat(),
        ));
    }
    let per_query = |ck: &Path| {
        reid_run::RunFolder::new(ck.parent().unwrap())
            .read_per_query()
            .unwrap()
            .remove("market1501")
            .unwrap()
    };
    let want = reid_run::ranks::flips(&per_query(&a), &per_query(&b)).unwrap();
    assert!(
        !want.lost.is_empty() || !want.gained.is_empty(),
        "two random models agree on every query: no flip to check"
    );
    // the evaluation kept each query's list beside its per-query results
    let ranks = reid_run::RunFolder::new(a.parent().unwrap())
        .read_ranks()
        .unwrap()
        .remove("market1501")
        .unwrap();
    assert_eq!(ranks.queries.len(), per_query(&a).len());
    for (q, &first) in ranks.queries.iter().zip(&per_query(&a).first_rank) {
        let hit = q
            .top
            .iter()
            .position(|&j| ranks.image_pids[j as usize] == q.pid);
        match hit {
            Some(r) => assert_eq!(r as u32 + 1, first, "{}", q.file),
            None => assert!(first as usize > q.top.len(), "{}", q.file),
        }
    }

    let out = tmp.path().join("pictures");
    let stdout = ok(reid_eval(
        &[
            &["ranks".as_ref(), "--checkpoint".as_ref(), a.as_os_str()][..],
            &["--compare".as_ref(), b.as_os_str()],
            &data[..],
            &[root.as_os_str(), "--out".as_ref(), out.as_os_str()],
            &["--flips", "--queries", "1000"].map(std::ffi::OsStr::new),
        ]
        .concat(),
    ));
    assert!(
        stdout.contains(&format!(
            "{} lost and {} gained",
            want.lost.len(),
            want.gained.len()
        )),
        "{stdout}"
    );
    let mut drawn: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    drawn.sort();
    let mut expected: Vec<String> = want
        .lost
        .iter()
        .map(|q| format!("lost-{q:05}-"))
        .chain(want.gained.iter().map(|q| format!("gained-{q:05}-")))
        .collect();
    expected.sort();
    assert_eq!(drawn.len(), expected.len(), "{drawn:?}");
    for (d, e) in drawn.iter().zip(&expected) {
        assert!(d.starts_with(e), "{d} vs {e}");
    }
    // each picture: two rows (the two models) of a query and 10 images
    let img = image::open(out.join(&drawn[0])).unwrap();
    let (cw, ch) = reid_data::ranklist::CELL;
    assert!(
        img.height() > 2 * ch && img.height() < 3 * ch,
        "{}",
        img.height()
    );
    assert!(img.width() > 11 * cw, "{}", img.width());

    // --queries bounds the pictures in all: half lost, the rest gained
    let three = tmp.path().join("three");
    ok(reid_eval(
        &[
            &["ranks".as_ref(), "--checkpoint".as_ref(), a.as_os_str()][..],
            &["--compare".as_ref(), b.as_os_str()],
            &data[..],
            &[root.as_os_str(), "--out".as_ref(), three.as_os_str()],
            &["--flips", "--queries", "3"].map(std::ffi::OsStr::new),
        ]
        .concat(),
    ));
    let pngs = std::fs::read_dir(&three)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    let lost = want.lost.len().min(2);
    assert_eq!(pngs, lost + want.gained.len().min(3 - lost));

    // a run that fails after claiming a new folder leaves no folder behind
    let failed = tmp.path().join("failed");
    let not_a_model = tmp.path().join("not-a-model.safetensors");
    std::fs::write(&not_a_model, b"not a model").unwrap();
    let o = reid_eval(
        &[
            &[
                "ranks".as_ref(),
                "--checkpoint".as_ref(),
                not_a_model.as_os_str(),
            ][..],
            &data[..],
            &[root.as_os_str(), "--out".as_ref(), failed.as_os_str()],
        ]
        .concat(),
    );
    assert!(!o.status.success());
    assert!(!failed.exists(), "the failed run's folder stays");
    // a link to nothing is named before anything is evaluated
    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    let o = reid_eval(
        &[
            &["ranks".as_ref(), "--checkpoint".as_ref(), a.as_os_str()][..],
            &data[..],
            &[root.as_os_str(), "--out".as_ref(), dangling.as_os_str()],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("a symbolic link to nothing"), "{err}");

    // the folder now holds pictures: a second run is refused before it evaluates anything
    let o = reid_eval(
        &[
            &["ranks".as_ref(), "--checkpoint".as_ref(), a.as_os_str()][..],
            &data[..],
            &[root.as_os_str(), "--out".as_ref(), out.as_os_str()],
        ]
        .concat(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not an empty folder"), "{err}");
}
