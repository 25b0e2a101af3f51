//! Loaders on generated trees in each real layout, with known counts.

use std::path::Path;

use reid_data::datasets::{load, stats, DatasetStats, SplitStats};

fn write_jpg(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(8, 16, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 15) as u8, 77])
    });
    img.save(path).unwrap();
}

/// Market-style tree: train ids 2, 7, 9 (cams 1..3), junk and distractors in the gallery.
fn market_tree(dir: &Path, cams: i64) {
    for (pid, n) in [(2, 3), (7, 2), (9, 4)] {
        for k in 0..n {
            let cam = 1 + (k % cams);
            write_jpg(&dir.join(format!(
                "bounding_box_train/{pid:04}_c{cam}s1_{k:06}_00.jpg"
            )));
        }
    }
    write_jpg(&dir.join("bounding_box_train/-1_c1s1_000001_00.jpg"));
    for (pid, cam) in [(11, 1), (12, 2)] {
        write_jpg(&dir.join(format!("query/{pid:04}_c{cam}s1_000010_00.jpg")));
    }
    for (pid, cam, k) in [
        (11, 2, 0),
        (11, 1, 1),
        (12, 1, 2),
        (0, 1, 3),
        (0, 2, 4),
        (-1, 1, 5),
        (-1, 2, 6),
    ] {
        let name = if pid < 0 {
            format!("-1_c{cam}s1_{k:06}_00.jpg")
        } else {
            format!("{pid:04}_c{cam}s1_{k:06}_00.jpg")
        };
        write_jpg(&dir.join("bounding_box_test").join(name));
    }
}

fn expected() -> DatasetStats {
    DatasetStats {
        train: SplitStats {
            images: 9,
            ids: 3,
            cams: 2,
        },
        query: SplitStats {
            images: 2,
            ids: 2,
            cams: 2,
        },
        // pids 11, 12 and the distractor id 0; junk never counts
        gallery: SplitStats {
            images: 5,
            ids: 3,
            cams: 2,
        },
        skipped: 0,
    }
}

#[test]
fn market1501_root_spellings_and_counts() {
    for sub in ["", "market1501", "Market-1501-v15.09.15"] {
        let tmp = tempfile::tempdir().unwrap();
        market_tree(&tmp.path().join(sub), 2);
        let mut ds = load("market1501", tmp.path()).unwrap();
        assert_eq!(
            stats(&mut ds, true, false).unwrap(),
            expected(),
            "root spelling '{sub}'"
        );
        let pids: std::collections::BTreeSet<i64> = ds.train.iter().map(|s| s.pid).collect();
        assert_eq!(
            pids.into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2],
            "train relabelled"
        );
        assert!(ds.gallery.iter().all(|s| s.pid != -1));
        assert!(ds.gallery.iter().any(|s| s.pid == 0));
    }
}

#[test]
fn duke_and_cuhk03_variants() {
    let tmp = tempfile::tempdir().unwrap();
    market_tree(&tmp.path().join("DukeMTMC-reID"), 2);
    let mut ds = load("dukemtmc-reid", tmp.path()).unwrap();
    assert_eq!(stats(&mut ds, false, false).unwrap(), expected());

    let tmp = tempfile::tempdir().unwrap();
    market_tree(&tmp.path().join("cuhk03-np/labeled"), 2);
    market_tree(&tmp.path().join("cuhk03-np/detected"), 2);
    std::fs::remove_file(
        tmp.path()
            .join("cuhk03-np/detected/query/0011_c1s1_000010_00.jpg"),
    )
    .unwrap();
    let mut lab = load("cuhk03-np", tmp.path()).unwrap();
    assert_eq!(lab.name, "cuhk03-np-labeled");
    assert_eq!(stats(&mut lab, false, false).unwrap(), expected());
    let mut det = load("cuhk03-np-detected", tmp.path()).unwrap();
    assert_eq!(stats(&mut det, false, false).unwrap().query.images, 1);
}

#[test]
fn msmt17_v1_and_v2_lists() {
    for (ver, train, test) in [
        ("MSMT17_V1", "train", "test"),
        ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(ver);
        let mut lists = std::collections::HashMap::new();
        for (list, dir, entries) in [
            (
                "list_train.txt",
                train,
                vec![(0, 1), (0, 2), (5, 3), (5, 3)],
            ),
            ("list_val.txt", train, vec![(1, 4)]),
            ("list_query.txt", test, vec![(100, 1)]),
            ("list_gallery.txt", test, vec![(100, 2), (101, 15)]),
        ] {
            let mut text = String::new();
            for (k, (pid, cam)) in entries.iter().enumerate() {
                let rel = format!("{pid:04}/{pid:04}_{k:03}_{cam:02}_0303morning_0015_0.jpg");
                write_jpg(&root.join(dir).join(&rel));
                text.push_str(&format!("{rel} {pid}\n"));
            }
            lists.insert(list, text.clone());
            std::fs::write(root.join(list), text).unwrap();
        }
        let mut ds = load("msmt17", tmp.path()).unwrap();
        let st = stats(&mut ds, true, false).unwrap();
        assert_eq!(
            st.train,
            SplitStats {
                images: 4,
                ids: 2,
                cams: 3
            },
            "{ver}"
        );
        assert_eq!(
            st.query,
            SplitStats {
                images: 1,
                ids: 1,
                cams: 1
            }
        );
        assert_eq!(
            st.gallery,
            SplitStats {
                images: 2,
                ids: 2,
                cams: 2
            }
        );
        assert_eq!(ds.gallery[1].camid, 14);
        // a malformed line is reported with its file and line number
        std::fs::write(root.join("list_query.txt"), "garbage\n").unwrap();
        let e = load("msmt17", tmp.path()).unwrap_err().to_string();
        assert!(e.contains("list_query.txt") && e.contains("line 1"), "{e}");
    }
}

