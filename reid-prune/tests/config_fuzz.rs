//! Bounded fuzzing of experiment configs: thousands of edits of a shipped config are parsed
//! and validated; each is accepted or refused with an error, none panics. Seeded.

use reid_model::init::SplitMix64;
use reid_prune::config_file::parse_toml;
use reid_prune::grid::ExperimentConfig;

const PIECES: [&str; 14] = [
    "-1",
    "0",
    "1e999",
    "nan",
    "inf",
    "\"../x\"",
    "\"\"",
    "[]",
    "{}",
    "=",
    "\n[levels]\n",
    "S9",
    "99999999999999999999",
    "\"8x0\"",
];

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_f64() * n as f64) as usize % n.max(1)
}

#[test]
fn edited_experiment_configs_are_accepted_or_refused_never_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let valid = std::fs::read_to_string(root.join("configs/market-duke-cuhk03.toml")).unwrap();
    assert!(parse_toml::<ExperimentConfig>(&valid).is_ok());
    let mut rng = SplitMix64::new(7);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..5_000 {
        let mut s: Vec<char> = valid.chars().collect();
        for _ in 0..1 + below(&mut rng, 3) {
            let at = below(&mut rng, s.len());
            match below(&mut rng, 3) {
                0 => {
                    let piece = PIECES[below(&mut rng, PIECES.len())];
                    s.splice(at..at, piece.chars());
                }
                1 => {
                    // replace a token: up to the next space or newline
                    let end = (at..s.len())
                        .find(|&j| s[j] == ' ' || s[j] == '\n')
                        .unwrap_or(s.len());
                    let piece = PIECES[below(&mut rng, PIECES.len())];
                    s.splice(at..end, piece.chars());
                }
                _ => {
                    s.remove(at);
                }
            }
        }
        let text: String = s.into_iter().collect();
        let outcome = std::panic::catch_unwind(|| {
            parse_toml::<ExperimentConfig>(&text).and_then(|c| c.validate())
        });
        match outcome {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("edit {i} made parsing or validation panic:\n{text}"),
        }
    }
    eprintln!("{accepted} accepted, {refused} refused");
    assert!(refused > 1_000 && accepted > 0);
}
