//! Bounded fuzzing of the metrics.json reader: thousands of edits of a valid file (characters
//! replaced, inserted or removed, numbers replaced by hostile ones, truncations) are read or
//! refused with an error naming the file; none panics. Seeded, so a failure reproduces.

use reid_run::metrics::read_metrics;

const VALID: &str = r#"{
  "experiment": "e", "scenario": "S1", "criterion": "l1", "level": "C1", "backbone": "resnet50",
  "macs": 2000000000, "params": 12000000, "kept_channel_fraction": 0.5,
  "latency_ms": {"cpu": {"batch1": 3.5, "batch32": 40.25}},
  "eval": {"market1501": {"mAP": 0.75, "rank1": 0.9, "rank5": 0.95, "mINP": 0.4,
           "cmc": [0.9, 0.93, 0.95], "num_valid_queries": 3368}},
  "train": {"epochs": 60, "wall_s": 100.0, "final_loss": 1.5}
}"#;

/// xorshift: no dependency, reproducible.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

const PIECES: [&str; 12] = [
    "NaN",
    "-1",
    "1e999",
    "18446744073709551616",
    "null",
    "[]",
    "{}",
    "\"",
    ",",
    "}",
    "-0",
    "7",
];

#[test]
fn edited_metrics_are_read_or_refused_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    let mut rng = Rng(0x5eed);
    let (mut read, mut refused) = (0, 0);
    for i in 0..20_000 {
        let mut s: Vec<char> = VALID.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(s.len());
            match rng.below(4) {
                0 => s[at] = PIECES[rng.below(PIECES.len())].chars().next().unwrap(),
                1 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    s.splice(at..at, piece.chars());
                }
                2 => {
                    s.remove(at);
                }
                _ => s.truncate(at),
            }
            if s.is_empty() {
                break;
            }
        }
        let text: String = s.into_iter().collect();
        std::fs::write(&path, &text).unwrap();
        match std::panic::catch_unwind(|| read_metrics(&path)) {
            Ok(Ok(m)) => {
                // what is read is valid
                assert!(m.validate().is_ok(), "mutant {i} read but invalid:\n{text}");
                read += 1;
            }
            Ok(Err(e)) => {
                assert!(e.to_string().contains("metrics.json"), "{e}");
                refused += 1;
            }
            Err(_) => panic!("mutant {i} made the reader panic:\n{text}"),
        }
    }
    eprintln!("{read} read, {refused} refused");
    assert!(
        refused > 10_000 && read > 0,
        "{read} read, {refused} refused"
    );
}