#[test]
fn imagefolder_classes() {
    let tmp = tempfile::tempdir().unwrap();
    for (c, n) in [("cat", 2), ("dog", 3)] {
        for k in 0..n {
            write_jpg(&tmp.path().join(c).join(format!("{k}.jpg")));
        }
    }
    let mut ds = load("imagefolder", tmp.path()).unwrap();
    let st = stats(&mut ds, false, false).unwrap();
    assert_eq!(
        st.train,
        SplitStats {
            images: 5,
            ids: 2,
            cams: 1
        }
    );
    assert_eq!(ds.train[2].pid, 1);
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    market_tree(tmp.path(), 2);
    // mis-named file
    write_jpg(&tmp.path().join("query/person7.jpg"));
    let e = load("market1501", tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("person7.jpg") && e.contains("expected PPPP_cC"),
        "{e}"
    );
    std::fs::remove_file(tmp.path().join("query/person7.jpg")).unwrap();
    // camera out of range
    write_jpg(&tmp.path().join("query/0003_c9s1_000001_00.jpg"));
    let e = load("market1501", tmp.path()).unwrap_err().to_string();
    assert!(e.contains("camera 9"), "{e}");
    std::fs::remove_file(tmp.path().join("query/0003_c9s1_000001_00.jpg")).unwrap();
    // corrupt image: an error with --verify, a counted skip with --skip-bad-images
    std::fs::write(
        tmp.path().join("query/0012_c1s1_000099_00.jpg"),
        b"\xff\xd8 broken",
    )
    .unwrap();
    let mut ds = load("market1501", tmp.path()).unwrap();
    let e = stats(&mut ds, true, false).unwrap_err().to_string();
    assert!(
        e.contains("0012_c1s1_000099_00.jpg") && e.contains("corrupt"),
        "{e}"
    );
    let mut ds = load("market1501", tmp.path()).unwrap();
    let st = stats(&mut ds, true, true).unwrap();
    assert_eq!((st.skipped, st.query.images), (1, 2));
    // missing split folder
    std::fs::remove_dir_all(tmp.path().join("bounding_box_test")).unwrap();
    let e = load("market1501", tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("bounding_box_test") && e.contains("not found"),
        "{e}"
    );
    // unknown name and missing root
    assert!(load("viper", tmp.path())
        .unwrap_err()
        .to_string()
        .contains("unknown dataset"));
    assert!(load("market1501", &tmp.path().join("nope"))
        .unwrap_err()
        .to_string()
        .contains("not found"));
}

/// The fingerprint covers the images the loader lists and nothing else under the root: a step
/// cache keyed on it is not invalidated by a README or by a second dataset stored beside the
/// first, and is invalidated by a changed, added or relabelled image.
#[test]
fn fingerprint_covers_the_listed_images_only() {
    use reid_data::datasets::fingerprint;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    market_tree(&root.join("market1501"), 3);
    let f = |name: &str| fingerprint(&load(name, &root).unwrap()).unwrap();
    let first = f("market1501");
    assert_eq!(first.len(), 16);

    // files the loader does not read
    std::fs::write(root.join("README.txt"), b"notes").unwrap();
    std::fs::write(root.join("market1501/readme.txt"), b"notes").unwrap();
    std::fs::write(root.join("market1501/query/notes.txt"), b"x").unwrap();
    write_jpg(&root.join("dukemtmc-reid/bounding_box_train/0001_c1s1_000001_00.jpg"));
    assert_eq!(f("market1501"), first);

    // an image rewritten with other bytes
    let img = root.join("market1501/query/0011_c1s1_000010_00.jpg");
    image::RgbImage::from_pixel(8, 24, image::Rgb([1, 2, 3]))
        .save(&img)
        .unwrap();
    let rewritten = f("market1501");
    assert_ne!(rewritten, first);

    // a new gallery image
    write_jpg(&root.join("market1501/bounding_box_test/0012_c2s1_000099_00.jpg"));
    let added = f("market1501");
    assert_ne!(added, rewritten);

    // the same bytes under another identity (a relabelled file)
    let from = root.join("market1501/bounding_box_test/0012_c2s1_000099_00.jpg");
    std::fs::rename(
        &from,
        root.join("market1501/bounding_box_test/0011_c2s1_000099_00.jpg"),
    )
    .unwrap();
    assert_ne!(f("market1501"), added);
}

/// The dataset registry (`reid_run::DatasetName`): every canonical name and alias parses to its
/// dataset and reaches that dataset's loader (which then names what the folder lacks), where an
/// unregistered name is refused as unknown.
#[test]
fn every_registered_dataset_is_reachable_by_each_of_its_names() {
    use reid_run::DatasetName;
    let tmp = tempfile::tempdir().unwrap();
    let unknown = "no-such-set".parse::<DatasetName>().unwrap_err();
    let refused = load("no-such-set", tmp.path()).err().unwrap().to_string();
    assert!(refused.contains(&unknown), "{refused}");
    for d in DatasetName::ALL {
        for name in std::iter::once(d.canonical()).chain(d.aliases().iter().copied()) {
            assert_eq!(name.parse::<DatasetName>(), Ok(d), "{name}");
            // an empty folder: the loader's own complaint, not an unknown name
            let e = load(name, tmp.path()).err().map(|e| e.to_string());
            let e = e.unwrap_or_else(|| panic!("{name}: an empty folder loaded"));
            assert!(!e.contains(&unknown), "{name}: {e}");
        }
    }
}
