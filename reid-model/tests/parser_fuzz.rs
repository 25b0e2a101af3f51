//! Bounded fuzzing of the checkpoint readers: thousands of mutants of a valid checkpoint (bytes
//! flipped in the header and the data, truncations, a rewritten header length, JSON values of
//! `reid.arch` replaced by hostile ones) are read by every reader. Each read returns a value or
//! an error; none panics, hangs or allocates without bound. Seeded, so a failure reproduces.

use std::time::{Duration, Instant};

use candle_core::Device;
use reid_model::checkpoint::{checkpoint_bytes, load_checkpoint, read_arch_spec, read_safetensors};
use reid_model::init::SplitMix64;
use reid_model::{ArchSpec, Neck, Provenance, ReidNet};

/// Iterations and a time cap, whichever comes first (the suite runs in CI).
const ITERATIONS: usize = 20000;
const TIME_CAP: Duration = Duration::from_secs(40);

fn valid_checkpoint() -> Vec<u8> {
    let spec = ArchSpec::resnet_with(18, 4, 0.0625, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &Device::Cpu, 1).unwrap();
    checkpoint_bytes(&net, &Provenance::new(), &[], Default::default()).unwrap()
}

fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_f64() * n as f64) as usize % n.max(1)
}

/// Values that stress a JSON field of `reid.arch`.
const HOSTILE: [&str; 9] = [
    "0",
    "-1",
    "1e300",
    "18446744073709551615",
    "4294967296",
    "null",
    "\"x\"",
    "[]",
    "{}",
];

fn mutate(base: &[u8], header_len: usize, rng: &mut SplitMix64) -> Vec<u8> {
    let mut b = base.to_vec();
    match pick(rng, 6) {
        // flip bytes, mostly in the header
        0 | 1 => {
            for _ in 0..1 + pick(rng, 8) {
                let end = if rng.next_f64() < 0.8 {
                    8 + header_len
                } else {
                    b.len()
                };
                let i = pick(rng, end);
                b[i] ^= 1 << pick(rng, 8);
            }
        }
        // truncate anywhere
        2 => b.truncate(pick(rng, b.len())),
        // another header length
        3 => {
            let v: u64 = match pick(rng, 4) {
                0 => 0,
                1 => u64::MAX,
                2 => (header_len as u64).wrapping_add(1 + pick(rng, 64) as u64),
                _ => pick(rng, header_len) as u64,
            };
            b[..8].copy_from_slice(&v.to_le_bytes());
        }
        // a number in the header replaced by a hostile value
        _ => {
            let header = String::from_utf8_lossy(&b[8..8 + header_len]).into_owned();
            let digits: Vec<usize> = header
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            if digits.is_empty() {
                return b;
            }
            let start = digits[pick(rng, digits.len())];
            let end = header[start..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(header.len(), |e| start + e);
            let value = HOSTILE[pick(rng, HOSTILE.len())];
            let new_header = format!("{}{}{}", &header[..start], value, &header[end..]);
            let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(new_header.as_bytes());
            out.extend_from_slice(&b[8 + header_len..]);
            b = out;
        }
    }
    b
}

#[test]
fn mutated_checkpoints_are_read_or_refused_never_a_panic() {
    let base = valid_checkpoint();
    let header_len = u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.safetensors");
    let mut rng = SplitMix64::new(2026);
    let started = Instant::now();
    let (mut refused, mut read) = (0usize, 0usize);
    let mut i = 0;
    while i < ITERATIONS && started.elapsed() < TIME_CAP {
        let bytes = mutate(&base, header_len, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let a = read_arch_spec(&path).is_ok();
            let b = read_safetensors(&path, &Device::Cpu).is_ok();
            let c = load_checkpoint(&path, &Device::Cpu, false).is_ok();
            (a, b, c)
        });
        match outcome {
            Ok((_, _, true)) => read += 1,
            Ok(_) => refused += 1,
            Err(_) => {
                let keep = dir.path().join(format!("panic-{i}.safetensors"));
                std::fs::copy(&path, &keep).unwrap();
                panic!(
                    "mutant {i} (seed 2026) made a reader panic; bytes kept in {}",
                    keep.display()
                );
            }
        }
        i += 1;
    }
    eprintln!(
        "{i} mutants in {:.1} s: {read} loaded, {refused} refused",
        started.elapsed().as_secs_f64()
    );
    assert!(i >= 500, "only {i} mutants in the time cap");
    assert!(
        refused > i / 4,
        "most mutants should be refused ({refused} of {i})"
    );
}
